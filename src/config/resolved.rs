//! The validated configuration: paths resolved against the config file's folder, credentials
//! read into `Secret`s, contracts compiled and bound to environments. Building it either
//! succeeds whole or lists every problem found; nothing half-checked is ever served.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::contract::{self, Contract};
use crate::secret::Secret;

use super::raw::{RawConfig, RawCredential, RawEnvironment, RawUpstream};

pub(crate) const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Authentication failures per source address before refusals are held back (`server::budget`).
pub(crate) const DEFAULT_AUTH_FAILURE_LIMIT: &str = "50/s";
pub(crate) const DEFAULT_MAX_SESSIONS_PER_IDENTITY: usize = 256;
/// Sessions cost ~120 KiB each: 4,000 opened with this total left the gateway at 150–155 MiB
/// resident (277 MiB with 2,048), whatever the number of identities.
pub(crate) const DEFAULT_MAX_SESSIONS: usize = 1024;
/// How long a client may take to send a request's header, and its body.
pub(crate) const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 256;
pub(crate) const DEFAULT_MAX_OPEN_APPROVALS: usize = 20;
pub(crate) const DEFAULT_PIN_CHECK: Duration = Duration::from_secs(60);
/// rmcp's own default for an idle session, kept now that the gateway closes them itself.
pub(crate) const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(300);

pub(crate) use super::store::StoreLocation;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Issuer {
    pub(crate) issuer: String,
    pub(crate) jwks: JwksSource,
    pub(crate) roles_claim: String,
    pub(crate) mint_key: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct Environment {
    pub(crate) name: String,
    pub(crate) production: bool,
    pub(crate) listen: String,
    pub(crate) public_url: String,
    pub(crate) approver_roles: Vec<String>,
    /// Read the audit explorer and the contracts (read-only), as approvers also may.
    pub(crate) auditor_roles: Vec<String>,
    pub(crate) issuers: Vec<Issuer>,
    pub(crate) audit_store: StoreLocation,
    pub(crate) audit_signing_key: PathBuf,
    /// Public halves of retired audit signing keys (rotation).
    pub(crate) audit_previous_keys: Vec<PathBuf>,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) checkpoint_file: Option<PathBuf>,
    pub(crate) checkpoint_command: Option<Vec<String>>,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) max_body_bytes: usize,
    /// `None`: refusals are never held back (see `server::budget`).
    pub(crate) auth_failure_limit: Option<crate::contract::RateLimit>,
    /// How long an MCP session may go unused before the gateway closes it.
    pub(crate) session_idle_timeout: Duration,
    /// Open MCP sessions per identity (issuer + subject) before the least recently used one
    /// is closed: each costs ~100 KiB, and a client that never closes them must not exhaust
    /// the gateway's memory.
    pub(crate) max_sessions_per_identity: usize,
    /// Open MCP sessions in the environment in all: the per-identity cap alone bounds memory
    /// per identity, and the number of identities is the identity provider's.
    pub(crate) max_sessions: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) max_connections_per_source: usize,
    pub(crate) max_open_approvals_per_requester: usize,
    pub(crate) pin_check_interval: Duration,
    pub(crate) tls: Option<Tls>,
    /// `[environment.telemetry] metrics_listen`: `/metrics` is served there, and not on
    /// `listen`.
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// `[environment.telemetry] otlp_endpoint` and its settings: traces are exported there.
    pub(crate) otlp: Option<crate::telemetry::OtlpSettings>,
    /// Contracts that apply to this environment, by tool name.
    pub(crate) contracts: BTreeMap<String, Arc<Contract>>,
    /// Its Cedar policies, validated against its contracts' schema; `None`: roles alone.
    pub(crate) policies: Option<Arc<crate::policy::cedar::CedarPolicies>>,
    /// The settings a reload cannot change, each as the digest of what the file says (see
    /// [`RELOADABLE`]): a reload whose file differs in any is refused, naming them.
    pub(crate) restart: BTreeMap<String, String>,
}

/// The keys of an `[[environment]]` a reload applies, besides the contracts: what decides a
/// call. Everything else (who is trusted, where records go, what is listened on, the
/// upstreams) is read once, at start.
pub(crate) const RELOADABLE: &[&str] = &["policies", "policy_utc_offset", "roles", "approver_roles", "auditor_roles"];

