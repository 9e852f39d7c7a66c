//! The audit log end to end: write-ahead records from the real binary, then direct tampering
//! with the SQLite file, a store made unwritable mid-run, a crash under load, and the export
//! and tail readers.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup or unwrap is a test failure"
)]

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::*;
use rusqlite::{Connection, params};
use serde_json::{Value, json};

const CHECKPOINTS: &str = "data/dev-checkpoints.jsonl";

fn with_external_checkpoints(f: &Fixture) {
    let text = std::fs::read_to_string(f.config()).unwrap();
    let text = text.replacen(
        "signing_key = \"keys/dev-audit.pem\"",
        &format!("signing_key = \"keys/dev-audit.pem\"\ncheckpoint_file = \"{CHECKPOINTS}\"\ncheckpoint_interval = \"1s\""),
        1,
    );
    std::fs::write(f.config(), text).unwrap();
}

/// A mix of decisions: allowed, pending, bad arguments, forbidden, unauthenticated.
async fn traffic(f: &Fixture, gw: &Gateway) {
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    alice
        .call(
            "create_ticket",
            json!({"title": "a", "severity": "low", "reporter_email": "alice@corp.example"}),
        )
        .await;
    alice.call("create_ticket", json!({"title": "", "severity": "low"})).await;
    alice
        .call("create_firewall_block", json!({"ip": "10.0.0.0/8", "ttl_minutes": 5}))
        .await;
    let mut ivan = Mcp::open(gw.url("dev"), &f.token("dev", "ivan", &["incident_commander"])).await;
    ivan.call("create_firewall_block", json!({"ip": "10.0.0.0/8", "ttl_minutes": 5}))
        .await;
    Mcp::new(gw.url("dev"), None)
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(), &[])
        .await;
    alice.call("list_tickets", json!({})).await;
}

fn copy_store(f: &Fixture, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let from = f.path().join(format!("data/dev-audit.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, to.join(format!("dev-audit.db{suffix}"))).unwrap();
        }
    }
}

