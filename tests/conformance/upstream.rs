//! The upstream of the conformance test (`tests/conformance.rs`): an MCP server on rmcp that
//! implements the fixtures the MCP conformance suite's server scenarios call for (the
//! `test_*` tools, `test://` resources and `test_*` prompts, as each scenario's description
//! states them), served over streamable HTTP with sessions for 2025-11-25 and statelessly
//! for 2026-07-28 (rmcp chooses per request).
//!
//! The suite runs against it directly and through capgate; what passes directly must pass
//! through the gateway. It is a test fixture written for this project from the scenario
//! descriptions, not the suite's own TypeScript server.
//!
//! `conformance-upstream [ADDR]` prints `listening on http://ADDR/mcp` once it accepts.
#![allow(
    deprecated,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fixture: a failure is a test failure; logging, sampling and elicitation are deprecated in 2026-07-28 and still tested for 2025-11-25"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, ErrorData, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, InputRequest, InputRequiredResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities, ServerConfig, SetLevelRequestParams,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A 1×1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV header with no samples.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

/// JSON in the shape the spec gives, read as rmcp's type (so that the fixture reads like the
/// scenario's description).
fn from<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a fixture in the spec's shape")
}

fn text(t: impl Into<String>) -> CallToolResult {
    from(json!({"content": [{"type": "text", "text": t.into()}]}))
}

/// A string argument of a call or prompt, empty where it is missing.
fn string_arg(args: Option<&serde_json::Map<String, Value>>, name: &str) -> String {
    args.and_then(|a| a.get(name)).and_then(Value::as_str).unwrap_or("").to_string()
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}})
}

fn tools() -> Value {
    let string_arg = |name: &str, what: &str| json!({"type": "object", "properties": {name: {"type": "string", "description": what}}, "required": [name]});
    let mut list: Vec<Value> = [
        ("test_simple_text", "Returns simple text"),
        ("test_image_content", "Returns an image"),
        ("test_audio_content", "Returns audio"),
        ("test_embedded_resource", "Returns an embedded resource"),
        ("test_multiple_content_types", "Returns text, an image and a resource"),
        ("test_tool_with_logging", "Logs three messages while it runs"),
        ("test_tool_with_progress", "Reports progress while it runs"),
        ("test_error_handling", "Always fails"),
        (
            "test_elicitation_sep1034_defaults",
            "Elicits with defaults for every primitive type",
        ),
        ("test_elicitation_sep1330_enums", "Elicits with every enum form"),
        ("test_reconnection", "Closes its event stream mid-call"),
        ("test_input_required_result_elicitation", "Asks the user's name by a round of input"),
        (
            "test_streaming_elicitation",
            "Asks by a round of input, never by a request on the stream",
        ),
        ("test_logging_tool", "Logs a message, to a client that asked for logs"),
        ("test_missing_capability", "Needs the client's sampling capability"),
        ("test_input_required_result_sampling", "Asks the client's model by a round of input"),
        (
            "test_input_required_result_list_roots",
            "Asks the client's roots by a round of input",
        ),
        ("test_input_required_result_request_state", "A round of input with a requestState"),
        ("test_input_required_result_multiple_inputs", "Three input requests in one round"),
        ("test_input_required_result_multi_round", "Two rounds of input"),
        (
            "test_input_required_result_tampered_state",
            "A round whose requestState is integrity-protected",
        ),
        ("test_input_required_result_capabilities", "Asks only what the client declared"),
    ]
    .into_iter()
    .map(|(name, description)| json!({"name": name, "description": description, "inputSchema": no_args()}))
    .collect();
    // Not the suite's: capgate's own tests of resource subscriptions (tests/conformance.rs).
    list.push(json!({"name": "test_touch_resource", "description": "Says a resource changed, to the subscribed sessions", "inputSchema": string_arg("uri", "The resource's URI")}));
    list.push(
        json!({"name": "test_inputs", "description": "The answers of rounds of input this server received", "inputSchema": no_args()}),
    );
    list.push(json!({"name": "test_revision", "description": "The protocol revision of this request", "inputSchema": no_args()}));
    list.push(json!({"name": "test_subscriptions", "description": "The URIs this server was asked to watch", "inputSchema": no_args()}));
    list.push(json!({"name": "test_sampling", "description": "Asks the client's model", "inputSchema": string_arg("prompt", "The prompt to send to the LLM")}));
    list.push(json!({"name": "test_elicitation", "description": "Asks the user", "inputSchema": string_arg("message", "The message to show the user")}));
    // capgate's contract mirrors its argument in `Mcp-Param-Region` (SEP-2243).
    list.push(json!({"name": "test_custom_header", "description": "Echoes its region", "inputSchema": string_arg("region", "A region")}));
    list.push(json!({
        "name": "json_schema_2020_12_tool",
        "description": "Tool with JSON Schema 2020-12 features",
        "inputSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}, "contactMethod": {"type": "string", "enum": ["phone", "email"]}, "phone": {"type": "string"}, "email": {"type": "string"}},
            "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
            "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
            "then": {"required": ["phone"]},
            "else": {"required": ["email"]},
            "additionalProperties": false
        }
    }));
    json!({"tools": list})
}

