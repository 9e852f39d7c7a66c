//! What is known about one request besides its caller: its trace ID, its JSON-RPC id, its
//! MCP session and the client that sent it. Built by the transport, carried through the
//! pipeline, and written into every audit record about the request.

use base64::Engine as _;
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
    /// Its trace span, where the environment exports traces and this trace is sampled.
    pub(crate) span: crate::telemetry::SpanRef,
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
            span: Default::default(),
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

/// The sentinel around a header value sent as Base64 (a value with characters a header
/// cannot carry, or that would lose its surrounding spaces).
const B64_PREFIX: &str = "=?base64?";
const B64_SUFFIX: &str = "?=";

/// A header value as the sender meant it: Base64 inside the sentinel decoded, else as is.
pub(crate) fn header_text(value: &str) -> Option<String> {
    match value.strip_prefix(B64_PREFIX).and_then(|v| v.strip_suffix(B64_SUFFIX)) {
        Some(inner) => base64::engine::general_purpose::STANDARD
            .decode(inner)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(value.to_string()),
    }
}

/// A header value that says `text` exactly: as is where a header can carry it (visible
/// ASCII and spaces, none at either end), else Base64 inside the spec's sentinel.
pub(crate) fn header_value(text: &str) -> http::HeaderValue {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.starts_with(B64_PREFIX);
    let value = if plain {
        text.to_string()
    } else {
        format!("{B64_PREFIX}{}{B64_SUFFIX}", base64::engine::general_purpose::STANDARD.encode(text))
    };
    // Both forms are visible ASCII by construction.
    http::HeaderValue::from_str(&value).unwrap_or_else(|_| http::HeaderValue::from_static("=?base64??="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_a_header_cannot_carry_goes_as_base64() {
        for (text, sent) in [
            ("plain", "plain"),
            (" padded", "=?base64?IHBhZGRlZA==?="),
            ("wetter-z\u{fc}rich", "=?base64?d2V0dGVyLXrDvHJpY2g=?="),
            ("=?base64?x?=", "=?base64?PT9iYXNlNjQ/eD89?="),
        ] {
            assert_eq!(header_value(text), sent, "{text}");
        }
    }

    proptest::proptest! {
        /// What the gateway sends in a header reads back, as a receiver reads it (spaces
        /// around the value dropped, Base64 in the sentinel decoded), as exactly the text.
        #[test]
        fn a_header_value_reads_back_as_its_text(text in "\\PC*|[ =?a-z0-9]{0,12}") {
            let sent = header_value(&text);
            let received = sent.to_str().unwrap().trim_matches([' ', '\t']);
            proptest::prop_assert_eq!(header_text(received), Some(text));
        }
    }
}
