//! End-to-end: the real binary on 127.0.0.1, real MCP sessions, the demo upstream as canary.
//! Every denied path asserts the canary saw nothing; every allowed path asserts it saw
//! exactly the validated arguments.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup or unwrap is a test failure"
)]

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

#[tokio::test]
async fn allowed_call_reaches_the_upstream_with_exactly_the_validated_arguments() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut mcp = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let r = mcp
        .call(
            "create_ticket",
            json!({"title": "suspicious login", "severity": "high", "reporter_email": "a@b.example"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(r.body["result"]["content"][0]["text"], "created ticket SEC-1");
    let trace = r.body["result"]["_meta"]["capgate/trace_id"].as_str().unwrap().to_string();
    assert_eq!(trace, r.trace());

    let calls = f.calls("dev");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["tool"], "create_ticket");
    // The caller's arguments plus the gateway's fixed `queue`, nothing else.
    assert_eq!(
        calls[0]["arguments"],
        json!({"title": "suspicious login", "severity": "high", "reporter_email": "a@b.example", "queue": "SEC"})
    );
    // The trace travels to the upstream (SEP-414 `_meta.traceparent`).
    assert!(calls[0]["meta"]["traceparent"].as_str().unwrap().contains(&trace));
    assert!(f.calls("stage").is_empty(), "another environment's upstream must never be called");

    // Write-ahead: an allow record, then the outcome, both with the trace ID; the sensitive
    // argument is redacted and the token never stored.
    let recs = f.audit_for_trace("dev", &trace);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert_eq!(
        (recs[0]["decision"].as_str(), recs[0]["reason_code"].as_str()),
        (Some("allow"), Some("allowed"))
    );
    assert_eq!(recs[1]["reason_code"], "executed");
    assert_eq!(recs[1]["outcome"]["status"], "ok");
    assert!(recs[0]["seq"].as_u64() < recs[1]["seq"].as_u64());
    assert_eq!(recs[0]["args"]["reporter_email"], "[redacted]");
    assert_eq!(recs[0]["principal"]["sub"], "alice");
    let db = std::fs::read(f.audit_db("dev")).unwrap();
    let wal = std::fs::read(f.path().join("data/dev-audit.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("a@b.example"), "sensitive argument stored in clear");
        assert!(!text.contains(mcp.token.as_deref().unwrap()), "token stored");
        assert!(!text.contains("upstream-secret-dev"), "upstream credential stored");
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_a_second_trusted_issuer_are_accepted() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let mut claims = f.claims("dev", "rita", &["viewer"]);
        claims["iss"] = json!(RSA_EC_ISSUER);
        let mut mcp = Mcp::open(gw.url("dev"), &sign_fixture(alg, &claims)).await;
        assert_eq!(mcp.tool_names().await, vec!["list_tickets"], "{alg:?}");
        let r = mcp.call("list_tickets", json!({})).await;
        assert_eq!(r.body["result"]["isError"], json!(false), "{alg:?}: {}", r.text);
    }
    assert_eq!(f.calls("dev").len(), 2);
}

#[tokio::test]
async fn tools_list_shows_only_what_the_roles_allow_and_never_uncontracted_tools() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["oncall"],
            &["create_ticket", "leaky_diagnostics", "list_tickets", "run_report", "typed_lookup"],
        ),
        (&["viewer"], &["list_tickets"]),
        (
            &["incident_commander"],
            &["create_firewall_block", "create_ticket", "list_firewall_blocks", "list_tickets"],
        ),
        (&[], &[]),
    ];
    for (roles, expected) in cases {
        let mut mcp = Mcp::open(gw.url("dev"), &f.token("dev", "u", roles)).await;
        assert_eq!(mcp.tool_names().await, expected, "roles {roles:?}");
    }
    let mut mcp = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let r = mcp.rpc("tools/list", json!({})).await;
    assert_eq!(
        r.body["result"]["_meta"]["capgate/trace_id"],
        r.trace(),
        "every answer carries its trace ID"
    );
    let tools = r.body["result"]["tools"].as_array().unwrap();
    let fw = tools.iter().find(|t| t["name"] == "create_firewall_block").unwrap();
    assert_eq!(fw["inputSchema"]["additionalProperties"], json!(false));
    assert_eq!(fw["inputSchema"]["required"], json!(["ip", "ttl_minutes"]));
    assert_eq!(
        fw["inputSchema"]["properties"]["ttl_minutes"],
        json!({"type": "integer", "minimum": 1, "maximum": 240})
    );
    assert_eq!(fw["_meta"]["capgate/requires_approval"], json!(true));
    let list = tools.iter().find(|t| t["name"] == "list_tickets").unwrap();
    assert_eq!(list["annotations"]["readOnlyHint"], json!(true));
    assert!(f.calls("dev").is_empty());
}

