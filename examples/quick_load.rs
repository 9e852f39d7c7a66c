//! A quick closed-loop load generator over MCP streamable HTTP (the benchmark suite proper
//! is separate): N clients, each with its own session, call one tool back to back for a
//! fixed time. Prints throughput and latency percentiles as JSON.
//!
//! cargo run --release --example quick_load -- URL TOKEN CLIENTS SECONDS TOOL
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a measurement tool: failing loudly is right"
)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

async fn session(http: &reqwest::Client, url: &str, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "quick_load", "version": "1"}}});
    let r = post(http, url, token, None, &init).await;
    let sid = r.headers().get("mcp-session-id").expect("no session").to_str().unwrap().to_string();
    post(
        http,
        url,
        token,
        Some(&sid),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    sid
}

async fn post(http: &reqwest::Client, url: &str, token: &str, sid: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    if let Some(s) = sid {
        req = req.header("mcp-session-id", s);
    }
    req.send().await.expect("request failed")
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let (url, token, clients, secs, tool) = (
        args[1].clone(),
        args[2].clone(),
        args[3].parse::<usize>().unwrap(),
        args[4].parse::<u64>().unwrap(),
        args[5].clone(),
    );
    let call_args: Value = args.get(6).map(|a| serde_json::from_str(a).unwrap()).unwrap_or_else(|| json!({}));
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap();
    let mut tasks = Vec::new();
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs(secs);
    for _ in 0..clients {
        let (http, url, token, tool, args) = (http.clone(), url.clone(), token.clone(), tool.clone(), call_args.clone());
        tasks.push(tokio::spawn(async move {
            let sid = session(&http, &url, &token).await;
            let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}});
            tokio::time::sleep_until(start.into()).await;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let r = post(&http, &url, &token, Some(&sid), &body).await;
                let ok = r.status().is_success() && r.text().await.map(|t| t.contains("\"isError\":false")).unwrap_or(false);
                if ok {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "{}",
        json!({"clients": clients, "seconds": secs, "ok": all.len(), "errors": errors, "throughput_rps": (all.len() as f64 / secs as f64).round(),
               "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99)})
    );
}
