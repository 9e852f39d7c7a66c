//! Transports and backends end to end: stdio serving with rmcp's own client, a streamable
//! HTTP upstream with an injected credential header, and JWKS served over HTTP and rotated.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup or unwrap is a test failure"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Value, json};

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// rmcp's own client on `capgate serve --stdio` (environment dev) with `token`.
async fn stdio_client(f: &Fixture, token: &str) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(["serve", "--stdio", "--env", "dev", "--config"])
        .arg(f.config())
        .env("CAPGATE_TOKEN", token)
        .env("CAPGATE_LOG", "warn,rmcp=error");
    ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap()
}

#[tokio::test]
async fn stdio_transport_serves_an_authenticated_client_through_the_pipeline() {
    let f = Fixture::new("");
    let client = stdio_client(&f, &f.token("dev", "alice", &["oncall"])).await;
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["create_ticket", "leaky_diagnostics", "list_tickets", "run_report", "typed_lookup"]
    );
    let mut p = CallToolRequestParams::new("create_ticket");
    p.arguments = Some(args(json!({"title": "from stdio", "severity": "low"})));
    let r = client.call_tool(p).await.unwrap();
    assert_eq!(r.is_error, Some(false));
    let mut bad = CallToolRequestParams::new("create_ticket");
    bad.arguments = Some(args(json!({"title": "x", "severity": "urgent"})));
    let err = client.call_tool(bad).await.unwrap_err().to_string();
    assert!(err.contains("severity"), "{err}");
    let mut forbidden = CallToolRequestParams::new("create_firewall_block");
    forbidden.arguments = Some(args(json!({"ip": "10.0.0.0/8", "ttl_minutes": 5})));
    assert!(client.call_tool(forbidden).await.is_err());
    client.cancel().await.unwrap();
    let calls = f.calls("dev");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["arguments"]["title"], "from stdio");
    let recs = f.audit("dev");
    assert!(recs.iter().all(|r| r["client"]["addr"] == "stdio"));
    assert!(
        recs.iter()
            .any(|r| r["reason_code"] == "executed" && r["principal"]["sub"] == "alice")
    );
}

#[test]
fn stdio_refuses_to_start_without_a_valid_token_and_refuses_duplicate_keys() {
    let f = Fixture::new("");
    let out = Command::new(bin())
        .args(["serve", "--stdio", "--env", "dev", "--config"])
        .arg(f.config())
        .env("CAPGATE_TOKEN", f.token("stage", "alice", &["oncall"]))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAPGATE_TOKEN is refused"), "{err}");
    assert!(
        !err.contains(&f.token("stage", "alice", &["oncall"])[..40]),
        "the token leaked into the error"
    );

    let mut child = ChildGuard(
        Command::new(bin())
            .args(["serve", "--stdio", "--env", "dev", "--config"])
            .arg(f.config())
            .env("CAPGATE_TOKEN", f.token("dev", "alice", &["oncall"]))
            .env("CAPGATE_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut send = |v: &str| writeln!(stdin, "{v}").unwrap();
    send(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    );
    let init: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(init["id"], 1);
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_ticket","arguments":{"title":"x","severity":"low","severity":"critical"}}}"#,
    );
    let dup: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (dup["id"].as_i64(), dup["error"]["code"].as_i64()),
        (Some(2), Some(-32602)),
        "{dup}"
    );
    send("{not json");
    let parse: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(parse["error"]["code"], -32700);
    send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_tickets","arguments":{}}}"#);
    let ok: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ok["result"]["isError"], false, "{ok}");
    drop(stdin);
    let _ = child.0.wait();
    assert_eq!(f.calls("dev").len(), 1, "only list_tickets ran");
}

#[tokio::test]
async fn streamable_http_upstream_gets_its_credential_header_and_the_agent_never_does() {
    http_upstream_call_through_the_gateway(&[]).await;
}

/// The same over a server from before 2026-07-28, spoken to on a session.
#[tokio::test]
async fn a_sessions_only_http_upstream_works_the_same() {
    http_upstream_call_through_the_gateway(&["--sessions-only"]).await;
}

/// The same over an upstream that keeps no sessions and answers with JSON bodies, which the
/// gateway reads by another path than event streams.
#[tokio::test]
async fn a_json_answering_sessionless_http_upstream_works_the_same() {
    http_upstream_call_through_the_gateway(&["--json-response"]).await;
}

