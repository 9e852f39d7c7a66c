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

/// Argument validators: a declaration and a value from the input; never panics, no accepted
/// string carries a control character, and an accepted address, network, host name or UUID
/// is in canonical form (no surrounding white space). Free text (`string`) may begin or end
/// with a space: SPEC §3 bounds its length and forbids control characters, nothing more.
pub fn arg_types(data: &[u8]) {
    use crate::contract::ArgType;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (decl, value) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(spec) = crate::contract::ArgSpec::parse(&Value::String(decl.to_string())) else {
        return;
    };
    let candidates = [Value::String(value.to_string()), serde_json::from_str(value).unwrap_or(Value::Null)];
    for v in candidates {
        if spec.check(&v).is_ok()
            && let Value::String(s) = &v
        {
            if s.chars().any(char::is_control) {
                panic!("`{decl}` accepted a control character");
            }
            let canonical_form = matches!(spec.ty, ArgType::Ip(_) | ArgType::Cidr { .. } | ArgType::Hostname | ArgType::Uuid);
            if canonical_form && s.trim() != s {
                panic!("accepted a non-canonical value for `{decl}`");
            }
            if let Some(why) = ipv4_through_ipv6(&spec.ty, s) {
                panic!("`{decl}` accepted `{s}`: {why}");
            }
        }
    }
}

/// Why an accepted `ip` or `cidr` value names IPv4 space through IPv6, if it does: checked
/// here against the address ranges directly, not through the validator's own table.
fn ipv4_through_ipv6(ty: &crate::contract::ArgType, s: &str) -> Option<&'static str> {
    use std::net::Ipv6Addr;
    use std::str::FromStr;
    // Which of the ranges that embed IPv4 an address is in: IPv4-mapped, SIIT, NAT64 (two),
    // 6to4, Teredo, IPv4-compatible. Each range is an interval, so a network lies inside one
    // exactly when its first and last addresses are in the same one (a network from one range
    // to the next holds both and the space between them: not inside either).
    let range_of = |a: &Ipv6Addr| -> Option<u8> {
        let seg = a.segments();
        if a.to_ipv4_mapped().is_some() {
            Some(0)
        } else if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
            Some(1)
        } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            Some(2)
        } else if seg[..3] == [0x64, 0xff9b, 1] {
            Some(3)
        } else if seg[0] == 0x2002 {
            Some(4)
        } else if seg[..2] == [0x2001, 0] {
            Some(5)
        } else if seg[..6] == [0; 6] && u128::from(*a) > 1 {
            Some(6)
        } else {
            None
        }
    };
    match ty {
        crate::contract::ArgType::Ip(_) => {
            let a = Ipv6Addr::from_str(s).ok()?;
            range_of(&a).is_some().then_some("an IPv6 address that carries an IPv4 address")
        }
        crate::contract::ArgType::Cidr { min_prefix, .. } => {
            let net = ipnet::Ipv6Net::from_str(s).ok()?;
            let first = range_of(&net.network());
            if first.is_some() && first == range_of(&net.broadcast()) {
                return Some("an IPv6 network inside space that carries IPv4 addresses");
            }
            // Holding the IPv4-mapped range holds all of IPv4: refused wherever the prefix is
            // bounded.
            let mapped = Ipv6Addr::from_str("::ffff:0:0").ok()?;
            (*min_prefix > 0 && net.prefix_len() <= 96 && net.contains(&mapped))
                .then_some("an IPv6 network that holds all of IPv4 under a prefix bound")
        }
        _ => None,
    }
}

