//! Golden files for what a client and an auditor see: one scripted session against the real
//! binary (every kind of refusal on HTTP and stdio, an allowed call, an approval from request
//! to release, an upstream failure, the approvals API's refusals), with each answer's status,
//! headers and body and every audit record compared to `tests/golden/`, after only the values
//! that differ between runs (trace and session IDs, times, ports, hashes over times) are
//! replaced by placeholders.
//!
//! A refactoring of the inside must leave these files unchanged. After an intended change of
//! the outside, `UPDATE_GOLDEN=1 cargo test --test golden` rewrites them; the diff is then
//! part of the review.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "integration tests: a failed expectation is a panic"
)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Replaces what differs between runs with placeholders; everything else is kept as it was.
fn normalize(text: &str) -> String {
    let rules = [
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "<time>"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
        (r"jti-([a-z]+)-\d+", "jti-$1-<n>"),
        (r#""(\w+_ms)":\d{13}"#, r#""$1":"<ms>""#),
        (r"\b[0-9a-f]{32}\b", "<trace>"),
        (r"00-<trace>-[0-9a-f]{16}-01", "<traceparent>"),
        // A sealed state holds a time and an id of its own.
        (r#""requestState":"rs1\.[A-Za-z0-9_.-]+""#, r#""requestState":"<sealed>""#),
    ];
    let mut out = text.to_string();
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern).unwrap().replace_all(&out, with).into_owned();
    }
    out
}

/// Compares `actual` with `tests/golden/NAME`, or writes it there with `UPDATE_GOLDEN=1`.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no golden file {}: run with UPDATE_GOLDEN=1", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from this run, first at line {}:\n  golden: {}\n  actual: {}",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("(end)"),
            actual.lines().nth(first).unwrap_or("(end)")
        );
    }
}

/// One exchange as the golden file shows it: what was sent, and status, the headers a
/// client acts on, and the body.
struct Transcript(String);

const HEADERS: [&str; 6] = [
    "content-type",
    "www-authenticate",
    "cache-control",
    "content-security-policy",
    "mcp-session-id",
    "x-capgate-trace-id",
];

impl Transcript {
    fn add(&mut self, what: &str, status: u16, headers: &reqwest::header::HeaderMap, body: &str) {
        self.0.push_str(&format!("### {what}\nstatus: {status}\n"));
        for h in HEADERS {
            if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
                self.0.push_str(&format!("{h}: {v}\n"));
            }
        }
        self.0.push_str(&format!("body: {}\n\n", body.trim_end()));
    }

    fn reply(&mut self, what: &str, r: &Reply) {
        self.add(what, r.status, &r.headers, &r.text);
    }

    fn raw(&mut self, what: &str, response: &str) {
        self.0
            .push_str(&format!("### {what}\n{}\n\n", response.replace("\r\n", "\n").trim_end()));
    }
}

/// The records as stored (canonical JSON), with the fields that differ between runs
/// replaced; one line each.
fn records_text(f: &Fixture, env: &str) -> String {
    let conn = rusqlite::Connection::open(f.audit_db(env)).unwrap();
    let mut stmt = conn.prepare("SELECT record FROM audit ORDER BY seq").unwrap();
    let rows: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect();
    let mut out = String::new();
    for row in rows {
        let mut v: Value = serde_json::from_str(&row).unwrap();
        // Hashes cover times: stable only in shape.
        for k in ["hash", "prev_hash"] {
            assert_eq!(v[k].as_str().unwrap().len(), 64);
            v[k] = json!("<hash>");
        }
        if v["outcome"].is_object() {
            assert!(v["outcome"]["latency_ms"].as_f64().unwrap() >= 0.0);
            v["outcome"]["latency_ms"] = json!(0.0);
        }
        out.push_str(&normalize(&v.to_string()));
        out.push('\n');
    }
    out
}

/// A raw HTTP/1.1 exchange, for requests reqwest will not send as written.
async fn raw(base: &str, request: &str) -> String {
    let text = raw_http(base, request, Duration::from_secs(5)).await;
    // The status line, the headers a client acts on, and the body; not `date` nor the length.
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let mut kept = vec![lines.next().unwrap_or("").to_string()];
    for l in lines {
        let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        if HEADERS.contains(&name.as_str()) {
            kept.push(l.to_string());
        }
    }
    format!("{}\n{}", kept.join("\n"), body)
}

async fn post(url: &str, token: Option<&str>, headers: &[(&str, &str)], body: String) -> Reply {
    let mut m = Mcp::new(url, token.map(str::to_string));
    m.http = http();
    m.send(body, headers).await
}

