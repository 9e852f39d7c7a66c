//! The audit log: one append-only, hash-chained record per decision and per outcome, written
//! durably before the call it describes goes on, and signed checkpoints over its head.
//!
//! INVARIANT: [`AuditLog::append`] returns only after the record is committed and fsync'd
//! (SQLite WAL, `synchronous=FULL`); an error means "not recorded", and the caller refuses.
//! [`AuditLog::enqueue`] is for the one record that follows an action rather than permits
//! it (a call's outcome): it is queued behind the call's durable decision record and
//! committed with the next batch that somebody waits for (at most [`LINGER`] later), and the
//! answer does not wait for its fsync.
//! Concurrent appends are committed together by one writer thread (group commit): whatever
//! is queued when a transaction starts, up to [`MAX_BATCH`], goes into it, so durability
//! costs one fsync per batch, not per call.
//!
//! Approval state lives in the same store and changes only through the writer, in the same
//! transaction as the records of each step (see [`crate::approval`]).

pub mod checkpoint;
pub mod export;
pub mod record;
mod sqlite;
pub mod verify;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Histogram;

pub use checkpoint::{Checkpoint, Sink};
pub use record::{ApprovalRef, AuditRecord, ClientRef, Outcome, PrincipalRef};
pub use sqlite::{ApprovalReader, SqliteStore, read_checkpoints, read_records};

use crate::approval;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log is unavailable")]
    Unavailable { detail: String },
}

pub fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable { detail: e.to_string() }
}

/// One unit of work for the writer: a record to append, or an approval step (which appends
/// the records describing it in the same transaction).
#[derive(Debug)]
pub enum Entry {
    Record(Box<AuditRecord>),
    Approval(approval::Op),
}

/// What one entry came to.
#[derive(Debug)]
pub enum Done {
    /// The appended record's sequence number.
    Seq(u64),
    Approval(approval::Answer),
}

/// A committed batch: one result per entry, in order, and how many records it appended.
pub struct Committed {
    pub results: Vec<Done>,
    pub records: usize,
}

/// Where records, checkpoints and approval state are kept. The writer thread owns one; the
/// pipeline never sees which.
pub trait AuditStore: Send + 'static {
    /// Applies a batch in one durable transaction, chaining (seq, prev_hash, hash) every
    /// record it appends; all or nothing.
    fn commit(&mut self, entries: Vec<Entry>) -> Result<Committed, AuditError>;
    /// The last record's sequence number and hash (0 and the genesis hash when empty).
    fn head(&mut self) -> Result<(u64, String), AuditError>;
    fn write_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), AuditError>;
}

/// Where the outcome of one entry goes; `None` for a queued record nobody waits on.
type Waiter = Option<oneshot::Sender<Result<Done, AuditError>>>;
/// An entry taken off the queue, with where its outcome goes and when it was submitted.
type Queued = (Entry, (Waiter, Instant));

enum Msg {
    Append { entry: Entry, done: Waiter, queued: Instant },
    Shutdown { done: oneshot::Sender<()> },
}

/// Counters for the group-commit figures (records per fsync) reported in metrics.
#[derive(Default)]
pub struct AuditStats {
    pub records: AtomicU64,
    pub commits: AtomicU64,
    pub checkpoints: AtomicU64,
    /// How long each durable transaction took, begin to fsync'd commit.
    pub commit_seconds: Histogram,
    /// How long an awaited append took from submission to durable: what an allowed call
    /// waits before it is forwarded (queueing behind the current commit included).
    pub wait_seconds: Histogram,
}

/// Handle to one environment's audit log. Cloning shares the one writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    healthy: Arc<AtomicBool>,
    pub stats: Arc<AuditStats>,
}

/// Most records one transaction takes; bounds the latency of the first in a batch.
pub const MAX_BATCH: usize = 512;
/// Longest a queued record nobody waits for stays uncommitted, waiting for an awaited
/// entry to share its fsync.
pub const LINGER: Duration = Duration::from_millis(5);
/// Queue depth before `append` waits: back-pressure instead of unbounded memory.
const QUEUE: usize = 4096;

/// How checkpoints are made: who signs, how often, and where copies go.
pub struct CheckpointPolicy {
    pub signer: checkpoint::Signer,
    pub interval: Duration,
    pub sinks: Vec<Sink>,
}

struct Writer {
    store: Box<dyn AuditStore>,
    policy: CheckpointPolicy,
    healthy: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    last_checkpoint_seq: u64,
}

