//! What operators see of a running gateway: its Prometheus metrics, parsed by the
//! Prometheus project's own parser (tests/interop/metrics_parse.py) and held against the
//! audit log record for record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "integration tests: a failed expectation is a panic"
)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};

/// One series: its sample name and labels (without `env`, checked separately).
type Series = (String, BTreeMap<String, String>);

/// The samples of a Prometheus text, as the official parser reads it (it refuses a text that
/// does not parse, and so does this).
fn parse(text: &str) -> (BTreeMap<Series, f64>, BTreeMap<String, String>) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/metrics_parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut samples, mut types) = (BTreeMap::new(), BTreeMap::new());
    for f in parsed["families"].as_array().unwrap() {
        types.insert(f["name"].as_str().unwrap().to_string(), f["type"].as_str().unwrap().to_string());
        for s in f["samples"].as_array().unwrap() {
            let mut labels: BTreeMap<String, String> = serde_json::from_value(s["labels"].clone()).unwrap();
            assert_eq!(
                labels.remove("env").as_deref(),
                Some("dev"),
                "every series names its environment: {s}"
            );
            samples.insert((s["name"].as_str().unwrap().to_string(), labels), s["value"].as_f64().unwrap());
        }
    }
    (samples, types)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_the_audit_log_holds() {
    let f = Fixture::new("");
    f.set_in_env("dev", r#"telemetry = { metrics_listen = "127.0.0.1:0" }"#);
    let gw = Gateway::start(&f.config(), &ENVS);
    let metrics_url = gw.metrics.get("dev").expect("the metrics listener's URL on the ready line").clone();
    assert!(!gw.metrics.contains_key("stage"), "stage has no metrics listener of its own");

    let oncall = f.token("dev", "olga", &["oncall"]);
    let mut olga = Mcp::open(gw.url("dev"), &oncall).await;
    for _ in 0..3 {
        assert!(olga.call("list_tickets", json!({})).await.body["result"].is_object());
    }
    let created = olga
        .call("create_ticket", json!({"title": "disk full on db-7", "severity": "high"}))
        .await;
    assert_eq!(created.body["result"]["isError"], json!(false), "{}", created.text);
    for bad in ["urgent", "whenever"] {
        let r = olga.call("create_ticket", json!({"title": "t", "severity": bad})).await;
        assert_eq!(r.error_code(), Some(-32602));
    }
    let unknown = olga.call("drop_all_tables", json!({})).await;
    assert!(unknown.error_code().is_some());
    // The upstream echoes its credential: the result is withheld, an upstream error.
    let leaky = olga.call("leaky_diagnostics", json!({})).await;
    assert_eq!(leaky.body["result"]["isError"], json!(true), "{}", leaky.text);
    let mut vic = Mcp::open(gw.url("dev"), &f.token("dev", "vic", &["viewer"])).await;
    assert!(
        vic.call("create_ticket", json!({"title": "x", "severity": "low"}))
            .await
            .error_code()
            .is_some()
    );
    let ivan = f.token("dev", "ivan", &["incident_commander"]);
    let mut ivan = Mcp::open(gw.url("dev"), &ivan).await;
    let pending = ivan
        .call("create_firewall_block", json!({"ip": "203.0.113.0/24", "ttl_minutes": 30}))
        .await;
    assert_eq!(pending.body["result"]["structuredContent"]["status"], "pending", "{}", pending.text);
    let forged = Mcp::new(gw.url("dev"), Some(format!("{oncall}x")));
    for _ in 0..2 {
        assert_eq!(
            forged
                .send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(), &[])
                .await
                .status,
            401
        );
    }

    let records = f.audit("dev");
    let text = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
    let (samples, types) = parse(&text);
    let records_now = f.audit_now("dev");
    assert_eq!(records.len(), records_now.len(), "the log settled before the scrape");

    // Counters by tool, decision and reason code: the log's, record for record.
    let mut want: BTreeMap<Series, f64> = BTreeMap::new();
    for r in &records {
        let tool = if r["contract_digest"].is_string() {
            r["tool"].as_str().unwrap_or("")
        } else {
            ""
        };
        let name = if r["outcome"].is_object() {
            "capgate_outcomes_total"
        } else {
            "capgate_decisions_total"
        };
        let key = (
            name.to_string(),
            labels(&[
                ("tool", tool),
                ("decision", r["decision"].as_str().unwrap()),
                ("reason_code", r["reason_code"].as_str().unwrap()),
            ]),
        );
        *want.entry(key).or_default() += 1.0;
    }
    let got: BTreeMap<Series, f64> = samples
        .iter()
        .filter(|((n, _), _)| n == "capgate_decisions_total" || n == "capgate_outcomes_total")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(got, want, "decisions and outcomes in /metrics are the audit log's");
    // The mix is what the calls above make, so the comparison is not between two empties.
    for (tool, decision, code, n) in [
        ("list_tickets", "allow", "allowed", 3.0),
        ("create_ticket", "deny", "arguments_invalid", 2.0),
        // The unknown tool and the viewer's: no contract of theirs, so no tool named.
        ("", "deny", "tool_not_available", 2.0),
        ("create_firewall_block", "pending", "approval_required", 1.0),
    ] {
        let key = (
            "capgate_decisions_total".to_string(),
            labels(&[("tool", tool), ("decision", decision), ("reason_code", code)]),
        );
        assert_eq!(got.get(&key), Some(&n), "{key:?} in {got:?}");
    }
    let unauthenticated: f64 = got
        .iter()
        .filter(|((_, l), _)| l["decision"] == "deny" && l["reason_code"].starts_with("token_"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(unauthenticated, 2.0, "the forged token's two refusals: {got:?}");
    let one = |name: &str, l: &[(&str, &str)]| -> f64 {
        *samples
            .get(&(name.to_string(), labels(l)))
            .unwrap_or_else(|| panic!("{name} {l:?} missing from\n{text}"))
    };
    assert_eq!(one("capgate_audit_records_total", &[]), records.len() as f64);
    assert!(one("capgate_audit_commits_total", &[]) >= 1.0);
    assert!(one("capgate_audit_commits_total", &[]) <= records.len() as f64);
    assert_eq!(
        one("capgate_audit_commit_records_sum", &[]),
        records.len() as f64,
        "the commit-size histogram adds up to the records"
    );

    // Stages: each timed as often as the calls reached it.
    let stage = |s: &str| one("capgate_stage_duration_seconds_count", &[("stage", s)]);
    let forwarded = 3.0 + 1.0 + 1.0; // list_tickets ×3, create_ticket, leaky_diagnostics
    assert_eq!(stage("upstream"), forwarded);
    assert_eq!(stage("audit"), forwarded, "one write-ahead allow record per forwarded call");
    assert_eq!(stage("approval"), 1.0);
    assert_eq!(
        stage("validate"),
        forwarded + 2.0 + 1.0,
        "the forwarded, the invalid and the pending calls"
    );
    assert!(stage("authn") >= 10.0, "every request's token, the forged included");
    assert_eq!(
        one("capgate_upstream_request_duration_seconds_count", &[("upstream", "demo")]),
        forwarded
    );
    assert_eq!(
        one("capgate_upstream_errors_total", &[("upstream", "demo"), ("kind", "withheld")]),
        1.0
    );
    assert_eq!(one("capgate_approval_requests", &[("state", "pending")]), 1.0);
    assert_eq!(one("capgate_approval_requests", &[("state", "approved")]), 0.0);
    assert_eq!(one("capgate_mcp_sessions", &[]), 3.0);
    assert_eq!(one("capgate_call_duration_seconds_count", &[]), (3 + 1 + 2 + 1 + 1 + 1 + 1) as f64);
    for (name, ty) in [
        ("capgate_decisions", "counter"),
        ("capgate_stage_duration_seconds", "histogram"),
        ("capgate_audit_commit_duration_seconds", "histogram"),
        ("capgate_approval_requests", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(ty), "{name} in {types:?}");
    }

    // Nothing a caller sent, nothing secret.
    for secret in [
        oncall.as_str(),
        "disk full on db-7",
        "203.0.113.0/24",
        "upstream-secret-dev",
        "drop_all_tables",
    ] {
        assert!(!text.contains(secret), "/metrics shows {secret}");
    }

    // With a listener of its own, the public one does not serve the series; stage's does.
    assert_eq!(get(format!("{}/metrics", gw.base("dev"))).await.status(), 404);
    let stage_text = get(format!("{}/metrics", gw.base("stage"))).await.text().await.unwrap();
    assert!(stage_text.contains("capgate_audit_records_total{env=\"stage\"}"), "{stage_text}");
    // Not for web pages: a request with an Origin is refused.
    let page = http().get(&metrics_url).header("origin", "https://evil.test").send().await.unwrap();
    assert_eq!(page.status(), 403);
}

#[test]
fn a_metrics_listener_that_is_no_address_or_is_shared_is_refused_by_check() {
    let check = |f: &Fixture| {
        let out = Command::new(bin()).arg("check").arg("--config").arg(f.config()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let f = Fixture::new("");
    f.set_in_env("dev", r#"telemetry = { metrics_listen = "localhost" }"#);
    let (code, out) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("`telemetry.metrics_listen = \"localhost\"` is not an address"),
        "{out}"
    );

    let f = Fixture::new("");
    f.set_in_env("dev", r#"telemetry = { metrics_listen = "127.0.0.1:19464" }"#);
    f.set_in_env("stage", r#"telemetry = { metrics_listen = "127.0.0.1:19464" }"#);
    let (code, out) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("environment `stage`: shares its listen address with environment `dev`"),
        "{out}"
    );

    // An endpoint with credentials is refused, and they are not repeated.
    let f = Fixture::new("");
    f.set_in_env(
        "dev",
        r#"telemetry = { otlp_endpoint = "http://trace:hunter2-secret@127.0.0.1:4318/v1/traces" }"#,
    );
    let (code, out) = check(&f);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("without credentials") && !out.contains("hunter2"), "{out}");

    let f = Fixture::new("");
    f.set_in_env("dev", r#"telemetry = { metrics_listen = "127.0.0.1:0", otlp = true }"#);
    let (code, out) = check(&f);
    assert_ne!(code, Some(0), "an unknown telemetry key is refused: {out}");
}

/// A span as the test OTLP receiver decoded it.
#[derive(Debug, Clone)]
struct Got {
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(V::StringValue(s)) => s.clone(),
                Some(V::ArrayValue(a)) => a
                    .values
                    .iter()
                    .filter_map(|v| match &v.value {
                        Some(V::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// An OTLP/HTTP receiver on 127.0.0.1: what it is sent, decoded with the official
/// protobuf definitions; and its URL.
async fn otlp_receiver() -> (Arc<std::sync::Mutex<Vec<Got>>>, String) {
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use prost::Message;
    let got: Arc<std::sync::Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                assert_eq!(headers.get("content-type").unwrap(), "application/x-protobuf");
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                for rs in req.resource_spans {
                    let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            sink.lock().unwrap().push(Got {
                                trace: hex::encode(&s.trace_id),
                                id: hex::encode(&s.span_id),
                                parent: hex::encode(&s.parent_span_id),
                                name: s.name,
                                kind: s.kind,
                                attributes: attrs(&s.attributes),
                                resource: resource.clone(),
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (got, format!("http://{addr}/v1/traces"))
}

/// The demo upstream over streamable HTTP, its state in `state`; and its URL.
fn http_upstream(state: &std::path::Path) -> (ChildGuard, String) {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(bin());
    cmd.args(["upstream-demo", "--http", "127.0.0.1:0", "--state"]).arg(state);
    let mut child = ChildGuard(cmd.stdout(Stdio::piped()).spawn().unwrap());
    let line = BufReader::new(child.0.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    (child, line.rsplit(' ').next().unwrap().to_string())
}

/// The root span of `trace` and its children, once the root has arrived (at most 10 s).
async fn spans_of(got: &std::sync::Mutex<Vec<Got>>, trace: &str) -> (Got, Vec<Got>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let spans: Vec<Got> = got.lock().unwrap().iter().filter(|s| s.trace == trace).cloned().collect();
        let root = spans.iter().find(|s| s.kind == 2).cloned(); // SPAN_KIND_SERVER
        if let Some(root) = root {
            let children = spans.into_iter().filter(|s| s.parent == root.id).collect();
            return (root, children);
        }
        assert!(std::time::Instant::now() < deadline, "no root span for trace {trace}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn names(children: &[Got]) -> Vec<&str> {
    let mut n: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
    n.sort_unstable();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_a_denied_and_a_pending_call_each_export_a_span_tree_with_the_audit_records_trace() {
    let (got, endpoint) = otlp_receiver().await;
    let state = tempfile::tempdir().unwrap();
    let (_upstream, url) = http_upstream(state.path());
    let f = Fixture::build(
        "",
        &Options {
            stage_upstream: Some(format!(
                "[[upstream]]\nname = \"web\"\nenvironment = \"stage\"\nurl = \"{url}\"\ntimeout = \"5s\"\n"
            )),
            ..Default::default()
        },
    );
    f.set_in_env(
        "stage",
        &format!(r#"telemetry = {{ otlp_endpoint = "{endpoint}", resource_attributes = {{ team = "secops" }} }}"#),
    );
    let gw = Gateway::start(&f.config(), &ENVS);

    // Allowed, continuing the caller's trace.
    let oncall = f.token("stage", "olga", &["oncall"]);
    let olga = Mcp::open(gw.url("stage"), &oncall).await;
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "create_ticket", "arguments": {"title": "disk full on db-7", "severity": "high", "reporter_email": "olga@example.test"}}});
    let allowed = olga
        .send(body.to_string(), &[("traceparent", &format!("00-{caller_trace}-{caller_span}-01"))])
        .await;
    assert_eq!(allowed.body["result"]["isError"], json!(false), "{}", allowed.text);
    assert_eq!(allowed.trace(), caller_trace, "the caller's trace is continued");
    // Denied: invalid arguments.
    let mut olga = olga;
    let denied = olga.call("create_ticket", json!({"title": "x", "severity": "urgent"})).await;
    assert_eq!(denied.error_code(), Some(-32602));
    // Pending: needs approval.
    let mut ivan = Mcp::open(gw.url("stage"), &f.token("stage", "ivan", &["incident_commander"])).await;
    let pending = ivan
        .call("create_firewall_block", json!({"ip": "203.0.113.0/24", "ttl_minutes": 30}))
        .await;
    assert_eq!(pending.body["result"]["structuredContent"]["status"], "pending", "{}", pending.text);

    let records = f.audit("stage");
    let record_of = |trace: &str, code: &str| {
        records
            .iter()
            .find(|r| r["trace_id"] == trace && r["reason_code"] == code)
            .unwrap_or_else(|| panic!("no {code} record of {trace}"))
            .clone()
    };

    // The allowed call: a server span under the caller's, a child per stage, the upstream's
    // a client span whose ID is the `traceparent` the upstream received, as header and _meta.
    let (root, children) = spans_of(&got, caller_trace).await;
    assert_eq!(root.parent, caller_span);
    assert_eq!(root.name, "tools/call create_ticket");
    assert_eq!(root.attributes["mcp.method.name"], "tools/call");
    assert_eq!(root.attributes["gen_ai.tool.name"], "create_ticket");
    assert_eq!(root.attributes["capgate.decision"], "allow");
    assert_eq!(root.attributes["capgate.reason_code"], "executed");
    assert_eq!(root.attributes["capgate.upstream"], "web");
    assert_eq!(record_of(caller_trace, "executed")["trace_id"], caller_trace);
    assert_eq!(names(&children), ["audit", "authn", "authorize", "upstream", "validate"]);
    let up = children.iter().find(|c| c.name == "upstream").unwrap();
    assert_eq!(up.kind, 3, "the upstream call is a client span"); // SPAN_KIND_CLIENT
    let calls: Vec<Value> = std::fs::read_to_string(state.path().join("calls.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let call = calls.iter().find(|c| c["tool"] == "create_ticket").unwrap();
    let sent = format!("00-{caller_trace}-{}-01", up.id);
    assert_eq!(call["meta"]["http_traceparent"], sent.as_str(), "the W3C header: {call}");
    assert_eq!(call["meta"]["traceparent"], sent.as_str(), "and in _meta: {call}");
    for key in ["service.name", "deployment.environment.name", "team"] {
        assert!(root.resource.contains_key(key), "{key} in {:?}", root.resource);
    }
    assert_eq!(root.resource["service.name"], "capgate");
    assert_eq!(root.resource["deployment.environment.name"], "stage");
    assert_eq!(root.resource["team"], "secops");

    // The denied call: refused at validation; nothing authorized, nothing forwarded.
    let (root, children) = spans_of(&got, &denied.trace()).await;
    assert!(root.parent.is_empty() || root.parent == "0000000000000000", "a new trace: {root:?}");
    assert_eq!(root.attributes["capgate.decision"], "deny");
    assert_eq!(root.attributes["capgate.reason_code"], "arguments_invalid");
    assert_eq!(record_of(&denied.trace(), "arguments_invalid")["decision"], "deny");
    assert_eq!(names(&children), ["authn", "validate"]);

    // The pending call: decided up to the approval; nothing forwarded.
    let (root, children) = spans_of(&got, &pending.trace()).await;
    assert_eq!(root.attributes["capgate.decision"], "pending");
    assert_eq!(root.attributes["capgate.reason_code"], "approval_required");
    assert_eq!(root.attributes["gen_ai.tool.name"], "create_firewall_block");
    record_of(&pending.trace(), "approval_required");
    assert_eq!(names(&children), ["approval", "authn", "authorize", "validate"]);

    // Nothing secret, nothing the caller sent as an argument, in any span.
    let all = got.lock().unwrap().clone();
    let session = olga.session.clone().unwrap();
    for s in &all {
        let text = format!("{} {:?} {:?}", s.name, s.attributes, s.resource);
        for secret in [
            oncall.as_str(),
            "disk full",
            "olga@example.test",
            "203.0.113.0/24",
            "upstream-secret",
            session.as_str(),
        ] {
            assert!(!text.contains(secret), "a span carries {secret}: {s:?}");
        }
    }
    // The dev environment exports nothing: every span is stage's.
    assert!(all.iter().all(|s| s.resource["deployment.environment.name"] == "stage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_calls_succeed_and_the_spans_not_sent_are_counted() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = Fixture::new("");
    f.set_in_env(
        "dev",
        &format!(r#"telemetry = {{ otlp_endpoint = "http://127.0.0.1:{port}/v1/traces" }}"#),
    );
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut olga = Mcp::open(gw.url("dev"), &f.token("dev", "olga", &["oncall"])).await;
    for _ in 0..5 {
        let r = olga.call("list_tickets", json!({})).await;
        assert!(r.body["result"].is_object(), "{}", r.text);
    }
    assert_eq!(f.calls("dev").len(), 5);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let text = get(format!("{}/metrics", gw.base("dev"))).await.text().await.unwrap();
        let dropped: f64 = text
            .lines()
            .find(|l| l.starts_with("capgate_trace_spans_dropped_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        // Five calls' root spans at least, and their stages.
        if dropped >= 5.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no dropped spans counted:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
