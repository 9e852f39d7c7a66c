//! The approver console in a real browser: headless Chromium (Debian package `chromium`,
//! installed by `.ci/run`) driven by playwright-core (tests/interop/console.mjs). An
//! approver signs in, sees the pending request and a new one arrive without a reload,
//! approves with a reason; the requester's repeated call then runs, once. A non-approver
//! signs in and sees nothing to decide.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "integration tests: a failed expectation is a panic"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn an_approver_approves_in_the_browser_and_the_repeated_call_runs_once() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is needed for the console test: apt-get install chromium (or set CHROMIUM)"
    );
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let requester = f.token("dev", "ivan", &["incident_commander"]);
    let mut ivan = Mcp::open(gw.url("dev"), &requester).await;
    let args = json!({"ip": "203.0.113.0/24", "ttl_minutes": 60});
    let r = ivan.call("create_firewall_block", args.clone()).await;
    let id = r.body["result"]["structuredContent"]["approval_id"].as_str().unwrap().to_string();

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let cfg = json!({
        "base": gw.base("dev"),
        "mcp": gw.url("dev"),
        "approver": f.token("dev", "sara", &["security_lead"]),
        "nonApprover": f.token("dev", "vic", &["viewer"]),
        "requester": requester,
        "approvalId": id,
        "screenshot": screenshot,
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/console.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(cfg.to_string())
            .env("CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    assert!(seen["badTokenMessage"].as_str().unwrap().contains("refused"), "{seen}");
    assert!(seen["badTokenKept"].is_null(), "a refused token is not kept");
    assert!(seen["whoami"].as_str().unwrap().contains("sara"));
    let card = seen["firstCardText"].as_str().unwrap();
    for part in ["create_firewall_block", "203.0.113.0/24", "ivan", "security_lead"] {
        assert!(card.contains(part), "card lacks {part}: {card}");
    }
    assert_eq!(seen["cardsAfterSecond"], 2, "the second request appeared without a reload");
    assert!(seen["trailText"].as_str().unwrap().contains("approval_required"));
    assert!(seen["noReasonError"].as_str().unwrap().contains("reason"));
    assert_eq!(seen["pendingAfterApprove"], 1);
    assert!(
        seen["url"].as_str().unwrap().ends_with("/console/"),
        "no token in the URL: {}",
        seen["url"]
    );
    assert_eq!(seen["cookies"], json!([]));
    assert_eq!(seen["stored"]["local"], 0);
    assert!(seen["nonApproverNotice"].as_str().unwrap().contains("no approver role"));
    assert_eq!(seen["nonApproverCards"], 0);
    // The one expected console error is Chromium reporting the 401 of the bad-token sign-in;
    // anything else (a CSP violation, a script error) fails the test.
    let errors: Vec<&Value> = seen["consoleErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap().contains("status of 401"))
        .collect();
    assert!(errors.is_empty(), "CSP violations or script errors: {errors:?}");
    assert_eq!(seen["pageErrors"], json!([]));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "a screenshot was taken");

    // The approval made in the browser is in the log under the request's trace...
    let granted = f
        .audit_for_trace("dev", &r.trace())
        .into_iter()
        .find(|rec| rec["reason_code"] == "approval_granted")
        .expect("the approval is recorded");
    assert_eq!(granted["principal"]["sub"], "sara");
    assert!(granted["reason"].as_str().unwrap().contains("INC-1042"));
    // ...and the requester's repeated call runs, once; the second request stays pending.
    assert!(f.calls("dev").is_empty());
    let run = ivan.call("create_firewall_block", args.clone()).await;
    assert_eq!(run.body["result"]["isError"], json!(false), "{}", run.text);
    assert!(run.body["result"]["structuredContent"]["status"] != "pending", "{}", run.text);
    let calls = f.calls("dev");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["arguments"], args);
    let again = ivan.call("create_firewall_block", args).await;
    assert_eq!(again.body["result"]["structuredContent"]["status"], "pending");
    assert_eq!(f.calls("dev").len(), 1);
}

/// The audit explorer and the contracts page in a real browser, read by an auditor: the
/// chain verified, the chart of a known mix of decisions, the records filtered by decision
/// and by trace, one record with its neighbours, the contracts; then a record edited in the
/// store, and the alarm. An auditor decides nothing, and a caller with neither role reads
/// nothing (the API refuses, and records the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_explores_the_log_and_the_contracts_and_sees_the_alarm_after_tampering() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is needed: apt-get install chromium"
    );
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    // A known mix: 4 allowed, 2 invalid, 1 forbidden, 1 pending.
    let mut olga = Mcp::open(gw.url("dev"), &f.token("dev", "olga", &["oncall"])).await;
    for _ in 0..4 {
        assert!(olga.call("list_tickets", json!({})).await.body["result"].is_object());
    }
    for bad in ["urgent", "whenever"] {
        assert_eq!(
            olga.call("create_ticket", json!({"title": "t", "severity": bad}))
                .await
                .error_code(),
            Some(-32602)
        );
    }
    let mut vic = Mcp::open(gw.url("dev"), &f.token("dev", "vic", &["viewer"])).await;
    assert!(
        vic.call("create_ticket", json!({"title": "x", "severity": "low"}))
            .await
            .error_code()
            .is_some()
    );
    let mut ivan = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let pending = ivan
        .call("create_firewall_block", json!({"ip": "203.0.113.0/24", "ttl_minutes": 60}))
        .await;
    assert_eq!(pending.body["result"]["structuredContent"]["status"], "pending");

    // Neither approver nor auditor: refused, recorded, nothing shown.
    let nobody = f.token("dev", "vic", &["viewer"]);
    for path in [
        "/api/audit",
        "/api/audit/stats",
        "/api/audit/chain",
        "/api/audit/records/1",
        "/api/contracts",
    ] {
        let r = http()
            .get(format!("{}{path}", gw.base("dev")))
            .bearer_auth(&nobody)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(!body.to_string().contains("create_ticket"), "{path} told a non-auditor: {body}");
    }
    assert_eq!(
        f.audit_reason_code("dev", "read_refused", 5).len(),
        5,
        "every refused read is recorded"
    );
    // Bounded reads: a range too long, a page too large, are refused.
    let auditor = f.token("dev", "ada", &["auditor"]);
    let get_as = |path: String| {
        let token = auditor.clone();
        async move { http().get(path).bearer_auth(token).send().await.unwrap() }
    };
    let base = gw.base("dev");
    assert_eq!(
        get_as(format!("{base}/api/audit?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z"))
            .await
            .status(),
        400
    );
    assert_eq!(get_as(format!("{base}/api/audit?limit=501")).await.status(), 400);
    assert_eq!(get_as(format!("{base}/api/audit?from=yesterday")).await.status(), 400);
    assert_eq!(get_as(format!("{base}/api/audit/records/zero")).await.status(), 400);

    let records = f.audit("dev");
    // What the chart must show: the log's decisions in the range (an executed call's outcome
    // is not a decision of its own).
    let mut want: std::collections::BTreeMap<String, u64> =
        ["allow", "deny", "pending", "error"].iter().map(|d| (d.to_string(), 0)).collect();
    for r in &records {
        if r["reason_code"] != "executed" {
            *want.get_mut(r["decision"].as_str().unwrap()).unwrap() += 1;
        }
    }
    // 4 allowed; 3 denied calls, 5 refused reads and 4 refused queries; 1 pending.
    assert_eq!((want["allow"], want["deny"], want["pending"]), (4, 3 + 5 + 4, 1), "{want:?}");

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explorer");
    std::fs::create_dir_all(&shots).unwrap();
    let cfg = json!({
        "base": gw.base("dev"),
        "auditor": auditor,
        "pendingTrace": pending.trace(),
        "screenshots": shots,
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/explorer.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(cfg.to_string())
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let read_phase = |out: &mut std::io::Lines<BufReader<std::process::ChildStdout>>| -> Value {
        let line = out.next().expect("explorer.mjs said nothing (it failed: see its stderr)").unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let seen = tokio::task::block_in_place(|| read_phase(&mut out));
    assert_eq!(seen["phase"], "read", "{seen}");

    assert!(seen["chainText"].as_str().unwrap().contains("Chain verified"), "{seen}");
    let legend: std::collections::BTreeMap<String, u64> = serde_json::from_value(seen["legend"].clone()).unwrap();
    assert_eq!(legend, want, "the chart's totals are the log's decisions");
    assert!(seen["bars"].as_u64().unwrap() >= 3, "bars for allow, deny and pending: {seen}");
    assert!(seen["barHeights"].as_array().unwrap().iter().all(|h| h.as_f64().unwrap() > 0.0));
    assert!(seen["topReasons"].as_str().unwrap().contains("arguments_invalid"));
    assert!(seen["topCallers"].as_str().unwrap().contains("olga"));
    assert_eq!(seen["rowsAll"].as_u64().unwrap() as usize, records.len().min(50));
    let denials = records.iter().filter(|r| r["decision"] == "deny").count();
    assert_eq!(seen["rowsDeny"].as_u64().unwrap() as usize, denials);
    let of_trace = records.iter().filter(|r| r["trace_id"] == pending.trace().as_str()).count();
    assert_eq!(seen["rowsTrace"].as_u64().unwrap() as usize, of_trace);
    assert!(seen["recordLink"].as_str().unwrap().contains("chain link holds"), "{seen}");
    assert!(seen["recordText"].as_str().unwrap().contains("approval_required"));
    assert_eq!(seen["neighbours"], json!(["previous", "next"]));
    let contracts: Vec<String> = serde_json::from_value(seen["contracts"].clone()).unwrap();
    for c in ["create_firewall_block", "create_ticket", "list_tickets", "typed_lookup"] {
        assert!(contracts.contains(&c.to_string()), "{c} in {contracts:?}");
    }
    let block = seen["blockContract"].as_str().unwrap();
    for part in ["incident_commander", "security_lead", "ttl_minutes", "approval"] {
        assert!(block.contains(part), "the contract card lacks {part}: {block}");
    }
    // Read-only: an auditor has no approvals tab to act in and no decision buttons.
    assert_eq!(seen["decideButtons"], 0);

    // Tamper: edit a stored record's reason in place.
    let conn = rusqlite::Connection::open(f.audit_db("dev")).unwrap();
    conn.execute(
        "UPDATE audit SET record = json_set(record, '$.reason', 'nothing happened') WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(conn);
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    let seen = tokio::task::block_in_place(|| read_phase(&mut out));
    assert_eq!(seen["phase"], "tampered", "{seen}");
    let alarm = seen["alarm"].as_str().unwrap();
    assert!(alarm.contains("FAILED") && alarm.contains("#3"), "{alarm}");
    assert!(seen["url"].as_str().unwrap().ends_with("/console/"), "no token in the URL");
    assert!(tokio::task::block_in_place(|| child.wait()).unwrap().success());
    let errors: Vec<&Value> = seen["consoleErrors"].as_array().unwrap().iter().collect();
    assert!(errors.is_empty(), "CSP violations or script errors: {errors:?}");
    assert_eq!(seen["pageErrors"], json!([]));
    for shot in [
        "console-audit.png",
        "console-record.png",
        "console-contracts.png",
        "console-alarm.png",
    ] {
        assert!(std::fs::metadata(shots.join(shot)).unwrap().len() > 10_000, "{shot} was taken");
    }
}
