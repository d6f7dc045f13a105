//! The body check: present, UTF-8, one JSON text. Nothing is built from it; it is stored as sent.
//!
//! One exception (CONTRACT §8, "Bodies"): a body that is not JSON but a form
//! (`application/x-www-form-urlencoded`) whose one `payload` field holds a JSON text, as GitHub
//! delivers by default. The log keeps the form as sent (a signature covers those bytes) with
//! [`BodyForm::FormPayload`], and [`stored_body`] gives the JSON that lands.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Empty, or nothing but whitespace (CONTRACT §1, row 4).
    Empty,
    /// Not UTF-8, or not exactly one JSON text (row 5).
    Invalid,
}

/// How a body holds the JSON text that lands (a record's `form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyForm {
    /// The body is the JSON text.
    #[default]
    Json,
    /// The body is form bytes whose one `payload` field is the JSON text (GitHub's default).
    FormPayload,
}

/// The media type of a form body; parameters such as `; charset=utf-8` may follow it.
const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// Whether a `Content-Type` value names a form body, parameters and case aside.
pub fn is_form_content_type(value: &[u8]) -> bool {
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(FORM_MEDIA_TYPE.as_bytes())
}

/// The edge's body check: a JSON text is JSON whatever the sender declared (CONTRACT §1 does
/// not check Content-Type); a body that is not, sent as a form (`declared_form`), is accepted
/// when its one `payload` field holds a JSON text. Anything else fails as [`check_body`] does.
///
/// The JSON check runs first and alone in the common case: a plain JSON body costs nothing more.
pub fn check_body_as(body: &[u8], declared_form: bool) -> Result<BodyForm, BodyError> {
    match check_body(body) {
        Ok(()) => Ok(BodyForm::Json),
        Err(BodyError::Invalid) if declared_form && holds_json_payload(body) => {
            Ok(BodyForm::FormPayload)
        }
        Err(error) => Err(error),
    }
}

/// A form whose one `payload` field is a JSON text. The form itself must be UTF-8 without a NUL
/// byte, as JSON bodies are: the log relies on bodies never holding a NUL (see `wal::record`),
/// and it is what a form encoder writes.
fn holds_json_payload(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok()
        && !body.contains(&0)
        && form_payload(body).is_some_and(|payload| check_body(&payload).is_ok())
}

/// The JSON text a record's body holds, to store in `__kdd_request_body`.
///
/// [`BodyForm::Json`]: the body itself, borrowed (the edge checked it is UTF-8; a lossy
/// conversion is a safety net, not a path). [`BodyForm::FormPayload`]: the `payload` field,
/// percent-decoded. A form without one (the edge never logs such a record) gives the form text
/// itself, so that nothing is lost.
pub fn stored_body(body: &[u8], form: BodyForm) -> Cow<'_, str> {
    match form {
        BodyForm::Json => String::from_utf8_lossy(body),
        BodyForm::FormPayload => match form_payload(body) {
            Some(Cow::Borrowed(payload)) => String::from_utf8_lossy(payload),
            Some(Cow::Owned(payload)) => Cow::Owned(
                String::from_utf8(payload)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            None => String::from_utf8_lossy(body),
        },
    }
}

/// The decoded value of the form's `payload` field; `None` if it has none, or more than one
/// (which of them would be the delivery?).
fn form_payload(form: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut found = None;
    for pair in form.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        if form_decode(name).as_ref() != b"payload" {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(form_decode(value));
    }
    found
}

