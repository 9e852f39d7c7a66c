//! The MCP server side: an `rmcp` `ServerHandler` that hands `tools/list` and `tools/call`
//! to the pipeline. It trusts nothing it did not get from the transport guard (HTTP) or from
//! verifying the stdio token itself.

#![allow(
    deprecated,
    reason = "SEP-2577 deprecates logging for later revisions; 2025-11-25 clients set a level"
)]

use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, ErrorData, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    PromptsCapability, ReadResourceRequestParams, ReadResourceResponse, ResourcesCapability, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
};
use std::time::Duration;

use rmcp::model::{ProgressNotificationParam, ProtocolVersion};

use crate::audit::record::AuditRecord;
use crate::backend::relay::{LogLevel, PROGRESS_BUFFER, Progress};
use crate::decision::{Decision, ReasonCode};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};

use crate::contract::Kind;
use crate::denial::{Channel, Denial, Outage};
use crate::identity::AuthnError;
use crate::pipeline::approval::{MAX_WAIT, Wait};
use crate::pipeline::validate::Subscription;
use crate::pipeline::{Answer, Live, Runtime};
use crate::request::{CallCtx, ClientRef};
use crate::secret::Secret;
use crate::trace::TraceId;

use super::http::Caller;
use super::respond;
use super::sessions::SessionTable;

#[derive(Clone)]
pub(crate) struct Gateway {
    live: Arc<Live>,
    /// Set for the stdio transport: the caller's token, verified again on every request so
    /// that expiry applies to a long-lived stdio session too.
    stdio_token: Option<Arc<Secret<String>>>,
    /// Where a session's log level is kept: the HTTP guard's session table (the direct route
    /// reads it too), or, for the one stdio session, here.
    log_levels: LogLevels,
}

#[derive(Clone)]
enum LogLevels {
    Http(Arc<SessionTable>),
    Stdio(Arc<Mutex<Option<LogLevel>>>),
}

impl Gateway {
    pub(crate) fn http(live: Arc<Live>, sessions: Arc<SessionTable>) -> Self {
        Self {
            live,
            stdio_token: None,
            log_levels: LogLevels::Http(sessions),
        }
    }

    pub(crate) fn stdio(live: Arc<Live>, token: Secret<String>) -> Self {
        Self {
            live,
            stdio_token: Some(Arc::new(token)),
            log_levels: LogLevels::Stdio(Arc::default()),
        }
    }

    /// The generation a request runs on: a session outlives reloads, its requests do not.
    fn rt(&self) -> Arc<Runtime> {
        self.live.now()
    }

    /// Keeps the level a session's client set; `false`: it has no session to keep it in.
    fn set_log_level(&self, caller: &Caller, level: LogLevel) -> bool {
        match &self.log_levels {
            LogLevels::Http(table) => caller.call.session_id.as_deref().is_some_and(|sid| table.set_log(sid, level)),
            LogLevels::Stdio(own) => {
                *own.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(level);
                true
            }
        }
    }
}

/// The least severe log message this request's caller wants: what the request says
/// (2026-07-28 has no sessions, so each request says it), else what its session set.
fn wanted_log(context: &RequestContext<RoleServer>, caller: &Caller) -> Option<LogLevel> {
    context.meta.log_level().map(LogLevel::from).or(caller.log)
}

