//! The audit explorer's and the contracts page's API (`/api/audit…`, `/api/contracts`):
//! read-only views of the environment's log and rules for approvers and auditors, behind
//! the same layers as the approvals API (Host, Origin, token in the header only, body
//! limit, a valid token). Every read is bounded: a page holds at most [`MAX_PAGE`]
//! records, a search spans at most [`MAX_RANGE`], the chart at most [`MAX_CHART`]. A caller
//! with neither an approver nor an auditor role is refused (403), and the refusal recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::http::{Caller, HttpState};
use crate::audit::store::{Search, StoredRow};
use crate::denial::{ApiProblem, Denial, Outage};

/// Most records one page shows.
const MAX_PAGE: u32 = 500;
/// Longest time range one search spans.
const MAX_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);
/// Longest range the per-minute chart spans (1,440 minutes).
const MAX_CHART: Duration = Duration::from_secs(24 * 3600);
/// How long a verification of the whole chain is shown before it is done again.
const CHAIN_FRESH: Duration = Duration::from_secs(5);

/// Whether the caller may read the log and the rules: an approver here, or an auditor.
fn may_read(st: &HttpState, caller: &Caller) -> bool {
    let p = caller.auth.principal();
    let rt = st.rt();
    p.roles.iter().any(|r| rt.env().auditor_roles.contains(r)) || super::api::is_approver(st, p)
}

async fn refuse(st: &HttpState, caller: &Caller, denial: Denial) -> Response {
    let rec = denial
        .record(&st.rt().env().name, &caller.call)
        .principal(Some(caller.auth.principal()));
    st.refuse(&denial, rec, Value::Null).await
}

fn unavailable(st: &HttpState, caller: &Caller) -> Response {
    super::respond::http(
        &Denial::Unavailable(Outage::ApprovalApi),
        &caller.call.trace,
        &st.rt().env().resource_metadata_url(),
        Value::Null,
    )
}

/// A row's record as the API shows it: the stored JSON, read back (a row that does not
/// read is shown as what it is, for the chain view to flag).
fn shown(row: &StoredRow) -> Value {
    serde_json::from_str(&row.record).unwrap_or_else(|_| json!({"seq": row.seq, "unreadable": true}))
}

/// `[from, to)` from the query, as the stores compare times (to the second, UTC): the last
/// hour by default; `longest` bounds it.
fn range(from: Option<&str>, to: Option<&str>, longest: Duration) -> Option<(String, String)> {
    let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
    let to = match to {
        Some(t) => parse(t)?,
        None => OffsetDateTime::now_utc() + Duration::from_secs(1),
    };
    let from = match from {
        Some(f) => parse(f)?,
        None => to - Duration::from_secs(3600),
    };
    if from >= to || to - from > longest {
        return None;
    }
    let second = |t: OffsetDateTime| {
        let t = t.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    Some((second(from), second(to)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    from: Option<String>,
    to: Option<String>,
    decision: Option<String>,
    reason_code: Option<String>,
    tool: Option<String>,
    caller: Option<String>,
    trace_id: Option<String>,
    limit: Option<u32>,
    before: Option<i64>,
}

/// Records matching the filters, newest first; `next_before` pages on.
pub(crate) async fn search(
    State(st): State<Arc<HttpState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !may_read(&st, &caller) {
        return refuse(&st, &caller, Denial::ReadRefused).await;
    }
    let Ok(Query(q)) = query else {
        return refuse(&st, &caller, Denial::Api(ApiProblem::AuditQuery)).await;
    };
    let Some((from, to)) = range(q.from.as_deref(), q.to.as_deref(), MAX_RANGE) else {
        return refuse(&st, &caller, Denial::Api(ApiProblem::TimeRange)).await;
    };
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=MAX_PAGE) => n,
        Some(_) => return refuse(&st, &caller, Denial::Api(ApiProblem::Limit)).await,
    };
    if q.before.is_some_and(|b| b < 1) {
        return refuse(&st, &caller, Denial::Api(ApiProblem::Sequence)).await;
    }
    // An empty filter is no filter (what a form sends for "any").
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let s = Search {
        from: from.clone(),
        to: to.clone(),
        decision: given(q.decision),
        reason_code: given(q.reason_code),
        tool: given(q.tool),
        caller: given(q.caller),
        trace_id: given(q.trace_id),
        before: q.before,
        limit,
    };
    let rows = match st.rt().store().search(&s).await {
        Ok(rows) => rows,
        Err(_) => return unavailable(&st, &caller),
    };
    let next = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.seq)).flatten();
    Json(json!({
        "from": format!("{from}Z"),
        "to": format!("{to}Z"),
        "records": rows.iter().map(shown).collect::<Vec<_>>(),
        "next_before": next,
    }))
    .into_response()
}

