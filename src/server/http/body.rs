//! The body: bounded before it is read (413, from `Content-Length` or while reading), then,
//! for a POST to `/mcp`, parsed once into one JSON value without duplicate keys. The parse is
//! kept in the exchange: its refusals are answered only after authentication
//! (`jsonrpc.rs`), but an unauthenticated refusal's record already names the tool.

use axum::body::{Body, to_bytes};
use axum::http::Method;
use serde_json::Value;

use super::{Exchange, HttpState, Step};
use crate::denial::{Channel, Denial};
use crate::server::envelope;
use crate::server::jsonguard::{BodyError, check_body};
use crate::trace::TraceId;

/// Bodies of the approvals API are one short reason.
pub(super) const MAX_API_BODY: usize = 16 * 1024;

pub(super) async fn read(st: &HttpState, ex: &mut Exchange, body: Body, channel: Channel) -> Step {
    let limit = match channel {
        Channel::Api => MAX_API_BODY,
        Channel::Mcp | Channel::Stdio => ex.rt.env().max_body_bytes,
    };
    let declared = ex
        .parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > limit);
    let after = ex.rt.env().body_timeout;
    let bytes = match declared {
        Some(_) => None,
        None => match tokio::time::timeout(after, to_bytes(body, limit)).await {
            Ok(read) => read.ok(),
            Err(_) => {
                let denial = Denial::BodyTimeout { after };
                let rec = denial.record(&ex.rt.env().name, &ex.ctx);
                let mut resp = st.refuse(&denial, rec, Value::Null).await;
                // The rest of the body may never come: the connection cannot be reused.
                resp.headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                return Err(resp);
            }
        },
    };
    let Some(bytes) = bytes else {
        let denial = Denial::BodyTooLarge { limit, declared, channel };
        let rec = denial.record(&ex.rt.env().name, &ex.ctx);
        return Err(st.refuse(&denial, rec, Value::Null).await);
    };
    if channel == Channel::Mcp && ex.parts.method == Method::POST {
        let parsed = check_body(&bytes);
        // SEP-414: a client may carry its trace in `_meta.traceparent` instead of the header.
        if ex.parts.headers.get("traceparent").is_none()
            && let Ok(v) = &parsed
            && let Some(tp) = crate::server::envelope::member(v, &["params", "_meta", "traceparent"]).and_then(Value::as_str)
        {
            ex.ctx.trace = TraceId::from_traceparent_or_new(Some(tp));
        }
        // What every record of this request names, read as far as the body reads: a body
        // refused for a duplicate key still names its method and tool (serde's reading).
        let facts = match &parsed {
            Ok(v) => envelope::facts(v),
            Err(BodyError::DuplicateKey(_)) => serde_json::from_slice::<Value>(&bytes)
                .map(|v| envelope::facts(&v))
                .unwrap_or_default(),
            Err(BodyError::Syntax) => envelope::Facts::default(),
        };
        ex.ctx.method = facts.method;
        ex.ctx.request_id = facts.request_id;
        ex.tool = facts.tool;
        ex.parsed = Some(parsed);
    }
    ex.bytes = bytes;
    Ok(())
}