#[tokio::test]
async fn every_bad_token_is_refused_with_a_challenge_and_nothing_runs() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let good = f.token("dev", "alice", &["oncall"]);
    let mut session = Mcp::open(gw.url("dev"), &good).await;
    let kid = f.kid("dev");
    let key = f.signing_key("dev");
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let n = now();
    let with = |k: &str, v: Value| {
        let mut c = f.claims("dev", "alice", &["oncall"]);
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = f.claims("dev", "alice", &["oncall"]);
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let rsa_pub = std::fs::read(fixtures().join("test-rsa.pub.pem")).unwrap();
    let mut rsa_claims = f.claims("dev", "alice", &["oncall"]);
    rsa_claims["iss"] = json!(RSA_EC_ISSUER);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("not-a-jwt".into())),
        ("expired", Some(sign_ed(&key, &kid, &with("exp", json!(n - 3600))))),
        ("not yet valid", Some(sign_ed(&key, &kid, &with("nbf", json!(n + 3600))))),
        (
            "wrong issuer",
            Some(sign_ed(&key, &kid, &with("iss", json!("https://evil.example")))),
        ),
        (
            "wrong audience",
            Some(sign_ed(&key, &kid, &with("aud", json!("https://capgate.test/other/mcp")))),
        ),
        ("no audience", Some(sign_ed(&key, &kid, &without("aud")))),
        ("no expiry", Some(sign_ed(&key, &kid, &without("exp")))),
        ("no subject", Some(sign_ed(&key, &kid, &without("sub")))),
        ("roles not an array", Some(sign_ed(&key, &kid, &with("roles", json!("oncall"))))),
        ("other environment", Some(f.token("stage", "alice", &["oncall"]))),
        (
            "stage token with dev audience",
            Some(f.sign("stage", &f.claims("dev", "alice", &["oncall"]))),
        ),
        ("alg none", Some(alg_none(&kid, &f.claims("dev", "alice", &["oncall"])))),
        (
            "hs256 keyed with the RSA public key",
            Some(hs256_with(&rsa_pub, "test-rsa", &rsa_claims)),
        ),
        (
            "wrong signing key, right kid",
            Some(sign_ed(&other_key, &kid, &f.claims("dev", "alice", &["oncall"]))),
        ),
        ("unknown kid", Some(sign_ed(&key, "nope", &f.claims("dev", "alice", &["oncall"])))),
        (
            "tampered payload",
            Some({
                let parts: Vec<&str> = good.split('.').collect();
                use base64::Engine;
                let forged =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(f.claims("dev", "alice", &["incident_commander"]).to_string());
                format!("{}.{}.{}", parts[0], forged, parts[2])
            }),
        ),
    ];
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "create_ticket", "arguments": {"title": "x", "severity": "low"}}}).to_string();
    for (name, token) in cases {
        session.token = token.clone();
        let r = session.send(body.clone(), &[]).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text);
        let challenge = r.header("www-authenticate").unwrap_or_else(|| panic!("{name}: no challenge"));
        assert!(
            challenge.starts_with("Bearer resource_metadata=\"https://capgate.test/.well-known/oauth-protected-resource\""),
            "{name}: {challenge}"
        );
        if token.is_some() {
            assert!(challenge.contains("error=\"invalid_token\""), "{name}: {challenge}");
        }
        assert!(
            !r.text.contains("create_ticket") && !r.text.contains("tools"),
            "{name}: the tool surface leaked: {}",
            r.text
        );
        let recs = f.audit_for_trace("dev", &r.trace());
        assert_eq!(recs.len(), 1, "{name}: one deny record");
        assert_eq!(recs[0]["decision"], "deny");
        assert_eq!(recs[0]["principal"], Value::Null, "{name}");
        assert_eq!(recs[0]["tool"], "create_ticket", "{name}");
        assert!(recs[0]["client"]["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        if let Some(t) = &token {
            assert!(
                !serde_json::to_string(&recs[0]).unwrap().contains(t.as_str()),
                "{name}: token in the record"
            );
        }
    }
    // Token in the query string, even a valid one: refused.
    let r = http()
        .post(format!("{}?access_token={good}", gw.url("dev")))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(f.calls("dev").is_empty(), "a denied call reached the upstream");
    // The RFC 9728 document the challenge points to.
    let meta: Value = get(format!("{}/.well-known/oauth-protected-resource", gw.base("dev")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resource"], audience("dev"));
    assert_eq!(meta["authorization_servers"], json!([issuer("dev"), RSA_EC_ISSUER]));
}

#[tokio::test]
async fn forbidden_unknown_and_uncontracted_tools_answer_alike_and_nothing_runs() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut viewer = Mcp::open(gw.url("dev"), &f.token("dev", "vera", &["viewer"])).await;
    let forbidden = viewer.call("create_ticket", json!({"title": "x", "severity": "low"})).await;
    let unknown = viewer.call("no_such_tool", json!({})).await;
    let uncontracted = viewer.call("purge_all_tickets", json!({})).await;
    for (name, r) in [
        ("create_ticket", &forbidden),
        ("no_such_tool", &unknown),
        ("purge_all_tickets", &uncontracted),
    ] {
        assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
        assert_eq!(r.body["error"]["message"], format!("tool `{name}` is not available"));
        assert_eq!(r.body["error"]["data"]["reason_code"], "tool_not_available");
        let recs = f.audit_for_trace("dev", &r.trace());
        assert_eq!(recs.len(), 1);
        assert_eq!(
            (recs[0]["decision"].as_str(), recs[0]["principal"]["sub"].as_str()),
            (Some("deny"), Some("vera"))
        );
    }
    // Even the incident commander cannot reach the uncontracted upstream tool.
    let mut ic = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    assert_eq!(ic.call("purge_all_tickets", json!({})).await.error_code(), Some(-32602));
    assert!(f.calls("dev").is_empty());
}

