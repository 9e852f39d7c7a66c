//! `capgate probe`: the seed's validation checklist, run against a live gateway. Fires the
//! denied paths (identity, authorization, arguments, approval bypass, and — when allowed —
//! store outages), proves each was refused, then reads the audit log and proves each
//! refusal was recorded with its forensic fields and that the chain verifies.
//!
//! INVARIANT: the probe only sends requests a sound gateway refuses. Every argument attack
//! also omits the contract's other required arguments and carries an unknown field, so even
//! a gateway with one broken check refuses it for another reason (and the probe reports the
//! broken check from the error's list of offending arguments). Any record of an execution
//! under one of the probe's trace IDs is a finding.

mod policies;
mod protocol;
pub(crate) mod report;
pub(crate) mod tabletop;
pub(crate) mod values;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ed25519_dalek::SigningKey;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use crate::config::{Config, Environment, JwksSource};
use crate::contract::Contract;
pub(crate) use report::{Check, Outcome, Report};

/// A field no contract may declare: its presence alone must make any call refused.
pub(crate) const MARKER: &str = "capgate_probe_marker";
const PROBE_SUB: &str = "capgate-probe";

pub(crate) struct Options {
    /// A token the operator supplies (required for production): the low-privilege probe
    /// identity. Without it, development tokens are minted from the config's `mint_key`.
    pub(crate) token: Option<String>,
    /// Lock the audit store to prove calls are refused while it is unwritable (never in
    /// production).
    pub(crate) simulate_outage: bool,
    /// Do not read the audit log (when the probe cannot reach the store's file).
    pub(crate) skip_audit: bool,
    pub(crate) show_progress: bool,
}

/// One HTTP answer, whatever its shape.
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    fn trace(&self) -> Option<String> {
        let h = self.header(crate::server::respond::TRACE_HEADER);
        if !h.is_empty() {
            return Some(h.to_string());
        }
        self.body
            .pointer("/error/data/trace_id")
            .or_else(|| self.body.pointer("/result/_meta/capgate~1trace_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
    fn rpc_error(&self) -> Option<(i64, String)> {
        let code = self.body.pointer("/error/code")?.as_i64()?;
        let reason = self.body.pointer("/error/data/reason_code").and_then(Value::as_str).unwrap_or("");
        Some((code, reason.to_string()))
    }
    fn error_arguments(&self) -> Vec<String> {
        self.body
            .pointer("/error/data/errors")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| e.get("argument")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
}

fn parse_body(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .rfind(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or(Value::Null)
}

pub(crate) struct Target {
    http: reqwest::Client,
    mcp: String,
    base: String,
}

impl Target {
    /// The gateway at `url` (its `/mcp` endpoint or its base).
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let url = url.trim_end_matches('/');
        let mcp = if url.ends_with("/mcp") {
            url.to_string()
        } else {
            format!("{url}/mcp")
        };
        let base = mcp.trim_end_matches("/mcp").to_string();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http, mcp, base })
    }

    async fn post(&self, token: Option<&str>, session: Option<&str>, body: String, query: Option<&str>) -> Result<Resp, String> {
        self.send(reqwest::Method::POST, token, session, &[], body, query).await
    }

    /// A request to `/mcp` with the headers a well-behaved client sends, `headers` put over
    /// them.
    async fn send(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        session: Option<&str>,
        headers: &[(&str, &str)],
        body: String,
        query: Option<&str>,
    ) -> Result<Resp, String> {
        let url = match query {
            Some(q) => format!("{}?{q}", self.mcp),
            None => self.mcp.clone(),
        };
        let mut map = HeaderMap::new();
        let defaults = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2025-06-18"),
            ("user-agent", "capgate-probe"),
        ];
        for (k, v) in defaults.iter().chain(headers) {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                map.insert(k, v);
            }
        }
        let mut req = self.http.request(method, url).headers(map).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        // The URL may carry the probe token (the query-string attack): never in a message.
        let r = req
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {}", self.mcp, e.without_url()))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        Ok(Resp {
            status,
            headers,
            body: parse_body(&text),
        })
    }

    async fn open(&self, token: &str) -> Result<String, String> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "capgate-probe", "version": env!("CARGO_PKG_VERSION")}}});
        let r = self.post(Some(token), None, init.to_string(), None).await?;
        let sid = r.header("mcp-session-id").to_string();
        if r.status != 200 || sid.is_empty() {
            return Err(format!("the probe identity could not open an MCP session (HTTP {})", r.status));
        }
        self.post(
            Some(token),
            Some(&sid),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
            None,
        )
        .await?;
        Ok(sid)
    }

    async fn rpc(&self, token: &str, session: &str, method: &str, params: Value) -> Result<Resp, String> {
        let body = json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params});
        self.post(Some(token), Some(session), body.to_string(), None).await
    }
}

