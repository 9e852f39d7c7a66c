//! Argument types of a capability contract: parsed once at load into an [`ArgType`], then
//! used to validate every call and to publish the same rule as JSON Schema.
//!
//! INVARIANT: a value is accepted only in its canonical form (the form its own parser prints
//! back), so that a policy written against one spelling cannot be bypassed by another
//! (`010.0.0.1`, `10.0.0.1/8`, `"5"` for `5`, uppercase UUIDs, trailing dots).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde_json::{Value, json};

/// Longest string accepted by a `string` argument that names no bound of its own: contracts
/// stay narrow even when their author forgets a bound.
pub(crate) const DEFAULT_STRING_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpFamily {
    Any,
    V4,
    V6,
}

impl IpFamily {
    fn admits(self, addr: &IpAddr) -> bool {
        match self {
            IpFamily::Any => true,
            IpFamily::V4 => addr.is_ipv4(),
            IpFamily::V6 => addr.is_ipv6(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum ArgType {
    Cidr {
        family: IpFamily,
        min_prefix: u8,
        max_prefix: Option<u8>,
    },
    Ip(IpFamily),
    Int {
        min: i64,
        max: i64,
    },
    Str {
        min: usize,
        max: usize,
    },
    Enum(Vec<String>),
    Regex {
        pattern: String,
        compiled: regex::Regex,
    },
    Bool,
    Hostname,
    Uuid,
}

/// One argument of a contract: its type, whether it may be left out, and whether its value
/// must be kept out of logs.
#[derive(Debug, Clone)]
pub(crate) struct ArgSpec {
    pub(crate) ty: ArgType,
    pub(crate) optional: bool,
    pub(crate) sensitive: bool,
    pub(crate) description: Option<String>,
    /// The `Mcp-Param-{header}` header a 2026-07-28 caller mirrors this argument in
    /// (published as `x-mcp-header`), so that intermediaries can route on it; the gateway
    /// checks that the two agree.
    pub(crate) header: Option<String>,
}

/// Why a type declaration was refused at load time (a config error, never a call error).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub(crate) struct TypeError(pub String);

fn terr(msg: impl Into<String>) -> TypeError {
    TypeError(msg.into())
}

impl ArgSpec {
    /// Parses the compact form (`"cidr"`, `"1-240"`, `"string(1..64)?"`, …) or the object
    /// form (`{type = "cidr", min_prefix = 16}`).
    pub(crate) fn parse(decl: &Value) -> Result<Self, TypeError> {
        match decl {
            Value::String(s) => parse_compact(s),
            Value::Object(map) => parse_object(map),
            _ => Err(terr(
                "an argument type must be a string such as `cidr` or an object such as {type = \"cidr\"}",
            )),
        }
    }

    /// Checks one value against this argument's rule. The message names the rule, never
    /// the value, so it is safe to return for sensitive arguments too.
    pub(crate) fn check(&self, value: &Value) -> Result<(), String> {
        check_type(&self.ty, value)
    }
}

fn parse_compact(raw: &str) -> Result<ArgSpec, TypeError> {
    let (body, optional) = match raw.strip_suffix('?') {
        Some(b) => (b, true),
        None => (raw, false),
    };
    let ty = parse_type_name(body)?;
    Ok(ArgSpec {
        ty,
        optional,
        sensitive: false,
        description: None,
        header: None,
    })
}

fn parse_type_name(body: &str) -> Result<ArgType, TypeError> {
    Ok(match body {
        "cidr" => ArgType::Cidr {
            family: IpFamily::Any,
            min_prefix: 0,
            max_prefix: None,
        },
        "cidr4" => ArgType::Cidr {
            family: IpFamily::V4,
            min_prefix: 0,
            max_prefix: None,
        },
        "cidr6" => ArgType::Cidr {
            family: IpFamily::V6,
            min_prefix: 0,
            max_prefix: None,
        },
        "ip" => ArgType::Ip(IpFamily::Any),
        "ipv4" => ArgType::Ip(IpFamily::V4),
        "ipv6" => ArgType::Ip(IpFamily::V6),
        "string" => ArgType::Str {
            min: 0,
            max: DEFAULT_STRING_MAX,
        },
        "bool" => ArgType::Bool,
        "hostname" => ArgType::Hostname,
        "uuid" => ArgType::Uuid,
        _ => {
            if let Some(inner) = body.strip_prefix("string(").and_then(|r| r.strip_suffix(')')) {
                let (lo, hi) = inner
                    .split_once("..")
                    .ok_or_else(|| terr(format!("`{body}`: write string bounds as `string(MIN..MAX)`")))?;
                let min = parse_usize(lo, body)?;
                let max = parse_usize(hi, body)?;
                str_type(min, max)?
            } else if let Some(inner) = body.strip_prefix("enum(").and_then(|r| r.strip_suffix(')')) {
                enum_type(inner.split('|').map(str::to_string).collect())?
            } else if let Some(inner) = body.strip_prefix("regex(").and_then(|r| r.strip_suffix(')')) {
                regex_type(inner)?
            } else if let Some((lo, hi)) = split_range(body) {
                int_type(lo, hi)?
            } else {
                return Err(terr(format!(
                    "unknown argument type `{body}`: use cidr, ip, ipv4, ipv6, N-M, string, string(MIN..MAX), enum(a|b), regex(...), bool, hostname or uuid"
                )));
            }
        }
    })
}

fn parse_usize(s: &str, ctx: &str) -> Result<usize, TypeError> {
    s.trim().parse().map_err(|_| terr(format!("`{ctx}`: `{s}` is not a whole number")))
}

/// `N-M` with optional minus signs on either bound: `1-240`, `-5-5`, `-10--1`.
fn split_range(body: &str) -> Option<(i64, i64)> {
    let start = usize::from(body.starts_with('-'));
    let idx = body.get(start..)?.find('-')? + start;
    let lo = body.get(..idx)?.parse().ok()?;
    let hi = body.get(idx + 1..)?.parse().ok()?;
    Some((lo, hi))
}

fn int_type(min: i64, max: i64) -> Result<ArgType, TypeError> {
    if min > max {
        return Err(terr(format!(
            "integer range `{min}-{max}` is empty: the lower bound must not exceed the upper"
        )));
    }
    Ok(ArgType::Int { min, max })
}

fn str_type(min: usize, max: usize) -> Result<ArgType, TypeError> {
    if min > max {
        return Err(terr(format!("string bounds `{min}..{max}` are empty")));
    }
    Ok(ArgType::Str { min, max })
}

fn enum_type(values: Vec<String>) -> Result<ArgType, TypeError> {
    if values.is_empty() || values.iter().any(String::is_empty) {
        return Err(terr("an enum needs one or more non-empty values, as `enum(low|high)`"));
    }
    // An accepted value is echoed into records and answers as it was declared; the rule that
    // no accepted string carries a control character holds for enums as for strings.
    if values.iter().any(|v| has_control(v)) {
        return Err(terr("an enum value must not contain control characters"));
    }
    let mut sorted = values.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != values.len() {
        return Err(terr("an enum lists a value twice"));
    }
    Ok(ArgType::Enum(values))
}

fn regex_type(pattern: &str) -> Result<ArgType, TypeError> {
    if pattern.is_empty() || pattern == ".*" || pattern == ".+" || pattern == "(?s).*" {
        return Err(terr(format!(
            "regex `{pattern}` accepts anything: a contract must narrow its arguments"
        )));
    }
    let compiled = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| terr(format!("regex `{pattern}` does not compile: {e}")))?;
    Ok(ArgType::Regex {
        pattern: pattern.to_string(),
        compiled,
    })
}

fn parse_object(map: &serde_json::Map<String, Value>) -> Result<ArgSpec, TypeError> {
    const KNOWN: &[&str] = &[
        "type",
        "optional",
        "sensitive",
        "description",
        "min_prefix",
        "max_prefix",
        "min",
        "max",
        "min_len",
        "max_len",
        "values",
        "pattern",
        "header",
    ];
    if let Some(k) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(terr(format!(
            "unknown key `{k}` in argument type; known keys: {}",
            KNOWN.join(", ")
        )));
    }
    let ty_name = map
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| terr("an argument type object needs `type`, e.g. {type = \"cidr\"}"))?;
    let get_u = |k: &str| -> Result<Option<u64>, TypeError> {
        match map.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| terr(format!("`{k}` must be a non-negative integer"))),
        }
    };
    let get_i = |k: &str| -> Result<Option<i64>, TypeError> {
        match map.get(k) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| terr(format!("`{k}` must be an integer"))),
        }
    };
    let bool_key = |k: &str| -> Result<bool, TypeError> {
        match map.get(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(terr(format!("`{k}` must be true or false"))),
        }
    };
    let ty = match ty_name {
        "cidr" | "cidr4" | "cidr6" => {
            let ArgType::Cidr { family, .. } = parse_type_name(ty_name)? else {
                return Err(terr("unreachable cidr family"));
            };
            let limit = if family == IpFamily::V4 { 32 } else { 128 };
            let to_prefix = |v: Option<u64>| -> Result<Option<u8>, TypeError> {
                v.map(|p| {
                    u8::try_from(p)
                        .ok()
                        .filter(|p| *p <= limit)
                        .ok_or_else(|| terr(format!("prefix bound {p} is over {limit}")))
                })
                .transpose()
            };
            let min_prefix = to_prefix(get_u("min_prefix")?)?.unwrap_or(0);
            let max_prefix = to_prefix(get_u("max_prefix")?)?;
            if max_prefix.is_some_and(|m| m < min_prefix) {
                return Err(terr("`max_prefix` is below `min_prefix`"));
            }
            ArgType::Cidr {
                family,
                min_prefix,
                max_prefix,
            }
        }
        "int" | "integer" => {
            let (Some(min), Some(max)) = (get_i("min")?, get_i("max")?) else {
                return Err(terr("an integer argument needs both `min` and `max`"));
            };
            int_type(min, max)?
        }
        "string" => {
            let min = get_u("min_len")?.unwrap_or(0);
            let max = get_u("max_len")?.unwrap_or(DEFAULT_STRING_MAX as u64);
            str_type(
                usize::try_from(min).unwrap_or(usize::MAX),
                usize::try_from(max).unwrap_or(usize::MAX),
            )?
        }
        "enum" => {
            let values = map
                .get("values")
                .and_then(Value::as_array)
                .ok_or_else(|| terr("an enum argument needs `values = [\"a\", \"b\"]`"))?;
            let values = values
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| terr("enum values must be strings")))
                .collect::<Result<Vec<_>, _>>()?;
            enum_type(values)?
        }
        "regex" => {
            let p = map
                .get("pattern")
                .and_then(Value::as_str)
                .ok_or_else(|| terr("a regex argument needs `pattern`"))?;
            regex_type(p)?
        }
        other => parse_type_name(other)?,
    };
    Ok(ArgSpec {
        ty,
        optional: bool_key("optional")?,
        sensitive: bool_key("sensitive")?,
        description: map.get("description").and_then(Value::as_str).map(str::to_string),
        header: match map.get("header") {
            None => None,
            Some(h) => Some(header_name(h)?),
        },
    })
}

