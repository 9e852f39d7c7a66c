//! Authorization: who may list and call which contract, and who may approve and see which
//! approval request. One trait, [`PolicyEngine`], asked by every place that decides such a
//! question (the pipeline, `tools/list`, the approval rules, the approvals API), so that an
//! engine can be swapped without touching them; [`RolePolicy`], the contracts' own
//! `allowed_roles` and `approver_roles`, is the built-in one.
//!
//! A decision says which rules decided it (cedar's `Response { decision, diagnostics }`):
//! the ids go into the audit record where a policy set took part.
//!
//! INVARIANT: an engine that cannot decide denies ([`PolicyDecision::deny_on_error`]), and
//! only [`Effect::Allow`] lets anything through; every match on [`Effect`] lists its
//! variants, so a new one breaks each place that must handle it.

pub(crate) mod cedar;
pub(crate) mod edges;
pub(crate) mod offline;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::contract::Contract;
use crate::identity::Principal;

/// What an engine decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// Who must approve a call a policy allowed on that condition (`@approval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApprovalNeed {
    pub(crate) roles: Vec<String>,
    /// Distinct approvers needed.
    pub(crate) required: u32,
}

/// A decision and the ids of the rules that made it (empty for a deny by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyDecision {
    effect: Effect,
    reasons: Vec<Arc<str>>,
    errors: Vec<String>,
    /// An allow that holds only once approved.
    approval: Option<ApprovalNeed>,
}

impl PolicyDecision {
    pub(crate) fn allow(reasons: Vec<Arc<str>>) -> Self {
        Self {
            effect: Effect::Allow,
            reasons,
            errors: Vec::new(),
            approval: None,
        }
    }

    pub(crate) fn deny(reasons: Vec<Arc<str>>) -> Self {
        Self {
            effect: Effect::Deny,
            reasons,
            errors: Vec::new(),
            approval: None,
        }
    }

    /// An evaluation that failed: a deny, whatever else matched. `reasons`: the rules whose
    /// evaluation failed.
    pub(crate) fn deny_on_error(reasons: Vec<Arc<str>>, errors: Vec<String>) -> Self {
        Self {
            effect: Effect::Deny,
            reasons,
            errors,
            approval: None,
        }
    }

    /// The same decision, holding only once approved as `need` says (an allow; a deny
    /// needs nothing).
    pub(crate) fn needing(mut self, need: Option<ApprovalNeed>) -> Self {
        if self.effect == Effect::Allow {
            self.approval = need;
        }
        self
    }

    /// The approval an allow holds on, if any.
    pub(crate) fn approval(&self) -> Option<&ApprovalNeed> {
        self.approval.as_ref()
    }

    pub(crate) fn allowed(&self) -> bool {
        match self.effect {
            Effect::Allow => true,
            Effect::Deny => false,
        }
    }

    /// The ids of the rules that decided.
    pub(crate) fn reasons(&self) -> &[Arc<str>] {
        &self.reasons
    }

    /// Why an evaluation failed (for the log; never for the caller).
    pub(crate) fn errors(&self) -> &[String] {
        &self.errors
    }
}

/// One call as the engine sees it: after its arguments passed the contract, so that a
/// policy only ever reads values the contract accepted.
pub(crate) struct CallFacts<'a> {
    pub(crate) env: &'a str,
    pub(crate) caller: &'a Principal,
    pub(crate) contract: &'a Contract,
    /// The upstream that serves the contract.
    pub(crate) upstream: &'a str,
    /// The caller's validated arguments (without the gateway's `fixed_args`).
    pub(crate) args: &'a Map<String, Value>,
}

/// One approval request as the engine sees it.
#[allow(dead_code, reason = "`env` and `tool` are for policy sets; the role rules read the roles only")]
pub(crate) struct ApprovalFacts<'a> {
    pub(crate) env: &'a str,
    pub(crate) tool: &'a str,
    /// The roles the request names as its approvers (the contract's, else the environment's).
    pub(crate) approver_roles: &'a [String],
}

