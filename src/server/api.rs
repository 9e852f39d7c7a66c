//! The approvals API (`/api/…`): the approval queue as approvers see it, and their
//! decisions. Same bearer-token identity as `/mcp`; the console and `capgate approvals` are
//! its clients.
//!
//! Its layers (`http/`) refuse, in order: a `Host` this listener does not serve and a
//! foreign `Origin` (403), a token outside the `Authorization` header (401), a body over the
//! limit (413), a missing or invalid token (401). Each refusal is recorded before it is
//! answered. A caller sees only requests the policy lets it see; decisions are taken by the
//! store's writer with their audit records ([`crate::audit::approval`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{Caller, HttpState};
use super::respond;
use crate::audit::AuditRecord;
use crate::audit::approval::{self, Answer, Op, Refused, Request as Approval, Status, Verdict};
use crate::audit::store::PagePosition;
use crate::decision::{Decision, ReasonCode};
use crate::denial::{ApiProblem, Denial, Outage};
use crate::identity::Principal;
use crate::policy::{ApprovalFacts, PolicyEngine};
use crate::trace::TraceId;

/// Whether the caller holds a role that decides some request in this environment (the
/// console shows the queue only to them).
pub(super) fn is_approver(st: &HttpState, p: &Principal) -> bool {
    let rt = st.rt();
    let env = rt.env();
    let policy = rt.policy();
    let may = |roles: &[String], tool: &str| {
        policy
            .may_approve(
                p,
                &ApprovalFacts {
                    env: &env.name,
                    tool,
                    approver_roles: roles,
                },
            )
            .allowed()
    };
    env.contracts
        .values()
        .filter(|c| c.requires_approval)
        .any(|c| may(c.approver_roles.as_deref().unwrap_or(&env.approver_roles), &c.tool))
        || may(&env.approver_roles, "")
        || may(&policy.approver_roles(), "")
}

fn may_see(policy: &dyn PolicyEngine, req: &Approval, p: &Principal) -> bool {
    policy.may_see(p, &req.facts()).allowed()
}

/// A request as the API shows it (SPEC §4 fields, plus what an approver needs to decide).
fn view(policy: &dyn PolicyEngine, req: &Approval, p: &Principal) -> Value {
    let mine = p.is(&req.binding.requester_iss, &req.binding.requester_sub);
    let voted = req.votes.iter().any(|v| v.approver_iss == p.iss && v.approver_sub == p.sub);
    let now = approval::now_ms();
    let open = req.status == Status::Pending && req.expires_ms > now;
    json!({
        "id": req.id,
        "tool": req.binding.tool,
        "arguments": req.args,
        "side_effects": req.side_effects,
        "requester": {"sub": req.binding.requester_sub, "iss": req.binding.requester_iss},
        "environment": req.binding.env,
        "trace_id": req.trace_id,
        "created": approval::rfc3339_ms(req.created_ms),
        "expires": approval::rfc3339_ms(req.expires_ms),
        "created_ms": req.created_ms,
        "expires_ms": req.expires_ms,
        "status": if req.status == Status::Pending && !open { "expired" } else { req.status.as_str() },
        "approvals": req.approvals(),
        "approvals_required": req.required,
        "approver_roles": req.approver_roles,
        "votes": req.votes,
        "args_digest": req.binding.args_digest,
        "contract_digest": req.binding.contract_digest,
        "mine": mine,
        "can_decide": open && !mine && !voted && may_see(policy, req, p),
    })
}

/// An answer that cannot be recorded (the store is down), or whose record the approval
/// rules wrote in the transaction that refused it.
fn answer(st: &HttpState, denial: Denial, trace: &TraceId) -> Response {
    respond::http(&denial, trace, &st.rt().env().resource_metadata_url(), Value::Null)
}

/// A refusal of the API's own: recorded, then answered.
async fn refuse(st: &HttpState, caller: &Caller, denial: Denial) -> Response {
    let rec = denial
        .record(&st.rt().env().name, &caller.call)
        .principal(Some(caller.auth.principal()));
    st.refuse(&denial, rec, Value::Null).await
}

