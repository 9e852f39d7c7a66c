//! The gateway process: builds each environment's runtime (keys, audit store, upstreams,
//! routes), then serves it over HTTP on its own listener, or over stdio.
//!
//! INVARIANT: a runtime is built whole or not at all. Unreadable keys, an unopenable audit
//! store or a contract without exactly one upstream tool stop the start (fail closed).

pub mod api;
mod budget;
mod console;
mod fast;
pub mod http;
pub mod jsonguard;
pub mod listener;
pub mod mcp;
pub mod respond;
mod stdio_guard;

use std::collections::HashMap;
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

use crate::audit::AuditLog;
use crate::backend::UpstreamClient;
use crate::config::resolved::host_of;
use crate::config::{Config, Environment};
use crate::pipeline::authn::Authenticator;
use crate::pipeline::{Route, Runtime};

/// Connects every upstream of an environment and maps each contract to exactly one upstream
/// tool. Returns every problem found.
pub async fn resolve_routes(config: &Config, env: &Environment) -> Result<(HashMap<String, Route>, Vec<Arc<UpstreamClient>>), Vec<String>> {
    let mut problems = Vec::new();
    let mut clients = Vec::new();
    let mut tools_of: Vec<(Arc<UpstreamClient>, Vec<String>)> = Vec::new();
    for u in config.upstreams_of(&env.name) {
        let client = Arc::new(UpstreamClient::new(u.clone()));
        match client.list_tools().await {
            Ok(tools) => tools_of.push((client.clone(), tools.into_iter().map(|t| t.name.to_string()).collect())),
            Err(e) => problems.push(format!("environment `{}`: {e}: {}", env.name, e.detail())),
        }
        clients.push(client);
    }
    let mut routes = HashMap::new();
    for c in env.contracts.values() {
        let at = format!("{} (tool `{}`), environment `{}`", c.source, c.tool, env.name);
        let found: Vec<(Arc<UpstreamClient>, String)> = match &c.backend {
            Some(b) => {
                let want = b.tool.clone().unwrap_or_else(|| c.tool.clone());
                match tools_of.iter().find(|(u, _)| u.name() == b.upstream) {
                    Some((u, tools)) if tools.contains(&want) => vec![(u.clone(), want)],
                    Some(_) => {
                        problems.push(format!("{at}: upstream `{}` has no tool `{want}`", b.upstream));
                        continue;
                    }
                    None => {
                        if config.upstreams_of(&env.name).all(|u| u.name != b.upstream) {
                            problems.push(format!(
                                "{at}: `backend.upstream = \"{}\"` is not an upstream of this environment",
                                b.upstream
                            ));
                        }
                        continue;
                    }
                }
            }
            None => tools_of
                .iter()
                .filter(|(_, tools)| tools.contains(&c.tool))
                .map(|(u, _)| (u.clone(), c.tool.clone()))
                .collect(),
        };
        match found.as_slice() {
            [(u, tool)] => {
                routes.insert(
                    c.tool.clone(),
                    Route {
                        upstream: u.clone(),
                        tool: tool.clone(),
                    },
                );
            }
            [] => problems.push(format!(
                "{at}: no upstream of this environment has this tool; name one with `backend = {{ upstream = \"…\", tool = \"…\" }}`"
            )),
            many => problems.push(format!(
                "{at}: {} upstreams have this tool ({}); name one with `backend`",
                many.len(),
                many.iter().map(|(u, _)| u.name().to_string()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    if problems.is_empty() {
        Ok((routes, clients))
    } else {
        Err(problems)
    }
}

/// Opens an environment's audit log with its checkpoint signer and sinks. An unreadable
/// signing key stops the start: a log whose checkpoints cannot be signed is not run.
pub fn open_audit(env: &Environment) -> anyhow::Result<AuditLog> {
    let key =
        crate::keys::load_signing_key(&env.audit_signing_key).map_err(|e| anyhow!("environment `{}`: audit.signing_key: {e}", env.name))?;
    let mut sinks = Vec::new();
    if let Some(f) = &env.checkpoint_file {
        sinks.push(crate::audit::Sink::File(f.clone()));
    }
    if let Some(c) = &env.checkpoint_command {
        sinks.push(crate::audit::Sink::Command(c.clone()));
    }
    let policy = crate::audit::CheckpointPolicy {
        signer: crate::audit::checkpoint::Signer::new(&env.name, key),
        interval: env.checkpoint_interval,
        sinks,
    };
    AuditLog::open(&env.audit_store, &env.name, policy)
        .map_err(|e| anyhow!("environment `{}`: audit store `{}`: {e:?}", env.name, env.audit_store.display()))
}

/// Moves requests past their expiry to `expired`, with a record each, every few seconds.
/// Correctness does not depend on it (a release checks the expiry itself); it keeps the
/// queue and the log telling the truth about requests nobody came back for.
pub fn spawn_expiry(rt: Arc<Runtime>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let ctx = crate::pipeline::CallCtx {
                trace: crate::trace::TraceId::generate(),
                request_id: None,
                session_id: None,
                client: crate::audit::ClientRef {
                    addr: Some("capgate".into()),
                    user_agent: Some("approval-expiry".into()),
                },
            };
            let template = crate::pipeline::base_record(
                &rt,
                &ctx,
                None,
                None,
                crate::decision::Decision::Deny,
                crate::decision::ReasonCode::ApprovalExpired,
                "",
            );
            let op = crate::approval::Op::Expire {
                now_ms: crate::approval::now_ms(),
                template: Box::new(template),
            };
            match rt.audit.approval(op).await {
                Ok(crate::approval::Answer::Expired(n)) if n > 0 => rt.approval_events.notify_waiters(),
                Ok(_) => {}
                Err(e) => tracing::error!(env = %rt.env.name, "approval expiry sweep failed: {e:?}"),
            }
        }
    });
}

pub async fn build_runtime(config: &Config, env: Arc<Environment>) -> anyhow::Result<Runtime> {
    // Every private key this environment names must be its owner's alone, used or not.
    for k in env.issuers.iter().filter_map(|i| i.mint_key.as_ref()) {
        crate::keys::check_private_file(k).map_err(|e| anyhow!("environment `{}`: mint_key: {e}", env.name))?;
    }
    let authn = Authenticator::new(&env).await.map_err(|e| anyhow!(e))?;
    let audit = open_audit(&env)?;
    let approvals = crate::audit::ApprovalReader::open(&env.audit_store, &env.name)
        .map_err(|e| anyhow!("environment `{}`: approval store `{}`: {e:?}", env.name, env.audit_store.display()))?;
    let (routes, upstreams) = resolve_routes(config, &env).await.map_err(|p| anyhow!(p.join("\n")))?;
    Ok(Runtime {
        env,
        authn,
        audit,
        routes,
        rate: Default::default(),
        upstreams,
        approvals,
        approval_events: Default::default(),
    })
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

async fn metadata(State(rt): State<Arc<Runtime>>) -> Response {
    axum::Json(json!({
        "resource": rt.env.public_url,
        "authorization_servers": rt.env.issuers.iter().map(|i| i.issuer.clone()).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "resource_name": format!("capgate ({})", rt.env.name),
    }))
    .into_response()
}

async fn readyz(State(rt): State<Arc<Runtime>>) -> Response {
    let audit_ok = rt.audit.healthy();
    let status = if audit_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"env": rt.env.name, "audit": audit_ok, "upstreams": rt.upstreams.len()})),
    )
        .into_response()
}

