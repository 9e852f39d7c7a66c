//! `capgate policy`: the Cedar schema an environment's policies are checked against
//! (`schema`), and a table of requests with the decisions they must get (`test`), run
//! against the policies as the gateway would decide them (`policy::offline`).

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Failure;
use crate::config::Config;
use crate::identity::Principal;
use crate::policy::offline;

fn load(config: &Path) -> Result<Config, Failure> {
    crate::config::load(config).map_err(|problems| Failure::Usage(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

/// Prints the schema generated from `env`'s contracts (cedar's JSON schema format).
pub(super) fn schema(config: &Path, env: &str) -> Result<(), Failure> {
    let config = load(config)?;
    let env = config
        .environment(env)
        .ok_or_else(|| Failure::Usage(format!("no environment `{env}` in the config")))?;
    let schema = crate::policy::cedar::schema_json(env.contracts.values().map(AsRef::as_ref));
    println!("{}", serde_json::to_string_pretty(&schema).unwrap_or_default());
    Ok(())
}

/// One row of a policy test table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The environment (may be left out when the config has one).
    env: Option<String>,
    /// The contract's key: a tool's name, `prompt:NAME`, `resource:NAME`.
    tool: String,
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    args: Map<String, Value>,
    /// When the call is made (RFC 3339); now by default.
    at: Option<String>,
    /// `allow`, `deny` or `pending`.
    expect: String,
    /// A policy id that must be among the decision's determining ones.
    policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

/// What the gateway decides for `case`, and the ids of the rules that decided it.
fn decide(config: &Config, case: &Case) -> Result<(&'static str, Vec<String>), String> {
    let env = match &case.env {
        Some(name) => config.environment(name).ok_or(format!("no environment `{name}`"))?,
        None => match config.environments.as_slice() {
            [only] => only,
            _ => return Err("the config has several environments: name one (`env`)".into()),
        },
    };
    let contract = env
        .contracts
        .get(&case.tool)
        .ok_or(format!("no contract `{}` in environment `{}`", case.tool, env.name))?;
    let caller = Principal {
        auth_method: "jwt".into(),
        cert: None,
        iss: env.issuers.first().map(|i| i.issuer.clone()).unwrap_or_default(),
        roles: case.roles.clone(),
        sub: case.sub.clone(),
        token_id: None,
    };
    let at = match &case.at {
        None => offline::now(),
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("`at = \"{t}\"`: {e}"))?
            .unix_timestamp(),
    };
    let upstream = config.upstream_name_of(&env.name, contract);
    let (word, ids) = offline::decide(&env.name, env.policies.as_deref(), contract, &upstream, &caller, &case.args, at);
    Ok((word.as_str(), ids))
}

/// Runs every case of the table in `file`; exit 1 on any mismatch.
pub(super) fn test(config: &Path, file: &Path) -> Result<(), Failure> {
    let config = load(config)?;
    let text = std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let table: Table = toml::from_str(&text).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    if table.cases.is_empty() {
        return Err(Failure::Usage(format!("{}: no `[[case]]` in the table", file.display())));
    }
    let mut failed = 0;
    for case in &table.cases {
        if !["allow", "deny", "pending"].contains(&case.expect.as_str()) {
            return Err(Failure::Usage(format!(
                "case `{}`: `expect = \"{}\"`: write allow, deny or pending",
                case.name, case.expect
            )));
        }
        match decide(&config, case) {
            Err(why) => return Err(Failure::Usage(format!("case `{}`: {why}", case.name))),
            Ok((got, ids)) => {
                let policy_ok = case.policy.as_ref().is_none_or(|p| ids.contains(p));
                if got == case.expect && policy_ok {
                    println!("ok       {}: {got} ({})", case.name, ids.join(", "));
                } else {
                    failed += 1;
                    let wanted = case.policy.as_ref().map_or(String::new(), |p| format!(" by `{p}`"));
                    println!(
                        "MISMATCH {}: expected {}{wanted}, got {got} ({})",
                        case.name,
                        case.expect,
                        ids.join(", ")
                    );
                }
            }
        }
    }
    println!("{} of {} cases as expected", table.cases.len() - failed, table.cases.len());
    if failed > 0 { Err(Failure::CheckFailed) } else { Ok(()) }
}
