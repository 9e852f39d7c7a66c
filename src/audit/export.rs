//! Reading the log out: JSON lines (SPEC section 6 field names), OCSF API Activity events
//! for a SIEM, and the one-line form `audit tail` prints.
//!
//! INVARIANT: nothing read from a record reaches a terminal unescaped: control characters
//! (ANSI escapes, newlines, carriage returns) are shown as `\u{…}` escapes, so an argument
//! can neither forge a line nor recolour the screen.

use serde_json::{Value, json};

use super::record::AuditRecord;
use crate::decision::Decision;

pub(crate) fn jsonl(rec: &AuditRecord) -> String {
    serde_json::to_string(rec).unwrap_or_default()
}

fn epoch_ms(ts: &str) -> i64 {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
        .unwrap_or(0)
}

/// OCSF 1.1 API Activity (class 6003): one event per record, allowed or blocked by capgate
/// as the security control, with the trace ID as correlation UID.
pub(crate) fn ocsf(rec: &AuditRecord) -> Value {
    let (status, status_id) = match (rec.decision.as_str(), rec.outcome.as_ref().map(|o| o.status.as_str())) {
        ("allow", None | Some("ok")) => ("Success", 1),
        ("pending", _) => ("Other", 99),
        _ => ("Failure", 2),
    };
    let (disposition, disposition_id) = match rec.decision.as_str() {
        "allow" => ("Allowed", 1),
        "deny" => ("Blocked", 2),
        "pending" => ("Delayed", 5),
        _ => ("Error", 19),
    };
    let severity_id = if rec.decision == Decision::Deny { 3 } else { 1 };
    let (ip, port) = rec
        .client
        .addr
        .as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(ip, port)| (ip.trim_matches(['[', ']']).to_string(), port.parse::<u16>().ok()))
        .unwrap_or_default();
    let activity_id = 99;
    json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": "tools/call",
        "type_uid": 6003 * 100 + activity_id,
        "time": epoch_ms(&rec.ts),
        "severity_id": severity_id,
        "status": status,
        "status_id": status_id,
        "status_code": rec.reason_code,
        "status_detail": rec.reason,
        "disposition": disposition,
        "disposition_id": disposition_id,
        "message": format!("{} {} {}", rec.decision, rec.tool.as_deref().unwrap_or("-"), rec.reason_code),
        "actor": {
            "user": rec.principal.as_ref().map(|p| json!({"uid": p.sub, "groups": p.roles.iter().map(|r| json!({"name": r})).collect::<Vec<_>>()})),
            "idp": rec.principal.as_ref().map(|p| json!({"name": p.iss})),
            "session": rec.session_id.as_ref().map(|s| json!({"uid": s})),
        },
        "api": {
            "operation": rec.tool,
            "request": {"uid": rec.request_id},
            "service": {"name": "capgate", "labels": [rec.env]},
        },
        "src_endpoint": {"ip": ip, "port": port},
        "http_request": {"user_agent": rec.client.user_agent},
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "capgate", "vendor_name": "capgate", "version": env!("CARGO_PKG_VERSION")},
            "uid": rec.hash,
            "sequence": rec.seq,
            "correlation_uid": rec.trace_id,
            "log_name": format!("capgate-audit-{}", rec.env),
        },
        "unmapped": {
            "args_digest": rec.args_digest,
            "args": rec.args,
            "contract_digest": rec.contract_digest,
            "approval": rec.approval,
            "outcome": rec.outcome,
            "prev_hash": rec.prev_hash,
        },
    })
}

/// Escapes every control character (and nothing else) for terminal output.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn tail_line(rec: &AuditRecord) -> String {
    let args = rec.args.as_ref().map(|a| a.to_string()).unwrap_or_default();
    escape(&format!(
        "#{} {} {} {:<7} {:<20} tool={} sub={} trace={} args={} reason={}",
        rec.seq,
        rec.ts,
        rec.env,
        rec.decision,
        rec.reason_code,
        rec.tool.as_deref().unwrap_or("-"),
        rec.principal.as_ref().map_or("-", |p| p.sub.as_str()),
        rec.trace_id,
        args,
        rec.reason
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let s = escape("ok\u{1b}[31mred\nforged #2 allow\r\u{202e}");
        assert!(!s.chars().any(char::is_control));
        assert!(s.contains("\\u{1b}[31mred\\u{a}forged"));
        assert!(s.contains("\\u{202e}"));
        assert_eq!(escape("plain äöü"), "plain äöü");
    }
}