async fn http_upstream_call_through_the_gateway(flags: &[&str]) {
    let state = tempfile::tempdir().unwrap();
    let (_upstream, url) = http_upstream_with(state.path(), "127.0.0.1:0", flags);
    let secret_file = state.path().join("web-credential");
    std::fs::write(&secret_file, "http-upstream-secret-value\n").unwrap();
    let block = format!(
        "[[upstream]]\nname = \"web\"\nenvironment = \"stage\"\nurl = \"{url}\"\nheaders = {{ x-demo-credential = {{ file = {secret_file:?} }} }}\n"
    );
    let f = with_stage_upstream(block);
    let gw = Gateway::start(&f.config(), &ENVS);

    // A real MCP client (rmcp) with a bearer token, through the gateway.
    let transport = StreamableHttpClientTransport::with_client(
        http(),
        StreamableHttpClientTransportConfig::with_uri(gw.url("stage")).auth_header(f.token("stage", "sid", &["oncall"])),
    );
    let client = ().serve(transport).await.unwrap();
    let mut p = CallToolRequestParams::new("create_ticket");
    p.arguments = Some(args(json!({"title": "over http", "severity": "medium"})));
    let r = client.call_tool(p).await.unwrap();
    assert_eq!(r.is_error, Some(false));
    let text = serde_json::to_string(&r).unwrap();
    assert!(!text.contains("http-upstream-secret-value"));
    client.cancel().await.unwrap();

    let calls: Vec<Value> = std::fs::read_to_string(state.path().join("calls.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0]["arguments"],
        json!({"title": "over http", "severity": "medium", "queue": "SEC"})
    );
    assert_eq!(calls[0]["meta"]["http_headers"], json!(["x-demo-credential"]));
    assert!(calls[0]["meta"]["traceparent"].as_str().unwrap().starts_with("00-"));
    // Without a token the HTTP-backed environment is as closed as any other.
    let r = Mcp::new(gw.url("stage"), None)
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(), &[])
        .await;
    assert_eq!(r.status, 401);
}

