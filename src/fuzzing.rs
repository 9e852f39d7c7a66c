//! Invariant checks for the cargo-fuzz targets in `fuzz/`: each target is one call here. A
//! violated invariant panics, which is what the fuzzer reports.
#![allow(clippy::panic, reason = "a panic is how a fuzz target reports a broken invariant")]

use serde_json::Value;

/// Contract loader: never panics; a contract that loads publishes a closed schema whose
/// required names are all declared.
pub fn contract_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for is_toml in [false, true] {
        if let Ok(contracts) = crate::contract::parse_file_text(text, "fuzz", is_toml) {
            for c in contracts {
                if c.published.get("additionalProperties") != Some(&Value::Bool(false)) {
                    panic!("contract `{}` published an open schema", c.tool);
                }
                if c.allowed_roles.is_empty() {
                    panic!("contract `{}` loaded without roles", c.tool);
                }
            }
        }
    }
}

/// Argument validators: a declaration and a value from the input; never panics, and an
/// accepted string is in canonical form (no surrounding white space, no control characters).
pub fn arg_types(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (decl, value) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(spec) = crate::contract::ArgSpec::parse(&Value::String(decl.to_string())) else {
        return;
    };
    let candidates = [Value::String(value.to_string()), serde_json::from_str(value).unwrap_or(Value::Null)];
    for v in candidates {
        if spec.check(&v).is_ok()
            && let Value::String(s) = &v
            && !matches!(spec.ty, crate::contract::ArgType::Regex { .. })
            && (s.trim() != s || s.chars().any(char::is_control))
        {
            panic!("accepted a non-canonical value for `{decl}`");
        }
    }
}

/// Request-body guard: never accepts what serde_json refuses, never refuses valid JSON
/// without duplicate keys.
pub fn request_body(data: &[u8]) {
    let ours = crate::server::jsonguard::check_body(data);
    let serde: Result<Value, _> = serde_json::from_slice(data);
    match (&ours, &serde) {
        (Ok(_), Err(_)) => panic!("the guard accepted invalid JSON"),
        (Err(crate::server::jsonguard::BodyError::Syntax), Ok(_)) => panic!("the guard refused valid JSON as malformed"),
        _ => {}
    }
}
