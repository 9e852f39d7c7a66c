//! Authentication: the bearer token verified for this environment (and, on an mTLS
//! listener, joined to the client certificate), or a 401. An unauthenticated request learns
//! nothing of the tool surface; its record names the tool and arguments it was for, where
//! the body said.

use super::{Exchange, HttpState, Step};
use crate::denial::{Channel, Denial};
use crate::identity::AuthnError;
use crate::pipeline::Runtime;
use crate::pipeline::authn::{Authenticated, Authenticator};
use crate::server::listener::Peer;

pub(super) async fn authenticate_step(st: &HttpState, ex: &Exchange, channel: Channel) -> Step<Authenticated> {
    let started = std::time::Instant::now();
    let (verified, token_sent) = authenticate(&ex.rt, &ex.parts.headers, &ex.peer).await;
    // The histogram is the verifier's own (it also serves stdio); the span is the request's.
    if let Some(span) = &ex.ctx.span.0 {
        let took = started.elapsed();
        span.stage(crate::metrics::Stage::Authn, std::time::SystemTime::now() - took, took);
    }
    match verified {
        Ok(auth) => Ok(auth),
        Err(error) => {
            let denial = Denial::Unauthenticated {
                error,
                channel,
                token_sent,
            };
            let rec = denial
                .record(&ex.rt.env().name, &ex.ctx)
                .tool(ex.tool.clone())
                .args_digest(ex.args_digest());
            Err(st.refuse_unauthenticated(&ex.peer, &denial, rec).await)
        }
    }
}

/// The request's caller: its bearer token verified for this environment and joined to its
/// client certificate; and whether a token was sent at all (the challenge differs).
pub(crate) async fn authenticate(rt: &Runtime, headers: &http::HeaderMap, peer: &Peer) -> (Result<Authenticated, AuthnError>, bool) {
    let token = Authenticator::bearer(headers);
    let token_sent = token.is_ok() || headers.contains_key(http::header::AUTHORIZATION);
    let verified = match token {
        Ok(t) => rt.authn().verify(t).await.and_then(|a| join_cert(rt, a, peer)),
        Err(e) => Err(e),
    };
    (verified, token_sent)
}

/// On an mTLS listener the caller is the token's subject *and* the certificate's: both must
/// pass, and a certificate-bound token only with its certificate. A bound token is refused
/// wherever no certificate was presented.
fn join_cert(rt: &Runtime, auth: Authenticated, peer: &Peer) -> Result<Authenticated, AuthnError> {
    let tls = rt.env().tls.as_ref();
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
