//! PostgreSQL for the tests: a schema of its own on the machine's server (127.0.0.1:5432,
//! trust authentication, database `test`) for each test, dropped afterwards; and, for a test
//! that stops the database, a server of its own (`initdb` + `pg_ctl` in a temporary folder,
//! on a port of its own, with TLS), so the machine's server is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The machine's server, as its superuser.
pub const MACHINE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// Runs `f` against a fresh connection to `conninfo` on a runtime of its own: usable from
/// synchronous code and from `Drop`.
pub fn with_client<T: Send + 'static>(
    conninfo: &str,
    f: impl FnOnce(&tokio::runtime::Runtime, &tokio_postgres::Client) -> T + Send + 'static,
) -> T {
    let conninfo = conninfo.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at `{conninfo}`: {e}"));
            tokio::spawn(conn);
            client
        });
        f(&rt, &client)
    })
    .join()
    .unwrap()
}

/// Runs SQL (several statements) as the machine's superuser; panics on failure.
pub fn exec(conninfo: &str, sql: &str) {
    let sql = sql.to_string();
    with_client(conninfo, move |rt, c| {
        rt.block_on(c.batch_execute(&sql)).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    });
}

/// One query's first column, as text, per row.
pub fn column(conninfo: &str, sql: &str) -> Vec<String> {
    let sql = sql.to_string();
    with_client(conninfo, move |rt, c| {
        rt.block_on(c.simple_query(&sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                _ => None,
            })
            .collect()
    })
}

/// A schema of this test's own on the machine's server; dropped with everything in it.
pub struct Schema {
    pub name: String,
    conninfo: String,
}

impl Schema {
    pub fn new() -> Self {
        Self::on(MACHINE)
    }

    pub fn on(conninfo: &str) -> Self {
        let name = format!("cg_{}", uuid::Uuid::new_v4().simple());
        Self {
            name,
            conninfo: conninfo.to_string(),
        }
    }

    /// Every record of the schema, in sequence order.
    pub fn records(&self) -> Vec<Value> {
        column(&self.conninfo, &format!("SELECT record FROM {}.records ORDER BY seq", self.name))
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect()
    }

    /// Runs SQL as the server's superuser.
    pub fn exec(&self, sql: &str) {
        exec(&self.conninfo, sql);
    }

    pub fn column(&self, sql: &str) -> Vec<String> {
        column(&self.conninfo, sql)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let conninfo = self.conninfo.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(conn);
                client.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

/// A login role of this test's own on the machine's server (trust authentication: no
/// password); dropped with what it was granted.
pub struct Role {
    pub name: String,
}

impl Role {
    pub fn new() -> Self {
        let name = format!("cg_role_{}", uuid::Uuid::new_v4().simple());
        exec(MACHINE, &format!("CREATE ROLE {name} LOGIN"));
        Self { name }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| exec(MACHINE, &format!("DROP OWNED BY {n}; DROP ROLE {n}", n = self.name)));
    }
}

/// Points environment `env` of the fixture at `schema` on the machine's server, as `user`,
/// and creates its schema with `capgate store init` (as `owner` when given).
pub fn use_postgres(f: &super::Fixture, env: &str, schema: &Schema, user: &str, owner: Option<&str>) {
    f.rewrite(
        &format!("store = \"sqlite://data/{env}-audit.db\""),
        &format!("store = \"postgres://{user}@127.0.0.1:5432/test?schema={}\"", schema.name),
    );
    store_init(&f.config(), env, owner);
}

pub fn store_init(config: &Path, env: &str, owner: Option<&str>) {
    let mut cmd = Command::new(super::bin());
    cmd.args(["store", "init", "--env", env, "--config"]).arg(config);
    if let Some(o) = owner {
        cmd.args(["--owner", o]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "store init: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL server of the test's own: its data folder in a temporary folder, its own
/// port, TLS with a certificate for 127.0.0.1 signed by a CA of its own (`ca()`).
pub struct Server {
    dir: tempfile::TempDir,
    pub port: u16,
}

/// `initdb` refuses to run as root: the tools then run as the `postgres` account, which
/// owns the folder.
fn as_postgres(program: &str) -> Command {
    let program = server_program(program);
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A server program (`initdb`, `pg_ctl`): Debian keeps them in /usr/lib/postgresql/VERSION/bin,
/// off the PATH; the newest version there, else the PATH's.
fn server_program(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin").join(program)).collect())
        .unwrap_or_default();
    versions.retain(|p| p.exists());
    versions.sort_by_key(|p| p.iter().nth(4).and_then(|v| v.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    versions.pop().unwrap_or_else(|| PathBuf::from(program))
}

/// Running as root, the server's files must be the `postgres` user's.
fn give_to_postgres(path: &Path) {
    assert!(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

impl Server {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("capgate-pg-").tempdir().unwrap();
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        if root {
            give_to_postgres(dir.path());
        }
        let data = dir.path().join("data");
        let out = as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        // TLS: a CA of its own, and a certificate for 127.0.0.1 it signs.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "capgate test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        // The server refuses a key others can read.
        std::fs::set_permissions(data.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        if root {
            give_to_postgres(dir.path());
        }
        let port = free_fixed_port();
        let s = Self { dir, port };
        s.resume();
        s
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The CA certificate the server's certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// Starts the server (again), and waits until it takes connections.
    pub fn resume(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres("pg_ctl")
            .args(["-w", "-t", "30", "-D"])
            .arg(self.data())
            .args(["-l"])
            .arg(self.dir.path().join("log"))
            .args(["-o", &opts, "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (`fast`: open sessions are closed, transactions rolled back).
    pub fn stop(&self) {
        let out = as_postgres("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.data())
            .arg("stop")
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A free port below the kernel's ephemeral range: while the server is stopped, no
/// listener bound to port 0 (a gateway of another test) can take its port.
fn free_fixed_port() -> u16 {
    for _ in 0..200 {
        let port = 21000 + (rand::random::<u16>() % 8000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 21000 and 29000");
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }
}
