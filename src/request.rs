//! What is known about one request besides its caller: its trace ID, its JSON-RPC id, its
//! MCP session and the client that sent it. Built by the transport, carried through the
//! pipeline, and written into every audit record about the request.

use serde::{Deserialize, Serialize};

use crate::trace::TraceId;

/// Caller-supplied text as records and messages may carry it: no control characters, at
/// most `max` characters.
pub(crate) fn clean(s: &str, max: usize) -> String {
    // Most names are clean already: copied whole, not char by char.
    if s.len() <= max && !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The client end of a request, as an audit record names it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub(crate) struct ClientRef {
    pub(crate) addr: Option<String>,
    pub(crate) user_agent: Option<String>,
}

impl ClientRef {
    /// The gateway itself, acting on its own (an expiry sweep, say), as `what`.
    pub(crate) fn internal(what: &str) -> Self {
        Self {
            addr: Some("capgate".into()),
            user_agent: Some(what.into()),
        }
    }

    /// The one local client of the stdio transport.
    pub(crate) fn stdio() -> Self {
        Self {
            addr: Some("stdio".into()),
            user_agent: None,
        }
    }
}

/// The facts of one request that every record about it carries.
#[derive(Debug, Clone)]
pub(crate) struct CallCtx {
    pub(crate) trace: TraceId,
    /// The JSON-RPC method, where the message named one (cleaned, bounded).
    pub(crate) method: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) client: ClientRef,
}

impl CallCtx {
    /// A request with a fresh trace ID and nothing else known but its client.
    pub(crate) fn new(client: ClientRef) -> Self {
        Self {
            trace: TraceId::generate(),
            method: None,
            request_id: None,
            session_id: None,
            client,
        }
    }
}

/// The methods whose `Mcp-Name` mirrors a member of `params`, and which member.
pub(crate) fn named_by(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}
