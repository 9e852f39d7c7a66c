//! `capgate demo`: a self-contained quickstart. Writes keys, a config and contracts under
//! `./capgate-demo/` when absent, mints tokens for a few roles, and serves the `dev`
//! environment with the built-in demo upstream.

use std::path::Path;

use serde_json::json;

use super::{Failure, keys, load_config, token};

const SEED_CONTRACT: &str = r#"{
"tool": "create_firewall_block",
"allowed_roles": ["incident_commander"],
"arg_schema": {"ip": "cidr", "ttl_minutes": "1-240"},
"requires_approval": true
}
"#;

const TICKET_CONTRACTS: &str = r#"# Ticket tools of the demo. Each [[contract]] is one capability contract.

[[contract]]
tool = "create_ticket"
description = "Open a ticket in the security queue"
allowed_roles = ["oncall", "incident_commander"]
side_effects = "write"
rate_limit = "30/min"
sensitive = ["reporter_email"]
fixed_args = { queue = "SEC" }
[contract.arg_schema]
title = "string(1..120)"
severity = "enum(low|medium|high|critical)"
reporter_email = { type = "regex", pattern = "[^@\\s]{1,64}@[a-z0-9.-]{1,190}", optional = true }

[[contract]]
tool = "list_tickets"
description = "List tickets"
allowed_roles = ["oncall", "incident_commander", "viewer"]
side_effects = "read"
arg_schema = {}

[[contract]]
tool = "list_firewall_blocks"
description = "List active firewall blocks"
allowed_roles = ["incident_commander", "security_lead"]
side_effects = "read"
arg_schema = {}
"#;

const SURFACE_CONTRACTS: &str = r#"# A prompt and resources of the demo upstream, governed like its tools. The upstream also
# has a prompt (`admin_override`) and resources (`secrets://…`) no contract names: never exposed.

[[contract]]
prompt = "incident_summary"
description = "Summarise an incident for an audience"
allowed_roles = ["oncall", "incident_commander"]
arg_schema = { incident = "regex(INC-[0-9]{1,6})", audience = "enum(engineers|executives)?" }

[[contract]]
resource = "ticket_summary"
description = "How many tickets there are"
uri = "tickets://summary"
mime_type = "text/plain"
allowed_roles = ["oncall", "incident_commander", "viewer"]

[[contract]]
resource = "runbook"
description = "A page of a service's runbook"
uri = "runbook://{service}/{page}"
allowed_roles = ["oncall", "incident_commander"]
arg_schema = { service = "enum(db|web)", page = "string(1..40)" }
"#;

fn config_text(port: u16, dir: &Path) -> String {
    let state = dir.join("state");
    format!(
        r#"# capgate demo configuration: one development environment on loopback.

contracts = "contracts/"

[[environment]]
name = "dev"
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/mcp"
approver_roles = ["security_lead"]
roles = ["oncall", "incident_commander", "security_lead", "viewer", "auditor"]

[environment.identity]
issuer = "https://idp.capgate-demo.invalid/dev"
jwks = "keys/dev-issuer.jwks.json"
roles_claim = "roles"
mint_key = "keys/dev-issuer.pem"

[environment.audit]
store = "sqlite://data/dev-audit.db"
signing_key = "keys/dev-audit.pem"

[[upstream]]
name = "demo"
environment = "dev"
builtin = "demo"
args = ["--state", {state:?}]
env = {{ DEMO_API_TOKEN = "demo-upstream-credential-never-shown-to-agents" }}
"#
    )
}

fn write_demo(dir: &Path, port: u16) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("contracts"))?;
    std::fs::create_dir_all(dir.join("state"))?;
    std::fs::create_dir_all(dir.join("data"))?;
    let abs = std::fs::canonicalize(dir)?;
    keys::generate_files(&dir.join("keys"), "dev-issuer")?;
    keys::generate_files(&dir.join("keys"), "dev-audit")?;
    std::fs::write(dir.join("contracts/create_firewall_block.json"), SEED_CONTRACT)?;
    std::fs::write(dir.join("contracts/tickets.toml"), TICKET_CONTRACTS)?;
    std::fs::write(dir.join("contracts/surface.toml"), SURFACE_CONTRACTS)?;
    std::fs::write(dir.join("capgate.toml"), config_text(port, &abs))?;
    Ok(())
}

