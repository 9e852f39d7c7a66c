//! A streamable-HTTP upstream session driven from the caller's own task, without rmcp's
//! client worker, whose task hop per request cost more than the request itself
//! (docs/BENCHMARKS.md). rmcp's transport client opens the session; each request on it is
//! then one POST of this module's own, over the same reqwest client: the URL parsed and the
//! headers prepared once, and the answer read straight into the type the request expects
//! (a JSON body, or the matching event of an SSE stream), where rmcp's transport parsed the
//! URL per request and read every answer as an untagged enum of all server messages
//! (together ~30% of an allowed call's instructions outside SHA-256). What the upstream
//! answers is bounded as rmcp bounds it ([`MAX_ANSWER`]), and none of its text but a
//! JSON-RPC error's message reaches the caller's error.
//!
//! The upstream is asked `server/discover` first; where it offers 2026-07-28 there is no
//! session and each request is framed for that revision (`stateless.rs`). Otherwise the
//! session is opened with `initialize` at the newest protocol version that still has one; a
//! server that answers with a version past it is not spoken to this way (the caller falls
//! back to rmcp's full client). The gateway advertises no client capabilities, so a
//! compliant server sends it no requests of its own; notifications before the answer are
//! skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientJsonRpcMessage, ClientNotification, ClientRequest, ErrorData,
    Implementation, InitializeRequest, InitializeRequestParams, InitializedNotification, JsonRpcVersion2_0, ListToolsRequest,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, RequestId, ServerJsonRpcMessage, ServerResult, Tool,
};
use rmcp::transport::streamable_http_client::{StreamableHttpClient, StreamableHttpError, StreamableHttpResponseLimits};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::relay::Asker;
use super::stateless::Called;

/// The W3C `traceparent` header for a request whose `_meta` carries one (the gateway's
/// span of the call): sent as the header too, for upstreams and proxies that trace HTTP.
fn traceparent_of(message: &ClientJsonRpcMessage) -> Option<HeaderValue> {
    let rmcp::model::JsonRpcMessage::Request(r) = message else {
        return None;
    };
    let meta = match &r.request {
        ClientRequest::CallToolRequest(q) => q.params.meta.as_ref(),
        ClientRequest::GetPromptRequest(q) => q.params.meta.as_ref(),
        ClientRequest::ReadResourceRequest(q) => q.params.meta.as_ref(),
        ClientRequest::CompleteRequest(q) => q.params.meta.as_ref(),
        _ => None,
    }?;
    HeaderValue::from_str(meta.get_traceparent()?).ok()
}

/// Most bytes the gateway reads of one answer: a JSON body, or an SSE stream up to and
/// including the event that answers. rmcp's own default for one JSON answer and for one SSE
/// event; an SSE stream is bounded as a whole here, so that a server cannot hold an ever
/// longer stream of notifications in front of its answer either.
pub(crate) const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Why a request on the session failed, and whether the session is still good.
#[derive(Debug)]
pub(crate) struct SessionError {
    pub(crate) detail: String,
    /// The server no longer knows the session (or the connection is unusable): open a new
    /// one before the next request.
    pub(crate) closed: bool,
    /// The server's MissingRequiredClientCapabilityError (2026-07-28, -32021): the client
    /// capabilities it needs and was not told of.
    pub(crate) needs: Option<serde_json::Value>,
}

pub(crate) fn err(detail: impl std::fmt::Display, closed: bool) -> SessionError {
    SessionError {
        detail: detail.to_string(),
        closed,
        needs: None,
    }
}

/// The server's error answer to a request, as a failure.
fn refused_by(e: ErrorData) -> SessionError {
    let mut failure = err(e.message, false);
    if e.code == rmcp::model::ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY {
        let needs = e
            .data
            .as_ref()
            .and_then(|d| d.get("requiredCapabilities"))
            .filter(|c| c.is_object());
        failure.needs = Some(needs.cloned().unwrap_or_else(|| serde_json::json!({})));
    }
    failure
}

impl From<StreamableHttpError<reqwest::Error>> for SessionError {
    fn from(e: StreamableHttpError<reqwest::Error>) -> Self {
        // The server forgot the session, or the connection failed (a restarted server
        // forgets it too): the next request opens a new session rather than try the old one.
        let closed = matches!(
            e,
            StreamableHttpError::SessionExpired | StreamableHttpError::Client(_) | StreamableHttpError::Io(_)
        );
        err(e, closed)
    }
}

pub(crate) struct HttpSession {
    http: reqwest::Client,
    /// Parsed once: reqwest parses a URL given as text (IDNA included) on every request.
    url: reqwest::Url,
    /// Every header of a request on the session: the configured credentials (marked
    /// sensitive), `MCP-Protocol-Version`, `Mcp-Session-Id`, `Accept` and `Content-Type`.
    request_headers: HeaderMap,
    next_id: AtomicI64,
    closed: AtomicBool,
    /// Where the upstream's progress notifications for a call go.
    relays: super::relay::Relays,
    /// Whether the session's own event stream (GET) is being read: from the first resource
    /// subscription on, since that is where an upstream sends resource updates.
    listening: AtomicBool,
    /// Ends that reading when the session is dropped.
    stop: tokio_util::sync::DropGuard,
    /// Spoken at 2026-07-28, without a session (`server/discover` offered it); `None`: a
    /// session opened with `initialize`.
    modern: Option<Box<Modern>>,
}

