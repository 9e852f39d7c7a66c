//! Stage 4, approval: a contract with `requires_approval` never runs on the caller's word.
//!
//! Runs after validation (a request for approval is only ever made for valid arguments).
//! Outcomes: [`Approved`] straight away for contracts that need no approval; otherwise the
//! store decides ([`crate::approval`]): a request granted for exactly this call is released
//! once, in the same transaction as its allow record; anything else answers pending or
//! denied and nothing runs. A caller (or the contract) may ask to wait, bounded, for the
//! decision, with progress notifications while it waits.

use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::audit::Audited;
use super::authn::Authenticated;
use super::authz::Authorized;
use super::validate::ValidatedArgs;
use crate::audit::approval::{self as rules, Answer, Binding, Op, Request, Status};
use crate::audit::{ApprovalRef, AuditRecord};
use crate::decision::{Decision, ReasonCode};
use crate::denial::{Denial, Outage};
use crate::request::CallCtx;
use crate::trace::TraceId;

/// The longest any call waits for a decision, whatever it asks.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

/// Proof that a call may execute as far as approval is concerned. Only [`check`] and
/// [`decide`] build it.
pub(crate) struct Approved {
    authorized: Authorized,
    approval: Option<ApprovalRef>,
}

impl Approved {
    pub(crate) fn authorized(&self) -> &Authorized {
        &self.authorized
    }
    pub(crate) fn validated(&self) -> &ValidatedArgs {
        self.authorized.validated()
    }
    pub(crate) fn approval(&self) -> Option<&ApprovalRef> {
        self.approval.as_ref()
    }
}

/// Calls that neither their contract (`requires_approval`) nor the policy that allowed them
/// (`@approval`) hold for approval pass; the rest go to [`decide`].
pub(crate) fn check(authorized: Authorized) -> Result<Approved, Box<Authorized>> {
    if authorized.validated().listed().contract().requires_approval || authorized.decision().approval().is_some() {
        Err(Box::new(authorized))
    } else {
        Ok(Approved {
            authorized,
            approval: None,
        })
    }
}

/// How long a call may wait for the decision, where its progress goes, and what ends the
/// wait early.
#[derive(Default)]
pub(crate) struct Wait {
    pub(crate) requested: Option<Duration>,
    pub(crate) progress: Option<UnboundedSender<String>>,
    /// Where the upstream's progress (if the caller asked for progress) and requests for
    /// the call go.
    pub(crate) relay: crate::backend::relay::ToCaller,
    /// Cancelled when the caller cancels the request (`notifications/cancelled`) or its
    /// session closes (the default is never cancelled). A cancelled wait ends pending: the
    /// call must not run later for a caller that has stopped waiting for it, when nobody
    /// would read its result.
    pub(crate) cancelled: CancellationToken,
    /// The `requestState` a repeated call carries (from an earlier pending or
    /// `input_required` answer).
    pub(crate) request_state: Option<String>,
    /// A 2026-07-28 retry's answers to the input its previous answer asked for.
    pub(crate) input_responses: Option<rmcp::model::InputResponses>,
}

/// What became of a call that needs approval.
pub(crate) enum Flow {
    /// Released: the allow record is durable; the proof runs it under the original call's
    /// trace.
    Run(Box<Audited>),
    /// Nothing runs; this is the answer.
    Answer(CallToolResult),
}

/// What a call that needs approval is for: its approval request, and its `requestState`,
/// are bound to all of it.
fn binding_of(rt: &Runtime, auth: &Authenticated, v: &ValidatedArgs) -> Binding {
    let contract = v.listed().contract();
    let p = auth.principal();
    Binding {
        env: rt.env.name.clone(),
        tool: contract.tool.clone(),
        requester_iss: p.iss.clone(),
        requester_sub: p.sub.clone(),
        args_digest: v.digest().to_string(),
        contract_digest: contract.digest.clone(),
    }
}

/// The `requestState` of a pending answer (MCP 2026-07-28, SEP-2322): the approval request's
/// id, sealed (HMAC-SHA-256, rmcp's codec) with the call's binding as associated data and
/// the request's expiry as its lifetime. It is only ever checked, never believed: a repeat
/// that carries it is refused if it fails the check (tampered, another caller's, other
/// arguments, expired), and one that passes is still decided by the store.
fn seal_state(rt: &Runtime, req: &Request) -> Option<String> {
    let bound = serde_json::to_vec(&req.binding).ok()?;
    let left = u64::try_from(req.expires_ms - rules::now_ms()).ok()?;
    let options = rmcp::model::SealOptions::new()
        .associated_data(&bound)
        .ttl(Duration::from_millis(left));
    rt.state_codec.seal_json_with(&json!({"approval_id": req.id}), &options).ok()
}

