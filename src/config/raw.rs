//! The configuration file as written (TOML). Every table refuses unknown keys so that a typo
//! never silently turns a control off; meaning is given to it only in `resolved.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub environment: Vec<RawEnvironment>,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    pub contracts: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    pub name: String,
    #[serde(default)]
    pub production: bool,
    pub listen: String,
    pub public_url: String,
    #[serde(default)]
    pub approver_roles: Vec<String>,
    /// The role names this environment knows; when given, contracts naming any other role
    /// are refused.
    pub roles: Option<Vec<String>>,
    pub identity: OneOrMany<RawIdentity>,
    pub audit: RawAudit,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names the listener answers to besides `public_url`'s and the listen address's.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    pub max_body_bytes: Option<usize>,
    /// Authentication failures per source address before refusals are answered slowly:
    /// a rate such as `"50/s"`, or `"none"`.
    pub auth_failure_limit: Option<String>,
    /// An MCP session no request has used for this long is closed (`"5m"` by default).
    pub session_idle_timeout: Option<String>,
    /// MCP sessions one identity may hold open; opening one more closes its least recently
    /// used (256 by default).
    pub max_sessions_per_identity: Option<usize>,
    /// MCP sessions open in the environment in all; opening one more closes an idle session
    /// of the identity holding the most (1024 by default).
    pub max_sessions: Option<usize>,
    pub tls: Option<RawTls>,
}

/// A TLS listener; with `client_ca`, mutual TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Server certificate chain (PEM).
    pub cert: String,
    /// Its private key (PEM, mode 0600).
    pub key: String,
    /// CA (PEM) that client certificates must chain to: this environment's own.
    pub client_ca: Option<String>,
    /// Every token must be bound to the client certificate (`cnf.x5t#S256`, RFC 8705).
    #[serde(default)]
    pub require_bound_tokens: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub issuer: String,
    pub jwks: String,
    pub roles_claim: Option<String>,
    /// Ed25519 private key (PKCS#8 PEM) of a development issuer, for `capgate token mint`.
    pub mint_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub store: String,
    pub signing_key: String,
    /// Public keys (PEM) of signing keys this environment used before a rotation: their
    /// checkpoints keep verifying.
    #[serde(default)]
    pub previous_public_keys: Vec<String>,
    /// How often the head is signed (default 60s); also on shutdown.
    pub checkpoint_interval: Option<String>,
    /// An append-only file that receives a copy of every checkpoint.
    pub checkpoint_file: Option<String>,
    /// A command that receives every checkpoint as a JSON line on stdin.
    pub checkpoint_command: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawCredential {
    Literal(String),
    File { file: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub environment: String,
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    /// `"demo"`: this binary's own demo upstream, run as a stdio child process.
    pub builtin: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, RawCredential>,
    #[serde(default)]
    pub headers: BTreeMap<String, RawCredential>,
    pub timeout: Option<String>,
}
