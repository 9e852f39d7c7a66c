//! The load generator: MCP over streamable HTTP with bearer tokens, closed-loop (N clients,
//! each with its own session, one request at a time) or open-loop (a fixed request rate,
//! latency counted from the moment a request was due, so a stalled server cannot hide its
//! queue: no coordinated omission). Latencies go into an HdrHistogram in microseconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    /// Open an MCP session per client first (a refused token cannot).
    pub(crate) session: bool,
}

/// What a reply must look like to count as the expected answer.
#[derive(Clone, Copy)]
pub(crate) enum Expect {
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

pub(crate) struct Stats {
    pub(crate) ok: u64,
    pub(crate) wrong: u64,
    /// Every answered request, warm-up included (what CPU time is divided by).
    pub(crate) all: u64,
    pub(crate) secs: f64,
    pub(crate) hist: Histogram<u64>,
    /// CPU time the measured process spent per answered request, when measured.
    pub(crate) cpu_us: f64,
    /// Open loop: how late the generator woke for each request it was idle waiting for, in
    /// µs. tokio's timer has 1 ms granularity, so this is the generator's own share of every
    /// open-loop latency (counted from when a request was due), the same on every path.
    pub(crate) lag: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            ok: 0,
            wrong: 0,
            all: 0,
            cpu_us: 0.0,
            secs: 0.0,
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            lag: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }
    pub(crate) fn rps(&self) -> f64 {
        if self.secs > 0.0 { self.ok as f64 / self.secs } else { 0.0 }
    }
    /// Milliseconds at quantile `q`.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    /// The generator's own send lag at quantile `q`, in milliseconds (open loop).
    pub(crate) fn lag_ms(&self, q: f64) -> f64 {
        self.lag.value_at_quantile(q) as f64 / 1000.0
    }
    /// Counts one answer: its latency when it is the expected one, else a wrong answer.
    fn count(&mut self, expected: bool, us: u64) {
        if expected {
            self.ok += 1;
            let _ = self.hist.record(us.max(1));
        } else {
            self.wrong += 1;
        }
    }
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.wrong += o.wrong;
        self.all += o.all;
        let _ = self.hist.add(o.hist);
        let _ = self.lag.add(o.lag);
    }
}

/// One caller's HTTP/1.1 connection, with every header but the session's prepared once.
/// reqwest (its URL parsing, pool and header map built per request) cost the generator
/// ~33 µs of CPU per request, taken from the 2 cores the measured servers run on; a
/// caller's request here is a cloned header map, a shared body and hyper's own encoding.
pub(crate) struct Caller {
    authority: String,
    path: Uri,
    headers: HeaderMap,
    conn: Option<SendRequest<Full<Bytes>>>,
}

/// An answer: status, the `mcp-session-id` header if any, the body.
type Answer = (u16, Option<String>, Bytes);

impl Caller {
    pub(crate) fn new(t: &Target) -> Self {
        let uri: Uri = t.url.parse().expect("a target URL");
        let authority = uri.authority().expect("a URL with host and port").to_string();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).parse().expect("a path");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(&authority).expect("an authority"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        headers.insert("mcp-protocol-version", HeaderValue::from_static("2025-06-18"));
        if let Some(tok) = &t.token {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {tok}")).expect("a token"),
            );
        }
        Self {
            authority,
            path,
            headers,
            conn: None,
        }
    }

    fn set_session(&mut self, sid: &str) {
        self.headers
            .insert("mcp-session-id", HeaderValue::from_str(sid).expect("a session id"));
    }

    /// The connection, opened again if the server closed it.
    async fn ready(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.authority).await?;
            stream.set_nodelay(true)?;
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.conn = Some(tx);
        }
        let tx = self.conn.as_mut().ok_or_else(|| anyhow::anyhow!("no connection"))?;
        tx.ready().await?;
        Ok(tx)
    }

    async fn exchange(&mut self, method: Method, path: Uri, body: Bytes) -> anyhow::Result<Answer> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = path;
        *req.headers_mut() = self.headers.clone();
        let sent = async {
            let answer = self.ready().await?.send_request(req).await?;
            let status = answer.status().as_u16();
            let sid = answer
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = answer.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, sid, body))
        };
        match tokio::time::timeout(Duration::from_secs(30), sent).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(anyhow::anyhow!("no answer in 30 s"))
            }
        }
    }

    pub(crate) async fn post(&mut self, body: &Bytes) -> anyhow::Result<Answer> {
        self.exchange(Method::POST, self.path.clone(), body.clone()).await
    }

    /// A GET of `path` on the same server (e.g. `/metrics`), as text.
    pub(crate) async fn get(&mut self, path: &str) -> anyhow::Result<String> {
        let (_, _, body) = self.exchange(Method::GET, path.parse()?, Bytes::new()).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Opens an MCP session for the caller's later requests when `t` asks for one.
    pub(crate) async fn open_session(&mut self, t: &Target) -> Option<String> {
        if !t.session {
            return None;
        }
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "capgate-bench", "version": "1"}}});
        let (_, sid, _) = self.post(&Bytes::from(init.to_string())).await.ok()?;
        let sid = sid?;
        self.set_session(&sid);
        let _ = self
            .post(&Bytes::from(
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
            ))
            .await;
        Some(sid)
    }
}

