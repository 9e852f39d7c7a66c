//! MCP 2026-07-28 towards an HTTP upstream: whether it speaks that revision
//! (`server/discover`), how a request is framed for it (no session; `_meta` states the
//! revision, the client's capabilities and the client; `Mcp-Method` and `Mcp-Name` mirror
//! the body), and the multi round-trip requests of that revision, where a tool call is
//! answered `input_required` with requests for the client.
//!
//! capgate answers an upstream's input requests through the caller's side of the call
//! ([`Asker`]), exactly as it relays a 2025-11-25 upstream's requests: each is decided by
//! the tool's contract and the caller's declared capabilities, recorded, read by rmcp's
//! types, and the caller's answer read by the types of its result before it goes back
//! upstream. The upstream's `requestState` goes back byte for byte and is never read.
//!
//! A caller that speaks 2026-07-28 itself is not asked during the call: the upstream's
//! requests, each decided and recorded the same way ([`Asker::pass`]), end the call as
//! [`Called::Asks`], for the caller's own `input_required` answer; its retry comes back as
//! a [`Resume`] with the upstream's state.
//!
//! INVARIANT: an input request that is not relayed ends the call; nothing stands in for the
//! caller's answer.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rmcp::model::ProtocolVersion;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http_session::{SessionError, err};
use super::relay::Asker;

/// The revision this module speaks.
pub(crate) const REVISION: &str = "2026-07-28";

/// `_meta` keys of a 2026-07-28 request.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// Rounds of input one tool call may take, as rmcp's own client bounds them: an upstream
/// that keeps asking cannot hold a call (and its caller) forever.
pub(crate) const MAX_ROUNDS: usize = rmcp::model::DEFAULT_MRTR_MAX_ROUNDS;

/// Most input requests in one round: each is relayed to a person or a model in turn.
pub(crate) const MAX_INPUTS: usize = 16;

