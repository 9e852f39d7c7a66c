//! `capgate-bench`: what capgate costs on the hot path, measured side by side with calling
//! the same upstream directly (the physical limit of any gateway).
//!
//! `capgate-bench suite` starts the fast benchmark upstream and a release `capgate` with a
//! generated config (durable SQLite audit, as deployed), runs every scenario of
//! docs/BENCHMARKS.md and prints its tables. `capgate-bench upstream` serves the upstream
//! alone.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a measurement tool: failing loudly is right"
)]

mod instructions;
mod load;
mod proxy;
mod upstream;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use load::{Expect, Stats, Target};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "capgate-bench", about = "Benchmarks of capgate against the direct upstream")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the fast benchmark upstream (prints its URL)
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Tools besides `echo`: tool_0 … tool_{N-1}
        #[arg(long, default_value_t = 10)]
        tools: usize,
    },
    /// Start the upstream and a gateway, print their URLs and a token, and wait (for
    /// profiling by hand)
    World {
        #[arg(long, default_value_t = 10)]
        tools: usize,
        #[arg(long)]
        capgate: Option<PathBuf>,
        /// More lines for the environment's config, e.g. 'auth_failure_limit = "none"'
        #[arg(long, default_value = "")]
        env_config: String,
    },
    /// Serve the null gateway: a pass-through proxy to UPSTREAM that checks nothing
    Proxy {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        upstream: String,
    },
    /// Closed-loop (or open-loop with --rate) load against one URL, for profiling by hand
    Load {
        #[arg(long)]
        url: String,
        /// Bearer token (none: call without one)
        #[arg(long, env = "CAPGATE_BENCH_TOKEN")]
        token: Option<String>,
        /// Concurrent clients (closed loop), or connections the rate is spread over (open loop)
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value = "echo")]
        tool: String,
        /// The call's arguments as JSON
        #[arg(long, default_value = r#"{"text":"hello"}"#)]
        args: String,
        /// Open loop at this many calls per second instead of closed loop
        #[arg(long)]
        rate: Option<f64>,
        /// The token is expected to be refused (401): count those answers, open no session
        #[arg(long)]
        refused: bool,
    },
    /// Count instructions per request under callgrind (valgrind), for the upstream, the null
    /// gateway and capgate
    Instructions {
        /// Requests per measurement
        #[arg(long, default_value_t = 500)]
        requests: usize,
        /// The capgate binary (default: next to this one)
        #[arg(long)]
        capgate: Option<PathBuf>,
        /// Keep callgrind's output here (for callgrind_annotate)
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Only the Cedar policies table (roles only, 10 and 1,000 policies)
    Policies {
        /// Seconds per measurement
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The capgate binary (default: next to this one)
        #[arg(long)]
        capgate: Option<PathBuf>,
    },
    /// Only the traces table: no export, a collector that answers, a collector that is down
    Telemetry {
        /// Seconds per measurement
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The capgate binary (default: next to this one)
        #[arg(long)]
        capgate: Option<PathBuf>,
    },
    /// Only the audit-store table (SQLite, PostgreSQL with one and two replicas)
    Stores {
        /// Seconds per measurement
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The capgate binary (default: next to this one)
        #[arg(long)]
        capgate: Option<PathBuf>,
    },
    /// Run every scenario and print the tables of docs/BENCHMARKS.md
    Suite {
        /// Seconds per measurement
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The capgate binary (default: next to this one)
        #[arg(long)]
        capgate: Option<PathBuf>,
        /// Also write every figure as JSON
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child and returns it with the first `http://…` word of the line containing
/// `marker`.
fn spawn_with_url(cmd: &mut Command, marker: &str) -> (Proc, String) {
    let mut child = Proc(cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn"));
    let out = child.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    loop {
        let line = lines.next().expect("the process ended before it was ready").expect("read");
        if line.contains(marker) {
            let url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .expect("a URL")
                .to_string();
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, url);
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    token: String,
    key: ed25519_dalek::SigningKey,
}

fn setup(tools: usize) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let issuer = capgate::keys::generate_files(&keys, "issuer").expect("keys");
    capgate::keys::generate_files(&keys, "audit").expect("keys");
    std::fs::create_dir_all(dir.path().join("contracts")).unwrap();
    let mut contracts = String::from(
        "[[contract]]\ntool = \"echo\"\nallowed_roles = [\"bench\"]\nside_effects = \"read\"\narg_schema = { text = \"string(1..70000)\" }\n",
    );
    for i in 0..tools {
        contracts.push_str(&format!(
            "\n[[contract]]\ntool = \"tool_{i}\"\nallowed_roles = [\"bench\"]\nside_effects = \"read\"\narg_schema = {{ n = \"0-100\" }}\n"
        ));
    }
    std::fs::write(dir.path().join("contracts/bench.toml"), contracts).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": "https://idp.bench.test", "aud": "http://bench.test/mcp", "sub": "bench", "roles": ["bench"], "iat": now, "nbf": now, "exp": now + 7200});
    let token = capgate::keys::sign_jwt(&issuer.key, &capgate::keys::kid_of(&issuer.key), &claims).unwrap();
    Setup {
        dir,
        token,
        key: issuer.key,
    }
}

/// `extra`: lines added to the environment table (e.g. `auth_failure_limit = "none"`).
fn write_config(s: &Setup, upstream_url: &str, extra: &str) -> PathBuf {
    write_config_with_store(s, upstream_url, extra, "sqlite://data/audit.db")
}

fn write_config_with_store(s: &Setup, upstream_url: &str, extra: &str, store: &str) -> PathBuf {
    let cfg = s.dir.path().join("capgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"contracts = "contracts/"
[[environment]]
name = "bench"
listen = "127.0.0.1:0"
public_url = "http://bench.test/mcp"
max_body_bytes = 1048576
{extra}
[environment.identity]
issuer = "https://idp.bench.test"
jwks = "keys/issuer.jwks.json"
[environment.audit]
store = "{store}"
signing_key = "keys/audit.pem"
[[upstream]]
name = "fast"
environment = "bench"
url = "{upstream_url}"
timeout = "30s"
"#
        ),
    )
    .unwrap();
    cfg
}

struct World {
    upstream: Proc,
    proxy: Proc,
    gateway: Proc,
    direct: String,
    null: String,
    gw: String,
    setup: Setup,
}

fn start_world(capgate: &Path, tools: usize, extra: &str) -> World {
    start_world_under(capgate, tools, extra, None)
}

/// `program`, or `program` under callgrind writing to `counted/<name>.<pid>` when given.
fn command(program: &Path, counted: Option<&Path>, name: &str) -> Command {
    match counted {
        None => Command::new(program),
        Some(dir) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg("--quiet")
                .arg(format!("--callgrind-out-file={}/{name}.%p", dir.display()))
                .arg(program);
            c
        }
    }
}

/// The world, with the upstream, the null gateway and capgate each under callgrind when
/// `counted` names a directory for its output.
fn start_world_under(capgate: &Path, tools: usize, extra: &str, counted: Option<&Path>) -> World {
    start_world_policies(capgate, tools, extra, counted, None)
}

/// [`start_world_under`], the gateway's environment running `policies` (Cedar text) where
/// given.
fn start_world_policies(capgate: &Path, tools: usize, extra: &str, counted: Option<&Path>, policies: Option<&str>) -> World {
    let me = std::env::current_exe().unwrap();
    let (up, direct) = spawn_with_url(
        command(&me, counted, "upstream").args(["upstream", "--tools", &tools.to_string()]),
        "benchmark upstream",
    );
    let (proxy, null) = spawn_with_url(command(&me, counted, "null").args(["proxy", &direct]), "null gateway");
    let setup = setup(tools);
    let extra = match policies {
        None => extra.to_string(),
        Some(text) => {
            std::fs::create_dir_all(setup.dir.path().join("policies")).unwrap();
            std::fs::write(setup.dir.path().join("policies/bench.cedar"), text).unwrap();
            format!("{extra}\npolicies = \"policies/\"")
        }
    };
    let cfg = write_config(&setup, &direct, &extra);
    let (gateway, gw) = spawn_with_url(
        command(capgate, counted, "capgate")
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("CAPGATE_LOG", "error"),
        "listening on",
    );
    World {
        upstream: up,
        proxy,
        gateway,
        direct,
        null,
        gw,
        setup,
    }
}

impl World {
    fn direct(&self) -> Target {
        Target {
            url: self.direct.clone(),
            token: None,
            session: true,
        }
    }
    fn null(&self) -> Target {
        Target {
            url: self.null.clone(),
            token: None,
            session: true,
        }
    }
    fn gateway(&self) -> Target {
        Target {
            url: self.gw.clone(),
            token: Some(self.setup.token.clone()),
            session: true,
        }
    }
    fn gateway_bad_token(&self) -> Target {
        // Signed by the right key but for another audience: refused after the signature check.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": "https://idp.bench.test", "aud": "http://elsewhere.test/mcp", "sub": "x", "exp": now + 3600});
        Target {
            url: self.gw.clone(),
            token: Some(capgate::keys::sign_jwt(&self.setup.key, &capgate::keys::kid_of(&self.setup.key), &claims).unwrap()),
            session: false,
        }
    }
    fn pid(&self) -> u32 {
        self.gateway.0.id()
    }
    fn null_pid(&self) -> u32 {
        self.proxy.0.id()
    }
}

#[derive(Default)]
struct Out {
    md: String,
    json: Vec<Value>,
}

impl Out {
    fn line(&mut self, s: &str) {
        println!("{s}");
        let _ = std::io::stdout().flush();
        self.md.push_str(s);
        self.md.push('\n');
    }
}

fn fmt(s: &Stats) -> String {
    format!(
        "{:>8.0} | {:>6.2} | {:>6.2} | {:>6.2} | {:>7.2}",
        s.rps(),
        s.ms(0.5),
        s.ms(0.9),
        s.ms(0.99),
        s.ms(0.999)
    )
}

fn stats_json(s: &Stats) -> Value {
    json!({"rps": s.rps().round(), "p50_ms": s.ms(0.5), "p90_ms": s.ms(0.9), "p99_ms": s.ms(0.99), "p999_ms": s.ms(0.999), "ok": s.ok, "unexpected": s.wrong, "cpu_us_per_call": s.cpu_us, "send_lag_p50_ms": s.lag_ms(0.5), "send_lag_p99_ms": s.lag_ms(0.99), "send_lag_max_ms": s.lag_ms(1.0)})
}

fn pct(a: f64, b: f64) -> String {
    format!("{:.0}%", a / b.max(1.0) * 100.0)
}

/// The direct, null-gateway and capgate rows of one scenario: `first` is the row's leading
/// cells (e.g. `| 64 `); `cpu` adds the CPU µs/call column.
fn three_rows(out: &mut Out, first: &str, d: &Stats, n: &Stats, g: &Stats, cpu: bool) {
    let cpu_of = |s: &Stats| if cpu { format!(" {:.0} |", s.cpu_us) } else { String::new() };
    let blank = if cpu { " |" } else { "" };
    out.line(&format!("{first}| direct | {} |{blank} | |", fmt(d)));
    out.line(&format!(
        "{first}| null gateway | {} |{} {} | |",
        fmt(n),
        if cpu && n.cpu_us > 0.0 { cpu_of(n) } else { blank.to_string() },
        pct(n.rps(), d.rps())
    ));
    out.line(&format!(
        "{first}| capgate | {} |{} {} | {} |",
        fmt(g),
        cpu_of(g),
        pct(g.rps(), d.rps()),
        pct(g.rps(), n.rps())
    ));
}

/// A closed-loop measurement, with the CPU time `pid` spent per answered request.
async fn closed(t: &Target, body: &Bytes, clients: usize, dur: Duration, expect: Expect, pid: Option<u32>) -> Stats {
    let before = pid.map(load::cpu_ticks);
    let mut s = load::closed(t, body.clone(), clients, dur, expect).await;
    if let (Some(pid), Some(before)) = (pid, before) {
        s.cpu_us = load::cpu_us_per(load::cpu_ticks(pid).saturating_sub(before), s.all);
    }
    s
}

/// Connections of an open-loop run of authenticated calls (each with its session).
const OPEN_CONNS: usize = 128;
/// Connections of the open-loop flood: its refusals are held 250 ms over the failure
/// budget, so 5,000/s keeps ~1,250 in flight.
const FLOOD_CONNS: usize = 2048;

/// The machine's PostgreSQL for the store comparison (trust authentication).
const BENCH_PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

async fn pg_exec(sql: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(BENCH_PG, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    client.batch_execute(sql).await.map_err(|e| e.to_string())
}

/// Gateways on `cfg`, each its own process (replicas of one environment).
fn gateways(capgate: &Path, cfg: &Path, n: usize) -> Vec<(Proc, String)> {
    (0..n)
        .map(|_| {
            spawn_with_url(
                Command::new(capgate)
                    .args(["serve", "--config"])
                    .arg(cfg)
                    .env("CAPGATE_LOG", "error"),
                "listening on",
            )
        })
        .collect()
}

/// Allowed calls at 64 clients with each audit store: SQLite, PostgreSQL with one replica,
/// and PostgreSQL with two replicas sharing its chain (clients spread over them), beside
/// the direct path and the null gateway of the same run.
async fn stores(out: &mut Out, capgate: &Path, w: &World, echo: &Bytes, dur: Duration) {
    out.line("");
    out.line("### Audit stores: SQLite and PostgreSQL, one and two replicas (64 clients, allowed `tools/call`)");
    out.line("");
    let schema = format!("capgate_bench_{}", std::process::id());
    if let Err(e) = pg_exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await {
        out.line(&format!("PostgreSQL on 127.0.0.1:5432 is not reachable ({e}): not measured."));
        return;
    }
    out.line("PostgreSQL: the machine's server on 127.0.0.1 (15, default settings: `synchronous_commit = on`), a schema of its own; CPU is the gateways' only (not the database's).");
    out.line("");
    out.line("| store | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/call | of direct | of null gateway |");
    out.line("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let d = closed(&w.direct(), echo, 64, dur, Expect::Ok, None).await;
    let n = closed(&w.null(), echo, 64, dur, Expect::Ok, Some(w.null_pid())).await;
    out.line(&format!("| | direct | {} | | | |", fmt(&d)));
    out.line(&format!(
        "| | null gateway | {} | {:.0} | {} | |",
        fmt(&n),
        n.cpu_us,
        pct(n.rps(), d.rps())
    ));
    let setup = setup(10);
    let pg_store = format!("postgres://postgres@127.0.0.1:5432/test?schema={schema}");
    let mut rows = Vec::new();
    for (label, store, replicas) in [
        ("SQLite", "sqlite://data/audit.db".to_string(), 1),
        ("PostgreSQL, 1 replica", pg_store.clone(), 1),
        ("PostgreSQL, 2 replicas", pg_store.clone(), 2),
    ] {
        let cfg = write_config_with_store(&setup, &w.direct, "", &store);
        if store.starts_with("postgres") {
            let init = Command::new(capgate)
                .args(["store", "init", "--env", "bench", "--config"])
                .arg(&cfg)
                .output();
            if !init.as_ref().is_ok_and(|o| o.status.success()) {
                out.line(&format!("| {label} | (store init failed) | |"));
                continue;
            }
        }
        let gws = gateways(capgate, &cfg, replicas);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let targets: Vec<Target> = gws
            .iter()
            .map(|(_, url)| Target {
                url: url.clone(),
                token: Some(setup.token.clone()),
                session: true,
            })
            .collect();
        let before: u64 = gws.iter().map(|(p, _)| load::cpu_ticks(p.0.id())).sum();
        let mut g = load::closed_spread(&targets, echo.clone(), 64, dur, Expect::Ok).await;
        let after: u64 = gws.iter().map(|(p, _)| load::cpu_ticks(p.0.id())).sum();
        g.cpu_us = load::cpu_us_per(after.saturating_sub(before), g.all);
        out.line(&format!(
            "| {label} | capgate | {} | {:.0} | {} | {} |",
            fmt(&g),
            g.cpu_us,
            pct(g.rps(), d.rps()),
            pct(g.rps(), n.rps())
        ));
        rows.push(json!({"store": label, "replicas": replicas, "gateway": stats_json(&g), "ratio_direct": g.rps() / d.rps().max(1.0), "ratio_null": g.rps() / n.rps().max(1.0)}));
        drop(gws);
    }
    out.json
        .push(json!({"scenario": "stores", "clients": 64, "direct": stats_json(&d), "null": stats_json(&n), "rows": rows}));
    let _ = pg_exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}

/// `n` Cedar policies over the bench contracts: one that permits `echo`, one forbid that
/// matches nobody, and the rest permits of the other tools with a condition on an argument,
/// so that every call evaluates all of them.
fn bench_policies(n: usize, tools: usize) -> String {
    let mut text = String::from(
        "@id(\"echo\")\npermit (principal, action == Capgate::Action::\"echo\", resource) when { principal.roles.contains(\"bench\") };\n\
         @id(\"nobody\")\nforbid (principal, action, resource) when { principal.sub == \"blocked\" };\n",
    );
    for i in 0..n.saturating_sub(2) {
        text.push_str(&format!(
            "@id(\"p{i}\")\npermit (principal, action == Capgate::Action::\"tool_{}\", resource) when {{ context.args.n >= {} }};\n",
            i % tools.max(1),
            i % 50
        ));
    }
    text
}

/// Allowed calls with Cedar policies in force, beside roles alone and the null gateway.
async fn policies(out: &mut Out, capgate: &Path, echo: &Bytes, dur: Duration) {
    out.line("");
    out.line("### Allowed `tools/call` with Cedar policies (64 clients)");
    out.line("");
    out.line("| policies | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/call | of direct | of null gateway |");
    out.line("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for n in [0usize, 10, 1000] {
        let text = bench_policies(n, 10);
        let w = start_world_policies(capgate, 10, "", None, (n > 0).then_some(text.as_str()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let label = if n == 0 { "none (roles only)".to_string() } else { format!("{n}") };
        let d = closed(&w.direct(), echo, 64, dur, Expect::Ok, None).await;
        let nl = closed(&w.null(), echo, 64, dur, Expect::Ok, Some(w.null_pid())).await;
        let g = closed(&w.gateway(), echo, 64, dur, Expect::Ok, Some(w.pid())).await;
        three_rows(out, &format!("| {label} "), &d, &nl, &g, true);
        rows.push(json!({"policies": n, "direct": stats_json(&d), "null": stats_json(&nl), "gateway": stats_json(&g), "ratio_null": g.rps() / nl.rps().max(1.0)}));
    }
    out.json.push(json!({"scenario": "policies", "rows": rows}));
}

/// A collector that takes every OTLP export and answers it at once; what it was sent (bytes).
async fn collector() -> (String, Arc<std::sync::atomic::AtomicU64>) {
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let r = r.clone();
            async move {
                r.fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("collector");
    let addr = listener.local_addr().expect("collector");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1/traces"), received)
}

/// Allowed calls with every span exported, to a collector that answers and to one that is
/// down, beside no export at all: export must not cost a call its speed or its success.
async fn telemetry(out: &mut Out, capgate: &Path, echo: &Bytes, dur: Duration) {
    out.line("");
    out.line("### Allowed `tools/call` with OpenTelemetry export (64 clients, every trace sampled)");
    out.line("");
    out.line("| export | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/call | of direct | of null gateway |");
    out.line("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (up, received) = collector().await;
    // A port nothing listens on: bound, then closed.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| format!("http://{a}/v1/traces"))
        .expect("a free port");
    let mut rows = Vec::new();
    for (label, endpoint) in [
        ("none", None),
        ("collector up", Some(up.as_str())),
        ("collector down", Some(down.as_str())),
    ] {
        let extra = endpoint
            .map(|e| format!("telemetry = {{ otlp_endpoint = \"{e}\" }}"))
            .unwrap_or_default();
        let w = start_world(capgate, 10, &extra);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = received.load(std::sync::atomic::Ordering::Relaxed);
        let d = closed(&w.direct(), echo, 64, dur, Expect::Ok, None).await;
        let nl = closed(&w.null(), echo, 64, dur, Expect::Ok, Some(w.null_pid())).await;
        let g = closed(&w.gateway(), echo, 64, dur, Expect::Ok, Some(w.pid())).await;
        three_rows(out, &format!("| {label} "), &d, &nl, &g, true);
        // Let the queue drain, then read what the gateway says it dropped.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut scrape = load::Caller::new(&w.gateway());
        let text = scrape.get("/metrics").await.unwrap_or_default();
        let dropped = text
            .lines()
            .find(|l| l.starts_with("capgate_trace_spans_dropped_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let sent = received.load(std::sync::atomic::Ordering::Relaxed) - before;
        out.line(&format!(
            "|  | spans dropped: {dropped:.0}; bytes the collector received: {sent}; wrong answers: {} | | | | | | | | |",
            g.wrong
        ));
        rows.push(json!({"export": label, "direct": stats_json(&d), "null": stats_json(&nl), "gateway": stats_json(&g), "spans_dropped": dropped, "bytes_received": sent, "wrong_answers": g.wrong}));
    }
    out.json.push(json!({"scenario": "telemetry", "rows": rows}));
}

async fn suite(seconds: u64, capgate: PathBuf) -> Out {
    let dur = Duration::from_secs(seconds);
    let mut out = Out::default();
    let echo = load::call_body("echo", &json!({"text": "hello"}));

    let w = start_world(&capgate, 10, "");
    let gw_pid = Some(w.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = load::rss_mib(w.pid());

    out.line("### Allowed `tools/call` (identity + validation + authorization + durable audit + forward)");
    out.line("");
    out.line("| clients | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/call | of direct | of null gateway |");
    out.line("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut gw64 = 0.0;
    let mut cpu_allowed64 = 0.0;
    let mut peak_rss = idle_rss;
    for clients in [1usize, 16, 64, 256] {
        let d = closed(&w.direct(), &echo, clients, dur, Expect::Ok, None).await;
        let n = closed(&w.null(), &echo, clients, dur, Expect::Ok, Some(w.null_pid())).await;
        let g = closed(&w.gateway(), &echo, clients, dur, Expect::Ok, gw_pid).await;
        if clients == 64 {
            gw64 = g.rps();
            cpu_allowed64 = g.cpu_us;
        }
        three_rows(&mut out, &format!("| {clients} "), &d, &n, &g, true);
        out.json.push(json!({"scenario": "allowed", "clients": clients, "direct": stats_json(&d), "null": stats_json(&n), "gateway": stats_json(&g), "ratio_direct": g.rps() / d.rps().max(1.0), "ratio_null": g.rps() / n.rps().max(1.0)}));
        if g.wrong > 0 || d.wrong > 0 || n.wrong > 0 {
            out.line(&format!(
                "| | (unexpected answers: direct {}, null {}, capgate {}) | |",
                d.wrong, n.wrong, g.wrong
            ));
        }
    }
    // Peak resident memory while 256 clients run, sampled in a second pass.
    {
        let pid = w.pid();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let sampler = tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(load::rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        });
        let _ = load::closed(&w.gateway(), echo.clone(), 256, Duration::from_secs(seconds.min(3)), Expect::Ok).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        peak_rss = peak_rss.max(sampler.await.unwrap_or(0.0));
    }

    out.line("");
    out.line("### Denied calls and `tools/list` (64 clients)");
    out.line("");
    out.line("| scenario | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/call | vs allowed |");
    out.line("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut denied = Vec::new();
    {
        // The raw cost of a refused token: a gateway whose failure budget is lifted.
        let open = start_world(&capgate, 10, "auth_failure_limit = \"none\"");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = closed(&open.gateway_bad_token(), &echo, 64, dur, Expect::Unauthorized, Some(open.pid())).await;
        denied.push(("bad token (401), failure budget lifted", s));
    }
    let s = closed(&w.gateway_bad_token(), &echo, 64, dur, Expect::Unauthorized, gw_pid).await;
    denied.push(("bad token (401), default budget: answers held", s));
    let bad_args = load::call_body("echo", &json!({"text": ""}));
    let s = closed(&w.gateway(), &bad_args, 64, dur, Expect::RpcError, gw_pid).await;
    denied.push(("bad arguments (-32602)", s));
    let unknown = load::call_body("purge", &json!({}));
    let s = closed(&w.gateway(), &unknown, 64, dur, Expect::RpcError, gw_pid).await;
    denied.push(("unknown tool (-32602)", s));
    for (name, s) in &denied {
        // Held answers are slow by design and few; their CPU share is mostly idle overhead.
        let held = name.contains("held");
        out.line(&format!(
            "| {name} | capgate | {} | {} | {} |",
            fmt(s),
            if held { "—".to_string() } else { format!("{:.0}", s.cpu_us) },
            if held {
                "answers held 250 ms by design".to_string()
            } else {
                format!(
                    "{:.2}x the calls/s, {} of the CPU",
                    s.rps() / gw64.max(1.0),
                    pct(s.cpu_us, cpu_allowed64)
                )
            }
        ));
        out.json.push(json!({"scenario": "denied", "name": name, "clients": 64, "gateway": stats_json(s), "allowed_rps": gw64, "allowed_cpu_us": cpu_allowed64}));
    }
    let list = load::list_body();
    let dl = closed(&w.direct(), &list, 64, dur, Expect::Ok, None).await;
    let nl = closed(&w.null(), &list, 64, dur, Expect::Ok, None).await;
    let gl = closed(&w.gateway(), &list, 64, dur, Expect::Ok, gw_pid).await;
    out.line(&format!("| `tools/list` (11 tools) | direct | {} | | |", fmt(&dl)));
    out.line(&format!(
        "| `tools/list` (11 tools) | null gateway | {} | | {} of direct |",
        fmt(&nl),
        pct(nl.rps(), dl.rps())
    ));
    out.line(&format!(
        "| `tools/list` (11 tools) | capgate | {} | {:.0} | {} of direct, {} of null |",
        fmt(&gl),
        gl.cpu_us,
        pct(gl.rps(), dl.rps()),
        pct(gl.rps(), nl.rps())
    ));
    out.json.push(
        json!({"scenario": "tools_list", "clients": 64, "direct": stats_json(&dl), "null": stats_json(&nl), "gateway": stats_json(&gl)}),
    );

    out.line("");
    out.line("### A 64 KiB argument (16 clients)");
    out.line("");
    out.line("| path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/call | of direct | of null gateway |");
    out.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let big = load::call_body("echo", &json!({"text": "x".repeat(64 * 1024)}));
    let d = closed(&w.direct(), &big, 16, dur, Expect::Ok, None).await;
    let n = closed(&w.null(), &big, 16, dur, Expect::Ok, None).await;
    let g = closed(&w.gateway(), &big, 16, dur, Expect::Ok, gw_pid).await;
    three_rows(&mut out, "", &d, &n, &g, true);
    out.json
        .push(json!({"scenario": "arg_64k", "clients": 16, "direct": stats_json(&d), "null": stats_json(&n), "gateway": stats_json(&g)}));

    out.line("");
    out.line("### Open loop at half of capgate's saturation (64-client throughput / 2)");
    out.line("");
    let rate = (gw64 / 2.0).max(10.0).round();
    out.line(&format!(
        "Rate: {rate:.0} calls/s over {OPEN_CONNS} connections, latency counted from when each call was due. \
         The generator's timer (tokio's, 1 ms granularity) wakes late for most calls, and every path \
         pays that alike (last column): the added p99 is what a path adds to it."
    ));
    out.line("");
    out.line("| path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | added p99 ms | generator's send lag p50 / p99 / max, ms |");
    out.line("|---|---:|---:|---:|---:|---:|---:|---:|");
    let d = load::open(&w.direct(), echo.clone(), rate, dur, Expect::Ok, OPEN_CONNS).await;
    let n = load::open(&w.null(), echo.clone(), rate, dur, Expect::Ok, OPEN_CONNS).await;
    let g = load::open(&w.gateway(), echo.clone(), rate, dur, Expect::Ok, OPEN_CONNS).await;
    let late = |s: &Stats| format!("{:.2} / {:.2} / {:.1}", s.lag_ms(0.5), s.lag_ms(0.99), s.lag_ms(1.0));
    out.line(&format!("| direct | {} | | {} |", fmt(&d), late(&d)));
    out.line(&format!(
        "| null gateway | {} | {:.2} | {} |",
        fmt(&n),
        n.ms(0.99) - d.ms(0.99),
        late(&n)
    ));
    out.line(&format!(
        "| capgate | {} | {:.2} | {} |",
        fmt(&g),
        g.ms(0.99) - d.ms(0.99),
        late(&g)
    ));
    out.json.push(json!({"scenario": "open_loop_half", "rate": rate, "direct": stats_json(&d), "null": stats_json(&n), "gateway": stats_json(&g), "added_p99_ms": g.ms(0.99) - d.ms(0.99)}));

    out.line("");
    out.line("### An unauthenticated flood next to authenticated callers");
    out.line("");
    out.line("Flooders send a well-signed token for another audience from the same address (127.0.0.1) as the authenticated callers.");
    out.line("");
    out.line("Alone and beside the flood alternate three times; the loss is the median of the three");
    out.line("pairs (this machine's background load moves between measurements).");
    out.line("");
    out.line("| authenticated (16 clients) | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | lost to the flood |");
    out.line("|---|---:|---:|---:|---:|---:|---:|");
    let mut floods = Vec::new();
    for (label, open_rate) in [
        ("64 closed-loop flooders", None),
        ("an open-loop flood of 5000 requests/s", Some(5000.0)),
    ] {
        let mut pairs = Vec::new();
        for _ in 0..3 {
            let alone = load::closed(&w.gateway(), echo.clone(), 16, dur, Expect::Ok).await;
            let flood_target = w.gateway_bad_token();
            let flood = tokio::spawn({
                let echo = echo.clone();
                async move {
                    match open_rate {
                        None => load::closed(&flood_target, echo, 64, dur, Expect::Unauthorized).await,
                        Some(r) => load::open(&flood_target, echo, r, dur, Expect::Unauthorized, FLOOD_CONNS).await,
                    }
                }
            });
            let with = load::closed(&w.gateway(), echo.clone(), 16, dur, Expect::Ok).await;
            let flood = flood.await.unwrap();
            pairs.push((1.0 - with.rps() / alone.rps().max(1.0), alone, with, flood));
        }
        let each = pairs.iter().map(|p| format!("{:.0}%", p.0 * 100.0)).collect::<Vec<_>>().join(", ");
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (lost, alone, with, flood) = pairs.swap_remove(1);
        out.line(&format!("| alone | {} | |", fmt(&alone)));
        out.line(&format!(
            "| beside {label} ({:.0} refusals/s answered) | {} | {:.0}% (pairs in order: {each}) |",
            flood.rps(),
            fmt(&with),
            lost * 100.0,
        ));
        floods.push(json!({"flood": label, "alone": stats_json(&alone), "with_flood": stats_json(&with), "flood_stats": stats_json(&flood), "slowdown_median": lost}));
    }
    // What the open-loop flood costs by itself, and who pays: the gateway per refusal, and
    // the flood generator (this process, running nothing else meanwhile) per request.
    let (g0, me0, m0, t0) = (
        load::cpu_ticks(w.pid()),
        load::cpu_ticks(std::process::id()),
        load::busy_ticks(),
        Instant::now(),
    );
    let flood = load::open(&w.gateway_bad_token(), echo.clone(), 5000.0, dur, Expect::Unauthorized, FLOOD_CONNS).await;
    let (g1, me1, m1) = (load::cpu_ticks(w.pid()), load::cpu_ticks(std::process::id()), load::busy_ticks());
    let n = flood.ok + flood.wrong;
    let (gw_us, gen_us) = (load::cpu_us_per(g1 - g0, n), load::cpu_us_per(me1 - me0, n));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // USER_HZ is 100: ticks per second per core.
    let busy = (m1 - m0) as f64 / t0.elapsed().as_secs_f64() / cores as f64;
    out.line("");
    out.line(&format!(
        "The open-loop flood alone ({:.0} refusals/s): capgate spends {gw_us:.0} µs of CPU per refusal, the flood generator {gen_us:.0} µs per request; the machine is {busy:.0}% busy ({} cores).",
        flood.rps(),
        cores
    ));
    floods.push(json!({"flood": "open-loop flood alone", "stats": stats_json(&flood), "gateway_cpu_us_per_refusal": gw_us, "generator_cpu_us_per_request": gen_us, "machine_busy_pct": busy}));
    out.json.push(json!({"scenario": "flood", "floods": floods}));
    stores(&mut out, &capgate, &w, &echo, dur).await;
    drop(w);

    policies(&mut out, &capgate, &echo, dur).await;
    telemetry(&mut out, &capgate, &echo, dur).await;

    out.line("");
    out.line("### 1000 contracts");
    out.line("");
    let w = start_world(&capgate, 1000, "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_1000 = load::rss_mib(w.pid());
    out.line("| scenario | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | of direct | of null gateway |");
    out.line("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let call = load::call_body("tool_999", &json!({"n": 7}));
    let list = load::list_body();
    let mut rows = Vec::new();
    for (name, body, clients) in [("`tools/call` (64 clients)", &call, 64), ("`tools/list` (16 clients)", &list, 16)] {
        let d = closed(&w.direct(), body, clients, dur, Expect::Ok, None).await;
        let n = closed(&w.null(), body, clients, dur, Expect::Ok, None).await;
        let g = closed(&w.gateway(), body, clients, dur, Expect::Ok, None).await;
        three_rows(&mut out, &format!("| {name} "), &d, &n, &g, false);
        rows.push(json!({"name": name, "direct": stats_json(&d), "null": stats_json(&n), "gateway": stats_json(&g)}));
    }
    out.json.push(json!({"scenario": "contracts_1000", "rows": rows}));
    drop(w);

    out.line("");
    out.line("### Memory (resident, capgate process)");
    out.line("");
    out.line("| state | RSS MiB |");
    out.line("|---|---:|");
    out.line(&format!("| idle, 11 contracts | {idle_rss:.1} |"));
    out.line(&format!("| peak under 256 clients | {peak_rss:.1} |"));
    out.line(&format!("| idle, 1001 contracts | {idle_1000:.1} |"));
    out.json
        .push(json!({"scenario": "memory", "idle_mib": idle_rss, "peak_256_mib": peak_rss, "idle_1000_contracts_mib": idle_1000}));
    out
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match cli.cmd {
        Cmd::Upstream { listen, tools } => rt.block_on(async {
            let addr = upstream::start(&listen, tools).await.expect("listen");
            println!("benchmark upstream listening on http://{addr}/mcp");
            let _ = std::io::stdout().flush();
            std::future::pending::<()>().await;
        }),
        Cmd::Proxy { listen, upstream } => rt.block_on(async {
            let addr = proxy::start(&listen, upstream).await.expect("listen");
            println!("null gateway listening on http://{addr}/mcp");
            let _ = std::io::stdout().flush();
            std::future::pending::<()>().await;
        }),
        Cmd::Load {
            url,
            token,
            clients,
            seconds,
            tool,
            args,
            rate,
            refused,
        } => rt.block_on(async {
            let args: Value = serde_json::from_str(&args).expect("--args is JSON");
            let t = Target {
                url,
                session: !refused,
                token,
            };
            let body = load::call_body(&tool, &args);
            let dur = Duration::from_secs(seconds);
            let expect = if refused { Expect::Unauthorized } else { Expect::Ok };
            let s = match rate {
                Some(r) => load::open(&t, body, r, dur, expect, clients).await,
                None => load::closed(&t, body, clients, dur, expect).await,
            };
            println!("{}", stats_json(&s));
        }),
        Cmd::World {
            tools,
            capgate,
            env_config,
        } => {
            let capgate = capgate.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("capgate"));
            let w = start_world(&capgate, tools, &env_config);
            println!(
                "direct {}\ngateway {} (pid {})\ntoken {}\nnull {}\nflood_token {}",
                w.direct,
                w.gw,
                w.pid(),
                w.setup.token,
                w.null,
                w.gateway_bad_token().token.unwrap_or_default()
            );
            let _ = std::io::stdout().flush();
            // Stopped by a signal, the servers it started go with it (`World`'s drop).
            rt.block_on(async { capgate::server::StopSignals::install().wait().await });
            drop(w);
        }
        Cmd::Instructions { requests, capgate, keep } => {
            let capgate = capgate.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("capgate"));
            rt.block_on(instructions::run(capgate, requests, keep));
        }
        Cmd::Policies { seconds, capgate } => {
            let capgate = capgate.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("capgate"));
            rt.block_on(async {
                let echo = load::call_body("echo", &json!({"text": "hello"}));
                policies(&mut Out::default(), &capgate, &echo, Duration::from_secs(seconds)).await;
            });
        }
        Cmd::Telemetry { seconds, capgate } => {
            let capgate = capgate.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("capgate"));
            rt.block_on(async {
                let echo = load::call_body("echo", &json!({"text": "hello"}));
                telemetry(&mut Out::default(), &capgate, &echo, Duration::from_secs(seconds)).await;
            });
        }
        Cmd::Stores { seconds, capgate } => {
            let capgate = capgate.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("capgate"));
            rt.block_on(async {
                let w = start_world(&capgate, 10, "");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let echo = load::call_body("echo", &json!({"text": "hello"}));
                stores(&mut Out::default(), &capgate, &w, &echo, Duration::from_secs(seconds)).await;
            });
        }
        Cmd::Suite { seconds, capgate, json } => {
            let capgate = capgate.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("capgate"));
            let out = rt.block_on(suite(seconds, capgate));
            if let Some(p) = json {
                std::fs::write(p, serde_json::to_string_pretty(&out.json).unwrap()).expect("write json");
            }
        }
    }
}
