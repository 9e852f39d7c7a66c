//! Stage 5, the write-ahead audit record: the allow decision is durable before anything runs.
//!
//! Runs after approval. Outcome: [`Audited`], the only thing [`super::forward`] accepts; or
//! an audit error, on which the call is refused (fail closed).

use super::approval::Approved;
use super::{CallCtx, Runtime};
use crate::audit::{AuditError, AuditRecord};
use crate::decision::{Decision, ReasonCode};

/// Proof that the allow decision for this call is on durable storage.
pub struct Audited {
    approved: Approved,
    seq: u64,
}

impl Audited {
    pub fn approved(&self) -> &Approved {
        &self.approved
    }
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Audited {
    /// A call released by the approval store, whose allow record (`seq`) was written in the
    /// same transaction that used the approval up.
    pub(super) fn released(approved: Approved, seq: u64) -> Self {
        Self { approved, seq }
    }
}

pub async fn record_allow(rt: &Runtime, ctx: &CallCtx, approved: Approved) -> Result<Audited, (Approved, AuditError)> {
    let v = approved.validated();
    let a = v.authorized();
    let mut rec: AuditRecord = super::base_record(
        rt,
        ctx,
        Some(a.auth()),
        Some(&a.contract().tool),
        Decision::Allow,
        ReasonCode::Allowed,
        "authorized: identity, role, arguments and approval checks passed",
    );
    rec.args_digest = Some(v.digest().to_string());
    rec.args = Some(v.redacted().clone());
    rec.contract_digest = Some(a.contract().digest.clone());
    rec.approval = approved.approval().cloned();
    match rt.audit.append(rec).await {
        Ok(seq) => Ok(Audited { approved, seq }),
        Err(e) => Err((approved, e)),
    }
}