/// Headers the protocol sets itself; a configured one of these names would let the
/// configuration reframe every request.
const PROTOCOL_HEADERS: [&str; 7] = [
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// A configured header that clashes with the protocol's own, if one does.
pub(crate) fn clashing(headers: &HashMap<HeaderName, HeaderValue>) -> Option<String> {
    headers
        .keys()
        .find(|k| PROTOCOL_HEADERS.contains(&k.as_str()))
        .map(|k| format!("the configured header `{k}` is one the protocol sets itself"))
}

/// What `server/discover` said, where it offered 2026-07-28.
pub(crate) struct Discovered {
    /// It also offers a revision with `initialize`: a session of that revision can carry
    /// what 2026-07-28 removed (resource subscriptions).
    pub(crate) offers_session: bool,
}

/// Asks the upstream `server/discover` at 2026-07-28. `Ok(None)`: it does not offer that
/// revision (a 2025-11-25 server refuses the request, for want of a session or of the
/// method); `Err`: it could not be reached at all.
pub(crate) async fn discover(http: &reqwest::Client, url: &reqwest::Url, base: &HeaderMap) -> Result<Option<Discovered>, SessionError> {
    let mut message = json!({"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {}});
    stamp(&mut message, None, None);
    let mut headers = base.clone();
    mirror(&message, &mut headers);
    let response = http
        .post(url.clone())
        .headers(headers)
        .body(message.to_string())
        .send()
        .await
        .map_err(|_| err("the upstream could not be reached", true))?;
    if response.status() != StatusCode::OK {
        return Ok(None);
    }
    let kind = super::http_session::Kind::of(response.headers());
    #[derive(Deserialize)]
    struct Offer {
        #[serde(rename = "supportedVersions", default)]
        supported_versions: Vec<String>,
    }
    let id = rmcp::model::RequestId::Number(0);
    let offer: Option<Offer> = if kind == super::http_session::Kind::EventStream {
        let mut events = sse_stream::SseStream::from_bytes_stream(super::http_session::bounded(response));
        let mut found = None;
        while let Some(Ok(event)) = events.next().await {
            if let Some(answer) = event
                .data
                .as_deref()
                .and_then(|d| super::http_session::answer_in_event::<Offer>(d, &id))
            {
                found = answer.ok();
                break;
            }
        }
        found
    } else {
        let body = super::http_session::read_bounded(response).await.unwrap_or_default();
        super::http_session::answer_in_body::<Offer>(&body, &id).ok()
    };
    let Some(offer) = offer else { return Ok(None) };
    if !offer.supported_versions.iter().any(|v| v == REVISION) {
        return Ok(None);
    }
    let offers_session = offer.supported_versions.iter().any(|v| {
        ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .any(|k| k.as_str() == v && k.has_initialize())
    });
    Ok(Some(Discovered { offers_session }))
}

/// Writes into a request's `_meta` what 2026-07-28 requires of every request: the
/// revision, the client's capabilities (`caps`; none when `None`) and the client, and the
/// log level the caller asked for (`log`), without which the upstream sends no log messages.
/// Notifications and answers are left as they are.
pub(crate) fn stamp(message: &mut Value, caps: Option<Value>, log: Option<super::relay::LogLevel>) {
    let Some(m) = message.as_object_mut() else { return };
    if !m.contains_key("id") || !m.contains_key("method") {
        return;
    }
    let params = m.entry("params").or_insert_with(|| Value::Object(Map::new()));
    if !params.is_object() {
        *params = Value::Object(Map::new());
    }
    let Some(params) = params.as_object_mut() else { return };
    let meta = params.entry("_meta").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else { return };
    meta.insert(META_VERSION.into(), Value::String(REVISION.into()));
    meta.insert(META_CAPABILITIES.into(), caps.unwrap_or_else(|| json!({})));
    meta.insert(META_CLIENT.into(), json!({"name": "capgate", "version": env!("CARGO_PKG_VERSION")}));
    if let Some(level) = log {
        meta.insert(META_LOG_LEVEL.into(), Value::String(level.name().into()));
    }
}

/// The headers that mirror a message's body on 2026-07-28: `Mcp-Method` for every request
/// and notification, `Mcp-Name` for the methods that name a tool, prompt or resource.
pub(crate) fn mirror(message: &Value, headers: &mut HeaderMap) {
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(method) {
        headers.insert(HeaderName::from_static("mcp-method"), v);
    }
    let named =
        crate::request::named_by(method).and_then(|member| message.get("params").and_then(|p| p.get(member)).and_then(Value::as_str));
    if let Some(name) = named {
        headers.insert(HeaderName::from_static("mcp-name"), crate::request::header_value(name));
    }
}

/// The W3C `traceparent` header for a message whose `params._meta` carries one.
pub(crate) fn traceparent_header(message: &Value, headers: &mut HeaderMap) {
    let tp = message
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("traceparent"))
        .and_then(Value::as_str)
        .and_then(|t| HeaderValue::from_str(t).ok());
    if let Some(tp) = tp {
        headers.insert(HeaderName::from_static("traceparent"), tp);
    }
}

/// A result of 2026-07-28 that asks for input before the request can complete.
pub(crate) struct InputRequired {
    pub(crate) requests: BTreeMap<String, Value>,
    /// Echoed back untouched; never read.
    pub(crate) state: Option<String>,
}

impl InputRequired {
    /// The result's ask for input, if it is one. `Err`: it says `input_required` but is
    /// not a well-formed one.
    pub(crate) fn of(result: &Value) -> Result<Option<Self>, SessionError> {
        if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
            return Ok(None);
        }
        let bad = |why: &str| err(format!("the upstream's input_required result {why}"), false);
        let requests = match result.get("inputRequests") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => return Err(bad("has inputRequests that are not an object")),
        };
        if requests.len() > MAX_INPUTS {
            return Err(bad(&format!("asks for {} inputs at once (at most {MAX_INPUTS})", requests.len())));
        }
        let state = match result.get("requestState") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad("has a requestState that is not a string")),
        };
        if requests.is_empty() && state.is_none() {
            return Err(bad("asks for nothing and carries no requestState"));
        }
        Ok(Some(Self { requests, state }))
    }

    /// The caller's answers to every request, through `asks`; the first one that is not
    /// relayed, or not answered, ends the call.
    pub(crate) async fn answers(&self, asks: Option<&dyn Asker>, leaks: impl Fn(&str) -> bool) -> Result<Map<String, Value>, SessionError> {
        let mut answers = Map::new();
        for (key, request) in &self.requests {
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            let params = request.get("params").cloned().unwrap_or(Value::Null);
            let Some(asker) = asks else {
                return Err(err(
                    format!(
                        "the upstream asked for input ({}) and this call's route cannot ask its caller",
                        crate::request::clean(method, 64)
                    ),
                    false,
                ));
            };
            let refused = leaks(&params.to_string()).then_some("the request holds one of the upstream's credentials");
            match asker.ask(method, params, refused).await {
                Ok(answer) => {
                    answers.insert(key.clone(), answer);
                }
                // The message may be the caller's client's own words: bounded and cleaned
                // before it reaches a record or a log line.
                Err(e) => {
                    return Err(err(
                        format!(
                            "the upstream asked for input the caller did not give: {}",
                            crate::request::clean(&e.message, 200)
                        ),
                        false,
                    ));
                }
            }
        }
        Ok(answers)
    }
}

/// How a request that may take rounds of input (`tools/call`, `prompts/get`,
/// `resources/read`) ended towards its upstream.
pub(crate) enum Called<R> {
    Done(R),
    /// The upstream asked for input that the caller gives by retrying (a 2026-07-28 caller).
    Asks(ForCaller),
}

