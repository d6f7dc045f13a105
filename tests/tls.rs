//! HTTPS to ClickHouse and secret hygiene (CONTRACT §7), against a real ClickHouse 18.16 serving
//! HTTPS with a certificate the test makes, self-signed or from a private CA: webhooks land over
//! TLS when that CA is given and never when it is not; bad URLs and CA files stop start-up with one line; a
//! password, given apart or inside the URL, shows nowhere: not in `Debug`, not in the CLI's
//! output, not in the gateway's log at trace level.

mod common;

use std::time::Duration;

use common::*;
use hookhouse::Settings;

/// The password of the test server's user `hook`; distinctive, so that finding it is no accident.
const PASSWORD: &str = "SECRETPW4711";
/// A password ClickHouse refuses.
const WRONG_PASSWORD: &str = "WRONGPW0815";

/// Asserts `stderr` is one line in which no cause is said twice.
fn one_line_each_cause_once(stderr: &str) {
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let causes: Vec<&str> = stderr.trim_end().split(": ").collect();
    for (index, cause) in causes.iter().enumerate() {
        assert!(
            !causes[index + 1..].contains(cause),
            "{cause:?} said twice in {stderr}"
        );
    }
}

fn assert_hidden(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} shows in:\n{text}");
    }
}

fn tls_env(ch: &ClickhouseServer) -> Vec<(&'static str, String)> {
    vec![
        ("HOOKHOUSE_CLICKHOUSE_URL", ch.https_url()),
        (
            "HOOKHOUSE_CLICKHOUSE_CA_FILE",
            ch.ca_file().display().to_string(),
        ),
    ]
}

fn cli(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hookhouse_cli(args, &env)
}

async fn landed(ch: &ClickhouseServer, table: &str, request_id: &str) -> u64 {
    ch.count(&format!(
        "SELECT count() FROM hookhouse.{table} WHERE __kdd_request_id = '{request_id}'"
    ))
    .await
}

async fn readiness(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("readyz answers")
        .json()
        .await
        .expect("readyz JSON")
}

