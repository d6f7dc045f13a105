//! Naming a delivery: its event type (for filters) and the sender's delivery id (for dropping
//! redeliveries), found where each scheme's sender puts them (CONTRACT §8's table).
//!
//! Bodies can be tens of megabytes, and this runs for every delivery at the edge and again in
//! the writer; the body is therefore never built into a `serde_json::Value`. The fixed schemes
//! read their few fields through borrowed structs (every other field is skipped unparsed), and
//! the `hmac` scheme's configured path is walked the same way.
//!
//! Only strings name things: a number becomes its decimal text (some senders number their
//! deliveries), anything else (objects, arrays, booleans, null, a missing field, a body that is
//! not JSON) gives an empty string.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::scheme::{Locator, Scheme};
use crate::ingest::Headers;

/// What a delivery says it is; each part is empty when the scheme does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Described {
    pub event_type: String,
    pub delivery_id: String,
}

/// Names the delivery with `headers` and `body`, the stored JSON text (for GitHub's form-encoded
/// deliveries, the JSON of its `payload` field). No scheme: both parts are empty.
pub fn describe(scheme: Option<&Scheme>, headers: &Headers, body: &str) -> Described {
    let header = |name: &str| headers.get(name).unwrap_or_default().to_owned();
    let Some(scheme) = scheme else {
        return Described::default();
    };
    let (event_type, delivery_id) = match scheme {
        Scheme::Github => (header("x-github-event"), header("x-github-delivery")),
        Scheme::Shopify => (header("x-shopify-topic"), header("x-shopify-webhook-id")),
        Scheme::Stripe => {
            let fields: TypeAndId = parse(body);
            (text(fields.kind), text(fields.id))
        }
        Scheme::Standard => {
            let fields: TypeAndId = parse(body);
            let id = headers.first_of(&["webhook-id", "svix-id"]);
            (text(fields.kind), id.unwrap_or_default().to_owned())
        }
        Scheme::Slack => {
            let fields: SlackBody = parse(body);
            let inner = fields.event.and_then(|e| e.0).and_then(|e| e.kind);
            let kind = inner.filter(|k| !k.0.is_empty()).or(fields.kind);
            (text(kind), text(fields.event_id))
        }
        Scheme::Kakiyo => {
            let fields: KakiyoBody = parse(body);
            (text(fields.event), String::new())
        }
        Scheme::Hmac(options) => {
            let locate = |locator: &Option<Locator>| match locator {
                None => String::new(),
                Some(Locator::Header(name)) => header(name),
                Some(Locator::Field(path)) => field(body, path),
            };
            (locate(&options.event), locate(&options.id))
        }
    };
    Described {
        event_type,
        delivery_id,
    }
}

/// The `challenge` of Slack's `{"type":"url_verification","challenge":"…"}`, which must be echoed
/// back for Slack to accept the URL; `None` for every other body.
pub fn slack_challenge(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Handshake<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow)]
        challenge: Option<Cow<'a, str>>,
    }
    let handshake: Handshake = serde_json::from_str::<ObjectOr<_>>(body).ok()?.0?;
    if handshake.kind.as_deref() != Some("url_verification") {
        return None;
    }
    handshake.challenge.map(Cow::into_owned)
}

/// Stripe's and Standard Webhooks' bodies: `type` and `id` at the top.
#[derive(Default, Deserialize)]
struct TypeAndId<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    id: Option<Text<'a>>,
}

/// Slack's Events API: `event.type` inside an envelope whose own `type` is `event_callback`.
#[derive(Default, Deserialize)]
struct SlackBody<'a> {
    #[serde(borrow)]
    event: Option<ObjectOr<SlackEvent<'a>>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    event_id: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct SlackEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
}

#[derive(Default, Deserialize)]
struct KakiyoBody<'a> {
    #[serde(borrow)]
    event: Option<Text<'a>>,
}

/// The named fields of `body`, all empty if it is not a JSON object. (A derived struct would
/// also take an array, field by field in order, hence [`ObjectOr`].)
fn parse<'a, T: Deserialize<'a> + Default>(body: &'a str) -> T {
    match serde_json::from_str::<ObjectOr<T>>(body) {
        Ok(ObjectOr(Some(fields))) => fields,
        _ => T::default(),
    }
}

fn text(value: Option<Text<'_>>) -> String {
    value.map(|t| t.0.into_owned()).unwrap_or_default()
}

/// The value at a dotted `path` of `body` (`data.object.id`), walked without building the body.
fn field(body: &str, path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    let mut json = serde_json::Deserializer::from_str(body);
    let seed = PathSeed { path: &parts };
    match seed.deserialize(&mut json) {
        Ok(found) if json.end().is_ok() => text(found),
        _ => String::new(),
    }
}

/// A JSON value as a name: a string as it is (borrowed when it has no escapes), a number as its
/// decimal text, anything else empty.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor(PhantomData))
    }
}

