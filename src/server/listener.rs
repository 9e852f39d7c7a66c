//! The listener of one environment: plain TCP, TLS, or mutual TLS (rustls), each accepted
//! connection labelled with its [`Peer`] (address, and the verified client certificate).
//!
//! With `tls.client_ca`, a client certificate that does not chain to this environment's own
//! CA is refused during the handshake, before any HTTP is read; the refusal is recorded.
//! Handshakes run in their own tasks (bounded in time) so a slow or hostile client cannot
//! hold up the others.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::config::Tls;
use crate::denial::Denial;
use crate::identity::CertIdentity;
use crate::pipeline::Runtime;
use crate::request::{CallCtx, ClientRef};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shut-down listener lets the requests in flight finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) cert: Option<Arc<CertIdentity>>,
}

type Stream = Either<TcpStream, TlsStream<TcpStream>>;

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("`{}` is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The rustls server configuration of an environment's listener.
pub(crate) fn server_config(tls: &Tls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    crate::keys::check_private_file(&tls.key).map_err(|e| anyhow!(e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| anyhow!("`{}` is not a PEM private key: {e}", tls.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| anyhow!("`{}`: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow!("client CA `{}`: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow!(
            "`{}` and `{}` do not make a server identity: {e}",
            tls.cert.display(),
            tls.key.display()
        )
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The identity a verified client certificate stands for.
pub(crate) fn identity_of(der: &CertificateDer<'_>) -> CertIdentity {
    use base64::Engine;
    use sha2::Digest;
    use x509_cert::der::Decode;
    let subject = x509_cert::Certificate::from_der(der.as_ref())
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_else(|_| "(unparsed subject)".into());
    CertIdentity {
        subject,
        x5t_s256: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der.as_ref())),
    }
}

/// Serves `app` on `tcp` for `rt`'s environment until `stop`, then lets the requests in
/// flight finish (at most [`DRAIN`]). Each connection is served by hyper with the
/// environment's header deadline (a client that never finishes its headers is cut off); one
/// source holds at most `max_connections_per_source` connections at once (`sources.rs`).
pub(crate) fn serve(
    rt: Arc<Runtime>,
    tcp: TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let acceptor = match &rt.env().tls {
        Some(tls) => Some(TlsAcceptor::from(
            server_config(tls).with_context(|| format!("environment `{}`: tls", rt.env().name))?,
        )),
        None => None,
    };
    let sources = Arc::new(super::sources::Sources::new(rt.env().max_connections_per_source));
    Ok(tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (tcp, addr) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = sources.admit(addr.ip()) else {
                drop(tcp);
                // Recording waits for a commit; the accept loop must not wait with it.
                let (sources, rt) = (sources.clone(), rt.clone());
                tokio::spawn(async move { sources.refused(&rt, addr).await });
                continue;
            };
            // MCP answers are small writes after the headers; without TCP_NODELAY each reply
            // can stall on the peer's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            let (rt, app, acceptor) = (rt.clone(), app.clone(), acceptor.clone());
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _slot = slot;
                let (io, peer): (Stream, Peer) = match acceptor {
                    None => (Either::Left(tcp), Peer { addr, cert: None }),
                    Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let cert = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| Arc::new(identity_of(c)));
                            (Either::Right(tls), Peer { addr, cert })
                        }
                        Ok(Err(e)) => return record_refused_handshake(&rt, addr, &e.to_string()).await,
                        Err(_) => return tracing::debug!(env = %rt.env().name, "TLS handshake from {addr} timed out"),
                    },
                };
                serve_connection(&rt, io, peer, app, watcher).await;
            });
        }
        if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
            tracing::debug!(env = %rt.env().name, "requests still in flight after {}s; closing them", DRAIN.as_secs());
        }
    }))
}

/// One connection: HTTP/1.1 with the header deadline, every request labelled with its
/// [`Peer`] for the handlers.
async fn serve_connection(rt: &Runtime, io: Stream, peer: Peer, app: axum::Router, watcher: hyper_util::server::graceful::Watcher) {
    use tower::Service;
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer.clone()));
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(rt.env().header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection ended: {e}");
    }
}

async fn record_refused_handshake(rt: &Runtime, addr: SocketAddr, why: &str) {
    tracing::warn!(env = %rt.env().name, "TLS handshake from {addr} refused: {why}");
    let ctx = CallCtx::new(ClientRef {
        addr: Some(addr.to_string()),
        user_agent: None,
    });
    let denial = Denial::CertificateRefused { why: why.to_string() };
    if rt.audit().append(denial.record(&rt.env().name, &ctx)).await.is_err() {
        tracing::error!(env = %rt.env().name, "a refused TLS handshake could not be recorded");
    }
}
