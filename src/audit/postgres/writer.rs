//! The writer's side of the PostgreSQL store. The writer thread is synchronous; this store
//! keeps a small runtime of its own and one connection, runs each statement to its end
//! (bounded by [`STEP`]), and reconnects after any failure. A batch is one transaction:
//! the chain's advisory lock, the head, the approval steps, then every record of the batch
//! in one `INSERT … SELECT FROM unnest(…)`, then `COMMIT`.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::{Client, Statement, Transaction};

use super::{CHANNEL, Pg};
use crate::audit::approval::{self, Binding, Request, RowKey, Status, Verdict, Vote};
use crate::audit::checkpoint::{Checkpoint, Signer};
use crate::audit::record::{AuditRecord, GENESIS};
use crate::audit::{AuditError, AuditStore, Committed, Done, Entry, unavailable};

/// The longest one statement (or the connection) may take before the batch fails.
const STEP: Duration = Duration::from_secs(10);

/// Statements prepared once per connection.
struct Prepared {
    lock: Statement,
    head: Statement,
    insert: Statement,
    outcome_exists: Statement,
    approval_by_id: Statement,
    find_open: Statement,
    count_open: Statement,
    insert_approval: Statement,
    set_status: Statement,
    set_mac: Statement,
    add_vote: Statement,
    votes: Statement,
    due: Statement,
    notify: Statement,
    last_checkpoint: Statement,
    insert_checkpoint: Statement,
}

const REQUEST_COLUMNS: &str = "id, env, tool, requester_iss, requester_sub, args_digest, contract_digest, args, side_effects, approver_roles, required, trace_id, created_ms, expires_ms, status, mac";

