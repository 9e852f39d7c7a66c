//! Every refusal a client can see, turned into its answer in one place: [`http`] for what
//! the HTTP transport and the approvals API answer themselves (401/403/404/409/413/503 and
//! the guard's JSON-RPC errors), [`rpc`] for the JSON-RPC errors of MCP requests, [`stdio`]
//! for a refused stdio line. Internal detail never appears here.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use rmcp::model::{ErrorCode, ErrorData};
use serde_json::{Map, Value, json};

use crate::audit::approval::Refused;
use crate::denial::{Denial, Outage, listed, printable};
use crate::identity::AuthnError;
use crate::trace::TraceId;

pub(crate) const TRACE_HEADER: &str = "x-capgate-trace-id";

pub(crate) fn json_response(status: StatusCode, body: Value, trace: &TraceId) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_trace(&mut resp, trace);
    resp
}

/// Every answer carries its trace ID, so that a user can find the audit record.
pub(crate) fn set_trace(resp: &mut Response, trace: &TraceId) {
    if let Ok(v) = HeaderValue::from_str(trace.as_str()) {
        resp.headers_mut().insert(TRACE_HEADER, v);
    }
}

/// 401 with the RFC 6750 / RFC 9728 challenge. `token_sent` adds `error="invalid_token"`.
fn unauthorized(err: &AuthnError, metadata_url: &str, token_sent: bool, trace: &TraceId) -> Response {
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

fn forbidden(description: &str, trace: &TraceId) -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        json!({"error": "forbidden", "error_description": description, "trace_id": trace.as_str()}),
        trace,
    )
}

fn unavailable(msg: &str, trace: &TraceId) -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "unavailable", "error_description": msg, "trace_id": trace.as_str()}),
        trace,
    )
}

/// A JSON-RPC error sent by the transport itself (parse errors, duplicate keys, sessions).
fn jsonrpc_error(status: StatusCode, id: Value, code: i32, message: &str, reason_code: Option<&str>, trace: &TraceId) -> Response {
    jsonrpc_error_with(status, id, code, message, reason_code, Map::new(), trace)
}

/// [`jsonrpc_error`] with members of the error's `data` that its code defines.
fn jsonrpc_error_with(
    status: StatusCode,
    id: Value,
    code: i32,
    message: &str,
    reason_code: Option<&str>,
    mut data: Map<String, Value>,
    trace: &TraceId,
) -> Response {
    data.insert("trace_id".into(), Value::from(trace.as_str()));
    if let Some(code) = reason_code {
        data.insert("reason_code".into(), Value::from(code));
    }
    json_response(
        status,
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}}),
        trace,
    )
}

/// An error of the approvals API: a stable `error` word, a sentence, the reason code.
fn api_error(status: StatusCode, error: &str, description: &str, reason_code: &str, trace: &TraceId) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description, "reason_code": reason_code, "trace_id": trace.as_str()}),
        trace,
    )
}

