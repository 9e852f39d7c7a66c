//! Upstream MCP servers: stdio child processes (spawned with a cleared environment plus the
//! configured credentials, restarted when they die) through `rmcp`'s client service, and
//! streamable HTTP servers through rmcp's transport client driven from the caller's task
//! (`http_session.rs`).
//!
//! INVARIANT: credentials in `env`/`headers` go to the upstream only; the agent never sees
//! them and no error message carries them. A tool call is never retried automatically: it
//! may have run before the connection broke.

pub(crate) mod http_session;
pub(crate) mod relay;
pub(crate) mod stateless;
pub(crate) mod subscriptions;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::model::CancelledNotificationParam;
use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, CallToolResult, ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult,
    CompletionContext, GetPromptRequest, GetPromptRequestParams, GetPromptResult, ListPromptsRequest, ListPromptsResult,
    ListResourceTemplatesRequest, ListResourceTemplatesResult, ListResourcesRequest, ListResourcesResult, PaginatedRequestParams, Prompt,
    ReadResourceRequest, ReadResourceRequestParams, ReadResourceResult, Reference, Resource, ResourceTemplate, ServerResult,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::{Upstream, UpstreamTarget};

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("upstream `{upstream}` is unavailable")]
    Unavailable { upstream: String, detail: String },
    #[error("upstream `{upstream}` did not answer within {secs}s")]
    Timeout { upstream: String, secs: u64 },
    #[error("upstream `{upstream}` failed the call")]
    Failed { upstream: String, detail: String },
    #[error("the result of upstream `{upstream}` contained a backend credential and was withheld")]
    Withheld { upstream: String },
    #[error("the caller cancelled the call; upstream `{upstream}` was told")]
    Cancelled { upstream: String },
    /// A 2026-07-28 upstream's MissingRequiredClientCapabilityError (-32021): the call did not
    /// tell it of client capabilities it needs (the caller did not declare them, or the
    /// contract's `client_requests` does not name them).
    #[error("upstream `{upstream}` needs client capabilities this call did not declare to it")]
    NeedsCapability { upstream: String, required: serde_json::Value },
}

impl BackendError {
    /// The kind of failure, as metrics label it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            BackendError::Unavailable { .. } => "unavailable",
            BackendError::Timeout { .. } => "timeout",
            BackendError::Failed { .. } => "failed",
            BackendError::Withheld { .. } => "withheld",
            BackendError::Cancelled { .. } => "cancelled",
            BackendError::NeedsCapability { .. } => "needs_capability",
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            BackendError::Unavailable { detail, .. } | BackendError::Failed { detail, .. } => detail.clone(),
            BackendError::Timeout { .. }
            | BackendError::Withheld { .. }
            | BackendError::Cancelled { .. }
            | BackendError::NeedsCapability { .. } => self.to_string(),
        }
    }
}

type Service = RunningService<RoleClient, relay::Relays>;

/// Whether a text holds any of `cfg`'s credential values. Values shorter than 8 characters
/// are not matched (too likely to occur by chance).
pub(crate) fn leaks_credential(cfg: &Upstream, text: &str) -> bool {
    cfg.env
        .iter()
        .chain(cfg.headers.iter())
        .any(|(_, v)| v.expose().len() >= 8 && text.contains(v.expose().as_str()))
}

/// What an upstream offers besides tools.
#[derive(Default)]
pub(crate) struct Surface {
    pub(crate) prompts: Vec<Prompt>,
    pub(crate) resources: Vec<Resource>,
    pub(crate) templates: Vec<ResourceTemplate>,
}

fn trace_meta(traceparent: &str) -> rmcp::model::RequestMetaObject {
    let mut meta = rmcp::model::RequestMetaObject::default();
    meta.0
        .insert("traceparent".to_string(), serde_json::Value::String(traceparent.to_string()));
    meta
}

/// Every page of a list, at most 1000 (a server that keeps handing out cursors cannot hold
/// the start forever).
async fn pages<R, T, F, Fut>(mut fetch: F, split: impl Fn(R) -> (Vec<T>, Option<String>)) -> Result<Vec<T>, http_session::SessionError>
where
    F: FnMut(PaginatedRequestParams) -> Fut,
    Fut: std::future::Future<Output = Result<R, http_session::SessionError>>,
{
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let mut p = PaginatedRequestParams::default();
        p.cursor = cursor;
        let (items, next) = split(fetch(p).await?);
        out.extend(items);
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
    Ok(out)
}