/// What a reload may not change for each environment named in a config file's text: every
/// key of its table but [`RELOADABLE`], each `[[upstream]]` of it, and the pins file's path.
fn restart_settings(text: &str) -> HashMap<String, BTreeMap<String, String>> {
    let digest = |v: &toml::Value| crate::canonical::sha256_hex(v.to_string().as_bytes());
    let Ok(table) = text.parse::<toml::Table>() else {
        return HashMap::new();
    };
    let tables = |key: &str| -> Vec<toml::Table> {
        table
            .get(key)
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    };
    let upstreams = tables("upstream");
    let mut out = HashMap::new();
    for env in tables("environment") {
        let Some(name) = env.get("name").and_then(toml::Value::as_str).map(str::to_string) else {
            continue;
        };
        let mut fixed: BTreeMap<String, String> = env
            .iter()
            .filter(|(k, _)| !RELOADABLE.contains(&k.as_str()))
            .map(|(k, v)| (format!("`{k}`"), digest(v)))
            .collect();
        for u in upstreams
            .iter()
            .filter(|u| u.get("environment").and_then(toml::Value::as_str) == Some(&name))
        {
            let id = u.get("name").and_then(toml::Value::as_str).unwrap_or_default();
            fixed.insert(format!("upstream `{id}`"), digest(&toml::Value::Table(u.clone())));
        }
        if let Some(p) = table.get("pins") {
            fixed.insert("`pins`".into(), digest(p));
        }
        out.insert(name, fixed);
    }
    out
}

#[derive(Debug, Clone)]
pub(crate) struct Tls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
    pub(crate) require_bound_tokens: bool,
}

impl Environment {
    /// The URL of this environment's RFC 9728 metadata document.
    pub(crate) fn resource_metadata_url(&self) -> String {
        let base = origin_of(&self.public_url).unwrap_or_else(|| self.public_url.clone());
        format!("{base}/.well-known/oauth-protected-resource")
    }
}

/// `scheme://host[:port]` of a URL.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{host}"))
}

pub(crate) fn host_of(url: &str) -> Option<String> {
    let origin = origin_of(url)?;
    let authority = origin.split_once("://")?.1;
    Some(authority.to_string())
}

pub(crate) enum UpstreamTarget {
    Command { program: String, args: Vec<String> },
    Url(String),
    Builtin { name: String, args: Vec<String> },
}

impl UpstreamTarget {
    /// What the upstream is, for comparing two upstreams.
    pub(crate) fn identity(&self) -> String {
        match self {
            UpstreamTarget::Command { program, args } => format!("command:{program} {}", args.join(" ")),
            UpstreamTarget::Url(u) => format!("url:{u}"),
            UpstreamTarget::Builtin { name, args } => format!("builtin:{name} {}", args.join(" ")),
        }
    }
}

pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) environment: String,
    pub(crate) target: UpstreamTarget,
    pub(crate) env: Vec<(String, Secret<String>)>,
    pub(crate) headers: Vec<(String, Secret<String>)>,
    pub(crate) timeout: Duration,
    /// Identity of the credentials, for the cross-environment check without keeping the
    /// values around: SHA-256 of each value.
    pub(crate) credential_digests: Vec<String>,
}

pub(crate) struct Config {
    pub(crate) environments: Vec<Arc<Environment>>,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    /// Where the pins of upstream tool definitions are kept (`pins.rs`).
    pub(crate) pins: PathBuf,
}

impl Config {
    pub(crate) fn environment(&self, name: &str) -> Option<&Arc<Environment>> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The upstream a contract's calls go to, as policies see it (`resource`), without
    /// connecting: the one its `backend` names, else the environment's first.
    pub(crate) fn upstream_name_of(&self, env: &str, contract: &Contract) -> String {
        contract
            .backend
            .as_ref()
            .map(|b| b.upstream.clone())
            .or_else(|| self.upstreams_of(env).next().map(|u| u.name.clone()))
            .unwrap_or_default()
    }

    pub(crate) fn upstreams_of<'a>(&'a self, env: &'a str) -> impl Iterator<Item = &'a Arc<Upstream>> + 'a {
        self.upstreams.iter().filter(move |u| u.environment == env)
    }
}

/// One thing wrong with a configuration: where, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Ctx<'a> {
    file: &'a str,
    base: &'a Path,
    problems: Vec<Problem>,
}

impl Ctx<'_> {
    fn push(&mut self, at: &str, msg: impl std::fmt::Display) {
        self.problems.push(Problem(format!("{}: {at}: {msg}", self.file)));
    }
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }
}

