//! `capgate check`: validate a configuration and its contracts, list every problem.

use std::path::Path;

use super::Failure;

pub(super) async fn run(config_path: &Path, offline: bool) -> Result<(), Failure> {
    let config = match crate::config::load(config_path) {
        Ok(c) => c,
        Err(problems) => {
            print_problems(&problems.iter().map(ToString::to_string).collect::<Vec<_>>());
            return Err(Failure::CheckFailed);
        }
    };
    let mut problems = Vec::new();
    for env in &config.environments {
        if let Err(e) = super::keys::load_signing_key(&env.audit_signing_key) {
            problems.push(format!("environment `{}`: audit.signing_key: {e}", env.name));
        }
        for i in &env.issuers {
            if let Some(k) = &i.mint_key
                && let Err(e) = super::keys::load_signing_key(k)
            {
                problems.push(format!("environment `{}`: identity `{}`: mint_key: {e}", env.name, i.issuer));
            }
        }
        if let Some(tls) = &env.tls
            && let Err(e) = crate::server::listener::server_config(tls)
        {
            problems.push(format!("environment `{}`: tls: {e:#}", env.name));
        }
        if let Err(e) = crate::pipeline::authn::Authenticator::new(env).await {
            problems.push(e);
        }
        if !offline && let Err(p) = crate::pipeline::check_routes(&config, env).await {
            problems.extend(p);
        }
    }
    if problems.is_empty() {
        let tools: usize = config.environments.iter().map(|e| e.contracts.len()).sum();
        println!(
            "ok: {} environment(s), {tools} contract binding(s), {} upstream(s)",
            config.environments.len(),
            config.upstreams.len()
        );
        Ok(())
    } else {
        print_problems(&problems);
        Err(Failure::CheckFailed)
    }
}

fn print_problems(problems: &[String]) {
    println!("{} problem(s):", problems.len());
    for p in problems {
        println!("  - {p}");
    }
}
