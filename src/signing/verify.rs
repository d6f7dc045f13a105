//! Checking a delivery's signature against a pipeline's active secrets.
//!
//! Each scheme's rules follow its sender's documentation and reference library (CONTRACT §8,
//! research/signing.md). The sender's signature is decoded first and the MACs are then compared
//! as bytes in constant time, so neither the encoding's case nor the position of the first wrong
//! byte changes the work done. Time windows are measured from the moment the gateway accepted the
//! request, which the log keeps: the writer re-checking minutes later reaches the edge's verdict.

use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::codec::base64_any;
use super::scheme::{Algorithm, Encoding, HmacOptions, Scheme};
use crate::ingest::Headers;

/// How far a signed timestamp may lie before the acceptance time (every timed scheme).
pub const WINDOW_SECS: f64 = 300.0;

/// A pipeline's shared secret, as the sender knows it. Never printed: `Debug` is redacted and
/// there is no `Display`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// From a secret file's content, as `pipeline verify --secret-file` reads it: trailing line
    /// endings (`\n`, `\r\n`) are not part of the secret.
    pub fn from_file_contents(mut bytes: Vec<u8>) -> Secret {
        while bytes.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            bytes.pop();
        }
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a delivery's signature does not verify. Every one is answered `INVALID_SIGNATURE`; the
/// kinds exist for logs and counters, and none carries the signature or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("a header the signing scheme needs is missing")]
    Missing,
    #[error("the signature or timestamp header is not in the signing scheme's format")]
    Malformed,
    #[error("the signature matches none of the pipeline's active secrets")]
    Mismatch,
    #[error("the signed timestamp is more than 300 seconds away from the request's arrival")]
    Stale,
}

/// Checks `body` (as sent, after `Content-Encoding` was removed) against `secrets`: any one of
/// them verifying is a pass, so that a sender can rotate its secret. `accepted_at` is the Unix
/// time the gateway accepted the request; timed schemes measure their window from it.
///
/// Without secrets nothing verifies ([`SignatureError::Mismatch`]).
pub fn verify(
    scheme: &Scheme,
    secrets: &[Secret],
    headers: &Headers,
    body: &[u8],
    accepted_at: f64,
) -> Result<(), SignatureError> {
    match scheme {
        Scheme::Github => {
            let value = required(headers, "x-hub-signature-256")?;
            let signature = decode_hex(value.strip_prefix("sha256="))?;
            check(Algorithm::Sha256, secrets, as_given, &[body], &[signature])
        }
        Scheme::Stripe => {
            let (t, signatures) = stripe_header(required(headers, "stripe-signature")?)?;
            within_window(timestamp(t)?, accepted_at)?;
            let message = [t.as_bytes(), b".", body];
            check(Algorithm::Sha256, secrets, as_given, &message, &signatures)
        }
        Scheme::Shopify => {
            let value = required(headers, "x-shopify-hmac-sha256")?;
            let signature = sha256_sized(base64_any(value.as_bytes()))?;
            check(Algorithm::Sha256, secrets, as_given, &[body], &[signature])
        }
        Scheme::Slack => {
            let value = required(headers, "x-slack-signature")?;
            let ts = required(headers, "x-slack-request-timestamp")?;
            let signature = decode_hex(value.strip_prefix("v0="))?;
            within_window(timestamp(ts)?, accepted_at)?;
            let message = [b"v0:", ts.as_bytes(), b":", body];
            check(Algorithm::Sha256, secrets, as_given, &message, &[signature])
        }
        Scheme::Standard => standard(secrets, headers, body, accepted_at),
        Scheme::Kakiyo => {
            let signature = kakiyo_signature(required(headers, "x-kakiyo-signature")?)?;
            check(Algorithm::Sha256, secrets, as_given, &[body], &[signature])
        }
        Scheme::Hmac(options) => {
            let signature = hmac_signature(options, required(headers, &options.header)?)?;
            check(options.algorithm, secrets, as_given, &[body], &[signature])
        }
    }
}

/// The HMAC key of every scheme but Standard Webhooks: the secret's bytes as given.
fn as_given(secret: &Secret) -> Cow<'_, [u8]> {
    Cow::Borrowed(secret.expose())
}

