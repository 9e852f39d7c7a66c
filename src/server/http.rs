//! The transport guard: runs on every HTTP request to `/mcp` before `rmcp` sees it.
//!
//! In order: trace ID; Origin (403); token outside the Authorization header (401); body
//! limit (413); authentication (401/503); body well-formed without duplicate keys; session
//! ownership (a session belongs to the identity that opened it). Each refusal is recorded
//! before it is answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use crate::audit::{AuditRecord, ClientRef};
use crate::decision::{Decision, ReasonCode};
use crate::pipeline::authn::{Authenticated, Authenticator, AuthnError};
use crate::pipeline::{CallCtx, Runtime, base_record};
use crate::trace::TraceId;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::budget::FailureBudget;
use super::jsonguard::{BodyError, check_body};
use super::listener::Peer;
use super::mcp::RequestCtx;
use super::respond;

const SESSION_HEADER: &str = "mcp-session-id";

pub struct HttpState {
    pub rt: Arc<Runtime>,
    /// session id → its owner and use. INVARIANT: every MCP session on this listener was
    /// opened through the guard, so a session ID missing here is refused: never passed on as
    /// if it had no owner.
    sessions: Mutex<HashMap<String, Session>>,
    /// Names this listener answers to (DNS-rebinding defence), parsed once: see
    /// [`HttpState::host_allowed`].
    hosts: Vec<(String, Option<u16>)>,
    /// Origins allowed to send requests: the configured ones and this listener's own (the
    /// console calls the API from its own origin).
    origins: Vec<String>,
    /// rmcp's sessions on this listener, for the direct route (`fast.rs`) to ask about.
    pub mcp_sessions: Option<Arc<LocalSessionManager>>,
    /// Authentication failures per source (`budget.rs`).
    failures: FailureBudget,
    /// Time from a `tools/call`'s arrival (headers read) to its answer being ready.
    pub call_seconds: crate::metrics::Histogram,
}

/// One MCP session, as the guard knows it.
struct Session {
    /// Issuer + subject of the identity that opened it.
    owner: String,
    /// When a request of its owner last started or finished on it.
    used: Instant,
    /// Requests in flight on it (a call waiting for its approval may take minutes): a busy
    /// session is never idle.
    busy: u32,
}

/// A request in flight on a session (counted in its `busy` when the owner was checked),
/// until its answer, streamed or not, is finished or dropped.
struct InFlight {
    state: Arc<HttpState>,
    sid: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.state.sessions.lock()
            && let Some(s) = m.get_mut(&self.sid)
        {
            s.busy = s.busy.saturating_sub(1);
            s.used = Instant::now();
        }
    }
}

/// Removes sessions until `scope` (one identity's sessions, or with `None` the whole table)
/// holds no more than `cap`, and returns their IDs. Idle ones go before busy ones (a busy one
/// may be a call waiting for its approval); then those of the identity holding the most in
/// the scope (so that one identity opening many loses its own first); then the least
/// recently used. `opened`, the session just opened, is never one of them: it would count as
/// idle, and a client whose other sessions are all busy would be handed a closed ID.
fn over_limit(m: &mut HashMap<String, Session>, opened: &str, scope: Option<&str>, cap: usize) -> Vec<String> {
    let in_scope = |s: &Session| scope.is_none_or(|owner| s.owner == owner);
    let mut held: HashMap<&str, usize> = HashMap::new();
    for s in m.values().filter(|s| in_scope(s)) {
        *held.entry(s.owner.as_str()).or_default() += 1;
    }
    let total: usize = held.values().sum();
    if total <= cap {
        return Vec::new();
    }
    let mut order: Vec<(bool, std::cmp::Reverse<usize>, Instant, &String)> = m
        .iter()
        .filter(|(id, s)| *id != opened && in_scope(s))
        .map(|(id, s)| {
            let holds = held.get(s.owner.as_str()).copied().unwrap_or(0);
            (s.busy > 0, std::cmp::Reverse(holds), s.used, id)
        })
        .collect();
    order.sort();
    let gone: Vec<String> = order.into_iter().take(total - cap).map(|(_, _, _, id)| id.clone()).collect();
    for id in &gone {
        m.remove(id);
    }
    gone
}