impl Prepared {
    async fn new(client: &Client, s: &str) -> Result<Self, tokio_postgres::Error> {
        let select = |cond: &str| format!("SELECT {REQUEST_COLUMNS} FROM {s}.approvals WHERE {cond}");
        Ok(Self {
            lock: client.prepare("SELECT pg_advisory_xact_lock($1)").await?,
            head: client
                .prepare(&format!("SELECT seq, hash FROM {s}.records ORDER BY seq DESC LIMIT 1"))
                .await?,
            insert: client
                .prepare(&format!(
                    "INSERT INTO {s}.records (seq, ts, env, trace_id, decision, reason_code, tool, subject, approval_id, decision_record, record, prev_hash, hash)
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[])"
                ))
                .await?,
            outcome_exists: client
                .prepare(&format!("SELECT 1 FROM {s}.records WHERE decision_record = $1 LIMIT 1"))
                .await?,
            approval_by_id: client.prepare(&select("env = $1 AND id = $2")).await?,
            find_open: client
                .prepare(&select(
                    "env = $1 AND tool = $2 AND requester_iss = $3 AND requester_sub = $4 AND args_digest = $5 AND contract_digest = $6
                     AND status IN ('pending', 'approved', 'denied') AND expires_ms > $7 ORDER BY created_ms DESC, id DESC LIMIT 1",
                ))
                .await?,
            count_open: client
                .prepare(&format!(
                    "SELECT count(*) FROM {s}.approvals WHERE env = $1 AND requester_iss = $2 AND requester_sub = $3
                     AND status IN ('pending', 'approved') AND expires_ms > $4"
                ))
                .await?,
            insert_approval: client
                .prepare(&format!(
                    "INSERT INTO {s}.approvals (id, env, tool, requester_iss, requester_sub, args_digest, contract_digest, args, side_effects, approver_roles, required, trace_id, created_ms, expires_ms, status, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $13)"
                ))
                .await?,
            set_status: client
                .prepare(&format!("UPDATE {s}.approvals SET status = $2, updated_ms = $3 WHERE id = $1"))
                .await?,
            set_mac: client.prepare(&format!("UPDATE {s}.approvals SET mac = $2 WHERE id = $1")).await?,
            add_vote: client
                .prepare(&format!(
                    "INSERT INTO {s}.approval_votes (approval_id, approver_iss, approver_sub, verdict, reason, at_ms) VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .await?,
            votes: client
                .prepare(&format!(
                    "SELECT approver_iss, approver_sub, verdict, reason, at_ms FROM {s}.approval_votes WHERE approval_id = $1 ORDER BY at_ms, n"
                ))
                .await?,
            due: client
                .prepare(&select("env = $1 AND status IN ('pending', 'approved') AND expires_ms <= $2 ORDER BY expires_ms"))
                .await?,
            notify: client.prepare("SELECT pg_notify($1, $2)").await?,
            last_checkpoint: client
                .prepare(&format!("SELECT checkpoint FROM {s}.checkpoints ORDER BY seq DESC LIMIT 1"))
                .await?,
            insert_checkpoint: client
                .prepare(&format!("INSERT INTO {s}.checkpoints (seq, checkpoint) VALUES ($1, $2)"))
                .await?,
        })
    }
}

/// A request as read from its row, with the MAC stored with it.
pub(super) fn request_from_row(r: &tokio_postgres::Row) -> Result<(Request, Option<String>), tokio_postgres::Error> {
    let args: String = r.try_get(7)?;
    let roles: String = r.try_get(9)?;
    let status: String = r.try_get(14)?;
    let required: i64 = r.try_get(10)?;
    let request = Request {
        id: r.try_get(0)?,
        binding: Binding {
            env: r.try_get(1)?,
            tool: r.try_get(2)?,
            requester_iss: r.try_get(3)?,
            requester_sub: r.try_get(4)?,
            args_digest: r.try_get(5)?,
            contract_digest: r.try_get(6)?,
        },
        args: serde_json::from_str(&args).unwrap_or(Value::Null),
        side_effects: r.try_get(8)?,
        approver_roles: serde_json::from_str(&roles).unwrap_or_default(),
        required: u32::try_from(required).unwrap_or(u32::MAX),
        trace_id: r.try_get(11)?,
        created_ms: r.try_get(12)?,
        expires_ms: r.try_get(13)?,
        // An unknown status can only come from outside the gateway: treat it as used up.
        status: Status::parse(&status).unwrap_or(Status::Expired),
        votes: Vec::new(),
        intact: false,
    };
    Ok((request, r.try_get(15)?))
}

pub(super) fn vote_from_row(r: &tokio_postgres::Row) -> Result<Vote, tokio_postgres::Error> {
    Ok(Vote {
        approver_iss: r.try_get(0)?,
        approver_sub: r.try_get(1)?,
        // Anything but an approval counts as a denial: it never releases a request.
        verdict: Verdict::parse(&r.try_get::<_, String>(2)?).unwrap_or(Verdict::Deny),
        reason: r.try_get(3)?,
        at_ms: r.try_get(4)?,
    })
}

pub(crate) struct PgStore {
    pg: Pg,
    env: String,
    row_key: RowKey,
    rt: tokio::runtime::Runtime,
    /// The connection and its statements; `None` after a failure (the next use reconnects).
    conn: Option<(Client, Prepared)>,
    /// When the connection was last used: one idle for long is looked at before it is
    /// trusted with a batch (a database restarted meanwhile closed it, and the connection's
    /// task, which runs only while the writer uses it, has not noticed yet).
    last_used: Instant,
}

/// How long a connection may sit unused before it is looked at again.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl PgStore {
    /// Connects and checks the schema (its version, its environment) before the gateway
    /// serves: a store it cannot use stops the start.
    pub(crate) fn open(pg: Pg, env: &str, row_key: RowKey) -> Result<Self, AuditError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(unavailable)?;
        let mut store = Self {
            pg,
            env: env.to_string(),
            row_key,
            rt,
            conn: None,
            last_used: Instant::now(),
        };
        store.ready()?;
        Ok(store)
    }

    /// The connection, opened (and the schema checked) if there is none or it no longer
    /// answers, with everything a statement needs beside it.
    fn ready(&mut self) -> Result<Ready<'_>, AuditError> {
        let idle = self.last_used.elapsed() > IDLE_CHECK;
        self.last_used = Instant::now();
        if let Some((client, _)) = &self.conn
            && (client.is_closed()
                || (idle && run(&self.rt, async { client.simple_query("SELECT 1").await.map_err(unavailable) }).is_err()))
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            let (pg, env) = (self.pg.clone(), self.env.clone());
            let opened = run(&self.rt, async move {
                let client = pg.connect().await?;
                super::schema::check(&pg, &client, &env).await?;
                let prepared = Prepared::new(&client, pg.schema()).await.map_err(|e| pg.error(&e))?;
                Ok((client, prepared))
            })?;
            self.conn = Some(opened);
        }
        let Some((client, st)) = self.conn.as_mut() else {
            return Err(unavailable("no connection to the audit store"));
        };
        Ok(Ready {
            rt: &self.rt,
            pg: &self.pg,
            client,
            st,
            env: &self.env,
            row_key: &self.row_key,
        })
    }

    /// Runs `f` on the connection; a failure drops it, so the next use starts afresh.
    fn with<T>(&mut self, f: impl FnOnce(Ready<'_>) -> Result<T, AuditError>) -> Result<T, AuditError> {
        let result = f(self.ready()?);
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// What a statement of the store needs, borrowed from it at once.
struct Ready<'a> {
    rt: &'a tokio::runtime::Runtime,
    pg: &'a Pg,
    client: &'a mut Client,
    st: &'a Prepared,
    env: &'a str,
    row_key: &'a RowKey,
}

/// Runs a future to its end on the store's runtime, within [`STEP`].
fn run<T>(rt: &tokio::runtime::Runtime, f: impl Future<Output = Result<T, AuditError>>) -> Result<T, AuditError> {
    rt.block_on(async {
        tokio::time::timeout(STEP, f)
            .await
            .unwrap_or_else(|_| Err(unavailable("the audit store did not answer in time")))
    })
}

/// One statement's result, its error named by the server.
fn step<T>(rt: &tokio::runtime::Runtime, pg: &Pg, f: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, AuditError> {
    run(rt, async { f.await.map_err(|e| pg.error(&e)) })
}

fn head_of(rt: &tokio::runtime::Runtime, pg: &Pg, tx: &Transaction<'_>, stmt: &Statement) -> Result<(u64, String), AuditError> {
    let row = step(rt, pg, tx.query_opt(stmt, &[]))?;
    Ok(match row {
        Some(r) => (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1)),
        None => (0, GENESIS.to_string()),
    })
}

/// The records of one transaction, chained as they come and inserted together at its end.
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    ts: Vec<String>,
    env: Vec<String>,
    trace_id: Vec<String>,
    decision: Vec<String>,
    reason_code: Vec<String>,
    tool: Vec<Option<String>>,
    subject: Vec<Option<String>>,
    approval_id: Vec<Option<String>>,
    decision_record: Vec<Option<i64>>,
    record: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

/// The chain's end inside one transaction, and the approval table of the same transaction.
struct Chain<'a> {
    rt: &'a tokio::runtime::Runtime,
    pg: &'a Pg,
    tx: &'a Transaction<'a>,
    st: &'a Prepared,
    env: &'a str,
    seq: u64,
    prev: String,
    rows: Rows,
    written: Vec<crate::metrics::Tally>,
    noted: Vec<crate::telemetry::Noted>,
    row_key: &'a RowKey,
}

