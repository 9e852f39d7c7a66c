//! `capgate contracts pin`: writes the pins of the upstream tool definitions the contracts
//! route to (src/pins.rs), for review in git.

use std::path::Path;

use super::{Failure, load_config};
use crate::pins::{Pins, Writing};

pub(super) async fn pin(config_path: &Path, only: Option<&str>) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    if let Some(name) = only
        && config.environment(name).is_none()
    {
        return Err(Failure::Usage(format!("no environment `{name}`")));
    }
    let mut found = Vec::new();
    for env in config.environments.iter().filter(|e| only.is_none_or(|n| e.name == n)) {
        let current = crate::pipeline::current_pins(&config, env).await.map_err(|problems| {
            Failure::Usage(format!(
                "environment `{}`: nothing pinned, the routes have {} problem(s):\n{}",
                env.name,
                problems.len(),
                problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
            ))
        })?;
        found.push((env.name.clone(), current));
    }
    let _writing = Writing::lock(&config.pins).map_err(Failure::Usage)?;
    let mut pins = Pins::load(&config.pins).map_err(Failure::Usage)?;
    for (env, current) in found {
        for (tool, now) in current {
            let note = match pins.get(&env, &tool) {
                None => "pinned",
                Some(p) if *p == now => "unchanged",
                Some(_) => "re-pinned",
            };
            println!(
                "{env}: {tool}: {note} ({} of upstream `{}`: {})",
                now.tool, now.upstream, now.digest
            );
            pins.set(&env, &tool, now);
        }
    }
    pins.save(&config.pins).map_err(Failure::Usage)?;
    println!("wrote {}", config.pins.display());
    Ok(())
}
