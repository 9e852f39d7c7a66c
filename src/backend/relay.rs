//! What an upstream says about a call while it runs, relayed to the caller that made it and
//! to nobody else. Each forwarded call that carries the caller's progress token gets a token
//! of its own towards the upstream (never the caller's: callers choose theirs, two callers
//! may choose the same one, and an upstream must not be able to address another caller's
//! call); the upstream's progress for that token goes to that call's sink only, and a token
//! the gateway did not hand out, or one whose call has ended, reaches nobody.
//!
//! INVARIANT: a backend credential never reaches the agent: a progress message that holds
//! one of the upstream's credentials is passed on without its message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{NumberOrString, ProgressNotificationParam};
use rmcp::service::NotificationContext;
use rmcp::{ClientHandler, RoleClient};

use crate::config::Upstream;

/// One progress notification, as the upstream sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    pub(crate) progress: f64,
    pub(crate) total: Option<f64>,
    pub(crate) message: Option<String>,
}

/// Where a call's progress goes. Bounded: a caller that does not read loses progress
/// notifications; the upstream's connection is never held up by it.
pub(crate) type ProgressSink = tokio::sync::mpsc::Sender<Progress>;

/// How many progress notifications one call buffers for its caller.
pub(crate) const PROGRESS_BUFFER: usize = 64;

/// The caller's side of one call, for the upstream's requests to the caller during it
/// (`sampling/…`, `elicitation/…`, `roots/…`). Only a request inside the event stream that
/// answers one call comes here: the stream names the call, so no upstream can ask another
/// caller anything.
pub(crate) trait Asker: Send + Sync {
    /// The caller's answer to the upstream's request, checked for its shape, or why none is
    /// relayed (each one recorded before it is relayed or refused). `refused`: why the
    /// transport already will not relay it; it is only recorded.
    fn ask<'a>(
        &'a self,
        method: &'a str,
        params: serde_json::Value,
        refused: Option<&'static str>,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value, rmcp::model::ErrorData>>;

    /// The upstream's `notifications/message` during the call: passed on to the caller if
    /// it asked for log messages of that level, recorded first. `leaks`: the message holds
    /// one of the upstream's credentials (it is withheld, and that is recorded).
    fn log<'a>(&'a self, params: serde_json::Value, leaks: bool) -> futures_util::future::BoxFuture<'a, ()>;

    /// The client capabilities a 2026-07-28 upstream is told of for this call: those of
    /// the requests [`Asker::ask`] would relay (the contract allows them and the caller's
    /// client declared them), as `clientCapabilities`.
    fn capabilities(&self) -> serde_json::Value;

    /// The least severe log message the caller asked for, which a 2026-07-28 upstream is
    /// told per request (it sends none otherwise); `None`: none.
    fn log_level(&self) -> Option<LogLevel>;

    /// Whether an upstream's rounds of input (2026-07-28 `input_required`) go back to the
    /// caller in its own `input_required` answer, rather than being asked of it here: the
    /// caller speaks 2026-07-28 too, and answers by retrying.
    fn passes_input(&self) -> bool;

    /// One of an upstream's input requests, for the caller's `input_required` answer:
    /// decided and recorded as [`Asker::ask`] would, its parameters read by the method's
    /// types. Which kind of request it is, or why it may not go (recorded as refused).
    fn pass<'a>(
        &'a self,
        method: &'a str,
        params: &'a serde_json::Value,
        refused: Option<&'static str>,
    ) -> futures_util::future::BoxFuture<'a, Result<crate::contract::ClientAsk, rmcp::model::ErrorData>>;
}

/// What an upstream may send the caller of one call while it runs: its progress, if the
/// caller asked for progress, and its requests, to the caller's connection where the
/// caller's route has one (rmcp's; the direct route and a released approval have none).
#[derive(Clone, Default)]
pub(crate) struct ToCaller {
    pub(crate) progress: Option<ProgressSink>,
    pub(crate) peer: Option<rmcp::Peer<rmcp::RoleServer>>,
    /// The least severe log message the caller asked for (`logging/setLevel` on its session,
    /// or the request's own `_meta` on 2026-07-28); `None`: it asked for none.
    pub(crate) log: Option<LogLevel>,
    /// A 2026-07-28 caller's capabilities, as its request's `_meta` declared them (it has
    /// no session that would hold them); `None`: the caller spoke an earlier revision.
    pub(crate) inline: Option<rmcp::model::ClientCapabilities>,
    /// The `subscriptions/listen` stream a subscription's updates go to (2026-07-28), and
    /// its key among the upstream's subscribers; `None`: the caller's session.
    pub(crate) listen: Option<(String, tokio::sync::mpsc::Sender<String>)>,
}

