//! Approval requests: what a call that needs a human is bound to, and the rules that move a
//! request from pending to approved, denied, expired or executed. They live with the audit
//! log because approval state changes only in the log's own transactions.
//!
//! The rules here are pure; a store applies them through [`Table`] inside the same
//! transaction that appends the audit record describing each step, so a step either happens
//! and is recorded, or neither. Because the store serialises those transactions (one writer
//! thread per process, `BEGIN IMMEDIATE` across processes), "release once" is a conditional
//! status change, not a race.
//!
//! INVARIANT: only [`apply`] with [`Op::Call`] turns an approved request into an executed
//! one, and only for a call with the request's exact binding (environment, tool, requester,
//! canonical-argument digest, contract digest) before its expiry.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::AuditError;
use super::record::{ApprovalRef, AuditRecord};
use crate::decision::{Decision, ReasonCode, vocabulary};
use crate::identity::Principal;
use crate::policy::{ApprovalFacts, PolicyEngine};

vocabulary! {
    pub(crate) enum Status {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        Expired = "expired",
        Executed = "executed",
    }
}

vocabulary! {
    pub(crate) enum Verdict {
        Approve = "approve",
        Deny = "deny",
    }
}

/// What a request is for. A repeated call releases a request only if all of it is equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Binding {
    pub(crate) env: String,
    pub(crate) tool: String,
    pub(crate) requester_iss: String,
    pub(crate) requester_sub: String,
    pub(crate) args_digest: String,
    pub(crate) contract_digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Vote {
    pub(crate) approver_iss: String,
    pub(crate) approver_sub: String,
    pub(crate) verdict: Verdict,
    pub(crate) reason: String,
    pub(crate) at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Request {
    pub(crate) id: String,
    #[serde(flatten)]
    pub(crate) binding: Binding,
    /// The arguments with sensitive values redacted: what an approver sees.
    pub(crate) args: Value,
    pub(crate) side_effects: String,
    pub(crate) approver_roles: Vec<String>,
    /// Distinct approvals needed.
    pub(crate) required: u32,
    /// The trace ID of the call that opened the request; every step is recorded under it.
    pub(crate) trace_id: String,
    pub(crate) created_ms: i64,
    pub(crate) expires_ms: i64,
    pub(crate) status: Status,
    pub(crate) votes: Vec<Vote>,
    /// Whether its row in the store carries a valid MAC ([`RowKey`]): a row changed outside
    /// the gateway (a status flipped to `approved`, a vote added) does not, and is never
    /// released or decided on.
    #[serde(skip)]
    pub(crate) intact: bool,
}

/// The key approval rows are sealed with: derived from the environment's audit signing key,
/// so that whoever can write the store but not read that key cannot forge a grant.
pub(crate) struct RowKey(crate::secret::Secret<Vec<u8>>);

impl RowKey {
    pub(crate) fn derive(signing_key: &ed25519_dalek::SigningKey) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"capgate/approval-row-mac/v1\n");
        h.update(signing_key.as_bytes());
        Self(crate::secret::Secret::new(h.finalize().to_vec()))
    }

    /// HMAC-SHA-256 (hex) over the canonical JSON of everything a row says: binding,
    /// arguments, roles, counts, times, status and votes.
    pub(crate) fn mac(&self, req: &Request) -> String {
        use hmac::Mac;
        let content = serde_json::json!({
            "id": req.id,
            "binding": req.binding,
            "args": req.args,
            "side_effects": req.side_effects,
            "approver_roles": req.approver_roles,
            "required": req.required,
            "trace_id": req.trace_id,
            "created_ms": req.created_ms,
            "expires_ms": req.expires_ms,
            "status": req.status,
            "votes": req.votes,
        });
        // An HMAC takes a key of any length: this cannot fail.
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.expose()) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(crate::canonical::canonical_json(&content).as_bytes());
        crate::canonical::lower_hex(&mac.finalize().into_bytes())
    }
}

impl Request {
    pub(crate) fn approvals(&self) -> usize {
        self.votes.iter().filter(|v| v.verdict == Verdict::Approve).count()
    }

