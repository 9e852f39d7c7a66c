//! The HTTP path to `/mcp` and `/api/…`, one step per concern, each in its own module.
//! [`mcp`] and [`api`] run them in the order that is the precedence of refusals (what a
//! client is told first); each step records its own refusals before answering them, and a
//! refusal ends the request there.
//!
//! The steps are plain functions over one [`Exchange`] rather than a tower layer each: a
//! layer per concern cost every request a boxed future, a clone of the stack below it and a
//! round of extension lookups, ~7% of an allowed call's instructions (docs/BENCHMARKS.md).
//!
//! The state every step shares is [`HttpState`]: the environment's runtime, the session
//! table, what the listener admits, and the authentication-failure budget.

mod admission;
mod authn;
mod body;
mod dispatch;
pub(crate) mod headers;
mod protocol;
mod session;
mod stamp;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::Value;
use tracing::Instrument;

use super::budget::FailureBudget;
use super::jsonguard::BodyError;
use super::listener::Peer;
use super::respond;
use super::sessions::{InFlight, SessionTable};
use crate::audit::{AuditError, AuditRecord};
use crate::denial::{Channel, Denial, Outage};
use crate::pipeline::authn::Authenticated;
use crate::pipeline::{Live, Runtime};
use crate::request::CallCtx;
use crate::trace::TraceId;

const SESSION_HEADER: &str = "mcp-session-id";

/// What the steps proved about a request: its caller, and the facts every record about it
/// carries. Handed to the MCP handler and the API handlers in the request's extensions.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) auth: Authenticated,
    pub(crate) call: CallCtx,
    /// The log level of the caller's session, when the request entered it.
    pub(crate) log: Option<crate::backend::relay::LogLevel>,
}

/// One request on its way through the steps.
struct Exchange {
    peer: Peer,
    ctx: CallCtx,
    /// The generation the request runs on, read once when it arrived (`pipeline::Live`):
    /// its steps and its call see one set of contracts and policies.
    rt: Arc<Runtime>,
    /// When its headers were read (for the call-latency histogram).
    arrived: Instant,
    parts: http::request::Parts,
    /// The body, once [`body::read`] has read it.
    bytes: Bytes,
    /// A POST to `/mcp`: its one JSON value, or why it is not one.
    parsed: Option<Result<Value, BodyError>>,
    /// The tool a `tools/call` names (cleaned, bounded), for records.
    tool: Option<String>,
}

impl Exchange {
    /// The JSON-RPC id of a body that is JSON but was refused as a whole (a duplicate key),
    /// read as serde reads it, for the refusal's answer.
    fn lenient_id(&self) -> Value {
        serde_json::from_slice::<Value>(&self.bytes)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null)
    }

    /// The digest of the arguments the request carries: only a refusal needs it, and it is
    /// the costliest fact.
    fn args_digest(&self) -> Option<String> {
        let body = self.parsed.as_ref()?.as_ref().ok()?;
        crate::server::envelope::member(body, &["params", "arguments"]).map(crate::canonical::digest)
    }
}

/// A step's outcome: go on, or this refusal is the answer.
type Step<T = ()> = Result<T, Response>;

pub(crate) struct HttpState {
    live: Arc<Live>,
    pub(crate) sessions: Arc<SessionTable>,
    admission: admission::Admission,
    /// rmcp's sessions on this listener, for the direct route to ask about.
    pub(crate) mcp_sessions: Arc<LocalSessionManager>,
    /// Authentication failures per source (`budget.rs`).
    failures: FailureBudget,
    /// Fires when the gateway shuts down: the streams it serves itself end (`listen.rs`).
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// The audit explorer's last verification of the chain.
    pub(crate) chain: crate::server::explorer::ChainState,
}