/// Who may do what. Asked with facts only the pipeline and the store can establish; an
/// engine holds no state a decision changes.
pub(crate) trait PolicyEngine: Send + Sync + 'static {
    /// Whether `caller` may use `contract` at all: it is listed to them, and a call of
    /// theirs is examined further. Asked before the arguments are known to be valid, so that
    /// a caller who may not use a tool learns nothing of its argument rules.
    fn may_list(&self, caller: &Principal, contract: &Contract) -> PolicyDecision;
    /// Whether this call, with its validated arguments, may go on to approval and the
    /// upstream.
    fn may_call(&self, call: &CallFacts<'_>) -> PolicyDecision;
    /// Whether `approver` may decide on the request (the requester never may, whatever the
    /// engine says: the approval rules refuse that first).
    fn may_approve(&self, approver: &Principal, request: &ApprovalFacts<'_>) -> PolicyDecision;
    /// Whether `viewer` may see the request in the approvals API and the console.
    fn may_see(&self, viewer: &Principal, request: &ApprovalFacts<'_>) -> PolicyDecision;
    /// The digest of the policy set decisions are recorded against; `None` where the
    /// contracts alone decide (their digest is in every record already).
    fn set_digest(&self) -> Option<&str>;
    /// Whether a call of `contract` may need approval: what a transport may look at before
    /// the call is decided (the direct route leaves such calls to rmcp's stream).
    fn may_need_approval(&self, contract: &Contract) -> bool {
        contract.requires_approval
    }
    /// Roles the engine itself names as approvers (beyond the contracts' and the
    /// environment's): who the console shows the queue to.
    fn approver_roles(&self) -> Vec<String> {
        Vec::new()
    }
}

impl std::fmt::Debug for dyn PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyEngine")
    }
}

/// The contracts' own rules: a caller may use a contract when it holds one of its
/// `allowed_roles`; an approver may decide (and see) a request when it holds one of the
/// request's approver roles. Rule ids name the role that matched.
#[derive(Debug, Default)]
pub(crate) struct RolePolicy;

impl PolicyEngine for RolePolicy {
    fn may_list(&self, caller: &Principal, contract: &Contract) -> PolicyDecision {
        // The first role that matches decides; its id was built with the contract (this runs
        // for every contract on every `tools/list`).
        let first = contract.allowed_roles.iter().position(|r| caller.roles.contains(r));
        match first.and_then(|i| contract.role_rule_ids.get(i)) {
            Some(id) => PolicyDecision::allow(vec![id.clone()]),
            None => PolicyDecision::deny(Vec::new()),
        }
    }

    fn may_call(&self, call: &CallFacts<'_>) -> PolicyDecision {
        // Roles do not look at arguments: a call is allowed exactly when its tool is.
        self.may_list(call.caller, call.contract)
    }

    fn may_approve(&self, approver: &Principal, request: &ApprovalFacts<'_>) -> PolicyDecision {
        match request.approver_roles.iter().find(|r| approver.roles.contains(r)) {
            Some(role) => PolicyDecision::allow(vec![Arc::from(format!("approver_roles:{role}"))]),
            None => PolicyDecision::deny(Vec::new()),
        }
    }

    fn may_see(&self, viewer: &Principal, request: &ApprovalFacts<'_>) -> PolicyDecision {
        self.may_approve(viewer, request)
    }

    fn set_digest(&self) -> Option<&str> {
        None
    }
}

/// The contracts' roles, then an environment's Cedar policies (SPEC §9): a call is allowed
/// only when both allow it.
#[derive(Debug)]
pub(crate) struct CedarPolicy {
    pub(crate) set: Arc<cedar::CedarPolicies>,
}

impl PolicyEngine for CedarPolicy {
    fn may_list(&self, caller: &Principal, contract: &Contract) -> PolicyDecision {
        // A list is decided without arguments, which the policies are about: the roles
        // decide it, and each call is decided again.
        RolePolicy.may_list(caller, contract)
    }

    fn may_call(&self, call: &CallFacts<'_>) -> PolicyDecision {
        let roles = RolePolicy.may_call(call);
        if !roles.allowed() {
            return roles;
        }
        self.set.decide(call, offline::now())
    }

