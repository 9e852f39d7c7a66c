//! Connections per source: one source address (an IPv4 address, or an IPv6 /64) holds at
//! most `max_connections_per_source` connections to a listener at once; one more is closed
//! as soon as it is accepted, before anything of it is read. Refused connections are
//! recorded at most once per source and second, with how many there were, so that a flood
//! of them can neither fill the store nor cost a record each.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::budget::source_key;
use crate::denial::Denial;
use crate::pipeline::Runtime;
use crate::request::{CallCtx, ClientRef};

/// Sources whose refusals are remembered before the stale ones are dropped.
const MAX_REMEMBERED: usize = 100_000;

pub(crate) struct Sources {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: HashMap<IpAddr, usize>,
    /// Refusals per source since its last record: when that record was written, and how
    /// many have not been recorded yet.
    refused: HashMap<IpAddr, (Instant, u64)>,
}

/// One connection of a source, counted until it is dropped.
pub(crate) struct Slot {
    sources: Arc<Sources>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.sources.lock();
        if let Some(n) = state.open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.open.remove(&self.key);
            }
        }
    }
}

impl Sources {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing that holds this lock can panic half-way: the counts are always whole.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more connection of `ip`, unless it holds its limit already.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = source_key(ip);
        let mut state = self.lock();
        let n = state.open.entry(key).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            sources: self.clone(),
            key,
        })
    }

    /// Counts a refused connection, and records the refusals of its source once a second.
    pub(crate) async fn refused(&self, rt: &Runtime, addr: SocketAddr) {
        let key = source_key(addr.ip());
        let count = {
            let mut state = self.lock();
            let now = Instant::now();
            if state.refused.len() >= MAX_REMEMBERED {
                state.refused.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(1));
            }
            let entry = state.refused.entry(key).or_insert((now - Duration::from_secs(2), 0));
            entry.1 += 1;
            if now.duration_since(entry.0) < Duration::from_secs(1) {
                return;
            }
            let count = entry.1;
            *entry = (now, 0);
            count
        };
        let ctx = CallCtx::new(ClientRef {
            addr: Some(addr.to_string()),
            user_agent: None,
        });
        let denial = Denial::TooManyConnections {
            limit: self.limit,
            refused: count,
        };
        tracing::warn!(env = %rt.env().name, "{}", denial.reason());
        if rt.audit().append_unhurried(denial.record(&rt.env().name, &ctx)).await.is_err() {
            tracing::error!(env = %rt.env().name, "refused connections from {addr} could not be recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_limit_and_gets_slots_back() {
        let s = Arc::new(Sources::new(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let one = s.admit(a).unwrap();
        let _two = s.admit(a).unwrap();
        assert!(s.admit(a).is_none());
        let _b1 = s.admit(b).expect("another source has its own");
        // The same /64 is one source.
        let _b2 = s.admit("2001:db8::2".parse().unwrap()).unwrap();
        assert!(s.admit("2001:db8::3".parse().unwrap()).is_none());
        drop(one);
        assert!(s.admit(a).is_some());
    }
}
