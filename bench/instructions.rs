//! `capgate-bench instructions`: instructions per request, counted by callgrind, for the
//! upstream, the null gateway and capgate, each run under `valgrind --tool=callgrind`.
//! Unlike calls/s and CPU time, an instruction count does not move with whatever else the
//! machine is doing, so it tells whether a change made a request cheaper where a throughput
//! run is lost in noise. It counts user-space instructions only: the kernel's share (TCP,
//! fsync) and waiting are not in it.
//!
//! Requests go one at a time from one client, so every count divides by a known number of
//! requests; between measurements the counters of all three processes are zeroed and dumped
//! with `callgrind_control`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use bytes::Bytes;

use crate::load::{self, Expect, Target};
use crate::{World, start_world_under};

/// One process under callgrind.
struct Counted {
    name: &'static str,
    pid: u32,
}

fn control(args: &[&str], pid: u32) {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .expect("callgrind_control (from valgrind) runs");
    assert!(
        out.status.success(),
        "callgrind_control {args:?} {pid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Counted {
    fn zero(&self) {
        control(&["--zero"], self.pid);
    }

    /// Dumps what was counted since the last zero and reads the dump.
    fn dump(&self, dir: &Path) -> Dump {
        control(&["--dump"], self.pid);
        // Dumps are written as <name>.<pid>.<n>, n counting up from 1: the newest is ours.
        let prefix = format!("{}.{}.", self.name, self.pid);
        let newest = std::fs::read_dir(dir)
            .expect("callgrind output directory")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let n: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, dir.join(name)))
            })
            .max()
            .expect("callgrind wrote a dump")
            .1;
        Dump::read(&newest)
    }
}

/// One callgrind dump: its total and each function's own (exclusive) instructions.
pub(crate) struct Dump {
    pub(crate) total: u64,
    pub(crate) by_fn: HashMap<String, u64>,
}

impl Dump {
    /// Reads callgrind's format: `fn=` opens a function (names are compressed as `(id) name`
    /// the first time, `(id)` after), cost lines below it are its own, and the one cost line
    /// after each `calls=` is a callee's inclusive cost, which belongs to the callee.
    pub(crate) fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read callgrind dump");
        let mut names: HashMap<String, String> = HashMap::new();
        let mut by_fn: HashMap<String, u64> = HashMap::new();
        let mut current = String::new();
        let mut after_call = false;
        let mut total = 0;
        let mut name_of = |v: &str| -> String {
            match v.strip_prefix('(').and_then(|r| r.split_once(')')) {
                Some((id, rest)) if !rest.trim().is_empty() => {
                    names.insert(id.to_string(), rest.trim().to_string());
                    rest.trim().to_string()
                }
                Some((id, _)) => names.get(id).cloned().unwrap_or_else(|| v.to_string()),
                None => v.to_string(),
            }
        };
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("fn=") {
                current = name_of(v);
            } else if let Some(v) = line.strip_prefix("cfn=") {
                name_of(v);
            } else if line.starts_with("calls=") {
                after_call = true;
            } else if let Some(v) = line.strip_prefix("totals:") {
                total = v.trim().parse().unwrap_or(0);
            } else if line.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '*')) {
                if std::mem::take(&mut after_call) {
                    continue;
                }
                let ir: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                *by_fn.entry(current.clone()).or_default() += ir;
            }
        }
        // `totals:` is callgrind's own sum of the cost lines: a misread line would show here.
        let read: u64 = by_fn.values().sum();
        assert_eq!(
            read,
            total,
            "{}: the functions' costs do not add up to the dump's total",
            path.display()
        );
        Self { total, by_fn }
    }

    /// Own instructions of the functions whose name contains `part`.
    pub(crate) fn of(&self, part: &str) -> u64 {
        self.by_fn.iter().filter(|(f, _)| f.contains(part)).map(|(_, v)| v).sum()
    }
}

async fn audit_counts(metrics: &mut load::Caller) -> (u64, u64) {
    let text = metrics.get("/metrics").await.unwrap_or_default();
    let metric = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (metric("capgate_audit_records_total"), metric("capgate_audit_commits_total"))
}

