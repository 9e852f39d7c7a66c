//! Stage 7, forwarding: sends an audited call to the upstream that serves the contract.
//!
//! [`Audited::forward`] is the only code that reaches an upstream, and it takes its proof by
//! value: the compiler proves that no unchecked or unrecorded call runs, and that none runs
//! twice on one decision.

use std::time::Instant;

use super::approval::Approved;
use super::audit::Audited;
use super::validate::Subscription;
use super::{Answer, Runtime};
use crate::audit::AuditRecord;
use crate::backend::BackendError;
use crate::backend::stateless::Called;
use crate::backend::subscriptions::{Delivery, Subscriber};
use crate::contract::Kind;
use crate::decision::{Decision, ReasonCode};
use crate::identity::Principal;
use crate::metrics::Stage;
use crate::request::CallCtx;

/// What came back from the upstream, with the digest of its canonical JSON for the outcome
/// record, and the call it answers.
pub struct Forwarded {
    pub(crate) result: Result<(Answer, String), BackendError>,
    pub(crate) latency_ms: f64,
    pub(crate) call: Executed,
}

/// A call that went upstream: what its outcome record says of it.
pub(crate) struct Executed {
    pub(crate) ctx: CallCtx,
    approved: Approved,
    allow_seq: u64,
}

impl Executed {
    /// The sequence number of the allow record that let this call run.
    pub(crate) fn allow_seq(&self) -> u64 {
        self.allow_seq
    }

    /// The outcome record's facts; the caller sets its outcome (and, on failure, its
    /// decision). The arguments are in the decision record this one names; the digest ties
    /// the two.
    pub(crate) fn outcome_record(&self, env: &str, who: Option<&Principal>) -> AuditRecord {
        let v = self.approved.validated();
        AuditRecord::new(
            env,
            &self.ctx,
            Decision::Allow,
            ReasonCode::Executed,
            format!("executed (decision record #{})", self.allow_seq),
        )
        .principal(who)
        .tool(Some(v.listed().contract().tool.clone()))
        .args_digest(Some(v.digest().to_string()))
        .contract_digest(&v.listed().contract().digest)
        .approval(self.approved.approval().cloned())
    }
}

