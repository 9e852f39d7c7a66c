//! The embedded store: one SQLite file per environment, WAL with `synchronous=FULL`, so a
//! committed record survives a crash of the process or the machine. Also holds the
//! environment's approval queue, changed only inside the writer's transactions.

use std::path::Path;

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior, params};
use serde_json::Value;

use super::approval::{self, Binding, Request, RowKey, Status, Verdict, Vote};
use super::checkpoint::{Checkpoint, Signer};
use super::record::AuditRecord;
use super::record::GENESIS;
use super::store::{AuditReader, PagePosition, Reading, Search, StoreLock, StoredRow, Tallies};
use super::{AuditError, AuditStore, Committed, Done, Entry, unavailable};

pub(crate) struct SqliteStore {
    conn: Connection,
    env: String,
    /// Tells the checkpointer thread that a commit added WAL frames; dropping it with the
    /// store stops the thread.
    committed: Option<std::sync::mpsc::SyncSender<()>>,
    row_key: RowKey,
}

/// How long the checkpointer lets commits gather after the first one it hears of, before it
/// copies their WAL frames into the database file (a page written by many commits is copied
/// once).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Copies the WAL into the database file from its own connection and thread (`PASSIVE`: it
/// never blocks the writer), so that no commit waits behind a checkpoint. It sleeps until a
/// commit wakes it, so an idle gateway does no work. The writer still checkpoints by itself
/// if the WAL ever grows past `wal_autocheckpoint` (the thread could not keep up, or could
/// not start).
fn spawn_checkpointer(path: &Path) -> Option<std::sync::mpsc::SyncSender<()>> {
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) else {
        tracing::warn!("audit store: no checkpointer connection; the writer checkpoints inline");
        return None;
    };
    let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
    // One slot: commits made while a wake-up is pending need no second one.
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new().name("audit-checkpoint".into()).spawn(move || {
        // Ends when the store, and with it the sender, is dropped.
        while rx.recv().is_ok() {
            std::thread::sleep(CHECKPOINT_EVERY);
            // The commits made during the sleep are in this checkpoint.
            let _ = rx.try_recv();
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!("audit checkpoint of the WAL deferred: {e}");
            }
        }
    });
    if spawned.is_err() {
        tracing::warn!("audit store: no checkpointer thread; the writer checkpoints inline");
        return None;
    }
    Some(tx)
}

impl SqliteStore {
    pub(crate) fn open(path: &Path, env: &str, row_key: RowKey) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=2000;
             CREATE TABLE IF NOT EXISTS audit (
                seq INTEGER PRIMARY KEY,
                ts TEXT NOT NULL,
                env TEXT NOT NULL,
                trace_id TEXT NOT NULL,
                decision TEXT NOT NULL,
                reason_code TEXT NOT NULL,
                tool TEXT,
                subject TEXT,
                record TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS checkpoints (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                seq INTEGER NOT NULL,
                checkpoint TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS approvals (
                id TEXT PRIMARY KEY,
                env TEXT NOT NULL,
                tool TEXT NOT NULL,
                requester_iss TEXT NOT NULL,
                requester_sub TEXT NOT NULL,
                args_digest TEXT NOT NULL,
                contract_digest TEXT NOT NULL,
                args TEXT NOT NULL,
                side_effects TEXT NOT NULL,
                approver_roles TEXT NOT NULL,
                required INTEGER NOT NULL,
                trace_id TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                expires_ms INTEGER NOT NULL,
                status TEXT NOT NULL,
                updated_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS approvals_binding ON approvals(requester_sub, tool, args_digest);
             CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status, expires_ms);
             CREATE TABLE IF NOT EXISTS approval_votes (
                approval_id TEXT NOT NULL,
                approver_iss TEXT NOT NULL,
                approver_sub TEXT NOT NULL,
                verdict TEXT NOT NULL,
                reason TEXT NOT NULL,
                at_ms INTEGER NOT NULL,
                PRIMARY KEY (approval_id, approver_iss, approver_sub)
             );",
        )
        .map_err(unavailable)?;
        migrate_approval_column(&conn).map_err(unavailable)?;
        // SQLite's own busy handler sleeps 1, 2, 5, … up to 100 ms per retry: a writer that
        // meets the checkpointer or another gateway process on a lock for a moment would
        // hold every waiting call for that long. Retry in steps of 100 µs instead, up to the
        // same 2 s (after which the batch fails and its calls are refused).
        conn.busy_handler(Some(short_busy_wait)).map_err(unavailable)?;
        // INVARIANT: a store belongs to one environment for its whole life.
        let owner: Option<String> = conn.query_row("SELECT value FROM meta WHERE key='env'", [], |r| r.get(0)).ok();
        match owner {
            Some(o) if o != env => {
                return Err(unavailable(format!(
                    "store `{}` belongs to environment `{o}`, not `{env}`",
                    path.display()
                )));
            }
            Some(_) => {}
            None => {
                conn.execute("INSERT INTO meta(key, value) VALUES ('env', ?1)", params![env])
                    .map_err(unavailable)?;
            }
        }
        seal_unsealed_rows(&conn, &row_key)?;
        let committed = spawn_checkpointer(path);
        Ok(Self {
            conn,
            env: env.to_string(),
            committed,
            row_key,
        })
    }

