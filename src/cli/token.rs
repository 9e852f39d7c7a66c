//! `capgate token mint`: development tokens signed by an environment's development issuer.
//!
//! INVARIANT: refused for production environments, whatever the config says.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{Failure, load_config};
use crate::config::Environment;

pub(super) fn mint_for(env: &Environment, sub: &str, roles: &[String], ttl_secs: u64) -> Result<String, Failure> {
    if env.production {
        return Err(Failure::Usage(format!(
            "environment `{}` is marked production: tokens are never minted for it",
            env.name
        )));
    }
    let issuer = env
        .issuers
        .iter()
        .find(|i| i.mint_key.is_some())
        .ok_or_else(|| Failure::Usage(format!("environment `{}` has no identity with a `mint_key`", env.name)))?;
    let key_path = issuer.mint_key.as_ref().ok_or_else(|| Failure::Usage("no mint key".into()))?;
    let key = super::keys::load_signing_key(key_path).map_err(Failure::Usage)?;
    if let crate::config::JwksSource::File(p) = &issuer.jwks
        && let Ok(jwks) = std::fs::read_to_string(p)
        && let Some(why) = super::keys::jwks_refuses(&jwks, &key)
    {
        return Err(Failure::Usage(format!("mint_key `{}`: {why}", key_path.display())));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut claims = json!({
        "iss": issuer.issuer,
        "sub": sub,
        "aud": env.public_url,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_secs,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(o) = claims.as_object_mut() {
        o.insert(issuer.roles_claim.clone(), json!(roles));
    }
    super::keys::sign_jwt(&key, &super::keys::kid_of(&key), &claims).map_err(Failure::Usage)
}

pub(super) fn mint(config: &Path, env: &str, sub: &str, roles: &str, ttl: &str) -> Result<(), Failure> {
    let config = load_config(config)?;
    let env = config
        .environment(env)
        .ok_or_else(|| Failure::Usage(format!("no environment `{env}`")))?;
    let ttl =
        crate::contract::parse_duration(ttl).ok_or_else(|| Failure::Usage(format!("--ttl `{ttl}`: write a duration such as `15m`")))?;
    let roles = crate::contract::split_list(roles);
    println!("{}", mint_for(env, sub, &roles, ttl.as_secs())?);
    Ok(())
}
