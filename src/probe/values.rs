//! Argument values for the probe and the tabletop: for each argument type, values just
//! outside each bound and type and encoding tricks (every one must be refused), and one
//! valid value (for opening approval requests the probe then tries to bypass).
//!
//! INVARIANT (tested below against the validators themselves): every value of
//! [`invalid`] is refused by its spec, and [`valid`], when it returns one, is accepted.

use serde_json::{Value, json};

use crate::contract::{ArgSpec, ArgType, IpFamily};

/// Values a sound gateway refuses for this spec, each with a short label for the report.
pub(crate) fn invalid(spec: &ArgSpec) -> Vec<(&'static str, Value)> {
    let mut out: Vec<(&'static str, Value)> = vec![("null", Value::Null), ("array", json!(["x"])), ("object", json!({"x": 1}))];
    match &spec.ty {
        ArgType::Int { min, max } => {
            if let Some(below) = min.checked_sub(1) {
                out.push(("below minimum", json!(below)));
            }
            if let Some(above) = max.checked_add(1) {
                out.push(("above maximum", json!(above)));
            }
            out.push(("integer as string", json!(min.to_string())));
            out.push(("float", json!(*min as f64 + 0.5)));
            out.push(("exponent form", json!(1e300)));
            out.push(("boolean", json!(true)));
        }
        ArgType::Str { min, max } => {
            if *min > 0 {
                out.push(("shorter than minimum", json!("x".repeat(min - 1))));
            }
            out.push(("longer than maximum", json!("x".repeat(max + 1))));
            out.push(("control character", json!(format!("a\u{0}{}", "b".repeat((*min).max(2))))));
            out.push(("escape sequence", json!(format!("a\u{1b}[31m{}", "b".repeat((*min).max(2))))));
            out.push(("number", json!(7)));
        }
        ArgType::Enum(values) => {
            out.push(("not listed", json!("probe-not-a-listed-value")));
            if let Some(first) = values.first() {
                out.push(("case variant", json!(swap_case(first))));
                out.push(("padded", json!(format!(" {first} "))));
                out.push(("zero-width suffix", json!(format!("{first}\u{200b}"))));
            }
            out.push(("number", json!(1)));
        }
        ArgType::Regex { .. } => {
            out.push(("number", json!(1)));
            out.push(("control character", json!("\u{0}")));
        }
        ArgType::Bool => {
            out.push(("string true", json!("true")));
            out.push(("number 1", json!(1)));
        }
        ArgType::Uuid => {
            out.push(("upper case", json!("67E55044-10B1-426F-9247-BB680E5FE0C8")));
            out.push(("braced", json!("{67e55044-10b1-426f-9247-bb680e5fe0c8}")));
            out.push(("no hyphens", json!("67e5504410b1426f9247bb680e5fe0c8")));
            out.push(("number", json!(1)));
        }
        ArgType::Hostname => {
            out.push(("upper case", json!("DB-1.Example")));
            out.push(("leading hyphen", json!("-db.example")));
            out.push(("trailing dot and space", json!("db.example. ")));
            out.push(("empty label", json!("db..example")));
            out.push(("number", json!(1)));
        }
        ArgType::Ip(family) => {
            out.push(("leading zeros", json!("010.0.0.1")));
            out.push(("hex octet", json!("0x7f.0.0.1")));
            out.push(("integer form", json!("2130706433")));
            out.push(("zone id", json!("fe80::1%eth0")));
            out.push(("upper-case IPv6", json!("2001:DB8::1")));
            out.push(("with prefix", json!("192.0.2.1/32")));
            out.push(("surrounding space", json!(" 192.0.2.1")));
            // IPv4 spelled as IPv6 would pass an IPv4 rule unseen.
            out.push(("IPv4-mapped IPv6", json!("::ffff:10.0.0.1")));
            out.push(("IPv4-mapped IPv6 in hex", json!("::ffff:a00:1")));
            out.push(("NAT64", json!("64:ff9b::a00:1")));
            out.push(("6to4", json!("2002:a00:1::1")));
            match family {
                IpFamily::V4 => out.push(("wrong family", json!("2001:db8::1"))),
                IpFamily::V6 => out.push(("wrong family", json!("192.0.2.1"))),
                IpFamily::Any => {}
            }
            out.push(("number", json!(1)));
        }
        ArgType::Cidr {
            family,
            min_prefix,
            max_prefix,
        } => {
            out.push(("host bits set", json!("10.0.0.1/8")));
            out.push(("leading zeros", json!("010.0.0.0/8")));
            out.push(("no prefix", json!("10.0.0.0")));
            out.push(("prefix too long", json!("10.0.0.0/33")));
            out.push(("upper-case IPv6", json!("2001:DB8::/32")));
            out.push(("surrounding space", json!("10.0.0.0/8 ")));
            out.push(("IPv4-mapped IPv6 network", json!("::ffff:10.0.0.0/104")));
            out.push(("NAT64 network", json!("64:ff9b::/96")));
            out.push(("6to4 network", json!("2002::/16")));
            if *min_prefix > 0 {
                out.push(("prefix below min_prefix", json!(format!("0.0.0.0/{}", min_prefix - 1))));
                // All of IPv4 through the IPv6 space that embeds it.
                out.push(("all of IPv4 as IPv4-mapped IPv6", json!("::ffff:0.0.0.0/96")));
                out.push(("IPv6 network holding all of IPv4", json!("::/64")));
            }
            if let Some(max) = max_prefix
                && *max < 32
            {
                out.push(("prefix above max_prefix", json!(format!("192.0.2.0/{}", max + 1))));
            }
            match family {
                IpFamily::V4 => out.push(("wrong family", json!("2001:db8::/32"))),
                IpFamily::V6 => out.push(("wrong family", json!("10.0.0.0/8"))),
                IpFamily::Any => {}
            }
            out.push(("number", json!(10)));
        }
    }
    // A value that happens to be valid is not an attack; keep only refusals.
    out.retain(|(_, v)| spec.check(v).is_err());
    out
}

/// One value the spec accepts, if the probe can make one (not for `regex`).
pub(crate) fn valid(spec: &ArgSpec) -> Option<Value> {
    let v = match &spec.ty {
        ArgType::Int { min, max } => json!(if *min <= 1 && *max >= 1 { 1 } else { *min }),
        ArgType::Str { min, .. } => json!("p".repeat((*min).max(5))),
        ArgType::Enum(values) => json!(values.first()?),
        ArgType::Regex { .. } => return None,
        ArgType::Bool => json!(false),
        ArgType::Uuid => json!("00000000-0000-4000-8000-00000000c0de"),
        ArgType::Hostname => json!("capgate-probe.invalid"),
        ArgType::Ip(IpFamily::V6) => json!("2001:db8::c0de"),
        ArgType::Ip(_) => json!("192.0.2.77"),
        ArgType::Cidr {
            family: IpFamily::V6,
            min_prefix,
            ..
        } => json!(format!("2001:db8::/{}", (*min_prefix).max(64))),
        ArgType::Cidr {
            min_prefix, max_prefix, ..
        } => {
            // As narrow as the contract allows: one host if it may, else the smallest network.
            let p = max_prefix.unwrap_or(32).max(*min_prefix).min(32);
            let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(192, 0, 2, 77), p).ok()?.trunc();
            json!(net.to_string())
        }
    };
    spec.check(&v).is_ok().then_some(v)
}

