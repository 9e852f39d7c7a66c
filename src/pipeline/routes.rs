//! Building an environment's [`Runtime`]: its identity keys, its audit store, its policy,
//! and the routes from each contract to exactly one upstream tool. The upstream clients are
//! made here and kept in the runtime's private routes, so no module outside the pipeline
//! ever holds one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::anyhow;

use super::authn::Authenticator;
use super::{Route, Runtime, Shared};
use crate::backend::{Surface, UpstreamClient};
use crate::config::{Config, Environment};
use crate::contract::{Contract, Kind};
use crate::pins::{Pin, Pins};

/// What [`resolve`] found: each contract's route, and what each routed tool is now (for
/// its pin).
pub(super) struct Resolved {
    pub(super) routes: HashMap<String, Route>,
    pub(super) current: BTreeMap<String, Pin>,
}

/// A client for each upstream of `env`, not connected yet.
fn clients_of(config: &Config, env: &Environment) -> Vec<Arc<UpstreamClient>> {
    config
        .upstreams_of(&env.name)
        .map(|u| Arc::new(UpstreamClient::new(u.clone())))
        .collect()
}

/// Every contract of `env` mapped to its upstream tool, asking each upstream (`clients`:
/// the environment's, whether new or kept across a reload) for its tools; every problem
/// found, or none.
pub(super) async fn resolve(config: &Config, env: &Environment, clients: &[Arc<UpstreamClient>]) -> Result<Resolved, Vec<String>> {
    let mut problems = Vec::new();
    let mut tools_of: Vec<(Arc<UpstreamClient>, Vec<String>)> = Vec::new();
    let mut definitions: HashMap<(String, String), String> = HashMap::new();
    for client in clients {
        match client.list_tools().await {
            Ok(tools) => {
                for t in &tools {
                    definitions.insert((client.name().to_string(), t.name.to_string()), crate::pins::digest_of_tool(t));
                }
                tools_of.push((client.clone(), tools.into_iter().map(|t| t.name.to_string()).collect()));
            }
            Err(e) => problems.push(format!("environment `{}`: {e}: {}", env.name, e.detail())),
        }
    }
    // Prompts and resources are listed only where a contract names one: an upstream that
    // serves neither is never asked.
    let wants = |k: Kind| env.contracts.values().any(|c| c.kind == k);
    let (prompts, resources) = (wants(Kind::Prompt), wants(Kind::Resource));
    let mut surfaces: Vec<(Arc<UpstreamClient>, Surface)> = Vec::new();
    if prompts || resources {
        for (u, _) in &tools_of {
            match u.list_surface(prompts, resources).await {
                Ok(s) => surfaces.push((u.clone(), s)),
                Err(e) => problems.push(format!("environment `{}`: {e}: {}", env.name, e.detail())),
            }
        }
    }
    let mut routes = HashMap::new();
    let mut current = BTreeMap::new();
    for c in env.contracts.values() {
        let at = format!("{} ({} `{}`), environment `{}`", c.source, c.kind.noun(), c.tool, env.name);
        if c.kind != Kind::Tool {
            match route_surface(c, &surfaces) {
                Ok((u, name)) => {
                    routes.insert(
                        c.key.clone(),
                        Route {
                            upstream: u,
                            tool: name,
                            kind: c.kind,
                        },
                    );
                }
                Err(problem) => problems.push(format!("{at}: {problem}")),
            }
            continue;
        }
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
                let key = (u.name().to_string(), tool.clone());
                if let Some(digest) = definitions.get(&key) {
                    let pin = Pin {
                        upstream: key.0,
                        tool: key.1,
                        digest: digest.clone(),
                    };
                    current.insert(c.tool.clone(), pin);
                }
                routes.insert(
                    c.tool.clone(),
                    Route {
                        upstream: u.clone(),
                        tool: tool.clone(),
                        kind: Kind::Tool,
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
        Ok(Resolved { routes, current })
    } else {
        Err(problems)
    }
}

/// The one upstream that serves a prompt or resource contract, and its name for it: a
/// prompt of that name; a resource at that URI (or under a template that covers it); a
/// template written exactly as the contract's.
fn route_surface(c: &Contract, surfaces: &[(Arc<UpstreamClient>, Surface)]) -> Result<(Arc<UpstreamClient>, String), String> {
    let serves = |s: &Surface| -> Option<String> {
        match (c.kind, &c.uri) {
            (Kind::Prompt, _) => {
                let want = c.backend.as_ref().and_then(|b| b.tool.clone()).unwrap_or_else(|| c.tool.clone());
                s.prompts.iter().any(|p| p.name == want).then_some(want)
            }
            (Kind::Resource, Some(uri)) if uri.is_fixed() => {
                let listed = s.resources.iter().any(|r| r.uri == uri.as_str());
                let templated = s
                    .templates
                    .iter()
                    .any(|t| crate::contract::UriTemplate::parse(&t.uri_template).is_ok_and(|ut| ut.matches(uri.as_str()).is_ok()));
                (listed || templated).then(|| uri.as_str().to_string())
            }
            (Kind::Resource, Some(uri)) => s
                .templates
                .iter()
                .any(|t| t.uri_template == uri.as_str())
                .then(|| uri.as_str().to_string()),
            _ => None,
        }
    };
    let found: Vec<(Arc<UpstreamClient>, String)> = surfaces
        .iter()
        .filter(|(u, _)| c.backend.as_ref().is_none_or(|b| b.upstream == u.name()))
        .filter_map(|(u, s)| serves(s).map(|name| (u.clone(), name)))
        .collect();
    let what = match c.kind {
        Kind::Prompt => "this prompt".to_string(),
        _ => format!("`{}`", c.uri.as_ref().map_or("", |u| u.as_str())),
    };
    match found.as_slice() {
        [(u, name)] => Ok((u.clone(), name.clone())),
        [] => Err(format!("no upstream of this environment serves {what}")),
        many => Err(format!(
            "{} upstreams serve {what} ({}); name one with `backend`",
            many.len(),
            many.iter().map(|(u, _)| u.name().to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `capgate check`: connects every upstream of `env`, maps each contract to exactly one
/// upstream tool and compares each tool's definition with its pin; returns every problem
/// found. The connections are closed again. A tool not pinned yet is not a problem: the
/// gateway pins it on first sight.
pub(crate) async fn check_routes(config: &Config, env: &Environment) -> Result<(), Vec<String>> {
    let resolved = resolve(config, env, &clients_of(config, env)).await?;
    let pins = Pins::load(&config.pins).map_err(|e| vec![format!("pins: {e}")])?;
    let standing = crate::pins::compare(&pins, &env.name, &resolved.current);
    let problems: Vec<String> = standing
        .changed
        .iter()
        .map(|(tool, pinned, now)| format!("environment `{}`: {}", env.name, changed_text(tool, pinned, now)))
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// `capgate contracts pin`: what every routed tool of `env` is now, to be written as its
/// pin.
pub(crate) async fn current_pins(config: &Config, env: &Environment) -> Result<BTreeMap<String, Pin>, Vec<String>> {
    resolve(config, env, &clients_of(config, env)).await.map(|r| r.current)
}

fn changed_text(tool: &str, pinned: &Pin, now: &Pin) -> String {
    if pinned.upstream != now.upstream || pinned.tool != now.tool {
        format!(
            "tool `{tool}` was pinned to `{}` of upstream `{}` and now routes to `{}` of upstream `{}`; review and run `capgate contracts pin`",
            pinned.tool, pinned.upstream, now.tool, now.upstream
        )
    } else if now.digest == GONE {
        format!(
            "tool `{tool}`: upstream `{}` no longer lists `{}`; review and run `capgate contracts pin`",
            now.upstream, now.tool
        )
    } else {
        format!(
            "tool `{tool}`: upstream `{}` changed the definition of `{}` since it was pinned (pinned {}, now {}); review the change and run `capgate contracts pin` to re-pin it",
            now.upstream, now.tool, pinned.digest, now.digest
        )
    }
}

/// The digest of a routed tool its upstream no longer lists: matches no pin.
const GONE: &str = "absent";

impl Runtime {
    /// Compares what the routed tools are now with their pins: a changed tool is stopped, a
    /// matching one runs, one not pinned yet is pinned (and the pins file written). Tools
    /// not in `current` (their upstream did not answer) keep their standing.
    pub(super) fn apply_pins(&self, current: &BTreeMap<String, Pin>) -> Result<(), String> {
        let _writing = crate::pins::Writing::lock(&self.pins_path)?;
        let env = self.env.name.as_str();
        let mut pins = Pins::load(&self.pins_path)?;
        let standing = crate::pins::compare(&pins, env, current);
        let mut stopped = self.stopped.write().unwrap_or_else(|p| p.into_inner());
        for tool in current.keys() {
            stopped.remove(tool);
        }
        for (tool, pinned, now) in &standing.changed {
            if stopped.insert(tool.clone()) {
                tracing::error!(env = %env, "stopped: {}", changed_text(tool, pinned, now));
            }
        }
        if !standing.unpinned.is_empty() {
            for (tool, now) in &standing.unpinned {
                tracing::info!(env = %env, "tool `{tool}` pinned on first sight ({} of upstream `{}`: {})", now.tool, now.upstream, now.digest);
                pins.set(env, tool, now.clone());
            }
            pins.save(&self.pins_path)?;
        }
        self.any_stopped.store(!stopped.is_empty(), std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Lists every routed upstream's tools again and compares them with the pins. A pins
    /// file that cannot be read or written stops every tool (fail closed).
    pub(crate) async fn check_pins(&self) {
        let mut listed: HashMap<&str, Option<Vec<rmcp::model::Tool>>> = HashMap::new();
        // Tools only: prompt and resource contracts are not pinned.
        for route in self.routes.values().filter(|r| r.kind == Kind::Tool) {
            let name = route.upstream.name();
            if listed.contains_key(name) {
                continue;
            }
            let tools = match route.upstream.list_tools().await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(env = %self.env.name, "pin check: upstream `{name}` did not list its tools: {e}: {}", e.detail());
                    None
                }
            };
            listed.insert(name, tools);
        }
        let mut current = BTreeMap::new();
        for (contract_tool, route) in self.routes.iter().filter(|(_, r)| r.kind == Kind::Tool) {
            let Some(Some(tools)) = listed.get(route.upstream.name()) else {
                continue;
            };
            let digest = tools
                .iter()
                .find(|t| t.name == route.tool.as_str())
                .map(crate::pins::digest_of_tool)
                .unwrap_or_else(|| GONE.to_string());
            let pin = Pin {
                upstream: route.upstream.name().to_string(),
                tool: route.tool.clone(),
                digest,
            };
            current.insert(contract_tool.clone(), pin);
        }
        if let Err(e) = self.apply_pins(&current) {
            tracing::error!(env = %self.env.name, "pins: {e}; every tool is stopped until the pins file is readable");
            let mut stopped = self.stopped.write().unwrap_or_else(|p| p.into_inner());
            stopped.extend(self.routes.iter().filter(|(_, r)| r.kind == Kind::Tool).map(|(k, _)| k.clone()));
            self.any_stopped.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether `tool` is stopped for a changed definition.
    pub(super) fn is_stopped(&self, tool: &str) -> bool {
        self.any_stopped.load(std::sync::atomic::Ordering::Acquire) && self.stopped.read().unwrap_or_else(|p| p.into_inner()).contains(tool)
    }

    /// The tools stopped for a changed definition, for `/readyz`.
    pub(crate) fn stopped_tools(&self) -> Vec<String> {
        self.stopped.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

/// What a call may take beyond its upstream's timeout before it counts as gone (the allow
/// record before it, the outcome record after it, a loaded machine).
const CALL_MARGIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens an environment's audit log with its checkpoint signer and sinks. An unreadable
/// signing key stops the start: a log whose checkpoints cannot be signed is not run.
/// Also returns the codec of the environment's `requestState` values, keyed by a key derived
/// from the same signing key (whoever cannot read it cannot forge one).
fn open_audit(
    config: &Config,
    env: &Environment,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<(
    crate::audit::AuditLog,
    Arc<dyn crate::audit::AuditReader>,
    rmcp::model::RequestStateCodec,
)> {
    let key =
        crate::keys::load_signing_key(&env.audit_signing_key).map_err(|e| anyhow!("environment `{}`: audit.signing_key: {e}", env.name))?;
    let state_codec = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"capgate/request-state/v1\n");
        h.update(key.as_bytes());
        rmcp::model::RequestStateCodec::try_new(h.finalize().to_vec())
            .map_err(|e| anyhow!("environment `{}`: request state key: {e}", env.name))?
    };
    let mut sinks = Vec::new();
    if let Some(f) = &env.checkpoint_file {
        sinks.push(crate::audit::Sink::File(f.clone()));
    }
    if let Some(c) = &env.checkpoint_command {
        sinks.push(crate::audit::Sink::Command(c.clone()));
    }
    // A call runs at most its upstream's timeout; the margin covers the records around it.
    let longest = config.upstreams_of(&env.name).map(|u| u.timeout).max().unwrap_or_default();
    let policy = crate::audit::CheckpointPolicy {
        signer: crate::audit::checkpoint::Signer::new(&env.name, key),
        interval: env.checkpoint_interval,
        sinks,
        calls_end_within: longest + CALL_MARGIN,
    };
    let opened = crate::audit::open(&env.audit_store, &env.name, policy, metrics.audit.clone()).map_err(|e| {
        anyhow!(
            "environment `{}`: audit store `{}`: {}",
            env.name,
            env.audit_store,
            e.for_operator()
        )
    })?;
    Ok((opened.0, opened.1, state_codec))
}

/// The policy engine an environment's generation decides with: its Cedar set, else roles.
pub(super) fn engine_of(env: &Environment) -> Arc<dyn crate::policy::PolicyEngine> {
    match &env.policies {
        Some(set) => Arc::new(crate::policy::CedarPolicy { set: set.clone() }),
        None => Arc::new(crate::policy::RolePolicy),
    }
}

pub(super) async fn build(config: &Config, env: Arc<Environment>) -> anyhow::Result<Runtime> {
    // Every private key this environment names must be its owner's alone, used or not.
    for k in env.issuers.iter().filter_map(|i| i.mint_key.as_ref()) {
        crate::keys::check_private_file(k).map_err(|e| anyhow!("environment `{}`: mint_key: {e}", env.name))?;
    }
    let metrics = Arc::new(crate::metrics::Metrics::new(&env.name));
    let authn = Authenticator::new(&env)
        .await
        .map_err(|e| anyhow!(e))?
        .with_metrics(metrics.clone());
    let (audit, store, state_codec) = open_audit(config, &env, &metrics)?;
    let tracing = match &env.otlp {
        Some(settings) => Some(crate::telemetry::Tracing::start(&env.name, settings, metrics.clone())?),
        None => None,
    };
    let events = Arc::new(tokio::sync::Notify::new());
    store.watch(&events);
    let clients = clients_of(config, &env);
    let resolved = resolve(config, &env, &clients).await.map_err(|p| anyhow!(p.join("\n")))?;
    let shared = Arc::new(Shared {
        authn,
        audit,
        store,
        rate: Default::default(),
        clients,
        approval_events: events,
        pins_path: config.pins.clone(),
        stopped: Default::default(),
        any_stopped: Default::default(),
        state_codec,
        metrics,
        tracing,
    });
    let rt = Runtime {
        shared,
        policy: engine_of(&env),
        env,
        routes: resolved.routes,
        retired: Default::default(),
    };
    rt.apply_pins(&resolved.current)
        .map_err(|e| anyhow!("environment `{}`: pins: {e}", rt.env.name))?;
    Ok(rt)
}
