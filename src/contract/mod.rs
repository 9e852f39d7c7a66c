//! Capability contracts: loading them (the seed's JSON exactly as written, or TOML), compiling
//! their argument types once, and publishing each as an MCP tool whose `inputSchema` is the
//! same narrow interface that is enforced.
//!
//! INVARIANT: a contract that cannot be fully understood is refused at load; nothing about a
//! contract is guessed at call time.

pub(crate) mod types;
pub(crate) mod uri;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

pub(crate) use types::{ArgSpec, ArgType, IpFamily};
pub(crate) use uri::UriTemplate;

/// What a contract governs: a tool (`tools/call`), a prompt (`prompts/get`) or a resource
/// (`resources/read`). Each kind is listed, decided, validated and audited the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tool,
    Prompt,
    Resource,
}

impl Kind {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
        }
    }

    /// The key of a contract of this kind named `name` in an environment's contracts:
    /// a tool's name as it is (tool names hold no `:`), the others with their kind before it.
    pub(crate) fn key(self, name: &str) -> String {
        match self {
            Kind::Tool => name.to_string(),
            Kind::Prompt | Kind::Resource => format!("{}:{name}", self.noun()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SideEffects {
    None,
    Read,
    Write,
    Destructive,
}

impl SideEffects {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SideEffects::None => "none",
            SideEffects::Read => "read",
            SideEffects::Write => "write",
            SideEffects::Destructive => "destructive",
        }
    }
}

/// Where an allowed call goes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendRef {
    pub(crate) upstream: String,
    /// The upstream's name for the tool (or, as `prompt`, for the prompt).
    #[serde(alias = "prompt")]
    pub(crate) tool: Option<String>,
}

/// A contract file's fields, as written. Unknown fields are refused so that a misspelt
/// `requires_aproval` can never silently disable a control.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContract {
    /// Exactly one of `tool`, `prompt`, `resource` names what the contract governs.
    pub(crate) tool: Option<String>,
    pub(crate) prompt: Option<String>,
    pub(crate) resource: Option<String>,
    /// A resource's URI or URI template (`runbook://{service}`).
    pub(crate) uri: Option<String>,
    pub(crate) mime_type: Option<String>,
    pub(crate) allowed_roles: Vec<String>,
    /// Required for a tool (the seed's form); a prompt or a fixed resource may have none.
    pub(crate) arg_schema: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub(crate) requires_approval: bool,
    pub(crate) description: Option<String>,
    pub(crate) environments: Option<Vec<String>>,
    pub(crate) side_effects: Option<SideEffects>,
    pub(crate) approver_roles: Option<Vec<String>>,
    pub(crate) approval_ttl: Option<String>,
    pub(crate) approvals_required: Option<u32>,
    pub(crate) approval_wait: Option<String>,
    pub(crate) rate_limit: Option<String>,
    #[serde(default)]
    pub(crate) sensitive: Vec<String>,
    pub(crate) backend: Option<BackendRef>,
    #[serde(default)]
    pub(crate) fixed_args: BTreeMap<String, Value>,
    /// What the upstream may ask the caller during a call of this tool (or a get of this
    /// prompt, a read of this resource); nothing unless named.
    #[serde(default)]
    pub(crate) client_requests: Vec<ClientAsk>,
}

/// A request an upstream may send the caller of a tool while the call runs (MCP's
/// server-to-client requests). Each is relayed only where the tool's contract names it and
/// the caller's client declared the capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientAsk {
    /// `sampling/createMessage`: the caller's model is asked.
    Sampling,
    /// `elicitation/create`: the caller's user is asked.
    Elicitation,
    /// `roots/list`: the caller's roots are asked for.
    Roots,
}

