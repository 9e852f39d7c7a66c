//! The audit log: one append-only, hash-chained record per decision and per outcome, written
//! durably before the call it describes goes on, and signed checkpoints over its head.
//!
//! INVARIANT: [`AuditLog::append`] returns only after the record is committed and fsync'd
//! (SQLite WAL, `synchronous=FULL`); an error means "not recorded", and the caller refuses.
//! [`AuditLog::enqueue`] is for the one record that follows an action rather than permits
//! it (a call's outcome): it is queued behind the call's durable decision record and
//! committed with the next batch that somebody waits for (at most [`LINGER`] later), and the
//! answer does not wait for its fsync. [`AuditLog::append_unhurried`] is durable before it
//! returns like `append`, but may linger like `enqueue`: for refusals whose answer is held
//! back anyway (a source over its authentication-failure budget), so that a flood of them
//! shares fsyncs instead of paying one per few records.
//! Concurrent appends are committed together by one writer thread (group commit): whatever
//! is queued when a transaction starts, up to [`MAX_BATCH`], goes into it, so durability
//! costs one fsync per batch, not per call.
//!
//! Approval state lives in the same store and changes only through the writer, in the same
//! transaction as the records of each step (see [`approval`]).
//!
//! Which store holds an environment is its configuration's business ([`StoreLocation`]);
//! [`open`] starts the writer over it and hands back a reader ([`AuditReader`]), and nothing
//! outside this module names the store behind them.

pub(crate) mod approval;
pub(crate) mod checkpoint;
pub(crate) mod export;
pub(crate) mod postgres;
pub(crate) mod record;
mod recovery;
mod sqlite;
pub(crate) mod store;
pub(crate) mod verify;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::{AuditMetrics, Tally};

pub(crate) use checkpoint::Sink;
pub(crate) use record::{ApprovalRef, AuditRecord, Outcome};
pub(crate) use store::{AuditReader, AuditStore, StoreLock};

use crate::config::StoreLocation;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    #[error("the audit log is unavailable")]
    Unavailable { detail: String },
    /// A reader could not read the store; the message names the store and the cause (for
    /// the operator running a command, never for a client).
    #[error("{0}")]
    Unreadable(String),
}

impl AuditError {
    /// What the operator running a command reads: the cause, which a client never sees.
    pub(crate) fn for_operator(&self) -> String {
        match self {
            AuditError::Unavailable { detail } => format!("the audit store is unavailable: {detail}"),
            AuditError::Unreadable(m) => m.clone(),
        }
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable { detail: e.to_string() }
}

/// Opens an environment's store for the gateway: its writer thread, and a reader for the
/// API, the console and waiting calls.
pub(crate) fn open(
    location: &StoreLocation,
    env: &str,
    policy: CheckpointPolicy,
    metrics: AuditMetrics,
) -> Result<(AuditLog, Arc<dyn AuditReader>), AuditError> {
    match location {
        StoreLocation::Sqlite(path) => {
            let store = sqlite::SqliteStore::open(path, env, policy.signer.row_key())?;
            let log = AuditLog::start(Box::new(store), env, policy, metrics)?;
            let reader = sqlite::SqliteReader::open(path, env, false)?;
            Ok((log, Arc::new(reader)))
        }
        StoreLocation::Postgres(loc) => {
            let pg = postgres::Pg::new(loc)?;
            let row_key = policy.signer.row_key();
            // Opened off the async workers: the store blocks on a runtime of its own.
            let (opening, name) = (pg.clone(), env.to_string());
            let store = std::thread::spawn(move || postgres::PgStore::open(opening, &name, row_key))
                .join()
                .map_err(|_| unavailable("opening the audit store failed"))??;
            let log = AuditLog::start(Box::new(store), env, policy, metrics)?;
            Ok((log, Arc::new(postgres::PgReader::open(pg, env)?)))
        }
    }
}

/// Opens an environment's store to read only (`audit verify | export | tail`, `probe`);
/// refused if it does not exist.
pub(crate) fn open_reader(location: &StoreLocation, env: &str) -> Result<Arc<dyn AuditReader>, AuditError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Arc::new(sqlite::SqliteReader::open(path, env, true)?)),
        StoreLocation::Postgres(loc) => Ok(Arc::new(postgres::PgReader::open(postgres::Pg::new(loc)?, env)?)),
    }
}

