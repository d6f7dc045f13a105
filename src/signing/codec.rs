//! Decoding what senders write: base64 in either alphabet, with or without padding.
//!
//! Senders disagree on base64's details (Shopify pads the standard alphabet, Kombo writes
//! URL-safe without padding) and most do not document theirs; the bytes are what is compared, so
//! accepting every spelling of the same bytes costs nothing in strength.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Standard or URL-safe base64, padded or not; `None` if it is neither. Deliberately drops the
/// decoder's error, which quotes the offending byte: the text may be a secret.
pub(crate) fn base64_any(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .ok()
}

/// Standard base64, padded or not: what this module writes.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_same_bytes_decodes() {
        let bytes = [0xfb, 0xff, 0xbf, 0x01];
        for text in ["+/+/AQ==", "+/+/AQ", "-_-_AQ==", "-_-_AQ"] {
            assert_eq!(base64_any(text.as_bytes()), Some(bytes.to_vec()), "{text}");
        }
        assert_eq!(base64_encode(&bytes), "+/+/AQ==");
        for bad in ["+_+_AQ", "AQ===", "not base64!", "A"] {
            assert_eq!(base64_any(bad.as_bytes()), None, "{bad}");
        }
    }
}
