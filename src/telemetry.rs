//! One environment's OpenTelemetry traces (`telemetry.otlp_endpoint`): a span per request,
//! a child per stage, exported over OTLP/HTTP from a bounded queue.
//!
//! The spans are the SDK's span data, built here rather than by a tracer, because their IDs
//! are the gateway's: the trace ID is the audit record's (continued from the caller's
//! `traceparent`, else made for the request), and the upstream span's ID is the one the
//! outgoing `traceparent` names. The root span takes its decision, reason code, tool and
//! policy ids from the records the audit log made durable for the request, so it says what
//! the log says; it never carries arguments, reasons, tokens or session IDs.
//!
//! INVARIANT: exporting never slows or fails a request. A finished span is offered to a
//! bounded queue without waiting; when the queue is full, or an export fails, the spans are
//! dropped and counted (`capgate_trace_spans_dropped_total`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId as OtelTraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use rand::RngCore;
use tokio::sync::mpsc;

use crate::metrics::Stage;
use crate::trace::TraceId;

/// Spans waiting for export, at most: past it, new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Most spans one export carries.
const BATCH: usize = 512;
/// Longest a finished span waits for others to share its export.
const LINGER: Duration = Duration::from_millis(500);
/// Longest one export may take before it is given up (its spans dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `[environment.telemetry]`'s trace settings, as resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OtlpSettings {
    /// The OTLP/HTTP traces URL (`http://collector:4318/v1/traces`).
    pub(crate) endpoint: String,
    /// The share of new traces recorded (0.0 to 1.0); a caller's sampled `traceparent` is
    /// followed.
    pub(crate) sampling_ratio: f64,
    pub(crate) resource_attributes: BTreeMap<String, String>,
}

/// One environment's exporter: its queue, its sampling ratio, and where drops are counted.
pub(crate) struct Tracing {
    queue: mpsc::Sender<SpanData>,
    /// Traces whose ID's lower 63 bits fall under this are recorded.
    threshold: u64,
    scope: InstrumentationScope,
    metrics: crate::metrics::Handle,
    /// Spans queued or being exported: a clean stop waits for them.
    unsent: Arc<AtomicUsize>,
    exporter: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Starts the exporter task (on the current tokio runtime). Nothing is sent until a span
    /// ends; an endpoint that does not answer costs dropped spans, never a failed start.
    pub(crate) fn start(env: &str, settings: &OtlpSettings, metrics: crate::metrics::Handle) -> anyhow::Result<Arc<Self>> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("environment `{env}`: telemetry: http client: {e}"))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("environment `{env}`: telemetry.otlp_endpoint: {e}"))?;
        let mut attributes = vec![
            KeyValue::new("service.name", "capgate"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment.name", env.to_string()),
        ];
        attributes.extend(
            settings
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
        let resource = opentelemetry_sdk::Resource::builder_empty().with_attributes(attributes).build();
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(QUEUE);
        let unsent = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(export(rx, exporter, metrics.clone(), unsent.clone()));
        Ok(Arc::new(Self {
            queue: tx,
            unsent,
            threshold: threshold(settings.sampling_ratio),
            scope: InstrumentationScope::builder("capgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            metrics,
            exporter: Mutex::new(Some(task)),
        }))
    }

    /// The span of one request, if its trace is recorded: `parent` is the caller's span
    /// (from its `traceparent`) and whether the caller sampled it.
    pub(crate) fn begin(self: &Arc<Self>, trace: &TraceId, parent: Option<(SpanId, bool)>) -> Option<Arc<CallSpan>> {
        let trace_id = OtelTraceId::from_hex(trace.as_str()).ok()?;
        let sampled = match parent {
            Some((_, sampled)) => sampled,
            None => sampled_by_ratio(trace_id, self.threshold),
        };
        if !sampled {
            return None;
        }
        Some(Arc::new(CallSpan {
            tracing: self.clone(),
            trace_id,
            span_id: new_span_id(),
            parent: parent.map(|(id, _)| id),
            start: SystemTime::now(),
            root: Mutex::new(Root::default()),
        }))
    }

    fn offer(&self, span: SpanData) {
        self.unsent.fetch_add(1, Ordering::Relaxed);
        if self.queue.try_send(span).is_err() {
            self.unsent.fetch_sub(1, Ordering::Relaxed);
            self.metrics.spans_dropped(1);
        }
    }

    /// Sends what is queued, waiting at most `within`: at a clean stop.
    pub(crate) async fn shutdown(&self, within: Duration) {
        let task = self.exporter.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            // A request still running is not waited for: only what has been queued.
            let _ = tokio::time::timeout(within, async {
                while self.unsent.load(Ordering::Relaxed) > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            task.abort();
        }
    }
}

fn threshold(ratio: f64) -> u64 {
    // As the SDK's TraceIdRatioBased: the lower 63 bits of the trace ID against ratio × 2^63.
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio > 0.0 {
        (ratio * (1u64 << 63) as f64) as u64
    } else {
        0
    }
}

fn sampled_by_ratio(id: OtelTraceId, threshold: u64) -> bool {
    if threshold == u64::MAX {
        return true;
    }
    let bytes = id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(bytes.get(8..16).unwrap_or(&[0; 8]));
    (u64::from_be_bytes(low) >> 1) < threshold
}

fn new_span_id() -> SpanId {
    let mut b = [0u8; 8];
    loop {
        rand::thread_rng().fill_bytes(&mut b);
        if b != [0; 8] {
            return SpanId::from_bytes(b);
        }
    }
}

/// Takes finished spans off the queue and exports them in batches, one export at a time;
/// a batch that fails is dropped and counted.
async fn export(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    metrics: crate::metrics::Handle,
    unsent: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                _ => break,
            }
        }
        let n = batch.len();
        let sent = tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(std::mem::take(&mut batch))).await;
        if !matches!(sent, Ok(Ok(()))) {
            metrics.spans_dropped(n as u64);
            tracing::debug!("{n} spans not exported: {sent:?}");
        }
        unsent.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What the root span has learnt while the request ran.
