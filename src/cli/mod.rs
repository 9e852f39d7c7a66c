//! Command-line interface: one subcommand per module. Owns exit codes: 0 success, 1 a check
//! or verification failed, 2 usage or configuration error.

mod approvals;
mod audit;
mod check;
mod contracts;
mod demo;
mod demo_traffic;
mod keys;
mod policy;
mod probe;
mod serve;
mod tabletop;
mod token;
pub(crate) mod upstream_demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capgate",
    version,
    about = "A zero-trust gateway for agent tools: every MCP tool a narrow capability contract"
)]
struct Cli {
    /// How log lines are written to stderr: `text`, or `json` (one object per line, with the
    /// request's trace ID under `span`)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (every environment of the config, or one with --env)
    Serve {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: Option<String>,
        /// Serve one local client over stdin/stdout; the identity is the token in CAPGATE_TOKEN
        #[arg(long, requires = "env")]
        stdio: bool,
        /// The control socket `capgate reload` reaches this gateway on (default: capgate.sock beside the config)
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// Reload the contracts and policies of a running gateway (as SIGHUP does) and report, per environment, whether they were applied or refused (exit 1 if any was refused)
    Reload {
        #[arg(long)]
        config: PathBuf,
        /// The gateway's control socket (default: capgate.sock beside the config)
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// Write a self-contained demo under ./capgate-demo/ (if absent) and run it
    Demo {
        #[arg(long, default_value = "capgate-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 8477)]
        port: u16,
        /// Write the demo and print its tokens, but do not start the gateway
        #[arg(long)]
        no_serve: bool,
        /// Do not send a new demo's first traffic (a few hundred example calls that fill the
        /// console's audit explorer)
        #[arg(long)]
        no_traffic: bool,
    },
    /// Validate a config and its contracts; list every problem (exit 1 if any)
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Skip connecting to upstreams (contract-to-tool mapping is then not checked)
        #[arg(long)]
        offline: bool,
    },
    /// Cedar policies: print the schema they are checked against, run a table of expected decisions
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Contracts: pin the upstream tool definitions they were written against
    Contracts {
        #[command(subcommand)]
        command: ContractsCommand,
    },
    /// The audit store: create or update an environment's PostgreSQL schema
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Read an environment's audit log: verify it, export it, follow it
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The approval queue: list requests, approve or deny one (token in CAPGATE_TOKEN)
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Fire the denied paths at a running gateway and check each was refused and recorded
    Probe {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
        /// The gateway's URL (its /mcp endpoint or its base)
        #[arg(long)]
        url: String,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// Also write a JUnit XML report
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Lock the audit store to prove calls are refused while it is down (not for production)
        #[arg(long)]
        simulate_outage: bool,
        /// Do not read the audit log (when the store is not reachable from here)
        #[arg(long)]
        skip_audit: bool,
    },
    /// Run scripted threat scenarios (TOML) against a running gateway
    Tabletop {
        /// Scenario files
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long)]
        url: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Development tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Key material
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The built-in demo upstream (an MCP server on stdio); the gateway starts it itself
    #[command(hide = true)]
    UpstreamDemo {
        #[arg(long)]
        state: PathBuf,
        /// Serve streamable HTTP on this address instead of stdio
        #[arg(long)]
        http: Option<String>,
        /// Keep no calls log (for benchmarks)
        #[arg(long)]
        no_record: bool,
        /// Over HTTP, serve without sessions and answer with JSON bodies instead of event streams
        #[arg(long, requires = "http")]
        json_response: bool,
        /// Over HTTP, offer only the revisions with sessions (2025-11-25 and before), as a
        /// server that predates 2026-07-28 does
        #[arg(long, requires = "http")]
        sessions_only: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the Cedar schema generated from an environment's contracts (JSON schema format)
    Schema {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
    },
    /// Run a table of requests (TOML `[[case]]`s) and their expected decisions; exit 1 on a mismatch
    Test {
        file: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the whole hash chain and every signed checkpoint; name the first bad record (exit 1)
    Verify {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
        /// The audit public key (PEM); by default derived from the config's signing key
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// An external copy of the checkpoints (JSON lines); default: the config's checkpoint_file
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Write every record to stdout, as JSON lines or OCSF API Activity events
    Export {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "ocsf"])]
        format: String,
    },
    /// Print the newest records, one escaped line each; --follow keeps printing new ones
    Tail {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        trace: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Requests you may decide (default: pending ones)
    List {
        /// The gateway's URL (default: CAPGATE_URL)
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "pending", value_parser = ["pending", "approved", "denied", "expired", "executed", "all"])]
        status: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request; the reason goes into the audit log
    Approve {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        url: Option<String>,
    },
    /// Deny a request; the reason goes into the audit log
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a JWT signed by the environment's development issuer key (refused in production)
    Mint {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long)]
        sub: String,
        /// Comma-separated roles
        #[arg(long, default_value = "")]
        roles: String,
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Create the schema (or bring it to this version; safe to run again)
    Init {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        env: String,
        /// Connect as this role, which owns the schema; the configured (gateway) role is then
        /// granted only reading and appending. Its password, if any, in CAPGATE_STORE_OWNER_PASSWORD.
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Subcommand)]
enum ContractsCommand {
    /// Pin each routed tool's current upstream definition (after reviewing it) in the pins file
    Pin {
        #[arg(long)]
        config: PathBuf,
        /// One environment (default: every one)
        #[arg(long)]
        env: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an Ed25519 key pair (PKCS#8 PEM, mode 0600) and a JWKS with its public key
    Generate {
        /// Folder to write into
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Base name of the files: NAME.pem, NAME.pub.pem, NAME.jwks.json
        #[arg(long)]
        name: String,
    },
}

/// Error type of the CLI: which exit code, and what to say.
pub(crate) enum Failure {
    /// A check or verification found problems (exit 1); they were printed already.
    CheckFailed,
    /// Usage or configuration error (exit 2).
    Usage(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Usage(format!("{e:#}"))
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=error"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => fmt.try_init(),
        // The request span's fields (its trace ID, the audit records' own) on every line
        // logged within it, for a log pipeline to join with the audit log and the traces.
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).try_init(),
    };
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capgate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                env,
                stdio,
                control,
            } => serve::run(&config, env.as_deref(), stdio, control).await,
            Command::Reload { config, control } => serve::reload(&config, control),
            Command::Demo {
                dir,
                port,
                no_serve,
                no_traffic,
            } => demo::run(&dir, port, no_serve, no_traffic).await,
            Command::Check { config, offline } => check::run(&config, offline).await,
            Command::Policy {
                command: PolicyCommand::Schema { config, env },
            } => policy::schema(&config, &env),
            Command::Policy {
                command: PolicyCommand::Test { file, config },
            } => policy::test(&config, &file),
            Command::Audit {
                command:
                    AuditCommand::Verify {
                        config,
                        env,
                        public_key,
                        checkpoints,
                    },
            } => audit::verify(&config, &env, public_key.as_deref(), checkpoints.as_deref()).await,
            Command::Audit {
                command: AuditCommand::Export { config, env, format },
            } => audit::export(&config, &env, &format).await,
            Command::Audit {
                command:
                    AuditCommand::Tail {
                        config,
                        env,
                        lines,
                        follow,
                        decision,
                        tool,
                        subject,
                        trace,
                    },
            } => {
                audit::tail(
                    &config,
                    &env,
                    lines,
                    follow,
                    audit::Filter {
                        decision,
                        tool,
                        subject,
                        trace,
                    },
                )
                .await
            }
            Command::Approvals {
                command: ApprovalsCommand::List { url, status, json },
            } => approvals::list(url.as_deref(), &status, json).await,
            Command::Approvals {
                command: ApprovalsCommand::Approve { id, reason, url },
            } => approvals::decide(url.as_deref(), &id, "approve", &reason).await,
            Command::Approvals {
                command: ApprovalsCommand::Deny { id, reason, url },
            } => approvals::decide(url.as_deref(), &id, "deny", &reason).await,
            Command::Probe {
                config,
                env,
                url,
                json,
                junit,
                simulate_outage,
                skip_audit,
            } => {
                probe::run(probe::Args {
                    config: &config,
                    env: &env,
                    url: &url,
                    json,
                    junit: junit.as_deref(),
                    simulate_outage,
                    skip_audit,
                })
                .await
            }
            Command::Tabletop {
                files,
                config,
                env,
                url,
                json,
                junit,
            } => tabletop::run(&files, &config, &env, &url, json, junit.as_deref()).await,
            Command::Token {
                command:
                    TokenCommand::Mint {
                        config,
                        env,
                        sub,
                        roles,
                        ttl,
                    },
            } => token::mint(&config, &env, &sub, &roles, &ttl),
            Command::Store {
                command: StoreCommand::Init { config, env, owner },
            } => store_init(&config, &env, owner).await,
            Command::Contracts {
                command: ContractsCommand::Pin { config, env },
            } => contracts::pin(&config, env.as_deref()).await,
            Command::Keys {
                command: KeysCommand::Generate { out, name },
            } => keys::generate(&out, &name).map(|_| ()),
            Command::UpstreamDemo {
                state,
                http,
                no_record,
                json_response,
                sessions_only,
            } => upstream_demo::run(&state, http.as_deref(), no_record, json_response, sessions_only).await,
        }
    });
    // Upstream child processes and listeners end with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::CheckFailed) => ExitCode::from(1),
        Err(Failure::Usage(msg)) => {
            eprintln!("capgate: {msg}");
            ExitCode::from(2)
        }
    }
}

async fn store_init(config: &std::path::Path, env: &str, owner: Option<String>) -> Result<(), Failure> {
    let config = load_config(config)?;
    let e = config
        .environment(env)
        .ok_or_else(|| Failure::Usage(format!("no environment `{env}`")))?;
    let password = std::env::var("CAPGATE_STORE_OWNER_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(crate::secret::Secret::new);
    let owner = owner.map(|o| (o, password));
    let said = crate::audit::init_store(&e.audit_store, env, owner)
        .await
        .map_err(|e| Failure::Usage(e.for_operator()))?;
    println!("{said}");
    Ok(())
}

/// Loads a config, printing every problem.
pub(crate) fn load_config(path: &std::path::Path) -> Result<crate::config::Config, Failure> {
    crate::config::load(path).map_err(|problems| {
        Failure::Usage(format!(
            "the configuration has {} problem(s):\n{}",
            problems.len(),
            problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
        ))
    })
}
