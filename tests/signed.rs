//! Signed senders end to end (CONTRACT §8), against a real ClickHouse: every scheme's valid
//! deliveries land with their event type and delivery id; forged, stale and unsigned ones get
//! 401 at the edge, or `rejected` as INVALID_SIGNATURE from the writer; rotation, filters,
//! redeliveries, Slack's challenge, replay, and secrets that never show.
//!
//! Signatures here are computed with the `hmac` crate directly, as each sender documents them;
//! the published vectors are checked in `src/signing`'s unit tests.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::CliEnv as Env;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A sender, as its docs describe how it signs and names a delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sender {
    Github,
    Stripe,
    Shopify,
    Slack,
    Standard,
    Kakiyo,
}

const SENDERS: [Sender; 6] = [
    Sender::Github,
    Sender::Stripe,
    Sender::Shopify,
    Sender::Slack,
    Sender::Standard,
    Sender::Kakiyo,
];

impl Sender {
    fn scheme(self) -> &'static str {
        match self {
            Sender::Github => "github",
            Sender::Stripe => "stripe",
            Sender::Shopify => "shopify",
            Sender::Slack => "slack",
            Sender::Standard => "standard",
            Sender::Kakiyo => "kakiyo",
        }
    }

    fn secret(self) -> &'static str {
        match self {
            Sender::Standard => "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            Sender::Stripe => "whsec_test_secret",
            _ => "It's a Secret to Everybody",
        }
    }

    fn timed(self) -> bool {
        matches!(self, Sender::Stripe | Sender::Slack | Sender::Standard)
    }

    /// A delivery of `event` with id `id`: its body and the headers that name it (not the
    /// signature).
    fn delivery(self, event: &str, id: &str) -> (String, Vec<(String, String)>) {
        let h = |n: &str, v: &str| (n.to_string(), v.to_string());
        match self {
            Sender::Github => (
                r#"{"action":"opened","number":1}"#.into(),
                vec![h("X-GitHub-Event", event), h("X-GitHub-Delivery", id)],
            ),
            Sender::Stripe => (
                format!(r#"{{"id":"{id}","object":"event","type":"{event}"}}"#),
                vec![],
            ),
            Sender::Shopify => (
                r#"{"id":820982911946154500,"email":"jon@example.com"}"#.into(),
                vec![h("X-Shopify-Topic", event), h("X-Shopify-Webhook-Id", id)],
            ),
            Sender::Slack => (
                format!(
                    r#"{{"type":"event_callback","event_id":"{id}","event":{{"type":"{event}","text":"hi"}}}}"#
                ),
                vec![],
            ),
            Sender::Standard => (
                format!(r#"{{"type":"{event}","data":{{"email":"test@example.com"}}}}"#),
                vec![h("webhook-id", id)],
            ),
            Sender::Kakiyo => (
                format!(r#"{{"event":"{event}","data":{{"prospect":"p1"}}}}"#),
                vec![],
            ),
        }
    }

    /// The signature headers for `body` signed with `secret` at Unix time `t`.
    fn sign(
        self,
        secret: &str,
        body: &[u8],
        t: u64,
        headers: &[(String, String)],
    ) -> Vec<(String, String)> {
        let ts = t.to_string();
        match self {
            Sender::Github => vec![(
                "X-Hub-Signature-256".into(),
                format!("sha256={}", hex::encode(mac(secret.as_bytes(), &[body]))),
            )],
            Sender::Stripe => vec![(
                "Stripe-Signature".into(),
                format!(
                    "t={ts},v1={}",
                    hex::encode(mac(secret.as_bytes(), &[ts.as_bytes(), b".", body]))
                ),
            )],
            Sender::Shopify => vec![(
                "X-Shopify-Hmac-SHA256".into(),
                b64(&mac(secret.as_bytes(), &[body])),
            )],
            Sender::Slack => vec![
                ("X-Slack-Request-Timestamp".into(), ts.clone()),
                (
                    "X-Slack-Signature".into(),
                    format!(
                        "v0={}",
                        hex::encode(mac(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]))
                    ),
                ),
            ],
            Sender::Standard => {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(secret.trim_start_matches("whsec_"))
                    .expect("a whsec_ secret");
                let id = headers
                    .iter()
                    .find(|(n, _)| n == "webhook-id")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                vec![
                    ("webhook-timestamp".into(), ts.clone()),
                    (
                        "webhook-signature".into(),
                        format!(
                            "v1,{}",
                            b64(&mac(
                                &key,
                                &[id.as_bytes(), b".", ts.as_bytes(), b".", body]
                            ))
                        ),
                    ),
                ]
            }
            Sender::Kakiyo => vec![(
                "X-Kakiyo-Signature".into(),
                hex::encode(mac(secret.as_bytes(), &[body])),
            )],
        }
    }

    /// A secret of the right shape that is not this sender's.
    fn other_secret(self) -> &'static str {
        match self {
            Sender::Standard => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            _ => "not the secret",
        }
    }
}

