//! `capgate probe` and `capgate tabletop` against real gateways: the shipped demo passes
//! both; a deliberately weakened gateway (contracts wider than the ones the operator
//! intends) is caught, and even then the probe makes nothing run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "integration tests: a failed expectation is a panic"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env("CAPGATE_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `capgate demo` in a fresh folder, on a free port; returns the guard and the URL. Without
/// the demo's first traffic: every call the upstream receives is then the probe's.
fn start_demo(dir: &Path) -> (ChildGuard, String) {
    let port = free_port().to_string();
    let mut child = Command::new(bin())
        .args(["demo", "--port", &port, "--no-traffic"])
        .current_dir(dir)
        .env("CAPGATE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the demo did not start");
        if line.contains("listening on") {
            break;
        }
    }
    (ChildGuard(child), format!("http://127.0.0.1:{port}/mcp"))
}

fn report(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("not a JSON report: {stdout}"))
}

fn findings(r: &Value) -> Vec<String> {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "finding")
        .map(|c| format!("{}: {}", c["name"].as_str().unwrap(), c["detail"].as_str().unwrap()))
        .collect()
}

#[test]
fn the_demo_passes_the_probe_and_the_shipped_tabletop_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, url) = start_demo(dir.path());
    let config = "capgate-demo/capgate.toml";
    let junit = dir.path().join("probe.xml");
    let (code, out, err) = run(
        &[
            "probe",
            "--config",
            config,
            "--env",
            "dev",
            "--url",
            &url,
            "--simulate-outage",
            "--json",
            "--junit",
            junit.to_str().unwrap(),
        ],
        dir.path(),
    );
    let r = report(&out);
    assert_eq!(code, 0, "findings: {:?}\n{err}", findings(&r));
    assert!(r["passed"].as_u64().unwrap() >= 60, "{}", r["passed"]);
    for group in [
        "identity",
        "authorization",
        "protocol",
        "origin",
        "slow clients",
        "arguments",
        "approvals",
        "prompts and resources",
        "fallback",
        "audit",
    ] {
        assert!(
            r["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["group"] == group && c["outcome"] == "pass"),
            "no passing `{group}` check"
        );
    }
    // The new surface is covered: 2026-07-28 header mismatches and removed methods, and
    // subscriptions and completions of what the probe identity may not use.
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "pass")
        .filter_map(|c| c["name"].as_str())
        .collect();
    for wanted in [
        "2026-07-28: no Mcp-Method header",
        "2026-07-28: Mcp-Name names another tool than the body",
        "2026-07-28: MCP-Protocol-Version differs from the body's _meta",
        "2026-07-28: logging/setLevel, which it removed",
        "a subscription to an unknown resource URI is refused like a forbidden one",
        "a completion for an unknown prompt is refused like a forbidden one",
    ] {
        assert!(names.contains(&wanted), "no passing check `{wanted}`: {names:?}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("failures=\"0\""), "{xml}");
    // The probe made nothing run on the demo upstream.
    let calls = std::fs::read_to_string(dir.path().join("capgate-demo/state/calls.jsonl")).unwrap_or_default();
    assert!(calls.trim().is_empty(), "the probe caused executions: {calls}");

    let scenarios: Vec<PathBuf> = std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(scenarios.len() >= 5);
    let mut args = vec!["tabletop".to_string()];
    args.extend(scenarios.iter().map(|p| p.display().to_string()));
    args.extend(["--config", config, "--env", "dev", "--url", &url, "--json"].map(str::to_string));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&argv, dir.path());
    let r = report(&out);
    assert_eq!(code, 0, "findings: {:?}\n{err}", findings(&r));
    assert!(r["passed"].as_u64().unwrap() >= 25);
    // Twice in a row: scenarios do not depend on a fresh gateway.
    let (code, out, _) = run(&argv, dir.path());
    assert_eq!(code, 0, "second run: {:?}", findings(&report(&out)));
}

#[tokio::test]
async fn the_probe_catches_a_weakened_gateway_without_making_anything_run() {
    let f = Fixture::new("");
    // The gateway runs with contracts wider than the intended ones the probe reads.
    let weak = f.path().join("contracts-weak");
    std::fs::create_dir_all(&weak).unwrap();
    std::fs::write(weak.join("seed.json"), SEED_CONTRACT.replace("1-240", "1-100000")).unwrap();
    std::fs::write(
        weak.join("tools.toml"),
        TEST_CONTRACTS_TOML.replace("title = \"string(1..120)\"", "title = \"string\""),
    )
    .unwrap();
    let weak_config = f.path().join("capgate-weak.toml");
    std::fs::write(
        &weak_config,
        std::fs::read_to_string(f.config())
            .unwrap()
            .replace("contracts = \"contracts/\"", "contracts = \"contracts-weak/\""),
    )
    .unwrap();
    let gw = Gateway::start(&weak_config, &ENVS);
    let (code, out, err) = run(
        &[
            "probe",
            "--config",
            f.config().to_str().unwrap(),
            "--env",
            "dev",
            "--url",
            gw.url("dev"),
            "--json",
        ],
        f.path(),
    );
    assert_eq!(code, 1, "the weakened gateway passed the probe:\n{out}\n{err}");
    let found = findings(&report(&out));
    assert!(
        found.iter().any(|f| f.contains("`ttl_minutes`: above maximum")),
        "the widened ttl bound was not reported: {found:#?}"
    );
    assert!(
        found.iter().any(|f| f.contains("`title`: longer than maximum")),
        "the unbounded title was not reported: {found:#?}"
    );
    assert!(f.calls("dev").is_empty(), "the probe must never cause an execution");

    // The same probe against the sound gateway: no finding.
    drop(gw);
    let gw = Gateway::start(&f.config(), &ENVS);
    let (code, out, err) = run(
        &[
            "probe",
            "--config",
            f.config().to_str().unwrap(),
            "--env",
            "dev",
            "--url",
            gw.url("dev"),
            "--json",
        ],
        f.path(),
    );
    assert_eq!(code, 0, "{:?}\n{err}", findings(&report(&out)));
    assert!(f.calls("dev").is_empty());
}

#[test]
fn the_probe_never_mints_for_production_and_never_simulates_outages_there() {
    let f = Fixture::new("");
    f.set_in_env("stage", "production = true");
    f.rewrite("mint_key = \"keys/stage-issuer.pem\"", "");
    let cfg = f.config().display().to_string();
    let (code, _, err) = run(
        &["probe", "--config", &cfg, "--env", "stage", "--url", "http://127.0.0.1:9/mcp"],
        f.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("CAPGATE_PROBE_TOKEN"), "{err}");
    let out = Command::new(bin())
        .args([
            "probe",
            "--config",
            &cfg,
            "--env",
            "stage",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--simulate-outage",
        ])
        .env("CAPGATE_PROBE_TOKEN", f.token("stage", "probe", &[]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused for a production environment"));
}
