//! Ed25519 key material: generating key pairs and their JWKS, reading private keys for
//! signing (tokens in development, audit checkpoints) and public keys for verifying.
//!
//! INVARIANT: private keys are written with mode 0600 and refused when group- or
//! world-readable.

use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::json;

/// The key id of a public key: the first 16 hex digits of SHA-256 over its raw bytes.
pub fn kid_of(key: &SigningKey) -> String {
    let digest = crate::canonical::sha256_hex(key.verifying_key().as_bytes());
    digest.get(..16).unwrap_or(&digest).to_string()
}

pub fn jwks_of(key: &SigningKey) -> serde_json::Value {
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid_of(key), "alg": "EdDSA", "use": "sig"}]})
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        f.write_all(contents.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, contents)
    }
}

pub struct Generated {
    pub private: PathBuf,
    pub jwks: PathBuf,
    pub key: SigningKey,
}

/// The private key as PKCS#8 v1 PEM (RFC 8410 `OneAsymmetricKey` without the optional
/// public key): the form OpenSSL 3, Python's `cryptography` and `jsonwebtoken` all read.
/// The v2 form with the public key is refused by the first two.
fn private_pem(key: &SigningKey) -> Result<String, String> {
    let bytes = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(Default::default())
        .map(|pem| pem.to_string())
        .map_err(|e| format!("encoding the key: {e}"))
}

pub fn generate_files(out: &Path, name: &str) -> anyhow::Result<Generated> {
    std::fs::create_dir_all(out)?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = private_pem(&key).map_err(|e| anyhow::anyhow!(e))?;
    let pubpem = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
    let private = out.join(format!("{name}.pem"));
    write_private(&private, &pem).map_err(|e| anyhow::anyhow!("{}: {e} (an existing key is never overwritten)", private.display()))?;
    std::fs::write(out.join(format!("{name}.pub.pem")), pubpem)?;
    let jwks = out.join(format!("{name}.jwks.json"));
    std::fs::write(&jwks, serde_json::to_string_pretty(&jwks_of(&key))?)?;
    Ok(Generated { private, jwks, key })
}

/// Why a JWKS document would not verify what `key` signs, if it would not: no key with
/// `key`'s kid, or one with that kid and another public key.
pub(crate) fn jwks_refuses(jwks: &str, key: &SigningKey) -> Option<String> {
    let kid = kid_of(key);
    let doc: serde_json::Value = match serde_json::from_str(jwks) {
        Ok(d) => d,
        Err(e) => return Some(format!("the JWKS is not JSON: {e}")),
    };
    let keys = doc.get("keys").and_then(|k| k.as_array()).map(Vec::as_slice).unwrap_or_default();
    let Some(jwk) = keys.iter().find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid.as_str())) else {
        return Some(format!(
            "the JWKS holds no key with its kid `{kid}`: every token minted with it would be refused"
        ));
    };
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    if jwk.get("x").and_then(|v| v.as_str()) != Some(x.as_str()) {
        return Some(format!(
            "the JWKS key with kid `{kid}` is not its public key: every token minted with it would be refused"
        ));
    }
    None
}

/// Refuses a private key file that group or others can read.
pub(crate) fn check_private_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {}", path.display(), e.kind()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "`{}` is readable by group or others; run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Reads an Ed25519 private key (PKCS#8 PEM), refusing a file others can read.
pub(crate) fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    check_private_file(path)?;
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {}", path.display(), e.kind()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| format!("`{}` is not an Ed25519 private key in PKCS#8 PEM", path.display()))
}

/// Reads an Ed25519 public key (SPKI PEM, as `keys generate` writes NAME.pub.pem).
pub(crate) fn load_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {}", path.display(), e.kind()))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|_| format!("`{}` is not an Ed25519 public key in PEM", path.display()))
}

/// Signs JWT claims with an Ed25519 key (EdDSA), naming `kid` in the header.
pub fn sign_jwt(key: &SigningKey, kid: &str, claims: &serde_json::Value) -> Result<String, String> {
    let pem = private_pem(key)?;
    let enc = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &enc).map_err(|e| format!("signing failed: {e}"))
}
