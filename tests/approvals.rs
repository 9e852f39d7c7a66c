//! The approval workflow end to end: requests, decisions through the API and the CLI,
//! release exactly once, every bypass refused, waiting with progress, restarts and several
//! gateway processes sharing one store. The canary upstream counts executions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "integration tests: a failed expectation is a panic"
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const BLOCK: &str = "create_firewall_block";

fn block_args() -> Value {
    json!({"ip": "203.0.113.0/24", "ttl_minutes": 60})
}

/// A client of the approvals API.
struct Api {
    base: String,
    token: String,
}

impl Api {
    fn new(base: String, token: String) -> Self {
        Self { base, token }
    }

    async fn get(&self, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = http()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn decide(&self, id: &str, verdict: &str, reason: &str) -> (u16, Value) {
        let r = http()
            .post(format!("{}/api/approvals/{id}/{verdict}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(json!({"reason": reason}).to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
    }

    /// The first pending request's ID, once a waiting call (in another task) has opened one.
    async fn first_pending(&self) -> String {
        for _ in 0..40 {
            if let Some(first) = self.pending_ids().await.into_iter().next() {
                return first;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no pending request appeared: the waiting call opened none");
    }

    async fn pending_ids(&self) -> Vec<String> {
        let (s, v, _) = self.get("/api/approvals?status=pending").await;
        assert_eq!(s, 200, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn status_of(r: &Reply) -> String {
    r.body["result"]["structuredContent"]["status"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            if r.body["result"]["isError"] == json!(false) {
                "executed".into()
            } else {
                format!("other: {}", r.text)
            }
        })
}

fn approval_id(r: &Reply) -> String {
    r.body["result"]["structuredContent"]["approval_id"]
        .as_str()
        .expect("an approval id")
        .to_string()
}

fn block_calls(f: &Fixture, env: &str) -> Vec<Value> {
    f.calls(env).into_iter().filter(|c| c["tool"] == BLOCK).collect()
}

#[tokio::test]
async fn approved_call_runs_once_for_its_requester_and_arguments_only() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut ivan = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let first = ivan.call(BLOCK, block_args()).await;
    assert_eq!(status_of(&first), "pending", "{}", first.text);
    let id = approval_id(&first);
    let original_trace = first.trace();

    let lead = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    assert_eq!(lead.pending_ids().await, vec![id.clone()]);
    let (s, listed, _) = lead.get("/api/approvals").await;
    assert_eq!(s, 200);
    let item = &listed[0];
    assert_eq!(
        (
            item["tool"].as_str(),
            item["requester"]["sub"].as_str(),
            item["environment"].as_str()
        ),
        (Some(BLOCK), Some("ivan"), Some("dev"))
    );
    assert_eq!(item["arguments"], block_args());
    assert_eq!(item["trace_id"], original_trace.as_str());
    assert_eq!(item["can_decide"], true);

    let (s, decided) = lead.decide(&id, "approve", "INC-4711: block the scanner").await;
    assert_eq!(s, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert!(block_calls(&f, "dev").is_empty(), "approving runs nothing by itself");

    // Another caller with the same arguments, or the requester with other arguments: new
    // requests, nothing runs.
    let mut mallory = Mcp::open(gw.url("dev"), &f.token("dev", "mallory", &["incident_commander"])).await;
    let other_caller = mallory.call(BLOCK, block_args()).await;
    assert_eq!(status_of(&other_caller), "pending");
    assert_ne!(approval_id(&other_caller), id);
    let wider = ivan.call(BLOCK, json!({"ip": "0.0.0.0/0", "ttl_minutes": 60})).await;
    assert_eq!(status_of(&wider), "pending");
    let longer = ivan.call(BLOCK, json!({"ip": "203.0.113.0/24", "ttl_minutes": 61})).await;
    assert_eq!(status_of(&longer), "pending");
    assert!(block_calls(&f, "dev").is_empty());

    // The requester repeating the identical call runs it, once, with exactly those arguments.
    let run = ivan.call(BLOCK, block_args()).await;
    assert_eq!(run.body["result"]["isError"], json!(false), "{}", run.text);
    assert!(run.body["result"]["structuredContent"].is_null() || run.body["result"]["structuredContent"]["status"] != "pending");
    assert_eq!(run.body["result"]["_meta"]["capgate/trace_id"], original_trace.as_str());
    let calls = block_calls(&f, "dev");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["arguments"], block_args());

    // A second repetition does not run again: it opens a new request.
    let again = ivan.call(BLOCK, block_args()).await;
    assert_eq!(status_of(&again), "pending");
    assert_ne!(approval_id(&again), id);
    assert_eq!(block_calls(&f, "dev").len(), 1);

    // Every step of the request is recorded under the original call's trace.
    let steps: Vec<(String, String)> = f
        .audit_for_trace("dev", &original_trace)
        .iter()
        .map(|r| {
            (
                r["decision"].as_str().unwrap().to_string(),
                r["reason_code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("pending", "approval_required"),
        ("allow", "approval_granted"),
        ("allow", "allowed"),
        ("allow", "executed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(steps, want);
    let granted = f
        .audit_for_trace("dev", &original_trace)
        .into_iter()
        .find(|r| r["reason_code"] == "approval_granted")
        .unwrap();
    assert_eq!(granted["principal"]["sub"], "sara");
    assert_eq!(granted["approval"]["id"], id.as_str());
    assert!(granted["reason"].as_str().unwrap().contains("INC-4711"));

    // The API shows the trail too.
    let (s, one, _) = lead.get(&format!("/api/approvals/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(one["status"], "executed");
    assert_eq!(one["trail"].as_array().unwrap().len(), 4);
    drop(gw);
    let (code, out, err) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn requester_and_non_approvers_cannot_decide_and_bad_requests_change_nothing() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    // Holds an approver role too: still may never approve their own request.
    let both = f.token("dev", "olga", &["incident_commander", "security_lead"]);
    let mut olga = Mcp::open(gw.url("dev"), &both).await;
    let r = olga.call(BLOCK, block_args()).await;
    let id = approval_id(&r);
    let trace = r.trace();

    let own = Api::new(gw.base("dev"), both.clone());
    let (s, body) = own.decide(&id, "approve", "looks fine to me").await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["reason_code"], "approval_refused");
    let (_, listed, _) = own.get("/api/approvals").await;
    assert_eq!(listed[0]["mine"], true);
    assert_eq!(listed[0]["can_decide"], false);

    let viewer = Api::new(gw.base("dev"), f.token("dev", "vic", &["viewer", "incident_commander"]));
    let (s, _) = viewer.decide(&id, "approve", "sure").await;
    assert_eq!(s, 403);
    assert!(viewer.pending_ids().await.is_empty(), "a non-approver sees no requests");
    let (s, _, _) = viewer.get(&format!("/api/approvals/{id}")).await;
    assert_eq!(s, 403);

    // No token, a bad token, a token in the query: 401 with the challenge.
    let r = http().get(format!("{}/api/approvals", gw.base("dev"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("resource_metadata="));
    let r = http()
        .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
        .bearer_auth("not-a-jwt")
        .body(r#"{"reason":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let lead_token = f.token("dev", "sara", &["security_lead"]);
    let r = http()
        .get(format!("{}/api/approvals?access_token={lead_token}", gw.base("dev")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A stage token is not a dev identity.
    let stage_lead = Api::new(gw.base("dev"), f.token("stage", "sara", &["security_lead"]));
    let (s, _) = stage_lead.decide(&id, "approve", "from stage").await;
    assert_eq!(s, 401);
    // The dev approval id means nothing in stage.
    let in_stage = Api::new(gw.base("stage"), f.token("stage", "sara", &["security_lead"]));
    let (s, _) = in_stage.decide(&id, "approve", "cross-env").await;
    assert_eq!(s, 404);

    // Malformed decisions: specific 400s.
    let lead = Api::new(gw.base("dev"), lead_token.clone());
    for body in [
        "",
        "{}",
        r#"{"reason": ""}"#,
        r#"{"reason": "ok", "approve": true}"#,
        r#"{"reason": 5}"#,
        "[1]",
    ] {
        let r = http()
            .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
            .bearer_auth(&lead_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "body {body:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error_description"].as_str().unwrap().contains("reason"), "{v}");
    }
    let (s, _, _) = lead.get("/api/approvals?status=maybe").await;
    assert_eq!(s, 400);
    let (s, _) = lead.decide("8b1c1f5e-0000-4000-8000-000000000000", "approve", "unknown").await;
    assert_eq!(s, 404);
    let (s, _) = lead.decide("../../etc", "approve", "path").await;
    assert_eq!(s, 404);
    // Hostile browser contexts: another site's Origin, a rebinding Host.
    let r = http()
        .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
        .bearer_auth(&lead_token)
        .header("origin", "https://evil.example")
        .body(r#"{"reason":"csrf"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http()
        .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
        .bearer_auth(&lead_token)
        .header("host", "evil.example")
        .body(r#"{"reason":"rebinding"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Nothing above changed the request or ran anything.
    assert_eq!(lead.pending_ids().await, vec![id.clone()]);
    let again = olga.call(BLOCK, block_args()).await;
    assert_eq!(status_of(&again), "pending");
    assert_eq!(approval_id(&again), id, "the same call reports the same pending request");
    assert!(block_calls(&f, "dev").is_empty());
    // The refused decisions are on the request's record.
    let refused: Vec<Value> = f
        .audit_for_trace("dev", &trace)
        .into_iter()
        .filter(|r| r["reason_code"] == "approval_refused")
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "own and non-approver; the rest were refused before reaching the request"
    );
    assert!(refused.iter().any(|r| r["principal"]["sub"] == "olga"));

    // A decision is final: deny, then no approval can follow, and the call never runs.
    let (s, _) = lead.decide(&id, "deny", "not during the freeze").await;
    assert_eq!(s, 200);
    let other_lead = Api::new(gw.base("dev"), f.token("dev", "tom", &["security_lead"]));
    let (s, _) = other_lead.decide(&id, "approve", "overrule").await;
    assert_eq!(s, 409);
    let denied = olga.call(BLOCK, block_args()).await;
    assert_eq!(denied.body["result"]["isError"], json!(true), "{}", denied.text);
    assert_eq!(denied.body["result"]["structuredContent"]["status"], "denied");
    assert!(
        denied.body["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not during the freeze")
    );
    assert!(block_calls(&f, "dev").is_empty());
}

#[tokio::test]
async fn concurrent_repetitions_execute_once() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let token = f.token("dev", "ivan", &["incident_commander"]);
    let mut ivan = Mcp::open(gw.url("dev"), &token).await;
    let id = approval_id(&ivan.call(BLOCK, block_args()).await);
    let lead = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    assert_eq!(lead.decide(&id, "approve", "go").await.0, 200);

    let mut racers = Vec::new();
    for _ in 0..12 {
        let url = gw.url("dev").to_string();
        let token = token.clone();
        racers.push(tokio::spawn(async move {
            let mut m = Mcp::open(&url, &token).await;
            status_of(&m.call(BLOCK, block_args()).await)
        }));
    }
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|s| *s == "executed").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|s| *s == "pending").count(), 11, "{outcomes:?}");
    assert_eq!(block_calls(&f, "dev").len(), 1);
}

const EXTRA_CONTRACTS: &str = r#"
[[contract]]
tool = "create_ticket_two_person"
description = "create_ticket, but two distinct approvers must agree"
allowed_roles = ["oncall"]
side_effects = "write"
requires_approval = true
approvals_required = 2
approver_roles = ["security_lead", "dba"]
backend = { upstream = "demo", tool = "create_ticket" }
arg_schema = { title = "string(1..120)", severity = "enum(low|medium|high|critical)" }

[[contract]]
tool = "create_ticket_short"
description = "create_ticket with approvals that expire after two seconds"
allowed_roles = ["oncall"]
side_effects = "write"
requires_approval = true
approval_ttl = "2s"
backend = { upstream = "demo", tool = "create_ticket" }
arg_schema = { title = "string(1..120)", severity = "enum(low|medium|high|critical)" }

[[contract]]
tool = "create_ticket_waiting"
description = "create_ticket that waits up to 30s for its approval"
allowed_roles = ["oncall"]
side_effects = "write"
requires_approval = true
approval_wait = "30s"
backend = { upstream = "demo", tool = "create_ticket" }
arg_schema = { title = "string(1..120)", severity = "enum(low|medium|high|critical)" }
"#;

fn fixture_with_extra_contracts() -> Fixture {
    let f = Fixture::new("");
    std::fs::write(f.path().join("contracts/approvals.toml"), EXTRA_CONTRACTS).unwrap();
    f
}

fn ticket_calls(f: &Fixture) -> Vec<Value> {
    f.calls("dev").into_iter().filter(|c| c["tool"] == "create_ticket").collect()
}

#[tokio::test]
async fn two_person_rule_needs_two_distinct_approvers() {
    let f = fixture_with_extra_contracts();
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let args = json!({"title": "rotate db creds", "severity": "high"});
    let id = approval_id(&alice.call("create_ticket_two_person", args.clone()).await);
    let sara = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    let (s, v) = sara.decide(&id, "approve", "first").await;
    assert_eq!((s, v["status"].as_str(), v["approvals"].as_u64()), (200, Some("pending"), Some(1)));
    assert_eq!(sara.decide(&id, "approve", "again").await.0, 409, "one person, one vote");
    assert_eq!(status_of(&alice.call("create_ticket_two_person", args.clone()).await), "pending");
    assert!(ticket_calls(&f).is_empty());
    let dan = Api::new(gw.base("dev"), f.token("dev", "dan", &["dba"]));
    let (s, v) = dan.decide(&id, "approve", "second").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("approved")));
    assert_eq!(status_of(&alice.call("create_ticket_two_person", args.clone()).await), "executed");
    let calls = ticket_calls(&f);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["arguments"]["title"], "rotate db creds");
    let rec = f
        .audit("dev")
        .into_iter()
        .find(|r| r["reason_code"] == "allowed" && r["approval"]["id"] == id.as_str())
        .unwrap();
    assert_eq!(rec["approval"]["approver"], "sara, dan");
}

#[tokio::test]
async fn expired_approvals_never_run_and_are_recorded() {
    let f = fixture_with_extra_contracts();
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let args = json!({"title": "late", "severity": "low"});
    let first = alice.call("create_ticket_short", args.clone()).await;
    let id = approval_id(&first);
    let sara = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    assert_eq!(sara.decide(&id, "approve", "ok").await.0, 200);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let late = alice.call("create_ticket_short", args.clone()).await;
    assert_eq!(status_of(&late), "pending");
    assert_ne!(approval_id(&late), id);
    assert!(ticket_calls(&f).is_empty());
    // The sweeper records the expiry under the original trace within a few seconds.
    let mut expired = false;
    for _ in 0..40 {
        if f.audit_for_trace("dev", &first.trace())
            .iter()
            .any(|r| r["reason_code"] == "approval_expired")
        {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(expired, "no approval_expired record");
    assert_eq!(sara.decide(&id, "approve", "too late").await.0, 409);
    assert!(ticket_calls(&f).is_empty());
}

#[tokio::test]
async fn a_waiting_call_gets_progress_and_runs_when_approved() {
    let f = fixture_with_extra_contracts();
    let gw = Gateway::start(&f.config(), &ENVS);
    let token = f.token("dev", "alice", &["oncall"]);
    let url = gw.url("dev").to_string();
    let waiter = tokio::spawn(async move {
        let mut m = Mcp::open(&url, &token).await;
        m.rpc(
            "tools/call",
            json!({"name": "create_ticket_waiting", "arguments": {"title": "wait for me", "severity": "low"}, "_meta": {"progressToken": "p-1"}}),
        )
        .await
    });
    let sara = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    let id = sara.first_pending().await;
    // Let at least one progress notification go out before deciding.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(ticket_calls(&f).is_empty());
    assert_eq!(sara.decide(&id, "approve", "go ahead").await.0, 200);
    let r = tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap();
    assert!(r.text.contains("notifications/progress"), "no progress was sent: {}", r.text);
    assert!(r.text.contains("waiting for approval"), "{}", r.text);
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(ticket_calls(&f).len(), 1);

    // A caller may also ask to wait for a contract that does not; it ends pending when the
    // wait runs out, and nothing ran.
    let mut ivan = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let r = ivan
        .rpc(
            "tools/call",
            json!({"name": BLOCK, "arguments": block_args(), "_meta": {"capgate/approval_wait": 1}}),
        )
        .await;
    assert_eq!(status_of(&r), "pending");
    assert!(block_calls(&f, "dev").is_empty());
}

/// A session whose only activity is a call waiting for its approval is in use: it is not
/// closed as idle under the waiting call, and stays open after it.
#[tokio::test]
async fn a_call_waiting_past_the_session_idle_timeout_keeps_its_session() {
    let f = fixture_with_extra_contracts();
    f.set_in_env("dev", "session_idle_timeout = \"1s\"");
    let gw = Gateway::start(&f.config(), &ENVS);
    let token = f.token("dev", "alice", &["oncall"]);
    let url = gw.url("dev").to_string();
    let waiter = tokio::spawn(async move {
        let mut m = Mcp::open(&url, &token).await;
        let r = m
            .rpc(
                "tools/call",
                json!({"name": "create_ticket_waiting", "arguments": {"title": "long wait", "severity": "low"}, "_meta": {"progressToken": "p-2"}}),
            )
            .await;
        let after = m.rpc("tools/list", json!({})).await;
        (r, after)
    });
    let sara = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    let id = sara.first_pending().await;
    // Three idle timeouts with nothing but the wait on the session.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sara.decide(&id, "approve", "go ahead").await.0, 200);
    let (r, after) = tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap();
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(ticket_calls(&f).len(), 1);
    assert!(
        after.body["result"]["tools"].is_array(),
        "the session was closed after the wait: {}",
        after.text
    );
}

/// A caller that cancels its waiting call (`notifications/cancelled`) has stopped waiting for
/// it: the approval that comes afterwards does not run it behind the caller's back. The
/// request stays pending, and the identical call repeated runs it once, as without a wait.
#[tokio::test]
async fn a_cancelled_wait_never_runs_when_approved_later() {
    let f = fixture_with_extra_contracts();
    let gw = Gateway::start(&f.config(), &ENVS);
    let token = f.token("dev", "alice", &["oncall"]);
    let mut alice = Mcp::open(gw.url("dev"), &token).await;
    let mut same_session = Mcp::new(gw.url("dev"), Some(token));
    same_session.session = alice.session.clone();
    let args = json!({"title": "changed my mind", "severity": "low"});
    let call = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
        "params": {"name": "create_ticket_waiting", "arguments": args}});
    let waiter = tokio::spawn(async move { same_session.send(call.to_string(), &[]).await });
    let sara = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    let id = sara.first_pending().await;

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 77, "reason": "the user moved on"}});
    let r = alice.send(cancel.to_string(), &[]).await;
    assert!(r.status == 202 || r.status == 200, "cancel: {} {}", r.status, r.text);
    // The wait looks at the cancellation at once; let a poll interval pass all the same.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sara.decide(&id, "approve", "go ahead").await.0, 200);
    // A wait still running would see the decision within its 1 s poll and run the call.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(ticket_calls(&f).is_empty(), "the cancelled call ran: {:?}", ticket_calls(&f));
    waiter.abort();
    let recs = f.audit("dev");
    assert!(
        !recs
            .iter()
            .any(|r| r["reason_code"] == "allowed" && r["approval"]["id"] == id.as_str()),
        "the cancelled call was released: {recs:#?}"
    );

    // The approval was not used up: the caller repeating the identical call runs it once.
    let again = alice.call("create_ticket_waiting", args).await;
    assert_eq!(status_of(&again), "executed");
    assert_eq!(ticket_calls(&f).len(), 1);
}
#[tokio::test]
async fn approvals_survive_a_restart_and_work_across_processes_sharing_the_store() {
    let f = Fixture::new("");
    let token = f.token("dev", "ivan", &["incident_commander"]);
    let id = {
        let gw = Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]);
        let mut ivan = Mcp::open(gw.url("dev"), &token).await;
        let id = approval_id(&ivan.call(BLOCK, block_args()).await);
        assert!(gw.terminate().success());
        id
    };
    // Two processes serving `dev` from the same store.
    let a = Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]);
    let b = Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]);
    let lead_b = Api::new(b.base("dev"), f.token("dev", "sara", &["security_lead"]));
    assert_eq!(lead_b.pending_ids().await, vec![id.clone()], "the request survived the restart");
    assert_eq!(lead_b.decide(&id, "approve", "ok").await.0, 200);

    let mut racers = Vec::new();
    for i in 0..8 {
        let url = if i % 2 == 0 { a.url("dev") } else { b.url("dev") }.to_string();
        let token = token.clone();
        racers.push(tokio::spawn(async move {
            let mut m = Mcp::open(&url, &token).await;
            status_of(&m.call(BLOCK, block_args()).await)
        }));
    }
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|s| *s == "executed").count(), 1, "{outcomes:?}");
    assert_eq!(block_calls(&f, "dev").len(), 1);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    // Both processes extended one chain.
    let (code, out, err) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "{out}{err}");
}

