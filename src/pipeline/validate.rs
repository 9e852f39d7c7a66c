//! Stage 3, argument validation: the caller's arguments against the contract, strictly.
//!
//! Runs after authorization (an unauthorized caller learns nothing of the schema). Every
//! argument is checked and every problem reported at once; unknown arguments, missing ones
//! and arguments the gateway fixes itself are refused. Outcome: [`ValidatedArgs`], the only
//! argument value later stages accept, with the gateway's `fixed_args` merged in.

use serde_json::{Map, Value};

use super::authz::Authorized;

pub const REDACTED: &str = "[redacted]";

/// Proof that these arguments satisfy the contract. Only [`validate`] builds it.
pub struct ValidatedArgs {
    authorized: Authorized,
    /// What goes to the upstream: caller arguments plus `fixed_args`.
    forward: Map<String, Value>,
    /// SHA-256 of the canonical JSON of the caller's arguments.
    digest: String,
    redacted: Value,
}

impl ValidatedArgs {
    pub fn authorized(&self) -> &Authorized {
        &self.authorized
    }
    pub fn forward_args(&self) -> &Map<String, Value> {
        &self.forward
    }
    pub fn digest(&self) -> &str {
        &self.digest
    }
    pub fn redacted(&self) -> &Value {
        &self.redacted
    }
}

/// One offending argument and the rule it broke; never its value.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ArgError {
    pub argument: String,
    pub rule: String,
}

/// The caller's arguments with sensitive values replaced, for records and the console.
pub fn redact(contract: &crate::contract::Contract, args: &Map<String, Value>) -> Value {
    Value::Object(
        args.iter()
            .map(|(k, v)| {
                let v = if contract.is_sensitive(k) {
                    Value::String(REDACTED.into())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// What a refused validation hands back: the proof of authorization, every problem, and the
/// caller's arguments as given (for the refusal record), so nothing is copied up front.
pub type Invalid = (Authorized, Vec<ArgError>, Option<Map<String, Value>>);

pub fn validate(authorized: Authorized, args: Option<Map<String, Value>>) -> Result<ValidatedArgs, Box<Invalid>> {
    let given = args.is_some();
    let args = args.unwrap_or_default();
    let contract = authorized.contract();
    let mut errors = Vec::new();
    for (name, value) in &args {
        match contract.args.get(name) {
            Some(spec) => {
                if let Err(rule) = spec.check(value) {
                    errors.push(ArgError {
                        argument: name.clone(),
                        rule,
                    });
                }
            }
            None if contract.fixed_args.contains_key(name) => errors.push(ArgError {
                argument: display_name(name),
                rule: "is set by the gateway and cannot be given by the caller".into(),
            }),
            None => errors.push(ArgError {
                argument: display_name(name),
                rule: "is not an argument of this tool".into(),
            }),
        }
    }
    for (name, spec) in &contract.args {
        if !spec.optional && !args.contains_key(name) {
            errors.push(ArgError {
                argument: name.clone(),
                rule: "is required".into(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(Box::new((authorized, errors, given.then_some(args))));
    }
    let redacted = redact(contract, &args);
    // Digest the map in place rather than a copy of it (this runs on every allowed call).
    let as_value = Value::Object(args);
    let digest = crate::canonical::digest(&as_value);
    let mut forward = match as_value {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in &contract.fixed_args {
        forward.insert(k.clone(), v.clone());
    }
    Ok(ValidatedArgs {
        authorized,
        forward,
        digest,
        redacted,
    })
}

/// An unknown argument's name is caller input: shown only when it is short and printable.
fn display_name(name: &str) -> String {
    if name.len() <= 64 && name.chars().all(|c| c.is_ascii_graphic()) {
        name.to_string()
    } else {
        "(unprintable name)".to_string()
    }
}
