//! The store's schema, its version, and who may do what in it.
//!
//! `capgate store init` creates (or brings up to date) an environment's schema in one
//! transaction, safe to run again; the gateway only checks that the schema is of the
//! version it was built for and belongs to its environment, and refuses to start otherwise.
//! Records and checkpoints are append-only in the database itself: a trigger refuses
//! `UPDATE`, `DELETE` and `TRUNCATE` on them for every role; a gateway role other than the
//! schema's owner is granted `SELECT, INSERT` there and nothing more.

use tokio_postgres::Client;

use super::Pg;
use crate::audit::AuditError;

/// The schema version this build reads and writes.
pub(crate) const VERSION: i64 = 1;

/// Version 1, in statements that can run again: every object is created only if absent,
/// and the trigger function and triggers are replaced.
fn version_1(s: &str) -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.records (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    ts TEXT NOT NULL,
    env TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    tool TEXT,
    subject TEXT,
    approval_id TEXT,
    decision_record BIGINT,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_approval ON {s}.records (approval_id) WHERE approval_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_outcome ON {s}.records (decision_record) WHERE decision_record IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_calls ON {s}.records (seq)
    WHERE reason_code IN ('allowed', 'executed', 'backend_error', 'outcome_unknown');
CREATE TABLE IF NOT EXISTS {s}.checkpoints (seq BIGINT PRIMARY KEY, checkpoint TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.approvals (
    id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    tool TEXT NOT NULL,
    requester_iss TEXT NOT NULL,
    requester_sub TEXT NOT NULL,
    args_digest TEXT NOT NULL,
    contract_digest TEXT NOT NULL,
    args TEXT NOT NULL,
    side_effects TEXT NOT NULL,
    approver_roles TEXT NOT NULL,
    required BIGINT NOT NULL,
    trace_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    mac TEXT
);
CREATE INDEX IF NOT EXISTS approvals_binding ON {s}.approvals (requester_sub, tool, args_digest);
CREATE INDEX IF NOT EXISTS approvals_status ON {s}.approvals (status, expires_ms);
CREATE INDEX IF NOT EXISTS approvals_page ON {s}.approvals (env, created_ms DESC, id DESC);
CREATE TABLE IF NOT EXISTS {s}.approval_votes (
    approval_id TEXT NOT NULL REFERENCES {s}.approvals (id),
    n BIGSERIAL NOT NULL,
    approver_iss TEXT NOT NULL,
    approver_sub TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (approval_id, approver_iss, approver_sub)
);
CREATE OR REPLACE FUNCTION {s}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'capgate: % on %.% refused: the audit log is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON {s}.records
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE OR REPLACE TRIGGER records_no_truncate BEFORE TRUNCATE ON {s}.records
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
CREATE OR REPLACE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON {s}.checkpoints
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE OR REPLACE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON {s}.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
"#
    )
}

/// A role name as SQL takes it: quoted, inner quotes doubled.
fn quoted(role: &str) -> String {
    format!("\"{}\"", role.replace('"', "\"\""))
}

/// What the gateway's role may do, when it is not the schema's owner: read everything,
/// append records and checkpoints, open and move approval requests, add votes.
fn grants(s: &str, role: &str) -> String {
    let r = quoted(role);
    format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r};
         GRANT USAGE ON SCHEMA {s} TO {r};
         GRANT SELECT ON {s}.meta TO {r};
         GRANT SELECT, INSERT ON {s}.records, {s}.checkpoints TO {r};
         GRANT SELECT, INSERT, UPDATE ON {s}.approvals TO {r};
         GRANT SELECT, INSERT ON {s}.approval_votes TO {r};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r};"
    )
}

/// What `store init` did.
pub(crate) struct Initialized {
    /// The version the schema had before (0: none).
    pub(crate) from: i64,
    /// The role granted the gateway's rights, when it is not the one that ran init.
    pub(crate) granted: Option<String>,
}

/// Creates or updates the schema of `env` as the connected role, and grants `gateway_role`
/// (when it is another role) the gateway's rights. One transaction, under an advisory lock,
/// so two inits at once do not race.
pub(crate) async fn init(pg: &Pg, client: &mut Client, env: &str, gateway_role: Option<&str>) -> Result<Initialized, AuditError> {
    let s = pg.schema();
    let tx = client.transaction().await.map_err(|e| pg.error(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&pg.chain_lock(env)])
        .await
        .map_err(|e| pg.error(&e))?;
    let (from, owner) = read_meta(pg, &tx).await?;
    if let Some(owner) = owner.filter(|o| o != env) {
        return Err(AuditError::Unreadable(format!(
            "schema `{s}` belongs to environment `{owner}`, not `{env}`: give this environment a schema of its own"
        )));
    }
    if from > VERSION {
        return Err(AuditError::Unreadable(format!(
            "schema `{s}` is at version {from}, newer than this capgate (version {VERSION}): use a capgate of that version"
        )));
    }
    tx.batch_execute(&version_1(s)).await.map_err(|e| pg.error(&e))?;
    tx.execute(
        &format!("INSERT INTO {s}.meta (key, value) VALUES ('env', $1) ON CONFLICT (key) DO NOTHING"),
        &[&env],
    )
    .await
    .map_err(|e| pg.error(&e))?;
    tx.execute(
        &format!("INSERT INTO {s}.meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"),
        &[&VERSION.to_string()],
    )
    .await
    .map_err(|e| pg.error(&e))?;
    let me: String = tx
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| pg.error(&e))?
        .get(0);
    let granted = match gateway_role {
        Some(role) if role != me => {
            tx.batch_execute(&grants(s, role)).await.map_err(|e| pg.error(&e))?;
            Some(role.to_string())
        }
        _ => None,
    };
    tx.commit().await.map_err(|e| pg.error(&e))?;
    Ok(Initialized { from, granted })
}