/// An upstream's `input_required`, each request passed for the caller.
pub(crate) struct ForCaller {
    pub(crate) asked: InputRequired,
    /// What kind of request each one is, by its key: what the caller's answers are read as.
    pub(crate) kinds: BTreeMap<String, crate::contract::ClientAsk>,
}

/// A caller's retry after a [`Called::Asks`]: its answers, checked, and the upstream's
/// state, as the upstream gave it.
pub(crate) struct Resume {
    pub(crate) answers: Map<String, Value>,
    pub(crate) state: Option<String>,
}

impl Resume {
    /// What a retried request's params carry: `inputResponses` and `requestState`.
    pub(crate) fn into_params(self) -> (Option<rmcp::model::InputResponses>, Option<String>) {
        (Some(self.answers.into_iter().collect()), self.state)
    }
}

impl InputRequired {
    /// Every request, passed for the caller through `asks`; the first one that may not go
    /// ends the call.
    pub(crate) async fn passed(self, asks: &dyn Asker, leaks: impl Fn(&str) -> bool) -> Result<ForCaller, SessionError> {
        // It goes to the caller inside the gateway's own state, which is sealed, not hidden.
        if self.state.as_deref().is_some_and(&leaks) {
            return Err(err(
                "the upstream's requestState holds one of its credentials and was withheld",
                false,
            ));
        }
        let mut kinds = BTreeMap::new();
        for (key, request) in &self.requests {
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            let params = request.get("params").cloned().unwrap_or(Value::Null);
            let refused = leaks(&request.to_string()).then_some("the request holds one of the upstream's credentials");
            match asks.pass(method, &params, refused).await {
                Ok(kind) => {
                    kinds.insert(key.clone(), kind);
                }
                Err(e) => {
                    return Err(err(
                        format!(
                            "the upstream asked for input that may not go to the caller: {}",
                            crate::request::clean(&e.message, 200)
                        ),
                        false,
                    ));
                }
            }
        }
        Ok(ForCaller { asked: self, kinds })
    }
}

/// The retry of `message` (a request) with the caller's `answers` and the upstream's state.
pub(crate) fn retry(message: &mut Value, answers: Map<String, Value>, state: Option<String>) {
    let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) else {
        return;
    };
    params.insert("inputResponses".into(), Value::Object(answers));
    match state {
        Some(s) => params.insert("requestState".into(), Value::String(s)),
        None => params.remove("requestState"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_stamped_and_mirrored_and_an_answer_is_not() {
        let mut m =
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get weather", "_meta": {"traceparent": "t"}}});
        stamp(&mut m, Some(json!({"elicitation": {}})), None);
        assert_eq!(m["params"]["_meta"][META_VERSION], REVISION);
        assert_eq!(m["params"]["_meta"][META_CAPABILITIES], json!({"elicitation": {}}));
        assert_eq!(m["params"]["_meta"]["traceparent"], "t", "what was there stays");
        let mut h = HeaderMap::new();
        mirror(&m, &mut h);
        assert_eq!(h["mcp-method"], "tools/call");
        assert_eq!(h["mcp-name"], "get weather");
        let mut answer = json!({"jsonrpc": "2.0", "id": 3, "result": {}});
        stamp(&mut answer, None, None);
        assert_eq!(answer, json!({"jsonrpc": "2.0", "id": 3, "result": {}}));
    }

    #[test]
    fn only_a_well_formed_input_required_result_asks_for_input() {
        assert!(
            InputRequired::of(&json!({"resultType": "complete", "content": []}))
                .unwrap()
                .is_none()
        );
        assert!(InputRequired::of(&json!({"content": []})).unwrap().is_none());
        let asked = InputRequired::of(
            &json!({"resultType": "input_required", "inputRequests": {"a": {"method": "roots/list"}}, "requestState": "s"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!((asked.requests.len(), asked.state.as_deref()), (1, Some("s")));
        for bad in [
            json!({"resultType": "input_required"}),
            json!({"resultType": "input_required", "inputRequests": []}),
            json!({"resultType": "input_required", "requestState": 7}),
        ] {
            assert!(InputRequired::of(&bad).is_err(), "{bad}");
        }
        let many: Map<String, Value> = (0..=MAX_INPUTS).map(|i| (i.to_string(), json!({"method": "roots/list"}))).collect();
        assert!(InputRequired::of(&json!({"resultType": "input_required", "inputRequests": many})).is_err());
    }

    #[test]
    fn a_retry_carries_the_answers_and_the_state_untouched() {
        let mut m = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "t", "requestState": "old"}});
        let mut answers = Map::new();
        answers.insert("a".into(), json!({"roots": []}));
        retry(&mut m, answers, Some("opaque+/=state".into()));
        assert_eq!(m["params"]["requestState"], "opaque+/=state");
        assert_eq!(m["params"]["inputResponses"]["a"], json!({"roots": []}));
        retry(&mut m, Map::new(), None);
        assert!(m["params"].get("requestState").is_none());
    }
}
