//! The notification tests' receiver (tests/receiver/receiver.py, tests/common/receiver.rs) on its
//! own: it verifies Standard Webhooks signatures with the reference library, records what came,
//! and answers as scripted. Signatures here are made by a few lines of Rust written from the
//! specification, not by hookhouse.

#[path = "common/receiver.rs"]
mod receiver;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use receiver::Receiver;
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// `v1,` + base64(HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")).
fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("a base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("a reqwest client")
}

/// Posts `body` to the receiver at `path` with these Standard Webhooks headers.
async fn post(
    client: &reqwest::Client,
    url: String,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_string())
        .send()
        .await
}

#[test]
fn the_signer_matches_the_published_vector() {
    // The reference libraries' test vector (see shared/research/signing.md).
    assert_eq!(
        sign(
            SECRET,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
}

#[tokio::test]
async fn signed_notifications_verify_and_tampered_ones_do_not() {
    let receiver = Receiver::start().await;
    receiver.control(json!({ "secret": SECRET })).await;
    let client = client(Duration::from_secs(30));
    let timestamp = now();
    let body = r#"{"type":"ping","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
    let signature = sign(SECRET, "msg_one", timestamp, body);

    let response = post(
        &client,
        receiver.url("/hooks/a"),
        "msg_one",
        timestamp,
        &signature,
        body,
    )
    .await
    .expect("the signed notification");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.expect("JSON"),
        json!({ "ok": true })
    );

    // The same signature over another body, and a signature from another secret.
    let tampered = body.replace("ping", "pong");
    post(
        &client,
        receiver.url("/hooks/a"),
        "msg_one",
        timestamp,
        &signature,
        &tampered,
    )
    .await
    .expect("the tampered notification");
    let other_secret = format!("whsec_{}", STANDARD.encode([7u8; 24]));
    let foreign = sign(&other_secret, "msg_two", timestamp, body);
    post(
        &client,
        receiver.url("/hooks/b"),
        "msg_two",
        timestamp,
        &foreign,
        body,
    )
    .await
    .expect("the foreign notification");
    // Stale: the library allows five minutes either way.
    let stale = timestamp - 600;
    let stale_signature = sign(SECRET, "msg_three", stale, body);
    post(
        &client,
        receiver.url("/hooks/a"),
        "msg_three",
        stale,
        &stale_signature,
        body,
    )
    .await
    .expect("the stale notification");

    let received = receiver.received().await;
    assert_eq!(received.len(), 4, "{received:#?}");
    let first = &received[0];
    assert!(first.verified, "{first:#?}");
    assert_eq!(first.verify_error, None);
    assert_eq!(first.path, "/hooks/a");
    assert_eq!(first.webhook_id.as_deref(), Some("msg_one"));
    assert_eq!(
        first.webhook_timestamp.as_deref(),
        Some(timestamp.to_string().as_str())
    );
    assert_eq!(first.webhook_signature.as_deref(), Some(signature.as_str()));
    assert_eq!(
        first.json,
        Some(json!({"type": "ping", "timestamp": "2026-01-01T00:00:00Z", "data": {}}))
    );
    assert_eq!(first.body, body);
    assert_eq!(first.answered, Some(200));
    assert_eq!(
        first.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!((first.at - timestamp as f64).abs() < 60.0, "{first:#?}");

    for (tampered, why) in [
        (&received[1], "No matching signature found"),
        (&received[2], "No matching signature found"),
        (&received[3], "Message timestamp too old"),
    ] {
        assert!(!tampered.verified, "{tampered:#?}");
        assert_eq!(tampered.verify_error.as_deref(), Some(why), "{tampered:#?}");
    }
    assert_eq!(received[1].body, tampered);

    receiver.reset().await;
    assert!(receiver.received().await.is_empty());
}

#[tokio::test]
async fn scripted_answers_come_in_order_then_the_default() {
    let receiver = Receiver::start().await;
    receiver
        .control(json!({ "secret": SECRET, "answers": [500, 410, 200], "retry_after": "1" }))
        .await;
    let client = client(Duration::from_secs(30));
    let mut statuses = Vec::new();
    for n in 0..4 {
        let timestamp = now();
        let id = format!("msg_{n}");
        let body = format!(r#"{{"n":{n}}}"#);
        let response = post(
            &client,
            receiver.url("/"),
            &id,
            timestamp,
            &sign(SECRET, &id, timestamp, &body),
            &body,
        )
        .await
        .expect("a notification");
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().expect("ASCII").to_string());
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.expect("a JSON answer");
        if status == 200 {
            assert_eq!(answer, json!({ "ok": true }));
            assert_eq!(retry_after, None);
        } else {
            assert_eq!(answer, json!({ "error": "scripted" }));
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [500, 410, 200, 200]);

    let received = receiver.received().await;
    let answered: Vec<_> = received.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [Some(500), Some(410), Some(200), Some(200)]);
    assert!(received.iter().all(|r| r.verified), "{received:#?}");
    let ids: Vec<_> = received.iter().map(|r| r.webhook_id.as_deref()).collect();
    assert_eq!(
        ids,
        [Some("msg_0"), Some("msg_1"), Some("msg_2"), Some("msg_3")]
    );

    receiver.control(json!({ "default": 503 })).await;
    let timestamp = now();
    let status = post(
        &client,
        receiver.url("/"),
        "msg_4",
        timestamp,
        &sign(SECRET, "msg_4", timestamp, "{}"),
        "{}",
    )
    .await
    .expect("a notification")
    .status();
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_slow_receiver_is_slow_and_a_hung_one_never_answers() {
    let receiver = Receiver::start().await;
    receiver
        .control(json!({ "secret": SECRET, "delay_ms": 500 }))
        .await;
    let timestamp = now();
    let signature = sign(SECRET, "msg_slow", timestamp, "{}");
    let started = Instant::now();
    let status = post(
        &client(Duration::from_secs(30)),
        receiver.url("/"),
        "msg_slow",
        timestamp,
        &signature,
        "{}",
    )
    .await
    .expect("the slow notification")
    .status();
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(500));

    receiver
        .control(json!({ "delay_ms": 0, "hang": true }))
        .await;
    let started = Instant::now();
    let error = post(
        &client(Duration::from_secs(2)),
        receiver.url("/"),
        "msg_hang",
        timestamp,
        &sign(SECRET, "msg_hang", timestamp, "{}"),
        "{}",
    )
    .await
    .expect_err("a hung receiver never answers");
    assert!(error.is_timeout(), "{error:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let received = receiver.received().await;
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(received[1].webhook_id.as_deref(), Some("msg_hang"));
    assert!(received[1].verified);
    assert_eq!(received[1].answered, None);

    // It answers again once told to, on a fresh connection.
    receiver.control(json!({ "hang": false })).await;
    let status = post(
        &client(Duration::from_secs(30)),
        receiver.url("/"),
        "msg_after",
        timestamp,
        &sign(SECRET, "msg_after", timestamp, "{}"),
        "{}",
    )
    .await
    .expect("the receiver answers again")
    .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_receiver_stops_when_dropped() {
    let receiver = Receiver::start().await;
    let pid = receiver.pid();
    let url = receiver.url("/_received");
    drop(receiver);
    // SAFETY: kill with signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    assert!(!alive, "the receiver (pid {pid}) outlived its Receiver");
    client(Duration::from_secs(5))
        .get(url)
        .send()
        .await
        .expect_err("nothing listens any more");
}