fn approvals_cli(token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("approvals")
        .args(args)
        .env("CAPGATE_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_lists_approves_and_is_refused_like_the_api() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut ivan = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let id = approval_id(&ivan.call(BLOCK, block_args()).await);
    let base = gw.base("dev");
    let lead = f.token("dev", "sara", &["security_lead"]);

    let (code, out, err) = approvals_cli(&lead, &["list", "--url", gw.url("dev")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains(BLOCK) && out.contains("ivan"), "{out}");
    let (code, out, _) = approvals_cli(&lead, &["list", "--url", &base, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["id"], id.as_str());

    let requester = f.token("dev", "ivan", &["incident_commander", "security_lead"]);
    let (code, _, err) = approvals_cli(&requester, &["approve", &id, "--reason", "mine", "--url", &base]);
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = approvals_cli("", &["approve", &id, "--reason", "x", "--url", &base]);
    assert_eq!(code, 2);
    assert!(err.contains("CAPGATE_TOKEN"), "{err}");
    assert!(block_calls(&f, "dev").is_empty());

    let (code, out, err) = approvals_cli(&lead, &["approve", &id, "--reason", "change CHG-1", "--url", &base]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approved"), "{out}");
    assert_eq!(status_of(&ivan.call(BLOCK, block_args()).await), "executed");
    assert_eq!(block_calls(&f, "dev").len(), 1);
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let r = get(format!("{}{path}", gw.base("dev"))).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind));
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        // The SVG namespace (the explorer's chart) is a name, not a place anything loads from.
        let body = r.text().await.unwrap().replace("'http://www.w3.org/2000/svg'", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
        if path == "/console/" {
            assert!(!body.contains("<script>") && !body.contains(" style="), "no inline code");
        }
        if path == "/console/app.js" {
            assert!(!body.contains("innerHTML") && !body.contains("localStorage") && !body.contains("document.cookie"));
        }
    }
}

#[tokio::test]
async fn an_unwritable_store_refuses_requests_decisions_and_releases_and_uses_nothing_up() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut ivan = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let id = approval_id(&ivan.call(BLOCK, block_args()).await);
    let other = approval_id(&ivan.call(BLOCK, json!({"ip": "198.51.100.0/24", "ttl_minutes": 5})).await);
    let lead = Api::new(gw.base("dev"), f.token("dev", "sara", &["security_lead"]));
    assert_eq!(lead.decide(&id, "approve", "ok").await.0, 200);

    // Another process holds the store's write lock: nothing can be recorded.
    let blocker = rusqlite::Connection::open(f.audit_db("dev")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let release = ivan.call(BLOCK, block_args()).await;
    assert_eq!(release.error_code(), Some(-32003), "{}", release.text);
    assert_eq!(release.body["error"]["data"]["reason_code"], "audit_unavailable");
    let fresh = ivan.call(BLOCK, json!({"ip": "192.0.2.0/24", "ttl_minutes": 5})).await;
    assert_eq!(fresh.error_code(), Some(-32003), "no request can be opened: {}", fresh.text);
    let (s, body) = lead.decide(&other, "approve", "while down").await;
    assert_eq!(s, 503, "{body}");
    assert!(block_calls(&f, "dev").is_empty());

    // Back: the failed release used nothing up, the failed decision changed nothing.
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    let (_, one, _) = lead.get(&format!("/api/approvals/{other}")).await;
    assert_eq!(one["status"], "pending");
    assert_eq!(status_of(&ivan.call(BLOCK, block_args()).await), "executed");
    assert_eq!(block_calls(&f, "dev").len(), 1);
}