/// A `header` of an argument: the part after `Mcp-Param-`, an HTTP token (RFC 9110 §5.6.2).
fn header_name(v: &Value) -> Result<String, TypeError> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    match v.as_str() {
        Some(h) if !h.is_empty() && h.len() <= 64 && h.chars().all(tchar) => Ok(h.to_string()),
        _ => Err(terr(
            "`header` must be an HTTP header name token of at most 64 characters (the part after `Mcp-Param-`)",
        )),
    }
}

/// Control characters (Unicode `Cc`: U+0000–U+001F, U+007F–U+009F). ASCII text, the usual
/// case, is checked byte-wise, which the compiler vectorizes.
fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        s.chars().any(char::is_control)
    }
}

/// Length in characters (Unicode scalar values), as the contract's bounds count it.
fn char_len(s: &str) -> usize {
    if s.is_ascii() { s.len() } else { s.chars().count() }
}

fn check_type(ty: &ArgType, value: &Value) -> Result<(), String> {
    match ty {
        ArgType::Bool => value.as_bool().map(|_| ()).ok_or_else(|| "must be a JSON boolean".into()),
        ArgType::Int { min, max } => {
            // INVARIANT: JSON integers only. serde_json keeps `5.0` and `5e0` as floats, so
            // `as_i64` refuses them; strings never pass.
            let n = match value {
                Value::Number(n) => n.as_i64().ok_or_else(|| format!("must be a JSON integer from {min} to {max}"))?,
                _ => return Err(format!("must be a JSON integer from {min} to {max}")),
            };
            if n < *min || n > *max {
                return Err(format!("must be from {min} to {max}"));
            }
            Ok(())
        }
        _ => {
            let Value::String(s) = value else {
                return Err("must be a JSON string".into());
            };
            check_str(ty, s)
        }
    }
}