pub(crate) fn load(path: &Path) -> Result<Config, Vec<Problem>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![Problem(format!("{file}: cannot read: {e}"))])?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| line_of(&text, s.start))
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        vec![Problem(format!("{file}{at}: {}", e.message()))]
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ctx = Ctx {
        file: &file,
        base: &base,
        problems: Vec::new(),
    };
    let config = resolve(raw, restart_settings(&text), &mut ctx);
    if ctx.problems.is_empty() { Ok(config) } else { Err(ctx.problems) }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn resolve(raw: RawConfig, mut restart: HashMap<String, BTreeMap<String, String>>, ctx: &mut Ctx<'_>) -> Config {
    if raw.environment.is_empty() {
        ctx.push(
            "[[environment]]",
            "no environment is defined: add one with `name`, `listen`, `public_url`, `[environment.identity]` and `[environment.audit]`",
        );
    }
    let contracts: Vec<Arc<Contract>> = match &raw.contracts {
        None => {
            ctx.push(
                "contracts",
                "no contracts folder: write `contracts = \"contracts/\"`; without contracts no tool is exposed",
            );
            Vec::new()
        }
        Some(dir) => match contract::load_dir(&ctx.path(dir)) {
            Ok(c) => c.into_iter().map(Arc::new).collect(),
            Err(e) => {
                ctx.problems.push(Problem(e.to_string()));
                Vec::new()
            }
        },
    };
    let env_names: Vec<String> = raw.environment.iter().map(|e| e.name.clone()).collect();
    let mut environments = Vec::new();
    for env in raw.environment {
        if let Some(mut e) = resolve_env(env, &contracts, ctx) {
            e.restart = restart.remove(&e.name).unwrap_or_default();
            environments.push(Arc::new(e));
        }
    }
    for c in &contracts {
        for e in c.environments.iter().flatten() {
            if !env_names.contains(e) {
                ctx.push(
                    &format!("{} ({} `{}`)", c.source, c.kind.noun(), c.tool),
                    format!("`environments` names `{e}`, which is not defined"),
                );
            }
        }
        if let Some(b) = &c.backend
            && !raw.upstream.iter().any(|u| u.name == b.upstream)
        {
            ctx.push(
                &format!("{} ({} `{}`)", c.source, c.kind.noun(), c.tool),
                format!("`backend.upstream = \"{}\"` names no `[[upstream]]`", b.upstream),
            );
        }
    }
    let mut upstreams = Vec::new();
    for u in raw.upstream {
        if !env_names.contains(&u.environment) {
            ctx.push(
                &format!("upstream `{}`", u.name),
                format!("`environment = \"{}\"` is not defined", u.environment),
            );
        }
        if let Some(u) = resolve_upstream(u, ctx) {
            upstreams.push(Arc::new(u));
        }
    }
    cross_environment_checks(&environments, &upstreams, ctx);
    let pins = ctx.path(raw.pins.as_deref().unwrap_or("capgate.pins.json"));
    Config {
        environments,
        upstreams,
        pins,
    }
}

