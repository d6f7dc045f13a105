//! Query parameters: `pipeline_id`, `key` and `token`, in the contract's order of checks.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The three parameters, in the order the contract checks them.
const ORDER: [Param; 3] = [Param::PipelineId, Param::Key, Param::Token];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    PipelineId,
    Key,
    Token,
}

impl Param {
    pub fn name(self) -> &'static str {
        match self {
            Param::PipelineId => "pipeline_id",
            Param::Key => "key",
            Param::Token => "token",
        }
    }

    fn from_name(name: &str) -> Option<Param> {
        ORDER.into_iter().find(|p| p.name() == name)
    }
}

/// Why the query string was refused (CONTRACT §1, rows 1 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    NoParameters,
    Missing(Param),
    Invalid(Param),
}

/// A pipeline's id: 1 to 2^64-1, written as decimal digits only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId(u64);

impl PipelineId {
    pub fn new(id: u64) -> Option<PipelineId> {
        (id != 0).then_some(PipelineId(id))
    }

    /// Digits only (no sign, no spaces); leading zeros are allowed since the value is what counts.
    pub fn parse(text: &str) -> Option<PipelineId> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let significant = text.trim_start_matches('0');
        if significant.is_empty() {
            return None;
        }
        significant.parse::<u64>().ok().and_then(PipelineId::new)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A token's public half: a UUID in its hyphenated 8-4-4-4-12 form, any case, kept lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(Uuid);

impl Key {
    pub fn parse(text: &str) -> Option<Key> {
        // `Uuid::try_parse` also takes the simple, braced and URN forms; the contract wants only
        // the hyphenated one, so its shape is checked first.
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !shape_ok {
            return None;
        }
        Uuid::try_parse(text).ok().map(Key)
    }