/// Closes sessions the guard has dropped from its table in rmcp too, freeing their workers.
pub async fn close_in_rmcp(sessions: &LocalSessionManager, ids: Vec<String>) {
    use rmcp::transport::streamable_http_server::session::SessionManager;
    for id in ids {
        let _ = sessions.close_session(&Arc::from(id.as_str())).await;
    }
}

impl HttpState {
    /// Forgets the sessions with nothing in flight and unused for longer than `idle`, and
    /// returns their IDs, for rmcp to close them too.
    pub fn take_idle_sessions(&self, idle: Duration) -> Vec<String> {
        let mut idle_ids = Vec::new();
        if let Ok(mut m) = self.sessions.lock() {
            m.retain(|id, s| {
                let keep = s.busy > 0 || s.used.elapsed() <= idle;
                if !keep {
                    idle_ids.push(id.clone());
                }
                keep
            });
        }
        idle_ids
    }

    pub fn new(rt: Arc<Runtime>, hosts: Vec<String>) -> Self {
        let mut origins = rt.env.allowed_origins.clone();
        for h in &hosts {
            origins.push(format!("http://{h}"));
            origins.push(format!("https://{h}"));
        }
        Self {
            sessions: Mutex::new(HashMap::new()),
            hosts: hosts.iter().filter_map(|h| authority(h)).collect(),
            origins,
            mcp_sessions: None,
            failures: FailureBudget::new(rt.env.auth_failure_limit),
            call_seconds: Default::default(),
            rt,
        }
    }

    /// Records a refusal that comes before or at authentication, then answers it. A 401 to
    /// a source over its authentication-failure budget is recorded as such and answered
    /// only after [`super::budget::HOLD`].
    pub async fn refuse_unauthenticated(&self, peer: &Peer, mut rec: AuditRecord, resp: Response) -> Response {
        let over = resp.status() == StatusCode::UNAUTHORIZED && self.failures.over(peer.addr.ip());
        if over {
            rec.reason.push_str(&format!(
                "; the source is over its authentication-failure budget: answer held {} ms",
                super::budget::HOLD.as_millis()
            ));
        }
        if !over {
            return record_then(&self.rt, rec, resp).await;
        }
        // The answer is held anyway: the record may wait for a shared fsync meanwhile, and
        // the answer still goes only once it is durable.
        let trace = TraceId::from_record(&rec.trace_id);
        let (recorded, ()) = tokio::join!(self.rt.audit.append_unhurried(rec), self.failures.hold());
        answer_if_recorded(recorded, resp, &trace)
    }

    /// Whether this listener answers to `host` (a `Host` header): DNS-rebinding defence.
    /// Compared as rmcp compares it (case-insensitive name, IPv6 brackets ignored, and the
    /// port only where the allowed entry names one), so both routes agree.
    fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some((name, port)) = host.and_then(authority) else {
            return false;
        };
        self.hosts
            .iter()
            .any(|(a_name, a_port)| *a_name == name && a_port.is_none_or(|p| port == Some(p)))
    }

    /// Refusals that come before authentication and apply to every route that acts: a
    /// `Host` this listener does not serve (403, DNS rebinding), a foreign `Origin` (403)
    /// and a token in the query string (401). The record is written by the caller before
    /// answering.
    pub fn pre_auth(&self, headers: &http::HeaderMap, query: Option<&str>, call: &CallCtx) -> Option<(AuditRecord, Response)> {
        let rt = &self.rt;
        // Nobody is authenticated yet: the record names no principal and no tool.
        let record = |code: ReasonCode, reason: &str| base_record(rt, call, None, None, Decision::Deny, code, reason);
        let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok());
        if !self.host_allowed(host) {
            let reason = format!("Host `{}` is not served by this listener", clean(host.unwrap_or(""), 128));
            return Some((record(ReasonCode::OriginRefused, &reason), respond::forbidden_host(&call.trace)));
        }
        if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok())
            && !self.origins.iter().any(|o| o == origin)
        {
            let reason = format!("Origin `{}` is not allowed", clean(origin, 128));
            return Some((record(ReasonCode::OriginRefused, &reason), respond::forbidden_origin(&call.trace)));
        }
        if token_in_query(query) {
            let resp = respond::unauthorized(&AuthnError::OutsideHeader, &rt.env.resource_metadata_url(), true, &call.trace);
            return Some((record(ReasonCode::TokenOutsideHeader, "a token was sent in the query string"), resp));
        }
        None
    }
}