struct TextVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text<'a>, E> {
        Ok(Text(Cow::Owned(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text<'a>, E> {
        Ok(Text(Cow::Owned(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text<'a>, E> {
        Ok(Text(Cow::Owned(v.to_string())))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
        Ok(Text(Cow::Borrowed("")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text(Cow::Borrowed("")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text<'a>, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Text(Cow::Borrowed("")))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'a>, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Text(Cow::Borrowed("")))
    }
}

/// Visitor methods for every JSON value but an object, each skipping the value and finding
/// nothing.
macro_rules! nothing_but_in_objects {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            IgnoredAny.visit_seq(seq)?;
            Ok(None)
        }
    };
}

/// `T` read from a JSON object; any other value is skipped and gives `None` rather than failing
/// the whole body (Slack's `event` is an object, but a body is not obliged to agree).
struct ObjectOr<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Some)
            }

            nothing_but_in_objects!();
        }

        deserializer
            .deserialize_any(ObjectVisitor(PhantomData))
            .map(ObjectOr)
    }
}

/// Finds the value at `path` (one name per object level), skipping everything else.
struct PathSeed<'p> {
    path: &'p [&'p str],
}

impl<'de, 'p> DeserializeSeed<'de> for PathSeed<'p> {
    type Value = Option<Text<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.path {
            [] => Text::deserialize(deserializer).map(Some),
            _ => deserializer.deserialize_any(self),
        }
    }
}

