//! The ingest contract (CONTRACT §1–§4, §6) against a real ClickHouse and a gateway on port 0.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde::Deserialize;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct StoredRow {
    pipeline_id: u64,
    __kdd_request_id: String,
    __kdd_request_unix_timestamp: f64,
    __kdd_requester_key: String,
    __kdd_request_body: String,
}

async fn stored(ch: &ClickhouseServer, table: &str) -> Vec<StoredRow> {
    let sql = format!(
        "SELECT pipeline_id, __kdd_request_id, __kdd_request_unix_timestamp, __kdd_requester_key, __kdd_request_body \
         FROM hookhouse.{table} ORDER BY __kdd_request_unix_timestamp"
    );
    admin(ch)
        .fetch_all::<StoredRow>(&sql)
        .await
        .expect("fetch rows")
}

async fn count(ch: &ClickhouseServer, table: &str) -> u64 {
    ch.count(&format!("SELECT count() FROM hookhouse.{table}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_in_the_contracts_order() {
    let ch = ClickhouseServer::start();
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    let (key, token) = (KEY_SHAPE, "abcdefgh12345678");
    let ok = format!("pipeline_id=1&key={key}&token={token}");
    let cases: Vec<(String, &[u8], &str)> = vec![
        (String::new(), b"{}", "NO_PARAMETERS_PROVIDED"),
        ("foo=bar".into(), b"{}", "NO_PARAMETERS_PROVIDED"),
        (
            "pipeline_id=&key=&token=".into(),
            b"",
            "NO_PARAMETERS_PROVIDED",
        ),
        (
            format!("key={key}&token={token}"),
            b"{}",
            "MISSING_PARAMETER: pipeline_id",
        ),
        (
            format!("pipeline_id=1&token={token}"),
            b"{}",
            "MISSING_PARAMETER: key",
        ),
        (
            format!("pipeline_id=1&key={key}"),
            b"{}",
            "MISSING_PARAMETER: token",
        ),
        (
            format!("pipeline_id=x&key={key}"),
            b"",
            "MISSING_PARAMETER: token",
        ),
        (
            format!("pipeline_id=0&key={key}&token={token}"),
            b"{}",
            "INVALID_PARAMETER: pipeline_id",
        ),
        (
            "pipeline_id=-3&key=nope&token=x".to_string(),
            b"",
            "INVALID_PARAMETER: pipeline_id",
        ),
        (
            "pipeline_id=1&key=nope&token=x".to_string(),
            b"",
            "INVALID_PARAMETER: key",
        ),
        (
            format!("pipeline_id=1&key={}&token={token}", key.replace('-', "")),
            b"{}",
            "INVALID_PARAMETER: key",
        ),
        (
            format!("pipeline_id=1&key={key}&token=short"),
            b"{}",
            "INVALID_PARAMETER: token",
        ),
        (
            format!("pipeline_id=1&key={key}&token=has-hyphens-in-it"),
            b"{}",
            "INVALID_PARAMETER: token",
        ),
        (
            format!("{ok}&pipeline_id=2"),
            b"{}",
            "INVALID_PARAMETER: pipeline_id",
        ),
        (
            format!("{ok}&token={token}"),
            b"{}",
            "INVALID_PARAMETER: token",
        ),
        (ok.clone(), b"", "NO_BODY_PROVIDED"),
        (ok.clone(), b" \n\t ", "NO_BODY_PROVIDED"),
        (ok.clone(), b"{", "INVALID_BODY"),
        (ok.clone(), b"not json", "INVALID_BODY"),
        (ok.clone(), b"{\"a\":1} trailing", "INVALID_BODY"),
        (ok.clone(), b"\"\xff\xfe\"", "INVALID_BODY"),
        (ok.clone(), b"{\"nul\":\"\0\"}", "INVALID_BODY"),
    ];
    for (query, body, error) in cases {
        let answer = post(&client, &gw.url(&format!("?{query}")), body.to_vec()).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, error),
            "?{query} with {:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(answer.json["success"], false);
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let answer = post(&client, &gw.url(&format!("?{ok}")), deep).await;
    assert_eq!((answer.status, answer.error()), (400, "INVALID_BODY"));
    // Nothing refused reaches the log, hence ClickHouse.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count(&ch, "events").await + count(&ch, "rejected").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_get_405_with_allow_and_other_paths_404() {
    let ch = ClickhouseServer::start();
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), gw.url("?pipeline_id=1"))
            .send()
            .await
            .unwrap();
        let answer = answer(response).await;
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.allow.as_deref(), Some("POST"), "{method}");
        if method != reqwest::Method::HEAD {
            assert_eq!(answer.error(), "METHOD_NOT_ALLOWED");
        }
    }
    let answer = post(
        &client,
        &format!("http://127.0.0.1:{}/elsewhere", gw.port),
        "{}",
    )
    .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_while_reading() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "limits").await;
    let gw = Gateway::start(&ch, |s| s.max_body_bytes = 1024).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    let at_limit = format!("\"{}\"", "a".repeat(1022));
    assert_eq!(post(&client, &url, at_limit).await.status, 200);
    let over = format!("\"{}\"", "a".repeat(1023));
    let answer = post(&client, &url, over.clone()).await;
    assert_eq!((answer.status, answer.error()), (413, "PAYLOAD_TOO_LARGE"));
    // No Content-Length: the limit holds while the chunks arrive.
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 100])));
    let response = client
        .post(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    // A declared length over the limit is refused before the parameters are looked at.
    let answer = post(&client, &gw.url(""), over).await;
    assert_eq!(answer.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_land_byte_for_byte_with_the_answered_id_and_timestamp() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "bytes").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    let mut bodies: Vec<Vec<u8>> = vec![
        "{\"emoji\":\"😀\",\"accents\":\"ção\",\"cjk\":\"漢字\"}".into(),
        b"{\"escaped\":\"\\u00e7\\n\\t\\\"quoted\\\" \\\\ \\/\"}".to_vec(),
        b"[1, 2.5e10, -0, null, true, \"x\"]".to_vec(),
        b"42".to_vec(),
        b"\"just a string\"".to_vec(),
        b"null".to_vec(),
        b"  {\"spaced\" :  1 }  \n".to_vec(),
        b"{\"big\":123456789012345678901234567890,\"dup\":1,\"dup\":2}".to_vec(),
    ];
    bodies.push(format!("{{\"mib\":\"{}\"}}", "x".repeat(1024 * 1024 - 10)).into_bytes());
    let payloads =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/payloads/github");
    if let Ok(dir) = std::fs::read_dir(&payloads) {
        for entry in dir.flatten() {
            if entry.path().extension().is_some_and(|e| e == "json") {
                bodies.push(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut answered = Vec::new();
    for body in &bodies {
        let answer = post(&client, &url, body.clone()).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        let ts = answer.json["data"]["__kdd_request_unix_timestamp"]
            .as_f64()
            .unwrap();
        answered.push((answer.request_id().to_string(), ts, body.clone()));
    }
    let expected = answered.len() as u64;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "events").await == expected
        })
        .await
    );
    let rows = stored(&ch, "events").await;
    for (id, ts, body) in &answered {
        let row = rows
            .iter()
            .find(|r| &r.__kdd_request_id == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(row.__kdd_request_body.as_bytes(), &body[..], "body of {id}");
        assert_eq!(
            row.__kdd_request_unix_timestamp.to_bits(),
            ts.to_bits(),
            "timestamp of {id}"
        );
        assert_eq!(row.__kdd_requester_key, creds.key);
        assert_eq!(row.pipeline_id, creds.pipeline_id);
    }
    // The pipeline's view shows the same rows with exactly Kondado's four columns.
    let columns = ch
        .query(&format!(
            "DESCRIBE TABLE hookhouse.pipeline_{}",
            creds.pipeline_id
        ))
        .await;
    let names: Vec<&str> = columns
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "__kdd_request_id",
            "__kdd_request_unix_timestamp",
            "__kdd_requester_key",
            "__kdd_request_body"
        ]
    );
    let in_view = ch
        .count(&format!(
            "SELECT count() FROM hookhouse.pipeline_{}",
            creds.pipeline_id
        ))
        .await;
    assert_eq!(in_view, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_success_answer_has_kondados_shape() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "shape").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..50 {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let response = client
            .post(gw.url(&creds.query()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "application/json");
        let answer = answer(response).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json["success"], true);
        let data = answer.json["data"].as_object().unwrap();
        assert_eq!(data.len(), 2);
        let id = answer.request_id();
        assert!(
            id.len() == 20 && id.bytes().all(|b| b.is_ascii_lowercase()),
            "{id}"
        );
        assert!(ids.insert(id.to_string()), "ids are unique");
        let ts = data["__kdd_request_unix_timestamp"].as_f64().unwrap();
        assert!(
            ts >= before - 0.001 && ts <= before + 5.0,
            "{ts} vs {before}"
        );
    }
    // Content-Type is not checked (senders get it wrong), and unknown parameters are ignored.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "image/png",
    ] {
        let url = gw.url(&format!("{}&utm_source=crm&foo", creds.query()));
        let response = client
            .post(url)
            .header("content-type", content_type)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{content_type}");
    }
    // Sub-millisecond precision: the answers carry more than three decimals.
    let stamps: Vec<f64> = stored_timestamps(&ch, 53).await;
    assert!(
        stamps.iter().any(|t| (t * 1000.0).fract().abs() > 1e-6),
        "{stamps:?}"
    );
}

