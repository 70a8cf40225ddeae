//! JSON objects only. serde's derived `Deserialize` for a struct also accepts a JSON array,
//! reading the fields by position (`["arr:x"]` as `{"pattern": "arr:x"}`, `[]` as a filter
//! with every field absent). Every struct a client sends (protocol messages and their
//! fields, REST and Socket.IO bodies) goes through here, so an array is refused with an error
//! that says an object was expected.

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::value::RawValue;

/// Whether `text` is a JSON object (its first non-blank character is `{`).
pub fn is_object(text: &[u8]) -> bool {
    text.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// `deserialize_with` for an optional struct field: `null` or absent is `None`, an object is
/// parsed, anything else is refused.
pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::de::Error;
    let raw: Option<&'de RawValue> = Option::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(r) if is_object(r.get().as_bytes()) => serde_json::from_str(r.get())
            .map(Some)
            .map_err(D::Error::custom),
        Some(r) => Err(D::Error::custom(format_args!(
            "expected a JSON object, got `{}`",
            preview(r.get())
        ))),
    }
}

/// The start of a value, for error messages.
pub fn preview(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        a: Option<u8>,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(default, deserialize_with = "opt")]
        inner: Option<Inner>,
    }

    #[test]
    fn arrays_are_refused_objects_and_null_pass() {
        assert!(is_object(b"  {\"a\":1}") && !is_object(b"[1]") && !is_object(b""));
        let o: Outer = serde_json::from_str(r#"{"inner":{"a":1}}"#).unwrap();
        assert_eq!(o.inner, Some(Inner { a: Some(1) }));
        let o: Outer = serde_json::from_str(r#"{"inner":null}"#).unwrap();
        assert_eq!(o.inner, None);
        let o: Outer = serde_json::from_str("{}").unwrap();
        assert_eq!(o.inner, None);
        for bad in [r#"{"inner":[]}"#, r#"{"inner":[1]}"#, r#"{"inner":"x"}"#] {
            let e = serde_json::from_str::<Outer>(bad).unwrap_err().to_string();
            assert!(e.contains("expected a JSON object"), "{bad}: {e}");
        }
        // What this guards against: derived structs take arrays by position.
        assert!(serde_json::from_str::<Inner>("[1]").is_ok());
    }
}