/// Request-body guard and JSON-RPC envelope: the guard never accepts what serde_json
/// refuses, never refuses valid JSON without duplicate keys; what the envelope passes is one
/// object with `jsonrpc` "2.0", an id that is a string or an integer, a method spelled
/// exactly as MCP spells it, and params of that method's shape; the facts a record takes
/// from any body are bounded and printable.
pub fn request_body(data: &[u8]) {
    use crate::server::envelope::{Kind, check, facts};
    let ours = crate::server::jsonguard::check_body(data);
    let serde: Result<Value, _> = serde_json::from_slice(data);
    match (&ours, &serde) {
        (Ok(_), Err(_)) => panic!("the guard accepted invalid JSON"),
        (Err(crate::server::jsonguard::BodyError::Syntax), Ok(_)) => panic!("the guard refused valid JSON as malformed"),
        // What the guard builds in its one pass is what serde_json reads: the pipeline
        // sees the body the client sent, nothing else.
        (Ok(a), Ok(b)) if a != b => panic!("the guard read another value than serde_json"),
        _ => {}
    }
    let Ok(v) = ours else { return };
    let f = facts(&v);
    for text in [&f.method, &f.tool, &f.request_id].into_iter().flatten() {
        if text.len() > 4 * 128 || text.chars().any(char::is_control) {
            panic!("a record would carry an unbounded or unprintable fact: {text:?}");
        }
    }
    let Ok(kind) = check(&v) else { return };
    let Some(msg) = v.as_object() else {
        panic!("the envelope passed a non-object")
    };
    if msg.get("jsonrpc") != Some(&Value::from("2.0")) {
        panic!("the envelope passed a message without jsonrpc 2.0");
    }
    if let Some(id) = msg.get("id")
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        panic!("the envelope passed an id of type {id}");
    }
    let method = match kind {
        Kind::Response => return,
        Kind::Request(m) | Kind::Notification(m) => m,
    };
    const SERVED: [&str; 8] = [
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    ];
    if !SERVED.contains(&method) || msg.get("method").and_then(Value::as_str) != Some(method) {
        panic!("the envelope passed method {method:?}");
    }
    if method == "tools/call" {
        let name_ok = v.pointer("/params/name").is_some_and(Value::is_string);
        let args_ok = v.pointer("/params/arguments").is_none_or(Value::is_object);
        if !(name_ok && args_ok) {
            panic!("the envelope passed tools/call params of the wrong shape");
        }
    }
}

struct TokenKit {
    rt: tokio::runtime::Runtime,
    authn: crate::pipeline::authn::Authenticator,
    key: ed25519_dalek::SigningKey,
    kid: String,
}

fn token_kit() -> &'static TokenKit {
    static KIT: std::sync::OnceLock<TokenKit> = std::sync::OnceLock::new();
    KIT.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let kid = crate::keys::kid_of(&key);
        let jwks = crate::keys::jwks_of(&key).to_string();
        let authn = crate::pipeline::authn::Authenticator::offline("fuzz", "https://fuzz.test/mcp", "https://idp.fuzz.test", &jwks)
            .unwrap_or_else(|e| panic!("fuzz setup: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("fuzz setup: {e}"));
        TokenKit { rt, authn, key, kid }
    })
}

/// Token verification. With a leading 0 byte the rest is a raw token: never panics, and is
/// never accepted unless it is signed by the trusted key. With a leading 2 byte the rest is
/// JWS header members the fuzzer controls, over valid claims signed with the trusted key:
/// accepted only with `alg` EdDSA, the trusted `kid` and no `crit`. Otherwise the input is a
/// claims object the fuzzer controls, signed with the trusted key: accepted only when `iss`,
/// `aud`, `exp`, `nbf` and `sub` are as the environment requires, and never once its
/// signature is altered.
pub fn token(data: &[u8]) {
    let kit = token_kit();
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if mode == 0 {
        if let Ok(a) = kit.rt.block_on(kit.authn.verify(text)) {
            // Only a token this harness signed can pass, and the fuzzer has no key.
            panic!("an unsigned input was accepted as `{}`", a.principal().sub);
        }
        return;
    }
    if mode == 2 {
        let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), Value::from("EdDSA"));
        header.insert("typ".into(), Value::from("JWT"));
        header.insert("kid".into(), Value::from(kit.kid.as_str()));
        header.extend(extra);
        let header = Value::Object(header);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = serde_json::json!({"iss": "https://idp.fuzz.test", "aud": "https://fuzz.test/mcp", "sub": "a", "exp": now + 600});
        let token = signed_with_header(&kit.key, &header, &claims);
        if kit.rt.block_on(kit.authn.verify(&token)).is_ok() {
            let alg_ok = header.get("alg") == Some(&Value::from("EdDSA"));
            let kid_ok = header.get("kid") == Some(&Value::from(kit.kid.as_str()));
            if !alg_ok || !kid_ok || header.get("crit").is_some() {
                panic!("accepted a token with header {header}");
            }
        }
        return;
    }
    let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Ok(token) = crate::keys::sign_jwt(&kit.key, &kit.kid, &Value::Object(claims.clone())) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if kit.rt.block_on(kit.authn.verify(&token)).is_ok() {
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == "https://fuzz.test/mcp",
            Some(Value::Array(a)) => a.iter().any(|x| x == "https://fuzz.test/mcp"),
            _ => false,
        };
        let exp_ok = claims.get("exp").and_then(Value::as_f64).is_some_and(|e| e + 60.0 >= now as f64);
        let nbf_ok = claims.get("nbf").and_then(Value::as_f64).is_none_or(|n| n <= now as f64 + 60.0);
        let iss_ok = claims.get("iss") == Some(&Value::String("https://idp.fuzz.test".into()));
        let sub_ok = claims.get("sub").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        if !(aud_ok && exp_ok && nbf_ok && iss_ok && sub_ok) {
            panic!("accepted claims that break a rule: {}", Value::Object(claims));
        }
        // A character well inside the signature, so that padding bits are not all it changes.
        let at = token.len().saturating_sub(10);
        let mut tampered: Vec<char> = token.chars().collect();
        if let Some(c) = tampered.get_mut(at) {
            *c = if *c == 'A' { 'B' } else { 'A' };
        }
        let tampered: String = tampered.into_iter().collect();
        if kit.rt.block_on(kit.authn.verify(&tampered)).is_ok() {
            panic!("a token with an altered signature was accepted");
        }
    }
}