/// `capgate store init`: creates or updates an environment's PostgreSQL schema, connected
/// as `owner` (a role other than the gateway's, which is then granted only what the
/// gateway needs) or as the gateway's own role. Says what it did.
pub(crate) async fn init_store(
    location: &StoreLocation,
    env: &str,
    owner: Option<(String, Option<crate::secret::Secret<String>>)>,
) -> Result<String, AuditError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(format!(
            "environment `{env}`: the SQLite store `{}` is created by the gateway when it first starts; nothing to do",
            path.display()
        )),
        StoreLocation::Postgres(loc) => {
            let gateway_role = loc.user.clone();
            let connect_as = match owner {
                Some((user, password)) => std::sync::Arc::new(crate::config::PgLocation {
                    user,
                    password,
                    host: loc.host.clone(),
                    port: loc.port,
                    dbname: loc.dbname.clone(),
                    sslmode: loc.sslmode,
                    sslrootcert: loc.sslrootcert.clone(),
                    schema: loc.schema.clone(),
                    pool_size: 1,
                }),
                None => loc.clone(),
            };
            let pg = postgres::Pg::new(&connect_as)?;
            let mut client = pg.connect().await?;
            let done = postgres::schema::init(&pg, &mut client, env, Some(&gateway_role)).await?;
            let what = match done.from {
                0 => format!("created schema `{}` (version {})", loc.schema, postgres::schema::VERSION),
                v if v == postgres::schema::VERSION => format!("schema `{}` is at version {v}; checked", loc.schema),
                v => format!("updated schema `{}` from version {v} to {}", loc.schema, postgres::schema::VERSION),
            };
            let who = match done.granted {
                Some(role) => format!("; role `{role}` may read it and append records, nothing more"),
                None => format!(
                    "; the gateway's role `{gateway_role}` owns it (records are append-only by trigger; `--owner ROLE` keeps the gateway's role to appending)"
                ),
            };
            Ok(format!("environment `{env}`: {what}{who}"))
        }
    }
}

/// What `capgate check` finds about a store it can reach: problems, then warnings.
pub(crate) async fn review_store(location: &StoreLocation, env: &str) -> Result<(Vec<String>, Vec<String>), AuditError> {
    match location {
        StoreLocation::Sqlite(_) => Ok((Vec::new(), Vec::new())),
        StoreLocation::Postgres(loc) => {
            let pg = postgres::Pg::new(loc)?;
            let client = pg.connect().await?;
            postgres::schema::check(&pg, &client, env).await?;
            postgres::schema::review(&pg, &client).await
        }
    }
}

/// Makes the store refuse every write until the returned lock is dropped
/// (`probe --simulate-outage`; never in production).
pub(crate) fn lock(location: &StoreLocation) -> Result<Box<dyn StoreLock>, AuditError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Box::new(sqlite::ExclusiveLock::take(path)?)),
        StoreLocation::Postgres(loc) => Ok(Box::new(postgres::TableLock::take(loc)?)),
    }
}

/// One unit of work for the writer: a record to append, or an approval step (which appends
/// the records describing it in the same transaction).
#[derive(Debug)]
pub(crate) enum Entry {
    Record(Box<AuditRecord>),
    Approval(approval::Op),
    /// A record of a call's outcome (`outcome.decision_record` names its allow record),
    /// appended only if no outcome for that allow record is in the store yet: a recovery
    /// record (`recovery.rs`), or an outcome record tried again after a failed commit that
    /// may have been written after all (a connection lost during `COMMIT`).
    OutcomeOnce(Box<AuditRecord>),
}

