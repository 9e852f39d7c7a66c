//! `capgate tabletop`: scripted threat scenarios run against a live gateway. A scenario is a
//! TOML file: named identities (development tokens minted from the config, or a token from
//! an environment variable) and steps, each a call, a `tools/list`, or an approval decision,
//! with the decision and reason code the gateway must answer. A step whose answer differs
//! is a finding.
//!
//! ```toml
//! name = "an injected agent widens a firewall block"
//! [identities.ivan]
//! roles = ["incident_commander"]
//! [[step]]
//! as = "ivan"
//! call = "create_firewall_block"
//! args = { ip = "10.0.0.1/8", ttl_minutes = 60 }
//! expect = "deny"
//! reason_code = "arguments_invalid"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use super::report::{Check, Outcome, Report};
use super::{Minter, Target};
use crate::config::Environment;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    #[allow(dead_code, reason = "part of the scenario format, for the people who read the file")]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) identities: BTreeMap<String, Identity>,
    #[serde(rename = "step", default)]
    pub(crate) steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Identity {
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    /// Read the token from this environment variable instead of minting one.
    pub(crate) token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Step {
    #[serde(rename = "as")]
    pub(crate) who: String,
    pub(crate) note: Option<String>,
    /// Call this tool with `args`.
    pub(crate) call: Option<String>,
    #[serde(default)]
    pub(crate) args: Option<toml::Value>,
    /// `allow`, `deny` or `pending`.
    pub(crate) expect: Option<String>,
    pub(crate) reason_code: Option<String>,
    /// Remember the approval id this call answers with, under this name.
    pub(crate) save_approval: Option<String>,
    /// The call must answer with the approval saved under this name (same request).
    pub(crate) same_approval: Option<String>,
    /// List the tools.
    #[serde(default)]
    pub(crate) list: bool,
    #[serde(default)]
    pub(crate) expect_listed: Vec<String>,
    #[serde(default)]
    pub(crate) expect_not_listed: Vec<String>,
    /// Approve or deny the approval saved under this name.
    pub(crate) approve: Option<String>,
    pub(crate) deny: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) expect_status: Option<u16>,
}

pub(crate) fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s: Scenario = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for (i, st) in s.steps.iter().enumerate() {
        let kinds = [st.call.is_some(), st.list, st.approve.is_some(), st.deny.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(format!(
                "{}: step {}: give exactly one of `call`, `list`, `approve`, `deny`",
                path.display(),
                i + 1
            ));
        }
        if !s.identities.contains_key(&st.who) {
            return Err(format!("{}: step {}: no identity `{}`", path.display(), i + 1, st.who));
        }
        if st.call.is_some() && st.expect.as_deref().is_none_or(|e| !["allow", "deny", "pending"].contains(&e)) {
            return Err(format!(
                "{}: step {}: `expect` must be allow, deny or pending",
                path.display(),
                i + 1
            ));
        }
    }
    Ok(s)
}

/// What a `tools/call` answer amounts to: decision, reason code, approval id.
fn decision_of(r: &super::Resp) -> (String, String, Option<String>) {
    if r.status == 401 {
        return ("deny".into(), "token_invalid".into(), None);
    }
    if let Some((_, reason)) = r.rpc_error() {
        return ("deny".into(), reason, None);
    }
    let sc = r.body.pointer("/result/structuredContent");
    let field = |k: &str| sc.and_then(|s| s.get(k)).and_then(Value::as_str).map(str::to_string);
    match field("status").as_deref() {
        Some("pending") => ("pending".into(), field("reason_code").unwrap_or_default(), field("approval_id")),
        Some("denied") => ("deny".into(), field("reason_code").unwrap_or_default(), field("approval_id")),
        _ if r.body.pointer("/result/isError") == Some(&Value::Bool(false)) => ("allow".into(), "executed".into(), None),
        _ => ("error".into(), "backend_error".into(), None),
    }
}

