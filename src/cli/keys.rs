//! `capgate keys generate`.

use std::path::Path;

pub(super) use crate::keys::*;

use super::Failure;

pub(super) fn generate(out: &Path, name: &str) -> Result<Generated, Failure> {
    let g = generate_files(out, name)?;
    println!(
        "wrote {} (private, mode 0600), {}.pub.pem and {} (kid {})",
        g.private.display(),
        name,
        g.jwks.display(),
        kid_of(&g.key)
    );
    Ok(g)
}
