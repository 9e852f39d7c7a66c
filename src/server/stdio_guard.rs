//! The stdio counterpart of the HTTP guard: every line from the client is checked (one JSON
//! value, no duplicate keys, bounded size) before `rmcp` reads it. A refused line is answered
//! here with a JSON-RPC error and recorded; it never reaches the handler.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

use super::envelope::{self, Facts, Problem};
use super::jsonguard::{BodyError, check_body};
use super::respond;
use crate::denial::{Channel, Denial, Outage};
use crate::pipeline::Runtime;
use crate::request::{CallCtx, ClientRef};

/// Why a line is refused, the JSON-RPC id it carried and what it named, as far as it reads.
fn refusal(line: &str, limit: usize) -> Option<(Denial, Value, Facts)> {
    if line.len() > limit {
        let denial = Denial::BodyTooLarge {
            limit,
            declared: None,
            channel: Channel::Stdio,
        };
        return Some((denial, Value::Null, Facts::default()));
    }
    let body = match check_body(line.as_bytes()) {
        Ok(v) => v,
        Err(BodyError::Syntax) => return Some((Denial::MalformedJson { channel: Channel::Stdio }, Value::Null, Facts::default())),
        Err(BodyError::DuplicateKey(key)) => {
            // serde's own reading (the last of each key), for the answer's id and the record.
            let lenient = serde_json::from_str::<Value>(line).unwrap_or(Value::Null);
            let id = lenient.get("id").cloned().unwrap_or(Value::Null);
            let denial = Denial::DuplicateKey {
                key,
                channel: Channel::Stdio,
            };
            return Some((denial, id, envelope::facts(&lenient)));
        }
    };
    let id = body
        .get("id")
        .filter(|id| id.is_string() || id.is_i64() || id.is_u64())
        .cloned()
        .unwrap_or(Value::Null);
    let denial = match envelope::check(&body).err()? {
        Problem::InvalidRequest(problem) => Denial::InvalidRequest { problem },
        Problem::MethodNotFound(method) => Denial::MethodNotFound { method, stateless: false },
        Problem::InvalidParams(problem) => Denial::InvalidParams { problem },
    };
    Some((denial, id, envelope::facts(&body)))
}

/// Returns the (reader, writer) pair `rmcp` serves on; the real stdin/stdout are behind it.
pub(crate) fn spawn(rt: Arc<Runtime>) -> (DuplexStream, DuplexStream) {
    let limit = rt.env().max_body_bytes;
    let (rmcp_in, mut feed) = tokio::io::duplex(limit.saturating_mul(2).max(64 * 1024));
    let (rmcp_out, from_rmcp) = tokio::io::duplex(1 << 20);
    let (err_tx, mut err_rx) = mpsc::channel::<String>(64);

    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let refused = refusal(&line, limit);
            match refused {
                None => {
                    if feed.write_all(line.as_bytes()).await.is_err() || feed.write_all(b"\n").await.is_err() {
                        break;
                    }
                }
                Some((denial, id, facts)) => {
                    let mut call = CallCtx::new(ClientRef::stdio());
                    call.method = facts.method;
                    call.request_id = facts.request_id;
                    let rec = denial.record(&rt.env().name, &call).tool(facts.tool);
                    let recorded = rt.audit().append(rec).await.is_ok();
                    let answer = if recorded {
                        respond::stdio(&denial, &call.trace, id)
                    } else {
                        respond::stdio(&Denial::Unavailable(Outage::LineUnrecorded), &call.trace, id)
                    };
                    if err_tx.send(answer).await.is_err() {
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
