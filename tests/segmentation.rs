//! Environment segmentation: tokens, sessions, approval ids and client certificates of one
//! environment fail in every other, whether the environments share a process or not;
//! mutual TLS joins the certificate to the token; keys rotate without breaking the log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "integration tests: a failed expectation is a panic"
)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};
use sha2::Digest;

const BLOCK: &str = "create_firewall_block";

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// One environment's PKI: a CA, a server certificate for 127.0.0.1, client certificates.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct ClientCert {
    pem: String,
    key_pem: String,
    thumbprint: String,
}

impl Pki {
    fn new(env: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("capgate {env} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientCert {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            thumbprint: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(cert.der())),
        }
    }

    fn client(&self, cn: &str) -> ClientCert {
        self.leaf(&[], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Puts every environment of the fixture behind mutual TLS with a PKI of its own.
fn with_mtls(f: &Fixture, envs: &[&str]) -> HashMap<String, Pki> {
    let mut pkis = HashMap::new();
    for env in envs {
        let pki = Pki::new(env);
        let server = pki.leaf(
            &["127.0.0.1", "localhost"],
            &format!("capgate {env}"),
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let dir = f.path().join("keys");
        std::fs::write(dir.join(format!("{env}-client-ca.pem")), &pki.ca_pem).unwrap();
        std::fs::write(dir.join(format!("{env}-server.pem")), &server.pem).unwrap();
        write_private(&dir.join(format!("{env}-server.key")), &server.key_pem);
        let text = std::fs::read_to_string(f.config()).unwrap();
        let anchor = format!("signing_key = \"keys/{env}-audit.pem\"\n");
        let tls = format!(
            "{anchor}\n[environment.tls]\ncert = \"keys/{env}-server.pem\"\nkey = \"keys/{env}-server.key\"\nclient_ca = \"keys/{env}-client-ca.pem\"\n"
        );
        std::fs::write(f.config(), text.replacen(&anchor, &tls, 1)).unwrap();
        pkis.insert(env.to_string(), pki);
    }
    pkis
}

fn tls_client(ca_pem: &str, cert: Option<&ClientCert>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(std::time::Duration::from_secs(10));
    if let Some(c) = cert {
        b = b.identity(reqwest::Identity::from_pem(format!("{}{}", c.pem, c.key_pem).as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn init_body() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).to_string()
}

async fn post_init(client: &reqwest::Client, url: &str, token: &str) -> Result<u16, String> {
    client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init_body())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn mutual_tls_joins_the_certificate_to_the_token_and_keeps_environments_apart() {
    let f = Fixture::new("");
    let pki = with_mtls(&f, &ENVS);
    let gw = Gateway::start(&f.config(), &ENVS);
    let dev_url = gw.url("dev").to_string();
    assert!(dev_url.starts_with("https://"), "{dev_url}");
    let dev_agent = pki["dev"].client("agent-dev");
    let dev_token = f.token("dev", "alice", &["oncall"]);

    // Certificate and token of this environment: the call runs, and the record names both.
    let mut alice = Mcp::open_with(tls_client(&pki["dev"].ca_pem, Some(&dev_agent)), &dev_url, &dev_token).await;
    let r = alice.call("list_tickets", json!({})).await;
    assert_eq!(r.body["result"]["isError"], json!(false), "{}", r.text);
    assert_eq!(f.calls("dev").len(), 1);
    let rec = f
        .audit_for_trace("dev", &r.trace())
        .into_iter()
        .find(|r| r["decision"] == "allow")
        .unwrap();
    assert!(rec["principal"]["auth_method"].as_str().unwrap().ends_with("+mtls"), "{rec}");
    assert!(rec["principal"]["cert"]["subject"].as_str().unwrap().contains("agent-dev"), "{rec}");
    assert_eq!(rec["principal"]["cert"]["x5t_s256"], dev_agent.thumbprint.as_str());

    // No certificate, or another environment's: refused at the handshake, and recorded.
    let no_cert = post_init(&tls_client(&pki["dev"].ca_pem, None), &dev_url, &dev_token).await;
    assert!(no_cert.is_err(), "no client certificate must fail the handshake: {no_cert:?}");
    let stage_agent = pki["stage"].client("agent-stage");
    let foreign = post_init(&tls_client(&pki["dev"].ca_pem, Some(&stage_agent)), &dev_url, &dev_token).await;
    assert!(foreign.is_err(), "a stage certificate must fail at dev's handshake: {foreign:?}");
    let foreign_back = post_init(
        &tls_client(&pki["stage"].ca_pem, Some(&dev_agent)),
        gw.url("stage"),
        &f.token("stage", "alice", &["oncall"]),
    )
    .await;
    assert!(foreign_back.is_err(), "and a dev certificate at stage's: {foreign_back:?}");
    let refused = f.audit_reason_code("dev", "certificate_refused", 2).len();
    assert_eq!(refused, 2, "both refused handshakes are in dev's log");

    // The right certificate with another environment's token: 401.
    let cross = post_init(
        &tls_client(&pki["dev"].ca_pem, Some(&dev_agent)),
        &dev_url,
        &f.token("stage", "alice", &["oncall"]),
    )
    .await;
    assert_eq!(cross, Ok(401));

    // A token bound to one certificate works with it only (RFC 8705 `cnf.x5t#S256`).
    let other_dev_agent = pki["dev"].client("agent-dev-2");
    let mut claims = f.claims("dev", "bob", &["oncall"]);
    claims["cnf"] = json!({"x5t#S256": dev_agent.thumbprint});
    let bound = f.sign("dev", &claims);
    let wrong = post_init(&tls_client(&pki["dev"].ca_pem, Some(&other_dev_agent)), &dev_url, &bound).await;
    assert_eq!(wrong, Ok(401), "a bound token with another certificate");
    let right = post_init(&tls_client(&pki["dev"].ca_pem, Some(&dev_agent)), &dev_url, &bound).await;
    assert_eq!(right, Ok(200));
    assert_eq!(f.calls("dev").len(), 1, "nothing else ran");
    assert!(f.calls("stage").is_empty());
}

#[tokio::test]
async fn a_certificate_bound_token_is_refused_without_its_certificate() {
    let f = Fixture::new("");
    let gw = Gateway::start(&f.config(), &ENVS);
    let mut claims = f.claims("dev", "bob", &["oncall"]);
    claims["cnf"] = json!({"x5t#S256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    let r = Mcp::new(gw.url("dev"), Some(f.sign("dev", &claims))).send(init_body(), &[]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    // A confirmation method the gateway cannot check is not ignored either.
    claims["cnf"] = json!({"jkt": "some-dpop-key"});
    let r = Mcp::new(gw.url("dev"), Some(f.sign("dev", &claims))).send(init_body(), &[]).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

/// Adds a third environment, `prod` (production: no minting, tokens signed by the test).
fn add_prod(f: &Fixture) {
    for name in ["prod-issuer", "prod-audit"] {
        let out = Command::new(bin())
            .args(["keys", "generate", "--out"])
            .arg(f.path().join("keys"))
            .args(["--name", name])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let mut text = std::fs::read_to_string(f.config()).unwrap();
    text.push_str(&format!(
        r#"
[[environment]]
name = "prod"
production = true
listen = "127.0.0.1:0"
public_url = "{aud}"
approver_roles = ["security_lead"]

[[environment.identity]]
issuer = "{iss}"
jwks = "keys/prod-issuer.jwks.json"

[environment.audit]
store = "sqlite://data/prod-audit.db"
signing_key = "keys/prod-audit.pem"

[[upstream]]
name = "demo"
environment = "prod"
builtin = "demo"
args = ["--state", {state:?}]
env = {{ DEMO_API_TOKEN = "upstream-secret-prod-do-not-leak" }}
"#,
        aud = audience("prod"),
        iss = issuer("prod"),
        state = f.path().join("state").join("prod"),
    ));
    std::fs::write(f.config(), text).unwrap();
}

const THREE: [&str; 3] = ["dev", "stage", "prod"];

/// Every cross-environment use of a token, a session and an approval id is refused, and
/// nothing runs anywhere.
async fn attempt_every_crossing(f: &Fixture, urls: &HashMap<&str, String>) {
    let base = |env: &str| urls[env].trim_end_matches("/mcp").to_string();
    // In each environment: a session and a pending approval of its own.
    let mut sessions = HashMap::new();
    let mut approvals = HashMap::new();
    for env in THREE {
        let mut ic = Mcp::open(&urls[env], &f.token(env, "ivan", &["incident_commander"])).await;
        let r = ic.call(BLOCK, json!({"ip": "203.0.113.0/24", "ttl_minutes": 60})).await;
        approvals.insert(
            env,
            r.body["result"]["structuredContent"]["approval_id"].as_str().unwrap().to_string(),
        );
        sessions.insert(env, ic.session.clone().unwrap());
    }
    for from in THREE {
        for to in THREE.iter().copied().filter(|t| *t != from) {
            let what = format!("{from} → {to}");
            // A token of `from` at `to`.
            let r = Mcp::new(
                &urls[to],
                Some(f.token(from, "ivan", &["oncall", "incident_commander", "security_lead"])),
            )
            .send(init_body(), &[])
            .await;
            assert_eq!(r.status, 401, "token {what}");
            // A session of `from`, with a valid token of `to`.
            let mut m = Mcp::new(&urls[to], Some(f.token(to, "ivan", &["oncall"])));
            m.session = Some(sessions[from].clone());
            let r = m.call("list_tickets", json!({})).await;
            assert_eq!(r.status, 404, "session {what}: {}", r.text);
            // An approval id of `from`, decided by an approver of `to`.
            let r = http()
                .post(format!("{}/api/approvals/{}/approve", base(to), approvals[from]))
                .bearer_auth(f.token(to, "sara", &["security_lead"]))
                .header("content-type", "application/json")
                .body(r#"{"reason": "cross-environment"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "approval id {what}");
        }
    }
    for env in THREE {
        assert!(f.calls(env).is_empty(), "nothing ran in {env}");
        let (s, v) = {
            let r = http()
                .get(format!("{}/api/approvals", base(env)))
                .bearer_auth(f.token(env, "sara", &["security_lead"]))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        };
        assert_eq!(s, 200);
        assert_eq!(v.as_array().unwrap().len(), 1, "{env} sees its own request only");
        assert_eq!(v[0]["id"], approvals[env].as_str());
    }
}

#[tokio::test]
async fn three_environments_in_one_process_share_nothing() {
    let f = Fixture::new("");
    add_prod(&f);
    let gw = Gateway::start(&f.config(), &THREE);
    let urls: HashMap<&str, String> = THREE.iter().map(|e| (*e, gw.url(e).to_string())).collect();
    attempt_every_crossing(&f, &urls).await;
    assert!(gw.terminate().success());
    for env in THREE {
        let (code, out, err) = f.audit_cli(&["verify", "--env", env]);
        assert_eq!(code, 0, "{env}: {out}{err}");
    }
}

#[tokio::test]
async fn three_environments_in_separate_processes_share_nothing() {
    let f = Fixture::new("");
    add_prod(&f);
    let gws: Vec<Gateway> = THREE
        .iter()
        .map(|e| Gateway::start_with(&f.config(), &[e], &["--env", e]))
        .collect();
    let urls: HashMap<&str, String> = THREE.iter().zip(&gws).map(|(e, g)| (*e, g.url(e).to_string())).collect();
    attempt_every_crossing(&f, &urls).await;
}

#[tokio::test]
async fn a_rotated_audit_key_keeps_verifying_its_checkpoints() {
    let f = Fixture::new("");
    let gw = Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]);
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    alice.call("list_tickets", json!({})).await;
    assert!(gw.terminate().success(), "a checkpoint is signed on shutdown with the old key");

    // Rotate: a new signing key; the old one's public half stays listed.
    let out = Command::new(bin())
        .args(["keys", "generate", "--out"])
        .arg(f.path().join("keys"))
        .args(["--name", "dev-audit-2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(
        f.config(),
        text.replacen(
            "signing_key = \"keys/dev-audit.pem\"",
            "signing_key = \"keys/dev-audit-2.pem\"\nprevious_public_keys = [\"keys/dev-audit.pub.pem\"]",
            1,
        ),
    )
    .unwrap();
    let gw = Gateway::start_with(&f.config(), &["dev"], &["--env", "dev"]);
    let mut alice = Mcp::open(gw.url("dev"), &f.token("dev", "alice", &["oncall"])).await;
    alice.call("list_tickets", json!({})).await;
    assert!(gw.terminate().success());
    let (code, out, err) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 stored"), "both checkpoints verified: {out}");

    // Forget the old key: its checkpoint no longer verifies, and verify says so.
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(
        f.config(),
        text.replacen("previous_public_keys = [\"keys/dev-audit.pub.pem\"]", "", 1),
    )
    .unwrap();
    let (code, out, _) = f.audit_cli(&["verify", "--env", "dev"]);
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn a_readable_private_key_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new("");
    with_mtls(&f, &["dev"]);
    std::fs::set_permissions(f.path().join("keys/dev-server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(bin())
        .args(["serve", "--env", "dev", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by group or others"), "{err}");
}

fn check(f: &Fixture) -> (i32, String) {
    let out = Command::new(bin())
        .args(["check", "--offline", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn check_refuses_shared_or_unsafe_tls_material() {
    let f = Fixture::new("");
    with_mtls(&f, &ENVS);
    assert_eq!(check(&f).0, 0, "{}", check(&f).1);
    // One client CA for two environments: a dev certificate would open stage.
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(f.config(), text.replacen("keys/stage-client-ca.pem", "keys/dev-client-ca.pem", 1)).unwrap();
    let (code, out) = check(&f);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("shares its TLS client CA with environment `dev`"), "{out}");

    let f = Fixture::new("");
    with_mtls(&f, &ENVS);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f.path().join("keys/stage-server.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let (code, out) = check(&f);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("environment `stage`: tls") && out.contains("readable by group or others"),
        "{out}"
    );

    let f = Fixture::new("");
    with_mtls(&f, &["dev"]);
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(
        f.config(),
        text.replacen("client_ca = \"keys/dev-client-ca.pem\"\n", "require_bound_tokens = true\n", 1),
    )
    .unwrap();
    let (code, out) = check(&f);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("`require_bound_tokens` needs `client_ca`"), "{out}");
}
