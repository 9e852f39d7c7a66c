//! The call pipeline. [`Runtime::call_tool`] below is the whole of what happens to a
//! `tools/call`, in order (docs/ARCHITECTURE.md, docs/pipeline.md):
//!
//! authn (in the transport, before MCP) → contract (known and usable by this caller) →
//! validate → authz (the policy, with the validated arguments) → rate limit → approval →
//! audit (write-ahead) → forward → audit (outcome).
//!
//! Each stage hands the next a proof only it can build ([`authn::Authenticated`],
//! [`contract::Listed`], [`validate::ValidatedArgs`], [`authz::Authorized`],
//! [`approval::Approved`], [`Audited`]); the only way to an upstream is
//! [`Audited::forward`], which consumes its proof. The routes to the upstreams are private
//! to this module, so nothing else can reach one.
//!
//! INVARIANT: every call ends in exactly one decision record (allow, deny, pending or error)
//! and, when it ran, one outcome record. Any stage error is a refusal.

pub(crate) mod approval;
mod asks;
pub(crate) mod audit;
pub(crate) mod authn;
pub(crate) mod authz;
pub(crate) mod contract;
pub(crate) mod forward;
mod live;
pub(crate) mod rounds;
mod routes;
pub(crate) mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Map, Value};

use crate::audit::{AuditLog, AuditReader, AuditRecord, Outcome};
use crate::backend::UpstreamClient;
use crate::config::{Config, Environment};
use crate::contract::Kind;
use crate::decision::{Decision, ReasonCode};
use crate::denial::{Denial, Outage};
use crate::metrics::Stage;
use crate::policy::PolicyEngine;
use crate::request::CallCtx;
use authn::{Authenticated, Authenticator};

pub use audit::Audited;
pub use forward::Forwarded;
pub use live::Live;
pub(crate) use live::Reload;
pub(crate) use routes::{check_routes, current_pins};

/// Where a contract's calls go: an upstream and the tool name it knows. Private to the
/// pipeline: only [`Audited::forward`] reads it.
struct Route {
    upstream: Arc<UpstreamClient>,
    /// The upstream's name for the tool or prompt; for a resource, the contract's URI.
    tool: String,
    kind: crate::contract::Kind,
}

/// Everything one environment runs on, as one generation: the contracts and policies in
/// force with their routes, over the parts every generation shares ([`Shared`]). A reload
/// builds a new generation and swaps it in whole ([`Live`]); a request runs on the one it
/// started on, so no call ever sees one generation's contract with another's policy.
/// Nothing in it is shared with another environment, and none of it is reachable from
/// outside but through the methods below.
pub struct Runtime {
    shared: Arc<Shared>,
    env: Arc<Environment>,
    policy: Arc<dyn PolicyEngine>,
    routes: HashMap<String, Route>,
    /// Cancelled when a reload swaps this generation out: what outlives a request (a wait
    /// for approval, a listen stream) ends then rather than go on under rules no longer in
    /// force.
    retired: tokio_util::sync::CancellationToken,
}

/// What an environment keeps across reloads: its identity keys, its audit log, its rate
/// counters, its approval wake-ups and pins, and its upstream connections (a reload swaps
/// contracts and policies, never who is trusted or where records go).
pub struct Shared {
    authn: Authenticator,
    audit: AuditLog,
    store: Arc<dyn AuditReader>,
    rate: authz::RateLimiter,
    /// Every upstream of the environment, connected once; a reload routes over them again.
    clients: Vec<Arc<UpstreamClient>>,
    /// Woken when a decision is taken in this process; waiting calls also poll the store
    /// for decisions taken by other processes.
    approval_events: Arc<tokio::sync::Notify>,
    /// The pins file, and the tools stopped because their upstream definition no longer
    /// matches it (`any_stopped` spares the lock on every call when none is).
    pins_path: std::path::PathBuf,
    stopped: std::sync::RwLock<std::collections::BTreeSet<String>>,
    any_stopped: std::sync::atomic::AtomicBool,
    /// Seals and checks the `requestState` of pending answers (`approval.rs`).
    state_codec: rmcp::model::RequestStateCodec,
    metrics: crate::metrics::Handle,
    /// Where this environment's trace spans go, if it exports any.
    tracing: Option<Arc<crate::telemetry::Tracing>>,
}

