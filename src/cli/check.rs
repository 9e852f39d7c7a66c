//! `capgate check`: validate a configuration and its contracts, list every problem.

use std::path::Path;

use super::Failure;
use crate::config::JwksSource;

pub(super) async fn run(config_path: &Path, offline: bool) -> Result<(), Failure> {
    let config = match crate::config::load(config_path) {
        Ok(c) => c,
        Err(problems) => {
            print_problems(&problems.iter().map(ToString::to_string).collect::<Vec<_>>());
            return Err(Failure::CheckFailed);
        }
    };
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for env in &config.environments {
        if let Err(e) = super::keys::load_signing_key(&env.audit_signing_key) {
            problems.push(format!("environment `{}`: audit.signing_key: {e}", env.name));
        }
        for i in &env.issuers {
            if let Some(k) = &i.mint_key {
                match super::keys::load_signing_key(k) {
                    Err(e) => problems.push(format!("environment `{}`: identity `{}`: mint_key: {e}", env.name, i.issuer)),
                    Ok(key) => {
                        if let Some(why) = mint_key_refused(&i.jwks, &key, offline).await {
                            problems.push(format!(
                                "environment `{}`: identity `{}`: mint_key `{}`: {why}",
                                env.name,
                                i.issuer,
                                k.display()
                            ));
                        }
                    }
                }
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
        if !offline {
            match crate::audit::review_store(&env.audit_store, &env.name).await {
                Ok((p, w)) => {
                    problems.extend(p.into_iter().map(|p| format!("environment `{}`: audit store: {p}", env.name)));
                    warnings.extend(w.into_iter().map(|w| format!("environment `{}`: audit store: {w}", env.name)));
                }
                Err(e) => problems.push(format!(
                    "environment `{}`: audit store {}: {}",
                    env.name,
                    env.audit_store,
                    e.for_operator()
                )),
            }
        }
    }
    for w in &warnings {
        println!("warning: {w}");
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

/// Whether the issuer's JWKS would refuse tokens minted with `key` (a JWKS URL is not
/// fetched offline).
pub(super) async fn mint_key_refused(jwks: &JwksSource, key: &ed25519_dalek::SigningKey, offline: bool) -> Option<String> {
    let text = match jwks {
        JwksSource::File(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            // The authenticator reports an unreadable JWKS file already.
            Err(_) => return None,
        },
        JwksSource::Url(_) if offline => return None,
        JwksSource::Url(u) => {
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .ok()?;
            // An unreachable JWKS URL is the authenticator's problem to report.
            http.get(u).send().await.ok()?.text().await.ok()?
        }
    };
    super::keys::jwks_refuses(&text, key)
}

fn print_problems(problems: &[String]) {
    println!("{} problem(s):", problems.len());
    for p in problems {
        println!("  - {p}");
    }
}
