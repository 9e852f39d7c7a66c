//! The null gateway: a pass-through HTTP proxy (axum in, one pooled reqwest client out) that
//! checks nothing and records nothing. What it costs is what any gateway on this machine
//! pays before doing a gateway's work, so capgate's figures are also shown against it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

struct Proxy {
    http: reqwest::Client,
    upstream: String,
}

/// Headers a streamable-HTTP MCP exchange needs, copied both ways.
const PASSED: [&str; 4] = ["content-type", "accept", "mcp-session-id", "mcp-protocol-version"];

async fn forward(State(p): State<Arc<Proxy>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = p.http.post(&p.upstream).body(body);
    for name in PASSED {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    let Ok(r) = req.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = r.status();
    let mut out = HeaderMap::new();
    for name in PASSED {
        if let Some(v) = r.headers().get(name) {
            out.insert(name, v.clone());
        }
    }
    match r.bytes().await {
        Ok(b) => (status, out, b).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Serves on `addr`, forwarding every POST to `upstream`; returns the bound address.
pub(crate) async fn start(addr: &str, upstream: String) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(512).tcp_nodelay(true).build()?;
    let app = Router::new()
        .route("/mcp", post(forward))
        .with_state(Arc::new(Proxy { http, upstream }));
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}
