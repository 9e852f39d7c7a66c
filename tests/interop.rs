//! Interoperability with the official MCP clients, against the real gateway: the Python SDK
//! (`pip install mcp`) and the MCP Inspector CLI (`npm install @modelcontextprotocol/inspector`).
//! `scripts/test.sh` installs both; a missing client fails the test rather than skipping it.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup or unwrap is a test failure"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn python() -> String {
    std::env::var("CAPGATE_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn the_official_python_sdk_client_drives_the_gateway() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sdk_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(gw.url("dev"))
        .arg(gw.base("dev"))
        .env("TOKEN_ONCALL", f.token("dev", "alice", &["oncall"]))
        .env("TOKEN_VIEWER", f.token("dev", "vera", &["viewer"]))
        .env("TOKEN_IC", f.token("dev", "ivan", &["incident_commander"]))
        .env("TOKEN_LEAD", f.token("dev", "sara", &["security_lead"]))
        .output()
        .expect("python3 is needed: scripts/test.sh installs the `mcp` package");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK client failed (is `mcp` installed? run scripts/test.sh):\n{stderr}"
    );
    assert!(!stderr.contains("Session termination failed"), "{stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        seen["oncall_tools"],
        json!(["create_ticket", "leaky_diagnostics", "list_tickets", "run_report", "typed_lookup"])
    );
    assert_eq!(seen["viewer_tools"], json!(["list_tickets"]));
    assert_eq!(seen["create_ticket_schema"]["additionalProperties"], json!(false));
    assert_eq!(seen["ok_call"]["content"][0]["text"], "created ticket SEC-1");
    assert_eq!(seen["bad_enum"]["type"], "MCPError");
    assert!(seen["bad_enum"]["error"].as_str().unwrap().contains("`severity` must be one of"));
    assert!(seen["extra_arg"]["error"].as_str().unwrap().contains("`shell` is not an argument"));
    assert_eq!(seen["forbidden"]["error"], "tool `create_firewall_block` is not available");
    assert_eq!(seen["pending"]["structuredContent"]["status"], "pending");
    assert_eq!(seen["approved"]["status"], 200, "{seen}");
    assert!(
        seen["repeat"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("192.0.2.0/24"),
        "the approved repeat ran: {seen}"
    );
    assert!(seen["no_token"].as_str().unwrap().starts_with("refused"));
    let calls = f.calls("dev");
    let ran: Vec<&str> = calls.iter().map(|c| c["tool"].as_str().unwrap()).collect();
    assert_eq!(
        ran,
        ["create_ticket", "create_firewall_block"],
        "only the valid, allowed call and the approved one ran, once each: {calls:?}"
    );
    assert_eq!(calls[0]["arguments"]["title"], "from the python sdk");
}

