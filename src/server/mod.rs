//! The gateway process: builds each environment's runtime (`pipeline::Runtime`), then serves
//! it over HTTP on its own listener, or over stdio.
//!
//! INVARIANT: a runtime is built whole or not at all (see `Runtime::build`); an environment
//! that cannot be served stops the start (fail closed).

pub(crate) mod api;
mod budget;
mod console;
pub(crate) mod control;
mod direct;
pub(crate) mod envelope;
mod explorer;
pub(crate) mod http;
pub(crate) mod jsonguard;
mod listen;
pub(crate) mod listener;
mod mcp;
pub(crate) mod respond;
mod sessions;
mod sources;
mod stdio_guard;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditRecord;
use crate::audit::approval::{Answer, Op};
use crate::config::resolved::host_of;
use crate::config::{Config, Environment};
use crate::decision::{Decision, ReasonCode};
use crate::pipeline::{Live, Runtime};
use crate::request::{CallCtx, ClientRef};

/// Moves requests past their expiry to `expired`, with a record each, every few seconds.
/// Correctness does not depend on it (a release checks the expiry itself); it keeps the
/// queue and the log telling the truth about requests nobody came back for.
fn spawn_expiry(live: Arc<Live>, stop: CancellationToken) {
    tokio::spawn(async move {
        // The log and the approval queue are the same in every generation.
        let rt = live.now();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let ctx = CallCtx::new(ClientRef::internal("approval-expiry"));
            let template = AuditRecord::new(&rt.env().name, &ctx, Decision::Deny, ReasonCode::ApprovalExpired, String::new());
            let op = Op::Expire {
                now_ms: crate::audit::approval::now_ms(),
                template: Box::new(template),
            };
            match rt.audit().approval(op).await {
                Ok(Answer::Expired(n)) if n > 0 => rt.approval_events().notify_waiters(),
                Ok(_) => {}
                Err(e) => tracing::error!(env = %rt.env().name, "approval expiry sweep failed: {e:?}"),
            }
        }
    });
}

/// Compares the routed tools' upstream definitions with their pins every
/// `pin_check_interval`; a changed one is stopped until re-pinned (src/pins.rs).
fn spawn_pin_check(live: Arc<Live>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(live.now().env().pin_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now; the build has just checked
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            live.now().check_pins().await;
        }
    });
}

/// The tasks every environment runs beside its requests.
fn spawn_housekeeping(live: &Arc<Live>, stop: &CancellationToken) {
    spawn_expiry(live.clone(), stop.clone());
    spawn_pin_check(live.clone(), stop.clone());
}

fn allowed_hosts(env: &Environment, bound: SocketAddr) -> Vec<String> {
    let mut hosts = env.allowed_hosts.clone();
    if let Some(h) = host_of(&env.public_url) {
        hosts.push(h.clone());
        if let Some((name, _)) = h.rsplit_once(':') {
            hosts.push(name.to_string());
        }
    }
    hosts.push(bound.to_string());
    hosts.push(bound.ip().to_string());
    if bound.ip().is_loopback() {
        hosts.extend(["localhost".to_string(), format!("localhost:{}", bound.port())]);
    }
    hosts
}

/// The origins of pages this listener serves: its scheme with each name it is reached by on
/// its port, and the public URL's.
fn own_origins(env: &Environment, bound: SocketAddr) -> Vec<String> {
    let scheme = if env.tls.is_some() { "https" } else { "http" };
    let mut names = vec![bound.ip().to_string()];
    if bound.ip().is_loopback() {
        names.push("localhost".into());
    }
    let mut origins: Vec<String> = names
        .iter()
        .map(|n| {
            if n.contains(':') {
                format!("{scheme}://[{n}]:{}", bound.port())
            } else {
                format!("{scheme}://{n}:{}", bound.port())
            }
        })
        .collect();
    origins.extend(crate::config::resolved::origin_of(&env.public_url));
    for h in &env.allowed_hosts {
        origins.push(format!("{scheme}://{h}"));
    }
    origins
}

async fn metadata(State(live): State<Arc<Live>>) -> Response {
    let rt = live.now();
    let env = rt.env();
    axum::Json(json!({
        "resource": env.public_url,
        "authorization_servers": env.issuers.iter().map(|i| i.issuer.clone()).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "resource_name": format!("capgate ({})", env.name),
    }))
    .into_response()
}

