//! Cedar policies over arguments (SPEC §9, issue 20), against the real binary: the example
//! policy set of `scenarios/policies/` decides calls end to end (each denial runs nothing on
//! the canary upstream, the approval appears only above 60 minutes, a block inside
//! 10.0.0.0/8 is refused to everyone), its table of expected decisions passes
//! `capgate policy test`, a policy that fails to evaluate denies, and a set with a type
//! error is refused by `capgate check` and at start, with its file and line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failure is a test failure"
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// The seed tool as the example's policies expect it: incident commanders and on-call
/// engineers may call it (the policies narrow that), and it is destructive.
const CONTRACT: &str = r#"{
"tool": "create_firewall_block",
"allowed_roles": ["incident_commander", "oncall"],
"arg_schema": {"ip": "cidr", "ttl_minutes": "1-240"},
"side_effects": "destructive"
}
"#;

fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/policies").join(name)).unwrap()
}

/// A fixture whose `dev` environment runs the example policies as they are (its rule for
/// production never applies there), and whose `stage` plays `prod` for the table.
fn fixture() -> Fixture {
    let f = Fixture::new("");
    std::fs::write(f.path().join("contracts/seed.json"), CONTRACT).unwrap();
    for (env, dir, text) in [
        ("dev", "policies-dev", example("firewall.cedar")),
        (
            "stage",
            "policies-stage",
            example("firewall.cedar").replace("\"prod\"", "\"stage\""),
        ),
    ] {
        std::fs::create_dir_all(f.path().join(dir)).unwrap();
        std::fs::write(f.path().join(dir).join("firewall.cedar"), text).unwrap();
        f.set_in_env(env, &format!("policies = \"{dir}/\""));
    }
    f
}

fn capgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn block_calls(f: &Fixture) -> Vec<Value> {
    f.calls("dev")
        .into_iter()
        .filter(|c| c["tool"] == "create_firewall_block")
        .collect()
}

