//! Stage 1, authentication: turns a bearer token into an [`Authenticated`] caller of one
//! environment, or refuses.
//!
//! Runs first, on every request, before anything of the tool surface is looked at. Needs the
//! environment's trusted issuers and their keys (JWKS file or URL, cached; a URL is fetched
//! again when a token names an unknown `kid`). Outcomes: `Authenticated`, or a client error
//! (401: missing, malformed, expired, wrong issuer/audience/key). Keys that cannot be read
//! stop the start (fail closed); a refresh that fails keeps the keys already held.
//!
//! INVARIANT: the algorithm is the key's, never the token's. A token whose header names
//! another algorithm than its key's (HS256 signed with a public key, `none`) is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::{Environment, Issuer, JwksSource};
pub(crate) use crate::identity::AuthnError;
use crate::identity::{CertIdentity, Principal};

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Allowed clock skew for `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// A JWKS URL is fetched again on an unknown `kid` at most this often, so that a flood of
/// forged `kid`s cannot turn the gateway into a load generator against the IdP.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Proof that a request's caller was authenticated for one environment. Only
/// [`Authenticator::verify`] builds it.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    principal: Arc<Principal>,
    env: Arc<str>,
    expires_at: u64,
    /// The token's `cnf.x5t#S256`, when it is bound to a certificate.
    bound_to: Option<String>,
}

impl Authenticated {
    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }
    pub(crate) fn env(&self) -> &str {
        &self.env
    }
    /// Unix seconds: when the token stops being good.
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// Joins the client certificate's identity to the token's: both must pass. A token
    /// bound to a certificate (RFC 8705) is only good with that certificate; with
    /// `require_bound`, every token must be bound.
    pub(crate) fn with_client_cert(self, cert: &CertIdentity, require_bound: bool) -> Result<Self, AuthnError> {
        match &self.bound_to {
            Some(t) if *t != cert.x5t_s256 => {
                return Err(AuthnError::Invalid {
                    detail: format!(
                        "the token is bound to another certificate than the one presented ({})",
                        cert.subject
                    ),
                });
            }
            None if require_bound => {
                return Err(AuthnError::Invalid {
                    detail: "this environment requires certificate-bound tokens (`cnf.x5t#S256`)".into(),
                });
            }
            _ => {}
        }
        let mut p = (*self.principal).clone();
        p.auth_method = format!("{}+mtls", p.auth_method);
        p.cert = Some(cert.clone());
        Ok(Self {
            principal: Arc::new(p),
            ..self
        })
    }

    /// A bound token presented without any client certificate.
    pub(crate) fn is_bound(&self) -> bool {
        self.bound_to.is_some()
    }
}

/// A refusal from full verification, and whether it stands for as long as the keys do
/// (and may be remembered): not for a token whose `nbf` is ahead.
struct NotVerified {
    error: AuthnError,
    lasting: bool,
}

impl From<AuthnError> for NotVerified {
    fn from(error: AuthnError) -> Self {
        Self { error, lasting: true }
    }
}

pub(crate) struct Key {
    key: DecodingKey,
    alg: Algorithm,
}

struct IssuerKeys {
    cfg: Issuer,
    keys: RwLock<Arc<HashMap<String, Arc<Key>>>>,
    last_fetch: Mutex<Option<Instant>>,
}

/// One environment's token verifier. Environments never share one.
pub(crate) struct Authenticator {
    env: Arc<str>,
    audience: String,
    issuers: Vec<IssuerKeys>,
    http: reqwest::Client,
    /// Tokens verified recently, by SHA-256 of the token: an agent sends the same token on
    /// every call, and a signature check costs more than the rest of authentication.
    verified: Mutex<HashMap<[u8; 32], (Authenticated, Instant, String)>>,
    /// Tokens refused recently, by SHA-256: a flood that repeats one well-signed but wrong
    /// token costs a lookup, not a signature check, per request.
    refused: Mutex<HashMap<[u8; 32], (AuthnError, Instant)>>,
    /// Where its time per token and its key refreshes are counted (none in the commands).
    metrics: Option<crate::metrics::Handle>,
}