impl Entry {
    /// The entry as it is tried again after a failed commit: an outcome record becomes
    /// [`Entry::OutcomeOnce`], so that a commit whose fate was unknown (and which did write
    /// it) does not leave the outcome twice.
    fn once(self) -> Self {
        match self {
            Entry::Record(r) if r.outcome.as_ref().is_some_and(|o| o.decision_record.is_some()) => Entry::OutcomeOnce(r),
            other => other,
        }
    }
}

/// What one entry came to.
#[derive(Debug)]
pub(crate) enum Done {
    /// The appended record's sequence number.
    Seq(u64),
    Approval(approval::Answer),
    /// A recovery record found its call accounted for already.
    Skipped,
}

/// A committed batch: one result per entry, in order, and the records it appended.
pub(crate) struct Committed {
    pub(crate) results: Vec<Done>,
    /// Each record appended, as the metrics count it.
    pub(crate) written: Vec<Tally>,
    /// What the spans of the requests whose records were appended take on from them.
    pub(crate) noted: Vec<crate::telemetry::Noted>,
    /// The head's sequence number when the transaction began (others may have appended
    /// since this writer's last commit), and when it ended.
    pub(crate) head_before: u64,
    pub(crate) head_after: u64,
}

/// Where the outcome of one entry goes; `None` for a queued record nobody waits on.
type Waiter = Option<oneshot::Sender<Result<Done, AuditError>>>;

/// An entry taken off the queue, with where its outcome goes and when it was submitted. An
/// entry nobody waits for records something that happened already (a call's outcome): if
/// its commit fails, nobody can be told, so it is kept and tried again until it is written.
struct Queued {
    entry: Entry,
    done: Waiter,
    at: Instant,
}

/// An outcome record kept through a failed commit is dated when it is finally written, so
/// that the chain's times never go back across an outage; when the call ended stays in its
/// reason.
fn written_late(r: &mut AuditRecord) {
    const LATE: &str = "; written late: the audit store was unavailable when the call ended at ";
    if !r.reason.contains(LATE) {
        r.reason = format!("{}{LATE}{}", r.reason, r.ts);
    }
    r.ts = record::now_rfc3339();
}

enum Msg {
    /// `urgent`: somebody waits for this entry and it must not linger.
    Append {
        entry: Entry,
        done: Waiter,
        urgent: bool,
        queued: Instant,
    },
    /// The side queue was empty and holds an entry now: its [`LINGER`] has started.
    Wake,
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Handle to one environment's audit log. Cloning shares the one writer.
#[derive(Clone)]
pub(crate) struct AuditLog {
    tx: SyncSender<Msg>,
    side: Arc<SideQueue>,
    healthy: Arc<AtomicBool>,
}

/// Most records one transaction takes; bounds the latency of the first in a batch.
pub(crate) const MAX_BATCH: usize = 512;
/// Longest a queued record nobody waits for stays uncommitted, waiting for an awaited
/// entry to share its fsync.
pub(crate) const LINGER: Duration = Duration::from_millis(5);
/// Queue depth before `append` waits: back-pressure instead of unbounded memory.
const QUEUE: usize = 4096;

/// How checkpoints are made: who signs, how often, and where copies go.
pub(crate) struct CheckpointPolicy {
    pub(crate) signer: checkpoint::Signer,
    pub(crate) interval: Duration,
    pub(crate) sinks: Vec<Sink>,
    /// The longest a call can run (its upstream's timeout) and a margin: an allow record
    /// older than this without an outcome gets a recovery record (`recovery.rs`).
    pub(crate) calls_end_within: Duration,
}

/// How often an unhealthy store is looked at when nothing else touches it.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often the writer looks for calls without an outcome.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// First and longest wait before a failed commit of kept records is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Entries that may linger, queued without waking the writer (only the first entry into an
/// empty queue does): an allowed call's outcome record then costs the writer no wake-up
/// of its own.
#[derive(Default)]
struct SideQueue(Mutex<Side>);

/// What became of an entry offered to the side queue.
enum Pushed {
    /// Queued into an empty queue: the writer must learn that its [`LINGER`] has started.
    First,
    /// Queued behind others: the writer already knows.
    Behind,
    /// Not queued, given back: the queue is full (the channel, which pushes back, takes it).
    Full(Queued),
    /// Not queued: the writer has stopped.
    Closed,
}

#[derive(Default)]
struct Side {
    entries: VecDeque<Queued>,
    /// The writer is gone: nothing queued now would ever be committed.
    closed: bool,
}

impl SideQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Side> {
        // Nothing that holds this lock can panic half-way: the queue is always consistent.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, q: Queued) -> Pushed {
        let mut side = self.lock();
        if side.closed {
            return Pushed::Closed;
        }
        if side.entries.len() >= QUEUE {
            return Pushed::Full(q);
        }
        side.entries.push_back(q);
        if side.entries.len() == 1 { Pushed::First } else { Pushed::Behind }
    }

