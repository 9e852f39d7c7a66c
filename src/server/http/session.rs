//! Sessions: a request naming an MCP session must come from the identity that opened it,
//! on a session the guard's table holds (404 otherwise, recorded), and counts as in flight
//! on it until its answer has gone out. An answer that opens or ends a session updates the
//! table; opening one over the caps closes others (`sessions.rs`).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{Exchange, HttpState, SESSION_HEADER, Step};
use crate::denial::Denial;
use crate::pipeline::authn::Authenticated;
use crate::server::sessions::{InFlight, close_in_rmcp};

pub(super) async fn enter(st: &HttpState, ex: &Exchange, auth: &Authenticated) -> Step<Option<InFlight>> {
    let Some(sid) = &ex.ctx.session_id else {
        return Ok(None);
    };
    match st.sessions.enter(sid, &auth.principal().owner_key()) {
        Ok(in_flight) => Ok(Some(in_flight)),
        Err(refusal) => {
            let denial = Denial::Session(refusal);
            let rec = denial
                .record(&ex.rt.env().name, &ex.ctx)
                .principal(Some(auth.principal()))
                .tool(ex.tool.clone())
                .args_digest(ex.args_digest());
            Err(st.refuse(&denial, rec, Value::Null).await)
        }
    }
}

/// After the answer: the table learns of a session opened or ended, and a streamed answer
/// keeps its request in flight until the stream ends (a direct answer is whole already).
pub(super) fn finish(
    st: &HttpState,
    session: Option<&str>,
    owner: &str,
    is_delete: bool,
    in_flight: Option<InFlight>,
    direct: bool,
    mut resp: Response,
) -> Response {
    if let Some(mark) = in_flight
        && !direct
    {
        resp = resp.map(|body| {
            axum::body::Body::from_stream(futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
                let _still = &mark;
                chunk
            }))
        });
    }
    // Only an answer that opened or ended a session changes the table: every other request
    // leaves its lock alone.
    match session {
        None => {
            if let Some(opened) = resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
                let rt = st.rt();
                let env = rt.env();
                let evicted = st.sessions.opened(opened, owner, env.max_sessions_per_identity, env.max_sessions);
                if !evicted.is_empty() {
                    tracing::warn!(env = %env.name, closed = evicted.len(), "MCP sessions over max_sessions_per_identity or max_sessions; the least recently used were closed");
                    let sessions = st.mcp_sessions.clone();
                    tokio::spawn(async move { close_in_rmcp(&sessions, evicted).await });
                }
            }
        }
        Some(sid) if is_delete && resp.status().is_success() => st.sessions.ended(sid),
        Some(_) => {}
    }
    // rmcp answers a session DELETE with 202; the official SDKs expect 200 or 204.
    if is_delete && resp.status() == StatusCode::ACCEPTED {
        *resp.status_mut() = StatusCode::OK;
    }
    resp
}