async fn stored_timestamps(ch: &ClickhouseServer, expected: u64) -> Vec<f64> {
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(ch, "events").await == expected
        })
        .await
    );
    stored(ch, "events")
        .await
        .into_iter()
        .map(|r| r.__kdd_request_unix_timestamp)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_queryable_within_two_seconds_with_default_batching() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "lag").await;
    let gw = Gateway::start(&ch, |s| s.batch_max_wait_ms = 1000).await;
    let client = reqwest::Client::new();
    // Warm up: the first batch also loads credentials.
    post(&client, &gw.url(&creds.query()), "{}").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "events").await == 1
        })
        .await
    );
    for round in 0..3 {
        let answer = post(
            &client,
            &gw.url(&creds.query()),
            format!("{{\"round\":{round}}}"),
        )
        .await;
        let acked = Instant::now();
        let id = answer.request_id().to_string();
        let sql = format!("SELECT count() FROM hookhouse.events WHERE __kdd_request_id = '{id}'");
        assert!(
            eventually(Duration::from_secs(5), || async {
                ch.count(&sql).await == 1
            })
            .await
        );
        let lag = acked.elapsed();
        assert!(
            lag <= Duration::from_secs(2),
            "round {round}: landed after {lag:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rejection_reason_lands_in_rejected_never_in_events() {
    let ch = ClickhouseServer::start();
    let mine = setup_pipeline(&ch, "mine").await;
    let other = setup_pipeline(&ch, "other").await;
    let admin = admin(&ch);
    let disabled = hookhouse::clickhouse::store::create_pipeline(&admin, "disabled")
        .await
        .unwrap();
    let (_, all_key, all_token) = hookhouse::clickhouse::store::create_token(&admin, "all", &[])
        .await
        .unwrap();
    hookhouse::clickhouse::store::set_pipeline_active(&admin, disabled.pipeline_id, false)
        .await
        .unwrap();
    let (_, revoked_key, revoked_token) =
        hookhouse::clickhouse::store::create_token(&admin, "gone", &[])
            .await
            .unwrap();
    hookhouse::clickhouse::store::revoke_token(&admin, &revoked_key.to_string())
        .await
        .unwrap();
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    let q = |pipeline: u64, key: &str, token: &str| {
        gw.url(&format!("?pipeline_id={pipeline}&key={key}&token={token}"))
    };
    let cases = [
        (q(mine.pipeline_id, KEY_SHAPE, &mine.token), "UNKNOWN_KEY"),
        (
            q(mine.pipeline_id, &mine.key, "wrongtoken123"),
            "WRONG_TOKEN",
        ),
        (
            q(
                mine.pipeline_id,
                &revoked_key.to_string(),
                revoked_token.reveal(),
            ),
            "REVOKED_KEY",
        ),
        (q(999, &mine.key, &mine.token), "UNKNOWN_PIPELINE"),
        (
            q(
                disabled.pipeline_id,
                &all_key.to_string(),
                all_token.reveal(),
            ),
            "PIPELINE_DISABLED",
        ),
        (
            q(other.pipeline_id, &mine.key, &mine.token),
            "KEY_NOT_ALLOWED",
        ),
    ];
    let mut expected = Vec::new();
    for (url, reason) in &cases {
        let answer = post(&client, url, format!("{{\"reason\":\"{reason}\"}}")).await;
        assert_eq!(
            answer.status, 200,
            "an answer never depends on the credentials"
        );
        expected.push((answer.request_id().to_string(), *reason));
    }
    let good = post(
        &client,
        &q(other.pipeline_id, &all_key.to_string(), all_token.reveal()),
        "{}",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "rejected").await == 6 && count(&ch, "events").await == 1
        })
        .await
    );
    let rows = ch
        .query("SELECT __kdd_request_id, reason, __kdd_request_body FROM hookhouse.rejected")
        .await;
    for (id, reason) in expected {
        let line = rows
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("{id} not rejected: {rows}"));
        assert_eq!(line, format!("{id}\t{reason}\t{{\"reason\":\"{reason}\"}}"));
    }
    assert_eq!(
        ch.query("SELECT __kdd_request_id FROM hookhouse.events")
            .await
            .trim(),
        good.request_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_works_at_once_and_a_revoked_key_stops_within_10_seconds() {
    let ch = ClickhouseServer::start();
    let first = setup_pipeline(&ch, "first").await;
    let gw = Gateway::start(&ch, |s| s.batch_max_wait_ms = 50).await;
    // A second gateway on the same ClickHouse: a revocation must reach every one.
    let other = Gateway::start(&ch, |s| s.batch_max_wait_ms = 50).await;
    let client = reqwest::Client::new();
    // Warm the writer's view of credentials, then create a token right before using it.
    post(&client, &gw.url(&first.query()), "{}").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "events").await == 1
        })
        .await
    );
    let admin = admin(&ch);
    let (_, key, token) =
        hookhouse::clickhouse::store::create_token(&admin, "fresh", &[first.pipeline_id])
            .await
            .unwrap();
    let fresh = format!(
        "?pipeline_id={}&key={key}&token={}",
        first.pipeline_id,
        token.reveal()
    );
    let answer = post(&client, &gw.url(&fresh), "{\"fresh\":true}").await;
    let id = answer.request_id().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "events").await + count(&ch, "rejected").await == 2
        })
        .await
    );
    assert_eq!(
        ch.count(&format!(
            "SELECT count() FROM hookhouse.events WHERE __kdd_request_id = '{id}'"
        ))
        .await,
        1,
        "a fresh token is accepted at once"
    );
    // Both gateways know the key as valid before it is revoked.
    post(&client, &other.url(&fresh), "{\"warm\":true}").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "events").await == 3
        })
        .await
    );

    hookhouse::clickhouse::store::revoke_token(&admin, &key.to_string())
        .await
        .unwrap();
    let revoked_at = Instant::now();
    let mut sent = Vec::new();
    while revoked_at.elapsed() < Duration::from_secs(11) {
        for gateway in [&gw, &other] {
            let answer = post(&client, &gateway.url(&fresh), "{}").await;
            sent.push((revoked_at.elapsed(), answer.request_id().to_string()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total = 3 + sent.len() as u64;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "events").await + count(&ch, "rejected").await == total
        })
        .await
    );
    let rejected = ch
        .query("SELECT __kdd_request_id FROM hookhouse.rejected WHERE reason = 'REVOKED_KEY'")
        .await;
    for (after, id) in &sent {
        if *after >= Duration::from_secs(10) {
            assert!(
                rejected.contains(id.as_str()),
                "sent {after:?} after revocation, still accepted"
            );
        }
    }
    let first_rejected = sent
        .iter()
        .find(|(_, id)| rejected.contains(id.as_str()))
        .map(|(after, _)| *after);
    assert!(
        first_rejected.is_some_and(|t| t < Duration::from_secs(10)),
        "{first_rejected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_case_insensitive_and_stored_lowercase() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "case").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let query = format!(
        "?token={}&key={}&pipeline_id={}",
        creds.token,
        creds.key.to_uppercase(),
        creds.pipeline_id
    );
    let answer = post(&reqwest::Client::new(), &gw.url(&query), "[]").await;
    assert_eq!(answer.status, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&ch, "events").await == 1
        })
        .await
    );
    assert_eq!(
        ch.query("SELECT __kdd_requester_key FROM hookhouse.events")
            .await
            .trim(),
        creds.key
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_say_which_check_fails() {
    let mut ch = ClickhouseServer::start();
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("http://127.0.0.1:{}/{path}", gw.port))
            .send()
    };
    assert_eq!(answer(get("healthz").await.unwrap()).await.status, 200);
    // Ready at once; ClickHouse is reported once the first ping has come back.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let ready = answer(get("readyz").await.unwrap()).await;
            ready.status == 200 && ready.json["checks"]["clickhouse"] != "not checked yet"
        })
        .await
    );
    let ready = answer(get("readyz").await.unwrap()).await;
    for check in ["log", "shutdown", "clickhouse", "writer"] {
        assert_eq!(ready.json["checks"][check], "ok", "{ready:?}");
    }
    ch.stop();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let ready = answer(get("readyz").await.unwrap()).await;
            ready.json["checks"]["clickhouse"]
                .as_str()
                .is_some_and(|c| c.starts_with("unreachable: "))
        })
        .await
    );
    let ready = answer(get("readyz").await.unwrap()).await;
    assert_eq!(
        ready.status, 200,
        "ClickHouse down does not fail readiness: {ready:?}"
    );
    let health = answer(get("healthz").await.unwrap()).await;
    assert_eq!(health.status, 200, "nor liveness: {health:?}");
    assert_eq!(health.json["checks"]["writer"], "ok");
    ch.restart();
    assert!(
        eventually(Duration::from_secs(5), || async {
            answer(get("readyz").await.unwrap()).await.json["checks"]["clickhouse"] == "ok"
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_accepts_while_clickhouse_is_down_and_migrates_once_it_answers() {
    let mut ch = ClickhouseServer::start();
    ch.stop();
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    let query = format!("?pipeline_id=1&key={KEY_SHAPE}&token=abcdefgh12345678");
    let answer = post(&client, &gw.url(&query), "{\"while\":\"down\"}").await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    ch.restart();
    // The schema appears, and the request lands (as UNKNOWN_KEY: no token exists).
    assert!(
        eventually(Duration::from_secs(20), || async {
            ch.query("EXISTS TABLE hookhouse.rejected").await.trim() == "1"
                && count(&ch, "rejected").await == 1
        })
        .await
    );
}