/// Verifies a tampered copy of the store, by pointing a copy of the config at it.
fn verify_copy(f: &Fixture, tamper: impl FnOnce(&Connection), external: Option<&Path>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_store(f, dir.path());
    {
        let conn = Connection::open(dir.path().join("dev-audit.db")).unwrap();
        tamper(&conn);
    }
    let cfg = std::fs::read_to_string(f.config()).unwrap().replace(
        "sqlite://data/dev-audit.db",
        &format!("sqlite://{}", dir.path().join("dev-audit.db").display()),
    );
    let cfg_path = f.path().join("tampered.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["audit", "verify", "--env", "dev", "--config"]).arg(&cfg_path);
    let external_copy = dir.path().join("external.jsonl");
    match external {
        Some(p) => {
            std::fs::copy(p, &external_copy).unwrap();
        }
        None => std::fs::write(&external_copy, "").unwrap(),
    }
    cmd.arg("--checkpoints").arg(&external_copy);
    let out = cmd.output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn record_of(conn: &Connection, seq: i64) -> Value {
    serde_json::from_str(
        &conn
            .query_row("SELECT record FROM audit WHERE seq = ?1", [seq], |r| r.get::<_, String>(0))
            .unwrap(),
    )
    .unwrap()
}

fn rows(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn an_untouched_log_verifies_and_every_kind_of_tampering_is_named() {
    let f = Fixture::new("");
    with_external_checkpoints(&f);
    let gw = Gateway::start(&f.config(), &ENVS);
    traffic(&f, &gw).await;
    assert!(gw.terminate().success());
    // A restart continues the same chain.
    let gw = Gateway::start(&f.config(), &ENVS);
    traffic(&f, &gw).await;
    assert!(gw.terminate().success());

    let (code, out, err) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: environment `dev`: "), "{out}");
    let external = f.path().join(CHECKPOINTS);
    let ext_lines = std::fs::read_to_string(&external).unwrap();
    assert!(ext_lines.lines().count() >= 2, "a checkpoint per clean stop at least: {ext_lines}");
    let n = rows(&Connection::open(f.audit_db("dev")).unwrap());
    assert!(n >= 16, "{n} records");
    let deny_seq = {
        let conn = Connection::open(f.audit_db("dev")).unwrap();
        conn.query_row(
            "SELECT seq FROM audit WHERE decision = 'deny' ORDER BY seq LIMIT 1 OFFSET 1",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let k = deny_seq;

    type Tamper = Box<dyn Fn(&Connection)>;
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "edit a field of the record",
            Box::new(move |c| {
                c.execute(
                    "UPDATE audit SET record = replace(record, '\"decision\":\"deny\"', '\"decision\":\"allow\"') WHERE seq = ?1",
                    [k],
                )
                .unwrap();
            }),
            format!("record #{k} was edited"),
        ),
        (
            "edit an indexed column only",
            Box::new(move |c| {
                c.execute("UPDATE audit SET decision = 'allow' WHERE seq = ?1", [k]).unwrap();
            }),
            format!("record #{k} was edited: column `decision`"),
        ),
        (
            "edit and re-hash the record",
            Box::new(move |c| {
                // An attacker who recomputes the hash still breaks the link to the next record.
                let mut rec = record_of(c, k);
                rec["decision"] = json!("allow");
                rec["reason_code"] = json!("allowed");
                let mut body = rec.clone();
                body.as_object_mut().unwrap().remove("hash");
                let hash = capgate::canonical::sha256_hex(capgate::canonical::canonical_json(&body).as_bytes());
                rec["hash"] = json!(hash);
                c.execute(
                    "UPDATE audit SET record = ?1, hash = ?2, decision = 'allow', reason_code = 'allowed' WHERE seq = ?3",
                    params![rec.to_string(), hash, k],
                )
                .unwrap();
            }),
            format!("record #{} does not follow record #{k}", k + 1),
        ),
        (
            "delete a record",
            Box::new(move |c| {
                c.execute("DELETE FROM audit WHERE seq = ?1", [k]).unwrap();
            }),
            format!("record #{k} is missing"),
        ),
        (
            "swap two records",
            Box::new(move |c| {
                c.execute("UPDATE audit SET seq = -1 WHERE seq = ?1", [k]).unwrap();
                c.execute("UPDATE audit SET seq = ?1 WHERE seq = ?2", [k, k + 1]).unwrap();
                c.execute("UPDATE audit SET seq = ?1 WHERE seq = -1", [k + 1]).unwrap();
            }),
            format!("record #{k} was moved"),
        ),
        (
            "insert a forged record",
            Box::new(move |c| {
                c.execute("UPDATE audit SET seq = seq + 100000 WHERE seq >= ?1", [k]).unwrap();
                c.execute("UPDATE audit SET seq = seq - 99999 WHERE seq >= 100000", []).unwrap();
                let prev: String = c.query_row("SELECT hash FROM audit WHERE seq = ?1", [k - 1], |r| r.get(0)).unwrap();
                let mut forged = record_of(c, k + 1);
                forged["seq"] = json!(k);
                forged["prev_hash"] = json!(prev);
                forged["reason"] = json!("forged");
                let mut body = forged.clone();
                body.as_object_mut().unwrap().remove("hash");
                let hash = capgate::canonical::sha256_hex(capgate::canonical::canonical_json(&body).as_bytes());
                forged["hash"] = json!(hash);
                c.execute(
                    "INSERT INTO audit (seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash)
                     SELECT ?1, ts, env, trace_id, decision, reason_code, tool, subject, ?2, ?3, ?4 FROM audit WHERE seq = ?5",
                    params![k, forged.to_string(), prev, hash, k + 1],
                )
                .unwrap();
            }),
            format!("record #{} was moved", k + 1),
        ),
        (
            "drop the tail",
            Box::new(move |c| {
                c.execute("DELETE FROM audit WHERE seq > ?1", [n - 3]).unwrap();
            }),
            format!("the log is truncated: a stored checkpoint covers record #{n}"),
        ),
        (
            "forge a stored checkpoint",
            Box::new(|c| {
                c.execute(
                    "UPDATE checkpoints SET checkpoint = replace(checkpoint, '\"seq\":', '\"seq\":1') WHERE id = 1",
                    [],
                )
                .unwrap();
            }),
            "no valid signature".to_string(),
        ),
    ];
    for (name, tamper, expected) in cases {
        let (code, out) = verify_copy(&f, tamper, None);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(&expected), "{name}: expected `{expected}` in: {out}");
    }
    // Dropping the tail together with the stored checkpoints: the external copy still knows.
    let (code, out) = verify_copy(
        &f,
        move |c| {
            c.execute("DELETE FROM audit WHERE seq > ?1", [n - 3]).unwrap();
            c.execute("DELETE FROM checkpoints", []).unwrap();
        },
        Some(&external),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("an external checkpoint covers record #{n}")), "{out}");
    // And without the external copy that truncation would go unseen: the copy is what makes it detectable.
    let (code, _) = verify_copy(
        &f,
        move |c| {
            c.execute("DELETE FROM audit WHERE seq > ?1", [n - 3]).unwrap();
            c.execute("DELETE FROM checkpoints", []).unwrap();
        },
        None,
    );
    assert_eq!(code, 0);
    // A verifier holding only the public key gets the same answer.
    let (code, out, _) = f.audit_cli(&[
        "verify",
        "--env",
        "dev",
        "--public-key",
        f.path().join("keys/dev-audit.pub.pem").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = f.audit_cli(&[
        "verify",
        "--env",
        "dev",
        "--public-key",
        f.path().join("keys/stage-audit.pub.pem").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "another environment's key must not verify: {out}");
}

#[tokio::test]
async fn a_store_written_before_the_approval_column_still_verifies_and_exports() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    traffic(&f, &gw).await;
    assert!(gw.terminate().success());
    let approval_rows = |c: &Connection| -> i64 {
        c.query_row(
            "SELECT COUNT(*) FROM audit WHERE json_extract(record, '$.approval.id') IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(
        approval_rows(&Connection::open(f.audit_db("dev")).unwrap()) > 0,
        "the traffic holds approval records"
    );
    // The schema of stores written before `approval_id`: no column, a full trace index.
    // Readers open stores read-only, so they meet this schema as it is.
    let (code, out) = verify_copy(
        &f,
        |c| {
            c.execute_batch(
                "DROP INDEX audit_approval; ALTER TABLE audit DROP COLUMN approval_id; CREATE INDEX audit_trace ON audit(trace_id);",
            )
            .unwrap();
        },
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: environment `dev`: "), "{out}");
    // In a store that has the column, the column is checked against the hashed record.
    let (code, out) = verify_copy(
        &f,
        |c| {
            c.execute("UPDATE audit SET approval_id = 'another' WHERE approval_id IS NOT NULL", [])
                .unwrap();
        },
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("column `approval_id` differs from the hashed record"), "{out}");
}

#[tokio::test]
async fn checkpoints_are_signed_on_an_interval_while_running() {
    let f = Fixture::new("");
    with_external_checkpoints(&f);
    let gw = Gateway::start(&f.config(), &ENVS);
    traffic(&f, &gw).await;
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let lines = std::fs::read_to_string(f.path().join(CHECKPOINTS)).unwrap_or_default();
    assert!(!lines.is_empty(), "no checkpoint after the interval");
    let cp: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(cp["env"], "dev");
    let head: i64 = Connection::open(f.audit_db("dev"))
        .unwrap()
        .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cp["seq"].as_i64(), Some(head));
    let m = get(format!("{}/metrics", gw.base("dev"))).await.text().await.unwrap();
    assert!(m.contains("capgate_audit_checkpoints_total{env=\"dev\"} 1"), "{m}");
}

#[tokio::test]
async fn an_unwritable_store_refuses_every_call_and_nothing_executes() {
    let f = Fixture::new("");
    // One authentication failure a minute: the second unauthenticated request below is over
    // the budget, whose refusals are recorded through the unhurried path.
    f.set_in_env("dev", "auth_failure_limit = \"1/min\"");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    assert_eq!(alice.call("list_tickets", json!({})).await.body["result"]["isError"], json!(false));
    assert_eq!(f.calls("dev").len(), 1);

    // Another process takes the store's write lock and keeps it: every write now fails.
    let blocker = Connection::open(f.audit_db("dev")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = alice
        .call("create_ticket", json!({"title": "while the store is down", "severity": "high"}))
        .await;
    assert_eq!(r.error_code(), Some(-32003), "{}", r.text);
    assert_eq!(r.body["error"]["data"]["reason_code"], "audit_unavailable");
    assert_eq!(r.body["error"]["data"]["http_status"], 503);
    let pending = {
        let mut ivan = Mcp::new(gw.url("dev"), Some(f.token("dev", "ivan", &["incident_commander"])));
        ivan.session = alice.session.clone();
        ivan.call("create_firewall_block", json!({"ip": "10.0.0.0/8", "ttl_minutes": 5}))
            .await
    };
    assert_ne!(
        pending.status, 200,
        "a foreign session is refused first, and that refusal cannot be recorded either"
    );
    for budget in ["within", "over"] {
        let unauth = Mcp::new(gw.url("dev"), None).send("{}".into(), &[]).await;
        assert_eq!(
            unauth.status, 503,
            "an unrecordable refusal is answered 503 ({budget} the failure budget): {}",
            unauth.text
        );
    }
    let ready = get(format!("{}/readyz", gw.base("dev"))).await;
    assert_eq!(ready.status(), 503);
    assert_eq!(f.calls("dev").len(), 1, "nothing may execute while the log cannot be written");

    // The store comes back: calls work again, and the chain is whole.
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    let r = alice
        .call("create_ticket", json!({"title": "after recovery", "severity": "low"}))
        .await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(f.calls("dev").len(), 2);
    assert!(gw.terminate().success());
    let (code, out, _) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn exports_carry_every_forensic_field_and_no_secret() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    traffic(&f, &gw).await;
    let token = f.token("dev", "alice", &["oncall"]);
    let (code, jsonl, _) = f.audit_cli(&["export", "--env", "dev", "--format", "jsonl"]);
    assert_eq!(code, 0);
    let (code, ocsf, _) = f.audit_cli(&["export", "--env", "dev", "--format", "ocsf"]);
    assert_eq!(code, 0);
    let db = std::fs::read(f.audit_db("dev")).unwrap();
    let wal = std::fs::read(f.path().join("data/dev-audit.db-wal")).unwrap_or_default();
    for (name, text) in [
        ("jsonl", jsonl.clone()),
        ("ocsf", ocsf.clone()),
        ("db", String::from_utf8_lossy(&db).into_owned()),
        ("wal", String::from_utf8_lossy(&wal).into_owned()),
    ] {
        assert!(!text.contains("alice@corp.example"), "{name}: a sensitive argument in clear");
        assert!(!text.contains(&token[token.len() - 40..]), "{name}: a token");
        assert!(!text.contains("upstream-secret"), "{name}: a backend credential");
    }
    let records: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fields = [
        "seq",
        "ts",
        "env",
        "trace_id",
        "request_id",
        "session_id",
        "principal",
        "client",
        "tool",
        "args_digest",
        "args",
        "decision",
        "reason_code",
        "reason",
        "contract_digest",
        "approval",
        "outcome",
        "prev_hash",
        "hash",
    ];
    // Besides SPEC section 6's fields, a record names the JSON-RPC method where the request
    // named one, and the policy where a policy set decided; nothing else.
    let optional = ["method", "policy"];
    for r in &records {
        let keys: HashSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        let required: HashSet<&str> = fields.iter().copied().collect();
        assert!(required.is_subset(&keys), "{r}");
        assert!(keys.iter().all(|k| required.contains(k) || optional.contains(k)), "{r}");
    }
    // A denied request's record alone is enough for a forensic review.
    let denied = records.iter().find(|r| r["reason_code"] == "arguments_invalid").unwrap();
    assert_eq!(denied["principal"]["sub"], "alice");
    assert_eq!(denied["principal"]["roles"], json!(["oncall"]));
    assert!(denied["principal"]["token_id"].as_str().unwrap().starts_with("jti-alice"));
    assert_eq!(denied["tool"], "create_ticket");
    assert_eq!(denied["args"], json!({"title": "", "severity": "low"}));
    assert_eq!(denied["args_digest"].as_str().unwrap().len(), 64);
    assert_eq!(denied["contract_digest"].as_str().unwrap().len(), 64);
    assert!(denied["client"]["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(denied["session_id"].as_str().is_some() && denied["request_id"].as_str().is_some());
    assert!(denied["reason"].as_str().unwrap().contains("`title`"));
    let unauth = records.iter().find(|r| r["reason_code"] == "token_missing").unwrap();
    assert_eq!(unauth["principal"], Value::Null);
    let allowed = records.iter().find(|r| r["reason_code"] == "allowed").unwrap();
    assert_eq!(allowed["args"]["reporter_email"], "[redacted]");
    let events: Vec<Value> = ocsf.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), records.len());
    assert!(events.iter().all(|e| e["class_uid"] == 6003 && e["type_uid"] == 600399));
    let blocked = events.iter().find(|e| e["status_code"] == "arguments_invalid").unwrap();
    assert_eq!(
        (blocked["disposition"].as_str(), blocked["actor"]["user"]["uid"].as_str()),
        (Some("Blocked"), Some("alice"))
    );
    assert_eq!(blocked["metadata"]["correlation_uid"], denied["trace_id"]);
}

#[tokio::test]
async fn tail_filters_and_escapes_what_an_argument_could_inject() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    let evil = "x\u{1b}[2J\u{1b}[31mFAKE\n#999 allow allowed tool=purge_all_tickets";
    let r = alice.call("create_ticket", json!({"title": evil, "severity": "low"})).await;
    assert_eq!(r.error_code(), Some(-32602));
    alice.call("list_tickets", json!({})).await;
    let (code, out, _) = f.audit_cli(&["tail", "--env", "dev", "-n", "50"]);
    assert_eq!(code, 0);
    assert!(!out.contains('\u{1b}'), "a raw escape reached the terminal");
    assert_eq!(
        out.lines().count(),
        3,
        "one line per record, the injected newline is escaped: {out}"
    );
    assert!(out.contains("\\u001b[2J"), "the escape is shown, escaped: {out}");
    let (_, out, _) = f.audit_cli(&["tail", "--env", "dev", "--decision", "deny"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, out, _) = f.audit_cli(&["tail", "--env", "dev", "--tool", "list_tickets", "--subject", "alice"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = f.audit_cli(&["tail", "--env", "dev", "--trace", &r.trace()]);
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_under_concurrent_load_leaves_every_executed_call_recorded() {
    let f = Fixture::new("");
    let mut gw = Gateway::start(&f.config(), &ENVS);
    let url = gw.url("dev").to_string();
    let mut clients = Vec::new();
    for i in 0..32 {
        let mcp = Mcp::open(&url, &f.token("dev", &format!("user{i}"), &["oncall"])).await;
        clients.push(mcp);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for mcp in clients {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "create_ticket", "arguments": {"title": "load", "severity": "low"}}}).to_string();
                let sent = mcp.http.post(&mcp.url).bearer_auth(mcp.token.as_deref().unwrap()).header("mcp-session-id", mcp.session.as_deref().unwrap())
                    .header("content-type", "application/json").header("accept", "application/json, text/event-stream").body(body).send().await;
                match sent {
                    Ok(_) => ok += 1,
                    Err(_) => break,
                }
            }
            ok
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    gw.child.kill().unwrap(); // SIGKILL: no shutdown, no final checkpoint
    gw.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let executed: Vec<String> = f
        .calls("dev")
        .iter()
        .map(|c| c["meta"]["traceparent"].as_str().unwrap().split('-').nth(1).unwrap().to_string())
        .collect();
    assert!(
        executed.len() > 20,
        "too little load to mean anything: {} executed, {sent} sent",
        executed.len()
    );
    let allowed: HashSet<String> = f
        .audit("dev")
        .into_iter()
        .filter(|r| r["reason_code"] == "allowed")
        .map(|r| r["trace_id"].as_str().unwrap().to_string())
        .collect();
    for t in &executed {
        assert!(
            allowed.contains(t),
            "call {t} reached the upstream without a durable decision record"
        );
    }
    let (code, out, err) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "the chain must survive SIGKILL: {out}{err}");
    eprintln!("crash test: {} calls executed, all with their decision record", executed.len());
}
