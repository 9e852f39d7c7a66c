//! The embedded SQLite store: one file per environment, WAL with `synchronous=FULL`.

use std::path::Path;

use rusqlite::{Connection, params};

use super::AuditError;
use super::record::AuditRecord;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct Store {
    conn: Connection,
    env: String,
    head: Option<(u64, String)>,
}

fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable { detail: e.to_string() }
}

impl Store {
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
             PRAGMA busy_timeout=5000;
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

    fn load_head(&mut self) -> Result<(u64, String), AuditError> {
        if let Some(h) = &self.head {
            return Ok(h.clone());
        }
        let head = self
            .conn
            .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_string())),
                other => Err(other),
            })
            .map_err(unavailable)?;
        self.head = Some(head.clone());
        Ok(head)
    }

    /// Chains and writes a batch in one transaction. On error nothing of the batch is kept
    /// and the cached head is dropped so the next batch re-reads it.
    pub fn append_batch(&mut self, records: &mut [AuditRecord]) -> Result<(), AuditError> {
        let result = self.try_append(records);
        if result.is_err() {
            self.head = None;
        }
        result
    }

    fn try_append(&mut self, records: &mut [AuditRecord]) -> Result<(), AuditError> {
        let (mut seq, mut prev) = self.load_head()?;
        let tx = self.conn.transaction().map_err(unavailable)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO audit (seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")
                .map_err(unavailable)?;
            for r in records.iter_mut() {
                seq += 1;
                r.seq = seq;
                r.env.clone_from(&self.env);
                r.prev_hash = prev.clone();
                r.hash = r.compute_hash();
                let json = serde_json::to_string(&*r).map_err(unavailable)?;
                stmt.execute(params![
                    seq as i64,
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

pub fn read_all(path: &Path) -> Result<Vec<(AuditRecord, String)>, String> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT record, hash FROM audit ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in rows {
        let (json, hash) = row.map_err(|e| e.to_string())?;
        let rec: AuditRecord = serde_json::from_str(&json).map_err(|e| format!("unreadable record: {e}"))?;
        out.push((rec, hash));
    }
    Ok(out)
}
