//! One environment's Prometheus metrics (`prometheus-client`): what its decisions, stages,
//! audit commits, upstreams, approvals, sessions and key refreshes come to, served as
//! Prometheus text on `/metrics` (the environment's listener, or its `metrics_listen`).
//!
//! Every series carries the environment's name as `env`. Label values are bounded by the
//! configuration, never by what a caller sends: a tool is named only where the record names
//! a contract's tool (an unknown name a caller tried is `""`), reason codes and decisions are
//! the gateway's own vocabulary, upstreams and issuers are the config's.
//!
//! Decisions are counted by the audit writer as their records become durable, so that the
//! counts are the log's, record for record (`capgate audit export` agrees with them).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of every latency histogram's buckets: a cached-token call is tens
/// of microseconds, an fsync a few milliseconds, a call held for approval minutes.
const SECONDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0, 30.0,
];
/// Records per audit transaction: 1 up to the writer's batch limit (512).
const RECORDS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

fn seconds() -> Histogram {
    Histogram::new(SECONDS)
}

/// The steps of a governed request that are timed on their own (`capgate_stage_duration_seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Checking the bearer token (cached or its signature).
    Authn,
    /// The arguments against the contract.
    Validate,
    /// The policy's decision on the validated call.
    Authorize,
    /// Looking up or opening the approval request.
    Approval,
    /// The write-ahead allow record, to durable.
    Audit,
    /// The upstream's call.
    Upstream,
}