#[test]
fn the_example_table_of_expected_decisions_holds_and_a_wrong_expectation_fails() {
    let f = fixture();
    let table = f.path().join("firewall.test.toml");
    std::fs::write(&table, example("firewall.test.toml").replace("env = \"prod\"", "env = \"stage\"")).unwrap();
    let config = f.config();
    let (code, out, err) = capgate(&["policy", "test", table.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("11 of 11 cases as expected"), "{out}");
    assert!(!out.contains("MISMATCH"), "{out}");

    // One expectation turned round, and one naming a policy that did not decide: both fail.
    let wrong = example("firewall.test.toml")
        .replace("env = \"prod\"", "env = \"stage\"")
        .replacen("expect = \"pending\"", "expect = \"allow\"", 1)
        .replacen("policy = \"never-internal\"", "policy = \"ic-any-range\"", 1);
    std::fs::write(&table, wrong).unwrap();
    let (code, out, _) = capgate(&["policy", "test", table.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("MISMATCH").count(), 2, "{out}");
    assert!(
        out.contains("expected allow by `long-blocks-need-a-lead`, got pending (ic-any-range, long-blocks-need-a-lead)"),
        "{out}"
    );
    assert!(out.contains("expected deny by `ic-any-range`, got deny (never-internal)"), "{out}");

    // The schema the policies are checked against: one action per contract, typed arguments.
    let (code, out, err) = capgate(&["policy", "schema", "--config", config.to_str().unwrap(), "--env", "dev"]);
    assert_eq!(code, 0, "{err}");
    let schema: Value = serde_json::from_str(&out).unwrap();
    let block = &schema["Capgate"]["actions"]["create_firewall_block"]["appliesTo"]["context"]["attributes"];
    assert_eq!(block["args"]["attributes"]["ip"], json!({"type": "Extension", "name": "ipaddr"}));
    assert_eq!(block["args"]["attributes"]["ttl_minutes"], json!({"type": "Long"}));
    assert_eq!(block["prefixes"]["attributes"]["ip"], json!({"type": "Long"}));
    assert!(schema["Capgate"]["actions"]["create_ticket"].is_object(), "{out}");
}

#[tokio::test]
async fn calls_are_decided_by_the_policies_and_no_refused_call_runs() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &ENVS);
    let ic = f.token("dev", "ivan", &["incident_commander"]);
    let oncall = f.token("dev", "alice", &["oncall"]);
    let mut as_ic = Mcp::open(gw.url("dev"), &ic).await;
    let mut as_oncall = Mcp::open(gw.url("dev"), &oncall).await;
    let block = |ip: &str, ttl: u32| json!({"ip": ip, "ttl_minutes": ttl});

    let ok = as_ic.call("create_firewall_block", block("203.0.113.0/24", 30)).await;
    assert!(ok.body["result"]["isError"] != true, "{}", ok.text);
    assert!(ok.body["result"]["structuredContent"]["status"] != "pending", "{}", ok.text);
    assert_eq!(block_calls(&f).len(), 1);

    // Refused, each answered like an unknown tool, and none of them ran.
    for (by_ic, args) in [
        (false, block("198.51.100.0/23", 30)),
        (false, block("198.51.100.0/24", 61)),
        (true, block("10.1.0.0/16", 30)),
        (true, block("0.0.0.0/0", 30)),
    ] {
        let who = if by_ic { &mut as_ic } else { &mut as_oncall };
        let r = who.call("create_firewall_block", args.clone()).await;
        assert_eq!(r.error_code(), Some(-32602), "{args}: {}", r.text);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert_eq!(
            message, "tool `create_firewall_block` is not available",
            "{args}: the answer names no policy"
        );
    }
    assert_eq!(block_calls(&f).len(), 1, "no refused call ran");

    // Only above 60 minutes does the call wait for a security lead; approved, the identical
    // repeat runs once.
    let allowed = as_oncall.call("create_firewall_block", block("198.51.100.0/24", 60)).await;
    assert!(
        allowed.body["result"]["structuredContent"]["status"] != "pending",
        "{}",
        allowed.text
    );
    let pending = as_ic.call("create_firewall_block", block("203.0.113.0/24", 90)).await;
    let sc = &pending.body["result"]["structuredContent"];
    assert_eq!(sc["status"], "pending", "{}", pending.text);
    assert_eq!(block_calls(&f).len(), 2, "the pending call did not run");
    let id = sc["approval_id"].as_str().unwrap().to_string();
    let request: Value = http()
        .get(format!("{}/api/approvals/{id}", gw.base("dev")))
        .bearer_auth(f.token("dev", "sara", &["security_lead"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(request["approver_roles"], json!(["security_lead"]), "{request}");
    let approved = http()
        .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
        .bearer_auth(f.token("dev", "sara", &["security_lead"]))
        .json(&json!({"reason": "policy test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let repeat = as_ic.call("create_firewall_block", block("203.0.113.0/24", 90)).await;
    assert!(repeat.body["result"]["structuredContent"]["status"] != "pending", "{}", repeat.text);
    assert_eq!(block_calls(&f).len(), 3, "the approved repeat ran once");

    // The other contracts still answer by their roles.
    let tickets = as_oncall.call("list_tickets", json!({})).await;
    assert!(tickets.body["result"].is_object(), "{}", tickets.text);

    // Every decision names the policies that made it and the set in force.
    let records = f.audit("dev");
    let block_decisions: Vec<&Value> = records
        .iter()
        .filter(|r| r["tool"] == "create_firewall_block")
        .filter(|r| ["allowed", "tool_not_available", "approval_required"].contains(&r["reason_code"].as_str().unwrap()))
        .collect();
    let digest = block_decisions[0]["policy"]["set_digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    assert!(
        block_decisions.iter().all(|r| r["policy"]["set_digest"] == digest),
        "{block_decisions:#?}"
    );
    let ids = |code: &str| -> Vec<Value> {
        block_decisions
            .iter()
            .filter(|r| r["reason_code"] == code)
            .map(|r| r["policy"]["ids"].clone())
            .collect()
    };
    assert!(ids("allowed").contains(&json!(["ic-any-range"])), "{block_decisions:#?}");
    assert!(ids("allowed").contains(&json!(["oncall-narrow-and-short"])), "{block_decisions:#?}");
    let refused = ids("tool_not_available");
    assert_eq!(refused.len(), 4, "{block_decisions:#?}");
    // A deny by default (no permit matched) has no policy to name.
    assert_eq!(refused.iter().filter(|i| **i == json!([])).count(), 2, "{refused:?}");
    assert_eq!(
        refused.iter().filter(|i| **i == json!(["never-internal"])).count(),
        2,
        "{refused:?}"
    );
    assert!(
        ids("approval_required").contains(&json!(["ic-any-range", "long-blocks-need-a-lead"])),
        "{block_decisions:#?}"
    );
}

#[tokio::test]
async fn a_policy_that_fails_to_evaluate_denies_the_call() {
    let f = fixture();
    // An overflow is an evaluation error, which no type check can see: with it, even the
    // incident commander's permitted call is denied.
    std::fs::write(
        f.path().join("policies-dev/overflow.cedar"),
        "@id(\"overflows\")\npermit (principal, action == Capgate::Action::\"create_firewall_block\", resource)\nwhen { context.args.ttl_minutes * 9223372036854775807 > 0 };\n",
    )
    .unwrap();
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut as_ic = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let r = as_ic
        .call("create_firewall_block", json!({"ip": "203.0.113.0/24", "ttl_minutes": 30}))
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert!(
        !r.text.contains("overflow"),
        "the caller is not told which policy failed: {}",
        r.text
    );
    assert!(block_calls(&f).is_empty());
    let records = f.audit("dev");
    let denied = records
        .iter()
        .find(|r| r["tool"] == "create_firewall_block" && r["reason_code"] == "tool_not_available")
        .unwrap();
    assert_eq!(denied["policy"]["ids"], json!(["overflows"]), "{denied}");
}

#[test]
fn a_policy_set_with_a_type_error_is_refused_by_check_and_at_start_with_file_and_line() {
    let f = fixture();
    std::fs::write(
        f.path().join("policies-dev/typo.cedar"),
        "// a typo in an attribute\n\n@id(\"typo\")\npermit (principal, action == Capgate::Action::\"create_firewall_block\", resource)\nwhen { context.args.ttl_minute <= 60 };\n",
    )
    .unwrap();
    let config = f.config();
    let (code, out, err) = capgate(&["check", "--config", config.to_str().unwrap(), "--offline"]);
    assert_eq!(code, 1, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("typo.cedar:5"), "the file and the line: {all}");
    assert!(all.contains("ttl_minute"), "{all}");
    let serve = Command::new(bin())
        .args(["serve", "--config", config.to_str().unwrap(), "--env", "dev"])
        .output()
        .unwrap();
    assert!(
        !serve.status.success(),
        "a gateway started with a policy set that does not validate"
    );
    assert!(String::from_utf8_lossy(&serve.stderr).contains("typo.cedar:5"));
}

/// SIGHUP and `capgate reload` swap contracts and policies while sessions stay open; a set
/// that does not validate, or a file that changes what only a restart may, is refused with
/// the old set kept; each reload and each refusal is a record with both sets' digests.
#[tokio::test]
async fn contracts_and_policies_reload_without_restart_and_a_bad_set_is_refused_and_recorded() {
    let f = fixture();
    let config = f.config();
    let config_arg = config.to_str().unwrap();
    let gw = Gateway::start(&config, &ENVS);
    let mut as_ic = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let block = |ttl: u32| json!({"ip": "203.0.113.0/24", "ttl_minutes": ttl});
    let refused = |r: &Reply| r.error_code() == Some(-32602);

    let ok = as_ic.call("create_firewall_block", block(30)).await;
    assert!(!refused(&ok), "{}", ok.text);
    assert_eq!(block_calls(&f).len(), 1);

    // A change freeze: applied by `capgate reload`, in the session already open.
    std::fs::write(
        f.path().join("policies-dev/freeze.cedar"),
        "@id(\"change-freeze\")\nforbid (principal, action == Capgate::Action::\"create_firewall_block\", resource);\n",
    )
    .unwrap();
    let (code, out, err) = capgate(&["reload", "--config", config_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("environment `dev`: reloaded"), "{out}");
    assert!(out.contains("environment `stage`: reloaded"), "{out}");
    let frozen = as_ic.call("create_firewall_block", block(30)).await;
    assert!(refused(&frozen), "{}", frozen.text);
    assert_eq!(block_calls(&f).len(), 1, "the frozen call did not run");

    // A set with a type error is refused, with its file and line; the freeze stays.
    std::fs::write(
        f.path().join("policies-dev/typo.cedar"),
        "// a typo\n\n@id(\"typo\")\npermit (principal, action == Capgate::Action::\"create_firewall_block\", resource)\nwhen { context.args.ttl_minute <= 60 };\n",
    )
    .unwrap();
    let (code, out, _) = capgate(&["reload", "--config", config_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("environment `dev`: refused"), "{out}");
    assert!(out.contains("typo.cedar:5"), "{out}");
    let still = as_ic.call("create_firewall_block", block(30)).await;
    assert!(refused(&still), "the old set stays: {}", still.text);
    assert_eq!(block_calls(&f).len(), 1);

    // A file that moves the listener is refused by name: that takes a restart.
    std::fs::remove_file(f.path().join("policies-dev/typo.cedar")).unwrap();
    f.rewrite("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    let (code, out, _) = capgate(&["reload", "--config", config_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("`listen` changed"), "{out}");
    assert!(out.contains("restart"), "{out}");
    f.rewrite("listen = \"127.0.0.1:1\"", "listen = \"127.0.0.1:0\"");

    // SIGHUP: the freeze lifted and the contract narrowed to 30 minutes, together.
    std::fs::remove_file(f.path().join("policies-dev/freeze.cedar")).unwrap();
    std::fs::write(f.path().join("contracts/seed.json"), CONTRACT.replace("1-240", "1-30")).unwrap();
    let hup = Command::new("kill").args(["-HUP", &gw.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let reloads = f.audit_reason_code("dev", "reloaded", 2);
    assert_eq!(reloads.len(), 2, "{reloads:#?}");
    let thaw = as_ic.call("create_firewall_block", block(30)).await;
    assert!(!refused(&thaw), "{}", thaw.text);
    let long = as_ic.call("create_firewall_block", block(45)).await;
    assert!(refused(&long), "the narrowed contract holds: {}", long.text);
    assert_eq!(block_calls(&f).len(), 2, "only the call both allow ran");

    // The records: each reload and refusal with the running and offered digests, and the
    // decisions after a reload name the set it put in force.
    let records = f.audit("dev");
    let refusals = records_of(&records, "capgate/reload", "reload_refused");
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    assert!(refusals.iter().all(|r| r["decision"] == "deny"));
    assert!(
        refusals[0]["args"]["problems"][0].as_str().unwrap().contains("typo.cedar:5"),
        "{:#}",
        refusals[0]
    );
    assert!(refusals[1]["args"]["problems"][0].as_str().unwrap().contains("`listen`"));
    let applied = records_of(&records, "capgate/reload", "reloaded");
    let (freeze, thawed) = (applied[0], applied[1]);
    assert_ne!(freeze["args"]["running"]["policies"], freeze["args"]["offered"]["policies"]);
    assert_eq!(freeze["args"]["running"]["contracts"], freeze["args"]["offered"]["contracts"]);
    assert_eq!(thawed["args"]["running"], freeze["args"]["offered"], "{thawed:#}");
    assert_ne!(thawed["args"]["running"]["contracts"], thawed["args"]["offered"]["contracts"]);
    assert_eq!(freeze["policy"]["set_digest"], freeze["args"]["offered"]["policies"]);
    let decided = |code: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["tool"] == "create_firewall_block" && r["reason_code"] == code)
            .collect()
    };
    let denied = decided("tool_not_available");
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|r| r["policy"]["ids"] == json!(["change-freeze"])), "{denied:#?}");
    assert!(
        denied
            .iter()
            .all(|r| r["policy"]["set_digest"] == freeze["args"]["offered"]["policies"])
    );
    let allowed = decided("allowed");
    assert_eq!(allowed[1]["policy"]["set_digest"], thawed["args"]["offered"]["policies"]);
    assert_ne!(
        allowed[0]["contract_digest"], allowed[1]["contract_digest"],
        "the narrowed contract decided"
    );
    let (code, out, err) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "{out}{err}");
}

fn probe_report(f: &Fixture, url: &str) -> (i32, Value) {
    let config = f.config();
    let (code, out, err) = capgate(&[
        "probe",
        "--config",
        config.to_str().unwrap(),
        "--env",
        "dev",
        "--url",
        url,
        "--json",
    ]);
    let report = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("not a JSON report: {out}\n{err}"));
    (code, report)
}

fn policy_checks(report: &Value, outcome: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["group"] == "policies" && c["outcome"] == outcome)
        .map(|c| format!("{} | {}", c["name"].as_str().unwrap(), c["detail"].as_str().unwrap()))
        .collect()
}

/// `capgate probe` tries the values just inside and just outside each policy condition on
/// an argument, as each role: what the policies refuse must be refused and what they hold
/// must wait, live. A gateway still running an older set than its files (not reloaded) is
/// caught at the edge that moved.
#[test]
fn the_probe_tries_each_policy_edge_and_catches_a_gateway_running_other_policies() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &ENVS);
    let (code, report) = probe_report(&f, gw.url("dev"));
    let passed = policy_checks(&report, "pass");
    let all_findings: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "finding")
        .collect();
    assert_eq!(code, 0, "{all_findings:#?}");
    let has = |list: &[String], parts: &[&str]| list.iter().any(|c| parts.iter().all(|p| c.contains(p)));
    for expected in [
        &["as role `oncall`", "`ttl_minutes <= 60`", "ttl_minutes = 61 (outside)", "say deny"][..],
        &["as role `oncall`", "`prefix of ip >= 24`", "\"192.0.2.0/23\" (outside)", "say deny"],
        &[
            "as role `incident_commander`",
            "`ttl_minutes > 60`",
            "ttl_minutes = 61 (inside)",
            "say pending",
        ],
        &[
            "as role `incident_commander`",
            "`ip in 10.0.0.0/8`",
            "\"10.255.255.255/32\" (inside)",
            "say deny (never-internal)",
        ],
        &[
            "as role `incident_commander`",
            "`ip holds 10.0.0.0/8`",
            "\"10.0.0.0/7\" (inside)",
            "say deny (never-internal)",
        ],
    ] {
        assert!(has(&passed, expected), "no passing check {expected:?} in {passed:#?}");
    }
    let skipped = policy_checks(&report, "skipped");
    assert!(
        has(
            &skipped,
            &[
                "as role `oncall`",
                "ttl_minutes = 60 (inside)",
                "allowed by oncall-narrow-and-short",
                "not sent"
            ]
        ),
        "{skipped:#?}"
    );
    assert!(block_calls(&f).is_empty(), "the probe ran nothing on a sound gateway");

    // The files now allow on-call engineers 59 minutes; the gateway, not reloaded, still 60.
    let file = f.path().join("policies-dev/firewall.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("context.args.ttl_minutes <= 60", "context.args.ttl_minutes <= 59"),
    )
    .unwrap();
    let (code, report) = probe_report(&f, gw.url("dev"));
    assert_eq!(code, 1);
    let found = policy_checks(&report, "finding");
    // One value, on the edge of two conditions: sent once, a finding under each.
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found
            .iter()
            .all(|c| c.contains("as role `oncall`") && c.contains("ttl_minutes = 60 (outside)") && c.contains("the call ran")),
        "{found:#?}"
    );
    assert!(has(&found, &["`ttl_minutes <= 59`", "say deny"]), "{found:#?}");
    assert_eq!(
        block_calls(&f).len(),
        1,
        "the one call the stale set let through ran once, and is the finding"
    );
    let all: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "finding")
        .collect();
    assert!(
        all.iter().any(|c| c["name"] == "no tool executed on a denied path"),
        "the audit group sees the execution too: {all:#?}"
    );

    // Reloaded, the gateway decides as its files say again.
    let (code, out, err) = capgate(&["reload", "--config", f.config().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, report) = probe_report(&f, gw.url("dev"));
    assert_eq!(code, 0, "{:#?}", policy_checks(&report, "finding"));
    assert_eq!(block_calls(&f).len(), 1);
}

