//! The audit record (SPEC section 6) and its canonical encoding.
//!
//! The hash of a record is SHA-256 over the canonical JSON (keys sorted, no white space) of
//! every field except `hash` itself, `prev_hash` and `seq` included; so the chain binds each
//! record to its position and predecessor.
//!
//! The canonical form is produced by serializing [`CanonicalBody`], a borrowed view whose
//! fields are declared in code-point order, straight into the hash: no JSON tree is built
//! and nothing is sorted at run time. Nested structs are declared in that order too (so the
//! stored text shows them sorted); `args` is a `Value`, whose maps are ordered by key.
//! INVARIANT: the view's output equals the sorted canonical form of the whole record minus
//! `hash`; a property test holds it to a model that sorts explicitly.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decision::{Decision, ReasonCode};
use crate::identity::Principal;
use crate::request::{CallCtx, ClientRef};
use crate::trace::TraceId;

/// Most bytes a record is stored with its arguments whole. A huge or hostile request (say,
/// a hundred thousand unknown arguments) is recorded with a preview and its digest, so that
/// it can neither fill the store nor be stored twice its size.
pub(crate) const MAX_RECORD: usize = 12 * 1024;
/// How much of the arguments' JSON text a preview keeps.
const PREVIEW: usize = 1024;

/// What a record keeps of arguments too large to keep whole: how large they were, how many
/// there were, and the start of their JSON text.
fn preview(args: &Value) -> Value {
    let text = args.to_string();
    let mut cut = PREVIEW.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({
        "capgate/bytes": text.len(),
        "capgate/count": args.as_object().map_or(0, serde_json::Map::len),
        "capgate/preview": text.get(..cut).unwrap_or(""),
        "capgate/truncated": true,
    })
}

/// The `prev_hash` of a chain's first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

// Fields in code-point order: their serialization is their canonical form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ApprovalRef {
    pub(crate) approver: Option<String>,
    pub(crate) id: String,
}

// Fields in code-point order: their serialization is their canonical form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Outcome {
    /// The sequence number of the allow record whose call this describes. Absent (not null)
    /// in records written before it existed, so they hash the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) decision_record: Option<u64>,
    /// Rounded to microseconds. Hashed records must round-trip exactly through JSON, which
    /// is why serde_json's `float_roundtrip` is on.
    pub(crate) latency_ms: f64,
    pub(crate) result_digest: Option<String>,
    pub(crate) status: String,
}

/// Which policies decided, where a policy set took part (SPEC section 6): their ids, and
/// the digest of the whole set in force.
// Fields in code-point order: their serialization is their canonical form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct PolicyRef {
    pub(crate) ids: Vec<String>,
    pub(crate) set_digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct AuditRecord {
    pub(crate) seq: u64,
    pub(crate) ts: String,
    pub(crate) env: String,
    pub(crate) trace_id: TraceId,
    /// The JSON-RPC method the request named. Absent (not null) where it named none, and in
    /// records written before the field existed, so those hash the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) method: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) session_id: Option<String>,
    /// Empty (`null`) when authentication failed.
    pub(crate) principal: Option<Principal>,
    pub(crate) client: ClientRef,
    pub(crate) tool: Option<String>,
    pub(crate) args_digest: Option<String>,
    pub(crate) args: Option<Value>,
    pub(crate) decision: Decision,
    pub(crate) reason_code: ReasonCode,
    pub(crate) reason: String,
    pub(crate) contract_digest: Option<String>,
    pub(crate) approval: Option<ApprovalRef>,
    pub(crate) outcome: Option<Outcome>,
    /// Absent (not null) unless a policy set decided, so records written before the field
    /// existed, and records of role-only decisions, hash the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<PolicyRef>,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    /// The request's trace span, which takes on this record's facts once it is durable.
    #[serde(skip)]
    pub(crate) span: crate::telemetry::SpanRef,
}

impl AuditRecord {
    /// What the request's span takes on from this record once it is durable, if the request
    /// has a span.
    pub(crate) fn noted(&self) -> Option<crate::telemetry::Noted> {
        let span = self.span.0.clone()?;
        Some(crate::telemetry::Noted {
            span,
            decision: self.decision.as_str(),
            reason_code: self.reason_code.as_str(),
            // As the metrics name it: only a contract's tool (see `metrics`).
            tool: self.contract_digest.as_ref().and(self.tool.clone()),
            policy_ids: self.policy.as_ref().map(|p| p.ids.clone()).unwrap_or_default(),
        })
    }

