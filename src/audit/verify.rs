//! `audit verify`: recomputes the whole chain and checks every checkpoint against it.
//!
//! Detects an edited record (its hash no longer matches its content, or an indexed column no
//! longer matches the record), a deleted one (a gap in the sequence), an inserted or
//! reordered one (a record that does not name its predecessor's hash, or sits at another
//! position than it says), and truncation of records a checkpoint covers (in the store's own
//! checkpoints or in an external copy).

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use std::collections::HashSet;

use super::approval::{RowKey, Status};
use super::checkpoint::Checkpoint;
use super::record::{AuditRecord, GENESIS};
use super::store::{AuditReader, COLUMN_NAMES, StoredRow, column_of};
use crate::decision::ReasonCode;

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) records: u64,
    pub(crate) checkpoints: usize,
    pub(crate) external_checkpoints: usize,
    pub(crate) approval_rows: usize,
    pub(crate) head: Option<(u64, String)>,
    /// The first problem found, naming the record; `None` when the log verifies.
    pub(crate) first_problem: Option<String>,
    pub(crate) warnings: Vec<String>,
}

/// How far a record's time may lie before an earlier record's: clocks of gateways sharing a
/// store differ a little. Checkpoints, signed by one writer at a time, never go back.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5);

fn time_of(ts: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(ts, &Rfc3339).ok()
}

/// Checkpoints of one source (the store's, or an external copy) in the order they were
/// written: their times and sequence numbers never go back.
#[derive(Default)]
struct CheckpointOrder(Option<(OffsetDateTime, u64, String)>);

impl CheckpointOrder {
    fn next(&mut self, cp: &Checkpoint, whence: &str) -> Option<String> {
        let Some(at) = time_of(&cp.ts) else {
            return Some(format!("{whence} checkpoint at #{} has an unreadable time `{}`", cp.seq, cp.ts));
        };
        if let Some((last, last_seq, last_ts)) = &self.0 {
            if at < *last {
                return Some(format!(
                    "{whence} checkpoint at #{} goes back in time: dated {} after one at #{last_seq} dated {last_ts}",
                    cp.seq, cp.ts
                ));
            }
            if cp.seq < *last_seq {
                return Some(format!("{whence} checkpoint at #{} comes after one at #{last_seq}", cp.seq));
            }
        }
        self.0 = Some((at, cp.seq, cp.ts.clone()));
        None
    }
}

/// `row_key`: the key approval rows are sealed with, where the caller holds the signing key
/// (with only a public key, rows are checked against the chain but not for their MAC).
pub(crate) async fn verify(
    store: &dyn AuditReader,
    env: &str,
    keys: &[VerifyingKey],
    external: Option<&Path>,
    row_key: Option<&RowKey>,
) -> Result<Report, String> {
    let rows = store.records(0).await.map_err(|e| e.for_operator())?;
    let mut report = Report::default();
    let mut hashes: Vec<String> = Vec::with_capacity(rows.len());
    let mut prev = GENESIS.to_string();
    // The latest time seen so far, and which record had it.
    let mut latest: Option<(OffsetDateTime, i64, String)> = None;
    // Approval requests the chain records as granted.
    let mut granted: HashSet<String> = HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let expected = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let problem = match check_row(row, expected, &prev, env) {
            Err(p) => Some(p),
            Ok(rec) => match time_of(&rec.ts) {
                None => Some(format!("record #{} has an unreadable time `{}`", row.seq, rec.ts)),
                Some(at) => {
                    if rec.reason_code == ReasonCode::ApprovalGranted
                        && let Some(a) = &rec.approval
                    {
                        granted.insert(a.id.clone());
                    }
                    match &latest {
                        Some((last, seq, last_ts)) if at + CLOCK_SKEW < *last => Some(format!(
                            "record #{} goes back in time: written {}, after record #{seq} written {last_ts} (more than {}s apart)",
                            row.seq,
                            rec.ts,
                            CLOCK_SKEW.as_secs()
                        )),
                        Some((last, _, _)) if at <= *last => None,
                        _ => {
                            latest = Some((at, row.seq, rec.ts));
                            None
                        }
                    }
                }
            },
        };
        if let Some(p) = problem {
            report.first_problem = Some(p);
            report.records = i as u64;
            return Ok(report);
        }
        prev = row.hash.clone();
        hashes.push(row.hash.clone());
    }
    report.records = rows.len() as u64;
    report.head = rows.last().map(|r| (u64::try_from(r.seq).unwrap_or(0), r.hash.clone()));

    let check_cp = |cp: &Checkpoint, whence: &str| -> Option<String> {
        if cp.env != env {
            return Some(format!("{whence} checkpoint at #{} is for environment `{}`", cp.seq, cp.env));
        }
        let verified = keys.iter().any(|k| cp.verify(k).is_ok());
        if !verified {
            return Some(format!(
                "{whence} checkpoint at #{} has no valid signature by this environment's audit key",
                cp.seq
            ));
        }
        let idx = usize::try_from(cp.seq).ok()?.checked_sub(1)?;
        match hashes.get(idx) {
            None => Some(format!(
                "the log is truncated: {whence} checkpoint covers record #{} but the log ends at #{}",
                cp.seq,
                hashes.len()
            )),
            Some(h) if *h != cp.head_hash => Some(format!("record #{} differs from what the {whence} checkpoint signed", cp.seq)),
            Some(_) => None,
        }
    };
    let mut order = CheckpointOrder::default();
    for cp in store.checkpoints().await.map_err(|e| e.for_operator())? {
        report.checkpoints += 1;
        let problem = match cp {
            Ok(cp) => check_cp(&cp, "a stored").or_else(|| order.next(&cp, "a stored")),
            Err(e) => Some(format!("a stored checkpoint is unreadable: {e}")),
        };
        if problem.is_some() {
            report.first_problem = problem;
            return Ok(report);
        }
    }
    if let Some(path) = external {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let mut order = CheckpointOrder::default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            report.external_checkpoints += 1;
            let problem = match serde_json::from_str::<Checkpoint>(line) {
                Ok(cp) => check_cp(&cp, "an external").or_else(|| order.next(&cp, "an external")),
                Err(e) => Some(format!("line {} of `{}` is not a checkpoint: {e}", n + 1, path.display())),
            };
            if problem.is_some() {
                report.first_problem = problem;
                return Ok(report);
            }
        }
    }
    if let Some(problem) = check_approval_rows(store, row_key, &granted, &mut report).await? {
        report.first_problem = Some(problem);
        return Ok(report);
    }
    if report.checkpoints == 0 && report.external_checkpoints == 0 && report.records > 0 {
        report
            .warnings
            .push("no checkpoint yet: edits are detected, truncation of the newest records is not".into());
    }
    Ok(report)
}

