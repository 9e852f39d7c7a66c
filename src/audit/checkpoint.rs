//! Signed checkpoints: (environment, sequence number, head hash, time) signed with the
//! environment's Ed25519 audit key. A checkpoint fixes everything up to its sequence number:
//! an edit, deletion, insertion or truncation of a covered record no longer matches it.
//! Copies go to sinks the gateway cannot rewrite (an append-only file, a command), so that
//! truncating the main store together with its checkpoints is still detected.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) env: String,
    pub(crate) seq: u64,
    pub(crate) head_hash: String,
    pub(crate) ts: String,
    pub(crate) key_id: String,
    /// Ed25519 signature over [`Checkpoint::message`], base64url without padding.
    pub(crate) signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed; versioned so the format can change safely.
    pub(crate) fn message(env: &str, seq: u64, head_hash: &str, ts: &str) -> String {
        format!("capgate-audit-checkpoint/v1\nenv={env}\nseq={seq}\nhead={head_hash}\nts={ts}\n")
    }

    pub(crate) fn verify(&self, key: &VerifyingKey) -> Result<(), String> {
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.signature)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or("the signature is malformed")?;
        key.verify(Self::message(&self.env, self.seq, &self.head_hash, &self.ts).as_bytes(), &sig)
            .map_err(|_| "the signature does not verify".to_string())
    }
}

pub(crate) struct Signer {
    env: String,
    key: SigningKey,
    key_id: String,
}

impl Signer {
    pub(crate) fn new(env: &str, key: SigningKey) -> Self {
        let key_id = crate::keys::kid_of(&key);
        Self {
            env: env.to_string(),
            key,
            key_id,
        }
    }

    /// The key approval rows of this environment are sealed with.
    pub(crate) fn row_key(&self) -> super::approval::RowKey {
        super::approval::RowKey::derive(&self.key)
    }

    /// Signs with the time now, or the time of the checkpoint before it (`after`) if that
    /// is later: another gateway sharing the store, on a clock a little ahead, may have
    /// written it.
    pub(crate) fn sign_after(&self, seq: u64, head_hash: &str, after: Option<&str>) -> Checkpoint {
        let now = super::record::now_rfc3339();
        let parse = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
        let ts = match after.and_then(|a| Some((a, parse(a)?))) {
            Some((a, at)) if parse(&now).is_none_or(|n| n < at) => a.to_string(),
            _ => now,
        };
        self.sign_at(seq, head_hash, ts)
    }

    fn sign_at(&self, seq: u64, head_hash: &str, ts: String) -> Checkpoint {
        let sig = self.key.sign(Checkpoint::message(&self.env, seq, head_hash, &ts).as_bytes());
        Checkpoint {
            env: self.env.clone(),
            seq,
            head_hash: head_hash.to_string(),
            ts,
            key_id: self.key_id.clone(),
            signature: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        }
    }
}

/// A second place a checkpoint goes.
pub(crate) enum Sink {
    /// A JSON line appended (O_APPEND, fsync) to a file the operator makes append-only
    /// (`chattr +a`) or ships elsewhere.
    File(PathBuf),
    /// A command that receives the checkpoint as one JSON line on stdin (e.g. `logger`, a
    /// WORM uploader); it must exit 0.
    Command(Vec<String>),
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::File(p) => write!(f, "checkpoint file `{}`", p.display()),
            Sink::Command(c) => write!(f, "checkpoint command `{}`", c.first().map_or("", String::as_str)),
        }
    }
}

impl Sink {
    pub(crate) fn write(&self, cp: &Checkpoint) -> Result<(), String> {
        let line = serde_json::to_string(cp).map_err(|e| e.to_string())?;
        match self {
            Sink::File(path) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| e.to_string())?;
                writeln!(f, "{line}").map_err(|e| e.to_string())?;
                f.sync_data().map_err(|e| e.to_string())
            }
            Sink::Command(argv) => {
                let (program, args) = argv.split_first().ok_or("empty command")?;
                let mut child = Command::new(program)
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                if let Some(mut stdin) = child.stdin.take() {
                    writeln!(stdin, "{line}").map_err(|e| e.to_string())?;
                }
                let status = child.wait().map_err(|e| e.to_string())?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("exited with {status}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_and_any_change_breaks_it() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let cp = Signer::new("prod", key.clone()).sign_after(42, "ab", None);
        assert!(cp.verify(&key.verifying_key()).is_ok());
        for bad in [
            Checkpoint { seq: 41, ..cp.clone() },
            Checkpoint {
                head_hash: "ac".into(),
                ..cp.clone()
            },
            Checkpoint {
                env: "dev".into(),
                ..cp.clone()
            },
            Checkpoint {
                signature: "x".into(),
                ..cp.clone()
            },
        ] {
            assert!(bad.verify(&key.verifying_key()).is_err());
        }
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(cp.verify(&other.verifying_key()).is_err());
    }
}