impl HttpState {
    /// `hosts`: the names the listener answers to; `own_origins`: its own origins.
    pub(crate) fn new(
        live: Arc<Live>,
        hosts: &[String],
        own_origins: &[String],
        sessions: Arc<SessionTable>,
        mcp_sessions: Arc<LocalSessionManager>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let rt = live.now();
        Self {
            shutdown,
            sessions,
            admission: admission::Admission::new(&rt.env().allowed_origins, hosts, own_origins),
            mcp_sessions,
            failures: FailureBudget::new(rt.env().auth_failure_limit),
            chain: Default::default(),
            live,
        }
    }

    /// The generation this request runs on (`pipeline::Live`): read once per request where
    /// what is decided depends on it; the listener's own settings are the same in every
    /// generation.
    pub(crate) fn rt(&self) -> Arc<Runtime> {
        self.live.now()
    }

    /// Records a refusal, then answers it; if the record cannot be written, the answer is
    /// 503 instead (a client must not believe a refusal was logged when it was not).
    pub(crate) async fn refuse(&self, denial: &Denial, rec: AuditRecord, id: Value) -> Response {
        let trace = rec.trace_id.clone();
        let recorded = self.rt().audit().append(rec).await;
        self.answer_if_recorded(recorded, denial, &trace, id)
    }

    /// Like [`Self::refuse`], for refusals before or at authentication: a 401 to a source
    /// over its authentication-failure budget says so in its record and is answered only
    /// after [`super::budget::HOLD`], its record meanwhile sharing a commit with others.
    async fn refuse_unauthenticated(&self, peer: &Peer, denial: &Denial, mut rec: AuditRecord) -> Response {
        if !(denial.is_unauthorized() && self.failures.over(peer.addr.ip())) {
            return self.refuse(denial, rec, Value::Null).await;
        }
        rec.reason.push_str(&format!(
            "; the source is over its authentication-failure budget: answer held {} ms",
            super::budget::HOLD.as_millis()
        ));
        let trace = rec.trace_id.clone();
        let rt = self.rt();
        let (recorded, ()) = tokio::join!(rt.audit().append_unhurried(rec), self.failures.hold());
        self.answer_if_recorded(recorded, denial, &trace, Value::Null)
    }

    fn answer_if_recorded(&self, recorded: Result<u64, AuditError>, denial: &Denial, trace: &TraceId, id: Value) -> Response {
        let denial = match recorded {
            Ok(_) => denial,
            Err(_) => &Denial::Unavailable(Outage::RequestUnrecorded),
        };
        respond::http(denial, trace, &self.rt().env().resource_metadata_url(), id)
    }
}

/// `/mcp`, in front of rmcp's streamable HTTP service.
async fn mcp(State(st): State<Arc<HttpState>>, ConnectInfo(peer): ConnectInfo<Peer>, req: Request, next: Next) -> Response {
    // Every request gets its trace ID and its facts first: every refusal has a record.
    let (ex, body) = stamp::stamp(peer, req, Channel::Mcp, st.rt());
    let span = request_span(&ex);
    let (Ok(resp) | Err(resp)) = mcp_steps(&st, ex, body, next).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    resp
}

/// The span a request's steps run in: what its log lines carry (its trace ID is its audit
/// records'; never its token nor its arguments). The requests rmcp's session worker serves
/// log from that worker's task; their lines name `trace_id` as a field instead.
fn request_span(ex: &Exchange) -> tracing::Span {
    tracing::info_span!(
        "request",
        trace_id = %ex.ctx.trace.as_str(),
        // Known once the body is read (`mcp_steps`).
        method = tracing::field::Empty,
        session = ex.ctx.session_id.is_some(),
    )
}

