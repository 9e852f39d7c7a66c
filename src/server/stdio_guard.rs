//! The stdio counterpart of the HTTP guard: every line from the client is checked (one JSON
//! value, no duplicate keys, bounded size) before `rmcp` reads it. A refused line is answered
//! here with a JSON-RPC error and recorded; it never reaches the handler.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

use super::jsonguard::{BodyError, check_body};
use crate::audit::ClientRef;
use crate::decision::{Decision, ReasonCode};
use crate::pipeline::{CallCtx, Runtime, base_record};
use crate::trace::TraceId;

/// Returns the (reader, writer) pair `rmcp` serves on; the real stdin/stdout are behind it.
pub fn spawn(rt: Arc<Runtime>) -> (DuplexStream, DuplexStream) {
    let limit = rt.env.max_body_bytes;
    let (rmcp_in, mut feed) = tokio::io::duplex(limit.saturating_mul(2).max(64 * 1024));
    let (rmcp_out, from_rmcp) = tokio::io::duplex(1 << 20);
    let (err_tx, mut err_rx) = mpsc::channel::<String>(64);

    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let refused = if line.len() > limit {
                Some((
                    ReasonCode::BodyTooLarge,
                    Value::Null,
                    -32600,
                    format!("the message is over the limit of {limit} bytes"),
                ))
            } else {
                match check_body(line.as_bytes()) {
                    Ok(_) => None,
                    Err(BodyError::Syntax) => Some((
                        ReasonCode::MalformedRequest,
                        Value::Null,
                        -32700,
                        "parse error: not one JSON value".to_string(),
                    )),
                    Err(BodyError::DuplicateKey(k)) => {
                        let id = serde_json::from_str::<Value>(&line)
                            .ok()
                            .and_then(|v| v.get("id").cloned())
                            .unwrap_or(Value::Null);
                        Some((
                            ReasonCode::ArgumentsInvalid,
                            id,
                            -32602,
                            format!("invalid request: duplicate key `{k}`"),
                        ))
                    }
                }
            };
            match refused {
                None => {
                    if feed.write_all(line.as_bytes()).await.is_err() || feed.write_all(b"\n").await.is_err() {
                        break;
                    }
                }
                Some((code, id, rpc_code, message)) => {
                    let trace = TraceId::generate();
                    let call = CallCtx {
                        trace: trace.clone(),
                        request_id: None,
                        session_id: None,
                        client: ClientRef {
                            addr: Some("stdio".into()),
                            user_agent: None,
                        },
                    };
                    let rec = base_record(&rt, &call, None, None, Decision::Deny, code, &message);
                    let answer = if rt.audit.append(rec).await.is_ok() {
                        serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": rpc_code, "message": message, "data": {"trace_id": trace.as_str(), "reason_code": code.as_str()}}})
                    } else {
                        serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32003, "message": "the audit log is unavailable; refused", "data": {"trace_id": trace.as_str()}}})
                    };
                    if err_tx.send(answer.to_string()).await.is_err() {
                        break;
                    }
                }
            }
        }
        // stdin closed: closing the feed ends the rmcp service.
        let _ = feed.shutdown().await;
    });

    tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        let mut lines = BufReader::new(from_rmcp).lines();
        loop {
            let line = tokio::select! {
                l = lines.next_line() => match l { Ok(Some(l)) => l, _ => break },
                Some(e) = err_rx.recv() => e,
            };
            if out.write_all(line.as_bytes()).await.is_err() || out.write_all(b"\n").await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    });
    (rmcp_in, rmcp_out)
}