// The shared parts read as the generation's own (`rt.audit`, `rt.rate`): a generation is
// those parts plus its contracts, and every stage was written against that whole.
impl std::ops::Deref for Runtime {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Runtime {
    /// Builds an environment's runtime whole or not at all: unreadable keys, an unopenable
    /// audit store or a contract without exactly one upstream tool stop the start (fail
    /// closed).
    pub(crate) async fn build(config: &Config, env: Arc<Environment>) -> anyhow::Result<Self> {
        routes::build(config, env).await
    }

    pub(crate) fn env(&self) -> &Environment {
        &self.env
    }

    pub(crate) fn authn(&self) -> &Authenticator {
        &self.authn
    }

    pub(crate) fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The store as read by the API, the console and waiting calls.
    pub(crate) fn store(&self) -> &dyn AuditReader {
        self.store.as_ref()
    }

    pub(crate) fn policy(&self) -> &Arc<dyn PolicyEngine> {
        &self.policy
    }

    /// Cancelled once a reload has put another generation in force.
    pub(crate) fn retired(&self) -> &tokio_util::sync::CancellationToken {
        &self.retired
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// A span for a request of trace `trace` (whose caller's span is `parent`), where this
    /// environment exports traces and samples this one.
    pub(crate) fn begin_span(
        &self,
        trace: &crate::trace::TraceId,
        parent: Option<(opentelemetry::trace::SpanId, bool)>,
    ) -> crate::telemetry::SpanRef {
        crate::telemetry::SpanRef(self.tracing.as_ref().and_then(|t| t.begin(trace, parent)))
    }

    /// Exports what spans are queued, waiting at most `within` (a clean stop).
    pub(crate) async fn flush_traces(&self, within: std::time::Duration) {
        if let Some(t) = &self.tracing {
            t.shutdown(within).await;
        }
    }

    /// A stage that took `took` and has just ended: its histogram, and its span.
    pub(crate) fn observed(&self, ctx: &CallCtx, stage: Stage, took: std::time::Duration) {
        self.metrics.observe(stage, took);
        if let Some(span) = &ctx.span.0 {
            span.stage(stage, std::time::SystemTime::now() - took, took);
        }
    }

    pub(crate) fn approval_events(&self) -> &tokio::sync::Notify {
        &self.approval_events
    }

    pub(crate) fn upstream_count(&self) -> usize {
        self.clients.len()
    }

    /// Tools this caller may call here: the rest do not exist for them.
    pub(crate) fn list_tools(&self, auth: &Authenticated) -> Vec<Tool> {
        self.usable_of(auth, Kind::Tool).map(|c| c.to_tool()).collect()
    }

    /// Whether `tool` is in this caller's list: what a transport may look at before the
    /// call is decided, without learning more than `tools/list` tells the caller anyway.
    pub(crate) fn usable(&self, auth: &Authenticated, tool: &str) -> Option<&crate::contract::Contract> {
        contract::usable(self, auth, tool).map(Arc::as_ref)
    }

    /// Runs one synchronous stage, timing it.
    fn timed<T>(&self, ctx: &CallCtx, stage: Stage, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = f();
        self.observed(ctx, stage, started.elapsed());
        out
    }

    /// Records a refusal and returns it; if even the refusal cannot be recorded, the answer
    /// becomes "unavailable" (the caller must not believe a refusal was logged when it was
    /// not).
    async fn refuse(&self, denial: Denial, rec: AuditRecord) -> Denial {
        match self.audit.append(rec).await {
            Ok(_) => denial,
            Err(_) => Denial::Unavailable(Outage::RefusalUnrecorded),
        }
    }

    pub(crate) async fn call_tool(
        &self,
        auth: &Authenticated,
        ctx: &CallCtx,
        tool: &str,
        args: Option<Map<String, Value>>,
        wait: approval::Wait,
    ) -> Result<rmcp::model::CallToolResponse, Denial> {
        match self.call(auth, ctx, Kind::Tool, tool, args, wait).await? {
            Answer::Tool(r) => Ok(r.into()),
            Answer::Input(r) => Ok(r.into()),
            // A tool's route answers with a tool's result; anything else is a wiring fault.
            _ => Err(Denial::Unavailable(Outage::CallIncomplete)),
        }
    }

    /// Prompts the caller may get here.
    pub(crate) fn list_prompts(&self, auth: &Authenticated) -> Vec<rmcp::model::Prompt> {
        self.usable_of(auth, Kind::Prompt).map(|c| c.to_prompt()).collect()
    }

    /// Resources (fixed URIs) and resource templates the caller may read here.
    pub(crate) fn list_resources(&self, auth: &Authenticated) -> (Vec<rmcp::model::Resource>, Vec<rmcp::model::ResourceTemplate>) {
        let (mut fixed, mut templates) = (Vec::new(), Vec::new());
        for c in self.usable_of(auth, Kind::Resource) {
            match c.to_resource() {
                crate::contract::Listing::Fixed(r) => fixed.push(r),
                crate::contract::Listing::Template(t) => templates.push(t),
            }
        }
        (fixed, templates)
    }

    fn usable_of<'a>(&'a self, auth: &'a Authenticated, kind: Kind) -> impl Iterator<Item = &'a Arc<crate::contract::Contract>> + 'a {
        self.env
            .contracts
            .values()
            .filter(move |c| c.kind == kind)
            .filter_map(move |c| contract::usable(self, auth, &c.key))
    }

