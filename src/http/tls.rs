//! HTTPS on the ingest listener (CONTRACT §11): the rustls server configuration made from
//! `HOOKHOUSE_TLS_CERT_FILE` and `HOOKHOUSE_TLS_KEY_FILE`.
//!
//! Both are set or neither ([`files`], checked with the other settings); with neither the
//! listener speaks plain HTTP, as before. The files are read and checked by [`server_config`]
//! when `serve` starts, before it opens anything: each must be readable PEM, the first
//! certificate of the chain is the server's own, and the key must be the one it certifies.
//! Anything else stops start-up with one [`ConfigError`] naming the setting to fix, rather than a
//! listener that fails every handshake. There is one TLS stack in hookhouse, rustls on ring, the
//! same as for HTTPS to ClickHouse. The files are not read again while serving: a new
//! certificate takes a restart.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{InconsistentKeys, ServerConfig};

use crate::config::{ConfigError, Settings};

const CERT_SETTING: &str = "HOOKHOUSE_TLS_CERT_FILE";
const KEY_SETTING: &str = "HOOKHOUSE_TLS_KEY_FILE";

/// The two files, or `None` for plain HTTP; one without the other is refused. Reads nothing:
/// [`Settings::validate`] calls it for every command, and only `serve` needs the files.
pub fn files(settings: &Settings) -> Result<Option<(&Path, &Path)>, ConfigError> {
    match (&settings.tls_cert_file, &settings.tls_key_file) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (Some(_), None) => Err(only_one(KEY_SETTING, CERT_SETTING)),
        (None, Some(_)) => Err(only_one(CERT_SETTING, KEY_SETTING)),
    }
}

/// The listener's TLS configuration, or `None` for plain HTTP when neither file is set.
pub fn server_config(settings: &Settings) -> Result<Option<ServerConfig>, ConfigError> {
    let Some((cert_file, key_file)) = files(settings)? else {
        return Ok(None);
    };
    let chain = read_certificates(cert_file)?;
    let key = read_private_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => bad(
                KEY_SETTING,
                format!(
                    "the key in {} is not the one the certificate in {} ({CERT_SETTING}) is for",
                    key_file.display(),
                    cert_file.display()
                ),
            ),
            rustls::Error::InvalidCertificate(reason) => bad(
                CERT_SETTING,
                format!(
                    "{}: its first certificate is not valid X.509 ({reason:?})",
                    cert_file.display()
                ),
            ),
            rustls::Error::General(_) => bad(
                KEY_SETTING,
                format!("{}: not a usable private key: {error}", key_file.display()),
            ),
            _ => bad(
                CERT_SETTING,
                format!("{}: not a usable certificate: {error}", cert_file.display()),
            ),
        })?;
    Ok(Some(config))
}

fn only_one(missing: &str, given: &str) -> ConfigError {
    bad(
        missing,
        format!("is not set, but {given} is: HTTPS on the listener needs both, plain HTTP neither"),
    )
}

fn bad(setting: &str, message: String) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        message,
    }
}

/// Reads `path` whole, with the reason it cannot be read in the setting's words.
fn read(setting: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(bad(
            setting,
            "is empty; leave it unset for plain HTTP".into(),
        ));
    }
    std::fs::read(path)
        .map_err(|error| bad(setting, format!("cannot read {}: {error}", path.display())))
}

/// Every certificate in the PEM file: the server's own first, then its intermediates.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let text = read(CERT_SETTING, path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|error| {
            bad(
                CERT_SETTING,
                format!("{} is not valid PEM: {error}", path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(bad(
            CERT_SETTING,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(chain)
}

/// The first private key in the PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let text = read(KEY_SETTING, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| {
        let why = match error {
            pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".into()
            }
            other => format!("is not a valid PEM private key: {other}"),
        };
        bad(KEY_SETTING, format!("{} {why}", path.display()))
    })
}
