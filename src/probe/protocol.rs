//! The probe's protocol, origin and slow-client groups: requests that are not well-formed
//! MCP over HTTP (batches, bad JSON-RPC shapes, methods spelled almost right, wrong media
//! types and HTTP methods, no session, an unknown protocol revision), browser origins that
//! differ from the gateway's in scheme, host or port, and clients that send their headers
//! or body too slowly. Each must be refused with its specific error and, when it came with a
//! trace ID, recorded.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Forensics, Outcome, Probe, Resp};

/// One malformed request and what a sound gateway answers.
struct Case {
    name: &'static str,
    method: Method,
    headers: Vec<(&'static str, &'static str)>,
    with_session: bool,
    body: String,
    status: u16,
    /// The JSON-RPC error code, when the answer is a JSON-RPC error.
    rpc: Option<i64>,
    reason_code: &'static str,
}

fn case(name: &'static str, body: String, status: u16, rpc: Option<i64>, reason_code: &'static str) -> Case {
    Case {
        name,
        method: Method::POST,
        headers: Vec::new(),
        with_session: true,
        body,
        status,
        rpc,
        reason_code,
    }
}

fn cases() -> Vec<Case> {
    // A call the probe identity may not make, so that a gateway that took one of these
    // shapes still refuses it.
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "capgate_probe_no_such_tool", "arguments": {super::MARKER: true}}});
    let with = |k: &str, v: Value| {
        let mut c = call.clone();
        if let Some(o) = c.as_object_mut() {
            o.insert(k.to_string(), v);
        }
        c.to_string()
    };
    let without_jsonrpc = {
        let mut c = call.clone();
        if let Some(o) = c.as_object_mut() {
            o.remove("jsonrpc");
        }
        c.to_string()
    };
    let params = |p: Value| json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": p}).to_string();
    let mut all = vec![
        case("a JSON-RPC batch", format!("[{call}]"), 400, Some(-32600), "malformed_request"),
        case("no `jsonrpc` member", without_jsonrpc, 400, Some(-32600), "malformed_request"),
        case(
            "`jsonrpc` \"1.0\"",
            with("jsonrpc", json!("1.0")),
            400,
            Some(-32600),
            "malformed_request",
        ),
        case(
            "an `id` that is an object",
            with("id", json!({"a": 1})),
            400,
            Some(-32600),
            "malformed_request",
        ),
        case(
            "an `id` that is a fraction",
            with("id", json!(1.5)),
            400,
            Some(-32600),
            "malformed_request",
        ),
        case(
            "a `method` that is a number",
            with("method", json!(7)),
            400,
            Some(-32600),
            "malformed_request",
        ),
        case(
            "`params.name` not a string",
            params(json!({"name": 5})),
            200,
            Some(-32602),
            "malformed_request",
        ),
        case(
            "`arguments` not an object",
            params(json!({"name": "capgate_probe_no_such_tool", "arguments": ["x"]})),
            200,
            Some(-32602),
            "malformed_request",
        ),
        case("`params` not an object", params(json!("x")), 200, Some(-32602), "malformed_request"),
        case(
            "method in capitals (TOOLS/CALL)",
            with("method", json!("TOOLS/CALL")),
            200,
            Some(-32601),
            "method_not_found",
        ),
        case(
            "method with a trailing space",
            with("method", json!("tools/call ")),
            200,
            Some(-32601),
            "method_not_found",
        ),
        case(
            "method with a NUL byte",
            with("method", json!("tools/call\u{0}")),
            200,
            Some(-32601),
            "method_not_found",
        ),
        case(
            "a client method sent to the server",
            with("method", json!("sampling/createMessage")),
            200,
            Some(-32601),
            "method_not_found",
        ),
    ];
    let mut text_plain = case("Content-Type text/plain", call.to_string(), 415, None, "malformed_request");
    text_plain.headers.push(("content-type", "text/plain"));
    all.push(text_plain);
    let mut no_streams = case("Accept without text/event-stream", call.to_string(), 406, None, "malformed_request");
    no_streams.headers.push(("accept", "application/json"));
    all.push(no_streams);
    for (name, method) in [("HTTP PUT", Method::PUT), ("HTTP PATCH", Method::PATCH)] {
        let mut c = case(name, call.to_string(), 405, None, "malformed_request");
        c.method = method;
        all.push(c);
    }
    let mut no_session = case("a call without a session", call.to_string(), 400, None, "malformed_request");
    no_session.with_session = false;
    all.push(no_session);
    let mut version = case(
        "an unknown MCP-Protocol-Version",
        call.to_string(),
        400,
        None,
        "protocol_unsupported",
    );
    version.headers.push(("mcp-protocol-version", "1999-01-01"));
    all.push(version);
    all.extend(stateless_cases());
    all
}