    /// Whether this environment governs any prompt, or any resource (the capabilities it
    /// announces).
    pub(crate) fn serves(&self, kind: Kind) -> bool {
        self.env.contracts.values().any(|c| c.kind == kind)
    }

    /// One governed request: `tools/call`, `prompts/get` (`name` is the prompt's) or
    /// `resources/read` (`name` is the URI). The same stages for each.
    pub(crate) async fn call(
        &self,
        auth: &Authenticated,
        ctx: &CallCtx,
        kind: Kind,
        tool: &str,
        args: Option<Map<String, Value>>,
        wait: approval::Wait,
    ) -> Result<Answer, Denial> {
        let env = self.env.name.as_str();
        let who = Some(auth.principal());

        // contract: unknown and unusable ones answer alike, before anything about the
        // arguments is said. A resource is found by its URI, whose variables are its
        // arguments.
        let found = match kind {
            Kind::Resource => contract::find_resource(self, auth, tool).map(|(l, vars)| (l, Some(vars))),
            _ => contract::find(self, auth, &kind.key(tool)).map(|l| (l, None)),
        };
        let (listed, args) = match found {
            Ok((l, vars)) => (l, vars.or(args)),
            Err(contract::NotAvailable) => {
                let denial = Denial::ToolNotAvailable {
                    kind,
                    tool: tool.to_string(),
                };
                // What the request named, digested: a resource's URI; a prompt's arguments
                // (none given are none: `{}`).
                let named = match kind {
                    Kind::Tool => args,
                    Kind::Prompt => Some(args.unwrap_or_default()),
                    Kind::Resource => Some(Map::from_iter([("uri".to_string(), Value::String(tool.to_string()))])),
                };
                let rec = denial
                    .record(env, ctx)
                    .principal(who)
                    .tool(Some(crate::denial::printable(tool)))
                    .args_digest(digest_of(&named));
                return Err(self.refuse(denial, rec).await);
            }
        };
        let validated = self.timed(ctx, Stage::Validate, || validate::validate(listed, args));
        self.decide(auth, ctx, kind, validated, wait).await
    }

