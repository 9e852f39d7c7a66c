//! `subscriptions/listen` (MCP 2026-07-28, SEP-2575): a stateless caller's resource updates
//! on a stream of their own, in place of 2025-11-25's `resources/subscribe` on a session.
//!
//! Answered here, before rmcp, because what the stream honours is decided per caller: each
//! URI of `resourceSubscriptions` is decided like a read of that resource (`resources/read`'s
//! contract, roles, validation, one record each), and only those allowed are subscribed and
//! acknowledged; an unknown URI and a forbidden one are left out alike. The stream's first
//! event is the acknowledgement; then each update of an honoured URI (recorded before it
//! goes, `backend/subscriptions.rs`), tagged with the stream's subscription id (the request's
//! id); at the caller's token's expiry, the final result. When the caller goes away, every
//! subscription of the stream ends, and the upstream is told of each URI nobody else watches.
//!
//! List changes are never acknowledged: the lists are the contracts', which do not change
//! while the gateway runs.
//!
//! INVARIANT: an update reaches a stream only for a URI whose read was allowed to its caller
//! when it opened, and only while that caller's token is valid.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use rmcp::model::SubscriptionFilter;
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::http::Caller;
use super::respond;
use crate::audit::record::AuditRecord;
use crate::decision::{Decision, ReasonCode};
use crate::denial::{Denial, Outage};
use crate::pipeline::approval::Wait;
use crate::pipeline::validate::Subscription;
use crate::pipeline::{Answer, Runtime};

/// Most URIs one stream may ask for: each is a decision, a record and an upstream
/// subscription.
const MAX_URIS: usize = 64;

/// Updates one stream buffers for a caller that does not read.
const BUFFER: usize = 64;

/// The `_meta` key of every message on a stream.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Answers a 2026-07-28 `subscriptions/listen`; any other request is handed back.
pub(crate) async fn try_serve(
    rt: &Arc<Runtime>,
    shutdown: &tokio_util::sync::CancellationToken,
    stateless: bool,
    body: &Value,
    caller: Caller,
) -> Result<Response, Caller> {
    if !stateless || body.get("method").and_then(Value::as_str) != Some("subscriptions/listen") {
        return Err(caller);
    }
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let trace = caller.call.trace.clone();
    let refuse = |denial: Denial| async {
        let rec = denial.record(&rt.env().name, &caller.call).principal(Some(caller.auth.principal()));
        let denial = match rt.audit().append(rec).await {
            Ok(_) => denial,
            Err(_) => Denial::Unavailable(Outage::RefusalUnrecorded),
        };
        json(&json!({"jsonrpc": "2.0", "id": id, "error": respond::rpc(&denial, &trace)}))
    };
    let requested = match crate::server::envelope::member(body, &["params", "notifications"]).map(SubscriptionFilter::deserialize) {
        Some(Ok(f)) => f,
        _ => {
            let problem = "`params.notifications` is not a subscription filter";
            return Ok(refuse(Denial::InvalidParams { problem }).await);
        }
    };
    let mut uris = requested.resource_subscriptions.clone().unwrap_or_default();
    uris.sort();
    uris.dedup();
    if uris.len() > MAX_URIS {
        let problem = "more resource subscriptions on one stream than the 64 allowed";
        return Ok(refuse(Denial::InvalidParams { problem }).await);
    }

    let (tx, rx) = tokio::sync::mpsc::channel(BUFFER);
    let key = format!("listen-{}", trace.as_str());
    let mut honoured = Vec::new();
    for uri in uris {
        let wait = to_stream(&key, &tx);
        // Refused ones are recorded by the pipeline, and left out of the acknowledgement.
        if let Ok(Answer::Subscribed) = rt
            .subscription(&caller.auth, &caller.call, &uri, Subscription::Subscribe, wait)
            .await
        {
            honoured.push(uri);
        }
    }
    let mut accepted = SubscriptionFilter::new();
    if requested.resource_subscriptions.is_some() {
        accepted.resource_subscriptions = Some(honoured.clone());
    }
    let rec = AuditRecord::new(
        &rt.env().name,
        &caller.call,
        Decision::Allow,
        ReasonCode::Accepted,
        format!(
            "listen stream opened: {} resource subscriptions honoured; list changes are not sent (the lists are the contracts')",
            honoured.len()
        ),
    )
    .principal(Some(caller.auth.principal()));
    let ends = Ends {
        rt: rt.clone(),
        caller: Some(caller),
        key,
        uris: honoured,
    };
    if rt.audit().append(rec).await.is_err() {
        // `ends` undoes the subscriptions as it goes.
        return Ok(json(
            &json!({"jsonrpc": "2.0", "id": id, "error": respond::rpc(&Denial::Unavailable(Outage::RequestUnrecorded), &trace)}),
        ));
    }
    let expires = ends.caller.as_ref().map_or(0, |c| c.auth.expires_at());
    // The stream ends, with its final result, at shutdown and when a reload retires the
    // rules its subscriptions were decided by (the caller listens again, decided anew).
    let stop = shutdown.child_token();
    let (retired, ended) = (rt.retired().clone(), stop.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = retired.cancelled() => ended.cancel(),
            () = ended.cancelled() => {}
        }
    });
    Ok(stream(id, accepted, (tx, rx), expires, stop, ends))
}