/// What a 2026-07-28 connection keeps besides its requests' headers.
struct Modern {
    /// The upstream also offers a revision with sessions, where resource subscriptions
    /// (which 2026-07-28 removed) still are.
    offers_session: bool,
    /// That session, opened on the first subscription.
    session: tokio::sync::OnceCell<Arc<HttpSession>>,
    /// The configured headers and URL, to open it with.
    configured: (HashMap<HeaderName, HeaderValue>, Arc<str>),
}

/// Versions this session speaks: known to rmcp, and still opened with `initialize`.
fn speaks(v: &ProtocolVersion) -> bool {
    v.has_initialize() && ProtocolVersion::KNOWN_VERSIONS.contains(v)
}

impl HttpSession {
    /// Opens a connection: the upstream is asked `server/discover` first, and spoken to at
    /// 2026-07-28 where it offers that revision, else on a session. `Ok(None)`: the server
    /// negotiated a version this route does not speak; use rmcp's full client instead.
    pub(crate) async fn open(
        http: reqwest::Client,
        uri: &str,
        headers: HashMap<HeaderName, HeaderValue>,
        relays: super::relay::Relays,
    ) -> Result<Option<Self>, SessionError> {
        if let Some(why) = super::stateless::clashing(&headers) {
            return Err(err(why, true));
        }
        let url = parse_url(uri)?;
        let mut request_headers = prepared(headers.clone());
        request_headers.insert(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_static(super::stateless::REVISION),
        );
        let Some(offer) = super::stateless::discover(&http, &url, &request_headers).await? else {
            return Self::open_session(http, uri, headers, relays).await;
        };
        let modern = Modern {
            offers_session: offer.offers_session,
            session: tokio::sync::OnceCell::new(),
            configured: (headers, Arc::from(uri)),
        };
        Ok(Some(Self::new(http, url, request_headers, relays, Some(Box::new(modern)))))
    }

    fn new(
        http: reqwest::Client,
        url: reqwest::Url,
        request_headers: HeaderMap,
        relays: super::relay::Relays,
        modern: Option<Box<Modern>>,
    ) -> Self {
        Self {
            http,
            url,
            request_headers,
            next_id: AtomicI64::new(1),
            closed: AtomicBool::new(false),
            relays,
            listening: AtomicBool::new(false),
            stop: tokio_util::sync::CancellationToken::new().drop_guard(),
            modern,
        }
    }

    /// Whether requests go at 2026-07-28, without a session.
    pub(crate) fn is_modern(&self) -> bool {
        self.modern.is_some()
    }

    /// The session resource subscriptions go on: this one, or on a 2026-07-28 connection a
    /// session of an earlier revision the upstream offers, opened on first use.
    pub(crate) async fn subscription_session(&self) -> Result<&HttpSession, SessionError> {
        let Some(modern) = &self.modern else {
            return Ok(self);
        };
        if !modern.offers_session {
            return Err(err(
                "the upstream speaks only 2026-07-28, which has no resources/subscribe (and capgate does not speak its subscriptions/listen to upstreams)",
                false,
            ));
        }
        let session = modern
            .session
            .get_or_try_init(|| async {
                let (headers, uri) = &modern.configured;
                match Self::open_session(self.http.clone(), uri, headers.clone(), self.relays.clone()).await? {
                    Some(s) => Ok(Arc::new(s)),
                    None => Err(err("the upstream's session revision is not one capgate speaks", false)),
                }
            })
            .await?;
        Ok(session)
    }