    /// `resources/subscribe` or `resources/unsubscribe` for `uri`: decided like a read of
    /// it (the same contract, unknown and forbidden alike, validated, recorded), then
    /// passed to its upstream, which routes its updates to this caller's session only.
    pub(crate) async fn subscription(
        &self,
        auth: &Authenticated,
        ctx: &CallCtx,
        uri: &str,
        change: validate::Subscription,
        wait: approval::Wait,
    ) -> Result<Answer, Denial> {
        let (listed, vars) = match contract::find_resource(self, auth, uri) {
            Ok(found) => found,
            Err(contract::NotAvailable) => {
                let denial = Denial::ToolNotAvailable {
                    kind: Kind::Resource,
                    tool: uri.to_string(),
                };
                let named = Some(Map::from_iter([("uri".to_string(), Value::String(uri.to_string()))]));
                let rec = denial
                    .record(&self.env.name, ctx)
                    .principal(Some(auth.principal()))
                    .tool(Some(crate::denial::printable(uri)))
                    .args_digest(digest_of(&named));
                return Err(self.refuse(denial, rec).await);
            }
        };
        let validated = self.timed(ctx, Stage::Validate, || {
            validate::validate(listed, Some(vars)).map(|v| v.for_subscription(change))
        });
        self.decide(auth, ctx, Kind::Resource, validated, wait).await
    }

    /// `completion/complete` for an argument of a prompt, or a variable of a resource
    /// template: the reference is found like the prompt or resource itself (unknown and
    /// forbidden alike), the partial value and the context's values are validated, and the
    /// upstream's suggestions come back only where the contract would take them.
    pub(crate) async fn complete(
        &self,
        auth: &Authenticated,
        ctx: &CallCtx,
        reference: &rmcp::model::Reference,
        argument: &rmcp::model::ArgumentInfo,
        context: Option<&std::collections::HashMap<String, String>>,
    ) -> Result<Answer, Denial> {
        let env = self.env.name.as_str();
        let (kind, named) = match reference {
            rmcp::model::Reference::Prompt(p) => (Kind::Prompt, p.name.as_str()),
            rmcp::model::Reference::Resource(r) => (Kind::Resource, r.uri.as_str()),
            _ => {
                let denial = Denial::InvalidParams {
                    problem: "`params.ref.type` must be `ref/prompt` or `ref/resource`",
                };
                let rec = denial.record(env, ctx).principal(Some(auth.principal()));
                return Err(self.refuse(denial, rec).await);
            }
        };
        let found = match kind {
            Kind::Resource => contract::find_template(self, auth, named),
            _ => contract::find(self, auth, &kind.key(named)),
        };
        let listed = match found {
            Ok(l) => l,
            Err(contract::NotAvailable) => {
                let denial = Denial::ToolNotAvailable {
                    kind,
                    tool: named.to_string(),
                };
                let asked = Map::from_iter([
                    ("argument".to_string(), Value::String(argument.name.clone())),
                    ("value".to_string(), Value::String(argument.value.clone())),
                ]);
                let rec = denial
                    .record(env, ctx)
                    .principal(Some(auth.principal()))
                    .tool(Some(crate::denial::printable(named)))
                    .args_digest(digest_of(&Some(asked)));
                return Err(self.refuse(denial, rec).await);
            }
        };
        let validated = self.timed(ctx, Stage::Validate, || {
            validate::partial(listed, &argument.name, &argument.value, context)
        });
        self.decide(auth, ctx, kind, validated, approval::Wait::default()).await
    }

