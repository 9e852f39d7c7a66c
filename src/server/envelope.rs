//! The JSON-RPC envelope of one MCP message, checked before rmcp sees it, on every
//! transport: one object (no batch: MCP dropped batching), `"jsonrpc": "2.0"`, an `id` that
//! is a string or an integer, a `method` this gateway serves (compared exactly: `TOOLS/CALL`
//! and `tools/call ` are other methods), and `params` of the shape that method takes.
//! Whatever fails here is refused with its own JSON-RPC code and recorded; nothing of it
//! reaches an upstream.
//!
//! Also reads the facts a record of any message names: method, tool, request id.

use serde_json::Value;

use crate::request::clean;

/// Requests this gateway answers.
const REQUESTS: [&str; 15] = [
    "initialize",
    // 2026-07-28: what the server speaks, asked without a session.
    "server/discover",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "completion/complete",
    // Before 2026-07-28: the session's own log level, and its resource subscriptions.
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
    // 2026-07-28: resource updates on a stream of their own (`listen.rs`).
    "subscriptions/listen",
];
/// Notifications this gateway takes from a client.
const NOTIFICATIONS: [&str; 4] = [
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// -32600: not a JSON-RPC message this gateway takes.
    InvalidRequest(&'static str),
    /// -32601: a method this gateway does not serve (cleaned and shortened).
    MethodNotFound(String),
    /// -32602: a known method with params of the wrong shape.
    InvalidParams(&'static str),
}

/// What a well-formed message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    Request(&'a str),
    Notification(&'a str),
    Response,
}

/// The facts of a message that every record about it carries, where the message says them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) method: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) request_id: Option<String>,
}

/// A request id as records and logs show it: an integer's digits, a string's text.
pub(crate) fn request_id_text(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::String(s) => Some(clean(s, 128)),
        _ => None,
    }
}

/// The member at `path` (object keys only): what `Value::pointer` finds, without its
/// escape handling, which costs two string replacements per key on every request.
pub(crate) fn member<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

/// Reads the facts of any JSON value, well-formed message or not.
pub(crate) fn facts(v: &Value) -> Facts {
    let method = v.get("method").and_then(Value::as_str);
    Facts {
        method: method.map(|m| clean(m, 128)),
        // What the request names: a tool, a prompt, a resource's URI.
        tool: match method {
            Some("tools/call" | "prompts/get") => member(v, &["params", "name"]),
            Some("resources/read" | "resources/subscribe" | "resources/unsubscribe") => member(v, &["params", "uri"]),
            Some("completion/complete") => member(v, &["params", "ref", "name"]).or_else(|| member(v, &["params", "ref", "uri"])),
            _ => None,
        }
        .and_then(Value::as_str)
        .map(|t| clean(t, 128)),
        request_id: v.get("id").and_then(request_id_text),
    }
}

fn valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

/// Checks one message; `Ok` says what it is.
pub(crate) fn check(v: &Value) -> Result<Kind<'_>, Problem> {
    let Some(msg) = v.as_object() else {
        return Err(Problem::InvalidRequest(if v.is_array() {
            "batch requests are not supported: send one JSON-RPC message per request"
        } else {
            "the body must be one JSON-RPC message (an object)"
        }));
    };
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Problem::InvalidRequest("`jsonrpc` must be \"2.0\""));
    }
    let id = msg.get("id");
    if id.is_some_and(|id| !valid_id(id)) {
        return Err(Problem::InvalidRequest("`id` must be a string or an integer"));
    }
    let Some(method) = msg.get("method") else {
        // A response to a request of the gateway's: an id and exactly one of result, error.
        let answers = msg.contains_key("result") != msg.contains_key("error");
        return if id.is_some() && answers {
            Ok(Kind::Response)
        } else {
            Err(Problem::InvalidRequest(
                "a message must carry a `method`, or answer a request with `result` or `error`",
            ))
        };
    };
    let Some(method) = method.as_str() else {
        return Err(Problem::InvalidRequest("`method` must be a string"));
    };
    if msg.contains_key("result") || msg.contains_key("error") {
        return Err(Problem::InvalidRequest("a request carries no `result` or `error`"));
    }
    let known = if id.is_some() {
        REQUESTS.contains(&method)
    } else {
        NOTIFICATIONS.contains(&method)
    };
    if !known {
        return Err(Problem::MethodNotFound(clean(method, 64)));
    }
    check_params(method, msg.get("params"))?;
    Ok(if id.is_some() {
        Kind::Request(method)
    } else {
        Kind::Notification(method)
    })
}