/// Standard Webhooks (and Svix, under `svix-*` names): `{id}.{timestamp}.{body}`, signed with
/// the key inside `whsec_<base64>`, listed as space-separated `v1,<base64>` entries.
fn standard(
    secrets: &[Secret],
    headers: &Headers,
    body: &[u8],
    accepted_at: f64,
) -> Result<(), SignatureError> {
    let header = |standard: &str, svix: &str| {
        let value = headers.first_of(&[standard, svix]);
        value.map(str::trim).ok_or(SignatureError::Missing)
    };
    let id = header("webhook-id", "svix-id")?;
    let ts = header("webhook-timestamp", "svix-timestamp")?;
    let list = header("webhook-signature", "svix-signature")?;
    // A header sent twice reaches us joined with ", ", hence the trimmed commas.
    let signatures: Vec<Vec<u8>> = list
        .split_whitespace()
        .filter_map(|entry| match entry.trim_end_matches(',').split_once(',') {
            Some(("v1", encoded)) => sha256_sized(base64_any(encoded.as_bytes())).ok(),
            _ => None, // `v1a,` (ed25519) and versions to come are not ours to check
        })
        .collect();
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    within_window(timestamp(ts)?, accepted_at)?;
    let message = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
    check(
        Algorithm::Sha256,
        secrets,
        standard_key,
        &message,
        &signatures,
    )
}

/// The HMAC key a Standard Webhooks secret stands for: `whsec_` + base64 of the key bytes. A
/// secret without the prefix is decoded whole, as the reference libraries do; a secret that is
/// not base64 at all (with or without the prefix) is used as the bytes given, so that a sender
/// who signs with its secret's text verifies too.
fn standard_key(secret: &Secret) -> Cow<'_, [u8]> {
    let bytes = secret.expose();
    let encoded = bytes.strip_prefix(b"whsec_").unwrap_or(bytes);
    match base64_any(encoded) {
        Some(key) => Cow::Owned(key),
        None => Cow::Borrowed(bytes),
    }
}

/// Signs an outgoing notification the Standard Webhooks way (CONTRACT §9): the value of its
/// `webhook-signature` header, `v1,<base64>`, over `{id}.{timestamp}.{body}` with the key inside
/// `secret` (`whsec_<base64>`). [`verify`] with [`Scheme::Standard`] accepts what this makes.
pub fn sign_standard(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let message = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
    let signature = mac(Algorithm::Sha256, &standard_key(secret), &message);
    format!("v1,{}", super::codec::base64_encode(&signature))
}

/// `t=<unix>,v1=<hex>[,v1=<hex>…]` (other schemes' entries, such as `v0=`, are ignored).
fn stripe_header(value: &str) -> Result<(&str, Vec<Vec<u8>>), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", text)) => {
                t.get_or_insert(text);
            }
            Some(("v1", hex)) => signatures.extend(hex::decode(hex).ok()),
            _ => {}
        }
    }
    match t {
        Some(t) if !signatures.is_empty() => Ok((t, signatures)),
        _ => Err(SignatureError::Malformed),
    }
}

/// Kakiyo does not document its encoding: lowercase or uppercase hex, or base64 in either
/// alphabet, each with or without `sha256=`. The bytes, not the spelling, are compared.
fn kakiyo_signature(value: &str) -> Result<Vec<u8>, SignatureError> {
    let unprefixed = match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sha256=") => &value[7..],
        _ => value,
    };
    let decoded = if unprefixed.len() == 64 {
        hex::decode(unprefixed).ok()
    } else {
        base64_any(unprefixed.as_bytes())
    };
    sha256_sized(decoded)
}

fn hmac_signature(options: &HmacOptions, value: &str) -> Result<Vec<u8>, SignatureError> {
    let encoded = value
        .strip_prefix(options.prefix.as_str())
        .ok_or(SignatureError::Malformed)?;
    let decoded = match options.encoding {
        Encoding::Hex => hex::decode(encoded).ok(),
        Encoding::Base64 => base64_any(encoded.as_bytes()),
    };
    decoded
        .filter(|bytes| bytes.len() == output_len(options.algorithm))
        .ok_or(SignatureError::Malformed)
}

