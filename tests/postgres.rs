//! Replicas sharing one PostgreSQL store (SPEC §8): one gap-free chain under concurrent
//! load, a replica killed mid-load, the database stopped and started under load, approvals
//! requested, decided and released through different replicas (and raced), append-only
//! records, the schema's version, `check`'s refusals and warnings, and the operator's
//! commands (`audit export | tail | verify`, `approvals`, `probe --simulate-outage`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failure is a test failure"
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::{self, Schema};
use common::*;
use serde_json::{Value, json};

/// The trace ID of a call the canary received (from the `traceparent` the gateway sent).
fn canary_trace(call: &Value) -> String {
    let tp = call["meta"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent: {call}"));
    tp.split('-').nth(1).unwrap().to_string()
}

/// The chain as the auditor checks it: `audit verify` passes, `seq` runs 1..=n without a
/// gap, and every call the canary received has exactly one allow record and exactly one
/// outcome record naming it.
fn check_chain(f: &Fixture, records: &[Value]) {
    let (code, out, err) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "audit verify: {out}{err}");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>(), "seq has a gap or repeats");
    let mut allows: HashMap<String, Vec<u64>> = HashMap::new();
    let mut outcomes: HashMap<u64, usize> = HashMap::new();
    for r in records {
        if r["reason_code"] == "allowed" {
            allows
                .entry(r["trace_id"].as_str().unwrap().to_string())
                .or_default()
                .push(r["seq"].as_u64().unwrap());
        }
        if let Some(d) = r["outcome"]["decision_record"].as_u64() {
            *outcomes.entry(d).or_default() += 1;
        }
    }
    let calls = f.calls("dev");
    assert!(!calls.is_empty());
    for c in &calls {
        let trace = canary_trace(c);
        let seqs = allows
            .get(&trace)
            .unwrap_or_else(|| panic!("executed without an allow record: {c}"));
        assert_eq!(seqs.len(), 1, "{trace}: {} allow records", seqs.len());
        assert_eq!(
            outcomes.get(&seqs[0]).copied().unwrap_or(0),
            1,
            "{trace}: outcome records for allow #{}",
            seqs[0]
        );
    }
}

/// `clients` concurrent callers on each replica, `calls` each, mixing allowed calls with
/// refused ones (bad arguments, a tool the caller may not use). Returns how many calls of
/// each kind came back as what.
async fn load(f: &Fixture, urls: &[String], clients: usize, calls: usize, stop_on_error: bool) -> BTreeMap<String, usize> {
    let mut tasks = Vec::new();
    for (r, url) in urls.iter().enumerate() {
        for c in 0..clients {
            let oncall = f.token("dev", &format!("user-{r}-{c}"), &["oncall"]);
            let viewer = f.token("dev", &format!("viewer-{r}-{c}"), &["viewer"]);
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                let Some(mut m) = try_open(&url, &oncall).await else { return seen };
                let Some(mut v) = try_open(&url, &viewer).await else { return seen };
                for i in 0..calls {
                    let (who, tool, args, kind) = match i % 6 {
                        0..=2 => (
                            &mut m,
                            "create_ticket",
                            json!({"title": format!("t{i}"), "severity": "low"}),
                            "allowed",
                        ),
                        3 => (&mut m, "list_tickets", json!({}), "allowed"),
                        4 => (&mut m, "create_ticket", json!({"title": "", "severity": "bogus"}), "invalid"),
                        _ => (&mut v, "create_ticket", json!({"title": "x", "severity": "low"}), "forbidden"),
                    };
                    let outcome = match who.try_call(tool, args).await {
                        None => "gone".to_string(),
                        Some(r) if r.body["result"]["isError"] == json!(false) => "ok".to_string(),
                        Some(r) => match r.body["error"]["data"]["reason_code"].as_str() {
                            Some(code) => code.to_string(),
                            None => format!("status {}", r.status),
                        },
                    };
                    *seen.entry(format!("{kind} → {outcome}")).or_default() += 1;
                    if stop_on_error && outcome == "gone" {
                        break;
                    }
                }
                seen
            }));
        }
    }
    let mut total = BTreeMap::new();
    for t in tasks {
        for (k, n) in t.await.unwrap() {
            *total.entry(k).or_default() += n;
        }
    }
    total
}

