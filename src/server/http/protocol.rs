//! The MCP transport's own refusals, answered once the caller is authenticated, each with a
//! record: an HTTP method `/mcp` does not take (405), a body that is not JSON (415) or an
//! `Accept` that leaves out the answer's type (406), a body that is not one well-formed JSON
//! value (-32700) or holds a duplicate key (-32602: serde keeps the last, so
//! `{"ip":"10.0.0.0/8","ip":"0.0.0.0/0"}` could mean one thing to the gateway and another to
//! the upstream), a JSON-RPC envelope the gateway does not take (`envelope.rs`), a protocol
//! version it does not speak, a request that needs a session and names none, and on
//! 2026-07-28 headers that do not mirror the body (`headers.rs`) or a `_meta` without what
//! that revision requires.

use axum::http::Method;
use rmcp::model::ProtocolVersion;
use serde_json::Value;

use super::{Exchange, HttpState, Step, headers};
use crate::denial::{Channel, Denial};
use crate::pipeline::authn::Authenticated;
use crate::request::clean;
use crate::server::envelope::{self, Kind, Problem};
use crate::server::jsonguard::BodyError;

/// The media types a header lists, without parameters.
pub(crate) fn media_types(value: Option<&http::HeaderValue>) -> impl Iterator<Item = &str> {
    value
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|m| m.split(';').next().unwrap_or("").trim())
}

fn accepts(headers: &http::HeaderMap, wanted: &[&str]) -> bool {
    let accept = headers.get(http::header::ACCEPT);
    wanted.iter().all(|w| media_types(accept).any(|m| m.eq_ignore_ascii_case(w)))
}

/// Protocol versions rmcp speaks on this endpoint.
fn known_version(v: &str) -> bool {
    ProtocolVersion::KNOWN_VERSIONS.iter().any(|k| k.as_str() == v)
}

/// Versions from 2026-07-28 on keep no sessions.
fn stateless(v: Option<&str>) -> bool {
    v.is_some_and(|v| v >= ProtocolVersion::V_2026_07_28.as_str())
}