fn resolve_env(env: RawEnvironment, contracts: &[Arc<Contract>], ctx: &mut Ctx<'_>) -> Option<Environment> {
    let at = format!("environment `{}`", env.name);
    let before = ctx.problems.len();
    if env.name.is_empty() || !env.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        ctx.push(&at, "`name` must be letters, digits, `-` or `_`");
    }
    if env.listen.parse::<std::net::SocketAddr>().is_err() {
        ctx.push(
            &at,
            format!("`listen = \"{}\"` is not an address such as `127.0.0.1:8443`", env.listen),
        );
    }
    if origin_of(&env.public_url).is_none() || !(env.public_url.starts_with("https://") || env.public_url.starts_with("http://")) {
        ctx.push(
            &at,
            format!(
                "`public_url = \"{}\"` must be an http(s) URL: it is the audience tokens must carry",
                env.public_url
            ),
        );
    } else if env.production && !env.public_url.starts_with("https://") {
        ctx.push(&at, "a production environment's `public_url` must be https");
    }
    let mut issuers = Vec::new();
    for (i, id) in env.identity.into_vec().into_iter().enumerate() {
        let iat = format!("{at}: identity[{i}]");
        if id.issuer.trim().is_empty() {
            ctx.push(&iat, "`issuer` is empty");
        }
        let jwks = if id.jwks.starts_with("https://") || id.jwks.starts_with("http://") {
            if env.production && id.jwks.starts_with("http://") {
                ctx.push(&iat, "a production environment must fetch its JWKS over https");
            }
            JwksSource::Url(id.jwks.clone())
        } else {
            let p = ctx.path(&id.jwks);
            if !p.is_file() {
                ctx.push(&iat, format!("`jwks = \"{}\"`: no such file", id.jwks));
            }
            JwksSource::File(p)
        };
        if env.production && id.mint_key.is_some() {
            ctx.push(
                &iat,
                "`mint_key` is set in a production environment: token minting is for development only; remove it",
            );
        }
        issuers.push(Issuer {
            issuer: id.issuer,
            jwks,
            roles_claim: id.roles_claim.unwrap_or_else(|| "roles".to_string()),
            mint_key: id.mint_key.map(|k| ctx.path(&k)),
        });
    }
    if issuers.is_empty() {
        ctx.push(
            &at,
            "no `[environment.identity]`: every caller must be authenticated, so at least one issuer is required",
        );
    }
    let audit_store = {
        let mut found = Vec::new();
        let base = ctx.base.to_path_buf();
        let path = move |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
        };
        let mut credential_problems = Vec::new();
        let store = super::store::parse(
            &env.audit,
            env.production,
            &path,
            &mut |c| {
                let mut sub = Ctx {
                    file: ctx.file,
                    base: ctx.base,
                    problems: Vec::new(),
                };
                let s = read_credential(c, &format!("{at}: audit.postgres.password"), &mut sub);
                credential_problems.extend(sub.problems);
                s
            },
            &mut |p| found.push(p),
        );
        for p in found {
            ctx.push(&at, p);
        }
        ctx.problems.extend(credential_problems);
        store.unwrap_or_else(|| StoreLocation::Sqlite(PathBuf::new()))
    };
    let audit_signing_key = ctx.path(&env.audit.signing_key);
    let mut audit_previous_keys = Vec::new();
    for k in &env.audit.previous_public_keys {
        let p = ctx.path(k);
        if let Err(e) = crate::keys::load_public_key(&p) {
            ctx.push(&format!("{at}: audit.previous_public_keys"), e);
        }
        audit_previous_keys.push(p);
    }
    let checkpoint_interval = match &env.audit.checkpoint_interval {
        None => Duration::from_secs(60),
        Some(t) => contract::parse_duration(t).unwrap_or_else(|| {
            ctx.push(
                &at,
                format!("`audit.checkpoint_interval = \"{t}\"`: write a duration such as `60s`"),
            );
            Duration::from_secs(60)
        }),
    };
    let checkpoint_file = env.audit.checkpoint_file.as_deref().map(|f| ctx.path(f));
    if env.audit.checkpoint_command.as_ref().is_some_and(Vec::is_empty) {
        ctx.push(&at, "`audit.checkpoint_command` is empty");
    }
    let mine: BTreeMap<String, Arc<Contract>> = contracts
        .iter()
        .filter(|c| c.applies_to(&env.name))
        .map(|c| (c.key.clone(), c.clone()))
        .collect();
    let applicable = contracts.iter().filter(|c| c.applies_to(&env.name)).count();
    if applicable != mine.len() {
        ctx.push(&at, "two contracts define the same tool, prompt or resource for this environment");
    }
    if let Some(roles) = &env.roles {
        for r in &env.approver_roles {
            if !roles.contains(r) {
                ctx.push(&at, format!("approver role `{r}` is not among the environment's `roles`"));
            }
        }
        for c in mine.values() {
            for r in c.allowed_roles.iter().chain(c.approver_roles.iter().flatten()) {
                if !roles.contains(r) {
                    ctx.push(
                        &format!("{} ({} `{}`)", c.source, c.kind.noun(), c.tool),
                        format!("role `{r}` is not among environment `{}`'s `roles`", env.name),
                    );
                }
            }
        }
    }
    for c in mine.values() {
        if c.requires_approval && c.approver_roles.as_ref().is_none_or(Vec::is_empty) && env.approver_roles.is_empty() {
            ctx.push(
                &format!("{} ({} `{}`)", c.source, c.kind.noun(), c.tool),
                format!(
                    "requires approval but neither it nor environment `{}` names `approver_roles`",
                    env.name
                ),
            );
        }
    }
    if ctx.problems.len() != before {
        return None;
    }
    let tls = env.tls.map(|t| {
        let tat = format!("{at}: tls");
        let tls = Tls {
            cert: ctx.path(&t.cert),
            key: ctx.path(&t.key),
            client_ca: t.client_ca.as_ref().map(|c| ctx.path(c)),
            require_bound_tokens: t.require_bound_tokens,
        };
        for (name, p) in [
            ("cert", Some(&tls.cert)),
            ("key", Some(&tls.key)),
            ("client_ca", tls.client_ca.as_ref()),
        ] {
            if let Some(p) = p
                && !p.is_file()
            {
                ctx.push(&tat, format!("`{name} = \"{}\"`: no such file", p.display()));
            }
        }
        if tls.require_bound_tokens && tls.client_ca.is_none() {
            ctx.push(
                &tat,
                "`require_bound_tokens` needs `client_ca`: tokens can only be bound to client certificates",
            );
        }
        tls
    });
    let auth_failure_limit = match env.auth_failure_limit.as_deref() {
        None => crate::contract::parse_rate(DEFAULT_AUTH_FAILURE_LIMIT),
        Some("none") => None,
        Some(s) => {
            let rate = crate::contract::parse_rate(s);
            if rate.is_none() {
                ctx.push(
                    &at,
                    format!("`auth_failure_limit = \"{s}\"`: write a rate such as `\"{DEFAULT_AUTH_FAILURE_LIMIT}\"`, or `\"none\"`"),
                );
            }
            rate
        }
    };
    let session_idle_timeout = match env.session_idle_timeout.as_deref() {
        None => DEFAULT_SESSION_IDLE,
        Some(t) => crate::contract::parse_duration(t).unwrap_or_else(|| {
            ctx.push(&at, format!("`session_idle_timeout = \"{t}\"`: write a duration such as `\"5m\"`"));
            DEFAULT_SESSION_IDLE
        }),
    };
    let mut session_cap = |key: &str, value: Option<usize>, default: usize| match value {
        Some(0) => {
            ctx.push(
                &at,
                format!(
                    "`{key} = 0` would refuse every {}: write 1 or more",
                    if key.contains("session") {
                        "session"
                    } else if key.contains("connection") {
                        "connection"
                    } else {
                        "request for approval"
                    }
                ),
            );
            default
        }
        v => v.unwrap_or(default),
    };
    let max_sessions_per_identity = session_cap(
        "max_sessions_per_identity",
        env.max_sessions_per_identity,
        DEFAULT_MAX_SESSIONS_PER_IDENTITY,
    );
    let max_sessions = session_cap("max_sessions", env.max_sessions, DEFAULT_MAX_SESSIONS);
    let max_connections_per_source = session_cap(
        "max_connections_per_source",
        env.max_connections_per_source,
        DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
    );
    let max_open_approvals_per_requester = session_cap(
        "max_open_approvals_per_requester",
        env.max_open_approvals_per_requester,
        DEFAULT_MAX_OPEN_APPROVALS,
    );
    let mut duration = |key: &str, value: Option<&str>, default: Duration| match value {
        None => default,
        Some(t) => match crate::contract::parse_duration(t) {
            Some(d) if !d.is_zero() => d,
            _ => {
                ctx.push(&at, format!("`{key} = \"{t}\"`: write a duration such as `\"10s\"`"));
                default
            }
        },
    };
    let header_timeout = duration("header_timeout", env.header_timeout.as_deref(), DEFAULT_CLIENT_TIMEOUT);
    let body_timeout = duration("body_timeout", env.body_timeout.as_deref(), DEFAULT_CLIENT_TIMEOUT);
    let pin_check_interval = duration("pin_check_interval", env.pin_check_interval.as_deref(), DEFAULT_PIN_CHECK);
    let utc_offset = match env.policy_utc_offset.as_deref() {
        None => 0,
        Some(o) => parse_utc_offset(o).unwrap_or_else(|| {
            ctx.push(
                &at,
                format!("`policy_utc_offset = \"{o}\"`: write an offset such as `\"+01:00\"` or `\"-05:30\"`"),
            );
            0
        }),
    };
    let metrics_listen = env
        .telemetry
        .metrics_listen
        .as_deref()
        .and_then(|a| match a.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                ctx.push(
                    &at,
                    format!("`telemetry.metrics_listen = \"{a}\"` is not an address such as `127.0.0.1:9464`"),
                );
                None
            }
        });
    let otlp = otlp_settings(&env.telemetry, &at, ctx);
    let policies = env.policies.as_deref().and_then(|dir| {
        let path = ctx.path(dir);
        match crate::policy::cedar::CedarPolicies::load(&path, mine.values().map(Arc::as_ref), utc_offset) {
            Ok(p) => Some(Arc::new(p)),
            Err(problems) => {
                for p in problems {
                    ctx.push(&format!("{at}: policies `{dir}`"), p);
                }
                None
            }
        }
    });
    Some(Environment {
        name: env.name,
        production: env.production,
        listen: env.listen,
        public_url: env.public_url,
        approver_roles: env.approver_roles,
        auditor_roles: env.auditor_roles.unwrap_or_else(|| vec!["auditor".to_string()]),
        issuers,
        audit_store,
        audit_signing_key,
        audit_previous_keys,
        checkpoint_interval,
        checkpoint_file,
        checkpoint_command: env.audit.checkpoint_command,
        allowed_origins: env.allowed_origins,
        allowed_hosts: env.allowed_hosts,
        max_body_bytes: env.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
        auth_failure_limit,
        session_idle_timeout,
        max_sessions_per_identity,
        max_sessions,
        header_timeout,
        body_timeout,
        max_connections_per_source,
        max_open_approvals_per_requester,
        pin_check_interval,
        tls,
        metrics_listen,
        otlp,
        contracts: mine,
        policies,
        restart: BTreeMap::new(),
    })
}