/// What the signed-sender tests add to the CLI's environment.
impl Env {
    fn secret_file(&self, name: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{secret}\n")).expect("secret file");
        path
    }

    fn verify(&self, pipeline: u64, scheme: &str, secret: &str) {
        let file = self.secret_file(&format!("{scheme}-{pipeline}.secret"), secret);
        self.ok(&[
            "pipeline",
            "verify",
            "--id",
            &pipeline.to_string(),
            "--scheme",
            scheme,
            "--secret-file",
            file.to_str().expect("utf-8 path"),
        ]);
    }
}

async fn gateway(ch: &ClickhouseServer, env: &Env) -> Gateway {
    let key = env.key_file();
    Gateway::start(ch, |s| {
        s.secrets_key_file = Some(key);
        s.credentials_refresh_ms = 200;
    })
    .await
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    headers: &[(String, String)],
) -> Answer {
    let mut request = client.post(url).body(body.to_string());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    answer(request.send().await.expect("gateway answers")).await
}

/// A signed delivery of `sender`, signed with `secret` at `t`.
fn signed(
    sender: Sender,
    secret: &str,
    event: &str,
    id: &str,
    t: u64,
) -> (String, Vec<(String, String)>) {
    let (body, mut headers) = sender.delivery(event, id);
    let signature = sender.sign(secret, body.as_bytes(), t, &headers);
    headers.extend(signature);
    (body, headers)
}

/// Rows of `table` for a pipeline: request id, event type, delivery id (and reason).
async fn rows(ch: &ClickhouseServer, table: &str, pipeline: u64) -> Vec<Vec<String>> {
    let reason = if table == "rejected" { ", reason" } else { "" };
    ch.query(&format!(
        "SELECT __kdd_request_id, event_type, delivery_id{reason} FROM hookhouse.{table} \
         WHERE pipeline_id = {pipeline} AND __kdd_request_body != '{PROBE}' \
         ORDER BY __kdd_request_unix_timestamp"
    ))
    .await
    .lines()
    .map(|l| l.split('\t').map(String::from).collect())
    .collect()
}

