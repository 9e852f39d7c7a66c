//! One type for every refusal, with a variant per reason and its typed data. The audit
//! record of a refusal is made from it here ([`Denial::record`]); the client's answer is made
//! from it in one place too (`server::respond`), so the two cannot drift apart.
//!
//! Where the same refusal reads differently on the stdio transport or the approvals API,
//! the variant says which [`Channel`] refused it.

use std::time::Duration;

use crate::audit::approval::Refused;
use crate::audit::record::AuditRecord;
use crate::contract::ArgError;
use crate::decision::{Decision, ReasonCode};
use crate::identity::AuthnError;
use crate::request::CallCtx;

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    /// `/mcp` over HTTP.
    Mcp,
    /// The approvals API (`/api/…`).
    Api,
    /// One line of the stdio transport.
    Stdio,
}

/// Why a session ID was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionRefusal {
    OtherIdentity,
    NotOpen,
    TableUnavailable,
}

/// What the gateway cannot do safely right now; nothing ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outage {
    /// A refusal could not be recorded, so it is not answered as one.
    RefusalUnrecorded,
    /// The allow record could not be written.
    AllowUnrecorded,
    ApprovalStore,
    /// The store answered an approval step with something that step cannot produce.
    OutOfTurn,
    /// The task running a call failed (its records say how far it got).
    CallIncomplete,
    /// The transport attached no request context: a wiring fault.
    ContextMissing,
    /// A transport refusal could not be recorded.
    RequestUnrecorded,
    /// The approvals API could not read or write the store.
    ApprovalApi,
    /// A refused stdio line could not be recorded.
    LineUnrecorded,
}

impl Outage {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Outage::RefusalUnrecorded => "the audit log is unavailable; the call was refused",
            Outage::AllowUnrecorded => "the audit log is unavailable; the call was refused and nothing ran",
            Outage::ApprovalStore => "the approval store or audit log is unavailable; the call was refused and nothing ran",
            Outage::OutOfTurn => "the approval store answered out of turn; refused",
            Outage::CallIncomplete => "the call could not be completed; see the audit record",
            Outage::ContextMissing => "request context missing; refused",
            Outage::RequestUnrecorded => "the audit log is unavailable; the request was refused",
            Outage::ApprovalApi => "the approval store is unavailable",
            Outage::LineUnrecorded => "the audit log is unavailable; refused",
        }
    }
}

/// A request of the approvals API that is not one it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiProblem {
    Query,
    StatusValue,
    Limit,
    Cursor,
    Body,
    EmptyReason,
    AuditQuery,
    TimeRange,
    Sequence,
}