    /// Opens a session with `initialize`. `Ok(None)`: the server negotiated a version
    /// this route does not speak.
    async fn open_session(
        http: reqwest::Client,
        uri: &str,
        mut headers: HashMap<HeaderName, HeaderValue>,
        relays: super::relay::Relays,
    ) -> Result<Option<Self>, SessionError> {
        let uri: Arc<str> = Arc::from(uri);
        let mut params = InitializeRequestParams::default();
        params.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
        params.client_info = Implementation::new("capgate", env!("CARGO_PKG_VERSION"));
        let init = ClientJsonRpcMessage::request(
            ClientRequest::InitializeRequest(InitializeRequest::new(params)),
            RequestId::Number(0),
        );
        let (answer, session) = http
            .post_message_with_response_limits(uri.clone(), init, None, None, headers.clone(), limits())
            .await?
            .expect_initialized::<reqwest::Error>()
            .await?;
        let version = match answer {
            ServerJsonRpcMessage::Response(r) => match r.result {
                ServerResult::InitializeResult(i) => i.protocol_version,
                _ => return Err(err("the upstream answered `initialize` with something else", true)),
            },
            ServerJsonRpcMessage::Error(e) => return Err(err(format!("the upstream refused `initialize`: {}", e.error.message), true)),
            _ => return Err(err("the upstream did not answer `initialize`", true)),
        };
        if !speaks(&version) {
            return Ok(None);
        }
        if let Ok(v) = HeaderValue::from_str(version.as_str()) {
            headers.insert(HeaderName::from_static("mcp-protocol-version"), v);
        }
        let session: Option<Arc<str>> = session.map(Arc::from);
        let note = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(InitializedNotification::default()));
        // rmcp refuses configured headers that clash with the protocol's own (`Accept`,
        // `Mcp-Session-Id`, ...) here, before the prepared set below is built from them.
        http.post_message_with_response_limits(uri.clone(), note, session.clone(), None, headers.clone(), limits())
            .await?
            .expect_accepted_or_json::<reqwest::Error>()?;
        let url = parse_url(&uri)?;
        let mut request_headers = prepared(headers);
        if let Some(sid) = &session {
            let value = HeaderValue::from_str(sid).map_err(|_| err("the upstream's session ID is not a valid header value", true))?;
            request_headers.insert(HeaderName::from_static("mcp-session-id"), value);
        }
        Ok(Some(Self::new(http, url, request_headers, relays, None)))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Starts reading the session's own event stream (once), for the upstream's resource
    /// updates. Its requests there belong to no call and are refused; everything else on it
    /// is dropped. Read again after a break while the session lives; a server without such
    /// a stream (405) is not asked again.
    pub(crate) fn listen(&self) {
        if self.listening.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut headers = self.request_headers.clone();
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.remove(header::CONTENT_TYPE);
        let (ends, relays, stop) = (self.poster(), self.relays.clone(), self.stop.token().clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let opened = ends.http.get(ends.url.clone()).headers(headers.clone()).send().await;
                match opened {
                    Ok(r) if r.status().is_success() => {
                        tokio::select! {
                            () = read_own_stream(r, &ends, &relays) => {}
                            () = stop.cancelled() => return,
                        }
                    }
                    Ok(r) if matches!(r.status(), StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_FOUND) => return,
                    _ => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Sends one request and waits for its answer, read as `R`. A failure that ends the
    /// session marks it closed.
    async fn request<R: DeserializeOwned>(&self, req: ClientRequest) -> Result<R, SessionError> {
        let id = RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed));
        let r = self.exchange(&ClientJsonRpcMessage::request(req, id.clone()), &id, None).await;
        if let Err(e) = &r
            && e.closed
        {
            self.closed.store(true, Ordering::Relaxed);
        }
        r
    }

    /// `asks`: where the server's requests inside the answer's event stream go (a tool
    /// call's); without it, each is refused at once.
    async fn exchange<R: DeserializeOwned>(
        &self,
        message: &ClientJsonRpcMessage,
        id: &RequestId,
        asks: Option<&dyn Asker>,
    ) -> Result<R, SessionError> {
        if self.modern.is_some() {
            let mut message = serde_json::to_value(message).map_err(|_| err(UNENCODABLE, false))?;
            let headers = self.frame(&mut message, asks);
            let body = serde_json::to_vec(&message).map_err(|_| err(UNENCODABLE, false))?;
            return self.exchange_raw(body, headers, id, asks).await;
        }
        let body = serde_json::to_vec(message).map_err(|_| err(UNENCODABLE, false))?;
        let mut headers = self.request_headers.clone();
        if let Some(tp) = traceparent_of(message) {
            headers.insert(HeaderName::from_static("traceparent"), tp);
        }
        self.exchange_raw(body, headers, id, asks).await
    }

    /// A 2026-07-28 request's `_meta` stamped (with the caller's capabilities, where it is
    /// a call's), and the headers that mirror it.
    fn frame(&self, message: &mut serde_json::Value, asks: Option<&dyn Asker>) -> HeaderMap {
        super::stateless::stamp(message, asks.map(Asker::capabilities), asks.and_then(Asker::log_level));
        let mut headers = self.request_headers.clone();
        super::stateless::mirror(message, &mut headers);
        super::stateless::traceparent_header(message, &mut headers);
        headers
    }

    /// A request that may take rounds of input (`tools/call`, `prompts/get`,
    /// `resources/read`), through every round a 2026-07-28 upstream asks for (each answered
    /// by the caller through `asks`, or the request ends), or until the first round whose
    /// requests go back to a 2026-07-28 caller; one exchange otherwise.
    async fn call_rounds<R: DeserializeOwned>(
        &self,
        message: &ClientJsonRpcMessage,
        id: &RequestId,
        asks: Option<&dyn Asker>,
    ) -> Result<Called<R>, SessionError> {
        use super::stateless::{InputRequired, MAX_ROUNDS, retry};
        if self.modern.is_none() {
            return self.exchange(message, id, asks).await.map(Called::Done);
        }
        let mut message = serde_json::to_value(message).map_err(|_| err(UNENCODABLE, false))?;
        let headers = self.frame(&mut message, asks);
        let leaks = |text: &str| self.relays.leaks_credential(text);
        for _ in 0..MAX_ROUNDS {
            let body = serde_json::to_vec(&message).map_err(|_| err(UNENCODABLE, false))?;
            let result: serde_json::Value = self.exchange_raw(body, headers.clone(), id, asks).await?;
            let Some(asked) = InputRequired::of(&result)? else {
                return serde_json::from_value(result)
                    .map(Called::Done)
                    .map_err(|_| err(NOT_AN_ANSWER, false));
            };
            if let Some(asker) = asks.filter(|a| a.passes_input()) {
                return asked.passed(asker, leaks).await.map(Called::Asks);
            }
            let answers = asked.answers(asks, leaks).await?;
            retry(&mut message, answers, asked.state);
        }
        Err(err(format!("the upstream still asked for input after {MAX_ROUNDS} rounds"), false))
    }

    async fn exchange_raw<R: DeserializeOwned>(
        &self,
        body: Vec<u8>,
        headers: HeaderMap,
        id: &RequestId,
        asks: Option<&dyn Asker>,
    ) -> Result<R, SessionError> {
        let response = self
            .http
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            // The connection failed: a restarted server forgets the session too.
            .map_err(|_| err("the upstream could not be reached", true))?;
        let status = response.status();
        let kind = Kind::of(response.headers());
        if status == StatusCode::NOT_FOUND {
            // The server forgot the session (or never had one at this URL): the next
            // request opens a new one rather than try this one again.
            return Err(err("the upstream answered HTTP 404: its session is gone", true));
        }
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            return Err(err("the upstream accepted the request without answering it", false));
        }
        if !status.is_success() {
            // A JSON-RPC error may come with a failure status (not with a refusal of the
            // gateway's own credentials, which is the status alone); anything else is
            // named by its status, never by the body's text.
            if kind == Kind::Json
                && status != StatusCode::UNAUTHORIZED
                && status != StatusCode::FORBIDDEN
                && let Ok(Answer::<IgnoredAny> { error: Some(e), .. }) = parse_body(&read_bounded(response).await?)
            {
                return Err(refused_by(e));
            }
            return Err(err(format!("the upstream answered HTTP {}", status.as_u16()), false));
        }
        match kind {
            Kind::Json => answer_in_body(&read_bounded(response).await?, id),
            Kind::EventStream => answer_from_events(response, id, self, asks).await,
            Kind::Other => Err(err("the upstream answered with neither JSON nor an event stream", false)),
        }
    }