/// The HTTP answer to a refusal the transport or the approvals API makes itself. `id` is the
/// JSON-RPC id of the request where it has one; `metadata_url` is the environment's RFC 9728
/// document, named in every 401.
pub(crate) fn http(d: &Denial, trace: &TraceId, metadata_url: &str, id: Value) -> Response {
    let code = d.reason_code();
    match d {
        Denial::HostNotServed { .. } => forbidden("this Host is not served here", trace),
        Denial::OriginNotAllowed { .. } => forbidden("the request's Origin is not allowed", trace),
        Denial::TokenInQuery => unauthorized(&AuthnError::OutsideHeader, metadata_url, true, trace),
        Denial::Unauthenticated { error, token_sent, .. } => unauthorized(error, metadata_url, *token_sent, trace),
        Denial::BodyTooLarge { limit, .. } => json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "payload_too_large", "error_description": format!("the request body is over the limit of {limit} bytes"), "trace_id": trace.as_str()}),
            trace,
        ),
        Denial::MalformedJson { .. } => jsonrpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32700,
            "parse error: the body is not valid JSON",
            Some(code.as_str()),
            trace,
        ),
        Denial::DuplicateKey { key, .. } => jsonrpc_error(
            StatusCode::OK,
            id,
            -32602,
            &format!("invalid request: duplicate key `{key}`"),
            Some(code.as_str()),
            trace,
        ),
        Denial::Session(_) => jsonrpc_error(StatusCode::NOT_FOUND, Value::Null, -32001, "session not found", None, trace),
        Denial::HttpMethod { .. } => {
            let mut resp = jsonrpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                Value::Null,
                -32600,
                &d.reason(),
                Some(code.as_str()),
                trace,
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            resp
        }
        Denial::ContentType { .. } => jsonrpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Value::Null,
            -32600,
            &d.reason(),
            Some(code.as_str()),
            trace,
        ),
        Denial::NotAcceptable => jsonrpc_error(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            -32600,
            &d.reason(),
            Some(code.as_str()),
            trace,
        ),
        // SEP-2575's UnsupportedProtocolVersionError: what was asked, and what is spoken.
        Denial::ProtocolUnsupported { version } => {
            let supported: Vec<&str> = rmcp::model::ProtocolVersion::KNOWN_VERSIONS.iter().map(|v| v.as_str()).collect();
            let data = Map::from_iter([
                ("requested".to_string(), json!(version)),
                ("supported".to_string(), json!(supported)),
            ]);
            jsonrpc_error_with(
                StatusCode::BAD_REQUEST,
                id,
                rmcp::model::ErrorCode::UNSUPPORTED_PROTOCOL_VERSION.0,
                &d.reason(),
                Some(code.as_str()),
                data,
                trace,
            )
        }
        Denial::SessionRequired => jsonrpc_error(StatusCode::BAD_REQUEST, id, -32600, &d.reason(), Some(code.as_str()), trace),
        Denial::InvalidRequest { problem } => jsonrpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            &format!("invalid request: {problem}"),
            Some(code.as_str()),
            trace,
        ),
        // A request gets its error as an answer; a notification, which has no answer, an
        // HTTP error (the MCP transport's rule for input it does not accept).
        Denial::MethodNotFound { method, stateless } => {
            let status = if *stateless {
                StatusCode::NOT_FOUND
            } else if id.is_null() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            jsonrpc_error(
                status,
                id,
                -32601,
                &format!("method not found: {method}"),
                Some(code.as_str()),
                trace,
            )
        }
        Denial::InvalidParams { problem } => {
            let status = if id.is_null() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
            jsonrpc_error(
                status,
                id,
                -32602,
                &format!("invalid params: {problem}"),
                Some(code.as_str()),
                trace,
            )
        }
        // Malformed for the transport whatever the id: a request the revision's rules refuse
        // is a 400 (MCP 2026-07-28, "Server Validation").
        Denial::HeaderMismatch { .. } => jsonrpc_error(StatusCode::BAD_REQUEST, id, -32020, &d.reason(), Some(code.as_str()), trace),
        Denial::RequestMetaMissing { .. } => jsonrpc_error(StatusCode::BAD_REQUEST, id, -32602, &d.reason(), Some(code.as_str()), trace),
        Denial::BodyTimeout { after } => json_response(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": "request_timeout", "error_description": format!("the request body did not arrive within {}s", after.as_secs_f64()), "trace_id": trace.as_str()}),
            trace,
        ),
        Denial::Unavailable(Outage::ApprovalApi) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            Outage::ApprovalApi.message(),
            code.as_str(),
            trace,
        ),
        Denial::Unavailable(o) => unavailable(o.message(), trace),
        Denial::Approval(r) => {
            let (status, error) = match r {
                Refused::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                Refused::NotApprover | Refused::OwnRequest => (StatusCode::FORBIDDEN, "forbidden"),
                Refused::AlreadyVoted | Refused::NotPending | Refused::Tampered => (StatusCode::CONFLICT, "conflict"),
            };
            api_error(status, error, r.message(), code.as_str(), trace)
        }
        Denial::Api(p) => api_error(StatusCode::BAD_REQUEST, "invalid_request", p.message(), code.as_str(), trace),
        Denial::ReadRefused => api_error(StatusCode::FORBIDDEN, "forbidden", &d.reason(), code.as_str(), trace),
        Denial::CertificateRefused { .. }
        | Denial::TooManyConnections { .. }
        | Denial::ToolNotAvailable { .. }
        | Denial::ArgumentsInvalid { .. }
        | Denial::ApprovalLimit { .. }
        | Denial::ApprovalTampered { .. }
        | Denial::RequestStateRefused { .. }
        | Denial::InputRefused { .. }
        | Denial::NeedsCapability { .. }
        | Denial::RateLimited { .. }
        | Denial::ToolStopped { .. } => {
            let e = rpc(d, trace);
            json_response(StatusCode::OK, json!({"jsonrpc": "2.0", "id": id, "error": e}), trace)
        }
    }
}