    /// One transaction for the whole batch. `BEGIN IMMEDIATE` takes the write lock up
    /// front and the head is read inside it, so several gateway processes sharing this file
    /// extend one linear chain and see each other's approval state.
    fn try_commit(&mut self, entries: &mut [Entry]) -> Result<Committed, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let (seq, prev) = head_of(&tx)?;
        let head_before = seq;
        let mut chain = Chain {
            tx: &tx,
            env: &self.env,
            seq,
            prev,
            written: Vec::new(),
            noted: Vec::new(),
            row_key: &self.row_key,
        };
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries.iter_mut() {
            results.push(match entry {
                Entry::Record(r) => Done::Seq(chain.append_in_place(r)?),
                Entry::Approval(op) => Done::Approval(approval::apply(&mut chain, op)?),
                // Another process may have recorded the outcome meanwhile: then nothing.
                Entry::OutcomeOnce(r) => match r.outcome.as_ref().and_then(|o| o.decision_record) {
                    Some(allow) if !outcome_exists(chain.tx, allow)? => Done::Seq(chain.append_in_place(r)?),
                    _ => Done::Skipped,
                },
            });
        }
        let head_after = chain.seq;
        let written = std::mem::take(&mut chain.written);
        let noted = std::mem::take(&mut chain.noted);
        drop(chain);
        tx.commit().map_err(unavailable)?;
        if let Some(c) = &self.committed {
            // Full: a wake-up is already pending. Gone: the writer checkpoints inline.
            let _ = c.try_send(());
        }
        Ok(Committed {
            results,
            written,
            noted,
            head_before,
            head_after,
        })
    }
}

/// The chain's end inside one transaction, and the approval table of the same transaction.
struct Chain<'a> {
    tx: &'a Transaction<'a>,
    env: &'a str,
    seq: u64,
    prev: String,
    written: Vec<crate::metrics::Tally>,
    noted: Vec<crate::telemetry::Noted>,
    /// Seals every approval row this transaction changes; checks every one it reads.
    row_key: &'a RowKey,
}

const REQUEST_COLUMNS: &str = "id, env, tool, requester_iss, requester_sub, args_digest, contract_digest, args, side_effects, approver_roles, required, trace_id, created_ms, expires_ms, status";

/// A row as read: the request, and the MAC stored with it.
type Sealed = (Request, Option<String>);