fn signed_with_header(key: &ed25519_dalek::SigningKey, header: &Value, claims: &Value) -> String {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

/// An upstream's answer, as a JSON body and as one SSE event's data: never panics, and a
/// result is taken only from a JSON-RPC 2.0 message that carries exactly the request's ID, a
/// `result` and no `error` (checked against serde_json's own reading of the same text).
pub fn upstream_answer(data: &[u8]) {
    use rmcp::model::{CallToolResult, RequestId};
    let id = RequestId::Number(7);
    let model: Option<Value> = serde_json::from_slice(data).ok();
    let answers = |m: &Value| {
        m.get("jsonrpc") == Some(&Value::from("2.0"))
            && m.get("id") == Some(&Value::from(7))
            && m.get("result").is_some_and(|r| !r.is_null())
            && m.get("error").is_none_or(Value::is_null)
    };
    if crate::backend::http_session::answer_in_body::<CallToolResult>(data, &id).is_ok() && !model.as_ref().is_some_and(answers) {
        panic!("a JSON body that does not answer the request was taken as its result");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(Ok(_)) = crate::backend::http_session::answer_in_event::<CallToolResult>(text, &id)
        && !model.as_ref().is_some_and(answers)
    {
        panic!("an event that does not answer the request was taken as its result");
    }
    // The result read as a 2026-07-28 upstream's: a round of input only when it says
    // `input_required`, with a string state (if any) and at most the bounded number of asks.
    if let Some(result) = model.as_ref().and_then(|m| m.get("result"))
        && let Ok(Some(asked)) = crate::backend::stateless::InputRequired::of(result)
    {
        assert_eq!(result["resultType"], "input_required");
        assert!(asked.requests.len() <= crate::backend::stateless::MAX_INPUTS && (asked.state.is_some() || !asked.requests.is_empty()));
        assert_eq!(asked.state.as_deref(), result.get("requestState").and_then(Value::as_str));
    }
}

/// The audit store setting: never panics; it reads or is refused with a reason; a
/// PostgreSQL store has a schema that is safe as an SQL identifier and a pool; a password
/// written into the URL is refused and never repeated.
pub fn store_setting(data: &[u8]) {
    use crate::config::store::{StoreLocation, parse_store, valid_schema};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (loc, problems) = parse_store(Some(text), None, false);
    if loc.is_none() && problems.is_empty() {
        panic!("`{text}` refused without a reason");
    }
    if let Some(StoreLocation::Postgres(pg)) = &loc
        && (!valid_schema(&pg.schema) || pg.pool_size == 0)
    {
        panic!("`{text}` read as {pg:?}");
    }
    // Only a postgres URL has credentials; what follows `sqlite://` is a path, even one a
    // URL parser would read a user and password out of.
    let postgres = text.starts_with("postgres://") || text.starts_with("postgresql://");
    let password = url::Url::parse(text)
        .ok()
        .filter(|_| postgres)
        .and_then(|u| u.password().map(str::to_string));
    if let Some(password) = password.filter(|p| p.len() >= 6) {
        if loc.is_some() {
            panic!("`{text}`: a URL with a password was taken");
        }
        let shown = format!("{problems:?}");
        if shown.contains(&password) {
            panic!("a problem repeats the password: {shown}");
        }
    }
}

/// Resource URI templates and the URIs callers send: a template line, then a URI. Never
/// panics; a URI that matches expands back, from the decoded values, to a URI that matches
/// with the same values; every value a match yields is decoded text without the template's
/// literal text spilling into it.
pub fn resource_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, uri) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(t) = crate::contract::UriTemplate::parse(template) else {
        return;
    };
    let Ok(values) = t.matches(uri) else { return };
    if values.len() != t.vars().count() {
        panic!("`{uri}` against `{template}`: {values:?} does not name every variable");
    }
    let Some(again) = t.expand(&values) else {
        panic!("`{template}`: the values of `{uri}` do not expand");
    };
    match t.matches(&again) {
        Ok(v) if v == values => {}
        other => panic!("`{template}`: `{uri}` → {values:?} → `{again}` → {other:?}"),
    }
}