/// The trace export settings, or none (with problems where they are not usable).
fn otlp_settings(t: &super::raw::RawTelemetry, at: &str, ctx: &mut Ctx<'_>) -> Option<crate::telemetry::OtlpSettings> {
    let ratio = t.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        ctx.push(at, format!("`telemetry.sampling_ratio = {ratio}` must be from 0.0 to 1.0"));
    }
    for key in t.resource_attributes.keys() {
        if key.is_empty() || key.chars().any(char::is_control) {
            ctx.push(at, "`telemetry.resource_attributes` has an empty or unprintable key");
        }
    }
    let Some(endpoint) = &t.otlp_endpoint else {
        if t.sampling_ratio.is_some() || !t.resource_attributes.is_empty() {
            ctx.push(
                at,
                "`telemetry.sampling_ratio` and `resource_attributes` need `telemetry.otlp_endpoint`",
            );
        }
        return None;
    };
    match url::Url::parse(endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.username().is_empty() && u.password().is_none() => {}
        _ => {
            // A value with credentials in it is not repeated: the problem list is printed
            // and logged.
            let shown = if endpoint.contains('@') {
                String::from("(not shown: it holds credentials)")
            } else {
                format!("\"{}\"", crate::request::clean(endpoint, 200))
            };
            ctx.push(
                at,
                format!(
                    "`telemetry.otlp_endpoint = {shown}` must be an http(s) URL such as `http://127.0.0.1:4318/v1/traces`, without credentials"
                ),
            );
            return None;
        }
    }
    Some(crate::telemetry::OtlpSettings {
        endpoint: endpoint.clone(),
        sampling_ratio: ratio,
        resource_attributes: t.resource_attributes.clone(),
    })
}