fn check_str(ty: &ArgType, s: &str) -> Result<(), String> {
    match ty {
        ArgType::Str { min, max } => {
            if has_control(s) {
                return Err("must not contain control characters".into());
            }
            let n = char_len(s);
            if n < *min || n > *max {
                return Err(format!("must be {min} to {max} characters long"));
            }
            Ok(())
        }
        ArgType::Enum(values) => {
            if values.iter().any(|v| v == s) {
                Ok(())
            } else {
                Err(format!("must be one of: {}", values.join(", ")))
            }
        }
        ArgType::Regex { pattern, compiled } => {
            if !has_control(s) && compiled.is_match(s) {
                Ok(())
            } else {
                Err(format!("must fully match the pattern `{pattern}`"))
            }
        }
        ArgType::Ip(family) => {
            let addr = IpAddr::from_str(s).map_err(|_| format!("must be {} in canonical form", ip_noun(*family)))?;
            if addr.to_string() != s || !family.admits(&addr) {
                return Err(format!("must be {} in canonical form", ip_noun(*family)));
            }
            if let IpAddr::V6(v6) = addr
                && embedding(&ipnet::Ipv6Net::from(v6)) != Embedded::No
            {
                return Err(IPV4_IN_IPV6.into());
            }
            Ok(())
        }
        ArgType::Cidr {
            family,
            min_prefix,
            max_prefix,
        } => {
            let noun = match family {
                IpFamily::Any => "an IPv4 or IPv6 network",
                IpFamily::V4 => "an IPv4 network",
                IpFamily::V6 => "an IPv6 network",
            };
            let net = IpNet::from_str(s).map_err(|_| format!("must be {noun} in canonical CIDR form, as `192.0.2.0/24`"))?;
            // Canonical: the text round-trips and no host bits are set.
            if net.to_string() != s || net.trunc() != net || !family.admits(&net.addr()) {
                return Err(format!("must be {noun} in canonical CIDR form (network address, no host bits)"));
            }
            // A bound on the prefix means nothing if IPv4 can be named as IPv6: a network
            // inside such space is refused, and one that holds it (and so all of IPv4) is
            // refused wherever the contract bounds the prefix at all.
            if let IpNet::V6(v6) = net {
                match embedding(&v6) {
                    Embedded::Inside => return Err(IPV4_IN_IPV6.into()),
                    Embedded::Holds if *min_prefix > 0 => {
                        return Err(format!(
                            "must not hold all of IPv4 through IPv6 space that embeds it (prefix at least /{min_prefix})"
                        ));
                    }
                    Embedded::Holds | Embedded::No => {}
                }
            }
            let p = net.prefix_len();
            if p < *min_prefix || max_prefix.is_some_and(|m| p > m) {
                return Err(match max_prefix {
                    Some(m) => format!("prefix length must be from /{min_prefix} to /{m}"),
                    None => format!("prefix length must be at least /{min_prefix}"),
                });
            }
            Ok(())
        }
        ArgType::Hostname => {
            if is_hostname(s) {
                Ok(())
            } else {
                Err("must be a lowercase DNS hostname (labels of a-z, 0-9 and inner hyphens, no trailing dot)".into())
            }
        }
        ArgType::Uuid => {
            let ok = uuid::Uuid::try_parse(s).is_ok_and(|u| u.hyphenated().to_string() == s);
            if ok {
                Ok(())
            } else {
                Err("must be a UUID in lowercase hyphenated form".into())
            }
        }
        ArgType::Bool | ArgType::Int { .. } => Err("internal: not a string type".into()),
    }
}

