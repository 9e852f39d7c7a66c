//! An upstream's requests to the caller of one call (`tools/call`, `prompts/get`,
//! `resources/read`): `sampling/createMessage`, `elicitation/create`, `roots/list`. Each is
//! decided, recorded, and then relayed to that caller's client or refused at once, so that
//! the upstream's call ends instead of waiting for its timeout.
//!
//! A request is relayed only when the contract names it (`client_requests`), the
//! caller's client declared the capability, and the caller speaks a revision that has
//! server requests (2026-07-28 has none). Its parameters are read by rmcp's own types for
//! the method before they reach the client, and the client's answer by the types of its
//! result before it goes back upstream.
//!
//! A 2026-07-28 caller is asked in its call's answer instead: a 2026-07-28 upstream's
//! `input_required` requests are decided and recorded here one by one ([`Asker::pass`]),
//! and go back to the caller in the gateway's own `input_required` answer (`rounds.rs`).
//! It declares its capabilities in each request's `_meta`, which is what is checked.
//!
//! The upstream's log messages on the call's stream (`notifications/message`) go to the
//! same caller only, and only when it asked for messages of that severity; one that holds
//! the upstream's credential is withheld.
//!
//! INVARIANT: the record comes first. A request or log message that cannot be recorded is
//! not relayed.

#![allow(
    deprecated,
    reason = "SEP-2577 deprecates sampling, roots and logging for later revisions; 2025-11-25 clients use them, and relaying them is what this module is for"
)]

use futures_util::future::BoxFuture;
use rmcp::model::{CreateMessageRequestParams, ElicitRequestParams, ErrorData, LoggingMessageNotificationParam, ProtocolVersion};
use rmcp::service::ServiceError;
use rmcp::{Peer, RoleServer};
use serde::Deserialize;
use serde_json::Value;

use super::Runtime;
use super::authn::Authenticated;
use crate::audit::record::AuditRecord;
use crate::backend::http_session::not_relayed;
use crate::backend::relay::{Asker, LogLevel};
use crate::contract::{ClientAsk, Contract};
use crate::decision::{Decision, ReasonCode};
use crate::request::CallCtx;

/// The caller's side of one tool call, from the proof it was forwarded under: the contract
/// it was allowed by, its caller and its request.
pub(crate) struct CallerAsks<'a> {
    pub(crate) rt: &'a Runtime,
    pub(crate) auth: &'a Authenticated,
    pub(crate) ctx: &'a CallCtx,
    pub(crate) contract: &'a Contract,
    /// The caller's connection; `None` on a route that cannot send the caller requests.
    pub(crate) peer: Option<&'a Peer<RoleServer>>,
    /// The least severe log message the caller asked for; `None`: none.
    pub(crate) log: Option<LogLevel>,
    /// A 2026-07-28 caller's capabilities, from its request (`ToCaller::inline`).
    pub(crate) inline: Option<&'a rmcp::model::ClientCapabilities>,
}