/// `+HH:MM` or `-HH:MM` as minutes east of UTC.
fn parse_utc_offset(o: &str) -> Option<i32> {
    let (sign, rest) = match o.as_bytes().first()? {
        b'+' => (1, &o[1..]),
        b'-' => (-1, &o[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

fn read_credential(c: &RawCredential, at: &str, ctx: &mut Ctx<'_>) -> Option<Secret<String>> {
    match c {
        RawCredential::Literal(s) => Some(Secret::new(s.clone())),
        RawCredential::File { file } => match std::fs::read_to_string(ctx.path(file)) {
            Ok(s) => Some(Secret::new(s.trim_end_matches(['\n', '\r']).to_string())),
            Err(e) => {
                // The path is configuration, not a secret; the file's content never appears.
                ctx.push(at, format!("cannot read credential file `{file}`: {}", e.kind()));
                None
            }
        },
    }
}

/// Where a URL carries a credential, if it does: user-info (`user:password@host`) or a
/// query parameter named like one.
fn credential_in_url(url: &str) -> Option<&'static str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Some("user-info (`user:password@`)");
    }
    let query = rest.split_once('?').map(|(_, q)| q.split('#').next().unwrap_or(""));
    let secret_name = |kv: &str| {
        let name = kv.split('=').next().unwrap_or("").to_ascii_lowercase().replace('-', "_");
        matches!(
            name.as_str(),
            "token"
                | "access_token"
                | "id_token"
                | "api_key"
                | "apikey"
                | "key"
                | "secret"
                | "client_secret"
                | "password"
                | "pass"
                | "pwd"
                | "auth"
                | "authorization"
                | "jwt"
                | "sig"
                | "signature"
        )
    };
    query.is_some_and(|q| q.split('&').any(secret_name)).then_some("query string")
}

fn resolve_upstream(u: RawUpstream, ctx: &mut Ctx<'_>) -> Option<Upstream> {
    let at = format!("upstream `{}`", u.name);
    let target = match (u.command, u.url, u.builtin) {
        (Some(cmd), None, None) => match cmd.split_first() {
            Some((program, rest)) => {
                let mut args = rest.to_vec();
                args.extend(u.args.iter().cloned());
                UpstreamTarget::Command {
                    program: program.clone(),
                    args,
                }
            }
            None => {
                ctx.push(&at, "`command` is empty");
                return None;
            }
        },
        (None, Some(url), None) => {
            // A URL travels into transport errors and logs: a credential in it would too, so
            // it is refused, and never repeated in the message.
            if let Some(part) = credential_in_url(&url) {
                ctx.push(
                    &at,
                    format!("`url` carries a credential in its {part}: move it to `headers` (kept out of logs and errors)"),
                );
            } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                // Not echoed either: what is not a URL may be a pasted secret.
                ctx.push(&at, "`url` must start with `http://` or `https://`");
            } else if url.contains('#') {
                // Never sent to a server, so it can only be a mistake, or a secret pasted
                // where `credential_in_url` does not look.
                ctx.push(&at, "`url` has a fragment (`#…`), which is never sent to a server: remove it");
            }
            UpstreamTarget::Url(url)
        }
        (None, None, Some(b)) => {
            if b != "demo" {
                ctx.push(&at, format!("`builtin = \"{b}\"`: the only built-in upstream is `demo`"));
            }
            UpstreamTarget::Builtin {
                name: b,
                args: u.args.clone(),
            }
        }
        _ => {
            ctx.push(&at, "set exactly one of `command`, `url` or `builtin`");
            return None;
        }
    };
    let timeout = match &u.timeout {
        None => Duration::from_secs(30),
        Some(t) => match contract::parse_duration(t) {
            Some(d) => d,
            None => {
                ctx.push(&at, format!("`timeout = \"{t}\"`: write a duration such as `30s`"));
                return None;
            }
        },
    };
    let mut env = Vec::new();
    let mut headers = Vec::new();
    let mut digests = Vec::new();
    for (k, c) in &u.env {
        if let Some(s) = read_credential(c, &format!("{at}: env.{k}"), ctx) {
            if matches!(c, RawCredential::File { .. }) || looks_secret(k) {
                digests.push(crate::canonical::sha256_hex(s.expose().as_bytes()));
            }
            env.push((k.clone(), s));
        }
    }
    for (k, c) in &u.headers {
        if let Some(s) = read_credential(c, &format!("{at}: headers.{k}"), ctx) {
            digests.push(crate::canonical::sha256_hex(s.expose().as_bytes()));
            headers.push((k.clone(), s));
        }
    }
    Some(Upstream {
        name: u.name,
        environment: u.environment,
        target,
        env,
        headers,
        timeout,
        credential_digests: digests,
    })
}

fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL"].iter().any(|w| k.contains(w))
}

