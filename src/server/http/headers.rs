//! The request headers of MCP 2026-07-28 that mirror its body: `Mcp-Method` (every request
//! and notification), `Mcp-Name` (the tool, prompt or resource a request names) and the
//! `MCP-Protocol-Version` the body's `_meta` states. Load balancers and other gateways route
//! on these without reading the body, so a request whose headers say one thing and whose
//! body another could be routed as one request and executed as another: it is refused
//! (HTTP 400, -32020), recorded, and never forwarded.
//!
//! `Mcp-Param-*` mirrors of arguments are checked after the contract is known
//! ([`param_mismatch`]): only a contract says which argument a header mirrors.

use rmcp::model::ProtocolVersion;
use serde_json::Value;

use crate::request::clean;
use crate::server::envelope::member;

/// `_meta`'s key for the request's protocol version (2026-07-28).
pub(crate) const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// Whether a request of `version` carries the mirroring headers.
pub(crate) fn mirrors(version: Option<&str>) -> bool {
    version.is_some_and(|v| v >= ProtocolVersion::V_2026_07_28.as_str())
}

/// The one value of header `name`, with the spaces around it dropped (RFC 9110 §5.5: they
/// are not part of the value); `Err` for two values or one that is not visible ASCII.
fn single<'a>(headers: &'a http::HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("the {name} header is sent more than once"));
    }
    first
        .to_str()
        .map(|v| Some(v.trim_matches([' ', '\t'])))
        .map_err(|_| format!("the {name} header holds characters a header value cannot carry"))
}

/// Why the headers of a well-formed JSON-RPC message `body` do not mirror it, if they do not.
/// `version` is its `MCP-Protocol-Version` header, already known to be one the gateway speaks.
pub(crate) fn mismatch(headers: &http::HeaderMap, body: &Value, version: Option<&str>) -> Option<String> {
    let method = body.get("method").and_then(Value::as_str)?;
    let meta_version = member(body, &["params", "_meta", META_PROTOCOL_VERSION]);
    if let Some(stated) = meta_version {
        let stated = stated.as_str().unwrap_or("");
        match version {
            None => {
                return Some(format!(
                    "the body's _meta states protocol version `{}` and the MCP-Protocol-Version header is missing",
                    clean(stated, 64)
                ));
            }
            Some(v) if v != stated => {
                return Some(format!(
                    "the MCP-Protocol-Version header `{}` does not match the body's _meta protocol version `{}`",
                    clean(v, 64),
                    clean(stated, 64)
                ));
            }
            Some(_) => {}
        }
    }
    // `initialize` belongs to the revisions before the headers; a header it carries anyway
    // must still say what the body says.
    if !mirrors(version) && method != "initialize" {
        return None;
    }
    match single(headers, "mcp-method") {
        Err(e) => return Some(e),
        Ok(None) if method == "initialize" => return None,
        Ok(None) => {
            return Some(format!(
                "the Mcp-Method header is missing (the body's method is `{}`)",
                clean(method, 64)
            ));
        }
        Ok(Some(m)) if m != method => {
            return Some(format!(
                "the Mcp-Method header `{}` does not match the body's method `{}`",
                clean(m, 64),
                clean(method, 64)
            ));
        }
        Ok(Some(_)) => {}
    }
    let key = crate::request::named_by(method)?;
    let named = member(body, &["params", key]).and_then(Value::as_str)?;
    match single(headers, "mcp-name") {
        Err(e) => Some(e),
        Ok(None) => Some(format!("the Mcp-Name header is missing (the body names `{}`)", clean(named, 128))),
        Ok(Some(raw)) => match crate::request::header_text(raw) {
            None => Some("the Mcp-Name header's Base64 value does not decode to UTF-8 text".into()),
            Some(sent) if sent != named => Some(format!(
                "the Mcp-Name header `{}` does not match the body's `{}` `{}`",
                clean(&sent, 128),
                key,
                clean(named, 128)
            )),
            Some(_) => None,
        },
    }
}

