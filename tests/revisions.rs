//! MCP 2026-07-28 through the gateway, on the endpoint that serves 2025-11-25: stateless
//! requests (no `initialize`, no session) with `server/discover`, the per-request `_meta`,
//! and the headers that mirror the body. Every refusal is checked against the canary (the
//! demo upstream's calls log: nothing reached it) and the audit log (each has its record).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failure is a test failure"
)]

mod common;

use common::{Fixture, Gateway, Mcp, Reply};
use serde_json::{Value, json};

const V: &str = "2026-07-28";

/// A tool whose `ticket_queue` argument is mirrored in `Mcp-Param-Queue`.
const MIRRORED: &str = r#"
[[contract]]
tool = "queue_report"
description = "Reports on one queue (list_tickets)"
allowed_roles = ["oncall"]
side_effects = "read"
backend = { upstream = "demo", tool = "list_tickets" }
arg_schema = { ticket_queue = { type = "enum", values = ["SEC", "OPS"], header = "Queue" }, limit = "1-50?" }
"#;

fn fixture() -> Fixture {
    let f = Fixture::new("");
    std::fs::write(f.path().join("contracts/mirrored.toml"), MIRRORED).unwrap();
    f
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "capgate-tests", "version": "1"}
    })
}

/// A stateless request as a 2026-07-28 client sends it: the version in the header and in
/// `_meta`, `Mcp-Method`, and `Mcp-Name` where the method names something. `headers` are
/// sent instead of the mirrors where given.
async fn stateless(m: &Mcp, id: i64, method: &str, mut params: Value, headers: Option<&[(&str, &str)]>) -> Reply {
    params["_meta"] = meta();
    let name = params["name"].as_str().or(params["uri"].as_str()).map(str::to_string);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
    let mut mirrors = vec![("mcp-method", method)];
    if let Some(n) = name.as_deref() {
        mirrors.push(("mcp-name", n));
    }
    let mut all = vec![("mcp-protocol-version", V)];
    all.extend(headers.map_or(mirrors, <[_]>::to_vec));
    m.send(body, &all).await
}

fn tickets_calls(f: &Fixture) -> usize {
    f.calls("dev").iter().filter(|c| c["tool"] == "list_tickets").count()
}

#[tokio::test]
async fn a_stateless_client_discovers_lists_and_calls_without_a_session_each_call_audited() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &["dev"]);
    let m = Mcp::new(gw.url("dev"), Some(f.token("dev", "u-alice", &["oncall"])));

    let d = stateless(&m, 1, "server/discover", json!({}), None).await;
    assert_eq!(d.status, 200, "{}", d.text);
    let versions = d.body["result"]["supportedVersions"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", d.text));
    assert!(versions.iter().any(|v| v == V), "{versions:?}");
    assert!(versions.iter().any(|v| v == "2025-11-25"), "{versions:?}");
    assert!(d.header("mcp-session-id").is_none(), "no session on 2026-07-28");

    let l = stateless(&m, 2, "tools/list", json!({}), None).await;
    assert_eq!(l.status, 200, "{}", l.text);
    let tools = l.body["result"]["tools"].as_array().unwrap_or_else(|| panic!("{}", l.text));
    let q = tools.iter().find(|t| t["name"] == "queue_report").expect("queue_report listed");
    assert_eq!(q["inputSchema"]["properties"]["ticket_queue"]["x-mcp-header"], "Queue");
    assert!(
        !tools.iter().any(|t| t["name"] == "create_firewall_block"),
        "listed only what oncall may call"
    );
    assert_eq!(l.body["result"]["cacheScope"], "private", "a list is the caller's: {}", l.text);

    let c = stateless(&m, 3, "tools/call", json!({"name": "list_tickets", "arguments": {}}), None).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert!(c.body["result"]["content"].is_array(), "{}", c.text);
    // A result without `resultType` is complete (2026-07-28 names only the other kinds).
    assert!(c.body["result"].get("resultType").is_none_or(|t| t == "complete"), "{}", c.text);
    assert_eq!(tickets_calls(&f), 1, "the call ran once");
    let recs = f.audit_for_trace("dev", &c.trace());
    let codes: Vec<&str> = recs.iter().filter_map(|r| r["reason_code"].as_str()).collect();
    assert!(codes.contains(&"executed"), "{codes:?}");
    assert!(
        recs.iter()
            .all(|r| r["principal"] == "u-alice" || r["principal"]["sub"] == "u-alice"),
        "{recs:?}"
    );
}

