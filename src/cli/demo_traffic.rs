//! The demo's first traffic: a few hundred real MCP requests from the demo's people, sent
//! through the gateway just started, so that a newcomer opening the console's audit
//! explorer sees decisions of every kind at once. Every one is a real request, decided,
//! recorded and (where allowed) run by the demo upstream; none changes the demo's state
//! (tickets are listed, not created; firewall blocks wait for an approval nobody gives).

use std::time::Duration;

use serde_json::{Value, json};

/// Requests sent at once, then the same again, paced, so the chart has a shape.
const BURST: usize = 120;
const PACED: usize = 120;
/// How many requests [`send`] makes.
pub(super) const REQUESTS: usize = BURST + PACED;
const PACE: Duration = Duration::from_millis(500);

struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    id: Option<String>,
    next: u64,
}

impl Session {
    async fn open(http: &reqwest::Client, url: &str, token: &str) -> Option<Self> {
        let mut s = Self {
            http: http.clone(),
            url: url.to_string(),
            token: token.to_string(),
            id: None,
            next: 1,
        };
        let init = json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "capgate-demo-traffic", "version": env!("CARGO_PKG_VERSION")}});
        s.id = s
            .post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}))
            .await?;
        s.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
        Some(s)
    }

    /// Sends one message and reads its answer to the end; the answer's session ID, if it
    /// names one (`None`: no answer at all).
    async fn post(&self, body: Value) -> Option<Option<String>> {
        let mut req = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body.to_string());
        if let Some(id) = &self.id {
            req = req.header("mcp-session-id", id);
        }
        let r = req.send().await.ok()?;
        let session = r.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let _ = r.bytes().await;
        Some(session)
    }

    async fn rpc(&mut self, method: &str, params: Value) {
        self.next += 1;
        let _ = self
            .post(json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params}))
            .await;
    }
}

/// Sends the demo traffic to `url` as the people whose tokens are given (by role).
pub(super) async fn send(url: String, tokens: Vec<(String, String)>) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(10)).build() else {
        return;
    };
    let token = |role: &str| tokens.iter().find(|(r, _)| r == role).map(|(_, t)| t.clone()).unwrap_or_default();
    let (Some(mut oncall), Some(mut ic), Some(mut lead), Some(mut viewer)) = (
        Session::open(&http, &url, &token("oncall")).await,
        Session::open(&http, &url, &token("incident_commander")).await,
        Session::open(&http, &url, &token("security_lead")).await,
        Session::open(&http, &url, &token("viewer")).await,
    ) else {
        tracing::warn!("the demo traffic could not open its sessions; the explorer starts empty");
        return;
    };
    // A token nobody issued: refused before anything is read.
    let forged = Session {
        http: http.clone(),
        url: url.clone(),
        token: format!("{}x", token("viewer")),
        id: None,
        next: 1,
    };
    for i in 0..BURST + PACED {
        if i >= BURST {
            tokio::time::sleep(PACE).await;
        }
        let call = |name: &str, args: Value| json!({"name": name, "arguments": args});
        match i % 12 {
            0..=2 => oncall.rpc("tools/call", call("list_tickets", json!({}))).await,
            3 => viewer.rpc("tools/call", call("list_tickets", json!({}))).await,
            4 => lead.rpc("tools/call", call("list_firewall_blocks", json!({}))).await,
            5 => oncall.rpc("resources/read", json!({"uri": "tickets://summary"})).await,
            // Arguments the contract refuses.
            6 => {
                oncall
                    .rpc(
                        "tools/call",
                        call("create_ticket", json!({"title": "disk full", "severity": "urgent"})),
                    )
                    .await
            }
            // A tool the viewer may not call, and one that exists for nobody.
            7 => {
                viewer
                    .rpc("tools/call", call("create_ticket", json!({"title": "x", "severity": "low"})))
                    .await
            }
            8 => oncall.rpc("tools/call", call("drop_all_tables", json!({}))).await,
            // Needs an approval: pending (a few distinct blocks, then the same ones again).
            9 => {
                let net = format!("198.51.100.{}/32", (i / 12) % 8);
                ic.rpc("tools/call", call("create_firewall_block", json!({"ip": net, "ttl_minutes": 30})))
                    .await
            }
            10 => {
                let _ = forged
                    .post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
                    .await;
            }
            _ => viewer.rpc("resources/read", json!({"uri": "secrets://vault/root"})).await,
        }
    }
}
