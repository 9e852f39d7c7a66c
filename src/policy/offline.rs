//! A call decided as the gateway would decide it, without a gateway: the contract's
//! arguments checked first, then the roles, then the environment's policies, with approval
//! where the contract or a determining `@approval` permit asks for it. `capgate policy test`
//! runs tables against it; `capgate probe` predicts with it what a live gateway must answer.

use serde_json::{Map, Value};

use super::cedar::CedarPolicies;
use super::{CallFacts, PolicyEngine, RolePolicy};
use crate::contract::Contract;
use crate::identity::Principal;

/// What was decided, in the words of `policy test` tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected {
    Allow,
    Deny,
    Pending,
}

impl Expected {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Expected::Allow => "allow",
            Expected::Deny => "deny",
            Expected::Pending => "pending",
        }
    }
}

/// The decision on `caller` calling `contract` with `args` at `at` (Unix seconds), and the
/// ids of what decided it (a refused argument's rule, where the contract refused).
/// `policies` are the environment's (`None`: roles alone), `upstream` the one that serves
/// the contract (`Config::upstream_name_of`).
pub(crate) fn decide(
    env: &str,
    policies: Option<&CedarPolicies>,
    contract: &Contract,
    upstream: &str,
    caller: &Principal,
    args: &Map<String, Value>,
    at: i64,
) -> (Expected, Vec<String>) {
    for (name, spec) in &contract.args {
        if !spec.optional && !args.contains_key(name) {
            return (Expected::Deny, vec![format!("argument `{name}` is required")]);
        }
    }
    for (name, value) in args {
        match contract.args.get(name) {
            Some(spec) => {
                if let Err(rule) = spec.check(value) {
                    return (Expected::Deny, vec![format!("argument `{name}` {rule}")]);
                }
            }
            None => return (Expected::Deny, vec![format!("`{name}` is not an argument of this tool")]),
        }
    }
    let facts = CallFacts {
        env,
        caller,
        contract,
        upstream,
        args,
    };
    let roles = RolePolicy.may_call(&facts);
    let decision = match (policies, roles.allowed()) {
        (Some(set), true) => set.decide(&facts, at),
        _ => roles,
    };
    let ids = decision.reasons().iter().map(|r| r.to_string()).collect();
    let word = if !decision.allowed() {
        Expected::Deny
    } else if contract.requires_approval || decision.approval().is_some() {
        Expected::Pending
    } else {
        Expected::Allow
    };
    (word, ids)
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