#[derive(Clone, Default)]
struct Upstream {
    /// The least severe level a client asked for (none asked: everything is sent).
    level: Arc<Mutex<Option<LoggingLevel>>>,
    subscribed: Arc<Mutex<BTreeSet<String>>>,
    /// Every answer a retried call brought (2026-07-28 rounds of input), in order.
    inputs: Arc<Mutex<Vec<Value>>>,
}

fn severity(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

impl Upstream {
    async fn log(&self, c: &RequestContext<RoleServer>, message: &str) {
        let wanted = *self.level.lock().unwrap();
        if wanted.is_some_and(|w| severity(w) > severity(LoggingLevel::Info)) {
            return;
        }
        let _ = c
            .peer
            .notify_logging_message(LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(message)))
            .await;
    }

    async fn elicit(
        &self,
        c: &RequestContext<RoleServer>,
        r: &CallToolRequestParams,
        message: &str,
        schema: Value,
    ) -> Result<Result<CallToolResult, CallToolResponse>, ErrorData> {
        let params = json!({"message": message, "requestedSchema": schema});
        let answered = ask_client(c, r, "elicitation/create", params).await?;
        if let Ok(answer) = &answered
            && let Some(all) = &r.input_responses
        {
            // With the keys that came, so that a test sees none went that was not asked.
            let mut logged = answer.clone();
            logged["_keys"] = json!(all.keys().collect::<Vec<_>>());
            self.inputs.lock().unwrap().push(logged);
        }
        Ok(answered.map(|answer| {
            let action = answer["action"].as_str().unwrap_or("?").to_string();
            let content = answer.get("content").cloned().unwrap_or(Value::Null);
            text(format!("Elicitation completed: action={action}, content={content}"))
        }))
    }
}

/// The `requestState` of this fixture's rounds of input: characters a careless relay
/// would re-encode, so that one that does not send it back byte for byte is seen.
const STATE: &str = "fixture state: +/= \u{e9} \"quoted\"";

/// The client's answer to `method`: on 2025-11-25 asked on the session; on 2026-07-28 as a
/// round of input, where the call is answered `input_required` (`Err`) and its retry
/// carries the answer and this fixture's state.
async fn ask_client(
    c: &RequestContext<RoleServer>,
    r: &CallToolRequestParams,
    method: &str,
    params: Value,
) -> Result<Result<Value, CallToolResponse>, ErrorData> {
    if c.meta.protocol_version().is_some_and(|v| v >= ProtocolVersion::V_2026_07_28) {
        if let Some(answer) = r.input_responses.as_ref().and_then(|a| a.get("ask")) {
            if r.request_state.as_deref() != Some(STATE) {
                return Err(ErrorData::invalid_params("the requestState came back altered", None));
            }
            return Ok(Ok(answer.clone()));
        }
        let request: InputRequest = from(json!({"method": method, "params": params}));
        let asked = InputRequiredResult::new(Some(BTreeMap::from([("ask".to_string(), request)])), Some(STATE.to_string()));
        return Ok(Err(asked.into()));
    }
    let answered = match method {
        "elicitation/create" => c
            .peer
            .create_elicitation(from(params))
            .await
            .map(|a| serde_json::to_value(a).unwrap()),
        _ => c.peer.create_message(from(params)).await.map(|a| serde_json::to_value(a).unwrap()),
    };
    answered
        .map(Ok)
        .map_err(|e| ErrorData::internal_error(format!("{method} failed: {e}"), None))
}