#[tokio::test]
async fn every_kind_of_bad_argument_is_refused_naming_the_argument_and_nothing_runs() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut mcp = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let good = valid_typed_args();
    let r = mcp.call("typed_lookup", good.clone()).await;
    assert_eq!(
        r.body["result"]["isError"],
        json!(false),
        "the valid baseline must pass: {}",
        r.text
    );
    assert_eq!(f.calls("dev").len(), 1);

    let bad: Vec<(&str, Value)> = vec![
        ("net", json!("10.0.0.1/8")),
        ("net", json!("010.0.0.0/8")),
        ("net", json!("0.0.0.0/0")),
        ("net", json!("10.0.0.0/33")),
        ("net", json!(" 10.0.0.0/8")),
        ("net", json!("2001:DB8::/32")),
        ("addr", json!("1.2.3.04")),
        ("addr", json!("fe80::1%eth0")),
        ("v4", json!("::1")),
        ("v4", json!("0x7f.0.0.1")),
        ("v6", json!("0:0::1")),
        ("n", json!(0)),
        ("n", json!(11)),
        ("n", json!("5")),
        ("n", json!(5.0)),
        ("n", json!(5.5)),
        ("n", json!(null)),
        ("s", json!("")),
        ("s", json!("123456789")),
        ("s", json!("ab\u{7}")),
        ("s", json!(["abc"])),
        ("e", json!("A")),
        ("e", json!("a ")),
        ("r", json!("inc-42\n")),
        ("r", json!("inc-4")),
        ("b", json!("true")),
        ("b", json!(1)),
        ("h", json!("Db.example")),
        ("h", json!("db..example")),
        ("h", json!("db.example.")),
        ("u", json!("67E55044-10B1-426F-9247-BB680E5FE0C8")),
        ("u", json!("{67e55044-10b1-426f-9247-bb680e5fe0c8}")),
        ("opt", json!(7)),
    ];
    for (arg, value) in bad {
        let mut args = good.clone();
        args[arg] = value.clone();
        let r = mcp.call("typed_lookup", args).await;
        assert_eq!(r.error_code(), Some(-32602), "{arg}={value}: {}", r.text);
        let errors = r.body["error"]["data"]["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{arg}={value}: {errors:?}");
        assert_eq!(errors[0]["argument"], arg);
    }
    // Missing, unknown, and several problems at once: each is named.
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("net");
    let r = mcp.call("typed_lookup", missing).await;
    assert_eq!(
        r.body["error"]["data"]["errors"],
        json!([{"argument": "net", "rule": "is required"}])
    );
    let mut extra = good.clone();
    extra["shell"] = json!("rm -rf /");
    let r = mcp.call("typed_lookup", extra).await;
    assert_eq!(
        r.body["error"]["data"]["errors"],
        json!([{"argument": "shell", "rule": "is not an argument of this tool"}])
    );
    assert!(!r.text.contains("rm -rf"), "the value must not be echoed");
    let r = mcp.call("typed_lookup", json!({})).await;
    assert_eq!(r.body["error"]["data"]["errors"].as_array().unwrap().len(), 11);
    let r = mcp
        .call("create_ticket", json!({"title": "x", "severity": "low", "queue": "OPS"}))
        .await;
    assert_eq!(r.body["error"]["data"]["errors"][0]["argument"], "queue");
    // Arguments that are not an object at all.
    let r = mcp.rpc("tools/call", json!({"name": "typed_lookup", "arguments": ["x"]})).await;
    assert!(r.body.get("error").is_some(), "{}", r.text);
    // Duplicate keys: the gateway and the upstream could read different values.
    let dup = r#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"create_ticket","arguments":{"title":"x","severity":"low","severity":"critical"}}}"#;
    let r = mcp.send(dup.to_string(), &[]).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("duplicate key `severity`"));
    assert_eq!(r.body["id"], 77);
    // Sensitive values are never echoed nor stored.
    let r = mcp
        .call(
            "create_ticket",
            json!({"title": "", "severity": "low", "reporter_email": "secret-mail@corp.example"}),
        )
        .await;
    assert_eq!(r.error_code(), Some(-32602));
    assert!(!r.text.contains("secret-mail"));
    let rec = f.audit_for_trace("dev", &r.trace());
    assert_eq!(rec[0]["args"]["reporter_email"], "[redacted]");
    assert_eq!(rec[0]["reason_code"], "arguments_invalid");
    assert!(rec[0]["args_digest"].as_str().unwrap().len() == 64);

    assert_eq!(f.calls("dev").len(), 1, "only the valid baseline may have run");
}