#[derive(Default)]
struct Root {
    method: Option<String>,
    tool: Option<String>,
    decision: Option<&'static str>,
    reason_code: Option<&'static str>,
    policy_ids: Vec<String>,
    upstream: Option<String>,
    answered: Option<SystemTime>,
}

/// The span of one request. Ends (and is queued for export) when the last holder lets go:
/// the request, and the audit records of it not yet durable, whose facts it takes on as
/// they are written. Its end time is when the answer was ready.
pub(crate) struct CallSpan {
    tracing: Arc<Tracing>,
    trace_id: OtelTraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    start: SystemTime,
    root: Mutex<Root>,
}

impl CallSpan {
    fn root(&self) -> std::sync::MutexGuard<'_, Root> {
        // Nothing that holds this lock can panic half-way.
        self.root.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn context(&self, span_id: SpanId) -> SpanContext {
        SpanContext::new(self.trace_id, span_id, TraceFlags::SAMPLED, false, TraceState::default())
    }

    pub(crate) fn method(&self, method: &str) {
        self.root().method = Some(method.to_string());
    }

    /// One stage, from `started` for `took`, as a child of this span.
    pub(crate) fn stage(&self, stage: Stage, started: SystemTime, took: Duration) {
        self.child(stage.as_str(), new_span_id(), SpanKind::Internal, started, took, Vec::new(), true);
    }

    /// A span ID for the upstream call about to be made (its `traceparent` names it), and
    /// the `traceparent` itself.
    pub(crate) fn upstream_id(&self) -> (SpanId, String) {
        let id = new_span_id();
        (id, format!("00-{}-{}-01", self.trace_id, id))
    }

    /// The upstream call `id` (from [`Self::upstream_id`]): a client span.
    pub(crate) fn upstream(&self, id: SpanId, upstream: &str, started: SystemTime, took: Duration, ok: bool) {
        self.root().upstream = Some(upstream.to_string());
        let attributes = vec![KeyValue::new("capgate.upstream", upstream.to_string())];
        self.child(Stage::Upstream.as_str(), id, SpanKind::Client, started, took, attributes, ok);
    }