/// A version the gateway does not speak: HTTP 400 and SEP-2575's
/// UnsupportedProtocolVersionError (-32022) echoing what was asked and listing what is
/// spoken (what `server/discover` says), under the request's own id; recorded.
#[tokio::test]
async fn an_unsupported_version_is_answered_with_the_versions_spoken_under_the_requests_id() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &["dev"]);
    let m = Mcp::new(gw.url("dev"), Some(f.token("dev", "u-alice", &["oncall"])));
    let discover = stateless(&m, 1, "server/discover", json!({}), None).await;
    let spoken = discover.body["result"]["supportedVersions"].clone();
    assert!(spoken.as_array().is_some_and(|v| v.contains(&json!(V))), "{}", discover.text);
    let mut params = json!({});
    params["_meta"] = meta();
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let body = json!({"jsonrpc": "2.0", "id": 301, "method": "server/discover", "params": params}).to_string();
    let r = m
        .send(body, &[("mcp-protocol-version", "v999.0.0"), ("mcp-method", "server/discover")])
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32022), "{}", r.text);
    assert_eq!(r.body["id"], 301, "{}", r.text);
    assert_eq!(r.body["error"]["data"]["requested"], "v999.0.0", "{}", r.text);
    let supported = r.body["error"]["data"]["supported"].as_array().unwrap();
    assert!(
        !supported.is_empty() && supported.iter().all(|v| spoken.as_array().unwrap().contains(v)),
        "{}",
        r.text
    );
    let recs = f.audit_for_trace("dev", &r.trace());
    assert!(recs.iter().any(|rec| rec["reason_code"] == "protocol_unsupported"), "{recs:?}");
}

/// What 2026-07-28 removed with its sessions (`initialize`, `ping`, `logging/setLevel`,
/// `resources/subscribe`, `resources/unsubscribe`) answers 404 with -32601 on that revision,
/// recorded, and with a message that names the method.
#[tokio::test]
async fn methods_removed_in_2026_07_28_are_not_found_there_and_recorded() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &["dev"]);
    let m = Mcp::new(gw.url("dev"), Some(f.token("dev", "u-alice", &["oncall"])));
    // Whatever their params: a removed method has none to judge (an `initialize` without
    // its members, a `logging/setLevel` without a level are not found, not invalid).
    for (id, method, params) in [
        (1, "ping", json!({})),
        (2, "logging/setLevel", json!({"level": "debug"})),
        (3, "resources/subscribe", json!({"uri": "test://x"})),
        (4, "resources/unsubscribe", json!({"uri": "test://x"})),
        (5, "initialize", json!({})),
        (6, "logging/setLevel", json!({})),
        (7, "resources/subscribe", json!({})),
    ] {
        let r = stateless(&m, id, method, params, None).await;
        assert_eq!(r.status, 404, "{method}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32601), "{method}: {}", r.text);
        assert_eq!(r.body["id"], id, "{}", r.text);
        assert!(r.text.contains(&format!("method not found: {method}")), "{}", r.text);
        let recs = f.audit_for_trace("dev", &r.trace());
        assert!(
            recs.iter()
                .any(|rec| rec["reason_code"] == "method_not_found" && rec["method"] == method),
            "{method}: {recs:?}"
        );
    }
}