#[tokio::test]
async fn approval_required_answers_pending_and_never_runs() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut ic = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let r = ic
        .call("create_firewall_block", json!({"ip": "203.0.113.0/24", "ttl_minutes": 60}))
        .await;
    let result = &r.body["result"];
    assert_eq!(result["isError"], json!(false), "pending is a result, not an error: {}", r.text);
    assert_eq!(result["structuredContent"]["status"], "pending");
    let id = result["structuredContent"]["approval_id"].as_str().unwrap();
    assert!(result["content"][0]["text"].as_str().unwrap().contains(id));
    let recs = f.audit_for_trace("dev", &r.trace());
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0]["decision"].as_str(), recs[0]["approval"]["id"].as_str()),
        (Some("pending"), Some(id))
    );
    // Repeating it, or widening it, still never runs.
    ic.call("create_firewall_block", json!({"ip": "203.0.113.0/24", "ttl_minutes": 60}))
        .await;
    let wide = ic
        .call("create_firewall_block", json!({"ip": "0.0.0.0/0", "ttl_minutes": 60}))
        .await;
    assert_eq!(wide.body["result"]["structuredContent"]["status"], "pending");
    assert!(f.calls("dev").is_empty());
}

#[tokio::test]
async fn hostile_origin_oversized_body_and_foreign_session_are_refused() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "create_ticket", "arguments": {"title": "x", "severity": "low"}}}).to_string();
    let r = alice.send(body.clone(), &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(f.audit_for_trace("dev", &r.trace())[0]["reason_code"], "origin_refused");
    let ok = alice.send(body.clone(), &[("origin", "https://console.capgate.test")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(f.calls("dev").len(), 1);

    // DNS rebinding: a name this listener does not serve, on an open session, is refused and
    // recorded whichever route would have served the call; names compare case-insensitively.
    let port = gw.url("dev").rsplit(':').next().unwrap().split('/').next().unwrap().to_string();
    let r = alice.send(body.clone(), &[("host", &format!("evil.example:{port}"))]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let rec = &f.audit_for_trace("dev", &r.trace())[0];
    assert_eq!(
        (rec["decision"].as_str(), rec["reason_code"].as_str()),
        (Some("deny"), Some("origin_refused"))
    );
    assert_eq!(f.calls("dev").len(), 1, "a rebinding request ran");
    let ok = alice.send(body.clone(), &[("host", &format!("LOCALHOST:{port}"))]).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(f.calls("dev").len(), 2);

    let huge = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "create_ticket", "arguments": {"title": "x".repeat(70_000), "severity": "low"}}}).to_string();
    let r = alice.send(huge, &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(f.audit_for_trace("dev", &r.trace())[0]["reason_code"], "body_too_large");

    // Bob, authenticated, presents Alice's session id: not his session.
    let mut bob = Mcp::new(gw.url("dev"), Some(f.token("dev", "bob", &["oncall"])));
    bob.session = alice.session.clone();
    let r = bob.send(body.clone(), &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let rec = &f.audit_for_trace("dev", &r.trace())[0];
    assert_eq!(
        (rec["reason_code"].as_str(), rec["principal"]["sub"].as_str()),
        (Some("session_not_owned"), Some("bob"))
    );
    // Malformed JSON from an authenticated caller.
    let r = alice.send("{\"jsonrpc\":".into(), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), Some(-32700));
    assert_eq!(f.calls("dev").len(), 2);
}

#[tokio::test]
async fn a_valid_traceparent_is_kept_and_an_invalid_one_replaced() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mcp = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "list_tickets", "arguments": {}}}).to_string();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = mcp.send(body.clone(), &[("traceparent", tp)]).await;
    assert_eq!(r.trace(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r.body["result"]["_meta"]["capgate/trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(f.audit_for_trace("dev", "4bf92f3577b34da6a3ce929d0e0e4736").len(), 2);
    let upstream_tp = f.calls("dev")[0]["meta"]["traceparent"].as_str().unwrap().to_string();
    assert!(
        upstream_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !upstream_tp.contains("00f067aa0ba902b7"),
        "{upstream_tp}"
    );
    let r = mcp.send(body, &[("traceparent", "00-ZZZ-bad-01")]).await;
    assert_eq!(r.trace().len(), 32);
    assert_ne!(r.trace(), "4bf92f3577b34da6a3ce929d0e0e4736");
    // Unauthenticated requests carry a trace too.
    let r = Mcp::new(gw.url("dev"), None).send("{}".into(), &[("traceparent", tp)]).await;
    assert_eq!((r.status, r.trace().as_str()), (401, "4bf92f3577b34da6a3ce929d0e0e4736"));
}

#[tokio::test]
async fn rate_limit_refuses_with_retry_after_and_does_not_run() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut ic = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    for _ in 0..2 {
        assert_eq!(
            ic.call("list_firewall_blocks", json!({})).await.body["result"]["isError"],
            json!(false)
        );
    }
    let r = ic.call("list_firewall_blocks", json!({})).await;
    assert_eq!(r.error_code(), Some(-32029), "{}", r.text);
    assert!(r.body["error"]["data"]["retry_after"].as_u64().unwrap() >= 1);
    // Limits are per caller: another incident commander is not throttled by ivan.
    let mut other = Mcp::open(gw.url("dev"), &f.token("dev", "ines", &["incident_commander"])).await;
    assert_eq!(
        other.call("list_firewall_blocks", json!({})).await.body["result"]["isError"],
        json!(false)
    );
    assert_eq!(f.calls("dev").len(), 3);
}

#[tokio::test]
async fn upstream_timeout_is_a_clear_tool_error_and_a_dead_upstream_is_restarted() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut mcp = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let r = mcp.call("run_report", json!({"seconds": 4})).await;
    assert_eq!(r.body["result"]["isError"], json!(true), "{}", r.text);
    assert!(
        r.body["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("did not answer within 2s")
    );
    let recs = f.audit_for_trace("dev", &r.trace());
    assert_eq!(
        (recs[1]["decision"].as_str(), recs[1]["reason_code"].as_str()),
        (Some("error"), Some("backend_error"))
    );

    // Kill the upstream: the next calls restart it.
    let pid: i32 = std::fs::read_to_string(f.path().join("state/dev/upstream.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut ok = false;
    for _ in 0..3 {
        let r = mcp.call("list_tickets", json!({})).await;
        if r.body["result"]["isError"] == json!(false) {
            ok = true;
            break;
        }
        assert!(!r.text.contains("upstream-secret"), "credential leaked in an error");
    }
    assert!(ok, "the upstream was not restarted");
    let new_pid: i32 = std::fs::read_to_string(f.path().join("state/dev/upstream.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, new_pid);
    // The credential reached the upstream's environment (by name; the value never the agent).
    assert_eq!(f.calls("dev").last().unwrap()["env"], json!(["DEMO_API_TOKEN"]));
}

#[tokio::test]
async fn an_upstream_result_that_holds_a_backend_credential_is_withheld() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut mcp = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let r = mcp.call("leaky_diagnostics", json!({})).await;
    assert_eq!(r.body["result"]["isError"], json!(true), "{}", r.text);
    assert!(
        !r.text.contains("upstream-secret-dev"),
        "the credential reached the agent: {}",
        r.text
    );
    assert!(r.text.contains("withheld"));
    let recs = f.audit_for_trace("dev", &r.trace());
    assert_eq!(recs[1]["reason_code"], "backend_error");
    assert!(!serde_json::to_string(&recs).unwrap().contains("upstream-secret-dev"));
    assert_eq!(f.calls("dev").len(), 1, "it did run: withholding is about the answer");

    // The upstream fails with the credential in its error message: the agent sees a tool
    // error without it, and the outcome record names the failure without it.
    let r = mcp.call("leaky_diagnostics", json!({"fail": true})).await;
    assert_eq!(r.body["result"]["isError"], json!(true), "{}", r.text);
    assert!(!r.text.contains("upstream-secret-dev"), "{}", r.text);
    let recs = f.audit_for_trace("dev", &r.trace());
    assert_eq!(recs[1]["reason_code"], "backend_error", "{recs:#?}");
    let recorded = serde_json::to_string(&recs).unwrap();
    assert!(!recorded.contains("upstream-secret-dev"), "{recorded}");
    assert!(recorded.contains("withheld"), "{recorded}");
    assert_eq!(f.calls("dev").len(), 2);
}

#[tokio::test]
async fn readiness_health_and_metrics_answer() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let base = gw.base("stage");
    assert_eq!(get(format!("{base}/healthz")).await.status(), 200);
    let ready: Value = get(format!("{base}/readyz")).await.json().await.unwrap();
    assert_eq!(ready["audit"], json!(true));
    assert_eq!(ready["env"], "stage");
    let m = get(format!("{base}/metrics")).await.text().await.unwrap();
    assert!(m.contains("capgate_audit_records_total{env=\"stage\"}"));
}

/// Hostile input: thousands of mutated requests against the live server. None may crash it,
/// none may reach the upstream (every request targets a tool that must never run), and every
/// answer must be a well-formed HTTP refusal or JSON-RPC answer.
#[tokio::test]
async fn mutated_requests_never_crash_the_server_nor_execute_anything() {
    use rand::{Rng, SeedableRng};
    let f = Fixture::new("");
    let mut gw = Gateway::start(&f.config(), &ENVS);
    let ic = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let seeds = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "create_firewall_block", "arguments": {"ip": "203.0.113.0/24", "ttl_minutes": 60}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "purge_all_tickets", "arguments": {}}}),
    ];
    let nasty = [
        json!(null),
        json!(-1),
        json!(1e308),
        json!(u64::MAX),
        json!("0.0.0.0/0"),
        json!("\u{0}"),
        json!("\u{202e}"),
        json!([]),
        json!({}),
        json!("a".repeat(5000)),
        json!({"__proto__": 1}),
        json!(true),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xcab6a7e);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..600 {
        let mut v = seeds[i % seeds.len()].clone();
        let body = match rng.gen_range(0..6) {
            0 => {
                v["params"]["arguments"]["ip"] = nasty[rng.gen_range(0..nasty.len())].clone();
                v.to_string()
            }
            1 => {
                v["params"]["arguments"] = nasty[rng.gen_range(0..nasty.len())].clone();
                v.to_string()
            }
            2 => {
                v["params"]["name"] = nasty[rng.gen_range(0..nasty.len())].clone();
                v.to_string()
            }
            3 => {
                let mut bytes = v.to_string().into_bytes();
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] = rng.r#gen();
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            4 => {
                let s = v.to_string();
                s[..rng.gen_range(0..s.len())].to_string()
            }
            _ => format!("{}{}", "[".repeat(rng.gen_range(1..3000)), "]".repeat(rng.gen_range(0..3000))),
        };
        let r = ic.send(body, &[]).await;
        *statuses.entry(r.status).or_insert(0) += 1;
        assert!(
            [200, 202, 400, 404, 406, 413, 415, 422].contains(&r.status),
            "unexpected status {}: {}",
            r.status,
            r.text
        );
    }
    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway died");
    assert_eq!(get(format!("{}/healthz", gw.base("dev"))).await.status(), 200);
    assert!(f.calls("dev").is_empty(), "a mutated request executed: {:?}", f.calls("dev"));
    assert!(statuses.len() > 1, "{statuses:?}");
}

