//! The probe's policy group: at the edges of each policy condition on an argument (values
//! just inside and just outside it, `policy::edges`), the live gateway must decide as the
//! environment's policies decide (`policy::offline`).
//!
//! Only what must be refused or held is sent: a value the policies deny must be refused, one
//! they leave pending must answer pending, and neither may run. A value they allow is
//! reported as decided offline and not sent, since the probe never runs a tool (the
//! module's INVARIANT in `probe/mod.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Forensics, Outcome, PROBE_SUB, Probe};
use crate::contract::Contract;
use crate::identity::Principal;
use crate::policy::offline::{self, Expected};

/// A caller the probe can be: a label, its token, and the principal the gateway makes of it.
struct Caller {
    label: String,
    token: String,
    principal: Principal,
}

impl Probe<'_> {
    /// The callers to try a contract's edges as: in development, each of its roles alone
    /// (policies tell roles apart); else the supplied token, if its roles may call it.
    fn policy_callers(&self, contract: &Contract) -> Vec<Caller> {
        let principal = |iss: &str, sub: &str, roles: Vec<String>| Principal {
            auth_method: "jwt".into(),
            cert: None,
            iss: iss.to_string(),
            roles,
            sub: sub.to_string(),
            token_id: None,
        };
        if let Some(m) = &self.minter {
            return contract
                .allowed_roles
                .iter()
                .map(|role| Caller {
                    label: format!("role `{role}`"),
                    token: m.token(std::slice::from_ref(role)),
                    principal: principal(&m.issuer, PROBE_SUB, vec![role.clone()]),
                })
                .collect();
        }
        let Some(token) = self.token_for(contract) else { return Vec::new() };
        let claims = self.supplied_claims();
        let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        vec![Caller {
            label: "the probe identity".into(),
            principal: principal(&text("iss"), &text("sub"), self.probe_roles()),
            token,
        }]
    }

    /// Sends one edge value; whether the answer is the one expected, what it was, and the
    /// trace its records are under.
    async fn send_edge(
        &mut self,
        token: &str,
        sid: &str,
        tool: &str,
        args: &serde_json::Map<String, Value>,
        expected: Expected,
    ) -> Result<(bool, String, Option<String>), String> {
        let r = self
            .target
            .rpc(token, sid, "tools/call", json!({"name": tool, "arguments": args}))
            .await?;
        let status = r.body.pointer("/result/structuredContent/status").and_then(Value::as_str);
        let ok = match expected {
            Expected::Deny => r.rpc_error().is_some_and(|(code, _)| code == -32602),
            _ => status == Some("pending"),
        };
        // A pending answer's records are its approval request's, under that
        // request's trace (a repeat of it included).
        let trace = r
            .body
            .pointer("/result/structuredContent/trace_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| r.trace());
        if let Some(t) = &trace {
            let f = Forensics {
                authenticated: true,
                tool: true,
            };
            self.traces.push((t.clone(), "policy edge".into(), f));
        }
        let got = match (r.rpc_error(), status) {
            (Some((code, reason)), _) => format!("error {code} {reason}"),
            (None, Some(s)) => format!("`{s}`"),
            (None, None) => "a result: the call ran".into(),
        };
        Ok((ok, got, trace))
    }

    pub(super) async fn policies(&mut self, contracts: &[Arc<Contract>]) -> Result<(), String> {
        let Some(set) = self.env.policies.clone() else {
            return Ok(());
        };
        for c in contracts {
            let Some(baseline) = Self::valid_args(c) else {
                self.record(
                    "policies",
                    format!("`{}`: edges of its policy conditions", c.tool),
                    Outcome::Skipped,
                    "the probe cannot generate valid arguments for this tool".into(),
                    None,
                );
                continue;
            };
            let edges = set.edges(c, &baseline);
            let upstream = self.config.upstream_name_of(&self.env.name, c);
            if edges.is_empty() {
                continue;
            }
            for caller in self.policy_callers(c) {
                let sid = self.target.open(&caller.token).await?;
                let mut sent: HashMap<String, (bool, String, Option<String>)> = HashMap::new();
                for edge in &edges {
                    for (value, inside) in &edge.values {
                        let mut args = baseline.clone();
                        args.insert(edge.argument.clone(), value.clone());
                        let (expected, ids) =
                            offline::decide(&self.env.name, Some(&set), c, &upstream, &caller.principal, &args, offline::now());
                        let side = if *inside { "inside" } else { "outside" };
                        let name = format!(
                            "`{}` as {}: `{}` ({}) with {} = {value} ({side})",
                            c.tool, caller.label, edge.condition, edge.policy, edge.argument
                        );
                        let by = if ids.is_empty() { "no permit".to_string() } else { ids.join(", ") };
                        if expected == Expected::Allow {
                            self.record(
                                "policies",
                                name,
                                Outcome::Skipped,
                                format!("allowed by {by} when decided offline; not sent, the probe never runs a tool"),
                                None,
                            );
                            continue;
                        }
                        // A value on the edge of two conditions is sent once: a second
                        // call would run a second time on a gateway that lets it through.
                        let key = serde_json::to_string(&args).unwrap_or_default();
                        let (ok, got, trace) = match sent.get(&key) {
                            Some(earlier) => earlier.clone(),
                            None => {
                                let answer = self.send_edge(&caller.token, &sid, &c.tool, &args, expected).await?;
                                sent.insert(key, answer.clone());
                                answer
                            }
                        };
                        self.record(
                            "policies",
                            name,
                            if ok { Outcome::Pass } else { Outcome::Finding },
                            format!("the policies say {} ({by}); the gateway answered {got}", expected.as_str()),
                            trace,
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
