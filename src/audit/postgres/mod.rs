//! The PostgreSQL store: one schema per environment, shared by every replica of it.
//!
//! - `records`: the hash chain. Replicas serialize their appends with a transaction-scoped
//!   advisory lock on the environment's chain, read the head inside it, and append their
//!   whole batch with one statement: `seq` stays strictly increasing and gap-free, and every
//!   `prev_hash` names the record before it, whoever wrote that one.
//! - `checkpoints`: one per sequence number at most (its primary key), signed under the same
//!   lock, so they never go back in sequence or time.
//! - `approvals` and `approval_votes`: changed only in the transactions that append the
//!   records describing each step (as in SQLite); a change is announced with `NOTIFY`, which
//!   wakes the calls every replica has waiting.
//!
//! The gateway's role may append to `records` and `checkpoints`, never change them: a
//! trigger refuses `UPDATE`, `DELETE` and `TRUNCATE` whoever asks, and `capgate store init`
//! grants a separate gateway role no more than `SELECT, INSERT` there (`schema.rs`).
//!
//! INVARIANT: the database password is only ever handed to the driver; no message of this
//! module carries it.

mod reader;
pub(crate) mod schema;
mod tls;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};

use super::AuditError;
use crate::config::{PgLocation, SslMode};

pub(crate) use reader::PgReader;
pub(crate) use writer::PgStore;

/// The stream a connection runs over (plain TCP when `sslmode = "disable"`).
type Stream = <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
pub(crate) type Connection = tokio_postgres::Connection<Socket, Stream>;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Limits every session the gateway opens carries: a statement cannot run, nor wait for a
/// lock, nor a transaction sit idle, long enough to hold the writer (and with it every
/// waiting call) for more than a few seconds; past them the batch fails and its calls are
/// refused (fail closed).
const SESSION_OPTIONS: &str = "-c statement_timeout=10000 -c lock_timeout=2000 -c idle_in_transaction_session_timeout=30000";

/// The channel approval changes are announced on; the payload names the schema and the
/// environment.
pub(crate) const CHANNEL: &str = "capgate_approvals";

/// How to reach one environment's database.
#[derive(Clone)]
pub(crate) struct Pg {
    loc: Arc<PgLocation>,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Pg {
    pub(crate) fn new(loc: &Arc<PgLocation>) -> Result<Self, AuditError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&loc.host)
            .port(loc.port)
            .dbname(&loc.dbname)
            .user(&loc.user)
            .application_name("capgate")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .options(SESSION_OPTIONS)
            .ssl_mode(match loc.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
            });
        if let Some(p) = &loc.password {
            config.password(p.expose().as_bytes());
        }
        let tls = tls::connector(loc).map_err(|e| AuditError::Unreadable(format!("audit store {}: {e}", loc_name(loc))))?;
        Ok(Self {
            loc: loc.clone(),
            config,
            tls,
        })
    }

    pub(crate) fn location(&self) -> &PgLocation {
        &self.loc
    }

    /// The schema, ready to go into SQL (validated as a plain identifier when the
    /// configuration was read).
    pub(crate) fn schema(&self) -> &str {
        &self.loc.schema
    }

    /// A connection, and the task that drives it (to be polled by the caller).
    pub(crate) async fn connect_raw(&self) -> Result<(Client, Connection), AuditError> {
        self.config.connect(self.tls.clone()).await.map_err(|e| self.error(&e))
    }

    /// A connection driven by a task of the current runtime.
    pub(crate) async fn connect(&self) -> Result<Client, AuditError> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("audit store connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// A driver error as the operator reads it: the server's message where there is one,
    /// the store named without its password.
    pub(crate) fn error(&self, e: &tokio_postgres::Error) -> AuditError {
        AuditError::Unavailable {
            detail: format!("{}: {}", loc_name(&self.loc), describe(e)),
        }
    }

    /// The key of the advisory lock that serializes this environment's chain: derived from
    /// the schema and the environment, so that environments sharing a server never wait on
    /// each other.
    pub(crate) fn chain_lock(&self, env: &str) -> i64 {
        let digest = crate::canonical::sha256_hex(format!("capgate-chain\n{}\n{env}", self.loc.schema).as_bytes());
        let mut bytes = [0u8; 8];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(digest.get(i * 2..i * 2 + 2).unwrap_or("00"), 16).unwrap_or(0);
        }
        i64::from_be_bytes(bytes)
    }

    /// What an approval `NOTIFY` of this environment carries.
    pub(crate) fn notify_key(&self, env: &str) -> String {
        format!("{}:{env}", self.loc.schema)
    }
}

fn loc_name(loc: &PgLocation) -> String {
    format!("postgres://{}@{}:{}/{}", loc.user, loc.host, loc.port, loc.dbname)
}

/// The server's own words for an error (its message and detail), else the driver's.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// `LOCK TABLE records IN EXCLUSIVE MODE` held by a connection of its own: every append
/// waits for it, past the session's `lock_timeout`, and fails (`probe --simulate-outage`).
pub(crate) struct TableLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    done: Option<std::thread::JoinHandle<()>>,
}

impl TableLock {
    pub(crate) fn take(loc: &Arc<PgLocation>) -> Result<Self, AuditError> {
        let pg = Pg::new(loc)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), AuditError>>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let done = std::thread::Builder::new()
            .name("audit-pg-lock".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(super::unavailable(e)));
                        return;
                    }
                };
                rt.block_on(async {
                    let client = match pg.connect().await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let sql = format!("BEGIN; LOCK TABLE {}.records IN EXCLUSIVE MODE", pg.schema());
                    if let Err(e) = client.batch_execute(&sql).await {
                        let _ = ready_tx.send(Err(pg.error(&e)));
                        return;
                    }
                    let _ = ready_tx.send(Ok(()));
                    // Held until released; the rollback ends it (so does the connection's end).
                    let _ = tokio::task::spawn_blocking(move || released.recv()).await;
                    let _ = client.batch_execute("ROLLBACK").await;
                });
            })
            .map_err(super::unavailable)?;
        ready_rx.recv().map_err(|_| super::unavailable("the lock's thread stopped"))??;
        Ok(Self {
            release: Some(release),
            done: Some(done),
        })
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(d) = self.done.take() {
            let _ = d.join();
        }
    }
}

impl super::StoreLock for TableLock {}
