//! Calls whose outcome was never recorded. An allowed call's outcome record follows its
//! allow record; if the gateway that ran it stops first (a crash, a kill, a restart during a
//! store outage that kept the outcome in memory), the log would hold an allow with nothing
//! after it. The writer keeps track of allows without an outcome and, once a call is older
//! than the longest it could have run (`stale_after`: the longest upstream timeout and a
//! margin), appends a recovery record saying its outcome is unknown: it may have run.
//!
//! What this writer commits it learns as it commits (no read-back on the hot path); what
//! other gateways sharing the store appended in between, and the tail of the log when the
//! gateway starts, it reads from the store. So a gateway that died is accounted for by the
//! next one to start, or by another one still running; the store appends a recovery record
//! only if no outcome for that allow has been recorded meanwhile (`Entry::OutcomeOnce`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::approval::Answer;
use super::record::{AuditRecord, Outcome};
use super::{AuditError, AuditStore, Done, Entry};
use crate::decision::{Decision, ReasonCode};

/// How far back a gateway that starts looks for calls without an outcome.
const WINDOW: u64 = 10_000;
/// Most records one read takes.
const READ: usize = 5_000;

pub(crate) struct Sweep {
    /// Allow records whose outcome has not been seen: sequence number → when it was written.
    open: BTreeMap<u64, SystemTime>,
    /// Records written by others, still to be read: after this sequence number, up to and
    /// including the second.
    unread: Option<(u64, u64)>,
    /// The head as of this writer's last commit.
    known_head: u64,
    stale_after: Duration,
}

impl Sweep {
    /// A sweep for a store whose head is `head`: its last [`WINDOW`] records are read first.
    pub(crate) fn new(head: u64, stale_after: Duration) -> Self {
        Self {
            open: BTreeMap::new(),
            unread: (head > 0).then(|| (head.saturating_sub(WINDOW), head)),
            known_head: head,
            stale_after,
        }
    }

    /// What one of this writer's batches appended: its allows are open, its outcomes close
    /// theirs; records others appended before it (the head moved) are read later.
    pub(crate) fn committed(&mut self, head_before: u64, head_after: u64, entries: &[Entry], results: &[Done]) {
        if head_before > self.known_head {
            let from = self.unread.map_or(self.known_head, |(from, _)| from.min(self.known_head));
            self.unread = Some((from, head_before));
        }
        self.known_head = head_after;
        let now = SystemTime::now();
        for (entry, done) in entries.iter().zip(results) {
            match (entry, done) {
                (Entry::Record(r) | Entry::OutcomeOnce(r), Done::Seq(seq)) => self.note(*seq, r, now),
                (Entry::Approval(_), Done::Approval(Answer::Released { seq, .. })) => {
                    self.open.insert(*seq, now);
                }
                _ => {}
            }
        }
    }

    fn note(&mut self, seq: u64, r: &AuditRecord, written: SystemTime) {
        match r.outcome.as_ref().and_then(|o| o.decision_record) {
            Some(allow) => {
                self.open.remove(&allow);
            }
            None if r.reason_code == ReasonCode::Allowed => {
                self.open.insert(seq, written);
            }
            None => {}
        }
    }

    fn is_stale(&self, written: SystemTime) -> bool {
        SystemTime::now().duration_since(written).unwrap_or_default() > self.stale_after
    }

    /// Reads what others appended, and returns the recovery records of the calls that can no
    /// longer be running.
    pub(crate) fn run(&mut self, store: &mut dyn AuditStore) -> Result<Vec<AuditRecord>, AuditError> {
        // Up to the store's head, not only to what this writer last saw: a writer with
        // nothing to commit would otherwise never learn of the outcomes others appended
        // (and judge their calls stale), nor of the allows of a gateway that died.
        let (head, _) = store.head()?;
        if head > self.known_head {
            let from = self.unread.map_or(self.known_head, |(from, _)| from.min(self.known_head));
            self.unread = Some((from, head));
            self.known_head = head;
        }
        while let Some((after, upto)) = self.unread {
            let batch = store.calls_after(after, READ)?;
            let mut last = upto;
            for rec in batch.iter().filter(|r| r.seq <= upto) {
                let written = written_at(rec).unwrap_or(SystemTime::UNIX_EPOCH);
                self.note(rec.seq, rec, written);
                last = rec.seq;
            }
            self.unread = (batch.len() == READ && last < upto).then_some((last, upto));
        }
        let stale: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, written)| self.is_stale(**written))
            .map(|(seq, _)| *seq)
            .collect();
        let mut out = Vec::new();
        for seq in stale {
            self.open.remove(&seq);
            if let Some(allow) = store.record_at(seq)? {
                out.push(recovery_record(&allow, self.stale_after));
            }
        }
        Ok(out)
    }
}