async fn api(base: &str, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = http().request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn answers_and_records_over_http_are_as_recorded() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &["dev"]);
    let url = gw.url("dev").to_string();
    let base = gw.base("dev");
    let mut t = Transcript(String::new());
    let call = |id: i64, tool: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string()
    };

    // Before authentication.
    let r = post(&url, None, &[("host", "evil.example")], call(1, "list_tickets", json!({}))).await;
    t.reply("foreign Host", &r);
    let r = post(
        &url,
        None,
        &[("origin", "https://evil.example")],
        call(1, "list_tickets", json!({})),
    )
    .await;
    t.reply("foreign Origin", &r);
    let r = post(&format!("{url}?access_token=abc"), None, &[], call(1, "list_tickets", json!({}))).await;
    t.reply("token in the query string", &r);
    let big = format!(
        "POST /mcp HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(100)
    );
    t.raw("declared body over the limit", &raw(&base, &big).await);
    let chunked = format!(
        "POST /mcp HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n11170\r\n{}\r\n0\r\n\r\n",
        "y".repeat(70000)
    );
    t.raw("streamed body over the limit", &raw(&base, &chunked).await);
    let r = post(&url, None, &[], call(1, "create_ticket", json!({"title": "t"}))).await;
    t.reply("no token", &r);
    let r = post(&url, Some("not.a.token"), &[], call(7, "create_ticket", json!({"title": "t"}))).await;
    t.reply("malformed token (the record names the tool)", &r);
    let mut claims = f.claims("dev", "alice", &["oncall"]);
    claims["exp"] = json!(now() - 3600);
    let r = post(&url, Some(&f.sign("dev", &claims)), &[], call(1, "list_tickets", json!({}))).await;
    t.reply("expired token", &r);
    let mut claims = f.claims("dev", "alice", &["oncall"]);
    claims["aud"] = json!(audience("stage"));
    let r = post(&url, Some(&f.sign("dev", &claims)), &[], call(1, "list_tickets", json!({}))).await;
    t.reply("another environment's audience", &r);

    // Authenticated, before MCP.
    let oncall = f.token("dev", "alice", &["oncall"]);
    let r = post(&url, Some(&oncall), &[], "{\"jsonrpc\": \"2.0\", ".into()).await;
    t.reply("malformed JSON", &r);
    let r = post(
        &url,
        Some(&oncall),
        &[],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"create_ticket","arguments":{"title":"a","title":"b"}}}"#.into(),
    )
    .await;
    t.reply("duplicate key", &r);
    let mallory = Mcp::open(&url, &f.token("dev", "mallory", &["oncall"])).await;
    let r = post(
        &url,
        Some(&oncall),
        &[("mcp-session-id", mallory.session.as_deref().unwrap())],
        call(1, "list_tickets", json!({})),
    )
    .await;
    t.reply("another identity's session", &r);
    let r = post(
        &url,
        Some(&oncall),
        &[("mcp-session-id", "no-such-session")],
        call(1, "list_tickets", json!({})),
    )
    .await;
    t.reply("a session never opened", &r);

    // MCP: lists, refusals and calls.
    let mut viewer = Mcp::open(&url, &f.token("dev", "val", &["viewer"])).await;
    t.reply("tools/list as viewer", &viewer.rpc("tools/list", json!({})).await);
    t.reply("unknown tool", &viewer.call("no_such_tool", json!({})).await);
    t.reply(
        "forbidden tool",
        &viewer.call("create_ticket", json!({"title": "x", "severity": "low"})).await,
    );
    let mut alice = Mcp::open(&url, &oncall).await;
    t.reply(
        "invalid arguments",
        &alice
            .call(
                "create_ticket",
                json!({"title": "", "severity": "urgent", "extra": 1, "queue": "X"}),
            )
            .await,
    );
    t.reply(
        "allowed call",
        &alice
            .call(
                "create_ticket",
                json!({"title": "suspicious login", "severity": "high", "reporter_email": "a@b.example"}),
            )
            .await,
    );
    f.audit("dev");
    t.reply(
        "upstream result holding a credential",
        &alice.call("leaky_diagnostics", json!({})).await,
    );
    f.audit("dev");
    t.reply("upstream failure", &alice.call("leaky_diagnostics", json!({"fail": true})).await);
    f.audit("dev");
    let mut ivan = Mcp::open(&url, &f.token("dev", "ivan", &["incident_commander"])).await;
    for n in 1..=3 {
        let r = ivan.call("list_firewall_blocks", json!({})).await;
        f.audit("dev");
        t.reply(&format!("rate-limited tool, call {n}"), &r);
    }

    // Approval: requested, refused decisions, approved, released once.
    let block = json!({"ip": "203.0.113.0/24", "ttl_minutes": 60});
    let r = ivan.call("create_firewall_block", block.clone()).await;
    t.reply("call needing approval", &r);
    let id = r.body["result"]["structuredContent"]["approval_id"].as_str().unwrap().to_string();
    let lead = f.token("dev", "sam", &["security_lead"]);
    let ivan_token = ivan.token.clone().unwrap();
    let (s, h, b) = api(&base, None, "GET", "/api/approvals", None).await;
    t.add("approvals API without a token", s, &h, &b);
    let (s, h, b) = api(&base, Some(&lead), "GET", "/api/approvals?status=pending", None).await;
    t.add("approvals API: the pending list", s, &h, &b);
    let (s, h, b) = api(&base, Some(&lead), "GET", "/api/approvals?colour=red", None).await;
    t.add("approvals API: unknown query parameter", s, &h, &b);
    let (s, h, b) = api(
        &base,
        Some(&ivan_token),
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(json!({"reason": "mine"})),
    )
    .await;
    t.add("the requester approving", s, &h, &b);
    let (s, h, b) = api(
        &base,
        Some(&oncall),
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(json!({"reason": "me"})),
    )
    .await;
    t.add("a non-approver approving", s, &h, &b);
    let (s, h, b) = api(
        &base,
        Some(&lead),
        "POST",
        "/api/approvals/7a0e1c6e-0000-4000-8000-000000000000/approve",
        Some(json!({"reason": "x"})),
    )
    .await;
    t.add("approving an unknown id", s, &h, &b);
    let (s, h, b) = api(
        &base,
        Some(&lead),
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(json!({"reason": "ok", "approver": "u-carol"})),
    )
    .await;
    t.add("approving with an unknown body field", s, &h, &b);
    let (s, h, b) = api(
        &base,
        Some(&lead),
        "POST",
        &format!("/api/approvals/{id}/approve"),
        Some(json!({"reason": "INC-1042"})),
    )
    .await;
    t.add("approved", s, &h, &b);
    let (s, h, b) = api(
        &base,
        Some(&lead),
        "POST",
        &format!("/api/approvals/{id}/deny"),
        Some(json!({"reason": "too late"})),
    )
    .await;
    t.add("deciding twice", s, &h, &b);
    let r = ivan.call("create_firewall_block", block.clone()).await;
    f.audit("dev");
    t.reply("the identical call, approved", &r);
    let r = ivan.call("create_firewall_block", block).await;
    t.reply("the identical call again", &r);

    // Ending a session, then the store unwritable.
    let del = http()
        .delete(&url)
        .bearer_auth(&ivan_token)
        .header("mcp-session-id", ivan.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let (s, h) = (del.status().as_u16(), del.headers().clone());
    t.add("DELETE of a session", s, &h, &del.text().await.unwrap());
    f.audit("dev");
    let records = records_text(&f, "dev");
    {
        let lock = rusqlite::Connection::open(f.audit_db("dev")).unwrap();
        lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let r = post(&url, None, &[], call(1, "list_tickets", json!({}))).await;
        t.reply("no token while the store is unwritable", &r);
        t.reply(
            "an allowed call while the store is unwritable",
            &alice.call("list_tickets", json!({})).await,
        );
        lock.execute_batch("ROLLBACK").unwrap();
    }

    golden("http-answers.txt", &normalize(&t.0));
    golden("http-records.jsonl", &records);
    let (code, ocsf, err) = f.audit_cli(&["export", "--env", "dev", "--format", "ocsf"]);
    assert_eq!(code, 0, "{err}");
    let ocsf: String = ocsf
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["metadata"]["uid"] = json!("<hash>");
            v["unmapped"]["prev_hash"] = json!("<hash>");
            if v["unmapped"]["outcome"].is_object() {
                v["unmapped"]["outcome"]["latency_ms"] = json!(0.0);
            }
            let time = v["time"].as_i64().unwrap();
            assert!(time > 1_700_000_000_000, "{time}");
            v["time"] = json!(0);
            if v["src_endpoint"]["port"].is_u64() {
                v["src_endpoint"]["port"] = json!(0);
            }
            normalize(&v.to_string()) + "\n"
        })
        .collect();
    golden("http-records.ocsf.jsonl", &ocsf);
    drop(gw);
}

#[test]
fn answers_and_records_over_stdio_are_as_recorded() {
    let f = Fixture::new("");
    let token = f.token("dev", "alice", &["oncall"]);
    let mut child = Command::new(bin())
        .args(["serve", "--stdio", "--env", "dev", "--config"])
        .arg(f.config())
        .env("CAPGATE_TOKEN", &token)
        .env("CAPGATE_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "golden", "version": "1"}}}).to_string(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        "{\"jsonrpc\": \"2.0\",".to_string(),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_ticket","arguments":{"title":"a","title":"b"}}}"#.to_string(),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}", "z".repeat(70_000)),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}}).to_string(),
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "create_ticket", "arguments": {"title": "x"}}}).to_string(),
        json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "create_ticket", "arguments": {"title": "x", "severity": "low"}}}).to_string(),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut out = String::new();
    for line in &lines {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        if line.contains("notifications/") {
            continue;
        }
        let answer = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let shown: String = line.chars().take(120).collect();
        out.push_str(&format!("### {shown}\n{answer}\n\n"));
    }
    drop(stdin);
    let _ = child.wait();
    golden("stdio-answers.txt", &normalize(&out));
    golden("stdio-records.jsonl", &records_text(&f, "dev"));
}
