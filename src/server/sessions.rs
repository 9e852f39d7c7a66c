//! The guard's table of MCP sessions on one listener: who opened each, when it was last used
//! (on either route), and how many requests are in flight on it.
//!
//! INVARIANT: every MCP session on a listener was opened through the guard, so a session ID
//! missing here is refused: never passed on as if it had no owner. The table, not rmcp, is
//! the authority on which sessions are open; a session removed here is closed in rmcp too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::backend::relay::LogLevel;
use crate::denial::SessionRefusal;

/// One MCP session, as the guard knows it.
struct Session {
    /// Issuer + subject of the identity that opened it.
    owner: String,
    /// When a request of its owner last started or finished on it.
    used: Instant,
    /// Requests in flight on it (a call waiting for its approval may take minutes): a busy
    /// session is never idle.
    busy: u32,
    /// The least severe upstream log message its client asked for (`logging/setLevel`).
    log: Option<LogLevel>,
}

#[derive(Default)]
pub(crate) struct SessionTable {
    sessions: Mutex<HashMap<String, Session>>,
}

/// A request in flight on a session (counted in its `busy` when its owner was checked),
/// until its answer, streamed or not, is finished or dropped.
pub(crate) struct InFlight {
    table: Arc<SessionTable>,
    sid: String,
    log: Option<LogLevel>,
}

impl InFlight {
    /// The session's log level when the request entered it.
    pub(crate) fn log(&self) -> Option<LogLevel> {
        self.log
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.table.sessions.lock()
            && let Some(s) = m.get_mut(&self.sid)
        {
            s.busy = s.busy.saturating_sub(1);
            s.used = Instant::now();
        }
    }
}

impl SessionTable {
    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Session>>, SessionRefusal> {
        self.sessions.lock().map_err(|_| SessionRefusal::TableUnavailable)
    }

    /// A request of `owner` on session `sid`: counted in flight until the returned guard is
    /// dropped. Both routes count as use (the direct one never reaches rmcp's session), and
    /// in the same lock as the check, so the idle sweep cannot close it in between.
    pub(crate) fn enter(self: &Arc<Self>, sid: &str, owner: &str) -> Result<InFlight, SessionRefusal> {
        let mut m = self.lock()?;
        match m.get_mut(sid) {
            Some(s) if s.owner == owner => {
                s.busy += 1;
                Ok(InFlight {
                    table: self.clone(),
                    sid: sid.to_string(),
                    log: s.log,
                })
            }
            Some(_) => Err(SessionRefusal::OtherIdentity),
            None => Err(SessionRefusal::NotOpen),
        }
    }

    /// A session rmcp just opened for `owner`; returns the sessions closed to stay within
    /// `per_identity` for the owner and `total` in all, for rmcp to close too.
    pub(crate) fn opened(&self, sid: &str, owner: &str, per_identity: usize, total: usize) -> Vec<String> {
        let Ok(mut m) = self.lock() else { return Vec::new() };
        let session = Session {
            owner: owner.to_string(),
            used: Instant::now(),
            busy: 0,
            log: None,
        };
        m.insert(sid.to_string(), session);
        let mut evicted = over_limit(&mut m, sid, Some(owner), per_identity);
        evicted.extend(over_limit(&mut m, sid, None, total));
        evicted
    }

    /// The log level the client of session `sid` set; `false`: no such session.
    pub(crate) fn set_log(&self, sid: &str, level: LogLevel) -> bool {
        let Ok(mut m) = self.lock() else { return false };
        m.get_mut(sid).map(|s| s.log = Some(level)).is_some()
    }

    /// A session its client ended.
    pub(crate) fn ended(&self, sid: &str) {
        if let Ok(mut m) = self.lock() {
            m.remove(sid);
        }
    }

    /// Forgets the sessions with nothing in flight and unused for longer than `idle`, and
    /// returns their IDs, for rmcp to close them too.
    pub(crate) fn take_idle(&self, idle: Duration) -> Vec<String> {
        let mut idle_ids = Vec::new();
        if let Ok(mut m) = self.lock() {
            m.retain(|id, s| {
                let keep = s.busy > 0 || s.used.elapsed() <= idle;
                if !keep {
                    idle_ids.push(id.clone());
                }
                keep
            });
        }
        idle_ids
    }
}

/// Removes sessions until `scope` (one identity's sessions, or with `None` the whole table)
/// holds no more than `cap`, and returns their IDs. Idle ones go before busy ones (a busy one
/// may be a call waiting for its approval); then those of the identity holding the most in
/// the scope (so that one identity opening many loses its own first); then the least
/// recently used. `opened`, the session just opened, is never one of them: it would count as
/// idle, and a client whose other sessions are all busy would be handed a closed ID.
fn over_limit(m: &mut HashMap<String, Session>, opened: &str, scope: Option<&str>, cap: usize) -> Vec<String> {
    let in_scope = |s: &Session| scope.is_none_or(|owner| s.owner == owner);
    let mut held: HashMap<&str, usize> = HashMap::new();
    for s in m.values().filter(|s| in_scope(s)) {
        *held.entry(s.owner.as_str()).or_default() += 1;
    }
    let total: usize = held.values().sum();
    if total <= cap {
        return Vec::new();
    }
    let mut order: Vec<(bool, std::cmp::Reverse<usize>, Instant, &String)> = m
        .iter()
        .filter(|(id, s)| *id != opened && in_scope(s))
        .map(|(id, s)| {
            let holds = held.get(s.owner.as_str()).copied().unwrap_or(0);
            (s.busy > 0, std::cmp::Reverse(holds), s.used, id)
        })
        .collect();
    order.sort();
    let gone: Vec<String> = order.into_iter().take(total - cap).map(|(_, _, _, id)| id.clone()).collect();
    for id in &gone {
        m.remove(id);
    }
    gone
}