impl<'de, 'p> Visitor<'de> for PathSeed<'p> {
    type Value = Option<Text<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((name, rest)) = self.path.split_first() else {
            IgnoredAny.visit_map(map)?; // not reached: `deserialize` reads an empty path's value
            return Ok(None);
        };
        let mut found = None;
        while let Some(is_name) = map.next_key_seed(KeyIs(name))? {
            if is_name && found.is_none() {
                found = map.next_value_seed(PathSeed { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    nothing_but_in_objects!();
}

/// Whether an object's key is `self.0`, compared without keeping the key.
struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::scheme::{Algorithm, Encoding, HmacOptions};

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in pairs {
            headers.push(name, value);
        }
        headers
    }

    fn described(event_type: &str, delivery_id: &str) -> Described {
        Described {
            event_type: event_type.into(),
            delivery_id: delivery_id.into(),
        }
    }

    fn hmac(event: Option<Locator>, id: Option<Locator>) -> Scheme {
        Scheme::Hmac(HmacOptions {
            header: "x-signature".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: String::new(),
            event,
            id,
        })
    }

    #[test]
    fn each_scheme_looks_where_its_sender_writes() {
        let none = Headers::new();
        let github = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ]);
        let shopify = headers(&[
            ("X-Shopify-Topic", "orders/create"),
            (
                "X-Shopify-Webhook-Id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            ),
        ]);
        let stripe = r#"{"id":"evt_1","object":"event","data":{"object":{"id":"ch_1","type":"card"}},"type":"charge.succeeded"}"#;
        let slack = r#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"<@U0LAN0Z89> hi"}}"#;
        let standard = r#"{"type":"invoice.paid","id":"not-the-delivery-id","data":{}}"#;
        let kakiyo = r#"{"event":"linkedin.message.received","data":{"id":"m_1"}}"#;
        let webhook_id = headers(&[("webhook-id", "msg_2")]);
        let svix_id = headers(&[("svix-id", "msg_3")]);
        let cases: [(Option<&Scheme>, &Headers, &str, Described); 10] = [
            (None, &github, stripe, described("", "")),
            (
                Some(&Scheme::Github),
                &github,
                "{}",
                described("push", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ),
            (
                Some(&Scheme::Shopify),
                &shopify,
                "{}",
                described("orders/create", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
            ),
            (
                Some(&Scheme::Stripe),
                &none,
                stripe,
                described("charge.succeeded", "evt_1"),
            ),
            (
                Some(&Scheme::Slack),
                &none,
                slack,
                described("app_mention", "Ev08MFMKH6"),
            ),
            (
                Some(&Scheme::Slack),
                &none,
                r#"{"type":"url_verification","challenge":"x"}"#,
                described("url_verification", ""),
            ),
            (
                Some(&Scheme::Standard),
                &webhook_id,
                standard,
                described("invoice.paid", "msg_2"),
            ),
            (
                Some(&Scheme::Standard),
                &svix_id,
                standard,
                described("invoice.paid", "msg_3"),
            ),
            (
                Some(&Scheme::Kakiyo),
                &none,
                kakiyo,
                described("linkedin.message.received", ""),
            ),
            (Some(&Scheme::Github), &none, stripe, described("", "")),
        ];
        for (scheme, headers, body, expected) in cases {
            assert_eq!(
                describe(scheme, headers, body),
                expected,
                "{scheme:?} {body}"
            );
        }
    }

    #[test]
    fn slack_falls_back_to_the_envelope_type() {
        for body in [
            r#"{"type":"block_actions","event":{"type":""}}"#,
            r#"{"event":{"text":"no type"},"type":"block_actions"}"#,
            r#"{"event":"a string","type":"block_actions"}"#,
            r#"{"event":[1,{"type":"x"}],"type":"block_actions"}"#,
            r#"{"event":null,"type":"block_actions"}"#,
        ] {
            assert_eq!(
                describe(Some(&Scheme::Slack), &Headers::new(), body).event_type,
                "block_actions",
                "{body}"
            );
        }
    }

    #[test]
    fn only_strings_and_numbers_name_things() {
        let stripe = Some(&Scheme::Stripe);
        let none = Headers::new();
        let cases = [
            (
                r#"{"type":"a\"b\u00e9","id":12345678901234567890}"#,
                described("a\"bé", "12345678901234567890"),
            ),
            (r#"{"type":{"nested":"x"},"id":[1,2]}"#, described("", "")),
            (r#"{"type":true,"id":null}"#, described("", "")),
            (r#"{"type":"t","id":-42}"#, described("t", "-42")),
            (r#"{"type":"t","id":1.5}"#, described("t", "1.5")),
            (r#"{"other":"x"}"#, described("", "")),
            (r#"["type","id"]"#, described("", "")),
            (r#""type""#, described("", "")),
            ("not json", described("", "")),
            ("", described("", "")),
            (r#"{"type":"t""#, described("", "")),
        ];
        for (body, expected) in cases {
            assert_eq!(describe(stripe, &none, body), expected, "{body}");
        }
    }

    #[test]
    fn hmac_reads_a_header_or_a_dotted_field() {
        let sent = headers(&[("X-Event-Name", "order.paid"), ("X-Request-Id", "r-1")]);
        let body = r#"{"kind":"k","data":{"meta":{"id":77,"type":"inner"},"id":"d-1"},"data.id":"literal"}"#;
        let cases = [
            (
                hmac(
                    Some(Locator::Header("X-Event-Name".into())),
                    Some(Locator::Header("x-request-id".into())),
                ),
                described("order.paid", "r-1"),
            ),
            (
                hmac(
                    Some(Locator::Field("kind".into())),
                    Some(Locator::Field("data.id".into())),
                ),
                described("k", "d-1"),
            ),
            (
                hmac(
                    Some(Locator::Field("data.meta.type".into())),
                    Some(Locator::Field("data.meta.id".into())),
                ),
                described("inner", "77"),
            ),
            (
                hmac(
                    Some(Locator::Field("data".into())),
                    Some(Locator::Field("data.meta.id.deeper".into())),
                ),
                described("", ""),
            ),
            (
                hmac(
                    Some(Locator::Field("missing".into())),
                    Some(Locator::Header("x-missing".into())),
                ),
                described("", ""),
            ),
            (hmac(None, None), described("", "")),
        ];
        for (scheme, expected) in cases {
            assert_eq!(describe(Some(&scheme), &sent, body), expected, "{scheme:?}");
        }
        let by_field = hmac(Some(Locator::Field("a".into())), None);
        assert_eq!(
            describe(Some(&by_field), &sent, r#"{"a":"x"} trailing"#).event_type,
            ""
        );
        assert_eq!(
            describe(Some(&by_field), &sent, r#"[{"a":"x"}]"#).event_type,
            ""
        );
    }

    #[test]
    fn every_github_payload_is_named_by_its_header_and_walked_like_a_full_parse() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/payloads/github");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return; // the shared folder is beside the checkout in CI and for developers
        };
        let mut seen = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !file_name.ends_with(".json") {
                continue;
            }
            let event = file_name.split('.').next().unwrap_or_default().to_owned();
            let body = std::fs::read_to_string(&path).expect("payload is readable UTF-8");
            let sent = headers(&[("X-GitHub-Event", &event), ("X-GitHub-Delivery", "d-1")]);
            assert_eq!(
                describe(Some(&Scheme::Github), &sent, &body),
                described(&event, "d-1"),
                "{file_name}"
            );

            let full: serde_json::Value = serde_json::from_str(&body).expect("payload is JSON");
            for dotted in [
                "action",
                "sender.login",
                "sender.id",
                "repository.owner.login",
                "repository.private",
                "hook_id",
                "zen",
            ] {
                let pointer = format!("/{}", dotted.replace('.', "/"));
                let expected = match full.pointer(&pointer) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                let scheme = hmac(Some(Locator::Field(dotted.into())), None);
                assert_eq!(
                    describe(Some(&scheme), &sent, &body).event_type,
                    expected,
                    "{file_name} {dotted}"
                );
            }
            seen += 1;
        }
        assert!(seen >= 50, "only {seen} payloads in {}", dir.display());
    }

    #[test]
    fn slack_challenges_are_found_only_in_url_verification() {
        let handshake = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        assert_eq!(
            slack_challenge(handshake).as_deref(),
            Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
        );
        assert_eq!(
            slack_challenge(r#"{"type":"url_verification","challenge":"a\/b"}"#).as_deref(),
            Some("a/b")
        );
        for other in [
            r#"{"type":"event_callback","challenge":"x"}"#,
            r#"{"type":"url_verification"}"#,
            r#"{"type":"url_verification","challenge":5}"#,
            r#"{"challenge":"x"}"#,
            r#"["url_verification","x"]"#,
            "[]",
            "not json",
        ] {
            assert_eq!(slack_challenge(other), None, "{other}");
        }
    }
}