/// `payload` sealed as a `requestState` for the call `v` (its caller's), good for `ttl`: the
/// state of a round of input (`rounds.rs`), bound as an approval's is.
pub(super) fn seal_for(rt: &Runtime, v: &ValidatedArgs, payload: &serde_json::Value, ttl: Duration) -> Option<String> {
    let bound = serde_json::to_vec(&binding_of(rt, v.listed().auth(), v)).ok()?;
    let options = rmcp::model::SealOptions::new().associated_data(&bound).ttl(ttl);
    rt.state_codec.seal_json_with(payload, &options).ok()
}

/// Opens a repeat's `requestState` for the call it came with: its payload, or why it fails.
pub(crate) fn open_state(rt: &Runtime, auth: &Authenticated, v: &ValidatedArgs, state: &str) -> Result<serde_json::Value, String> {
    let bound = serde_json::to_vec(&binding_of(rt, auth, v)).map_err(|e| e.to_string())?;
    rt.state_codec
        .open_json_with::<serde_json::Value>(state, &bound)
        .map_err(|e| e.to_string())
}

/// `need`: what the policy that allowed the call asks (its approvers replace the
/// contract's; the larger number of approvals holds).
fn new_request(
    rt: &Runtime,
    auth: &Authenticated,
    ctx: &CallCtx,
    v: &ValidatedArgs,
    need: Option<&crate::policy::ApprovalNeed>,
) -> Request {
    let contract = v.listed().contract();
    let now = rules::now_ms();
    let ttl = i64::try_from(contract.approval_ttl.as_millis()).unwrap_or(i64::MAX);
    Request {
        id: uuid::Uuid::new_v4().to_string(),
        binding: binding_of(rt, auth, v),
        args: v.redacted().clone(),
        side_effects: contract.side_effects.as_str().to_string(),
        approver_roles: match need {
            Some(n) => n.roles.clone(),
            None => contract.approver_roles.clone().unwrap_or_else(|| rt.env.approver_roles.clone()),
        },
        required: need.map_or(contract.approvals_required, |n| n.required.max(contract.approvals_required)),
        trace_id: ctx.trace.as_str().to_string(),
        created_ms: now,
        expires_ms: now.saturating_add(ttl),
        status: Status::Pending,
        votes: Vec::new(),
        intact: true,
    }
}

async fn submit(
    rt: &Runtime,
    auth: &Authenticated,
    ctx: &CallCtx,
    v: &ValidatedArgs,
    policy: Option<crate::audit::record::PolicyRef>,
    need: Option<&crate::policy::ApprovalNeed>,
) -> Result<Answer, Denial> {
    let template = AuditRecord::new(&rt.env.name, ctx, Decision::Pending, ReasonCode::ApprovalRequired, String::new())
        .principal(Some(auth.principal()))
        .tool(Some(v.listed().contract().tool.clone()))
        .policy(policy);
    let op = Op::Call {
        new: Box::new(new_request(rt, auth, ctx, v, need)),
        template: Box::new(template),
        max_open: rt.env.max_open_approvals_per_requester,
    };
    rt.audit.approval(op).await.map_err(|e| {
        tracing::error!(env = %rt.env.name, trace_id = %ctx.trace.as_str(), "refusing call: approval store: {e:?}");
        Denial::Unavailable(Outage::ApprovalStore)
    })
}

pub(crate) async fn decide(rt: &Runtime, auth: &Authenticated, ctx: &CallCtx, authorized: Authorized, wait: Wait) -> Result<Flow, Denial> {
    let policy = super::authz::policy_ref(rt, authorized.decision());
    let validated = authorized.validated();
    let contract = validated.listed().contract().clone();
    let need = authorized.decision().approval().cloned();
    let mut answer = submit(rt, auth, ctx, validated, policy.clone(), need.as_ref()).await?;
    let budget = wait.requested.unwrap_or(contract.approval_wait).min(MAX_WAIT);
    if let Answer::Opened(req) | Answer::StillPending(req) = &answer
        && !budget.is_zero()
    {
        let req = req.clone();
        let deadline = Instant::now() + budget.min(Duration::from_millis(u64::try_from(req.expires_ms - rules::now_ms()).unwrap_or(0)));
        if let Some(decided) = wait_for_decision(rt, &req, deadline, &wait).await {
            // Decided while waiting: ask again, which releases it if granted.
            answer = submit(rt, auth, ctx, validated, policy.clone(), need.as_ref()).await?;
            if decided == Status::Approved && !matches!(answer, Answer::Released { .. }) {
                tracing::info!(env = %rt.env.name, "approval {} was used by a concurrent call", req.id);
            }
        }
    }
    Ok(match answer {
        Answer::Released { request, seq } => {
            let approved = Approved {
                authorized,
                approval: Some(request.approval_ref()),
            };
            let mut run_ctx = ctx.clone();
            run_ctx.trace = TraceId::from_record(&request.trace_id);
            Flow::Run(Box::new(Audited::released(approved, seq, run_ctx)))
        }
        Answer::Opened(req) => {
            let state = seal_state(rt, &req);
            Flow::Answer(pending_result(&req, ReasonCode::ApprovalRequired, state))
        }
        Answer::StillPending(req) => {
            let state = seal_state(rt, &req);
            Flow::Answer(pending_result(&req, ReasonCode::ApprovalPending, state))
        }
        Answer::Denied(req) => Flow::Answer(denied_result(&req)),
        // Refused and recorded in the store's transaction.
        Answer::Limited { open } => {
            return Err(Denial::ApprovalLimit { open });
        }
        Answer::Tampered(req) => return Err(Denial::ApprovalTampered { id: req.id }),
        Answer::Decided(_) | Answer::Refused { .. } | Answer::Expired(_) => {
            return Err(Denial::Unavailable(Outage::OutOfTurn));
        }
    })
}