    /// What the metrics count of this record once it is durable.
    pub(crate) fn tally(&self) -> crate::metrics::Tally {
        crate::metrics::Tally::new(
            self.tool.as_deref(),
            self.contract_digest.is_some(),
            self.decision.as_str(),
            self.reason_code.as_str(),
            self.outcome.is_some(),
        )
    }

    /// A record of `decision` about the request `ctx` in environment `env`; the methods
    /// below add what else is known about it. Sequence and hashes are the store's to set.
    pub(crate) fn new(env: &str, ctx: &CallCtx, decision: Decision, code: ReasonCode, reason: String) -> Self {
        Self {
            seq: 0,
            ts: now_rfc3339(),
            env: env.to_string(),
            trace_id: ctx.trace.clone(),
            method: ctx.method.clone(),
            request_id: ctx.request_id.clone(),
            session_id: ctx.session_id.clone(),
            principal: None,
            client: ctx.client.clone(),
            tool: None,
            args_digest: None,
            args: None,
            decision,
            reason_code: code,
            reason,
            contract_digest: None,
            approval: None,
            outcome: None,
            policy: None,
            prev_hash: String::new(),
            hash: String::new(),
            span: ctx.span.clone(),
        }
    }

    pub(crate) fn principal(mut self, p: Option<&Principal>) -> Self {
        self.principal = p.cloned();
        self
    }

    pub(crate) fn tool(mut self, tool: Option<String>) -> Self {
        self.tool = tool;
        self
    }

    pub(crate) fn args_digest(mut self, digest: Option<String>) -> Self {
        self.args_digest = digest;
        self
    }

    pub(crate) fn args(mut self, args: Option<Value>) -> Self {
        self.args = args;
        self
    }

    pub(crate) fn contract_digest(mut self, digest: &str) -> Self {
        self.contract_digest = Some(digest.to_string());
        self
    }

    pub(crate) fn approval(mut self, approval: Option<ApprovalRef>) -> Self {
        self.approval = approval;
        self
    }

    pub(crate) fn policy(mut self, policy: Option<PolicyRef>) -> Self {
        self.policy = policy;
        self
    }
}

pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Every field of a record but `hash`, declared in code-point order: its compact
/// serialization is the canonical body the hash is taken over.
#[derive(Serialize)]
struct CanonicalBody<'a> {
    approval: &'a Option<ApprovalRef>,
    #[serde(serialize_with = "crate::canonical::sorted_option")]
    args: &'a Option<Value>,
    args_digest: &'a Option<String>,
    client: &'a ClientRef,
    contract_digest: &'a Option<String>,
    decision: Decision,
    env: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: &'a Option<String>,
    outcome: &'a Option<Outcome>,
    #[serde(skip_serializing_if = "absent")]
    policy: &'a Option<PolicyRef>,
    prev_hash: &'a str,
    principal: &'a Option<Principal>,
    reason: &'a str,
    reason_code: ReasonCode,
    request_id: &'a Option<String>,
    seq: u64,
    session_id: &'a Option<String>,
    tool: &'a Option<String>,
    trace_id: &'a TraceId,
    ts: &'a str,
}

fn absent(p: &&Option<PolicyRef>) -> bool {
    p.is_none()
}