#[tokio::test]
async fn a_source_over_its_failure_budget_is_still_refused_and_recorded_and_its_valid_calls_run() {
    let f = Fixture::new("");
    // A long window: which request is over the budget depends on counting, not on timing.
    f.set_in_env("dev", "auth_failure_limit = \"3/min\"");
    let gw = Gateway::start(&f.config(), &ENVS);
    let good = f.token("dev", "alice", &["oncall"]);
    let mut alice = Mcp::open(gw.url("dev"), &good).await;
    let mut bad = Mcp::new(gw.url("dev"), Some(f.token("stage", "mallory", &["oncall"])));
    let mut traces = Vec::new();
    for _ in 0..5 {
        let r = bad.call("create_ticket", json!({"title": "x", "severity": "low"})).await;
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
        traces.push(r.trace());
    }
    // Every refusal has its record; the first three are plain, the rest say they were held.
    let held: Vec<bool> = traces
        .iter()
        .map(|t| {
            let recs = f.audit_for_trace("dev", t);
            assert_eq!(recs.len(), 1, "{recs:#?}");
            assert_eq!(recs[0]["decision"], "deny");
            assert_eq!(recs[0]["reason_code"], "token_invalid");
            recs[0]["reason"]
                .as_str()
                .unwrap()
                .contains("over its authentication-failure budget")
        })
        .collect();
    assert_eq!(held, [false, false, false, true, true]);
    // The same address with a valid token is not refused, not held, and its call runs.
    let r = alice.call("create_ticket", json!({"title": "x", "severity": "low"})).await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(f.calls("dev").len(), 1, "only the authenticated call ran");
    // Other environments keep their own budgets.
    let mut stage = Mcp::new(gw.url("stage"), Some(f.token("dev", "mallory", &["oncall"])));
    let r = stage.call("create_ticket", json!({"title": "x", "severity": "low"})).await;
    assert_eq!(r.status, 401);
    let recs = f.audit_for_trace("stage", &r.trace());
    assert!(!recs[0]["reason"].as_str().unwrap().contains("budget"), "{recs:#?}");
    assert!(f.calls("stage").is_empty());
}

