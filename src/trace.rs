//! Trace IDs: taken from a valid W3C `traceparent`, else generated, so that every answer and
//! every audit record of one request share one ID.

use rand::RngCore;

/// Serialized as its 32 hex digits (the `trace_id` of an audit record); read back as
/// written, since a stored record is checked by its hash, not by its shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct TraceId(String);

impl TraceId {
    /// The trace ID of a valid `traceparent` header (version 00, lowercase hex, non-zero
    /// IDs); any other value is ignored rather than trusted, and a fresh ID is generated.
    pub(crate) fn from_traceparent_or_new(header: Option<&str>) -> Self {
        header.and_then(parse_traceparent).unwrap_or_else(Self::generate)
    }

    /// A trace ID already validated elsewhere (an audit record's).
    pub(crate) fn from_record(id: &str) -> Self {
        Self(id.to_string())
    }

    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(crate::canonical::lower_hex(&bytes))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// A `traceparent` for a call this gateway makes on behalf of the request, with a span
    /// of its own.
    pub(crate) fn child_traceparent(&self) -> String {
        let mut span = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut span);
        format!("00-{}-{}-01", self.0, crate::canonical::lower_hex(&span))
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The caller's span in a valid `traceparent` (as [`TraceId::from_traceparent_or_new`]
/// reads it): its ID, and whether the caller sampled the trace.
pub(crate) fn parent_of(header: Option<&str>) -> Option<(opentelemetry::trace::SpanId, bool)> {
    let value = header?;
    parse_traceparent(value)?;
    let mut parts = value.trim().split('-').skip(2);
    let span = opentelemetry::trace::SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    Some((span, flags & 1 == 1))
}

fn parse_traceparent(value: &str) -> Option<TraceId> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" {
        return None;
    }
    let ok = trace.len() == 32
        && span.len() == 16
        && flags.len() == 2
        && [trace, span, flags].iter().all(|p| is_lower_hex(p))
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    ok.then(|| TraceId(trace.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparent_is_taken() {
        let t = TraceId::from_traceparent_or_new(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(t.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn the_callers_span_and_sampling_are_read_from_a_valid_traceparent_only() {
        let (span, sampled) = parent_of(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).unwrap();
        assert_eq!(span.to_string(), "00f067aa0ba902b7");
        assert!(sampled);
        let (_, sampled) = parent_of(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")).unwrap();
        assert!(!sampled);
        assert!(parent_of(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")).is_none());
        assert!(parent_of(Some("garbage")).is_none());
        assert!(parent_of(None).is_none());
    }

    #[test]
    fn invalid_traceparent_is_replaced() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage\u{1b}[31m",
        ] {
            let t = TraceId::from_traceparent_or_new(Some(bad));
            assert_ne!(t.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(t.as_str().len(), 32);
        }
    }
}