/// Mints development tokens with the environment's `mint_key` (never for production).
pub(crate) struct Minter {
    key: SigningKey,
    kid: String,
    issuer: String,
    roles_claim: String,
    audience: String,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Minter {
    fn of(env: &Environment) -> Option<Self> {
        if env.production {
            return None;
        }
        let issuer = env.issuers.iter().find(|i| i.mint_key.is_some())?;
        let key = crate::keys::load_signing_key(issuer.mint_key.as_ref()?).ok()?;
        Some(Self {
            kid: crate::keys::kid_of(&key),
            key,
            issuer: issuer.issuer.clone(),
            roles_claim: issuer.roles_claim.clone(),
            audience: env.public_url.clone(),
        })
    }

    fn claims(&self, roles: &[String]) -> Map<String, Value> {
        let n = now();
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.issuer));
        c.insert("sub".into(), json!(PROBE_SUB));
        c.insert("aud".into(), json!(self.audience));
        c.insert("iat".into(), json!(n));
        c.insert("nbf".into(), json!(n));
        c.insert("exp".into(), json!(n + 600));
        c.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        c.insert(self.roles_claim.clone(), json!(roles));
        c
    }

    fn sign(&self, claims: Map<String, Value>) -> String {
        crate::keys::sign_jwt(&self.key, &self.kid, &Value::Object(claims)).unwrap_or_default()
    }

    fn token(&self, roles: &[String]) -> String {
        self.sign(self.claims(roles))
    }

    /// Signed with the trusted key under its kid, with `extra` in the JWS header: a token
    /// that only the header makes unacceptable.
    fn sign_with_header(&self, extra: &[(&str, Value)], claims: Map<String, Value>) -> String {
        use ed25519_dalek::Signer;
        let mut header = Map::new();
        header.insert("alg".into(), json!("EdDSA"));
        header.insert("typ".into(), json!("JWT"));
        header.insert("kid".into(), json!(self.kid));
        for (k, v) in extra {
            header.insert((*k).to_string(), v.clone());
        }
        let header = Value::Object(header);
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(Value::Object(claims).to_string().as_bytes())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The public key bytes and kid of the environment's first Ed25519 JWKS key (for the
/// HMAC-with-public-key confusion attack), when its JWKS is a file.
fn first_okp_key(env: &Environment) -> Option<(String, Vec<u8>)> {
    let JwksSource::File(path) = &env.issuers.first()?.jwks else {
        return None;
    };
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let key = doc
        .get("keys")?
        .as_array()?
        .iter()
        .find(|k| k.get("kty").and_then(Value::as_str) == Some("OKP"))?;
    let kid = key.get("kid")?.as_str()?.to_string();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key.get("x")?.as_str()?)
        .ok()?;
    Some((kid, x))
}

fn unsigned(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap_or_default()
}

/// What a denied request's audit record must carry.
#[derive(Clone, Copy)]
struct Forensics {
    authenticated: bool,
    tool: bool,
}

pub(crate) struct Probe<'a> {
    config: &'a Config,
    env: Arc<Environment>,
    target: Target,
    opts: Options,
    minter: Option<Minter>,
    report: Report,
    traces: Vec<(String, String, Forensics)>,
    bar: indicatif::ProgressBar,
}

