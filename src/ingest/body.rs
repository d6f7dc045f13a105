//! The body check: present, UTF-8, one JSON text. Nothing is built from it; it is stored as sent.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Empty, or nothing but whitespace (CONTRACT §1, row 4).
    Empty,
    /// Not UTF-8, or not exactly one JSON text (row 5).
    Invalid,
}

/// Checks that `body` is one JSON text (object, array or scalar) in UTF-8.
///
/// [`Skip`] walks the text without building a tree that would be thrown away. It goes through
/// `deserialize_any`, not `IgnoredAny`: serde_json skips `IgnoredAny` without its recursion
/// limit (5,000 nested arrays passed), while `deserialize_any` refuses more than 128 levels.
/// UTF-8 is checked first, on the whole body, so no byte goes unchecked.
pub fn check_body(body: &[u8]) -> Result<(), BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::Invalid)?;
    serde_json::from_str::<Skip>(text).map_err(|_| BodyError::Invalid)?;
    Ok(())
}

/// Any JSON value, checked and dropped as it is read.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Skip, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_whitespace() {
        for body in [&b""[..], b" ", b"\n\t\r ", b"\x0c"] {
            assert_eq!(check_body(body), Err(BodyError::Empty));
        }
    }

    #[test]
    fn any_json_text_is_accepted() {
        let ok: [&[u8]; 12] = [
            b"{}",
            b"[]",
            b"1",
            b"-0.5e10",
            b"\"text\"",
            b"true",
            b"null",
            b" {\"a\": [1, 2, {\"b\": null}]} \n",
            "{\"emoji\":\"😀\",\"accents\":\"ção\"}".as_bytes(),
            b"{\"escaped\":\"\\u00e7\\n\\\"\"}",
            b"{\"a\":1,\"a\":2}",
            b"18446744073709551616123",
        ];
        for body in ok {
            assert_eq!(
                check_body(body),
                Ok(()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn invalid_json_or_encoding() {
        let bad: [&[u8]; 11] = [
            b"{",
            b"{\"a\":}",
            b"{} {}",
            b"nope",
            b"{'a':1}",
            b"[1,]",
            b"\"\xff\"",
            b"{\"a\":\"\0\"}",
            b"\xef\xbb\xbf{}",
            b"{\"a\":NaN}",
            b"\"\\ud800\"",
        ];
        for body in bad {
            assert_eq!(check_body(body), Err(BodyError::Invalid), "{:?}", body);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        for depth in [129, 5_000, 100_000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                check_body(deep.as_bytes()),
                Err(BodyError::Invalid),
                "{depth}"
            );
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert_eq!(
                check_body(objects.as_bytes()),
                Err(BodyError::Invalid),
                "{depth}"
            );
        }
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(check_body(fine.as_bytes()), Ok(()));
    }

    #[test]
    fn every_shared_payload_is_valid() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/payloads/github");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return; // the shared folder is beside the checkout in CI and for developers
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(&path).expect("payload is readable");
                assert_eq!(check_body(&body), Ok(()), "{}", path.display());
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_parse(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let full = std::str::from_utf8(&bytes).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
            let ours = check_body(&bytes);
            if bytes.iter().all(u8::is_ascii_whitespace) {
                prop_assert_eq!(ours, Err(BodyError::Empty));
            } else {
                prop_assert_eq!(ours.is_ok(), full.is_some());
            }
        }

        #[test]
        fn serialized_values_are_accepted(value in arb_json()) {
            let text = serde_json::to_string(&value).unwrap();
            prop_assert_eq!(check_body(text.as_bytes()), Ok(()));
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::hash_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