/// A caller on `t` with its session open (when `t` asks for one).
pub(crate) async fn caller(t: &Target) -> Caller {
    let mut c = Caller::new(t);
    c.open_session(t).await;
    c
}

pub(crate) fn call_body(tool: &str, args: &Value) -> Bytes {
    Bytes::from(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string())
}

pub(crate) fn list_body() -> Bytes {
    Bytes::from(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}).to_string())
}

fn holds(expect: Expect, r: &anyhow::Result<Answer>) -> bool {
    matches!(r, Ok((status, _, body)) if expect.holds(*status, &String::from_utf8_lossy(body)))
}

/// `clients` concurrent callers, each with its own connection and session, sending `body`
/// back to back for `dur` (after a short warm-up that is not counted).
pub(crate) async fn closed(t: &Target, body: Bytes, clients: usize, dur: Duration, expect: Expect) -> Stats {
    closed_spread(std::slice::from_ref(t), body, clients, dur, expect).await
}

/// A closed loop whose clients are spread over `targets` in turn (replicas of a gateway).
pub(crate) async fn closed_spread(targets: &[Target], body: Bytes, clients: usize, dur: Duration, expect: Expect) -> Stats {
    let warm = Duration::from_millis(300);
    let start = Instant::now() + warm;
    let end = start + dur;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (t, body) = (targets[i % targets.len()].clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = caller(&t).await;
            let mut s = Stats::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = c.post(&body).await;
                s.all += 1;
                if t0 < start {
                    continue;
                }
                s.count(holds(expect, &r), t0.elapsed().as_micros() as u64);
            }
            s
        }));
    }
    gather(tasks, dur).await
}

/// The callers' tallies together, over `dur`.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Stats>>, dur: Duration) -> Stats {
    let mut all = Stats::new();
    for task in tasks {
        if let Ok(s) = task.await {
            all.merge(s);
        }
    }
    all.secs = dur.as_secs_f64();
    all
}

/// `rate` requests per second for `dur` over `conns` connections (each with its own session
/// when `t` asks for one), the way wrk2 paces: request `i` is due at `start + i / rate` and
/// goes on connection `i mod conns`. Its latency runs from when it was due, so an answer
/// that comes late delays the requests queued behind it on that connection and is charged
/// for them (no coordinated omission). [`Stats::lag`] is how late the generator itself
/// woke for each request it was idle waiting for: its own lag, not the server's.
pub(crate) async fn open(t: &Target, body: Bytes, rate: f64, dur: Duration, expect: Expect, conns: usize) -> Stats {
    let conns = conns.max(1);
    let mut callers = Vec::with_capacity(conns);
    for _ in 0..conns {
        callers.push(caller(t).await);
    }
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now() + Duration::from_millis(100);
    let n = (rate * dur.as_secs_f64()) as u64;
    let mut tasks = Vec::with_capacity(conns);
    for (first, mut c) in callers.into_iter().enumerate() {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::new();
            let mut i = first as u64;
            while i < n {
                let due = start + interval.mul_f64(i as f64);
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    let _ = s.lag.record((due.elapsed().as_micros() as u64).max(1));
                }
                let r = c.post(&body).await;
                s.count(holds(expect, &r), due.elapsed().as_micros() as u64);
                i += conns as u64;
            }
            s
        }));
    }
    gather(tasks, dur).await
}

/// User + system CPU time of a process so far, in clock ticks (Linux).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
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
pub(crate) fn busy_ticks() -> u64 {
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
pub(crate) fn cpu_us_per(ticks: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        ticks as f64 * 10_000.0 / requests as f64
    }
}

/// Resident memory of a process, in MiB (Linux).
pub(crate) fn rss_mib(pid: u32) -> f64 {
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

/// `n` requests one after another on one caller; how many got the expected answer. One
/// client and no clock: what callgrind counts then depends on the requests alone.
pub(crate) async fn sequential(c: &mut Caller, body: &Bytes, n: usize, expect: Expect) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if holds(expect, &c.post(body).await) {
            ok += 1;
        }
    }
    ok
}
