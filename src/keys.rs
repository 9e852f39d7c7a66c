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

pub fn generate_files(out: &Path, name: &str) -> anyhow::Result<Generated> {
    std::fs::create_dir_all(out)?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
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
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let pem = key.to_pkcs8_pem(Default::default()).map_err(|e| e.to_string())?;
    let enc = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &enc).map_err(|e| format!("signing failed: {e}"))
}
