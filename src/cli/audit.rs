//! `capgate audit verify | export | tail`: reading an environment's log, never writing it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Failure, load_config};
use crate::audit::{AuditReader, AuditRecord, export, verify};

pub(crate) struct Filter {
    pub(crate) decision: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) trace: Option<String>,
}

impl Filter {
    fn matches(&self, r: &AuditRecord) -> bool {
        self.decision.as_ref().is_none_or(|d| d == r.decision.as_str())
            && self.tool.as_ref().is_none_or(|t| Some(t) == r.tool.as_ref())
            && self
                .subject
                .as_ref()
                .is_none_or(|s| Some(s) == r.principal.as_ref().map(|p| &p.sub))
            && self.trace.as_ref().is_none_or(|t| t == r.trace_id.as_str())
    }
}

/// The environment's store, opened to read only; and the configuration.
fn store_of(config: &Path, env: &str) -> Result<(Arc<dyn AuditReader>, crate::config::Config), Failure> {
    let cfg = load_config(config)?;
    let e = cfg
        .environment(env)
        .ok_or_else(|| Failure::Usage(format!("no environment `{env}` in {}", config.display())))?;
    let reader = crate::audit::open_reader(&e.audit_store, env).map_err(|e| Failure::Usage(e.for_operator()))?;
    Ok((reader, cfg))
}

pub(crate) async fn verify(config: &Path, env: &str, public_key: Option<&Path>, checkpoints: Option<&Path>) -> Result<(), Failure> {
    let (store, cfg) = store_of(config, env)?;
    let e = cfg
        .environment(env)
        .ok_or_else(|| Failure::Usage(format!("no environment `{env}`")))?;
    // The current key and every retired one: checkpoints signed before a rotation keep
    // verifying with the key they were signed with.
    // With the signing key, approval rows are checked for their MAC too.
    let (keys, row_key) = match public_key {
        Some(p) => (vec![crate::keys::load_public_key(p).map_err(Failure::Usage)?], None),
        None => {
            let signing = crate::keys::load_signing_key(&e.audit_signing_key).map_err(Failure::Usage)?;
            let mut keys = vec![signing.verifying_key()];
            for p in &e.audit_previous_keys {
                keys.push(crate::keys::load_public_key(p).map_err(Failure::Usage)?);
            }
            (keys, Some(crate::audit::approval::RowKey::derive(&signing)))
        }
    };
    let external = checkpoints
        .map(Path::to_path_buf)
        .or_else(|| e.checkpoint_file.clone().filter(|p| p.exists()));
    let report = verify::verify(store.as_ref(), env, &keys, external.as_deref(), row_key.as_ref())
        .await
        .map_err(Failure::Usage)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    match report.first_problem {
        None => {
            let head = report.head.map_or_else(|| "empty".to_string(), |(s, h)| format!("head #{s} {h}"));
            println!(
                "ok: environment `{env}`: {} records, {} stored and {} external checkpoints verified; {head}",
                report.records, report.checkpoints, report.external_checkpoints
            );
            Ok(())
        }
        Some(p) => {
            println!("FAILED: environment `{env}`: {p}");
            println!("(records before it verified: {})", report.records);
            Err(Failure::CheckFailed)
        }
    }
}

async fn records(store: &dyn AuditReader, after: i64) -> Result<Vec<AuditRecord>, Failure> {
    store
        .records(after)
        .await
        .map_err(|e| Failure::Usage(e.for_operator()))?
        .into_iter()
        .map(|row| {
            serde_json::from_str(&row.record)
                .map_err(|e| Failure::Usage(format!("record #{} is unreadable: {e}; run `audit verify`", row.seq)))
        })
        .collect()
}

pub(crate) async fn export(config: &Path, env: &str, format: &str) -> Result<(), Failure> {
    let (store, _) = store_of(config, env)?;
    let all = records(store.as_ref(), 0).await?;
    let mut out = std::io::stdout().lock();
    for r in all {
        let line = match format {
            "jsonl" => export::jsonl(&r),
            "ocsf" => export::ocsf(&r).to_string(),
            other => return Err(Failure::Usage(format!("--format `{other}`: write `jsonl` or `ocsf`"))),
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(())
}

pub(crate) async fn tail(config: &Path, env: &str, lines: usize, follow: bool, filter: Filter) -> Result<(), Failure> {
    let (store, _) = store_of(config, env)?;
    let all = records(store.as_ref(), 0).await?;
    let mut last = all.last().map_or(0, |r| i64::try_from(r.seq).unwrap_or(0));
    let shown: Vec<&AuditRecord> = all.iter().filter(|r| filter.matches(r)).collect();
    for r in shown.iter().skip(shown.len().saturating_sub(lines)) {
        println!("{}", export::tail_line(r));
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for r in records(store.as_ref(), last).await? {
            last = last.max(i64::try_from(r.seq).unwrap_or(last));
            if filter.matches(&r) {
                println!("{}", export::tail_line(&r));
            }
        }
        let _ = std::io::stdout().flush();
    }
}
