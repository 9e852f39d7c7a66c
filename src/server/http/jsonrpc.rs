//! The body's refusals, answered once the caller is authenticated: not one well-formed JSON
//! value (-32700), or a duplicate key anywhere in it (-32602: serde keeps the last, so
//! `{"ip":"10.0.0.0/8","ip":"0.0.0.0/0"}` could mean one thing to the gateway and another to
//! the upstream).

use serde_json::Value;

use super::{Exchange, HttpState, Step};
use crate::denial::{Channel, Denial};
use crate::pipeline::authn::Authenticated;
use crate::server::jsonguard::BodyError;

pub(super) async fn check(st: &HttpState, ex: &Exchange, auth: &Authenticated) -> Step {
    let (denial, digest, id) = match &ex.parsed {
        Some(Err(BodyError::Syntax)) => (Denial::MalformedJson { channel: Channel::Mcp }, None, Value::Null),
        Some(Err(BodyError::DuplicateKey(key))) => {
            // The whole body's digest: its arguments cannot be told apart from its keys.
            let digest = crate::canonical::sha256_hex(&ex.bytes);
            let id = serde_json::from_slice::<Value>(&ex.bytes)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null);
            let denial = Denial::DuplicateKey {
                key: key.clone(),
                channel: Channel::Mcp,
            };
            (denial, Some(digest), id)
        }
        _ => return Ok(()),
    };
    let rec = denial
        .record(&st.rt.env().name, &ex.ctx)
        .principal(Some(auth.principal()))
        .args_digest(digest);
    Err(st.refuse(&denial, rec, id).await)
}
