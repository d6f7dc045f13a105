//! Pipelines' signing secrets, sealed at rest (CONTRACT §8).
//!
//! The secrets live in ClickHouse, which many people and backups can read; a secret lets anyone
//! forge deliveries, so the store holds only AES-256-GCM ciphertexts under a key that lives in a
//! file on the gateway's hosts (`HOOKHOUSE_SECRETS_KEY_FILE`). The sealed form is
//! `v1:` + base64(96-bit random nonce ‖ ciphertext ‖ 128-bit tag); the version prefix leaves room
//! for another key or cipher later. The pipeline id is the AEAD's associated data: a sealed
//! secret copied into another pipeline's row does not open there.
//!
//! Random 96-bit nonces under one key stay safe for about 2^32 seals, far more than secrets are
//! ever set.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand::Rng;

use super::codec::{base64_any, base64_encode};
use super::verify::Secret;

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Binds a sealed secret to this use and to its pipeline.
const CONTEXT: &[u8] = b"hookhouse pipeline secret v1\0";
/// Binds a sealed secret to notification signing and to its subscription.
const SUBSCRIPTION_CONTEXT: &[u8] = b"hookhouse subscription secret v1\0";

/// The key that seals and opens pipelines' secrets. `Debug` is redacted.
#[derive(Clone)]
pub struct SecretsKey(Aes256Gcm);

/// Why the key could not be loaded or a sealed secret not opened. Messages name the key file but
/// never quote its content, nor any secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the secrets key file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the secrets key file {} does not hold base64 text; make one with `openssl rand -base64 32`", path.display())]
    NotBase64 { path: PathBuf },
    #[error("the secrets key file {} holds {len} bytes once decoded, not 32; make one with `openssl rand -base64 32`", path.display())]
    WrongLength { path: PathBuf, len: usize },
    #[error("a stored secret is not in a sealed form this version of hookhouse knows (it should start with v1:)")]
    UnknownFormat,
    #[error("the stored secret of pipeline {pipeline_id} does not open with this secrets key: the key file differs from the one that sealed it, or the secret was copied from another pipeline or damaged")]
    CannotOpen { pipeline_id: u64 },
    #[error("the stored secret of subscription {subscription_id} does not open with this secrets key: the key file differs from the one that sealed it")]
    CannotOpenSubscription { subscription_id: String },
}

