//! Stage 4, authorization: may this caller make this call, with these validated arguments?
//!
//! Runs after validation, so that the policy engine sees only values the contract accepted.
//! Asks the policy's `may_call`. Outcomes: [`Authorized`], carrying the policy's decision
//! (the ids of the rules that allowed it go into the allow record); or a refusal, which the
//! caller sees exactly as an unknown tool. Also owns the per-caller rate limits, which are
//! keyed by environment, caller and tool.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Runtime;
use super::validate::ValidatedArgs;
use crate::audit::record::PolicyRef;
use crate::policy::{CallFacts, PolicyDecision};

/// Proof that the policy allows this call. Only [`authorize`] builds it.
pub(crate) struct Authorized {
    validated: ValidatedArgs,
    decision: PolicyDecision,
}

impl Authorized {
    pub(crate) fn validated(&self) -> &ValidatedArgs {
        &self.validated
    }
    pub(crate) fn decision(&self) -> &PolicyDecision {
        &self.decision
    }
}

/// A call the policy refused, with its decision (for the record).
pub(crate) type Refused = Box<(ValidatedArgs, PolicyDecision)>;

pub(crate) fn authorize(rt: &Runtime, validated: ValidatedArgs) -> Result<Authorized, Refused> {
    let listed = validated.listed();
    let contract = listed.contract();
    let upstream = rt.routes.get(&contract.key).map_or("", |r| r.upstream.name());
    let facts = CallFacts {
        env: &rt.env.name,
        caller: listed.auth().principal(),
        contract,
        upstream,
        args: validated.forward_args(),
    };
    let decision = rt.policy.may_call(&facts);
    if decision.allowed() {
        Ok(Authorized { validated, decision })
    } else {
        Err(Box::new((validated, decision)))
    }
}

/// What a record says of a policy decision: only where a policy set took part (the
/// contracts' own role rules are pinned by the contract digest every record carries).
pub(crate) fn policy_ref(rt: &Runtime, decision: &PolicyDecision) -> Option<PolicyRef> {
    rt.policy.set_digest().map(|digest| PolicyRef {
        ids: decision.reasons().iter().map(|id| id.to_string()).collect(),
        set_digest: digest.to_string(),
    })
}

/// The policy set in force in a generation, for a record no policy decided (a reload's).
pub(crate) fn set_ref(rt: &Runtime) -> Option<PolicyRef> {
    rt.policy.set_digest().map(|digest| PolicyRef {
        ids: Vec::new(),
        set_digest: digest.to_string(),
    })
}

/// Fixed-window counters per (caller, tool). State is per environment runtime.
#[derive(Default)]
pub(crate) struct RateLimiter {
    windows: Mutex<HashMap<(String, String), (Instant, u32)>>,
}

impl RateLimiter {
    /// `Err(retry_after)` when the caller has used up the contract's allowance.
    pub(crate) fn check(&self, a: &Authorized) -> Result<(), Duration> {
        let listed = a.validated.listed();
        let contract = listed.contract();
        let Some(limit) = contract.rate_limit else {
            return Ok(());
        };
        let key = (listed.auth().principal().owner_key(), contract.tool.clone());
        let now = Instant::now();
        // A poisoned lock means a panic elsewhere: refuse rather than count wrongly.
        let Ok(mut map) = self.windows.lock() else {
            return Err(limit.per);
        };
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < limit.per);
        }
        let entry = map.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= limit.per {
            *entry = (now, 0);
        }
        if entry.1 >= limit.count {
            return Err(limit.per.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}
