//! The direct route for the two requests an agent repeats: `tools/call` and `tools/list` on
//! a session rmcp has opened. They run through the same pipeline as through rmcp's handler
//! (`mcp.rs`), but in the request's own task, without rmcp's per-session worker and
//! per-request task hops, which cost more than the gateway's own checks (docs/BENCHMARKS.md).
//!
//! Only requests whose answer is one JSON message take this route; everything else goes to
//! rmcp unchanged: `initialize`, notifications, other methods, a session rmcp does not know
//! (404 there), a protocol version rmcp would refuse or that negotiates per request, missing
//! `Accept`/`Content-Type` (406/415 there), a progress token or approval wait (notifications
//! need rmcp's stream), and any contract that needs approval.
//!
//! Which route a call takes depends only on what the caller may already know: a contract's
//! need for approval is looked at only for a tool in the caller's own list, so a forbidden
//! tool and an unknown one take the same route and answer alike.
//!
//! INVARIANT: this route adds no decision of its own. Authentication, the body checks and the
//! session owner were settled by the layers before it; the call goes to
//! [`crate::pipeline::Runtime::call_tool`] like any other.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use rmcp::model::{CallToolRequest, JsonRpcRequest, ListToolsRequest, ProtocolVersion, RequestId, ServerJsonRpcMessage, ServerResult};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::http::Caller;
use super::respond;
use crate::denial::{Denial, Outage};
use crate::pipeline::Runtime;
use crate::pipeline::approval::Wait;

/// Protocol versions that keep sessions (before SEP-2567) and that rmcp accepts on a
/// session request. A request naming another version goes to rmcp, which refuses it.
fn legacy_session_version(headers: &HeaderMap) -> bool {
    match headers.get("mcp-protocol-version") {
        // rmcp reads an absent header as 2025-03-26.
        None => true,
        Some(v) => v
            .to_str()
            .is_ok_and(|v| v < ProtocolVersion::V_2026_07_28.as_str() && ProtocolVersion::KNOWN_VERSIONS.iter().any(|k| k.as_str() == v)),
    }
}

/// The two methods this route answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Call,
    List,
}

/// Which of this route's requests the body is, by its shape alone; `None`: rmcp's.
fn body_eligible(rt: &Runtime, caller: &Caller, body: &Value) -> Option<Method> {
    let method = match body.get("method").and_then(Value::as_str) {
        Some("tools/call") => Method::Call,
        Some("tools/list") => Method::List,
        _ => return None,
    };
    // rmcp reads a message with `result` or `error` beside `method` as no message at all.
    if body.get("id").is_none() || body.get("result").is_some() || body.get("error").is_some() {
        return None;
    }
    if let Some(meta) = crate::server::envelope::member(body, &["params", "_meta"]).and_then(Value::as_object)
        && (meta.contains_key("progressToken")
            || meta.contains_key("capgate/approval_wait")
            || meta.keys().any(|k| k.starts_with("io.modelcontextprotocol/")))
    {
        return None;
    }
    // Approval flows may wait and report progress, and an upstream may ask the caller
    // something during a call: rmcp's stream carries both. Only a tool the caller may use is
    // looked at, so the route reveals nothing `tools/list` does not.
    let needs_stream = crate::server::envelope::member(body, &["params", "name"])
        .and_then(Value::as_str)
        .and_then(|tool| rt.usable(&caller.auth, tool))
        .is_some_and(|c| rt.policy().may_need_approval(c) || !c.client_requests.is_empty());
    (method == Method::List || !needs_stream).then_some(method)
}

/// A request this route answers, read by rmcp's own types for its method.
#[allow(
    clippy::large_enum_variant,
    reason = "made once per request and taken apart at once; a box would add an allocation to the hot path"
)]
enum Eligible {
    List(RequestId),
    Call(RequestId, CallToolRequest),
}

impl Eligible {
    /// `body` is a `method` request by [`body_eligible`]: it is read straight into that
    /// method's request type. rmcp's `ClientJsonRpcMessage` would reach the same type by
    /// trying each of its request kinds in turn (an untagged enum), which cost more than all
    /// of the gateway's checks of the call (callgrind, docs/BENCHMARKS.md). A body that type
    /// refuses goes to rmcp as it came, which answers it as before.
    fn read(method: Method, body: Value) -> Option<Self> {
        match method {
            Method::List => {
                let r: JsonRpcRequest<ListToolsRequest> = serde_json::from_value(body).ok()?;
                Some(Self::List(r.id))
            }
            Method::Call => {
                let r: JsonRpcRequest<CallToolRequest> = serde_json::from_value(body).ok()?;
                Some(Self::Call(r.id, r.request))
            }
        }
    }
}

/// Calls running on this route, by session and request id, with what cancels each: rmcp
/// never sees them, so a `notifications/cancelled` for one is matched here (the session
/// step has already checked that the caller owns the session it names).
static RUNNING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<(String, String), CancellationToken>>> =
    std::sync::LazyLock::new(Default::default);