    fn oldest(&self) -> Option<Instant> {
        self.lock().entries.front().map(|q| q.at)
    }

    /// Moves up to `max` entries, oldest first, to the end of `into`.
    fn take(&self, max: usize, into: &mut Vec<Queued>) {
        let mut side = self.lock();
        let n = max.min(side.entries.len());
        into.extend(side.entries.drain(..n));
    }

    /// Drops what is queued (its waiters learn the writer stopped) and refuses the rest.
    fn close(&self) {
        let mut side = self.lock();
        side.closed = true;
        side.entries.clear();
    }
}

struct Writer {
    side: Arc<SideQueue>,
    store: Box<dyn AuditStore>,
    policy: CheckpointPolicy,
    healthy: Arc<AtomicBool>,
    metrics: AuditMetrics,
    next_probe: Instant,
    /// Kept entries whose commit failed, oldest first, and when to try them again.
    retained: Vec<Queued>,
    retry_at: Option<Instant>,
    retry_wait: Duration,
    sweep: recovery::Sweep,
    next_sweep: Instant,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.side.close();
    }
}

impl Writer {
    /// Takes what is queued into transactions. A batch holding an urgent entry is committed
    /// at once and takes the lingering ones along (outcomes, unhurried appends); lingering
    /// entries alone wait up to [`LINGER`] for an urgent one to carry them, so that they
    /// cost no fsync of their own. Entries are chained in the order they were submitted.
    fn run(mut self, rx: Receiver<Msg>) {
        let mut next_checkpoint = Instant::now() + self.policy.interval;
        // Lingering entries that came through the channel (the side queue was full).
        let mut pending: Vec<Queued> = Vec::new();
        loop {
            let oldest = pending.first().map(|q| q.at).into_iter().chain(self.side.oldest()).min();
            let mut until = oldest.map_or(next_checkpoint, |at| (at + LINGER).min(next_checkpoint));
            until = until.min(self.next_sweep);
            if !self.healthy.load(Ordering::Relaxed) {
                until = until.min(self.next_probe);
            }
            if let Some(retry) = self.retry_at {
                until = until.min(retry);
            }
            let (mut urgent, mut shutdown, mut stopped) = (false, None, false);
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(first) => {
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Append {
                                entry,
                                done,
                                urgent: u,
                                queued,
                            } => {
                                urgent |= u;
                                pending.push(Queued { entry, done, at: queued });
                            }
                            Msg::Wake => {}
                            Msg::Shutdown { done } => {
                                shutdown = Some(done);
                                break;
                            }
                        }
                        if pending.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopped = true,
            }
            let now = Instant::now();
            let due = now >= until;
            if shutdown.is_some() || stopped {
                // What cannot be committed now is lost with the process; the next gateway's
                // sweep accounts for the calls whose outcomes it held.
                pending.append(&mut self.retained);
                loop {
                    self.side.take(MAX_BATCH, &mut pending);
                    if pending.is_empty() {
                        break;
                    }
                    pending.sort_by_key(|q| q.at);
                    if !self.commit(std::mem::take(&mut pending)) {
                        break;
                    }
                    pending.append(&mut self.retained);
                }
                self.checkpoint();
                if let Some(done) = shutdown {
                    let _ = done.send(());
                }
                return;
            }
            let retry_due = self.retry_at.is_some_and(|at| now >= at);
            // While kept records wait for the store, lingering entries wait with them (their
            // order must hold); an urgent entry is tried at once, and carries them along.
            let lingering_due = due && self.retry_at.is_none();
            if urgent || lingering_due || retry_due || pending.len() >= MAX_BATCH {
                pending.append(&mut self.retained);
                self.side.take(MAX_BATCH.saturating_sub(pending.len()), &mut pending);
                // In the order they were submitted (the two queues interleave): a clock read
                // after another entry became durable is later than that entry's, so this
                // also keeps every entry behind what it depends on.
                pending.sort_by_key(|q| q.at);
                if !pending.is_empty() {
                    self.commit(std::mem::take(&mut pending));
                }
            }
            if Instant::now() >= self.next_sweep {
                self.sweep(&mut pending);
            }
            if Instant::now() >= self.next_probe {
                self.probe();
            }
            // After the commit above, so that the checkpoint covers what was due with it.
            if Instant::now() >= next_checkpoint {
                self.checkpoint();
                next_checkpoint = Instant::now() + self.policy.interval;
            }
        }
    }

    /// Queues a recovery record for every call that can no longer be running and has no
    /// outcome in the store (`recovery.rs`).
    fn sweep(&mut self, pending: &mut Vec<Queued>) {
        self.next_sweep = Instant::now() + SWEEP_EVERY;
        if self.retry_at.is_some() {
            return;
        }
        match self.sweep.run(self.store.as_mut()) {
            Ok(records) => {
                for rec in records {
                    pending.push(Queued {
                        entry: Entry::OutcomeOnce(Box::new(rec)),
                        done: None,
                        at: Instant::now(),
                    });
                }
            }
            Err(e) => tracing::debug!("audit recovery sweep deferred: {e:?}"),
        }
    }

    /// Commits a batch; returns whether it was written. On failure every waiter is told, and
    /// the entries nobody waits for are kept for the next attempt.
    fn commit(&mut self, batch: Vec<Queued>) -> bool {
        let mut entries = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for q in batch {
            let mut entry = q.entry;
            // Only a kept outcome is an `OutcomeOnce` without a waiter that is not a recovery
            // record; recovery records are made just before their commit.
            if let Entry::OutcomeOnce(r) = &mut entry
                && q.done.is_none()
                && r.reason_code != crate::decision::ReasonCode::OutcomeUnknown
            {
                written_late(r);
            }
            entries.push(entry);
            waiters.push((q.done, q.at));
        }
        let started = Instant::now();
        let committed = self.store.commit(&mut entries);
        let took = started.elapsed();
        match committed {
            Ok(mut c) => {
                self.metrics.committed(&c.written, took);
                for n in std::mem::take(&mut c.noted) {
                    n.apply();
                }
                self.healthy.store(true, Ordering::Relaxed);
                self.retry_at = None;
                self.retry_wait = RETRY_FIRST;
                self.sweep.committed(c.head_before, c.head_after, &entries, &c.results);
                // Said once the record is written: the store skips a recovery record whose
                // call another gateway accounted for meanwhile.
                for (entry, result) in entries.iter().zip(&c.results) {
                    if let (Entry::OutcomeOnce(r), Done::Seq(_)) = (entry, result)
                        && r.reason_code == crate::decision::ReasonCode::OutcomeUnknown
                    {
                        tracing::warn!(trace_id = %r.trace_id, "{}", r.reason);
                    }
                }
                for ((done, queued), result) in waiters.into_iter().zip(c.results) {
                    if let Some(done) = done {
                        self.metrics.waited(queued.elapsed());
                        let _ = done.send(Ok(result));
                    }
                }
                true
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                for (entry, (done, at)) in entries.into_iter().zip(waiters) {
                    match done {
                        Some(done) => {
                            let _ = done.send(Err(unavailable(format!("{e:?}"))));
                        }
                        None => self.retained.push(Queued {
                            entry: entry.once(),
                            done: None,
                            at,
                        }),
                    }
                }
                tracing::error!(
                    kept = self.retained.len(),
                    "audit write failed; refusing the calls it carried, keeping the records of what already happened: {e:?}"
                );
                self.retry_at = Some(Instant::now() + self.retry_wait);
                self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                false
            }
        }
    }

    /// Has the store sign the head if it moved since the last checkpoint (by any gateway
    /// sharing the store), and copies a new checkpoint to the external sinks. A failure here
    /// is logged and leaves the log unhealthy (readiness).
    fn checkpoint(&mut self) {
        let cp = match self.store.checkpoint(&self.policy.signer) {
            Ok(Some(cp)) => cp,
            Ok(None) => return,
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!("audit checkpoint not stored: {e:?}");
                return;
            }
        };
        for sink in &self.policy.sinks {
            if let Err(e) = sink.write(&cp) {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!("audit checkpoint not copied to {sink}: {e}");
            }
        }
        self.metrics.checkpointed();
    }

    /// While the store is marked unhealthy and nothing is waiting to be retried, looks at it
    /// once per [`PROBE_EVERY`]: a store that is back is ready again without a request
    /// having to fail on it first (a load balancer sends none to a replica it sees unready).
    fn probe(&mut self) {
        self.next_probe = Instant::now() + PROBE_EVERY;
        if self.healthy.load(Ordering::Relaxed) || self.retry_at.is_some() {
            return;
        }
        if self.store.head().is_ok() {
            tracing::info!("the audit store is reachable again");
            self.healthy.store(true, Ordering::Relaxed);
        }
    }
}