/// A retry's `inputResponses` against a round that asked an elicitation (`a`), a sampling
/// (`b`) and roots (`c`), and a sealed state's opened payload: never panics; only answers
/// to asked keys go upstream, each a well-formed result of its kind that reads back as
/// such; every other key is dropped, and none is lost.
pub fn input_responses(data: &[u8]) {
    use crate::contract::ClientAsk;
    use crate::pipeline::rounds::{InputState, Sealed, resume};
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = Sealed::read(value.clone());
    let Ok(given) = serde_json::from_value::<rmcp::model::InputResponses>(value) else {
        return;
    };
    let asked = [("a", ClientAsk::Elicitation), ("b", ClientAsk::Sampling), ("c", ClientAsk::Roots)];
    let state = InputState::asking(asked.iter().map(|(k, a)| (k.to_string(), *a)).collect());
    let Ok(r) = resume(state, Some(given.clone())) else {
        return;
    };
    assert_eq!(r.resume.answers.len() + r.dropped.len(), given.len(), "an answer was lost");
    for (key, answer) in &r.resume.answers {
        let kind = asked.iter().find(|(k, _)| k == key).map(|(_, a)| *a);
        let reads = match kind {
            Some(ClientAsk::Elicitation) => serde_json::from_value::<rmcp::model::ElicitResult>(answer.clone()).is_ok(),
            #[allow(deprecated, reason = "sampling is what a round may ask")]
            Some(ClientAsk::Sampling) => serde_json::from_value::<rmcp::model::CreateMessageResult>(answer.clone()).is_ok(),
            #[allow(deprecated, reason = "roots is what a round may ask")]
            Some(ClientAsk::Roots) => serde_json::from_value::<rmcp::model::ListRootsResult>(answer.clone()).is_ok(),
            None => panic!("an answer to `{key}`, which was not asked, would go upstream"),
        };
        assert!(reads, "the answer to `{key}` does not read back as its kind's result");
    }
    assert!(
        r.dropped.iter().all(|k| !asked.iter().any(|(a, _)| a == k)),
        "an asked key was dropped"
    );
}