    fn approvers(&self) -> String {
        self.votes
            .iter()
            .filter(|v| v.verdict == Verdict::Approve)
            .map(|v| v.approver_sub.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn is_requester(&self, iss: &str, sub: &str) -> bool {
        self.binding.requester_iss == iss && self.binding.requester_sub == sub
    }

    /// The request as an audit record names it: its id and who approved it.
    pub(crate) fn approval_ref(&self) -> ApprovalRef {
        let approvers = self.approvers();
        ApprovalRef {
            id: self.id.clone(),
            approver: (!approvers.is_empty()).then_some(approvers),
        }
    }
}

impl Request {
    /// The request as a policy engine sees it.
    pub(crate) fn facts(&self) -> ApprovalFacts<'_> {
        ApprovalFacts {
            env: &self.binding.env,
            tool: &self.binding.tool,
            approver_roles: &self.approver_roles,
        }
    }
}

/// One step asked of the store.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// A valid call to a tool that needs approval: release a request granted for exactly
    /// this call, report a pending or denied one, or open `new`.
    Call {
        new: Box<Request>,
        template: Box<AuditRecord>,
        /// Most requests one requester may have open: past it, no new one is opened.
        max_open: usize,
    },
    /// An approver approves or denies request `id`.
    Decide {
        id: String,
        approver: Box<Principal>,
        /// Asked, inside the transaction, whether the approver may decide the request.
        policy: Arc<dyn PolicyEngine>,
        verdict: Verdict,
        reason: String,
        now_ms: i64,
        template: Box<AuditRecord>,
    },
    /// Every open request past its expiry becomes expired.
    Expire { now_ms: i64, template: Box<AuditRecord> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Refused {
    NotFound,
    NotApprover,
    OwnRequest,
    AlreadyVoted,
    NotPending,
    Tampered,
}

impl Refused {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refused::NotFound => "no such approval request in this environment",
            Refused::NotApprover => "the caller holds none of this request's approver roles",
            Refused::OwnRequest => "a requester can never decide on their own request",
            Refused::AlreadyVoted => "the caller has already decided on this request",
            Refused::NotPending => "the request is no longer pending",
            Refused::Tampered => "the request's row in the store was changed outside the gateway; it can no longer be decided",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// A new request; nothing ran.
    Opened(Box<Request>),
    /// The same call is already waiting for a decision; nothing ran.
    StillPending(Box<Request>),
    /// The request for this call was denied; nothing ran.
    Denied(Box<Request>),
    /// The request was granted for exactly this call and is now used up; the allow record
    /// (`seq`) is durable, so the call may run, once.
    Released { request: Box<Request>, seq: u64 },
    /// A decision was taken; the request as it now stands.
    Decided(Box<Request>),
    /// A decision was refused (and recorded).
    Refused { reason: Refused },
    /// How many requests expired.
    Expired(usize),
    /// No request was opened: the requester has `open` open already, the most it may.
    Limited { open: usize },
    /// The request for this call failed its integrity check; nothing ran.
    Tampered(Box<Request>),
}

/// The store's side of a transaction: read and change approval state. Every method runs
/// inside the transaction that [`apply`] was called in.
pub(crate) trait Table {
    /// The newest request with this binding that is pending, approved or denied and not yet
    /// expired at `now_ms`.
    fn find_open(&mut self, binding: &Binding, now_ms: i64) -> Result<Option<Request>, AuditError>;
    fn get(&mut self, env: &str, id: &str) -> Result<Option<Request>, AuditError>;
    /// How many requests of this requester in `env` are open (pending or approved, not yet
    /// expired) at `now_ms`.
    fn count_open(&mut self, env: &str, iss: &str, sub: &str, now_ms: i64) -> Result<usize, AuditError>;
    fn insert(&mut self, req: &Request) -> Result<(), AuditError>;
    fn set_status(&mut self, id: &str, status: Status, now_ms: i64) -> Result<(), AuditError>;
    fn add_vote(&mut self, id: &str, vote: &Vote) -> Result<(), AuditError>;
    /// Pending or approved requests whose expiry is at or before `now_ms`.
    fn due(&mut self, now_ms: i64) -> Result<Vec<Request>, AuditError>;
    /// Chains and inserts an audit record in the same transaction; returns its sequence.
    fn append(&mut self, record: AuditRecord) -> Result<u64, AuditError>;
}

/// The step's record: the template's caller facts, the request's facts, and the original
/// call's trace ID.
fn step_record(template: &AuditRecord, req: &Request, decision: Decision, code: ReasonCode, reason: String) -> AuditRecord {
    let mut rec = template.clone();
    rec.trace_id = crate::trace::TraceId::from_record(&req.trace_id);
    rec.tool = Some(req.binding.tool.clone());
    rec.args_digest = Some(req.binding.args_digest.clone());
    rec.args = Some(req.args.clone());
    rec.contract_digest = Some(req.binding.contract_digest.clone());
    rec.approval = Some(req.approval_ref());
    rec.decision = decision;
    rec.reason_code = code;
    rec.reason = reason;
    rec
}

pub(crate) fn apply(table: &mut dyn Table, op: &Op) -> Result<Answer, AuditError> {
    match op {
        Op::Call { new, template, max_open } => {
            let now_ms = new.created_ms;
            match table.find_open(&new.binding, now_ms)? {
                Some(req) if !req.intact => {
                    let reason = format!(
                        "request {} failed its integrity check (its row was changed outside the gateway); nothing ran",
                        req.id
                    );
                    table.append(step_record(template, &req, Decision::Deny, ReasonCode::ApprovalTampered, reason))?;
                    Ok(Answer::Tampered(Box::new(req)))
                }
                Some(mut req) if req.status == Status::Approved => {
                    table.set_status(&req.id, Status::Executed, now_ms)?;
                    req.status = Status::Executed;
                    let reason = format!(
                        "authorized under approval {} granted by {}: identity, role, arguments and approval checks passed",
                        req.id,
                        req.approvers()
                    );
                    // The caller facts (principal, client, session) are the repeating call's.
                    let seq = table.append(step_record(template, &req, Decision::Allow, ReasonCode::Allowed, reason))?;
                    Ok(Answer::Released {
                        request: Box::new(req),
                        seq,
                    })
                }
                Some(req) if req.status == Status::Denied => {
                    let reason = format!("request {} for this call was denied; nothing ran", req.id);
                    table.append(step_record(template, &req, Decision::Deny, ReasonCode::ApprovalDenied, reason))?;
                    Ok(Answer::Denied(Box::new(req)))
                }
                Some(req) => {
                    let reason = format!(
                        "request {} is still pending ({} of {} approvals); nothing ran",
                        req.id,
                        req.approvals(),
                        req.required
                    );
                    table.append(step_record(template, &req, Decision::Pending, ReasonCode::ApprovalPending, reason))?;
                    Ok(Answer::StillPending(Box::new(req)))
                }
                None => {
                    let b = &new.binding;
                    let open = table.count_open(&b.env, &b.requester_iss, &b.requester_sub, now_ms)?;
                    if open >= *max_open {
                        let reason = format!(
                            "approval request refused: `{}` has {open} open approval requests, the most allowed (max_open_approvals_per_requester); nothing ran",
                            b.requester_sub
                        );
                        let mut rec = step_record(template, new, Decision::Deny, ReasonCode::ApprovalLimit, reason);
                        // No request was opened: the record names none.
                        rec.approval = None;
                        table.append(rec)?;
                        return Ok(Answer::Limited { open });
                    }
                    table.insert(new)?;
                    let reason = format!(
                        "approval required: request {} opened, needs {} approval(s) from {}; nothing ran",
                        new.id,
                        new.required,
                        new.approver_roles.join(", ")
                    );
                    table.append(step_record(template, new, Decision::Pending, ReasonCode::ApprovalRequired, reason))?;
                    Ok(Answer::Opened(new.clone()))
                }
            }
        }
        Op::Decide {
            id,
            approver,
            policy,
            verdict,
            reason,
            now_ms,
            template,
        } => {
            let (verdict, now_ms) = (*verdict, *now_ms);
            let Some(mut req) = table.get(&template.env, id)? else {
                let mut rec = template.as_ref().clone();
                rec.decision = Decision::Deny;
                rec.reason_code = ReasonCode::ApprovalRefused;
                rec.reason = format!("{} decision on unknown approval request refused", verdict_word(verdict));
                table.append(rec)?;
                return Ok(Answer::Refused { reason: Refused::NotFound });
            };
            let p = approver.as_ref();
            let refused = if !req.intact {
                Some(Refused::Tampered)
            } else if !policy.may_approve(p, &req.facts()).allowed() {
                Some(Refused::NotApprover)
            } else if req.is_requester(&p.iss, &p.sub) {
                Some(Refused::OwnRequest)
            } else if req.status != Status::Pending || req.expires_ms <= now_ms {
                Some(Refused::NotPending)
            } else if req.votes.iter().any(|v| v.approver_iss == p.iss && v.approver_sub == p.sub) {
                Some(Refused::AlreadyVoted)
            } else {
                None
            };
            if let Some(r) = refused {
                let text = format!(
                    "{} of request {} by `{}` refused: {}",
                    verdict_word(verdict),
                    req.id,
                    p.sub,
                    r.message()
                );
                table.append(step_record(template, &req, Decision::Deny, ReasonCode::ApprovalRefused, text))?;
                return Ok(Answer::Refused { reason: r });
            }
            let vote = Vote {
                approver_iss: p.iss.clone(),
                approver_sub: p.sub.clone(),
                verdict,
                reason: reason.clone(),
                at_ms: now_ms,
            };
            table.add_vote(&req.id, &vote)?;
            req.votes.push(vote);
            let (decision, code, text) = match verdict {
                Verdict::Deny => {
                    req.status = Status::Denied;
                    (
                        Decision::Deny,
                        ReasonCode::ApprovalDenied,
                        format!("request {} denied by `{}`: {reason}", req.id, p.sub),
                    )
                }
                Verdict::Approve if req.approvals() >= req.required as usize => {
                    req.status = Status::Approved;
                    (
                        Decision::Allow,
                        ReasonCode::ApprovalGranted,
                        format!(
                            "request {} approved by `{}` ({} of {}), granted: {reason}",
                            req.id,
                            p.sub,
                            req.approvals(),
                            req.required
                        ),
                    )
                }
                Verdict::Approve => (
                    Decision::Pending,
                    ReasonCode::ApprovalVote,
                    format!(
                        "request {} approved by `{}` ({} of {}): {reason}",
                        req.id,
                        p.sub,
                        req.approvals(),
                        req.required
                    ),
                ),
            };
            if req.status != Status::Pending {
                table.set_status(&req.id, req.status, now_ms)?;
            }
            table.append(step_record(template, &req, decision, code, text))?;
            Ok(Answer::Decided(Box::new(req)))
        }
        Op::Expire { now_ms, template } => {
            let now_ms = *now_ms;
            let due = table.due(now_ms)?;
            for mut req in due.iter().cloned() {
                table.set_status(&req.id, Status::Expired, now_ms)?;
                let was = req.status;
                req.status = Status::Expired;
                let text = format!("request {} expired while {}; it can no longer run", req.id, was.as_str());
                table.append(step_record(template, &req, Decision::Deny, ReasonCode::ApprovalExpired, text))?;
            }
            Ok(Answer::Expired(due.len()))
        }
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approval",
        Verdict::Deny => "denial",
    }
}

/// An approver's reason as it may be stored and shown: trimmed, no control characters
/// except newlines, at most 500 characters. `None` when nothing is left.
pub(crate) fn clean_reason(reason: &str) -> Option<String> {
    let cleaned: String = reason.trim().chars().filter(|c| *c == '\n' || !c.is_control()).take(500).collect();
    (!cleaned.trim().is_empty()).then_some(cleaned)
}

pub(crate) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use std::collections::HashMap;

    /// An in-memory table: the rules are tested without a store.
    #[derive(Default)]
    struct Mem {
        reqs: HashMap<String, Request>,
        records: Vec<AuditRecord>,
    }

    impl Table for Mem {
        fn find_open(&mut self, b: &Binding, now_ms: i64) -> Result<Option<Request>, AuditError> {
            Ok(self
                .reqs
                .values()
                .filter(|r| r.binding == *b && r.expires_ms > now_ms)
                .filter(|r| matches!(r.status, Status::Pending | Status::Approved | Status::Denied))
                .max_by_key(|r| r.created_ms)
                .cloned())
        }
        fn get(&mut self, env: &str, id: &str) -> Result<Option<Request>, AuditError> {
            Ok(self.reqs.get(id).filter(|r| r.binding.env == env).cloned())
        }
        fn count_open(&mut self, env: &str, iss: &str, sub: &str, now_ms: i64) -> Result<usize, AuditError> {
            Ok(self
                .reqs
                .values()
                .filter(|r| r.binding.env == env && r.binding.requester_iss == iss && r.binding.requester_sub == sub)
                .filter(|r| matches!(r.status, Status::Pending | Status::Approved) && r.expires_ms > now_ms)
                .count())
        }
        fn insert(&mut self, req: &Request) -> Result<(), AuditError> {
            self.reqs.insert(req.id.clone(), req.clone());
            Ok(())
        }
        fn set_status(&mut self, id: &str, status: Status, _: i64) -> Result<(), AuditError> {
            self.reqs.get_mut(id).unwrap().status = status;
            Ok(())
        }
        fn add_vote(&mut self, id: &str, vote: &Vote) -> Result<(), AuditError> {
            self.reqs.get_mut(id).unwrap().votes.push(vote.clone());
            Ok(())
        }
        fn due(&mut self, now_ms: i64) -> Result<Vec<Request>, AuditError> {
            Ok(self
                .reqs
                .values()
                .filter(|r| matches!(r.status, Status::Pending | Status::Approved) && r.expires_ms <= now_ms)
                .cloned()
                .collect())
        }
        fn append(&mut self, record: AuditRecord) -> Result<u64, AuditError> {
            self.records.push(record);
            Ok(self.records.len() as u64)
        }
    }

    fn template(sub: Option<&str>, roles: &[&str]) -> AuditRecord {
        let mut r = crate::audit::record::tests::blank("dev", "t-new");
        r.principal = sub.map(|s| Principal {
            sub: s.into(),
            iss: "iss".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            token_id: None,
            auth_method: "jwt".into(),
            cert: None,
        });
        r
    }

    fn request(id: &str, sub: &str, digest: &str, now: i64, required: u32) -> Box<Request> {
        Box::new(Request {
            id: id.into(),
            binding: Binding {
                env: "dev".into(),
                tool: "block".into(),
                requester_iss: "iss".into(),
                requester_sub: sub.into(),
                args_digest: digest.into(),
                contract_digest: "c1".into(),
            },
            args: Value::Null,
            side_effects: "write".into(),
            approver_roles: vec!["lead".into()],
            required,
            trace_id: format!("trace-{id}"),
            created_ms: now,
            expires_ms: now + 1000,
            status: Status::Pending,
            votes: vec![],
            intact: true,
        })
    }

    fn call(t: &mut Mem, id: &str, sub: &str, digest: &str, now: i64) -> Answer {
        apply(
            t,
            &Op::Call {
                new: request(id, sub, digest, now, 1),
                template: Box::new(template(Some(sub), &["ic"])),
                max_open: 100,
            },
        )
        .unwrap()
    }

    fn decide(t: &mut Mem, id: &str, who: &str, roles: &[&str], verdict: Verdict, now: i64) -> Answer {
        apply(
            t,
            &Op::Decide {
                id: id.into(),
                approver: Box::new(template(Some(who), roles).principal.unwrap()),
                policy: Arc::new(crate::policy::RolePolicy),
                verdict,
                reason: "ok".into(),
                now_ms: now,
                template: Box::new(template(Some(who), roles)),
            },
        )
        .unwrap()
    }

    #[test]
    fn approved_call_is_released_once_and_only_for_its_binding() {
        let mut t = Mem::default();
        assert!(matches!(call(&mut t, "r1", "alice", "d1", 0), Answer::Opened(_)));
        assert!(matches!(call(&mut t, "r2", "alice", "d1", 1), Answer::StillPending(r) if r.id == "r1"));
        assert!(matches!(decide(&mut t, "r1", "bob", &["lead"], Verdict::Approve, 2), Answer::Decided(r) if r.status == Status::Approved));
        // Another caller, other arguments: not released, a new request each.
        assert!(matches!(call(&mut t, "r3", "mallory", "d1", 3), Answer::Opened(_)));
        assert!(matches!(call(&mut t, "r4", "alice", "d2", 3), Answer::Opened(_)));
        assert!(matches!(call(&mut t, "r5", "alice", "d1", 4), Answer::Released { request, .. } if request.id == "r1"));
        // A second repetition opens a new request instead of running again.
        assert!(matches!(call(&mut t, "r6", "alice", "d1", 5), Answer::Opened(r) if r.id == "r6"));
        // Every step is recorded under the original call's trace.
        let released = t.records.iter().find(|r| r.reason_code == ReasonCode::Allowed).unwrap();
        assert_eq!(released.trace_id.as_str(), "trace-r1");
        assert_eq!(released.approval.as_ref().unwrap().approver.as_deref(), Some("bob"));
    }

    #[test]
    fn requester_non_approver_and_double_votes_are_refused() {
        let mut t = Mem::default();
        call(&mut t, "r1", "alice", "d1", 0);
        let own = decide(&mut t, "r1", "alice", &["lead"], Verdict::Approve, 1);
        assert!(matches!(
            own,
            Answer::Refused {
                reason: Refused::OwnRequest,
                ..
            }
        ));
        let nope = decide(&mut t, "r1", "eve", &["viewer"], Verdict::Approve, 1);
        assert!(matches!(
            nope,
            Answer::Refused {
                reason: Refused::NotApprover,
                ..
            }
        ));
        let missing = decide(&mut t, "zz", "bob", &["lead"], Verdict::Approve, 1);
        assert!(matches!(
            missing,
            Answer::Refused {
                reason: Refused::NotFound,
                ..
            }
        ));
        assert_eq!(t.reqs["r1"].status, Status::Pending);
        assert!(t.records.iter().filter(|r| r.reason_code == ReasonCode::ApprovalRefused).count() == 3);
    }

    #[test]
    fn n_approvers_must_be_distinct() {
        let mut t = Mem::default();
        apply(
            &mut t,
            &Op::Call {
                new: request("r1", "alice", "d1", 0, 2),
                template: Box::new(template(Some("alice"), &[])),
                max_open: 100,
            },
        )
        .unwrap();
        assert!(matches!(decide(&mut t, "r1", "bob", &["lead"], Verdict::Approve, 1), Answer::Decided(r) if r.status == Status::Pending));
        assert!(matches!(
            decide(&mut t, "r1", "bob", &["lead"], Verdict::Approve, 2),
            Answer::Refused {
                reason: Refused::AlreadyVoted,
                ..
            }
        ));
        assert!(matches!(call(&mut t, "r2", "alice", "d1", 3), Answer::StillPending(_)));
        assert!(
            matches!(decide(&mut t, "r1", "carol", &["lead"], Verdict::Approve, 4), Answer::Decided(r) if r.status == Status::Approved)
        );
        assert!(matches!(call(&mut t, "r3", "alice", "d1", 5), Answer::Released { .. }));
    }

    #[test]
    fn denied_and_expired_never_release() {
        let mut t = Mem::default();
        call(&mut t, "r1", "alice", "d1", 0);
        decide(&mut t, "r1", "bob", &["lead"], Verdict::Deny, 1);
        assert!(matches!(call(&mut t, "r2", "alice", "d1", 2), Answer::Denied(_)));
        assert!(matches!(
            decide(&mut t, "r1", "carol", &["lead"], Verdict::Approve, 3),
            Answer::Refused {
                reason: Refused::NotPending,
                ..
            }
        ));

        call(&mut t, "r3", "alice", "d9", 0);
        decide(&mut t, "r3", "bob", &["lead"], Verdict::Approve, 1);
        // Past expiry, the approved request is not found open: a new request opens.
        assert!(matches!(call(&mut t, "r4", "alice", "d9", 1000), Answer::Opened(_)));
        assert!(matches!(
            apply(
                &mut t,
                &Op::Expire {
                    now_ms: 1000,
                    template: Box::new(template(None, &[]))
                }
            )
            .unwrap(),
            Answer::Expired(1)
        ));
        assert_eq!(t.reqs["r3"].status, Status::Expired);
        assert!(matches!(
            decide(&mut t, "r3", "carol", &["lead"], Verdict::Approve, 1001),
            Answer::Refused {
                reason: Refused::NotPending,
                ..
            }
        ));
    }

    #[test]
    fn reasons_are_cleaned() {
        assert_eq!(clean_reason("  ok\u{7}\nfine "), Some("ok\nfine".to_string()));
        assert_eq!(clean_reason(" \u{1b} "), None);
        assert_eq!(clean_reason(&"x".repeat(900)).unwrap().len(), 500);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashSet;

        const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "dave"];

        #[derive(Debug, Clone)]
        enum Step {
            Call { who: usize, digest: u8 },
            Decide { req: usize, who: usize, lead: bool, approve: bool },
            Expire,
            Wait(i64),
        }

        fn step() -> impl Strategy<Value = Step> {
            // Weighted towards approvals by approvers, so that most runs release something.
            prop_oneof![
                3 => (0..3usize, 0..2u8).prop_map(|(who, digest)| Step::Call { who, digest }),
                3 => (0..4usize, 0..4usize, proptest::bool::weighted(0.8), proptest::bool::weighted(0.8)).prop_map(|(req, who, lead, approve)| Step::Decide {
                    req,
                    who,
                    lead,
                    approve
                }),
                1 => Just(Step::Expire),
                1 => (1..400i64).prop_map(Step::Wait),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            /// Whatever happens in whatever order: a request is released at most once, only
            /// to its requester with its arguments, before its expiry, and only after enough
            /// distinct approvers who hold an approver role and are not the requester.
            #[test]
            fn releases_only_what_was_granted_and_only_once(steps in proptest::collection::vec(step(), 1..60), required in prop_oneof![3 => Just(1u32), 1 => Just(2u32)]) {
                let mut t = Mem::default();
                let mut now = 0i64;
                let mut ids: Vec<String> = Vec::new();
                let mut released: HashSet<String> = HashSet::new();
                let mut n = 0;
                for s in steps {
                    match s {
                        Step::Wait(ms) => now += ms,
                        Step::Expire => {
                            apply(&mut t, &Op::Expire { now_ms: now, template: Box::new(template(None, &[])) }).unwrap();
                        }
                        Step::Call { who, digest } => {
                            n += 1;
                            let mut new = request(&format!("r{n}"), PEOPLE[who], &format!("d{digest}"), now, required);
                            new.expires_ms = now + 1000;
                            let answer = apply(&mut t, &Op::Call { new, template: Box::new(template(Some(PEOPLE[who]), &["ic"])), max_open: 3 }).unwrap();
                            match answer {
                                Answer::Opened(r) => ids.push(r.id.clone()),
                                Answer::Released { request, .. } => {
                                    prop_assert!(released.insert(request.id.clone()), "released twice: {}", request.id);
                                    prop_assert_eq!(&request.binding.requester_sub, PEOPLE[who]);
                                    prop_assert_eq!(&request.binding.args_digest, &format!("d{digest}"));
                                    prop_assert!(now < request.expires_ms);
                                    let approvers: Vec<&Vote> = request.votes.iter().filter(|v| v.verdict == Verdict::Approve).collect();
                                    prop_assert!(approvers.len() >= request.required as usize);
                                    prop_assert!(request.votes.iter().all(|v| v.verdict == Verdict::Approve));
                                    let distinct: HashSet<&str> = approvers.iter().map(|v| v.approver_sub.as_str()).collect();
                                    prop_assert_eq!(distinct.len(), approvers.len());
                                    prop_assert!(!distinct.contains(PEOPLE[who]));
                                }
                                Answer::StillPending(r) => prop_assert_eq!(r.status, Status::Pending),
                                Answer::Limited { open } => prop_assert!(open >= 3),
                                Answer::Denied(r) => prop_assert_eq!(r.status, Status::Denied),
                                other => prop_assert!(false, "unexpected answer {other:?}"),
                            }
                        }
                        Step::Decide { req, who, lead, approve } => {
                            let Some(id) = ids.get(req).cloned() else { continue };
                            let roles: &[&str] = if lead { &["lead"] } else { &["ic"] };
                            let verdict = if approve { Verdict::Approve } else { Verdict::Deny };
                            let before = t.reqs[&id].clone();
                            let answer = decide(&mut t, &id, PEOPLE[who], roles, verdict, now);
                            if let Answer::Decided(_) = answer {
                                prop_assert!(lead, "a non-approver decided");
                                prop_assert!(before.binding.requester_sub != PEOPLE[who], "the requester decided");
                                prop_assert_eq!(before.status, Status::Pending);
                                prop_assert!(now < before.expires_ms);
                            } else {
                                prop_assert_eq!(&t.reqs[&id], &before, "a refused decision changed the request");
                            }
                        }
                    }
                }
                // Every release has its allow record, and nothing else is an allow for a tool.
                let allows = t.records.iter().filter(|r| r.reason_code == ReasonCode::Allowed).count();
                prop_assert_eq!(allows, released.len());
            }
        }
    }
}