    /// Everything after the contract stage, the same for every kind of request.
    async fn decide(
        &self,
        auth: &Authenticated,
        ctx: &CallCtx,
        kind: Kind,
        validated: Result<validate::ValidatedArgs, Box<validate::Invalid>>,
        mut wait: approval::Wait,
    ) -> Result<Answer, Denial> {
        let env = self.env.name.as_str();
        let who = Some(auth.principal());
        let relay = wait.relay.clone();
        let cancel = wait.cancelled.clone();
        let tool = match &validated {
            Ok(v) => v.listed().contract().tool.clone(),
            Err(i) => i.listed.contract().tool.clone(),
        };
        let tool = tool.as_str();

        // validate
        let validated = match validated {
            Ok(v) => v,
            Err(invalid) => {
                let validate::Invalid {
                    listed,
                    errors,
                    more,
                    args,
                } = *invalid;
                let contract = listed.contract();
                let denial = Denial::ArgumentsInvalid {
                    tool: tool.to_string(),
                    errors,
                    more,
                };
                let rec = denial
                    .record(env, ctx)
                    .principal(who)
                    .tool(Some(tool.to_string()))
                    .args_digest(digest_of(&args))
                    .args(args.as_ref().map(|m| validate::redact(contract, m)))
                    .contract_digest(&contract.digest);
                return Err(self.refuse(denial, rec).await);
            }
        };

        // authz: the policy sees the validated arguments; a refusal answers like an unknown
        // tool.
        let authorized = match self.timed(ctx, Stage::Authorize, || authz::authorize(self, validated)) {
            Ok(a) => a,
            Err(refused) => {
                let (validated, decision) = *refused;
                // Why a policy could not be evaluated is the operator's to read, never the
                // caller's (who sees an unknown tool). Cedar's messages quote the values they
                // failed on: for a contract with sensitive arguments only the policies are named.
                if !decision.errors().is_empty() {
                    let ids: Vec<&str> = decision.reasons().iter().map(AsRef::as_ref).collect();
                    if validated.listed().contract().args.values().any(|a| a.sensitive) {
                        tracing::warn!(env = %env, trace_id = %ctx.trace.as_str(), "policy evaluation failed, call denied (policies: {})", ids.join(", "));
                    } else {
                        tracing::warn!(env = %env, trace_id = %ctx.trace.as_str(), "policy evaluation failed, call denied: {}", decision.errors().join("; "));
                    }
                }
                let denial = Denial::ToolNotAvailable {
                    kind,
                    tool: tool.to_string(),
                };
                let rec = validated
                    .describe(denial.record(env, ctx).principal(who))
                    .policy(authz::policy_ref(self, &decision));
                return Err(self.refuse(denial, rec).await);
            }
        };

        // pinned definition: checked after authz, so only callers who may call the tool
        // learn that it is stopped.
        if kind == Kind::Tool && self.is_stopped(tool) {
            let denial = Denial::ToolStopped { tool: tool.to_string() };
            let rec = authorized.validated().describe(denial.record(env, ctx).principal(who));
            return Err(self.refuse(denial, rec).await);
        }

        // rate limit
        if let Err(retry_after) = self.rate.check(&authorized) {
            let denial = Denial::RateLimited {
                tool: tool.to_string(),
                retry_after,
            };
            let rec = authorized.validated().describe(denial.record(env, ctx).principal(who));
            return Err(self.refuse(denial, rec).await);
        }

        // A repeat's `requestState` is checked against this call before anything else is
        // decided on it: one that fails (tampered, another caller's, other arguments,
        // expired) is refused and nothing runs. An approval's decides nothing either: the
        // approval store does. A round of input's lets exactly the answers it asked for go
        // upstream with the retry (`rounds.rs`).
        let responses = wait.input_responses.take();
        let unasked = |r: Option<rmcp::model::InputResponses>| r.map(|r| r.into_keys().collect()).unwrap_or_default();
        let (resume, dropped): (_, Vec<String>) = match &wait.request_state {
            None => (None, unasked(responses)),
            Some(state) => {
                let opened = approval::open_state(self, auth, authorized.validated(), state).and_then(rounds::Sealed::read);
                let checked = match opened {
                    Err(problem) => Err(Denial::RequestStateRefused { problem }),
                    Ok(rounds::Sealed::Approval) => Ok((None, unasked(responses))),
                    Ok(rounds::Sealed::Input(_)) if authorized.validated().listed().contract().requires_approval => {
                        Err(Denial::InputRefused {
                            problem: "the call needs approval, which rounds of input do not carry across".into(),
                        })
                    }
                    Ok(rounds::Sealed::Input(s)) => rounds::resume(s, responses)
                        .map(|r| (Some((r.resume, r.round)), r.dropped))
                        .map_err(|problem| Denial::InputRefused { problem }),
                };
                match checked {
                    Ok(checked) => checked,
                    Err(denial) => {
                        let rec = authorized.validated().describe(denial.record(env, ctx).principal(who));
                        return Err(self.refuse(denial, rec).await);
                    }
                }
            }
        };
        // Answers nobody asked for through this gateway go nowhere, and that is recorded
        // (the call goes on: an upstream asks again for what it lacks).
        if !dropped.is_empty() {
            let rec = AuditRecord::new(env, ctx, Decision::Deny, ReasonCode::RelayRefused, rounds::dropped_reason(&dropped)).principal(who);
            let rec = authorized.validated().describe(rec);
            if self.audit.append(rec).await.is_err() {
                return Err(Denial::Unavailable(Outage::RefusalUnrecorded));
            }
        }

        // approval, then the write-ahead record: for a released approval both happen in the
        // store's one transaction.
        let started = std::time::Instant::now();
        let audited = match approval::check(authorized) {
            Ok(approved) => {
                let recorded = audit::record_allow(self, ctx, approved).await;
                self.observed(ctx, Stage::Audit, started.elapsed());
                recorded.map_err(|e| {
                    tracing::error!(env = %env, trace_id = %ctx.trace.as_str(), "refusing call: {e:?}");
                    Denial::Unavailable(Outage::AllowUnrecorded)
                })?
            }
            // Boxed: only calls that need approval carry the approval flow's state.
            Err(pending) => {
                let flow = Box::pin(approval::decide(self, auth, ctx, *pending, wait)).await;
                self.observed(ctx, Stage::Approval, started.elapsed());
                match flow? {
                    approval::Flow::Run(a) => *a,
                    approval::Flow::Answer(mut r) => {
                        add_trace_meta(&mut r, ctx);
                        return Ok(Answer::Tool(r));
                    }
                }
            }
        };

        // forward: the proof is spent here.
        let Forwarded { result, latency_ms, call } = audited.relaying(relay, cancel).resuming(resume).forward(self).await;
        let mut refusal = None;
        let rec = call.outcome_record(env, who);
        let (answer, rec) = match result {
            Ok((mut r, digest)) => {
                let status = match &r {
                    Answer::Tool(t) if t.is_error == Some(true) => "tool_error",
                    // It ran, and is waiting for the caller's answers (the retry is a call
                    // of its own).
                    Answer::Input(_) => "input_required",
                    _ => "ok",
                };
                let mut rec = rec;
                rec.outcome = Some(Outcome {
                    decision_record: Some(call.allow_seq()),
                    status: status.into(),
                    latency_ms,
                    result_digest: Some(digest),
                });
                r.add_trace_meta(&call.ctx);
                (r, rec)
            }
            Err(e) => {
                // A cancelled call is an outcome like a failed one (the same reason code, so
                // that every reader of outcomes counts it); its status says what happened,
                // and that it ran, perhaps in part, until then.
                let cancelled = matches!(e, crate::backend::BackendError::Cancelled { .. });
                // An upstream's -32021 is the caller's to read as the protocol error it is.
                if let crate::backend::BackendError::NeedsCapability { required, .. } = &e {
                    refusal = Some(Denial::NeedsCapability {
                        required: required.clone(),
                    });
                }
                let mut rec = rec;
                rec.decision = Decision::Error;
                rec.reason_code = ReasonCode::BackendError;
                if cancelled {
                    rec.reason = format!("{e}; it ran until then");
                } else {
                    tracing::warn!(env = %env, trace_id = %call.ctx.trace.as_str(), "upstream failure: {}", e.detail());
                    rec.reason = format!("{e}: {}", e.detail());
                }
                rec.outcome = Some(Outcome {
                    decision_record: Some(call.allow_seq()),
                    status: if cancelled { "cancelled" } else { "backend_error" }.into(),
                    latency_ms,
                    result_digest: None,
                });
                // A tool's backend failure is a tool error the agent can read, not a protocol
                // error; a prompt or a resource has no such result, so it is an error.
                let text = format!("{e}; trace id {}", call.ctx.trace.as_str());
                let r = if kind == Kind::Tool {
                    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
                    add_trace_meta(&mut r, &call.ctx);
                    Answer::Tool(r)
                } else {
                    Answer::Failed(text)
                };
                (r, rec)
            }
        };
        // The allow record that let this call run is durable already; the outcome follows it
        // in the next commit, and the answer does not wait for that fsync. A crash in between
        // leaves an allow record without an outcome: "ran, result unknown", which is also
        // what a crash during the call itself leaves.
        if let Err(e) = self.audit.enqueue(rec).await {
            tracing::error!(env = %env, trace_id = %call.ctx.trace.as_str(), "outcome record not written: {e:?}");
        }
        match refusal {
            Some(denial) => Err(denial),
            None => Ok(answer),
        }
    }
}

/// Refusal records carry the digest of the arguments as given; computed only for them.
fn digest_of(args: &Option<Map<String, Value>>) -> Option<String> {
    args.as_ref().map(crate::canonical::digest_map)
}

/// What a governed request answers.
pub(crate) enum Answer {
    Tool(CallToolResult),
    Prompt(rmcp::model::GetPromptResult),
    Resource(rmcp::model::ReadResourceResult),
    Completion(rmcp::model::CompleteResult),
    /// A tool's upstream asked for input that the caller (on 2026-07-28) gives by retrying,
    /// with the gateway's sealed `requestState` (`rounds.rs`).
    Input(rmcp::model::InputRequiredResult),
    /// A subscription made or ended: the answer is empty.
    Subscribed,
    /// A prompt's or resource's upstream failed (recorded); the caller gets this text as
    /// an error.
    Failed(String),
}

impl Answer {
    /// The result's JSON text, for the credential check and the outcome's digest.
    fn canonical_text(&self) -> Option<String> {
        let v = match self {
            Answer::Tool(r) => serde_json::to_value(r),
            Answer::Prompt(r) => serde_json::to_value(r),
            Answer::Resource(r) => serde_json::to_value(r),
            Answer::Completion(r) => serde_json::to_value(r),
            Answer::Input(r) => serde_json::to_value(r),
            Answer::Subscribed => Ok(Value::Object(Map::new())),
            Answer::Failed(_) => return None,
        };
        v.ok().map(|v| crate::canonical::canonical_json(&v))
    }

