//! Test harness: writes a two-environment configuration into a temporary folder, starts the
//! real `capgate` binary on 127.0.0.1 with ephemeral ports, signs tokens of every kind, and
//! reads the canary (the demo upstream's calls log) and the SQLite audit store.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]
#![allow(
    unreachable_pub,
    reason = "the harness is shared by test binaries; `pub` here reaches no other crate"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test harness: a failure here is a test failure"
)]

pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// An HTTP client for the tests (reqwest is built without a default TLS provider).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn get(url: String) -> reqwest::Response {
    http().get(url).send().await.unwrap()
}

/// The binary under test; `CAPGATE_TEST_BIN` runs the tests against another build (to see
/// a new test fail on the code before its fix).
pub fn bin() -> PathBuf {
    std::env::var_os("CAPGATE_TEST_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_capgate")), PathBuf::from)
}

/// One raw HTTP/1.1 exchange on a fresh connection, for requests a client library will not
/// send as written (`HOST` in `request` is replaced by the address). Returns everything the
/// server sent until it closed the connection, or until `wait` passed.
pub async fn raw_http(base: &str, request: &str, wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.replace("HOST", addr).as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub const ENVS: [&str; 2] = ["dev", "stage"];
pub const RSA_EC_ISSUER: &str = "https://idp.test/rsa-ec";

pub fn issuer(env: &str) -> String {
    format!("https://idp.test/{env}")
}

pub fn audience(env: &str) -> String {
    format!("https://capgate.test/{env}/mcp")
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub const TEST_CONTRACTS_TOML: &str = r#"
[[contract]]
tool = "create_ticket"
allowed_roles = ["oncall", "incident_commander"]
side_effects = "write"
sensitive = ["reporter_email"]
fixed_args = { queue = "SEC" }
arg_schema = { title = "string(1..120)", severity = "enum(low|medium|high|critical)", reporter_email = "string(3..254)?" }

[[contract]]
tool = "list_tickets"
allowed_roles = ["oncall", "incident_commander", "viewer"]
side_effects = "read"
arg_schema = {}

[[contract]]
tool = "list_firewall_blocks"
allowed_roles = ["incident_commander"]
side_effects = "read"
rate_limit = "2/min"
arg_schema = {}

[[contract]]
tool = "leaky_diagnostics"
description = "An upstream tool that echoes its credential: the gateway must withhold the result"
allowed_roles = ["oncall"]
side_effects = "read"
arg_schema = { fail = "bool?" }

[[contract]]
tool = "run_report"
allowed_roles = ["oncall"]
side_effects = "read"
arg_schema = { seconds = "0-10" }

[[contract]]
tool = "typed_lookup"
description = "Every argument type, served by list_tickets"
allowed_roles = ["oncall"]
environments = ["dev"]
side_effects = "read"
backend = { upstream = "demo", tool = "list_tickets" }
[contract.arg_schema]
net = { type = "cidr", min_prefix = 8 }
addr = "ip"
v4 = "ipv4"
v6 = "ipv6"
n = "1-10"
s = "string(1..8)"
e = "enum(a|b)"
r = "regex([a-z]{3}-[0-9]{2})"
b = "bool"
h = "hostname"
u = "uuid"
opt = "string?"
"#;

pub const SEED_CONTRACT: &str = r#"{
"tool": "create_firewall_block",
"allowed_roles": ["incident_commander"],
"arg_schema": {"ip": "cidr", "ttl_minutes": "1-240"},
"requires_approval": true
}"#;

pub fn valid_typed_args() -> Value {
    json!({
        "net": "10.0.0.0/8", "addr": "2001:db8::1", "v4": "192.0.2.1", "v6": "::1", "n": 5,
        "s": "abc", "e": "a", "r": "inc-42", "b": true, "h": "db-1.prod.example",
        "u": "67e55044-10b1-426f-9247-bb680e5fe0c8"
    })
}

#[derive(Default)]
pub struct Options {
    /// Replaces the `stage` environment's upstream block.
    pub stage_upstream: Option<String>,
    /// A JWKS URL for the `dev` development issuer instead of its file.
    pub dev_jwks_url: Option<String>,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keys, contracts and a config for `dev` and `stage`, each with the demo upstream as
    /// canary. `extra` is appended to the config.
    pub fn new(extra: &str) -> Self {
        Self::build(extra, &Options::default())
    }

    pub fn build(extra: &str, opts: &Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("contracts")).unwrap();
        std::fs::write(p.join("contracts/seed.json"), SEED_CONTRACT).unwrap();
        std::fs::write(p.join("contracts/tools.toml"), TEST_CONTRACTS_TOML).unwrap();
        let mut config = String::from("contracts = \"contracts/\"\n");
        for env in ENVS {
            for name in [format!("{env}-issuer"), format!("{env}-audit")] {
                let out = Command::new(bin())
                    .args(["keys", "generate", "--out"])
                    .arg(p.join("keys"))
                    .args(["--name", &name])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            let jwks = match (&opts.dev_jwks_url, env) {
                (Some(url), "dev") => url.clone(),
                _ => format!("keys/{env}-issuer.jwks.json"),
            };
            let upstream = match (&opts.stage_upstream, env) {
                (Some(block), "stage") => block.clone(),
                _ => format!(
                    "[[upstream]]\nname = \"demo\"\nenvironment = \"{env}\"\nbuiltin = \"demo\"\nargs = [\"--state\", {state:?}]\ntimeout = \"2s\"\nenv = {{ DEMO_API_TOKEN = \"upstream-secret-{env}-do-not-leak\" }}\n",
                    state = p.join("state").join(env)
                ),
            };
            let extra_issuer = if env == "dev" {
                format!(
                    "[[environment.identity]]\nissuer = \"{RSA_EC_ISSUER}\"\njwks = {:?}\n",
                    fixtures().join("test-rsa-ec.jwks.json")
                )
            } else {
                String::new()
            };
            config.push_str(&format!(
                r#"
[[environment]]
name = "{env}"
listen = "127.0.0.1:0"
public_url = "{aud}"
approver_roles = ["security_lead"]
allowed_origins = ["https://console.capgate.test"]
max_body_bytes = 65536

[[environment.identity]]
issuer = "{iss}"
jwks = "{jwks}"
mint_key = "keys/{env}-issuer.pem"
{extra_issuer}
[environment.audit]
store = "sqlite://data/{env}-audit.db"
signing_key = "keys/{env}-audit.pem"

{upstream}"#,
                aud = audience(env),
                iss = issuer(env),
            ));
        }
        config.push_str(extra);
        std::fs::write(p.join("capgate.toml"), config).unwrap();
        Fixture { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("capgate.toml")
    }

    /// Replaces the first `from` in the config (which must hold it) with `to`.
    pub fn rewrite(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        assert!(text.contains(from), "fixture has no `{from}`");
        std::fs::write(self.config(), text.replacen(from, to, 1)).unwrap();
    }

    /// Adds a `key = value` line to environment `env`'s table.
    pub fn set_in_env(&self, env: &str, line: &str) {
        let name = format!("name = \"{env}\"");
        self.rewrite(&name, &format!("{name}\n{line}"));
    }

    pub fn signing_key(&self, env: &str) -> SigningKey {
        let pem = std::fs::read_to_string(self.path().join(format!("keys/{env}-issuer.pem"))).unwrap();
        SigningKey::from_pkcs8_pem(&pem).unwrap()
    }

    pub fn kid(&self, env: &str) -> String {
        let jwks: Value =
            serde_json::from_str(&std::fs::read_to_string(self.path().join(format!("keys/{env}-issuer.jwks.json"))).unwrap()).unwrap();
        jwks["keys"][0]["kid"].as_str().unwrap().to_string()
    }

    pub fn claims(&self, env: &str, sub: &str, roles: &[&str]) -> Value {
        let n = now();
        json!({"iss": issuer(env), "aud": audience(env), "sub": sub, "roles": roles, "iat": n, "nbf": n, "exp": n + 600, "jti": format!("jti-{sub}-{n}")})
    }

    /// A valid EdDSA token of `env`'s development issuer.
    pub fn token(&self, env: &str, sub: &str, roles: &[&str]) -> String {
        self.sign(env, &self.claims(env, sub, roles))
    }

    pub fn sign(&self, env: &str, claims: &Value) -> String {
        sign_ed(&self.signing_key(env), &self.kid(env), claims)
    }

    /// Reads the canary: every call the environment's upstream received.
    pub fn calls(&self, env: &str) -> Vec<Value> {
        match std::fs::read_to_string(self.path().join("state").join(env).join("calls.jsonl")) {
            Ok(t) => t.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn audit_db(&self, env: &str) -> PathBuf {
        self.path().join(format!("data/{env}-audit.db"))
    }

    /// Every audit record of an environment, in order.
    /// The log once it has settled: a call's outcome record is committed with the batch
    /// after its (durable) allow record, so it may land just after the answer. Waits until
    /// every `allowed` decision has its outcome (`executed` / `backend_error`), at most 10 s
    /// (a store made unwritable mid-call never settles; the log is returned as it is).
    pub fn audit(&self, env: &str) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let recs = self.audit_now(env);
            let count = |codes: &[&str]| recs.iter().filter(|r| codes.iter().any(|c| r["reason_code"] == *c)).count();
            if count(&["allowed"]) == count(&["executed", "backend_error"]) || std::time::Instant::now() > deadline {
                return recs;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The records with `reason_code`, once there are at least `n` of them (or after 10 s):
    /// for refusals recorded after the client already saw them fail, such as a TLS handshake
    /// (the alert goes out before the gateway's record is written).
    pub fn audit_reason_code(&self, env: &str, reason_code: &str, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let recs: Vec<Value> = self
                .audit_now(env)
                .into_iter()
                .filter(|r| r["reason_code"] == reason_code)
                .collect();
            if recs.len() >= n || std::time::Instant::now() > deadline {
                return recs;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The log as it is this moment.
    pub fn audit_now(&self, env: &str) -> Vec<Value> {
        let conn = rusqlite::Connection::open(self.audit_db(env)).unwrap();
        let mut stmt = conn.prepare("SELECT record FROM audit ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
            .collect()
    }

    /// Runs `capgate audit …` with this fixture's config.
    /// Runs `capgate audit …`. `export` and `tail` print what is committed at that moment,
    /// so they run once the named environment's log has settled (see [`Fixture::audit`]);
    /// `verify` holds for any committed prefix and runs at once (a killed gateway's log never
    /// settles).
    pub fn audit_cli(&self, args: &[&str]) -> (i32, String, String) {
        let reads = matches!(args.first(), Some(&"export" | &"tail"));
        if let Some(env) = args.iter().position(|a| *a == "--env").and_then(|i| args.get(i + 1))
            && reads
        {
            self.audit(env);
        }
        let out = Command::new(bin())
            .arg("audit")
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn audit_for_trace(&self, env: &str, trace: &str) -> Vec<Value> {
        self.audit(env).into_iter().filter(|r| r["trace_id"] == trace).collect()
    }
}

/// `capgate check --offline` of a fixture whose contracts include `contract` (as
/// `contracts/bad.toml`): whether it passed, and what it printed.
pub fn check_with_contract(contract: &str) -> (bool, String) {
    let f = Fixture::new("");
    std::fs::write(f.path().join("contracts/bad.toml"), contract).unwrap();
    let out = Command::new(bin())
        .args(["check", "--offline", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn sign_ed(key: &SigningKey, kid: &str, claims: &Value) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()).unwrap()
}

pub fn sign_fixture(alg: Algorithm, claims: &Value) -> String {
    let (file, kid) = match alg {
        Algorithm::RS256 => ("test-rsa.pem", "test-rsa"),
        Algorithm::ES256 => ("test-ec.pem", "test-ec"),
        other => panic!("no fixture for {other:?}"),
    };
    let pem = std::fs::read(fixtures().join(file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with `alg: none` and no signature.
pub fn alg_none(kid: &str, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// HS256 "signed" with the bytes of a public key: the classic algorithm-confusion attack.
pub fn hs256_with(secret: &[u8], kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// Any child process of a test; killed on drop, so a failing test leaves nothing behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running gateway; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub urls: std::collections::HashMap<String, String>,
    /// Each environment's metrics listener (`telemetry.metrics_listen`), where it has one.
    pub metrics: std::collections::HashMap<String, String>,
}

impl Gateway {
    pub fn start(config: &Path, envs: &[&str]) -> Self {
        Self::start_with(config, envs, &[])
    }

    pub fn start_with(config: &Path, envs: &[&str], extra_args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(extra_args)
            .env("CAPGATE_LOG", "warn,rmcp=error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut urls = std::collections::HashMap::new();
        let mut metrics = std::collections::HashMap::new();
        while urls.len() < envs.len() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("gateway did not start; got {urls:?}"));
            // capgate: environment `dev` listening on http://127.0.0.1:PORT/mcp (audience …)
            if let Some(rest) = line.strip_prefix("capgate: environment `") {
                let (name, rest) = rest.split_once('`').unwrap();
                let url = rest
                    .split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    .unwrap();
                urls.insert(name.to_string(), url.to_string());
                if let Some(m) = rest.split_whitespace().find(|w| w.ends_with("/metrics")) {
                    metrics.insert(name.to_string(), m.to_string());
                }
            }
        }
        Gateway { child, urls, metrics }
    }

    /// Stops the gateway as an operator would (SIGTERM) and waits for it to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    pub fn url(&self, env: &str) -> &str {
        &self.urls[env]
    }

    pub fn base(&self, env: &str) -> String {
        self.url(env).trim_end_matches("/mcp").to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What came back from one HTTP request to `/mcp`.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn error_code(&self) -> Option<i64> {
        self.body["error"]["code"].as_i64()
    }
    pub fn trace(&self) -> String {
        self.header("x-capgate-trace-id").unwrap().to_string()
    }
}

/// A raw MCP client over streamable HTTP: every header and body is the test's to choose.
pub struct Mcp {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub session: Option<String>,
    next_id: i64,
}

fn parse_body(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return v;
    }
    // SSE: the last `data:` line that holds a JSON-RPC response.
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .rfind(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or(Value::Null)
}

impl Mcp {
    pub fn new(url: &str, token: Option<String>) -> Self {
        Self {
            http: http(),
            url: url.to_string(),
            token,
            session: None,
            next_id: 1,
        }
    }

    /// Opens an MCP session (initialize + initialized).
    pub async fn open(url: &str, token: &str) -> Self {
        Self::open_with(http(), url, token).await
    }

    /// Opens a session with a client of the test's making (TLS settings, certificates).
    pub async fn open_with(client: reqwest::Client, url: &str, token: &str) -> Self {
        let mut m = Self::new(url, Some(token.to_string()));
        m.http = client;
        let r = m
            .rpc(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "capgate-tests", "version": "1"}}),
            )
            .await;
        assert_eq!(r.status, 200, "initialize failed: {}", r.text);
        m.session = r.header("mcp-session-id").map(str::to_string);
        assert!(m.session.is_some(), "no session id");
        let n = m
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(), &[])
            .await;
        assert!(n.status == 202 || n.status == 200, "initialized: {}", n.status);
        m
    }

    pub async fn send(&self, body: String, headers: &[(&str, &str)]) -> Reply {
        self.try_send(body, headers).await.unwrap()
    }

    /// Like [`Self::send`], but a gateway that is gone is an `Err`, not a panic.
    pub async fn try_send(&self, body: String, headers: &[(&str, &str)]) -> Result<Reply, reqwest::Error> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        // The revision of the earlier tests, unless the test states one.
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("mcp-protocol-version")) {
            req = req.header("mcp-protocol-version", "2025-06-18");
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        Ok(Reply {
            status,
            headers,
            body: parse_body(&text),
            text,
        })
    }

    /// A call that may find the gateway gone (killed, restarting): `None` then.
    pub async fn try_call(&mut self, tool: &str, args: Value) -> Option<Reply> {
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        self.try_send(body.to_string(), &[]).await.ok()
    }

    pub async fn rpc(&mut self, method: &str, params: Value) -> Reply {
        self.next_id += 1;
        self.send(
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).to_string(),
            &[],
        )
        .await
    }

    pub async fn call(&mut self, tool: &str, args: Value) -> Reply {
        self.rpc("tools/call", json!({"name": tool, "arguments": args})).await
    }

    pub async fn tool_names(&mut self) -> Vec<String> {
        let r = self.rpc("tools/list", json!({})).await;
        let mut names: Vec<String> = r.body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

/// A prompt and a resource template under contracts, for the `dev` environment's demo
/// upstream (which serves both): the surface the interop clients exercise.
pub const SURFACE_CONTRACTS: &str = r#"
[[contract]]
prompt = "incident_summary"
allowed_roles = ["oncall"]
arg_schema = { incident = "regex(INC-[0-9]{1,6})", audience = "enum(engineers|executives)?" }

[[contract]]
resource = "runbook"
uri = "runbook://{service}/{page}"
allowed_roles = ["oncall"]
arg_schema = { service = "enum(db|web)", page = "string(1..40)" }
"#;

/// The records of one method with one reason code, in order.
pub fn records_of<'a>(records: &'a [Value], method: &str, code: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["method"] == method && r["reason_code"] == code)
        .collect()
}

/// Starts an upstream that prints `listening on URL` as its first line; the child and URL.
pub fn spawn_listening(cmd: &mut Command, what: &str) -> (ChildGuard, String) {
    let mut child = ChildGuard(cmd.stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{what}: {e}")));
    let line = BufReader::new(child.0.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{what} said: {line}"))
        .to_string();
    (child, url)
}

impl Fixture {
    /// A fixture whose `stage` environment fronts `upstream_block` alone, governed only by
    /// `contracts` (the usual ones name tools such an upstream does not have).
    pub fn with_only_contracts(upstream_block: String, contracts: &str) -> Self {
        let f = Fixture::build(
            "",
            &Options {
                stage_upstream: Some(upstream_block),
                ..Default::default()
            },
        );
        std::fs::remove_file(f.path().join("contracts/seed.json")).unwrap();
        std::fs::remove_file(f.path().join("contracts/tools.toml")).unwrap();
        std::fs::write(f.path().join("contracts/only.toml"), contracts).unwrap();
        f
    }
}