/// What an error detail becomes when it held a backend credential.
const WITHHELD: &str = "(the upstream's error text held a backend credential and was withheld)";

/// One live connection to an upstream.
enum Client {
    /// A stdio child, or an HTTP server past the protocol versions [`http_session::HttpSession`]
    /// speaks: rmcp's client service.
    Service(Service),
    Http(http_session::HttpSession),
}

impl Client {
    fn is_closed(&self) -> bool {
        match self {
            Client::Service(s) => s.is_transport_closed(),
            Client::Http(h) => h.is_closed(),
        }
    }
}

pub(crate) struct UpstreamClient {
    cfg: Arc<Upstream>,
    /// The live connection. Read on every call without waiting; replaced under `connecting`.
    conn: std::sync::RwLock<Option<Arc<Client>>>,
    /// Held while (re)connecting, so that one handshake serves every waiting call.
    connecting: Mutex<()>,
    /// The calls waiting for this upstream's progress notifications (any connection's).
    relays: relay::Relays,
}

impl UpstreamClient {
    pub(crate) fn new(cfg: Arc<Upstream>) -> Self {
        Self {
            relays: relay::Relays::new(cfg.clone()),
            cfg,
            conn: std::sync::RwLock::new(None),
            connecting: Mutex::new(()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Whether a text holds any of this upstream's credential values. Values shorter than 8
    /// characters are not matched (too likely to occur by chance).
    pub(crate) fn leaks_credential(&self, text: &str) -> bool {
        leaks_credential(&self.cfg, text)
    }

    /// An upstream's own error text goes to audit records, logs and start-up errors; one
    /// that carries a credential of this upstream is replaced. Every error this client
    /// returns passes here.
    fn scrub(&self, e: BackendError) -> BackendError {
        match e {
            BackendError::Unavailable { upstream, detail } if self.leaks_credential(&detail) => BackendError::Unavailable {
                upstream,
                detail: WITHHELD.into(),
            },
            BackendError::Failed { upstream, detail } if self.leaks_credential(&detail) => BackendError::Failed {
                upstream,
                detail: WITHHELD.into(),
            },
            other => other,
        }
    }

    fn unavailable(&self, detail: impl std::fmt::Display) -> BackendError {
        BackendError::Unavailable {
            upstream: self.cfg.name.clone(),
            detail: detail.to_string(),
        }
    }

    async fn connect(&self) -> Result<Client, BackendError> {
        let fut = async {
            match &self.cfg.target {
                UpstreamTarget::Command { program, args } => {
                    let mut cmd = tokio::process::Command::new(program);
                    cmd.args(args);
                    self.spawn(cmd).await.map(Client::Service)
                }
                UpstreamTarget::Builtin { args, .. } => {
                    let exe = std::env::current_exe().map_err(|e| self.unavailable(e))?;
                    let mut cmd = tokio::process::Command::new(exe);
                    cmd.arg("upstream-demo").args(args);
                    self.spawn(cmd).await.map(Client::Service)
                }
                UpstreamTarget::Url(url) => {
                    let mut headers = HashMap::new();
                    for (k, v) in &self.cfg.headers {
                        let name = http::HeaderName::from_bytes(k.as_bytes())
                            .map_err(|_| self.unavailable(format!("header name `{k}` is invalid")))?;
                        let mut value = http::HeaderValue::from_str(v.expose())
                            .map_err(|_| self.unavailable(format!("header `{k}` has an invalid value")))?;
                        value.set_sensitive(true);
                        headers.insert(name, value);
                    }
                    let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(headers.clone());
                    // rmcp's default client keeps no idle connections, so every call would
                    // open (and TIME_WAIT) a new TCP connection; it also follows redirects.
                    // This one pools, sets TCP_NODELAY (the delayed-ACK stall rmcp avoids by
                    // not pooling) and never follows a redirect away from the configured URL.
                    let http = reqwest::Client::builder()
                        .pool_max_idle_per_host(256)
                        .tcp_nodelay(true)
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .map_err(|e| self.unavailable(format!("http client: {e}")))?;
                    match http_session::HttpSession::open(http.clone(), url.as_str(), headers, self.relays.clone()).await {
                        Ok(Some(session)) => {
                            let revision = if session.is_modern() {
                                stateless::REVISION
                            } else {
                                "a session (initialize)"
                            };
                            tracing::debug!(upstream = %self.cfg.name, "spoken to at {revision}");
                            Ok(Client::Http(session))
                        }
                        Ok(None) => {
                            let transport = StreamableHttpClientTransport::with_client(http, config);
                            self.relays
                                .clone()
                                .serve(transport)
                                .await
                                .map(Client::Service)
                                .map_err(|e| self.unavailable(e))
                        }
                        Err(e) => Err(self.unavailable(e.detail)),
                    }
                }
            }
        };
        tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| self.unavailable("the handshake timed out"))?
    }

    async fn spawn(&self, mut cmd: tokio::process::Command) -> Result<Service, BackendError> {
        // The child gets nothing of the gateway's own environment (which may hold a token)
        // but PATH and the credentials configured for it.
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in &self.cfg.env {
            cmd.env(k, v.expose());
        }
        cmd.kill_on_drop(true);
        let (transport, _stderr) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| self.unavailable(format!("cannot start: {e}")))?;
        self.relays.clone().serve(transport).await.map_err(|e| self.unavailable(e))
    }

    /// The live connection if there is one and it has not closed.
    fn live(&self) -> Option<Arc<Client>> {
        // Nothing panics while holding this lock; a poisoned one still holds a whole value.
        let slot = self.conn.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// The live connection, (re)connecting when there is none or it has closed.
    async fn client(&self) -> Result<Arc<Client>, BackendError> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(c) = self.live() {
            return Ok(c);
        }
        if self.conn.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_some() {
            tracing::warn!(upstream = %self.cfg.name, "upstream connection closed; restarting it");
        }
        let c = Arc::new(self.connect().await?);
        *self.conn.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c.clone());
        Ok(c)
    }