fn request_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Sealed> {
    let text = |i: usize| r.get::<_, String>(i);
    let args: String = text(7)?;
    let roles: String = text(9)?;
    let status: String = text(14)?;
    let request = Request {
        id: text(0)?,
        binding: Binding {
            env: text(1)?,
            tool: text(2)?,
            requester_iss: text(3)?,
            requester_sub: text(4)?,
            args_digest: text(5)?,
            contract_digest: text(6)?,
        },
        args: serde_json::from_str(&args).unwrap_or(Value::Null),
        side_effects: text(8)?,
        approver_roles: serde_json::from_str(&roles).unwrap_or_default(),
        required: r.get::<_, u32>(10)?,
        trace_id: text(11)?,
        created_ms: r.get(12)?,
        expires_ms: r.get(13)?,
        // An unknown status can only come from outside the gateway: treat it as used up.
        status: Status::parse(&status).unwrap_or(Status::Expired),
        votes: Vec::new(),
        // Not known until the votes are read and the MAC compared (`checked`).
        intact: false,
    };
    Ok((request, r.get(15)?))
}

fn with_votes(conn: &Connection, mut reqs: Vec<Sealed>) -> rusqlite::Result<Vec<Sealed>> {
    let mut stmt = conn.prepare_cached(
        "SELECT approver_iss, approver_sub, verdict, reason, at_ms FROM approval_votes WHERE approval_id = ?1 ORDER BY at_ms, rowid",
    )?;
    for (req, _) in &mut reqs {
        req.votes = stmt
            .query_map([&req.id], |r| {
                Ok(Vote {
                    approver_iss: r.get(0)?,
                    approver_sub: r.get(1)?,
                    // Anything but an approval counts as a denial: it never releases a request.
                    verdict: Verdict::parse(&r.get::<_, String>(2)?).unwrap_or(Verdict::Deny),
                    reason: r.get(3)?,
                    at_ms: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(reqs)
}

fn query_sealed(conn: &Connection, condition: &str, params: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<Vec<Sealed>> {
    query_rows(conn, "mac", condition, params)
}

/// `mac`: the column the MAC is read from (`NULL` for a store made before there was one).
fn query_rows(conn: &Connection, mac: &str, condition: &str, params: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<Vec<Sealed>> {
    let sql = format!("SELECT {REQUEST_COLUMNS}, {mac} FROM approvals WHERE {condition}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let reqs = stmt.query_map(params, request_from_row)?.collect::<Result<Vec<_>, _>>()?;
    with_votes(conn, reqs)
}

/// The requests as read, each marked intact only if its row's MAC is right.
fn checked(rows: Vec<Sealed>, key: &RowKey) -> Vec<Request> {
    rows.into_iter()
        .map(|(mut req, mac)| {
            req.intact = mac.is_some_and(|m| m == key.mac(&req));
            req
        })
        .collect()
}

/// Requests as a reader without the row key sees them: their integrity not checked.
fn query_requests(conn: &Connection, condition: &str, params: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<Vec<Request>> {
    Ok(query_sealed(conn, condition, params)?.into_iter().map(|(r, _)| r).collect())
}

/// Seals the row of request `id` as it now stands.
fn reseal(conn: &Connection, id: &str, key: &RowKey) -> Result<(), AuditError> {
    let rows = query_sealed(conn, "id = ?1", &[&id]).map_err(unavailable)?;
    for (req, _) in rows {
        conn.execute("UPDATE approvals SET mac = ?2 WHERE id = ?1", params![req.id, key.mac(&req)])
            .map_err(unavailable)?;
    }
    Ok(())
}

/// 20,000 retries of 100 µs: about 2 s, SQLite's `busy_timeout` of this store before.
fn short_busy_wait(retries: i32) -> bool {
    if retries >= 20_000 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_micros(100));
    true
}

/// Every record that belongs to an approval request carries its id in an indexed column, so
/// the console can show a request's whole trail. The index is partial (approval records
/// only): a full index on a random key (the trace ID, as stores before this one had) dirtied
/// a different page for nearly every record and was the largest cost of each commit.
fn migrate_approval_column(conn: &Connection) -> rusqlite::Result<()> {
    // Looked at inside the write lock: several gateway processes may open one store at once.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    if !has_approval_column(&tx)? {
        tx.execute_batch(
            "ALTER TABLE audit ADD COLUMN approval_id TEXT;
             UPDATE audit SET approval_id = json_extract(record, '$.approval.id')
               WHERE json_extract(record, '$.approval.id') IS NOT NULL;",
        )?;
    }
    tx.commit()?;
    conn.execute_batch(
        "DROP INDEX IF EXISTS audit_trace;
         CREATE INDEX IF NOT EXISTS audit_approval ON audit(approval_id) WHERE approval_id IS NOT NULL;
         PRAGMA wal_autocheckpoint = 16000;",
    )
}

/// Approval rows carry a MAC since this store version: the rows of a store opened for the
/// first time by it are sealed as they are, once (a later row without a MAC is a row made
/// outside the gateway, and fails its check).
fn seal_unsealed_rows(conn: &Connection, key: &RowKey) -> Result<(), AuditError> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(unavailable)?;
    let has_mac = tx
        .prepare("SELECT 1 FROM pragma_table_info('approvals') WHERE name = 'mac'")
        .and_then(|mut s| s.exists([]))
        .map_err(unavailable)?;
    if !has_mac {
        tx.execute_batch("ALTER TABLE approvals ADD COLUMN mac TEXT").map_err(unavailable)?;
    }
    let sealed: bool = tx
        .query_row("SELECT 1 FROM meta WHERE key = 'approval_mac'", [], |_| Ok(()))
        .is_ok();
    if !sealed {
        let ids: Vec<String> = tx
            .prepare("SELECT id FROM approvals")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(unavailable)?;
        for id in ids {
            reseal(&tx, &id, key)?;
        }
        tx.execute("INSERT INTO meta(key, value) VALUES ('approval_mac', 'v1')", [])
            .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)
}

fn has_approval_column(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = 'approval_id'")?
        .exists([])
}

/// Read at the start of every commit (another process may have appended): the statement
/// is cached, as compiling it cost more than the rest of the read (callgrind).
fn head_of(conn: &Connection) -> Result<(u64, String), AuditError> {
    conn.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))))
        .map(|(s, h)| (u64::try_from(s).unwrap_or(0), h))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_string())),
            other => Err(other),
        })
        .map_err(unavailable)
}