fn swap_case(s: &str) -> String {
    let upper = s.to_uppercase();
    if upper != s { upper } else { s.to_lowercase() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn every_generated_attack_is_refused_and_every_valid_value_accepted() {
        for decl in [
            json!("cidr"),
            json!("cidr?"),
            json!({"type": "cidr", "min_prefix": 16}),
            json!({"type": "cidr", "min_prefix": 8, "max_prefix": 24}),
            json!("ip"),
            json!("ipv4"),
            json!("ipv6"),
            json!("1-240"),
            json!("0-10"),
            json!("-5-5"),
            json!("string"),
            json!("string(1..64)"),
            json!("string(3..8)"),
            json!("enum(low|medium|high)"),
            json!("regex([a-z]{3}-[0-9]{2})"),
            json!("bool"),
            json!("hostname"),
            json!("uuid"),
        ] {
            let spec = ArgSpec::parse(&decl).unwrap();
            let bad = invalid(&spec);
            assert!(bad.len() >= 3, "{decl}: too few attacks");
            for (label, v) in &bad {
                assert!(spec.check(v).is_err(), "{decl}: `{label}` {v} was accepted");
            }
            if !matches!(spec.ty, ArgType::Regex { .. }) {
                let good = valid(&spec).unwrap_or_else(|| panic!("{decl}: no valid value"));
                assert!(spec.check(&good).is_ok(), "{decl}: {good}");
            }
        }
    }
}