/// How long a verified token is trusted without checking its signature again; its own
/// `exp` still applies on every use. Bounds how long a key removed from the JWKS keeps
/// working for tokens it already signed.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
const VERIFIED_MAX: usize = 10_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn algorithm_for(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        // Symmetric keys and other curves are never trusted: a JWKS is public.
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(KeyAlgorithm::EdDSA) if by_type == Algorithm::EdDSA => Some(by_type),
        Some(_) => None,
    }
}

/// Parses a JWKS document into usable keys; keys of an unsupported kind or without `kid`
/// are skipped (never guessed at).
pub(crate) fn parse_jwks(text: &str) -> Result<HashMap<String, Arc<Key>>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), algorithm_for(jwk)) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            out.insert(kid, Arc::new(Key { key, alg }));
        }
    }
    Ok(out)
}

impl Authenticator {
    /// Loads every issuer's keys now, so that a gateway with unreadable keys does not start.
    pub(crate) async fn new(env: &Environment) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let mut issuers = Vec::new();
        for cfg in &env.issuers {
            let keys = fetch(&http, &cfg.jwks)
                .await
                .map_err(|e| format!("environment `{}`: issuer `{}`: {e}", env.name, cfg.issuer))?;
            issuers.push(IssuerKeys {
                cfg: cfg.clone(),
                keys: RwLock::new(Arc::new(keys)),
                // The start-up fetch does not count: a key rotated just after start is found.
                last_fetch: Mutex::new(None),
            });
        }
        Ok(Self {
            env: Arc::from(env.name.as_str()),
            audience: env.public_url.clone(),
            issuers,
            http,
            verified: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            metrics: None,
        })
    }

    /// A verifier over an in-memory JWKS, never refreshed (for the fuzz target).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn offline(env: &str, audience: &str, issuer: &str, jwks: &str) -> Result<Self, String> {
        let cfg = Issuer {
            issuer: issuer.to_string(),
            jwks: JwksSource::File(std::path::PathBuf::new()),
            roles_claim: "roles".into(),
            mint_key: None,
        };
        Ok(Self {
            env: Arc::from(env),
            audience: audience.to_string(),
            issuers: vec![IssuerKeys {
                cfg,
                keys: RwLock::new(Arc::new(parse_jwks(jwks)?)),
                last_fetch: Mutex::new(None),
            }],
            http: {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder().build().map_err(|e| format!("http client: {e}"))?
            },
            verified: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            metrics: None,
        })
    }

    /// Finds the bearer token of a request: exactly one `Authorization: Bearer …` header.
    pub(crate) fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthnError> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Err(AuthnError::Missing);
        };
        if values.next().is_some() {
            return Err(AuthnError::Malformed);
        }
        let value = value.to_str().map_err(|_| AuthnError::Malformed)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthnError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthnError::Missing);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthnError::Missing);
        }
        Ok(token)
    }

    /// The same verifier, counting into the environment's metrics.
    pub(crate) fn with_metrics(self, metrics: crate::metrics::Handle) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Authenticated, AuthnError> {
        let started = Instant::now();
        let verified = self.check(token).await;
        if let Some(m) = &self.metrics {
            m.observe(crate::metrics::Stage::Authn, started.elapsed());
        }
        verified
    }

    async fn check(&self, token: &str) -> Result<Authenticated, AuthnError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthnError::Malformed);
        }
        use sha2::Digest;
        let fingerprint: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        // A hit counts only while the signing key is still trusted: a key removed from the
        // JWKS stops its tokens at once, cached or not.
        if let Some((a, at, kid)) = self.verified.lock().ok().and_then(|m| m.get(&fingerprint).cloned())
            && at.elapsed() < VERIFIED_TTL
            && self.find_key(&kid).is_some()
        {
            // The signature and claims were checked; only time has moved on.
            return if a.expires_at + LEEWAY_SECS < unix_now() {
                Err(AuthnError::Expired)
            } else {
                Ok(a)
            };
        }
        if let Some((e, at)) = self.refused.lock().ok().and_then(|m| m.get(&fingerprint).cloned())
            && at.elapsed() < VERIFIED_TTL
        {
            return Err(e);
        }
        let (verified, kid) = match self.verify_uncached(token).await {
            Ok(v) => v,
            // A token not valid *yet* will be: it is not remembered.
            Err(NotVerified { error, lasting: false }) => return Err(error),
            Err(NotVerified { error: e, .. }) => {
                // Only refusals of tokens signed under a key we hold are remembered: a token
                // whose `kid` is not known yet may become valid when the JWKS is refreshed.
                let known_kid = jsonwebtoken::decode_header(token)
                    .ok()
                    .and_then(|h| h.kid)
                    .is_some_and(|k| self.find_key(&k).is_some());
                if known_kid && let Ok(mut m) = self.refused.lock() {
                    if m.len() >= VERIFIED_MAX {
                        m.clear();
                    }
                    m.insert(fingerprint, (e.clone(), Instant::now()));
                }
                return Err(e);
            }
        };
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= VERIFIED_MAX {
                m.retain(|_, (_, at, _)| at.elapsed() < VERIFIED_TTL);
                if m.len() >= VERIFIED_MAX {
                    m.clear();
                }
            }
            m.insert(fingerprint, (verified.clone(), Instant::now(), kid));
        }
        Ok(verified)
    }

    /// Full verification; also returns the `kid` that verified it.
    async fn verify_uncached(&self, token: &str) -> Result<(Authenticated, String), NotVerified> {
        // `none` and unknown algorithms fail here: they are not in the library's enum.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthnError::Malformed)?;
        // RFC 7515 §4.1.11: a token whose critical extensions are not all understood must be
        // refused, and this gateway understands none.
        if let Some(crit) = &header.crit {
            return Err(AuthnError::Invalid {
                detail: format!(
                    "the token's header names critical extensions (`crit`: {}) this gateway does not implement",
                    crit.iter()
                        .take(4)
                        .map(|c| crate::request::clean(c, 32))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            .into());
        }
        let kid = header.kid.clone().ok_or_else(|| AuthnError::Invalid {
            detail: "the token names no `kid`".into(),
        })?;
        let (issuer, key) = match self.find_key(&kid) {
            Some(found) => found,
            None => {
                self.refresh_url_issuers().await;
                self.find_key(&kid).ok_or_else(|| AuthnError::Invalid {
                    detail: "unknown `kid`".into(),
                })?
            }
        };
        if header.alg != key.alg {
            return Err(AuthnError::Invalid {
                detail: format!("algorithm {:?} is not the key's ({:?})", header.alg, key.alg),
            }
            .into());
        }
        let mut v = Validation::new(key.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[issuer.issuer.as_str()]);
        v.set_audience(&[self.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let error = match e.kind() {
                ErrorKind::ExpiredSignature => AuthnError::Expired,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthnError::Malformed,
                other => AuthnError::Invalid {
                    detail: format!("{other:?}"),
                },
            };
            NotVerified {
                lasting: !matches!(e.kind(), ErrorKind::ImmatureSignature),
                error,
            }
        })?;
        let claims = data.claims;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256);
        let sub = sub.ok_or_else(|| AuthnError::Invalid {
            detail: "`sub` must be a non-empty string".into(),
        })?;
        let roles = match claims.get(&issuer.roles_claim) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|r| r.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| AuthnError::Invalid {
                    detail: format!("`{}` must be an array of strings", issuer.roles_claim),
                })?,
            Some(_) => {
                return Err(AuthnError::Invalid {
                    detail: format!("`{}` must be an array of strings", issuer.roles_claim),
                }
                .into());
            }
        };
        let expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let bound_to = match claims.get("cnf") {
            None => None,
            Some(cnf) => match cnf.get("x5t#S256").and_then(Value::as_str) {
                Some(t) => Some(t.to_string()),
                // A confirmation method this gateway cannot check is not ignored.
                None => {
                    return Err(AuthnError::Invalid {
                        detail: "`cnf` names no `x5t#S256` certificate thumbprint".into(),
                    }
                    .into());
                }
            },
        };
        Ok((
            Authenticated {
                principal: Arc::new(Principal {
                    sub: sub.to_string(),
                    iss: issuer.issuer.clone(),
                    roles,
                    token_id: claims.get("jti").and_then(Value::as_str).map(str::to_string),
                    auth_method: format!("jwt-{:?}", key.alg).to_lowercase(),
                    cert: None,
                }),
                env: self.env.clone(),
                expires_at,
                bound_to,
            },
            kid,
        ))
    }

    fn find_key(&self, kid: &str) -> Option<(Issuer, Arc<Key>)> {
        self.issuers.iter().find_map(|i| {
            let keys = i.keys.read().ok()?;
            keys.get(kid).map(|k| (i.cfg.clone(), k.clone()))
        })
    }

    async fn refresh_url_issuers(&self) {
        for i in &self.issuers {
            if !matches!(i.cfg.jwks, JwksSource::Url(_)) {
                continue;
            }
            {
                let Ok(mut last) = i.last_fetch.lock() else { continue };
                if last.is_some_and(|t| t.elapsed() < REFRESH_MIN_INTERVAL) {
                    continue;
                }
                *last = Some(Instant::now());
            }
            let fetched = fetch(&self.http, &i.cfg.jwks).await;
            if let Some(m) = &self.metrics {
                m.jwks_refreshed(&i.cfg.issuer, fetched.is_ok());
            }
            match fetched {
                Ok(keys) => {
                    if let Ok(mut slot) = i.keys.write() {
                        *slot = Arc::new(keys);
                    }
                }
                Err(e) => tracing::warn!(env = %self.env, issuer = %i.cfg.issuer, "JWKS refresh failed: {e}"),
            }
        }
    }
}

