//! Request-body checks the JSON-RPC layer cannot make: duplicate object keys (serde keeps the
//! last, so `{"ip":"10.0.0.0/8","ip":"0.0.0.0/0"}` could mean different things to the gateway
//! and the upstream), and the facts the guard needs for its own records (id, method, tool).

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    Syntax,
    DuplicateKey(String),
}

struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Check)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                let shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
                return Err(serde::de::Error::custom(format!("\u{0}dup:{shown}")));
            }
            map.next_value_seed(Check)?;
        }
        Ok(())
    }
}

/// Checks a request body; `Ok` means it is one well-formed JSON value without duplicate keys.
pub fn check_body(bytes: &[u8]) -> Result<Value, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match Check.deserialize(&mut de) {
        Ok(()) => {}
        Err(e) => {
            let msg = e.to_string();
            return Err(match msg.split_once("\u{0}dup:") {
                Some((_, rest)) => BodyError::DuplicateKey(rest.split(" at line").next().unwrap_or(rest).to_string()),
                None => BodyError::Syntax,
            });
        }
    }
    de.end().map_err(|_| BodyError::Syntax)?;
    serde_json::from_slice(bytes).map_err(|_| BodyError::Syntax)
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
    }
}