    #[expect(clippy::too_many_arguments, reason = "one span's every part")]
    fn child(
        &self,
        name: &'static str,
        id: SpanId,
        kind: SpanKind,
        started: SystemTime,
        took: Duration,
        attributes: Vec<KeyValue>,
        ok: bool,
    ) {
        let span = SpanData {
            span_context: self.context(id),
            parent_span_id: self.span_id,
            parent_span_is_remote: false,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: started,
            end_time: started + took,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if ok { Status::Unset } else { Status::error("") },
            instrumentation_scope: self.tracing.scope.clone(),
        };
        self.tracing.offer(span);
    }

    /// A record of this request became durable: the span says what it says (the last
    /// record's decision stands: an outcome follows its allow).
    pub(crate) fn recorded(&self, decision: &'static str, reason_code: &'static str, tool: Option<&str>, policy_ids: &[String]) {
        let mut root = self.root();
        root.decision = Some(decision);
        root.reason_code = Some(reason_code);
        if let Some(t) = tool {
            root.tool = Some(t.to_string());
        }
        if !policy_ids.is_empty() {
            root.policy_ids = policy_ids.to_vec();
        }
    }

    /// The answer is ready: the span's end.
    pub(crate) fn answered(&self) {
        self.root().answered.get_or_insert_with(SystemTime::now);
    }
}

impl std::fmt::Debug for CallSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallSpan({})", self.span_id)
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        let root = std::mem::take(&mut *self.root());
        let method = root.method.unwrap_or_else(|| "request".into());
        // As MCP's semantic conventions name them: `tools/call get_weather`.
        let name = match &root.tool {
            Some(t) => format!("{method} {t}"),
            None => method.clone(),
        };
        let mut attributes = vec![KeyValue::new("mcp.method.name", method)];
        if let Some(t) = root.tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", t));
        }
        if let Some(d) = root.decision {
            attributes.push(KeyValue::new("capgate.decision", d));
        }
        if let Some(c) = root.reason_code {
            attributes.push(KeyValue::new("capgate.reason_code", c));
        }
        if !root.policy_ids.is_empty() {
            attributes.push(KeyValue::new(
                "capgate.policy.ids",
                opentelemetry::Value::Array(
                    root.policy_ids
                        .into_iter()
                        .map(opentelemetry::StringValue::from)
                        .collect::<Vec<_>>()
                        .into(),
                ),
            ));
        }
        if let Some(u) = root.upstream {
            attributes.push(KeyValue::new("capgate.upstream", u));
        }
        let failed = matches!(root.decision, Some("error"));
        let span = SpanData {
            span_context: self.context(self.span_id),
            parent_span_id: self.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(name),
            start_time: self.start,
            end_time: root.answered.unwrap_or_else(SystemTime::now),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if failed { Status::error("") } else { Status::Unset },
            instrumentation_scope: self.tracing.scope.clone(),
        };
        self.tracing.offer(span);
    }
}

/// A durable record's facts, for its request's span (`AuditRecord::noted`).
pub(crate) struct Noted {
    pub(crate) span: Arc<CallSpan>,
    pub(crate) decision: &'static str,
    pub(crate) reason_code: &'static str,
    pub(crate) tool: Option<String>,
    pub(crate) policy_ids: Vec<String>,
}

impl Noted {
    /// Hands the facts to the span (which may then end, if nothing else holds it).
    pub(crate) fn apply(self) {
        self.span
            .recorded(self.decision, self.reason_code, self.tool.as_deref(), &self.policy_ids);
    }
}

/// A request's span as an audit record carries it to the writer: never serialized, never
/// part of what is hashed or compared.
#[derive(Clone, Default)]
pub(crate) struct SpanRef(pub(crate) Option<Arc<CallSpan>>);

impl std::fmt::Debug for SpanRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanRef")
    }
}

impl PartialEq for SpanRef {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
