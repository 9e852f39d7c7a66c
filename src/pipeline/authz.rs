//! Stage 2, contract lookup and authorization: is there a contract for this tool in this
//! environment, and do the caller's roles allow it?
//!
//! Runs after authentication. Outcomes: [`Authorized`], or one refusal that is the same for
//! an unknown tool and a forbidden one, so that no caller can probe which tools exist.
//! Also owns the per-caller rate limits, which are keyed by environment, caller and tool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contract::Contract;

use super::Runtime;
use super::authn::Authenticated;

/// Proof that the caller may call this contract's tool. Only [`authorize`] builds it.
pub struct Authorized {
    auth: Authenticated,
    contract: Arc<Contract>,
}

impl Authorized {
    pub fn auth(&self) -> &Authenticated {
        &self.auth
    }
    pub fn contract(&self) -> &Arc<Contract> {
        &self.contract
    }
}

pub struct NotAvailable;

pub fn authorize(rt: &Runtime, auth: &Authenticated, tool: &str) -> Result<Authorized, NotAvailable> {
    // INVARIANT: the environment of the proof must be this runtime's; a proof from another
    // environment is worth nothing here.
    if auth.env() != rt.env.name {
        return Err(NotAvailable);
    }
    let contract = rt.env.contracts.get(tool).ok_or(NotAvailable)?;
    if !rt.routes.contains_key(tool) || !contract.allows_any(&auth.principal().roles) {
        return Err(NotAvailable);
    }
    Ok(Authorized {
        auth: auth.clone(),
        contract: contract.clone(),
    })
}

/// Fixed-window counters per (caller, tool). State is per environment runtime.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<(String, String), (Instant, u32)>>,
}

impl RateLimiter {
    /// `Err(retry_after)` when the caller has used up the contract's allowance.
    pub fn check(&self, a: &Authorized) -> Result<(), Duration> {
        let Some(limit) = a.contract.rate_limit else {
            return Ok(());
        };
        let key = (
            format!("{}\u{0}{}", a.auth.principal().iss, a.auth.principal().sub),
            a.contract.tool.clone(),
        );
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
