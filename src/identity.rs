//! Who is calling: the principal a verified token (and, on mTLS listeners, a verified client
//! certificate) stands for, and why authentication can fail. A leaf of the module graph:
//! the pipeline proves identities, the audit log records them, the policy reads them.

use serde::{Deserialize, Serialize};

use crate::decision::ReasonCode;

/// Who is calling, as proven by a verified token. Its serialization is the `principal` of
/// an audit record.
// Fields in code-point order: their serialization is their canonical form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) auth_method: String,
    /// Only on mTLS listeners; absent (not null) otherwise, so records written before the
    /// field existed hash the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<CertIdentity>,
    pub(crate) iss: String,
    pub(crate) roles: Vec<String>,
    pub(crate) sub: String,
    pub(crate) token_id: Option<String>,
}

impl Principal {
    /// Issuer and subject: one identity, whatever its roles today.
    pub(crate) fn owner_key(&self) -> String {
        format!("{}\u{0}{}", self.iss, self.sub)
    }

    pub(crate) fn is(&self, iss: &str, sub: &str) -> bool {
        self.iss == iss && self.sub == sub
    }
}

/// A verified TLS client certificate: its subject, and its SHA-256 thumbprint in the form
/// RFC 8705 binds tokens with (`cnf.x5t#S256`, base64url).
// Fields in code-point order: their serialization is their canonical form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CertIdentity {
    pub(crate) subject: String,
    pub(crate) x5t_s256: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum AuthnError {
    #[error("no bearer token in the Authorization header")]
    Missing,
    #[error("the token must be sent in the Authorization header only")]
    OutsideHeader,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    /// Signature, issuer, audience, `nbf`, `kid` or algorithm: one answer for all, so the
    /// client learns nothing about which check failed. The detail is for the log only.
    #[error("the token is not valid for this resource")]
    Invalid { detail: String },
}

impl AuthnError {
    pub(crate) fn reason_code(&self) -> ReasonCode {
        match self {
            AuthnError::Missing => ReasonCode::TokenMissing,
            AuthnError::OutsideHeader => ReasonCode::TokenOutsideHeader,
            AuthnError::Malformed | AuthnError::Invalid { .. } => ReasonCode::TokenInvalid,
            AuthnError::Expired => ReasonCode::TokenExpired,
        }
    }

    /// What the audit record says: specific, but never the token itself.
    pub(crate) fn audit_reason(&self) -> String {
        match self {
            AuthnError::Invalid { detail } => format!("{self}: {detail}"),
            other => other.to_string(),
        }
    }
}
