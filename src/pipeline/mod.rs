//! The call pipeline. `call_tool` below is the whole of what happens to a `tools/call`, in
//! order (see docs/pipeline.md):
//!
//! authn (in the transport, before MCP) → authz → validate → rate limit → approval →
//! audit (write-ahead) → forward → audit (outcome).
//!
//! INVARIANT: every call ends in exactly one decision record (allow, deny, pending or error)
//! and, when it ran, one outcome record. Any stage error is a refusal.

pub mod approval;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod forward;
pub mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Map, Value, json};

use crate::audit::{AuditLog, AuditRecord, ClientRef, Outcome, record};
use crate::backend::UpstreamClient;
use crate::config::Environment;
use crate::decision::{Decision, ReasonCode};
use crate::trace::TraceId;
use authn::{Authenticated, Authenticator};

/// Where a contract's calls go: an upstream and the tool name it knows.
pub struct Route {
    pub upstream: Arc<UpstreamClient>,
    pub tool: String,
}

/// Everything one environment runs on. Nothing in it is shared with another environment.
pub struct Runtime {
    pub env: Arc<Environment>,
    pub authn: Authenticator,
    pub audit: AuditLog,
    pub routes: HashMap<String, Route>,
    pub rate: authz::RateLimiter,
    pub upstreams: Vec<Arc<UpstreamClient>>,
    /// The approval queue as read by the API, the console and waiting calls.
    pub approvals: crate::audit::ApprovalReader,
    /// Woken when a decision is taken in this process; waiting calls also poll the store
    /// for decisions taken by other processes.
    pub approval_events: Arc<tokio::sync::Notify>,
}

/// What is known about one request besides its caller.
#[derive(Debug, Clone)]
pub struct CallCtx {
    pub trace: TraceId,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub client: ClientRef,
}

/// A call refused or failed; `server::respond` turns it into the client's answer.
#[derive(Debug)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub reason_code: ReasonCode,
    pub message: String,
    pub data: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// JSON-RPC -32602: the tool is unavailable or its arguments are invalid.
    InvalidParams,
    /// A client-side limit (rate).
    Limited,
    /// The gateway cannot decide or record safely: refused, nothing ran (503 class).
    Unavailable,
}

