//! Stage 6, the write-ahead audit record: the allow decision is durable before anything runs.
//!
//! Runs after approval. Outcome: [`Audited`], the only thing that can send a call upstream
//! ([`Audited::forward`], in `forward.rs`); or an audit error, on which the call is refused
//! (fail closed).

use super::Runtime;
use super::approval::Approved;
use crate::audit::{AuditError, AuditRecord};
use crate::decision::{Decision, ReasonCode};
use crate::request::CallCtx;

/// Proof that the allow decision for one call is on durable storage, bound to that call.
///
/// Only the pipeline makes one, and [`Audited::forward`] spends it: it is not `Clone`, its
/// fields are private, and forwarding takes it by value, so one proof sends one call, once.
/// `tests/compile_fail/` holds what an outside caller would have to write to forge, copy,
/// alter or reuse one, or to reach an upstream around it; `tests/proofs.rs` shows that none
/// of it compiles.
pub struct Audited {
    approved: Approved,
    seq: u64,
    /// The call it was made for; a released approval runs under the original call's trace.
    ctx: CallCtx,
    /// Where the upstream's progress and requests for this call go.
    relay: crate::backend::relay::ToCaller,
    /// Fires when the caller cancels the call.
    cancel: tokio_util::sync::CancellationToken,
    /// A 2026-07-28 retry's checked answers for the upstream, and the round they answer.
    resume: Option<(crate::backend::stateless::Resume, usize)>,
}

impl Audited {
    /// A call released by the approval store, whose allow record (`seq`) was written in the
    /// same transaction that used the approval up.
    pub(super) fn released(approved: Approved, seq: u64, ctx: CallCtx) -> Self {
        Self {
            approved,
            seq,
            ctx,
            relay: crate::backend::relay::ToCaller::default(),
            cancel: tokio_util::sync::CancellationToken::new(),
            resume: None,
        }
    }

    /// The same proof, with where the upstream's progress for the call goes and what
    /// cancels it.
    pub(super) fn relaying(mut self, relay: crate::backend::relay::ToCaller, cancel: tokio_util::sync::CancellationToken) -> Self {
        self.relay = relay;
        self.cancel = cancel;
        self
    }

    /// The same proof, with the answers a 2026-07-28 retry brings its upstream
    /// (`rounds.rs`), checked against the round that asked for them.
    pub(super) fn resuming(mut self, resume: Option<(crate::backend::stateless::Resume, usize)>) -> Self {
        self.resume = resume;
        self
    }

    /// Taken apart by the only step that spends it.
    pub(super) fn into_parts(self) -> Parts {
        Parts {
            approved: self.approved,
            seq: self.seq,
            ctx: self.ctx,
            relay: self.relay,
            cancel: self.cancel,
            resume: self.resume,
        }
    }
}

/// An [`Audited`] taken apart, for the step that spends it.
pub(super) struct Parts {
    pub(super) approved: Approved,
    pub(super) seq: u64,
    pub(super) ctx: CallCtx,
    pub(super) relay: crate::backend::relay::ToCaller,
    pub(super) cancel: tokio_util::sync::CancellationToken,
    pub(super) resume: Option<(crate::backend::stateless::Resume, usize)>,
}

pub(crate) async fn record_allow(rt: &Runtime, ctx: &CallCtx, approved: Approved) -> Result<Audited, AuditError> {
    let authorized = approved.authorized();
    let v = authorized.validated();
    let rec = AuditRecord::new(
        &rt.env.name,
        ctx,
        Decision::Allow,
        ReasonCode::Allowed,
        "authorized: identity, role, arguments and approval checks passed".into(),
    )
    .principal(Some(v.listed().auth().principal()));
    let rec = v
        .describe(rec)
        .approval(approved.approval().cloned())
        .policy(super::authz::policy_ref(rt, authorized.decision()));
    let seq = rt.audit.append(rec).await?;
    Ok(Audited {
        approved,
        seq,
        ctx: ctx.clone(),
        relay: crate::backend::relay::ToCaller::default(),
        cancel: tokio_util::sync::CancellationToken::new(),
        resume: None,
    })
}