async fn metrics(State(st): State<Arc<http::HttpState>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let rt = &st.rt;
    let s = &rt.audit.stats;
    let body = format!(
        "# HELP capgate_audit_checkpoints_total Signed checkpoints written.\n# TYPE capgate_audit_checkpoints_total counter\ncapgate_audit_checkpoints_total{{env=\"{e}\"}} {}\n# HELP capgate_audit_records_total Audit records durably written.\n# TYPE capgate_audit_records_total counter\ncapgate_audit_records_total{{env=\"{e}\"}} {}\n# HELP capgate_audit_commits_total Audit transactions (fsyncs).\n# TYPE capgate_audit_commits_total counter\ncapgate_audit_commits_total{{env=\"{e}\"}} {}\n",
        s.checkpoints.load(Relaxed),
        s.records.load(Relaxed),
        s.commits.load(Relaxed),
        e = rt.env.name
    ) + "# HELP capgate_audit_commit_seconds Time from the start of an audit transaction to its fsync'd commit.\n# TYPE capgate_audit_commit_seconds histogram\n"
        + &s.commit_seconds
            .render("capgate_audit_commit_seconds", &format!("env=\"{}\"", rt.env.name))
        + "# HELP capgate_audit_wait_seconds Time an awaited audit append took from submission to durable.\n# TYPE capgate_audit_wait_seconds histogram\n"
        + &s.wait_seconds
            .render("capgate_audit_wait_seconds", &format!("env=\"{}\"", rt.env.name))
        + "# HELP capgate_call_seconds Time from a tools/call's arrival to its answer (a call waiting for an approval included).\n# TYPE capgate_call_seconds histogram\n"
        + &st.call_seconds.render("capgate_call_seconds", &format!("env=\"{}\"", rt.env.name));
    // rmcp's count, not the guard's: a session the guard dropped but rmcp kept would show.
    let open = match &st.mcp_sessions {
        Some(m) => m.sessions.read().await.len(),
        None => 0,
    };
    let body = body
        + &format!(
            "# HELP capgate_mcp_sessions MCP sessions open on this listener.\n# TYPE capgate_mcp_sessions gauge\ncapgate_mcp_sessions{{env=\"{}\"}} {open}\n",
            rt.env.name
        );
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

pub fn router(rt: Arc<Runtime>, bound: SocketAddr, shutdown: CancellationToken) -> Router {
    let gw = mcp::Gateway::http(rt.clone());
    let cfg = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(&rt.env, bound))
        .with_max_request_body_bytes(rt.env.max_body_bytes)
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
    let mut state = http::HttpState::new(rt.clone(), allowed_hosts(&rt.env, bound));
    state.mcp_sessions = Some(sessions.clone());
    let state = Arc::new(state);
    tokio::spawn(close_idle_sessions(
        state.clone(),
        sessions.clone(),
        rt.env.session_idle_timeout,
        shutdown.child_token(),
    ));
    let mcp_routes = Router::new()
        .nest_service("/mcp", mcp_service)
        .layer(axum::middleware::from_fn_with_state(state.clone(), http::guard));
    let api_routes = Router::new()
        .route("/api/session", get(api::session))
        .route("/api/approvals", get(api::list))
        .route("/api/approvals/{id}", get(api::get_one))
        .route("/api/approvals/{id}/approve", axum::routing::post(api::approve))
        .route("/api/approvals/{id}/deny", axum::routing::post(api::deny))
        .layer(axum::middleware::from_fn_with_state(state.clone(), api::guard))
        .with_state(state.clone());
    Router::new()
        .route("/.well-known/oauth-protected-resource", get(metadata))
        .route("/.well-known/oauth-protected-resource/mcp", get(metadata))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(rt)
        .route("/metrics", get(metrics).with_state(state))
        .merge(console::routes())
        .merge(api_routes)
        .merge(mcp_routes)
}