/// When a record was written, by its own time; `None` if that does not read.
fn written_at(rec: &AuditRecord) -> Option<SystemTime> {
    let ts = time::OffsetDateTime::parse(&rec.ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some(ts.into())
}

/// The record that accounts for `allow`'s call: the caller facts of the allow, outcome
/// unknown.
fn recovery_record(allow: &AuditRecord, stale_after: Duration) -> AuditRecord {
    let mut rec = allow.clone();
    rec.ts = super::record::now_rfc3339();
    rec.args = None;
    rec.policy = None;
    rec.decision = Decision::Error;
    rec.reason_code = ReasonCode::OutcomeUnknown;
    rec.reason = format!(
        "no outcome was recorded for decision record #{} within {}s: the gateway that ran the call stopped, or lost its store, before recording it; the call may have run",
        allow.seq,
        stale_after.as_secs()
    );
    rec.outcome = Some(Outcome {
        decision_record: Some(allow.seq),
        latency_ms: 0.0,
        result_digest: None,
        status: "unknown".into(),
    });
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::tests::blank;
    use crate::audit::{Committed, Entry};

    /// Records as a store holds them.
    struct Log(Vec<AuditRecord>);

    impl AuditStore for Log {
        fn commit(&mut self, _: &mut [Entry]) -> Result<Committed, AuditError> {
            Err(super::super::unavailable("not used"))
        }
        fn head(&mut self) -> Result<(u64, String), AuditError> {
            Ok((self.0.len() as u64, String::new()))
        }
        fn checkpoint(&mut self, _: &crate::audit::checkpoint::Signer) -> Result<Option<crate::audit::checkpoint::Checkpoint>, AuditError> {
            Ok(None)
        }
        fn calls_after(&mut self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
            Ok(self.0.iter().filter(|r| r.seq > after).take(limit).cloned().collect())
        }
        fn record_at(&mut self, seq: u64) -> Result<Option<AuditRecord>, AuditError> {
            Ok(self.0.iter().find(|r| r.seq == seq).cloned())
        }
    }

    fn allow(seq: u64, secs_ago: i64) -> AuditRecord {
        let mut r = blank("dev", &format!("t{seq}"));
        r.seq = seq;
        r.reason_code = ReasonCode::Allowed;
        r.decision = Decision::Allow;
        let ts = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs_ago);
        r.ts = ts.format(&time::format_description::well_known::Rfc3339).unwrap();
        r
    }

    fn outcome_of(seq: u64, allow_seq: u64) -> AuditRecord {
        let mut r = allow(seq, 0);
        r.reason_code = ReasonCode::Executed;
        r.outcome = Some(Outcome {
            decision_record: Some(allow_seq),
            latency_ms: 1.0,
            result_digest: None,
            status: "ok".into(),
        });
        r
    }

    #[test]
    fn stale_allows_found_on_start_are_recovered_once() {
        let mut log = Log(vec![allow(1, 100), outcome_of(2, 1), allow(3, 100), allow(4, 0)]);
        let mut sweep = Sweep::new(4, Duration::from_secs(30));
        let found = sweep.run(&mut log).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let r = &found[0];
        assert_eq!((r.reason_code, r.decision), (ReasonCode::OutcomeUnknown, Decision::Error));
        assert_eq!(r.trace_id.as_str(), "t3");
        assert_eq!(r.outcome.as_ref().unwrap().decision_record, Some(3));
        assert!(r.reason.contains("#3"));
        assert!(sweep.run(&mut log).unwrap().is_empty(), "nothing twice");
    }

    #[test]
    fn own_commits_are_tracked_without_reading_and_others_records_are_read() {
        let mut log = Log(Vec::new());
        let mut sweep = Sweep::new(0, Duration::ZERO);
        // This writer's batch: an allow (seq 1) and the outcome of nothing yet.
        let entries = [Entry::Record(Box::new(allow(0, 0)))];
        sweep.committed(0, 1, &entries, &[Done::Seq(1)]);
        log.0.push(allow(1, 0));
        // Another gateway appends an allow (2) and this one's outcome for 1 arrives at 3.
        log.0.push(allow(2, 100));
        let entries = [Entry::Record(Box::new(outcome_of(0, 1)))];
        sweep.committed(2, 3, &entries, &[Done::Seq(3)]);
        log.0.push(outcome_of(3, 1));
        std::thread::sleep(Duration::from_millis(5));
        let found = sweep.run(&mut log).unwrap();
        let seqs: Vec<u64> = found.iter().map(|r| r.outcome.as_ref().unwrap().decision_record.unwrap()).collect();
        assert_eq!(seqs, [2], "only the other gateway's call has no outcome");
    }

    #[test]
    fn a_writer_with_nothing_to_commit_reads_the_outcomes_others_appended_before_judging() {
        // Another gateway's allow (1) is read on start; its outcome (2) is appended later,
        // while this writer commits nothing.
        let mut log = Log(vec![allow(1, 100)]);
        let mut sweep = Sweep::new(1, Duration::from_secs(30));
        log.0.push(outcome_of(2, 1));
        assert!(sweep.run(&mut log).unwrap().is_empty(), "its outcome is in the store");
        // An allow that really has none is still found.
        log.0.push(allow(3, 100));
        let found = sweep.run(&mut log).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].outcome.as_ref().unwrap().decision_record, Some(3));
    }
}