impl approval::Table for Chain<'_> {
    fn find_open(&mut self, b: &Binding, now_ms: i64) -> Result<Option<Request>, AuditError> {
        let found = query_sealed(
            self.tx,
            "env = ?1 AND tool = ?2 AND requester_iss = ?3 AND requester_sub = ?4 AND args_digest = ?5 AND contract_digest = ?6
             AND status IN ('pending', 'approved', 'denied') AND expires_ms > ?7 ORDER BY created_ms DESC, rowid DESC LIMIT 1",
            &[
                &b.env,
                &b.tool,
                &b.requester_iss,
                &b.requester_sub,
                &b.args_digest,
                &b.contract_digest,
                &now_ms,
            ],
        )
        .map_err(unavailable)?;
        Ok(checked(found, self.row_key).into_iter().next())
    }

    fn get(&mut self, env: &str, id: &str) -> Result<Option<Request>, AuditError> {
        let found = query_sealed(self.tx, "env = ?1 AND id = ?2", &[&env, &id]).map_err(unavailable)?;
        Ok(checked(found, self.row_key).into_iter().next())
    }

    fn count_open(&mut self, env: &str, iss: &str, sub: &str, now_ms: i64) -> Result<usize, AuditError> {
        let n: i64 = self
            .tx
            .prepare_cached(
                "SELECT COUNT(*) FROM approvals WHERE requester_sub = ?3 AND requester_iss = ?2 AND env = ?1
                 AND status IN ('pending', 'approved') AND expires_ms > ?4",
            )
            .and_then(|mut s| s.query_row(params![env, iss, sub, now_ms], |r| r.get(0)))
            .map_err(unavailable)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn insert(&mut self, q: &Request) -> Result<(), AuditError> {
        let b = &q.binding;
        self.tx
            .prepare_cached(&format!(
                "INSERT INTO approvals ({REQUEST_COLUMNS}, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?13)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    q.id,
                    b.env,
                    b.tool,
                    b.requester_iss,
                    b.requester_sub,
                    b.args_digest,
                    b.contract_digest,
                    q.args.to_string(),
                    q.side_effects,
                    serde_json::to_string(&q.approver_roles).unwrap_or_else(|_| "[]".into()),
                    q.required,
                    q.trace_id,
                    q.created_ms,
                    q.expires_ms,
                    q.status.as_str()
                ])
            })
            .map_err(unavailable)?;
        reseal(self.tx, &q.id, self.row_key)
    }

    fn set_status(&mut self, id: &str, status: Status, now_ms: i64) -> Result<(), AuditError> {
        self.tx
            .execute(
                "UPDATE approvals SET status = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id, status.as_str(), now_ms],
            )
            .map_err(unavailable)?;
        reseal(self.tx, id, self.row_key)
    }

    fn add_vote(&mut self, id: &str, v: &Vote) -> Result<(), AuditError> {
        let verdict = v.verdict.as_str();
        self.tx
            .execute(
                "INSERT INTO approval_votes (approval_id, approver_iss, approver_sub, verdict, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, v.approver_iss, v.approver_sub, verdict, v.reason, v.at_ms],
            )
            .map_err(unavailable)?;
        reseal(self.tx, id, self.row_key)
    }

    fn due(&mut self, now_ms: i64) -> Result<Vec<Request>, AuditError> {
        let due = query_sealed(
            self.tx,
            "status IN ('pending', 'approved') AND expires_ms <= ?1 ORDER BY expires_ms",
            &[&now_ms],
        )
        .map_err(unavailable)?;
        Ok(checked(due, self.row_key))
    }

    fn append(&mut self, mut r: AuditRecord) -> Result<u64, AuditError> {
        self.append_in_place(&mut r)
    }
}

