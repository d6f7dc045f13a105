//! HTTPS on the ingest listener (CONTRACT §11): with `HOOKHOUSE_TLS_CERT_FILE` and
//! `HOOKHOUSE_TLS_KEY_FILE` set, webhooks, probes and metrics are served over TLS on the one
//! listener and plain HTTP is not; a bad file, or one of the two alone, stops `hookhouse serve`
//! with one line naming the setting.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rcgen::{CertificateParams, KeyPair};
use tempfile::TempDir;

/// A self-signed certificate for 127.0.0.1 and localhost, its key, and a key of another pair.
struct Files {
    dir: TempDir,
    certificate_pem: String,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::Builder::new()
            .prefix("hookhouse-listener-tls-")
            .tempdir()
            .expect("temp dir");
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).expect("params");
        let certificate_pem = params.self_signed(&key).expect("certificate").pem();
        let other_key = KeyPair::generate().expect("other key");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write a test file")
        };
        write("cert.pem", &certificate_pem);
        write("key.pem", &key.serialize_pem());
        write("other-key.pem", &other_key.serialize_pem());
        write("garbage.pem", "hello, not PEM at all\n");
        // PEM framing around bytes that are no certificate.
        write(
            "bad-der.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        Files {
            dir,
            certificate_pem,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn trusting(certificate_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certificate_pem.as_bytes()).expect("test CA"),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_probes_and_metrics_are_served_over_https_only() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "tls-listener").await;
    let files = Files::new();
    let (cert, key) = (files.path("cert.pem"), files.path("key.pem"));
    let gateway = Gateway::start(&ch, |s| {
        s.tls_cert_file = Some(cert);
        s.tls_key_file = Some(key);
    })
    .await;
    let https =
        |path_and_query: &str| format!("https://127.0.0.1:{}/{path_and_query}", gateway.port);
    let client = trusting(&files.certificate_pem);

    let body = r#"{"over":"https","n":1}"#;
    let answer = post(&client, &https(&creds.query()), body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = answer.request_id().to_string();
    for probe in ["healthz", "readyz", "metrics"] {
        let response = client
            .get(https(probe))
            .send()
            .await
            .expect("probe answers");
        assert_eq!(response.status().as_u16(), 200, "{probe}");
    }
    let landed =
        format!("SELECT __kdd_request_body FROM hookhouse.events WHERE __kdd_request_id = '{id}'");
    assert!(
        eventually(Duration::from_secs(10), || async {
            ch.query(&landed).await.trim_end() == body
        })
        .await,
        "the row sent over HTTPS did not land"
    );

    // Plain HTTP to the TLS port gets no HTTP answer, only a TLS alert and a closed connection.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{}/{}", gateway.port, creds.query());
    let refused = plain.post(&url).body(body).send().await;
    assert!(refused.is_err(), "plain HTTP was answered: {refused:?}");
    // A client that does not trust the certificate refuses it: this is the server's, not a
    // stand-in's.
    let untrusting = trusting(&Files::new().certificate_pem);
    let untrusted = untrusting.get(https("readyz")).send().await;
    assert!(untrusted.is_err(), "an unknown certificate was trusted");

    let n = ch
        .count("SELECT count() FROM hookhouse.events WHERE __kdd_request_body LIKE '%https%'")
        .await;
    assert_eq!(n, 1, "exactly the one HTTPS request landed");
    gateway.stop().await;
}