/// Counts every scenario and prints the table of docs/BENCHMARKS.md; `keep` keeps the dumps
/// (for `callgrind_annotate`).
pub(crate) async fn run(capgate: PathBuf, n: usize, keep: Option<PathBuf>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("output directory");
    let dir = dir.canonicalize().expect("output directory");
    // No failure budget: a refused token is then counted at its own cost, not held back.
    let w: World = start_world_under(&capgate, 10, "auth_failure_limit = \"none\"", Some(&dir));
    let procs = [
        Counted {
            name: "upstream",
            pid: w.upstream.0.id(),
        },
        Counted {
            name: "null",
            pid: w.proxy.0.id(),
        },
        Counted {
            name: "capgate",
            pid: w.gateway.0.id(),
        },
    ];
    let mut metrics = load::Caller::new(&w.gateway());
    let echo = load::call_body("echo", &json!({"text": "hello"}));
    let list = load::list_body();
    let bad_args = load::call_body("echo", &json!({"text": 7}));
    let unknown = load::call_body("no_such_tool", &json!({}));
    let rows: Vec<(&str, Target, &Bytes, Expect)> = vec![
        ("tools/call → upstream directly", w.direct(), &echo, Expect::Ok),
        ("tools/call → null gateway", w.null(), &echo, Expect::Ok),
        ("tools/call → capgate (allowed)", w.gateway(), &echo, Expect::Ok),
        ("tools/list → upstream directly", w.direct(), &list, Expect::Ok),
        ("tools/list → null gateway", w.null(), &list, Expect::Ok),
        ("tools/list → capgate", w.gateway(), &list, Expect::Ok),
        ("bad token → capgate", w.gateway_bad_token(), &echo, Expect::Unauthorized),
        ("bad arguments → capgate", w.gateway(), &bad_args, Expect::RpcError),
        ("unknown tool → capgate", w.gateway(), &unknown, Expect::RpcError),
    ];
    println!("| {n} requests, one client | upstream | null gateway | capgate | capgate: SHA-256 | audit records/commits |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut allowed: Option<Dump> = None;
    for (label, target, body, expect) in rows {
        let mut c = load::caller(&target).await;
        // Warm-up: connections, caches, the session, a first commit.
        load::sequential(&mut c, body, 20, expect).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for p in &procs {
            p.zero();
        }
        let (r0, c0) = audit_counts(&mut metrics).await;
        let ok = load::sequential(&mut c, body, n, expect).await;
        // Outcome records may wait a few ms for a commit: let them land inside the count.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (r1, c1) = audit_counts(&mut metrics).await;
        let dumps: Vec<Dump> = procs.iter().map(|p| p.dump(&dir)).collect();
        assert_eq!(ok, n, "{label}: {ok} of {n} requests got the expected answer");
        let per = |d: &Dump| d.total / n as u64;
        // The metrics requests themselves write no audit record.
        let audit = if c1 > c0 {
            format!("{:.2} / {:.2}", (r1 - r0) as f64 / n as f64, (c1 - c0) as f64 / n as f64)
        } else {
            "–".to_string()
        };
        println!(
            "| {label} | {} | {} | {} | {} | {audit} |",
            per(&dumps[0]),
            per(&dumps[1]),
            per(&dumps[2]),
            dumps[2].of("sha2::sha256") / n as u64
        );
        if label.ends_with("(allowed)") {
            allowed = dumps.into_iter().nth(2);
        }
    }
    if let Some(d) = allowed {
        println!();
        println!("capgate's own instructions per allowed call, by function (top 15):");
        println!();
        println!("| function | instructions/call | share |");
        println!("|---|---:|---:|");
        let mut by: Vec<_> = d.by_fn.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1));
        for (f, v) in by.into_iter().take(15) {
            let name: String = f.chars().take(90).collect();
            println!(
                "| `{}` | {} | {:.1}% |",
                name.replace('|', "\\|"),
                v / n as u64,
                *v as f64 * 100.0 / d.total.max(1) as f64
            );
        }
    }
    println!();
    println!("callgrind output: {}", dir.display());
}