#[tokio::test]
async fn headers_that_do_not_mirror_the_body_are_refused_400_recorded_and_nothing_runs() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &["dev"]);
    let m = Mcp::new(gw.url("dev"), Some(f.token("dev", "u-alice", &["oncall"])));
    let call = json!({"name": "list_tickets", "arguments": {}});
    type Case = (&'static str, Vec<(&'static str, &'static str)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "wrong method",
            vec![("mcp-method", "tools/list"), ("mcp-name", "list_tickets")],
            "Mcp-Method header `tools/list`",
        ),
        ("no method", vec![("mcp-name", "list_tickets")], "Mcp-Method header is missing"),
        (
            "case differs",
            vec![("mcp-method", "TOOLS/CALL"), ("mcp-name", "list_tickets")],
            "`TOOLS/CALL`",
        ),
        // What a router would send to one tool while the body runs another.
        (
            "other tool",
            vec![("mcp-method", "tools/call"), ("mcp-name", "create_ticket")],
            "Mcp-Name header `create_ticket`",
        ),
        ("no name", vec![("mcp-method", "tools/call")], "Mcp-Name header is missing"),
        (
            "two names",
            vec![
                ("mcp-method", "tools/call"),
                ("mcp-name", "list_tickets"),
                ("mcp-name", "list_tickets"),
            ],
            "more than once",
        ),
    ];
    for (i, (case, headers, expected)) in cases.iter().enumerate() {
        let r = stateless(&m, 10 + i as i64, "tools/call", call.clone(), Some(headers)).await;
        assert_eq!(r.status, 400, "{case}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32020), "{case}: {}", r.text);
        assert_eq!(r.body["id"], 10 + i as i64, "{case}: the answer names the request");
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expected), "{case}: {msg}");
        let recs = f.audit_for_trace("dev", &r.trace());
        assert_eq!(recs.len(), 1, "{case}: one record: {recs:?}");
        assert_eq!(recs[0]["decision"], "deny");
        assert_eq!(recs[0]["reason_code"], "header_mismatch", "{case}");
        assert_eq!(recs[0]["tool"], "list_tickets", "{case}: the record names what the body named");
    }

    // The version the header states and the one the body states differ.
    let body =
        json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call", "params": {"name": "list_tickets", "arguments": {}, "_meta": meta()}});
    let r = m
        .send(
            body.to_string(),
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "list_tickets"),
            ],
        )
        .await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32020)), "{}", r.text);
    // A 2026-07-28 request whose `_meta` does not say what every such request must.
    let body = json!({"jsonrpc": "2.0", "id": 31, "method": "tools/call", "params": {"name": "list_tickets", "arguments": {}}});
    let r = m
        .send(
            body.to_string(),
            &[
                ("mcp-protocol-version", V),
                ("mcp-method", "tools/call"),
                ("mcp-name", "list_tickets"),
            ],
        )
        .await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32602)), "{}", r.text);
    assert!(
        r.body["error"]["message"].as_str().unwrap_or_default().contains("protocolVersion"),
        "{}",
        r.text
    );
    assert_eq!(f.audit_for_trace("dev", &r.trace())[0]["reason_code"], "malformed_request");

    assert_eq!(tickets_calls(&f), 0, "no refused request reached the upstream");

    // Spaces around a value are not part of it (RFC 9110 §5.5): this one runs.
    let ok = stateless(
        &m,
        40,
        "tools/call",
        call,
        Some(&[("mcp-method", "tools/call"), ("mcp-name", "  list_tickets  ")]),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(tickets_calls(&f), 1);
}

