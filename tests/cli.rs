//! The command line: `check` refusing each unsafe configuration with a minimal bad config
//! each, `token mint`, `keys generate`, and `demo` driven end to end.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup or unwrap is a test failure"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

fn check(f: &Fixture) -> (i32, String) {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(f.config())
        .env("CAPGATE_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// Replaces the `n`th (0-based) occurrence.
fn rewrite_nth(f: &Fixture, from: &str, to: &str, n: usize) {
    let text = std::fs::read_to_string(f.config()).unwrap();
    let idx = text
        .match_indices(from)
        .nth(n)
        .unwrap_or_else(|| panic!("no occurrence {n} of `{from}`"))
        .0;
    let mut out = text.clone();
    out.replace_range(idx..idx + from.len(), to);
    std::fs::write(f.config(), out).unwrap();
}

#[test]
fn check_accepts_the_test_configuration() {
    let f = Fixture::new("");
    let (code, out) = check(&f);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 2 environment(s)"), "{out}");
}

#[test]
fn check_refuses_each_unsafe_configuration() {
    type Edit = Box<dyn Fn(&Fixture)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "shared JWKS",
            Box::new(|f| f.rewrite("keys/stage-issuer.jwks.json", "keys/dev-issuer.jwks.json")),
            "shares its JWKS source with environment `dev`",
        ),
        (
            "shared issuer",
            Box::new(|f| f.rewrite("issuer = \"https://idp.test/stage\"", "issuer = \"https://idp.test/dev\"")),
            "shares its issuer",
        ),
        (
            "shared audience",
            Box::new(|f| {
                f.rewrite(
                    "public_url = \"https://capgate.test/stage/mcp\"",
                    "public_url = \"https://capgate.test/dev/mcp\"",
                )
            }),
            "shares its public_url (token audience)",
        ),
        (
            "shared store",
            Box::new(|f| f.rewrite("sqlite://data/stage-audit.db", "sqlite://data/dev-audit.db")),
            "shares its audit store",
        ),
        (
            "shared signing key",
            Box::new(|f| f.rewrite("keys/stage-audit.pem", "keys/dev-audit.pem")),
            "shares its audit signing key",
        ),
        (
            "shared credential",
            Box::new(|f| f.rewrite("upstream-secret-stage-do-not-leak", "upstream-secret-dev-do-not-leak")),
            "shares its upstream credential",
        ),
        (
            "a copy of another environment's signing key",
            Box::new(|f| {
                let copy = f.path().join("keys/stage-audit-copy.pem");
                std::fs::copy(f.path().join("keys/dev-audit.pem"), &copy).unwrap();
                f.rewrite("keys/stage-audit.pem", "keys/stage-audit-copy.pem");
            }),
            "shares its audit signing key (same key material) with environment `dev`",
        ),
        (
            "a copy of another environment's JWKS",
            Box::new(|f| {
                std::fs::copy(f.path().join("keys/dev-issuer.jwks.json"), f.path().join("keys/copy.jwks.json")).unwrap();
                f.rewrite("keys/stage-issuer.jwks.json", "keys/copy.jwks.json");
            }),
            "shares its identity key (same key material) with environment `dev`",
        ),
        (
            "the same upstream with the same credentials",
            Box::new(|f| {
                let dev_state = f.path().join("state").join("dev");
                let stage_state = f.path().join("state").join("stage");
                f.rewrite(&format!("{stage_state:?}"), &format!("{dev_state:?}"));
                f.rewrite("upstream-secret-stage-do-not-leak", "upstream-secret-dev-do-not-leak");
            }),
            "shares its upstream (same target, same credentials) with environment `dev`",
        ),
        (
            "production trusts a development issuer",
            Box::new(|f| {
                f.rewrite("name = \"stage\"", "name = \"stage\"\nproduction = true");
                f.rewrite("mint_key = \"keys/stage-issuer.pem\"", "");
                std::fs::copy(f.path().join("keys/dev-issuer.jwks.json"), f.path().join("keys/copy.jwks.json")).unwrap();
                f.rewrite("keys/stage-issuer.jwks.json", "keys/copy.jwks.json");
            }),
            "trusts a development issuer: its JWKS holds the public half of environment `dev`'s `mint_key`",
        ),
        (
            "duplicate name",
            Box::new(|f| f.rewrite("name = \"stage\"", "name = \"dev\"")),
            "shares its name",
        ),
        (
            "unreadable failure budget",
            Box::new(|f| f.rewrite("name = \"stage\"", "name = \"stage\"\nauth_failure_limit = \"lots\"")),
            "`auth_failure_limit = \"lots\"`: write a rate such as `\"50/s\"`, or `\"none\"`",
        ),
        (
            "unreadable session idle timeout",
            Box::new(|f| f.set_in_env("stage", "session_idle_timeout = \"0s\"")),
            "`session_idle_timeout = \"0s\"`: write a duration such as `\"5m\"`",
        ),
        (
            "no sessions at all",
            Box::new(|f| f.set_in_env("stage", "max_sessions_per_identity = 0")),
            "`max_sessions_per_identity = 0` would refuse every session: write 1 or more",
        ),
        (
            "no sessions in the environment",
            Box::new(|f| f.set_in_env("stage", "max_sessions = 0")),
            "`max_sessions = 0` would refuse every session: write 1 or more",
        ),
        (
            "typo in a key",
            Box::new(|f| f.rewrite("approver_roles", "aprover_roles")),
            "unknown field `aprover_roles`",
        ),
        (
            "no identity",
            Box::new(|f| f.rewrite("public_url = \"https://capgate.test/stage/mcp\"", "public_url = \"ftp://x\"")),
            "must be an http(s) URL",
        ),
        (
            "production minting",
            Box::new(|f| {
                f.rewrite("name = \"stage\"", "name = \"stage\"\nproduction = true");
            }),
            "`mint_key` is set in a production environment",
        ),
        (
            "unknown role",
            Box::new(|f| {
                f.rewrite(
                    "name = \"dev\"",
                    "name = \"dev\"\nroles = [\"oncall\", \"viewer\", \"incident_commander\"]",
                )
            }),
            "approver role `security_lead` is not among",
        ),
        (
            "contract names no environment",
            Box::new(|f| {
                let p = f.path().join("contracts/extra.json");
                std::fs::write(p, r#"{"tool": "list_tickets_qa", "allowed_roles": ["oncall"], "arg_schema": {}, "environments": ["qa"], "backend": {"upstream": "demo", "tool": "list_tickets"}}"#).unwrap();
            }),
            "`environments` names `qa`, which is not defined",
        ),
        (
            "contract without roles",
            Box::new(|f| {
                std::fs::write(
                    f.path().join("contracts/extra.json"),
                    r#"{"tool": "x", "allowed_roles": [], "arg_schema": {}}"#,
                )
                .unwrap();
            }),
            "must name at least one role",
        ),
        (
            "wildcard schema",
            Box::new(|f| {
                std::fs::write(
                    f.path().join("contracts/extra.json"),
                    r#"{"tool": "list_tickets2", "allowed_roles": ["oncall"], "arg_schema": {"q": "regex(.*)"}}"#,
                )
                .unwrap();
            }),
            "accepts anything",
        ),
        (
            "contract with no upstream tool",
            Box::new(|f| {
                std::fs::write(
                    f.path().join("contracts/extra.json"),
                    r#"{"tool": "delete_everything", "allowed_roles": ["oncall"], "arg_schema": {}}"#,
                )
                .unwrap();
            }),
            "no upstream of this environment has this tool",
        ),
        (
            "approval with no approvers",
            Box::new(|f| {
                rewrite_nth(f, "approver_roles = [\"security_lead\"]\n", "", 0);
            }),
            "requires approval but neither it nor environment `dev` names `approver_roles`",
        ),
        (
            "group-readable signing key",
            Box::new(|f| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(f.path().join("keys/dev-audit.pem"), std::fs::Permissions::from_mode(0o640)).unwrap();
            }),
            "readable by group or others",
        ),
        (
            "missing JWKS",
            Box::new(|f| f.rewrite("keys/dev-issuer.jwks.json", "keys/nope.jwks.json")),
            "no such file",
        ),
        (
            "not TOML",
            Box::new(|f| std::fs::write(f.config(), "[[environment]\nname=").unwrap()),
            "capgate.toml",
        ),
    ];
    for (name, edit, expected) in cases {
        let f = Fixture::new("");
        edit(&f);
        let (code, out) = check(&f);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(expected), "{name}: expected `{expected}` in:\n{out}");
    }
    // Several problems are listed together, not one at a time.
    let f = Fixture::new("");
    f.rewrite("keys/stage-issuer.jwks.json", "keys/dev-issuer.jwks.json");
    f.rewrite("sqlite://data/stage-audit.db", "sqlite://data/dev-audit.db");
    let (code, out) = check(&f);
    assert_eq!(code, 1);
    assert!(out.contains("JWKS source") && out.contains("audit store"), "{out}");
}

