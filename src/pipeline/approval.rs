//! Stage 4, approval: a contract with `requires_approval` never runs on the caller's word.
//!
//! Runs after validation (a request for approval is only ever made for valid arguments).
//! Outcomes: [`Approved`] for contracts that need no approval; otherwise [`Pending`], naming
//! the approval request (bound to requester, environment, tool, argument digest and
//! contract digest) and its expiry. Releasing a granted approval is the approval workflow's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::validate::ValidatedArgs;
use crate::audit::ApprovalRef;

/// Proof that a call may execute as far as approval is concerned. Only [`check`] builds it.
pub struct Approved {
    validated: ValidatedArgs,
    approval: Option<ApprovalRef>,
}

impl Approved {
    pub fn validated(&self) -> &ValidatedArgs {
        &self.validated
    }
    pub fn approval(&self) -> Option<&ApprovalRef> {
        self.approval.as_ref()
    }
}

pub struct Pending {
    pub validated: ValidatedArgs,
    pub id: String,
    pub expires_at: SystemTime,
}

pub fn check(validated: ValidatedArgs) -> Result<Approved, Box<Pending>> {
    let contract = validated.authorized().contract();
    if !contract.requires_approval {
        return Ok(Approved { validated, approval: None });
    }
    let ttl = contract.approval_ttl;
    Err(Box::new(Pending {
        validated,
        id: uuid::Uuid::new_v4().to_string(),
        expires_at: SystemTime::now() + ttl,
    }))
}

pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}
