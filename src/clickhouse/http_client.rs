//! The HTTP client under the ClickHouse client: plain for `http://`, TLS for `https://`.
//!
//! The clickhouse crate's own TLS features cannot take an extra CA, so hookhouse builds the hyper
//! client itself and hands it over (`Client::with_http_client`). There is one TLS stack, rustls
//! on ring: the crate's TLS features stay off. A server's certificate is verified against the
//! system's roots (the OS store, as `ca-certificates` keeps it; `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` point elsewhere, as for OpenSSL) plus the PEM file named by
//! `HOOKHOUSE_CLICKHOUSE_CA_FILE`, for private or self-signed servers; there is no switch that
//! turns verification off.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

use crate::config::{ClickhouseEndpoint, ConfigError};

/// How long a TCP connection to ClickHouse may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive on connections to ClickHouse, as the clickhouse crate's default client has.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// ClickHouse closes idle connections after 3 s by default (10 s from 23.11); dropping ours
/// sooner keeps a request from going out on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A clickhouse client whose connections go the way `endpoint`'s scheme says, trusting
/// `ca_file` besides the system's roots for `https://`. Credentials and the URL are the
/// caller's to set.
pub fn client(
    endpoint: &ClickhouseEndpoint,
    ca_file: Option<&Path>,
) -> Result<clickhouse::Client, ConfigError> {
    // Read even for `http://`, so that a bad file stops start-up the same way whatever the URL.
    let extra_roots = match ca_file {
        Some(path) => read_ca_file(path).map_err(|message| ConfigError {
            setting: "HOOKHOUSE_CLICKHOUSE_CA_FILE".into(),
            message,
        })?,
        None => Vec::new(),
    };
    let mut tcp = HttpConnector::new();
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    // A host that is off answers nothing: give up soon, so that the next node is tried.
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let mut builder = HyperClient::builder(TokioExecutor::new());
    builder.pool_idle_timeout(POOL_IDLE_TIMEOUT);
    if !endpoint.url.starts_with("https://") {
        return Ok(clickhouse::Client::with_http_client(builder.build(tcp)));
    }
    let mut roots = system_roots();
    // read_ca_file has checked that each is usable.
    roots.add_parsable_certificates(extra_roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(clickhouse::Client::with_http_client(
        builder.build(ExplainUntrusted(https)),
    ))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TLS connector, with a hint on the failure an operator meets first: a certificate signed
/// by no CA that hookhouse trusts. rustls says only "invalid peer certificate: UnknownIssuer".
#[derive(Clone)]
struct ExplainUntrusted<C>(C);

impl<C> tower_service::Service<Uri> for ExplainUntrusted<C>
where
    C: tower_service::Service<Uri, Error = BoxError>,
    C::Future: Send + 'static,
    C::Response: 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map_err(explain) })
    }
}

fn explain(error: BoxError) -> BoxError {
    match rustls_error(&*error) {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            Box::new(Untrusted(error))
        }
        _ => error,
    }
}

/// The rustls error in `error`'s chain. It sits inside `io::Error`s, which hide their inner
/// error from `source()`, so those are opened by hand.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    let inner = match error.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => error.source(),
    };
    inner.and_then(rustls_error)
}

#[derive(Debug, thiserror::Error)]
#[error(
    "ClickHouse's certificate is signed by no CA that hookhouse trusts (the system's, and the \
     one in HOOKHOUSE_CLICKHOUSE_CA_FILE if set)"
)]
struct Untrusted(#[source] BoxError);

/// The operating system's CA certificates (on Debian, what `ca-certificates` keeps in
/// /etc/ssl/certs); what cannot be read is logged, not fatal: the CA file may be all it takes.
pub(crate) fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "cannot read some of the system's CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system CA certificates found (is ca-certificates installed?): HTTPS to \
             ClickHouse works only with a certificate from HOOKHOUSE_CLICKHOUSE_CA_FILE"
        );
    }
    roots
}

/// The certificates in the PEM file at `path`, each usable as a trust anchor, or one line that
/// says why not (without the setting's name, which the caller adds).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    if path.as_os_str().is_empty() {
        return Err("is empty: name a PEM file, or leave it unset".into());
    }
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|error| format!("cannot read {shown}: {error}"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{shown} is not a PEM file: {error}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let mut store = RootCertStore::empty();
    for (index, certificate) in certificates.iter().enumerate() {
        store.add(certificate.clone()).map_err(|error| {
            format!(
                "certificate {} in {shown} is not usable as a CA: {error}",
                index + 1
            )
        })?;
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), content).expect("write temp file");
        file
    }

    #[test]
    fn refuses_what_is_not_a_pem_certificate() {
        let missing = read_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            missing.starts_with("cannot read /nonexistent/ca.pem: "),
            "{missing}"
        );
        let text = file(b"not a certificate\n");
        let error = read_ca_file(text.path()).unwrap_err();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        let broken = file(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let error = read_ca_file(broken.path()).unwrap_err();
        assert!(error.contains("is not a PEM file"), "{error}");
        let garbage = file(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let error = read_ca_file(garbage.path()).unwrap_err();
        assert!(error.contains("is not usable as a CA"), "{error}");
    }

    #[test]
    fn takes_a_pem_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let pem = file(certificate.pem().as_bytes());
        assert_eq!(read_ca_file(pem.path()).expect("a usable CA").len(), 1);
    }

    #[test]
    fn an_untrusted_certificate_names_the_ca_setting() {
        // As hyper-rustls wraps what tokio-rustls returns.
        let untrusted = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        let line = crate::error_chain::one_line(&*explain(Box::new(untrusted)));
        assert!(line.contains("HOOKHOUSE_CLICKHOUSE_CA_FILE"), "{line}");
        assert!(
            line.ends_with(": invalid peer certificate: UnknownIssuer"),
            "{line}"
        );

        let wrong_name = std::io::Error::other(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        let line = crate::error_chain::one_line(&*explain(Box::new(wrong_name)));
        assert!(!line.contains("HOOKHOUSE_CLICKHOUSE_CA_FILE"), "{line}");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let line = crate::error_chain::one_line(&*explain(Box::new(refused)));
        assert_eq!(line, "connection refused");
    }
}
