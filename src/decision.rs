//! Decisions and their reason codes: the stable snake_case vocabulary shared by the answers
//! a client sees and the audit records an auditor reads.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    Pending,
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Pending => "pending",
            Decision::Error => "error",
        }
    }
}

/// Why a decision was made. The string form is a public, stable interface: tests, probes,
/// tabletop scenarios and SIEM rules match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    Allowed,
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    TokenOutsideHeader,
    OriginRefused,
    CertificateRefused,
    BodyTooLarge,
    MalformedRequest,
    SessionNotOwned,
    ToolNotAvailable,
    ArgumentsInvalid,
    ApprovalRequired,
    ApprovalPending,
    ApprovalVote,
    ApprovalGranted,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRefused,
    RateLimited,
    AuditUnavailable,
    KeysUnavailable,
    BackendError,
    Executed,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Allowed => "allowed",
            ReasonCode::TokenMissing => "token_missing",
            ReasonCode::TokenInvalid => "token_invalid",
            ReasonCode::TokenExpired => "token_expired",
            ReasonCode::TokenOutsideHeader => "token_outside_header",
            ReasonCode::OriginRefused => "origin_refused",
            ReasonCode::CertificateRefused => "certificate_refused",
            ReasonCode::BodyTooLarge => "body_too_large",
            ReasonCode::MalformedRequest => "malformed_request",
            ReasonCode::SessionNotOwned => "session_not_owned",
            ReasonCode::ToolNotAvailable => "tool_not_available",
            ReasonCode::ArgumentsInvalid => "arguments_invalid",
            ReasonCode::ApprovalRequired => "approval_required",
            ReasonCode::ApprovalPending => "approval_pending",
            ReasonCode::ApprovalVote => "approval_vote",
            ReasonCode::ApprovalGranted => "approval_granted",
            ReasonCode::ApprovalDenied => "approval_denied",
            ReasonCode::ApprovalExpired => "approval_expired",
            ReasonCode::ApprovalRefused => "approval_refused",
            ReasonCode::RateLimited => "rate_limited",
            ReasonCode::AuditUnavailable => "audit_unavailable",
            ReasonCode::KeysUnavailable => "keys_unavailable",
            ReasonCode::BackendError => "backend_error",
            ReasonCode::Executed => "executed",
        }
    }
}