pub(crate) async fn session(State(st): State<Arc<HttpState>>, axum::Extension(caller): axum::Extension<Caller>) -> Response {
    let p = caller.auth.principal();
    Json(json!({
        "sub": p.sub,
        "iss": p.iss,
        "roles": p.roles,
        "environment": st.rt().env().name,
        "approver": is_approver(&st, p),
        "auditor": p.roles.iter().any(|r| st.rt().env().auditor_roles.contains(r)),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    /// Requests per page (1 to [`MAX_PAGE`], 200 by default).
    limit: Option<u32>,
    /// Where the previous page ended (its `x-capgate-next-page`).
    before: Option<String>,
}

/// Most requests one page shows.
const MAX_PAGE: u32 = 500;
/// Most requests one page reads from the store to find those the caller may see: past it,
/// the page ends short, and the next one goes on from there.
const MAX_SCANNED: usize = 5_000;

pub(crate) async fn list(
    State(st): State<Arc<HttpState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let trace = &caller.call.trace;
    let Ok(Query(q)) = query else {
        return refuse(&st, &caller, Denial::Api(ApiProblem::Query)).await;
    };
    let status = match q.status.as_deref() {
        None => Some(Status::Pending),
        Some("all") => None,
        Some(s) => match Status::parse(s) {
            Some(s) => Some(s),
            None => return refuse(&st, &caller, Denial::Api(ApiProblem::StatusValue)).await,
        },
    };
    let limit = match q.limit {
        None => 200,
        Some(n @ 1..=MAX_PAGE) => n,
        Some(_) => return refuse(&st, &caller, Denial::Api(ApiProblem::Limit)).await,
    };
    let mut position = match q.before.as_deref().map(PagePosition::from_cursor) {
        None => None,
        Some(Some(p)) => Some(p),
        Some(None) => return refuse(&st, &caller, Denial::Api(ApiProblem::Cursor)).await,
    };
    let p = caller.auth.principal();
    let rt = st.rt();
    let policy = rt.policy().as_ref();
    let now = approval::now_ms();
    // Filtered before it is limited: a page holds `limit` requests the caller may see,
    // however many it may not (another requester's flood) came between them.
    let want = limit as usize;
    let (mut shown, mut scanned, mut more) = (Vec::new(), 0, true);
    while more && shown.len() < want && scanned < MAX_SCANNED {
        let page = match st.rt().store().approvals(status, position.clone(), limit).await {
            Ok(page) => page,
            Err(_) => return answer(&st, Denial::Unavailable(Outage::ApprovalApi), trace),
        };
        // A short page is the last one.
        more = page.len() == want;
        for r in &page {
            scanned += 1;
            position = Some(PagePosition::of(r));
            // Pending past its expiry is waiting for the sweeper; it is not pending.
            let current = status != Some(Status::Pending) || r.expires_ms > now;
            if current && may_see(policy, r, p) {
                shown.push(view(policy, r, p));
                if shown.len() == want {
                    // Stopped inside the page: what follows is for the next one.
                    more = true;
                    break;
                }
            }
        }
    }
    let mut resp = Json(Value::Array(shown)).into_response();
    if more && let Some(cursor) = position.and_then(|p| http::HeaderValue::from_str(&p.to_cursor()).ok()) {
        resp.headers_mut().insert("x-capgate-next-page", cursor);
    }
    resp
}

pub(crate) async fn get_one(
    State(st): State<Arc<HttpState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let trace = &caller.call.trace;
    let p = caller.auth.principal();
    let rt = st.rt();
    let policy = rt.policy().as_ref();
    let req = match rt.store().approval(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return refuse(&st, &caller, Denial::Approval(Refused::NotFound)).await,
        Err(_) => return answer(&st, Denial::Unavailable(Outage::ApprovalApi), trace),
    };
    if !may_see(policy, &req, p) {
        return refuse(&st, &caller, Denial::Approval(Refused::NotApprover)).await;
    }
    let trail = match st.rt().store().trail(&req.id).await {
        Ok(t) => t,
        Err(_) => return answer(&st, Denial::Unavailable(Outage::ApprovalApi), trace),
    };
    let mut v = view(policy, &req, p);
    if let Some(o) = v.as_object_mut() {
        o.insert("trail".into(), json!(trail));
    }
    Json(v).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    reason: String,
}

pub(crate) async fn approve(st: State<Arc<HttpState>>, caller: axum::Extension<Caller>, id: Path<String>, body: Bytes) -> Response {
    decide(st, caller, id, body, Verdict::Approve).await
}

pub(crate) async fn deny(st: State<Arc<HttpState>>, caller: axum::Extension<Caller>, id: Path<String>, body: Bytes) -> Response {
    decide(st, caller, id, body, Verdict::Deny).await
}

async fn decide(
    State(st): State<Arc<HttpState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
    verdict: Verdict,
) -> Response {
    let trace = &caller.call.trace;
    let rt = st.rt();
    let reason = match serde_json::from_slice::<DecideBody>(&body) {
        Ok(b) => match approval::clean_reason(&b.reason) {
            Some(r) => r,
            None => return refuse(&st, &caller, Denial::Api(ApiProblem::EmptyReason)).await,
        },
        Err(_) => return refuse(&st, &caller, Denial::Api(ApiProblem::Body)).await,
    };
    // Approval ids are UUIDs; anything else is unknown without touching the store.
    let id = if uuid::Uuid::parse_str(&id).is_ok() {
        id
    } else {
        String::from("(not an approval id)")
    };
    let p = caller.auth.principal();
    let template = AuditRecord::new(
        &rt.env().name,
        &caller.call,
        Decision::Deny,
        ReasonCode::ApprovalRefused,
        String::new(),
    )
    .principal(Some(p));
    let op = Op::Decide {
        id,
        approver: Box::new(p.clone()),
        policy: rt.policy().clone(),
        verdict,
        reason,
        now_ms: approval::now_ms(),
        template: Box::new(template),
    };
    let decided = match rt.audit().approval(op).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(env = %rt.env().name, trace_id = %trace.as_str(), "approval decision refused: {e:?}");
            return answer(&st, Denial::Unavailable(Outage::ApprovalApi), trace);
        }
    };
    match decided {
        Answer::Decided(req) => {
            rt.approval_events().notify_waiters();
            Json(view(rt.policy().as_ref(), &req, p)).into_response()
        }
        // Recorded by the approval rules in the transaction that refused it.
        Answer::Refused { reason, .. } => answer(&st, Denial::Approval(reason), trace),
        _ => answer(&st, Denial::Unavailable(Outage::ApprovalApi), trace),
    }
}
