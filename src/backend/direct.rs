//! A streamable-HTTP upstream session driven from the caller's own task: rmcp's transport
//! client (`StreamableHttpClient` for reqwest: headers, JSON and SSE answers, size limits)
//! and rmcp's message types, without rmcp's client worker, whose task hop per request cost
//! more than the request itself (docs/BENCHMARKS.md).
//!
//! The session is opened with `initialize` at the newest protocol version that still has
//! one; a server that answers with a version past it is not spoken to this way (the caller
//! falls back to rmcp's full client). The gateway advertises no client capabilities, so a
//! compliant server sends it no requests of its own; notifications before the answer are
//! skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use futures_util::StreamExt;
use http::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientJsonRpcMessage, ClientNotification, ClientRequest, Implementation,
    InitializeRequest, InitializeRequestParams, InitializedNotification, ListToolsRequest, PaginatedRequestParams, ProtocolVersion,
    RequestId, ServerJsonRpcMessage, ServerResult, Tool,
};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};

/// Why a request on the session failed, and whether the session is still good.
#[derive(Debug)]
pub struct SessionError {
    pub detail: String,
    /// The server no longer knows the session (or the connection is unusable): open a new
    /// one before the next request.
    pub closed: bool,
}

fn err(detail: impl std::fmt::Display, closed: bool) -> SessionError {
    SessionError {
        detail: detail.to_string(),
        closed,
    }
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

pub struct HttpSession {
    http: reqwest::Client,
    uri: Arc<str>,
    session: Option<Arc<str>>,
    /// The configured credential headers plus `MCP-Protocol-Version`.
    headers: HashMap<HeaderName, HeaderValue>,
    next_id: AtomicI64,
    closed: AtomicBool,
}

/// Versions this session speaks: known to rmcp, and still opened with `initialize`.
fn speaks(v: &ProtocolVersion) -> bool {
    v.has_initialize() && ProtocolVersion::KNOWN_VERSIONS.contains(v)
}

impl HttpSession {
    /// Opens a session. `Ok(None)`: the server negotiated a version this route does not
    /// speak; use rmcp's full client instead.
    pub async fn open(
        http: reqwest::Client,
        uri: &str,
        mut headers: HashMap<HeaderName, HeaderValue>,
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
        let s = Self {
            http,
            uri,
            session: session.map(Arc::from),
            headers,
            next_id: AtomicI64::new(1),
            closed: AtomicBool::new(false),
        };
        let note = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(InitializedNotification::default()));
        s.http
            .post_message_with_response_limits(s.uri.clone(), note, s.session.clone(), None, s.headers.clone(), limits())
            .await?
            .expect_accepted_or_json::<reqwest::Error>()?;
        Ok(Some(s))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends one request and waits for its answer (JSON, or the matching message of an SSE
    /// stream). A failure that ends the session marks it closed.
    async fn request(&self, req: ClientRequest) -> Result<ServerResult, SessionError> {
        let id = RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed));
        let r = self.exchange(ClientJsonRpcMessage::request(req, id.clone()), &id).await;
        if let Err(e) = &r
            && e.closed
        {
            self.closed.store(true, Ordering::Relaxed);
        }
        r
    }

    async fn exchange(&self, message: ClientJsonRpcMessage, id: &RequestId) -> Result<ServerResult, SessionError> {
        let answer = self
            .http
            .post_message_with_response_limits(
                self.uri.clone(),
                message,
                self.session.clone(),
                None,
                self.headers.clone(),
                limits(),
            )
            .await?;
        let answer = match answer {
            StreamableHttpPostResponse::Json(m, _) => m,
            StreamableHttpPostResponse::Sse(mut stream, _) => loop {
                let Some(event) = stream.next().await else {
                    return Err(err("the upstream's event stream ended without an answer", false));
                };
                let data = event.map_err(|e| err(e, false))?.data.unwrap_or_default();
                if data.trim().is_empty() {
                    continue;
                }
                let m: ServerJsonRpcMessage = serde_json::from_str(&data).map_err(|e| err(e, false))?;
                if matches!(&m, ServerJsonRpcMessage::Response(r) if r.id == *id)
                    || matches!(&m, ServerJsonRpcMessage::Error(e) if e.id.as_ref() == Some(id))
                {
                    break m;
                }
            },
            // `Accepted`, or a kind of answer newer than this code: not an answer to a request.
            _ => return Err(err("the upstream accepted the request without answering it", false)),
        };
        match answer {
            ServerJsonRpcMessage::Response(r) if r.id == *id => Ok(r.result),
            ServerJsonRpcMessage::Error(e) => Err(err(e.error.message, false)),
            _ => Err(err("the upstream answered another request", false)),
        }
    }

    pub async fn call_tool(&self, params: CallToolRequestParams) -> Result<CallToolResult, SessionError> {
        match self.request(ClientRequest::CallToolRequest(CallToolRequest::new(params))).await? {
            ServerResult::CallToolResult(r) => Ok(r),
            _ => Err(err("the upstream answered `tools/call` with something else", false)),
        }
    }

    pub async fn list_tools(&self) -> Result<Vec<Tool>, SessionError> {
        let mut tools = Vec::new();
        let mut cursor = None;
        // Bounded: a server that keeps handing out cursors cannot hold the start forever.
        for _ in 0..1000 {
            let mut params = PaginatedRequestParams::default();
            params.cursor = cursor;
            match self
                .request(ClientRequest::ListToolsRequest(ListToolsRequest::with_param(params)))
                .await?
            {
                ServerResult::ListToolsResult(page) => {
                    tools.extend(page.tools);
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => return Ok(tools),
                    }
                }
                _ => return Err(err("the upstream answered `tools/list` with something else", false)),
            }
        }
        Err(err("the upstream's tool list did not end after 1000 pages", false))
    }
}

fn limits() -> StreamableHttpResponseLimits {
    StreamableHttpResponseLimits::default()
}
