//! Building an environment's [`Runtime`]: its identity keys, its audit store, its policy,
//! and the routes from each contract to exactly one upstream tool. The upstream clients are
//! made here and kept in the runtime's private routes, so no module outside the pipeline
//! ever holds one.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::anyhow;

use super::authn::Authenticator;
use super::{Route, Runtime};
use crate::backend::UpstreamClient;
use crate::config::{Config, Environment};

/// Every contract of `env` mapped to its upstream tool, connecting each upstream to list
/// its tools; every problem found, or none.
async fn resolve(config: &Config, env: &Environment) -> Result<(HashMap<String, Route>, usize), Vec<String>> {
    let mut problems = Vec::new();
    let mut connected = 0;
    let mut tools_of: Vec<(Arc<UpstreamClient>, Vec<String>)> = Vec::new();
    for u in config.upstreams_of(&env.name) {
        let client = Arc::new(UpstreamClient::new(u.clone()));
        match client.list_tools().await {
            Ok(tools) => tools_of.push((client.clone(), tools.into_iter().map(|t| t.name.to_string()).collect())),
            Err(e) => problems.push(format!("environment `{}`: {e}: {}", env.name, e.detail())),
        }
        connected += 1;
    }
    let mut routes = HashMap::new();
    for c in env.contracts.values() {
        let at = format!("{} (tool `{}`), environment `{}`", c.source, c.tool, env.name);
        let found: Vec<(Arc<UpstreamClient>, String)> = match &c.backend {
            Some(b) => {
                let want = b.tool.clone().unwrap_or_else(|| c.tool.clone());
                match tools_of.iter().find(|(u, _)| u.name() == b.upstream) {
                    Some((u, tools)) if tools.contains(&want) => vec![(u.clone(), want)],
                    Some(_) => {
                        problems.push(format!("{at}: upstream `{}` has no tool `{want}`", b.upstream));
                        continue;
                    }
                    None => {
                        if config.upstreams_of(&env.name).all(|u| u.name != b.upstream) {
                            problems.push(format!(
                                "{at}: `backend.upstream = \"{}\"` is not an upstream of this environment",
                                b.upstream
                            ));
                        }
                        continue;
                    }
                }
            }
            None => tools_of
                .iter()
                .filter(|(_, tools)| tools.contains(&c.tool))
                .map(|(u, _)| (u.clone(), c.tool.clone()))
                .collect(),
        };
        match found.as_slice() {
            [(u, tool)] => {
                routes.insert(
                    c.tool.clone(),
                    Route {
                        upstream: u.clone(),
                        tool: tool.clone(),
                    },
                );
            }
            [] => problems.push(format!(
                "{at}: no upstream of this environment has this tool; name one with `backend = {{ upstream = \"…\", tool = \"…\" }}`"
            )),
            many => problems.push(format!(
                "{at}: {} upstreams have this tool ({}); name one with `backend`",
                many.len(),
                many.iter().map(|(u, _)| u.name().to_string()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    if problems.is_empty() {
        Ok((routes, connected))
    } else {
        Err(problems)
    }
}

/// `capgate check`: connects every upstream of `env` and maps each contract to exactly one
/// upstream tool; returns every problem found. The connections are closed again.
pub(crate) async fn check_routes(config: &Config, env: &Environment) -> Result<(), Vec<String>> {
    resolve(config, env).await.map(|_| ())
}

/// Opens an environment's audit log with its checkpoint signer and sinks. An unreadable
/// signing key stops the start: a log whose checkpoints cannot be signed is not run.
fn open_audit(env: &Environment) -> anyhow::Result<(crate::audit::AuditLog, Arc<dyn crate::audit::AuditReader>)> {
    let key =
        crate::keys::load_signing_key(&env.audit_signing_key).map_err(|e| anyhow!("environment `{}`: audit.signing_key: {e}", env.name))?;
    let mut sinks = Vec::new();
    if let Some(f) = &env.checkpoint_file {
        sinks.push(crate::audit::Sink::File(f.clone()));
    }
    if let Some(c) = &env.checkpoint_command {
        sinks.push(crate::audit::Sink::Command(c.clone()));
    }
    let policy = crate::audit::CheckpointPolicy {
        signer: crate::audit::checkpoint::Signer::new(&env.name, key),
        interval: env.checkpoint_interval,
        sinks,
    };
    crate::audit::open(&env.audit_store, &env.name, policy)
        .map_err(|e| anyhow!("environment `{}`: audit store `{}`: {e:?}", env.name, env.audit_store))
}

pub(super) async fn build(config: &Config, env: Arc<Environment>) -> anyhow::Result<Runtime> {
    // Every private key this environment names must be its owner's alone, used or not.
    for k in env.issuers.iter().filter_map(|i| i.mint_key.as_ref()) {
        crate::keys::check_private_file(k).map_err(|e| anyhow!("environment `{}`: mint_key: {e}", env.name))?;
    }
    let authn = Authenticator::new(&env).await.map_err(|e| anyhow!(e))?;
    let (audit, store) = open_audit(&env)?;
    let (routes, upstreams) = resolve(config, &env).await.map_err(|p| anyhow!(p.join("\n")))?;
    Ok(Runtime {
        env,
        authn,
        audit,
        store,
        policy: Arc::new(crate::policy::RolePolicy),
        routes,
        rate: Default::default(),
        upstreams,
        approval_events: Default::default(),
    })
}
