//! The approvals API (`/api/…`): the approval queue as approvers see it, and their
//! decisions. Same bearer-token identity as `/mcp`; the console and `capgate approvals` are
//! its clients.
//!
//! Its guard refuses, in order: a `Host` this listener does not serve and a foreign
//! `Origin` (403), a token outside the `Authorization` header (401), a body over the limit
//! (413), a missing or invalid token (401). Each refusal is recorded before it is answered.
//! A caller sees only requests one of its roles may decide; decisions are taken by the
//! store's writer with their audit records ([`crate::approval`]).

use std::sync::Arc;

use axum::Json;
use axum::body::{Bytes, to_bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{HttpState, authenticate, clean, record_then};
use super::listener::Peer;
use super::respond;
use crate::approval::{self, Answer, Approver, Op, Refused, Request as Approval, Status, Verdict};
use crate::audit::ClientRef;
use crate::decision::{Decision, ReasonCode};
use crate::pipeline::authn::Authenticated;
use crate::pipeline::{CallCtx, base_record};
use crate::trace::TraceId;

/// Bodies here are one short reason.
const MAX_API_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct ApiCtx {
    pub auth: Authenticated,
    pub call: CallCtx,
}

pub async fn guard(State(st): State<Arc<HttpState>>, ConnectInfo(peer): ConnectInfo<Peer>, req: Request, next: Next) -> Response {
    let rt = &st.rt;
    // Owned copies: a borrow of the request must not live across an await (the body is
    // not `Sync`).
    let (traceparent, user_agent) = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        (header("traceparent"), header("user-agent"))
    };
    let trace = TraceId::from_traceparent_or_new(traceparent.as_deref());
    let call = CallCtx {
        trace: trace.clone(),
        request_id: None,
        session_id: None,
        client: ClientRef {
            addr: Some(peer.addr.to_string()),
            user_agent: user_agent.map(|u| clean(&u, 256)),
        },
    };
    let refused = st.pre_auth(req.headers(), req.uri().query(), &call);
    if let Some((rec, resp)) = refused {
        return st.refuse_unauthenticated(&peer, rec, resp).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_API_BODY).await else {
        let rec = base_record(
            rt,
            &call,
            None,
            None,
            Decision::Deny,
            ReasonCode::BodyTooLarge,
            &format!("approvals API body over {MAX_API_BODY} bytes"),
        );
        return record_then(rt, rec, respond::too_large(MAX_API_BODY, &trace)).await;
    };
    let (verified, token_sent) = authenticate(rt, &parts.headers, &peer).await;
    let auth = match verified {
        Ok(a) => a,
        Err(e) => {
            let mut rec = base_record(rt, &call, None, None, Decision::Deny, e.reason_code(), &e.audit_reason());
            rec.reason = format!("approvals API: {}", rec.reason);
            let resp = respond::unauthorized(&e, &rt.env.resource_metadata_url(), token_sent, &trace);
            return st.refuse_unauthenticated(&peer, rec, resp).await;
        }
    };
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    req.extensions_mut().insert(ApiCtx { auth, call });
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(trace.as_str()) {
        resp.headers_mut().insert(respond::TRACE_HEADER, v);
    }
    resp
}

/// Every role that decides some request in this environment.
fn approver_roles(st: &HttpState) -> Vec<String> {
    let env = &st.rt.env;
    let mut roles = env.approver_roles.clone();
    for c in env.contracts.values().filter(|c| c.requires_approval) {
        roles.extend(c.approver_roles.iter().flatten().cloned());
    }
    roles.sort();
    roles.dedup();
    roles
}

fn may_see(req: &Approval, roles: &[String]) -> bool {
    req.approver_roles.iter().any(|r| roles.contains(r))
}

/// A request as the API shows it (SPEC §4 fields, plus what an approver needs to decide).
fn view(req: &Approval, auth: &Authenticated) -> Value {
    let p = auth.principal();
    let mine = req.binding.requester_iss == p.iss && req.binding.requester_sub == p.sub;
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
        "can_decide": open && !mine && !voted && may_see(req, &p.roles),
    })
}

fn store_down(trace: &TraceId) -> Response {
    respond::api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the approval store is unavailable",
        "audit_unavailable",
        trace,
    )
}

