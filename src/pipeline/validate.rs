//! Stage 3, argument validation: the caller's arguments against the contract, strictly.
//!
//! Runs after the contract stage (a caller who may not use the tool learns nothing of its
//! schema) and before authorization (so a policy sees only values the contract accepted). Every
//! argument is checked and every problem reported at once; unknown arguments, missing ones
//! and arguments the gateway fixes itself are refused. Outcome: [`ValidatedArgs`], the only
//! argument value later stages accept, with the gateway's `fixed_args` merged in.

use serde_json::{Map, Value};

use super::contract::Listed;
use crate::audit::AuditRecord;
use crate::contract::ArgError;

pub(crate) const REDACTED: &str = "[redacted]";

/// Proof that these arguments satisfy the contract. Only [`validate`] builds it.
pub(crate) struct ValidatedArgs {
    listed: Listed,
    /// What goes to the upstream: caller arguments plus `fixed_args`.
    forward: Map<String, Value>,
    /// SHA-256 of the canonical JSON of the caller's arguments.
    digest: String,
    redacted: Value,
    /// For a completion: the argument being completed (its partial value is in `redacted`).
    completion: Option<(String, String)>,
    /// For a resource: a subscription to it, or its end, instead of a read.
    subscription: Option<Subscription>,
}

/// What `resources/subscribe` and `resources/unsubscribe` ask of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscription {
    Subscribe,
    Unsubscribe,
}

/// The longest partial value a completion takes.
pub(crate) const MAX_PARTIAL: usize = 256;

impl ValidatedArgs {
    /// The argument and partial value of a completion; `None` for a call.
    pub(crate) fn completion(&self) -> Option<(&str, &str)> {
        self.completion.as_ref().map(|(a, v)| (a.as_str(), v.as_str()))
    }

    /// A subscription's change; `None` for a read or a call.
    pub(crate) fn subscription(&self) -> Option<Subscription> {
        self.subscription
    }

    /// The same validated arguments, asked for a subscription's change instead of a read.
    pub(crate) fn for_subscription(mut self, s: Subscription) -> Self {
        self.subscription = Some(s);
        self
    }

    pub(crate) fn listed(&self) -> &Listed {
        &self.listed
    }
    pub(crate) fn forward_args(&self) -> &Map<String, Value> {
        &self.forward
    }
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }
    pub(crate) fn redacted(&self) -> &Value {
        &self.redacted
    }

    /// Adds what a record about this call says of it: tool, arguments (redacted), their
    /// digest and the contract's.
    pub(crate) fn describe(&self, rec: AuditRecord) -> AuditRecord {
        let contract = self.listed.contract();
        rec.tool(Some(contract.tool.clone()))
            .args_digest(Some(self.digest.clone()))
            .args(Some(self.redacted.clone()))
            .contract_digest(&contract.digest)
    }
}