    #[cfg(test)]
    pub(crate) async fn call_tool(&self, params: CallToolRequestParams) -> Result<CallToolResult, SessionError> {
        self.request(ClientRequest::CallToolRequest(CallToolRequest::new(params))).await
    }

    /// A tool call that ends when `cancel` fires, telling the server
    /// (`notifications/cancelled` with the request's id and `reason`).
    pub(crate) async fn call_tool_cancellable(
        &self,
        params: CallToolRequestParams,
        asks: Option<&dyn Asker>,
        cancel: &tokio_util::sync::CancellationToken,
        reason: &str,
    ) -> Result<Called<CallToolResult>, SessionError> {
        let id = RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed));
        let message = ClientJsonRpcMessage::request(ClientRequest::CallToolRequest(CallToolRequest::new(params)), id.clone());
        tokio::select! {
            r = self.call_rounds(&message, &id, asks) => {
                if let Err(e) = &r
                    && e.closed
                {
                    self.closed.store(true, Ordering::Relaxed);
                }
                r
            }
            () = cancel.cancelled() => {
                let note = serde_json::json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": id, "reason": reason},
                });
                self.poster().post(note, "telling the upstream of a cancellation").await;
                Err(err("the caller cancelled the request", false))
            }
        }
    }

    /// Any other request this gateway forwards (`prompts/*`, `resources/*`), answered as `R`.
    pub(crate) async fn send<R: DeserializeOwned>(&self, req: ClientRequest) -> Result<R, SessionError> {
        self.request(req).await
    }

    /// `prompts/get` or `resources/read`, through the rounds of input its upstream may ask
    /// for (see [`Self::call_rounds`]).
    pub(crate) async fn send_rounds<R: DeserializeOwned>(
        &self,
        req: ClientRequest,
        asks: Option<&dyn Asker>,
    ) -> Result<Called<R>, SessionError> {
        let id = RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed));
        let r = self.call_rounds(&ClientJsonRpcMessage::request(req, id.clone()), &id, asks).await;
        if let Err(e) = &r
            && e.closed
        {
            self.closed.store(true, Ordering::Relaxed);
        }
        r
    }

    pub(crate) async fn list_tools(&self) -> Result<Vec<Tool>, SessionError> {
        let mut tools = Vec::new();
        let mut cursor = None;
        // Bounded: a server that keeps handing out cursors cannot hold the start forever.
        for _ in 0..1000 {
            let mut params = PaginatedRequestParams::default();
            params.cursor = cursor;
            let page: ListToolsResult = self
                .request(ClientRequest::ListToolsRequest(ListToolsRequest::with_param(params)))
                .await?;
            tools.extend(page.tools);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(tools),
            }
        }
        Err(err("the upstream's tool list did not end after 1000 pages", false))
    }
}

fn parse_url(uri: &str) -> Result<reqwest::Url, SessionError> {
    reqwest::Url::parse(uri).map_err(|_| err("the upstream URL is not a valid URL", true))
}

/// Every request's headers on a connection: the configured ones (credentials, marked
/// sensitive), and what the streamable HTTP transport requires of each POST.
fn prepared(configured: HashMap<HeaderName, HeaderValue>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(configured.len() + 4);
    headers.extend(configured);
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

/// The handshake's limits (rmcp's transport reads it): rmcp's defaults, which are
/// [`MAX_ANSWER`] for a JSON answer and for an event (a unit test holds them together).
fn limits() -> StreamableHttpResponseLimits {
    StreamableHttpResponseLimits::default()
}

/// Most of a body reserved before its bytes arrive: a usual answer fits in one reservation.
const PREALLOCATE: usize = 64 * 1024;

/// A fixed text: serde's could one day name what it failed on, the call's arguments.
const UNENCODABLE: &str = "the request could not be encoded";

const NOT_AN_ANSWER: &str = "the upstream's answer is not a valid JSON-RPC answer to the request";

/// What an answer's `Content-Type` says it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Json,
    EventStream,
    Other,
}

