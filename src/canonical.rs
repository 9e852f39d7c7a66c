//! Canonical JSON: object keys sorted by code point, no insignificant white space. Digests of
//! arguments, contracts, results and audit records are taken over this form so that two
//! spellings of the same value (key order, spacing) have one digest.
//!
//! serde_json is built with `preserve_order` (cedar-policy turns it on for the whole build),
//! so a map keeps its keys in insertion order; [`Sorted`] writes every object's keys in
//! code-point order as it serializes, without copying the value.
//! INVARIANT: every digest of a JSON value goes through [`Sorted`]; the tests below compare
//! against a model that sorts explicitly.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A value serialized canonically: every object's keys in code-point order (the order of
/// `str`'s `Ord`, which is that of UTF-8 bytes).
pub(crate) struct Sorted<'a>(pub(crate) &'a Value);

/// [`Sorted`] for an object.
pub(crate) struct SortedMap<'a>(pub(crate) &'a Map<String, Value>);

impl Serialize for SortedMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
        // Most maps arrive sorted already (parsed from canonical text, or built in order).
        if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, &Sorted(v))?;
        }
        map.end()
    }
}

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => SortedMap(m).serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Sorted(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// `serialize_with` for an optional value that must be written canonically.
pub(crate) fn sorted_option<S: Serializer>(v: &&Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => Sorted(v).serialize(s),
        None => s.serialize_none(),
    }
}

pub fn canonical_json(value: &Value) -> String {
    serde_json::to_string(&Sorted(value)).unwrap_or_default()
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

/// SHA-256 (hex) of the compact serialization of `value`. For a struct whose fields are
/// declared in code-point order and whose JSON values are written through [`Sorted`], that
/// is the digest of its canonical JSON.
pub(crate) fn digest_of<T: Serialize + ?Sized>(value: &T) -> String {
    let mut h = Sha256::new();
    // Serializing plain data into a hasher cannot fail; were it to, the digest would still
    // differ from any honest one, so nothing could match it by accident.
    let _ = serde_json::to_writer(HashWriter(&mut h), value);
    lower_hex(&h.finalize())
}

pub(crate) fn digest(value: &Value) -> String {
    digest_of(&Sorted(value))
}

/// [`digest`] of an object.
pub(crate) fn digest_map(value: &Map<String, Value>) -> String {
    digest_of(&SortedMap(value))
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