impl Chain<'_> {
    /// Chains `r` after the head (setting its `seq`, `env`, `prev_hash` and `hash`) and
    /// inserts it; a record whose transaction fails can be chained again in the next.
    fn append_in_place(&mut self, r: &mut AuditRecord) -> Result<u64, AuditError> {
        self.seq += 1;
        r.seq = self.seq;
        r.env = self.env.to_string();
        r.prev_hash.clone_from(&self.prev);
        let json = r.seal().map_err(unavailable)?;
        self.tx
            .prepare_cached(
                "INSERT INTO audit (seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash, approval_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    i64::try_from(r.seq).unwrap_or(i64::MAX),
                    r.ts,
                    r.env,
                    r.trace_id.as_str(),
                    r.decision.as_str(),
                    r.reason_code.as_str(),
                    r.tool,
                    r.principal.as_ref().map(|p| p.sub.as_str()),
                    json,
                    r.prev_hash,
                    r.hash,
                    r.approval.as_ref().map(|a| a.id.as_str())
                ])
            })
            .map_err(unavailable)?;
        self.prev.clone_from(&r.hash);
        self.written.push(r.tally());
        self.noted.extend(r.noted());
        Ok(self.seq)
    }
}

/// Whether a record after `allow` names it as the decision its outcome describes.
fn outcome_exists(conn: &Connection, allow: u64) -> Result<bool, AuditError> {
    let allow = i64::try_from(allow).map_err(unavailable)?;
    conn.prepare_cached(
        "SELECT 1 FROM audit WHERE seq > ?1 AND reason_code IN ('executed', 'backend_error', 'outcome_unknown')
         AND json_extract(record, '$.outcome.decision_record') = ?1 LIMIT 1",
    )
    .and_then(|mut stmt| stmt.exists([allow]))
    .map_err(unavailable)
}