fn check_params(method: &str, params: Option<&Value>) -> Result<(), Problem> {
    let params = match params {
        None => {
            return if matches!(
                method,
                "tools/call"
                    | "initialize"
                    | "prompts/get"
                    | "resources/read"
                    | "resources/subscribe"
                    | "resources/unsubscribe"
                    | "completion/complete"
                    | "logging/setLevel"
                    | "subscriptions/listen"
            ) {
                Err(Problem::InvalidParams("`params` is required"))
            } else {
                Ok(())
            };
        }
        Some(Value::Object(p)) => p,
        Some(_) => return Err(Problem::InvalidParams("`params` must be an object")),
    };
    if params.get("_meta").is_some_and(|m| !m.is_object()) {
        return Err(Problem::InvalidParams("`params._meta` must be an object"));
    }
    match method {
        "subscriptions/listen" if !params.get("notifications").is_some_and(Value::is_object) => {
            return Err(Problem::InvalidParams("`params.notifications` must be an object"));
        }
        "tools/call" => {
            if !params.get("name").is_some_and(Value::is_string) {
                return Err(Problem::InvalidParams("`params.name` must be a string"));
            }
            if params.get("arguments").is_some_and(|a| !a.is_object()) {
                return Err(Problem::InvalidParams("`params.arguments` must be an object"));
            }
        }
        "prompts/get" => {
            if !params.get("name").is_some_and(Value::is_string) {
                return Err(Problem::InvalidParams("`params.name` must be a string"));
            }
            // MCP: a prompt's arguments are strings.
            match params.get("arguments") {
                None => {}
                Some(Value::Object(a)) if a.values().all(Value::is_string) => {}
                Some(_) => return Err(Problem::InvalidParams("`params.arguments` must be an object of strings")),
            }
        }
        "completion/complete" => {
            let reference = params.get("ref").and_then(Value::as_object);
            let names = match reference.and_then(|r| r.get("type")).and_then(Value::as_str) {
                Some("ref/prompt") => reference.and_then(|r| r.get("name")).is_some_and(Value::is_string),
                Some("ref/resource") => reference.and_then(|r| r.get("uri")).is_some_and(Value::is_string),
                _ => false,
            };
            if !names {
                return Err(Problem::InvalidParams(
                    "`params.ref` must be `{\"type\": \"ref/prompt\", \"name\": …}` or `{\"type\": \"ref/resource\", \"uri\": …}`",
                ));
            }
            let argument = params.get("argument").and_then(Value::as_object);
            if !argument.is_some_and(|a| a.get("name").is_some_and(Value::is_string) && a.get("value").is_some_and(Value::is_string)) {
                return Err(Problem::InvalidParams(
                    "`params.argument` must be an object with string `name` and `value`",
                ));
            }
            let context_ok = match params.get("context") {
                None => true,
                Some(Value::Object(c)) => match c.get("arguments") {
                    None => true,
                    Some(Value::Object(a)) => a.values().all(Value::is_string),
                    Some(_) => false,
                },
                Some(_) => false,
            };
            if !context_ok {
                return Err(Problem::InvalidParams("`params.context.arguments` must be an object of strings"));
            }
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" if !params.get("uri").is_some_and(Value::is_string) => {
            return Err(Problem::InvalidParams("`params.uri` must be a string"));
        }
        "logging/setLevel" if !params.get("level").is_some_and(Value::is_string) => {
            return Err(Problem::InvalidParams("`params.level` must be a string"));
        }
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list"
            if params.get("cursor").is_some_and(|c| !c.is_string()) =>
        {
            return Err(Problem::InvalidParams("`params.cursor` must be a string"));
        }
        "initialize" => {
            if !params.get("protocolVersion").is_some_and(Value::is_string) {
                return Err(Problem::InvalidParams("`params.protocolVersion` must be a string"));
            }
            if !params.get("capabilities").is_some_and(Value::is_object) {
                return Err(Problem::InvalidParams("`params.capabilities` must be an object"));
            }
            if !params.get("clientInfo").and_then(|c| c.get("name")).is_some_and(Value::is_string) {
                return Err(Problem::InvalidParams("`params.clientInfo` must be an object with a string `name`"));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn prompt_resource_and_completion_requests_have_their_shapes_checked() {
        let req = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        for (method, params) in [
            ("prompts/get", json!({"name": "p", "arguments": {"a": "x"}})),
            ("prompts/get", json!({"name": "p"})),
            ("resources/read", json!({"uri": "r://x"})),
            ("resources/subscribe", json!({"uri": "r://x"})),
            ("logging/setLevel", json!({"level": "info"})),
            ("resources/templates/list", json!({"cursor": "c"})),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": ""}}),
            ),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/resource", "uri": "r://{a}"}, "argument": {"name": "a", "value": "x"}, "context": {"arguments": {"b": "y"}}}),
            ),
        ] {
            assert_eq!(check(&req(method, params.clone())), Ok(Kind::Request(method)), "{params}");
        }
        for (method, params) in [
            ("prompts/get", json!({"arguments": {}})),
            ("prompts/get", json!({"name": "p", "arguments": {"a": 1}})),
            ("resources/read", json!({"uri": 7})),
            ("resources/subscribe", json!({})),
            ("resources/unsubscribe", json!({"uri": ["r://x"]})),
            ("logging/setLevel", json!({"level": 3})),
            ("resources/list", json!({"cursor": 1})),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/tool", "name": "p"}, "argument": {"name": "a", "value": ""}}),
            ),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt"}, "argument": {"name": "a", "value": ""}}),
            ),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a"}}),
            ),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": ""}, "context": "x"}),
            ),
        ] {
            assert!(
                matches!(check(&req(method, params.clone())), Err(Problem::InvalidParams(_))),
                "{params}"
            );
        }
        let facts = facts(&req("resources/read", json!({"uri": "r://x"})));
        assert_eq!(facts.tool.as_deref(), Some("r://x"));
    }

    #[test]
    fn the_shapes_mcp_clients_send_pass_and_the_rest_are_named() {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "arguments": {}}});
        assert_eq!(check(&call), Ok(Kind::Request("tools/call")));
        assert_eq!(
            check(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
            Ok(Kind::Notification("notifications/initialized"))
        );
        assert_eq!(check(&json!({"jsonrpc": "2.0", "id": "a", "result": {}})), Ok(Kind::Response));
        assert_eq!(
            check(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})),
            Ok(Kind::Request("ping"))
        );
        let bad = [
            (json!([call]), "batch"),
            (json!("x"), "object"),
            (json!({"id": 1, "method": "ping"}), "jsonrpc"),
            (json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}), "`id`"),
            (json!({"jsonrpc": "2.0", "id": null, "method": "ping"}), "`id`"),
            (json!({"jsonrpc": "2.0", "id": 1, "method": 3}), "`method`"),
            (json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "result": {}}), "`result`"),
            (json!({"jsonrpc": "2.0", "id": 1}), "`method`"),
        ];
        for (v, says) in bad {
            match check(&v) {
                Err(Problem::InvalidRequest(m)) => assert!(m.contains(says), "{v}: {m}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        for m in ["TOOLS/CALL", "tools/call ", "resources/list_all", "tools/call\u{0}"] {
            assert!(
                matches!(
                    check(&json!({"jsonrpc": "2.0", "id": 1, "method": m})),
                    Err(Problem::MethodNotFound(_))
                ),
                "{m:?}"
            );
        }
        assert_eq!(
            check(&json!({"jsonrpc": "2.0", "method": "notifications/made_up"})),
            Err(Problem::MethodNotFound("notifications/made_up".into()))
        );
        for params in [
            json!({"name": 5}),
            json!({"name": "t", "arguments": ["x"]}),
            json!("p"),
            json!({"name": "t", "_meta": 1}),
        ] {
            assert!(
                matches!(
                    check(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})),
                    Err(Problem::InvalidParams(_))
                ),
                "{params}"
            );
        }
    }

    #[test]
    fn facts_are_read_from_any_value_bounded() {
        let f = facts(&json!({"method": "tools/call", "id": "r-1", "params": {"name": "x".repeat(300)}}));
        assert_eq!(f.method.as_deref(), Some("tools/call"));
        assert_eq!(f.tool.map(|t| t.len()), Some(128));
        assert_eq!(f.request_id.as_deref(), Some("r-1"));
        assert_eq!(facts(&json!({"method": "ping", "id": 7})).request_id.as_deref(), Some("7"));
        assert_eq!(facts(&json!([1])), Facts::default());
    }

    proptest! {
        /// Whatever passes is one object with `jsonrpc` "2.0", an id of an allowed type, and
        /// either a served method with params of its shape, or a response.
        #[test]
        fn what_passes_has_the_shape_mcp_allows(v in crate::canonical::strategies::json()) {
            if let Ok(kind) = check(&v) {
                prop_assert_eq!(v.get("jsonrpc"), Some(&json!("2.0")));
                prop_assert!(v.get("id").is_none_or(valid_id));
                match kind {
                    Kind::Request(m) => prop_assert!(REQUESTS.contains(&m)),
                    Kind::Notification(m) => prop_assert!(NOTIFICATIONS.contains(&m)),
                    Kind::Response => prop_assert!(v.get("id").is_some()),
                }
            }
        }
    }
}
