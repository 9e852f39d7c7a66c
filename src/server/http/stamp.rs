//! The first step: every request gets its trace ID (from a valid W3C `traceparent`, else a
//! new one) and the facts of its client and MCP session, before anything can refuse it, so
//! that every refusal after it has a complete record.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::Request;

use super::{Exchange, SESSION_HEADER};
use crate::denial::Channel;
use crate::pipeline::Runtime;
use crate::request::{CallCtx, ClientRef, clean};
use crate::server::listener::Peer;
use crate::trace::TraceId;

/// The exchange, and the body apart from it: the body is not `Sync`, and the exchange is
/// borrowed across the steps' awaits.
pub(super) fn stamp(peer: Peer, req: Request, channel: Channel, rt: Arc<Runtime>) -> (Exchange, Body) {
    let (parts, body) = req.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let ctx = CallCtx {
        trace: TraceId::from_traceparent_or_new(header("traceparent")),
        method: None,
        request_id: None,
        // Only MCP requests belong to sessions.
        session_id: match channel {
            Channel::Mcp => header(SESSION_HEADER).map(|s| clean(s, 128)),
            Channel::Api | Channel::Stdio => None,
        },
        client: ClientRef {
            addr: Some(peer.addr.to_string()),
            user_agent: header("user-agent").map(|u| clean(u, 256)),
        },
        // Begun once the body is read: it may name the trace instead (`body.rs`).
        span: Default::default(),
    };
    let ex = Exchange {
        peer,
        ctx,
        rt,
        arrived: Instant::now(),
        parts,
        bytes: Bytes::new(),
        parsed: None,
        tool: None,
    };
    (ex, body)
}
