//! Stage 6, forwarding: sends an audited call to the upstream that serves the contract.
//!
//! Accepts only [`Audited`], so the compiler proves no unchecked or unrecorded call runs.

use std::time::Instant;

use rmcp::model::CallToolResult;

use super::audit::Audited;
use super::{CallCtx, Runtime};
use crate::backend::BackendError;

pub async fn forward(rt: &Runtime, ctx: &CallCtx, call: &Audited) -> (Result<CallToolResult, BackendError>, f64) {
    let v = call.approved().validated();
    let tool = &v.authorized().contract().tool;
    let started = Instant::now();
    let result = match rt.routes.get(tool) {
        Some(route) => {
            let r = route
                .upstream
                .call(&route.tool, v.forward_args().clone(), &ctx.trace.child_traceparent())
                .await;
            // INVARIANT: a backend credential never reaches the agent, even when the upstream
            // itself echoes it.
            match r {
                Ok(ok) if serde_json::to_string(&ok).is_ok_and(|t| route.upstream.leaks_credential(&t)) => Err(BackendError::Withheld {
                    upstream: route.upstream.name().to_string(),
                }),
                other => other,
            }
        }
        None => Err(BackendError::Unavailable {
            upstream: "(none)".into(),
            detail: "no route".into(),
        }),
    };
    // Microsecond resolution: enough, and short in the record.
    let ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    (result, ms)
}
