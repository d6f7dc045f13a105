//! How a pipeline's sender signs its deliveries: one of the schemes of CONTRACT §8.
//!
//! A scheme is stored beside its pipeline as two strings, a name and (for `hmac` only) a JSON
//! object of options; [`Scheme::name`] with [`Scheme::options_json`] and [`Scheme::from_stored`]
//! are each other's inverse, so what the CLI saves is what the gateway and the writer read back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A sender's way of signing and naming its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Github,
    Stripe,
    Shopify,
    Slack,
    Standard,
    Kakiyo,
    Hmac(HmacOptions),
}

/// A generic HMAC of the body in one header, for senders without a scheme of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacOptions {
    /// The header holding the signature (any case; header lookups ignore it).
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Text before the encoded MAC (`sha256=`), empty for none; it must be present when set.
    #[serde(default)]
    pub prefix: String,
    /// Where the event type is (`--event-header` or `--event-field`); none: always empty.
    #[serde(default)]
    pub event: Option<Locator>,
    /// Where the delivery id is (`--id-header` or `--id-field`); none: always empty.
    #[serde(default)]
    pub id: Option<Locator>,
}

/// The hash under a generic HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// How a generic HMAC is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lowercase or uppercase hex.
    Hex,
    /// Standard or URL-safe base64, with or without padding.
    Base64,
}

/// Where a value is found in a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locator {
    /// A request header, by name (any case).
    Header(String),
    /// A field of the JSON body: a top-level name, or a dotted path `a.b` through objects.
    Field(String),
}

/// Why a stored or typed scheme cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("unknown signing scheme {0:?}; known schemes: {known}", known = Scheme::NAMES.join(", "))]
    UnknownScheme(String),
    #[error("the {0} scheme takes no options")]
    UnexpectedOptions(&'static str),
    #[error("the hmac scheme's options are not valid: {0}")]
    BadOptions(String),
    #[error("unknown HMAC algorithm {0:?}; use sha1, sha256 or sha512")]
    UnknownAlgorithm(String),
    #[error("unknown signature encoding {0:?}; use hex or base64")]
    UnknownEncoding(String),
    #[error(
        "{what} {name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    )]
    BadHeaderName { what: &'static str, name: String },
    #[error("{what} {path:?} is not a valid field: use a name, or a dotted path like data.type without empty parts")]
    BadFieldPath { what: &'static str, path: String },
    #[error("the signature prefix {0:?} must not contain whitespace or control characters")]
    BadPrefix(String),
}

impl Scheme {
    /// Every scheme's name, as the CLI takes it and the store keeps it.
    pub const NAMES: [&'static str; 7] = [
        "github", "stripe", "shopify", "slack", "standard", "kakiyo", "hmac",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::Shopify => "shopify",
            Scheme::Slack => "slack",
            Scheme::Standard => "standard",
            Scheme::Kakiyo => "kakiyo",
            Scheme::Hmac(_) => "hmac",
        }
    }

    /// The options stored beside the name: empty for every scheme but `hmac`, whose options are a
    /// JSON object.
    pub fn options_json(&self) -> String {
        match self {
            Scheme::Hmac(options) => {
                serde_json::to_string(options).expect("HMAC options are strings and enums")
            }
            _ => String::new(),
        }
    }

    /// Back from [`Scheme::name`] and [`Scheme::options_json`]. The `hmac` options are checked
    /// with [`HmacOptions::check`], so a stored scheme is always a usable one.
    pub fn from_stored(name: &str, options: &str) -> Result<Scheme, SchemeError> {
        let fixed = match name {
            "github" => Scheme::Github,
            "stripe" => Scheme::Stripe,
            "shopify" => Scheme::Shopify,
            "slack" => Scheme::Slack,
            "standard" => Scheme::Standard,
            "kakiyo" => Scheme::Kakiyo,
            "hmac" => {
                let options: HmacOptions = serde_json::from_str(options)
                    .map_err(|e| SchemeError::BadOptions(e.to_string()))?;
                options.check()?;
                return Ok(Scheme::Hmac(options));
            }
            unknown => return Err(SchemeError::UnknownScheme(unknown.to_owned())),
        };
        if options.trim().is_empty() {
            Ok(fixed)
        } else {
            Err(SchemeError::UnexpectedOptions(fixed.name()))
        }
    }
}

impl HmacOptions {
    /// Checks what the CLI took from the operator: header names are HTTP tokens, field paths
    /// have no empty parts, the prefix is printable.
    pub fn check(&self) -> Result<(), SchemeError> {
        check_header("the signature header", &self.header)?;
        if self
            .prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SchemeError::BadPrefix(self.prefix.clone()));
        }
        for (what, locator) in [("the event", &self.event), ("the delivery id", &self.id)] {
            match locator {
                Some(Locator::Header(name)) => check_header(what, name)?,
                Some(Locator::Field(path)) if path.split('.').any(str::is_empty) => {
                    return Err(SchemeError::BadFieldPath {
                        what,
                        path: path.clone(),
                    });
                }
                Some(Locator::Field(_)) | None => {}
            }
        }
        Ok(())
    }
}