/// INVARIANT: environments share nothing. Each shared item is one problem naming both.
fn cross_environment_checks(envs: &[Arc<Environment>], upstreams: &[Arc<Upstream>], ctx: &mut Ctx<'_>) {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut claim = |kind: &str, value: String, env: &str, ctx: &mut Ctx<'_>| {
        let key = format!("{kind}\u{0}{value}");
        match seen.get(&key) {
            Some(other) if other != env => ctx.push(
                &format!("environment `{env}`"),
                format!("shares its {kind} with environment `{other}`: environments must share nothing"),
            ),
            Some(_) => {}
            None => {
                seen.insert(key, env.to_string());
            }
        }
    };
    let mut names = std::collections::HashSet::new();
    for e in envs {
        if !names.insert(e.name.as_str()) {
            ctx.push(
                &format!("environment `{}`", e.name),
                "is defined twice; it shares its name with the first: give each environment its own name",
            );
        }
    }
    for e in envs {
        // Port 0 asks the OS for a fresh port each time: never shared.
        if !e.listen.ends_with(":0") {
            claim("listen address", e.listen.clone(), &e.name, ctx);
        }
        if let Some(m) = e.metrics_listen.filter(|m| m.port() != 0) {
            claim("listen address", m.to_string(), &e.name, ctx);
        }
        claim("public_url (token audience)", e.public_url.clone(), &e.name, ctx);
        match &e.audit_store {
            StoreLocation::Sqlite(p) => claim("audit store", p.display().to_string(), &e.name, ctx),
            StoreLocation::Postgres(pg) => {
                claim("audit store", pg.place(), &e.name, ctx);
                claim("audit database account", pg.account(), &e.name, ctx);
                if let Some(pw) = &pg.password {
                    claim(
                        "audit database password",
                        crate::canonical::sha256_hex(pw.expose().as_bytes()),
                        &e.name,
                        ctx,
                    );
                }
            }
        }
        claim("audit signing key", e.audit_signing_key.display().to_string(), &e.name, ctx);
        if let Some(f) = &e.checkpoint_file {
            claim("checkpoint file", f.display().to_string(), &e.name, ctx);
        }
        if let Some(tls) = &e.tls {
            // One CA for two environments lets one environment's certificates into the other.
            if let Some(ca) = tls.client_ca.as_ref().and_then(|p| std::fs::read(p).ok()) {
                claim("TLS client CA", crate::canonical::sha256_hex(&ca), &e.name, ctx);
            }
            if let Ok(key) = std::fs::read(&tls.key) {
                claim("TLS server key", crate::canonical::sha256_hex(&key), &e.name, ctx);
            }
        }
        for i in &e.issuers {
            claim("issuer", i.issuer.clone(), &e.name, ctx);
            let src = match &i.jwks {
                JwksSource::File(p) => p.display().to_string(),
                JwksSource::Url(u) => u.clone(),
            };
            claim("JWKS source", src, &e.name, ctx);
        }
    }
    for u in upstreams {
        for d in &u.credential_digests {
            claim("upstream credential", d.clone(), &u.environment, ctx);
        }
        // The same upstream reached with the same (or no) credentials is the same authority
        // in two environments.
        let mut creds = u.credential_digests.clone();
        creds.sort();
        claim(
            "upstream (same target, same credentials)",
            format!("{}|{}", u.target.identity(), creds.join(",")),
            &u.environment,
            ctx,
        );
    }
    // Copies of one key under two paths are still one key: compare the key material.
    let mut mint_keys: Vec<(String, String)> = Vec::new();
    for e in envs {
        if let Ok(k) = crate::keys::load_signing_key(&e.audit_signing_key) {
            claim(
                "audit signing key (same key material)",
                hex::encode(k.verifying_key().as_bytes()),
                &e.name,
                ctx,
            );
        }
        for i in &e.issuers {
            for thumb in jwks_key_material(&i.jwks) {
                claim("identity key (same key material)", thumb, &e.name, ctx);
            }
            if let Some(k) = i.mint_key.as_ref().and_then(|p| crate::keys::load_signing_key(p).ok()) {
                mint_keys.push((format!("OKP:{}", b64url(k.verifying_key().as_bytes())), e.name.clone()));
            }
        }
    }
    // A production environment must not trust a key this machine can mint tokens with.
    for e in envs.iter().filter(|e| e.production) {
        for i in &e.issuers {
            for thumb in jwks_key_material(&i.jwks) {
                if let Some((_, dev)) = mint_keys.iter().find(|(t, _)| *t == thumb) {
                    ctx.push(
                        &format!("environment `{}`: issuer `{}`", e.name, i.issuer),
                        format!("trusts a development issuer: its JWKS holds the public half of environment `{dev}`'s `mint_key`"),
                    );
                }
            }
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The public key material of every key in a JWKS file (`kty:` and its public members);
/// URL sources are not fetched by `check`.
fn jwks_key_material(src: &JwksSource) -> Vec<String> {
    let JwksSource::File(path) = src else {
        return Vec::new();
    };
    let Some(doc) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return Vec::new();
    };
    let field = |k: &serde_json::Value, f: &str| k.get(f).and_then(serde_json::Value::as_str).unwrap_or("").to_string();
    doc.get("keys")
        .and_then(serde_json::Value::as_array)
        .map(|keys| {
            keys.iter()
                .map(|k| match field(k, "kty").as_str() {
                    "OKP" => format!("OKP:{}", field(k, "x")),
                    "EC" => format!("EC:{}:{}", field(k, "x"), field(k, "y")),
                    "RSA" => format!("RSA:{}:{}", field(k, "n"), field(k, "e")),
                    other => format!("{other}:{k}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_an_upstream_url_are_found() {
        for url in [
            "https://svc:pw@tickets.internal/mcp",
            "https://tok@tickets.internal",
            "http://h/mcp?api_key=abc",
            "http://h/mcp?x=1&Access-Token=abc#frag",
        ] {
            assert!(credential_in_url(url).is_some(), "{url}");
        }
        for url in [
            "https://tickets.internal/mcp",
            "http://127.0.0.1:8080/mcp?tenant=a",
            "http://h/a@b",
            "http://h/?monkey=1",
        ] {
            assert_eq!(credential_in_url(url), None, "{url}");
        }
    }
}