/// 2026-07-28 requests (no session: each states its revision in `_meta`) whose headers do
/// not say what their body says, which a load balancer routing on the headers would send
/// elsewhere than the gateway reads them: refused 400 with -32020, recorded, nothing run.
/// And what that revision removed with its sessions, which is not found there.
fn stateless_cases() -> Vec<Case> {
    const V: &str = "2026-07-28";
    let meta =
        |version: &str| json!({"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}});
    let call = |version: &str| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "capgate_probe_no_such_tool", "arguments": {super::MARKER: true}, "_meta": meta(version)}}).to_string()
    };
    let stateless =
        |name: &'static str, body: String, headers: Vec<(&'static str, &'static str)>, status: u16, rpc: i64, code: &'static str| {
            let mut c = case(name, body, status, Some(rpc), code);
            c.with_session = false;
            c.headers = [("mcp-protocol-version", V)].into_iter().chain(headers).collect();
            c
        };
    let named = vec![("mcp-method", "tools/call"), ("mcp-name", "capgate_probe_no_such_tool")];
    vec![
        stateless(
            "2026-07-28: no Mcp-Method header",
            call(V),
            vec![("mcp-name", "capgate_probe_no_such_tool")],
            400,
            -32020,
            "header_mismatch",
        ),
        stateless(
            "2026-07-28: Mcp-Method names another method than the body",
            call(V),
            vec![("mcp-method", "tools/list"), ("mcp-name", "capgate_probe_no_such_tool")],
            400,
            -32020,
            "header_mismatch",
        ),
        stateless(
            "2026-07-28: Mcp-Name names another tool than the body",
            call(V),
            vec![("mcp-method", "tools/call"), ("mcp-name", "list_tickets")],
            400,
            -32020,
            "header_mismatch",
        ),
        stateless(
            "2026-07-28: MCP-Protocol-Version differs from the body's _meta",
            call("2025-11-25"),
            named.clone(),
            400,
            -32020,
            "header_mismatch",
        ),
        stateless(
            "2026-07-28: a request without `_meta`",
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "capgate_probe_no_such_tool", "arguments": {super::MARKER: true}}}).to_string(),
            named,
            400,
            -32602,
            "malformed_request",
        ),
        stateless(
            "2026-07-28: logging/setLevel, which it removed",
            json!({"jsonrpc": "2.0", "id": 7, "method": "logging/setLevel", "params": {"level": "debug", "_meta": meta(V)}}).to_string(),
            vec![("mcp-method", "logging/setLevel")],
            404,
            -32601,
            "method_not_found",
        ),
        stateless(
            "2026-07-28: resources/subscribe, which it removed",
            json!({"jsonrpc": "2.0", "id": 7, "method": "resources/subscribe", "params": {"uri": "capgate-probe://unknown", "_meta": meta(V)}}).to_string(),
            vec![("mcp-method", "resources/subscribe"), ("mcp-name", "capgate-probe://unknown")],
            404,
            -32601,
            "method_not_found",
        ),
    ]
}

/// Browser origins that differ from the gateway's own in exactly one of scheme, host or
/// port (and two that are not origins of it at all).
fn origin_variants(base: &str) -> Vec<(String, String)> {
    let Ok(url) = reqwest::Url::parse(base) else {
        return Vec::new();
    };
    let (scheme, host) = (url.scheme(), url.host_str().unwrap_or("localhost"));
    let port = url.port_or_known_default().unwrap_or(80);
    let other_scheme = if scheme == "https" { "http" } else { "https" };
    let mut out = vec![
        (format!("{other_scheme}://{host}:{port}"), "another scheme".to_string()),
        (format!("{scheme}://{host}:{}", port.wrapping_add(1)), "another port".to_string()),
        ("https://capgate-probe.invalid".to_string(), "another host".to_string()),
        ("null".to_string(), "the opaque origin `null`".to_string()),
    ];
    if url.port().is_some() && url.port() != Some(if scheme == "https" { 443 } else { 80 }) {
        out.push((format!("{scheme}://{host}"), "the default port".to_string()));
    }
    out
}

/// What came back from a raw connection, if anything, before it closed or the wait ended.
enum Raw {
    /// Closed by the gateway (an answer, if it sent one first).
    Closed(String),
    StillOpen,
    Failed(String),
}

