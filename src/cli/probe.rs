//! `capgate probe`: the denied-path self-test against a running gateway (SPEC section 7).
//! Exit 0 when every denied path was denied and recorded, 1 on any finding, 2 on usage.

use std::io::IsTerminal;
use std::io::Write;
use std::path::Path;

use super::{Failure, load_config};
use crate::probe::{Options, Probe};

pub(super) struct Args<'a> {
    pub(crate) config: &'a Path,
    pub(crate) env: &'a str,
    pub(crate) url: &'a str,
    pub(crate) json: bool,
    pub(crate) junit: Option<&'a Path>,
    pub(crate) simulate_outage: bool,
    pub(crate) skip_audit: bool,
}

pub(super) async fn run(a: Args<'_>) -> Result<(), Failure> {
    let config = load_config(a.config)?;
    let env = config
        .environment(a.env)
        .cloned()
        .ok_or_else(|| Failure::Usage(format!("no environment `{}` in {}", a.env, a.config.display())))?;
    let opts = Options {
        token: std::env::var("CAPGATE_PROBE_TOKEN").ok().filter(|t| !t.trim().is_empty()),
        simulate_outage: a.simulate_outage,
        skip_audit: a.skip_audit,
        show_progress: !a.json && std::io::stderr().is_terminal(),
    };
    let probe = Probe::new(&config, env, a.url, opts).map_err(Failure::Usage)?;
    let report = probe.run().await.map_err(Failure::Usage)?;
    if let Some(path) = a.junit {
        std::fs::write(path, report.to_junit("capgate.probe"))
            .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if a.json {
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", report.to_json("probe"));
    } else {
        let _ = write!(
            std::io::stdout(),
            "{}",
            report.summary(&format!("capgate probe: environment `{}` at {}", a.env, a.url))
        );
    }
    if report.findings() > 0 { Err(Failure::CheckFailed) } else { Ok(()) }
}