/// One record with its chain neighbours, and whether its links hold: it follows the
/// record before it, and its hash is its content's.
pub(crate) async fn record(
    State(st): State<Arc<HttpState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(seq): Path<String>,
) -> Response {
    if !may_read(&st, &caller) {
        return refuse(&st, &caller, Denial::ReadRefused).await;
    }
    let Some(seq) = seq.parse::<i64>().ok().filter(|s| *s >= 1) else {
        return refuse(&st, &caller, Denial::Api(ApiProblem::Sequence)).await;
    };
    let rows = match st.rt().store().rows_between(seq - 1, seq + 1).await {
        Ok(rows) => rows,
        Err(_) => return unavailable(&st, &caller),
    };
    let Some(row) = rows.iter().find(|r| r.seq == seq) else {
        return super::respond::json_response(
            http::StatusCode::NOT_FOUND,
            json!({"error": "not_found", "error_description": "no record with this sequence number", "trace_id": caller.call.trace.as_str()}),
            &caller.call.trace,
        );
    };
    let before = rows.iter().find(|r| r.seq == seq - 1);
    let after = rows.iter().find(|r| r.seq == seq + 1);
    let prev_hash = match before {
        Some(b) => b.hash.clone(),
        None if seq == 1 => crate::audit::record::GENESIS.to_string(),
        // The record before it is gone: the link cannot hold.
        None => String::from("(missing)"),
    };
    let link = crate::audit::verify::check_row(row, seq, &prev_hash, &st.rt().env().name);
    Json(json!({
        "record": shown(row),
        "previous": before.map(shown),
        "next": after.map(shown),
        "link": match link {
            Ok(_) => json!({"holds": true}),
            Err(problem) => json!({"holds": false, "problem": problem}),
        },
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

/// Decisions per minute (allow, deny, pending, error) and the top reason codes and callers
/// over a range of at most a day.
pub(crate) async fn stats(
    State(st): State<Arc<HttpState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    query: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !may_read(&st, &caller) {
        return refuse(&st, &caller, Denial::ReadRefused).await;
    }
    let Ok(Query(q)) = query else {
        return refuse(&st, &caller, Denial::Api(ApiProblem::AuditQuery)).await;
    };
    let Some((from, to)) = range(q.from.as_deref(), q.to.as_deref(), MAX_CHART) else {
        return refuse(&st, &caller, Denial::Api(ApiProblem::TimeRange)).await;
    };
    let t = match st.rt().store().tallies(&from, &to).await {
        Ok(t) => t,
        Err(_) => return unavailable(&st, &caller),
    };
    let mut minutes: std::collections::BTreeMap<String, serde_json::Map<String, Value>> = Default::default();
    for (minute, decision, n) in t.per_minute {
        let m = minutes.entry(minute).or_insert_with(|| {
            ["allow", "deny", "pending", "error"]
                .iter()
                .map(|d| (d.to_string(), json!(0)))
                .collect()
        });
        m.insert(decision, json!(n));
    }
    Json(json!({
        "from": format!("{from}Z"),
        "to": format!("{to}Z"),
        "per_minute": minutes.into_iter().map(|(minute, mut counts)| {
            counts.insert("minute".into(), json!(format!("{minute}Z")));
            Value::Object(counts)
        }).collect::<Vec<_>>(),
        "top_reason_codes": t.reason_codes.into_iter().map(|(c, n)| json!({"reason_code": c, "count": n})).collect::<Vec<_>>(),
        "top_callers": t.callers.into_iter().map(|(c, n)| json!({"sub": c, "count": n})).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// The last verification of the whole chain and its signed checkpoints (done again when
/// older than [`CHAIN_FRESH`]).
#[derive(Default)]
pub(crate) struct ChainState(tokio::sync::Mutex<Option<(Instant, Value)>>);

pub(crate) async fn chain(State(st): State<Arc<HttpState>>, axum::Extension(caller): axum::Extension<Caller>) -> Response {
    if !may_read(&st, &caller) {
        return refuse(&st, &caller, Denial::ReadRefused).await;
    }
    // One verification at a time: callers arriving meanwhile get its result.
    let mut cached = st.chain.0.lock().await;
    if let Some((at, v)) = cached.as_ref()
        && at.elapsed() < CHAIN_FRESH
    {
        return Json(v.clone()).into_response();
    }
    let rt = st.rt();
    let env = rt.env();
    let keys = match crate::keys::load_signing_key(&env.audit_signing_key) {
        Ok(signing) => {
            let mut keys = vec![signing.verifying_key()];
            keys.extend(env.audit_previous_keys.iter().filter_map(|p| crate::keys::load_public_key(p).ok()));
            (keys, crate::audit::approval::RowKey::derive(&signing))
        }
        Err(e) => {
            tracing::error!(env = %env.name, "chain verification: the signing key does not load: {e}");
            return unavailable(&st, &caller);
        }
    };
    let report = match crate::audit::verify::verify(rt.store(), &env.name, &keys.0, None, Some(&keys.1)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(env = %env.name, "chain verification could not read the store: {e}");
            return unavailable(&st, &caller);
        }
    };
    let checkpoint = match rt.store().checkpoints().await {
        Ok(cps) => cps.into_iter().rev().find_map(Result::ok),
        Err(_) => None,
    };
    let v = json!({
        "ok": report.first_problem.is_none(),
        "verified_records": report.records,
        "head_seq": report.head.as_ref().map(|(s, _)| *s),
        "checkpoints": report.checkpoints,
        "last_checkpoint": checkpoint.map(|c| json!({"seq": c.seq, "ts": c.ts, "key_id": c.key_id})),
        "problem": report.first_problem,
        "verified_at": crate::audit::record::now_rfc3339(),
    });
    if let Some(problem) = &report.first_problem {
        tracing::error!(env = %env.name, "audit chain verification FAILED: {problem}");
    }
    *cached = Some((Instant::now(), v.clone()));
    Json(v).into_response()
}

/// Each contract of the environment: what it takes, what it does, who may call it, who
/// approves it.
pub(crate) async fn contracts(State(st): State<Arc<HttpState>>, axum::Extension(caller): axum::Extension<Caller>) -> Response {
    if !may_read(&st, &caller) {
        return refuse(&st, &caller, Denial::ReadRefused).await;
    }
    let rt = st.rt();
    let env = rt.env();
    let list: Vec<Value> = env
        .contracts
        .values()
        .map(|c| {
            let policies = env
                .policies
                .as_ref()
                .map(|p| p.policies_for(c).into_iter().map(|(id, _)| id).collect::<Vec<_>>())
                .unwrap_or_default();
            json!({
                "name": c.tool,
                "kind": c.kind.noun(),
                "description": c.description,
                "side_effects": c.side_effects.as_str(),
                "arguments": c.args.iter().map(|(name, spec)| json!({
                    "name": name,
                    "rule": crate::contract::types::json_schema(spec),
                    "optional": spec.optional,
                    "sensitive": spec.sensitive,
                })).collect::<Vec<_>>(),
                "fixed_arguments": c.fixed_args.keys().collect::<Vec<_>>(),
                "allowed_roles": c.allowed_roles,
                "requires_approval": c.requires_approval,
                "approver_roles": c.requires_approval.then(|| c.approver_roles.clone().unwrap_or_else(|| env.approver_roles.clone())),
                "approvals_required": c.requires_approval.then_some(c.approvals_required),
                "rate_limit": c.rate_limit.as_ref().map(|r| format!("{}/{}s", r.count, r.per.as_secs())),
                "policies": policies,
                "digest": c.digest,
            })
        })
        .collect();
    Json(json!({"environment": env.name, "contracts": list})).into_response()
}