pub async fn session(State(st): State<Arc<HttpState>>, axum::Extension(ctx): axum::Extension<ApiCtx>) -> Response {
    let p = ctx.auth.principal();
    let roles = approver_roles(&st);
    Json(json!({
        "sub": p.sub,
        "iss": p.iss,
        "roles": p.roles,
        "environment": st.rt.env.name,
        "approver": p.roles.iter().any(|r| roles.contains(r)),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
}

pub async fn list(
    State(st): State<Arc<HttpState>>,
    axum::Extension(ctx): axum::Extension<ApiCtx>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let trace = &ctx.call.trace;
    let Ok(Query(q)) = query else {
        return respond::api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the only query parameter is `status` (pending, approved, denied, expired, executed or all)",
            "malformed_request",
            trace,
        );
    };
    let status = match q.status.as_deref() {
        None => Some(Status::Pending),
        Some("all") => None,
        Some(s) => match Status::parse(s) {
            Some(s) => Some(s),
            None => {
                return respond::api_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "`status` must be pending, approved, denied, expired, executed or all",
                    "malformed_request",
                    trace,
                );
            }
        },
    };
    let roles = &ctx.auth.principal().roles;
    match st.rt.approvals.list(status, 200).await {
        Ok(reqs) => {
            let now = approval::now_ms();
            let shown: Vec<Value> = reqs
                .iter()
                // Pending past its expiry is waiting for the sweeper; it is not pending.
                .filter(|r| status != Some(Status::Pending) || r.expires_ms > now)
                .filter(|r| may_see(r, roles))
                .map(|r| view(r, &ctx.auth))
                .collect();
            Json(Value::Array(shown)).into_response()
        }
        Err(_) => store_down(trace),
    }
}

pub async fn get_one(State(st): State<Arc<HttpState>>, axum::Extension(ctx): axum::Extension<ApiCtx>, Path(id): Path<String>) -> Response {
    let trace = &ctx.call.trace;
    let req = match st.rt.approvals.get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(trace),
        Err(_) => return store_down(trace),
    };
    if !may_see(&req, &ctx.auth.principal().roles) {
        return forbidden(Refused::NotApprover, trace);
    }
    let trail = match st.rt.approvals.trail(&req.id).await {
        Ok(t) => t,
        Err(_) => return store_down(trace),
    };
    let mut v = view(&req, &ctx.auth);
    if let Some(o) = v.as_object_mut() {
        o.insert("trail".into(), json!(trail));
    }
    Json(v).into_response()
}

fn not_found(trace: &TraceId) -> Response {
    respond::api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        Refused::NotFound.message(),
        "approval_refused",
        trace,
    )
}

fn forbidden(r: Refused, trace: &TraceId) -> Response {
    respond::api_error(StatusCode::FORBIDDEN, "forbidden", r.message(), "approval_refused", trace)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    reason: String,
}

pub async fn approve(st: State<Arc<HttpState>>, ctx: axum::Extension<ApiCtx>, id: Path<String>, body: Bytes) -> Response {
    decide(st, ctx, id, body, Verdict::Approve).await
}

pub async fn deny(st: State<Arc<HttpState>>, ctx: axum::Extension<ApiCtx>, id: Path<String>, body: Bytes) -> Response {
    decide(st, ctx, id, body, Verdict::Deny).await
}

async fn decide(
    State(st): State<Arc<HttpState>>,
    axum::Extension(ctx): axum::Extension<ApiCtx>,
    Path(id): Path<String>,
    body: Bytes,
    verdict: Verdict,
) -> Response {
    let trace = &ctx.call.trace;
    let rt = &st.rt;
    let reason = match serde_json::from_slice::<DecideBody>(&body) {
        Ok(b) => match approval::clean_reason(&b.reason) {
            Some(r) => r,
            None => {
                return respond::api_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "`reason` must not be empty",
                    "malformed_request",
                    trace,
                );
            }
        },
        Err(_) => {
            return respond::api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON object with one string field, `reason`",
                "malformed_request",
                trace,
            );
        }
    };
    // Approval ids are UUIDs; anything else is unknown without touching the store.
    let id = if uuid::Uuid::parse_str(&id).is_ok() {
        id
    } else {
        String::from("(not an approval id)")
    };
    let template = base_record(
        rt,
        &ctx.call,
        Some(&ctx.auth),
        None,
        Decision::Deny,
        ReasonCode::ApprovalRefused,
        "",
    );
    let op = Op::Decide {
        id,
        approver: Box::new(Approver {
            principal: ctx.auth.principal().into(),
        }),
        verdict,
        reason,
        now_ms: approval::now_ms(),
        template: Box::new(template),
    };
    let answer = match rt.audit.approval(op).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(env = %rt.env.name, trace_id = %trace.as_str(), "approval decision refused: {e:?}");
            return store_down(trace);
        }
    };
    match answer {
        Answer::Decided(req) => {
            rt.approval_events.notify_waiters();
            Json(view(&req, &ctx.auth)).into_response()
        }
        Answer::Refused { reason, .. } => match reason {
            Refused::NotFound => not_found(trace),
            Refused::NotApprover | Refused::OwnRequest => forbidden(reason, trace),
            Refused::AlreadyVoted | Refused::NotPending => {
                respond::api_error(StatusCode::CONFLICT, "conflict", reason.message(), "approval_refused", trace)
            }
        },
        _ => store_down(trace),
    }
}
