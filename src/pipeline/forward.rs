//! Stage 6, forwarding: sends an audited call to the upstream that serves the contract.
//!
//! Accepts only [`Audited`], so the compiler proves no unchecked or unrecorded call runs.

use std::time::Instant;

use rmcp::model::CallToolResult;

use super::audit::Audited;
use super::{CallCtx, Runtime};
use crate::backend::BackendError;

/// What came back from the upstream, with the digest of its canonical JSON for the outcome
/// record.
pub struct Forwarded {
    pub result: Result<(CallToolResult, String), BackendError>,
    pub latency_ms: f64,
}

pub async fn forward(rt: &Runtime, ctx: &CallCtx, call: &Audited) -> Forwarded {
    let v = call.approved().validated();
    let tool = &v.authorized().contract().tool;
    let started = Instant::now();
    let result = match rt.routes.get(tool) {
        Some(route) => {
            let r = route
                .upstream
                .call(&route.tool, v.forward_args().clone(), &ctx.trace.child_traceparent())
                .await;
            r.and_then(|ok| {
                // One canonical text serves the credential check and the digest.
                // INVARIANT: a backend credential never reaches the agent, even when the
                // upstream itself echoes it; a result that cannot be checked is withheld too.
                match serde_json::to_value(&ok).map(|v| v.to_string()) {
                    Ok(text) if !route.upstream.leaks_credential(&text) => Ok((ok, crate::canonical::sha256_hex(text.as_bytes()))),
                    _ => Err(BackendError::Withheld {
                        upstream: route.upstream.name().to_string(),
                    }),
                }
            })
        }
        None => Err(BackendError::Unavailable {
            upstream: "(none)".into(),
            detail: "no route".into(),
        }),
    };
    // Microsecond resolution: enough, and short in the record.
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    Forwarded { result, latency_ms }
}