impl ClientAsk {
    pub(crate) fn of_method(method: &str) -> Option<Self> {
        match method {
            "sampling/createMessage" => Some(Self::Sampling),
            "elicitation/create" => Some(Self::Elicitation),
            "roots/list" => Some(Self::Roots),
            _ => None,
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            Self::Sampling => "sampling",
            Self::Elicitation => "elicitation",
            Self::Roots => "roots",
        }
    }
}

/// One offending argument and the rule it broke; never its value.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub(crate) struct ArgError {
    pub(crate) argument: String,
    pub(crate) rule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) count: u32,
    pub(crate) per: Duration,
}

/// A loaded, compiled contract. Shared read-only by every call.
#[derive(Debug)]
pub(crate) struct Contract {
    pub(crate) kind: Kind,
    /// The name: a tool's, a prompt's, a resource's (for a resource, the name it is listed
    /// under; callers name it by URI).
    pub(crate) tool: String,
    /// Where it sits in an environment's contracts ([`Kind::key`]).
    pub(crate) key: String,
    /// A resource's URI template.
    pub(crate) uri: Option<UriTemplate>,
    pub(crate) mime_type: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) allowed_roles: Vec<String>,
    /// The id of each role rule (`allowed_roles:ROLE`), in the order of `allowed_roles`: what
    /// a policy decision names when that role let a caller in. Built once.
    pub(crate) role_rule_ids: Vec<Arc<str>>,
    pub(crate) args: BTreeMap<String, ArgSpec>,
    pub(crate) requires_approval: bool,
    pub(crate) environments: Option<Vec<String>>,
    pub(crate) side_effects: SideEffects,
    pub(crate) approver_roles: Option<Vec<String>>,
    pub(crate) approval_ttl: Duration,
    /// Distinct approvers a request needs (1 unless the contract says more).
    pub(crate) approvals_required: u32,
    /// How long a call waits for the decision unless the caller asks otherwise (0: answer
    /// pending at once).
    pub(crate) approval_wait: Duration,
    pub(crate) rate_limit: Option<RateLimit>,
    /// What the upstream may ask the caller during a call (tools only).
    pub(crate) client_requests: Vec<ClientAsk>,
    pub(crate) backend: Option<BackendRef>,
    pub(crate) fixed_args: Map<String, Value>,
    /// SHA-256 of the contract's canonical JSON: ties an audit record to the exact rule
    /// that decided it.
    pub(crate) digest: String,
    /// Where it was loaded from, for error messages.
    pub(crate) source: String,
    /// The published tool, built once.
    pub(crate) published: Arc<Map<String, Value>>,
}

impl Contract {
    pub(crate) fn applies_to(&self, env: &str) -> bool {
        self.environments.as_ref().is_none_or(|envs| envs.iter().any(|e| e == env))
    }

    pub(crate) fn allows_any(&self, roles: &[String]) -> bool {
        self.allowed_roles.iter().any(|r| roles.contains(r))
    }

    pub(crate) fn is_sensitive(&self, arg: &str) -> bool {
        self.args.get(arg).is_some_and(|a| a.sensitive)
    }

    /// The tool as MCP publishes it: name, description, JSON Schema, side-effect hints.
    pub(crate) fn to_tool(&self) -> rmcp::model::Tool {
        use rmcp::model::{Tool, ToolAnnotations};
        let ann = ToolAnnotations::new()
            .read_only(matches!(self.side_effects, SideEffects::None | SideEffects::Read))
            .destructive(self.side_effects == SideEffects::Destructive)
            .open_world(true);
        let mut t = Tool::new(
            self.tool.clone(),
            self.description.clone().unwrap_or_default(),
            self.published.clone(),
        )
        .with_annotations(ann);
        if self.requires_approval {
            t = t.with_meta(rmcp::model::MetaObject(
                [("capgate/requires_approval".to_string(), Value::Bool(true))].into_iter().collect(),
            ));
        }
        t
    }
}

/// How a resource contract is listed.
pub(crate) enum Listing {
    Fixed(rmcp::model::Resource),
    Template(rmcp::model::ResourceTemplate),
}