/// Waits until the request leaves `pending`, the deadline passes, the caller cancels, the
/// call is dropped, or a reload retires the generation the call runs on (a call released
/// under rules no longer in force would run past them: the caller is answered pending, and
/// its repeat is decided by the new ones). Returns the new status if it changed and the
/// caller still waits.
async fn wait_for_decision(rt: &Runtime, req: &Request, deadline: Instant, wait: &Wait) -> Option<Status> {
    let events = &rt.approval_events;
    loop {
        // Registered before the store is read, so that a decision announced between the
        // read and the wait is not missed.
        let notified = events.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Checked before the store is read: a decision and a cancellation seen together end
        // the wait unreleased.
        if wait.cancelled.is_cancelled() {
            tracing::info!(env = %rt.env.name, trace_id = %req.trace_id, "the caller cancelled its wait for approval {}; it stays pending", req.id);
            return None;
        }
        if rt.retired.is_cancelled() {
            tracing::info!(env = %rt.env.name, trace_id = %req.trace_id, "contracts and policies were reloaded while a call waited for approval {}; it is answered pending, and its repeat is decided anew", req.id);
            return None;
        }
        let current = match rt.store.approval(&req.id).await {
            Ok(Some(r)) => r,
            // A store we cannot read decides nothing: stop waiting, answer pending.
            _ => return None,
        };
        if current.status != Status::Pending {
            return Some(current.status);
        }
        if let Some(tx) = &wait.progress {
            let _ = tx.send(format!(
                "waiting for approval of request {} ({} of {} approvals); expires {}",
                req.id,
                current.approvals(),
                current.required,
                rules::rfc3339_ms(req.expires_ms)
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        // Woken by decisions taken here, and by the store for those taken by other gateways
        // sharing it; a store that cannot tell is looked at every `poll_interval`.
        let look_again = rt.store.poll_interval().map_or(left, |p| left.min(p));
        tokio::select! {
            biased;
            () = wait.cancelled.cancelled() => {}
            () = rt.retired.cancelled() => {}
            _ = tokio::time::timeout(look_again, notified) => {}
        }
    }
}

fn pending_result(req: &Request, code: ReasonCode, state: Option<String>) -> CallToolResult {
    let expires = rules::rfc3339_ms(req.expires_ms);
    let text = format!(
        "Approval required: `{}` did not run. Request {} is pending ({} of {} approvals from {}) until {expires}. An approver must approve it in the capgate console or with `capgate approvals approve {}`; then repeat the identical call to run it once. Trace id {}.",
        req.binding.tool,
        req.id,
        req.approvals(),
        req.required,
        req.approver_roles.join(", "),
        req.id,
        req.trace_id
    );
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(json!({
        "status": "pending",
        "reason_code": code.as_str(),
        "approval_id": req.id,
        "expires_at": expires,
        "approvals": req.approvals(),
        "approvals_required": req.required,
        "trace_id": req.trace_id,
        "next": "ask an approver to approve the request, then repeat the identical call before it expires",
        // Echoed on the repeat (as `requestState`), it is checked against that call.
        "requestState": state,
    }));
    r
}

fn denied_result(req: &Request) -> CallToolResult {
    let by = req
        .votes
        .iter()
        .find(|v| v.verdict == rules::Verdict::Deny)
        .map(|v| format!("`{}`: {}", v.approver_sub, v.reason))
        .unwrap_or_default();
    let text = format!(
        "`{}` did not run: approval request {} was denied by {by}. A new request for the same call can be made after {}. Trace id {}.",
        req.binding.tool,
        req.id,
        rules::rfc3339_ms(req.expires_ms),
        req.trace_id
    );
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = Some(json!({
        "status": "denied",
        "reason_code": ReasonCode::ApprovalDenied.as_str(),
        "approval_id": req.id,
        "trace_id": req.trace_id,
    }));
    r
}