impl Audited {
    /// Sends the call this proof was made for to its upstream, once.
    pub async fn forward(self, rt: &Runtime) -> Forwarded {
        let super::audit::Parts {
            approved,
            seq: allow_seq,
            ctx,
            relay,
            cancel,
            resume,
        } = self.into_parts();
        let v = approved.validated();
        let contract = v.listed().contract();
        let started = Instant::now();
        let mut upstream_span = None;
        let route = rt.routes.get(&contract.key);
        let result = match route {
            Some(route) => {
                // The upstream call's span is named by the `traceparent` it is sent.
                let traceparent = match &ctx.span.0 {
                    Some(span) => {
                        let (id, tp) = span.upstream_id();
                        upstream_span = Some(id);
                        tp
                    }
                    None => ctx.trace.child_traceparent(),
                };
                let upstream = &route.upstream;
                // Built here, from the proof: the upstream's requests are decided against the
                // contract this call was allowed under, for its caller.
                let asks = super::asks::CallerAsks {
                    rt,
                    auth: v.listed().auth(),
                    ctx: &ctx,
                    contract,
                    peer: relay.peer.as_ref(),
                    log: relay.log,
                    inline: relay.inline.as_ref(),
                };
                let round = resume.as_ref().map_or(0, |(_, round)| *round);
                // Boxed: the HTTP client's future is most of a call's state, and every future
                // that holds this one (the call's task, the transport's) is moved as a whole.
                let r = match (route.kind, v.completion()) {
                    (Kind::Prompt | Kind::Resource, Some((argument, value))) => {
                        let reference = match route.kind {
                            Kind::Prompt => rmcp::model::Reference::for_prompt(route.tool.clone()),
                            _ => rmcp::model::Reference::for_resource(route.tool.clone()),
                        };
                        let context = v
                            .forward_args()
                            .iter()
                            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                            .collect();
                        let info = rmcp::model::ArgumentInfo::new(argument, value);
                        Box::pin(upstream.complete(reference, info, context, &traceparent))
                            .await
                            .map(|r| Answer::Completion(only_acceptable(contract, argument, r)))
                    }
                    (Kind::Tool, _) => {
                        let mut params = rmcp::model::CallToolRequestParams::new(route.tool.clone());
                        params.arguments = Some(v.forward_args().clone());
                        if let Some((r, _)) = resume {
                            (params.input_responses, params.request_state) = r.into_params();
                        }
                        let called = Box::pin(upstream.call(params, &traceparent, relay.progress, Some(&asks), cancel)).await;
                        settle(rt, v, upstream.name(), round, called, Answer::Tool)
                    }
                    (Kind::Prompt, None) => {
                        let mut params = rmcp::model::GetPromptRequestParams::new(route.tool.clone());
                        params.arguments = Some(v.forward_args().clone());
                        if let Some((r, _)) = resume {
                            (params.input_responses, params.request_state) = r.into_params();
                        }
                        settle(
                            rt,
                            v,
                            upstream.name(),
                            round,
                            Box::pin(upstream.get_prompt(params, &traceparent, Some(&asks))).await,
                            Answer::Prompt,
                        )
                    }
                    // The URI sent is expanded from the values that passed, not the caller's
                    // spelling of them.
                    (Kind::Resource, None) => match contract.uri.as_ref().and_then(|t| t.expand(v.forward_args())) {
                        Some(uri) => match v.subscription() {
                            None => {
                                let mut params = rmcp::model::ReadResourceRequestParams::new(uri);
                                if let Some((r, _)) = resume {
                                    (params.input_responses, params.request_state) = r.into_params();
                                }
                                settle(
                                    rt,
                                    v,
                                    upstream.name(),
                                    round,
                                    Box::pin(upstream.read_resource(params, &traceparent, Some(&asks))).await,
                                    Answer::Resource,
                                )
                            }
                            Some(change) => {
                                // A listen stream is a subscriber of its own; stdio carries one
                                // session, which names none.
                                let (session, to) = match &relay.listen {
                                    Some((key, tx)) => (key.clone(), Some(Delivery::Stream(tx.clone()))),
                                    None => (
                                        ctx.session_id.clone().unwrap_or_else(|| "stdio".into()),
                                        relay.peer.clone().map(Delivery::Session),
                                    ),
                                };
                                match (change, to) {
                                    (Subscription::Unsubscribe, _) => Box::pin(upstream.unsubscribe(&uri, &session, &traceparent))
                                        .await
                                        .map(|()| Answer::Subscribed),
                                    (Subscription::Subscribe, Some(to)) => {
                                        let auth = v.listed().auth();
                                        let who = Subscriber {
                                            session,
                                            to,
                                            expires_at: auth.expires_at(),
                                            env: rt.env().name.clone(),
                                            ctx: ctx.clone(),
                                            principal: auth.principal().clone(),
                                            resource: contract.tool.clone(),
                                            contract_digest: contract.digest.clone(),
                                            audit: rt.audit().clone(),
                                        };
                                        Box::pin(upstream.subscribe(&uri, who, &traceparent))
                                            .await
                                            .map(|()| Answer::Subscribed)
                                    }
                                    (Subscription::Subscribe, None) => Err(BackendError::Unavailable {
                                        upstream: upstream.name().to_string(),
                                        detail: "the caller's route cannot carry resource updates to it".into(),
                                    }),
                                }
                            }
                        },
                        None => Err(BackendError::Unavailable {
                            upstream: upstream.name().to_string(),
                            detail: "the resource URI could not be built from its arguments".into(),
                        }),
                    },
                };
                r.and_then(|ok| {
                    // One canonical text serves the credential check and the digest.
                    // INVARIANT: a backend credential never reaches the agent, even when the
                    // upstream itself echoes it; a result that cannot be checked is withheld too.
                    match ok.canonical_text() {
                        Some(text) if !upstream.leaks_credential(&text) => Ok((ok, crate::canonical::sha256_hex(text.as_bytes()))),
                        _ => Err(BackendError::Withheld {
                            upstream: upstream.name().to_string(),
                        }),
                    }
                })
            }
            None => Err(BackendError::Unavailable {
                upstream: "(none)".into(),
                detail: "no route".into(),
            }),
        };
        let took = started.elapsed();
        let metrics = rt.metrics();
        metrics.observe(Stage::Upstream, took);
        if let Some(route) = route {
            let failed = result.as_ref().err().map(BackendError::kind);
            metrics.upstream(route.upstream.name(), took, failed);
            if let (Some(span), Some(id)) = (&ctx.span.0, upstream_span) {
                span.upstream(
                    id,
                    route.upstream.name(),
                    std::time::SystemTime::now() - took,
                    took,
                    failed.is_none(),
                );
            }
        }
        // Microsecond resolution: enough, and short in the record.
        let latency_ms = (took.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        Forwarded {
            result,
            latency_ms,
            call: Executed { ctx, approved, allow_seq },
        }
    }
}

/// A complete answer, or the round of input the upstream asks for (after `round` rounds),
/// sealed for the caller.
fn settle<R>(
    rt: &Runtime,
    v: &super::validate::ValidatedArgs,
    upstream: &str,
    round: usize,
    called: Result<Called<R>, BackendError>,
    done: fn(R) -> Answer,
) -> Result<Answer, BackendError> {
    called.and_then(|c| match c {
        Called::Done(r) => Ok(done(r)),
        Called::Asks(f) => super::rounds::answer(rt, v, f, round + 1)
            .map(Answer::Input)
            .map_err(|detail| BackendError::Failed {
                upstream: upstream.to_string(),
                detail,
            }),
    })
}

/// An upstream's suggestions, only those the contract would take as the argument's value
/// (at most 100, as MCP allows): a completion cannot offer what a call would refuse.
fn only_acceptable(
    contract: &crate::contract::Contract,
    argument: &str,
    mut r: rmcp::model::CompleteResult,
) -> rmcp::model::CompleteResult {
    let before = r.completion.values.len();
    if let Some(spec) = contract.args.get(argument) {
        r.completion
            .values
            .retain(|v| spec.check(&serde_json::Value::String(v.clone())).is_ok());
    } else {
        r.completion.values.clear();
    }
    r.completion.values.truncate(100);
    if r.completion.values.len() != before {
        // The upstream's count no longer describes this list.
        r.completion.total = None;
    }
    r
}