/// A call waiting for approval when a reload puts other rules in force is answered pending
/// then, not released later under the rules it was decided by: its repeat is decided anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_approval_is_answered_pending_at_a_reload_and_never_released_under_the_old_rules() {
    let f = fixture();
    let config = f.config();
    let gw = Gateway::start(&config, &ENVS);
    let ic = f.token("dev", "ivan", &["incident_commander"]);
    let mut waiting = Mcp::open(gw.url("dev"), &ic).await;
    let long = json!({"ip": "203.0.113.0/24", "ttl_minutes": 90});
    let params = json!({"name": "create_firewall_block", "arguments": long, "_meta": {"capgate/approval_wait": 120}});
    let call = tokio::spawn(async move { waiting.rpc("tools/call", params).await });
    let opened = f.audit_reason_code("dev", "approval_required", 1);
    assert_eq!(opened.len(), 1, "the call did not open its request");
    let id = opened[0]["approval"]["id"].as_str().unwrap().to_string();

    let (code, out, err) = capgate(&["reload", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let approved = http()
        .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
        .bearer_auth(f.token("dev", "sara", &["security_lead"]))
        .json(&json!({"reason": "after the reload"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let answer = call.await.unwrap();
    assert_eq!(answer.body["result"]["structuredContent"]["status"], "pending", "{}", answer.text);
    assert!(block_calls(&f).is_empty(), "the wait released nothing under the retired rules");

    // The repeat is decided by the rules now in force, and runs once on the approval.
    let mut again = Mcp::open(gw.url("dev"), &ic).await;
    let repeat = again.call("create_firewall_block", long).await;
    assert!(repeat.body["result"]["structuredContent"]["status"] != "pending", "{}", repeat.text);
    assert_eq!(block_calls(&f).len(), 1);
}