fn running() -> std::sync::MutexGuard<'static, std::collections::HashMap<(String, String), CancellationToken>> {
    // Nothing panics while holding this lock; a poisoned one still holds a whole map.
    RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A call's entry in [`RUNNING`], removed when the call ends.
struct Running(String, String);

impl Drop for Running {
    fn drop(&mut self) {
        running().remove(&(std::mem::take(&mut self.0), std::mem::take(&mut self.1)));
    }
}

/// A `notifications/cancelled` on session `sid`: cancels the call it names if that call runs
/// on this route. The notification still goes on to rmcp, for the calls rmcp runs.
pub(crate) fn cancel(session_id: Option<&str>, body: &Value) {
    if body.get("method").and_then(Value::as_str) != Some("notifications/cancelled") {
        return;
    }
    let (Some(sid), Some(id)) = (
        session_id,
        crate::server::envelope::member(body, &["params", "requestId"]).and_then(|id| match id {
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }),
    ) else {
        return;
    };
    if let Some(ct) = running().get(&(sid.to_string(), id)) {
        ct.cancel();
    }
}

/// Answers the request if it is this route's; otherwise hands the request's context back,
/// and the guard passes the request on to rmcp as it came (from its bytes).
pub(crate) async fn try_serve(
    rt: &Arc<Runtime>,
    sessions: &LocalSessionManager,
    headers: &HeaderMap,
    session_id: Option<&str>,
    body: Value,
    caller: Caller,
) -> Result<Response, Caller> {
    let Some(sid) = session_id else {
        return Err(caller);
    };
    // `Accept` and `Content-Type` need no look here: the protocol step has refused every
    // POST whose headers rmcp would refuse.
    if !legacy_session_version(headers) {
        return Err(caller);
    }
    // The upstream's log messages for a session that asked for them need rmcp's stream.
    if caller.log.is_some() {
        return Err(caller);
    }
    let Some(method) = body_eligible(rt, &caller, &body) else {
        return Err(caller);
    };
    if !sessions.has_session(&Arc::from(sid)).await.unwrap_or(false) {
        return Err(caller);
    }
    let message = match Eligible::read(method, body) {
        Some(Eligible::List(id)) => {
            let mut result = ServerResult::ListToolsResult(super::mcp::list_result(rt, &caller));
            result.strip_result_type_for_legacy_peer();
            ServerJsonRpcMessage::response(result, id)
        }
        Some(Eligible::Call(id, req)) => {
            let trace = caller.call.trace.clone();
            let (rt, Caller { auth, mut call, .. }) = (rt.clone(), caller);
            // The id as the caller wrote it (a number's digits, a string's text): what its
            // `notifications/cancelled` will name.
            let key = (sid.to_string(), id.to_string());
            call.request_id = Some(key.1.clone());
            // No peer: this route carries nothing to the caller, so an upstream's request is
            // refused at once, and recorded (the contract of a tool on this route names none).
            let wait = Wait {
                request_state: req.params.request_state.clone(),
                ..Wait::default()
            };
            running().insert(key.clone(), wait.cancelled.clone());
            let _running = Running(key.0, key.1);
            // Its own task: a client that disconnects must not cut a call short between its
            // allow record and its outcome record. Boxed first: the pipeline's future is ~9 KB,
            // and tokio moves a spawned future several times on its way into the task
            // (docs/BENCHMARKS.md, "The call's future, moved whole").
            let done = tokio::spawn(Box::pin(async move {
                let p = req.params;
                rt.call_tool(&auth, &call, &p.name, p.arguments, wait).await
            }))
            .await;
            match done {
                Ok(Ok(rmcp::model::CallToolResponse::Complete(r))) => {
                    let mut result = ServerResult::CallToolResult(r);
                    result.strip_result_type_for_legacy_peer();
                    result.strip_non_object_output_for_legacy_peer();
                    ServerJsonRpcMessage::response(result, id)
                }
                Ok(Err(denial)) => ServerJsonRpcMessage::error(respond::rpc(&denial, &trace), Some(id)),
                // A session's caller is never answered by rounds (`rounds.rs`).
                Ok(Ok(_)) => {
                    let denial = Denial::Unavailable(Outage::CallIncomplete);
                    ServerJsonRpcMessage::error(respond::rpc(&denial, &trace), Some(id))
                }
                Err(e) => {
                    tracing::error!(trace_id = %trace.as_str(), "tool call task failed: {e}");
                    let denial = Denial::Unavailable(Outage::CallIncomplete);
                    ServerJsonRpcMessage::error(respond::rpc(&denial, &trace), Some(id))
                }
            }
        }
        None => return Err(caller),
    };
    let bytes = serde_json::to_vec(&message).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
