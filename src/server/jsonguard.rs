//! Request-body checks the JSON-RPC layer cannot make: duplicate object keys (serde keeps the
//! last, so `{"ip":"10.0.0.0/8","ip":"0.0.0.0/0"}` could mean different things to the gateway
//! and the upstream), and the facts the guard needs for its own records (id, method, tool).

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    Syntax,
    DuplicateKey(String),
}

/// Builds the `Value` and refuses a duplicate key in the same pass (the body is parsed once).
/// The key found goes into `duplicate`, beside serde's error, which only stops the parse.
#[derive(Clone, Copy)]
struct Checked<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown = crate::request::clean(&key, 64);
                *self.duplicate.borrow_mut() = Some(shown);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Checks a request body; `Ok` is the one well-formed JSON value it holds, without
/// duplicate keys anywhere.
pub(crate) fn check_body(bytes: &[u8]) -> Result<Value, BodyError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match (Checked { duplicate: &duplicate }).deserialize(&mut de) {
        Ok(v) => v,
        Err(_) => {
            return Err(match duplicate.into_inner() {
                Some(key) => BodyError::DuplicateKey(key),
                None => BodyError::Syntax,
            });
        }
    };
    de.end().map_err(|_| BodyError::Syntax)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_anywhere_are_found() {
        assert_eq!(check_body(br#"{"a":1,"a":2}"#), Err(BodyError::DuplicateKey("a".into())));
        assert_eq!(
            check_body(br#"{"params":{"arguments":{"ip":"10.0.0.0/8","ip":"0.0.0.0/0"}}}"#),
            Err(BodyError::DuplicateKey("ip".into()))
        );
        assert_eq!(check_body(br#"[{"x":1},{"x":1}]"#).map(|_| ()), Ok(()));
        assert_eq!(check_body(br#"{"a":1} x"#), Err(BodyError::Syntax));
        assert_eq!(check_body(b"{"), Err(BodyError::Syntax));
    }

    proptest! {
        #[test]
        fn never_panics_and_agrees_with_serde_on_valid_json(s in "\\PC{0,64}") {
            let ours = check_body(s.as_bytes());
            let serde: Result<Value, _> = serde_json::from_str(&s);
            if serde.is_err() {
                prop_assert!(ours.is_err());
            }
        }

        /// Any JSON without duplicate keys (which printing a `Value` cannot produce) reads
        /// back as exactly the value serde_json reads.
        #[test]
        fn reads_what_serde_reads(v in crate::canonical::strategies::json(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            prop_assert_eq!(check_body(text.as_bytes()), Ok(serde_json::from_str::<Value>(&text).unwrap()));
        }
    }
}
