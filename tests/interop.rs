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
        .env("TOKEN_ONCALL", f.token("dev", "alice", &["oncall"]))
        .env("TOKEN_VIEWER", f.token("dev", "vera", &["viewer"]))
        .env("TOKEN_IC", f.token("dev", "ivan", &["incident_commander"]))
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
    assert!(seen["no_token"].as_str().unwrap().starts_with("refused"));
    let calls = f.calls("dev");
    assert_eq!(calls.len(), 1, "only the one valid, allowed call may run: {calls:?}");
    assert_eq!(calls[0]["arguments"]["title"], "from the python sdk");
}

/// Prompts, resources and completion under contracts, driven by the official Python SDK.
#[test]
fn the_official_python_sdk_client_gets_prompts_reads_resources_and_completes_within_the_contracts() {
    let f = Fixture::new("");
    std::fs::write(
        f.path().join("contracts/surface.toml"),
        r#"
[[contract]]
prompt = "incident_summary"
allowed_roles = ["oncall"]
arg_schema = { incident = "regex(INC-[0-9]{1,6})", audience = "enum(engineers|executives)?" }

[[contract]]
resource = "runbook"
uri = "runbook://{service}/{page}"
allowed_roles = ["oncall"]
arg_schema = { service = "enum(db|web)", page = "string(1..40)" }
"#,
    )
    .unwrap();
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
