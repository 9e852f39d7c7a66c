//! `audit verify`: recomputes the whole chain and checks every checkpoint against it.
//!
//! Detects an edited record (its hash no longer matches its content, or an indexed column no
//! longer matches the record), a deleted one (a gap in the sequence), an inserted or
//! reordered one (a record that does not name its predecessor's hash, or sits at another
//! position than it says), and truncation of records a checkpoint covers (in the store's own
//! checkpoints or in an external copy).

use std::path::Path;

use ed25519_dalek::VerifyingKey;

use super::checkpoint::Checkpoint;
use super::record::{AuditRecord, GENESIS};
use super::store::{AuditReader, COLUMN_NAMES, StoredRow, column_of};

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) records: u64,
    pub(crate) checkpoints: usize,
    pub(crate) external_checkpoints: usize,
    pub(crate) head: Option<(u64, String)>,
    /// The first problem found, naming the record; `None` when the log verifies.
    pub(crate) first_problem: Option<String>,
    pub(crate) warnings: Vec<String>,
}

pub(crate) async fn verify(store: &dyn AuditReader, env: &str, keys: &[VerifyingKey], external: Option<&Path>) -> Result<Report, String> {
    let rows = store.records(0).await.map_err(|e| e.to_string())?;
    let mut report = Report::default();
    let mut hashes: Vec<String> = Vec::with_capacity(rows.len());
    let mut prev = GENESIS.to_string();
    for (i, row) in rows.iter().enumerate() {
        let expected = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let problem = check_row(row, expected, &prev, env);
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
    for cp in store.checkpoints().await.map_err(|e| e.to_string())? {
        report.checkpoints += 1;
        let problem = match cp {
            Ok(cp) => check_cp(&cp, "a stored"),
            Err(e) => Some(format!("a stored checkpoint is unreadable: {e}")),
        };
        if problem.is_some() {
            report.first_problem = problem;
            return Ok(report);
        }
    }
    if let Some(path) = external {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            report.external_checkpoints += 1;
            let problem = match serde_json::from_str::<Checkpoint>(line) {
                Ok(cp) => check_cp(&cp, "an external"),
                Err(e) => Some(format!("line {} of `{}` is not a checkpoint: {e}", n + 1, path.display())),
            };
            if problem.is_some() {
                report.first_problem = problem;
                return Ok(report);
            }
        }
    }
    if report.checkpoints == 0 && report.external_checkpoints == 0 && report.records > 0 {
        report
            .warnings
            .push("no checkpoint yet: edits are detected, truncation of the newest records is not".into());
    }
    Ok(report)
}

fn check_row(row: &StoredRow, expected: i64, prev: &str, env: &str) -> Option<String> {
    if row.seq != expected {
        return Some(if row.seq > expected {
            format!("record #{expected} is missing (deleted); the next record is #{}", row.seq)
        } else {
            format!("record #{} is out of order", row.seq)
        });
    }
    let seq = row.seq;
    let rec: AuditRecord = match serde_json::from_str(&row.record) {
        Ok(r) => r,
        Err(_) => return Some(format!("record #{seq} is unreadable (edited)")),
    };
    if i64::try_from(rec.seq).ok() != Some(seq) {
        return Some(format!(
            "record #{seq} was moved: its content says #{} (reordered or inserted)",
            rec.seq
        ));
    }
    if rec.prev_hash != prev || row.prev_hash != prev {
        return Some(format!(
            "record #{seq} does not follow record #{} (inserted, reordered or edited)",
            seq - 1
        ));
    }
    if rec.compute_hash() != rec.hash || row.hash != rec.hash {
        return Some(format!("record #{seq} was edited: its hash does not match its content"));
    }
    for (i, name) in COLUMN_NAMES.iter().enumerate() {
        if row.columns.get(i).cloned().flatten() != column_of(&rec, i) {
            return Some(format!("record #{seq} was edited: column `{name}` differs from the hashed record"));
        }
    }
    if rec.env != env {
        return Some(format!("record #{seq} belongs to environment `{}`, not `{env}`", rec.env));
    }
    None
}