impl AuditStore for SqliteStore {
    fn commit(&mut self, entries: &mut [Entry]) -> Result<Committed, AuditError> {
        self.try_commit(entries)
    }

    fn calls_after(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let after = i64::try_from(after).map_err(unavailable)?;
        let limit = i64::try_from(limit).map_err(unavailable)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT record FROM audit WHERE seq > ?1 AND reason_code IN ('allowed', 'executed', 'backend_error', 'outcome_unknown')
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(unavailable)?;
        let rows = stmt.query_map([after, limit], |r| r.get::<_, String>(0)).map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows {
            // A record that does not read is `audit verify`'s to report, not the sweep's.
            if let Ok(rec) = serde_json::from_str::<AuditRecord>(&row.map_err(unavailable)?) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    fn record_at(&mut self, seq: u64) -> Result<Option<AuditRecord>, AuditError> {
        let seq = i64::try_from(seq).map_err(unavailable)?;
        let text: Option<String> = self
            .conn
            .query_row("SELECT record FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(unavailable)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn head(&mut self) -> Result<(u64, String), AuditError> {
        head_of(&self.conn)
    }

    fn checkpoint(&mut self, signer: &Signer) -> Result<Option<Checkpoint>, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let (seq, hash) = head_of(&tx)?;
        let last: Option<Checkpoint> = tx
            .query_row("SELECT checkpoint FROM checkpoints ORDER BY id DESC LIMIT 1", [], |r| {
                r.get::<_, String>(0)
            })
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if seq == 0 || last.as_ref().is_some_and(|l| l.seq >= seq) {
            return Ok(None);
        }
        let cp = signer.sign_after(seq, &hash, last.as_ref().map(|l| l.ts.as_str()));
        let json = serde_json::to_string(&cp).map_err(unavailable)?;
        tx.execute(
            "INSERT INTO checkpoints (seq, checkpoint) VALUES (?1, ?2)",
            params![i64::try_from(cp.seq).map_err(unavailable)?, json],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Some(cp))
    }
}

/// Read access to one environment's store. The gateway's reader opens it read-write (it
/// shares the WAL with the writer); the commands' reader opens it read-only and refuses a
/// store that does not exist. Queries run off the async workers, one at a time.
pub(crate) struct SqliteReader {
    conn: Arc<Mutex<Connection>>,
    env: String,
}

impl SqliteReader {
    pub(crate) fn open(path: &Path, env: &str, read_only: bool) -> Result<Self, AuditError> {
        let conn = if read_only {
            if !path.is_file() {
                return Err(AuditError::Unreadable(format!("no audit store at `{}`", path.display())));
            }
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| AuditError::Unreadable(format!("cannot open `{}`: {e}", path.display())))?
        } else {
            let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(unavailable)?;
            c.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
            c
        };
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            env: env.to_string(),
        })
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&Connection, &str) -> rusqlite::Result<T> + Send + 'static) -> Reading<'static, T> {
        let conn = self.conn.clone();
        let env = self.env.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let c = conn.lock().map_err(|_| unavailable("the audit reader is poisoned"))?;
                f(&c, &env).map_err(|e| AuditError::Unreadable(e.to_string()))
            })
            .await
            .map_err(unavailable)?
        })
    }
}