async fn readyz(State(live): State<Arc<Live>>) -> Response {
    let rt = live.now();
    let audit_ok = rt.audit().healthy();
    let status = if audit_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "env": rt.env().name,
            "audit": audit_ok,
            "upstreams": rt.upstream_count(),
            "stopped_tools": rt.stopped_tools(),
        })),
    )
        .into_response()
}

async fn metrics(State(st): State<Arc<http::HttpState>>) -> Response {
    let rt = st.rt();
    // rmcp's count, not the guard's: a session the guard dropped but rmcp kept would show.
    let open = st.mcp_sessions.sessions.read().await.len();
    let approvals = rt.store().approval_counts(crate::audit::approval::now_ms()).await.ok();
    let body = rt.metrics().render(open, approvals.as_deref());
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// The metrics listener's routes (`telemetry.metrics_listen`): `GET /metrics` alone. Not
/// for browsers: a request with an `Origin` (a page, perhaps rebound to this address) is
/// refused.
fn metrics_router(state: Arc<http::HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            |req: axum::extract::Request, next: axum::middleware::Next| async move {
                if req.headers().contains_key(axum::http::header::ORIGIN) {
                    return (axum::http::StatusCode::FORBIDDEN, "metrics are not served to web pages\n").into_response();
                }
                next.run(req).await
            },
        ))
}

fn router(live: Arc<Live>, bound: SocketAddr, shutdown: CancellationToken) -> (Router, Arc<http::HttpState>) {
    // What the listener is set up with is the same in every generation (`Environment::restart`).
    let rt = live.now();
    let session_table: Arc<sessions::SessionTable> = Arc::default();
    let gw = mcp::Gateway::http(live.clone(), session_table.clone());
    let cfg = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(rt.env(), bound))
        .with_max_request_body_bytes(rt.env().max_body_bytes)
        .with_json_response(true)
        .with_cancellation_token(shutdown.child_token());
    // rmcp closes a session its worker has not heard from for a while; calls on the direct
    // route never reach that worker, so the guard, which sees both routes, closes idle
    // sessions instead (below).
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = None;
    let sessions = Arc::new(manager);
    let mcp_service: Arc<StreamableHttpService<mcp::Gateway, LocalSessionManager>> =
        Arc::new(StreamableHttpService::new(move || Ok(gw.clone()), sessions.clone(), cfg));
    // The router clones its service for every request, and rmcp's clones its whole config
    // (host and origin lists); an `Arc` makes that a reference count, on both routes.
    let mcp_service = axum::routing::any(move |req: axum::extract::Request| {
        let svc = mcp_service.clone();
        async move { svc.handle(req).await }
    });
    let state = Arc::new(http::HttpState::new(
        live.clone(),
        &allowed_hosts(rt.env(), bound),
        &own_origins(rt.env(), bound),
        session_table,
        sessions,
        shutdown.child_token(),
    ));
    tokio::spawn(close_idle_sessions(
        state.clone(),
        rt.env().session_idle_timeout,
        shutdown.child_token(),
    ));
    let api_handlers = Router::new()
        .route("/api/session", get(api::session))
        .route("/api/approvals", get(api::list))
        .route("/api/approvals/{id}", get(api::get_one))
        .route("/api/approvals/{id}/approve", axum::routing::post(api::approve))
        .route("/api/approvals/{id}/deny", axum::routing::post(api::deny))
        .route("/api/audit", get(explorer::search))
        .route("/api/audit/stats", get(explorer::stats))
        .route("/api/audit/chain", get(explorer::chain))
        .route("/api/audit/records/{seq}", get(explorer::record))
        .route("/api/contracts", get(explorer::contracts));
    let mut app = Router::new()
        .route("/.well-known/oauth-protected-resource", get(metadata))
        .route("/.well-known/oauth-protected-resource/mcp", get(metadata))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(live);
    // With a listener of their own, the series (which name the tools) are not public.
    if rt.env().metrics_listen.is_none() {
        app = app.route("/metrics", get(metrics).with_state(state.clone()));
    }
    let app = app
        .merge(console::routes())
        .merge(http::api_routes(state.clone(), api_handlers))
        .merge(http::mcp_routes(state.clone(), mcp_service));
    (app, state)
}