impl Stage {
    pub(crate) const ALL: [Stage; 6] = [
        Stage::Authn,
        Stage::Validate,
        Stage::Authorize,
        Stage::Approval,
        Stage::Audit,
        Stage::Upstream,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Authn => "authn",
            Stage::Validate => "validate",
            Stage::Authorize => "authorize",
            Stage::Approval => "approval",
            Stage::Audit => "audit",
            Stage::Upstream => "upstream",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    tool: String,
    decision: &'static str,
    reason_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksLabels {
    issuer: String,
    result: &'static str,
}

/// The approval states a request is counted in (`capgate_approval_requests`).
pub(crate) const APPROVAL_STATES: [&str; 5] = ["pending", "approved", "denied", "expired", "executed"];

/// What the metrics keep of one durable record: its labels (see the module's doc).
#[derive(Debug)]
pub(crate) struct Tally {
    labels: DecisionLabels,
    outcome: bool,
}

impl Tally {
    /// A record's labels: `tool` is named only when `names_contract` (see the module's doc).
    pub(crate) fn new(tool: Option<&str>, names_contract: bool, decision: &'static str, reason_code: &'static str, outcome: bool) -> Self {
        // Any other tool name is what a caller sent: a label value of the caller's choosing.
        let tool = match tool {
            Some(t) if names_contract => t.to_string(),
            _ => String::new(),
        };
        Self {
            labels: DecisionLabels {
                tool,
                decision,
                reason_code,
            },
            outcome,
        }
    }
}

/// The audit writer's figures: cloned into its thread, which alone updates them.
#[derive(Clone)]
pub(crate) struct AuditMetrics {
    decisions: Family<DecisionLabels, Counter>,
    outcomes: Family<DecisionLabels, Counter>,
    records: Counter,
    commits: Counter,
    checkpoints: Counter,
    commit_seconds: Histogram,
    commit_records: Histogram,
    wait_seconds: Histogram,
}

impl AuditMetrics {
    /// Counts a commit and the records it made durable: each an outcome (it follows the
    /// allow record of a call that ran) or a decision.
    pub(crate) fn committed(&self, written: &[Tally], took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        if written.is_empty() {
            return;
        }
        self.records.inc_by(written.len() as u64);
        self.commits.inc();
        self.commit_records.observe(written.len() as f64);
        for t in written {
            let family = if t.outcome { &self.outcomes } else { &self.decisions };
            family.get_or_create(&t.labels).inc();
        }
    }

    pub(crate) fn checkpointed(&self) {
        self.checkpoints.inc();
    }

    pub(crate) fn waited(&self, d: Duration) {
        self.wait_seconds.observe(d.as_secs_f64());
    }

    /// Figures nobody reads (tests of the writer).
    #[cfg(test)]
    pub(crate) fn unregistered() -> Self {
        Metrics::new("").audit
    }
}

/// One environment's registry and the handles the gateway updates.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) audit: AuditMetrics,
    stages: [Histogram; Stage::ALL.len()],
    call_seconds: Histogram,
    upstream_seconds: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    /// Each upstream's histogram once made, found by name without building a label set
    /// (an allocation per call otherwise); upstreams are the config's, so it stays small.
    upstream_by_name: std::sync::RwLock<std::collections::HashMap<String, Histogram>>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    approvals: Family<StateLabels, Gauge>,
    sessions: Gauge,
    jwks: Family<JwksLabels, Counter>,
    spans_dropped: Counter,
}

impl Metrics {
    pub(crate) fn new(env: &str) -> Self {
        let mut root = Registry::with_prefix_and_labels("capgate", [("env".into(), env.to_string().into())].into_iter());
        let audit = AuditMetrics {
            decisions: Family::default(),
            outcomes: Family::default(),
            records: Counter::default(),
            commits: Counter::default(),
            checkpoints: Counter::default(),
            commit_seconds: seconds(),
            commit_records: Histogram::new(RECORDS),
            wait_seconds: seconds(),
        };
        let stage_family: Family<StageLabels, Histogram, fn() -> Histogram> = Family::new_with_constructor(seconds);
        // Made once: the hot path then observes into its stage's histogram without a lookup.
        let stages = Stage::ALL.map(|s| stage_family.get_or_create_owned(&StageLabels { stage: s.as_str() }));
        let m = Self {
            audit,
            stages,
            call_seconds: seconds(),
            upstream_seconds: Family::new_with_constructor(seconds),
            upstream_by_name: Default::default(),
            upstream_errors: Family::default(),
            approvals: Family::default(),
            sessions: Gauge::default(),
            jwks: Family::default(),
            spans_dropped: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut root;
        r.register(
            "decisions",
            "Decision records made durable in the audit log, by tool (a contract's, else empty), decision and reason code",
            m.audit.decisions.clone(),
        );
        r.register(
            "outcomes",
            "Outcome records (what a call that ran came to) made durable in the audit log, by tool, decision and reason code",
            m.audit.outcomes.clone(),
        );
        r.register("audit_records", "Audit records durably written", m.audit.records.clone());
        r.register(
            "audit_commits",
            "Audit transactions (fsyncs) that wrote records",
            m.audit.commits.clone(),
        );
        r.register("audit_checkpoints", "Signed checkpoints written", m.audit.checkpoints.clone());
        r.register_with_unit(
            "audit_commit_duration",
            "Time from the start of an audit transaction to its durable commit",
            Unit::Seconds,
            m.audit.commit_seconds.clone(),
        );
        r.register(
            "audit_commit_records",
            "Records per audit transaction (group commit)",
            m.audit.commit_records.clone(),
        );
        r.register_with_unit(
            "audit_wait_duration",
            "Time an awaited audit append took from submission to durable",
            Unit::Seconds,
            m.audit.wait_seconds.clone(),
        );
        r.register_with_unit(
            "stage_duration",
            "Time each stage of a governed request took",
            Unit::Seconds,
            stage_family,
        );
        r.register_with_unit(
            "call_duration",
            "Time from a tools/call's arrival to its answer (a call waiting for an approval included)",
            Unit::Seconds,
            m.call_seconds.clone(),
        );
        r.register_with_unit(
            "upstream_request_duration",
            "Time an upstream took to answer a forwarded request",
            Unit::Seconds,
            m.upstream_seconds.clone(),
        );
        r.register(
            "upstream_errors",
            "Forwarded requests that failed, by upstream and kind of failure",
            m.upstream_errors.clone(),
        );
        r.register(
            "approval_requests",
            "Approval requests in the store, by state (read when scraped)",
            m.approvals.clone(),
        );
        r.register("mcp_sessions", "MCP sessions open on this listener", m.sessions.clone());
        r.register(
            "jwks_refreshes",
            "JWKS fetches after start, by issuer and result (ok or failed)",
            m.jwks.clone(),
        );
        r.register(
            "trace_spans_dropped",
            "Spans not exported: the export queue was full, or the export failed",
            m.spans_dropped.clone(),
        );
        Self { registry: root, ..m }
    }

    pub(crate) fn observe(&self, stage: Stage, d: Duration) {
        if let Some(h) = self.stages.get(stage as usize) {
            h.observe(d.as_secs_f64());
        }
    }

    pub(crate) fn call(&self, d: Duration) {
        self.call_seconds.observe(d.as_secs_f64());
    }

    pub(crate) fn upstream(&self, upstream: &str, d: Duration, error: Option<&'static str>) {
        if let Some(kind) = error {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    upstream: upstream.to_string(),
                    kind,
                })
                .inc();
        }
        let known = self.upstream_by_name.read().ok().and_then(|m| m.get(upstream).cloned());
        let h = match known {
            Some(h) => h,
            None => {
                let h = self.upstream_seconds.get_or_create_owned(&UpstreamLabels {
                    upstream: upstream.to_string(),
                });
                if let Ok(mut m) = self.upstream_by_name.write() {
                    m.insert(upstream.to_string(), h.clone());
                }
                h
            }
        };
        h.observe(d.as_secs_f64());
    }

    pub(crate) fn spans_dropped(&self, n: u64) {
        self.spans_dropped.inc_by(n);
    }

    pub(crate) fn jwks_refreshed(&self, issuer: &str, ok: bool) {
        let labels = JwksLabels {
            issuer: issuer.to_string(),
            result: if ok { "ok" } else { "failed" },
        };
        self.jwks.get_or_create(&labels).inc();
    }

    /// The Prometheus text (format 0.0.4) of every series, with the gauges read now: the
    /// open sessions, and the approval requests by state (`None`: the store did not answer,
    /// and the last figures stand).
    pub(crate) fn render(&self, sessions: usize, approvals: Option<&[(String, u64)]>) -> String {
        self.sessions.set(i64::try_from(sessions).unwrap_or(i64::MAX));
        if let Some(counts) = approvals {
            for state in APPROVAL_STATES {
                let n = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
                self.approvals
                    .get_or_create(&StateLabels { state })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Content type of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Shared by an environment's every generation and listener.
pub(crate) type Handle = Arc<Metrics>;