impl Kind {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        // The media type's essence, before any parameter, without case (RFC 9110 §8.3.1).
        let essence = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim_matches([' ', '\t']));
        match essence {
            Some(e) if e.eq_ignore_ascii_case("application/json") => Kind::Json,
            Some(e) if e.eq_ignore_ascii_case("text/event-stream") => Kind::EventStream,
            _ => Kind::Other,
        }
    }
}

/// One JSON-RPC message from the server, read in one pass as the answer to a request
/// whose result is an `R`. A notification or a request of the server's (which a compliant
/// server sends the gateway only inside an event stream) has neither `result` nor `error`.
#[derive(Deserialize)]
struct Answer<R> {
    #[expect(dead_code, reason = "read to require `\"jsonrpc\": \"2.0\"`; nothing else to do with it")]
    jsonrpc: JsonRpcVersion2_0,
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(default = "none")]
    result: Option<R>,
    #[serde(default)]
    error: Option<ErrorData>,
}

/// `Option::default` without requiring `R: Default` of serde's generated bound.
fn none<R>() -> Option<R> {
    None
}

impl<R> Answer<R> {
    /// What this message says of request `id`: its result or its error; `None` when it is
    /// not about `id`. `any_error`: an error without an ID (a server that could not read the
    /// request) answers it too, as it does in a JSON body, the only message there.
    fn settle(self, id: &RequestId, any_error: bool) -> Option<Result<R, SessionError>> {
        match (self.result, self.error) {
            (Some(_), Some(_)) => Some(Err(err(NOT_AN_ANSWER, false))),
            (Some(r), None) => (self.id.as_ref() == Some(id)).then_some(Ok(r)),
            (None, Some(e)) => (self.id.as_ref() == Some(id) || (any_error && self.id.is_none())).then(|| Err(refused_by(e))),
            (None, None) => None,
        }
    }
}

/// The body, refused past [`MAX_ANSWER`] (before reading, when its length is declared).
pub(crate) async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, SessionError> {
    let too_large = || err(format!("the upstream's answer is larger than {MAX_ANSWER} bytes"), false);
    if response.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_large());
    }
    // The declared length only refuses early: sizing the buffer by it would let an upstream
    // make every concurrent call allocate MAX_ANSWER at the cost of one header line.
    let mut body = Vec::with_capacity(response.content_length().map_or(0, |n| n as usize).min(PREALLOCATE));
    while let Some(chunk) = response.chunk().await.map_err(|_| err("the upstream's answer broke off", false))? {
        if chunk.len() > MAX_ANSWER - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads an event stream up to the event that answers request `id`, skipping the server's
/// notifications, refused once [`MAX_ANSWER`] bytes came without it. A request of the
/// server's (sampling, elicitation, roots) goes to `asks`, the caller's side, which relays
/// it or refuses it; without `asks` it is refused at once: an unanswered one would hold
/// the call until the upstream's timeout.
async fn answer_from_events<R: DeserializeOwned>(
    response: reqwest::Response,
    id: &RequestId,
    session: &HttpSession,
    asks: Option<&dyn Asker>,
) -> Result<R, SessionError> {
    let mut events = sse_stream::SseStream::from_bytes_stream(bounded(response));
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            sse_stream::Error::Body(b) if matches!(b.downcast_ref::<Unread>(), Some(Unread::TooLarge)) => err(
                format!("the upstream's event stream passed {MAX_ANSWER} bytes without an answer"),
                false,
            ),
            _ => err("the upstream's event stream broke off", false),
        })?;
        let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
            continue;
        };
        match server_message(&data) {
            Some(ServerMessage::Request { id, method, params }) => {
                session.answer_server_request(id, method, params, asks).await;
                continue;
            }
            Some(ServerMessage::Progress(params)) => {
                session.relays.deliver_json(&params);
                continue;
            }
            // Routed by its URI, wherever it came.
            Some(ServerMessage::Updated(params)) => {
                session.relays.resource_updated_json(&params).await;
                continue;
            }
            // Tied to this call by the stream it came on; without a caller's side it reaches
            // nobody.
            Some(ServerMessage::Log(params)) => {
                if let Some(asker) = asks {
                    let leaks = session.relays.leaks_credential(&params.to_string());
                    asker.log(params, leaks).await;
                }
                continue;
            }
            None => {}
        }
        if let Some(answer) = answer_in_event(&data, id) {
            return answer;
        }
    }
    Err(err("the upstream's event stream ended without an answer", false))
}

/// A JSON body's answer to request `id`: the body is the one message, so it must answer.
pub(crate) fn answer_in_body<R: DeserializeOwned>(body: &[u8], id: &RequestId) -> Result<R, SessionError> {
    parse_body::<R>(body)?
        .settle(id, true)
        .unwrap_or_else(|| Err(err("the upstream answered another request", false)))
}

/// A JSON body read as one message, for a result or for a failure's error alike.
fn parse_body<R: DeserializeOwned>(body: &[u8]) -> Result<Answer<R>, SessionError> {
    // serde_json does not check the UTF-8 of what it skips (an unknown field's strings): the
    // whole body is checked first, so that nothing is taken from text that is not JSON.
    let text = std::str::from_utf8(body).map_err(|_| err(NOT_AN_ANSWER, false))?;
    serde_json::from_str(text).map_err(|_| err(NOT_AN_ANSWER, false))
}