    pub(crate) async fn list_tools(&self) -> Result<Vec<Tool>, BackendError> {
        self.list_tools_unscrubbed().await.map_err(|e| self.scrub(e))
    }

    async fn list_tools_unscrubbed(&self) -> Result<Vec<Tool>, BackendError> {
        let c = self.client().await?;
        let listed = async {
            match c.as_ref() {
                Client::Service(s) => s.peer().list_all_tools().await.map_err(|e| self.unavailable(e)),
                Client::Http(h) => h.list_tools().await.map_err(|e| self.unavailable(e.detail)),
            }
        };
        tokio::time::timeout(self.cfg.timeout, listed)
            .await
            .map_err(|_| BackendError::Timeout {
                upstream: self.cfg.name.clone(),
                secs: self.cfg.timeout.as_secs(),
            })?
    }

    /// The prompts, fixed resources and resource templates this upstream lists (a kind it
    /// does not serve lists as empty), for the contracts that name them.
    pub(crate) async fn list_surface(&self, prompts: bool, resources: bool) -> Result<Surface, BackendError> {
        let c = self.client().await?;
        let listed = async {
            let mut surface = Surface::default();
            match c.as_ref() {
                Client::Service(s) => {
                    let peer = s.peer();
                    let caps = peer.peer_info().map(|i| i.capabilities.clone()).unwrap_or_default();
                    if prompts && caps.prompts.is_some() {
                        surface.prompts = peer.list_all_prompts().await.map_err(|e| self.unavailable(e))?;
                    }
                    if resources && caps.resources.is_some() {
                        surface.resources = peer.list_all_resources().await.map_err(|e| self.unavailable(e))?;
                        surface.templates = peer.list_all_resource_templates().await.map_err(|e| self.unavailable(e))?;
                    }
                }
                Client::Http(h) => {
                    if prompts {
                        surface.prompts = pages(
                            |p| h.send::<ListPromptsResult>(ClientRequest::ListPromptsRequest(ListPromptsRequest::with_param(p))),
                            |r| (r.prompts, r.next_cursor),
                        )
                        .await
                        .unwrap_or_default();
                    }
                    if resources {
                        surface.resources = pages(
                            |p| h.send::<ListResourcesResult>(ClientRequest::ListResourcesRequest(ListResourcesRequest::with_param(p))),
                            |r| (r.resources, r.next_cursor),
                        )
                        .await
                        .unwrap_or_default();
                        surface.templates = pages(
                            |p| {
                                h.send::<ListResourceTemplatesResult>(ClientRequest::ListResourceTemplatesRequest(
                                    ListResourceTemplatesRequest::with_param(p),
                                ))
                            },
                            |r| (r.resource_templates, r.next_cursor),
                        )
                        .await
                        .unwrap_or_default();
                    }
                }
            }
            Ok(surface)
        };
        tokio::time::timeout(self.cfg.timeout, listed)
            .await
            .map_err(|_| BackendError::Timeout {
                upstream: self.cfg.name.clone(),
                secs: self.cfg.timeout.as_secs(),
            })?
            .map_err(|e| self.scrub(e))
    }