// Multi-threaded: the harness blocks one thread while the JWKS server must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_http_is_refetched_when_a_rotated_kid_appears() {
    use ed25519_dalek::SigningKey;
    let key_a = SigningKey::from_bytes(&[1u8; 32]);
    let key_b = SigningKey::from_bytes(&[2u8; 32]);
    let jwk = |k: &SigningKey, kid: &str| {
        use base64::Engine;
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())})
    };
    let served = Arc::new(Mutex::new(json!({"keys": [jwk(&key_a, "a")]}).to_string()));
    let fetches = Arc::new(Mutex::new(0u32));
    let (s2, f2) = (served.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (s, f) = (s2.clone(), f2.clone());
            async move {
                *f.lock().unwrap() += 1;
                s.lock().unwrap().clone()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let f = Fixture::build(
        "",
        &Options {
            dev_jwks_url: Some(format!("http://{addr}/jwks.json")),
            ..Default::default()
        },
    );
    let gw = Gateway::start(&f.config(), &ENVS);
    let claims = f.claims("dev", "alice", &["viewer"]);
    let mut m = Mcp::open(gw.url("dev"), &sign_ed(&key_a, "a", &claims)).await;
    assert_eq!(m.rpc("tools/list", json!({})).await.status, 200);
    let before = *fetches.lock().unwrap();

    *served.lock().unwrap() = json!({"keys": [jwk(&key_b, "b")]}).to_string();
    m.token = Some(sign_ed(&key_b, "b", &claims));
    assert_eq!(m.rpc("tools/list", json!({})).await.status, 200, "the rotated key was not fetched");
    assert_eq!(*fetches.lock().unwrap(), before + 1);
    // The old key is gone from the set, and a flood of unknown kids causes no more fetches.
    m.token = Some(sign_ed(&key_a, "a", &claims));
    assert_eq!(m.rpc("tools/list", json!({})).await.status, 401);
    for i in 0..20 {
        m.token = Some(sign_ed(&key_a, &format!("forged-{i}"), &claims));
        assert_eq!(m.rpc("tools/list", json!({})).await.status, 401);
    }
    assert_eq!(*fetches.lock().unwrap(), before + 1, "unknown kids must not hammer the IdP");
    // The one refresh is in the metrics, under its issuer; the start-up fetch is not.
    let text = get(format!("{}/metrics", gw.base("dev"))).await.text().await.unwrap();
    let line = format!(
        "capgate_jwks_refreshes_total{{env=\"dev\",issuer=\"{}\",result=\"ok\"}} 1",
        issuer("dev")
    );
    assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    assert!(!text.contains("result=\"failed\""), "{text}");
}

/// The usual fixture, with `block` (an `[[upstream]]` table) as the stage environment's
/// upstream.
fn with_stage_upstream(block: String) -> Fixture {
    Fixture::build(
        "",
        &Options {
            stage_upstream: Some(block),
            ..Default::default()
        },
    )
}

/// Starts the demo upstream over streamable HTTP on `addr`; returns it and its URL.
fn http_upstream(state: &std::path::Path, addr: &str) -> (ChildGuard, String) {
    http_upstream_with(state, addr, &[])
}

/// `flags`: `--json-response` (without sessions, answering with JSON bodies rather than
/// event streams), `--sessions-only` (a server from before 2026-07-28).
fn http_upstream_with(state: &std::path::Path, addr: &str, flags: &[&str]) -> (ChildGuard, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["upstream-demo", "--http", addr, "--state"]).arg(state).args(flags);
    let mut child = ChildGuard(cmd.stdout(Stdio::piped()).spawn().unwrap());
    let line = BufReader::new(child.0.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = line.rsplit(' ').next().unwrap().to_string();
    (child, url)
}

/// The demo upstream over streamable HTTP (its state in `state`) as the stage environment's
/// upstream, with room for slow calls (20 s); the dev environment keeps the stdio one.
fn demo_over_http_in_stage(state: &std::path::Path) -> (ChildGuard, Fixture) {
    demo_over_http_in_stage_with(state, &[])
}

fn demo_over_http_in_stage_with(state: &std::path::Path, flags: &[&str]) -> (ChildGuard, Fixture) {
    let (upstream, url) = http_upstream_with(state, "127.0.0.1:0", flags);
    let block = format!("[[upstream]]\nname = \"web\"\nenvironment = \"stage\"\nurl = \"{url}\"\ntimeout = \"20s\"\n");
    (upstream, with_stage_upstream(block))
}

/// The stage environment in front of the HTTP demo upstream started with `flags` (its state
/// in `state`): the upstream, its address (to start it again on), the fixture, the gateway
/// and a session of caller `sid`.
async fn behind_a_restartable_upstream(state: &std::path::Path, flags: &[&str]) -> (ChildGuard, String, Fixture, Gateway, Mcp) {
    let (upstream, url) = http_upstream_with(state, "127.0.0.1:0", flags);
    let addr = url.trim_start_matches("http://").trim_end_matches("/mcp").to_string();
    let block = format!("[[upstream]]\nname = \"web\"\nenvironment = \"stage\"\nurl = \"{url}\"\ntimeout = \"5s\"\n");
    let f = with_stage_upstream(block);
    let gw = Gateway::start(&f.config(), &ENVS);
    let mcp = Mcp::open(gw.url("stage"), &f.token("stage", "sid", &["oncall"])).await;
    (upstream, addr, f, gw, mcp)
}

/// The calls the demo upstream with its state in `state` has run.
fn calls_made(state: &std::path::Path) -> usize {
    std::fs::read_to_string(state.join("calls.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// On a 2025-11-25 session (an upstream from before 2026-07-28); a 2026-07-28 upstream has
/// no session to forget (`a_2026_upstream_that_restarts_forgets_nothing`).
#[tokio::test]
async fn an_http_upstream_that_restarts_gets_a_new_session_and_no_call_is_retried() {
    let state = tempfile::tempdir().unwrap();
    let (upstream, addr, f, _gw, mut mcp) = behind_a_restartable_upstream(state.path(), &["--sessions-only"]).await;
    let calls = || calls_made(state.path());
    let ok = |r: &Reply| r.body["result"]["isError"] == json!(false);
    let r = mcp.call("list_tickets", json!({})).await;
    assert!(ok(&r), "{}", r.text);
    assert_eq!(calls(), 1);

    // A new upstream process on the same address knows nothing of the gateway's session.
    drop(upstream);
    let (_upstream, _) = http_upstream_with(state.path(), &addr, &["--sessions-only"]);
    let first = mcp.call("list_tickets", json!({})).await;
    let second = mcp.call("list_tickets", json!({})).await;
    // The call that met the forgotten session failed as a tool error, and was not retried
    // behind the caller's back; the next call opened a new session and ran.
    assert_eq!(first.body["result"]["isError"], json!(true), "{}", first.text);
    assert!(ok(&second), "{}", second.text);
    assert_eq!(calls(), 2, "exactly the one call that succeeded reached the upstream");
    let recs = f.audit_for_trace("stage", &first.trace());
    assert_eq!(recs.last().unwrap()["reason_code"], "backend_error", "{recs:#?}");
}

/// Spoken to at 2026-07-28, an upstream keeps nothing of the gateway between requests: after
/// a restart on the same address the next call simply runs, once.
#[tokio::test]
async fn a_2026_upstream_that_restarts_forgets_nothing() {
    let state = tempfile::tempdir().unwrap();
    let (upstream, addr, _f, _gw, mut mcp) = behind_a_restartable_upstream(state.path(), &[]).await;
    let calls = || calls_made(state.path());
    let r = mcp.call("list_tickets", json!({})).await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    drop(upstream);
    let (_upstream, _) = http_upstream(state.path(), &addr);
    let r = mcp.call("list_tickets", json!({})).await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(calls(), 2);
}

/// An upstream that asks its client something mid-call (sampling): the gateway relays no
/// such request to its callers, so it answers it at once with "method not found", over a
/// streamable HTTP upstream (an event stream) as over stdio; the call ends with the
/// upstream's own answer instead of hanging until the upstream's timeout.
#[tokio::test]
async fn a_request_from_the_upstream_to_its_client_is_refused_at_once_and_the_call_ends() {
    let state = tempfile::tempdir().unwrap();
    // On a session: a 2026-07-28 upstream cannot send requests at all (rmcp refuses them).
    let (_upstream, f) = demo_over_http_in_stage_with(state.path(), &["--sessions-only"]);
    std::fs::write(
        f.path().join("contracts/ask.toml"),
        "tool = \"ask_model\"\nallowed_roles = [\"oncall\"]\nside_effects = \"read\"\narg_schema = { question = \"string(1..100)\" }\n",
    )
    .unwrap();
    let gw = Gateway::start(&f.config(), &ENVS);
    for env in ["stage", "dev"] {
        let mut mcp = Mcp::open(gw.url(env), &f.token(env, "sid", &["oncall"])).await;
        let r = mcp.call("ask_model", json!({"question": "which range to block?"})).await;
        let text = r.body["result"]["content"][0]["text"].as_str().unwrap_or_default();
        assert_eq!(r.body["result"]["isError"], json!(true), "{env}: {}", r.text);
        assert!(
            text.starts_with("sampling refused") && text.contains("-32601"),
            "{env}: the upstream's request was not refused at once: {text}"
        );
        let recs = f.audit_for_trace(env, &r.trace());
        assert_eq!(recs.last().unwrap()["reason_code"], "executed", "{env}: {recs:#?}");
    }
}

/// The caller's progress token is not handed to the upstream (callers choose theirs; an
/// upstream must not be able to address another caller's call): the upstream gets one of
/// the gateway's, and its progress for that token reaches this caller, under the caller's
/// token, in order, over a stdio and a streamable HTTP upstream alike.
#[tokio::test]
async fn an_upstreams_progress_reaches_the_calling_client_under_its_own_token() {
    let state = tempfile::tempdir().unwrap();
    let (_upstream, f) = demo_over_http_in_stage(state.path());
    let gw = Gateway::start(&f.config(), &ENVS);
    for (env, log) in [
        ("stage", state.path().join("calls.jsonl")),
        ("dev", f.path().join("state/dev/calls.jsonl")),
    ] {
        let mut mcp = Mcp::open(gw.url(env), &f.token(env, "pat", &["oncall"])).await;
        let r = mcp
            .rpc(
                "tools/call",
                json!({"name": "run_report", "arguments": {"seconds": 0}, "_meta": {"progressToken": "caller-7"}}),
            )
            .await;
        let events: Vec<Value> = r
            .text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect();
        // What the upstream was handed: a token of the gateway's, not the caller's.
        let calls: Vec<Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let token = calls.last().unwrap()["meta"]["progressToken"].clone();
        assert!(
            !token.is_null() && token != json!("caller-7"),
            "{env}: the upstream got {token:?}, not a token of the gateway's"
        );
        let progress: Vec<&Value> = events.iter().filter(|e| e["method"] == "notifications/progress").collect();
        let seen: Vec<(String, f64, String)> = progress
            .iter()
            .map(|p| {
                (
                    p["params"]["progressToken"].as_str().unwrap_or("").to_string(),
                    p["params"]["progress"].as_f64().unwrap_or(-1.0),
                    p["params"]["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, f64, String)> = (1..=3)
            .map(|i| ("caller-7".to_string(), f64::from(i), format!("step {i} of 3")))
            .collect();
        if env == "stage" {
            // An event stream keeps its order: all three, in order.
            assert_eq!(seen, want, "{env}: {}", r.text);
        } else {
            // rmcp's client hands each notification to a task of its own: they may arrive
            // out of order, and one that would make the value go back is dropped. What
            // arrives is the upstream's, under the caller's token, only ever growing.
            assert!(!seen.is_empty() && seen.iter().all(|s| want.contains(s)), "{env}: {seen:?}");
            assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{env}: {seen:?}");
        }
        assert!(
            !r.text.contains(&format!("\"progressToken\":{token}")),
            "{env}: the upstream's token reached the caller"
        );
        let result = events.iter().find(|e| e.get("result").is_some()).expect("a result");
        assert_eq!(result["result"]["isError"], json!(false), "{env}: {}", r.text);
    }
}

/// A caller that cancels a call the upstream is running: the upstream is told (it stops and
/// logs it), over a stdio and a streamable HTTP upstream alike, and the outcome record says
/// the call was cancelled after it had started.
#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream_and_recorded_as_such() {
    let state = tempfile::tempdir().unwrap();
    let (_upstream, f) = demo_over_http_in_stage(state.path());
    f.rewrite("timeout = \"2s\"", "timeout = \"20s\"");
    let gw = Gateway::start(&f.config(), &ENVS);
    for (env, log) in [
        ("stage", state.path().join("calls.jsonl")),
        ("dev", f.path().join("state/dev/calls.jsonl")),
    ] {
        let logged = |tool: &str| -> bool {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| serde_json::from_str::<Value>(l).unwrap()["tool"] == tool)
        };
        let mcp = Mcp::open(gw.url(env), &f.token(env, "cam", &["oncall"])).await;
        let (http, url, session, token) = (mcp.http.clone(), mcp.url.clone(), mcp.session.clone(), mcp.token.clone());
        let call =
            json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": "run_report", "arguments": {"seconds": 10}}});
        let running = tokio::spawn(async move { mcp.send(call.to_string(), &[]).await });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !logged("run_report") {
            assert!(std::time::Instant::now() < deadline, "{env}: the call never reached the upstream");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let cancel =
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41, "reason": "changed my mind"}});
        // Another caller's session naming the same request id cancels nothing.
        let other = Mcp::open(gw.url(env), &f.token(env, "eve", &["oncall"])).await;
        other.send(cancel.to_string(), &[]).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!logged("cancelled:run_report"), "{env}: another session cancelled the call");
        let r = http
            .post(&url)
            .header("authorization", format!("Bearer {}", token.unwrap()))
            .header("mcp-session-id", session.unwrap())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(cancel.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{env}: {}", r.status());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
        while !logged("cancelled:run_report") {
            assert!(
                std::time::Instant::now() < deadline,
                "{env}: the upstream was not told of the cancellation"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // The outcome: recorded as cancelled after it ran.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
        let outcome = loop {
            let recs = f.audit_now(env);
            if let Some(o) = recs.iter().find(|r| r["outcome"]["status"] == "cancelled") {
                break o.clone();
            }
            assert!(std::time::Instant::now() < deadline, "{env}: no cancelled outcome in {recs:#?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(outcome["tool"], "run_report");
        assert!(outcome["reason"].as_str().unwrap().contains("cancelled"), "{outcome}");
        running.abort();
    }
}

/// Prompts and resources over the stdio transport, with rmcp's own client: the same
/// contracts, the same refusals.
#[tokio::test]
async fn stdio_serves_prompts_and_resources_within_their_contracts() {
    let f = Fixture::new("");
    std::fs::write(
        f.path().join("contracts/surface.toml"),
        "[[contract]]\nprompt = \"incident_summary\"\nallowed_roles = [\"oncall\"]\narg_schema = { incident = \"regex(INC-[0-9]{1,6})\" }\n\n[[contract]]\nresource = \"ticket_summary\"\nuri = \"tickets://summary\"\nallowed_roles = [\"oncall\"]\n",
    )
    .unwrap();
    let client = stdio_client(&f, &f.token("dev", "alice", &["oncall"])).await;
    let prompts: Vec<String> = client.list_all_prompts().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(prompts, ["incident_summary"]);
    let resources: Vec<String> = client
        .list_all_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(resources, ["tickets://summary"]);
    let mut p = rmcp::model::GetPromptRequestParams::new("incident_summary");
    p.arguments = Some(args(json!({"incident": "INC-3"})));
    let got = client.get_prompt(p).await.unwrap();
    assert!(format!("{:?}", got.messages).contains("INC-3"), "{got:?}");
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new("tickets://summary"))
        .await
        .unwrap();
    assert!(format!("{read:?}").contains("0 tickets"), "{read:?}");
    let unknown = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new("secrets://vault/root"))
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("is not available"), "{unknown}");
    client.cancel().await.unwrap();
    let served: Vec<String> = f.calls("dev").iter().map(|c| c["tool"].as_str().unwrap().to_string()).collect();
    assert_eq!(served, ["prompt:incident_summary", "resource"]);
}