/// The suite's own rounds-of-input tools (SEP-2322 scenarios, `input-required-result-*`),
/// each as its description asks; `None`: not one of them.
fn rounds_tool(r: &CallToolRequestParams, c: &RequestContext<RoleServer>) -> Option<Result<CallToolResponse, ErrorData>> {
    let elicit = |message: &str, property: &str, kind: &str| json!({"method": "elicitation/create", "params": {"message": message, "requestedSchema": {"type": "object", "properties": {property: {"type": kind}}, "required": [property]}}});
    let sample = |prompt: &str, max: u32| json!({"method": "sampling/createMessage", "params": {"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": max}});
    let roots = json!({"method": "roots/list", "params": {}});
    let answers = r.input_responses.clone().unwrap_or_default();
    let state = r.request_state.as_deref();
    let ask = |requests: Value, state: Option<&str>| -> Result<CallToolResponse, ErrorData> {
        let requests = from(requests);
        Ok(InputRequiredResult::new(Some(requests), state.map(str::to_string)).into())
    };
    let done = |t: String| -> Result<CallToolResponse, ErrorData> { Ok(text(t).into()) };
    let name_of = |key: &str, field: &str| answers.get(key).and_then(|a| a["content"][field].as_str()).map(str::to_string);
    Some(match r.name.as_ref() {
        // The suite's diagnostic tool for "no request of the server's on a 2026-07-28 call's
        // stream": it asks by a round of input, after a progress-like log line.
        "test_streaming_elicitation" => match answers.get("user_name") {
            Some(_) => done("streamed and answered".into()),
            None => ask(json!({"user_name": elicit("What is your name?", "name", "string")}), None),
        },
        "test_input_required_result_elicitation" => match answers.get("user_name") {
            Some(a) if a["action"] != "accept" || !a["content"].is_object() => {
                Err(ErrorData::invalid_params("user_name is not an accepted elicitation result", None))
            }
            Some(_) => done(format!("Hello, {}!", name_of("user_name", "name").unwrap_or_default())),
            None => ask(json!({"user_name": elicit("What is your name?", "name", "string")}), None),
        },
        "test_input_required_result_sampling" => match answers.get("capital_question") {
            Some(a) => done(a["content"]["text"].as_str().unwrap_or("").to_string()),
            None => ask(json!({"capital_question": sample("What is the capital of France?", 100)}), None),
        },
        "test_input_required_result_list_roots" => match answers.get("client_roots") {
            Some(a) => {
                let uris: Vec<&str> = a["roots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["uri"].as_str())
                    .collect();
                done(format!("Roots: {}", uris.join(", ")))
            }
            None => ask(json!({"client_roots": roots}), None),
        },
        "test_input_required_result_request_state" => match (answers.get("confirm"), state) {
            (Some(_), Some(ROUND_STATE)) => done("state-ok: the requestState came back as it was sent".into()),
            (Some(_), _) => Err(ErrorData::invalid_params("the requestState is not the one this server sent", None)),
            (None, _) => ask(json!({"confirm": elicit("Please confirm", "ok", "boolean")}), Some(ROUND_STATE)),
        },
        "test_input_required_result_multiple_inputs" => {
            if ["user_name", "greeting", "client_roots"].iter().all(|k| answers.contains_key(*k)) && state == Some(ROUND_STATE) {
                done("all three inputs received".into())
            } else {
                let requests = json!({"user_name": elicit("What is your name?", "name", "string"), "greeting": sample("Generate a greeting", 50), "client_roots": roots});
                ask(requests, Some(ROUND_STATE))
            }
        }
        "test_input_required_result_multi_round" => match state {
            Some("round-2") if answers.contains_key("step2") => done("name and color received".into()),
            Some("round-1") if answers.contains_key("step1") => ask(
                json!({"step2": elicit("Step 2: What is your favorite color?", "color", "string")}),
                Some("round-2"),
            ),
            _ => ask(
                json!({"step1": elicit("Step 1: What is your name?", "name", "string")}),
                Some("round-1"),
            ),
        },
        "test_input_required_result_tampered_state" => match state {
            None => ask(json!({"confirm": elicit("Please confirm", "ok", "boolean")}), Some(&sealed_state())),
            Some(s) if codec().open(s).is_ok() => done("the requestState passed its integrity check".into()),
            Some(_) => Err(ErrorData::invalid_params("requestState failed its integrity check", None)),
        },
        "test_input_required_result_capabilities" => {
            if !answers.is_empty() {
                return Some(done(format!(
                    "received: {}",
                    answers.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            let caps = c.meta.client_capabilities().unwrap_or_default();
            let mut requests = serde_json::Map::new();
            if caps.elicitation.is_some() {
                requests.insert("user_name".into(), elicit("What is your name?", "name", "string"));
            }
            if caps.sampling.is_some() {
                requests.insert("greeting".into(), sample("Generate a greeting", 50));
            }
            if caps.roots.is_some() {
                requests.insert("client_roots".into(), roots);
            }
            if requests.is_empty() {
                done("the client declared none of elicitation, sampling and roots".into())
            } else {
                ask(Value::Object(requests), None)
            }
        }
        _ => return None,
    })
}

/// The `requestState` of the suite's round-trip scenarios.
const ROUND_STATE: &str = "round-state: +/=";

/// The integrity-protected state of the tampered-state scenario: its key is this process's.
fn codec() -> &'static rmcp::model::RequestStateCodec {
    static CODEC: std::sync::OnceLock<rmcp::model::RequestStateCodec> = std::sync::OnceLock::new();
    CODEC.get_or_init(|| {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ (std::process::id() as u8));
        rmcp::model::RequestStateCodec::try_new(key).expect("a 32-byte key")
    })
}

fn sealed_state() -> String {
    codec().seal(b"confirm")
}

impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        let mut caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_logging()
            .enable_completions()
            .build();
        caps.tools = Some(Default::default());
        ServerConfig::new(caps).with_server_info(Implementation::new("capgate-conformance-upstream", "1"))
    }

    async fn list_tools(&self, _r: Option<PaginatedRequestParams>, _c: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        Ok(from(tools()))
    }

    async fn call_tool(&self, r: CallToolRequestParams, c: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        if let Some(answer) = rounds_tool(&r, &c) {
            return answer;
        }
        let arg = |name: &str| string_arg(r.arguments.as_ref(), name);
        let result: CallToolResult = match r.name.as_ref() {
            "test_simple_text" => text("This is a simple text response for testing."),
            "test_image_content" => from(json!({"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]})),
            "test_audio_content" => from(json!({"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]})),
            "test_embedded_resource" => from(
                json!({"content": [{"type": "resource", "resource": {"uri": "test://embedded-resource", "mimeType": "text/plain", "text": "This is an embedded resource content."}}]}),
            ),
            "test_multiple_content_types" => from(json!({"content": [
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": PNG, "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "test://mixed-content-resource", "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}}
            ]})),
            // SEP-2575: a server that needs a capability the request did not declare says so.
            "test_missing_capability" => {
                if c.meta.client_capabilities().unwrap_or_default().sampling.is_none() {
                    let needs = rmcp::model::ClientCapabilities::builder().enable_sampling().build();
                    return Err(ErrorData::missing_required_client_capability(needs));
                }
                text("the client declared sampling")
            }
            // SEP-2575: on 2026-07-28 a server logs only to a request that named a level.
            "test_logging_tool" => {
                let stateless = c.meta.protocol_version().is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
                if !stateless || c.meta.log_level().is_some() {
                    self.log(&c, "Logging tool ran").await;
                }
                text("Logging tool executed")
            }
            "test_tool_with_logging" => {
                self.log(&c, "Tool execution started").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.log(&c, "Tool processing data").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.log(&c, "Tool execution completed").await;
                text("Tool with logging executed successfully")
            }
            "test_tool_with_progress" => {
                for (i, step) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if let Some(token) = c.meta.get_progress_token() {
                        let mut p = rmcp::model::ProgressNotificationParam::new(token, step);
                        p.total = Some(100.0);
                        let _ = c.peer.notify_progress(p).await;
                    }
                }
                text("Tool with progress executed successfully")
            }
            "test_error_handling" => from(
                json!({"isError": true, "content": [{"type": "text", "text": "This tool intentionally returns an error for testing"}]}),
            ),
            "test_touch_resource" => {
                let uri = arg("uri");
                // On its session's own stream, as rmcp sends every notification.
                if self.subscribed.lock().unwrap().contains(&uri) {
                    let _ = c
                        .peer
                        .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(uri.clone()))
                        .await;
                }
                text(format!("touched {uri}"))
            }
            "test_subscriptions" => {
                let watched: Vec<String> = self.subscribed.lock().unwrap().iter().cloned().collect();
                text(serde_json::to_string(&watched).unwrap())
            }
            "test_sampling" => {
                let params =
                    rmcp::model::CreateMessageRequestParams::new(vec![rmcp::model::SamplingMessage::user_text(arg("prompt"))], 100);
                match ask_client(&c, &r, "sampling/createMessage", serde_json::to_value(params).unwrap()).await? {
                    Ok(said) => {
                        let said = said["content"]["text"]
                            .as_str()
                            .map_or_else(|| said["content"].to_string(), str::to_string);
                        text(format!("LLM response: {said}"))
                    }
                    Err(asked) => return Ok(asked),
                }
            }
            "test_elicitation" => {
                let schema = json!({"type": "object", "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"}
                }, "required": ["username", "email"]});
                let r = match self.elicit(&c, &r, &arg("message"), schema).await? {
                    Ok(r) => r,
                    Err(asked) => return Ok(asked),
                };
                let said = serde_json::to_value(&r).unwrap_or_default();
                let said = said["content"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .replacen("Elicitation completed: ", "User response: ", 1);
                text(said)
            }
            "test_elicitation_sep1034_defaults" => {
                let schema = json!({"type": "object", "properties": {
                    "name": {"type": "string", "default": "John Doe"},
                    "age": {"type": "integer", "default": 30},
                    "score": {"type": "number", "default": 95.5},
                    "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                    "verified": {"type": "boolean", "default": true}
                }});
                match self
                    .elicit(&c, &r, "Please review and update the form fields with defaults", schema)
                    .await?
                {
                    Ok(r) => r,
                    Err(asked) => return Ok(asked),
                }
            }
            "test_elicitation_sep1330_enums" => {
                let schema = json!({"type": "object", "properties": {
                    "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    "titledSingle": {"type": "string", "oneOf": [{"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"}, {"const": "value3", "title": "Third Option"}]},
                    "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
                    "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                    "titledMulti": {"type": "array", "items": {"anyOf": [{"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"}, {"const": "value3", "title": "Third Choice"}]}}
                }});
                match self.elicit(&c, &r, "Please select options", schema).await? {
                    Ok(r) => r,
                    Err(asked) => return Ok(asked),
                }
            }
            // Which revision this request came on: the one capgate chose for this upstream.
            "test_custom_header" => text(format!("region {}", arg("region"))),
            "test_inputs" => text(serde_json::to_string(&*self.inputs.lock().unwrap()).unwrap()),
            "test_revision" => text(c.meta.protocol_version().map_or_else(|| "session".to_string(), |v| v.to_string())),
            "test_reconnection" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                text("Reconnection test completed")
            }
            "json_schema_2020_12_tool" => text("JSON Schema 2020-12 tool called"),
            other => return Err(ErrorData::invalid_params(format!("unknown tool: {other}"), None)),
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(from(json!({"resources": [
            {"uri": "test://static-text", "name": "static-text", "description": "A static text resource", "mimeType": "text/plain"},
            {"uri": "test://static-binary", "name": "static-binary", "description": "A static binary resource", "mimeType": "image/png"},
            {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"},
            {"uri": "test://asks-first", "name": "asks-first", "description": "A resource whose read asks for the client's roots", "mimeType": "text/plain"}
        ]})))
    }

    async fn list_resource_templates(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(from(json!({"resourceTemplates": [
            {"uriTemplate": "test://template/{id}/data", "name": "template", "description": "Data for an id", "mimeType": "application/json"}
        ]})))
    }

    async fn read_resource(&self, r: ReadResourceRequestParams, _c: RequestContext<RoleServer>) -> Result<ReadResourceResponse, ErrorData> {
        let uri = r.uri.as_str();
        let contents = match uri {
            "test://static-text" => {
                json!([{"uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource."}])
            }
            "test://static-binary" => json!([{"uri": uri, "mimeType": "image/png", "blob": PNG}]),
            "test://watched-resource" => json!([{"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."}]),
            // Not the suite's: a read that asks its client for roots first (capgate's tests).
            "test://asks-first" => match r.input_responses.as_ref().and_then(|a| a.get("roots")) {
                Some(_) if r.request_state.as_deref() != Some(STATE) => {
                    return Err(ErrorData::invalid_params("the requestState came back altered", None));
                }
                Some(a) => json!([{"uri": uri, "mimeType": "text/plain", "text": format!("read with roots {}", a["roots"])}]),
                None => {
                    let ask = json!({"roots": {"method": "roots/list", "params": {}}});
                    return Ok(InputRequiredResult::new(Some(from(ask)), Some(STATE.to_string())).into());
                }
            },
            _ => match uri.strip_prefix("test://template/").and_then(|r| r.strip_suffix("/data")) {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    let body = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")}).to_string();
                    json!([{"uri": uri, "mimeType": "application/json", "text": body}])
                }
                _ => return Err(ErrorData::invalid_params("Resource not found", Some(json!({"uri": uri})))),
            },
        };
        let result: ReadResourceResult = from(json!({ "contents": contents }));
        Ok(result.into())
    }

    async fn subscribe(&self, r: SubscribeRequestParams, _c: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.subscribed.lock().unwrap().insert(r.uri.to_string());
        Ok(())
    }

    async fn unsubscribe(&self, r: UnsubscribeRequestParams, _c: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.subscribed.lock().unwrap().remove(r.uri.as_str());
        Ok(())
    }

    async fn list_prompts(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(from(json!({"prompts": [
            {"name": "test_simple_prompt", "description": "A prompt without arguments"},
            {"name": "test_prompt_with_arguments", "description": "A prompt with two arguments", "arguments": [
                {"name": "arg1", "description": "First test argument", "required": true},
                {"name": "arg2", "description": "Second test argument", "required": true}
            ]},
            {"name": "test_prompt_with_embedded_resource", "description": "A prompt that embeds a resource", "arguments": [
                {"name": "resourceUri", "description": "URI of the resource to embed", "required": true}
            ]},
            {"name": "test_prompt_with_image", "description": "A prompt with an image"},
            {"name": "test_input_required_result_prompt", "description": "A prompt that asks the user for its context first"}
        ]})))
    }

    async fn get_prompt(&self, r: GetPromptRequestParams, _c: RequestContext<RoleServer>) -> Result<GetPromptResponse, ErrorData> {
        let arg = |name: &str| string_arg(r.arguments.as_ref(), name);
        let messages = match r.name.as_str() {
            "test_simple_prompt" => json!([{"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}]),
            "test_prompt_with_arguments" => {
                json!([{"role": "user", "content": {"type": "text", "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2"))}}])
            }
            "test_prompt_with_embedded_resource" => json!([
                {"role": "user", "content": {"type": "resource", "resource": {"uri": arg("resourceUri"), "mimeType": "text/plain", "text": "Embedded resource content for testing."}}},
                {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}}
            ]),
            "test_prompt_with_image" => json!([
                {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
                {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}}
            ]),
            "test_input_required_result_prompt" => match r.input_responses.as_ref().and_then(|a| a.get("user_context")) {
                Some(a) => {
                    let context = a["content"]["context"].as_str().unwrap_or("").to_string();
                    json!([{"role": "user", "content": {"type": "text", "text": format!("Use this context: {context}")}}])
                }
                None => {
                    let ask = json!({"user_context": {"method": "elicitation/create", "params": {"message": "What context should the prompt use?", "requestedSchema": {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}}}});
                    return Ok(InputRequiredResult::new(Some(from(ask)), None).into());
                }
            },
            other => return Err(ErrorData::invalid_params(format!("unknown prompt: {other}"), None)),
        };
        let result: GetPromptResult = from(json!({ "messages": messages }));
        Ok(result.into())
    }

    async fn complete(&self, _r: CompleteRequestParams, _c: RequestContext<RoleServer>) -> Result<CompleteResult, ErrorData> {
        Ok(from(json!({"completion": {"values": [], "total": 0, "hasMore": false}})))
    }

    async fn set_level(&self, r: SetLevelRequestParams, _c: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        *self.level.lock().unwrap() = Some(r.level);
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let bound = listener.local_addr().expect("bound address");
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = true;
    let upstream = Upstream::default();
    let service: StreamableHttpService<Upstream, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(upstream.clone()), Default::default(), config);
    let app = axum::Router::new().nest_service("/mcp", service);
    println!("listening on http://{bound}/mcp");
    let _ = std::io::stdout().flush();
    axum::serve(listener, app).await.expect("serve");
}