/// What one event's data says of request `id`; `None`: it is about something else (a
/// notification, a request of the server's, another request's answer), read on.
pub(crate) fn answer_in_event<R: DeserializeOwned>(data: &str, id: &RequestId) -> Option<Result<R, SessionError>> {
    // The envelope first, so that another message's result (of another type) is skipped
    // rather than misread; the answer itself is then read once more, as `R`.
    let envelope: Answer<IgnoredAny> = match serde_json::from_str(data) {
        Ok(e) => e,
        Err(_) => return Some(Err(err(NOT_AN_ANSWER, false))),
    };
    match envelope.settle(id, false)? {
        Err(e) => Some(Err(e)),
        Ok(IgnoredAny) => Some(match serde_json::from_str::<Answer<R>>(data) {
            Ok(answer) => answer.settle(id, false).unwrap_or_else(|| Err(err(NOT_AN_ANSWER, false))),
            Err(_) => Err(err(NOT_AN_ANSWER, false)),
        }),
    }
}

/// What an event from the server is, where it is not an answer: a request of the server's
/// to its client, a progress notification or a log message. Read once per event.
enum ServerMessage {
    Request {
        id: serde_json::Value,
        method: String,
        params: serde_json::Value,
    },
    Progress(serde_json::Value),
    Log(serde_json::Value),
    /// `notifications/resources/updated`: routed by its URI to the sessions subscribed.
    Updated(serde_json::Value),
}

fn server_message(data: &str) -> Option<ServerMessage> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        id: Option<serde_json::Value>,
        method: Option<String>,
        params: Option<serde_json::Value>,
    }
    let e: Envelope = serde_json::from_str(data).ok()?;
    match (e.id, e.method) {
        (Some(id), Some(method)) if id.is_string() || id.is_i64() || id.is_u64() => Some(ServerMessage::Request {
            id,
            method,
            params: e.params.unwrap_or(serde_json::Value::Null),
        }),
        (None, Some(method)) if method == "notifications/progress" => e.params.map(ServerMessage::Progress),
        (None, Some(method)) if method == "notifications/message" => e.params.map(ServerMessage::Log),
        (None, Some(method)) if method == "notifications/resources/updated" => e.params.map(ServerMessage::Updated),
        _ => None,
    }
}

/// The refusal of a server's request that reached no caller: "method not found", what a
/// client without the capability answers.
pub(crate) fn not_relayed(method: &str, why: &str) -> ErrorData {
    ErrorData::new(
        rmcp::model::ErrorCode::METHOD_NOT_FOUND,
        format!("method not found: {} ({why})", crate::request::clean(method, 64)),
        None,
    )
}

/// Where the gateway's messages that answer nothing go (a cancellation, an answer to the
/// server's request): a POST on the session, whose own answer is not waited for.
struct Poster {
    http: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    /// 2026-07-28: each message's `Mcp-Method` header mirrors it.
    mirrored: bool,
}

impl Poster {
    /// `what`: the message, for the debug line if it cannot be sent.
    async fn post(&self, body: serde_json::Value, what: &str) {
        let mut headers = self.headers.clone();
        if self.mirrored {
            super::stateless::mirror(&body, &mut headers);
        }
        let sent = self
            .http
            .post(self.url.clone())
            .headers(headers)
            .body(body.to_string())
            .send()
            .await;
        if let Err(e) = sent {
            tracing::debug!("{what} failed: {e}");
        }
    }
}

/// An event stream's bytes, refused past [`MAX_ANSWER`]: neither an answer nor the session's
/// own stream may grow without bound (an event that never ends included).
pub(crate) fn bounded(response: reqwest::Response) -> impl futures_util::Stream<Item = Result<Bytes, Unread>> {
    let mut seen = 0usize;
    response.bytes_stream().map(move |chunk: Result<Bytes, reqwest::Error>| {
        let chunk = chunk.map_err(|_| Unread::BrokeOff)?;
        seen = seen.saturating_add(chunk.len());
        if seen > MAX_ANSWER { Err(Unread::TooLarge) } else { Ok(chunk) }
    })
}

/// The session's own event stream, up to its end: resource updates to their subscribers,
/// requests refused (they belong to no call), the rest dropped.
async fn read_own_stream(response: reqwest::Response, ends: &Poster, relays: &super::relay::Relays) {
    // Past the bound it is opened again (by the caller's loop).
    let mut events = sse_stream::SseStream::from_bytes_stream(bounded(response));
    while let Some(Ok(event)) = events.next().await {
        let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
            continue;
        };
        match server_message(&data) {
            Some(ServerMessage::Updated(params)) => relays.resource_updated_json(&params).await,
            Some(ServerMessage::Request { id, method, .. }) => {
                let error = not_relayed(&method, "it came on the session's own stream, tied to no caller's call");
                let what = format!("answering the upstream's {} request", crate::request::clean(&method, 64));
                ends.post(serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error}), &what)
                    .await;
            }
            _ => {}
        }
    }
}