impl AuditReader for SqliteReader {
    fn records(&self, after: i64) -> Reading<'_, Vec<StoredRow>> {
        self.with(move |c, _| read_records(c, after))
    }

    fn checkpoints(&self) -> Reading<'_, Vec<Result<Checkpoint, String>>> {
        self.with(|c, _| {
            let mut stmt = c.prepare("SELECT checkpoint FROM checkpoints ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row?).map_err(|e| format!("unreadable checkpoint: {e}")));
            }
            Ok(out)
        })
    }

    fn approvals(&self, status: Option<Status>, before: Option<PagePosition>, limit: u32) -> Reading<'_, Vec<Request>> {
        // Past any real position when none is given: the first page.
        let (ms, id) = before.map_or((i64::MAX, String::new()), |p| (p.created_ms, p.id));
        self.with(move |c, env| {
            let status = status.map(Status::as_str);
            query_requests(
                c,
                "env = ?1 AND (?2 IS NULL OR status = ?2) AND (created_ms < ?3 OR (created_ms = ?3 AND id < ?4))
                 ORDER BY created_ms DESC, id DESC LIMIT ?5",
                &[&env, &status, &ms, &id, &limit],
            )
        })
    }

    fn search(&self, q: &Search) -> Reading<'_, Vec<StoredRow>> {
        let q = q.clone();
        self.with(move |c, env| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM audit WHERE env = ?1 AND substr(ts, 1, 19) >= ?2 AND substr(ts, 1, 19) < ?3
                 AND (?4 IS NULL OR decision = ?4) AND (?5 IS NULL OR reason_code = ?5) AND (?6 IS NULL OR tool = ?6)
                 AND (?7 IS NULL OR subject = ?7) AND (?8 IS NULL OR trace_id = ?8) AND seq < ?9
                 ORDER BY seq DESC LIMIT ?10"
            ))?;
            let rows = stmt.query_map(
                params![
                    env,
                    q.from,
                    q.to,
                    q.decision,
                    q.reason_code,
                    q.tool,
                    q.caller,
                    q.trace_id,
                    q.before.unwrap_or(i64::MAX),
                    q.limit
                ],
                stored_row,
            )?;
            rows.collect()
        })
    }

    fn rows_between(&self, first: i64, last: i64) -> Reading<'_, Vec<StoredRow>> {
        self.with(move |c, _| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM audit WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq"
            ))?;
            let rows = stmt.query_map(params![first, last], stored_row)?;
            rows.collect()
        })
    }

    fn tallies(&self, from: &str, to: &str) -> Reading<'_, Tallies> {
        let (from, to) = (from.to_string(), to.to_string());
        self.with(move |c, env| {
            let within = "env = ?1 AND substr(ts, 1, 19) >= ?2 AND substr(ts, 1, 19) < ?3 AND reason_code <> 'executed'";
            let mut t = Tallies::default();
            let mut stmt = c.prepare_cached(&format!(
                "SELECT substr(ts, 1, 16) AS minute, decision, COUNT(*) FROM audit WHERE {within} GROUP BY minute, decision ORDER BY minute"
            ))?;
            for row in stmt.query_map(params![env, from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?)))? {
                let (m, d, n) = row?;
                t.per_minute.push((m, d, u64::try_from(n).unwrap_or(0)));
            }
            for (column, into) in [("reason_code", &mut t.reason_codes), ("subject", &mut t.callers)] {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {column}, COUNT(*) AS n FROM audit WHERE {within} AND {column} IS NOT NULL GROUP BY {column} ORDER BY n DESC, {column} LIMIT 10"
                ))?;
                for row in stmt.query_map(params![env, from, to], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?)))? {
                    let (k, n) = row?;
                    into.push((k, u64::try_from(n).unwrap_or(0)));
                }
            }
            Ok(t)
        })
    }

    fn approval_counts(&self, now_ms: i64) -> Reading<'_, Vec<(String, u64)>> {
        self.with(move |c, env| {
            let mut stmt = c.prepare_cached(
                "SELECT CASE WHEN status = 'pending' AND expires_ms <= ?2 THEN 'expired' ELSE status END AS state, COUNT(*)
                 FROM approvals WHERE env = ?1 GROUP BY state",
            )?;
            let rows = stmt.query_map(params![env, now_ms], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            rows.map(|r| r.map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))).collect()
        })
    }

    fn approval(&self, id: &str) -> Reading<'_, Option<Request>> {
        let id = id.to_string();
        self.with(move |c, env| Ok(query_requests(c, "env = ?1 AND id = ?2", &[&env, &id])?.into_iter().next()))
    }

    fn approval_rows(&self) -> Reading<'_, Vec<(Request, Option<String>)>> {
        // A store no gateway of this version has opened has no MACs: every row reads unsealed.
        self.with(|c, env| {
            let has_mac = c
                .prepare("SELECT 1 FROM pragma_table_info('approvals') WHERE name = 'mac'")?
                .exists([])?;
            query_rows(c, if has_mac { "mac" } else { "NULL" }, "env = ?1 ORDER BY created_ms", &[&env])
        })
    }

    fn trail(&self, approval_id: &str) -> Reading<'_, Vec<AuditRecord>> {
        let id = approval_id.to_string();
        self.with(move |c, _| {
            let mut stmt =
                c.prepare_cached("SELECT record FROM audit WHERE approval_id = ?1 AND approval_id IS NOT NULL ORDER BY seq LIMIT 500")?;
            let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                if let Ok(rec) = serde_json::from_str::<AuditRecord>(&row?) {
                    out.push(rec);
                }
            }
            Ok(out)
        })
    }
}