/// The schema's version (0 if it has no capgate tables) and the environment it belongs to.
async fn read_meta(pg: &Pg, client: &impl tokio_postgres::GenericClient) -> Result<(i64, Option<String>), AuditError> {
    let s = pg.schema();
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{s}.meta")])
        .await
        .map_err(|e| pg.error(&e))?
        .get::<_, bool>(0);
    if !exists {
        return Ok((0, None));
    }
    let rows = client
        .query(
            &format!("SELECT key, value FROM {s}.meta WHERE key IN ('schema_version', 'env')"),
            &[],
        )
        .await
        .map_err(|e| pg.error(&e))?;
    let mut version = 0;
    let mut env = None;
    for r in rows {
        let (k, v): (String, String) = (r.get(0), r.get(1));
        match k.as_str() {
            "schema_version" => version = v.parse().unwrap_or(i64::MAX),
            _ => env = Some(v),
        }
    }
    Ok((version, env))
}

/// What a gateway checks before it serves: the schema exists, is of this build's version
/// and belongs to `env`. The error says what to run.
pub(crate) async fn check(pg: &Pg, client: &Client, env: &str) -> Result<(), AuditError> {
    let s = pg.schema();
    let (version, owner) = read_meta(pg, client).await?;
    let init = format!("run `capgate store init --config CONFIG --env {env}`");
    if version == 0 {
        return Err(AuditError::Unreadable(format!("schema `{s}` holds no capgate store: {init}")));
    }
    if let Some(owner) = owner.filter(|o| o != env) {
        return Err(AuditError::Unreadable(format!(
            "schema `{s}` belongs to environment `{owner}`, not `{env}`"
        )));
    }
    if version < VERSION {
        return Err(AuditError::Unreadable(format!(
            "schema `{s}` is at version {version}; this capgate needs version {VERSION}: {init}"
        )));
    }
    if version > VERSION {
        return Err(AuditError::Unreadable(format!(
            "schema `{s}` is at version {version}, newer than this capgate (version {VERSION})"
        )));
    }
    Ok(())
}

/// What `capgate check` says about the gateway's role: problems (the append-only triggers
/// missing or disabled) and warnings (the role could change records itself).
pub(crate) async fn review(pg: &Pg, client: &Client) -> Result<(Vec<String>, Vec<String>), AuditError> {
    let s = pg.schema();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let row = client
        .query_one(
            "SELECT current_user::text,
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                    pg_get_userbyid(c.relowner) = current_user,
                    has_table_privilege(c.oid, 'UPDATE'),
                    has_table_privilege(c.oid, 'DELETE'),
                    has_table_privilege(c.oid, 'TRUNCATE'),
                    (SELECT count(*) FROM pg_trigger t
                       WHERE t.tgrelid = c.oid AND t.tgenabled <> 'D'
                         AND t.tgname IN ('records_append_only', 'records_no_truncate'))
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&format!("{s}.records")],
        )
        .await
        .map_err(|e| pg.error(&e))?;
    let (role, superuser, owner): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let can: Vec<&str> = [(3, "UPDATE"), (4, "DELETE"), (5, "TRUNCATE")]
        .into_iter()
        .filter(|(i, _)| row.get::<_, bool>(*i))
        .map(|(_, p)| p)
        .collect();
    if row.get::<_, i64>(6) < 2 {
        problems.push(format!(
            "the append-only triggers on `{s}.records` are missing or disabled: run `capgate store init`"
        ));
    }
    let why = if superuser {
        Some("is a superuser".to_string())
    } else if owner {
        Some("owns the table".to_string())
    } else if !can.is_empty() {
        Some(format!("holds {}", can.join(", ")))
    } else {
        None
    };
    if let Some(why) = why {
        warnings.push(format!(
            "the gateway's database role `{role}` {why} on `{s}.records`: only the append-only trigger stops it changing records, and it could drop the trigger; run `capgate store init --owner ROLE` as another role so that this one may only append"
        ));
    }
    if pg.location().sslmode == crate::config::SslMode::Require {
        warnings.push(
            "`sslmode = \"require\"` encrypts the connection but does not verify the server: use verify-full with sslrootcert".into(),
        );
    }
    if pg.location().sslmode == crate::config::SslMode::Disable && !pg.location().is_local() {
        warnings.push("the connection to a database on another machine is not encrypted (`sslmode = \"disable\"`)".into());
    }
    Ok((problems, warnings))
}