    pub fn generate() -> Key {
        Key(Uuid::new_v4())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(Uuid::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for Key {
    /// Lowercase hyphenated, as stored.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A token's secret half. Its `Debug` is redacted; only its hash is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub const MIN_LEN: usize = 8;
    pub const MAX_LEN: usize = 256;
    /// The length of the tokens hookhouse issues.
    pub const ISSUED_LEN: usize = 40;

    pub fn parse(text: &str) -> Option<Token> {
        let ok = (Self::MIN_LEN..=Self::MAX_LEN).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Token(text.to_owned()))
    }

    /// A fresh random token of [`Token::ISSUED_LEN`] letters and digits.
    pub fn generate() -> Token {
        use rand::distr::{Alphanumeric, SampleString};
        Token(Alphanumeric.sample_string(&mut rand::rng(), Self::ISSUED_LEN))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The token itself, for the one time it is shown to the operator who created it.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token: what the log and the tokens table hold instead of the token.
///
/// Issued tokens carry 238 bits of randomness, so a plain, unsalted hash cannot be reversed by
/// guessing; a slow password hash would only cost the hot path time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<TokenHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(TokenHash(out))
    }

    /// Constant-time comparison, so that timing says nothing about how much of a hash matched.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// The three parameters of an ingest request, checked.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub pipeline_id: PipelineId,
    pub key: Key,
    pub token: Token,
}

/// Parses an ingest query string (without the `?`) in the contract's order of checks:
/// none present, then missing (pipeline_id, key, token), then malformed or repeated (same order).
/// A parameter with an empty value counts as missing; unknown parameters are ignored.
pub fn parse_query(query: &str) -> Result<Credentials, ParamError> {
    // Per parameter: how many times it was given with a non-empty value, how many times at all,
    // and its first non-empty value.
    let mut seen: [(usize, usize, Option<String>); 3] = Default::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let Some(param) = Param::from_name(&name) else {
            continue;
        };
        let slot = &mut seen[param as usize];
        slot.1 += 1;
        if !value.is_empty() {
            slot.0 += 1;
            if slot.2.is_none() {
                slot.2 = Some(value.into_owned());
            }
        }
    }
    if seen.iter().all(|(non_empty, _, _)| *non_empty == 0) {
        return Err(ParamError::NoParameters);
    }
    for param in ORDER {
        if seen[param as usize].0 == 0 {
            return Err(ParamError::Missing(param));
        }
    }
    let value = |param: Param| -> Result<&str, ParamError> {
        match &seen[param as usize] {
            (_, 1, Some(value)) => Ok(value),
            _ => Err(ParamError::Invalid(param)),
        }
    };
    let pipeline_id = PipelineId::parse(value(Param::PipelineId)?)
        .ok_or(ParamError::Invalid(Param::PipelineId))?;
    let key = Key::parse(value(Param::Key)?).ok_or(ParamError::Invalid(Param::Key))?;
    let token = Token::parse(value(Param::Token)?).ok_or(ParamError::Invalid(Param::Token))?;
    Ok(Credentials {
        pipeline_id,
        key,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "d538b946-9d55-405a-9bd2-72d74b1cb8f5";
    const TOKEN: &str = "oseutokenaqui1234";

    fn q(pipeline: &str, key: &str, token: &str) -> String {
        format!("pipeline_id={pipeline}&key={key}&token={token}")
    }

    #[test]
    fn accepts_a_kondado_url_in_any_order() {
        let c = parse_query(&format!("token={TOKEN}&key={KEY}&pipeline_id=835212")).unwrap();
        assert_eq!(c.pipeline_id.get(), 835212);
        assert_eq!(c.key.to_string(), KEY);
        assert_eq!(c.token.reveal(), TOKEN);
    }

    #[test]
    fn key_is_case_insensitive_and_stored_lowercase() {
        let c = parse_query(&q("1", &KEY.to_uppercase(), TOKEN)).unwrap();
        assert_eq!(c.key.to_string(), KEY);
    }

    #[test]
    fn no_parameters() {
        for query in [
            "",
            "foo=bar",
            "pipeline_id=&key=&token=",
            "&&",
            "pipeline_id",
        ] {
            assert_eq!(
                parse_query(query).unwrap_err(),
                ParamError::NoParameters,
                "{query}"
            );
        }
    }

    #[test]
    fn missing_in_order() {
        use ParamError::Missing;
        assert_eq!(
            parse_query(&format!("key={KEY}")).unwrap_err(),
            Missing(Param::PipelineId)
        );
        assert_eq!(
            parse_query("pipeline_id=1&token=x").unwrap_err(),
            Missing(Param::Key)
        );
        assert_eq!(
            parse_query(&format!("pipeline_id=1&key={KEY}")).unwrap_err(),
            Missing(Param::Token)
        );
        assert_eq!(
            parse_query(&q("1", KEY, "")).unwrap_err(),
            Missing(Param::Token)
        );
        // Every missing check comes before every malformed one.
        assert_eq!(
            parse_query("pipeline_id=abc&key=zzz").unwrap_err(),
            Missing(Param::Token)
        );
    }

    #[test]
    fn invalid_in_order() {
        use ParamError::Invalid;
        let cases = [
            (q("abc", "bad", "!"), Param::PipelineId),
            (q("0", KEY, TOKEN), Param::PipelineId),
            (q("-1", KEY, TOKEN), Param::PipelineId),
            (q("+1", KEY, TOKEN), Param::PipelineId),
            (q("18446744073709551616", KEY, TOKEN), Param::PipelineId),
            (q("1.0", KEY, TOKEN), Param::PipelineId),
            (
                q("1", "d538b9469d55405a9bd272d74b1cb8f5", TOKEN),
                Param::Key,
            ),
            (q("1", &format!("{{{KEY}}}"), TOKEN), Param::Key),
            (
                q("1", "g538b946-9d55-405a-9bd2-72d74b1cb8f5", TOKEN),
                Param::Key,
            ),
            (q("1", KEY, "short"), Param::Token),
            (q("1", KEY, "with-hyphen-token"), Param::Token),
            (q("1", KEY, &"a".repeat(257)), Param::Token),
            (q("1", KEY, "t%C3%A9st12345"), Param::Token),
            (
                format!("{}&pipeline_id=2", q("1", KEY, TOKEN)),
                Param::PipelineId,
            ),
            (format!("{}&key={KEY}", q("1", KEY, TOKEN)), Param::Key),
            (format!("{}&token=", q("1", KEY, TOKEN)), Param::Token),
        ];
        for (query, param) in cases {
            assert_eq!(parse_query(&query).unwrap_err(), Invalid(param), "{query}");
        }
    }

    #[test]
    fn bounds_of_valid_values() {
        assert_eq!(
            parse_query(&q("18446744073709551615", KEY, TOKEN))
                .unwrap()
                .pipeline_id
                .get(),
            u64::MAX
        );
        assert_eq!(
            parse_query(&q("007", KEY, TOKEN))
                .unwrap()
                .pipeline_id
                .get(),
            7
        );
        assert!(parse_query(&q("1", KEY, "a1b2c3d4")).is_ok());
        assert!(parse_query(&q("1", KEY, &"Z".repeat(256))).is_ok());
        assert!(parse_query(&format!("{}&extra=1&x", q("1", KEY, TOKEN))).is_ok());
    }

    #[test]
    fn token_debug_is_redacted() {
        let c = parse_query(&q("1", KEY, TOKEN)).unwrap();
        assert!(!format!("{c:?}").contains(TOKEN));
        assert!(!format!("{:?}", c.token.hash()).contains(&c.token.hash().to_hex()));
    }

    #[test]
    fn token_hash_round_trips_and_compares() {
        let token = Token::generate();
        assert_eq!(token.reveal().len(), Token::ISSUED_LEN);
        let hash = token.hash();
        assert!(TokenHash::from_hex(&hash.to_hex()).unwrap().matches(&hash));
        assert!(!Token::generate().hash().matches(&hash));
    }

    proptest! {
        #[test]
        fn never_panics(query in ".*") {
            let _ = parse_query(&query);
        }

        #[test]
        fn any_valid_triple_parses(id in 1u64.., token in "[A-Za-z0-9]{8,256}", key: [u8; 16], upper: bool) {
            let key = Key::from_bytes(key).to_string();
            let key = if upper { key.to_uppercase() } else { key };
            let c = parse_query(&q(&id.to_string(), &key, &token)).unwrap();
            prop_assert_eq!(c.pipeline_id.get(), id);
            prop_assert_eq!(c.key.to_string(), key.to_lowercase());
            prop_assert_eq!(c.token.reveal(), token.as_str());
        }

        #[test]
        fn digits_with_a_non_digit_are_invalid(id in "[0-9]{0,5}[^0-9&=#+%][0-9]{0,5}") {
            prop_assert_eq!(parse_query(&q(&id, KEY, TOKEN)).unwrap_err(), ParamError::Invalid(Param::PipelineId));
        }
    }
}