fn required<'h>(headers: &'h Headers, name: &str) -> Result<&'h str, SignatureError> {
    headers
        .get(name)
        .map(str::trim)
        .ok_or(SignatureError::Missing)
}

/// Hex after a required prefix, 32 bytes (SHA-256) long.
fn decode_hex(unprefixed: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    sha256_sized(unprefixed.and_then(|hex| hex::decode(hex).ok()))
}

/// A decoded signature that can be an HMAC-SHA256: anything else is not in the format.
fn sha256_sized(decoded: Option<Vec<u8>>) -> Result<Vec<u8>, SignatureError> {
    decoded
        .filter(|bytes| bytes.len() == output_len(Algorithm::Sha256))
        .ok_or(SignatureError::Malformed)
}

/// A signed Unix timestamp in whole seconds: digits only.
fn timestamp(text: &str) -> Result<f64, SignatureError> {
    if text.is_empty() || text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    text.parse::<u64>()
        .map(|secs| secs as f64)
        .map_err(|_| SignatureError::Malformed)
}

/// Whether the signed time is within [`WINDOW_SECS`] of the acceptance time, either way. Both
/// sides are bounded for every timed scheme (CONTRACT §8: "within 300 s of arrival"), Stripe's
/// too, although its own libraries bound only the past: a signature dated well ahead is no more
/// trustworthy than one well behind, and a sender's clock 5 minutes fast is broken anyway.
fn within_window(signed_at: f64, accepted_at: f64) -> Result<(), SignatureError> {
    let late = accepted_at - signed_at;
    let in_window = (-WINDOW_SECS..=WINDOW_SECS).contains(&late);
    // A NaN acceptance time fails every comparison above, and so fails here.
    if in_window {
        Ok(())
    } else {
        Err(SignatureError::Stale)
    }
}