    /// `prompts/get` (`params`: the prompt, its arguments and, on a 2026-07-28 retry, the
    /// caller's answers with the upstream's state); `asks` as for [`Self::call`].
    pub(crate) async fn get_prompt(
        &self,
        mut params: GetPromptRequestParams,
        traceparent: &str,
        asks: Option<&dyn relay::Asker>,
    ) -> Result<stateless::Called<GetPromptResult>, BackendError> {
        params.meta = Some(trace_meta(traceparent));
        let request = ClientRequest::GetPromptRequest(GetPromptRequest::new(params));
        self.forward_rounds(request, asks, |r| match r {
            ServerResult::GetPromptResult(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// `resources/read`, as [`Self::get_prompt`].
    pub(crate) async fn read_resource(
        &self,
        mut params: ReadResourceRequestParams,
        traceparent: &str,
        asks: Option<&dyn relay::Asker>,
    ) -> Result<stateless::Called<ReadResourceResult>, BackendError> {
        params.meta = Some(trace_meta(traceparent));
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(params));
        self.forward_rounds(request, asks, |r| match r {
            ServerResult::ReadResourceResult(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// Subscribes `who` (a caller's session) to `uri`; the upstream is asked first, once
    /// per URI however many sessions subscribe, and the subscription counts only once it
    /// agreed.
    #[allow(
        deprecated,
        reason = "resources/subscribe is 2025-11-25's; capgate speaks that revision to upstreams"
    )]
    pub(crate) async fn subscribe(&self, uri: &str, who: subscriptions::Subscriber, traceparent: &str) -> Result<(), BackendError> {
        let subs = self.relays.subscriptions();
        let _changing = subs.changing.lock().await;
        if !subs.any(uri) {
            let mut params = SubscribeRequestParams::new(uri.to_string());
            params.meta = Some(trace_meta(traceparent));
            self.forward_subscription(ClientRequest::SubscribeRequest(rmcp::model::SubscribeRequest::new(params)))
                .await?;
        }
        // An HTTP upstream sends its updates on the session's own stream.
        if let Some(c) = self.live()
            && let Client::Http(h) = c.as_ref()
            && let Ok(session) = h.subscription_session().await
        {
            session.listen();
        }
        subs.add(uri, who);
        Ok(())
    }

    /// Ends session `session`'s subscription to `uri`; the upstream is told when it was the
    /// last one. A session that had none changes nothing.
    #[allow(
        deprecated,
        reason = "resources/unsubscribe is 2025-11-25's; capgate speaks that revision to upstreams"
    )]
    pub(crate) async fn unsubscribe(&self, uri: &str, session: &str, traceparent: &str) -> Result<(), BackendError> {
        let subs = self.relays.subscriptions();
        let _changing = subs.changing.lock().await;
        if subs.remove(uri, session) == Some(true) {
            let mut params = UnsubscribeRequestParams::new(uri.to_string());
            params.meta = Some(trace_meta(traceparent));
            self.forward_subscription(ClientRequest::UnsubscribeRequest(rmcp::model::UnsubscribeRequest::new(params)))
                .await?;
        }
        Ok(())
    }

    /// `resources/subscribe` or `unsubscribe`, on the session that carries subscriptions
    /// (a 2026-07-28 connection has none of its own).
    async fn forward_subscription(&self, request: ClientRequest) -> Result<(), BackendError> {
        let c = self.client().await?;
        match c.as_ref() {
            Client::Http(h) => {
                let sent = async {
                    let session = h.subscription_session().await.map_err(|e| e.detail)?;
                    // Any result answers it.
                    session
                        .send::<serde::de::IgnoredAny>(request)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.detail)
                };
                self.finish(sent).await
            }
            Client::Service(_) => self
                .forward(request, |_| {
                    // Any result answers it (rmcp reads `{}` as whichever result kind fits first).
                    Some(serde_json::Value::Null)
                })
                .await
                .map(|_| ()),
        }
    }

    pub(crate) async fn complete(
        &self,
        reference: Reference,
        argument: ArgumentInfo,
        context: std::collections::HashMap<String, String>,
        traceparent: &str,
    ) -> Result<CompleteResult, BackendError> {
        let mut params = CompleteRequestParams::new(reference, argument);
        if !context.is_empty() {
            let mut c = CompletionContext::new();
            c.arguments = Some(context);
            params.context = Some(c);
        }
        params.meta = Some(trace_meta(traceparent));
        self.forward(ClientRequest::CompleteRequest(CompleteRequest::new(params)), |r| match r {
            ServerResult::CompleteResult(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// Sends one request and reads its answer as `R` (`pick` says which kind of result that
    /// is, for rmcp's client, which reads every answer as any result).
    async fn forward<R: serde::de::DeserializeOwned>(
        &self,
        request: ClientRequest,
        pick: fn(ServerResult) -> Option<R>,
    ) -> Result<R, BackendError> {
        let c = self.client().await?;
        let fut = async {
            match c.as_ref() {
                Client::Service(s) => match s.peer().send_request(request).await {
                    Ok(answer) => pick(answer).ok_or_else(|| "the upstream answered with another kind of result".to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Client::Http(h) => h.send::<R>(request).await.map_err(|e| e.detail),
            }
        };
        self.finish(fut).await
    }

    /// [`Self::forward`] for a request that may take rounds of input from an HTTP upstream.
    async fn forward_rounds<R: serde::de::DeserializeOwned>(
        &self,
        request: ClientRequest,
        asks: Option<&dyn relay::Asker>,
        pick: fn(ServerResult) -> Option<R>,
    ) -> Result<stateless::Called<R>, BackendError> {
        let c = self.client().await?;
        let fut = async {
            match c.as_ref() {
                Client::Service(s) => match s.peer().send_request(request).await {
                    Ok(answer) => pick(answer)
                        .map(stateless::Called::Done)
                        .ok_or_else(|| "the upstream answered with another kind of result".to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Client::Http(h) => h.send_rounds::<R>(request, asks).await.map_err(|e| e.detail),
            }
        };
        self.finish(fut).await
    }

    /// A forwarded request's answer within the upstream's timeout; its failure as the
    /// upstream's, scrubbed of credentials.
    async fn finish<T>(&self, fut: impl std::future::Future<Output = Result<T, String>>) -> Result<T, BackendError> {
        match tokio::time::timeout(self.cfg.timeout, Box::pin(fut)).await {
            Err(_) => Err(BackendError::Timeout {
                upstream: self.cfg.name.clone(),
                secs: self.cfg.timeout.as_secs(),
            }),
            Ok(Err(detail)) => Err(self.scrub(BackendError::Failed {
                upstream: self.cfg.name.clone(),
                detail,
            })),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Calls `tool`; the upstream's progress notifications for this call go to `progress`
    /// while it runs, and, from an HTTP upstream, its requests to `asks` (a child-process
    /// upstream's requests come on its one shared connection, tied to no call: rmcp's client
    /// refuses them, as a client without the capability would).
    /// `cancel`: the caller's cancellation; the upstream is told (`notifications/cancelled`)
    /// and the call ends as [`BackendError::Cancelled`].
    /// A tool call (`params`: the tool, its arguments and, on a 2026-07-28 retry, the
    /// caller's answers with the upstream's state).
    pub(crate) async fn call(
        &self,
        params: CallToolRequestParams,
        traceparent: &str,
        progress: Option<relay::ProgressSink>,
        asks: Option<&dyn relay::Asker>,
        cancel: CancellationToken,
    ) -> Result<stateless::Called<CallToolResult>, BackendError> {
        self.call_unscrubbed(params, traceparent, progress, asks, cancel)
            .await
            .map_err(|e| self.scrub(e))
    }

    async fn call_unscrubbed(
        &self,
        mut params: CallToolRequestParams,
        traceparent: &str,
        progress: Option<relay::ProgressSink>,
        asks: Option<&dyn relay::Asker>,
        cancel: CancellationToken,
    ) -> Result<stateless::Called<CallToolResult>, BackendError> {
        let c = self.client().await?;
        let mut meta = trace_meta(traceparent);
        // Held until the call ends: the registration is what routes the upstream's progress.
        let mut registered = None;
        let called = async {
            match c.as_ref() {
                Client::Service(s) => {
                    params.meta = Some(meta);
                    // rmcp's client puts a progress token of its own on every request; it is
                    // learnt from the request's handle and routed from then on.
                    let handle = s
                        .peer()
                        .send_request_with_option(
                            ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(params)),
                            rmcp::service::PeerRequestOptions::no_options(),
                        )
                        .await
                        .map_err(|e| Failure::Said(e.to_string()))?;
                    if let Some(sink) = progress {
                        registered = Some(self.relays.register_token(&handle.progress_token.0, sink));
                    }
                    let (id, peer) = (handle.id.clone(), handle.peer.clone());
                    tokio::select! {
                        answer = handle.await_response() => match answer.map_err(|e| Failure::Said(e.to_string()))? {
                            rmcp::model::ServerResult::CallToolResult(r) => Ok(stateless::Called::Done(r)),
                            _ => Err(Failure::Said("the upstream answered a tool call with another kind of result".to_string())),
                        },
                        () = cancel.cancelled() => {
                            let note = CancelledNotificationParam::new(Some(id), Some(CANCELLED.to_string()));
                            let _ = peer.notify_cancelled(note).await;
                            Err(Failure::Cancelled)
                        }
                    }
                }
                Client::Http(h) => {
                    if let Some(sink) = progress {
                        let r = self.relays.register(sink);
                        meta.0
                            .insert("progressToken".to_string(), serde_json::Value::String(r.token().to_string()));
                        registered = Some(r);
                    }
                    params.meta = Some(meta);
                    h.call_tool_cancellable(params, asks, &cancel, CANCELLED).await.map_err(|e| {
                        if cancel.is_cancelled() {
                            Failure::Cancelled
                        } else if let Some(required) = e.needs {
                            Failure::Needs(required)
                        } else {
                            Failure::Said(e.detail)
                        }
                    })
                }
            }
        };
        let outcome = tokio::time::timeout(self.cfg.timeout, called).await;
        if registered.is_some() {
            // rmcp hands each notification to a task of its own and the answer straight to
            // the caller, so progress sent just before the answer may still be on its way:
            // let those tasks run before the registration (which routes it) is dropped.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        }
        drop(registered);
        match outcome {
            Err(_) => Err(BackendError::Timeout {
                upstream: self.cfg.name.clone(),
                secs: self.cfg.timeout.as_secs(),
            }),
            Ok(Err(Failure::Cancelled)) => Err(BackendError::Cancelled {
                upstream: self.cfg.name.clone(),
            }),
            Ok(Err(Failure::Needs(required))) => Err(BackendError::NeedsCapability {
                upstream: self.cfg.name.clone(),
                required,
            }),
            Ok(Err(Failure::Said(detail))) => Err(BackendError::Failed {
                upstream: self.cfg.name.clone(),
                detail,
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// Why a forwarded call ended without a result.
enum Failure {
    Said(String),
    Cancelled,
    /// The client capabilities the upstream needs (-32021).
    Needs(serde_json::Value),
}

/// What the upstream is told when a caller cancels.
const CANCELLED: &str = "the caller cancelled the request";