impl SecretsKey {
    /// From a file holding base64 of exactly 32 bytes (`openssl rand -base64 32`); whitespace
    /// around it is ignored.
    pub fn load(path: &Path) -> Result<SecretsKey, KeyError> {
        let content = std::fs::read(path).map_err(|source| KeyError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let not_base64 = || KeyError::NotBase64 {
            path: path.to_owned(),
        };
        let text = std::str::from_utf8(&content).map_err(|_| not_base64())?;
        let decoded = base64_any(text.trim().as_bytes()).ok_or_else(not_base64)?;
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength {
                path: path.to_owned(),
                len: decoded.len(),
            })?;
        Ok(SecretsKey::from_bytes(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> SecretsKey {
        SecretsKey(Aes256Gcm::new(&bytes.into()))
    }

    /// Seals `secret` for `pipeline_id`; every call draws a new nonce, so sealing the same secret
    /// twice gives two different texts.
    pub fn seal(&self, pipeline_id: u64, secret: &Secret) -> String {
        self.seal_bound(&pipeline_data(pipeline_id), secret)
    }

    /// Opens what [`SecretsKey::seal`] made for the same pipeline under the same key; anything
    /// else (another key, another pipeline, a changed byte) is an error.
    pub fn open(&self, pipeline_id: u64, sealed: &str) -> Result<Secret, KeyError> {
        self.open_bound(&pipeline_data(pipeline_id), sealed)
            .map_err(|error| match error {
                KeyError::UnknownFormat => error,
                _ => KeyError::CannotOpen { pipeline_id },
            })
    }

    /// Seals a notification subscription's signing secret (CONTRACT §9), bound to its id.
    pub fn seal_for_subscription(&self, subscription_id: &str, secret: &Secret) -> String {
        self.seal_bound(&subscription_data(subscription_id), secret)
    }

    /// Opens what [`SecretsKey::seal_for_subscription`] made for the same subscription.
    pub fn open_for_subscription(
        &self,
        subscription_id: &str,
        sealed: &str,
    ) -> Result<Secret, KeyError> {
        self.open_bound(&subscription_data(subscription_id), sealed)
            .map_err(|error| match error {
                KeyError::UnknownFormat => error,
                _ => KeyError::CannotOpenSubscription {
                    subscription_id: subscription_id.to_owned(),
                },
            })
    }

    fn seal_bound(&self, aad: &[u8], secret: &Secret) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let payload = Payload {
            msg: secret.expose(),
            aad,
        };
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM seals any secret shorter than 64 GB");
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        format!("{VERSION}{}", base64_encode(&blob))
    }

    /// Opens a sealed text bound to `aad`: `UnknownFormat` for a text that is not one, and
    /// `CannotOpen` (which the callers rename for what it was for) for any other failure.
    fn open_bound(&self, aad: &[u8], sealed: &str) -> Result<Secret, KeyError> {
        let encoded = sealed
            .strip_prefix(VERSION)
            .ok_or(KeyError::UnknownFormat)?;
        let cannot_open = || KeyError::CannotOpen { pipeline_id: 0 };
        let blob = base64_any(encoded.as_bytes()).ok_or_else(cannot_open)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(cannot_open());
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        match self.0.decrypt(Nonce::from_slice(nonce), payload) {
            Ok(plaintext) => Ok(Secret::new(plaintext)),
            Err(_) => Err(cannot_open()),
        }
    }
}

fn pipeline_data(pipeline_id: u64) -> Vec<u8> {
    let mut aad = CONTEXT.to_vec();
    aad.extend_from_slice(&pipeline_id.to_be_bytes());
    aad
}

/// A different context from pipelines': a sealed pipeline secret never opens as a
/// subscription's, nor the other way round.
fn subscription_data(subscription_id: &str) -> Vec<u8> {
    let mut aad = SUBSCRIPTION_CONTEXT.to_vec();
    aad.extend_from_slice(subscription_id.as_bytes());
    aad
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn secret() -> Secret {
        Secret::new(SECRET.as_bytes().to_vec())
    }

    #[test]
    fn a_sealed_secret_opens_for_its_pipeline_only() {
        let key = SecretsKey::from_bytes(KEY);
        let sealed = key.seal(7, &secret());
        assert!(sealed.starts_with("v1:"), "{sealed}");
        assert!(
            !sealed.contains(SECRET) && !sealed.contains("whsec"),
            "{sealed}"
        );
        assert_eq!(
            key.open(7, &sealed).expect("opens").expose(),
            SECRET.as_bytes()
        );
        assert_ne!(key.seal(7, &secret()), sealed, "a fresh nonce every time");
        assert!(matches!(
            key.open(8, &sealed),
            Err(KeyError::CannotOpen { pipeline_id: 8 })
        ));
        let other = SecretsKey::from_bytes(*b"fedcba9876543210fedcba9876543210");
        assert!(matches!(
            other.open(7, &sealed),
            Err(KeyError::CannotOpen { .. })
        ));
        let empty = key.seal(1, &Secret::new(Vec::new()));
        assert_eq!(key.open(1, &empty).expect("opens").expose(), b"");
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = SecretsKey::from_bytes(KEY);
        let sealed = key.seal(7, &secret());
        let blob = base64_any(&sealed.as_bytes()["v1:".len()..]).expect("base64");
        for at in 0..blob.len() {
            let mut changed = blob.clone();
            changed[at] ^= 0x01;
            let text = format!("v1:{}", base64_encode(&changed));
            assert!(
                matches!(key.open(7, &text), Err(KeyError::CannotOpen { .. })),
                "byte {at}"
            );
        }
        for damaged in ["v1:", "v1:AAAA", "v1:!!!", &sealed[..sealed.len() - 4]] {
            assert!(
                matches!(key.open(7, damaged), Err(KeyError::CannotOpen { .. })),
                "{damaged}"
            );
        }
        for unknown in ["", "v2:AAAA", SECRET, &sealed[1..]] {
            assert!(
                matches!(key.open(7, unknown), Err(KeyError::UnknownFormat)),
                "{unknown}"
            );
        }
    }

    #[test]
    fn the_key_file_is_base64_of_32_bytes() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, format!("  {}\n", base64_encode(&KEY))).expect("write");
        let loaded = SecretsKey::load(&path).expect("loads");
        let sealed = SecretsKey::from_bytes(KEY).seal(3, &secret());
        assert_eq!(
            loaded.open(3, &sealed).expect("same key").expose(),
            SECRET.as_bytes()
        );

        let missing = dir.path().join("missing.key");
        let error = SecretsKey::load(&missing).unwrap_err();
        assert!(matches!(error, KeyError::Unreadable { .. }));
        assert!(error.to_string().contains("missing.key"), "{error}");

        let content = "bm90IGEga2V5IGF0IGFsbA== and more";
        std::fs::write(&path, content).expect("write");
        let error = SecretsKey::load(&path).unwrap_err();
        assert!(matches!(error, KeyError::NotBase64 { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("secrets.key") && !text.contains("bm90"),
            "{text}"
        );

        std::fs::write(&path, [0xff, 0xfe, 0x00]).expect("write");
        assert!(matches!(
            SecretsKey::load(&path),
            Err(KeyError::NotBase64 { .. })
        ));

        std::fs::write(&path, base64_encode(&KEY[..16])).expect("write");
        let error = SecretsKey::load(&path).unwrap_err();
        assert!(
            matches!(error, KeyError::WrongLength { len: 16, .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains("16 bytes") && !text.contains(&base64_encode(&KEY[..16])),
            "{text}"
        );
    }

    #[test]
    fn nothing_secret_is_printed() {
        let key = SecretsKey::from_bytes(KEY);
        assert_eq!(format!("{key:?}"), "SecretsKey(<redacted>)");
        let sealed = key.seal(7, &secret());
        let errors = [
            key.open(8, &sealed).unwrap_err(),
            key.open(7, SECRET).unwrap_err(),
            KeyError::WrongLength {
                path: "k".into(),
                len: 3,
            },
        ];
        for error in errors {
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(
                    !text.contains("MfKQ9") && !text.contains("0123456789abcdef"),
                    "{text}"
                );
                assert!(!text.contains(&sealed[3..]), "{text}");
            }
        }
    }
}