/// RFC 9110's `token`: what a header name may be.
fn check_header(what: &'static str, name: &str) -> Result<(), SchemeError> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(SchemeError::BadHeaderName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = SchemeError;

    fn from_str(text: &str) -> Result<Algorithm, SchemeError> {
        match text.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(SchemeError::UnknownAlgorithm(text.to_owned())),
        }
    }
}

impl FromStr for Encoding {
    type Err = SchemeError;

    fn from_str(text: &str) -> Result<Encoding, SchemeError> {
        match text.to_ascii_lowercase().as_str() {
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            _ => Err(SchemeError::UnknownEncoding(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_options() -> HmacOptions {
        HmacOptions {
            header: "X-Signature".into(),
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Base64,
            prefix: "sha512=".into(),
            event: Some(Locator::Field("data.type".into())),
            id: Some(Locator::Header("X-Delivery".into())),
        }
    }

    #[test]
    fn every_scheme_round_trips_through_its_stored_form() {
        let schemes = [
            Scheme::Github,
            Scheme::Stripe,
            Scheme::Shopify,
            Scheme::Slack,
            Scheme::Standard,
            Scheme::Kakiyo,
            Scheme::Hmac(hmac_options()),
            Scheme::Hmac(HmacOptions {
                event: None,
                id: None,
                prefix: String::new(),
                ..hmac_options()
            }),
        ];
        for scheme in schemes {
            let back = Scheme::from_stored(scheme.name(), &scheme.options_json());
            assert_eq!(back, Ok(scheme.clone()), "{scheme}");
            assert!(Scheme::NAMES.contains(&scheme.name()));
        }
        assert_eq!(Scheme::Github.options_json(), "");
    }

    #[test]
    fn hmac_options_are_a_readable_json_object() {
        assert_eq!(
            Scheme::Hmac(hmac_options()).options_json(),
            r#"{"header":"X-Signature","algorithm":"sha512","encoding":"base64","prefix":"sha512=","event":{"field":"data.type"},"id":{"header":"X-Delivery"}}"#
        );
        let minimal = r#"{"header":"x-sig","algorithm":"sha1","encoding":"hex"}"#;
        let Ok(Scheme::Hmac(options)) = Scheme::from_stored("hmac", minimal) else {
            panic!("minimal options are enough");
        };
        assert_eq!(
            (options.prefix.as_str(), options.event, options.id),
            ("", None, None)
        );
    }

    #[test]
    fn unknown_names_and_bad_options_are_explained() {
        let unknown = Scheme::from_stored("gitlab", "").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            r#"unknown signing scheme "gitlab"; known schemes: github, stripe, shopify, slack, standard, kakiyo, hmac"#
        );
        assert_eq!(
            Scheme::from_stored("github", "{}"),
            Err(SchemeError::UnexpectedOptions("github"))
        );
        for bad in [
            "",
            "{}",
            r#"{"header":"x","algorithm":"md5","encoding":"hex"}"#,
            r#"{"header":"x","algorithm":"sha1","encoding":"hex","colour":"red"}"#,
            r#"{"header":"has space","algorithm":"sha1","encoding":"hex"}"#,
            r#"{"header":"","algorithm":"sha1","encoding":"hex"}"#,
            r#"{"header":"x","algorithm":"sha1","encoding":"hex","prefix":"a b"}"#,
            r#"{"header":"x","algorithm":"sha1","encoding":"hex","event":{"field":"a..b"}}"#,
            r#"{"header":"x","algorithm":"sha1","encoding":"hex","id":{"header":"a:b"}}"#,
        ] {
            let error = Scheme::from_stored("hmac", bad).unwrap_err();
            assert!(!error.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn algorithms_and_encodings_parse_from_cli_text() {
        assert_eq!("SHA256".parse(), Ok(Algorithm::Sha256));
        assert_eq!("sha1".parse(), Ok(Algorithm::Sha1));
        assert_eq!("base64".parse(), Ok(Encoding::Base64));
        assert_eq!(
            "md5".parse::<Algorithm>().unwrap_err().to_string(),
            r#"unknown HMAC algorithm "md5"; use sha1, sha256 or sha512"#
        );
        assert!("b32".parse::<Encoding>().is_err());
    }
}
