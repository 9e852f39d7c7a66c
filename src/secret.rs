//! `Secret<T>`: the only type that holds a credential (token, backend credential, key bytes).
//!
//! INVARIANT: a secret never reaches a log or an error through `Debug` or `Display`, and its
//! memory is wiped on drop. It has no equality: a secret is never compared as a value (the
//! token caches compare SHA-256 fingerprints).

use zeroize::Zeroize;

pub(crate) struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(value)
    }

    /// The one way to read a secret: the call site names what it exposes.
    pub(crate) fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
