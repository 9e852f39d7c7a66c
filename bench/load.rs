//! The load generator: MCP over streamable HTTP with bearer tokens, closed-loop (N clients,
//! each with its own session, one request at a time) or open-loop (a fixed request rate,
//! latency counted from the moment a request was due, so a stalled server cannot hide its
//! queue: no coordinated omission). Latencies go into an HdrHistogram in microseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub token: Option<String>,
    /// Open an MCP session per client first (a refused token cannot).
    pub session: bool,
}

/// What a reply must look like to count as the expected answer.
#[derive(Clone, Copy)]
pub enum Expect {
    /// HTTP 200 and a result that is not an error.
    Ok,
    /// HTTP 200 and a JSON-RPC error (refused arguments, unknown tool).
    RpcError,
    /// HTTP 401.
    Unauthorized,
}

impl Expect {
    fn holds(self, status: u16, body: &str) -> bool {
        match self {
            Expect::Ok => status == 200 && body.contains("\"result\"") && !body.contains("\"isError\":true"),
            Expect::RpcError => status == 200 && body.contains("\"error\""),
            Expect::Unauthorized => status == 401,
        }
    }
}

pub struct Stats {
    pub ok: u64,
    pub wrong: u64,
    /// Every answered request, warm-up included (what CPU time is divided by).
    pub all: u64,
    pub secs: f64,
    pub hist: Histogram<u64>,
    /// CPU time the measured process spent per answered request, when measured.
    pub cpu_us: f64,
    /// Open loop: the latest any request was sent after it was due, in µs.
    pub send_late_max_us: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            ok: 0,
            wrong: 0,
            all: 0,
            cpu_us: 0.0,
            send_late_max_us: 0,
            secs: 0.0,
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }
    pub fn rps(&self) -> f64 {
        if self.secs > 0.0 { self.ok as f64 / self.secs } else { 0.0 }
    }
    /// Milliseconds at quantile `q`.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.wrong += o.wrong;
        self.all += o.all;
        let _ = self.hist.add(o.hist);
    }
}

pub fn client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

async fn post(
    http: &reqwest::Client,
    t: &Target,
    session: Option<&str>,
    body: String,
) -> Result<(u16, Option<String>, String), reqwest::Error> {
    let mut req = http
        .post(&t.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body);
    if let Some(tok) = &t.token {
        req = req.bearer_auth(tok);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let sid = r.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = r.text().await?;
    Ok((status, sid, text))
}

pub async fn open_session(http: &reqwest::Client, t: &Target) -> Option<String> {
    if !t.session {
        return None;
    }
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "capgate-bench", "version": "1"}}});
    let (_, sid, _) = post(http, t, None, init.to_string()).await.ok()?;
    let sid = sid?;
    let _ = post(
        http,
        t,
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    )
    .await;
    Some(sid)
}

pub fn call_body(tool: &str, args: &Value) -> Arc<String> {
    Arc::new(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string())
}

pub fn list_body() -> Arc<String> {
    Arc::new(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}).to_string())
}

/// `clients` concurrent callers, each sending `body` back to back for `dur` (after a short
/// warm-up that is not counted).
pub async fn closed(http: &reqwest::Client, t: &Target, body: Arc<String>, clients: usize, dur: Duration, expect: Expect) -> Stats {
    let warm = Duration::from_millis(300);
    let start = Instant::now() + warm;
    let end = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, t, body) = (http.clone(), t.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let sid = open_session(&http, &t).await;
            let mut s = Stats::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = post(&http, &t, sid.as_deref(), (*body).clone()).await;
                s.all += 1;
                if t0 < start {
                    continue;
                }
                let us = t0.elapsed().as_micros() as u64;
                match r {
                    Ok((status, _, text)) if expect.holds(status, &text) => {
                        s.ok += 1;
                        let _ = s.hist.record(us.max(1));
                    }
                    _ => s.wrong += 1,
                }
            }
            s
        }));
    }
    let mut all = Stats::new();
    for task in tasks {
        if let Ok(s) = task.await {
            all.merge(s);
        }
    }
    all.secs = dur.as_secs_f64();
    all
}

/// `rate` requests per second for `dur`, spread over `sessions` sessions; a request's
/// latency runs from when it was due, and how late the latest request was sent is kept
/// (a generator that falls behind sends a burst, which the server is then charged for).
pub async fn open(http: &reqwest::Client, t: &Target, body: Arc<String>, rate: f64, dur: Duration, expect: Expect) -> Stats {
    let sessions = 64;
    let mut sids = Vec::new();
    for _ in 0..sessions {
        sids.push(open_session(http, t).await);
    }
    let sids = Arc::new(sids);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now() + Duration::from_millis(100);
    let n = (rate * dur.as_secs_f64()) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, u64)>();
    let mut late_max = Duration::ZERO;
    for i in 0..n {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        late_max = late_max.max(due.elapsed());
        let (http, t, body, sids, tx) = (http.clone(), t.clone(), body.clone(), sids.clone(), tx.clone());
        tokio::spawn(async move {
            let sid = sids.get(i as usize % sessions).cloned().flatten();
            let r = post(&http, &t, sid.as_deref(), (*body).clone()).await;
            let ok = matches!(&r, Ok((status, _, text)) if expect.holds(*status, text));
            let _ = tx.send((ok, due.elapsed().as_micros() as u64));
        });
    }
    drop(tx);
    let mut s = Stats::new();
    while let Some((ok, us)) = rx.recv().await {
        if ok {
            s.ok += 1;
            let _ = s.hist.record(us.max(1));
        } else {
            s.wrong += 1;
        }
    }
    s.send_late_max_us = late_max.as_micros() as u64;
    s.secs = dur.as_secs_f64();
    s
}

/// User + system CPU time of a process so far, in clock ticks (Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces; fields are counted after its closing paren.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Busy clock ticks of the whole machine so far (all but idle and iowait), from /proc/stat.
pub fn busy_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
        })
        .unwrap_or(0)
}

/// Microseconds of CPU per request, from clock ticks (USER_HZ, 100 on Linux).
pub fn cpu_us_per(ticks: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        ticks as f64 * 10_000.0 / requests as f64
    }
}

/// Resident memory of a process, in MiB (Linux).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `n` requests one after another on one session; how many got the expected answer. One
/// client and no clock: what callgrind counts then depends on the requests alone.
pub async fn sequential(http: &reqwest::Client, t: &Target, sid: Option<&str>, body: &str, n: usize, expect: Expect) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if let Ok((status, _, text)) = post(http, t, sid, body.to_string()).await
            && expect.holds(status, &text)
        {
            ok += 1;
        }
    }
    ok
}