pub fn base_record(
    rt: &Runtime,
    ctx: &CallCtx,
    auth: Option<&Authenticated>,
    tool: Option<&str>,
    decision: Decision,
    code: ReasonCode,
    reason: &str,
) -> AuditRecord {
    AuditRecord {
        seq: 0,
        ts: record::now_rfc3339(),
        env: rt.env.name.clone(),
        trace_id: ctx.trace.as_str().to_string(),
        request_id: ctx.request_id.clone(),
        session_id: ctx.session_id.clone(),
        principal: auth.map(|a| a.principal().into()),
        client: ctx.client.clone(),
        tool: tool.map(str::to_string),
        args_digest: None,
        args: None,
        decision: decision.as_str().to_string(),
        reason_code: code.as_str().to_string(),
        reason: reason.to_string(),
        contract_digest: None,
        approval: None,
        outcome: None,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

impl Runtime {
    /// Tools this caller may call here: the rest do not exist for them.
    pub fn list_tools(&self, auth: &Authenticated) -> Vec<Tool> {
        if auth.env() != self.env.name {
            return Vec::new();
        }
        self.env
            .contracts
            .values()
            .filter(|c| self.routes.contains_key(&c.tool) && c.allows_any(&auth.principal().roles))
            .map(|c| c.to_tool())
            .collect()
    }

    /// Records a refusal and returns it; if even the refusal cannot be recorded, the answer
    /// becomes "unavailable" (the caller must not believe a refusal was logged when it was
    /// not).
    async fn refuse(&self, mut rec: AuditRecord, refusal: Refusal) -> Refusal {
        rec.decision = Decision::Deny.as_str().into();
        match self.audit.append(rec).await {
            Ok(_) => refusal,
            Err(_) => unavailable(ReasonCode::AuditUnavailable, "the audit log is unavailable; the call was refused"),
        }
    }

    pub async fn call_tool(
        &self,
        auth: &Authenticated,
        ctx: &CallCtx,
        tool: &str,
        args: Option<Map<String, Value>>,
        wait: approval::Wait,
    ) -> Result<CallToolResult, Refusal> {
        // Refusal records carry the digest of the arguments as given; computed only for them.
        let digest_of = |a: &Option<Map<String, Value>>| a.as_ref().map(|m| crate::canonical::digest(&Value::Object(m.clone())));

        // authz: unknown and forbidden tools answer alike.
        let authorized = match authz::authorize(self, auth, tool) {
            Ok(a) => a,
            Err(authz::NotAvailable) => {
                let mut rec = base_record(
                    self,
                    ctx,
                    Some(auth),
                    Some(&printable(tool)),
                    Decision::Deny,
                    ReasonCode::ToolNotAvailable,
                    "no contract for this tool in this environment allows the caller's roles",
                );
                rec.args_digest = digest_of(&args);
                let msg = if printable(tool) == tool {
                    format!("tool `{tool}` is not available")
                } else {
                    "the requested tool is not available".to_string()
                };
                return Err(self
                    .refuse(rec, refusal(RefusalKind::InvalidParams, ReasonCode::ToolNotAvailable, msg))
                    .await);
            }
        };

        // validate
        let validated = match validate::validate(authorized, args) {
            Ok(v) => v,
            Err(invalid) => {
                let (a, errors, args) = *invalid;
                let listed: Vec<String> = errors.iter().map(|e| format!("`{}` {}", e.argument, e.rule)).collect();
                let mut rec = base_record(
                    self,
                    ctx,
                    Some(auth),
                    Some(tool),
                    Decision::Deny,
                    ReasonCode::ArgumentsInvalid,
                    &format!("invalid arguments: {}", listed.join("; ")),
                );
                rec.args_digest = digest_of(&args);
                rec.args = args.as_ref().map(|m| validate::redact(a.contract(), m));
                rec.contract_digest = Some(a.contract().digest.clone());
                let mut r = refusal(
                    RefusalKind::InvalidParams,
                    ReasonCode::ArgumentsInvalid,
                    format!("invalid arguments for `{tool}`: {}", listed.join("; ")),
                );
                r.data.insert("errors".into(), json!(errors));
                return Err(self.refuse(rec, r).await);
            }
        };

        // rate limit
        if let Err(retry) = self.rate.check(validated.authorized()) {
            let mut rec = base_record(
                self,
                ctx,
                Some(auth),
                Some(tool),
                Decision::Deny,
                ReasonCode::RateLimited,
                "rate limit of the contract reached",
            );
            rec.args_digest = Some(validated.digest().to_string());
            rec.args = Some(validated.redacted().clone());
            rec.contract_digest = Some(validated.authorized().contract().digest.clone());
            let secs = retry.as_secs().max(1);
            let mut r = refusal(
                RefusalKind::Limited,
                ReasonCode::RateLimited,
                format!("rate limit reached for `{tool}`; retry after {secs}s"),
            );
            r.data.insert("retry_after".into(), json!(secs));
            return Err(self.refuse(rec, r).await);
        }

        // approval, then the write-ahead record: for a released approval both happen in the
        // store's one transaction.
        let (audited, ctx) = match approval::check(validated) {
            Ok(approved) => match audit::record_allow(self, ctx, approved).await {
                Ok(a) => (a, ctx.clone()),
                Err((_, e)) => {
                    tracing::error!(env = %self.env.name, trace_id = %ctx.trace.as_str(), "refusing call: {e:?}");
                    return Err(unavailable(
                        ReasonCode::AuditUnavailable,
                        "the audit log is unavailable; the call was refused and nothing ran",
                    ));
                }
            },
            Err(v) => match approval::decide(self, auth, ctx, *v, wait).await? {
                approval::Flow::Run(a, run_ctx) => (*a, run_ctx),
                approval::Flow::Answer(mut r) => {
                    add_trace_meta(&mut r, ctx);
                    return Ok(r);
                }
            },
        };
        let ctx = &ctx;

        // forward
        let forward::Forwarded { result, latency_ms } = forward::forward(self, ctx, &audited).await;
        let v = audited.approved().validated();
        let mut rec = base_record(self, ctx, Some(auth), Some(tool), Decision::Allow, ReasonCode::Executed, "");
        // The arguments are in the decision record this one names; the digest ties the two.
        rec.args_digest = Some(v.digest().to_string());
        rec.contract_digest = Some(v.authorized().contract().digest.clone());
        rec.approval = audited.approved().approval().cloned();
        let answer = match result {
            Ok((mut r, digest)) => {
                let digest = Some(digest);
                let status = if r.is_error == Some(true) { "tool_error" } else { "ok" };
                rec.reason = format!("executed (decision record #{})", audited.seq());
                rec.outcome = Some(Outcome {
                    status: status.into(),
                    latency_ms,
                    result_digest: digest,
                });
                add_trace_meta(&mut r, ctx);
                Ok(r)
            }
            Err(e) => {
                tracing::warn!(env = %self.env.name, trace_id = %ctx.trace.as_str(), "upstream failure: {}", e.detail());
                rec.decision = Decision::Error.as_str().into();
                rec.reason_code = ReasonCode::BackendError.as_str().into();
                rec.reason = format!("{e}: {}", e.detail());
                rec.outcome = Some(Outcome {
                    status: "backend_error".into(),
                    latency_ms,
                    result_digest: None,
                });
                // A backend failure is a tool error the agent can read, not a protocol error.
                let mut r = CallToolResult::error(vec![ContentBlock::text(format!("{e}; trace id {}", ctx.trace.as_str()))]);
                add_trace_meta(&mut r, ctx);
                Ok(r)
            }
        };
        // The allow record that let this call run is durable already; the outcome follows it
        // in the next commit, and the answer does not wait for that fsync. A crash in between
        // leaves an allow record without an outcome: "ran, result unknown", which is also
        // what a crash during the call itself leaves.
        if let Err(e) = self.audit.enqueue(rec).await {
            tracing::error!(env = %self.env.name, trace_id = %ctx.trace.as_str(), "outcome record not written: {e:?}");
        }
        answer
    }
}

fn add_trace_meta(r: &mut CallToolResult, ctx: &CallCtx) {
    let meta = r.meta.get_or_insert_with(Default::default);
    meta.0
        .insert("capgate/trace_id".into(), Value::String(ctx.trace.as_str().to_string()));
}

fn refusal(kind: RefusalKind, code: ReasonCode, message: String) -> Refusal {
    Refusal {
        kind,
        reason_code: code,
        message,
        data: Map::new(),
    }
}

pub fn unavailable(code: ReasonCode, message: &str) -> Refusal {
    refusal(RefusalKind::Unavailable, code, message.to_string())
}

/// Caller-chosen names go into records and messages only when printable and short.
fn printable(name: &str) -> String {
    if name.len() <= 128 && name.chars().all(|c| c.is_ascii_graphic()) {
        name.to_string()
    } else {
        format!("(unprintable, {} bytes)", name.len())
    }
}
