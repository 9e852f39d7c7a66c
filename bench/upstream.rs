//! The benchmark upstream: a minimal MCP server over streamable HTTP (JSON responses, no
//! SSE) with trivial tools, so that the upstream is never what a benchmark measures.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

struct Tools {
    list: Value,
}

/// `echo` (returns its `text`) and `tool_0` … `tool_{n-1}` (return "ok").
fn tools(n: usize) -> Value {
    let mut tools = vec![json!({"name": "echo", "description": "echo", "inputSchema": {"type": "object"}})];
    for i in 0..n {
        tools.push(json!({"name": format!("tool_{i}"), "description": "ok", "inputSchema": {"type": "object"}}));
    }
    json!({"tools": tools})
}

fn json_response(v: Value, session: Option<&str>) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert("mcp-session-id", s);
    }
    r
}

async fn mcp(State(t): State<Arc<Tools>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let id = req.get("id").cloned();
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    let Some(id) = id else {
        return StatusCode::ACCEPTED.into_response();
    };
    let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    let result = match method {
        "initialize" => {
            let v = req.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-06-18"));
            let sid = uuid::Uuid::new_v4().to_string();
            return json_response(
                json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": v, "capabilities": {"tools": {}}, "serverInfo": {"name": "capgate-bench-upstream", "version": "1"}}}),
                Some(&sid),
            );
        }
        "ping" => json!({}),
        "tools/list" => t.list.clone(),
        "tools/call" => {
            let text = req
                .pointer("/params/arguments/text")
                .and_then(Value::as_str)
                .map(|s| s.len().to_string())
                .unwrap_or_else(|| "ok".into());
            json!({"content": [{"type": "text", "text": text}], "isError": false})
        }
        _ => {
            return json_response(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}}),
                session,
            );
        }
    };
    json_response(json!({"jsonrpc": "2.0", "id": id, "result": result}), session)
}

/// Serves on `addr` until the process ends; returns the bound address.
pub(crate) async fn start(addr: &str, n_tools: usize) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new(Tools { list: tools(n_tools) });
    let app = Router::new()
        .route(
            "/mcp",
            post(mcp)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { StatusCode::OK }),
        )
        .with_state(state);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}
