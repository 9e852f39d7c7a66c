//! Reloading a running gateway: on SIGHUP, and on a request over its control socket (what
//! `capgate reload` talks to, and reads the outcome from).
//!
//! The control socket is a Unix socket only its owner may use (mode 0600): whoever may
//! connect to it may make the gateway read its own files again, nothing more. Where it
//! cannot be made (another gateway holds it, the folder is read-only), the gateway serves
//! without it and says so; SIGHUP still reloads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Live, Reload};

/// The one request the control socket takes.
pub(crate) const RELOAD_REQUEST: &str = "reload";
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a gateway serving `config` listens for control requests unless told otherwise: a
/// file beside the config.
pub(crate) fn default_socket(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("capgate.sock")
}

/// What a running gateway reloads from, and where it takes requests to.
pub(crate) struct Control {
    pub(crate) config: PathBuf,
    pub(crate) socket: Option<PathBuf>,
}

/// Reads the config file again and offers it to every environment served.
pub(crate) async fn reload_all(config: &Path, lives: &[Arc<Live>]) -> Vec<Reload> {
    let path = config.to_path_buf();
    // Loading reads files and validates policies: off the request threads.
    let loaded = tokio::task::spawn_blocking(move || crate::config::load(&path))
        .await
        .unwrap_or_else(|e| Err(vec![crate::config::resolved::Problem(format!("loading the config failed: {e}"))]));
    let offered = loaded.map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<String>>());
    let mut out = Vec::with_capacity(lives.len());
    for live in lives {
        out.push(live.reload(offered.as_ref().map_err(Vec::as_slice)).await);
    }
    out
}

/// Starts taking reload requests (SIGHUP, and the control socket if one is given) until
/// `stop`; the task to await after `stop` (it removes the socket) is returned.
pub(crate) fn spawn(control: Control, lives: Vec<Arc<Live>>, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let control = Arc::new(control);
    let lives: Arc<[Arc<Live>]> = lives.into();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let (control, lives, stop) = (control.clone(), lives.clone(), stop.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            got = hup.recv() => if got.is_none() { return },
                        }
                        tracing::info!("SIGHUP: reloading contracts and policies from {}", control.config.display());
                        reload_all(&control.config, &lives).await;
                    }
                });
            }
            Err(e) => tracing::warn!("SIGHUP cannot be caught ({e}): reload with `capgate reload` instead"),
        }
        if let Some(path) = control.socket.clone() {
            match bind(&path) {
                Ok(listener) => return Some(tokio::spawn(serve_socket(listener, path, control, lives, stop))),
                Err(why) => tracing::warn!(
                    "no control socket at {}: {why}; `capgate reload` cannot reach this gateway (SIGHUP still reloads; `--control PATH` names another)",
                    path.display()
                ),
            }
        }
    }
    None
}

/// Binds the control socket at `path`, replacing a stale one nobody answers on; refuses to
/// take over one a live gateway holds.
#[cfg(unix)]
fn bind(path: &Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err("a file that is not a socket is there".into());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err("another running gateway holds it".into());
        }
        std::fs::remove_file(path).map_err(|e| format!("a stale socket is there and cannot be removed: {e}"))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        let _ = std::fs::remove_file(path);
        format!("cannot make it the owner's alone: {e}")
    })?;
    Ok(listener)
}

#[cfg(unix)]
async fn serve_socket(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    control: Arc<Control>,
    lives: Arc<[Arc<Live>]>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("control socket: {e}");
                    continue;
                }
            },
        };
        let (control, lives) = (control.clone(), lives.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // A request is one short line; more is not read.
            let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, 64));
            let answer = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
                Ok(Ok(_)) if line.trim() == RELOAD_REQUEST => {
                    let reloads = reload_all(&control.config, &lives).await;
                    json!({ "reloads": reloads })
                }
                Ok(Ok(_)) => json!({ "error": format!("unknown request; the control socket takes `{RELOAD_REQUEST}`") }),
                Ok(Err(e)) => json!({ "error": format!("unreadable request: {e}") }),
                Err(_) => json!({ "error": "no request within 5 s" }),
            };
            let mut text = answer.to_string();
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
            let _ = write.shutdown().await;
        });
    }
    // Ours to remove: it was bound by this process, and a successor binds its own.
    let _ = std::fs::remove_file(&path);
}
