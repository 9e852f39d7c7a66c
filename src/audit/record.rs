//! The audit record (SPEC section 6) and its canonical encoding.
//!
//! The hash of a record is SHA-256 over the canonical JSON (keys sorted, no white space) of
//! every field except `hash` itself, `prev_hash` and `seq` included; so the chain binds each
//! record to its position and predecessor.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::authn::{CertIdentity, Principal};

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ClientRef {
    pub addr: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalRef {
    pub id: String,
    pub approver: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub status: String,
    /// Rounded to microseconds. Hashed records must round-trip exactly through JSON, which
    /// is why serde_json's `float_roundtrip` is on.
    pub latency_ms: f64,
    pub result_digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub seq: u64,
    pub ts: String,
    pub env: String,
    pub trace_id: String,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    /// Empty (`null`) when authentication failed.
    pub principal: Option<PrincipalRef>,
    pub client: ClientRef,
    pub tool: Option<String>,
    pub args_digest: Option<String>,
    pub args: Option<Value>,
    pub decision: String,
    pub reason_code: String,
    pub reason: String,
    pub contract_digest: Option<String>,
    pub approval: Option<ApprovalRef>,
    pub outcome: Option<Outcome>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrincipalRef {
    pub sub: String,
    pub iss: String,
    pub roles: Vec<String>,
    pub token_id: Option<String>,
    pub auth_method: String,
    /// Only on mTLS listeners; absent (not null) otherwise, so records written before the
    /// field existed hash the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<CertIdentity>,
}

impl From<&Principal> for PrincipalRef {
    fn from(p: &Principal) -> Self {
        Self {
            sub: p.sub.clone(),
            iss: p.iss.clone(),
            roles: p.roles.clone(),
            token_id: p.token_id.clone(),
            auth_method: p.auth_method.clone(),
            cert: p.cert.clone(),
        }
    }
}

pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

impl AuditRecord {
    /// The text the hash is taken over (everything but `hash`).
    pub fn canonical_body(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("hash");
        }
        crate::canonical::canonical_json(&v)
    }

    pub fn compute_hash(&self) -> String {
        crate::canonical::sha256_hex(self.canonical_body().as_bytes())
    }
}
