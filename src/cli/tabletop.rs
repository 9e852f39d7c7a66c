//! `capgate tabletop FILE…`: run scripted threat scenarios against a running gateway.
//! Exit 0 when every step answered as expected, 1 on any finding, 2 on usage.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Failure, load_config};
use crate::probe::Report;
use crate::probe::tabletop::{Runner, load};

pub(super) async fn run(files: &[PathBuf], config: &Path, env: &str, url: &str, json: bool, junit: Option<&Path>) -> Result<(), Failure> {
    let config = load_config(config)?;
    let env = config
        .environment(env)
        .cloned()
        .ok_or_else(|| Failure::Usage(format!("no environment `{env}`")))?;
    // Every scenario is read before any runs: a typo fails fast, not half-way.
    let scenarios = files
        .iter()
        .map(|f| load(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    if scenarios.is_empty() {
        return Err(Failure::Usage("give at least one scenario file".into()));
    }
    let runner = Runner::new(&env, url).map_err(Failure::Usage)?;
    let mut report = Report::default();
    for s in &scenarios {
        runner.run(s, &mut report).await.map_err(Failure::Usage)?;
    }
    if let Some(path) = junit {
        std::fs::write(path, report.to_junit("capgate.tabletop"))
            .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if json {
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", report.to_json("tabletop"));
    } else {
        let _ = write!(
            std::io::stdout(),
            "{}",
            report.summary(&format!(
                "capgate tabletop: {} scenario(s) against environment `{}`",
                scenarios.len(),
                env.name
            ))
        );
    }
    if report.findings() > 0 { Err(Failure::CheckFailed) } else { Ok(()) }
}
