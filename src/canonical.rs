//! Canonical JSON: object keys sorted by code point, no insignificant white space. Digests of
//! arguments, contracts, results and audit records are taken over this form so that two
//! spellings of the same value (key order, spacing) have one digest.
//!
//! serde_json is built without `preserve_order`, so its maps are ordered by key and its
//! compact serialization *is* the canonical form: nothing is sorted or copied here.
//! INVARIANT: if a dependency ever turned `preserve_order` on, digests would silently change;
//! the tests below compare against a model that sorts explicitly and would fail first.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn canonical_json(value: &Value) -> String {
    value.to_string()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    lower_hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`, written into one buffer: `hex::encode` collects an iterator of
/// chars, which cost several times more per digest, and every call takes a few digests.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    let mut buf = vec![0u8; bytes.len() * 2];
    // The buffer has exactly twice the length, the one case in which this cannot fail, and
    // hex digits are ASCII.
    let _ = hex::encode_to_slice(bytes, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Feeds serialized bytes straight into the hash, so digesting needs no intermediate text.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SHA-256 (hex) of the compact serialization of `value`. For a `Value`, or a struct whose
/// fields are declared in code-point order, that is the digest of its canonical JSON.
pub(crate) fn digest_of<T: Serialize + ?Sized>(value: &T) -> String {
    let mut h = Sha256::new();
    // Serializing plain data into a hasher cannot fail; were it to, the digest would still
    // differ from any honest one, so nothing could match it by accident.
    let _ = serde_json::to_writer(HashWriter(&mut h), value);
    lower_hex(&h.finalize())
}

pub(crate) fn digest(value: &Value) -> String {
    digest_of(value)
}

#[cfg(test)]
pub(crate) mod model {
    //! The canonical form written out by hand (sort every object's keys, then print): the
    //! model the fast path is checked against.
    use serde_json::Value;

    pub(crate) fn canonical_json(value: &Value) -> String {
        let mut out = String::new();
        write_value(value, &mut out);
        out
    }

    fn write_value(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    if let Some(v) = map.get(*k) {
                        write_value(v, out);
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_value(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// Arbitrary JSON, keys and strings from all of Unicode (escapes, surrogate-range
    /// neighbours, control characters), numbers of every kind.
    pub(crate) fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,12}|[\\x00-\\x1f\"\\\\]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("\\PC{0,8}|[\\x00-\\x1f]{1,2}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_digest() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"\u001b"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "a":{"x":"\u001b","y":[1,2]}, "b":1 }"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"\u001b","y":[1,2]},"b":1}"#);
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&json!({"a": 1})));
    }

    proptest! {
        #[test]
        fn fast_form_is_the_sorted_model(v in strategies::json()) {
            let model = model::canonical_json(&v);
            prop_assert_eq!(&canonical_json(&v), &model);
            prop_assert_eq!(digest(&v), sha256_hex(model.as_bytes()));
        }

        #[test]
        fn lower_hex_is_hex_encode(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        }
    }
}