    /// The gateway's marks on an answer it gives: the trace ID, and the result's kind.
    /// The upstream speaks 2025-11-25, whose results carry no `resultType`; every answer
    /// relayed is a complete one, and 2026-07-28 clients require it said (rmcp takes it off
    /// again for an older caller).
    fn add_trace_meta(&mut self, ctx: &CallCtx) {
        let trace = || Value::String(ctx.trace.as_str().to_string());
        let complete = Some(rmcp::model::ResultType::COMPLETE);
        match self {
            Answer::Tool(r) => add_trace_meta(r, ctx),
            Answer::Prompt(r) => {
                r.result_type = complete;
                r.meta
                    .get_or_insert_with(Default::default)
                    .0
                    .insert("capgate/trace_id".into(), trace());
            }
            Answer::Resource(r) => {
                r.result_type = complete;
                r.meta
                    .get_or_insert_with(Default::default)
                    .0
                    .insert("capgate/trace_id".into(), trace());
            }
            Answer::Completion(r) => {
                r.result_type = complete;
                r.meta
                    .get_or_insert_with(Default::default)
                    .0
                    .insert("capgate/trace_id".into(), trace());
            }
            Answer::Input(r) => {
                r.meta
                    .get_or_insert_with(Default::default)
                    .0
                    .insert("capgate/trace_id".into(), trace());
            }
            Answer::Failed(_) | Answer::Subscribed => {}
        }
    }
}

/// A tool result's marks: see [`Answer::add_trace_meta`].
fn add_trace_meta(r: &mut CallToolResult, ctx: &CallCtx) {
    r.result_type = Some(rmcp::model::ResultType::COMPLETE);
    let meta = r.meta.get_or_insert_with(Default::default);
    meta.0
        .insert("capgate/trace_id".into(), Value::String(ctx.trace.as_str().to_string()));
}
