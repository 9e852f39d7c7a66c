//! The embedded store: one SQLite file per environment, WAL with `synchronous=FULL`, so a
//! committed record survives a crash of the process or the machine.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use super::checkpoint::Checkpoint;
use super::record::AuditRecord;
use super::{AuditError, AuditStore, unavailable};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct SqliteStore {
    conn: Connection,
    env: String,
    head: Option<(u64, String)>,
}

impl SqliteStore {
    pub fn open(path: &Path, env: &str) -> Result<Self, AuditError> {
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
             CREATE INDEX IF NOT EXISTS audit_trace ON audit(trace_id);
             CREATE TABLE IF NOT EXISTS checkpoints (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                seq INTEGER NOT NULL,
                checkpoint TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .map_err(unavailable)?;
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
        Ok(Self {
            conn,
            env: env.to_string(),
            head: None,
        })
    }

    fn try_append(&mut self, records: &mut [AuditRecord]) -> Result<(), AuditError> {
        let (mut seq, mut prev) = self.head()?;
        let tx = self.conn.transaction().map_err(unavailable)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO audit (seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(unavailable)?;
            for r in records.iter_mut() {
                seq += 1;
                r.seq = seq;
                r.env.clone_from(&self.env);
                r.prev_hash = prev.clone();
                r.hash = r.compute_hash();
                let json = serde_json::to_string(&*r).map_err(unavailable)?;
                stmt.execute(params![
                    i64::try_from(seq).map_err(unavailable)?,
                    r.ts,
                    r.env,
                    r.trace_id,
                    r.decision,
                    r.reason_code,
                    r.tool,
                    r.principal.as_ref().map(|p| p.sub.clone()),
                    json,
                    r.prev_hash,
                    r.hash
                ])
                .map_err(unavailable)?;
                prev = r.hash.clone();
            }
        }
        tx.commit().map_err(unavailable)?;
        self.head = Some((seq, prev));
        Ok(())
    }
}

impl AuditStore for SqliteStore {
    fn append_batch(&mut self, records: &mut [AuditRecord]) -> Result<(), AuditError> {
        let result = self.try_append(records);
        if result.is_err() {
            // Re-read the head next time: the failed transaction left nothing behind.
            self.head = None;
        }
        result
    }

    fn head(&mut self) -> Result<(u64, String), AuditError> {
        if let Some(h) = &self.head {
            return Ok(h.clone());
        }
        let head = self
            .conn
            .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map(|(s, h)| (u64::try_from(s).unwrap_or(0), h))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_string())),
                other => Err(other),
            })
            .map_err(unavailable)?;
        self.head = Some(head.clone());
        Ok(head)
    }

    fn write_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), AuditError> {
        let json = serde_json::to_string(cp).map_err(unavailable)?;
        self.conn
            .execute(
                "INSERT INTO checkpoints (seq, checkpoint) VALUES (?1, ?2)",
                params![i64::try_from(cp.seq).map_err(unavailable)?, json],
            )
            .map_err(unavailable)?;
        Ok(())
    }
}

/// One row as stored: the indexed columns and the record text, for the verifier to compare.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: i64,
    pub columns: [Option<String>; 7],
    pub record: String,
    pub prev_hash: String,
    pub hash: String,
}

pub const COLUMN_NAMES: [&str; 7] = ["ts", "env", "trace_id", "decision", "reason_code", "tool", "subject"];

fn open_read(path: &Path) -> Result<Connection, String> {
    if !path.is_file() {
        return Err(format!("no audit store at `{}`", path.display()));
    }
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| format!("cannot open `{}`: {e}", path.display()))
}

/// Every record row in sequence order, from `after` on (exclusive).
pub fn read_records(path: &Path, after: i64) -> Result<Vec<Row>, String> {
    let conn = open_read(path)?;
    let mut stmt = conn
        .prepare("SELECT seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([after], |r| {
            Ok(Row {
                seq: r.get(0)?,
                columns: [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
                record: r.get(8)?,
                prev_hash: r.get(9)?,
                hash: r.get(10)?,
            })
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

/// Every checkpoint stored beside the records, oldest first. Unreadable ones are returned
/// as errors so the verifier can name them.
pub fn read_checkpoints(path: &Path) -> Result<Vec<Result<Checkpoint, String>>, String> {
    let conn = open_read(path)?;
    let mut stmt = conn
        .prepare("SELECT checkpoint FROM checkpoints ORDER BY id")
        .map_err(|e| e.to_string())?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in rows {
        let text = row.map_err(|e| e.to_string())?;
        out.push(serde_json::from_str(&text).map_err(|e| format!("unreadable checkpoint: {e}")));
    }
    Ok(out)
}
