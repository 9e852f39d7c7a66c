//! Reads of the PostgreSQL store (the API, the console, waiting calls, `audit verify |
//! export | tail`, `probe`) through a small pool, and the listener that turns the
//! writers' approval `NOTIFY`s into wake-ups of this replica's waiting calls.

use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::writer::{request_from_row, vote_from_row};
use super::{CHANNEL, Pg};
use crate::audit::approval::{Request, Status};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::record::AuditRecord;
use crate::audit::store::{AuditReader, PagePosition, Reading, Search, StoredRow, Tallies};
use crate::audit::{AuditError, unavailable};

/// How long a read waits for a pooled connection, or for a new one.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long the listener waits before it connects again after losing its connection.
const RELISTEN: Duration = Duration::from_secs(1);

pub(crate) struct PgReader {
    pg: Pg,
    pool: Pool,
    env: String,
}

const REQUEST_COLUMNS: &str = "id, env, tool, requester_iss, requester_sub, args_digest, contract_digest, args, side_effects, approver_roles, required, trace_id, created_ms, expires_ms, status, mac";

impl PgReader {
    pub(crate) fn open(pg: Pg, env: &str) -> Result<Self, AuditError> {
        let manager = Manager::from_config(
            pg.config.clone(),
            pg.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pg.location().pool_size)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        Ok(Self {
            pg,
            pool,
            env: env.to_string(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, AuditError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => self.pg.error(&e),
            other => unavailable(format!("audit store: {other}")),
        })
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, AuditError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(|e| self.pg.error(&e))?;
        client.query(&stmt, params).await.map_err(|e| self.pg.error(&e))
    }

    /// Requests with their votes (their MACs not checked: readers do not hold the row key).
    async fn requests(&self, rows: Vec<tokio_postgres::Row>) -> Result<Vec<(Request, Option<String>)>, AuditError> {
        let s = self.pg.schema();
        let sql = format!(
            "SELECT approver_iss, approver_sub, verdict, reason, at_ms FROM {s}.approval_votes WHERE approval_id = $1 ORDER BY at_ms, n"
        );
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (mut req, mac) = request_from_row(&row).map_err(|e| self.pg.error(&e))?;
            req.votes = self
                .query(&sql, &[&req.id])
                .await?
                .iter()
                .map(vote_from_row)
                .collect::<Result<_, _>>()
                .map_err(|e| self.pg.error(&e))?;
            out.push((req, mac));
        }
        Ok(out)
    }
}

/// Listens for approval changes of `key` and wakes `events`' waiters on each, until the
/// runtime that waits on them is gone. After a lost connection it wakes them once too, so
/// a change announced while it was away is looked at.
async fn listen(pg: Pg, key: String, events: Weak<tokio::sync::Notify>) {
    loop {
        let Some(alive) = events.upgrade() else { return };
        drop(alive);
        match pg.connect_raw().await {
            Ok((client, mut connection)) => {
                // The connection's messages (the notifications among them) reach only whoever
                // polls it. It ends at its first error: a closed connection keeps answering
                // polls with errors, and a loop that went on would spin.
                let (key, events_of_drive) = (key.clone(), events.clone());
                let drive = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(m)) = messages.next().await {
                        let Some(e) = events_of_drive.upgrade() else { return };
                        if let AsyncMessage::Notification(n) = m
                            && n.payload() == key
                        {
                            e.notify_waiters();
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if let Some(e) = events.upgrade() {
                            e.notify_waiters();
                        }
                        // Until the connection ends; the client must live as long.
                        let _ = drive.await;
                    }
                    Err(e) => {
                        drive.abort();
                        tracing::warn!("approval listener: {}", super::describe(&e));
                    }
                }
                drop(client);
                tracing::debug!("approval listener: connection closed; listening again");
            }
            Err(e) => tracing::debug!("approval listener: {e:?}"),
        }
        tokio::time::sleep(RELISTEN).await;
        if let Some(e) = events.upgrade() {
            e.notify_waiters();
        }
    }
}

const ROW_COLUMNS: &str = "seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash, approval_id";

fn stored_row(r: &tokio_postgres::Row) -> Result<StoredRow, tokio_postgres::Error> {
    Ok(StoredRow {
        seq: r.try_get(0)?,
        columns: [
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
            r.try_get(6)?,
            r.try_get(7)?,
            r.try_get(11)?,
        ],
        record: r.try_get(8)?,
        prev_hash: r.try_get(9)?,
        hash: r.try_get(10)?,
    })
}