/// Variables naming TLS files: the case under test.
type TlsVars = Vec<(&'static str, PathBuf)>;

/// `hookhouse serve` with these TLS settings, on a ClickHouse that is not there (the settings
/// are refused before it is needed).
fn serve(data: &Path, tls: &TlsVars) -> (i32, String) {
    let data_dir = data.to_string_lossy().into_owned();
    let tls: Vec<(&str, String)> = tls
        .iter()
        .map(|(name, path)| (*name, path.to_string_lossy().into_owned()))
        .collect();
    let mut env: Vec<(&str, &str)> = vec![
        ("HOOKHOUSE_LISTEN", "127.0.0.1:0"),
        ("HOOKHOUSE_DATA_DIR", &data_dir),
        ("HOOKHOUSE_CLICKHOUSE_URL", "http://127.0.0.1:9"),
    ];
    env.extend(tls.iter().map(|(name, path)| (*name, path.as_str())));
    let (code, _stdout, stderr) = hookhouse_cli(&["serve"], &env);
    (code, stderr)
}

#[test]
fn bad_tls_files_stop_serve_with_one_line_naming_the_setting() {
    const CERT: &str = "HOOKHOUSE_TLS_CERT_FILE";
    const KEY: &str = "HOOKHOUSE_TLS_KEY_FILE";
    let files = Files::new();
    let data = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| files.path(name);
    let folder = files.dir.path().to_path_buf();
    let cases: Vec<(&str, TlsVars, &str)> = vec![
        (
            "certificate file missing",
            vec![(CERT, path("missing.pem")), (KEY, path("key.pem"))],
            CERT,
        ),
        (
            "key file missing",
            vec![(CERT, path("cert.pem")), (KEY, path("missing.pem"))],
            KEY,
        ),
        (
            "certificate is a folder",
            vec![(CERT, folder), (KEY, path("key.pem"))],
            CERT,
        ),
        (
            "certificate empty",
            vec![(CERT, PathBuf::new()), (KEY, path("key.pem"))],
            CERT,
        ),
        (
            "certificate not PEM",
            vec![(CERT, path("garbage.pem")), (KEY, path("key.pem"))],
            CERT,
        ),
        (
            "key not PEM",
            vec![(CERT, path("cert.pem")), (KEY, path("garbage.pem"))],
            KEY,
        ),
        (
            "a key given as the certificate",
            vec![(CERT, path("key.pem")), (KEY, path("key.pem"))],
            CERT,
        ),
        (
            "a certificate given as the key",
            vec![(CERT, path("cert.pem")), (KEY, path("cert.pem"))],
            KEY,
        ),
        (
            "PEM around bytes that are no certificate",
            vec![(CERT, path("bad-der.pem")), (KEY, path("key.pem"))],
            CERT,
        ),
        (
            "key of another certificate",
            vec![(CERT, path("cert.pem")), (KEY, path("other-key.pem"))],
            KEY,
        ),
        ("only the certificate", vec![(CERT, path("cert.pem"))], KEY),
        ("only the key", vec![(KEY, path("key.pem"))], CERT),
    ];
    for (case, tls, setting) in cases {
        let (code, stderr) = serve(data.path(), &tls);
        assert_eq!(code, 1, "{case}: {stderr}");
        let line = stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "{case}: not one line: {stderr}");
        // The setting to fix is the first one the line names.
        let first = [CERT, KEY]
            .into_iter()
            .filter_map(|name| line.find(name).map(|at| (at, name)))
            .min()
            .map(|(_, name)| name);
        assert_eq!(first, Some(setting), "{case}: {line}");
        assert!(!line.contains("panicked"), "{case}: {line}");
    }
}

#[test]
fn admin_commands_do_not_read_the_files_but_want_both_or_neither() {
    let files = Files::new();
    let missing = files.path("missing.pem").to_string_lossy().into_owned();
    let cert = files.path("cert.pem").to_string_lossy().into_owned();
    let nowhere = ("HOOKHOUSE_CLICKHOUSE_URL", "http://127.0.0.1:9");
    // A key the operator's account cannot read does not stop `pipeline list`: it fails on the
    // ClickHouse that is not there instead.
    let (code, _, stderr) = hookhouse_cli(
        &["pipeline", "list"],
        &[
            nowhere,
            ("HOOKHOUSE_TLS_CERT_FILE", &cert),
            ("HOOKHOUSE_TLS_KEY_FILE", &missing),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("HOOKHOUSE_TLS"), "{stderr}");
    let (code, _, stderr) = hookhouse_cli(
        &["pipeline", "list"],
        &[nowhere, ("HOOKHOUSE_TLS_CERT_FILE", &cert)],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("HOOKHOUSE_TLS_KEY_FILE"), "{stderr}");
}