impl CallerAsks<'_> {
    /// Why `method` may not go to this caller, if it may not: a text for the upstream and
    /// the record, never for the caller (it is never told).
    fn refusal(&self, method: &str) -> Result<ClientAsk, String> {
        let kind = ClientAsk::of_method(method).ok_or("it is not a request an MCP server may send its client")?;
        self.refusal_of(kind).map(|()| kind)
    }

    fn refusal_of(&self, kind: ClientAsk) -> Result<(), String> {
        if !self.contract.client_requests.contains(&kind) {
            return Err(format!(
                "the contract of `{}` does not allow `{}` requests (client_requests)",
                self.contract.tool,
                kind.word()
            ));
        }
        let caps = match self.inline {
            // A 2026-07-28 caller answers by retrying its call, and a retry that needs
            // approval again would open a new request: no rounds for such a contract.
            Some(_) if self.contract.requires_approval => {
                return Err(format!(
                    "`{}` needs approval, which one round of input would spend and the next would ask again",
                    self.contract.tool
                ));
            }
            Some(caps) => caps.clone(),
            None => {
                let peer = self
                    .peer
                    .ok_or("the caller's request came on a route that cannot carry requests to it")?;
                let info = peer.peer_info().ok_or("the caller's client is not initialized")?;
                if info.protocol_version >= ProtocolVersion::V_2026_07_28 {
                    return Err(format!(
                        "the caller speaks {}, which has no requests from server to client",
                        info.protocol_version
                    ));
                }
                info.capabilities.clone()
            }
        };
        let declared = match kind {
            ClientAsk::Sampling => caps.sampling.is_some(),
            ClientAsk::Elicitation => caps.elicitation.is_some(),
            ClientAsk::Roots => caps.roots.is_some(),
        };
        if !declared {
            return Err(format!("the caller's client did not declare the `{}` capability", kind.word()));
        }
        Ok(())
    }

    /// The record of one request, relayed or refused.
    async fn record(&self, method: &str, params: &Value, decision: Decision, code: ReasonCode, reason: String) -> bool {
        let mut ctx = self.ctx.clone();
        ctx.method = Some(crate::request::clean(method, 64));
        let rec = AuditRecord::new(&self.rt.env().name, &ctx, decision, code, reason)
            .principal(Some(self.auth.principal()))
            .tool(Some(self.contract.tool.clone()))
            .args_digest(Some(crate::canonical::digest(params)))
            .contract_digest(&self.contract.digest);
        self.rt.audit().append(rec).await.is_ok()
    }

    async fn refuse(&self, method: &str, params: &Value, why: &str, error: ErrorData) -> Result<Value, ErrorData> {
        Err(self.refused(method, params, why, error).await)
    }

    /// Records a refusal; `error` is what the upstream is told.
    async fn refused(&self, method: &str, params: &Value, why: &str, error: ErrorData) -> ErrorData {
        // Refused whether or not the record is written: nothing was relayed either way.
        let _ = self
            .record(
                method,
                params,
                Decision::Deny,
                ReasonCode::RelayRefused,
                format!("not relayed: {why}"),
            )
            .await;
        error
    }

    async fn relay(&self, method: &str, params: Value, refused: Option<&'static str>) -> Result<Value, ErrorData> {
        if let Some(why) = refused {
            return self.refuse(method, &params, why, not_relayed(method, why)).await;
        }
        if self.inline.is_some() {
            // Only an answer can reach it: a 2026-07-28 upstream's rounds of input do (see
            // `pass`), a request in the middle of a call cannot.
            let why = "the caller speaks 2026-07-28, which has no requests from server to client during a call";
            return self.refuse(method, &params, why, not_relayed(method, why)).await;
        }
        let typed = match self.vet(method, &params, "relayed to the caller's client").await {
            Ok((_, typed)) => typed,
            Err(e) => return Err(e),
        };
        let Some(peer) = self.peer else {
            return Err(not_relayed(method, "the caller's connection is gone"));
        };
        let answered = match typed {
            Typed::Sampling(p) => peer.create_message(p).await.and_then(to_value),
            Typed::Elicitation(p) => peer.create_elicitation(p).await.and_then(to_value),
            Typed::Roots => peer.list_roots().await.and_then(to_value),
        };
        answered.map_err(|e| match e {
            // The client's own refusal (a declined elicitation is a result, not this) goes
            // back as it came.
            ServiceError::McpError(e) => e,
            _ => ErrorData::internal_error(format!("the caller's client did not answer `{method}`"), None),
        })
    }
}

