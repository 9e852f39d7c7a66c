//! Decisions and their reason codes: the stable snake_case vocabulary shared by the answers
//! a client sees and the audit records an auditor reads.
//!
//! Each word is written once, in [`vocabulary!`], which gives the enum, its text both ways
//! and its serde form; the text is a public, stable interface (tests, probes, tabletop
//! scenarios and SIEM rules match on it).

/// An enum whose variants each stand for one fixed word: `as_str`, `parse`, `Display`, and
/// serde as that word, all from the one list.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every word, in declaration order.
            #[allow(dead_code, reason = "not every vocabulary is enumerated")]
            pub(crate) const ALL: &'static [Self] = &[$(Self::$variant,)*];

            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            pub(crate) fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("unknown ", stringify!($name), " `{}`"), text))
                })
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    /// What was decided about one request (SPEC section 6).
    pub(crate) enum Decision {
        Allow = "allow",
        Deny = "deny",
        Pending = "pending",
        Error = "error",
    }
}

vocabulary! {
    /// Why a decision was made.
    pub(crate) enum ReasonCode {
        Allowed = "allowed",
        TokenMissing = "token_missing",
        TokenInvalid = "token_invalid",
        TokenExpired = "token_expired",
        TokenOutsideHeader = "token_outside_header",
        OriginRefused = "origin_refused",
        CertificateRefused = "certificate_refused",
        BodyTooLarge = "body_too_large",
        MalformedRequest = "malformed_request",
        SessionNotOwned = "session_not_owned",
        ToolNotAvailable = "tool_not_available",
        ArgumentsInvalid = "arguments_invalid",
        ApprovalRequired = "approval_required",
        ApprovalPending = "approval_pending",
        ApprovalVote = "approval_vote",
        ApprovalGranted = "approval_granted",
        ApprovalDenied = "approval_denied",
        ApprovalExpired = "approval_expired",
        ApprovalRefused = "approval_refused",
        RateLimited = "rate_limited",
        AuditUnavailable = "audit_unavailable",
        KeysUnavailable = "keys_unavailable",
        BackendError = "backend_error",
        Executed = "executed",
        /// A call was allowed, and no outcome was recorded for it in time: the gateway that
        /// ran it stopped, or lost its store, before recording it.
        OutcomeUnknown = "outcome_unknown",
        MethodNotFound = "method_not_found",
        ProtocolUnsupported = "protocol_unsupported",
        RequestTimeout = "request_timeout",
        ConnectionRefused = "connection_refused",
        ApprovalLimit = "approval_limit",
        ToolDefinitionChanged = "tool_definition_changed",
        ApprovalTampered = "approval_tampered",
        /// A 2026-07-28 request whose `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*` or protocol
        /// version header differs from its body.
        HeaderMismatch = "header_mismatch",
        /// An upstream's request to the caller (sampling, elicitation, roots) during a call,
        /// relayed to the caller's client.
        Relayed = "relayed",
        /// An upstream's request to the caller that was not relayed: the contract does not
        /// name it, or the caller's client did not declare the capability.
        RelayRefused = "relay_refused",
        /// A request that changes only what the caller is sent (a session's log level, a
        /// 2026-07-28 listen stream) and runs nothing upstream itself: allowed, and no
        /// outcome follows (an `allowed` record without one is an outcome unknown).
        Accepted = "accepted",
        /// Contracts and policies read again and swapped in (SIGHUP, `capgate reload`).
        Reloaded = "reloaded",
        /// A reload refused (the file has a problem, or changes what only a restart may):
        /// the running set stays.
        ReloadRefused = "reload_refused",
        /// A read of the audit explorer or the contracts by a caller who may not read them.
        ReadRefused = "read_refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself_in_text_and_in_json() {
        for c in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(c.as_str()), Some(*c));
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<ReasonCode>(&json).unwrap(), *c);
        }
        for d in Decision::ALL {
            assert_eq!(serde_json::from_str::<Decision>(&serde_json::to_string(d).unwrap()).unwrap(), *d);
        }
        assert!(serde_json::from_str::<Decision>("\"maybe\"").is_err());
    }
}