/// Closes, in the guard's table and in rmcp, the sessions no request has used for `idle`;
/// looks a few times per `idle`, so a session lives at most ~1.25 × `idle` unused.
async fn close_idle_sessions(
    state: Arc<http::HttpState>,
    sessions: Arc<LocalSessionManager>,
    idle: std::time::Duration,
    stop: CancellationToken,
) {
    let every = (idle / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        http::close_in_rmcp(&sessions, state.take_idle_sessions(idle)).await;
    }
}

/// Serves the given environments, each on its own listener, until SIGINT/SIGTERM.
pub async fn serve_http(config: &Config, envs: Vec<Arc<Environment>>, on_ready: impl Fn(&Environment, SocketAddr)) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut logs = Vec::new();
    for env in envs {
        let rt = Arc::new(build_runtime(config, env.clone()).await?);
        spawn_expiry(rt.clone(), shutdown.clone());
        let listener = tokio::net::TcpListener::bind(&env.listen)
            .await
            .with_context(|| format!("environment `{}`: cannot listen on {}", env.name, env.listen))?;
        let bound = listener.local_addr()?;
        let listener = listener::start(rt.clone(), listener, shutdown.clone())?;
        logs.push(rt.audit.clone());
        let app = router(rt, bound, shutdown.clone());
        on_ready(&env, bound);
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<listener::Peer>())
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
        }));
    }
    if tasks.is_empty() {
        bail!("no environment to serve");
    }
    wait_for_signal().await;
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    // Sign the final head of every log, so a clean stop leaves nothing uncovered.
    for log in logs {
        log.shutdown().await;
    }
    Ok(())
}

/// Returns on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Serves one environment to one local client over stdin/stdout.
pub async fn serve_stdio(config: &Config, env: Arc<Environment>, token: crate::secret::Secret<String>) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let rt = Arc::new(build_runtime(config, env).await?);
    // Refuse to start for a token that is not valid now: fail before the client connects.
    rt.authn
        .verify(token.expose())
        .await
        .map_err(|e| anyhow!("the token in CAPGATE_TOKEN is refused: {e}"))?;
    let stop = CancellationToken::new();
    spawn_expiry(rt.clone(), stop.clone());
    let gw = mcp::Gateway::stdio(rt.clone(), token);
    let running = gw
        .serve(stdio_guard::spawn(rt.clone()))
        .await
        .map_err(|e| anyhow!("stdio transport: {e}"))?;
    let _ = running.waiting().await;
    stop.cancel();
    rt.audit.shutdown().await;
    Ok(())
}
