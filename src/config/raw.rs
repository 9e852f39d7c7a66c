//! The configuration file as written (TOML). Every table refuses unknown keys so that a typo
//! never silently turns a control off; meaning is given to it only in `resolved.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) environment: Vec<RawEnvironment>,
    #[serde(default)]
    pub(crate) upstream: Vec<RawUpstream>,
    pub(crate) contracts: Option<String>,
    /// The pins of upstream tool definitions (`capgate.pins.json` beside this file by
    /// default; `capgate contracts pin` writes it).
    pub(crate) pins: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvironment {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) production: bool,
    pub(crate) listen: String,
    pub(crate) public_url: String,
    #[serde(default)]
    pub(crate) approver_roles: Vec<String>,
    /// Who may read the audit explorer and the contracts in the console, besides approvers
    /// (`["auditor"]` by default).
    pub(crate) auditor_roles: Option<Vec<String>>,
    /// The role names this environment knows; when given, contracts naming any other role
    /// are refused.
    pub(crate) roles: Option<Vec<String>>,
    pub(crate) identity: OneOrMany<RawIdentity>,
    pub(crate) audit: RawAudit,
    #[serde(default)]
    pub(crate) allowed_origins: Vec<String>,
    /// Host names the listener answers to besides `public_url`'s and the listen address's.
    #[serde(default)]
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) max_body_bytes: Option<usize>,
    /// Authentication failures per source address before refusals are answered slowly:
    /// a rate such as `"50/s"`, or `"none"`.
    pub(crate) auth_failure_limit: Option<String>,
    /// An MCP session no request has used for this long is closed (`"5m"` by default).
    pub(crate) session_idle_timeout: Option<String>,
    /// MCP sessions one identity may hold open; opening one more closes its least recently
    /// used (256 by default).
    pub(crate) max_sessions_per_identity: Option<usize>,
    /// MCP sessions open in the environment in all; opening one more closes an idle session
    /// of the identity holding the most (1024 by default).
    pub(crate) max_sessions: Option<usize>,
    /// A client that has not sent a request's whole header within this is cut off
    /// (`"10s"` by default).
    pub(crate) header_timeout: Option<String>,
    /// A request's body must arrive within this after its header (`"10s"` by default), else
    /// 408.
    pub(crate) body_timeout: Option<String>,
    /// Connections one source address (an IPv6 /64) may hold open at once (256 by default).
    pub(crate) max_connections_per_source: Option<usize>,
    /// Approval requests one requester may have open (pending or approved, not yet used) at
    /// once (20 by default).
    pub(crate) max_open_approvals_per_requester: Option<usize>,
    /// How often upstream tool definitions are compared with their pins (`"60s"`).
    pub(crate) pin_check_interval: Option<String>,
    /// A directory of Cedar policies (`.cedar` files) every call must also pass (SPEC §9).
    pub(crate) policies: Option<String>,
    /// The offset from UTC of the time policies see as `context.time.local` (`"+01:00"`;
    /// UTC by default).
    pub(crate) policy_utc_offset: Option<String>,
    pub(crate) tls: Option<RawTls>,
    #[serde(default)]
    pub(crate) telemetry: RawTelemetry,
}

/// Where the environment's metrics are served (`[environment.telemetry]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    /// A listener of its own for `GET /metrics` (`"127.0.0.1:9464"`): the series name the
    /// environment's tools, which the public listener then does not show.
    pub(crate) metrics_listen: Option<String>,
    /// Where traces go: an OTLP/HTTP traces URL (`"http://collector:4318/v1/traces"`).
    pub(crate) otlp_endpoint: Option<String>,
    /// The share of new traces exported, 0.0 to 1.0 (1.0 by default).
    pub(crate) sampling_ratio: Option<f64>,
    /// Resource attributes every exported span carries besides capgate's own.
    #[serde(default)]
    pub(crate) resource_attributes: BTreeMap<String, String>,
}

/// A TLS listener; with `client_ca`, mutual TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// Server certificate chain (PEM).
    pub(crate) cert: String,
    /// Its private key (PEM, mode 0600).
    pub(crate) key: String,
    /// CA (PEM) that client certificates must chain to: this environment's own.
    pub(crate) client_ca: Option<String>,
    /// Every token must be bound to the client certificate (`cnf.x5t#S256`, RFC 8705).
    #[serde(default)]
    pub(crate) require_bound_tokens: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    pub(crate) issuer: String,
    pub(crate) jwks: String,
    pub(crate) roles_claim: Option<String>,
    /// Ed25519 private key (PKCS#8 PEM) of a development issuer, for `capgate token mint`.
    pub(crate) mint_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB?schema=S&sslmode=M`.
    pub(crate) store: Option<String>,
    /// The PostgreSQL store as a table (for a password, which a URL may not carry).
    pub(crate) postgres: Option<RawPostgres>,
    pub(crate) signing_key: String,
    /// Public keys (PEM) of signing keys this environment used before a rotation: their
    /// checkpoints keep verifying.
    #[serde(default)]
    pub(crate) previous_public_keys: Vec<String>,
    /// How often the head is signed (default 60s); also on shutdown.
    pub(crate) checkpoint_interval: Option<String>,
    /// An append-only file that receives a copy of every checkpoint.
    pub(crate) checkpoint_file: Option<String>,
    /// A command that receives every checkpoint as a JSON line on stdin.
    pub(crate) checkpoint_command: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgres {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) dbname: String,
    pub(crate) user: String,
    pub(crate) password: Option<RawCredential>,
    /// `disable`, `require` or `verify-full`.
    pub(crate) sslmode: Option<String>,
    pub(crate) sslrootcert: Option<String>,
    pub(crate) schema: Option<String>,
    pub(crate) pool_size: Option<usize>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum RawCredential {
    Literal(String),
    File { file: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) name: String,
    pub(crate) environment: String,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) url: Option<String>,
    /// `"demo"`: this binary's own demo upstream, run as a stdio child process.
    pub(crate) builtin: Option<String>,
    #[serde(default)]
    pub(crate) args: Vec<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, RawCredential>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, RawCredential>,
    pub(crate) timeout: Option<String>,
}