pub(super) async fn run(dir: &Path, port: u16, no_serve: bool, no_traffic: bool) -> Result<(), Failure> {
    let config_path = dir.join("capgate.toml");
    let fresh = !config_path.exists();
    if fresh {
        write_demo(dir, port)?;
        println!("wrote a new demo under {}/", dir.display());
    } else {
        println!("using the existing demo under {}/ (delete it to start afresh)", dir.display());
    }
    let config = load_config(&config_path)?;
    let env = config
        .environment("dev")
        .cloned()
        .ok_or_else(|| Failure::Usage("the demo config has no `dev` environment".into()))?;
    let people = [
        ("alice", "oncall"),
        ("ivan", "incident_commander"),
        ("sam", "security_lead"),
        ("vera", "viewer"),
        ("audrey", "auditor"),
    ];
    let mut by_role = Vec::new();
    let mut tokens = serde_json::Map::new();
    let mut env_lines = String::new();
    for (sub, role) in people {
        let t = token::mint_for(&env, sub, &[role.to_string()], 8 * 3600)?;
        env_lines.push_str(&format!("TOKEN_{}={t}\n", role.to_uppercase()));
        by_role.push((role.to_string(), t.clone()));
        tokens.insert(role.to_string(), json!({"sub": sub, "token": t}));
    }
    std::fs::write(dir.join("tokens.env"), &env_lines).map_err(|e| Failure::Usage(e.to_string()))?;
    let url = env.public_url.clone();
    println!();
    println!("capgate demo: environment `dev` at {url}");
    println!(
        "tokens (8 h) for alice (oncall), ivan (incident_commander), sam (security_lead), vera (viewer), audrey (auditor) are in {}/tokens.env",
        dir.display()
    );
    println!();
    println!("try it:");
    println!("  source {}/tokens.env", dir.display());
    println!(
        "  curl -s {url} -H \"Authorization: Bearer $TOKEN_ONCALL\" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"create_ticket\",\"arguments\":{{\"title\":\"suspicious login\",\"severity\":\"high\"}}}}}}'"
    );
    println!(
        "  npx @modelcontextprotocol/inspector --cli {url} --transport http --header \"Authorization: Bearer $TOKEN_ONCALL\" --method tools/list"
    );
    println!(
        "  approve pending calls at {}/console/ (sign in with $TOKEN_SECURITY_LEAD) or: CAPGATE_TOKEN=$TOKEN_SECURITY_LEAD capgate approvals list --url {url}",
        url.trim_end_matches("/mcp")
    );
    println!(
        "  read the audit log, its chart and the contracts at {}/console/ (sign in with $TOKEN_AUDITOR)",
        url.trim_end_matches("/mcp")
    );
    println!();
    if no_serve {
        return Ok(());
    }
    // A new demo's log starts with traffic of every kind, for the explorer to show.
    let traffic = (fresh && !no_traffic).then_some(by_role);
    let control = crate::server::control::Control {
        socket: Some(crate::server::control::default_socket(&config_path)),
        config: config_path,
    };
    crate::server::serve_http(&config, vec![env], control, move |e, addr, _| {
        println!("capgate: environment `{}` listening on http://{addr}/mcp (Ctrl-C to stop)", e.name);
        if let Some(tokens) = traffic.clone() {
            println!(
                "capgate: sending the demo's first {} example requests (see them in the console's audit log)",
                super::demo_traffic::REQUESTS
            );
            tokio::spawn(super::demo_traffic::send(format!("http://{addr}/mcp"), tokens));
        }
    })
    .await
    .map_err(Failure::from)
}