/// A log message's severity, in the order of RFC 5424 that MCP uses (`debug` lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LogLevel(u8);

#[allow(
    deprecated,
    reason = "SEP-2577 deprecates logging for later revisions; 2025-11-25 clients set levels"
)]
impl From<rmcp::model::LoggingLevel> for LogLevel {
    fn from(l: rmcp::model::LoggingLevel) -> Self {
        use rmcp::model::LoggingLevel as L;
        Self(match l {
            L::Debug => 0,
            L::Info => 1,
            L::Notice => 2,
            L::Warning => 3,
            L::Error => 4,
            L::Critical => 5,
            L::Alert => 6,
            L::Emergency => 7,
        })
    }
}

impl LogLevel {
    /// The level's name on the wire (`debug` … `emergency`).
    pub(crate) fn name(self) -> &'static str {
        const NAMES: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];
        NAMES.get(usize::from(self.0)).copied().unwrap_or("emergency")
    }
}

/// The calls of one upstream connection waiting for progress, by the token handed out.
#[derive(Clone)]
pub(crate) struct Relays {
    inner: Arc<Inner>,
}

struct Inner {
    /// The upstream, for its credentials.
    upstream: Arc<Upstream>,
    next: AtomicU64,
    progress: Mutex<HashMap<String, ProgressSink>>,
    /// The callers' sessions subscribed to this upstream's resources.
    subscriptions: super::subscriptions::Subscriptions,
}

/// A registration, undone when the call ends (dropped).
pub(crate) struct Registered {
    token: String,
    relays: Relays,
}

impl Registered {
    pub(crate) fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.relays.sinks().remove(&self.token);
    }
}

impl Relays {
    pub(crate) fn new(upstream: Arc<Upstream>) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                next: AtomicU64::new(0),
                progress: Mutex::new(HashMap::new()),
                subscriptions: Default::default(),
            }),
        }
    }

    fn sinks(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressSink>> {
        // Nothing panics while holding this lock; a poisoned one still holds a whole map.
        self.inner.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A token of the gateway's for a call (an HTTP session's requests carry it), routed to
    /// `sink`. A counter and a random part: an upstream cannot guess another call's token.
    pub(crate) fn register(&self, sink: ProgressSink) -> Registered {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let token = format!("capgate-progress-{n}-{}", crate::trace::TraceId::generate().as_str());
        self.register_as(token, sink)
    }

    /// The token rmcp's client put on a request (it sets its own on every request), routed
    /// to `sink`.
    pub(crate) fn register_token(&self, token: &NumberOrString, sink: ProgressSink) -> Registered {
        self.register_as(key(token), sink)
    }

    fn register_as(&self, token: String, sink: ProgressSink) -> Registered {
        self.sinks().insert(token.clone(), sink);
        Registered {
            token,
            relays: self.clone(),
        }
    }

    pub(crate) fn subscriptions(&self) -> &super::subscriptions::Subscriptions {
        &self.inner.subscriptions
    }

    /// An upstream's `notifications/resources/updated` (as JSON, from an HTTP event
    /// stream): to the sessions subscribed to that URI, and no other.
    pub(crate) async fn resource_updated_json(&self, params: &serde_json::Value) {
        if let Some(uri) = params.get("uri").and_then(serde_json::Value::as_str) {
            self.inner.subscriptions.updated(uri).await;
        }
    }

    /// Whether `text` holds one of the upstream's own credentials: what it sends the caller
    /// must not (a compromised or careless upstream echoing its bearer token).
    pub(crate) fn leaks_credential(&self, text: &str) -> bool {
        super::leaks_credential(&self.inner.upstream, text)
    }

    /// Hands a notification to the call that owns `token`, if one does.
    pub(crate) fn deliver(&self, token: &NumberOrString, mut p: Progress) {
        if p.message
            .as_deref()
            .is_some_and(|m| super::leaks_credential(&self.inner.upstream, m))
        {
            p.message = None;
        }
        if let Some(sink) = self.sinks().get(&key(token)) {
            let _ = sink.try_send(p);
        }
    }

    /// An upstream's `notifications/progress` as JSON (from an HTTP event stream).
    pub(crate) fn deliver_json(&self, params: &serde_json::Value) {
        if let Ok(p) = serde_json::from_value::<ProgressNotificationParam>(params.clone()) {
            self.deliver(
                &p.progress_token.0,
                Progress {
                    progress: p.progress,
                    total: p.total,
                    message: p.message,
                },
            );
        }
    }
}