#[tokio::test]
async fn an_argument_mirrored_in_a_header_must_match_it_both_ways() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &["dev"]);
    let m = Mcp::new(gw.url("dev"), Some(f.token("dev", "u-alice", &["oncall"])));
    let mirrors = |queue: Option<&'static str>| {
        let mut h = vec![("mcp-method", "tools/call"), ("mcp-name", "queue_report")];
        if let Some(q) = queue {
            h.push(("mcp-param-queue", q));
        }
        h
    };
    let args = json!({"name": "queue_report", "arguments": {"ticket_queue": "SEC"}});
    for (i, (headers, expected)) in [
        (mirrors(Some("OPS")), "does not match the argument `ticket_queue`"),
        (mirrors(None), "sent without its Mcp-Param-Queue header"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = stateless(&m, 50 + i as i64, "tools/call", args.clone(), Some(&headers)).await;
        assert_eq!((r.status, r.error_code()), (400, Some(-32020)), "{}", r.text);
        assert!(
            r.body["error"]["message"].as_str().unwrap_or_default().contains(expected),
            "{}",
            r.text
        );
        assert_eq!(f.audit_for_trace("dev", &r.trace())[0]["reason_code"], "header_mismatch");
    }
    let no_arg = json!({"name": "queue_report", "arguments": {"limit": 5}});
    let r = stateless(&m, 60, "tools/call", no_arg.clone(), Some(&mirrors(Some("SEC")))).await;
    assert_eq!(
        (r.status, r.error_code()),
        (400, Some(-32020)),
        "a header for an argument not sent: {}",
        r.text
    );
    assert_eq!(tickets_calls(&f), 0, "nothing ran");

    let ok = stateless(&m, 61, "tools/call", args, Some(&mirrors(Some("SEC")))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(ok.body["result"].is_object(), "{}", ok.text);
    assert_eq!(tickets_calls(&f), 1, "the mirrored call ran once");
}

#[test]
fn a_header_on_a_sensitive_argument_or_twice_the_same_header_is_refused_at_load() {
    for (contract, expected) in [
        (
            "[[contract]]\ntool = \"t\"\nallowed_roles = [\"oncall\"]\nsensitive = [\"a\"]\narg_schema = { a = { type = \"string\", header = \"A\" } }\n",
            "is sensitive and has a `header`",
        ),
        (
            "[[contract]]\ntool = \"t\"\nallowed_roles = [\"oncall\"]\narg_schema = { a = { type = \"bool\", header = \"X\" }, b = { type = \"bool\", header = \"x\" } }\n",
            "already another argument's",
        ),
        (
            "[[contract]]\ntool = \"t\"\nallowed_roles = [\"oncall\"]\narg_schema = { a = { type = \"bool\", header = \"Bad Name\" } }\n",
            "HTTP header name token",
        ),
    ] {
        let (passed, text) = common::check_with_contract(contract);
        assert!(!passed, "{text}");
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
}

fn block_calls(f: &Fixture) -> usize {
    f.calls("dev").iter().filter(|c| c["tool"] == "create_firewall_block").count()
}

/// On 2026-07-28 an approval keeps its meaning without a session: the pending answer carries
/// a `requestState` sealed to the caller, environment, tool, arguments and expiry. A repeat
/// that carries it tampered, or another caller's, or for other arguments, is refused,
/// recorded and runs nothing; the genuine one, once approved, runs the call once, because
/// the store says so, not the state.
#[tokio::test]
async fn a_pending_answers_request_state_is_checked_never_trusted() {
    let f = fixture();
    let gw = Gateway::start(&f.config(), &["dev"]);
    let ivan = Mcp::new(gw.url("dev"), Some(f.token("dev", "ivan", &["incident_commander"])));
    let mallory = Mcp::new(gw.url("dev"), Some(f.token("dev", "mallory", &["incident_commander"])));
    let args = json!({"ip": "192.0.2.0/24", "ttl_minutes": 30});
    let call = |args: &Value, state: Option<&str>| {
        let mut p = json!({"name": "create_firewall_block", "arguments": args});
        if let Some(s) = state {
            p["requestState"] = json!(s);
        }
        p
    };

    let first = stateless(&ivan, 1, "tools/call", call(&args, None), None).await;
    let pending = &first.body["result"]["structuredContent"];
    assert_eq!(pending["status"], "pending", "{}", first.text);
    let id = pending["approval_id"].as_str().unwrap().to_string();
    let state = pending["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", first.text))
        .to_string();

    // Tampered: one character of the seal changed.
    let mut tampered = state.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other_args = json!({"ip": "0.0.0.0/0", "ttl_minutes": 30});
    let refused = [
        (&ivan, call(&args, Some(&tampered)), "tampered"),
        (&mallory, call(&args, Some(&state)), "another caller's"),
        (&ivan, call(&other_args, Some(&state)), "for other arguments"),
        (&ivan, call(&args, Some("not-a-state")), "not one at all"),
    ];
    let mut traces = Vec::new();
    for (n, (who, params, what)) in refused.into_iter().enumerate() {
        let r = stateless(who, 10 + n as i64, "tools/call", params, None).await;
        assert_eq!(r.error_code(), Some(-32602), "{what}: {}", r.text);
        assert!(r.text.contains("`requestState` is not one this gateway gave"), "{what}: {}", r.text);
        traces.push(r.trace());
    }
    assert_eq!(block_calls(&f), 0, "nothing ran");
    for t in &traces {
        let recs = f.audit_for_trace("dev", t);
        assert!(
            recs.iter()
                .any(|r| r["reason_code"] == "approval_tampered" && r["decision"] == "deny"),
            "{recs:?}"
        );
    }

    // Approved, the genuine repeat runs the call once.
    let approved = common::http()
        .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
        .bearer_auth(f.token("dev", "sara", &["security_lead"]))
        .header("content-type", "application/json")
        .body(json!({"reason": "INC-1: block it"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    // Another caller's state still does not get past the check, approved or not.
    let r = stateless(&mallory, 20, "tools/call", call(&args, Some(&state)), None).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert_eq!(block_calls(&f), 0);
    let run = stateless(&ivan, 21, "tools/call", call(&args, Some(&state)), None).await;
    assert_eq!(run.body["result"]["isError"], json!(false), "{}", run.text);
    assert!(run.text.contains("blocked 192.0.2.0/24"), "{}", run.text);
    assert_eq!(block_calls(&f), 1);
    // Spent: the same state again opens a new request, and runs nothing.
    let again = stateless(&ivan, 22, "tools/call", call(&args, Some(&state)), None).await;
    assert_eq!(again.body["result"]["structuredContent"]["status"], "pending", "{}", again.text);
    assert_eq!(block_calls(&f), 1);
}