const IPV4_IN_IPV6: &str =
    "must not name IPv4 space through IPv6 (IPv4-mapped, IPv4-compatible, 6to4, NAT64 or Teredo): write the IPv4 form";

/// IPv6 ranges whose addresses carry an IPv4 address: IPv4-mapped (`::ffff:0:0/96`), SIIT
/// (`::ffff:0:0:0/96`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4 (`2002::/16`), Teredo
/// (`2001::/32`), and IPv4-compatible (`::/96`, but for `::` and `::1`).
const EMBEDDING: [(u128, u8); 6] = [
    (0xffff_0000_0000, 96),
    (0xffff_0000_0000_0000, 96),
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96),
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48),
    (0x2002_0000_0000_0000_0000_0000_0000_0000, 16),
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 32),
];

/// How a network (an address is a /128) meets IPv6 space that embeds IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedded {
    /// Not at all.
    No,
    /// It lies inside: it is IPv4 spelled as IPv6.
    Inside,
    /// It holds such a range whole, and with it every IPv4 address.
    Holds,
}

fn embedding(net: &ipnet::Ipv6Net) -> Embedded {
    let ranges = EMBEDDING
        .iter()
        .filter_map(|(first, len)| ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(*first), *len).ok());
    let compat = ipnet::Ipv6Net::new(std::net::Ipv6Addr::UNSPECIFIED, 96).ok();
    // `::` and `::1` are not IPv4.
    let not_ipv4 = ipnet::Ipv6Net::new(std::net::Ipv6Addr::UNSPECIFIED, 127).is_ok_and(|r| r.contains(net));
    let mut held = false;
    for range in ranges.chain(compat.filter(|_| !not_ipv4)) {
        if range.contains(net) {
            return Embedded::Inside;
        }
        held |= net.contains(&range);
    }
    if held { Embedded::Holds } else { Embedded::No }
}