/// A token as a key: a string as it is, a number marked as one (`#7`), so that the two
/// never meet.
fn key(token: &NumberOrString) -> String {
    match token {
        NumberOrString::String(s) => s.to_string(),
        NumberOrString::Number(n) => format!("#{n}"),
    }
}

impl ClientHandler for Relays {
    async fn on_resource_updated(&self, params: rmcp::model::ResourceUpdatedNotificationParam, _context: NotificationContext<RoleClient>) {
        self.inner.subscriptions.updated(&params.uri).await;
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.deliver(
            &params.progress_token.0,
            Progress {
                progress: params.progress,
                total: params.total,
                message: params.message,
            },
        );
    }
}

/// Relays of an upstream whose one credential is `upstream-secret-value`.
#[cfg(test)]
pub(crate) fn for_tests() -> Relays {
    Relays::new(Arc::new(Upstream {
        name: "u".into(),
        environment: "dev".into(),
        target: crate::config::UpstreamTarget::Url("http://127.0.0.1:9/mcp".into()),
        env: vec![("TOKEN".into(), crate::secret::Secret::new("upstream-secret-value".into()))],
        headers: Vec::new(),
        timeout: std::time::Duration::from_secs(1),
        credential_digests: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: f64) -> Progress {
        Progress {
            progress: v,
            total: None,
            message: None,
        }
    }

    #[test]
    fn a_progress_message_holding_an_upstream_credential_goes_on_without_it() {
        let relays = for_tests();
        let (tx, mut rx) = tokio::sync::mpsc::channel(PROGRESS_BUFFER);
        let r = relays.register(tx);
        let token = NumberOrString::String(r.token().into());
        let mut leaky = p(1.0);
        leaky.message = Some("using upstream-secret-value now".into());
        relays.deliver(&token, leaky);
        let mut fine = p(2.0);
        fine.message = Some("step 2".into());
        relays.deliver(&token, fine.clone());
        assert_eq!(rx.try_recv().ok(), Some(p(1.0)), "the message went, the number stayed");
        assert_eq!(rx.try_recv().ok(), Some(fine));
    }

    #[test]
    fn progress_reaches_only_the_call_that_owns_the_token_and_only_while_it_runs() {
        let relays = for_tests();
        let (tx_a, mut rx_a) = tokio::sync::mpsc::channel(PROGRESS_BUFFER);
        let (tx_b, mut rx_b) = tokio::sync::mpsc::channel(PROGRESS_BUFFER);
        let a = relays.register(tx_a);
        let b = relays.register(tx_b);
        assert_ne!(a.token(), b.token());
        relays.deliver(&NumberOrString::String(a.token().into()), p(1.0));
        relays.deliver(&NumberOrString::String("capgate-progress-99".into()), p(2.0));
        relays.deliver(&NumberOrString::Number(0), p(3.0));
        let (tx_c, mut rx_c) = tokio::sync::mpsc::channel(PROGRESS_BUFFER);
        let c = relays.register_token(&NumberOrString::Number(7), tx_c);
        relays.deliver(&NumberOrString::String("#7".into()), p(5.0));
        relays.deliver(&NumberOrString::Number(7), p(6.0));
        assert_eq!(rx_c.try_recv().ok(), Some(p(5.0)), "the key of a number is its marked spelling");
        assert_eq!(rx_c.try_recv().ok(), Some(p(6.0)));
        drop(c);
        assert_eq!(rx_a.try_recv().ok(), Some(p(1.0)));
        assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err());
        let token = a.token().to_string();
        drop(a);
        relays.deliver(&NumberOrString::String(token.into()), p(4.0));
        assert!(rx_a.try_recv().is_err(), "a call that ended gets nothing more");
        drop(b);
    }
}
