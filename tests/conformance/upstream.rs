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
            && r.input_responses.is_some()
        {
            self.inputs.lock().unwrap().push(answer.clone());
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
            {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"}
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
            {"name": "test_prompt_with_image", "description": "A prompt with an image"}
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