fn ip_noun(f: IpFamily) -> &'static str {
    match f {
        IpFamily::Any => "an IPv4 or IPv6 address",
        IpFamily::V4 => "an IPv4 address",
        IpFamily::V6 => "an IPv6 address",
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The JSON Schema that publishes the same rule to clients. It is as narrow as JSON Schema
/// can say; the gateway's own check stays the authority (canonical forms are beyond it).
pub(crate) fn json_schema(spec: &ArgSpec) -> Value {
    let mut schema = match &spec.ty {
        ArgType::Bool => json!({"type": "boolean"}),
        ArgType::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        ArgType::Str { min, max } => {
            json!({"type": "string", "minLength": min, "maxLength": max, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
        }
        ArgType::Enum(values) => json!({"type": "string", "enum": values}),
        ArgType::Regex { pattern, .. } => json!({"type": "string", "pattern": format!("^(?:{pattern})$")}),
        ArgType::Ip(IpFamily::V4) => json!({"type": "string", "format": "ipv4"}),
        ArgType::Ip(IpFamily::V6) => json!({"type": "string", "format": "ipv6"}),
        ArgType::Ip(IpFamily::Any) => json!({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
        ArgType::Cidr {
            family,
            min_prefix,
            max_prefix,
        } => {
            let mut d = format!(
                "{} network in canonical CIDR form",
                match family {
                    IpFamily::Any => "IPv4 or IPv6",
                    IpFamily::V4 => "IPv4",
                    IpFamily::V6 => "IPv6",
                }
            );
            if *min_prefix > 0 || max_prefix.is_some() {
                d.push_str(&format!(
                    ", prefix /{min_prefix} to /{}",
                    max_prefix.map_or_else(|| "max".to_string(), |m| m.to_string())
                ));
            }
            json!({"type": "string", "pattern": "^[0-9a-f:.]+/[0-9]{1,3}$", "description": d})
        }
        ArgType::Hostname => {
            json!({"type": "string", "format": "hostname", "maxLength": 253, "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"})
        }
        ArgType::Uuid => {
            json!({"type": "string", "format": "uuid", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"})
        }
    };
    if let Some(obj) = schema.as_object_mut() {
        if let Some(d) = &spec.description {
            obj.insert("description".into(), Value::String(d.clone()));
        }
        if let Some(h) = &spec.header {
            obj.insert("x-mcp-header".into(), Value::String(h.clone()));
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(s: &str) -> ArgSpec {
        ArgSpec::parse(&json!(s)).unwrap()
    }

    #[test]
    fn seed_types_parse() {
        assert!(matches!(spec("cidr").ty, ArgType::Cidr { .. }));
        assert!(matches!(spec("1-240").ty, ArgType::Int { min: 1, max: 240 }));
        assert!(matches!(spec("-5-5").ty, ArgType::Int { min: -5, max: 5 }));
        assert!(matches!(spec("-10--1").ty, ArgType::Int { min: -10, max: -1 }));
        assert!(spec("cidr?").optional);
        assert!(matches!(spec("string(1..64)").ty, ArgType::Str { min: 1, max: 64 }));
    }

    #[test]
    fn bad_declarations_are_refused() {
        for bad in [
            "",
            "cidrr",
            "240-1",
            "string(5..1)",
            "enum()",
            "enum(a|a)",
            "regex(.*)",
            "regex([)",
            "string(a..b)",
        ] {
            assert!(ArgSpec::parse(&json!(bad)).is_err(), "{bad} should be refused");
        }
        assert!(ArgSpec::parse(&json!({"type": "cidr", "min_prefix": 33})).is_ok(), "v6 allows 33");
        assert!(ArgSpec::parse(&json!({"type": "cidr4", "min_prefix": 33})).is_err());
        assert!(ArgSpec::parse(&json!({"type": "cidr", "bogus": 1})).is_err());
        assert!(ArgSpec::parse(&json!({"type": "int", "min": 1})).is_err());
        assert!(ArgSpec::parse(&json!(5)).is_err());
    }

    #[test]
    fn ipv4_spelled_as_ipv6_is_refused_and_bounds_hold_for_what_holds_it() {
        let plain = spec("cidr");
        let bounded = ArgSpec::parse(&json!({"type": "cidr", "min_prefix": 16})).unwrap();
        for inside in [
            "::ffff:0.0.0.0/96",
            "::ffff:10.0.0.1/128",
            "::ffff:0:0:0/96",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "2002::/16",
            "2002:a00::/24",
            "2001::/32",
            "::/96",
            "::2/127",
        ] {
            assert!(plain.check(&json!(inside)).is_err(), "{inside}");
            assert!(bounded.check(&json!(inside)).is_err(), "{inside}");
        }
        for holds in ["::/64", "::/0", "2000::/3", "::/95"] {
            assert!(bounded.check(&json!(holds)).is_err(), "{holds}");
        }
        for fine in ["::1/128", "::/127", "2001:db8::/32", "2a00::/16", "fe80::/64"] {
            assert!(bounded.check(&json!(fine)).is_ok(), "{fine}");
        }
        assert!(plain.check(&json!("::/0")).is_ok(), "no bound: all of IPv6 may be named");
        let ip = spec("ip");
        let v6 = spec("ipv6");
        for addr in ["::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1", "::10.0.0.1", "2001::1"] {
            assert!(ip.check(&json!(addr)).is_err(), "{addr}");
            assert!(v6.check(&json!(addr)).is_err(), "{addr}");
        }
        for addr in ["::1", "::", "2001:db8::1"] {
            assert!(v6.check(&json!(addr)).is_ok(), "{addr}");
        }
    }

    #[test]
    fn cidr_canonical_only() {
        let s = spec("cidr");
        for ok in ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "0.0.0.0/0", "::/0"] {
            assert!(s.check(&json!(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.1/8",
            "010.0.0.0/8",
            "10.0.0.0/33",
            "10.0.0.0",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "2001:DB8::/32",
            "2001:0db8::/32",
            "10.0.0.0/08",
            "0x0a.0.0.0/8",
            "fe80::%eth0/64",
            "10.0.0.0/+8",
            "::ffff:10.0.0.0/104x",
        ] {
            assert!(s.check(&json!(bad)).is_err(), "{bad}");
        }
        assert!(s.check(&json!(10)).is_err());
        let bounded = ArgSpec::parse(&json!({"type": "cidr", "min_prefix": 16})).unwrap();
        assert!(bounded.check(&json!("0.0.0.0/0")).is_err());
        assert!(bounded.check(&json!("10.1.0.0/16")).is_ok());
    }

    #[test]
    fn ints_are_json_integers_only() {
        let s = spec("1-240");
        assert!(s.check(&json!(1)).is_ok());
        assert!(s.check(&json!(240)).is_ok());
        for bad in [
            json!(0),
            json!(241),
            json!("5"),
            json!(5.0),
            json!(5.5),
            json!(null),
            json!(true),
            json!(-1),
            json!(u64::MAX),
        ] {
            assert!(s.check(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strings_refuse_control_chars_and_count_chars() {
        let s = spec("string(1..3)");
        assert!(s.check(&json!("äöü")).is_ok());
        assert!(s.check(&json!("")).is_err());
        assert!(s.check(&json!("abcd")).is_err());
        assert!(s.check(&json!("a\u{1b}")).is_err());
        assert!(s.check(&json!("a\n")).is_err());
    }

    #[test]
    fn others() {
        assert!(spec("ipv4").check(&json!("192.0.2.1")).is_ok());
        assert!(spec("ipv4").check(&json!("192.0.2.01")).is_err());
        assert!(spec("ipv4").check(&json!("::1")).is_err());
        assert!(spec("ipv6").check(&json!("::1")).is_ok());
        assert!(spec("ipv6").check(&json!("0::1")).is_err());
        assert!(spec("ip").check(&json!("fe80::1%1")).is_err());
        assert!(spec("enum(low|high)").check(&json!("low")).is_ok());
        assert!(spec("enum(low|high)").check(&json!("LOW")).is_err());
        assert!(spec("regex([a-z]+-[0-9]+)").check(&json!("inc-42")).is_ok());
        assert!(spec("regex([a-z]+-[0-9]+)").check(&json!("inc-42; rm -rf")).is_err());
        assert!(spec("hostname").check(&json!("db-1.prod.example")).is_ok());
        for bad in ["DB.example", "a..b", "-a.b", "a.b.", "a_b.c", ""] {
            assert!(spec("hostname").check(&json!(bad)).is_err(), "{bad}");
        }
        assert!(spec("uuid").check(&json!("67e55044-10b1-426f-9247-bb680e5fe0c8")).is_ok());
        assert!(spec("uuid").check(&json!("67E55044-10B1-426F-9247-BB680E5FE0C8")).is_err());
        assert!(spec("uuid").check(&json!("67e5504410b1426f9247bb680e5fe0c8")).is_err());
        assert!(spec("bool").check(&json!(true)).is_ok());
        assert!(spec("bool").check(&json!("true")).is_err());
    }

    // Property tests compare against a simple model: a value built in canonical form is
    // accepted, and a mutation of it that changes its spelling is refused.
    proptest! {
        #[test]
        fn canonical_ipv4_cidrs_accepted_and_mutations_refused(a in any::<u32>(), p in 0u8..=32) {
            let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(a), p).unwrap().trunc();
            let text = net.to_string();
            let s = spec("cidr");
            let spaced = format!(" {text}");
            let zero = format!("0{text}");
            let long_prefix = format!("{}/{}", net.addr(), u32::from(p) + 33);
            prop_assert!(s.check(&json!(text)).is_ok());
            prop_assert!(s.check(&json!(spaced)).is_err());
            prop_assert!(s.check(&json!(zero)).is_err());
            prop_assert!(s.check(&json!(long_prefix)).is_err());
            if p < 32 {
                let host = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(u32::from(net.addr()) | 1), p).unwrap();
                prop_assert!(s.check(&json!(host.to_string())).is_err());
            }
        }

        #[test]
        fn canonical_ipv6_accepted_and_uppercase_refused(a in any::<u128>()) {
            let addr = std::net::Ipv6Addr::from(a);
            let text = addr.to_string();
            prop_assert!(spec("ipv6").check(&json!(text)).is_ok());
            prop_assert!(spec("ipv4").check(&json!(text)).is_err());
            let upper = text.to_uppercase();
            if upper != text {
                prop_assert!(spec("ipv6").check(&json!(upper)).is_err());
            }
        }

        #[test]
        fn int_range_matches_model(lo in -1000i64..1000, span in 0i64..1000, x in -3000i64..3000) {
            let hi = lo + span;
            let s = ArgSpec::parse(&json!(format!("{lo}-{hi}"))).unwrap();
            prop_assert_eq!(s.check(&json!(x)).is_ok(), lo <= x && x <= hi);
            prop_assert!(s.check(&json!(x.to_string())).is_err());
            prop_assert!(s.check(&json!(x as f64 + 0.5)).is_err());
        }

        #[test]
        fn string_bounds_match_model(min in 0usize..8, extra in 0usize..8, text in "\\PC{0,20}") {
            let max = min + extra;
            let s = ArgSpec::parse(&json!(format!("string({min}..{max})"))).unwrap();
            let n = text.chars().count();
            prop_assert_eq!(s.check(&json!(text)).is_ok(), n >= min && n <= max);
        }

        /// Control characters, ASCII and C1, in ASCII and non-ASCII text: the byte-wise fast
        /// path answers as the character-wise model does.
        #[test]
        fn string_controls_match_model(text in "[\\x00-\\x7f\\u{80}-\\u{a0}é€]{0,12}", max in 0usize..14) {
            let s = ArgSpec::parse(&json!(format!("string(0..{max})"))).unwrap();
            let model = !text.chars().any(char::is_control) && text.chars().count() <= max;
            prop_assert_eq!(s.check(&json!(text)).is_ok(), model);
        }

        #[test]
        fn any_declaration_and_any_value_never_panic(decl in "\\PC{0,24}", value in "\\PC{0,24}") {
            if let Ok(s) = ArgSpec::parse(&json!(decl)) {
                let _ = s.check(&json!(value));
                let _ = json_schema(&s);
            }
        }
    }
}