async fn wait_rows(
    ch: &ClickhouseServer,
    table: &str,
    pipeline: u64,
    n: usize,
) -> Vec<Vec<String>> {
    let mut last = Vec::new();
    for _ in 0..200 {
        last = rows(ch, table, pipeline).await;
        if last.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

fn event_of(sender: Sender) -> &'static str {
    match sender {
        Sender::Github => "issues",
        Sender::Stripe => "invoice.paid",
        Sender::Shopify => "orders/create",
        Sender::Slack => "message",
        Sender::Standard => "user.created",
        Sender::Kakiyo => "linkedin.message.received",
    }
}

/// An unsigned request that tells whether the edge knows a pipeline's settings. Those sent
/// before it does are answered 200 and land in `rejected` (the writer knows): [`rows`] leaves
/// them out.
const PROBE: &str = r#"{"probe":true}"#;

/// Waits until the gateway's edge refuses an unsigned request to `url` (it has loaded the
/// pipeline's settings).
async fn until_edge_knows(client: &reqwest::Client, url: &str) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(client, url, PROBE, &[]).await.status == 401
        })
        .await,
        "the edge never loaded the pipeline's signing settings"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_scheme_lands_valid_deliveries_and_refuses_forged_ones_at_the_edge() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let mut pipelines = Vec::new();
    for sender in SENDERS {
        let creds = setup_pipeline(&ch, sender.scheme()).await;
        env.verify(creds.pipeline_id, sender.scheme(), sender.secret());
        pipelines.push((sender, creds));
    }
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    for (sender, creds) in &pipelines {
        let (sender, url) = (*sender, gw.url(&creds.query()));
        until_edge_knows(&client, &url).await;
        let t = now();
        let id = format!("{}-delivery-1", sender.scheme());
        let (body, headers) = signed(sender, sender.secret(), event_of(sender), &id, t);
        let ok = send(&client, &url, &body, &headers).await;
        assert_eq!(ok.status, 200, "{sender:?}: {ok:?}");

        // Tampered body, wrong secret, no signature, and (for timed schemes) a stale one.
        let mut forged = vec![
            (
                "tampered",
                body.replace('1', "2")
                    .replace("hi", "ho")
                    .replace("jon", "jim")
                    .replace("data", "dat4"),
                headers.clone(),
            ),
            (
                "wrong secret",
                body.clone(),
                signed(sender, sender.other_secret(), event_of(sender), &id, t).1,
            ),
            (
                "missing",
                body.clone(),
                sender.delivery(event_of(sender), &id).1,
            ),
        ];
        if sender.timed() {
            forged.push((
                "stale",
                body.clone(),
                signed(sender, sender.secret(), event_of(sender), &id, t - 400).1,
            ));
            forged.push((
                "from the future",
                body.clone(),
                signed(sender, sender.secret(), event_of(sender), &id, t + 400).1,
            ));
        }
        for (what, body, headers) in forged {
            let refused = send(&client, &url, &body, &headers).await;
            assert_eq!(
                (refused.status, refused.error()),
                (401, "INVALID_SIGNATURE"),
                "{sender:?} {what}"
            );
        }
        let landed = wait_rows(&ch, "events", creds.pipeline_id, 1).await;
        let want_id = if sender == Sender::Kakiyo {
            String::new()
        } else {
            id.clone()
        };
        assert_eq!(
            landed,
            vec![vec![
                ok.request_id().to_string(),
                event_of(sender).to_string(),
                want_id
            ]],
            "{sender:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (sender, creds) in &pipelines {
        assert_eq!(
            rows(&ch, "events", creds.pipeline_id).await.len(),
            1,
            "{sender:?}"
        );
        assert!(
            rows(&ch, "rejected", creds.pipeline_id).await.is_empty(),
            "{sender:?}: a 401 lands nowhere"
        );
    }
    // Headers are kept, lowercase, and the credential headers are not.
    let github = &pipelines[0].1;
    let (body, mut headers) = signed(
        Sender::Github,
        Sender::Github.secret(),
        "push",
        "hd-1",
        now(),
    );
    headers.push(("Authorization".into(), "Bearer sekrit-authz".into()));
    headers.push(("Cookie".into(), "session=sekrit-cookie".into()));
    let ok = send(&client, &gw.url(&github.query()), &body, &headers).await;
    assert_eq!(ok.status, 200);
    wait_rows(&ch, "events", github.pipeline_id, 2).await;
    let stored = ch
        .query(&format!(
            "SELECT headers FROM hookhouse.events WHERE __kdd_request_id = '{}'",
            ok.request_id()
        ))
        .await;
    assert!(stored.contains(r#""x-github-event":"push""#), "{stored}");
    assert!(stored.contains(r#""x-github-delivery":"hd-1""#), "{stored}");
    assert!(
        !stored.contains("sekrit"),
        "credential headers kept: {stored}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_checks_again_what_the_edge_could_not_know() {
    let mut ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "stripe").await;
    env.verify(creds.pipeline_id, "stripe", Sender::Stripe.secret());
    // The gateway starts while ClickHouse is down: it knows no pipeline, and accepts all.
    ch.stop();
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    let t = now();
    let (good, good_headers) = signed(
        Sender::Stripe,
        Sender::Stripe.secret(),
        "invoice.paid",
        "evt_good",
        t,
    );
    let (forged, forged_headers) = signed(
        Sender::Stripe,
        "whsec_wrong",
        "invoice.paid",
        "evt_forged",
        t,
    );
    let (_, stale_headers) = signed(
        Sender::Stripe,
        Sender::Stripe.secret(),
        "invoice.paid",
        "evt_good",
        t - 600,
    );
    let a = send(&client, &url, &good, &good_headers).await;
    let b = send(&client, &url, &forged, &forged_headers).await;
    let c = send(&client, &url, &good, &stale_headers).await;
    let d = send(&client, &url, &good, &[]).await;
    for answer in [&a, &b, &c, &d] {
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    ch.restart();
    let rejected = wait_rows(&ch, "rejected", creds.pipeline_id, 3).await;
    let events = wait_rows(&ch, "events", creds.pipeline_id, 1).await;
    assert_eq!(
        events,
        vec![vec![
            a.request_id().to_string(),
            "invoice.paid".into(),
            "evt_good".into()
        ]]
    );
    let mut rejected: Vec<(String, String)> = rejected
        .into_iter()
        .map(|r| (r[0].clone(), r[3].clone()))
        .collect();
    rejected.sort();
    let mut want: Vec<(String, String)> = [&b, &c, &d]
        .iter()
        .map(|x| (x.request_id().to_string(), "INVALID_SIGNATURE".to_string()))
        .collect();
    want.sort();
    assert_eq!(rejected, want);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_lets_both_secrets_pass_then_only_the_new_one() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "rotating").await;
    let id = creds.pipeline_id.to_string();
    env.verify(creds.pipeline_id, "github", "old secret");
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    until_edge_knows(&client, &url).await;
    let status = |secret: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (body, headers) = signed(Sender::Github, secret, "push", &uuid(), now());
            send(&client, &url, &body, &headers).await.status
        }
    };
    assert_eq!(status("old secret").await, 200);
    assert_eq!(status("new secret").await, 401);

    let new = env.secret_file("new.secret", "new secret");
    env.ok(&[
        "pipeline",
        "verify",
        "--id",
        &id,
        "--add-secret-file",
        new.to_str().unwrap(),
    ]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            status("new secret").await == 200
        })
        .await
    );
    assert_eq!(
        status("old secret").await,
        200,
        "both pass during the overlap"
    );

    let third = env.secret_file("third.secret", "third secret");
    let (code, _, err) = env.cli(&[
        "pipeline",
        "verify",
        "--id",
        &id,
        "--add-secret-file",
        third.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("two active secrets"), "{err}");

    env.ok(&["pipeline", "verify", "--id", &id, "--remove-oldest-secret"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            status("old secret").await == 401
        })
        .await
    );
    assert_eq!(status("new secret").await, 200);
    let (code, _, err) = env.cli(&["pipeline", "verify", "--id", &id, "--remove-oldest-secret"]);
    assert_eq!(code, 1);
    assert!(err.contains("--scheme none"), "{err}");

    env.ok(&["pipeline", "verify", "--id", &id, "--scheme", "none"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(&client, &url, "{}", &[]).await.status == 200
        })
        .await
    );
    gw.stop().await;
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn filtered_events_are_rejected_and_replay_moves_them_exactly_once() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "kakiyo").await;
    let id = creds.pipeline_id.to_string();
    env.verify(creds.pipeline_id, "kakiyo", "your_webhook_secret");
    env.ok(&["pipeline", "events", "--id", &id, "linkedin.message.*"]);
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    until_edge_knows(&client, &url).await;
    let mut answers = Vec::new();
    for event in [
        "linkedin.message.received",
        "linkedin.invitation.sent",
        "linkedin.message.sent",
        "prospect.unqualified",
    ] {
        let (body, headers) = signed(Sender::Kakiyo, "your_webhook_secret", event, "", now());
        let answer = send(&client, &url, &body, &headers).await;
        assert_eq!(answer.status, 200, "{event}: {answer:?}");
        answers.push(answer.request_id().to_string());
    }
    let events = wait_rows(&ch, "events", creds.pipeline_id, 2).await;
    let rejected = wait_rows(&ch, "rejected", creds.pipeline_id, 2).await;
    let types = |rows: &[Vec<String>]| rows.iter().map(|r| r[1].clone()).collect::<Vec<_>>();
    assert_eq!(
        types(&events),
        ["linkedin.message.received", "linkedin.message.sent"]
    );
    assert_eq!(
        types(&rejected),
        ["linkedin.invitation.sent", "prospect.unqualified"]
    );
    assert!(
        rejected.iter().all(|r| r[3] == "EVENT_FILTERED"),
        "{rejected:?}"
    );

    // Widen the filter and replay, twice: each request moves once.
    env.ok(&["pipeline", "events", "--id", &id, "linkedin.*"]);
    let first: serde_json::Value =
        serde_json::from_str(&env.ok(&["rejected", "replay", "--pipeline", &id, "--json"]))
            .expect("json");
    assert_eq!(first["moved"], 1, "{first}");
    assert_eq!(first["still_rejected"]["EVENT_FILTERED"], 1, "{first}");
    let second: serde_json::Value =
        serde_json::from_str(&env.ok(&["rejected", "replay", "--pipeline", &id, "--json"]))
            .expect("json");
    assert_eq!(second["moved"], 0, "{second}");
    let counts = landed_counts(&ch).await;
    let in_events = ch
        .count(&format!(
            "SELECT count() FROM hookhouse.events WHERE __kdd_request_id = '{}'",
            answers[1]
        ))
        .await;
    assert_eq!(in_events, 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            ch.count(&format!(
                "SELECT count() FROM hookhouse.rejected WHERE __kdd_request_id = '{}'",
                answers[1]
            ))
            .await
                == 0
        })
        .await,
        "the moved request left `rejected`"
    );
    assert_eq!(counts.get(&answers[3]), Some(&1));
    // A replay cut off between its insert and its delete, after which the filter was narrowed
    // again: the request is in both tables, and the next replay takes it out of `rejected`
    // though it would not pass today.
    ch.query(&format!(
        "INSERT INTO hookhouse.events SELECT pipeline_id, __kdd_request_id, __kdd_request_unix_timestamp, \
         __kdd_requester_key, __kdd_request_body, received_at, event_type, delivery_id, headers \
         FROM hookhouse.rejected WHERE __kdd_request_id = '{}'",
        answers[3]
    ))
    .await;
    let third: serde_json::Value =
        serde_json::from_str(&env.ok(&["rejected", "replay", "--pipeline", &id, "--json"]))
            .expect("json");
    assert_eq!(third["moved"], 0, "{third}");
    assert!(third["already_in_events"].as_u64() >= Some(1), "{third}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            landed_counts(&ch).await.get(&answers[3]) == Some(&1)
        })
        .await,
        "a request in both tables after a cut-off replay leaves `rejected`"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_lands_in_rejected_across_restarts_and_gateways() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "github").await;
    env.verify(creds.pipeline_id, "github", "s3cret");
    let client = reqwest::Client::new();
    let deliver = |gw: &Gateway, delivery: &str| {
        let (client, url, delivery) =
            (client.clone(), gw.url(&creds.query()), delivery.to_string());
        async move {
            let (body, headers) = signed(Sender::Github, "s3cret", "push", &delivery, now());
            let answer = send(&client, &url, &body, &headers).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            answer.request_id().to_string()
        }
    };
    let first = gateway(&ch, &env).await;
    let original = deliver(&first, "d-1").await;
    wait_rows(&ch, "events", creds.pipeline_id, 1).await;
    // Twice in one batch: the first wins.
    let (a, b) = tokio::join!(deliver(&first, "d-2"), deliver(&first, "d-2"));
    wait_rows(&ch, "events", creds.pipeline_id, 2).await;
    let data = first.stop().await;
    // The same gateway after a restart, and another gateway with its own data folder.
    let restarted = Gateway::start_in(&ch, data, |s| {
        s.secrets_key_file = Some(env.key_file());
    })
    .await;
    let again = deliver(&restarted, "d-1").await;
    let other = gateway(&ch, &env).await;
    let elsewhere = deliver(&other, "d-1").await;
    let rejected = wait_rows(&ch, "rejected", creds.pipeline_id, 3).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let events = rows(&ch, "events", creds.pipeline_id).await;
    let ids = |rows: &[Vec<String>]| {
        let mut ids: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
        ids.sort();
        ids
    };
    let (winner, loser) = if events.iter().any(|r| r[0] == a) {
        (a, b)
    } else {
        (b, a)
    };
    let mut want_events = vec![original, winner];
    want_events.sort();
    let mut want_rejected = vec![again, elsewhere, loser];
    want_rejected.sort();
    assert_eq!(ids(&events), want_events);
    assert_eq!(ids(&rejected), want_rejected);
    assert!(rows(&ch, "rejected", creds.pipeline_id)
        .await
        .iter()
        .all(|r| r[3] == "DUPLICATE_DELIVERY"));
    restarted.stop().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_url_verification_is_answered_with_its_challenge() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "slack").await;
    env.verify(
        creds.pipeline_id,
        "slack",
        "8f742231b10e8888abcd99yyyzzz85a5",
    );
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    until_edge_knows(&client, &url).await;
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let headers = Sender::Slack.sign(
        "8f742231b10e8888abcd99yyyzzz85a5",
        body.as_bytes(),
        now(),
        &[],
    );
    let answer = send(&client, &url, body, &headers).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json,
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let unsigned = send(&client, &url, body, &[]).await;
    assert_eq!(unsigned.status, 401);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn githubs_own_payloads_land_byte_for_byte_with_their_event_names() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/payloads/github");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!(
            "the shared payloads are beside the checkout: {}",
            dir.display()
        );
    };
    let mut payloads: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let event = name.split('.').next().unwrap_or_default().to_string();
            (event, std::fs::read(&p).expect("payload"))
        })
        .collect();
    payloads.sort();
    assert!(payloads.len() >= 50, "{} payloads", payloads.len());
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "github").await;
    env.verify(creds.pipeline_id, "github", "It's a Secret to Everybody");
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    until_edge_knows(&client, &url).await;
    let mut want = Vec::new();
    for (event, body) in &payloads {
        let signature = hex::encode(mac(b"It's a Secret to Everybody", &[body]));
        let answer = answer(
            client
                .post(&url)
                .header("Content-Type", "application/json")
                .header("X-GitHub-Event", event.as_str())
                .header("X-GitHub-Delivery", uuid())
                .header("X-Hub-Signature-256", format!("sha256={signature}"))
                .body(body.clone())
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert_eq!(answer.status, 200, "{event}: {answer:?}");
        want.push((
            answer.request_id().to_string(),
            event.clone(),
            hex::encode(body),
        ));
    }
    want.sort();
    let mut have: Vec<(String, String, String)> = Vec::new();
    for _ in 0..200 {
        have = ch
            .query(&format!(
                "SELECT __kdd_request_id, event_type, lower(hex(__kdd_request_body)) FROM hookhouse.events \
                 WHERE pipeline_id = {} ORDER BY __kdd_request_id",
                creds.pipeline_id
            ))
            .await
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect();
        if have.len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(have.len(), want.len());
    assert!(have == want, "an event type or a body differs");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_show_in_output_logs_metrics_or_tables() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "secretive").await;
    let id = creds.pipeline_id.to_string();
    let secret = "Sup3rS3cretSigningValue";
    let file = env.secret_file("s.secret", secret);
    let mut outputs = Vec::new();
    for args in [
        vec![
            "pipeline",
            "verify",
            "--id",
            &id,
            "--scheme",
            "github",
            "--secret-file",
            file.to_str().unwrap(),
        ],
        vec![
            "pipeline",
            "verify",
            "--id",
            &id,
            "--add-secret-file",
            file.to_str().unwrap(),
            "--json",
        ],
        vec!["pipeline", "list"],
        vec!["pipeline", "list", "--json"],
    ] {
        let (code, out, err) = env.cli(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        outputs.push(out + &err);
    }
    let listed: serde_json::Value = serde_json::from_str(&outputs[3]).expect("json");
    assert_eq!(listed[0]["scheme"], "github");
    assert_eq!(listed[0]["secrets"], 2);
    let data = tempfile::tempdir().expect("temp dir");
    let key = env.key_file();
    let mut gw = GatewayProcess::spawn(
        &ch,
        data.path(),
        &[
            ("HOOKHOUSE_SECRETS_KEY_FILE", key.to_str().unwrap()),
            ("HOOKHOUSE_LOG", "trace"),
            ("HOOKHOUSE_CREDENTIALS_REFRESH_MS", "200"),
        ],
    );
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    until_edge_knows(&client, &url).await;
    let (body, headers) = signed(Sender::Github, secret, "push", "x", now());
    assert_eq!(send(&client, &url, &body, &headers).await.status, 200);
    let (body, headers) = signed(Sender::Github, "wrong", "push", "y", now());
    assert_eq!(send(&client, &url, &body, &headers).await.status, 401);
    wait_rows(&ch, "events", creds.pipeline_id, 1).await;
    outputs.push(scrape(gw.port).await);
    outputs.push(
        ch.query("SELECT * FROM hookhouse.pipelines FORMAT TSV")
            .await,
    );
    outputs.push(ch.query("SELECT * FROM hookhouse.events FORMAT TSV").await);
    gw.kill9();
    outputs.push(gw.log());
    for (i, text) in outputs.iter().enumerate() {
        assert!(
            !text.contains(secret),
            "output {i} holds the secret: {text}"
        );
        assert!(!text.contains(SECRETS_KEY), "output {i} holds the key");
    }
    assert!(outputs[5].contains("v1:"), "the secrets are stored sealed");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_says_clearly_what_is_wrong() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "p").await;
    let id = creds.pipeline_id.to_string();
    let file = env.secret_file("s", "x");
    let file = file.to_str().unwrap();
    // No key file: one line naming the setting.
    let (code, _, err) = hookhouse_cli(
        &[
            "pipeline",
            "verify",
            "--id",
            &id,
            "--scheme",
            "github",
            "--secret-file",
            file,
        ],
        &[("HOOKHOUSE_CLICKHOUSE_URL", &ch.url())],
    );
    assert_eq!(code, 1);
    assert!(err.contains("HOOKHOUSE_SECRETS_KEY_FILE"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for (args, says) in [
        (
            vec!["--scheme", "gitlab", "--secret-file", file],
            "unknown signing scheme",
        ),
        (vec!["--scheme", "github"], "--secret-file"),
        (vec!["--scheme", "hmac", "--secret-file", file], "--header"),
        (
            vec![
                "--scheme",
                "hmac",
                "--secret-file",
                file,
                "--header",
                "X-Sig",
                "--algorithm",
                "md5",
                "--encoding",
                "hex",
            ],
            "md5",
        ),
        (
            vec!["--scheme", "github", "--secret-file", file, "--header", "X"],
            "hmac only",
        ),
        (
            vec!["--add-secret-file", file],
            "does not verify signatures yet",
        ),
        (
            vec!["--scheme", "github", "--secret-file", "/nonexistent/secret"],
            "/nonexistent/secret",
        ),
    ] {
        let mut full = vec!["pipeline", "verify", "--id", &id];
        full.extend(args.iter().copied());
        let (code, _, err) = env.cli(&full);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) = env.cli(&["pipeline", "events", "--id", &id, "bad pattern"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = env.cli(&["pipeline", "events", "--id", &id, "push"]);
    assert_eq!(code, 1, "no scheme names events yet");
    assert!(err.contains("reject every request"), "{err}");
    env.ok(&["pipeline", "events", "--id", &id, "*"]);
    let (code, _, err) = env.cli(&["rejected", "replay", "--pipeline", &id, "--reason", "NOPE"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("INVALID_SIGNATURE"),
        "lists the reasons: {err}"
    );
    let (code, _, err) = env.cli(&[
        "rejected",
        "replay",
        "--pipeline",
        &id,
        "--since",
        "yesterday",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("RFC 3339"), "{err}");
    // hmac, properly: a generic sender with its own header, event field and id header.
    env.ok(&[
        "pipeline",
        "verify",
        "--id",
        &id,
        "--scheme",
        "hmac",
        "--secret-file",
        file,
        "--header",
        "X-Sig",
        "--algorithm",
        "sha256",
        "--encoding",
        "base64",
        "--prefix",
        "sha256=",
        "--event-field",
        "meta.kind",
        "--id-header",
        "X-Id",
    ]);
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    until_edge_knows(&client, &url).await;
    let body = r#"{"meta":{"kind":"order.created"},"n":1}"#;
    let headers = vec![
        (
            "X-Sig".to_string(),
            format!("sha256={}", b64(&mac(b"x", &[body.as_bytes()]))),
        ),
        ("X-Id".to_string(), "id-77".to_string()),
    ];
    let answer = send(&client, &url, body, &headers).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let landed = wait_rows(&ch, "events", creds.pipeline_id, 1).await;
    assert_eq!(
        landed,
        vec![vec![
            answer.request_id().to_string(),
            "order.created".into(),
            "id-77".into()
        ]]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_key_verifying_pipelines_are_rejected_then_replayed_with_it() {
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "nokey").await;
    let id = creds.pipeline_id.to_string();
    env.verify(creds.pipeline_id, "github", "gh");
    // A gateway without HOOKHOUSE_SECRETS_KEY_FILE cannot open the secret: it accepts, and its
    // writer rejects, loudly; nothing reaches `events` unverified.
    let gw = Gateway::start(&ch, |s| s.credentials_refresh_ms = 200).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    let (good, good_headers) = signed(Sender::Github, "gh", "push", "g-1", now());
    let (bad, bad_headers) = signed(Sender::Github, "not gh", "push", "g-2", now());
    let a = send(&client, &url, &good, &good_headers).await;
    let b = send(&client, &url, &bad, &bad_headers).await;
    assert_eq!((a.status, b.status), (200, 200));
    let rejected = wait_rows(&ch, "rejected", creds.pipeline_id, 2).await;
    assert!(
        rejected.iter().all(|r| r[3] == "INVALID_SIGNATURE"),
        "{rejected:?}"
    );
    assert!(rows(&ch, "events", creds.pipeline_id).await.is_empty());
    gw.stop().await;
    // With the key, a replay moves the one that was signed right.
    let out = env.ok(&[
        "rejected",
        "replay",
        "--pipeline",
        &id,
        "--reason",
        "INVALID_SIGNATURE",
    ]);
    assert!(out.contains("1 moved"), "{out}");
    let events = rows(&ch, "events", creds.pipeline_id).await;
    assert_eq!(
        events,
        vec![vec![
            a.request_id().to_string(),
            "push".into(),
            "g-1".into()
        ]]
    );
    let out = env.ok(&["rejected", "replay", "--pipeline", &id]);
    assert!(out.contains("0 moved"), "{out}");
    assert_eq!(rows(&ch, "events", creds.pipeline_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_2_adds_its_columns_to_tables_that_hold_data() {
    let ch = ClickhouseServer::start();
    // Tables as migration 1 made them, holding a row, and one column of migration 2 already
    // added (a migration cut off half-way).
    ch.query("CREATE DATABASE hookhouse").await;
    let v1 = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/0001_tables.sql"),
    )
    .expect("migration 1");
    let v1: String = v1
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in v1.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        let statement = statement.trim_end_matches(';').replace("{db}", "hookhouse");
        ch.query(&statement).await;
    }
    ch.query("CREATE TABLE hookhouse.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version").await;
    ch.query("INSERT INTO hookhouse.schema_migrations VALUES (1, 'tables', now())")
        .await;
    ch.query("INSERT INTO hookhouse.events (pipeline_id, __kdd_request_id, __kdd_request_unix_timestamp, __kdd_requester_key, __kdd_request_body) VALUES (1, 'aaaaaaaaaaaaaaaaaaaa', 1700000000.5, 'k', '{}')").await;
    ch.query("INSERT INTO hookhouse.pipelines VALUES (1, 'old', 1, now(), 1)")
        .await;
    ch.query("ALTER TABLE hookhouse.events ADD COLUMN event_type String DEFAULT ''")
        .await;
    let run = || {
        hookhouse_cli(
            &["migrate", "--json"],
            &[("HOOKHOUSE_CLICKHOUSE_URL", &ch.url())],
        )
    };
    let (code, out, err) = run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[2,3]"), "{out}");
    let (code, out, _) = run();
    assert_eq!(code, 0);
    assert!(out.contains("[]"), "a second run does nothing: {out}");
    assert_eq!(
        ch.query("SELECT __kdd_request_id, event_type, delivery_id, headers FROM hookhouse.events")
            .await
            .trim(),
        "aaaaaaaaaaaaaaaaaaaa\t\t\t{}"
    );
    let (code, out, err) = hookhouse_cli(
        &["pipeline", "list", "--json"],
        &[("HOOKHOUSE_CLICKHOUSE_URL", &ch.url())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""scheme":"none""#), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_hold_over_gzip_and_githubs_form_encoding_and_replay_keeps_them() {
    use std::io::Write;
    let ch = ClickhouseServer::start();
    let env = Env::new(&ch);
    let creds = setup_pipeline(&ch, "github-form").await;
    let id = creds.pipeline_id.to_string();
    env.verify(creds.pipeline_id, "github", "form secret");
    // Only `push` at first: the form delivery of `issues` is filtered, then replayed.
    env.ok(&["pipeline", "events", "--id", &id, "push"]);
    let gw = gateway(&ch, &env).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    until_edge_knows(&client, &url).await;
    let json = r#"{"action":"opened","issue":{"title":"a & b = c"}}"#;
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", json)
        .finish();
    let signature = |bytes: &[u8]| format!("sha256={}", hex::encode(mac(b"form secret", &[bytes])));
    let post = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut request = client.post(&url).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            answer(request.send().await.expect("answer")).await
        }
    };
    // GitHub's default: a form, signed over the form's bytes.
    let form_answer = post(
        form.clone().into_bytes(),
        vec![
            ("Content-Type", "application/x-www-form-urlencoded".into()),
            ("X-GitHub-Event", "issues".into()),
            ("X-GitHub-Delivery", "form-1".into()),
            ("X-Hub-Signature-256", signature(form.as_bytes())),
        ],
    )
    .await;
    assert_eq!(form_answer.status, 200, "{form_answer:?}");
    // Gzip: signed over the decoded bytes.
    let push = r#"{"ref":"refs/heads/main"}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(push.as_bytes()).expect("gzip");
    let gzipped = gz.finish().expect("gzip");
    let gzip_answer = post(
        gzipped.clone(),
        vec![
            ("Content-Encoding", "gzip".into()),
            ("X-GitHub-Event", "push".into()),
            ("X-GitHub-Delivery", "gz-1".into()),
            ("X-Hub-Signature-256", signature(push.as_bytes())),
        ],
    )
    .await;
    assert_eq!(gzip_answer.status, 200, "{gzip_answer:?}");
    // Signed over the compressed bytes instead: not what senders do, refused.
    let wrong = post(
        gzipped.clone(),
        vec![
            ("Content-Encoding", "gzip".into()),
            ("X-Hub-Signature-256", signature(&gzipped)),
        ],
    )
    .await;
    assert_eq!(wrong.status, 401);

    let events = wait_rows(&ch, "events", creds.pipeline_id, 1).await;
    assert_eq!(
        events,
        vec![vec![
            gzip_answer.request_id().to_string(),
            "push".into(),
            "gz-1".into()
        ]]
    );
    let rejected = wait_rows(&ch, "rejected", creds.pipeline_id, 1).await;
    assert_eq!(rejected[0][3], "EVENT_FILTERED");
    let kept = ch
        .query(&format!(
            "SELECT __kdd_request_body, body_as_sent FROM hookhouse.rejected WHERE __kdd_request_id = '{}'",
            form_answer.request_id()
        ))
        .await;
    // TSV: neither holds a tab, newline or backslash.
    assert_eq!(kept.trim_end(), format!("{json}\t{form}"));
    // Replayed with `*`, the form delivery's signature is checked again over its form bytes.
    env.ok(&["pipeline", "events", "--id", &id, "*"]);
    let out = env.ok(&[
        "rejected",
        "replay",
        "--pipeline",
        &id,
        "--reason",
        "EVENT_FILTERED",
    ]);
    assert!(out.contains("1 moved"), "{out}");
    let body = ch
        .query(&format!(
            "SELECT __kdd_request_body FROM hookhouse.events WHERE __kdd_request_id = '{}'",
            form_answer.request_id()
        ))
        .await;
    assert_eq!(body.trim_end(), json);
    gw.stop().await;
}

#[test]
fn a_bad_secrets_key_file_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let short = dir.path().join("short.key");
    std::fs::write(&short, "c2hvcnQ=\n").expect("key file");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not base64 at all!\n").expect("key file");
    let missing = dir.path().join("missing.key");
    for file in [&short, &garbage, &missing] {
        let (code, _, err) = hookhouse_cli(
            &["serve"],
            &[
                ("HOOKHOUSE_SECRETS_KEY_FILE", file.to_str().expect("utf-8")),
                (
                    "HOOKHOUSE_DATA_DIR",
                    dir.path().join("data").to_str().expect("utf-8"),
                ),
            ],
        );
        assert_eq!(code, 1, "{}: {err}", file.display());
        assert!(err.contains("HOOKHOUSE_SECRETS_KEY_FILE"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            !err.contains("c2hvcnQ"),
            "the key's content is not printed: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_batch_of_long_delivery_ids_is_asked_for_whatever_they_hold() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "many").await;
    ch.query(&format!(
        "INSERT INTO hookhouse.events (pipeline_id, __kdd_request_id, __kdd_request_unix_timestamp, \
         __kdd_requester_key, __kdd_request_body, delivery_id) VALUES ({}, 'aaaaaaaaaaaaaaaaaaaa', {}, 'k', '{{}}', 'id-00017-{}?')",
        creds.pipeline_id,
        now(),
        "x".repeat(60)
    ))
    .await;
    // A full batch: 50,000 ids of 71 bytes, about 3.6 MiB of SQL, over 18.16's default
    // max_query_size; and each with a `?`, which the crate would take for a placeholder.
    let ids: Vec<String> = (0..50_000)
        .map(|i| format!("id-{i:05}-{}?", "x".repeat(60)))
        .collect();
    let asked: Vec<(u64, &str)> = ids
        .iter()
        .map(|id| (creds.pipeline_id, id.as_str()))
        .collect();
    let delivery = hookhouse::clickhouse::Delivery::new(admin(&ch), "test".into());
    let found = delivery
        .redeliveries(&asked, (now() - 3600) as u32)
        .await
        .expect("the lookup is accepted");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].delivery_id, ids[17]);
}