/// Prompts, resources and completion under contracts, driven by the official Python SDK.
#[test]
fn the_official_python_sdk_client_gets_prompts_reads_resources_and_completes_within_the_contracts() {
    let f = Fixture::new("");
    std::fs::write(f.path().join("contracts/surface.toml"), SURFACE_CONTRACTS).unwrap();
    let gw = Gateway::start(&f.config(), &ENVS);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sdk_surface.py");
    let out = Command::new(python())
        .arg(script)
        .arg(gw.url("dev"))
        .env("TOKEN_ONCALL", f.token("dev", "alice", &["oncall"]))
        .env("TOKEN_VIEWER", f.token("dev", "vera", &["viewer"]))
        .output()
        .expect("python3 is needed: scripts/test.sh installs the `mcp` package");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK client failed:\n{stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(seen["prompts"], json!(["incident_summary"]));
    assert_eq!(seen["resources"], json!([]));
    assert_eq!(seen["templates"], json!(["runbook://{service}/{page}"]));
    assert_eq!(
        seen["prompt"]["messages"][0]["content"]["text"],
        "Summarise incident INC-9 for engineers."
    );
    assert_eq!(seen["resource"]["contents"][0]["text"], "contents of runbook://web/restart");
    assert_eq!(seen["completion"]["completion"]["values"], json!(["db", "web"]));
    assert!(
        seen["bad_prompt_arg"]["error"].as_str().unwrap().contains("invalid arguments"),
        "{seen}"
    );
    assert_eq!(
        seen["unknown_resource"]["error"],
        "resource `secrets://vault/root` is not available"
    );
    assert_eq!(seen["viewer_prompts"], json!([]));
    assert_eq!(seen["viewer_prompt"]["error"], "prompt `incident_summary` is not available");
    assert_eq!(seen["viewer_completion"]["error"], "prompt `incident_summary` is not available");
    // The upstream served exactly the three allowed requests.
    let served: Vec<String> = f.calls("dev").iter().map(|c| c["tool"].as_str().unwrap().to_string()).collect();
    assert_eq!(served, ["prompt:incident_summary", "resource", "complete"]);
}

fn inspector() -> PathBuf {
    match std::env::var_os("CAPGATE_INSPECTOR") {
        Some(p) => PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node_modules/.bin/mcp-inspector"),
    }
}

#[test]
fn the_mcp_inspector_cli_drives_the_gateway() {
    let bin = inspector();
    assert!(
        bin.exists(),
        "{} is missing: scripts/test.sh installs the MCP Inspector",
        bin.display()
    );
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let catalog = f.path().join("inspector-catalog.json");
    let run = |token: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(["--cli", gw.url("dev"), "--transport", "http"])
            .args(args)
            .env("MCP_CATALOG_PATH", &catalog);
        if let Some(t) = token {
            cmd.arg("--header").arg(format!("Authorization: Bearer {t}"));
        }
        cmd.output().unwrap()
    };
    let token = f.token("dev", "alice", &["oncall"]);
    let out = run(Some(&token), &["--method", "tools/list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["create_ticket", "leaky_diagnostics", "list_tickets", "run_report", "typed_lookup"]
    );

    let out = run(
        Some(&token),
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "create_ticket",
            "--tool-arg",
            "title=from the inspector",
            "severity=low",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let called: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(called["content"][0]["text"], "created ticket SEC-1");

    let out = run(
        Some(&token),
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "create_ticket",
            "--tool-arg",
            "title=x",
            "severity=urgent",
        ],
    );
    assert!(!out.status.success(), "an invalid call must fail");
    let out = run(None, &["--method", "tools/list"]);
    assert!(!out.status.success(), "no token must fail");
    assert_eq!(f.calls("dev").len(), 1);
}

/// An upstream's log messages, sent by the official Python SDK's server on the stream of the
/// call they belong to, reach the official Python SDK client that set a level through
/// capgate: only at that level or above, never to a client that set none, never one that
/// holds the upstream's credential; each relayed or withheld one recorded, the level too.
#[test]
fn upstream_log_messages_reach_only_the_session_that_set_a_level() {
    let state = tempfile::tempdir().unwrap();
    let secret = "log-upstream-secret-value";
    let secret_file = state.path().join("credential");
    std::fs::write(&secret_file, secret).unwrap();
    let script = |name: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(name);
    let (_upstream, url) = spawn_listening(
        Command::new(python())
            .arg(script("sdk_log_upstream.py"))
            .env("UPSTREAM_SECRET", secret),
        "python3 is needed: scripts/test.sh installs the `mcp` package",
    );
    let block = format!(
        "[[upstream]]\nname = \"logs\"\nenvironment = \"stage\"\nurl = \"{url}\"\nheaders = {{ x-credential = {{ file = {secret_file:?} }} }}\n"
    );
    let f = Fixture::with_only_contracts(
        block,
        "[[contract]]\ntool = \"steps\"\ndescription = \"Logs while it runs\"\nenvironments = [\"stage\"]\nallowed_roles = [\"oncall\"]\narg_schema = { topic = \"string(1..32)\" }\n\n\
         [[contract]]\ntool = \"leaky\"\ndescription = \"Logs its credential\"\nenvironments = [\"stage\"]\nallowed_roles = [\"oncall\"]\narg_schema = {}\n",
    );
    let gw = Gateway::start(&f.config(), &ENVS);
    let out = Command::new(python())
        .arg(script("sdk_logging.py"))
        .arg(gw.url("stage"))
        .env("TOKEN", f.token("stage", "lena", &["oncall"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK client failed:\n{stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(seen["set"]["results"], json!(["did backup", "leaked"]), "{seen}");
    // `info` and above: the debug message stays behind, and so does the credential.
    assert_eq!(
        seen["set"]["logs"],
        json!([
            {"level": "info", "data": "step one of backup"},
            {"level": "warning", "data": "step two of backup"},
            {"level": "info", "data": "a message without it"},
        ]),
        "{seen}"
    );
    assert!(!seen.to_string().contains(secret));
    // Another session, of the same caller, that set no level hears nothing.
    assert_eq!(seen["unset"]["results"], json!(["did restore"]), "{seen}");
    assert_eq!(seen["unset"]["logs"], json!([]), "{seen}");

    let records = f.audit("stage");
    let of = |method: &str, code: &str| records_of(&records, method, code);
    let set = of("logging/setLevel", "accepted");
    assert_eq!(set.len(), 1, "{records:#?}");
    assert_eq!(set[0]["principal"]["sub"], "lena");
    assert!(set[0]["reason"].as_str().unwrap().contains("`info`"), "{set:?}");
    let relayed = of("notifications/message", "relayed");
    assert_eq!(relayed.len(), 3, "{records:#?}");
    assert_eq!(relayed[0]["tool"], "steps");
    assert_eq!(relayed[2]["tool"], "leaky");
    let withheld = of("notifications/message", "relay_refused");
    assert_eq!(withheld.len(), 1, "{records:#?}");
    assert_eq!(withheld[0]["decision"], "deny");
    assert!(withheld[0]["reason"].as_str().unwrap().contains("credentials"), "{withheld:?}");
    assert!(!serde_json::to_string(&records).unwrap().contains(secret));
    // Each relayed message's record comes before its call's outcome.
    let outcome = records
        .iter()
        .find(|r| r["tool"] == "steps" && r["reason_code"] == "executed" && r["trace_id"] == relayed[0]["trace_id"])
        .expect("the call's outcome");
    assert!(relayed[1]["seq"].as_u64() < outcome["seq"].as_u64());
}