/// A `host[:port]` authority, its name lowercased and without IPv6 brackets.
fn authority(s: &str) -> Option<(String, Option<u16>)> {
    let a = http::uri::Authority::try_from(s.trim()).ok()?;
    let name = a.host().trim_matches(['[', ']']).to_ascii_lowercase();
    (!name.is_empty()).then_some((name, a.port_u16()))
}

fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_str_parts<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Query parameters that carry a token: refused wherever they appear (RFC 6750 §2.3 is a
/// leak into logs and history).
fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            let k = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            matches!(
                k.as_str(),
                "access_token" | "token" | "id_token" | "bearer" | "authorization" | "jwt"
            )
        })
    })
}

/// The facts of a JSON-RPC body that a denial record should carry. The arguments' digest is
/// left to [`args_digest_of`]: only a refusal needs it, and it is the costliest fact.
fn rpc_facts(body: &Value) -> (Option<String>, Value) {
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let tool = body
        .get("params")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|_| body.get("method").and_then(Value::as_str) == Some("tools/call"))
        .map(|s| clean(s, 128));
    (tool, id)
}

fn args_digest_of(parsed: &Option<Result<Value, BodyError>>) -> Option<String> {
    match parsed {
        Some(Ok(body)) => body.pointer("/params/arguments").map(crate::canonical::digest),
        _ => None,
    }
}