impl ApiProblem {
    pub(crate) fn message(self) -> &'static str {
        match self {
            ApiProblem::Query => {
                "the query parameters are `status` (pending, approved, denied, expired, executed or all), `limit` and `before`"
            }
            ApiProblem::Limit => "`limit` must be 1 to 500",
            ApiProblem::Cursor => "`before` must be the `x-capgate-next-page` of a previous page",
            ApiProblem::StatusValue => "`status` must be pending, approved, denied, expired, executed or all",
            ApiProblem::Body => "the body must be a JSON object with one string field, `reason`",
            ApiProblem::EmptyReason => "`reason` must not be empty",
            ApiProblem::AuditQuery => {
                "the query parameters are `from` and `to` (RFC 3339), `decision`, `reason_code`, `tool`, `caller`, `trace_id`, `limit` (1 to 500) and `before` (a sequence number)"
            }
            ApiProblem::TimeRange => {
                "`from` and `to` must be RFC 3339 times with `from` before `to`, at most 31 days apart (24 hours for `/api/audit/stats`)"
            }
            ApiProblem::Sequence => "a record is named by its sequence number, a positive integer",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Denial {
    /// The audit explorer or the contracts, asked for by a caller who holds neither an
    /// approver nor an auditor role here.
    ReadRefused,
    /// A `Host` this listener does not serve (DNS rebinding); `host` is cleaned.
    HostNotServed {
        host: String,
    },
    /// A browser page of another origin; `origin` is cleaned.
    OriginNotAllowed {
        origin: String,
    },
    TokenInQuery,
    BodyTooLarge {
        limit: usize,
        /// What `Content-Length` declared, when that alone was over the limit.
        declared: Option<usize>,
        channel: Channel,
    },
    Unauthenticated {
        error: AuthnError,
        channel: Channel,
        /// Whether any token was sent (the challenge differs).
        token_sent: bool,
    },
    MalformedJson {
        channel: Channel,
    },
    DuplicateKey {
        key: String,
        channel: Channel,
    },
    /// An HTTP method `/mcp` does not take (405).
    HttpMethod {
        method: String,
    },
    /// A body that is not `application/json` (415); the type as sent, cleaned.
    ContentType {
        content_type: String,
    },
    /// An `Accept` that leaves out what the answer may be (406).
    NotAcceptable,
    /// A request that needs a session and names none (400).
    SessionRequired,
    /// An `MCP-Protocol-Version` this gateway does not speak (400); as sent, cleaned.
    ProtocolUnsupported {
        version: String,
    },
    /// Not a JSON-RPC message this gateway takes (-32600).
    InvalidRequest {
        problem: &'static str,
    },
    /// A method this gateway does not serve (-32601).
    MethodNotFound {
        method: String,
        /// Asked on a revision without sessions (2026-07-28), whose transport answers it
        /// with HTTP 404.
        stateless: bool,
    },
    /// A known method with params of the wrong shape (-32602).
    InvalidParams {
        problem: &'static str,
    },
    /// A 2026-07-28 request whose mirroring headers do not say what its body says (400,
    /// -32020); what differs, cleaned.
    HeaderMismatch {
        problem: String,
    },
    /// A 2026-07-28 request whose `_meta` lacks what that revision requires of every request
    /// (400, -32602).
    RequestMetaMissing {
        missing: &'static str,
    },
    /// A body that did not arrive within the body deadline (408).
    BodyTimeout {
        after: Duration,
    },
    /// Connections of one source over its limit, closed as they came (`refused` since the
    /// source's last such record).
    TooManyConnections {
        limit: usize,
        refused: u64,
    },
    Session(SessionRefusal),
    CertificateRefused {
        why: String,
    },
    /// Unknown and forbidden tools alike; `tool` is what the caller named.
    ToolNotAvailable {
        kind: crate::contract::Kind,
        tool: String,
    },
    /// The first problems, and how many more there were.
    ArgumentsInvalid {
        tool: String,
        errors: Vec<ArgError>,
        more: usize,
    },
    RateLimited {
        tool: String,
        retry_after: Duration,
    },
    /// The upstream's definition of the tool no longer matches its pin (src/pins.rs).
    ToolStopped {
        tool: String,
    },
    /// A decision on an approval request refused (the approval rules record it).
    Approval(Refused),
    /// No approval request opened: the requester has `open` open, the most allowed (the
    /// approval rules record it).
    ApprovalLimit {
        open: usize,
    },
    /// The approval request for this call failed its integrity check (the approval rules
    /// record it).
    ApprovalTampered {
        id: String,
    },
    /// A repeated call's `requestState` failed its check against the call.
    RequestStateRefused {
        problem: String,
    },
    /// A 2026-07-28 retry's `inputResponses` do not answer what its `requestState` asked.
    InputRefused {
        problem: String,
    },
    /// The upstream refused the call for client capabilities it was not told of (-32021,
    /// HTTP 400); the outcome record says so.
    NeedsCapability {
        required: serde_json::Value,
    },
    Api(ApiProblem),
    Unavailable(Outage),
}

/// Caller-chosen names go into records and messages only when printable and short.
pub(crate) fn printable(name: &str) -> String {
    if name.len() <= 128 && name.chars().all(|c| c.is_ascii_graphic()) {
        name.to_string()
    } else {
        format!("(unprintable, {} bytes)", name.len())
    }
}

impl Denial {
    pub(crate) fn reason_code(&self) -> ReasonCode {
        match self {
            Denial::HostNotServed { .. } | Denial::OriginNotAllowed { .. } => ReasonCode::OriginRefused,
            Denial::TokenInQuery => ReasonCode::TokenOutsideHeader,
            Denial::BodyTooLarge { .. } => ReasonCode::BodyTooLarge,
            Denial::Unauthenticated { error, .. } => error.reason_code(),
            Denial::MalformedJson { .. }
            | Denial::Api(_)
            | Denial::HttpMethod { .. }
            | Denial::ContentType { .. }
            | Denial::NotAcceptable
            | Denial::SessionRequired
            | Denial::InvalidRequest { .. }
            | Denial::InvalidParams { .. }
            | Denial::RequestMetaMissing { .. } => ReasonCode::MalformedRequest,
            Denial::HeaderMismatch { .. } => ReasonCode::HeaderMismatch,
            Denial::MethodNotFound { .. } => ReasonCode::MethodNotFound,
            Denial::ProtocolUnsupported { .. } => ReasonCode::ProtocolUnsupported,
            Denial::BodyTimeout { .. } => ReasonCode::RequestTimeout,
            Denial::TooManyConnections { .. } => ReasonCode::ConnectionRefused,
            Denial::DuplicateKey { .. } | Denial::ArgumentsInvalid { .. } => ReasonCode::ArgumentsInvalid,
            Denial::Session(_) => ReasonCode::SessionNotOwned,
            Denial::CertificateRefused { .. } => ReasonCode::CertificateRefused,
            Denial::ToolNotAvailable { .. } => ReasonCode::ToolNotAvailable,
            Denial::RateLimited { .. } => ReasonCode::RateLimited,
            Denial::ToolStopped { .. } => ReasonCode::ToolDefinitionChanged,
            Denial::Approval(_) => ReasonCode::ApprovalRefused,
            Denial::ReadRefused => ReasonCode::ReadRefused,
            Denial::ApprovalLimit { .. } => ReasonCode::ApprovalLimit,
            Denial::ApprovalTampered { .. } | Denial::RequestStateRefused { .. } => ReasonCode::ApprovalTampered,
            Denial::InputRefused { .. } => ReasonCode::RelayRefused,
            Denial::NeedsCapability { .. } => ReasonCode::BackendError,
            Denial::Unavailable(_) => ReasonCode::AuditUnavailable,
        }
    }

    /// What the audit record says: specific, never a secret.
    pub(crate) fn reason(&self) -> String {
        match self {
            Denial::HostNotServed { host } => format!("Host `{host}` is not served by this listener"),
            Denial::OriginNotAllowed { origin } => format!("Origin `{origin}` is not allowed"),
            Denial::TokenInQuery => "a token was sent in the query string".into(),
            Denial::BodyTooLarge { limit, declared, channel } => match (channel, declared) {
                (Channel::Mcp, Some(n)) => format!("body of {n} bytes is over the limit of {limit}"),
                (Channel::Mcp, None) => format!("body is over the limit of {limit} bytes"),
                (Channel::Api, _) => format!("approvals API body over {limit} bytes"),
                (Channel::Stdio, _) => format!("the message is over the limit of {limit} bytes"),
            },
            Denial::Unauthenticated { error, channel, .. } => match channel {
                Channel::Api => format!("approvals API: {}", error.audit_reason()),
                Channel::Mcp | Channel::Stdio => error.audit_reason(),
            },
            Denial::MalformedJson { channel } => match channel {
                Channel::Stdio => "parse error: not one JSON value".into(),
                Channel::Mcp | Channel::Api => "the body is not one well-formed JSON value".into(),
            },
            Denial::DuplicateKey { key, channel } => match channel {
                Channel::Stdio => format!("invalid request: duplicate key `{key}`"),
                Channel::Mcp | Channel::Api => format!("duplicate key `{key}` in the request"),
            },
            Denial::HttpMethod { method } => format!("HTTP method `{method}` is not taken at /mcp (POST, GET and DELETE are)"),
            Denial::ContentType { content_type } => format!("Content-Type `{content_type}` is not application/json"),
            Denial::NotAcceptable => "the Accept header must list both application/json and text/event-stream".into(),
            Denial::SessionRequired => "the request names no MCP session: send `initialize` first, then its Mcp-Session-Id".into(),
            Denial::ProtocolUnsupported { version } => format!("MCP-Protocol-Version `{version}` is not one this gateway speaks"),
            Denial::InvalidRequest { problem } => format!("invalid JSON-RPC request: {problem}"),
            Denial::MethodNotFound { method, .. } => format!("method not found: {method}"),
            Denial::InvalidParams { problem } => format!("invalid params: {problem}"),
            Denial::HeaderMismatch { problem } => format!("header mismatch: {problem}"),
            Denial::RequestMetaMissing { missing } => {
                format!("invalid params: a 2026-07-28 request's _meta must state {missing}")
            }
            Denial::BodyTimeout { after } => format!("the body did not arrive within {}s", after.as_secs_f64()),
            Denial::TooManyConnections { limit, refused } => {
                format!(
                    "{refused} connection(s) from this source closed as accepted: it holds {limit} already (max_connections_per_source)"
                )
            }
            Denial::Session(SessionRefusal::OtherIdentity) => "the session belongs to another identity".into(),
            Denial::Session(SessionRefusal::NotOpen) => {
                "the session is not open on this gateway (closed, idle too long, or never opened)".into()
            }
            Denial::Session(SessionRefusal::TableUnavailable) => "the session table is unavailable".into(),
            Denial::CertificateRefused { why } => format!("TLS handshake refused: {why}"),
            Denial::ToolNotAvailable { kind, .. } => {
                format!("no contract for this {} in this environment allows the caller's roles", kind.noun())
            }
            Denial::ArgumentsInvalid { errors, more, .. } => format!("invalid arguments: {}", listed(errors, *more)),
            Denial::RateLimited { .. } => "rate limit of the contract reached".into(),
            Denial::ToolStopped { .. } => {
                "the upstream's definition of the tool changed since it was pinned; stopped until re-pinned".into()
            }
            Denial::Approval(r) => r.message().into(),
            Denial::ReadRefused => "the caller holds no approver or auditor role in this environment".into(),
            Denial::ApprovalTampered { id } => format!("approval request {id} failed its integrity check"),
            Denial::RequestStateRefused { problem } => format!("the call's requestState was refused: {problem}"),
            Denial::InputRefused { problem } => format!("the call's inputResponses were refused: {problem}"),
            Denial::NeedsCapability { .. } => "the upstream needs client capabilities the call did not declare to it".into(),
            Denial::ApprovalLimit { open } => {
                format!("approval request refused: the requester has {open} open approval requests, the most allowed")
            }
            Denial::Api(p) => p.message().into(),
            Denial::Unavailable(o) => o.message().into(),
        }
    }

    /// The refusal's record: decision `deny`, its reason code and reason, about the
    /// request `ctx`; the caller adds what else it knows (principal, tool, arguments).
    pub(crate) fn record(&self, env: &str, ctx: &CallCtx) -> AuditRecord {
        AuditRecord::new(env, ctx, Decision::Deny, self.reason_code(), self.reason())
    }

    /// An HTTP 401 (not 403 or 503): the refusals an authentication-failure budget counts.
    pub(crate) fn is_unauthorized(&self) -> bool {
        matches!(self, Denial::TokenInQuery | Denial::Unauthenticated { .. })
    }
}

/// The offending arguments named and their rules, as one sentence, and how many more.
pub(crate) fn listed(errors: &[ArgError], more: usize) -> String {
    let mut text = errors
        .iter()
        .map(|e| format!("`{}` {}", e.argument, e.rule))
        .collect::<Vec<_>>()
        .join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    text
}
