//! Where an environment's audit log, checkpoints and approval queue are kept
//! (`[environment.audit] store`, or an `[environment.audit.postgres]` table): an SQLite file,
//! or a schema of a PostgreSQL database shared by the environment's replicas.
//!
//! INVARIANT: a database password is a [`Secret`]: it is read from a file (or written in the
//! table), never accepted inside a URL, and no `Display` or `Debug` of a location shows it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::secret::Secret;

use super::raw::{RawAudit, RawCredential, RawPostgres};

/// Connections a gateway keeps for reads (the API, the console, waiting calls), besides the
/// writer's and the approval listener's.
pub(crate) const DEFAULT_POOL_SIZE: usize = 4;

#[derive(Debug, Clone)]
pub(crate) enum StoreLocation {
    /// `sqlite://PATH`: the embedded store, one file (relative to the config's folder).
    Sqlite(PathBuf),
    /// `postgres://USER@HOST:PORT/DB?schema=S&sslmode=M`, or the table form.
    Postgres(Arc<PgLocation>),
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plain TCP: only for a server on this machine.
    Disable,
    /// TLS without verifying the server's certificate (libpq's `require`): encrypted, not
    /// authenticated; `check` warns.
    Require,
    /// TLS, the certificate verified against `sslrootcert` and the host name.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "disable" => Some(Self::Disable),
            "require" => Some(Self::Require),
            "verify-full" => Some(Self::VerifyFull),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// One environment's PostgreSQL store.
#[derive(Debug)]
pub(crate) struct PgLocation {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
    pub(crate) user: String,
    pub(crate) password: Option<Secret<String>>,
    pub(crate) sslmode: SslMode,
    /// The CA certificate(s), PEM, a `verify-full` connection trusts.
    pub(crate) sslrootcert: Option<PathBuf>,
    /// The schema holding this environment's tables: a plain lowercase identifier.
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
}

impl PgLocation {
    /// Whether the server is on this machine (plain TCP is then acceptable).
    pub(crate) fn is_local(&self) -> bool {
        is_local(&self.host)
    }

    /// What two environments must not share: the same schema of the same database.
    pub(crate) fn place(&self) -> String {
        format!("postgres://{}:{}/{} schema {}", self.host, self.port, self.dbname, self.schema)
    }

    /// The database account, by host and name (the password is compared by digest).
    pub(crate) fn account(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// The store as messages name it: the SQLite file's path, or the database without the
/// password.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(pg) => write!(
                f,
                "postgres://{}@{}:{}/{} (schema `{}`)",
                pg.user, pg.host, pg.port, pg.dbname, pg.schema
            ),
        }
    }
}

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1") || host.starts_with('/')
}

/// A schema name goes into SQL as an identifier: only plain lowercase ones are taken.
pub(crate) fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
        && !s.starts_with("pg_")
}

/// Reads the store of `[environment.audit]`; every problem goes to `problem`. `path` resolves
/// a path against the config's folder; `secret` reads a credential.
pub(crate) fn parse(
    audit: &RawAudit,
    production: bool,
    path: &dyn Fn(&str) -> PathBuf,
    secret: &mut dyn FnMut(&RawCredential) -> Option<Secret<String>>,
    problem: &mut dyn FnMut(String),
) -> Option<StoreLocation> {
    match (&audit.store, &audit.postgres) {
        (Some(_), Some(_)) => {
            problem("give `audit.store` or an `[environment.audit.postgres]` table, not both".into());
            None
        }
        (None, None) => {
            problem("no audit store: write `store = \"sqlite://PATH\"` or `store = \"postgres://USER@HOST/DB\"`".into());
            None
        }
        (Some(text), None) => {
            if let Some(p) = text.strip_prefix("sqlite://") {
                if p.is_empty() {
                    problem(format!("`audit.store = \"{text}\"`: write `sqlite://PATH`"));
                    return None;
                }
                return Some(StoreLocation::Sqlite(path(p)));
            }
            if text.starts_with("postgres://") || text.starts_with("postgresql://") {
                let raw = from_url(text, problem)?;
                return postgres(&raw, production, path, secret, problem);
            }
            // The setting may hold a password: never echoed.
            problem("`audit.store`: write `sqlite://PATH` (the embedded store) or `postgres://USER@HOST:PORT/DB` (replicas)".into());
            None
        }
        (None, Some(raw)) => postgres(raw, production, path, secret, problem),
    }
}