/// The stream's messages as SSE events: the acknowledgement, each update, and at the token's
/// expiry (or the gateway's shutdown, or a reload) the final result.
fn stream(
    id: Value,
    accepted: SubscriptionFilter,
    (tx, rx): (tokio::sync::mpsc::Sender<String>, tokio::sync::mpsc::Receiver<String>),
    expires: u64,
    shutdown: tokio_util::sync::CancellationToken,
    ends: Ends,
) -> Response {
    let meta = json!({ SUBSCRIPTION_ID: id });
    let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {"notifications": accepted, "_meta": meta}});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(expires.saturating_sub(now));
    struct Open {
        // Held, so that a stream with nothing subscribed stays open as well (until the
        // token expires, the gateway stops or the caller leaves); the subscribers' clones
        // tell when the caller has left.
        _tx: tokio::sync::mpsc::Sender<String>,
        rx: tokio::sync::mpsc::Receiver<String>,
        id: Value,
        until: tokio::time::Instant,
        shutdown: tokio_util::sync::CancellationToken,
        done: bool,
        _ends: Ends,
        // A stream that ends first ends the task watching for the reload (`try_serve`).
        _watching: tokio_util::sync::DropGuard,
    }
    let open = Open {
        _tx: tx,
        rx,
        id,
        until,
        _watching: shutdown.clone().drop_guard(),
        shutdown,
        done: false,
        _ends: ends,
    };
    let rest = futures_util::stream::unfold(open, |mut o| async move {
        if o.done {
            return None;
        }
        let message = tokio::select! {
            uri = o.rx.recv() => {
                let uri = uri?;
                json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri, "_meta": {SUBSCRIPTION_ID: o.id}}})
            }
            () = tokio::time::sleep_until(o.until) => {
                o.done = true;
                json!({"jsonrpc": "2.0", "id": o.id, "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: o.id}}})
            }
            () = o.shutdown.cancelled() => {
                o.done = true;
                json!({"jsonrpc": "2.0", "id": o.id, "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: o.id}}})
            }
        };
        Some((event(&message), o))
    });
    let events = futures_util::stream::once(async move { event(&ack) }).chain(rest);
    let mut resp = Response::new(Body::from_stream(events));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A subscription's change for the stream `key`, whose updates go to `tx`.
fn to_stream(key: &str, tx: &tokio::sync::mpsc::Sender<String>) -> Wait {
    Wait {
        relay: crate::backend::relay::ToCaller {
            listen: Some((key.to_string(), tx.clone())),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn event(message: &Value) -> Result<String, std::convert::Infallible> {
    Ok(format!("data: {message}\n\n"))
}

fn json(body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A stream's subscriptions, ended when the stream is dropped (the caller went away, or its
/// token expired): each is decided and recorded as an unsubscribe, and the upstream told
/// where it was the last.
struct Ends {
    rt: Arc<Runtime>,
    caller: Option<Caller>,
    key: String,
    uris: Vec<String>,
}

impl Drop for Ends {
    fn drop(&mut self) {
        let (Some(caller), uris) = (self.caller.take(), std::mem::take(&mut self.uris)) else {
            return;
        };
        if uris.is_empty() {
            return;
        }
        let (rt, key) = (self.rt.clone(), std::mem::take(&mut self.key));
        // A runtime that is shutting down has nothing left to tell.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let (tx, _) = tokio::sync::mpsc::channel(1);
                for uri in uris {
                    let wait = to_stream(&key, &tx);
                    let _ = rt
                        .subscription(&caller.auth, &caller.call, &uri, Subscription::Unsubscribe, wait)
                        .await;
                }
            });
        }
    }
}