impl Gateway {
    /// The caller of a request to `method`: proven by the HTTP steps, or, over stdio, by the
    /// token verified again now.
    async fn request_ctx(&self, ctx: &RequestContext<RoleServer>, method: &str) -> Result<Caller, ErrorData> {
        let request_id = Some(ctx.id.to_string());
        if let Some(token) = &self.stdio_token {
            let trace = TraceId::from_traceparent_or_new(ctx.meta.get_traceparent());
            let span = self.rt().begin_span(&trace, crate::trace::parent_of(ctx.meta.get_traceparent()));
            if let Some(s) = &span.0 {
                s.method(method);
            }
            let call = CallCtx {
                trace,
                method: Some(method.to_string()),
                request_id,
                session_id: None,
                client: ClientRef::stdio(),
                span,
            };
            // No certificate can be presented over stdio: a certificate-bound token is refused.
            let verified = self.rt().authn().verify(token.expose()).await.and_then(|a| {
                if a.is_bound() {
                    Err(AuthnError::Invalid {
                        detail: "the token is bound to a client certificate; stdio has none".into(),
                    })
                } else {
                    Ok(a)
                }
            });
            return match verified {
                Ok(auth) => {
                    let log = match &self.log_levels {
                        LogLevels::Stdio(own) => *own.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                        LogLevels::Http(_) => None,
                    };
                    Ok(Caller { auth, call, log })
                }
                Err(error) => {
                    let denial = Denial::Unauthenticated {
                        error,
                        channel: Channel::Stdio,
                        token_sent: true,
                    };
                    let _ = self.rt().audit().append(denial.record(&self.rt().env().name, &call)).await;
                    Err(respond::rpc(&denial, &call.trace))
                }
            };
        }
        let parts = ctx.extensions.get::<http::request::Parts>();
        match parts.and_then(|p| p.extensions.get::<Caller>()) {
            Some(c) => {
                let mut c = c.clone();
                c.call.request_id = request_id;
                Ok(c)
            }
            // The layers always attach a caller; its absence is a wiring fault: refuse.
            None => Err(respond::rpc(&Denial::Unavailable(Outage::ContextMissing), &TraceId::generate())),
        }
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        let mut caps = ServerCapabilities::builder().enable_tools().build();
        // Announced only where a contract governs one: a client is not told of a surface it
        // could never use.
        if self.rt().serves(Kind::Prompt) {
            caps.prompts = Some(PromptsCapability::default());
        }
        if self.rt().serves(Kind::Resource) {
            let mut resources = ResourcesCapability::default();
            // Updates reach the session that subscribed (2025-11-25; 2026-07-28 removed it).
            resources.subscribe = Some(true);
            caps.resources = Some(resources);
        }
        if self.rt().serves(Kind::Prompt) || self.rt().serves(Kind::Resource) {
            caps.completions = Some(Default::default());
        }
        // Log messages come from upstreams during calls; a client sets its own level.
        caps.logging = Some(Default::default());
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("capgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "capgate gateway for environment `{}`. Every tool is a capability contract: arguments are validated strictly, calls are audited, and some tools need a human approval (they answer `pending`).",
                self.rt().env().name
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.request_ctx(&context, "tools/list").await?;
        Ok(list_result(&self.rt(), &caller))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let caller = self.request_ctx(&context, "prompts/list").await?;
        Ok(ListPromptsResult::with_all_items(self.rt().list_prompts(&caller.auth)))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let rounds = (request.request_state, request.input_responses);
        match self
            .governed(&context, "prompts/get", Kind::Prompt, &request.name, request.arguments, rounds)
            .await?
        {
            Answer::Prompt(r) => Ok(r.into()),
            Answer::Input(r) => Ok(r.into()),
            _ => Err(wiring()),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = self.request_ctx(&context, "resources/list").await?;
        Ok(ListResourcesResult::with_all_items(self.rt().list_resources(&caller.auth).0))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let caller = self.request_ctx(&context, "resources/templates/list").await?;
        Ok(ListResourceTemplatesResult::with_all_items(
            self.rt().list_resources(&caller.auth).1,
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let rounds = (request.request_state, request.input_responses);
        match self
            .governed(&context, "resources/read", Kind::Resource, &request.uri, None, rounds)
            .await?
        {
            Answer::Resource(r) => Ok(r.into()),
            Answer::Input(r) => Ok(r.into()),
            _ => Err(wiring()),
        }
    }

    async fn subscribe(&self, request: SubscribeRequestParams, context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.subscription(&context, "resources/subscribe", &request.uri, Subscription::Subscribe)
            .await
    }

    async fn unsubscribe(&self, request: UnsubscribeRequestParams, context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.subscription(&context, "resources/unsubscribe", &request.uri, Subscription::Unsubscribe)
            .await
    }

    async fn complete(&self, request: CompleteRequestParams, context: RequestContext<RoleServer>) -> Result<CompleteResult, ErrorData> {
        let caller = self.request_ctx(&context, "completion/complete").await?;
        let asked = request.context.as_ref().and_then(|c| c.arguments.as_ref());
        match self
            .rt()
            .complete(&caller.auth, &caller.call, &request.r#ref, &request.argument, asked)
            .await
        {
            Ok(Answer::Completion(r)) => Ok(r),
            Ok(Answer::Failed(text)) => Err(ErrorData::internal_error(
                text,
                Some(serde_json::json!({"trace_id": caller.call.trace.as_str()})),
            )),
            Ok(_) => Err(wiring()),
            Err(denial) => Err(respond::rpc(&denial, &caller.call.trace)),
        }
    }

    async fn set_level(&self, request: SetLevelRequestParams, context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        let caller = self.request_ctx(&context, "logging/setLevel").await?;
        let rt = self.rt();
        let env = &rt.env().name;
        // A level is a session's: without one there is nothing to keep it in (refused, and
        // recorded, before anything is said to be set).
        if matches!(self.log_levels, LogLevels::Http(_)) && caller.call.session_id.is_none() {
            let denial = Denial::SessionRequired;
            let rec = denial.record(env, &caller.call).principal(Some(caller.auth.principal()));
            let denial = match rt.audit().append(rec).await {
                Ok(_) => denial,
                Err(_) => Denial::Unavailable(Outage::RefusalUnrecorded),
            };
            return Err(respond::rpc(&denial, &caller.call.trace));
        }
        let level = serde_json::to_value(request.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let rec = AuditRecord::new(
            env,
            &caller.call,
            Decision::Allow,
            ReasonCode::Accepted,
            format!(
                "the session's log level is now `{level}`: upstream log messages of that severity or more during its calls are relayed"
            ),
        )
        .principal(Some(caller.auth.principal()));
        // Recorded first: a level nobody can see was set changes nothing.
        if rt.audit().append(rec).await.is_err() {
            return Err(respond::rpc(&Denial::Unavailable(Outage::RequestUnrecorded), &caller.call.trace));
        }
        if self.set_log_level(&caller, request.level.into()) {
            Ok(())
        } else {
            // The session ended between its check and now.
            Err(respond::rpc(&Denial::SessionRequired, &caller.call.trace))
        }
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let caller = self.request_ctx(&context, "tools/call").await?;
        let (mut wait, relaying) = approval_wait(&context);
        wait.relay.log = wanted_log(&context, &caller);
        wait.request_state = request.request_state.clone();
        wait.input_responses = request.input_responses;
        let answer = self
            .rt()
            .call_tool(&caller.auth, &caller.call, &request.name, request.arguments, wait)
            .await;
        // The progress the call produced goes out before its answer.
        flushed(relaying).await;
        match answer {
            Ok(r) => Ok(r),
            Err(denial) => Err(respond::rpc(&denial, &caller.call.trace)),
        }
    }
}

impl Gateway {
    /// A resource subscription's change, decided like a read of the resource.
    async fn subscription(
        &self,
        context: &RequestContext<RoleServer>,
        method: &str,
        uri: &str,
        change: Subscription,
    ) -> Result<(), ErrorData> {
        let caller = self.request_ctx(context, method).await?;
        // Only the caller's connection: updates go to it; nothing here waits or reports.
        let wait = Wait {
            relay: crate::backend::relay::ToCaller {
                peer: Some(context.peer.clone()),
                ..Default::default()
            },
            cancelled: context.ct.clone(),
            ..Default::default()
        };
        match self.rt().subscription(&caller.auth, &caller.call, uri, change, wait).await {
            Ok(Answer::Subscribed) => Ok(()),
            Ok(Answer::Failed(text)) => Err(ErrorData::internal_error(
                text,
                Some(serde_json::json!({"trace_id": caller.call.trace.as_str()})),
            )),
            Ok(_) => Err(wiring()),
            Err(denial) => Err(respond::rpc(&denial, &caller.call.trace)),
        }
    }

    /// A governed prompt or resource request, its answer or its refusal as JSON-RPC.
    async fn governed(
        &self,
        context: &RequestContext<RoleServer>,
        method: &str,
        kind: Kind,
        name: &str,
        args: Option<rmcp::model::JsonObject>,
        (request_state, input_responses): (Option<String>, Option<rmcp::model::InputResponses>),
    ) -> Result<Answer, ErrorData> {
        let caller = self.request_ctx(context, method).await?;
        let (mut wait, relaying) = approval_wait(context);
        wait.relay.log = wanted_log(context, &caller);
        wait.request_state = request_state;
        wait.input_responses = input_responses;
        let answer = self.rt().call(&caller.auth, &caller.call, kind, name, args, wait).await;
        flushed(relaying).await;
        match answer {
            Ok(Answer::Failed(text)) => Err(ErrorData::internal_error(
                text,
                Some(serde_json::json!({"trace_id": caller.call.trace.as_str()})),
            )),
            Ok(a) => Ok(a),
            Err(denial) => Err(respond::rpc(&denial, &caller.call.trace)),
        }
    }
}

/// Wrong-kind answers cannot come from a route of the right kind; refused if they did.
fn wiring() -> ErrorData {
    ErrorData::internal_error("the gateway answered with the wrong kind of result", None)
}

/// The tools this caller may call, with the request's trace ID: the answer to `tools/list`
/// on either route.
pub(crate) fn list_result(rt: &Runtime, caller: &Caller) -> ListToolsResult {
    let mut result = ListToolsResult::with_all_items(rt.list_tools(&caller.auth));
    let mut meta = rmcp::model::MetaObject::default();
    meta.0.insert(
        "capgate/trace_id".into(),
        serde_json::Value::String(caller.call.trace.as_str().to_string()),
    );
    result.meta = Some(meta);
    result
}

/// A caller may ask a call that needs approval to wait for the decision:
/// `_meta: {"capgate/approval_wait": SECONDS}` (bounded by the gateway). With a progress
/// token, each look at the queue becomes a `notifications/progress` to the caller.
/// Waits (briefly) until the task that speaks progress to the caller has sent what it was
/// given: it ends once the call's senders are gone, that is once the call has ended.
async fn flushed(relaying: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = relaying {
        let _ = tokio::time::timeout(FLUSH, task).await;
    }
}

/// The longest an answer waits for its call's progress notifications to go out.
const FLUSH: Duration = Duration::from_secs(2);

fn approval_wait(context: &RequestContext<RoleServer>) -> (Wait, Option<tokio::task::JoinHandle<()>>) {
    let requested = context
        .meta
        .0
        .get("capgate/approval_wait")
        .and_then(serde_json::Value::as_u64)
        .map(|s| Duration::from_secs(s.min(MAX_WAIT.as_secs())));
    // One task speaks to the caller for this token: the approval queue's messages first,
    // then the upstream's own progress, numbered after them so that the caller sees the
    // value only ever grow (MCP requires it).
    let (progress, relay, relaying) = match context.meta.get_progress_token() {
        None => (None, None, None),
        Some(token) => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let (relay_tx, mut relay_rx) = tokio::sync::mpsc::channel::<Progress>(PROGRESS_BUFFER);
            let peer = context.peer.clone();
            let task = tokio::spawn(async move {
                let mut n = 0.0;
                // Nothing sent yet: the first value may be 0 (an upstream's "started").
                let mut last = f64::NEG_INFINITY;
                let mut approvals_open = true;
                loop {
                    let p = tokio::select! {
                        message = rx.recv(), if approvals_open => match message {
                            Some(message) => {
                                n += 1.0;
                                let mut p = ProgressNotificationParam::new(token.clone(), n);
                                p.message = Some(message);
                                p
                            }
                            None => {
                                approvals_open = false;
                                continue;
                            }
                        },
                        upstream = relay_rx.recv() => match upstream {
                            // rmcp's client handles each notification in a task of its own, so
                            // they can arrive out of order; one that would make the value go
                            // back is dropped (MCP: progress only grows).
                            Some(u) if n + u.progress <= last => continue,
                            Some(u) => {
                                let mut p = ProgressNotificationParam::new(token.clone(), n + u.progress);
                                p.total = u.total.map(|t| n + t);
                                p.message = u.message;
                                p
                            }
                            None => break,
                        },
                    };
                    last = p.progress;
                    if peer.notify_progress(p).await.is_err() {
                        break;
                    }
                }
            });
            (Some(tx), Some(relay_tx), Some(task))
        }
    };
    (
        Wait {
            requested,
            progress,
            relay: crate::backend::relay::ToCaller {
                progress: relay,
                peer: Some(context.peer.clone()),
                // A 2026-07-28 caller has no session to remember its capabilities: each
                // request declares them, and an upstream's rounds of input go back to it
                // in the answer.
                inline: context
                    .meta
                    .protocol_version()
                    .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
                    .then(|| context.meta.client_capabilities().unwrap_or_default()),
                ..Default::default()
            },
            cancelled: context.ct.clone(),
            ..Default::default()
        },
        relaying,
    )
}
