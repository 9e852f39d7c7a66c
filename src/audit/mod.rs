//! The audit log: one append-only, hash-chained record per decision and per outcome, written
//! durably before the call it describes goes on.
//!
//! INVARIANT: [`AuditLog::append`] returns only after the record is committed and fsync'd
//! (SQLite WAL, `synchronous=FULL`); an error means "not recorded", and the caller refuses.
//! Concurrent appends are committed together by one writer thread (group commit), so
//! durability costs one fsync per batch, not per call.

pub mod record;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::oneshot;

pub use record::{ApprovalRef, AuditRecord, ClientRef, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log is unavailable")]
    Unavailable { detail: String },
}

struct Job {
    record: AuditRecord,
    done: oneshot::Sender<Result<u64, AuditError>>,
}

/// Counters for the group-commit figures (records per fsync) reported in metrics.
#[derive(Default)]
pub struct AuditStats {
    pub records: AtomicU64,
    pub commits: AtomicU64,
}

/// Handle to one environment's audit log. Cloning shares the one writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: std::sync::mpsc::SyncSender<Job>,
    healthy: Arc<AtomicBool>,
    pub stats: Arc<AuditStats>,
}

/// Most records one transaction takes; bounds the latency of the first in a batch.
const MAX_BATCH: usize = 512;
/// Queue depth before `append` waits: back-pressure instead of unbounded memory.
const QUEUE: usize = 4096;

impl AuditLog {
    /// Opens (creating if needed) the store and starts its writer thread.
    pub fn open(path: &Path, env: &str) -> Result<Self, AuditError> {
        let mut store = sqlite::Store::open(path, env)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(AuditStats::default());
        let (h, st) = (healthy.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("audit-{env}"))
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let mut records: Vec<AuditRecord> = batch.iter().map(|j| j.record.clone()).collect();
                    match store.append_batch(&mut records) {
                        Ok(()) => {
                            h.store(true, Ordering::Relaxed);
                            st.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                            st.commits.fetch_add(1, Ordering::Relaxed);
                            for (job, rec) in batch.into_iter().zip(records) {
                                let _ = job.done.send(Ok(rec.seq));
                            }
                        }
                        Err(e) => {
                            h.store(false, Ordering::Relaxed);
                            tracing::error!("audit write failed: {e:?}");
                            for job in batch {
                                let _ = job.done.send(Err(AuditError::Unavailable { detail: format!("{e:?}") }));
                            }
                        }
                    }
                }
            })
            .map_err(|e| AuditError::Unavailable { detail: e.to_string() })?;
        Ok(Self { tx, healthy, stats })
    }

    /// Appends one record and waits until it is durable. Returns its sequence number.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.clone();
        // `send` blocks only when the queue is full; keep that off the async workers.
        let job = Job { record, done };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || tx.send(job).map_err(|_| ()))
                    .await
                    .map_err(|e| AuditError::Unavailable { detail: e.to_string() })?
                    .map_err(|_| AuditError::Unavailable {
                        detail: "writer stopped".into(),
                    })?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(AuditError::Unavailable {
                    detail: "writer stopped".into(),
                });
            }
        }
        wait.await.map_err(|_| AuditError::Unavailable {
            detail: "writer stopped".into(),
        })?
    }

    /// Whether the last write succeeded (for readiness).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Reads every record of a store in order, for export and verification tools.
pub fn read_all(path: &Path) -> Result<Vec<(AuditRecord, String)>, String> {
    sqlite::read_all(path)
}