/// An argument's value as its `Mcp-Param-*` header carries it: a string as it is, a number
/// or boolean in its JSON spelling; other values have no header form.
fn header_form(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Why the `Mcp-Param-*` headers of a `tools/call` do not mirror its arguments, if they do
/// not: `mirrored` pairs each argument the contract mirrors with its header's name (`Region`
/// for `Mcp-Param-Region`). An argument sent without its header, a header without its
/// argument, and a header of another value are each refused.
pub(crate) fn param_mismatch<'a>(
    headers: &http::HeaderMap,
    args: Option<&serde_json::Map<String, Value>>,
    mirrored: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    for (argument, header) in mirrored {
        let name = format!("mcp-param-{}", header.to_ascii_lowercase());
        let sent = match single(headers, &name) {
            Ok(v) => v,
            Err(e) => return Some(e),
        };
        let body = args.and_then(|a| a.get(argument)).filter(|v| !v.is_null()).and_then(header_form);
        match (sent, body) {
            (None, None) => {}
            (Some(_), None) => return Some(format!("the Mcp-Param-{header} header is sent without the argument `{argument}`")),
            (None, Some(_)) => return Some(format!("the argument `{argument}` is sent without its Mcp-Param-{header} header")),
            (Some(raw), Some(value)) => match crate::request::header_text(raw) {
                Some(sent) if sent == value => {}
                Some(_) => return Some(format!("the Mcp-Param-{header} header does not match the argument `{argument}`")),
                None => {
                    return Some(format!(
                        "the Mcp-Param-{header} header's Base64 value does not decode to UTF-8 text"
                    ));
                }
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const V: Option<&str> = Some("2026-07-28");

    fn call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}, "_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}})
    }

    #[test]
    fn headers_that_mirror_the_body_pass_and_every_kind_of_difference_is_named() {
        let ok = headers(&[("mcp-method", "tools/call"), ("Mcp-Name", "  get_weather\t")]);
        assert_eq!(
            mismatch(&ok, &call("get_weather"), V),
            None,
            "spaces around a value are not part of it"
        );
        let b64 = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(" spaced tool "));
        assert_eq!(
            mismatch(
                &headers(&[("mcp-method", "tools/call"), ("mcp-name", &b64)]),
                &call(" spaced tool "),
                V
            ),
            None
        );
        let refused = [
            (headers(&[("mcp-name", "get_weather")]), "Mcp-Method header is missing"),
            (
                headers(&[("mcp-method", "TOOLS/CALL"), ("mcp-name", "get_weather")]),
                "`TOOLS/CALL` does not match",
            ),
            (headers(&[("mcp-method", "tools/call")]), "Mcp-Name header is missing"),
            (
                headers(&[("mcp-method", "tools/call"), ("mcp-name", "delete_all")]),
                "`delete_all` does not match",
            ),
            (
                headers(&[
                    ("mcp-method", "tools/call"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get_weather"),
                ]),
                "more than once",
            ),
            (
                headers(&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?!!!?=")]),
                "does not decode",
            ),
        ];
        for (h, expected) in refused {
            let why = mismatch(&h, &call("get_weather"), V).unwrap_or_default();
            assert!(why.contains(expected), "{expected:?} in {why:?}");
        }
    }

    #[test]
    fn the_protocol_version_header_must_match_the_body_and_older_revisions_need_no_mirrors() {
        let h = headers(&[("mcp-method", "tools/call"), ("mcp-name", "t")]);
        let why = mismatch(&h, &call("t"), Some("2025-11-25")).unwrap_or_default();
        assert!(why.contains("does not match the body's _meta protocol version"), "{why}");
        assert!(mismatch(&h, &call("t"), None).unwrap_or_default().contains("header is missing"));
        let legacy = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t"}});
        assert_eq!(mismatch(&http::HeaderMap::new(), &legacy, Some("2025-11-25")), None);
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
        assert_eq!(mismatch(&http::HeaderMap::new(), &init, Some("2025-11-25")), None);
        assert!(mismatch(&headers(&[("mcp-method", "tools/list")]), &init, None).is_some());
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
        assert!(
            mismatch(&http::HeaderMap::new(), &note, V).is_some(),
            "notifications carry Mcp-Method too"
        );
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        assert_eq!(mismatch(&headers(&[("mcp-method", "tools/list")]), &list, V), None);
    }

    #[test]
    fn param_mirrors_are_checked_both_ways() {
        let args = json!({"region": "eu-west", "count": 3}).as_object().cloned();
        let mirrored = [("region", "Region"), ("count", "Count"), ("zone", "Zone")];
        let ok = headers(&[("mcp-param-region", "eu-west"), ("Mcp-Param-Count", "3")]);
        assert_eq!(param_mismatch(&ok, args.as_ref(), mirrored.iter().copied()), None);
        for (h, expected) in [
            (
                headers(&[("mcp-param-region", "us-east"), ("mcp-param-count", "3")]),
                "does not match the argument `region`",
            ),
            (headers(&[("mcp-param-count", "3")]), "`region` is sent without"),
            (
                headers(&[("mcp-param-region", "eu-west"), ("mcp-param-count", "3"), ("mcp-param-zone", "a")]),
                "sent without the argument `zone`",
            ),
        ] {
            let why = param_mismatch(&h, args.as_ref(), mirrored.iter().copied()).unwrap_or_default();
            assert!(why.contains(expected), "{expected:?} in {why:?}");
        }
    }
}