/// The URL form, as the table it stands for. A password in it is refused (it would sit in
/// the config file and in every message that quotes the setting).
fn from_url(text: &str, problem: &mut dyn FnMut(String)) -> Option<RawPostgres> {
    let Ok(url) = url::Url::parse(text) else {
        problem("`audit.store`: not a postgres:// URL (write postgres://USER@HOST:PORT/DB?schema=S)".into());
        return None;
    };
    if url.password().is_some() {
        problem(
            "`audit.store`: the URL carries a password; give it as `password = { file = \"…\" }` in an `[environment.audit.postgres]` table instead"
                .into(),
        );
        return None;
    }
    let mut raw = RawPostgres {
        host: url.host_str().unwrap_or("").trim_matches(['[', ']']).to_string(),
        port: url.port(),
        dbname: url.path().trim_start_matches('/').to_string(),
        user: url.username().to_string(),
        password: None,
        sslmode: None,
        sslrootcert: None,
        schema: None,
        pool_size: None,
    };
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" => raw.sslmode = Some(v.into_owned()),
            "sslrootcert" => raw.sslrootcert = Some(v.into_owned()),
            "schema" => raw.schema = Some(v.into_owned()),
            "pool_size" => match v.parse() {
                Ok(n) => raw.pool_size = Some(n),
                Err(_) => problem(format!("`audit.store`: `pool_size={v}` is not a number")),
            },
            "password" => {
                problem("`audit.store`: the URL carries a password; give it as `password = { file = \"…\" }` in an `[environment.audit.postgres]` table instead".into());
                return None;
            }
            other => problem(format!(
                "`audit.store`: unknown parameter `{}` (known: sslmode, sslrootcert, schema, pool_size)",
                crate::request::clean(other, 32)
            )),
        }
    }
    Some(raw)
}

fn postgres(
    raw: &RawPostgres,
    production: bool,
    path: &dyn Fn(&str) -> PathBuf,
    secret: &mut dyn FnMut(&RawCredential) -> Option<Secret<String>>,
    problem: &mut dyn FnMut(String),
) -> Option<StoreLocation> {
    let mut ok = true;
    let mut fail = |msg: String| {
        ok = false;
        problem(msg);
    };
    if raw.host.is_empty() {
        fail("audit store: no PostgreSQL host".into());
    }
    if raw.dbname.is_empty() {
        fail("audit store: no database name".into());
    }
    if raw.user.is_empty() {
        fail("audit store: no database user".into());
    }
    let schema = raw.schema.clone().unwrap_or_else(|| "capgate".into());
    if !valid_schema(&schema) {
        fail(format!(
            "audit store: schema `{}` is not a plain lowercase identifier (a-z, 0-9, _; not pg_…)",
            crate::request::clean(&schema, 64)
        ));
    }
    let local = is_local(&raw.host);
    let sslmode = match raw.sslmode.as_deref() {
        None if local => SslMode::Disable,
        None => SslMode::VerifyFull,
        Some(m) => SslMode::parse(m).unwrap_or_else(|| {
            fail(format!(
                "audit store: `sslmode = \"{}\"`: write disable, require or verify-full",
                crate::request::clean(m, 32)
            ));
            SslMode::VerifyFull
        }),
    };
    if production && !local && sslmode != SslMode::VerifyFull {
        fail(format!(
            "audit store: `sslmode = \"{}\"` for a database on another machine in a production environment: use verify-full",
            sslmode.as_str()
        ));
    }
    let sslrootcert = raw.sslrootcert.as_deref().map(path);
    if sslmode == SslMode::VerifyFull && sslrootcert.is_none() {
        fail("audit store: `sslmode = \"verify-full\"` needs `sslrootcert` (the CA certificate, PEM)".into());
    }
    let password = match &raw.password {
        Some(c) => {
            let s = secret(c);
            if s.is_none() {
                ok = false;
            }
            s
        }
        None => None,
    };
    let pool_size = raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    if !(1..=64).contains(&pool_size) {
        problem(format!("audit store: `pool_size = {pool_size}`: from 1 to 64"));
        return None;
    }
    ok.then(|| {
        StoreLocation::Postgres(Arc::new(PgLocation {
            host: raw.host.clone(),
            port: raw.port.unwrap_or(5432),
            dbname: raw.dbname.clone(),
            user: raw.user.clone(),
            password,
            sslmode,
            sslrootcert,
            schema,
            pool_size,
        }))
    })
}

