//! The last step: hands the request, with its proven caller, to the gateway's own routes
//! (`listen.rs`: a 2026-07-28 `subscriptions/listen`; `direct.rs`: `tools/call` and
//! `tools/list` on an open session, in this task) or else to rmcp's streamable HTTP service.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::{Caller, Exchange, HttpState};
use crate::backend::relay::LogLevel;
use crate::pipeline::authn::Authenticated;

/// The answer, and whether the direct route gave it.
pub(super) async fn dispatch(
    st: &Arc<HttpState>,
    ex: Exchange,
    auth: Authenticated,
    log: Option<LogLevel>,
    next: Next,
) -> (Response, bool) {
    let Exchange {
        ctx,
        rt,
        arrived,
        parts,
        bytes,
        parsed,
        ..
    } = ex;
    let parsed = parsed.and_then(Result::ok);
    let is_call = ctx.method.as_deref() == Some("tools/call");
    let caller = Caller { auth, call: ctx, log };
    let direct = match parsed {
        Some(body) if parts.method == Method::POST => {
            let version = parts.headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok());
            let caller = match crate::server::listen::try_serve(&rt, &st.shutdown, super::headers::mirrors(version), &body, caller).await {
                Ok(resp) => return (resp, true),
                Err(caller) => caller,
            };
            let sid = caller.call.session_id.clone();
            crate::server::direct::cancel(sid.as_deref(), &body);
            crate::server::direct::try_serve(&rt, &st.mcp_sessions, &parts.headers, sid.as_deref(), body, caller).await
        }
        _ => Err(caller),
    };
    let answered = match direct {
        Ok(resp) => (resp, true),
        Err(caller) => {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(caller);
            (next.run(req).await, false)
        }
    };
    if is_call {
        // From the headers read to the answer ready.
        rt.metrics().call(arrived.elapsed());
    }
    answered
}