/// The refusal of this request, if it is one, and the JSON-RPC id its answer carries.
fn problem(ex: &Exchange, auth: &Authenticated) -> Option<(Denial, Value)> {
    let headers = &ex.parts.headers;
    let version = headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok());
    // Two versions: the gateway and the upstream could each believe another.
    if headers.get_all("mcp-protocol-version").iter().count() > 1 {
        let problem = "the MCP-Protocol-Version header is sent more than once".to_string();
        return Some((Denial::HeaderMismatch { problem }, ex.lenient_id()));
    }
    // The request's own id where the body has one: every error answer names its request.
    if let Some(v) = version.filter(|v| !known_version(v)) {
        return Some((Denial::ProtocolUnsupported { version: clean(v, 64) }, ex.lenient_id()));
    }
    let needs_session = ex.ctx.session_id.is_none() && !stateless(version);
    match ex.parts.method {
        Method::POST => {}
        Method::GET if !accepts(headers, &["text/event-stream"]) => return Some((Denial::NotAcceptable, Value::Null)),
        Method::GET | Method::DELETE => return needs_session.then_some((Denial::SessionRequired, Value::Null)),
        ref other => {
            return Some((
                Denial::HttpMethod {
                    method: clean(other.as_str(), 16),
                },
                Value::Null,
            ));
        }
    }
    let content_type = media_types(headers.get(http::header::CONTENT_TYPE)).next().unwrap_or("");
    // One Content-Type, and that one JSON: two could be read differently by rmcp and by an
    // upstream.
    if !content_type.eq_ignore_ascii_case("application/json") || headers.get_all(http::header::CONTENT_TYPE).iter().count() != 1 {
        return Some((
            Denial::ContentType {
                content_type: clean(content_type, 64),
            },
            Value::Null,
        ));
    }
    if !accepts(headers, &["application/json", "text/event-stream"]) {
        return Some((Denial::NotAcceptable, Value::Null));
    }
    let body = match &ex.parsed {
        Some(Ok(v)) => v,
        Some(Err(BodyError::Syntax)) | None => return Some((Denial::MalformedJson { channel: Channel::Mcp }, Value::Null)),
        Some(Err(BodyError::DuplicateKey(key))) => {
            let denial = Denial::DuplicateKey {
                key: key.clone(),
                channel: Channel::Mcp,
            };
            return Some((denial, ex.lenient_id()));
        }
    };
    let id = body
        .get("id")
        .filter(|id| id.is_string() || id.is_i64() || id.is_u64())
        .cloned()
        .unwrap_or(Value::Null);
    // What 2026-07-28 removed with its sessions is not served on it, whatever a 2025-11-25
    // session may do, and whatever its parameters (there are none to judge).
    if headers::mirrors(version)
        && !id.is_null()
        && let Some(method) = body.get("method").and_then(Value::as_str).filter(|m| REMOVED_IN_2026.contains(m))
    {
        let method = method.to_string();
        return Some((Denial::MethodNotFound { method, stateless: true }, id));
    }
    // And what it added is not served on the revisions before it.
    if !headers::mirrors(version) && !id.is_null() && body.get("method").and_then(Value::as_str) == Some("subscriptions/listen") {
        let method = "subscriptions/listen".to_string();
        return Some((Denial::MethodNotFound { method, stateless: false }, id));
    }
    let kind = match envelope::check(body) {
        Err(Problem::InvalidRequest(problem)) => return Some((Denial::InvalidRequest { problem }, id)),
        Err(Problem::MethodNotFound(method)) => {
            let stateless = headers::mirrors(version);
            return Some((Denial::MethodNotFound { method, stateless }, id));
        }
        Err(Problem::InvalidParams(problem)) => return Some((Denial::InvalidParams { problem }, id)),
        Ok(kind) => kind,
    };
    if let Some(problem) = headers::mismatch(headers, body, version) {
        return Some((Denial::HeaderMismatch { problem }, id));
    }
    // Only the contract says which arguments are mirrored, and only one the caller may use
    // is looked at: another's is refused later, as unknown.
    let rt = &ex.rt;
    if headers::mirrors(version)
        && kind == Kind::Request("tools/call")
        && let Some(contract) = envelope::member(body, &["params", "name"])
            .and_then(Value::as_str)
            .and_then(|tool| rt.usable(auth, tool))
    {
        let args = envelope::member(body, &["params", "arguments"]).and_then(Value::as_object);
        if let Some(problem) = headers::param_mismatch(headers, args, contract.mirrored()) {
            return Some((Denial::HeaderMismatch { problem }, id));
        }
    }
    match kind {
        Kind::Request("initialize") => None,
        // `server/discover` is how a client learns the revision, so it names no session on
        // any.
        Kind::Request("server/discover") => request_meta_missing(body).map(|missing| (Denial::RequestMetaMissing { missing }, id)),
        Kind::Request(_) if headers::mirrors(version) => {
            request_meta_missing(body).map(|missing| (Denial::RequestMetaMissing { missing }, id))
        }
        _ if needs_session => Some((Denial::SessionRequired, id)),
        _ => None,
    }
}

/// Requests of the revisions with sessions that 2026-07-28 removed.
const REMOVED_IN_2026: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// What a 2026-07-28 request's `_meta` lacks of what every request must state: the revision
/// has no session to remember them in.
fn request_meta_missing(body: &Value) -> Option<&'static str> {
    let meta = envelope::member(body, &["params", "_meta"]);
    let has = |key: &str, is: fn(&Value) -> bool| meta.and_then(|m| m.get(key)).is_some_and(is);
    if !has(headers::META_PROTOCOL_VERSION, Value::is_string) {
        return Some("`io.modelcontextprotocol/protocolVersion`");
    }
    if !has("io.modelcontextprotocol/clientCapabilities", Value::is_object) {
        return Some("`io.modelcontextprotocol/clientCapabilities`");
    }
    None
}

pub(super) async fn check(st: &HttpState, ex: &Exchange, auth: &Authenticated) -> Step {
    let Some((denial, id)) = problem(ex, auth) else {
        return Ok(());
    };
    // A duplicate key: the whole body's digest (its arguments cannot be told apart from its
    // keys); otherwise the arguments', where they read.
    let digest = match &denial {
        Denial::DuplicateKey { .. } => Some(crate::canonical::sha256_hex(&ex.bytes)),
        _ => ex.args_digest(),
    };
    let rec = denial
        .record(&ex.rt.env().name, &ex.ctx)
        .principal(Some(auth.principal()))
        .tool(ex.tool.clone())
        .args_digest(digest);
    Err(st.refuse(&denial, rec, id).await)
}
