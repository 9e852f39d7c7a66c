//! The MCP server side: an `rmcp` `ServerHandler` that hands `tools/list` and `tools/call`
//! to the pipeline. It trusts nothing it did not get from the transport guard (HTTP) or from
//! verifying the stdio token itself.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig,
};
use std::time::Duration;

use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};

use crate::denial::{Channel, Denial, Outage};
use crate::identity::AuthnError;
use crate::pipeline::Runtime;
use crate::pipeline::approval::{MAX_WAIT, Wait};
use crate::request::{CallCtx, ClientRef};
use crate::secret::Secret;
use crate::trace::TraceId;

use super::http::Caller;
use super::respond;

#[derive(Clone)]
pub(crate) struct Gateway {
    rt: Arc<Runtime>,
    /// Set for the stdio transport: the caller's token, verified again on every request so
    /// that expiry applies to a long-lived stdio session too.
    stdio_token: Option<Arc<Secret<String>>>,
}

impl Gateway {
    pub(crate) fn http(rt: Arc<Runtime>) -> Self {
        Self { rt, stdio_token: None }
    }

    pub(crate) fn stdio(rt: Arc<Runtime>, token: Secret<String>) -> Self {
        Self {
            rt,
            stdio_token: Some(Arc::new(token)),
        }
    }

    /// The caller of a request to `method`: proven by the HTTP steps, or, over stdio, by the
    /// token verified again now.
    async fn request_ctx(&self, ctx: &RequestContext<RoleServer>, method: &str) -> Result<Caller, ErrorData> {
        let request_id = Some(ctx.id.to_string());
        if let Some(token) = &self.stdio_token {
            let call = CallCtx {
                trace: TraceId::from_traceparent_or_new(ctx.meta.get_traceparent()),
                method: Some(method.to_string()),
                request_id,
                session_id: None,
                client: ClientRef::stdio(),
            };
            // No certificate can be presented over stdio: a certificate-bound token is refused.
            let verified = self.rt.authn().verify(token.expose()).await.and_then(|a| {
                if a.is_bound() {
                    Err(AuthnError::Invalid {
                        detail: "the token is bound to a client certificate; stdio has none".into(),
                    })
                } else {
                    Ok(a)
                }
            });
            return match verified {
                Ok(auth) => Ok(Caller { auth, call }),
                Err(error) => {
                    let denial = Denial::Unauthenticated {
                        error,
                        channel: Channel::Stdio,
                        token_sent: true,
                    };
                    let _ = self.rt.audit().append(denial.record(&self.rt.env().name, &call)).await;
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
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("capgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "capgate gateway for environment `{}`. Every tool is a capability contract: arguments are validated strictly, calls are audited, and some tools need a human approval (they answer `pending`).",
                self.rt.env().name
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.request_ctx(&context, "tools/list").await?;
        Ok(list_result(&self.rt, &caller))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let caller = self.request_ctx(&context, "tools/call").await?;
        let wait = approval_wait(&context);
        match self
            .rt
            .call_tool(&caller.auth, &caller.call, &request.name, request.arguments, wait)
            .await
        {
            Ok(r) => Ok(r.into()),
            Err(denial) => Err(respond::rpc(&denial, &caller.call.trace)),
        }
    }
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
fn approval_wait(context: &RequestContext<RoleServer>) -> Wait {
    let requested = context
        .meta
        .0
        .get("capgate/approval_wait")
        .and_then(serde_json::Value::as_u64)
        .map(|s| Duration::from_secs(s.min(MAX_WAIT.as_secs())));
    let progress = context.meta.get_progress_token().map(|token| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let peer = context.peer.clone();
        tokio::spawn(async move {
            let mut n = 0.0;
            while let Some(message) = rx.recv().await {
                n += 1.0;
                let mut p = ProgressNotificationParam::new(token.clone(), n);
                p.message = Some(message);
                if peer.notify_progress(p).await.is_err() {
                    break;
                }
            }
        });
        tx
    });
    Wait {
        requested,
        progress,
        cancelled: context.ct.clone(),
    }
}