impl<'a> Probe<'a> {
    pub(crate) fn new(config: &'a Config, env: Arc<Environment>, url: &str, opts: Options) -> Result<Self, String> {
        let target = Target::new(url)?;
        if env.production && opts.token.is_none() {
            return Err(format!(
                "environment `{}` is production: give the probe identity's token in CAPGATE_PROBE_TOKEN (tokens are never minted for production)",
                env.name
            ));
        }
        if env.production && opts.simulate_outage {
            return Err("--simulate-outage is refused for a production environment".into());
        }
        let minter = Minter::of(&env);
        if minter.is_none() && opts.token.is_none() {
            return Err(format!(
                "environment `{}` has no `mint_key`: give the probe identity's token in CAPGATE_PROBE_TOKEN",
                env.name
            ));
        }
        let bar = if opts.show_progress {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        Ok(Self {
            config,
            env,
            target,
            opts,
            minter,
            report: Report::default(),
            traces: Vec::new(),
            bar,
        })
    }

    fn record(&mut self, group: &'static str, name: String, outcome: Outcome, detail: String, trace: Option<String>) {
        self.bar.inc(1);
        self.bar.set_message(name.clone());
        self.report.checks.push(Check {
            group: group.to_string(),
            name,
            outcome,
            detail,
            trace,
        });
    }

    fn expect_refused(&mut self, r: &Resp, f: Forensics, what: &str) {
        if let Some(t) = r.trace() {
            self.traces.push((t, what.to_string(), f));
        }
    }

    /// The probe's own low-privilege identity: the supplied token, or one minted with no
    /// roles at all.
    fn probe_token(&self) -> String {
        match (&self.opts.token, &self.minter) {
            (Some(t), _) => t.clone(),
            (None, Some(m)) => m.token(&[]),
            (None, None) => String::new(),
        }
    }

    /// The roles of the probe identity: none when minted; the supplied token's otherwise
    /// (read, not verified: the gateway verifies it).
    fn probe_roles(&self) -> Vec<String> {
        let roles_claim = self.env.issuers.first().map(|i| i.roles_claim.as_str()).unwrap_or("roles");
        self.supplied_claims()
            .get(roles_claim)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// The claims of the supplied token, read, not verified (the gateway verifies it).
    fn supplied_claims(&self) -> Map<String, Value> {
        let Some(t) = &self.opts.token else { return Map::new() };
        t.split('.')
            .nth(1)
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// A token allowed to call `contract`: minted in development; otherwise the supplied
    /// token, when its roles allow it.
    fn token_for(&self, contract: &Contract) -> Option<String> {
        if let Some(m) = &self.minter {
            return Some(m.token(&contract.allowed_roles));
        }
        let t = self.opts.token.as_ref()?;
        contract.allows_any(&self.probe_roles()).then(|| t.clone())
    }

    pub(crate) async fn run(mut self) -> Result<Report, String> {
        // Tools here; prompts and resources have their own group below.
        let contracts: Vec<Arc<Contract>> = self
            .env
            .contracts
            .values()
            .filter(|c| c.kind == crate::contract::Kind::Tool)
            .cloned()
            .collect();
        let estimate: usize = 40
            + contracts
                .iter()
                .map(|c| 4 + c.args.values().map(|a| values::invalid(a).len()).sum::<usize>())
                .sum::<usize>();
        self.bar.set_length(estimate as u64);
        self.identity().await?;
        self.authorization().await?;
        self.protocol().await?;
        self.origins().await?;
        self.slow_clients().await;
        for c in &contracts {
            self.arguments(c).await?;
        }
        self.policies(&contracts).await?;
        self.surface().await?;
        self.approvals(&contracts).await?;
        if self.opts.simulate_outage {
            self.outage(&contracts).await?;
        }
        if !self.opts.skip_audit {
            self.audit().await;
        }
        self.bar.finish_and_clear();
        Ok(self.report)
    }

    async fn identity(&mut self) -> Result<(), String> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).to_string();
        let mut cases: Vec<(String, Option<String>, Option<&'static str>)> = vec![
            ("no token".into(), None, None),
            ("not a JWT".into(), Some("not-a-jwt".into()), None),
            ("three garbage segments".into(), Some("e30.e30.e30".into()), None),
        ];
        if let Some(m) = &self.minter {
            let tweak = |f: &dyn Fn(&mut Map<String, Value>)| {
                let mut c = m.claims(&[]);
                f(&mut c);
                m.sign(c)
            };
            cases.push((
                "expired".into(),
                Some(tweak(&|c| {
                    c.insert("exp".into(), json!(now() - 3600));
                })),
                None,
            ));
            cases.push((
                "not yet valid".into(),
                Some(tweak(&|c| {
                    c.insert("nbf".into(), json!(now() + 3600));
                })),
                None,
            ));
            cases.push((
                "wrong issuer".into(),
                Some(tweak(&|c| {
                    c.insert("iss".into(), json!("https://probe.invalid/issuer"));
                })),
                None,
            ));
            cases.push((
                "wrong audience".into(),
                Some(tweak(&|c| {
                    c.insert("aud".into(), json!("https://probe.invalid/mcp"));
                })),
                None,
            ));
            cases.push((
                "no expiry".into(),
                Some(tweak(&|c| {
                    c.remove("exp");
                })),
                None,
            ));
            let claims = Value::Object(m.claims(&[]));
            cases.push((
                "alg none".into(),
                Some(unsigned(&json!({"alg": "none", "typ": "JWT", "kid": m.kid}), &claims, "")),
                None,
            ));
            let stranger = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            cases.push((
                "unknown kid".into(),
                Some(crate::keys::sign_jwt(&stranger, "capgate-probe-unknown-kid", &claims).unwrap_or_default()),
                None,
            ));
            cases.push((
                "an unknown critical header extension (crit)".into(),
                Some(m.sign_with_header(&[("crit", json!(["urn:capgate-probe:unknown"]))], m.claims(&[]))),
                None,
            ));
            cases.push((
                "signed by another key under a trusted kid".into(),
                Some(crate::keys::sign_jwt(&stranger, &m.kid, &claims).unwrap_or_default()),
                None,
            ));
            if let Some((kid, public)) = first_okp_key(&self.env) {
                cases.push((
                    "HS256 with the public key as secret".into(),
                    Some(hs256(&public, &kid, &claims)),
                    None,
                ));
            }
            cases.push(("token in the query string".into(), None, Some("query")));
            for other in self.config.environments.iter().filter(|e| e.name != self.env.name) {
                if let Some(om) = Minter::of(other) {
                    cases.push((format!("token of environment `{}`", other.name), Some(om.token(&[])), None));
                }
            }
        } else {
            cases.push(("token in the query string".into(), None, Some("query")));
        }
        for (name, token, mode) in cases {
            let r = if mode == Some("query") {
                let t = self.probe_token();
                self.target
                    .post(None, None, init.clone(), Some(&format!("access_token={t}")))
                    .await?
            } else {
                self.target.post(token.as_deref(), None, init.clone(), None).await?
            };
            let challenge = r.header("www-authenticate").to_string();
            let ok = r.status == 401
                && challenge.contains("resource_metadata=")
                && (token.is_none() || mode.is_some() || challenge.contains("invalid_token"));
            let detail = format!("HTTP {}, WWW-Authenticate: {challenge}", r.status);
            self.expect_refused(
                &r,
                Forensics {
                    authenticated: false,
                    tool: false,
                },
                &name,
            );
            let trace = r.trace();
            self.record("identity", name, if ok { Outcome::Pass } else { Outcome::Finding }, detail, trace);
        }
        Ok(())
    }

    async fn authorization(&mut self) -> Result<(), String> {
        let token = self.probe_token();
        let sid = self.target.open(&token).await?;
        let listed = self.target.rpc(&token, &sid, "tools/list", json!({})).await?;
        let tools: Vec<String> = listed
            .body
            .pointer("/result/tools")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|t| t.get("name")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let roles = self.probe_roles();
        let visible_forbidden: Vec<&String> = tools
            .iter()
            .filter(|t| self.env.contracts.get(*t).is_none_or(|c| !c.allows_any(&roles)))
            .collect();
        let ok = visible_forbidden.is_empty();
        self.record(
            "authorization",
            "tools/list shows only tools the caller may call".into(),
            if ok { Outcome::Pass } else { Outcome::Finding },
            format!("listed: {tools:?}; not allowed for the probe identity: {visible_forbidden:?}"),
            listed.trace(),
        );
        // A tool that exists but is forbidden, and one that does not exist, answer alike.
        let forbidden = self
            .env
            .contracts
            .values()
            .find(|c| c.kind == crate::contract::Kind::Tool && !c.allows_any(&roles))
            .map(|c| c.tool.clone());
        if let Some(tool) = forbidden {
            let a = self
                .target
                .rpc(&token, &sid, "tools/call", json!({"name": tool, "arguments": {MARKER: true}}))
                .await?;
            let b = self
                .target
                .rpc(
                    &token,
                    &sid,
                    "tools/call",
                    json!({"name": "capgate_probe_no_such_tool", "arguments": {MARKER: true}}),
                )
                .await?;
            let f = Forensics {
                authenticated: true,
                tool: true,
            };
            self.expect_refused(&a, f, "forbidden tool");
            self.expect_refused(&b, f, "unknown tool");
            let norm = |r: &Resp, name: &str| {
                (
                    r.rpc_error(),
                    r.body
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .replace(name, "TOOL"),
                )
            };
            let (ea, eb) = (norm(&a, &tool), norm(&b, "capgate_probe_no_such_tool"));
            let ok = ea.0.is_some() && ea == eb;
            self.record(
                "authorization",
                format!("forbidden `{tool}` and an unknown tool answer alike"),
                if ok { Outcome::Pass } else { Outcome::Finding },
                format!("forbidden: {ea:?}; unknown: {eb:?}"),
                a.trace(),
            );
        }
        Ok(())
    }

    /// Prompts and resources: an unknown prompt and an uncontracted URI are refused like a
    /// forbidden one; for each one the probe identity may use, every argument (a URI
    /// variable for a template) with values just outside its type is refused naming it.
    async fn surface(&mut self) -> Result<(), String> {
        use crate::contract::Kind;
        let token = self.probe_token();
        let sid = self.target.open(&token).await?;
        let f = Forensics {
            authenticated: true,
            tool: true,
        };
        for (method, params, what) in [
            ("prompts/get", json!({"name": "capgate-probe-unknown"}), "an unknown prompt"),
            (
                "resources/read",
                json!({"uri": "capgate-probe://unknown"}),
                "an unknown resource URI",
            ),
            (
                "resources/subscribe",
                json!({"uri": "capgate-probe://unknown"}),
                "a subscription to an unknown resource URI",
            ),
            (
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "capgate-probe-unknown"}, "argument": {"name": "a", "value": ""}}),
                "a completion for an unknown prompt",
            ),
        ] {
            let r = self.target.rpc(&token, &sid, method, params).await?;
            let ok = r.rpc_error().is_some_and(|(c, m)| c == -32602 && m == "tool_not_available");
            self.expect_refused(&r, f, what);
            let trace = r.trace();
            self.record(
                "prompts and resources",
                format!("{what} is refused like a forbidden one"),
                if ok { Outcome::Pass } else { Outcome::Finding },
                format!("{:?}", r.rpc_error()),
                trace,
            );
        }
        let contracts: Vec<Arc<Contract>> = self.env.contracts.values().filter(|c| c.kind != Kind::Tool).cloned().collect();
        for c in contracts {
            if !c.allows_any(&self.probe_roles()) {
                // Forbidden to the probe identity: it must answer like an unknown one, read
                // or subscribed to alike.
                let asks: Vec<(&str, Value)> = match (c.kind, &c.uri) {
                    (Kind::Resource, Some(u)) => {
                        let values: Map<String, Value> = c
                            .args
                            .iter()
                            .filter_map(|(n, a)| values::valid(a).map(|v| (n.clone(), v)))
                            .collect();
                        let Some(uri) = u.expand(&values) else { continue };
                        vec![
                            ("resources/read", json!({"uri": uri})),
                            ("resources/subscribe", json!({"uri": uri})),
                        ]
                    }
                    _ => vec![("prompts/get", json!({"name": c.tool}))],
                };
                for (method, params) in asks {
                    let r = self.target.rpc(&self.probe_token(), &sid, method, params).await?;
                    let ok = r.rpc_error().is_some_and(|(code, m)| code == -32602 && m == "tool_not_available");
                    self.expect_refused(&r, f, "forbidden prompt or resource");
                    let trace = r.trace();
                    self.record(
                        "prompts and resources",
                        format!(
                            "{} `{}` (not for the probe identity) answers `{method}` like an unknown one",
                            c.kind.noun(),
                            c.tool
                        ),
                        if ok { Outcome::Pass } else { Outcome::Finding },
                        format!("{:?}", r.rpc_error()),
                        trace,
                    );
                }
            }
            let Some(token) = self.token_for(&c) else { continue };
            let sid = self.target.open(&token).await?;
            for (name, spec) in &c.args {
                // Strings only: that is all a prompt argument or a URI can carry.
                for (label, bad) in values::invalid(spec).into_iter().filter(|(_, v)| v.is_string()) {
                    let mut args: Map<String, Value> = c
                        .args
                        .iter()
                        .filter_map(|(n, a)| values::valid(a).map(|v| (n.clone(), v)))
                        .collect();
                    args.insert(name.clone(), bad);
                    let (method, params) = match (c.kind, &c.uri) {
                        (Kind::Resource, Some(u)) => {
                            let Some(uri) = u.expand(&args) else { continue };
                            ("resources/read", json!({"uri": uri}))
                        }
                        _ => ("prompts/get", json!({"name": c.tool, "arguments": args})),
                    };
                    let r = self.target.rpc(&token, &sid, method, params).await?;
                    let named = r.error_arguments();
                    // A value that turns a URI into one the template does not match at all
                    // is refused as not available: refused either way.
                    let ok = r.rpc_error().is_some_and(|(code, m)| {
                        code == -32602 && (named.contains(name) || (c.kind == Kind::Resource && m == "tool_not_available"))
                    });
                    self.expect_refused(&r, f, label);
                    let trace = r.trace();
                    self.record(
                        "prompts and resources",
                        format!("{} `{}`.`{name}`: {label}", c.kind.noun(), c.tool),
                        if ok { Outcome::Pass } else { Outcome::Finding },
                        if ok {
                            String::new()
                        } else {
                            format!("not refused naming `{name}`: {:?}", r.rpc_error())
                        },
                        trace,
                    );
                }
            }
        }
        Ok(())
    }

    async fn arguments(&mut self, contract: &Contract) -> Result<(), String> {
        let Some(token) = self.token_for(contract) else {
            self.record(
                "arguments",
                format!("`{}`", contract.tool),
                Outcome::Skipped,
                "the probe identity may not call this tool".into(),
                None,
            );
            return Ok(());
        };
        let sid = self.target.open(&token).await?;
        let tool = contract.tool.clone();
        let f = Forensics {
            authenticated: true,
            tool: true,
        };
        let required: Vec<String> = contract.args.iter().filter(|(_, a)| !a.optional).map(|(n, _)| n.clone()).collect();
        // Unknown field alone (plus every required argument missing).
        let r = self
            .target
            .rpc(&token, &sid, "tools/call", json!({"name": tool, "arguments": {MARKER: true}}))
            .await?;
        let named = r.error_arguments();
        let ok = r.rpc_error().is_some_and(|(c, _)| c == -32602)
            && named.iter().any(|n| n == MARKER)
            && required.iter().all(|n| named.contains(n));
        self.expect_refused(&r, f, "unknown and missing arguments");
        let trace = r.trace();
        self.record(
            "arguments",
            format!("`{tool}`: unknown field and missing required arguments"),
            if ok { Outcome::Pass } else { Outcome::Finding },
            format!("refusal names {named:?}"),
            trace,
        );
        for name in contract.fixed_args.keys() {
            let r = self
                .target
                .rpc(
                    &token,
                    &sid,
                    "tools/call",
                    json!({"name": tool, "arguments": {name: "capgate-probe", MARKER: true}}),
                )
                .await?;
            let named = r.error_arguments();
            let ok = r.rpc_error().is_some_and(|(c, _)| c == -32602) && named.contains(name);
            self.expect_refused(&r, f, "fixed argument set by caller");
            let trace = r.trace();
            self.record(
                "arguments",
                format!("`{tool}`: caller sets the gateway's fixed argument `{name}`"),
                if ok { Outcome::Pass } else { Outcome::Finding },
                format!("refusal names {named:?}"),
                trace,
            );
        }
        for (name, spec) in &contract.args {
            for (label, bad) in values::invalid(spec) {
                let args = json!({name.as_str(): bad, MARKER: true});
                let r = self
                    .target
                    .rpc(&token, &sid, "tools/call", json!({"name": tool, "arguments": args}))
                    .await?;
                let named = r.error_arguments();
                let ok = r.rpc_error().is_some_and(|(c, _)| c == -32602) && named.contains(name);
                self.expect_refused(&r, f, label);
                let trace = r.trace();
                self.record(
                    "arguments",
                    format!("`{tool}`.`{name}`: {label}"),
                    if ok { Outcome::Pass } else { Outcome::Finding },
                    if ok {
                        String::new()
                    } else {
                        format!("the refusal does not name `{name}` (it names {named:?}): this bound is not enforced")
                    },
                    trace,
                );
            }
        }
        // A duplicated key in the request body: the gateway must not pick one of the two.
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":{t},"arguments":{{"{MARKER}":true}},"arguments":{{"{MARKER}":true}}}}}}"#,
            t = Value::String(tool.clone())
        );
        let r = self.target.post(Some(&token), Some(&sid), body, None).await?;
        let ok = r.rpc_error().is_some_and(|(c, _)| c == -32602);
        self.expect_refused(
            &r,
            Forensics {
                authenticated: true,
                tool: false,
            },
            "duplicate key",
        );
        let trace = r.trace();
        self.record(
            "arguments",
            format!("`{tool}`: duplicate key in the request body"),
            if ok { Outcome::Pass } else { Outcome::Finding },
            format!("{:?}", r.rpc_error()),
            trace,
        );
        Ok(())
    }

    /// Valid arguments for a contract, when the probe can make them.
    fn valid_args(contract: &Contract) -> Option<Map<String, Value>> {
        let mut m = Map::new();
        for (name, spec) in contract.args.iter().filter(|(_, a)| !a.optional) {
            m.insert(name.clone(), values::valid(spec)?);
        }
        Some(m)
    }

    async fn approvals(&mut self, contracts: &[Arc<Contract>]) -> Result<(), String> {
        for c in contracts.iter().filter(|c| c.requires_approval) {
            let approver_roles = c.approver_roles.clone().unwrap_or_else(|| self.env.approver_roles.clone());
            let (Some(m), Some(args)) = (&self.minter, Self::valid_args(c)) else {
                self.record(
                    "approvals",
                    format!("`{}`: bypass attempts", c.tool),
                    Outcome::Skipped,
                    "needs a development mint_key and arguments the probe can generate".into(),
                    None,
                );
                continue;
            };
            // The probe requests and also holds an approver role: it still may not approve.
            let mut roles = c.allowed_roles.clone();
            roles.extend(approver_roles.iter().cloned());
            let token = m.token(&roles);
            let nobody_token = m.token(&[]);
            let approver_token = m.token(&approver_roles);
            let sid = self.target.open(&token).await?;
            let r = self
                .target
                .rpc(&token, &sid, "tools/call", json!({"name": c.tool, "arguments": args}))
                .await?;
            let status = r
                .body
                .pointer("/result/structuredContent/status")
                .and_then(Value::as_str)
                .unwrap_or("");
            let id = r
                .body
                .pointer("/result/structuredContent/approval_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let trace = r.trace();
            let pending = status == "pending" && !id.is_empty();
            self.record(
                "approvals",
                format!("`{}`: answers pending and does not run", c.tool),
                if pending { Outcome::Pass } else { Outcome::Finding },
                format!("status `{status}`"),
                trace.clone(),
            );
            if let Some(t) = &trace {
                self.traces.push((
                    t.clone(),
                    "approval request".into(),
                    Forensics {
                        authenticated: true,
                        tool: true,
                    },
                ));
            }
            if !pending {
                continue;
            }
            let (http, base) = (self.target.http.clone(), self.target.base.clone());
            let decide = |tok: String, id: String| {
                let http = http.clone();
                let url = format!("{base}/api/approvals/{id}/approve");
                async move {
                    http.post(url)
                        .bearer_auth(tok)
                        .header("content-type", "application/json")
                        .body(r#"{"reason":"capgate probe: bypass attempt"}"#)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| e.to_string())
                }
            };
            let own = decide(token.clone(), id.clone()).await?;
            self.record(
                "approvals",
                format!("`{}`: the requester approving their own request", c.tool),
                if own == 403 { Outcome::Pass } else { Outcome::Finding },
                format!("HTTP {own}"),
                None,
            );
            let nobody = decide(nobody_token, id.clone()).await?;
            self.record(
                "approvals",
                format!("`{}`: a non-approver approving", c.tool),
                if nobody == 403 { Outcome::Pass } else { Outcome::Finding },
                format!("HTTP {nobody}"),
                None,
            );
            let unknown = decide(approver_token, uuid::Uuid::new_v4().to_string()).await?;
            self.record(
                "approvals",
                format!("`{}`: approving an id that was never issued", c.tool),
                if unknown == 404 { Outcome::Pass } else { Outcome::Finding },
                format!("HTTP {unknown}"),
                None,
            );
            // Replaying the call is not a release: it is still pending, with the same id.
            let again = self
                .target
                .rpc(&token, &sid, "tools/call", json!({"name": c.tool, "arguments": args}))
                .await?;
            let still = again.body.pointer("/result/structuredContent/status").and_then(Value::as_str) == Some("pending");
            self.record(
                "approvals",
                format!("`{}`: replaying the call without a decision", c.tool),
                if still { Outcome::Pass } else { Outcome::Finding },
                format!(
                    "{}",
                    again.body.pointer("/result/structuredContent").cloned().unwrap_or(Value::Null)
                ),
                again.trace(),
            );
        }
        Ok(())
    }

    async fn outage(&mut self, contracts: &[Arc<Contract>]) -> Result<(), String> {
        let lock = crate::audit::lock(&self.env.audit_store).map_err(|e| format!("cannot simulate an outage: {e}"))?;
        let unauth = self.target.post(None, None, "{}".into(), None).await;
        let approval_call = match (&self.minter, contracts.iter().find(|c| c.requires_approval)) {
            (Some(m), Some(c)) => match Self::valid_args(c) {
                Some(args) => {
                    let token = m.token(&c.allowed_roles);
                    // The session is opened before the lock would matter: initialize writes nothing.
                    match self.target.open(&token).await {
                        Ok(sid) => Some(
                            self.target
                                .rpc(&token, &sid, "tools/call", json!({"name": c.tool, "arguments": args}))
                                .await,
                        ),
                        Err(e) => Some(Err(e)),
                    }
                }
                None => None,
            },
            _ => None,
        };
        drop(lock);
        match unauth {
            Ok(r) => self.record(
                "fallback",
                "store unwritable: an unauthenticated request".into(),
                if r.status == 503 { Outcome::Pass } else { Outcome::Finding },
                format!("HTTP {} (a refusal that cannot be recorded must be 503)", r.status),
                None,
            ),
            Err(e) => return Err(e),
        }
        if let Some(r) = approval_call {
            let r = r?;
            let ok = r
                .rpc_error()
                .is_some_and(|(c, reason)| c == -32003 && reason == "audit_unavailable");
            self.record(
                "fallback",
                "store unwritable: a call needing approval".into(),
                if ok { Outcome::Pass } else { Outcome::Finding },
                format!("{:?}", r.rpc_error()),
                None,
            );
        }
        Ok(())
    }

    /// Every refusal has a record with its forensic fields; nothing of the probe's ran; the
    /// chain and its checkpoints verify.
    async fn audit(&mut self) {
        let store = match crate::audit::open_reader(&self.env.audit_store, &self.env.name) {
            Ok(s) => s,
            Err(e) => {
                self.record("audit", "read the audit log".into(), Outcome::Finding, e.to_string(), None);
                return;
            }
        };
        let rows = match store.records(0).await {
            Ok(r) => r,
            Err(e) => {
                self.record("audit", "read the audit log".into(), Outcome::Finding, e.to_string(), None);
                return;
            }
        };
        let mut by_trace: std::collections::HashMap<String, Vec<Value>> = std::collections::HashMap::new();
        for row in rows {
            if let Ok(v) = serde_json::from_str::<Value>(&row.record) {
                let t = v.get("trace_id").and_then(Value::as_str).unwrap_or("").to_string();
                by_trace.entry(t).or_default().push(v);
            }
        }
        let traces = std::mem::take(&mut self.traces);
        let mut missing = Vec::new();
        let mut executed = Vec::new();
        for (trace, what, f) in &traces {
            let recs = by_trace.get(trace).cloned().unwrap_or_default();
            if recs.iter().any(|r| r["reason_code"] == "executed" || r["reason_code"] == "allowed") {
                executed.push(format!("{what} (trace {trace})"));
            }
            let complete = recs.iter().any(|r| {
                let s = |p: &str| r.pointer(p).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
                (r["decision"] == "deny" || r["decision"] == "pending")
                    && s("/ts")
                    && r["env"] == self.env.name.as_str()
                    && s("/reason_code")
                    && s("/reason")
                    && s("/client/addr")
                    && (!f.authenticated || (s("/principal/sub") && s("/principal/iss")))
                    && (!f.tool || (s("/tool") && s("/args_digest")))
            });
            if !complete {
                missing.push(format!("{what} (trace {trace})"));
            }
        }
        self.record(
            "audit",
            format!("{} refused requests each have a complete record", traces.len()),
            if missing.is_empty() { Outcome::Pass } else { Outcome::Finding },
            if missing.is_empty() {
                String::new()
            } else {
                format!("incomplete or missing: {}", missing.join("; "))
            },
            None,
        );
        self.record(
            "audit",
            "no tool executed on a denied path".into(),
            if executed.is_empty() { Outcome::Pass } else { Outcome::Finding },
            executed.join("; "),
            None,
        );
        let mut keys = Vec::new();
        let mut row_key = None;
        if let Ok(k) = crate::keys::load_signing_key(&self.env.audit_signing_key) {
            keys.push(k.verifying_key());
            row_key = Some(crate::audit::approval::RowKey::derive(&k));
        }
        for p in &self.env.audit_previous_keys {
            if let Ok(k) = crate::keys::load_public_key(p) {
                keys.push(k);
            }
        }
        let external: Option<PathBuf> = self.env.checkpoint_file.clone().filter(|p| p.exists());
        match crate::audit::verify::verify(store.as_ref(), &self.env.name, &keys, external.as_deref(), row_key.as_ref()).await {
            Ok(rep) if rep.first_problem.is_none() => self.record(
                "audit",
                "the chain and its checkpoints verify".into(),
                Outcome::Pass,
                format!("{} records", rep.records),
                None,
            ),
            Ok(rep) => self.record(
                "audit",
                "the chain and its checkpoints verify".into(),
                Outcome::Finding,
                rep.first_problem.unwrap_or_default(),
                None,
            ),
            Err(e) => self.record("audit", "the chain and its checkpoints verify".into(), Outcome::Finding, e, None),
        }
    }
}
