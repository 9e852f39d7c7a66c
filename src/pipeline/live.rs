//! The generation in force for an environment, and its reload (SPEC §9: SIGHUP and
//! `capgate reload` swap contracts and policies atomically or keep the old set).
//!
//! A reload builds a whole new generation beside the running one: the offered file is
//! loaded and checked as `capgate check` would, the settings a reload cannot change are
//! compared with the running ones, every contract is routed again over the environment's
//! upstream connections, and pins are applied. Only then is the reload recorded, and only
//! once recorded is the generation swapped in. Anything short of that is a refusal, which
//! is recorded too, and the running set stays.
//!
//! INVARIANT: a request reads the generation once ([`Live::now`]) and runs on it to the
//! end; a swap is a pointer store, so no request sees half of a reload.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::json;

use super::Runtime;
use crate::audit::AuditRecord;
use crate::config::{Config, Environment};
use crate::decision::{Decision, ReasonCode};
use crate::request::{CallCtx, ClientRef};

/// The method named in reload records.
pub(crate) const RELOAD_METHOD: &str = "capgate/reload";

/// An environment's current generation.
pub struct Live {
    now: RwLock<Arc<Runtime>>,
    /// One reload at a time: two would each build from the running set and the later swap
    /// would hide the earlier record's.
    reloading: tokio::sync::Mutex<()>,
}

/// What decides calls in a generation, as digests an auditor can compare across records:
/// the contracts (each one's digest, by key) and the policy set, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SetDigests {
    pub(crate) contracts: String,
    pub(crate) policies: Option<String>,
}

impl SetDigests {
    pub(crate) fn of(env: &Environment) -> Self {
        let listing: String = env.contracts.values().map(|c| format!("{}\t{}\n", c.key, c.digest)).collect();
        Self {
            contracts: crate::canonical::sha256_hex(listing.as_bytes()),
            policies: env.policies.as_ref().map(|p| p.digest().to_string()),
        }
    }
}

/// The answer to one environment's reload: applied or refused, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Reload {
    pub(crate) env: String,
    pub(crate) applied: bool,
    pub(crate) running: SetDigests,
    /// What was offered, where it could be loaded.
    pub(crate) offered: Option<SetDigests>,
    pub(crate) problems: Vec<String>,
}

impl Live {
    pub(crate) fn new(rt: Runtime) -> Arc<Self> {
        Arc::new(Self {
            now: RwLock::new(Arc::new(rt)),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The generation a request runs on, to its end.
    pub(crate) fn now(&self) -> Arc<Runtime> {
        self.now.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Offers the environment of the same name in `offered` (the config file as read again
    /// now, or every problem found in it) in place of the running one.
    pub(crate) async fn reload(&self, offered: Result<&Config, &[String]>) -> Reload {
        let _one = self.reloading.lock().await;
        let running = self.now();
        let name = running.env.name.clone();
        let mut answer = Reload {
            env: name.clone(),
            applied: false,
            running: SetDigests::of(&running.env),
            offered: None,
            problems: Vec::new(),
        };
        let built = match offered {
            Err(problems) => Err(problems.to_vec()),
            Ok(config) => match config.environment(&name) {
                None => Err(vec![format!(
                    "environment `{name}` is no longer in the file; a reload cannot remove it"
                )]),
                Some(env) => {
                    answer.offered = Some(SetDigests::of(env));
                    build_next(&running, config, env.clone()).await
                }
            },
        };
        match built {
            Ok(next) => {
                let rec = record(&name, Decision::Allow, ReasonCode::Reloaded, &answer, &next);
                match running.audit.append(rec).await {
                    Ok(_) => {
                        let old = std::mem::replace(&mut *self.now.write().unwrap_or_else(|p| p.into_inner()), Arc::new(next));
                        old.retired.cancel();
                        answer.applied = true;
                        tracing::info!(env = %name, "reloaded: contracts {}, policies {}", short(&answer.offered), policies_of(&answer.offered));
                    }
                    Err(e) => {
                        answer
                            .problems
                            .push(format!("the reload could not be recorded ({e}); the running set stays"));
                        tracing::error!(env = %name, "reload not applied: its record could not be written: {e}");
                    }
                }
            }
            Err(problems) => {
                answer.problems = problems;
                let rec = record(&name, Decision::Deny, ReasonCode::ReloadRefused, &answer, &running);
                if let Err(e) = running.audit.append(rec).await {
                    answer.problems.push(format!("this refusal could not be recorded: {e}"));
                }
                tracing::error!(env = %name, "reload refused, the running set stays: {}", answer.problems.join("; "));
            }
        }
        answer
    }
}

/// A new generation over `running`'s shared parts for `env`, or every reason it cannot be
/// one.
async fn build_next(running: &Runtime, config: &Config, env: Arc<Environment>) -> Result<Runtime, Vec<String>> {
    let changed = restart_changes(&running.env.restart, &env.restart);
    if !changed.is_empty() {
        return Err(vec![format!(
            "environment `{}`: {} changed; a reload applies contracts and policies only ({}): restart to apply the rest",
            env.name,
            changed.join(", "),
            crate::config::resolved::RELOADABLE.join(", ")
        )]);
    }
    let resolved = super::routes::resolve(config, &env, &running.clients).await?;
    let next = Runtime {
        shared: running.shared.clone(),
        policy: super::routes::engine_of(&env),
        env,
        routes: resolved.routes,
        retired: Default::default(),
    };
    next.apply_pins(&resolved.current)
        .map_err(|e| vec![format!("environment `{}`: pins: {e}", next.env.name)])?;
    Ok(next)
}

/// The settings that differ between two files' views of an environment, by name.
fn restart_changes(running: &BTreeMap<String, String>, offered: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = running.keys().chain(offered.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| running.get(*k) != offered.get(*k)).cloned().collect()
}

/// The record of a reload or its refusal: the running and offered digests and the problems
/// go in `args` (what the request carried), the policy set in force after it in `policy`.
fn record(env: &str, decision: Decision, code: ReasonCode, answer: &Reload, after: &Runtime) -> AuditRecord {
    let mut ctx = CallCtx::new(ClientRef::internal("reload"));
    ctx.method = Some(RELOAD_METHOD.into());
    let reason = match decision {
        Decision::Allow => "contracts and policies reloaded".to_string(),
        _ => format!("reload refused ({} problem(s)); the running set stays", answer.problems.len()),
    };
    let args = json!({
        "running": answer.running,
        "offered": answer.offered,
        "problems": answer.problems,
    });
    AuditRecord::new(env, &ctx, decision, code, reason)
        .args_digest(Some(crate::canonical::digest(&args)))
        .args(Some(args))
        .policy(super::authz::set_ref(after))
}

fn short(d: &Option<SetDigests>) -> String {
    d.as_ref().map_or_else(String::new, |d| d.contracts.chars().take(12).collect())
}

fn policies_of(d: &Option<SetDigests>) -> String {
    d.as_ref()
        .and_then(|d| d.policies.as_ref())
        .map_or_else(|| "none".into(), |p| p.chars().take(12).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_changes_names_each_setting_that_differs_added_or_removed() {
        let a: BTreeMap<String, String> = [("`listen`", "1"), ("`identity`", "2"), ("upstream `fw`", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(restart_changes(&a, &a).is_empty());
        let mut b = a.clone();
        b.insert("`listen`".into(), "9".into());
        b.remove("upstream `fw`");
        b.insert("`tls`".into(), "4".into());
        assert_eq!(restart_changes(&a, &b), vec!["`listen`", "`tls`", "upstream `fw`"]);
    }
}