async fn try_open(url: &str, token: &str) -> Option<Mcp> {
    let mut m = Mcp::new(url, Some(token.to_string()));
    let r = m
        .try_send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).to_string(),
            &[],
        )
        .await
        .ok()?;
    m.session = r.header("mcp-session-id").map(str::to_string);
    m.try_send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(), &[])
        .await
        .ok()?;
    m.session.is_some().then_some(m)
}

fn replicas(f: &Fixture, n: usize) -> Vec<Gateway> {
    (0..n)
        .map(|_| Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_under_load_write_one_gap_free_chain() {
    let f = Fixture::new("");
    let schema = Schema::new();
    pg::use_postgres(&f, "dev", &schema, "postgres", None);
    let gws = replicas(&f, 3);
    let urls: Vec<String> = gws.iter().map(|g| g.url("dev").to_string()).collect();
    let seen = load(&f, &urls, 4, 180, false).await;
    // 3 replicas × 4 clients × 180 calls: 2,160 calls, 1,440 of them allowed.
    assert_eq!(seen.get("allowed → ok"), Some(&1440), "{seen:?}");
    assert_eq!(seen.get("invalid → arguments_invalid"), Some(&360), "{seen:?}");
    assert_eq!(seen.get("forbidden → tool_not_available"), Some(&360), "{seen:?}");
    for g in gws {
        assert!(g.terminate().success());
    }
    let records = schema.records();
    // Every call's decision, every allowed call's outcome, the sessions' refusals none.
    assert!(records.len() >= 2160 + 1440, "{} records", records.len());
    check_chain(&f, &records);
    assert_eq!(f.calls("dev").len(), 1440);
    // Checkpoints: one per sequence number at most, never going back.
    let cps: Vec<u64> = schema
        .column(&format!("SELECT seq FROM {}.checkpoints ORDER BY seq", schema.name))
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(!cps.is_empty() && *cps.last().unwrap() == records.len() as u64, "{cps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_leaves_the_others_serving_and_the_chain_whole() {
    let f = Fixture::new("");
    let schema = Schema::new();
    pg::use_postgres(&f, "dev", &schema, "postgres", None);
    let mut gws = replicas(&f, 3);
    let urls: Vec<String> = gws.iter().map(|g| g.url("dev").to_string()).collect();
    let victim = gws.pop().unwrap();
    let (survivors, doomed) = (urls[..2].to_vec(), urls[2..].to_vec());
    let (f_ref, s_urls, d_urls) = (&f, survivors.clone(), doomed.clone());
    let kill = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Dropping a test gateway kills it: SIGKILL, no clean stop.
        drop(victim);
    };
    let (seen_survivors, seen_doomed, ()) = tokio::join!(load(f_ref, &s_urls, 3, 150, false), load(f_ref, &d_urls, 3, 150, true), kill);
    // The survivors answered every call as they should have.
    assert_eq!(seen_survivors.get("allowed → ok"), Some(&600), "{seen_survivors:?}");
    assert!(
        seen_doomed.keys().any(|k| k.ends_with("gone")),
        "the victim was not killed mid-load: {seen_doomed:?}"
    );
    // Calls the victim had allowed when it died get their recovery records from a survivor
    // (after the longest upstream timeout and a margin: 2 s + 3 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = schema.records();
        let allows = records.iter().filter(|r| r["reason_code"] == "allowed").count();
        let outcomes = records.iter().filter(|r| r["outcome"]["decision_record"].is_u64()).count();
        if allows == outcomes {
            break records;
        }
        assert!(Instant::now() < deadline, "{allows} allows, {outcomes} outcomes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for g in gws {
        assert!(g.terminate().success());
    }
    check_chain(&f, &schema.records());
    assert!(
        records
            .iter()
            .all(|r| r["reason_code"] != "outcome_unknown" || r["decision"] == "error")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_stopped_under_load_refuses_runs_nothing_and_serves_again_when_back() {
    let server = pg::Server::start();
    let f = Fixture::new("");
    f.rewrite(
        "store = \"sqlite://data/dev-audit.db\"",
        &format!(
            "store = \"postgres://postgres@127.0.0.1:{}/postgres?schema=capgate_dev&sslmode=verify-full&sslrootcert={}\"",
            server.port,
            server.ca().display()
        ),
    );
    pg::store_init(&f.config(), "dev", None);
    let gws = replicas(&f, 2);
    // The gateways' sessions are encrypted, and verified (verify-full): see pg_stat_ssl.
    let tls: Vec<String> = pg::column(
        &server.conninfo(),
        "SELECT ssl::text FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'capgate'",
    );
    assert!(!tls.is_empty() && tls.iter().all(|t| t == "true"), "{tls:?}");
    let urls: Vec<String> = gws.iter().map(|g| g.url("dev").to_string()).collect();
    let token = f.token("dev", "alice", &["oncall"]);
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Load that keeps going through the outage, on both replicas.
    let mut tasks = Vec::new();
    for url in &urls {
        for _ in 0..3 {
            let (url, token, running) = (url.clone(), token.clone(), running.clone());
            tasks.push(tokio::spawn(async move {
                let mut m = Mcp::open(&url, &token).await;
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                let mut i = 0;
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let r = m.call("create_ticket", json!({"title": format!("t{i}"), "severity": "low"})).await;
                    let what = if r.body["result"]["isError"] == json!(false) {
                        "ok".to_string()
                    } else {
                        format!("{} {}", r.status, r.body["error"]["data"]["reason_code"])
                    };
                    *seen.entry(what).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.stop();
    // In-flight calls had their allow records: they may still finish. Then nothing runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = f.calls("dev").len();
    let mut m = Mcp::open(&urls[0], &token).await;
    let refused = m.call("create_ticket", json!({"title": "while down", "severity": "low"})).await;
    assert_eq!(refused.error_code(), Some(-32003), "{}", refused.text);
    assert_eq!(refused.body["error"]["data"]["reason_code"], "audit_unavailable");
    let ready = get(format!("{}/readyz", gws[1].base("dev"))).await;
    assert_eq!(ready.status().as_u16(), 503);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.calls("dev").len(), during, "calls ran while the database was down");
    // Still answering, seconds into the outage (a listener that spun on its closed
    // connection once starved a replica of its threads).
    for g in &gws {
        let ready = tokio::time::timeout(Duration::from_secs(10), get(format!("{}/readyz", g.base("dev"))))
            .await
            .expect("a replica stopped answering while its database was down");
        assert_eq!(ready.status().as_u16(), 503);
    }
    server.resume();
    // Both replicas serve again by themselves.
    for url in &urls {
        let mut m = Mcp::open(url, &token).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = m.call("create_ticket", json!({"title": "after", "severity": "low"})).await;
            if r.body["result"]["isError"] == json!(false) {
                break;
            }
            assert!(Instant::now() < deadline, "{url} does not serve again: {}", r.text);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(format!("{}/readyz", gws[1].base("dev"))).await.status().as_u16() != 200 {
        assert!(Instant::now() < deadline, "not ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (k, n) in t.await.unwrap() {
            *total.entry(k).or_default() += n;
        }
    }
    assert!(
        total.contains_key("ok") && total.keys().any(|k| k.contains("audit_unavailable")),
        "{total:?}"
    );
    // Every call that ran has its allow and its outcome (kept through the outage, or
    // accounted for by a recovery record).
    let deadline = Instant::now() + Duration::from_secs(30);
    let schema_records = || -> Vec<Value> {
        pg::column(&server.conninfo(), "SELECT record FROM capgate_dev.records ORDER BY seq")
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect()
    };
    loop {
        let records = schema_records();
        let allows = records.iter().filter(|r| r["reason_code"] == "allowed").count();
        let outcomes = records.iter().filter(|r| r["outcome"]["decision_record"].is_u64()).count();
        if allows == outcomes {
            break;
        }
        assert!(Instant::now() < deadline, "{allows} allows, {outcomes} outcomes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for g in gws {
        assert!(g.terminate().success());
    }
    check_chain(&f, &schema_records());
}

/// Approves request `id` through `gw`'s approvals API as the holder of `token`.
async fn approve(gw: &Gateway, token: &str, id: &str, reason: &str) -> reqwest::Response {
    http()
        .post(format!("{}/api/approvals/{id}/approve", gw.base("dev")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(json!({"reason": reason}).to_string())
        .send()
        .await
        .unwrap()
}

/// Opens a request through `a`, decides it through `b`'s API, releases it through `c`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_cross_replicas_wake_waiting_calls_and_race_to_exactly_one_execution() {
    let f = Fixture::new("");
    let schema = Schema::new();
    pg::use_postgres(&f, "dev", &schema, "postgres", None);
    let gws = replicas(&f, 3);
    let ivan = f.token("dev", "ivan", &["incident_commander"]);
    let sam = f.token("dev", "sam", &["security_lead"]);
    let args = json!({"ip": "203.0.113.0/24", "ttl_minutes": 30});
    let mut a = Mcp::open(gws[0].url("dev"), &ivan).await;
    let opened = a.call("create_firewall_block", args.clone()).await;
    let id = opened.body["result"]["structuredContent"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(opened.body["result"]["structuredContent"]["status"], "pending", "{}", opened.text);

    // A call through replica A waits for the decision; it is taken through replica B, and
    // the wait ends on B's NOTIFY (this store is never polled), well before its deadline.
    let waiting = {
        let (url, ivan, args) = (gws[0].url("dev").to_string(), ivan.clone(), args.clone());
        tokio::spawn(async move {
            let mut w = Mcp::open(&url, &ivan).await;
            let started = Instant::now();
            let r = w
                .rpc(
                    "tools/call",
                    json!({"name": "create_firewall_block", "arguments": args, "_meta": {"capgate/approval_wait": 60}}),
                )
                .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let approved = approve(&gws[1], &sam, &id, "INC-7").await;
    assert_eq!(approved.status().as_u16(), 200, "{}", approved.text().await.unwrap());
    let (released, waited) = waiting.await.unwrap();
    assert_eq!(released.body["result"]["isError"], json!(false), "{}", released.text);
    assert!(waited < Duration::from_secs(30), "the wait was not woken: {waited:?}");
    assert_eq!(f.calls("dev").len(), 1);
    // The request is used up: calling again through C opens a new one, nothing runs.
    let mut c = Mcp::open(gws[2].url("dev"), &ivan).await;
    let again = c.call("create_firewall_block", args.clone()).await;
    assert_eq!(again.body["result"]["structuredContent"]["status"], "pending", "{}", again.text);
    assert_ne!(again.body["result"]["structuredContent"]["approval_id"], json!(id));

    // The race: a new request approved, then the identical call twelve times at once
    // through all three replicas. Exactly one runs.
    let args = json!({"ip": "198.51.100.0/24", "ttl_minutes": 30});
    let opened = c.call("create_firewall_block", args.clone()).await;
    let id = opened.body["result"]["structuredContent"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let approved = approve(&gws[0], &sam, &id, "INC-8").await;
    assert_eq!(approved.status().as_u16(), 200);
    let before = f.calls("dev").len();
    let mut racers = Vec::new();
    for i in 0..12 {
        let (url, ivan, args) = (gws[i % 3].url("dev").to_string(), ivan.clone(), args.clone());
        racers.push(tokio::spawn(async move {
            let mut m = Mcp::open(&url, &ivan).await;
            m.call("create_firewall_block", args).await
        }));
    }
    let mut ran = 0;
    for r in racers {
        let r = r.await.unwrap();
        if r.body["result"]["isError"] == json!(false) && r.body["result"]["structuredContent"]["status"].is_null() {
            ran += 1;
        }
    }
    assert_eq!(ran, 1, "executions answered");
    assert_eq!(f.calls("dev").len() - before, 1, "executions at the upstream");
    for g in gws {
        assert!(g.terminate().success());
    }
    let records = schema.records();
    let released = records
        .iter()
        .filter(|r| r["approval"]["id"] == json!(id) && r["reason_code"] == "allowed")
        .count();
    assert_eq!(released, 1);
    check_chain(&f, &records);
}

#[tokio::test]
async fn the_gateway_role_can_only_append_and_a_superusers_edit_is_detected() {
    let f = Fixture::new("");
    let schema = Schema::new();
    let role = pg::Role::new();
    pg::use_postgres(&f, "dev", &schema, &role.name, Some("postgres"));
    // As the gateway's role: serve, record.
    let gw = Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]);
    let mut m = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    assert_eq!(m.call("list_tickets", json!({})).await.body["result"]["isError"], json!(false));
    assert!(gw.terminate().success());
    let as_gateway = format!("host=127.0.0.1 port=5432 user={} dbname=test", role.name);
    for sql in [
        format!("UPDATE {}.records SET reason = 'x'", schema.name),
        format!("DELETE FROM {}.records", schema.name),
        format!("TRUNCATE {}.records", schema.name),
        format!("UPDATE {}.checkpoints SET checkpoint = 'x'", schema.name),
        format!("DROP TRIGGER records_append_only ON {}.records", schema.name),
    ] {
        let refused = pg::with_client(&as_gateway, move |rt, c| {
            rt.block_on(c.batch_execute(&sql)).err().map(|e| e.to_string())
        });
        assert!(refused.is_some(), "the gateway's role could change the log");
    }
    // Even the owner and the superuser meet the trigger.
    let by_superuser = std::panic::catch_unwind(|| schema.exec(&format!("UPDATE {}.records SET reason = 'x' WHERE seq = 1", schema.name)));
    assert!(by_superuser.is_err());
    // `check` as the gateway's role: no warning; as the superuser: a warning.
    let out = Command::new(bin()).args(["check", "--config"]).arg(f.config()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !stdout.contains("warning"), "{stdout}");
    // A superuser who switches the trigger off and edits a record: `audit verify` names it.
    schema.exec(&format!(
        "SET session_replication_role = replica; UPDATE {s}.records SET record = replace(record, 'alice', 'mallory') WHERE seq = 2; SET session_replication_role = origin;",
        s = schema.name
    ));
    let (code, out, _) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("#2"), "{out}");
    f.rewrite(&format!("postgres://{}@", role.name), "postgres://postgres@");
    let out = Command::new(bin()).args(["check", "--config"]).arg(f.config()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("warning") && stdout.contains("superuser"), "{stdout}");
}

#[test]
fn serve_refuses_a_schema_it_was_not_built_for_and_says_what_to_run() {
    let f = Fixture::new("");
    let schema = Schema::new();
    f.rewrite(
        "store = \"sqlite://data/dev-audit.db\"",
        &format!("store = \"postgres://postgres@127.0.0.1:5432/test?schema={}\"", schema.name),
    );
    let serve = || {
        Command::new(bin())
            .args(["serve", "--env", "dev", "--config"])
            .arg(f.config())
            .output()
            .unwrap()
    };
    let out = serve();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("capgate store init"), "{err}");
    pg::store_init(&f.config(), "dev", None);
    schema.exec(&format!(
        "UPDATE {}.meta SET value = '99' WHERE key = 'schema_version'",
        schema.name
    ));
    let err = String::from_utf8_lossy(&serve().stderr).into_owned();
    assert!(err.contains("version 99"), "{err}");
    schema.exec(&format!(
        "UPDATE {s}.meta SET value = '1' WHERE key = 'schema_version'; UPDATE {s}.meta SET value = 'prod' WHERE key = 'env'",
        s = schema.name
    ));
    let err = String::from_utf8_lossy(&serve().stderr).into_owned();
    assert!(err.contains("belongs to environment `prod`"), "{err}");
}

#[test]
fn check_refuses_environments_sharing_a_schema_or_database_credentials_and_never_shows_a_password() {
    let f = Fixture::new("");
    std::fs::write(f.path().join("pg-password"), "correct-horse-battery-staple\n").unwrap();
    let table = |schema: &str, user: &str| {
        format!(
            "[environment.audit.postgres]\nhost = \"127.0.0.1\"\ndbname = \"test\"\nuser = \"{user}\"\nschema = \"{schema}\"\npassword = {{ file = \"pg-password\" }}\n"
        )
    };
    for env in ["dev", "stage"] {
        f.rewrite(&format!("store = \"sqlite://data/{env}-audit.db\"\n"), "");
        f.rewrite(
            &format!("signing_key = \"keys/{env}-audit.pem\"\n"),
            &format!("signing_key = \"keys/{env}-audit.pem\"\n{}", table("shared", &format!("gw_{env}"))),
        );
    }
    let out = Command::new(bin())
        .args(["check", "--offline", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("shares its audit store with environment"), "{all}");
    assert!(all.contains("shares its audit database password"), "{all}");
    assert!(!all.contains("correct-horse"), "{all}");
    // A password in the URL is refused, and not echoed.
    let f = Fixture::new("");
    f.rewrite(
        "store = \"sqlite://data/dev-audit.db\"",
        "store = \"postgres://gw:hunter2-hunter2@127.0.0.1/test\"",
    );
    let out = Command::new(bin())
        .args(["check", "--offline", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("password") && !all.contains("hunter2"), "{all}");
}

/// What an operator runs against a gateway on PostgreSQL: `audit export`, `audit tail`,
/// `approvals`, and `probe --simulate-outage` (which locks the records table in a
/// transaction of its own and expects refusals).
#[tokio::test]
async fn export_tail_approvals_and_the_probe_work_against_postgresql() {
    let f = Fixture::new("");
    let schema = Schema::new();
    pg::use_postgres(&f, "dev", &schema, "postgres", None);
    let gw = Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]);
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let mut viewer = Mcp::open(gw.url("dev"), &f.token("dev", "vic", &["viewer"])).await;
    let ok = alice.call("create_ticket", json!({"title": "disk full", "severity": "low"})).await;
    assert_eq!(ok.body["result"]["isError"], json!(false), "{}", ok.text);
    let denied = viewer.call("create_ticket", json!({"title": "x", "severity": "low"})).await;
    assert_eq!(denied.error_code(), Some(-32602), "{}", denied.text);
    let mut ivan = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    let pending = ivan
        .call("create_firewall_block", json!({"ip": "203.0.113.0/24", "ttl_minutes": 60}))
        .await;
    let id = pending.body["result"]["structuredContent"]["approval_id"]
        .as_str()
        .expect("an approval id")
        .to_string();
    let executed_before = f.calls("dev").len();
    // Once the outcome record (committed after the answer) is in.
    let conninfo = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    let count = |code: &str| {
        pg::column(
            conninfo,
            &format!("SELECT count(*)::text FROM {}.records WHERE reason_code = '{code}'", schema.name),
        )[0]
        .clone()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("allowed") != count("executed") {
        assert!(Instant::now() < deadline, "the outcome record never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let audit = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("audit")
            .args(args)
            .arg("--config")
            .arg(f.config())
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // export: every stored record, in order, each as the chain holds it.
    let stored: Vec<String> = pg::column(conninfo, &format!("SELECT seq::text FROM {}.records ORDER BY seq", schema.name));
    let (code, out, err) = audit(&["export", "--env", "dev", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    let exported: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].to_string())
        .collect();
    assert_eq!(exported, stored);
    // tail: the last records, filtered.
    let (code, out, err) = audit(&["tail", "--env", "dev", "--decision", "deny"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("vic") && !out.contains("disk full"), "{out}");
    let (_, out, _) = audit(&["tail", "--env", "dev", "--trace", &pending.trace()]);
    assert!(out.contains("approval_required") || out.contains("pending"), "{out}");
    // metrics: the approval requests by state are the store's; decisions counted as written.
    let text = get(format!("{}/metrics", gw.base("dev"))).await.text().await.unwrap();
    for line in [
        "capgate_approval_requests{env=\"dev\",state=\"pending\"} 1",
        "capgate_approval_requests{env=\"dev\",state=\"approved\"} 0",
        "capgate_decisions_total{env=\"dev\",tool=\"create_ticket\",decision=\"allow\",reason_code=\"allowed\"} 1",
        "capgate_outcomes_total{env=\"dev\",tool=\"create_ticket\",decision=\"allow\",reason_code=\"executed\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    // The audit explorer's reads, from PostgreSQL: the search, the chart, one record's
    // links, the chain.
    let auditor = f.token("dev", "ada", &["auditor"]);
    let read = |path: &str| {
        let (url, token) = (format!("{}{path}", gw.base("dev")), auditor.clone());
        async move {
            let r = http().get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let denied_stored = pg::column(
        conninfo,
        &format!("SELECT count(*)::text FROM {}.records WHERE decision = 'deny'", schema.name),
    )[0]
    .clone();
    let found = read("/api/audit?decision=deny&limit=500").await;
    assert_eq!(found["records"].as_array().unwrap().len().to_string(), denied_stored);
    assert!(found["records"].as_array().unwrap().iter().all(|r| r["decision"] == "deny"));
    let of_trace = read(&format!("/api/audit?trace_id={}", pending.trace())).await;
    assert!(
        of_trace["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason_code"] == "approval_required")
    );
    let stats = read("/api/audit/stats").await;
    let pending_n: u64 = stats["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["pending"].as_u64().unwrap())
        .sum();
    assert_eq!(pending_n, 1, "{stats}");
    let one = read("/api/audit/records/2").await;
    assert_eq!(one["link"]["holds"], true, "{one}");
    assert_eq!(one["previous"]["seq"], 1);
    let chain = read("/api/audit/chain").await;
    assert_eq!(chain["ok"], true, "{chain}");
    // approvals: listed through the API the store backs.
    let lead = f.token("dev", "sara", &["security_lead"]);
    let out = Command::new(bin())
        .args(["approvals", "list", "--url", gw.url("dev")])
        .env("CAPGATE_TOKEN", &lead)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && listed.contains(&id) && listed.contains("ivan"), "{listed}");

    // The probe, with the store locked for a moment: every check passes, nothing runs.
    let out = Command::new(bin())
        .args([
            "probe",
            "--env",
            "dev",
            "--url",
            gw.url("dev"),
            "--simulate-outage",
            "--json",
            "--config",
        ])
        .arg(f.config())
        .env("CAPGATE_LOG", "error")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["outcome"] != "pass").collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "{failed:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for group in ["audit", "fallback"] {
        assert!(
            checks.iter().any(|c| c["group"] == group && c["outcome"] == "pass"),
            "no passing `{group}` check"
        );
    }
    assert_eq!(f.calls("dev").len(), executed_before, "the probe made something run");
    assert!(gw.terminate().success());
    let (code, out, _) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "{out}");
}