/// The store of an `[environment.audit]` that holds only `store` (or only `postgres`), with
/// the problems found: for the tests and the fuzz target.
#[cfg(any(test, fuzzing))]
pub(crate) fn parse_store(store: Option<&str>, table: Option<RawPostgres>, production: bool) -> (Option<StoreLocation>, Vec<String>) {
    let audit = RawAudit {
        store: store.map(str::to_string),
        postgres: table,
        signing_key: "k".into(),
        previous_public_keys: Vec::new(),
        checkpoint_interval: None,
        checkpoint_file: None,
        checkpoint_command: None,
    };
    let mut problems = Vec::new();
    let loc = parse(
        &audit,
        production,
        &|p| PathBuf::from("/cfg").join(p),
        &mut |c| match c {
            RawCredential::Literal(s) => Some(Secret::new(s.clone())),
            RawCredential::File { .. } => None,
        },
        &mut |p| problems.push(p),
    );
    (loc, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_tables_read_and_passwords_stay_out_of_urls_and_messages() {
        let (loc, p) = parse_store(Some("postgres://gw@127.0.0.1:5433/test?schema=cg_dev"), None, false);
        assert!(p.is_empty(), "{p:?}");
        let Some(StoreLocation::Postgres(pg)) = loc else { panic!() };
        assert_eq!((pg.port, pg.schema.as_str(), pg.sslmode), (5433, "cg_dev", SslMode::Disable));
        assert_eq!(pg.place(), "postgres://127.0.0.1:5433/test schema cg_dev");

        let (loc, p) = parse_store(Some("postgres://gw:hunter2hunter2@db.example/prod"), None, false);
        assert!(loc.is_none());
        assert!(p.iter().all(|m| !m.contains("hunter2")), "{p:?}");
        assert!(p[0].contains("password"), "{p:?}");

        // Another machine: verified TLS by default, and it needs its CA.
        let (loc, p) = parse_store(Some("postgres://gw@db.example/prod"), None, false);
        assert!(loc.is_none() && p[0].contains("sslrootcert"), "{p:?}");
        let (_, p) = parse_store(Some("postgres://gw@db.example/prod?sslmode=disable"), None, true);
        assert!(p[0].contains("production"), "{p:?}");
        let (_, p) = parse_store(Some("postgres://gw@127.0.0.1/test?schema=Robert%27%3B--"), None, false);
        assert!(p[0].contains("identifier"), "{p:?}");

        let table = RawPostgres {
            host: "127.0.0.1".into(),
            port: None,
            dbname: "test".into(),
            user: "gw".into(),
            password: Some(RawCredential::Literal("s3cret-s3cret".into())),
            sslmode: Some("require".into()),
            sslrootcert: None,
            schema: None,
            pool_size: Some(2),
        };
        let (loc, p) = parse_store(None, Some(table), false);
        assert!(p.is_empty(), "{p:?}");
        let loc = loc.unwrap();
        let shown = format!("{loc} {loc:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("schema `capgate`"), "{shown}");
    }

    proptest::proptest! {
        /// Whatever the setting, reading it never panics, and a password written into a
        /// URL is refused without being repeated.
        #[test]
        fn a_password_in_a_url_is_never_repeated(
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9]{12,20}",
            host in "[a-z0-9.-]{1,20}",
            query in "[ -~]{0,40}",
        ) {
            let url = format!("postgres://{user}:{password}@{host}/db?{query}");
            let (loc, problems) = parse_store(Some(&url), None, false);
            proptest::prop_assert!(loc.is_none());
            for p in &problems {
                proptest::prop_assert!(!p.contains(&password), "{}", p);
            }
        }

        #[test]
        fn any_setting_reads_or_is_refused_with_a_reason(text in "[ -~]{0,80}") {
            let (loc, problems) = parse_store(Some(&text), None, false);
            proptest::prop_assert!(loc.is_some() || !problems.is_empty());
            if let Some(StoreLocation::Postgres(pg)) = loc {
                proptest::prop_assert!(valid_schema(&pg.schema));
            }
        }
    }
}