    fn may_approve(&self, approver: &Principal, request: &ApprovalFacts<'_>) -> PolicyDecision {
        RolePolicy.may_approve(approver, request)
    }

    fn may_see(&self, viewer: &Principal, request: &ApprovalFacts<'_>) -> PolicyDecision {
        RolePolicy.may_see(viewer, request)
    }

    fn set_digest(&self) -> Option<&str> {
        Some(self.set.digest())
    }

    fn may_need_approval(&self, contract: &Contract) -> bool {
        contract.requires_approval || self.set.may_need_approval(contract)
    }

    fn approver_roles(&self) -> Vec<String> {
        self.set.approver_roles()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(roles: &[&str]) -> Principal {
        Principal {
            auth_method: "jwt".into(),
            cert: None,
            iss: "iss".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            sub: "s".into(),
            token_id: None,
        }
    }

    #[test]
    fn roles_decide_and_name_the_role_that_matched() {
        let c = crate::contract::parse_file_text(r#"{"tool":"t","allowed_roles":["a","b"],"arg_schema":{}}"#, "t", false)
            .unwrap()
            .remove(0);
        let p = RolePolicy;
        assert_eq!(
            p.may_list(&who(&["z", "b"]), &c),
            PolicyDecision::allow(vec!["allowed_roles:b".into()])
        );
        assert_eq!(p.may_list(&who(&["b", "a"]), &c).reasons(), ["allowed_roles:a".into()]);
        assert!(!p.may_list(&who(&["z"]), &c).allowed());
        assert!(p.may_list(&who(&["z"]), &c).reasons().is_empty());
        let args = Map::new();
        let call = CallFacts {
            env: "dev",
            caller: &who(&["a"]),
            contract: &c,
            upstream: "u",
            args: &args,
        };
        assert!(p.may_call(&call).allowed());
        let roles = vec!["lead".to_string()];
        let req = ApprovalFacts {
            env: "dev",
            tool: "t",
            approver_roles: &roles,
        };
        assert!(p.may_approve(&who(&["lead"]), &req).allowed());
        assert!(!p.may_see(&who(&["a"]), &req).allowed());
        assert_eq!(p.set_digest(), None);
    }

    proptest::proptest! {
        /// With policies that only permit what the roles already allow, every decision is
        /// the roles' decision, whatever the caller and the (valid) arguments.
        #[test]
        fn policies_that_permit_what_roles_allow_decide_as_the_roles_do(
            roles in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c", "d"]), 0..4),
            octet in 0u8..=255,
            prefix in 8u8..=32,
            n in 1i64..=100,
            set in 0usize..3,
        ) {
            let c = crate::contract::parse_file_text(
                r#"{"tool":"t","allowed_roles":["a","b"],"arg_schema":{"ip":"cidr","n":"1-100"}}"#,
                "t",
                false,
            )
            .unwrap()
            .remove(0);
            let sets = [
                "permit (principal, action, resource);",
                "permit (principal, action, resource) when { principal.roles.containsAny([\"a\", \"b\"]) };",
                "permit (principal, action == Capgate::Action::\"t\", resource) when { context.args.n >= 1 && context.prefixes.ip <= 32 };",
            ];
            let texts = vec![("p.cedar".to_string(), sets[set].to_string())];
            let cedar = CedarPolicy {
                set: Arc::new(cedar::CedarPolicies::from_texts(&texts, std::iter::once(&c), 0).unwrap()),
            };
            let net: ipnet::Ipv4Net = format!("{octet}.0.0.0/{prefix}").parse().unwrap();
            let mut args = Map::new();
            args.insert("ip".into(), Value::String(net.trunc().to_string()));
            args.insert("n".into(), Value::from(n));
            let caller = who(&roles);
            let call = CallFacts {
                env: "dev",
                caller: &caller,
                contract: &c,
                upstream: "u",
                args: &args,
            };
            proptest::prop_assert_eq!(cedar.may_call(&call).allowed(), RolePolicy.may_call(&call).allowed());
            proptest::prop_assert!(cedar.may_call(&call).approval().is_none());
        }
    }
}
