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