impl AuditReader for PgReader {
    fn records(&self, after: i64) -> Reading<'_, Vec<StoredRow>> {
        Box::pin(async move {
            let s = self.pg.schema();
            let rows = self
                .query(
                    &format!(
                        "SELECT seq, ts, env, trace_id, decision, reason_code, tool, subject, record, prev_hash, hash, approval_id FROM {s}.records WHERE seq > $1 ORDER BY seq"
                    ),
                    &[&after],
                )
                .await?;
            rows.iter()
                .map(stored_row)
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(|e| self.pg.error(&e))
        })
    }

    fn checkpoints(&self) -> Reading<'_, Vec<Result<Checkpoint, String>>> {
        Box::pin(async move {
            let s = self.pg.schema();
            let rows = self
                .query(&format!("SELECT checkpoint FROM {s}.checkpoints ORDER BY seq"), &[])
                .await?;
            Ok(rows
                .iter()
                .map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| format!("unreadable checkpoint: {e}")))
                .collect())
        })
    }

    fn approvals(&self, status: Option<Status>, before: Option<PagePosition>, limit: u32) -> Reading<'_, Vec<Request>> {
        Box::pin(async move {
            let s = self.pg.schema();
            // Past any real position when none is given: the first page.
            let (ms, id) = before.map_or((i64::MAX, String::new()), |p| (p.created_ms, p.id));
            let status = status.map(|s| s.as_str().to_string());
            let rows = self
                .query(
                    &format!(
                        "SELECT {REQUEST_COLUMNS} FROM {s}.approvals WHERE env = $1 AND ($2::text IS NULL OR status = $2)
                         AND (created_ms < $3 OR (created_ms = $3 AND id < $4)) ORDER BY created_ms DESC, id DESC LIMIT $5"
                    ),
                    &[&self.env, &status, &ms, &id, &i64::from(limit)],
                )
                .await?;
            Ok(self.requests(rows).await?.into_iter().map(|(r, _)| r).collect())
        })
    }

    fn search(&self, q: &Search) -> Reading<'_, Vec<StoredRow>> {
        let q = q.clone();
        Box::pin(async move {
            let s = self.pg.schema();
            let before = q.before.unwrap_or(i64::MAX);
            let limit = i64::from(q.limit);
            let rows = self
                .query(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM {s}.records WHERE env = $1 AND substr(ts, 1, 19) >= $2 AND substr(ts, 1, 19) < $3
                         AND ($4::text IS NULL OR decision = $4) AND ($5::text IS NULL OR reason_code = $5) AND ($6::text IS NULL OR tool = $6)
                         AND ($7::text IS NULL OR subject = $7) AND ($8::text IS NULL OR trace_id = $8) AND seq < $9
                         ORDER BY seq DESC LIMIT $10"
                    ),
                    &[&self.env, &q.from, &q.to, &q.decision, &q.reason_code, &q.tool, &q.caller, &q.trace_id, &before, &limit],
                )
                .await?;
            rows.iter()
                .map(stored_row)
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(|e| self.pg.error(&e))
        })
    }

    fn rows_between(&self, first: i64, last: i64) -> Reading<'_, Vec<StoredRow>> {
        Box::pin(async move {
            let s = self.pg.schema();
            let rows = self
                .query(
                    &format!("SELECT {ROW_COLUMNS} FROM {s}.records WHERE seq >= $1 AND seq <= $2 ORDER BY seq"),
                    &[&first, &last],
                )
                .await?;
            rows.iter()
                .map(stored_row)
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(|e| self.pg.error(&e))
        })
    }

    fn tallies(&self, from: &str, to: &str) -> Reading<'_, Tallies> {
        let (from, to) = (from.to_string(), to.to_string());
        Box::pin(async move {
            let s = self.pg.schema();
            let within = "env = $1 AND substr(ts, 1, 19) >= $2 AND substr(ts, 1, 19) < $3 AND reason_code <> 'executed'";
            let mut t = Tallies::default();
            let rows = self
                .query(
                    &format!(
                        "SELECT substr(ts, 1, 16) AS minute, decision, COUNT(*) FROM {s}.records WHERE {within} GROUP BY minute, decision ORDER BY minute"
                    ),
                    &[&self.env, &from, &to],
                )
                .await?;
            for r in &rows {
                t.per_minute
                    .push((r.get(0), r.get(1), u64::try_from(r.get::<_, i64>(2)).unwrap_or(0)));
            }
            for (column, into) in [("reason_code", &mut t.reason_codes), ("subject", &mut t.callers)] {
                let rows = self
                    .query(
                        &format!(
                            "SELECT {column}, COUNT(*) AS n FROM {s}.records WHERE {within} AND {column} IS NOT NULL GROUP BY {column} ORDER BY n DESC, {column} LIMIT 10"
                        ),
                        &[&self.env, &from, &to],
                    )
                    .await?;
                for r in &rows {
                    into.push((r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)));
                }
            }
            Ok(t)
        })
    }

    fn approval_counts(&self, now_ms: i64) -> Reading<'_, Vec<(String, u64)>> {
        Box::pin(async move {
            let s = self.pg.schema();
            let rows = self
                .query(
                    &format!(
                        "SELECT CASE WHEN status = 'pending' AND expires_ms <= $2 THEN 'expired' ELSE status END AS state, COUNT(*)
                         FROM {s}.approvals WHERE env = $1 GROUP BY state"
                    ),
                    &[&self.env, &now_ms],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
                .collect())
        })
    }

    fn approval(&self, id: &str) -> Reading<'_, Option<Request>> {
        let id = id.to_string();
        Box::pin(async move {
            let s = self.pg.schema();
            let rows = self
                .query(
                    &format!("SELECT {REQUEST_COLUMNS} FROM {s}.approvals WHERE env = $1 AND id = $2"),
                    &[&self.env, &id],
                )
                .await?;
            Ok(self.requests(rows).await?.into_iter().next().map(|(r, _)| r))
        })
    }

    fn trail(&self, approval_id: &str) -> Reading<'_, Vec<AuditRecord>> {
        let id = approval_id.to_string();
        Box::pin(async move {
            let s = self.pg.schema();
            let rows = self
                .query(
                    &format!("SELECT record FROM {s}.records WHERE approval_id = $1 ORDER BY seq LIMIT 500"),
                    &[&id],
                )
                .await?;
            Ok(rows.iter().filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()).collect())
        })
    }

    fn approval_rows(&self) -> Reading<'_, Vec<(Request, Option<String>)>> {
        Box::pin(async move {
            let s = self.pg.schema();
            let rows = self
                .query(
                    &format!("SELECT {REQUEST_COLUMNS} FROM {s}.approvals WHERE env = $1 ORDER BY created_ms"),
                    &[&self.env],
                )
                .await?;
            self.requests(rows).await
        })
    }

    fn watch(&self, events: &Arc<tokio::sync::Notify>) {
        tokio::spawn(listen(self.pg.clone(), self.pg.notify_key(&self.env), Arc::downgrade(events)));
    }

    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}