pub(crate) struct Runner<'a> {
    env: &'a Environment,
    target: Target,
    minter: Option<Minter>,
    /// Appended to every minted subject, so that runs never see each other's approvals.
    run: String,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(env: &'a Environment, url: &str) -> Result<Self, String> {
        Ok(Self {
            env,
            target: Target::new(url)?,
            minter: Minter::of(env),
            run: uuid::Uuid::new_v4().simple().to_string().chars().take(8).collect(),
        })
    }

    fn token(&self, name: &str, id: &Identity) -> Result<String, String> {
        if let Some(var) = &id.token_env {
            return std::env::var(var).map_err(|_| format!("identity `{name}`: ${var} is not set"));
        }
        let m = self.minter.as_ref().ok_or_else(|| {
            format!(
                "identity `{name}`: environment `{}` has no mint_key; give `token_env`",
                self.env.name
            )
        })?;
        let mut c = m.claims(&id.roles);
        c.insert("sub".into(), json!(format!("{name}.{}", self.run)));
        Ok(m.sign(c))
    }

    pub(crate) async fn run(&self, s: &Scenario, report: &mut Report) -> Result<(), String> {
        let mut tokens = HashMap::new();
        for (name, id) in &s.identities {
            tokens.insert(name.clone(), self.token(name, id)?);
        }
        let mut sessions: HashMap<String, String> = HashMap::new();
        let mut approvals: HashMap<String, String> = HashMap::new();
        for (i, st) in s.steps.iter().enumerate() {
            let token = tokens.get(&st.who).cloned().unwrap_or_default();
            let label = format!(
                "step {}: {} {}",
                i + 1,
                st.who,
                st.note.clone().unwrap_or_else(|| match (&st.call, &st.approve, &st.deny) {
                    (Some(c), _, _) => format!("calls `{c}`"),
                    (_, Some(a), _) => format!("approves `{a}`"),
                    (_, _, Some(d)) => format!("denies `{d}`"),
                    _ => "lists tools".into(),
                })
            );
            let (ok, detail, trace) = if st.call.is_some() || st.list {
                let sid = match sessions.get(&st.who) {
                    Some(s) => s.clone(),
                    None => {
                        let sid = self.target.open(&token).await?;
                        sessions.insert(st.who.clone(), sid.clone());
                        sid
                    }
                };
                if let Some(tool) = &st.call {
                    let args = st
                        .args
                        .as_ref()
                        .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                        .unwrap_or(json!({}));
                    let r = self
                        .target
                        .rpc(&token, &sid, "tools/call", json!({"name": tool, "arguments": args}))
                        .await?;
                    let (decision, reason, approval) = decision_of(&r);
                    let mut ok = Some(decision.as_str()) == st.expect.as_deref();
                    if let Some(want) = &st.reason_code {
                        ok &= *want == reason;
                    }
                    if let (Some(name), Some(id)) = (&st.save_approval, &approval) {
                        approvals.insert(name.clone(), id.clone());
                    }
                    if let Some(name) = &st.same_approval {
                        ok &= approvals.get(name) == approval.as_ref();
                    }
                    (
                        ok,
                        format!(
                            "answered {decision} ({reason}); expected {} ({})",
                            st.expect.as_deref().unwrap_or("?"),
                            st.reason_code.as_deref().unwrap_or("any reason")
                        ),
                        r.trace(),
                    )
                } else {
                    let r = self.target.rpc(&token, &sid, "tools/list", json!({})).await?;
                    let names: Vec<String> = r
                        .body
                        .pointer("/result/tools")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|t| t.get("name")?.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    let ok = st.expect_listed.iter().all(|t| names.contains(t)) && st.expect_not_listed.iter().all(|t| !names.contains(t));
                    (ok, format!("listed {names:?}"), r.trace())
                }
            } else {
                let (name, verdict) = match (&st.approve, &st.deny) {
                    (Some(n), _) => (n, "approve"),
                    (_, Some(n)) => (n, "deny"),
                    _ => return Err("a step without an action".into()),
                };
                let id = approvals
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("{}: no approval saved as `{name}` before {label}", s.name))?;
                let r = self
                    .target
                    .http
                    .post(format!("{}/api/approvals/{id}/{verdict}", self.target.base))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(json!({"reason": st.reason.clone().unwrap_or_else(|| format!("tabletop: {}", s.name))}).to_string())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                let want = st.expect_status.unwrap_or(200);
                (status == want, format!("HTTP {status}; expected {want}"), None)
            };
            report.checks.push(Check {
                group: s.name.clone(),
                name: label,
                outcome: if ok { Outcome::Pass } else { Outcome::Finding },
                detail,
                trace,
            });
        }
        Ok(())
    }
}
