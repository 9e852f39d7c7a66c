//! `capgate approvals list|approve|deny`: the approval queue from the shell. A client of the
//! running gateway's approvals API, with the approver's own token (from `CAPGATE_TOKEN`, so
//! it never appears in a process list or shell history), so the shell has exactly the
//! console's authority: no side door into the store.

use serde_json::{Value, json};

use super::Failure;

fn endpoint(url: Option<&str>) -> Result<String, Failure> {
    let url = match url {
        Some(u) => u.to_string(),
        None => std::env::var("CAPGATE_URL")
            .map_err(|_| Failure::Usage("give the gateway's URL with --url or CAPGATE_URL (e.g. http://127.0.0.1:8477)".into()))?,
    };
    let base = url.trim_end_matches('/').trim_end_matches("/mcp").to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Failure::Usage(format!("`{base}` is not an http(s) URL")));
    }
    Ok(base)
}

fn token() -> Result<String, Failure> {
    match std::env::var("CAPGATE_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(Failure::Usage(
            "put the approver's bearer token in CAPGATE_TOKEN (it is not taken as an argument)".into(),
        )),
    }
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> Result<(u16, Value), Failure> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::Usage(format!("HTTP client: {e}")))?;
    let mut req = http.request(method, url).bearer_auth(token()?);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.map_err(|e| Failure::Usage(format!("cannot reach {url}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn refused(status: u16, body: &Value) -> Failure {
    let why = at(body, "/error_description").as_str().unwrap_or("no reason given");
    eprintln!("capgate: refused ({status}): {why}");
    if let Some(t) = at(body, "/trace_id").as_str() {
        eprintln!("capgate: trace id {t}");
    }
    Failure::CheckFailed
}

/// One line of agent-supplied text, safe for a terminal: no control characters, bounded.
fn shown(v: &Value, max: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

pub(super) async fn list(url: Option<&str>, status: &str, as_json: bool) -> Result<(), Failure> {
    let base = endpoint(url)?;
    let (code, body) = call(reqwest::Method::GET, &format!("{base}/api/approvals?status={status}"), None).await?;
    if code != 200 {
        return Err(refused(code, &body));
    }
    let items = body.as_array().cloned().unwrap_or_default();
    if as_json {
        println!("{}", Value::Array(items));
        return Ok(());
    }
    if items.is_empty() {
        println!("no {status} approval requests you may decide");
        return Ok(());
    }
    println!(
        "{:<36}  {:<9}  {:<24}  {:<16}  {:<20}  {:<5}  ARGUMENTS",
        "ID", "STATUS", "TOOL", "REQUESTER", "EXPIRES", "VOTES"
    );
    for i in &items {
        println!(
            "{:<36}  {:<9}  {:<24}  {:<16}  {:<20}  {:<5}  {}",
            shown(at(i, "/id"), 36),
            shown(at(i, "/status"), 9),
            shown(at(i, "/tool"), 24),
            shown(at(i, "/requester/sub"), 16),
            shown(at(i, "/expires"), 20),
            format!("{}/{}", at(i, "/approvals"), at(i, "/approvals_required")),
            shown(at(i, "/arguments"), 80)
        );
    }
    Ok(())
}

pub(super) async fn decide(url: Option<&str>, id: &str, verdict: &str, reason: &str) -> Result<(), Failure> {
    let base = endpoint(url)?;
    let (code, body) = call(
        reqwest::Method::POST,
        &format!("{base}/api/approvals/{}/{verdict}", urlencode(id)),
        Some(json!({"reason": reason})),
    )
    .await?;
    if code != 200 {
        return Err(refused(code, &body));
    }
    println!(
        "{} request {}: now {} ({} of {} approvals)",
        if verdict == "approve" { "approved" } else { "denied" },
        shown(at(&body, "/id"), 36),
        shown(at(&body, "/status"), 9),
        at(&body, "/approvals"),
        at(&body, "/approvals_required")
    );
    Ok(())
}

/// A field of an API answer; absent ones read as null (the server's answers are not trusted
/// to be well-formed).
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