async fn fetch(http: &reqwest::Client, src: &JwksSource) -> Result<HashMap<String, Arc<Key>>, String> {
    let text = match src {
        JwksSource::File(p) => std::fs::read_to_string(p).map_err(|e| format!("cannot read JWKS `{}`: {e}", p.display()))?,
        JwksSource::Url(u) => {
            let resp = http.get(u).send().await.map_err(|e| format!("cannot fetch JWKS `{u}`: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("JWKS `{u}` answered {}", resp.status()));
            }
            resp.text().await.map_err(|e| format!("cannot read JWKS `{u}`: {e}"))?
        }
    };
    let keys = parse_jwks(&text)?;
    if keys.is_empty() {
        return Err("the JWKS holds no usable key (RSA, P-256 or Ed25519 with a `kid`)".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = http::HeaderMap::new();
        assert!(matches!(Authenticator::bearer(&h), Err(AuthnError::Missing)));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(Authenticator::bearer(&h).unwrap(), "abc");
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(matches!(Authenticator::bearer(&h), Err(AuthnError::Missing)));
        h.insert("authorization", "Bearer".parse().unwrap());
        assert!(matches!(Authenticator::bearer(&h), Err(AuthnError::Malformed)));
        h.insert("authorization", "Bearer a".parse().unwrap());
        h.append("authorization", "Bearer b".parse().unwrap());
        assert!(matches!(Authenticator::bearer(&h), Err(AuthnError::Malformed)));
    }

    #[tokio::test]
    async fn a_token_not_valid_yet_is_not_remembered_as_refused() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let kid = crate::keys::kid_of(&key);
        let jwks = crate::keys::jwks_of(&key).to_string();
        let a = Authenticator::offline("dev", "http://gw.test/mcp", "https://idp.test", &jwks).unwrap();
        let now = unix_now();
        let token = |aud: &str, nbf: u64| {
            let claims = serde_json::json!({"iss": "https://idp.test", "aud": aud, "sub": "a", "nbf": nbf, "exp": now + 7200});
            crate::keys::sign_jwt(&key, &kid, &claims).unwrap()
        };
        let remembered = |a: &Authenticator| a.refused.lock().unwrap().len();
        // `nbf` an hour ahead (beyond the leeway): refused now, valid later.
        assert!(matches!(
            a.verify(&token("http://gw.test/mcp", now + 3600)).await,
            Err(AuthnError::Invalid { .. })
        ));
        assert_eq!(remembered(&a), 0);
        // Another audience stays wrong: remembered, and refused alike from the cache.
        let other = token("http://elsewhere.test/mcp", now);
        assert!(matches!(a.verify(&other).await, Err(AuthnError::Invalid { .. })));
        assert_eq!(remembered(&a), 1);
        assert!(matches!(a.verify(&other).await, Err(AuthnError::Invalid { .. })));
        assert!(a.verify(&token("http://gw.test/mcp", now)).await.is_ok());
    }

    #[test]
    fn symmetric_keys_in_a_jwks_are_ignored() {
        let jwks = r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#;
        assert!(parse_jwks(jwks).unwrap().is_empty());
    }
}