pub async fn guard(State(st): State<Arc<HttpState>>, ConnectInfo(peer): ConnectInfo<Peer>, req: Request, next: Next) -> Response {
    let rt = &st.rt;
    let arrived = Instant::now();
    let trace = TraceId::from_traceparent_or_new(header_str(&req, "traceparent"));
    let client = ClientRef {
        addr: Some(peer.addr.to_string()),
        user_agent: header_str(&req, "user-agent").map(|u| clean(u, 256)),
    };
    let session_id = header_str(&req, SESSION_HEADER).map(|s| clean(s, 128));
    let mut call = CallCtx {
        trace: trace.clone(),
        request_id: None,
        session_id: session_id.clone(),
        client,
    };

    let deny = |call: &CallCtx, code: ReasonCode, reason: String, tool: Option<String>, args_digest: Option<String>| {
        let mut rec = base_record(rt, call, None, tool.as_deref(), Decision::Deny, code, &reason);
        rec.args_digest = args_digest;
        rec
    };

    // A browser page on another site, or under a rebound name, must never drive the
    // gateway; tokens only in headers. rmcp's own Host check stays behind this one.
    if let Some((rec, resp)) = st.pre_auth(req.headers(), req.uri().query(), &call) {
        return st.refuse_unauthenticated(&peer, rec, resp).await;
    }

    let limit = rt.env.max_body_bytes;
    let declared = header_str(&req, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        let rec = deny(
            &call,
            ReasonCode::BodyTooLarge,
            format!("body of {} bytes is over the limit of {limit}", declared.unwrap_or(0)),
            None,
            None,
        );
        return record_then(rt, rec, respond::too_large(limit, &trace)).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, limit).await else {
        let rec = deny(
            &call,
            ReasonCode::BodyTooLarge,
            format!("body is over the limit of {limit} bytes"),
            None,
            None,
        );
        return record_then(rt, rec, respond::too_large(limit, &trace)).await;
    };
    let parsed = if parts.method == Method::POST {
        Some(check_body(&bytes))
    } else {
        None
    };
    let (tool, rpc_id) = match &parsed {
        Some(Ok(v)) => rpc_facts(v),
        _ => (None, Value::Null),
    };
    // SEP-414: a client may carry its trace in `_meta.traceparent` instead of the header.
    if header_str_parts(&parts, "traceparent").is_none()
        && let Some(Ok(v)) = &parsed
        && let Some(tp) = v.pointer("/params/_meta/traceparent").and_then(Value::as_str)
    {
        call.trace = TraceId::from_traceparent_or_new(Some(tp));
    }
    let trace = call.trace.clone();

    let (verified, token_sent) = authenticate(rt, &parts.headers, &peer).await;
    let auth = match verified {
        Ok(a) => a,
        Err(e) => {
            let rec = deny(&call, e.reason_code(), e.audit_reason(), tool, args_digest_of(&parsed));
            let resp = respond::unauthorized(&e, &rt.env.resource_metadata_url(), token_sent, &trace);
            return st.refuse_unauthenticated(&peer, rec, resp).await;
        }
    };

    match &parsed {
        Some(Err(BodyError::Syntax)) => {
            let mut rec = deny(
                &call,
                ReasonCode::MalformedRequest,
                "the body is not one well-formed JSON value".into(),
                None,
                None,
            );
            rec.principal = Some(auth.principal().into());
            return record_then(
                rt,
                rec,
                respond::jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    -32700,
                    "parse error: the body is not valid JSON",
                    "malformed_request",
                    &trace,
                ),
            )
            .await;
        }
        Some(Err(BodyError::DuplicateKey(k))) => {
            let mut rec = deny(
                &call,
                ReasonCode::ArgumentsInvalid,
                format!("duplicate key `{k}` in the request"),
                None,
                Some(crate::canonical::sha256_hex(&bytes)),
            );
            rec.principal = Some(auth.principal().into());
            let id = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null);
            return record_then(
                rt,
                rec,
                respond::jsonrpc_error(
                    StatusCode::OK,
                    id,
                    -32602,
                    &format!("invalid request: duplicate key `{k}`"),
                    "arguments_invalid",
                    &trace,
                ),
            )
            .await;
        }
        _ => {}
    }

    let owner = format!("{}\u{0}{}", auth.principal().iss, auth.principal().sub);
    let mut in_flight = None;
    if let Some(sid) = &session_id {
        let refusal = match st.sessions.lock() {
            // Both routes count as use (the direct one never reaches rmcp's session), and in
            // the same lock as the check, so the idle sweep cannot close it in between.
            Ok(mut m) => match m.get_mut(sid) {
                Some(s) if s.owner == owner => {
                    s.busy += 1;
                    None
                }
                Some(_) => Some("the session belongs to another identity"),
                None => Some("the session is not open on this gateway (closed, idle too long, or never opened)"),
            },
            Err(_) => Some("the session table is unavailable"),
        };
        if let Some(reason) = refusal {
            let mut rec = deny(&call, ReasonCode::SessionNotOwned, reason.into(), tool, args_digest_of(&parsed));
            rec.principal = Some(auth.principal().into());
            return record_then(rt, rec, respond::session_not_found(&trace)).await;
        }
        in_flight = Some(InFlight {
            state: st.clone(),
            sid: sid.clone(),
        });
    }

    call.request_id = match rpc_id {
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let is_delete = parts.method == Method::DELETE;
    let is_call = tool.is_some();
    let rc = RequestCtx { auth, call };
    let fast = match (&st.mcp_sessions, parsed) {
        (Some(sessions), Some(Ok(body))) if parts.method == Method::POST => {
            super::fast::try_serve(rt, sessions, &parts.headers, session_id.as_deref(), body, rc).await
        }
        _ => Err(rc),
    };
    let mut resp = match fast {
        Ok(resp) => resp,
        Err(rc) => {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(rc);
            let resp = next.run(req).await;
            // rmcp may stream the answer (progress, an approval wait): the request is in
            // flight until that stream ends.
            match in_flight.take() {
                Some(f) => resp.map(|body| {
                    Body::from_stream(futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
                        let _still = &f;
                        chunk
                    }))
                }),
                None => resp,
            }
        }
    };
    drop(in_flight);

    // Only an answer that opened or ended a session changes the table: every other request
    // leaves its lock alone.
    let opened = match &session_id {
        None => resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()),
        Some(_) => None,
    };
    let ended = session_id.as_ref().filter(|_| is_delete && resp.status().is_success());
    let mut evicted = Vec::new();
    if (opened.is_some() || ended.is_some())
        && let Ok(mut m) = st.sessions.lock()
    {
        if let Some(new_sid) = opened {
            let session = Session {
                owner: owner.clone(),
                used: Instant::now(),
                busy: 0,
            };
            m.insert(new_sid.to_string(), session);
            evicted = over_limit(&mut m, new_sid, Some(&owner), rt.env.max_sessions_per_identity);
            evicted.extend(over_limit(&mut m, new_sid, None, rt.env.max_sessions));
        }
        if let Some(sid) = ended {
            m.remove(sid);
        }
    }
    if !evicted.is_empty() {
        tracing::warn!(env = %rt.env.name, closed = evicted.len(), "MCP sessions over max_sessions_per_identity or max_sessions; the least recently used were closed");
        if let Some(sessions) = st.mcp_sessions.clone() {
            tokio::spawn(async move { close_in_rmcp(&sessions, evicted).await });
        }
    }
    if is_call {
        st.call_seconds.observe(arrived.elapsed());
    }
    // rmcp answers a session DELETE with 202; the official SDKs expect 200 or 204.
    if is_delete && resp.status() == StatusCode::ACCEPTED {
        *resp.status_mut() = StatusCode::OK;
    }
    if let Ok(v) = HeaderValue::from_str(trace.as_str()) {
        resp.headers_mut().insert(respond::TRACE_HEADER, v);
    }
    resp
}