/// A `tools/call`, through the direct route (server/fast.rs) or, with a progress token that
/// makes it ineligible there, through rmcp's handler (server/mcp.rs).
async fn call_via(m: &Mcp, tool: &str, args: Value, via_rmcp: bool) -> Reply {
    let mut params = json!({"name": tool, "arguments": args});
    if via_rmcp {
        params["_meta"] = json!({"progressToken": "p1"});
    }
    m.send(
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}).to_string(),
        &[],
    )
    .await
}

/// The gateway owns a session's lifetime: one used only through the direct route (which
/// never reaches rmcp's session worker) stays open past the idle timeout, one left unused is
/// closed on both routes, and a session ID it never issued is refused and recorded. None of
/// the refused calls runs.
#[tokio::test]
async fn sessions_stay_open_while_used_close_when_idle_and_unknown_ids_are_refused() {
    let f = Fixture::new("");
    f.set_in_env("dev", "session_idle_timeout = \"2s\"");
    let gw = Gateway::start(&f.config(), &ENVS);
    let alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    for _ in 0..8 {
        let r = call_via(&alice, "list_tickets", json!({}), false).await;
        assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Four seconds of direct-route calls, twice the timeout: rmcp's route still has it too.
    let r = call_via(&alice, "list_tickets", json!({}), true).await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(f.calls("dev").len(), 9);

    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    for via_rmcp in [false, true] {
        let r = call_via(&alice, "list_tickets", json!({}), via_rmcp).await;
        assert_eq!(r.status, 404, "an idle session still answered: {}", r.text);
        let rec = &f.audit_for_trace("dev", &r.trace())[0];
        assert_eq!(
            (rec["decision"].as_str(), rec["reason_code"].as_str()),
            (Some("deny"), Some("session_not_owned"))
        );
    }
    let mut guess = Mcp::new(gw.url("dev"), Some(f.token("dev", "alice", &["oncall"])));
    guess.session = Some("4f9a1c3e-0000-4000-8000-000000000000".into());
    let r = call_via(&guess, "list_tickets", json!({}), false).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(
        f.audit_for_trace("dev", &r.trace())[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not open")
    );
    assert_eq!(f.calls("dev").len(), 9, "a call on a closed or unknown session ran");
    assert_eq!(open_sessions(&gw, "dev", 0).await, 0, "rmcp still holds the idle session");

    // A new session works at once.
    let again = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let r = call_via(&again, "list_tickets", json!({}), false).await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
}

/// rmcp's count of open sessions (`/metrics`), once it equals `want` or after 5 s: closing
/// a session in rmcp finishes in a task of its own.
async fn open_sessions(gw: &Gateway, env: &str, want: u64) -> u64 {
    let url = gw.url(env).replace("/mcp", "/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let n = text
            .lines()
            .find(|l| l.starts_with("capgate_mcp_sessions{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .expect("capgate_mcp_sessions in /metrics");
        if n == want || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An identity that keeps opening sessions (each costs the gateway ~100 KiB) loses its least
/// recently used ones beyond the cap; another identity's sessions are not touched.
#[tokio::test]
async fn an_identity_over_its_session_cap_loses_its_least_recently_used_session() {
    let f = Fixture::new("");
    f.set_in_env("dev", "max_sessions_per_identity = 2");
    let gw = Gateway::start(&f.config(), &ENVS);
    let alice = || f.token("dev", "alice", &["oncall"]);
    let bob = Mcp::open(gw.url("dev"), &f.token("dev", "bob", &["oncall"])).await;
    let a1 = Mcp::open(gw.url("dev"), &alice()).await;
    let a2 = Mcp::open(gw.url("dev"), &alice()).await;
    // a1 used after a2 was opened: a2 is now the least recently used.
    let ok = |r: &common::Reply| r.body["result"]["isError"] == json!(false);
    assert!(ok(&call_via(&a1, "list_tickets", json!({}), false).await));
    let a3 = Mcp::open(gw.url("dev"), &alice()).await;
    let r = call_via(&a2, "list_tickets", json!({}), false).await;
    assert_eq!(r.status, 404, "the least recently used session was kept: {}", r.text);
    assert_eq!(f.audit_for_trace("dev", &r.trace())[0]["reason_code"], "session_not_owned");
    for (name, m) in [("a1", &a1), ("a3", &a3), ("bob", &bob)] {
        let r = call_via(m, "list_tickets", json!({}), false).await;
        assert!(ok(&r), "{name}: {}", r.text);
    }
    let r = call_via(&a2, "list_tickets", json!({}), true).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(f.calls("dev").len(), 4, "a call on the closed session ran");
    // Closed in rmcp too (its memory freed), not only in the guard's table.
    assert_eq!(open_sessions(&gw, "dev", 3).await, 3);
}

/// The environment's total (`max_sessions`) bounds memory whatever the number of identities;
/// one more session closes an idle one of the identity holding the most, not another's.
#[tokio::test]
async fn over_the_environments_session_total_the_biggest_holder_loses_an_idle_session() {
    let f = Fixture::new("");
    f.set_in_env("dev", "max_sessions = 3");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mallory = || f.token("dev", "mallory", &["oncall"]);
    let m1 = Mcp::open(gw.url("dev"), &mallory()).await;
    let m2 = Mcp::open(gw.url("dev"), &mallory()).await;
    let alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let bob = Mcp::open(gw.url("dev"), &f.token("dev", "bob", &["oncall"])).await;
    let r = call_via(&m1, "list_tickets", json!({}), false).await;
    assert_eq!(
        r.status, 404,
        "the biggest holder's least recently used session was kept: {}",
        r.text
    );
    assert_eq!(f.audit_for_trace("dev", &r.trace())[0]["reason_code"], "session_not_owned");
    for (name, m) in [("m2", &m2), ("alice", &alice), ("bob", &bob)] {
        let r = call_via(m, "list_tickets", json!({}), false).await;
        assert_eq!(r.body["result"]["isError"], json!(false), "{name}: {}", r.text);
    }
    assert_eq!(f.calls("dev").len(), 3, "a call on the closed session ran");
    assert_eq!(open_sessions(&gw, "dev", 3).await, 3);
}

/// Messages shaped like a `tools/call` that rmcp reads as no valid call: the direct route
/// reads them by their method's own type, so it must hand every one of them to rmcp rather
/// than run it.
#[tokio::test]
async fn malformed_calls_on_the_direct_route_never_run() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "list_tickets", "arguments": {}}});
    let with = |key: &str, value: Value| {
        let mut b = call.clone();
        b[key] = value;
        b
    };
    let bodies = [
        with("result", json!({})),
        with("error", json!({"code": 1, "message": "x"})),
        with("jsonrpc", json!("1.0")),
        with("id", json!({"nested": 1})),
        with("params", json!({"arguments": {}})),
        with("params", json!({"name": 7})),
    ];
    for body in bodies {
        let r = alice.send(body.to_string(), &[]).await;
        assert!(r.body.get("result").is_none(), "{body} was answered with a result: {}", r.text);
    }
    assert!(f.calls("dev").is_empty(), "a malformed call ran: {:?}", f.calls("dev"));
    // The same session still calls as it should.
    let r = call_via(&alice, "list_tickets", json!({}), false).await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(f.calls("dev").len(), 1);
}

#[tokio::test]
async fn both_routes_refuse_alike_and_nothing_runs() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let vera = Mcp::open(gw.url("dev"), &f.token("dev", "vera", &["viewer"])).await;
    let alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let cases: Vec<(&Mcp, &str, Value, &str)> = vec![
        (
            &vera,
            "create_ticket",
            json!({"title": "x", "severity": "low"}),
            "tool_not_available",
        ),
        (&vera, "no_such_tool", json!({}), "tool_not_available"),
        (&alice, "purge_all_tickets", json!({}), "tool_not_available"),
        (
            &alice,
            "create_ticket",
            json!({"title": "", "severity": "urgent", "extra": 1}),
            "arguments_invalid",
        ),
    ];
    for (m, tool, args, code) in cases {
        let direct = call_via(m, tool, args.clone(), false).await;
        let rmcp = call_via(m, tool, args, true).await;
        for r in [&direct, &rmcp] {
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
            assert_eq!(r.body["error"]["data"]["reason_code"], code, "{}", r.text);
            let recs = f.audit_for_trace("dev", &r.trace());
            assert_eq!(recs.len(), 1, "{recs:#?}");
            assert_eq!(
                (recs[0]["decision"].as_str(), recs[0]["reason_code"].as_str()),
                (Some("deny"), Some(code))
            );
        }
        assert_eq!(direct.body["error"]["message"], rmcp.body["error"]["message"], "`{tool}`");
        assert_eq!(
            direct.body["error"]["data"]["errors"], rmcp.body["error"]["data"]["errors"],
            "`{tool}`"
        );
    }
    assert!(f.calls("dev").is_empty(), "a refused call ran: {:?}", f.calls("dev"));

    // And an allowed call runs once through either route, with its allow and outcome records.
    for via_rmcp in [false, true] {
        let r = call_via(&alice, "list_tickets", json!({}), via_rmcp).await;
        assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
        let recs = f.audit_for_trace("dev", &r.trace());
        let codes: Vec<&str> = recs.iter().map(|r| r["reason_code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["allowed", "executed"]);
    }
    assert_eq!(f.calls("dev").len(), 2);
}