/// Whether any secret's MAC over `message` equals any of `signatures`, compared in constant time.
fn check<'s>(
    algorithm: Algorithm,
    secrets: &'s [Secret],
    key: impl Fn(&'s Secret) -> Cow<'s, [u8]>,
    message: &[&[u8]],
    signatures: &[Vec<u8>],
) -> Result<(), SignatureError> {
    for secret in secrets {
        let expected = mac(algorithm, &key(secret), message);
        let matched = signatures.iter().fold(subtle::Choice::from(0), |any, sig| {
            any | expected.ct_eq(sig)
        });
        if bool::from(matched) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The HMAC of the concatenated `message` parts under `key`, without concatenating them (a body
/// may be 25 MB).
pub(crate) fn mac(algorithm: Algorithm, key: &[u8], message: &[&[u8]]) -> Vec<u8> {
    fn with<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in message {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::Sha1 => with::<Hmac<Sha1>>(key, message),
        Algorithm::Sha256 => with::<Hmac<Sha256>>(key, message),
        Algorithm::Sha512 => with::<Hmac<Sha512>>(key, message),
    }
}

fn output_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Sha1 => 20,
        Algorithm::Sha256 => 32,
        Algorithm::Sha512 => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::codec::base64_encode;
    use crate::signing::scheme::Locator;

    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &str = "Hello, World!";
    const STANDARD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const STANDARD_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const STANDARD_TS: u64 = 1649367553;
    const STANDARD_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: u64 = 1531420618;
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_TS: u64 = 1700000000;
    const STRIPE_BODY: &str = r#"{"id":"evt_test_webhook","object":"event"}"#;
    const KAKIYO_SECRET: &str = "your_webhook_secret";
    const KAKIYO_BODY: &str = r#"{"event":"linkedin.message.received"}"#;
    const KAKIYO_HEX: &str = "b1630d41c12f7f032aabf3c8fe5443fb68e770e7e93fa32d9e982ced933896ea";
    const KAKIYO_BASE64: &str = "sWMNQcEvfwMqq/PI/lRD+2jncOfpP6Mtnpgs7ZM4luo=";

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in pairs {
            headers.push(name, value);
        }
        headers
    }

    fn secrets(texts: &[&str]) -> Vec<Secret> {
        texts
            .iter()
            .map(|t| Secret::new(t.as_bytes().to_vec()))
            .collect()
    }

    fn sha256(key: &[u8], message: &[&[u8]]) -> Vec<u8> {
        mac(Algorithm::Sha256, key, message)
    }

    fn verify_text(
        scheme: &Scheme,
        secret: &str,
        pairs: &[(&str, &str)],
        body: &str,
        accepted_at: f64,
    ) -> Result<(), SignatureError> {
        verify(
            scheme,
            &secrets(&[secret]),
            &headers(pairs),
            body.as_bytes(),
            accepted_at,
        )
    }

    #[test]
    fn github_vector() {
        let expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let mac = sha256(GITHUB_SECRET.as_bytes(), &[GITHUB_BODY.as_bytes()]);
        assert_eq!(hex::encode(mac), expected);
        let header = format!("sha256={expected}");
        let pairs = [("X-Hub-Signature-256", header.as_str())];
        assert_eq!(
            verify_text(&Scheme::Github, GITHUB_SECRET, &pairs, GITHUB_BODY, 0.0),
            Ok(())
        );
    }

    #[test]
    fn notifications_are_signed_as_the_published_standard_webhooks_vector() {
        let secret = Secret::new(b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_vec());
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let signature = sign_standard(&secret, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        let other = sign_standard(&secret, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367554, body);
        assert_ne!(signature, other);
    }

    #[test]
    fn standard_webhooks_vector() {
        let expected = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let key = standard_key(&Secret::new(STANDARD_SECRET.as_bytes().to_vec())).into_owned();
        let ts = STANDARD_TS.to_string();
        let message = [
            STANDARD_ID.as_bytes(),
            b".",
            ts.as_bytes(),
            b".",
            STANDARD_BODY.as_bytes(),
        ];
        assert_eq!(
            format!("v1,{}", base64_encode(&sha256(&key, &message))),
            expected
        );
        for prefix in ["webhook", "svix"] {
            let pairs = [
                (format!("{prefix}-id"), STANDARD_ID),
                (format!("{prefix}-timestamp"), ts.as_str()),
                (format!("{prefix}-signature"), expected),
            ];
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            let accepted_at = STANDARD_TS as f64 + 3.5;
            let verdict = verify_text(
                &Scheme::Standard,
                STANDARD_SECRET,
                &pairs,
                STANDARD_BODY,
                accepted_at,
            );
            assert_eq!(verdict, Ok(()), "{prefix}");
        }
    }

    #[test]
    fn slack_vector() {
        let expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let ts = SLACK_TS.to_string();
        let message = [b"v0:", ts.as_bytes(), b":", SLACK_BODY.as_bytes()];
        assert_eq!(
            format!(
                "v0={}",
                hex::encode(sha256(SLACK_SECRET.as_bytes(), &message))
            ),
            expected
        );
        let pairs = [
            ("X-Slack-Signature", expected),
            ("X-Slack-Request-Timestamp", ts.as_str()),
        ];
        let verdict = verify_text(
            &Scheme::Slack,
            SLACK_SECRET,
            &pairs,
            SLACK_BODY,
            SLACK_TS as f64 + 2.0,
        );
        assert_eq!(verdict, Ok(()));
    }

    #[test]
    fn stripe_vector() {
        let expected = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";
        let ts = STRIPE_TS.to_string();
        let message = [ts.as_bytes(), b".", STRIPE_BODY.as_bytes()];
        assert_eq!(
            hex::encode(sha256(STRIPE_SECRET.as_bytes(), &message)),
            expected
        );
        let header = format!("t={ts},v1={expected},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
        let pairs = [("Stripe-Signature", header.as_str())];
        let verdict = verify_text(
            &Scheme::Stripe,
            STRIPE_SECRET,
            &pairs,
            STRIPE_BODY,
            STRIPE_TS as f64 + 5.0,
        );
        assert_eq!(verdict, Ok(()));
    }

    #[test]
    fn stripe_passes_on_any_v1() {
        let ts = STRIPE_TS.to_string();
        let good = hex::encode(sha256(
            STRIPE_SECRET.as_bytes(),
            &[ts.as_bytes(), b".", STRIPE_BODY.as_bytes()],
        ));
        let other = hex::encode(sha256(
            b"whsec_other",
            &[ts.as_bytes(), b".", STRIPE_BODY.as_bytes()],
        ));
        let accepted_at = STRIPE_TS as f64;
        for header in [
            format!("t={ts},v1={other},v1={good}"),
            format!("t={ts}, v1={good}, v1={other}"),
            format!("v1=zz,v1={good},t={ts}"),
        ] {
            let verdict = verify_text(
                &Scheme::Stripe,
                STRIPE_SECRET,
                &[("stripe-signature", &header)],
                STRIPE_BODY,
                accepted_at,
            );
            assert_eq!(verdict, Ok(()), "{header}");
        }
        let only_other = format!("t={ts},v1={other}");
        let verdict = verify_text(
            &Scheme::Stripe,
            STRIPE_SECRET,
            &[("stripe-signature", &only_other)],
            STRIPE_BODY,
            accepted_at,
        );
        assert_eq!(verdict, Err(SignatureError::Mismatch));
    }

    #[test]
    fn shopify_vector() {
        let expected = "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc=";
        let mac = sha256(GITHUB_SECRET.as_bytes(), &[GITHUB_BODY.as_bytes()]);
        assert_eq!(base64_encode(&mac), expected);
        let pairs = [("X-Shopify-Hmac-SHA256", expected)];
        assert_eq!(
            verify_text(&Scheme::Shopify, GITHUB_SECRET, &pairs, GITHUB_BODY, 0.0),
            Ok(())
        );
    }

    #[test]
    fn kakiyo_vectors_in_every_spelling() {
        let mac = sha256(KAKIYO_SECRET.as_bytes(), &[KAKIYO_BODY.as_bytes()]);
        assert_eq!(hex::encode(&mac), KAKIYO_HEX);
        assert_eq!(base64_encode(&mac), KAKIYO_BASE64);
        let url_safe = KAKIYO_BASE64.replace('+', "-").replace('/', "_");
        let spellings = [
            KAKIYO_HEX.to_owned(),
            KAKIYO_HEX.to_uppercase(),
            KAKIYO_BASE64.to_owned(),
            KAKIYO_BASE64.trim_end_matches('=').to_owned(),
            url_safe.clone(),
            url_safe.trim_end_matches('=').to_owned(),
        ];
        for spelling in spellings {
            for prefix in ["", "sha256=", "SHA256="] {
                let value = format!("{prefix}{spelling}");
                let pairs = [("X-Kakiyo-Signature", value.as_str())];
                let verdict = verify_text(&Scheme::Kakiyo, KAKIYO_SECRET, &pairs, KAKIYO_BODY, 0.0);
                assert_eq!(verdict, Ok(()), "{value}");
            }
        }
    }

    fn hmac_scheme(algorithm: Algorithm, encoding: Encoding, prefix: &str) -> Scheme {
        Scheme::Hmac(HmacOptions {
            header: "X-Signature".into(),
            algorithm,
            encoding,
            prefix: prefix.into(),
            event: Some(Locator::Field("type".into())),
            id: None,
        })
    }

    #[test]
    fn hmac_uses_its_algorithm_encoding_and_prefix() {
        // SHA-1 and SHA-512 of GitHub's inputs, from Python's hmac.
        let sha1 = "01dc10d0c83e72ed246219cdd91669667fe2ca59";
        assert_eq!(
            hex::encode(mac(
                Algorithm::Sha1,
                GITHUB_SECRET.as_bytes(),
                &[GITHUB_BODY.as_bytes()]
            )),
            sha1
        );
        let sha512 = mac(
            Algorithm::Sha512,
            GITHUB_SECRET.as_bytes(),
            &[GITHUB_BODY.as_bytes()],
        );
        assert_eq!(hex::encode(&sha512), "11ed355a617e98134e842012a7944ccf59c10256cb182357bd7e3a42013ff07c376f8c14cf5cc1923da20b51d64256b2fb8ebbf100aa67a61326f61fea8111bc");
        let cases = [
            (
                hmac_scheme(Algorithm::Sha1, Encoding::Hex, "sha1="),
                format!("sha1={sha1}"),
            ),
            (
                hmac_scheme(Algorithm::Sha1, Encoding::Hex, ""),
                sha1.to_uppercase(),
            ),
            (
                hmac_scheme(Algorithm::Sha512, Encoding::Base64, ""),
                base64_encode(&sha512),
            ),
            (
                hmac_scheme(Algorithm::Sha256, Encoding::Base64, "v1:"),
                "v1:dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc".to_owned(),
            ),
        ];
        for (scheme, value) in cases {
            let pairs = [("x-signature", value.as_str())];
            assert_eq!(
                verify_text(&scheme, GITHUB_SECRET, &pairs, GITHUB_BODY, 0.0),
                Ok(()),
                "{value}"
            );
            let tampered = verify_text(&scheme, GITHUB_SECRET, &pairs, "Hello, World?", 0.0);
            assert_eq!(tampered, Err(SignatureError::Mismatch), "{value}");
        }
        // The prefix is required, and a MAC of another length is not this algorithm's.
        let scheme = hmac_scheme(Algorithm::Sha1, Encoding::Hex, "sha1=");
        for value in [
            sha1.to_owned(),
            format!("sha1={sha1}00"),
            "sha1=xyz".to_owned(),
        ] {
            let verdict = verify_text(
                &scheme,
                GITHUB_SECRET,
                &[("x-signature", &value)],
                GITHUB_BODY,
                0.0,
            );
            assert_eq!(verdict, Err(SignatureError::Malformed), "{value}");
        }
    }

    /// A correctly signed delivery of `body` for `scheme` under `secret`, signed at `ts`: the
    /// headers as (name, value) pairs so that tests can drop or change one.
    fn sign(scheme: &Scheme, secret: &str, body: &str, ts: u64) -> Vec<(String, String)> {
        let (key, body, t) = (secret.as_bytes(), body.as_bytes(), ts.to_string());
        let pairs: Vec<(&str, String)> = match scheme {
            Scheme::Github => vec![(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(sha256(key, &[body]))),
            )],
            Scheme::Stripe => {
                let mac = sha256(key, &[t.as_bytes(), b".", body]);
                vec![("stripe-signature", format!("t={t},v1={}", hex::encode(mac)))]
            }
            Scheme::Shopify => vec![(
                "x-shopify-hmac-sha256",
                base64_encode(&sha256(key, &[body])),
            )],
            Scheme::Slack => {
                let mac = sha256(key, &[b"v0:", t.as_bytes(), b":", body]);
                vec![
                    ("x-slack-signature", format!("v0={}", hex::encode(mac))),
                    ("x-slack-request-timestamp", t.clone()),
                ]
            }
            Scheme::Standard => {
                let key = standard_key(&Secret::new(key.to_vec())).into_owned();
                let mac = sha256(&key, &[b"msg_1.", t.as_bytes(), b".", body]);
                vec![
                    ("webhook-id", "msg_1".to_owned()),
                    ("webhook-timestamp", t.clone()),
                    (
                        "webhook-signature",
                        format!("v1a,AAAA v1,{}", base64_encode(&mac)),
                    ),
                ]
            }
            Scheme::Kakiyo => vec![("x-kakiyo-signature", hex::encode(sha256(key, &[body])))],
            Scheme::Hmac(options) => {
                let mac = mac(options.algorithm, key, &[body]);
                let encoded = match options.encoding {
                    Encoding::Hex => hex::encode(mac),
                    Encoding::Base64 => base64_encode(&mac),
                };
                vec![("x-signature", format!("{}{encoded}", options.prefix))]
            }
        };
        pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()
    }

    /// `BODY` at `TS`, with the headers `pairs`, checked against `SECRET`.
    fn verify_signed(scheme: &Scheme, pairs: &[(String, String)]) -> Result<(), SignatureError> {
        verify(
            scheme,
            &secrets(&[SECRET]),
            &as_headers(pairs),
            BODY.as_bytes(),
            TS as f64,
        )
    }

    fn as_headers(pairs: &[(String, String)]) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in pairs {
            headers.push(name, value);
        }
        headers
    }

    fn every_scheme() -> Vec<Scheme> {
        vec![
            Scheme::Github,
            Scheme::Stripe,
            Scheme::Shopify,
            Scheme::Slack,
            Scheme::Standard,
            Scheme::Kakiyo,
            hmac_scheme(Algorithm::Sha512, Encoding::Hex, "sha512="),
        ]
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldA==";
    const BODY: &str = r#"{"type":"thing.happened","id":"evt_1"}"#;
    const TS: u64 = 1_750_000_000;

    #[test]
    fn every_scheme_passes_its_own_signature_and_nothing_else() {
        let accepted_at = TS as f64 + 1.25;
        for scheme in every_scheme() {
            let name = scheme.name();
            let signed = as_headers(&sign(&scheme, SECRET, BODY, TS));
            let check = |secrets: &[Secret], body: &str| {
                verify(&scheme, secrets, &signed, body.as_bytes(), accepted_at)
            };
            assert_eq!(check(&secrets(&[SECRET]), BODY), Ok(()), "{name}");
            let tampered = BODY.replace("happened", "happenee");
            assert_eq!(
                check(&secrets(&[SECRET]), &tampered),
                Err(SignatureError::Mismatch),
                "{name}"
            );
            assert_eq!(
                check(&secrets(&[OTHER]), BODY),
                Err(SignatureError::Mismatch),
                "{name}"
            );
            assert_eq!(check(&[], BODY), Err(SignatureError::Mismatch), "{name}");
            // Rotation: either active secret passes; once one is removed it no longer does.
            assert_eq!(check(&secrets(&[OTHER, SECRET]), BODY), Ok(()), "{name}");
            assert_eq!(check(&secrets(&[SECRET, OTHER]), BODY), Ok(()), "{name}");
            let signed_with_other = as_headers(&sign(&scheme, OTHER, BODY, TS));
            let rotated = verify(
                &scheme,
                &secrets(&[SECRET]),
                &signed_with_other,
                BODY.as_bytes(),
                accepted_at,
            );
            assert_eq!(rotated, Err(SignatureError::Mismatch), "{name}");
        }
    }

    #[test]
    fn a_missing_header_is_missing() {
        for scheme in every_scheme() {
            let signed = sign(&scheme, SECRET, BODY, TS);
            for dropped in 0..signed.len() {
                let mut pairs = signed.clone();
                let (name, _) = pairs.remove(dropped);
                let verdict = verify_signed(&scheme, &pairs);
                assert_eq!(
                    verdict,
                    Err(SignatureError::Missing),
                    "{} without {name}",
                    scheme.name()
                );
            }
            let none = verify(
                &scheme,
                &secrets(&[SECRET]),
                &Headers::new(),
                BODY.as_bytes(),
                TS as f64,
            );
            assert_eq!(none, Err(SignatureError::Missing), "{}", scheme.name());
        }
    }

    #[test]
    fn a_garbled_header_is_malformed_and_never_a_panic() {
        let garbage = [
            "",
            " ",
            "sha256=",
            "v0=",
            "t=,v1=",
            "v1,",
            "é",
            "sha256=é",
            "=",
            ",,,",
            "v1,!!!!",
            "t=1,v1=zz",
        ];
        for scheme in every_scheme() {
            let signed = sign(&scheme, SECRET, BODY, TS);
            for replaced in 0..signed.len() {
                if signed[replaced].0.ends_with("-id") {
                    continue; // any id is an id; only the MAC can tell
                }
                for value in garbage {
                    let mut pairs = signed.clone();
                    pairs[replaced].1 = value.to_owned();
                    let verdict = verify_signed(&scheme, &pairs);
                    assert_eq!(
                        verdict,
                        Err(SignatureError::Malformed),
                        "{} {}: {value:?}",
                        scheme.name(),
                        pairs[replaced].0
                    );
                }
            }
        }
    }

    #[test]
    fn timed_schemes_measure_their_window_from_acceptance() {
        for scheme in [Scheme::Stripe, Scheme::Slack, Scheme::Standard] {
            let name = scheme.name();
            let signed = as_headers(&sign(&scheme, SECRET, BODY, TS));
            let at = |accepted_at: f64| {
                verify(
                    &scheme,
                    &secrets(&[SECRET]),
                    &signed,
                    BODY.as_bytes(),
                    accepted_at,
                )
            };
            let ts = TS as f64;
            assert_eq!(at(ts + 300.0), Ok(()), "{name}");
            assert_eq!(at(ts + 301.0), Err(SignatureError::Stale), "{name}");
            assert_eq!(at(ts + 1e6), Err(SignatureError::Stale), "{name}");
            assert_eq!(at(ts - 300.0), Ok(()), "{name}");
            assert_eq!(at(ts - 301.0), Err(SignatureError::Stale), "{name}");
            assert_eq!(at(f64::NAN), Err(SignatureError::Stale), "{name}");
        }
        // Untimed schemes do not look at the clock.
        let signed = as_headers(&sign(&Scheme::Github, SECRET, BODY, TS));
        assert_eq!(
            verify(
                &Scheme::Github,
                &secrets(&[SECRET]),
                &signed,
                BODY.as_bytes(),
                0.0
            ),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_takes_any_v1_entry_and_headers_sent_twice() {
        let ts = STANDARD_TS.to_string();
        let good = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let other = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let at = STANDARD_TS as f64;
        let mut twice = headers(&[("webhook-id", STANDARD_ID), ("webhook-timestamp", &ts)]);
        twice.push("webhook-signature", other);
        twice.push("webhook-signature", good);
        let verdict = verify(
            &Scheme::Standard,
            &secrets(&[STANDARD_SECRET]),
            &twice,
            STANDARD_BODY.as_bytes(),
            at,
        );
        assert_eq!(verdict, Ok(()));
        for list in [format!("{other} {good}"), format!("v1a,xyz {good} v2,abc")] {
            let pairs = [
                ("webhook-id", STANDARD_ID),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &list),
            ];
            assert_eq!(
                verify_text(
                    &Scheme::Standard,
                    STANDARD_SECRET,
                    &pairs,
                    STANDARD_BODY,
                    at
                ),
                Ok(()),
                "{list}"
            );
        }
        // Only ed25519 entries: nothing this module can check.
        let pairs = [
            ("webhook-id", STANDARD_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", "v1a,AAAA"),
        ];
        let verdict = verify_text(
            &Scheme::Standard,
            STANDARD_SECRET,
            &pairs,
            STANDARD_BODY,
            at,
        );
        assert_eq!(verdict, Err(SignatureError::Malformed));
    }

    #[test]
    fn standard_webhooks_secrets_are_decoded_when_they_are_base64() {
        let key = |text: &str| standard_key(&Secret::new(text.as_bytes().to_vec())).into_owned();
        assert_eq!(key("whsec_AQID"), vec![1, 2, 3]);
        assert_eq!(key("AQID"), vec![1, 2, 3]);
        assert_eq!(key("whsec_not base64!"), b"whsec_not base64!".to_vec());
        assert_eq!(key("plain secret"), b"plain secret".to_vec());
    }

    #[test]
    fn nothing_secret_is_printed() {
        let secret = Secret::new(SECRET.as_bytes().to_vec());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(
            format!("{:?}", secrets(&[SECRET, OTHER])),
            "[Secret(<redacted>), Secret(<redacted>)]"
        );
        let errors = [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Mismatch,
            SignatureError::Stale,
        ];
        for error in errors {
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains("whsec") && !text.contains("MfKQ9"), "{text}");
            }
        }
    }

    #[test]
    fn secret_files_lose_their_line_ending_only() {
        let secret = Secret::from_file_contents(b" s3cret \r\n\n".to_vec());
        assert_eq!(secret.expose(), b" s3cret ");
        assert_eq!(Secret::from_file_contents(b"\n".to_vec()).expose(), b"");
    }
}