/// The request's caller: its bearer token verified for this environment and joined to its
/// client certificate; and whether a token was sent at all (the challenge differs).
pub async fn authenticate(rt: &Runtime, headers: &http::HeaderMap, peer: &Peer) -> (Result<Authenticated, AuthnError>, bool) {
    let token = Authenticator::bearer(headers);
    let token_sent = token.is_ok() || headers.contains_key(http::header::AUTHORIZATION);
    let verified = match token {
        Ok(t) => rt.authn.verify(t).await.and_then(|a| join_cert(rt, a, peer)),
        Err(e) => Err(e),
    };
    (verified, token_sent)
}

/// On an mTLS listener the caller is the token's subject *and* the certificate's: both must
/// pass, and a certificate-bound token only with its certificate. A bound token is refused
/// wherever no certificate was presented.
pub fn join_cert(rt: &Runtime, auth: Authenticated, peer: &Peer) -> Result<Authenticated, AuthnError> {
    let tls = rt.env.tls.as_ref();
    let mtls = tls.is_some_and(|t| t.client_ca.is_some());
    match &peer.cert {
        Some(cert) if mtls => auth.with_client_cert(cert, tls.is_some_and(|t| t.require_bound_tokens)),
        None if mtls => Err(AuthnError::Invalid {
            detail: "no client certificate on an mTLS listener".into(),
        }),
        _ if auth.is_bound() => Err(AuthnError::Invalid {
            detail: "the token is bound to a client certificate and none was verified".into(),
        }),
        _ => Ok(auth),
    }
}