impl Contract {
    /// The prompt as MCP lists it: name, description, arguments (all strings).
    pub(crate) fn to_prompt(&self) -> rmcp::model::Prompt {
        let args = self
            .args
            .iter()
            .map(|(name, spec)| {
                let mut a = rmcp::model::PromptArgument::new(name.clone());
                a.description = spec.description.clone();
                a.required = Some(!spec.optional);
                a
            })
            .collect::<Vec<_>>();
        rmcp::model::Prompt::new(self.tool.clone(), self.description.clone(), Some(args))
    }

    /// A fixed URI lists as a resource, a template as a resource template.
    pub(crate) fn to_resource(&self) -> Listing {
        let uri = self.uri.as_ref().map_or("", |u| u.as_str()).to_string();
        if self.uri.as_ref().is_some_and(UriTemplate::is_fixed) {
            let mut r = rmcp::model::Resource::new(uri, self.tool.clone());
            r.description = self.description.clone();
            r.mime_type = self.mime_type.clone();
            Listing::Fixed(r)
        } else {
            let mut t = rmcp::model::ResourceTemplate::new(uri, self.tool.clone());
            t.description = self.description.clone();
            t.mime_type = self.mime_type.clone();
            Listing::Template(t)
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub(crate) struct ContractError {
    pub(crate) source_name: String,
    pub(crate) message: String,
}

fn cerr(source: &str, message: impl Into<String>) -> ContractError {
    ContractError {
        source_name: source.to_string(),
        message: message.into(),
    }
}

/// `15m`, `30s`, `2h`, `1d`.
/// A comma-separated list of names (roles): trimmed, empty entries dropped.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_string).collect()
}

pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    if unit == "ms" {
        return (n > 0).then(|| Duration::from_millis(n));
    }
    let secs = match unit {
        "s" => n,
        "m" | "min" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

pub(crate) fn parse_rate(s: &str) -> Option<RateLimit> {
    let (count, per) = s.split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "min" | "m" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86400),
        _ => return None,
    };
    Some(RateLimit { count, per })
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl Contract {
    /// Compiles one contract. `raw_value` is the contract as read, for the digest.
    pub(crate) fn compile(raw: RawContract, raw_value: &Value, source: &str) -> Result<Self, ContractError> {
        let (kind, name) = match (&raw.tool, &raw.prompt, &raw.resource) {
            (Some(t), None, None) => (Kind::Tool, t.clone()),
            (None, Some(p), None) => (Kind::Prompt, p.clone()),
            (None, None, Some(r)) => (Kind::Resource, r.clone()),
            _ => {
                return Err(cerr(source, "a contract names exactly one of `tool`, `prompt` or `resource`"));
            }
        };
        let noun = kind.noun();
        if !valid_tool_name(&name) {
            return Err(cerr(
                source,
                format!("{noun} name `{name}` must be 1-128 characters of A-Z, a-z, 0-9, `_`, `-`, `.`"),
            ));
        }
        let ctx = format!("{source} ({noun} `{name}`)");
        if raw.allowed_roles.is_empty() || raw.allowed_roles.iter().any(|r| r.trim().is_empty()) {
            return Err(cerr(
                &ctx,
                "`allowed_roles` must name at least one role: a contract without roles is callable by nobody, so it is refused",
            ));
        }
        let arg_schema = match (&raw.arg_schema, kind) {
            (Some(a), _) => a.clone(),
            (None, Kind::Tool) => return Err(cerr(&ctx, "`arg_schema` is missing (write `{}` for a tool without arguments)")),
            (None, _) => BTreeMap::new(),
        };
        let mut args = BTreeMap::new();
        for (name, decl) in &arg_schema {
            let spec = ArgSpec::parse(decl).map_err(|e| cerr(&ctx, format!("argument `{name}`: {e}")))?;
            args.insert(name.clone(), spec);
        }
        let uri = match (kind, &raw.uri) {
            (Kind::Resource, Some(u)) => Some(UriTemplate::parse(u).map_err(|e| cerr(&ctx, e))?),
            (Kind::Resource, None) => return Err(cerr(&ctx, "a resource contract needs `uri` (a URI or a URI template)")),
            (_, Some(_)) => return Err(cerr(&ctx, "`uri` is for resource contracts")),
            (_, None) => None,
        };
        if raw.mime_type.is_some() && kind != Kind::Resource {
            return Err(cerr(&ctx, "`mime_type` is for resource contracts"));
        }
        check_kind(kind, &raw, &args, uri.as_ref()).map_err(|e| cerr(&ctx, e))?;
        for name in &raw.sensitive {
            let spec = args
                .get_mut(name)
                .ok_or_else(|| cerr(&ctx, format!("`sensitive` names `{name}`, which is not in `arg_schema`")))?;
            spec.sensitive = true;
        }
        check_headers(kind, &args).map_err(|e| cerr(&ctx, e))?;
        let mut fixed_args = Map::new();
        for (name, value) in &raw.fixed_args {
            if args.contains_key(name) {
                return Err(cerr(
                    &ctx,
                    format!("`fixed_args.{name}` is also a caller argument: the gateway sets it, so remove it from `arg_schema`"),
                ));
            }
            fixed_args.insert(name.clone(), value.clone());
        }
        let approval_ttl = match &raw.approval_ttl {
            None => Duration::from_secs(15 * 60),
            Some(s) => {
                parse_duration(s).ok_or_else(|| cerr(&ctx, format!("`approval_ttl = \"{s}\"`: write a duration such as `15m`, `1h`")))?
            }
        };
        let approvals_required = raw.approvals_required.unwrap_or(1);
        if !(1..=10).contains(&approvals_required) {
            return Err(cerr(
                &ctx,
                format!("`approvals_required = {approvals_required}`: write a number from 1 to 10"),
            ));
        }
        let approval_wait = match &raw.approval_wait {
            None => Duration::ZERO,
            Some(s) => {
                parse_duration(s).ok_or_else(|| cerr(&ctx, format!("`approval_wait = \"{s}\"`: write a duration such as `30s`, `2m`")))?
            }
        };
        if approval_wait > approval_ttl || approval_wait > Duration::from_secs(600) {
            return Err(cerr(&ctx, "`approval_wait` must be at most `approval_ttl` and at most 10m"));
        }
        if !raw.requires_approval && (raw.approvals_required.is_some() || raw.approval_wait.is_some() || raw.approver_roles.is_some()) {
            return Err(cerr(
                &ctx,
                "`approver_roles`, `approvals_required` and `approval_wait` need `requires_approval = true`",
            ));
        }
        let rate_limit = match &raw.rate_limit {
            None => None,
            Some(s) => Some(parse_rate(s).ok_or_else(|| cerr(&ctx, format!("`rate_limit = \"{s}\"`: write a rate such as `10/min`")))?),
        };
        if let Some(envs) = &raw.environments
            && envs.is_empty()
        {
            return Err(cerr(&ctx, "`environments` is empty: leave it out to mean every environment"));
        }
        let published = Arc::new(input_schema(&args));
        let role_rule_ids = raw.allowed_roles.iter().map(|r| Arc::from(format!("allowed_roles:{r}"))).collect();
        let default_effects = match kind {
            Kind::Tool => SideEffects::Write,
            Kind::Prompt | Kind::Resource => SideEffects::Read,
        };
        Ok(Contract {
            kind,
            key: kind.key(&name),
            tool: name,
            uri,
            mime_type: raw.mime_type,
            description: raw.description,
            allowed_roles: raw.allowed_roles,
            role_rule_ids,
            args,
            requires_approval: raw.requires_approval,
            environments: raw.environments,
            side_effects: raw.side_effects.unwrap_or(default_effects),
            approver_roles: raw.approver_roles,
            approval_ttl,
            approvals_required,
            approval_wait,
            rate_limit,
            client_requests: raw.client_requests,
            backend: raw.backend,
            fixed_args,
            digest: crate::canonical::digest(raw_value),
            source: source.to_string(),
            published,
        })
    }
}

/// What only some kinds allow. A prompt's arguments arrive as strings (MCP says so), so
/// only types a string can satisfy are taken; a resource's arguments are its URI's
/// variables, exactly, all required; both only read.
fn check_kind(kind: Kind, raw: &RawContract, args: &BTreeMap<String, ArgSpec>, uri: Option<&UriTemplate>) -> Result<(), String> {
    if kind == Kind::Tool {
        return Ok(());
    }
    if raw.requires_approval {
        return Err(format!("a {} only reads: approval is for tools", kind.noun()));
    }
    if matches!(raw.side_effects, Some(SideEffects::Write | SideEffects::Destructive)) {
        return Err(format!("a {} only reads: `side_effects` is `read` or `none`", kind.noun()));
    }
    for (name, spec) in args {
        if matches!(spec.ty, ArgType::Int { .. } | ArgType::Bool) {
            return Err(format!(
                "argument `{name}`: a {} argument is a string; use `string`, `enum(…)`, `regex(…)`, `hostname`, `uuid`, `ip` or `cidr`",
                kind.noun()
            ));
        }
    }
    if let Some(uri) = uri {
        if !raw.fixed_args.is_empty() {
            return Err("`fixed_args` is for tools and prompts".into());
        }
        let vars: Vec<&str> = uri.vars().collect();
        for v in &vars {
            match args.get(*v) {
                None => return Err(format!("`uri` variable `{v}` needs a type in `arg_schema`")),
                Some(spec) if spec.optional => return Err(format!("`uri` variable `{v}` cannot be optional")),
                Some(_) => {}
            }
        }
        if let Some(extra) = args.keys().find(|a| !vars.contains(&a.as_str())) {
            return Err(format!("`arg_schema` names `{extra}`, which is not a variable of `uri`"));
        }
    }
    Ok(())
}

/// Arguments mirrored in `Mcp-Param-*` headers: a tool's only, each header once, and never
/// a sensitive one (a header is logged by every proxy on its way).
fn check_headers(kind: Kind, args: &BTreeMap<String, ArgSpec>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, spec) in args {
        let Some(h) = &spec.header else { continue };
        if kind != Kind::Tool {
            return Err(format!(
                "argument `{name}`: `header` is for tool arguments (MCP mirrors only `tools/call` arguments)"
            ));
        }
        if spec.sensitive {
            return Err(format!(
                "argument `{name}` is sensitive and has a `header`: a header is seen and logged by every proxy on its way"
            ));
        }
        if !seen.insert(h.to_ascii_lowercase()) {
            return Err(format!("argument `{name}`: header `Mcp-Param-{h}` is already another argument's"));
        }
    }
    Ok(())
}

impl Contract {
    /// The arguments a caller mirrors in headers, each with its header's name.
    pub(crate) fn mirrored(&self) -> impl Iterator<Item = (&str, &str)> {
        self.args.iter().filter_map(|(n, s)| s.header.as_deref().map(|h| (n.as_str(), h)))
    }
}

fn input_schema(args: &BTreeMap<String, ArgSpec>) -> Map<String, Value> {
    let props: Map<String, Value> = args.iter().map(|(k, v)| (k.clone(), types::json_schema(v))).collect();
    let required: Vec<&String> = args.iter().filter(|(_, v)| !v.optional).map(|(k, _)| k).collect();
    let schema = json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    match schema {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Parses one contract file's text: JSON (an object or an array of objects) or TOML (one
/// contract's fields at top level, or `[[contract]]` tables).
pub(crate) fn parse_file_text(text: &str, source: &str, is_toml: bool) -> Result<Vec<Contract>, ContractError> {
    let values: Vec<Value> = if is_toml {
        let v: toml::Value = toml::from_str(text).map_err(|e| cerr(source, format!("not valid TOML: {}", e.message())))?;
        let v = serde_json::to_value(v).map_err(|e| cerr(source, e.to_string()))?;
        match v.get("contract") {
            Some(Value::Array(items)) if v.as_object().is_some_and(|o| o.len() == 1) => items.clone(),
            _ => vec![v],
        }
    } else {
        let v: Value = serde_json::from_str(text).map_err(|e| cerr(source, format!("not valid JSON: {e}")))?;
        match v {
            Value::Array(items) => items,
            other => vec![other],
        }
    };
    values
        .into_iter()
        .map(|v| {
            let raw: RawContract = serde_json::from_value(v.clone()).map_err(|e| cerr(source, e.to_string()))?;
            Contract::compile(raw, &v, source)
        })
        .collect()
}

/// Loads every `*.json` and `*.toml` file of a folder, in name order.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<Contract>, ContractError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| cerr(&shown, format!("cannot read the contracts folder: {e}")))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "toml")))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let text = std::fs::read_to_string(&p).map_err(|e| cerr(&name, format!("cannot read: {e}")))?;
        let is_toml = p.extension().and_then(|e| e.to_str()) == Some("toml");
        out.extend(parse_file_text(&text, &name, is_toml)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{
"tool": "create_firewall_block",
"allowed_roles": ["incident_commander"],
"arg_schema": {"ip": "cidr", "ttl_minutes": "1-240"},
"requires_approval": true
}"#;

    #[test]
    fn the_seed_contract_loads_exactly_as_written() {
        let c = parse_file_text(SEED, "seed.json", false).unwrap();
        let c = c.first().unwrap();
        assert_eq!(c.tool, "create_firewall_block");
        assert!(c.requires_approval);
        assert_eq!(c.allowed_roles, vec!["incident_commander"]);
        let schema = Value::Object((*c.published).clone());
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(schema["required"], json!(["ip", "ttl_minutes"]));
        assert_eq!(
            schema["properties"]["ttl_minutes"],
            json!({"type": "integer", "minimum": 1, "maximum": 240})
        );
    }

    #[test]
    fn toml_contracts_load() {
        let text = r#"
[[contract]]
tool = "create_ticket"
allowed_roles = ["oncall"]
side_effects = "write"
sensitive = ["reporter_email"]
rate_limit = "10/min"
arg_schema = { title = "string(1..120)", severity = "enum(low|high)", reporter_email = "string?" }
fixed_args = { queue = "SEC" }
"#;
        let c = parse_file_text(text, "t.toml", true).unwrap();
        let c = c.first().unwrap();
        assert!(c.is_sensitive("reporter_email"));
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                count: 10,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(c.fixed_args["queue"], json!("SEC"));
    }

    #[test]
    fn unsafe_or_misspelt_contracts_are_refused() {
        for bad in [
            r#"{"tool":"t","allowed_roles":[],"arg_schema":{}}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"requires_aproval":true}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{"x":"regex(.*)"}}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{"x":"cidr"},"sensitive":["y"]}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{"x":"cidr"},"fixed_args":{"x":1}}"#,
            r#"{"tool":"t t","allowed_roles":["a"],"arg_schema":{}}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"approval_ttl":"soon"}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"rate_limit":"0/min"}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"requires_approval":true,"approvals_required":0}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"requires_approval":true,"approvals_required":11}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"requires_approval":true,"approval_ttl":"1m","approval_wait":"2m"}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"requires_approval":true,"approval_wait":"11m","approval_ttl":"1h"}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"approvals_required":2}"#,
            r#"{"tool":"t","allowed_roles":["a"],"arg_schema":{},"approver_roles":["lead"]}"#,
        ] {
            assert!(parse_file_text(bad, "x.json", false).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }
}