/// Closes, in the guard's table and in rmcp, the sessions no request has used for `idle`;
/// looks a few times per `idle`, so a session lives at most ~1.25 × `idle` unused.
async fn close_idle_sessions(state: Arc<http::HttpState>, idle: std::time::Duration, stop: CancellationToken) {
    let every = (idle / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        sessions::close_in_rmcp(&state.mcp_sessions, state.sessions.take_idle(idle)).await;
    }
}

/// Serves the given environments, each on its own listener, until SIGINT/SIGTERM; reloads
/// their contracts and policies on SIGHUP and on `control`'s socket.
pub(crate) async fn serve_http(
    config: &Config,
    envs: Vec<Arc<Environment>>,
    control: control::Control,
    on_ready: impl Fn(&Environment, SocketAddr, Option<SocketAddr>),
) -> anyhow::Result<()> {
    let signals = StopSignals::install();
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut lives = Vec::new();
    let mut ready = Vec::new();
    for env in envs {
        let live = Live::new(Runtime::build(config, env.clone()).await?);
        spawn_housekeeping(&live, &shutdown);
        let listener = tokio::net::TcpListener::bind(&env.listen)
            .await
            .with_context(|| format!("environment `{}`: cannot listen on {}", env.name, env.listen))?;
        let bound = listener.local_addr()?;
        lives.push(live.clone());
        let (app, state) = router(live.clone(), bound, shutdown.clone());
        let mut metrics_at = None;
        if let Some(addr) = env.metrics_listen {
            let admin = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("environment `{}`: cannot listen on {addr} (telemetry.metrics_listen)", env.name))?;
            metrics_at = Some(admin.local_addr()?);
            // Served like the environment's listener: its TLS, header deadline and
            // per-source connection limit.
            tasks.push(listener::serve(live.now(), admin, metrics_router(state), shutdown.clone())?);
        }
        // TLS and connection limits are the same in every generation.
        tasks.push(listener::serve(live.now(), listener, app, shutdown.clone())?);
        ready.push((env, bound, metrics_at));
    }
    if tasks.is_empty() {
        bail!("no environment to serve");
    }
    // Taking reloads before saying ready: a reload right after the start reaches it.
    let controls = control::spawn(control, lives.clone(), shutdown.clone());
    for (env, bound, metrics_at) in &ready {
        on_ready(env, *bound, *metrics_at);
    }
    signals.wait().await;
    shutdown.cancel();
    for t in tasks.into_iter().chain(controls) {
        let _ = t.await;
    }
    // Sign the final head of every log, so a clean stop leaves nothing uncovered.
    for live in lives {
        let rt = live.now();
        rt.audit().shutdown().await;
        rt.flush_traces(std::time::Duration::from_secs(2)).await;
    }
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this is made: made before the first
/// listener says it is ready, so an operator's stop right after the start still ends in a
/// clean stop (outcomes written, final checkpoint signed), not in the default kill.
pub struct StopSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(int), Ok(term)) => Some((int, term)),
                _ => None,
            };
            Self { signals }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Returns on SIGINT or SIGTERM.
    pub async fn wait(self) {
        #[cfg(unix)]
        match self.signals {
            Some((mut int, mut term)) => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Serves one environment to one local client over stdin/stdout.
pub(crate) async fn serve_stdio(
    config: &Config,
    env: Arc<Environment>,
    control: control::Control,
    token: crate::secret::Secret<String>,
) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let live = Live::new(Runtime::build(config, env).await?);
    let rt = live.now();
    // Refuse to start for a token that is not valid now: fail before the client connects.
    rt.authn()
        .verify(token.expose())
        .await
        .map_err(|e| anyhow!("the token in CAPGATE_TOKEN is refused: {e}"))?;
    let stop = CancellationToken::new();
    spawn_housekeeping(&live, &stop);
    let controls = control::spawn(control, vec![live.clone()], stop.clone());
    let gw = mcp::Gateway::stdio(live.clone(), token);
    // The guard reads only the line limit and the log, the same in every generation.
    let running = gw
        .serve(stdio_guard::spawn(rt.clone()))
        .await
        .map_err(|e| anyhow!("stdio transport: {e}"))?;
    let _ = running.waiting().await;
    stop.cancel();
    if let Some(t) = controls {
        let _ = t.await;
    }
    rt.audit().shutdown().await;
    rt.flush_traces(std::time::Duration::from_secs(2)).await;
    Ok(())
}