/// Writes `first` and then nothing more, and waits up to `wait` for the gateway to give up.
async fn stall(addr: &str, first: &[u8], wait: Duration) -> Raw {
    let mut stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Raw::Failed(format!("cannot connect to {addr}: {e}")),
    };
    if let Err(e) = stream.write_all(first).await {
        return Raw::Failed(format!("write failed: {e}"));
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    match read {
        Ok(()) => Raw::Closed(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => Raw::StillOpen,
    }
}

impl Probe<'_> {
    pub(super) async fn protocol(&mut self) -> Result<(), String> {
        let token = self.probe_token();
        let sid = self.target.open(&token).await?;
        for c in cases() {
            let session = c.with_session.then_some(sid.as_str());
            let r = self
                .target
                .send(c.method.clone(), Some(&token), session, &c.headers, c.body, None)
                .await?;
            let rpc_ok = match c.rpc {
                Some(code) => r.body.pointer("/error/code").and_then(Value::as_i64) == Some(code),
                None => true,
            };
            let ok = r.status == c.status && rpc_ok && r.trace().is_some();
            self.expect_refused(
                &r,
                Forensics {
                    authenticated: true,
                    tool: false,
                },
                c.name,
            );
            let detail = describe(&r, c.status, c.rpc, c.reason_code);
            let trace = r.trace();
            self.record(
                "protocol",
                c.name.to_string(),
                if ok { Outcome::Pass } else { Outcome::Finding },
                detail,
                trace,
            );
        }
        Ok(())
    }

    pub(super) async fn origins(&mut self) -> Result<(), String> {
        let token = self.probe_token();
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "capgate-probe", "version": env!("CARGO_PKG_VERSION")}}}).to_string();
        let allowed = self.env.allowed_origins.clone();
        for (origin, what) in origin_variants(&self.target.base) {
            if allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) {
                continue;
            }
            let r = self
                .target
                .send(Method::POST, Some(&token), None, &[("origin", &origin)], init.clone(), None)
                .await?;
            let ok = r.status == 403;
            self.expect_refused(
                &r,
                Forensics {
                    authenticated: false,
                    tool: false,
                },
                "origin",
            );
            let trace = r.trace();
            self.record(
                "origin",
                format!("Origin `{origin}` ({what})"),
                if ok { Outcome::Pass } else { Outcome::Finding },
                format!("HTTP {} (a browser page of another origin must get 403)", r.status),
                trace,
            );
        }
        Ok(())
    }

    /// A client that sends half its headers, and one that sends half its body, then nothing:
    /// each must be cut off within the configured deadline (plus a margin), not held open.
    pub(super) async fn slow_clients(&mut self) {
        let Ok(url) = reqwest::Url::parse(&self.target.base) else { return };
        if url.scheme() != "http" {
            for name in ["slow headers", "slow body"] {
                self.record(
                    "slow clients",
                    name.into(),
                    Outcome::Skipped,
                    "the probe sends raw bytes over plain HTTP only".into(),
                    None,
                );
            }
            return;
        }
        let host = url.host_str().unwrap_or("127.0.0.1").to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = format!("{host}:{port}");
        let margin = Duration::from_secs(5);
        let (header_wait, body_wait) = (self.env.header_timeout + margin, self.env.body_timeout + margin);
        let partial_headers = format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n");
        let partial_body = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 4096\r\n\r\n{{\"jsonrpc\":",
            self.probe_token()
        );
        let (headers, body) = tokio::join!(
            stall(&addr, partial_headers.as_bytes(), header_wait),
            stall(&addr, partial_body.as_bytes(), body_wait)
        );
        let limit = |d: Duration| format!("{}s", d.as_secs());
        match headers {
            Raw::Closed(_) => self.record(
                "slow clients",
                "slow headers are cut off".into(),
                Outcome::Pass,
                format!("closed within {}", limit(header_wait)),
                None,
            ),
            Raw::StillOpen => self.record(
                "slow clients",
                "slow headers are cut off".into(),
                Outcome::Finding,
                format!("still open after {}", limit(header_wait)),
                None,
            ),
            Raw::Failed(e) => self.record("slow clients", "slow headers are cut off".into(), Outcome::Finding, e, None),
        }
        match body {
            Raw::Closed(answer) => {
                let status_line = answer.lines().next().unwrap_or("").to_string();
                let trace = answer.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(crate::server::respond::TRACE_HEADER)
                        .then(|| v.trim().to_string())
                });
                // Closed without an answer is also a cut-off; an answer other than 408 is not
                // what a body deadline gives.
                let ok = status_line.is_empty() || status_line.contains(" 408");
                if let Some(t) = &trace {
                    self.traces.push((
                        t.clone(),
                        "slow body".into(),
                        Forensics {
                            authenticated: false,
                            tool: false,
                        },
                    ));
                }
                self.record(
                    "slow clients",
                    "a slow body is cut off".into(),
                    if ok { Outcome::Pass } else { Outcome::Finding },
                    format!("closed within {}: `{status_line}`", limit(body_wait)),
                    trace,
                );
            }
            Raw::StillOpen => self.record(
                "slow clients",
                "a slow body is cut off".into(),
                Outcome::Finding,
                format!("still open after {}", limit(body_wait)),
                None,
            ),
            Raw::Failed(e) => self.record("slow clients", "a slow body is cut off".into(), Outcome::Finding, e, None),
        }
    }
}

fn describe(r: &Resp, status: u16, rpc: Option<i64>, reason_code: &str) -> String {
    let got = match r.rpc_error() {
        Some((code, reason)) => format!("HTTP {}, JSON-RPC {code}, {reason}", r.status),
        None => format!("HTTP {}", r.status),
    };
    let want = match rpc {
        Some(code) => format!("HTTP {status}, JSON-RPC {code}, {reason_code}"),
        None => format!("HTTP {status}, {reason_code}"),
    };
    format!("{got} (expected {want})")
}
