//! The edges of a policy set's argument conditions, for `capgate probe` (SPEC §7, §9): for
//! every comparison of an argument, or of a cidr argument's prefix length, with a constant,
//! and every `isInRange` test of an ip or cidr argument against a literal range, the values
//! just inside the condition and just outside it. An off-by-one in the gateway's typing of
//! arguments, or in a policy, shows at exactly these values.
//!
//! Conditions are read from cedar's JSON form of each policy (`Policy::to_json`); a
//! condition in any other shape (a comparison of two arguments, a computed bound) has no
//! edge here, and nothing is guessed for it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::cedar::CedarPolicies;
use crate::contract::Contract;
use crate::contract::types::{ArgType, IpFamily};

/// One condition of one policy on one argument, and the values on each side of it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Edge {
    pub(crate) policy: String,
    pub(crate) argument: String,
    /// The condition as written, in short (`ttl_minutes <= 60`).
    pub(crate) condition: String,
    /// Each value, and whether the condition holds for it.
    pub(crate) values: Vec<(Value, bool)>,
}

/// What a condition compares.
#[derive(Debug, Clone, PartialEq)]
enum Cond {
    /// `context.args.NAME OP n`.
    Arg { name: String, op: &'static str, n: i64 },
    /// `context.prefixes.NAME OP n`.
    Prefix { name: String, op: &'static str, n: i64 },
    /// `context.args.NAME.isInRange(ip("R"))`.
    Within { name: String, range: IpNet },
    /// `ip("R").isInRange(context.args.NAME)`.
    Holds { name: String, range: IpNet },
}

impl Cond {
    /// The argument the condition is on.
    fn argument(&self) -> &str {
        match self {
            Cond::Arg { name, .. } | Cond::Prefix { name, .. } | Cond::Within { name, .. } | Cond::Holds { name, .. } => name,
        }
    }
}

const COMPARISONS: [&str; 6] = ["<", "<=", ">", ">=", "==", "!="];

/// `context.FIELD.NAME`: the field (`args` or `prefixes`) and the name.
fn context_attr(e: &Value) -> Option<(&str, &str)> {
    let outer = e.get(".")?;
    let name = outer.get("attr")?.as_str()?;
    let inner = outer.get("left")?.get(".")?;
    let field = inner.get("attr")?.as_str()?;
    (inner.get("left")?.get("Var")?.as_str()? == "context").then_some((field, name))
}

/// `ip("R")`, as a network.
fn ip_literal(e: &Value) -> Option<IpNet> {
    let s = e.get("ip")?.as_array()?.first()?.get("Value")?.as_str()?;
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn flipped(op: &'static str) -> &'static str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        other => other,
    }
}

fn holds(op: &str, v: i64, n: i64) -> bool {
    match op {
        "<" => v < n,
        "<=" => v <= n,
        ">" => v > n,
        ">=" => v >= n,
        "==" => v == n,
        _ => v != n,
    }
}

/// Every condition of the shapes above anywhere in an expression.
fn conditions(e: &Value, out: &mut Vec<Cond>) {
    match e {
        Value::Object(m) => {
            for op in COMPARISONS {
                let Some(sides) = m.get(op) else { continue };
                let (Some(l), Some(r)) = (sides.get("left"), sides.get("right")) else {
                    continue;
                };
                let constant = |v: &Value| v.get("Value").and_then(Value::as_i64);
                let found = match (context_attr(l), constant(r), context_attr(r), constant(l)) {
                    (Some(attr), Some(n), _, _) => Some((attr, op, n)),
                    (_, _, Some(attr), Some(n)) => Some((attr, flipped(op), n)),
                    _ => None,
                };
                match found {
                    Some((("args", name), op, n)) => out.push(Cond::Arg { name: name.into(), op, n }),
                    Some((("prefixes", name), op, n)) => out.push(Cond::Prefix { name: name.into(), op, n }),
                    _ => {}
                }
            }
            if let Some([a, b]) = m.get("isInRange").and_then(Value::as_array).map(Vec::as_slice) {
                match (context_attr(a), ip_literal(b), ip_literal(a), context_attr(b)) {
                    (Some(("args", name)), Some(range), _, _) => out.push(Cond::Within { name: name.into(), range }),
                    (_, _, Some(range), Some(("args", name))) => out.push(Cond::Holds { name: name.into(), range }),
                    _ => {}
                }
            }
            for v in m.values() {
                conditions(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| conditions(v, out)),
        _ => {}
    }
}

/// The integers on each side of `OP n`.
fn around(op: &str, n: i64) -> Vec<i64> {
    let (below, above) = (n.checked_sub(1), n.checked_add(1));
    let picks = match op {
        "<=" | ">" => vec![Some(n), above],
        "<" | ">=" => vec![below, Some(n)],
        _ => vec![below, Some(n), above],
    };
    picks.into_iter().flatten().collect()
}

fn family_fits(family: &IpFamily, addr: &IpAddr) -> bool {
    match family {
        IpFamily::Any => true,
        IpFamily::V4 => addr.is_ipv4(),
        IpFamily::V6 => addr.is_ipv6(),
    }
}

/// The address `delta` (±1) from `a`, if there is one.
fn step(a: IpAddr, delta: i8) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v) => {
            let n = u32::from(v);
            let m = if delta < 0 { n.checked_sub(1)? } else { n.checked_add(1)? };
            Some(IpAddr::V4(m.into()))
        }
        IpAddr::V6(v) => {
            let n = u128::from(v);
            let m = if delta < 0 { n.checked_sub(1)? } else { n.checked_add(1)? };
            Some(IpAddr::V6(m.into()))
        }
    }
}

/// A value of an ip argument (`a`), or of a cidr argument (`a` as one host).
fn host(a: IpAddr, cidr: bool) -> Value {
    if cidr {
        json!(IpNet::from(a).to_string())
    } else {
        json!(a.to_string())
    }
}

fn values_of(cond: &Cond, contract: &Contract, baseline: &Map<String, Value>) -> Vec<(Value, bool)> {
    let name = cond.argument();
    let Some(spec) = contract.args.get(name) else { return Vec::new() };
    let candidates: Vec<(Value, bool)> = match (cond, &spec.ty) {
        (Cond::Arg { op, n, .. }, ArgType::Int { .. }) => around(op, *n).into_iter().map(|v| (json!(v), holds(op, v, *n))).collect(),
        (Cond::Prefix { op, n, .. }, ArgType::Cidr { .. }) => {
            let Some(base) = baseline.get(name).and_then(Value::as_str).and_then(|s| s.parse::<IpNet>().ok()) else {
                return Vec::new();
            };
            around(op, *n)
                .into_iter()
                .filter_map(|p| {
                    let net = IpNet::new(base.addr(), u8::try_from(p).ok()?).ok()?.trunc();
                    Some((json!(net.to_string()), holds(op, p, *n)))
                })
                .collect()
        }
        (Cond::Within { range, .. }, ArgType::Ip(family) | ArgType::Cidr { family, .. }) => {
            let cidr = matches!(spec.ty, ArgType::Cidr { .. });
            let (first, last) = (range.network(), range.broadcast());
            if !family_fits(family, &first) {
                return Vec::new();
            }
            let mut v = vec![(host(first, cidr), true), (host(last, cidr), true)];
            v.extend(step(first, -1).map(|a| (host(a, cidr), false)));
            v.extend(step(last, 1).map(|a| (host(a, cidr), false)));
            if cidr {
                v.push((json!(range.trunc().to_string()), true));
                v.extend(range.supernet().map(|s| (json!(s.to_string()), false)));
            }
            v
        }
        (Cond::Holds { range, .. }, ArgType::Cidr { family, .. }) => {
            if !family_fits(family, &range.network()) {
                return Vec::new();
            }
            let mut v = vec![(json!(range.trunc().to_string()), true)];
            v.extend(range.supernet().map(|s| (json!(s.to_string()), true)));
            let halves = range.subnets(range.prefix_len().saturating_add(1)).ok();
            v.extend(halves.and_then(|mut h| h.next()).map(|h| (json!(h.to_string()), false)));
            v.extend(step(range.broadcast(), 1).map(|a| (host(a, true), false)));
            v
        }
        _ => Vec::new(),
    };
    // Values the contract refuses test the contract, which the probe's argument group does.
    let mut seen = BTreeSet::new();
    candidates
        .into_iter()
        .filter(|(v, _)| spec.check(v).is_ok())
        .filter(|(v, _)| seen.insert(v.to_string()))
        .collect()
}

fn describe(cond: &Cond) -> String {
    match cond {
        Cond::Arg { name, op, n } => format!("{name} {op} {n}"),
        Cond::Prefix { name, op, n } => format!("prefix of {name} {op} {n}"),
        Cond::Within { name, range } => format!("{name} in {range}"),
        Cond::Holds { name, range } => format!("{name} holds {range}"),
    }
}

impl CedarPolicies {
    /// The edges of every policy that may apply to `contract`, with the other arguments as
    /// in `baseline` (values the contract accepts).
    pub(crate) fn edges(&self, contract: &Contract, baseline: &Map<String, Value>) -> Vec<Edge> {
        let mut out = Vec::new();
        for (id, json) in self.policies_for(contract) {
            let mut found = Vec::new();
            conditions(&json, &mut found);
            for cond in found {
                let values = values_of(&cond, contract, baseline);
                let edge = Edge {
                    policy: id.clone(),
                    argument: cond.argument().to_string(),
                    condition: describe(&cond),
                    values,
                };
                if !edge.values.is_empty() && !out.contains(&edge) {
                    out.push(edge);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(policies: &str, contract: &Contract) -> CedarPolicies {
        let other = contract_of(r#"{"tool": "other", "allowed_roles": ["oncall"], "arg_schema": {"ttl_minutes": "1-240"}}"#);
        CedarPolicies::from_texts(&[("p.cedar".into(), policies.into())], [contract, &other].into_iter(), 0).unwrap()
    }

    fn contract_of(raw: &str) -> Contract {
        crate::contract::parse_file_text(raw, "c.json", false).unwrap().remove(0)
    }

    fn seed() -> Contract {
        contract_of(
            r#"{"tool": "create_firewall_block", "allowed_roles": ["oncall"], "arg_schema": {"ip": "cidr", "ttl_minutes": "1-240"}, "side_effects": "destructive"}"#,
        )
    }

    fn baseline() -> Map<String, Value> {
        json!({"ip": "192.0.2.77/32", "ttl_minutes": 1}).as_object().unwrap().clone()
    }

    #[test]
    fn each_comparison_gives_the_values_on_both_sides_of_its_bound() {
        let c = seed();
        let s = set(
            "@id(\"short\") permit (principal, action == Capgate::Action::\"create_firewall_block\", resource) when { context.args.ttl_minutes <= 60 && 24 <= context.prefixes.ip };",
            &c,
        );
        let edges = s.edges(&c, &baseline());
        assert_eq!(edges.len(), 2, "{edges:#?}");
        assert_eq!(edges[0].condition, "ttl_minutes <= 60");
        assert_eq!(edges[0].values, vec![(json!(60), true), (json!(61), false)]);
        assert_eq!(edges[1].condition, "prefix of ip >= 24");
        assert_eq!(edges[1].values, vec![(json!("192.0.2.0/23"), false), (json!("192.0.2.0/24"), true)]);
    }

    #[test]
    fn a_range_test_gives_its_first_and_last_addresses_and_their_neighbours() {
        let c = seed();
        let s = set(
            "@id(\"internal\") forbid (principal, action == Capgate::Action::\"create_firewall_block\", resource) when { context.args.ip.isInRange(ip(\"10.0.0.0/8\")) || ip(\"10.0.0.0/8\").isInRange(context.args.ip) };",
            &c,
        );
        let edges = s.edges(&c, &baseline());
        assert_eq!(edges.len(), 2, "{edges:#?}");
        let inside: Vec<String> = edges[0]
            .values
            .iter()
            .filter(|v| v.1)
            .map(|v| v.0.as_str().unwrap().to_string())
            .collect();
        let outside: Vec<String> = edges[0]
            .values
            .iter()
            .filter(|v| !v.1)
            .map(|v| v.0.as_str().unwrap().to_string())
            .collect();
        assert_eq!(inside, ["10.0.0.0/32", "10.255.255.255/32", "10.0.0.0/8"]);
        assert_eq!(outside, ["9.255.255.255/32", "11.0.0.0/32", "10.0.0.0/7"]);
        assert_eq!(edges[1].condition, "ip holds 10.0.0.0/8");
        assert_eq!(
            edges[1].values,
            vec![
                (json!("10.0.0.0/8"), true),
                (json!("10.0.0.0/7"), true),
                (json!("10.0.0.0/9"), false),
                (json!("11.0.0.0/32"), false)
            ]
        );
    }

    #[test]
    fn values_the_contract_refuses_and_policies_for_other_contracts_give_no_edge() {
        let c = seed();
        let s = set(
            "@id(\"a\") permit (principal, action, resource) when { context.args.ttl_minutes >= 1 };\n\
             @id(\"b\") permit (principal, action == Capgate::Action::\"other\", resource) when { context.args.ttl_minutes < 9 };",
            &c,
        );
        let edges = s.edges(&c, &baseline());
        assert_eq!(edges.len(), 1, "{edges:#?}");
        assert_eq!(edges[0].values, vec![(json!(1), true)], "0 is outside the contract's 1-240");
    }
}