/// One form-encoded name or value: `+` is a space, then `%XX` escapes are undone.
fn form_decode(text: &[u8]) -> Cow<'_, [u8]> {
    if !text.contains(&b'+') {
        return percent_encoding::percent_decode(text).into();
    }
    let spaced: Vec<u8> = text
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_encoding::percent_decode(&spaced).collect())
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

    fn form(json: &str) -> String {
        let encoded: String = form_urlencoded::byte_serialize(json.as_bytes()).collect();
        format!("payload={encoded}")
    }

    #[test]
    fn form_content_types() {
        for yes in [
            &b"application/x-www-form-urlencoded"[..],
            b"Application/X-WWW-Form-Urlencoded",
            b" application/x-www-form-urlencoded ; charset=utf-8",
        ] {
            assert!(
                is_form_content_type(yes),
                "{:?}",
                String::from_utf8_lossy(yes)
            );
        }
        for no in [
            &b"application/json"[..],
            b"",
            b"multipart/form-data; boundary=x",
            b"application/x-www-form-urlencoded-not",
            b"text/plain; application/x-www-form-urlencoded",
        ] {
            assert!(
                !is_form_content_type(no),
                "{:?}",
                String::from_utf8_lossy(no)
            );
        }
    }

    #[test]
    fn a_form_with_a_json_payload_stores_the_json() {
        let json = r#"{"action":"opened","text":"a+b & c=d 😀 100%","n":[1, 2]}"#;
        let body = form(json);
        assert!(body.contains('+'), "spaces became +: {body}");
        assert_eq!(
            check_body_as(body.as_bytes(), true),
            Ok(BodyForm::FormPayload)
        );
        assert_eq!(stored_body(body.as_bytes(), BodyForm::FormPayload), json);
        // Other fields around it, in any order, and an encoded field name.
        let body = format!("a=1&{}&b", form(json)).replace("payload", "p%61yload");
        assert_eq!(
            check_body_as(body.as_bytes(), true),
            Ok(BodyForm::FormPayload)
        );
        assert_eq!(stored_body(body.as_bytes(), BodyForm::FormPayload), json);
        // Nothing to decode: the payload is borrowed.
        let plain = "payload=[1,2]";
        assert!(matches!(
            stored_body(plain.as_bytes(), BodyForm::FormPayload),
            Cow::Borrowed("[1,2]")
        ));
    }

    #[test]
    fn json_is_json_whatever_the_content_type_says() {
        let body = br#"{"payload":"x=1&y=2"}"#;
        assert_eq!(check_body_as(body, true), Ok(BodyForm::Json));
        assert_eq!(check_body_as(b"payload=1", true), Ok(BodyForm::FormPayload));
        assert!(matches!(
            stored_body(body, BodyForm::Json),
            Cow::Borrowed(text) if text.as_bytes() == body
        ));
    }

    #[test]
    fn forms_without_one_json_payload_are_refused_as_before() {
        let cases: [(&[u8], bool, BodyError); 10] = [
            (b"payload=%7B", true, BodyError::Invalid),
            (b"payload=", true, BodyError::Invalid),
            (b"other=%7B%7D", true, BodyError::Invalid),
            (b"payload=1&payload=2", true, BodyError::Invalid),
            (b"payload=%7B%7D", false, BodyError::Invalid),
            (
                b"payload=%7B%22a%22%3A%22%00%22%7D",
                true,
                BodyError::Invalid,
            ),
            (b"x=\0&payload=1", true, BodyError::Invalid),
            (b"x=\xff&payload=1", true, BodyError::Invalid),
            (b"payload=%FF", true, BodyError::Invalid),
            (b"  ", true, BodyError::Empty),
        ];
        for (body, declared_form, error) in cases {
            assert_eq!(
                check_body_as(body, declared_form),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn every_shared_github_payload_round_trips_as_a_form() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/payloads/github");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return; // the shared folder is beside the checkout in CI and for developers
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let json = std::fs::read_to_string(&path).expect("payload is readable");
                let body = form(&json);
                assert_eq!(
                    check_body_as(body.as_bytes(), true),
                    Ok(BodyForm::FormPayload)
                );
                assert_eq!(stored_body(body.as_bytes(), BodyForm::FormPayload), json);
            }
        }
    }

    proptest! {
        #[test]
        fn any_json_round_trips_through_a_form(value in arb_json()) {
            let json = serde_json::to_string(&value).unwrap();
            let body = form(&json);
            prop_assert_eq!(check_body_as(body.as_bytes(), true), Ok(BodyForm::FormPayload));
            prop_assert_eq!(stored_body(body.as_bytes(), BodyForm::FormPayload), json);
        }

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