/// Approval rows agree with the chain: each is sealed with the environment's row key (where
/// it is known), and a row that says approved or executed has a grant in the chain.
async fn check_approval_rows(
    store: &dyn AuditReader,
    row_key: Option<&RowKey>,
    granted: &HashSet<String>,
    report: &mut Report,
) -> Result<Option<String>, String> {
    let rows = store.approval_rows().await.map_err(|e| e.for_operator())?;
    if row_key.is_none() && !rows.is_empty() {
        report
            .warnings
            .push("approval rows were checked against the chain, not for their MAC: that needs the audit signing key".into());
    }
    for (req, mac) in rows {
        report.approval_rows += 1;
        if let Some(key) = row_key
            && mac.as_deref() != Some(key.mac(&req).as_str())
        {
            return Ok(Some(format!(
                "approval request {} was changed outside the gateway: its row's MAC does not match (status `{}`)",
                req.id, req.status
            )));
        }
        if matches!(req.status, Status::Approved | Status::Executed) && !granted.contains(&req.id) {
            return Ok(Some(format!(
                "approval request {} is `{}` in its row, but the chain records no grant of it",
                req.id, req.status
            )));
        }
    }
    Ok(None)
}

/// The row's problem, or its record when it has none.
pub(crate) fn check_row(row: &StoredRow, expected: i64, prev: &str, env: &str) -> Result<AuditRecord, String> {
    if row.seq != expected {
        return Err(if row.seq > expected {
            format!("record #{expected} is missing (deleted); the next record is #{}", row.seq)
        } else {
            format!("record #{} is out of order", row.seq)
        });
    }
    let seq = row.seq;
    let rec: AuditRecord = match serde_json::from_str(&row.record) {
        Ok(r) => r,
        Err(_) => return Err(format!("record #{seq} is unreadable (edited)")),
    };
    if i64::try_from(rec.seq).ok() != Some(seq) {
        return Err(format!(
            "record #{seq} was moved: its content says #{} (reordered or inserted)",
            rec.seq
        ));
    }
    if rec.prev_hash != prev || row.prev_hash != prev {
        return Err(format!(
            "record #{seq} does not follow record #{} (inserted, reordered or edited)",
            seq - 1
        ));
    }
    if rec.compute_hash() != rec.hash || row.hash != rec.hash {
        return Err(format!("record #{seq} was edited: its hash does not match its content"));
    }
    for (i, name) in COLUMN_NAMES.iter().enumerate() {
        if row.columns.get(i).cloned().flatten() != column_of(&rec, i) {
            return Err(format!("record #{seq} was edited: column `{name}` differs from the hashed record"));
        }
    }
    if rec.env != env {
        return Err(format!("record #{seq} belongs to environment `{}`, not `{env}`", rec.env));
    }
    Ok(rec)
}