impl Chain<'_> {
    fn step<T>(&self, f: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, AuditError> {
        step(self.rt, self.pg, f)
    }

    /// Chains `r` after the head (its `seq`, `env`, `prev_hash`, `hash`); inserted at commit.
    fn append_in_place(&mut self, r: &mut AuditRecord) -> Result<u64, AuditError> {
        self.seq += 1;
        r.seq = self.seq;
        r.env = self.env.to_string();
        r.prev_hash.clone_from(&self.prev);
        let json = r.seal().map_err(unavailable)?;
        let rows = &mut self.rows;
        rows.seq.push(i64::try_from(r.seq).map_err(unavailable)?);
        rows.ts.push(r.ts.clone());
        rows.env.push(r.env.clone());
        rows.trace_id.push(r.trace_id.as_str().to_string());
        rows.decision.push(r.decision.as_str().to_string());
        rows.reason_code.push(r.reason_code.as_str().to_string());
        rows.tool.push(r.tool.clone());
        rows.subject.push(r.principal.as_ref().map(|p| p.sub.clone()));
        rows.approval_id.push(r.approval.as_ref().map(|a| a.id.clone()));
        rows.decision_record.push(
            r.outcome
                .as_ref()
                .and_then(|o| o.decision_record)
                .and_then(|d| i64::try_from(d).ok()),
        );
        rows.record.push(json);
        rows.prev_hash.push(r.prev_hash.clone());
        rows.hash.push(r.hash.clone());
        self.written.push(r.tally());
        self.noted.extend(r.noted());
        self.prev.clone_from(&r.hash);
        Ok(self.seq)
    }

    /// Inserts the records chained so far.
    fn flush(&mut self) -> Result<(), AuditError> {
        if self.rows.seq.is_empty() {
            return Ok(());
        }
        let r = std::mem::take(&mut self.rows);
        self.step(self.tx.execute(
            &self.st.insert,
            &[
                &r.seq,
                &r.ts,
                &r.env,
                &r.trace_id,
                &r.decision,
                &r.reason_code,
                &r.tool,
                &r.subject,
                &r.approval_id,
                &r.decision_record,
                &r.record,
                &r.prev_hash,
                &r.hash,
            ],
        ))?;
        Ok(())
    }

    /// Whether an outcome names `allow` as its decision: in the store, or in this batch.
    fn outcome_exists(&mut self, allow: u64) -> Result<bool, AuditError> {
        let allow = i64::try_from(allow).map_err(unavailable)?;
        if self.rows.decision_record.contains(&Some(allow)) {
            return Ok(true);
        }
        Ok(self.step(self.tx.query_opt(&self.st.outcome_exists, &[&allow]))?.is_some())
    }

    /// Rows with their votes, each marked intact only if its MAC is right.
    fn requests(&self, rows: Vec<tokio_postgres::Row>) -> Result<Vec<Request>, AuditError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (mut req, mac) = request_from_row(&row).map_err(|e| self.pg.error(&e))?;
            let votes = self.step(self.tx.query(&self.st.votes, &[&req.id]))?;
            req.votes = votes
                .iter()
                .map(vote_from_row)
                .collect::<Result<_, _>>()
                .map_err(|e| self.pg.error(&e))?;
            req.intact = mac.is_some_and(|m| m == self.row_key.mac(&req));
            out.push(req);
        }
        Ok(out)
    }

    /// Seals the row of request `id` as it now stands.
    fn reseal(&mut self, id: &str) -> Result<(), AuditError> {
        let env = self.env.to_string();
        let rows = self.step(self.tx.query(&self.st.approval_by_id, &[&env, &id]))?;
        for req in self.requests(rows)? {
            let mac = self.row_key.mac(&req);
            self.step(self.tx.execute(&self.st.set_mac, &[&req.id, &mac]))?;
        }
        Ok(())
    }
}