async fn mcp_steps(st: &Arc<HttpState>, mut ex: Exchange, body: Body, next: Next) -> Step<Response> {
    // Before anything is read: a browser page of another origin or under a rebound name must
    // never drive the gateway, and tokens go in headers only.
    admission::admit(st, &ex).await?;
    // Bounded before it is parsed; parsed once, here, so that the refusals below can name the
    // tool a request was for.
    body::read(st, &mut ex, body, Channel::Mcp).await?;
    if let Some(m) = &ex.ctx.method {
        tracing::Span::current().record("method", m.as_str());
    }
    // The trace span, once the trace is known (the body may name it); it ends when the
    // answer is ready, which is when this function returns, by any path.
    ex.ctx.span = ex.rt.begin_span(&ex.ctx.trace, caller_span(&ex));
    let _answered = ex.ctx.span.0.clone().map(Answered);
    if let (Some(span), Some(m)) = (&ex.ctx.span.0, &ex.ctx.method) {
        span.method(m);
    }
    // Nothing of the tool surface is revealed, and no complaint about the body is answered,
    // to an unauthenticated caller.
    let auth = authn::authenticate_step(st, &ex, Channel::Mcp).await?;
    protocol::check(st, &ex, &auth).await?;
    // A session belongs to the identity that opened it; the request is in flight on it
    // until its answer has gone out.
    let owner = auth.principal().owner_key();
    let in_flight = session::enter(st, &ex, &auth).await?;
    let (session_id, is_delete, trace) = (
        ex.ctx.session_id.clone(),
        ex.parts.method == http::Method::DELETE,
        ex.ctx.trace.clone(),
    );
    // The direct route for the requests an agent repeats, else rmcp.
    let log = in_flight.as_ref().and_then(InFlight::log);
    let (resp, direct) = dispatch::dispatch(st, ex, auth, log, next).await;
    let mut resp = session::finish(st, session_id.as_deref(), &owner, is_delete, in_flight, direct, resp);
    respond::set_trace(&mut resp, &trace);
    Ok(resp)
}

/// The caller's span, from the `traceparent` the trace ID was taken from: the header, else
/// the body's `_meta` (`body.rs`).
fn caller_span(ex: &Exchange) -> Option<(opentelemetry::trace::SpanId, bool)> {
    match ex.parts.headers.get("traceparent") {
        Some(h) => crate::trace::parent_of(h.to_str().ok()),
        None => {
            let body = ex.parsed.as_ref().and_then(|p| p.as_ref().ok())?;
            crate::trace::parent_of(crate::server::envelope::member(body, &["params", "_meta", "traceparent"]).and_then(Value::as_str))
        }
    }
}

/// Marks its span answered when dropped.
struct Answered(Arc<crate::telemetry::CallSpan>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// `/api/…`: the approvals API's handlers behind the same admission, body and identity
/// steps; a handler takes the [`Caller`].
async fn api(State(st): State<Arc<HttpState>>, ConnectInfo(peer): ConnectInfo<Peer>, req: Request, next: Next) -> Response {
    let (ex, body) = stamp::stamp(peer, req, Channel::Api, st.rt());
    let span = request_span(&ex);
    let (Ok(resp) | Err(resp)) = api_steps(&st, ex, body, next).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    resp
}

async fn api_steps(st: &Arc<HttpState>, mut ex: Exchange, body: Body, next: Next) -> Step<Response> {
    admission::admit(st, &ex).await?;
    body::read(st, &mut ex, body, Channel::Api).await?;
    let auth = authn::authenticate_step(st, &ex, Channel::Api).await?;
    let trace = ex.ctx.trace.clone();
    let mut req = Request::from_parts(ex.parts, Body::from(ex.bytes));
    req.extensions_mut().insert(Caller {
        auth,
        call: ex.ctx,
        log: None,
    });
    let mut resp = next.run(req).await;
    respond::set_trace(&mut resp, &trace);
    Ok(resp)
}

pub(crate) fn mcp_routes(state: Arc<HttpState>, service: axum::routing::MethodRouter) -> axum::Router {
    axum::Router::new()
        .nest_service("/mcp", service)
        // Only on `/mcp` itself: a path nothing serves is a plain 404, not an MCP refusal.
        .route_layer(from_fn_with_state(state, mcp))
}

pub(crate) fn api_routes(state: Arc<HttpState>, handlers: axum::Router<Arc<HttpState>>) -> axum::Router {
    handlers.route_layer(from_fn_with_state(state.clone(), api)).with_state(state)
}