/// The JSON-RPC error of a refused MCP request.
pub(crate) fn rpc(d: &Denial, trace: &TraceId) -> ErrorData {
    let mut data = Map::new();
    let (code, message) = match d {
        Denial::ToolNotAvailable { kind, tool } => {
            let noun = kind.noun();
            let message = if printable(tool) == *tool {
                format!("{noun} `{tool}` is not available")
            } else {
                format!("the requested {noun} is not available")
            };
            (ErrorCode::INVALID_PARAMS, message)
        }
        Denial::ArgumentsInvalid { tool, errors, more } => {
            data.insert("errors".into(), json!(errors));
            if *more > 0 {
                data.insert("more_errors".into(), json!(more));
            }
            (
                ErrorCode::INVALID_PARAMS,
                format!("invalid arguments for `{tool}`: {}", listed(errors, *more)),
            )
        }
        Denial::ApprovalTampered { id } => {
            data.insert("http_status".into(), json!(503));
            (
                ErrorCode(-32003),
                format!(
                    "approval request {id} failed its integrity check in the store; nothing ran, and the refusal is recorded for the operator"
                ),
            )
        }
        Denial::RequestStateRefused { problem } => (
            ErrorCode::INVALID_PARAMS,
            format!(
                "invalid params: `requestState` is not one this gateway gave for this call ({problem}); nothing ran. Repeat the call without it, or with the one its pending answer carried"
            ),
        ),
        Denial::NeedsCapability { required } => {
            data.insert("requiredCapabilities".into(), required.clone());
            (
                rmcp::model::ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
                "missing required client capability: the upstream needs client capabilities this call did not declare to it (see requiredCapabilities); capgate declares only those the caller's client declares and the contract's client_requests names".to_string(),
            )
        }
        Denial::InputRefused { problem } => (
            ErrorCode::INVALID_PARAMS,
            format!(
                "invalid params: `inputResponses` do not answer what this call's previous answer asked ({problem}); nothing ran, and nothing went upstream"
            ),
        ),
        Denial::ApprovalLimit { open } => (
            ErrorCode(-32029),
            format!(
                "approval request refused: you have {open} open approval requests, the most allowed; wait for a decision on one, or for one to expire, before asking for another"
            ),
        ),
        Denial::RateLimited { tool, retry_after } => {
            let secs = retry_after.as_secs().max(1);
            data.insert("retry_after".into(), json!(secs));
            (ErrorCode(-32029), format!("rate limit reached for `{tool}`; retry after {secs}s"))
        }
        Denial::ToolStopped { tool } => (
            ErrorCode(-32003),
            format!(
                "tool `{tool}` is stopped: its upstream changed the tool's definition since it was pinned; nothing ran, and an operator must review the change and re-pin it (`capgate contracts pin`)"
            ),
        ),
        Denial::Unavailable(o) => {
            data.insert("http_status".into(), json!(503));
            (ErrorCode(-32003), o.message().to_string())
        }
        Denial::Unauthenticated { error, .. } => (ErrorCode(-32001), format!("unauthenticated: {error}")),
        Denial::MethodNotFound { method, .. } => (ErrorCode::METHOD_NOT_FOUND, format!("method not found: {method}")),
        Denial::InvalidParams { problem } => (ErrorCode::INVALID_PARAMS, format!("invalid params: {problem}")),
        Denial::InvalidRequest { problem } => (ErrorCode::INVALID_REQUEST, format!("invalid request: {problem}")),
        Denial::HeaderMismatch { .. } => (ErrorCode::HEADER_MISMATCH, d.reason()),
        other => (ErrorCode::INVALID_REQUEST, other.reason()),
    };
    data.insert("trace_id".into(), Value::String(trace.as_str().to_string()));
    data.insert("reason_code".into(), Value::String(d.reason_code().as_str().to_string()));
    ErrorData::new(code, message, Some(Value::Object(data)))
}

/// The line answering a refused stdio line (`id` where the line had one).
pub(crate) fn stdio(d: &Denial, trace: &TraceId, id: Value) -> String {
    let (code, message, data) = match d {
        Denial::BodyTooLarge { .. } => (
            -32600,
            d.reason(),
            json!({"reason_code": d.reason_code(), "trace_id": trace.as_str()}),
        ),
        Denial::MalformedJson { .. } => (
            -32700,
            d.reason(),
            json!({"reason_code": d.reason_code(), "trace_id": trace.as_str()}),
        ),
        Denial::DuplicateKey { .. } => (
            -32602,
            d.reason(),
            json!({"reason_code": d.reason_code(), "trace_id": trace.as_str()}),
        ),
        // The refusal could not be recorded: nothing about it is claimed but its trace.
        Denial::Unavailable(o) => (-32003, o.message().to_string(), json!({"trace_id": trace.as_str()})),
        other => {
            let e = rpc(other, trace);
            return json!({"jsonrpc": "2.0", "id": id, "error": e}).to_string();
        }
    };
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}}).to_string()
}