impl approval::Table for Chain<'_> {
    fn find_open(&mut self, b: &Binding, now_ms: i64) -> Result<Option<Request>, AuditError> {
        let rows = self.step(self.tx.query(
            &self.st.find_open,
            &[
                &b.env,
                &b.tool,
                &b.requester_iss,
                &b.requester_sub,
                &b.args_digest,
                &b.contract_digest,
                &now_ms,
            ],
        ))?;
        Ok(self.requests(rows)?.into_iter().next())
    }

    fn get(&mut self, env: &str, id: &str) -> Result<Option<Request>, AuditError> {
        let rows = self.step(self.tx.query(&self.st.approval_by_id, &[&env, &id]))?;
        Ok(self.requests(rows)?.into_iter().next())
    }

    fn count_open(&mut self, env: &str, iss: &str, sub: &str, now_ms: i64) -> Result<usize, AuditError> {
        let n: i64 = self
            .step(self.tx.query_one(&self.st.count_open, &[&env, &iss, &sub, &now_ms]))?
            .get(0);
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn insert(&mut self, q: &Request) -> Result<(), AuditError> {
        let b = &q.binding;
        let args = q.args.to_string();
        let roles = serde_json::to_string(&q.approver_roles).unwrap_or_else(|_| "[]".into());
        let required = i64::from(q.required);
        self.step(self.tx.execute(
            &self.st.insert_approval,
            &[
                &q.id,
                &b.env,
                &b.tool,
                &b.requester_iss,
                &b.requester_sub,
                &b.args_digest,
                &b.contract_digest,
                &args,
                &q.side_effects,
                &roles,
                &required,
                &q.trace_id,
                &q.created_ms,
                &q.expires_ms,
                &q.status.as_str(),
            ],
        ))?;
        self.reseal(&q.id)
    }

    fn set_status(&mut self, id: &str, status: Status, now_ms: i64) -> Result<(), AuditError> {
        self.step(self.tx.execute(&self.st.set_status, &[&id, &status.as_str(), &now_ms]))?;
        self.reseal(id)
    }

    fn add_vote(&mut self, id: &str, v: &Vote) -> Result<(), AuditError> {
        self.step(self.tx.execute(
            &self.st.add_vote,
            &[&id, &v.approver_iss, &v.approver_sub, &v.verdict.as_str(), &v.reason, &v.at_ms],
        ))?;
        self.reseal(id)
    }

    fn due(&mut self, now_ms: i64) -> Result<Vec<Request>, AuditError> {
        let env = self.env.to_string();
        let rows = self.step(self.tx.query(&self.st.due, &[&env, &now_ms]))?;
        self.requests(rows)
    }

    fn append(&mut self, mut r: AuditRecord) -> Result<u64, AuditError> {
        self.append_in_place(&mut r)
    }
}