/// Policy loader: a `.cedar` file checked against the seed contract's schema. Never panics;
/// a refused file has every problem placed in it; a loaded set decides every call
/// deterministically, allows only by permits it holds (and names them), and the edges the
/// probe derives from it are values the contract accepts.
pub fn policy_file(data: &[u8]) {
    use crate::identity::Principal;
    use crate::policy::CallFacts;
    use crate::policy::cedar::CedarPolicies;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut contracts) = crate::contract::parse_file_text(
        r#"{"tool": "create_firewall_block", "allowed_roles": ["oncall", "incident_commander"], "arg_schema": {"ip": "cidr", "ttl_minutes": "1-240"}, "side_effects": "destructive"}"#,
        "seed.json",
        false,
    ) else {
        panic!("the seed contract does not load");
    };
    let contract = contracts.remove(0);
    let texts = [("fuzz.cedar".to_string(), text.to_string())];
    let set = match CedarPolicies::from_texts(&texts, std::iter::once(&contract), 60) {
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused set names no problem");
            for p in &problems {
                assert!(
                    p.at.starts_with("fuzz.cedar"),
                    "a problem placed outside the file: {} {}",
                    p.at,
                    p.message
                );
            }
            return;
        }
        Ok(set) => set,
    };
    let permits: std::collections::BTreeSet<String> = set
        .policies_for(&contract)
        .into_iter()
        .filter(|(_, json)| json.get("effect").and_then(Value::as_str) == Some("permit"))
        .map(|(id, _)| id)
        .collect();
    let baseline = serde_json::json!({"ip": "192.0.2.77/32", "ttl_minutes": 1});
    let Value::Object(baseline) = baseline else { return };
    let mut calls = vec![baseline.clone()];
    for edge in set.edges(&contract, &baseline) {
        for (value, _) in &edge.values {
            let spec = contract
                .args
                .get(&edge.argument)
                .unwrap_or_else(|| panic!("an edge of an unknown argument `{}`", edge.argument));
            assert!(spec.check(value).is_ok(), "an edge value the contract refuses: {value}");
            let mut args = baseline.clone();
            args.insert(edge.argument.clone(), value.clone());
            calls.push(args);
        }
    }
    for roles in [vec![], vec!["oncall".to_string()], vec!["incident_commander".to_string()]] {
        let caller = Principal {
            auth_method: "jwt".into(),
            cert: None,
            iss: "https://idp.fuzz.test".into(),
            roles,
            sub: "fuzz".into(),
            token_id: None,
        };
        for args in &calls {
            let facts = CallFacts {
                env: "fuzz",
                caller: &caller,
                contract: &contract,
                upstream: "demo",
                args,
            };
            let d = set.decide(&facts, 1_767_225_600);
            assert_eq!(d, set.decide(&facts, 1_767_225_600), "the same call decided twice differently");
            if d.allowed() {
                assert!(!d.reasons().is_empty(), "an allow that names no permit");
                for r in d.reasons() {
                    assert!(
                        permits.contains(r.as_ref()),
                        "allowed by `{r}`, which is not a permit of this contract"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_target_holds_on_its_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/policy_file");
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            super::policy_file(&std::fs::read(entry.unwrap().path()).unwrap());
            seeds += 1;
        }
        assert!(seeds >= 4);
        super::policy_file(b"permit (principal, action, resource) when { context.args.ttl_minutes > 9223372036854775807 };");
    }

    #[test]
    fn the_token_target_holds_on_its_seeds() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let good = format!(
            r#"{{"iss":"https://idp.fuzz.test","aud":"https://fuzz.test/mcp","sub":"a","exp":{}}}"#,
            now + 600
        );
        for seed in [
            good.clone(),
            good.replace("fuzz.test/mcp", "other.test/mcp"),
            good.replace(&(now + 600).to_string(), "1"),
            r#"{"iss":"https://idp.fuzz.test"}"#.to_string(),
        ] {
            let mut data = vec![1u8];
            data.extend_from_slice(seed.as_bytes());
            super::token(&data);
        }
        super::token(b"\0eyJhbGciOiJub25lIn0.e30.");
        for header in [
            r#"{"crit":["urn:x"]}"#,
            r#"{"crit":[]}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"typ":"at+jwt"}"#,
        ] {
            let mut data = vec![2u8];
            data.extend_from_slice(header.as_bytes());
            super::token(&data);
        }
        super::token(b"\0not a token");
    }

    /// The seeds hold under `cargo test` too, and the target is not vacuous: the seed that
    /// answers every kind passes `resume` with one key dropped.
    #[test]
    fn the_input_responses_target_holds_on_its_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/input_responses");
        for entry in std::fs::read_dir(&dir).unwrap() {
            super::input_responses(&std::fs::read(entry.unwrap().path()).unwrap());
        }
        let all: rmcp::model::InputResponses = serde_json::from_slice(&std::fs::read(dir.join("all_kinds.json")).unwrap()).unwrap();
        let asked = [
            ("a", crate::contract::ClientAsk::Elicitation),
            ("b", crate::contract::ClientAsk::Sampling),
            ("c", crate::contract::ClientAsk::Roots),
        ];
        let state = crate::pipeline::rounds::InputState::asking(asked.iter().map(|(k, a)| (k.to_string(), *a)).collect());
        let r = crate::pipeline::rounds::resume(state, Some(all)).unwrap();
        assert_eq!((r.resume.answers.len(), r.dropped), (3, vec!["d".to_string()]));
    }

    /// The committed seeds (regressions among them) hold under `cargo test` too, and the
    /// readers are not vacuous: a real answer is taken, from a body and from an event.
    #[test]
    fn the_upstream_answer_target_holds_on_its_seeds_and_takes_a_real_answer() {
        use rmcp::model::{CallToolResult, RequestId};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/upstream_answer");
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            super::upstream_answer(&std::fs::read(entry.unwrap().path()).unwrap());
            seeds += 1;
        }
        assert!(seeds >= 9, "{seeds} seeds in {}", dir.display());
        let id = RequestId::Number(7);
        let real = std::fs::read(dir.join("result.json")).unwrap();
        assert!(crate::backend::http_session::answer_in_body::<CallToolResult>(&real, &id).is_ok());
        let text = String::from_utf8(real).unwrap();
        assert!(matches!(
            crate::backend::http_session::answer_in_event::<CallToolResult>(&text, &id),
            Some(Ok(_))
        ));
        let bad = std::fs::read(dir.join("invalid_utf8_in_a_skipped_field.json")).unwrap();
        assert!(crate::backend::http_session::answer_in_body::<CallToolResult>(&bad, &id).is_err());
    }

    /// The seeds hold, and the target is not vacuous: the URL seed reads, and the seed with
    /// a password is refused.
    #[test]
    fn the_store_setting_target_holds_on_its_seeds() {
        use crate::config::store::parse_store;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/store_setting");
        for entry in std::fs::read_dir(&dir).unwrap() {
            super::store_setting(&std::fs::read(entry.unwrap().path()).unwrap());
        }
        let read = |name: &str| parse_store(Some(&std::fs::read_to_string(dir.join(name)).unwrap()), None, false);
        assert!(read("url").0.is_some() && read("ipv6").0.is_some() && read("sqlite").0.is_some());
        let (loc, problems) = read("password");
        assert!(loc.is_none() && !format!("{problems:?}").contains("hunter2secret"), "{problems:?}");
        assert!(read("inject").0.is_none());
    }

    #[test]
    fn the_resource_uri_target_holds_on_its_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/resource_uri");
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            super::resource_uri(&std::fs::read(entry.unwrap().path()).unwrap());
            seeds += 1;
        }
        assert!(seeds >= 4);
        let t = crate::contract::UriTemplate::parse("r://{a}?q={b}").unwrap();
        assert_eq!(t.matches("r://x%2Fy?q=%E2%82%AC").unwrap()["a"], "x/y");
    }

    /// The seeds hold (the regression among them: free text with a surrounding space is a
    /// valid `string`), and the rules the target checks are not vacuous.
    #[test]
    fn the_arg_types_target_holds_on_its_seeds() {
        use crate::contract::ArgSpec;
        use serde_json::Value;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/arg_types");
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            super::arg_types(&std::fs::read(entry.unwrap().path()).unwrap());
            seeds += 1;
        }
        assert!(seeds >= 12, "{seeds} seeds in {}", dir.display());
        let spec = |d: &str| ArgSpec::parse(&Value::String(d.into()));
        assert!(spec("string(1..8)").unwrap().check(&Value::String(" ".into())).is_ok());
        assert!(spec("string(1..8)").unwrap().check(&Value::String("a\u{7}".into())).is_err());
        assert!(spec("cidr").unwrap().check(&Value::String(" 10.0.0.0/8".into())).is_err());
        assert!(spec("enum(a|b\u{7})").is_err());
        // The regression: a network from one NAT64 range to the other holds both and the
        // space between; it lies in neither, and without a prefix bound it is a valid `cidr`.
        assert!(spec("cidr").unwrap().check(&Value::String("64:ff9b::/47".into())).is_ok());
        assert!(spec("cidr").unwrap().check(&Value::String("64:ff9b:1::/64".into())).is_err());
    }
}
