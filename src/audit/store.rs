//! The storage seam of the audit log: what a store must do for the writer
//! ([`AuditStore`]: chain and commit batches, checkpoints) and for everyone who reads the
//! log or the approval queue ([`AuditReader`]: the gateway's API, waiting calls, `audit
//! verify | export | tail`, `probe`). Nothing outside `src/audit/` knows which store it has.

use std::future::Future;
use std::pin::Pin;

use super::approval::{Request, Status};
use super::checkpoint::Checkpoint;
use super::record::AuditRecord;
use super::{AuditError, Committed, Entry};

/// Where records, checkpoints and approval state are kept, as the writer thread sees it.
pub(crate) trait AuditStore: Send + 'static {
    /// Applies a batch in one durable transaction, chaining (seq, prev_hash, hash) every
    /// record it appends; all or nothing.
    fn commit(&mut self, entries: Vec<Entry>) -> Result<Committed, AuditError>;
    /// The last record's sequence number and hash (0 and the genesis hash when empty).
    fn head(&mut self) -> Result<(u64, String), AuditError>;
    fn write_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), AuditError>;
}

/// A read of the store, off the async workers.
pub(crate) type Reading<'a, T> = Pin<Box<dyn Future<Output = Result<T, AuditError>> + Send + 'a>>;

/// One record as stored: its indexed columns beside the hashed text, for the verifier to
/// compare.
#[derive(Debug, Clone)]
pub(crate) struct StoredRow {
    pub(crate) seq: i64,
    /// The columns of [`COLUMN_NAMES`], in that order.
    pub(crate) columns: [Option<String>; 8],
    pub(crate) record: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// The columns a store keeps beside each record, for queries; each must equal the record's
/// own field ([`column_of`]), or the verifier reports the row as edited.
pub(crate) const COLUMN_NAMES: [&str; 8] = ["ts", "env", "trace_id", "decision", "reason_code", "tool", "subject", "approval_id"];

/// What a record's column `i` of [`COLUMN_NAMES`] must hold.
pub(crate) fn column_of(rec: &AuditRecord, i: usize) -> Option<String> {
    match i {
        0 => Some(rec.ts.clone()),
        1 => Some(rec.env.clone()),
        2 => Some(rec.trace_id.as_str().to_string()),
        3 => Some(rec.decision.as_str().to_string()),
        4 => Some(rec.reason_code.as_str().to_string()),
        5 => rec.tool.clone(),
        6 => rec.principal.as_ref().map(|p| p.sub.clone()),
        _ => rec.approval.as_ref().map(|a| a.id.clone()),
    }
}

/// Read access to one environment's log and approval queue. Changes go through the writer.
pub(crate) trait AuditReader: Send + Sync + 'static {
    /// Record rows in sequence order after `after` (exclusive).
    fn records(&self, after: i64) -> Reading<'_, Vec<StoredRow>>;
    /// Every stored checkpoint, oldest first; an unreadable one as the reason it is.
    fn checkpoints(&self) -> Reading<'_, Vec<Result<Checkpoint, String>>>;
    /// Requests of this environment, newest first; only `status` ones when given.
    fn approvals(&self, status: Option<Status>, limit: u32) -> Reading<'_, Vec<Request>>;
    fn approval(&self, id: &str) -> Reading<'_, Option<Request>>;
    /// Every record of one approval request, in order: its whole history.
    fn trail(&self, approval_id: &str) -> Reading<'_, Vec<AuditRecord>>;
}

/// Held while a store refuses every write (`probe --simulate-outage`); released on drop.
pub(crate) trait StoreLock: Send {}