impl AuditStore for PgStore {
    fn commit(&mut self, entries: &mut [Entry]) -> Result<Committed, AuditError> {
        self.with(
            |Ready {
                 rt,
                 pg,
                 client,
                 st,
                 env,
                 row_key,
             }| {
                let tx = step(rt, pg, client.transaction())?;
                step(rt, pg, tx.execute(&st.lock, &[&pg.chain_lock(env)]))?;
                let (seq, prev) = head_of(rt, pg, &tx, &st.head)?;
                let mut chain = Chain {
                    rt,
                    pg,
                    tx: &tx,
                    st,
                    env,
                    seq,
                    prev,
                    rows: Rows::default(),
                    written: Vec::new(),
                    noted: Vec::new(),
                    row_key,
                };
                let mut results = Vec::with_capacity(entries.len());
                let mut approvals = false;
                for entry in entries.iter_mut() {
                    results.push(match entry {
                        Entry::Record(r) => Done::Seq(chain.append_in_place(r)?),
                        Entry::Approval(op) => {
                            approvals = true;
                            Done::Approval(approval::apply(&mut chain, op)?)
                        }
                        Entry::OutcomeOnce(r) => match r.outcome.as_ref().and_then(|o| o.decision_record) {
                            Some(allow) if !chain.outcome_exists(allow)? => Done::Seq(chain.append_in_place(r)?),
                            _ => Done::Skipped,
                        },
                    });
                }
                chain.flush()?;
                let head_after = chain.seq;
                let written = std::mem::take(&mut chain.written);
                let noted = std::mem::take(&mut chain.noted);
                drop(chain);
                if approvals {
                    // Delivered at commit, to every replica listening (`reader.rs`).
                    step(rt, pg, tx.execute(&st.notify, &[&CHANNEL, &pg.notify_key(env)]))?;
                }
                step(rt, pg, tx.commit())?;
                Ok(Committed {
                    results,
                    written,
                    noted,
                    head_before: seq,
                    head_after,
                })
            },
        )
    }

    fn calls_after(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let after = i64::try_from(after).map_err(unavailable)?;
        let limit = i64::try_from(limit).map_err(unavailable)?;
        let sql = format!(
            "SELECT record FROM {}.records WHERE seq > $1 AND reason_code IN ('allowed', 'executed', 'backend_error', 'outcome_unknown') ORDER BY seq LIMIT $2",
            self.pg.schema()
        );
        self.with(|Ready { rt, pg, client, .. }| {
            let rows = step(rt, pg, client.query(&sql, &[&after, &limit]))?;
            // A record that does not read is `audit verify`'s to report, not the sweep's.
            Ok(rows
                .iter()
                .filter_map(|r| serde_json::from_str::<AuditRecord>(r.get::<_, &str>(0)).ok())
                .collect())
        })
    }

    fn record_at(&mut self, seq: u64) -> Result<Option<AuditRecord>, AuditError> {
        let seq = i64::try_from(seq).map_err(unavailable)?;
        let sql = format!("SELECT record FROM {}.records WHERE seq = $1", self.pg.schema());
        self.with(|Ready { rt, pg, client, .. }| {
            let row = step(rt, pg, client.query_opt(&sql, &[&seq]))?;
            Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
        })
    }

    fn head(&mut self) -> Result<(u64, String), AuditError> {
        self.with(|Ready { rt, pg, client, st, .. }| {
            let row = step(rt, pg, client.query_opt(&st.head, &[]))?;
            Ok(match row {
                Some(r) => (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1)),
                None => (0, GENESIS.to_string()),
            })
        })
    }

    fn checkpoint(&mut self, signer: &Signer) -> Result<Option<Checkpoint>, AuditError> {
        self.with(
            |Ready {
                 rt, pg, client, st, env, ..
             }| {
                let tx = step(rt, pg, client.transaction())?;
                step(rt, pg, tx.execute(&st.lock, &[&pg.chain_lock(env)]))?;
                let (seq, hash) = head_of(rt, pg, &tx, &st.head)?;
                let last: Option<Checkpoint> =
                    step(rt, pg, tx.query_opt(&st.last_checkpoint, &[]))?.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok());
                if seq == 0 || last.as_ref().is_some_and(|l| l.seq >= seq) {
                    return Ok(None);
                }
                let cp = signer.sign_after(seq, &hash, last.as_ref().map(|l| l.ts.as_str()));
                let json = serde_json::to_string(&cp).map_err(unavailable)?;
                step(
                    rt,
                    pg,
                    tx.execute(&st.insert_checkpoint, &[&i64::try_from(cp.seq).map_err(unavailable)?, &json]),
                )?;
                step(rt, pg, tx.commit())?;
                Ok(Some(cp))
            },
        )
    }
}
