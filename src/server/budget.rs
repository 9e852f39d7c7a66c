//! The authentication-failure budget of a listener, per source address (an IPv4 address, or
//! the /64 of an IPv6 one). Within the budget a refused request is answered at once. Over it,
//! the refusal is recorded exactly as before, and its answer is held back for
//! [`HOLD`]: a client that repeats refused requests back to back (a flood, a token-guessing
//! loop) slows itself down instead of taking the CPU that authenticated callers need.
//! Authenticated requests never count and are never held.
//!
//! INVARIANT: the budget only delays an answer that is a refusal anyway; it never turns a
//! refusal into anything else, and nothing is skipped from the audit log. At most
//! [`MAX_HELD`] answers are held at once (memory stays bounded under an open-loop flood);
//! past that, they are answered at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::contract::RateLimit;

/// How long an over-budget refusal is held before it is answered.
pub(super) const HOLD: Duration = Duration::from_millis(250);
/// Most answers held at once on one listener.
pub(super) const MAX_HELD: usize = 1024;
/// Sources tracked before the stale ones are dropped.
const MAX_SOURCES: usize = 100_000;

pub(super) struct FailureBudget {
    limit: Option<RateLimit>,
    /// Source → (start of its current window, failures in it).
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    held: Arc<Semaphore>,
}

/// IPv6 clients usually own a whole /64: counting per address would give each as many
/// budgets as it has addresses.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl FailureBudget {
    /// `None`: no budget (every refusal is answered at once).
    pub(super) fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            sources: Mutex::new(HashMap::new()),
            held: Arc::new(Semaphore::new(MAX_HELD)),
        }
    }

    /// Counts one authentication failure from `ip`; true when it is over the budget.
    pub(super) fn over(&self, ip: IpAddr) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        let now = Instant::now();
        // A poisoned lock means a panic elsewhere; answering at once is the safe side here
        // (the refusal stands either way).
        let Ok(mut map) = self.sources.lock() else {
            return false;
        };
        if map.len() >= MAX_SOURCES {
            map.retain(|_, (start, _)| now.duration_since(*start) < limit.per);
        }
        let entry = map.entry(source_key(ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= limit.per {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 > limit.count
    }

    /// A slot to hold one answer in, while fewer than [`MAX_HELD`] are held.
    fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.held.clone().try_acquire_owned().ok()
    }

    /// Waits [`HOLD`] when a slot is free; returns at once otherwise.
    pub(super) async fn hold(&self) {
        if let Some(slot) = self.slot() {
            tokio::time::sleep(HOLD).await;
            drop(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(count: u32) -> FailureBudget {
        FailureBudget::new(Some(RateLimit {
            count,
            per: Duration::from_secs(3600),
        }))
    }

    #[test]
    fn over_after_the_count_per_source() {
        let b = budget(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let c: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).map(|_| b.over(a)).collect::<Vec<_>>(), [false, false, false, true, true]);
        assert!(!b.over(c), "another source has its own budget");
        assert!(!FailureBudget::new(None).over(a), "no limit: never over");
    }

    #[test]
    fn an_ipv6_client_has_one_budget_per_64() {
        let b = budget(1);
        assert!(!b.over("2001:db8:1:2::1".parse().unwrap()));
        assert!(b.over("2001:db8:1:2:ffff::9".parse().unwrap()), "same /64");
        assert!(!b.over("2001:db8:1:3::1".parse().unwrap()), "another /64");
        // An IPv4-mapped address is its IPv4 address.
        assert!(!b.over("198.51.100.7".parse().unwrap()));
        assert!(b.over("::ffff:198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn holds_at_most_max_held_answers() {
        let b = budget(0);
        let slots: Vec<_> = (0..MAX_HELD).map_while(|_| b.slot()).collect();
        assert_eq!(slots.len(), MAX_HELD);
        assert!(b.slot().is_none(), "past the cap, answers are not held");
        drop(slots);
        assert!(b.slot().is_some(), "slots come back when held answers go");
    }
}