/// The caller's arguments with sensitive values replaced, for records and the console.
pub(crate) fn redact(contract: &crate::contract::Contract, args: &Map<String, Value>) -> Value {
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

/// What a refused validation hands back: the contract stage's proof, every problem, and the
/// caller's arguments as given (for the refusal record), so nothing is copied up front.
pub(crate) struct Invalid {
    pub(crate) listed: Listed,
    /// Every problem with an argument the contract names, and the first [`UNKNOWN_LISTED`]
    /// unknown ones.
    pub(crate) errors: Vec<ArgError>,
    /// How many more unknown arguments there were.
    pub(crate) more: usize,
    pub(crate) args: Option<Map<String, Value>>,
}

/// Most unknown arguments an answer and a record name one by one. Problems with the
/// arguments the contract declares are all named (their number is the contract's); unknown
/// names are the caller's to multiply, so a call with a hundred thousand of them gets a
/// short answer and leaves a short record.
pub(crate) const UNKNOWN_LISTED: usize = 5;

/// The problems found: every declared argument's, the first unknown ones.
#[derive(Default)]
struct Problems {
    listed: Vec<ArgError>,
    unknown: usize,
    more: usize,
}

impl Problems {
    fn declared(&mut self, argument: String, rule: String) {
        self.listed.push(ArgError { argument, rule });
    }

    fn unknown(&mut self, argument: impl FnOnce() -> String, rule: &str) {
        if self.unknown < UNKNOWN_LISTED {
            self.unknown += 1;
            self.listed.push(ArgError {
                argument: argument(),
                rule: rule.to_string(),
            });
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

pub(crate) fn validate(listed: Listed, args: Option<Map<String, Value>>) -> Result<ValidatedArgs, Box<Invalid>> {
    let given = args.is_some();
    let args = args.unwrap_or_default();
    let contract = listed.contract();
    let mut errors = Problems::default();
    // Missing arguments first: they are few, and the most useful to name.
    for (name, spec) in &contract.args {
        if !spec.optional && !args.contains_key(name) {
            errors.declared(name.clone(), "is required".into());
        }
    }
    // In name order: the caller's order of its arguments must not change what it is told.
    let mut by_name: Vec<(&String, &Value)> = args.iter().collect();
    by_name.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (name, value) in by_name {
        match contract.args.get(name) {
            Some(spec) => {
                if let Err(rule) = spec.check(value) {
                    errors.declared(name.clone(), rule);
                }
            }
            None if contract.fixed_args.contains_key(name) => {
                errors.declared(name.clone(), "is set by the gateway and cannot be given by the caller".into())
            }
            None => errors.unknown(|| display_name(name), "is not an argument of this tool"),
        }
    }
    if !errors.is_empty() {
        return Err(Box::new(Invalid {
            listed,
            errors: errors.listed,
            more: errors.more,
            args: given.then_some(args),
        }));
    }
    let redacted = redact(contract, &args);
    let digest = crate::canonical::digest_map(&args);
    let mut forward = args;
    for (k, v) in &contract.fixed_args {
        forward.insert(k.clone(), v.clone());
    }
    Ok(ValidatedArgs {
        listed,
        forward,
        digest,
        redacted,
        completion: None,
        subscription: None,
    })
}

/// A completion's request: `argument` must be one the contract declares, its partial value
/// a short string without control characters (it is incomplete, so its type is not checked
/// yet), and the values already chosen (`context`) must each pass their type. What goes
/// upstream is the context that passed.
pub(crate) fn partial(
    listed: Listed,
    argument: &str,
    value: &str,
    context: Option<&std::collections::HashMap<String, String>>,
) -> Result<ValidatedArgs, Box<Invalid>> {
    let contract = listed.contract();
    let mut errors = Problems::default();
    match contract.args.get(argument) {
        None => errors.unknown(|| display_name(argument), "is not an argument of this prompt or resource"),
        Some(_) if value.chars().count() > MAX_PARTIAL || value.chars().any(char::is_control) => errors.declared(
            argument.to_string(),
            format!("a partial value is at most {MAX_PARTIAL} characters, without control characters"),
        ),
        Some(_) => {}
    }
    let mut chosen = Map::new();
    for (name, v) in context.into_iter().flatten() {
        let v = Value::String(v.clone());
        match contract.args.get(name) {
            Some(spec) => match spec.check(&v) {
                Ok(()) => {
                    chosen.insert(name.clone(), v);
                }
                Err(rule) => errors.declared(name.clone(), rule),
            },
            None => errors.unknown(|| display_name(name), "is not an argument of this prompt or resource"),
        }
    }
    let asked = Map::from_iter([
        ("argument".to_string(), Value::String(argument.to_string())),
        ("value".to_string(), Value::String(value.to_string())),
        ("context".to_string(), Value::Object(chosen.clone())),
    ]);
    if !errors.is_empty() {
        // The refusal record keeps what was asked, a sensitive partial value redacted.
        let mut shown = asked;
        if contract.is_sensitive(argument) {
            shown.insert("value".into(), Value::String(REDACTED.into()));
        }
        return Err(Box::new(Invalid {
            listed,
            errors: errors.listed,
            more: errors.more,
            args: Some(shown),
        }));
    }
    let mut redacted = asked.clone();
    if contract.is_sensitive(argument) {
        redacted.insert("value".into(), Value::String(REDACTED.into()));
    }
    redacted.insert("context".into(), redact(contract, &chosen));
    Ok(ValidatedArgs {
        digest: crate::canonical::digest_map(&asked),
        listed,
        forward: chosen,
        redacted: Value::Object(redacted),
        completion: Some((argument.to_string(), value.to_string())),
        subscription: None,
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