impl HttpSession {
    /// Answers a request of the server's with what the caller's side made of it (its
    /// client's answer, or a refusal); a failure to deliver the answer is the server's to
    /// time out. The server's request id goes back as it came: the caller never sees it.
    async fn answer_server_request(&self, id: serde_json::Value, method: String, params: serde_json::Value, asks: Option<&dyn Asker>) {
        let answer = match asks {
            None => Err(not_relayed(
                &method,
                "capgate relays an upstream's requests only during a tool call",
            )),
            Some(asker) => {
                // Its text would reach the caller: refused (and recorded) without relaying.
                let leaks = self.relays.leaks_credential(&params.to_string());
                asker
                    .ask(
                        &method,
                        params,
                        leaks.then_some("the request holds one of the upstream's credentials"),
                    )
                    .await
            }
        };
        let body = match answer {
            Ok(result) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(error) => serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error}),
        };
        self.poster()
            .post(
                body,
                &format!("answering the upstream's {} request", crate::request::clean(&method, 64)),
            )
            .await;
    }

    fn poster(&self) -> Poster {
        Poster {
            http: self.http.clone(),
            url: self.url.clone(),
            headers: self.request_headers.clone(),
            mirrored: self.modern.is_some(),
        }
    }
}

/// Why an event stream could not be read further.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unread {
    #[error("the stream broke off")]
    BrokeOff,
    #[error("the stream is too large")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    /// What the scripted upstream answers a `tools/call` with `id`.
    type Script = fn(Value) -> Response;

    /// A real HTTP server that opens sessions as a compliant MCP server does and answers
    /// every `tools/call` with `script`; the opened session, or the handshake's error.
    async fn session(script: Script) -> HttpSession {
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
                match msg["method"].as_str() {
                    Some("initialize") => (
                        [("content-type", "application/json"), ("mcp-session-id", "s-1")],
                        json!({"jsonrpc": "2.0", "id": msg["id"], "result": {
                            "protocolVersion": ProtocolVersion::LATEST_WITH_INITIALIZE.as_str(),
                            "capabilities": {}, "serverInfo": {"name": "scripted", "version": "1"}}})
                        .to_string(),
                    )
                        .into_response(),
                    Some("notifications/initialized") => StatusCode::ACCEPTED.into_response(),
                    // As a 2025-11-25 server answers a request without a session.
                    Some("server/discover") => StatusCode::BAD_REQUEST.into_response(),
                    _ => script(msg["id"].clone()),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/mcp");
        // As the binary does at start: reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        match HttpSession::open(reqwest::Client::new(), &url, HashMap::new(), super::super::relay::for_tests()).await {
            Ok(Some(s)) => s,
            Ok(None) => panic!("the scripted server's version is spoken"),
            Err(e) => panic!("handshake: {}", e.detail),
        }
    }

    fn json_answer(status: u16, body: Value) -> Response {
        (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json; charset=utf-8")],
            body.to_string(),
        )
            .into_response()
    }

    fn sse(events: &[Value]) -> Response {
        let text: String = events.iter().map(|e| format!("event: message\ndata: {e}\n\n")).collect();
        ([("content-type", "text/event-stream")], format!(": priming\n\n{text}")).into_response()
    }

    fn result(text: &str) -> Value {
        json!({"content": [{"type": "text", "text": text}], "isError": false})
    }

    async fn call(s: &HttpSession) -> Result<CallToolResult, SessionError> {
        s.call_tool(CallToolRequestParams::new("t")).await
    }

    fn text_of(r: &CallToolResult) -> String {
        serde_json::to_value(r).unwrap()["content"][0]["text"].as_str().unwrap().to_string()
    }

    /// A server of 2026-07-28 only (its `server/discover` answered on an event stream): no
    /// session, and each request says its revision in `_meta` and mirrors its method and
    /// name in headers. Every request it got is in the returned log.
    #[tokio::test]
    async fn a_server_that_offers_2026_07_28_is_spoken_to_without_a_session() {
        let seen: Arc<std::sync::Mutex<Vec<(HeaderMap, Value)>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| async move {
                let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
                log.lock().unwrap().push((headers, msg.clone()));
                match msg["method"].as_str() {
                    Some("server/discover") => sse(&[json!({"jsonrpc": "2.0", "id": msg["id"], "result": {
                        "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                        "serverInfo": {"name": "modern", "version": "1"}}})]),
                    Some("initialize") => StatusCode::BAD_REQUEST.into_response(),
                    _ => json_answer(200, json!({"jsonrpc": "2.0", "id": msg["id"], "result": result("ran")})),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("http://{addr}/mcp");
        let s = match HttpSession::open(reqwest::Client::new(), &url, HashMap::new(), super::super::relay::for_tests()).await {
            Ok(Some(s)) => s,
            Ok(None) => panic!("a 2026-07-28 server is spoken"),
            Err(e) => panic!("discover: {}", e.detail),
        };
        assert!(s.is_modern());
        assert_eq!(text_of(&call(&s).await.unwrap()), "ran");
        assert!(s.subscription_session().await.is_err(), "it offers no revision with subscriptions");
        let seen = seen.lock().unwrap();
        let methods: Vec<&str> = seen.iter().map(|(_, m)| m["method"].as_str().unwrap_or("")).collect();
        assert_eq!(methods, ["server/discover", "tools/call"], "no initialize, no session");
        let (headers, call) = &seen[1];
        assert_eq!(headers["mcp-method"], "tools/call");
        assert_eq!(headers["mcp-name"], "t");
        assert_eq!(headers["mcp-protocol-version"], "2026-07-28");
        assert!(headers.get("mcp-session-id").is_none());
        assert_eq!(call["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"], "2026-07-28");
        assert_eq!(call["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"], json!({}));
    }

    #[test]
    fn the_answer_bound_is_rmcps_own_default() {
        let d = StreamableHttpResponseLimits::default();
        assert_eq!((d.max_json_response_size, d.max_sse_event_size), (MAX_ANSWER, MAX_ANSWER));
    }

    #[tokio::test]
    async fn a_json_answer_is_read_as_the_result_and_headers_are_sent_every_time() {
        let s = session(|id| json_answer(200, json!({"jsonrpc": "2.0", "id": id, "result": result("ok")}))).await;
        for _ in 0..3 {
            assert_eq!(text_of(&call(&s).await.unwrap()), "ok");
        }
        assert_eq!(s.request_headers.get("mcp-session-id").unwrap(), "s-1");
        assert!(!s.is_closed());
    }

    #[tokio::test]
    async fn an_event_stream_is_read_past_notifications_and_other_answers_to_the_one_for_this_request() {
        let s = session(|id| {
            sse(&[
                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}),
                // A server request (the gateway answers none) and another request's answer,
                // whose result is of another type: both skipped, not misread.
                json!({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"}),
                json!({"jsonrpc": "2.0", "id": 999, "result": {"tools": []}}),
                json!({"jsonrpc": "2.0", "id": id, "result": result("streamed")}),
            ])
        })
        .await;
        assert_eq!(text_of(&call(&s).await.unwrap()), "streamed");
    }

    #[tokio::test]
    async fn refusals_and_failures_are_errors_that_say_what_happened_and_echo_nothing_else() {
        let cases: [(Script, &str, bool); 11] = [
            (
                |id| {
                    json_answer(
                        200,
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "no such tool"}}),
                    )
                },
                "no such tool",
                false,
            ),
            (
                |id| {
                    json_answer(
                        500,
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "it broke"}}),
                    )
                },
                "it broke",
                false,
            ),
            (
                |_| (StatusCode::INTERNAL_SERVER_ERROR, "secret-stack-trace").into_response(),
                "HTTP 500",
                false,
            ),
            (
                |_| {
                    (
                        StatusCode::UNAUTHORIZED,
                        [("content-type", "application/json")],
                        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"secret-detail"}}"#,
                    )
                        .into_response()
                },
                "HTTP 401",
                false,
            ),
            (|_| StatusCode::NOT_FOUND.into_response(), "HTTP 404", true),
            (|_| StatusCode::ACCEPTED.into_response(), "without answering", false),
            (
                |_| ([("content-type", "text/plain")], "secret-text").into_response(),
                "neither JSON nor an event stream",
                false,
            ),
            (
                |id| {
                    json_answer(
                        200,
                        json!({"jsonrpc": "2.0", "id": id, "result": result("x"), "error": {"code": 1, "message": "both"}}),
                    )
                },
                "not a valid JSON-RPC answer",
                false,
            ),
            (
                |_| sse(&[json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "secret-log"}})]),
                "ended without an answer",
                false,
            ),
            // Found by the fuzzer: invalid UTF-8 where serde_json skips without checking.
            (
                |id| {
                    let mut body = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[],"extra":"#).into_bytes();
                    body.extend_from_slice(b"\"\x80\"}}");
                    ([("content-type", "application/json")], body).into_response()
                },
                "not a valid JSON-RPC answer",
                false,
            ),
            // The same on a failure: its error message is not taken from text that is not JSON.
            (
                |id| {
                    let mut body =
                        format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":1,"message":"secret-msg"}},"extra":"#).into_bytes();
                    body.extend_from_slice(b"\"\x80\"}");
                    (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "application/json")], body).into_response()
                },
                "HTTP 500",
                false,
            ),
        ];
        for (script, says, closes) in cases {
            let s = session(script).await;
            let e = call(&s).await.unwrap_err();
            assert!(e.detail.contains(says), "`{}` should say `{says}`", e.detail);
            assert!(!e.detail.contains("secret"), "`{}` echoes the upstream's text", e.detail);
            assert_eq!((e.closed, s.is_closed()), (closes, closes), "{}", e.detail);
        }
    }

    #[tokio::test]
    async fn an_answer_past_the_bound_is_refused_whether_declared_streamed_or_spread_over_events() {
        let declared = session(|id| {
            let big = "x".repeat(MAX_ANSWER);
            json_answer(200, json!({"jsonrpc": "2.0", "id": id, "result": result(&big)}))
        })
        .await;
        let e = call(&declared).await.unwrap_err();
        assert!(e.detail.contains("larger than"), "{}", e.detail);

        // No Content-Length: the bound is counted while reading.
        let streamed = session(|id| {
            let big = json!({"jsonrpc": "2.0", "id": id, "result": result(&"x".repeat(MAX_ANSWER))}).to_string();
            let chunks = big
                .into_bytes()
                .chunks(1 << 20)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>();
            (
                [("content-type", "application/json")],
                axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
            )
                .into_response()
        })
        .await;
        let e = call(&streamed).await.unwrap_err();
        assert!(e.detail.contains("larger than"), "{}", e.detail);

        // Many small notifications, none over the bound alone, hold no answer back forever.
        let spread = session(|_| {
            let note =
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "y".repeat(1 << 16)}});
            sse(&vec![note; MAX_ANSWER / (1 << 16) + 2])
        })
        .await;
        let e = call(&spread).await.unwrap_err();
        assert!(e.detail.contains("without an answer"), "{}", e.detail);
        assert!(e.detail.contains("passed"), "{}", e.detail);
    }
}