/// Writes a denial record, then answers; if the record cannot be written, the answer is 503.
pub async fn record_then(rt: &Runtime, rec: AuditRecord, resp: Response) -> Response {
    let trace = TraceId::from_record(&rec.trace_id);
    answer_if_recorded(rt.audit.append(rec).await, resp, &trace)
}

/// The answer once its record is durable; 503 if the record could not be written.
fn answer_if_recorded(recorded: Result<u64, crate::audit::AuditError>, resp: Response, trace: &TraceId) -> Response {
    match recorded {
        Ok(_) => resp,
        Err(_) => respond::unavailable("the audit log is unavailable; the request was refused", trace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str, u64, u32)]) -> HashMap<String, Session> {
        let now = Instant::now();
        entries
            .iter()
            .map(|&(id, owner, secs_ago, busy)| {
                let used = now.checked_sub(Duration::from_secs(secs_ago)).unwrap_or(now);
                (
                    id.to_string(),
                    Session {
                        owner: owner.into(),
                        used,
                        busy,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn over_the_cap_idle_sessions_go_first_then_the_least_recently_used() {
        // Cap 3 for alice: `new` plus two of the four others stay.
        let mut m = table(&[
            ("busy-old", "alice", 50, 1),
            ("idle-old", "alice", 40, 0),
            ("idle-new", "alice", 10, 0),
            ("busy-new", "alice", 5, 2),
            ("new", "alice", 0, 0),
            ("bob", "bob", 60, 0),
        ]);
        let mut gone = over_limit(&mut m, "new", Some("alice"), 3);
        gone.sort();
        assert_eq!(gone, ["idle-new", "idle-old"]);
        assert!(m.contains_key("new") && m.contains_key("bob") && m.len() == 4);
    }

    #[test]
    fn the_session_just_opened_is_never_the_one_closed() {
        // Every other session is busy: the least recently used of them goes, not `new`
        // (which, unused yet, would otherwise sort first).
        let mut m = table(&[("busy-old", "alice", 50, 1), ("busy-new", "alice", 5, 1), ("new", "alice", 0, 0)]);
        assert_eq!(over_limit(&mut m, "new", Some("alice"), 2), ["busy-old"]);
        assert!(m.contains_key("new"));
        // Under the cap nothing goes.
        assert!(over_limit(&mut m, "new", Some("alice"), 2).is_empty());
    }

    #[test]
    fn over_the_total_the_biggest_holders_idle_sessions_go_first() {
        let mut m = table(&[
            ("mallory-busy", "mallory", 90, 1),
            ("mallory-idle-old", "mallory", 30, 0),
            ("mallory-idle-new", "mallory", 20, 0),
            ("alice-idle-oldest", "alice", 80, 0),
            ("bob-busy", "bob", 70, 1),
            ("new", "bob", 0, 0),
        ]);
        // Mallory holds the most: her idle sessions go, the least recently used first, before
        // Alice's older one; nobody's busy session goes while one is idle.
        assert_eq!(over_limit(&mut m, "new", None, 5), ["mallory-idle-old"]);
        assert_eq!(over_limit(&mut m, "new", None, 3), ["mallory-idle-new", "alice-idle-oldest"]);
        // Only busy sessions and the new one left: Bob, who opened `new`, now holds the most,
        // so his busy one goes; never `new`.
        assert_eq!(over_limit(&mut m, "new", None, 2), ["bob-busy"]);
        assert_eq!(over_limit(&mut m, "new", None, 1), ["mallory-busy"]);
        assert!(over_limit(&mut m, "new", None, 1).is_empty());
        assert!(m.contains_key("new") && m.len() == 1);
    }

    #[test]
    fn query_tokens_are_spotted() {
        assert!(token_in_query(Some("access_token=abc")));
        assert!(token_in_query(Some("a=1&Token=x")));
        assert!(!token_in_query(Some("tokens_used=1")));
        assert!(!token_in_query(None));
    }
}