#[test]
fn an_upstream_url_with_a_credential_or_a_fragment_is_refused_without_repeating_it() {
    for (url, says) in [
        ("https://svc:hunter2-do-not-leak@tickets.internal/mcp", "`url` carries a credential"),
        (
            "https://tickets.internal/mcp?api_key=hunter2-do-not-leak",
            "`url` carries a credential",
        ),
        // Where no credential is looked for, nothing of the URL is repeated either.
        ("https://tickets.internal/mcp#hunter2-do-not-leak", "`url` has a fragment"),
        (
            "tickets.internal/mcp?s=hunter2-do-not-leak",
            "`url` must start with `http://` or `https://`",
        ),
    ] {
        let f = Fixture::new("");
        let mut text = std::fs::read_to_string(f.config()).unwrap();
        text.push_str(&format!(
            "\n[[upstream]]\nname = \"tickets\"\nenvironment = \"stage\"\nurl = \"{url}\"\n"
        ));
        std::fs::write(f.config(), text).unwrap();
        let (code, out) = check(&f);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("upstream `tickets`: {says}")), "{out}");
        assert!(!out.contains("hunter2"), "the credential is repeated: {out}");
    }
}

#[test]
fn token_mint_works_for_development_and_is_refused_for_production() {
    let f = Fixture::new("");
    let out = Command::new(bin())
        .args([
            "token",
            "mint",
            "--env",
            "dev",
            "--sub",
            "ci-bot",
            "--roles",
            "oncall,viewer",
            "--ttl",
            "5m",
            "--config",
        ])
        .arg(f.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let claims: serde_json::Value = {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    assert_eq!(claims["aud"], audience("dev"));
    assert_eq!(claims["roles"], json!(["oncall", "viewer"]));
    assert!(claims["exp"].as_u64().unwrap() <= now() + 300);

    f.rewrite("name = \"stage\"", "name = \"stage\"\nproduction = true");
    f.rewrite("mint_key = \"keys/stage-issuer.pem\"\n", "");
    let out = Command::new(bin())
        .args(["token", "mint", "--env", "stage", "--sub", "x", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("marked production"));
    assert!(out.stdout.is_empty());
}

#[test]
fn keys_generate_writes_private_keys_0600_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(bin())
            .args(["keys", "generate", "--name", "k", "--out"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let mode = std::fs::metadata(dir.path().join("k.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let jwks: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("k.jwks.json")).unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert!(jwks["keys"][0].get("d").is_none(), "the private part must never be in a JWKS");
    let before = std::fs::read(dir.path().join("k.pem")).unwrap();
    let second = run();
    assert_eq!(second.status.code(), Some(2));
    assert_eq!(std::fs::read(dir.path().join("k.pem")).unwrap(), before);
}

#[tokio::test]
async fn demo_starts_from_nothing_and_serves_the_seed_contract() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = ChildGuard(
        Command::new(bin())
            .current_dir(dir.path())
            .args(["demo", "--port", &port.to_string()])
            .env("CAPGATE_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = String::new();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    assert!(out.contains("curl -s http://127.0.0.1:"), "{out}");
    let demo = dir.path().join("capgate-demo");
    let tokens: std::collections::HashMap<String, String> = std::fs::read_to_string(demo.join("tokens.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut oncall = Mcp::open(&url, &tokens["TOKEN_ONCALL"]).await;
    let r = oncall
        .call("create_ticket", json!({"title": "demo ticket", "severity": "low"}))
        .await;
    assert_eq!(r.body["result"]["content"][0]["text"], "created ticket SEC-1", "{}", r.text);
    assert_eq!(oncall.call("purge_all_tickets", json!({})).await.error_code(), Some(-32602));
    let mut ic = Mcp::open(&url, &tokens["TOKEN_INCIDENT_COMMANDER"]).await;
    let r = ic
        .call("create_firewall_block", json!({"ip": "198.51.100.0/24", "ttl_minutes": 30}))
        .await;
    assert_eq!(r.body["result"]["structuredContent"]["status"], "pending");
    let mut viewer = Mcp::open(&url, &tokens["TOKEN_VIEWER"]).await;
    assert_eq!(viewer.tool_names().await, ["list_tickets"]);
    // Its prompt and resources: governed like its tools.
    let r = oncall
        .rpc(
            "prompts/get",
            json!({"name": "incident_summary", "arguments": {"incident": "INC-1"}}),
        )
        .await;
    assert_eq!(
        r.body["result"]["messages"][0]["content"]["text"], "Summarise incident INC-1 for engineers.",
        "{}",
        r.text
    );
    let r = viewer.rpc("resources/read", json!({"uri": "tickets://summary"})).await;
    assert_eq!(r.body["result"]["contents"][0]["text"], "1 tickets", "{}", r.text);
    let r = viewer.rpc("resources/read", json!({"uri": "secrets://vault/root"})).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(demo.join("state/state.json")).unwrap()).unwrap();
    assert_eq!(state["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(state["blocks"], json!([]), "the firewall block needs approval and must not exist");
    // A new demo's first traffic fills the log with decisions of every kind, by several
    // people, each a real request.
    let db = demo.join("data/dev-audit.db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let kinds = loop {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let kinds: std::collections::BTreeMap<String, i64> = conn
            .prepare("SELECT decision, COUNT(*) FROM audit GROUP BY decision")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let callers: i64 = conn
            .query_row("SELECT COUNT(DISTINCT subject) FROM audit", [], |r| r.get(0))
            .unwrap();
        if kinds.values().sum::<i64>() >= 150 && callers >= 4 && kinds.len() >= 3 {
            break kinds;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo traffic did not fill the log: {kinds:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for d in ["allow", "deny", "pending"] {
        assert!(kinds.get(d).is_some_and(|n| *n > 0), "no {d} in {kinds:?}");
    }
    // The demo's `check` is clean.
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(demo.join("capgate.toml"))
        .env("CAPGATE_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// `--log-format json`: every line on stderr is one JSON object, and the lines a request
/// logs carry its trace ID (the one its audit records and its answer carry) under `span`,
/// and never its token.
#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_requests_trace_id() {
    let f = Fixture::new("");
    let mut child = Command::new(bin())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(f.config())
        .env("CAPGATE_LOG", "warn,capgate=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    while url.is_empty() {
        let line = stdout.next().unwrap().unwrap();
        if line.contains("environment `dev`") {
            url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
        }
    }
    let token = f.token("dev", "alice", &["oncall"]);
    let mut mcp = Mcp::open(&url, &token).await;
    let allowed = mcp.call("list_tickets", json!({})).await;
    assert!(allowed.body["result"].is_object(), "{}", allowed.text);
    let refused = mcp.call("no_such_tool", json!({})).await;
    assert_eq!(refused.error_code(), Some(-32602), "{}", refused.text);
    let traces = [allowed.trace(), refused.trace()];
    for t in &traces {
        assert!(!f.audit_for_trace("dev", t).is_empty(), "the trace is the records' own");
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    child.wait().unwrap();

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l.is_object() && l["level"].is_string() && l["timestamp"].is_string())
    );
    for t in &traces {
        assert!(
            lines.iter().any(|l| l["span"]["trace_id"] == t.as_str()
                && l["fields"]["message"] == "answered"
                && l["span"]["method"] == "tools/call"),
            "no line of the request with trace {t}: {stderr}"
        );
    }
    assert!(!stderr.contains(&token), "a token reached the log");
}