impl CallerAsks<'_> {
    /// Decides `method` for this caller and reads its parameters by the method's own types
    /// (what the client gets is a well-formed request), recording it as relayed (`how`) or
    /// refused.
    async fn vet(&self, method: &str, params: &Value, how: &str) -> Result<(ClientAsk, Typed), ErrorData> {
        let kind = match self.refusal(method) {
            Ok(kind) => kind,
            Err(why) => return Err(self.refused(method, params, &why, not_relayed(method, &why)).await),
        };
        let typed = match Typed::read(kind, params) {
            Ok(t) => t,
            Err(why) => {
                let why = format!("its parameters are not a `{method}` request's: {why}");
                let error = ErrorData::invalid_params(why.clone(), None);
                return Err(self.refused(method, params, &why, error).await);
            }
        };
        if !self
            .record(method, params, Decision::Allow, ReasonCode::Relayed, how.to_string())
            .await
        {
            return Err(not_relayed(method, "the gateway could not record it"));
        }
        Ok((kind, typed))
    }

    async fn pass_input(&self, method: &str, params: &Value, refused: Option<&'static str>) -> Result<ClientAsk, ErrorData> {
        if let Some(why) = refused {
            return Err(self.refused(method, params, why, not_relayed(method, why)).await);
        }
        if self.inline.is_none() {
            let why = "the caller does not speak 2026-07-28";
            return Err(self.refused(method, params, why, not_relayed(method, why)).await);
        }
        let how = "passed to the caller's client in the call's input_required answer";
        self.vet(method, params, how).await.map(|(kind, _)| kind)
    }

    /// An upstream's log message: nothing is decided (or recorded) for a caller that asked
    /// for none or for more severe ones; otherwise it is recorded, then passed on.
    async fn pass_log(&self, params: Value, leaks: bool) {
        const METHOD: &str = "notifications/message";
        let (Some(wanted), Some(peer)) = (self.log, self.peer) else {
            return;
        };
        let message = match LoggingMessageNotificationParam::deserialize(&params) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("its parameters are not a log message's: {e}");
                let _ = self.refuse(METHOD, &params, &why, not_relayed(METHOD, &why)).await;
                return;
            }
        };
        if LogLevel::from(message.level) < wanted {
            return;
        }
        if leaks {
            let why = "the message holds one of the upstream's credentials";
            let _ = self.refuse(METHOD, &params, why, not_relayed(METHOD, why)).await;
            return;
        }
        let recorded = self
            .record(
                METHOD,
                &params,
                Decision::Allow,
                ReasonCode::Relayed,
                "relayed to the caller's client".to_string(),
            )
            .await;
        if recorded {
            // A caller gone is no failure of the call's.
            let _ = peer.notify_logging_message(message).await;
        }
    }
}

impl Asker for CallerAsks<'_> {
    fn ask<'a>(&'a self, method: &'a str, params: Value, refused: Option<&'static str>) -> BoxFuture<'a, Result<Value, ErrorData>> {
        Box::pin(self.relay(method, params, refused))
    }

    fn log<'a>(&'a self, params: Value, leaks: bool) -> BoxFuture<'a, ()> {
        Box::pin(self.pass_log(params, leaks))
    }

    fn log_level(&self) -> Option<LogLevel> {
        self.log
    }

    fn passes_input(&self) -> bool {
        self.inline.is_some()
    }

    fn pass<'a>(
        &'a self,
        method: &'a str,
        params: &'a Value,
        refused: Option<&'static str>,
    ) -> BoxFuture<'a, Result<ClientAsk, ErrorData>> {
        Box::pin(self.pass_input(method, params, refused))
    }

    fn capabilities(&self) -> Value {
        let caps: serde_json::Map<String, Value> = [ClientAsk::Sampling, ClientAsk::Elicitation, ClientAsk::Roots]
            .into_iter()
            .filter(|k| self.refusal_of(*k).is_ok())
            .map(|k| (k.word().to_string(), Value::Object(serde_json::Map::new())))
            .collect();
        Value::Object(caps)
    }
}

/// An upstream's request, read by rmcp's type for it.
enum Typed {
    Sampling(CreateMessageRequestParams),
    Elicitation(ElicitRequestParams),
    Roots,
}

impl Typed {
    fn read(kind: ClientAsk, params: &Value) -> Result<Self, String> {
        // serde's own text names a field or a type, never a value.
        fn de<T: serde::de::DeserializeOwned>(params: &Value) -> Result<T, String> {
            T::deserialize(params).map_err(|e| e.to_string())
        }
        match kind {
            ClientAsk::Sampling => {
                let p: CreateMessageRequestParams = de(params)?;
                p.validate().map_err(|e| e.to_string())?;
                Ok(Self::Sampling(p))
            }
            ClientAsk::Elicitation => de(params).map(Self::Elicitation),
            ClientAsk::Roots => Ok(Self::Roots),
        }
    }
}

fn to_value<T: serde::Serialize>(result: T) -> Result<Value, ServiceError> {
    serde_json::to_value(result).map_err(|_| ServiceError::UnexpectedResponse)
}