impl AuditLog {
    pub(crate) fn start(
        store: Box<dyn AuditStore>,
        env: &str,
        policy: CheckpointPolicy,
        metrics: AuditMetrics,
    ) -> Result<Self, AuditError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let side = Arc::new(SideQueue::default());
        let (side_w, healthy_w) = (side.clone(), healthy.clone());
        // Everything that touches the store runs on the writer's thread (a store may block
        // on a runtime of its own, which an async worker must not).
        std::thread::Builder::new()
            .name(format!("audit-{env}"))
            .spawn(move || {
                let mut store = store;
                let head = store.head().map_or(0, |(seq, _)| seq);
                let writer = Writer {
                    side: side_w,
                    sweep: recovery::Sweep::new(head, policy.calls_end_within),
                    store,
                    policy,
                    healthy: healthy_w,
                    metrics,
                    next_probe: Instant::now() + PROBE_EVERY,
                    retained: Vec::new(),
                    retry_at: None,
                    retry_wait: RETRY_FIRST,
                    next_sweep: Instant::now(),
                };
                writer.run(rx);
            })
            .map_err(unavailable)?;
        Ok(Self { tx, side, healthy })
    }

    /// Appends one record and waits until it is durable. Returns its sequence number.
    pub(crate) async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        self.append_record(record, true).await
    }

    /// Like [`Self::append`], but the record may wait up to [`LINGER`] to share the next
    /// commit: for refusals whose answer is held back longer than that anyway.
    pub(crate) async fn append_unhurried(&self, record: AuditRecord) -> Result<u64, AuditError> {
        self.append_record(record, false).await
    }

    async fn append_record(&self, record: AuditRecord, urgent: bool) -> Result<u64, AuditError> {
        match self.submit(Entry::Record(Box::new(record)), urgent).await? {
            Done::Seq(seq) => Ok(seq),
            Done::Approval(_) | Done::Skipped => Err(unavailable("the store answered a record with something else")),
        }
    }

    /// Applies one approval step, with its audit records, durably.
    pub(crate) async fn approval(&self, op: approval::Op) -> Result<approval::Answer, AuditError> {
        match self.submit(Entry::Approval(op), true).await? {
            Done::Approval(a) => Ok(a),
            Done::Seq(_) | Done::Skipped => Err(unavailable("the store answered an approval with a record")),
        }
    }

    /// Queues a record behind everything appended before it, without waiting for it to be
    /// durable. Only for records that permit nothing: see the module's invariant. A failed
    /// write is logged by the writer and marks the log unhealthy.
    pub(crate) async fn enqueue(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.linger(Entry::Record(Box::new(record)), None).await
    }

    async fn submit(&self, entry: Entry, urgent: bool) -> Result<Done, AuditError> {
        let (done, wait) = oneshot::channel();
        if urgent {
            self.send(Msg::Append {
                entry,
                done: Some(done),
                urgent,
                queued: Instant::now(),
            })
            .await?;
        } else {
            self.linger(entry, Some(done)).await?;
        }
        wait.await.map_err(|_| unavailable("the audit writer stopped"))?
    }

    /// Queues an entry that may linger: on the side queue, waking the writer only when the
    /// queue was empty; through the channel (which pushes back) when the side queue is full.
    async fn linger(&self, entry: Entry, done: Waiter) -> Result<(), AuditError> {
        match self.side.push(Queued {
            entry,
            done,
            at: Instant::now(),
        }) {
            Pushed::Behind => Ok(()),
            // A full channel means the writer is busy and looks at the side queue next.
            Pushed::First => match self.tx.try_send(Msg::Wake) {
                Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
                Err(TrySendError::Disconnected(_)) => Err(unavailable("the audit writer stopped")),
            },
            Pushed::Closed => Err(unavailable("the audit writer stopped")),
            Pushed::Full(Queued { entry, done, at }) => {
                self.send(Msg::Append {
                    entry,
                    done,
                    urgent: false,
                    queued: at,
                })
                .await
            }
        }
    }

    async fn send(&self, msg: Msg) -> Result<(), AuditError> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            // The queue is full: wait for room off the async workers.
            Err(TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(msg).map_err(|_| ()))
                    .await
                    .map_err(unavailable)?
                    .map_err(|()| unavailable("the audit writer stopped"))
            }
            Err(TrySendError::Disconnected(_)) => Err(unavailable("the audit writer stopped")),
        }
    }

    /// Writes a final checkpoint and stops the writer; later appends fail.
    pub(crate) async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.send(Msg::Shutdown { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Whether the last write succeeded (for readiness).
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpoint::Checkpoint;

    /// Keeps the trace IDs of each committed batch.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<Vec<String>>>>);

    impl Memory {
        fn batches(&self) -> Vec<Vec<String>> {
            self.0.lock().unwrap().clone()
        }
        fn all(&self) -> Vec<String> {
            self.batches().concat()
        }
    }

    impl AuditStore for Memory {
        fn commit(&mut self, entries: &mut [Entry]) -> Result<Committed, AuditError> {
            let mut batches = self.0.lock().unwrap();
            let mut seq = batches.iter().map(Vec::len).sum::<usize>() as u64;
            let mut batch = Vec::new();
            let mut results = Vec::new();
            for e in entries.iter() {
                let Entry::Record(r) = e else {
                    return Err(unavailable("records only"));
                };
                seq += 1;
                batch.push(r.trace_id.as_str().to_string());
                results.push(Done::Seq(seq));
            }
            let records = batch.len();
            batches.push(batch);
            Ok(Committed {
                results,
                written: Vec::new(),
                noted: Vec::new(),
                head_before: seq - records as u64,
                head_after: seq,
            })
        }
        fn head(&mut self) -> Result<(u64, String), AuditError> {
            Ok((self.all().len() as u64, String::new()))
        }
        fn checkpoint(&mut self, _: &checkpoint::Signer) -> Result<Option<Checkpoint>, AuditError> {
            Ok(None)
        }
        fn calls_after(&mut self, _: u64, _: usize) -> Result<Vec<AuditRecord>, AuditError> {
            Ok(Vec::new())
        }
        fn record_at(&mut self, _: u64) -> Result<Option<AuditRecord>, AuditError> {
            Ok(None)
        }
    }

    /// A writer over a fresh in-memory store, and the store to look into.
    fn started() -> (Memory, AuditLog) {
        let store = Memory::default();
        let policy = CheckpointPolicy {
            signer: checkpoint::Signer::new("t", ed25519_dalek::SigningKey::from_bytes(&[1; 32])),
            // Only lingering and urgent entries may cause a commit in these tests.
            interval: Duration::from_secs(3600),
            sinks: Vec::new(),
            calls_end_within: Duration::from_secs(3600),
        };
        let log = AuditLog::start(Box::new(store.clone()), "t", policy, crate::metrics::AuditMetrics::unregistered()).unwrap();
        (store, log)
    }

    fn record(trace: &str) -> AuditRecord {
        record::tests::blank("t", trace)
    }

    async fn committed_within(store: &Memory, n: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while store.all().len() < n {
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    #[tokio::test]
    async fn a_lingering_record_alone_is_committed_without_an_urgent_one() {
        let (store, log) = started();
        log.enqueue(record("a")).await.unwrap();
        log.enqueue(record("b")).await.unwrap();
        // Nothing else is coming and the next checkpoint is an hour away: only the
        // linger deadline can commit these.
        assert!(committed_within(&store, 2, Duration::from_secs(2)).await, "{:?}", store.batches());
        assert_eq!(store.all(), ["a", "b"]);
    }

    #[tokio::test]
    async fn records_are_chained_in_the_order_they_were_submitted() {
        let (store, log) = started();
        log.enqueue(record("outcome-1")).await.unwrap();
        log.append(record("allow-2")).await.unwrap();
        log.enqueue(record("outcome-2")).await.unwrap();
        log.append(record("allow-3")).await.unwrap();
        assert!(committed_within(&store, 4, Duration::from_secs(2)).await);
        assert_eq!(store.all(), ["outcome-1", "allow-2", "outcome-2", "allow-3"]);
    }

    #[tokio::test]
    async fn unhurried_appends_are_durable_when_they_return_and_share_commits() {
        let (store, log) = started();
        let names: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
        let seqs = futures_util::future::join_all(names.iter().map(|n| log.append_unhurried(record(n)))).await;
        assert!(seqs.iter().all(Result::is_ok));
        let mut all = store.all();
        all.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(all, want, "every record is committed before its append returns");
        let commits = store.batches().len();
        assert!(commits <= 5, "100 unhurried appends submitted together took {commits} commits");
    }

    #[tokio::test]
    async fn appends_after_the_writer_stopped_fail_instead_of_waiting() {
        let (store, log) = started();
        log.enqueue(record("last")).await.unwrap();
        log.shutdown().await;
        assert_eq!(store.all(), ["last"], "shutdown commits what was queued");
        let late = tokio::time::timeout(Duration::from_secs(5), async {
            (
                log.append_unhurried(record("x")).await,
                log.enqueue(record("y")).await,
                log.append(record("z")).await,
            )
        })
        .await
        .expect("no append may hang once the writer is gone");
        assert!(late.0.is_err() && late.1.is_err() && late.2.is_err());
    }
}