/// Sets a pipeline and a token up with the CLI over HTTPS, as an operator would.
fn credentials_over_tls(env: &[(&str, String)]) -> Credentials {
    let json = |args: &[&str]| -> serde_json::Value {
        let (code, out, err) = cli(args, env);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed {out:?}: {e}"))
    };
    let pipeline = json(&["pipeline", "create", "--name", "over-tls", "--json"]);
    let pipeline_id = pipeline["pipeline_id"].as_u64().expect("pipeline id");
    let id = pipeline_id.to_string();
    let token = json(&[
        "token",
        "create",
        "--name",
        "tls",
        "--pipeline",
        &id,
        "--json",
    ]);
    Credentials {
        pipeline_id,
        key: token["key"].as_str().expect("key").into(),
        token: token["token"].as_str().expect("token").into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_lands_over_tls_with_a_self_signed_certificate_as_the_ca_file() {
    lands_over_tls(Certificate::SelfSigned).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_lands_over_tls_with_a_private_ca_as_the_ca_file() {
    lands_over_tls(Certificate::PrivateCa).await;
}

/// The CLI sets a pipeline up over HTTPS, a gateway lands a webhook over HTTPS.
async fn lands_over_tls(certificate: Certificate) {
    let ch = ClickhouseServer::start_tls(certificate);
    let env = tls_env(&ch);
    let credentials = credentials_over_tls(&env);
    let gateway = Gateway::start(&ch, |s| {
        s.clickhouse_url = ch.https_url();
        s.clickhouse_ca_file = Some(ch.ca_file());
    })
    .await;
    let client = reqwest::Client::new();
    let answer = post(
        &client,
        &gateway.url(&credentials.query()),
        r#"{"over":"tls"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = answer.request_id().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            landed(&ch, "events", &id).await == 1
        })
        .await,
        "the webhook did not land over TLS"
    );
    let body = ch
        .query(&format!(
            "SELECT __kdd_request_body FROM hookhouse.events WHERE __kdd_request_id = '{id}'"
        ))
        .await;
    assert_eq!(body.trim_end(), r#"{"over":"tls"}"#);
    assert_eq!(readiness(gateway.port).await["checks"]["clickhouse"], "ok");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_file_nothing_lands_and_the_log_says_why() {
    let ch = ClickhouseServer::start_tls(Certificate::SelfSigned);
    let credentials = setup_pipeline(&ch, "untrusted").await;
    let data = tempfile::tempdir().expect("temp dir");
    let url = ch.https_url();
    let gateway = GatewayProcess::spawn(&ch, data.path(), &[("HOOKHOUSE_CLICKHOUSE_URL", &url)]);
    let answer = post(
        &reqwest::Client::new(),
        &gateway.url(&credentials.query()),
        "{}",
    )
    .await;
    // Durable in the log: the 200 does not wait for ClickHouse (CONTRACT §2).
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = answer.request_id().to_string();
    let said_why = eventually(Duration::from_secs(10), || async {
        gateway
            .log()
            .contains("invalid peer certificate: UnknownIssuer")
    })
    .await;
    assert!(said_why, "the log does not say why:\n{}", gateway.log());
    let log = gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("UnknownIssuer") && l.contains("ClickHouse failed; will retry"))
        .unwrap_or_else(|| panic!("no retry line naming the certificate:\n{log}"));
    assert_eq!(line.matches("client error (Connect)").count(), 1, "{line}");
    assert!(
        line.contains("signed by no CA that hookhouse trusts")
            && line.contains("HOOKHOUSE_CLICKHOUSE_CA_FILE"),
        "{line}"
    );
    let ready = readiness(gateway.port).await;
    let clickhouse = ready["checks"]["clickhouse"].as_str().unwrap_or_default();
    assert!(clickhouse.contains("UnknownIssuer"), "{ready}");
    // Not trusted is a passing failure: retried, never `rejected`.
    assert_eq!(landed(&ch, "events", &id).await, 0);
    assert_eq!(landed(&ch, "rejected", &id).await, 0);
}

#[test]
fn the_cli_without_the_ca_file_says_why_once() {
    let ch = ClickhouseServer::start_tls(Certificate::SelfSigned);
    let (code, out, err) = cli(
        &["pipeline", "list"],
        &[("HOOKHOUSE_CLICKHOUSE_URL", ch.https_url())],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    assert!(err.contains("HOOKHOUSE_CLICKHOUSE_URL"), "{err}");
    assert!(err.contains("HOOKHOUSE_CLICKHOUSE_CA_FILE"), "{err}");
    one_line_each_cause_once(&err);
}

#[test]
fn bad_urls_and_ca_files_stop_start_up_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let cases = [
        ("HOOKHOUSE_CLICKHOUSE_URL", "ftp://127.0.0.1:21".to_string()),
        ("HOOKHOUSE_CLICKHOUSE_URL", "localhost:8123".to_string()),
        (
            "HOOKHOUSE_CLICKHOUSE_CA_FILE",
            dir.path().join("missing.pem").display().to_string(),
        ),
        (
            "HOOKHOUSE_CLICKHOUSE_CA_FILE",
            not_pem.display().to_string(),
        ),
    ];
    for (setting, value) in cases {
        let data = dir.path().join("data");
        let env = [
            (setting, value.clone()),
            ("HOOKHOUSE_DATA_DIR", data.display().to_string()),
            ("HOOKHOUSE_LISTEN", "127.0.0.1:0".to_string()),
        ];
        let (code, _, err) = cli(&["serve"], &env);
        assert_eq!(code, 1, "{setting}={value}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("bad setting {setting}")), "{err}");
    }
}

#[test]
fn a_password_shows_neither_in_debug_nor_in_cli_output() {
    let ch = ClickhouseServer::start_tls_with_hook_user(PASSWORD);
    let port = ch.https_port.expect("https");
    let ca = ch.ca_file().display().to_string();

    let in_url = Settings {
        clickhouse_url: format!("https://hook:{PASSWORD}@127.0.0.1:{port}"),
        ..Settings::default()
    };
    let apart = Settings {
        clickhouse_user: "hook".into(),
        clickhouse_password: PASSWORD.into(),
        ..Settings::default()
    };
    for settings in [&in_url, &apart] {
        assert_hidden(&format!("{settings:?} {settings:#?}"), &[PASSWORD]);
        let endpoint = settings.clickhouse_endpoint().expect("valid");
        assert_hidden(&format!("{endpoint:?}"), &[PASSWORD]);
    }

    // The right password, inside the URL: it logs in, and is taken out of the URL to do so.
    let right = [
        (
            "HOOKHOUSE_CLICKHOUSE_URL",
            format!("https://hook:{PASSWORD}@127.0.0.1:{port}/"),
        ),
        ("HOOKHOUSE_CLICKHOUSE_CA_FILE", ca.clone()),
    ];
    let (code, out, err) = cli(&["pipeline", "create", "--name", "p"], &right);
    assert_eq!(code, 0, "{err}");
    assert_hidden(&format!("{out}{err}"), &[PASSWORD]);

    // Refused logins, the password in the URL or apart.
    let refused = [
        vec![
            (
                "HOOKHOUSE_CLICKHOUSE_URL",
                format!("https://hook:{WRONG_PASSWORD}@127.0.0.1:{port}"),
            ),
            ("HOOKHOUSE_CLICKHOUSE_CA_FILE", ca.clone()),
        ],
        vec![
            ("HOOKHOUSE_CLICKHOUSE_URL", ch.https_url()),
            ("HOOKHOUSE_CLICKHOUSE_CA_FILE", ca.clone()),
            ("HOOKHOUSE_CLICKHOUSE_USER", "hook".into()),
            ("HOOKHOUSE_CLICKHOUSE_PASSWORD", WRONG_PASSWORD.into()),
        ],
    ];
    for env in &refused {
        let (code, out, err) = cli(&["pipeline", "list"], env);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("Wrong password for user hook"), "{err}");
        assert_hidden(&format!("{out}{err}"), &[PASSWORD, WRONG_PASSWORD]);
        one_line_each_cause_once(&err);
    }

    // Unreachable: nothing listens on the port any more. The CA file goes with the server's
    // folder, so a copy stays.
    let kept = tempfile::tempdir().expect("temp dir");
    let ca = kept.path().join("ca.pem").display().to_string();
    std::fs::copy(ch.ca_file(), &ca).expect("copy the CA");
    drop(ch);
    let unreachable = [
        vec![
            (
                "HOOKHOUSE_CLICKHOUSE_URL",
                format!("https://hook:{PASSWORD}@127.0.0.1:{port}"),
            ),
            ("HOOKHOUSE_CLICKHOUSE_CA_FILE", ca.clone()),
        ],
        vec![
            (
                "HOOKHOUSE_CLICKHOUSE_URL",
                format!("https://127.0.0.1:{port}"),
            ),
            ("HOOKHOUSE_CLICKHOUSE_USER", "hook".into()),
            ("HOOKHOUSE_CLICKHOUSE_PASSWORD", PASSWORD.into()),
        ],
        // Digits only, from the environment: taken as text, not refused as a number (whose
        // error would have quoted it).
        vec![
            (
                "HOOKHOUSE_CLICKHOUSE_URL",
                format!("http://127.0.0.1:{port}"),
            ),
            ("HOOKHOUSE_CLICKHOUSE_PASSWORD", "987654321".into()),
        ],
    ];
    for env in &unreachable {
        let (code, out, err) = cli(&["token", "list"], env);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("(HOOKHOUSE_CLICKHOUSE_URL): network error"),
            "{err}"
        );
        assert_hidden(&format!("{out}{err}"), &[PASSWORD, "987654321"]);
        one_line_each_cause_once(&err);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_never_shows_in_the_gateway_log() {
    let ch = ClickhouseServer::start_tls_with_hook_user(PASSWORD);
    let credentials = setup_pipeline(&ch, "secret").await;
    let port = ch.https_port.expect("https");
    let ca = ch.ca_file().display().to_string();
    let client = reqwest::Client::new();

    // Logged in with the password from the URL: the webhook lands.
    let data = tempfile::tempdir().expect("temp dir");
    let url = format!("https://hook:{PASSWORD}@127.0.0.1:{port}");
    let gateway = GatewayProcess::spawn(
        &ch,
        data.path(),
        &[
            ("HOOKHOUSE_CLICKHOUSE_URL", &url),
            ("HOOKHOUSE_CLICKHOUSE_CA_FILE", &ca),
            ("HOOKHOUSE_LOG", "trace"),
        ],
    );
    let answer = post(&client, &gateway.url(&credentials.query()), "{}").await;
    let id = answer.request_id().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            landed(&ch, "events", &id).await == 1
        })
        .await,
        "no landing with the password from the URL:\n{}",
        gateway.log()
    );
    let log = gateway.log();
    assert!(log.contains("TRACE"), "not at trace level:\n{log}");
    assert_hidden(&log, &[PASSWORD]);
    drop(gateway);

    // A wrong password, in the URL or apart: ClickHouse refuses, the log says so, and shows
    // neither password.
    let wrong_in_url = format!("https://hook:{WRONG_PASSWORD}@127.0.0.1:{port}");
    let https = ch.https_url();
    let refused: [Vec<(&str, &str)>; 2] = [
        vec![("HOOKHOUSE_CLICKHOUSE_URL", &wrong_in_url)],
        vec![
            ("HOOKHOUSE_CLICKHOUSE_URL", &https),
            ("HOOKHOUSE_CLICKHOUSE_USER", "hook"),
            ("HOOKHOUSE_CLICKHOUSE_PASSWORD", WRONG_PASSWORD),
        ],
    ];
    for mut env in refused {
        env.extend([
            ("HOOKHOUSE_CLICKHOUSE_CA_FILE", ca.as_str()),
            ("HOOKHOUSE_LOG", "trace"),
        ]);
        let data = tempfile::tempdir().expect("temp dir");
        let gateway = GatewayProcess::spawn(&ch, data.path(), &env);
        let answer = post(&client, &gateway.url(&credentials.query()), "{}").await;
        let id = answer.request_id().to_string();
        let refused = eventually(Duration::from_secs(10), || async {
            gateway.log().contains("Wrong password for user hook")
        })
        .await;
        assert!(refused, "the log does not say why:\n{}", gateway.log());
        assert_eq!(landed(&ch, "events", &id).await, 0);
        assert_hidden(&gateway.log(), &[PASSWORD, WRONG_PASSWORD]);
    }
}