impl AuditRecord {
    fn body(&self) -> CanonicalBody<'_> {
        CanonicalBody {
            approval: &self.approval,
            args: &self.args,
            args_digest: &self.args_digest,
            client: &self.client,
            contract_digest: &self.contract_digest,
            decision: self.decision,
            env: &self.env,
            method: &self.method,
            outcome: &self.outcome,
            policy: &self.policy,
            prev_hash: &self.prev_hash,
            principal: &self.principal,
            reason: &self.reason,
            reason_code: self.reason_code,
            request_id: &self.request_id,
            seq: self.seq,
            session_id: &self.session_id,
            tool: &self.tool,
            trace_id: &self.trace_id,
            ts: &self.ts,
        }
    }

    /// The text the hash is taken over (everything but `hash`).
    #[cfg(test)]
    pub(crate) fn canonical_body(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_default()
    }

    pub(crate) fn compute_hash(&self) -> String {
        crate::canonical::digest_of(&self.body())
    }

    /// Sets `hash` and returns the text to store: the canonical body with `hash` appended,
    /// so that a record is serialized once to be both hashed and stored. A record over
    /// [`MAX_RECORD`] keeps a preview of its arguments instead of them (their digest is in
    /// the record already). An error means "not recorded": the caller fails the write.
    pub(crate) fn seal(&mut self) -> Result<String, serde_json::Error> {
        let mut text = serde_json::to_string(&self.body())?;
        if text.len() > MAX_RECORD
            && let Some(args) = self.args.take()
        {
            self.args = Some(preview(&args));
            text = serde_json::to_string(&self.body())?;
        }
        self.hash = crate::canonical::sha256_hex(text.as_bytes());
        // The body is a JSON object with at least one key; its last byte is its `}`.
        text.pop();
        text.push_str(",\"hash\":\"");
        text.push_str(&self.hash);
        text.push_str("\"}");
        Ok(text)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::canonical::strategies::json;
    use crate::identity::CertIdentity;
    use proptest::prelude::*;

    /// A record with nothing in it but its environment and trace ID, for tests to fill in.
    pub(crate) fn blank(env: &str, trace_id: &str) -> AuditRecord {
        let ctx = CallCtx {
            trace: TraceId::from_record(trace_id),
            method: None,
            request_id: None,
            session_id: None,
            client: ClientRef::default(),
            span: Default::default(),
        };
        let mut r = AuditRecord::new(env, &ctx, Decision::Deny, ReasonCode::MalformedRequest, String::new());
        r.ts = String::new();
        r
    }

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,10}|[\\x00-\\x1f\"]{0,3}"
    }

    prop_compose! {
        pub(crate) fn record()(
            seq in any::<u64>(), texts in prop::collection::vec(text(), 12),
            opt in prop::collection::vec(prop::option::of(text()), 8),
            args in prop::option::of(json()), roles in prop::collection::vec(text(), 0..3),
            latency in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            has in prop::collection::vec(any::<bool>(), 5),
            decision in prop::sample::select(Decision::ALL), code in prop::sample::select(ReasonCode::ALL),
            ids in prop::collection::vec(text(), 0..3),
        ) -> AuditRecord {
            let t = |i: usize| texts.get(i).cloned().unwrap_or_default();
            let o = |i: usize| opt.get(i).cloned().flatten();
            let b = |i: usize| has.get(i).copied().unwrap_or(false);
            AuditRecord {
                seq, ts: t(0), env: t(1), trace_id: TraceId::from_record(&t(2)), method: o(2), request_id: o(0), session_id: o(1),
                principal: b(0).then(|| Principal {
                    auth_method: t(3), iss: t(4), sub: t(5), roles: roles.clone(), token_id: o(2),
                    cert: b(3).then(|| CertIdentity { subject: t(6), x5t_s256: t(7) }),
                }),
                client: ClientRef { addr: o(3), user_agent: o(4) },
                tool: o(5), args_digest: o(6), args,
                decision, reason_code: code, reason: t(10), contract_digest: o(7),
                approval: b(1).then(|| ApprovalRef { id: t(11), approver: o(0) }),
                outcome: b(2).then(|| Outcome { status: t(0), latency_ms: latency, result_digest: o(1), decision_record: b(3).then_some(seq / 2) }),
                policy: b(4).then(|| PolicyRef { ids: ids.clone(), set_digest: t(8) }),
                prev_hash: t(6), hash: t(7), span: Default::default(),
            }
        }
    }

    proptest! {
        /// The model: the whole record as a JSON tree, `hash` removed, keys sorted by hand.
        #[test]
        fn canonical_body_is_the_sorted_record_without_hash(r in record()) {
            let mut v = serde_json::to_value(&r).unwrap();
            v.as_object_mut().unwrap().remove("hash");
            let model = crate::canonical::model::canonical_json(&v);
            prop_assert_eq!(&r.canonical_body(), &model);
            prop_assert_eq!(r.compute_hash(), crate::canonical::sha256_hex(model.as_bytes()));
            // And a stored record reads back to the same hash.
            let back: AuditRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            prop_assert_eq!(back.compute_hash(), r.compute_hash());
            // Sealing stores exactly the record, with the model's hash.
            let mut sealed = r.clone();
            let stored = sealed.seal().unwrap();
            prop_assert_eq!(&sealed.hash, &crate::canonical::sha256_hex(model.as_bytes()));
            let read: AuditRecord = serde_json::from_str(&stored).unwrap();
            // As JSON: `Some(null)` and `None` are one value on the wire.
            prop_assert_eq!(serde_json::to_value(&read).unwrap(), serde_json::to_value(&sealed).unwrap());
            prop_assert_eq!(read.compute_hash(), sealed.hash.clone());
        }
    }
}
