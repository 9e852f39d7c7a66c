//! Resource subscriptions of one upstream: which callers' sessions (or, on 2026-07-28,
//! `subscriptions/listen` streams) subscribed to which URI, and the upstream's
//! `notifications/resources/updated` routed to those and to no other. A subscription is made only after the pipeline decided `resources/subscribe` for
//! that caller and URI (the resource's contract, as for `resources/read`); the upstream is
//! asked to subscribe once per URI, however many callers did, and to unsubscribe when the
//! last one leaves.
//!
//! INVARIANT: an update reaches only a session that subscribed to exactly that URI, while
//! the caller's token is still valid; each one is recorded before it is sent.

use std::collections::HashMap;
use std::sync::Mutex;

use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::{Peer, RoleServer};

use crate::audit::AuditLog;
use crate::audit::record::AuditRecord;
use crate::decision::{Decision, ReasonCode};
use crate::identity::Principal;
use crate::request::CallCtx;

/// Where a subscriber's updates go.
#[derive(Clone)]
pub(crate) enum Delivery {
    /// A 2025-11-25 session's connection.
    Session(Peer<RoleServer>),
    /// A 2026-07-28 `subscriptions/listen` stream: the URI of each update, for the stream
    /// to frame. Bounded: a stream that is not read loses updates; the upstream's
    /// connection is never held up by it.
    Stream(tokio::sync::mpsc::Sender<String>),
}

impl Delivery {
    fn is_closed(&self) -> bool {
        match self {
            Delivery::Session(p) => p.is_transport_closed(),
            Delivery::Stream(tx) => tx.is_closed(),
        }
    }

    async fn send(&self, uri: &str) {
        // A subscriber gone is no failure of the upstream's.
        match self {
            Delivery::Session(p) => {
                let _ = p.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await;
            }
            Delivery::Stream(tx) => {
                let _ = tx.try_send(uri.to_string());
            }
        }
    }
}

/// One caller's session subscribed to one URI.
#[derive(Clone)]
pub(crate) struct Subscriber {
    /// The caller's MCP session (or listen stream): one subscription per session and URI.
    pub(crate) session: String,
    pub(crate) to: Delivery,
    /// Unix seconds: the caller's token's expiry. Past it, the subscription ends unseen.
    pub(crate) expires_at: u64,
    /// What each delivery's record says: the subscribe request's context (its trace ID
    /// links every update to the decision that allowed it), caller, contract.
    pub(crate) env: String,
    pub(crate) ctx: CallCtx,
    pub(crate) principal: Principal,
    pub(crate) resource: String,
    pub(crate) contract_digest: String,
    pub(crate) audit: AuditLog,
}

/// The subscribers of one upstream, by URI.
#[derive(Default)]
pub(crate) struct Subscriptions {
    by_uri: Mutex<HashMap<String, Vec<Subscriber>>>,
    /// Held across "first subscriber? then ask the upstream" and "last one? then tell the
    /// upstream", so that a subscribe and an unsubscribe of one URI cannot cross upstream.
    pub(crate) changing: tokio::sync::Mutex<()>,
}

impl Subscriptions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        // Nothing panics while holding this lock; a poisoned one still holds a whole map.
        self.by_uri.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether anyone is subscribed to `uri` (the upstream is then subscribed already).
    pub(crate) fn any(&self, uri: &str) -> bool {
        self.map().get(uri).is_some_and(|s| !s.is_empty())
    }

    /// Adds (or renews) a session's subscription to `uri`.
    pub(crate) fn add(&self, uri: &str, sub: Subscriber) {
        let mut m = self.map();
        let subs = m.entry(uri.to_string()).or_default();
        subs.retain(|s| s.session != sub.session);
        subs.push(sub);
    }

    /// Ends a session's subscription to `uri`; whether that left `uri` without subscribers
    /// (the upstream is then told), or `None` if the session had none.
    pub(crate) fn remove(&self, uri: &str, session: &str) -> Option<bool> {
        let mut m = self.map();
        let subs = m.get_mut(uri)?;
        let before = subs.len();
        subs.retain(|s| s.session != session);
        if subs.len() == before {
            return None;
        }
        let last = subs.is_empty();
        if last {
            m.remove(uri);
        }
        Some(last)
    }

    /// The sessions an update of `uri` goes to now; those whose caller's token expired are
    /// dropped from the list first.
    fn current(&self, uri: &str, now: u64) -> Vec<Subscriber> {
        let mut m = self.map();
        let Some(subs) = m.get_mut(uri) else {
            return Vec::new();
        };
        subs.retain(|s| s.expires_at >= now && !s.to.is_closed());
        subs.clone()
    }

    /// The upstream said `uri` changed: each subscriber is told, each delivery recorded
    /// first; a delivery that cannot be recorded is not made.
    pub(crate) async fn updated(&self, uri: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for s in self.current(uri, now) {
            let mut ctx = s.ctx.clone();
            ctx.method = Some("notifications/resources/updated".into());
            let named = serde_json::json!({"uri": uri});
            let rec = AuditRecord::new(
                &s.env,
                &ctx,
                Decision::Allow,
                ReasonCode::Relayed,
                "resource update relayed to the subscribed session".into(),
            )
            .principal(Some(&s.principal))
            .tool(Some(s.resource.clone()))
            .args_digest(Some(crate::canonical::digest(&named)))
            .contract_digest(&s.contract_digest);
            if s.audit.append(rec).await.is_ok() {
                s.to.send(uri).await;
            }
        }
    }
}
