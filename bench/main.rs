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

mod load;
mod upstream;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

fn write_config(s: &Setup, upstream_url: &str) -> PathBuf {
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
[environment.identity]
issuer = "https://idp.bench.test"
jwks = "keys/issuer.jwks.json"
[environment.audit]
store = "sqlite://data/audit.db"
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
    _upstream: Proc,
    gateway: Proc,
    direct: String,
    gw: String,
    setup: Setup,
}

fn start_world(capgate: &Path, tools: usize) -> World {
    let me = std::env::current_exe().unwrap();
    let (up, direct) = spawn_with_url(
        Command::new(me).args(["upstream", "--tools", &tools.to_string()]),
        "benchmark upstream",
    );
    let setup = setup(tools);
    let cfg = write_config(&setup, &direct);
    let (gateway, gw) = spawn_with_url(
        Command::new(capgate)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("CAPGATE_LOG", "error"),
        "listening on",
    );
    World {
        _upstream: up,
        gateway,
        direct,
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
    json!({"rps": s.rps().round(), "p50_ms": s.ms(0.5), "p90_ms": s.ms(0.9), "p99_ms": s.ms(0.99), "p999_ms": s.ms(0.999), "ok": s.ok, "unexpected": s.wrong})
}

async fn suite(seconds: u64, capgate: PathBuf) -> Out {
    let dur = Duration::from_secs(seconds);
    let mut out = Out::default();
    let http = load::client(512);
    let echo = load::call_body("echo", &json!({"text": "hello"}));

    let w = start_world(&capgate, 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = load::rss_mib(w.pid());

    out.line("### Allowed `tools/call` (identity + validation + authorization + durable audit + forward)");
    out.line("");
    out.line("| clients | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | gateway/direct |");
    out.line("|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut gw64 = 0.0;
    let mut peak_rss = idle_rss;
    for clients in [1usize, 16, 64, 256] {
        let d = load::closed(&http, &w.direct(), echo.clone(), clients, dur, Expect::Ok).await;
        let g = load::closed(&http, &w.gateway(), echo.clone(), clients, dur, Expect::Ok).await;
        if clients == 64 {
            gw64 = g.rps();
        }
        let ratio = g.rps() / d.rps().max(1.0);
        out.line(&format!("| {clients} | direct | {} | |", fmt(&d)));
        out.line(&format!("| {clients} | capgate | {} | {:.0}% |", fmt(&g), ratio * 100.0));
        out.json
            .push(json!({"scenario": "allowed", "clients": clients, "direct": stats_json(&d), "gateway": stats_json(&g), "ratio": ratio}));
        if g.wrong > 0 || d.wrong > 0 {
            out.line(&format!("| | (unexpected answers: direct {}, capgate {}) | |", d.wrong, g.wrong));
        }
    }
    // Peak resident memory while 256 clients run, sampled in a second pass.
    {
        let pid = w.pid();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let sampler = tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(load::rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        });
        let _ = load::closed(
            &http,
            &w.gateway(),
            echo.clone(),
            256,
            Duration::from_secs(seconds.min(3)),
            Expect::Ok,
        )
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        peak_rss = peak_rss.max(sampler.await.unwrap_or(0.0));
    }

    out.line("");
    out.line("### Denied calls and `tools/list` (64 clients)");
    out.line("");
    out.line("| scenario | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | vs allowed |");
    out.line("|---|---|---:|---:|---:|---:|---:|---:|");
    let bad_token = load::closed(&http, &w.gateway_bad_token(), echo.clone(), 64, dur, Expect::Unauthorized).await;
    out.line(&format!(
        "| bad token (401) | capgate | {} | {:.2}x |",
        fmt(&bad_token),
        bad_token.rps() / gw64.max(1.0)
    ));
    let bad_args = load::closed(
        &http,
        &w.gateway(),
        load::call_body("echo", &json!({"text": ""})),
        64,
        dur,
        Expect::RpcError,
    )
    .await;
    out.line(&format!(
        "| bad arguments (-32602) | capgate | {} | {:.2}x |",
        fmt(&bad_args),
        bad_args.rps() / gw64.max(1.0)
    ));
    let unknown = load::closed(&http, &w.gateway(), load::call_body("purge", &json!({})), 64, dur, Expect::RpcError).await;
    out.line(&format!(
        "| unknown tool (-32602) | capgate | {} | {:.2}x |",
        fmt(&unknown),
        unknown.rps() / gw64.max(1.0)
    ));
    let dl = load::closed(&http, &w.direct(), load::list_body(), 64, dur, Expect::Ok).await;
    let gl = load::closed(&http, &w.gateway(), load::list_body(), 64, dur, Expect::Ok).await;
    out.line(&format!("| `tools/list` (11 tools) | direct | {} | |", fmt(&dl)));
    out.line(&format!(
        "| `tools/list` (11 tools) | capgate | {} | {:.0}% of direct |",
        fmt(&gl),
        gl.rps() / dl.rps().max(1.0) * 100.0
    ));
    out.json.push(json!({"scenario": "denied", "clients": 64, "bad_token": stats_json(&bad_token), "bad_args": stats_json(&bad_args), "unknown_tool": stats_json(&unknown), "allowed_rps": gw64}));
    out.json
        .push(json!({"scenario": "tools_list", "clients": 64, "direct": stats_json(&dl), "gateway": stats_json(&gl)}));

    out.line("");
    out.line("### A 64 KiB argument (16 clients)");
    out.line("");
    out.line("| path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | gateway/direct |");
    out.line("|---|---:|---:|---:|---:|---:|---:|");
    let big = load::call_body("echo", &json!({"text": "x".repeat(64 * 1024)}));
    let d = load::closed(&http, &w.direct(), big.clone(), 16, dur, Expect::Ok).await;
    let g = load::closed(&http, &w.gateway(), big, 16, dur, Expect::Ok).await;
    out.line(&format!("| direct | {} | |", fmt(&d)));
    out.line(&format!("| capgate | {} | {:.0}% |", fmt(&g), g.rps() / d.rps().max(1.0) * 100.0));
    out.json
        .push(json!({"scenario": "arg_64k", "clients": 16, "direct": stats_json(&d), "gateway": stats_json(&g)}));

    out.line("");
    out.line("### Open loop at half of capgate's saturation (64-client throughput / 2)");
    out.line("");
    let rate = (gw64 / 2.0).max(10.0).round();
    out.line(&format!("Rate: {rate:.0} calls/s, latency counted from when each call was due."));
    out.line("");
    out.line("| path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | added p99 ms |");
    out.line("|---|---:|---:|---:|---:|---:|---:|");
    let d = load::open(&http, &w.direct(), echo.clone(), rate, dur, Expect::Ok).await;
    let g = load::open(&http, &w.gateway(), echo.clone(), rate, dur, Expect::Ok).await;
    out.line(&format!("| direct | {} | |", fmt(&d)));
    out.line(&format!("| capgate | {} | {:.2} |", fmt(&g), g.ms(0.99) - d.ms(0.99)));
    out.json.push(json!({"scenario": "open_loop_half", "rate": rate, "direct": stats_json(&d), "gateway": stats_json(&g), "added_p99_ms": g.ms(0.99) - d.ms(0.99)}));

    out.line("");
    out.line("### An unauthenticated flood next to authenticated callers");
    out.line("");
    let alone = load::closed(&http, &w.gateway(), echo.clone(), 16, dur, Expect::Ok).await;
    let flood_target = w.gateway_bad_token();
    let flood_http = load::client(128);
    let flood = tokio::spawn({
        let echo = echo.clone();
        async move { load::closed(&flood_http, &flood_target, echo, 64, dur, Expect::Unauthorized).await }
    });
    let with_flood = load::closed(&http, &w.gateway(), echo.clone(), 16, dur, Expect::Ok).await;
    let flood = flood.await.unwrap();
    let slowdown = 1.0 - with_flood.rps() / alone.rps().max(1.0);
    out.line("| authenticated (16 clients) | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms |");
    out.line("|---|---:|---:|---:|---:|---:|");
    out.line(&format!("| alone | {} |", fmt(&alone)));
    out.line(&format!(
        "| beside 64 flooding clients ({:.0} refusals/s) | {} |",
        flood.rps(),
        fmt(&with_flood)
    ));
    out.line("");
    out.line(&format!("Authenticated throughput lost to the flood: {:.0}%.", slowdown * 100.0));
    out.json.push(json!({"scenario": "flood", "alone": stats_json(&alone), "with_flood": stats_json(&with_flood), "flood": stats_json(&flood), "slowdown": slowdown}));
    drop(w);

    out.line("");
    out.line("### 1000 contracts");
    out.line("");
    let w = start_world(&capgate, 1000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_1000 = load::rss_mib(w.pid());
    out.line("| scenario | path | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | gateway/direct |");
    out.line("|---|---|---:|---:|---:|---:|---:|---:|");
    let call = load::call_body("tool_999", &json!({"n": 7}));
    let d = load::closed(&http, &w.direct(), call.clone(), 64, dur, Expect::Ok).await;
    let g = load::closed(&http, &w.gateway(), call, 64, dur, Expect::Ok).await;
    out.line(&format!("| `tools/call` (64 clients) | direct | {} | |", fmt(&d)));
    out.line(&format!(
        "| `tools/call` (64 clients) | capgate | {} | {:.0}% |",
        fmt(&g),
        g.rps() / d.rps().max(1.0) * 100.0
    ));
    let dl = load::closed(&http, &w.direct(), load::list_body(), 16, dur, Expect::Ok).await;
    let gl = load::closed(&http, &w.gateway(), load::list_body(), 16, dur, Expect::Ok).await;
    out.line(&format!("| `tools/list` (16 clients) | direct | {} | |", fmt(&dl)));
    out.line(&format!(
        "| `tools/list` (16 clients) | capgate | {} | {:.0}% |",
        fmt(&gl),
        gl.rps() / dl.rps().max(1.0) * 100.0
    ));
    out.json.push(json!({"scenario": "contracts_1000", "call_direct": stats_json(&d), "call_gateway": stats_json(&g), "list_direct": stats_json(&dl), "list_gateway": stats_json(&gl)}));
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
        Cmd::World { tools, capgate } => {
            let capgate = capgate.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("capgate"));
            let w = start_world(&capgate, tools);
            println!("direct {}\ngateway {} (pid {})\ntoken {}", w.direct, w.gw, w.pid(), w.setup.token);
            let _ = std::io::stdout().flush();
            rt.block_on(std::future::pending::<()>());
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