/// Closes sessions the guard has dropped from its table in rmcp too, freeing their workers.
pub(crate) async fn close_in_rmcp(sessions: &LocalSessionManager, ids: Vec<String>) {
    use rmcp::transport::streamable_http_server::session::SessionManager;
    for id in ids {
        let _ = sessions.close_session(&Arc::from(id.as_str())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str, u64, u32)]) -> HashMap<String, Session> {
        let now = Instant::now();
        entries
            .iter()
            .map(|&(id, owner, secs_ago, busy)| {
                let used = now.checked_sub(Duration::from_secs(secs_ago)).unwrap_or(now);
                (
                    id.to_string(),
                    Session {
                        owner: owner.into(),
                        used,
                        busy,
                        log: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    #[allow(
        deprecated,
        reason = "SEP-2577 deprecates logging for later revisions; 2025-11-25 sessions set levels"
    )]
    fn a_log_level_belongs_to_the_one_session_that_set_it() {
        use rmcp::model::LoggingLevel;
        let t = Arc::new(SessionTable::default());
        let _ = t.opened("a", "alice", 8, 8);
        let _ = t.opened("b", "alice", 8, 8);
        assert!(!t.set_log("nope", LoggingLevel::Info.into()), "no such session");
        assert!(t.set_log("a", LoggingLevel::Warning.into()));
        let a = t.enter("a", "alice").ok().and_then(|f| f.log());
        let b = t.enter("b", "alice").ok().and_then(|f| f.log());
        assert_eq!((a, b), (Some(LoggingLevel::Warning.into()), None));
        assert!(LogLevel::from(LoggingLevel::Error) > LogLevel::from(LoggingLevel::Warning));
        t.ended("a");
        assert!(!t.set_log("a", LoggingLevel::Info.into()), "an ended session keeps nothing");
    }

    #[test]
    fn over_the_cap_idle_sessions_go_first_then_the_least_recently_used() {
        // Cap 3 for alice: `new` plus two of the four others stay.
        let mut m = table(&[
            ("busy-old", "alice", 50, 1),
            ("idle-old", "alice", 40, 0),
            ("idle-new", "alice", 10, 0),
            ("busy-new", "alice", 5, 2),
            ("new", "alice", 0, 0),
            ("bob", "bob", 60, 0),
        ]);
        let mut gone = over_limit(&mut m, "new", Some("alice"), 3);
        gone.sort();
        assert_eq!(gone, ["idle-new", "idle-old"]);
        assert!(m.contains_key("new") && m.contains_key("bob") && m.len() == 4);
    }

    #[test]
    fn the_session_just_opened_is_never_the_one_closed() {
        // Every other session is busy: the least recently used of them goes, not `new`
        // (which, unused yet, would otherwise sort first).
        let mut m = table(&[("busy-old", "alice", 50, 1), ("busy-new", "alice", 5, 1), ("new", "alice", 0, 0)]);
        assert_eq!(over_limit(&mut m, "new", Some("alice"), 2), ["busy-old"]);
        assert!(m.contains_key("new"));
        // Under the cap nothing goes.
        assert!(over_limit(&mut m, "new", Some("alice"), 2).is_empty());
    }

    #[test]
    fn over_the_total_the_biggest_holders_idle_sessions_go_first() {
        let mut m = table(&[
            ("mallory-busy", "mallory", 90, 1),
            ("mallory-idle-old", "mallory", 30, 0),
            ("mallory-idle-new", "mallory", 20, 0),
            ("alice-idle-oldest", "alice", 80, 0),
            ("bob-busy", "bob", 70, 1),
            ("new", "bob", 0, 0),
        ]);
        // Mallory holds the most: her idle sessions go, the least recently used first, before
        // Alice's older one; nobody's busy session goes while one is idle.
        assert_eq!(over_limit(&mut m, "new", None, 5), ["mallory-idle-old"]);
        assert_eq!(over_limit(&mut m, "new", None, 3), ["mallory-idle-new", "alice-idle-oldest"]);
        // Only busy sessions and the new one left: Bob, who opened `new`, now holds the most,
        // so his busy one goes; never `new`.
        assert_eq!(over_limit(&mut m, "new", None, 2), ["bob-busy"]);
        assert_eq!(over_limit(&mut m, "new", None, 1), ["mallory-busy"]);
        assert!(over_limit(&mut m, "new", None, 1).is_empty());
        assert!(m.contains_key("new") && m.len() == 1);
    }

    #[test]
    fn a_request_in_flight_keeps_its_session_from_the_idle_sweep_and_owners_are_checked() {
        let t = Arc::new(SessionTable::default());
        assert!(t.opened("s1", "alice", 10, 10).is_empty());
        assert_eq!(t.enter("s1", "bob").err(), Some(SessionRefusal::OtherIdentity));
        assert_eq!(t.enter("nope", "alice").err(), Some(SessionRefusal::NotOpen));
        let busy = t.enter("s1", "alice").unwrap();
        assert!(t.take_idle(Duration::ZERO).is_empty(), "a busy session is never idle");
        drop(busy);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(t.take_idle(Duration::from_millis(1)), ["s1"]);
        assert_eq!(t.enter("s1", "alice").err(), Some(SessionRefusal::NotOpen));
    }
}
