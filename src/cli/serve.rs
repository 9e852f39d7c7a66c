//! `capgate serve`: run the gateway.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::{Failure, load_config};
use crate::secret::Secret;
use crate::server::control::{Control, RELOAD_REQUEST, default_socket};

/// How long a reload may take to answer: it connects the upstreams again to route the
/// contracts.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub(super) async fn run(config_path: &Path, env: Option<&str>, stdio: bool, control: Option<PathBuf>) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    let control = Control {
        config: config_path.to_path_buf(),
        socket: Some(control.unwrap_or_else(|| default_socket(config_path))),
    };
    let envs = match env {
        Some(name) => vec![
            config
                .environment(name)
                .cloned()
                .ok_or_else(|| Failure::Usage(format!("no environment `{name}` in {}", config_path.display())))?,
        ],
        None => config.environments.clone(),
    };
    if stdio {
        let Some(env) = envs.into_iter().next() else {
            return Err(Failure::Usage("--stdio needs --env NAME".into()));
        };
        let token =
            std::env::var("CAPGATE_TOKEN").map_err(|_| Failure::Usage("--stdio needs the caller's token in CAPGATE_TOKEN".into()))?;
        // SAFETY of secrets: drop it from the environment so no child process inherits it.
        return crate::server::serve_stdio(&config, env, control, Secret::new(token))
            .await
            .map_err(Failure::from);
    }
    crate::server::serve_http(&config, envs, control, |env, addr, metrics| {
        // One line per environment on stdout, stable for scripts and tests to read.
        let mut out = std::io::stdout().lock();
        let scheme = if env.tls.is_some() { "https" } else { "http" };
        let _ = writeln!(
            out,
            "capgate: environment `{}` listening on {scheme}://{addr}/mcp (audience {}{}){}",
            env.name,
            env.public_url,
            match &env.tls {
                Some(t) if t.client_ca.is_some() => ", mutual TLS",
                Some(_) => ", TLS",
                None => "",
            },
            metrics.map(|m| format!(", metrics on {scheme}://{m}/metrics")).unwrap_or_default()
        );
        let _ = out.flush();
    })
    .await
    .map_err(Failure::from)
}

/// `capgate reload`: asks the gateway on the control socket to reload, and prints what each
/// environment did with it.
pub(super) fn reload(config_path: &Path, control: Option<PathBuf>) -> Result<(), Failure> {
    let socket = control.unwrap_or_else(|| default_socket(config_path));
    let answer = ask(&socket, RELOAD_REQUEST).map_err(|e| {
        Failure::Usage(format!(
            "no gateway answers on {} ({e}): is `capgate serve --config {}` running (with this --control)?",
            socket.display(),
            config_path.display()
        ))
    })?;
    let answer: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| Failure::Usage(format!("the gateway's answer is not JSON: {e}")))?;
    if let Some(e) = answer.get("error").and_then(|e| e.as_str()) {
        return Err(Failure::Usage(format!("the gateway refused the request: {e}")));
    }
    let reloads = answer.get("reloads").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    let mut refused = 0;
    let digest = |v: &serde_json::Value, key: &str| -> String {
        v.get(key)
            .and_then(|d| d.as_str())
            .map_or_else(|| "none".into(), |d| d.chars().take(12).collect())
    };
    let mut out = std::io::stdout().lock();
    for r in &reloads {
        let env = r.get("env").and_then(|e| e.as_str()).unwrap_or("?");
        let running = r.get("running").cloned().unwrap_or_default();
        let offered = r.get("offered").cloned().unwrap_or_default();
        if r.get("applied").and_then(serde_json::Value::as_bool) == Some(true) {
            let _ = writeln!(
                out,
                "environment `{env}`: reloaded: contracts {} -> {}, policies {} -> {}",
                digest(&running, "contracts"),
                digest(&offered, "contracts"),
                digest(&running, "policies"),
                digest(&offered, "policies"),
            );
        } else {
            refused += 1;
            let _ = writeln!(
                out,
                "environment `{env}`: refused; contracts {} and policies {} stay in force:",
                digest(&running, "contracts"),
                digest(&running, "policies"),
            );
            for p in r.get("problems").and_then(|p| p.as_array()).into_iter().flatten() {
                let _ = writeln!(out, "  - {}", p.as_str().unwrap_or_default());
            }
        }
    }
    if reloads.is_empty() {
        return Err(Failure::Usage("the gateway serves no environment".into()));
    }
    if refused > 0 { Err(Failure::CheckFailed) } else { Ok(()) }
}

#[cfg(unix)]
fn ask(socket: &Path, request: &str) -> std::io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(RELOAD_TIMEOUT))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

#[cfg(not(unix))]
fn ask(_socket: &Path, _request: &str) -> std::io::Result<String> {
    Err(std::io::Error::other("the control socket needs a Unix system"))
}
