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

    let f = Fixture::new("");
    f.set_in_env("dev", r#"telemetry = { metrics_listen = "127.0.0.1:0", otlp = true }"#);
    let (code, out) = check(&f);
    assert_ne!(code, Some(0), "an unknown telemetry key is refused: {out}");
}
