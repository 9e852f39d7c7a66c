//! Every refusal a client can see, turned into its answer in one place: HTTP 401/403/413/503
//! bodies and headers, and JSON-RPC errors. Internal detail never appears here.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use rmcp::model::{ErrorCode, ErrorData};
use serde_json::{Value, json};

use crate::pipeline::authn::AuthnError;
use crate::pipeline::{Refusal, RefusalKind};
use crate::trace::TraceId;

pub const TRACE_HEADER: &str = "x-capgate-trace-id";

pub fn json_response(status: StatusCode, body: Value, trace: &TraceId) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(trace.as_str()) {
        h.insert(TRACE_HEADER, v);
    }
    resp
}

/// 401 with the RFC 6750 / RFC 9728 challenge. `token_sent` adds `error="invalid_token"`.
pub fn unauthorized(err: &AuthnError, metadata_url: &str, token_sent: bool, trace: &TraceId) -> Response {
    if let AuthnError::KeysUnavailable { .. } = err {
        return unavailable("the identity keys are unavailable; the request was refused", trace);
    }
    let code = match err {
        AuthnError::OutsideHeader | AuthnError::Malformed if !token_sent => "invalid_request",
        _ if token_sent => "invalid_token",
        _ => "",
    };
    let mut challenge = format!("Bearer resource_metadata=\"{metadata_url}\"");
    if !code.is_empty() {
        challenge.push_str(&format!(", error=\"{code}\", error_description=\"{err}\""));
    }
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": if code.is_empty() { "unauthorized" } else { code }, "error_description": err.to_string(), "trace_id": trace.as_str()}),
        trace,
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

pub fn forbidden_origin(trace: &TraceId) -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        json!({"error": "forbidden", "error_description": "the request's Origin is not allowed", "trace_id": trace.as_str()}),
        trace,
    )
}

pub fn forbidden_host(trace: &TraceId) -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        json!({"error": "forbidden", "error_description": "this Host is not served here", "trace_id": trace.as_str()}),
        trace,
    )
}

pub fn too_large(limit: usize, trace: &TraceId) -> Response {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        json!({"error": "payload_too_large", "error_description": format!("the request body is over the limit of {limit} bytes"), "trace_id": trace.as_str()}),
        trace,
    )
}

pub fn unavailable(msg: &str, trace: &TraceId) -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "unavailable", "error_description": msg, "trace_id": trace.as_str()}),
        trace,
    )
}

pub fn session_not_found(trace: &TraceId) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": "session not found", "data": {"trace_id": trace.as_str()}}}),
        trace,
    )
}

/// A JSON-RPC error sent by the transport guard itself (parse errors, duplicate keys).
pub fn jsonrpc_error(status: StatusCode, id: Value, code: i32, message: &str, reason_code: &str, trace: &TraceId) -> Response {
    json_response(
        status,
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": {"trace_id": trace.as_str(), "reason_code": reason_code}}}),
        trace,
    )
}

pub fn refusal_to_error(r: Refusal, trace: &TraceId) -> ErrorData {
    let code = match r.kind {
        RefusalKind::InvalidParams => ErrorCode::INVALID_PARAMS,
        RefusalKind::Limited => ErrorCode(-32029),
        RefusalKind::Unavailable => ErrorCode(-32003),
    };
    let mut data = r.data;
    data.insert("trace_id".into(), Value::String(trace.as_str().to_string()));
    data.insert("reason_code".into(), Value::String(r.reason_code.as_str().to_string()));
    if r.kind == RefusalKind::Unavailable {
        data.insert("http_status".into(), json!(503));
    }
    ErrorData::new(code, r.message, Some(Value::Object(data)))
}

/// An error from the approvals API: a stable `error` word, a sentence, the reason code.
pub fn api_error(status: StatusCode, error: &str, description: &str, reason_code: &str, trace: &TraceId) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description, "reason_code": reason_code, "trace_id": trace.as_str()}),
        trace,
    )
}