impl Writer {
    /// Takes what is queued into transactions. A batch holding an entry somebody waits for
    /// is committed at once; one holding only queued records (outcomes) lingers up to
    /// [`LINGER`] for such an entry to carry it, so that it costs no fsync of its own.
    /// Order is kept either way: nothing is committed before what was queued ahead of it.
    fn run(mut self, rx: Receiver<Msg>) {
        let mut next_checkpoint = Instant::now() + self.policy.interval;
        let mut pending: Vec<Queued> = Vec::new();
        let mut linger_until: Option<Instant> = None;
        loop {
            let until = linger_until.map_or(next_checkpoint, |l| l.min(next_checkpoint));
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Msg::Append { entry, done, queued }) => {
                    let mut awaited = done.is_some();
                    pending.push((entry, (done, queued)));
                    let mut shutdown = None;
                    while pending.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Msg::Append { entry, done, queued }) => {
                                awaited |= done.is_some();
                                pending.push((entry, (done, queued)));
                            }
                            Ok(Msg::Shutdown { done }) => {
                                shutdown = Some(done);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if awaited || shutdown.is_some() || pending.len() >= MAX_BATCH {
                        self.commit(std::mem::take(&mut pending));
                        linger_until = None;
                    } else if linger_until.is_none() {
                        linger_until = Some(Instant::now() + LINGER);
                    }
                    if let Some(done) = shutdown {
                        self.checkpoint();
                        let _ = done.send(());
                        return;
                    }
                }
                Ok(Msg::Shutdown { done }) => {
                    self.flush(&mut pending);
                    self.checkpoint();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // A lingering batch is due, or a checkpoint is (which must cover it).
                    self.flush(&mut pending);
                    linger_until = None;
                    if Instant::now() >= next_checkpoint {
                        self.checkpoint();
                        next_checkpoint = Instant::now() + self.policy.interval;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(&mut pending);
                    self.checkpoint();
                    return;
                }
            }
        }
    }

    fn flush(&mut self, pending: &mut Vec<Queued>) {
        if !pending.is_empty() {
            self.commit(std::mem::take(pending));
        }
    }

    fn commit(&mut self, batch: Vec<Queued>) {
        let (entries, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let started = Instant::now();
        let committed = self.store.commit(entries);
        self.stats.commit_seconds.observe(started.elapsed());
        match committed {
            Ok(c) => {
                self.healthy.store(true, Ordering::Relaxed);
                if c.records > 0 {
                    self.stats.records.fetch_add(c.records as u64, Ordering::Relaxed);
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                }
                for ((done, queued), result) in waiters.into_iter().zip(c.results) {
                    if let Some(done) = done {
                        self.stats.wait_seconds.observe(queued.elapsed());
                        let _ = done.send(Ok(result));
                    }
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!("audit write failed; refusing the calls it carried: {e:?}");
                for done in waiters.into_iter().filter_map(|(done, _)| done) {
                    let _ = done.send(Err(unavailable(format!("{e:?}"))));
                }
            }
        }
    }

    /// Signs the head if it moved since the last checkpoint, stores it, and copies it to the
    /// external sinks. A failure here is logged and leaves the log unhealthy (readiness).
    fn checkpoint(&mut self) {
        let head = match self.store.head() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("audit checkpoint: cannot read the head: {e:?}");
                return;
            }
        };
        if head.0 == 0 || head.0 == self.last_checkpoint_seq {
            return;
        }
        let cp = self.policy.signer.sign(head.0, &head.1);
        if let Err(e) = self.store.write_checkpoint(&cp) {
            self.healthy.store(false, Ordering::Relaxed);
            tracing::error!("audit checkpoint not stored: {e:?}");
            return;
        }
        for sink in &self.policy.sinks {
            if let Err(e) = sink.write(&cp) {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!("audit checkpoint not copied to {sink}: {e}");
            }
        }
        self.last_checkpoint_seq = head.0;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    }
}

impl AuditLog {
    /// Opens the environment's SQLite store and starts its writer thread.
    pub fn open(path: &Path, env: &str, policy: CheckpointPolicy) -> Result<Self, AuditError> {
        let store = SqliteStore::open(path, env)?;
        Self::start(Box::new(store), env, policy)
    }

    pub fn start(mut store: Box<dyn AuditStore>, env: &str, policy: CheckpointPolicy) -> Result<Self, AuditError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(AuditStats::default());
        // After a restart the first checkpoint may sign a head already covered: harmless.
        let _ = store.head();
        let writer = Writer {
            store,
            policy,
            healthy: healthy.clone(),
            stats: stats.clone(),
            last_checkpoint_seq: 0,
        };
        std::thread::Builder::new()
            .name(format!("audit-{env}"))
            .spawn(move || writer.run(rx))
            .map_err(unavailable)?;
        Ok(Self { tx, healthy, stats })
    }

    /// Appends one record and waits until it is durable. Returns its sequence number.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        match self.submit(Entry::Record(Box::new(record))).await? {
            Done::Seq(seq) => Ok(seq),
            Done::Approval(_) => Err(unavailable("the store answered a record with an approval")),
        }
    }

    /// Applies one approval step, with its audit records, durably.
    pub async fn approval(&self, op: approval::Op) -> Result<approval::Answer, AuditError> {
        match self.submit(Entry::Approval(op)).await? {
            Done::Approval(a) => Ok(a),
            Done::Seq(_) => Err(unavailable("the store answered an approval with a record")),
        }
    }

    /// Queues a record behind everything appended before it, without waiting for it to be
    /// durable. Only for records that permit nothing: see the module's invariant. A failed
    /// write is logged by the writer and marks the log unhealthy.
    pub async fn enqueue(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.send(Msg::Append {
            entry: Entry::Record(Box::new(record)),
            done: None,
            queued: Instant::now(),
        })
        .await
    }

    async fn submit(&self, entry: Entry) -> Result<Done, AuditError> {
        let (done, wait) = oneshot::channel();
        self.send(Msg::Append {
            entry,
            done: Some(done),
            queued: Instant::now(),
        })
        .await?;
        wait.await.map_err(|_| unavailable("the audit writer stopped"))?
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
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.send(Msg::Shutdown { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Whether the last write succeeded (for readiness).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