/// Every record row in sequence order, from `after` on (exclusive).
/// The columns [`stored_row`] reads, for a store this version has opened (the explorer's
/// reads are the running gateway's, which migrated it).
const ROW_COLUMNS: &str = "seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash, approval_id";

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        seq: r.get(0)?,
        columns: [
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(11)?,
        ],
        record: r.get(8)?,
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

fn read_records(conn: &Connection, after: i64) -> rusqlite::Result<Vec<StoredRow>> {
    // Readers may open a store no gateway of this version has opened yet (an archived log,
    // say), which has no `approval_id` column: its value is then read from the record
    // itself, which is what the column holds once the gateway has migrated it.
    let approval_id = if has_approval_column(conn)? {
        "approval_id"
    } else {
        "json_extract(record, '$.approval.id')"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash, {approval_id} FROM audit WHERE seq > ?1 ORDER BY seq"
    ))?;
    let rows = stmt.query_map([after], stored_row)?;
    rows.collect()
}

/// `BEGIN EXCLUSIVE` on a connection of its own: every other connection's write fails with
/// "database is locked" until it is dropped.
pub(crate) struct ExclusiveLock(Connection);

impl ExclusiveLock {
    pub(crate) fn take(path: &Path) -> Result<Self, AuditError> {
        let conn = Connection::open(path).map_err(|e| AuditError::Unreadable(format!("cannot open the store: {e}")))?;
        conn.execute_batch("BEGIN EXCLUSIVE")
            .map_err(|e| AuditError::Unreadable(format!("cannot lock the store: {e}")))?;
        Ok(Self(conn))
    }
}

impl Drop for ExclusiveLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

impl StoreLock for ExclusiveLock {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record;

    /// The checkpointer, woken by commits, copies them into the database file; the writer,
    /// which would otherwise do it inline only once the WAL holds 1000 pages, does not.
    #[test]
    fn commits_reach_the_database_file_by_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut store = SqliteStore::open(&path, "t", RowKey::derive(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]))).unwrap();
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        // Opening wrote the schema, and nothing woke the checkpointer yet.
        std::thread::sleep(CHECKPOINT_EVERY * 3);
        let before = size();
        let mut entries: Vec<Entry> = (0..20)
            .map(|i| Entry::Record(Box::new(record::tests::blank("t", &format!("{i:032x}")))))
            .collect();
        assert_eq!(store.commit(&mut entries).unwrap().written.len(), 20);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while size() <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(size() > before, "the database file did not grow: {} bytes", size());
    }
}
