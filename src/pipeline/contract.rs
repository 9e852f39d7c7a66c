//! Stage 2, the contract: is there a contract for this tool in this environment, routed to
//! an upstream, that this caller may use at all?
//!
//! Runs after authentication, before the arguments are looked at, so that a caller who may
//! not use a tool learns nothing about its argument rules. Asks the policy's `may_list`: a
//! tool is usable exactly when `tools/list` shows it to the caller. Outcomes: [`Listed`], or
//! one refusal that is the same for an unknown tool and a forbidden one, so that no caller
//! can probe which tools exist.

use std::sync::Arc;

use super::Runtime;
use super::authn::Authenticated;
use crate::contract::Contract;

/// Proof that the tool exists here, is routed, and is in this caller's list. Only [`find`]
/// builds it.
pub(crate) struct Listed {
    auth: Authenticated,
    contract: Arc<Contract>,
}

impl Listed {
    pub(crate) fn auth(&self) -> &Authenticated {
        &self.auth
    }
    pub(crate) fn contract(&self) -> &Arc<Contract> {
        &self.contract
    }
}

/// Unknown, unrouted or not for this caller: one answer for all.
pub(crate) struct NotAvailable;

pub(crate) fn find(rt: &Runtime, auth: &Authenticated, tool: &str) -> Result<Listed, NotAvailable> {
    let contract = usable(rt, auth, tool).ok_or(NotAvailable)?;
    Ok(Listed {
        auth: auth.clone(),
        contract: contract.clone(),
    })
}

/// The contract of `tool` if it is in this caller's list (the same question as [`find`],
/// without the proof: for listing, and for what a transport may look at before a call).
pub(crate) fn usable<'r>(rt: &'r Runtime, auth: &Authenticated, tool: &str) -> Option<&'r Arc<Contract>> {
    // INVARIANT: the environment of the proof must be this runtime's; a proof from another
    // environment is worth nothing here.
    if auth.env() != rt.env.name {
        return None;
    }
    let contract = rt.env.contracts.get(tool)?;
    (rt.routes.contains_key(tool) && rt.policy.may_list(auth.principal(), contract).allowed()).then_some(contract)
}

/// The resource contract whose URI `uri` is, usable by this caller, and the URI's variables:
/// a fixed URI before a template; unknown, unmatched and forbidden alike.
pub(crate) fn find_resource(
    rt: &Runtime,
    auth: &Authenticated,
    uri: &str,
) -> Result<(Listed, serde_json::Map<String, serde_json::Value>), NotAvailable> {
    let mut candidates: Vec<&Arc<Contract>> = rt
        .env
        .contracts
        .values()
        .filter(|c| c.kind == crate::contract::Kind::Resource)
        .collect();
    candidates.sort_by_key(|c| !c.uri.as_ref().is_some_and(crate::contract::UriTemplate::is_fixed));
    for c in candidates {
        if let Some(vars) = c.uri.as_ref().and_then(|t| t.matches(uri).ok()) {
            let listed = find(rt, auth, &c.key)?;
            return Ok((listed, vars));
        }
    }
    Err(NotAvailable)
}

/// The resource template contract written exactly as `template`, usable by this caller (a
/// completion names a template, not a URI).
pub(crate) fn find_template(rt: &Runtime, auth: &Authenticated, template: &str) -> Result<Listed, NotAvailable> {
    let contract = rt
        .env
        .contracts
        .values()
        .find(|c| c.kind == crate::contract::Kind::Resource && c.uri.as_ref().is_some_and(|u| u.as_str() == template))
        .ok_or(NotAvailable)?;
    find(rt, auth, &contract.key)
}
