//! The storage seam of the audit log: what a store must do for the writer
//! ([`AuditStore`]: chain and commit batches, checkpoints) and for everyone who reads the
//! log or the approval queue ([`AuditReader`]: the gateway's API, waiting calls, `audit
//! verify | export | tail`, `probe`). Nothing outside `src/audit/` knows which store it has.

use std::future::Future;
use std::pin::Pin;

use super::approval::{Request, Status};
use super::checkpoint::{Checkpoint, Signer};
use super::record::AuditRecord;
use super::{AuditError, Committed, Entry};

/// Where records, checkpoints and approval state are kept, as the writer thread sees it.
pub(crate) trait AuditStore: Send + 'static {
    /// Applies a batch in one durable transaction, chaining (seq, prev_hash, hash) every
    /// record it appends; all or nothing. The entries stay the caller's: after a failure the
    /// writer may commit some of them again.
    fn commit(&mut self, entries: &mut [Entry]) -> Result<Committed, AuditError>;
    /// The records after `after` (at most `limit`) that decide or describe a call's
    /// execution: allows and outcomes, for the recovery sweep (`recovery.rs`).
    fn calls_after(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError>;
    /// The record at `seq`, if there is one.
    fn record_at(&mut self, seq: u64) -> Result<Option<AuditRecord>, AuditError>;
    /// The last record's sequence number and hash (0 and the genesis hash when empty).
    fn head(&mut self) -> Result<(u64, String), AuditError>;
    /// Signs the head and stores the checkpoint, if the head moved since the newest stored
    /// checkpoint; all in one transaction that holds the chain, so that checkpoints written
    /// by several gateways sharing the store never go back in sequence or time (a
    /// checkpoint's time is never before the one before it) and never repeat a sequence.
    fn checkpoint(&mut self, signer: &Signer) -> Result<Option<Checkpoint>, AuditError>;
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
    /// Requests of this environment, newest first, from after `before` (the position of the
    /// last one of the previous page) on; only `status` ones when given.
    fn approvals(&self, status: Option<Status>, before: Option<PagePosition>, limit: u32) -> Reading<'_, Vec<Request>>;
    fn approval(&self, id: &str) -> Reading<'_, Option<Request>>;
    /// The explorer's page: this environment's rows matching `q`, newest first.
    fn search(&self, q: &Search) -> Reading<'_, Vec<StoredRow>>;
    /// The rows from `first` to `last` (inclusive), in order: a record and its neighbours.
    fn rows_between(&self, first: i64, last: i64) -> Reading<'_, Vec<StoredRow>>;
    /// What the explorer charts over `[from, to)` (times as `YYYY-MM-DDTHH:MM:SS`).
    fn tallies(&self, from: &str, to: &str) -> Reading<'_, Tallies>;
    /// How many of this environment's requests are in each state at `now_ms` (a pending one
    /// past its expiry counts as expired), by state name.
    fn approval_counts(&self, now_ms: i64) -> Reading<'_, Vec<(String, u64)>>;
    /// Every record of one approval request, in order: its whole history.
    fn trail(&self, approval_id: &str) -> Reading<'_, Vec<AuditRecord>>;
    /// Every approval request of the store, each with the MAC stored with its row
    /// (`audit verify` checks them).
    fn approval_rows(&self) -> Reading<'_, Vec<(Request, Option<String>)>>;
    /// Wakes `events`' waiters whenever another gateway sharing the store changes an
    /// approval request, for as long as `events` lives; a store that cannot tell leaves it
    /// to [`Self::poll_interval`].
    fn watch(&self, _events: &std::sync::Arc<tokio::sync::Notify>) {}
    /// How often a call waiting for a decision looks at the store by itself: `None` when
    /// [`Self::watch`] reports every change.
    fn poll_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1))
    }
}

/// The explorer's filter. Times are compared to the second (`YYYY-MM-DDTHH:MM:SS`, UTC),
/// over `[from, to)`; the others are exact matches; `before`: only rows before this sequence
/// number (the page before).
#[derive(Debug, Clone, Default)]
pub(crate) struct Search {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) decision: Option<String>,
    pub(crate) reason_code: Option<String>,
    pub(crate) tool: Option<String>,
    /// The caller's subject.
    pub(crate) caller: Option<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) before: Option<i64>,
    pub(crate) limit: u32,
}

/// Counts over a time range: decisions per minute (`YYYY-MM-DDTHH:MM`, decision, count; an
/// executed call's outcome record is not counted again), the most frequent reason codes and
/// callers (at most ten each).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tallies {
    pub(crate) per_minute: Vec<(String, String, u64)>,
    pub(crate) reason_codes: Vec<(String, u64)>,
    pub(crate) callers: Vec<(String, u64)>,
}

/// Where a page of approval requests ends: the last request's creation time and id (newest
/// first, ties broken by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PagePosition {
    pub(crate) created_ms: i64,
    pub(crate) id: String,
}

impl PagePosition {
    pub(crate) fn of(req: &Request) -> Self {
        Self {
            created_ms: req.created_ms,
            id: req.id.clone(),
        }
    }

    /// `CREATED_MS.ID`, as the API hands it out.
    pub(crate) fn to_cursor(&self) -> String {
        format!("{}.{}", self.created_ms, self.id)
    }

    pub(crate) fn from_cursor(text: &str) -> Option<Self> {
        let (ms, id) = text.split_once('.')?;
        let id = uuid::Uuid::parse_str(id).ok()?.to_string();
        Some(Self {
            created_ms: ms.parse().ok()?,
            id,
        })
    }
}

/// Held while a store refuses every write (`probe --simulate-outage`); released on drop.
pub(crate) trait StoreLock: Send {}
