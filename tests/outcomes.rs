//! What an operator sees of each request's outcome: rejections, refusals, a ClickHouse outage
//! and the shutdown in the logs (never a token), and `hookhouse request show`.

mod common;

use std::time::Duration;

use common::*;
use hookhouse::clickhouse::store;
use serde_json::Value;

fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn with_message<'a>(lines: &'a [Value], part: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(part)))
        .collect()
}

async fn wait_for_log(gw: &GatewayProcess, part: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        gw.log().contains(part)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_refusals_outages_and_shutdown_are_logged() {
    let mut ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "logged").await;
    let admin = admin(&ch);
    let off = store::create_pipeline(&admin, "off").await.unwrap();
    store::set_pipeline_active(&admin, off.pipeline_id, false)
        .await
        .unwrap();
    let (_, everywhere_key, everywhere_token) = store::create_token(&admin, "everywhere", &[])
        .await
        .unwrap();
    let (_, revoked_key, revoked_token) = store::create_token(&admin, "gone", &[]).await.unwrap();
    store::revoke_token(&admin, &revoked_key.to_string())
        .await
        .unwrap();
    let wrong_token = "Wr0ngTokenWr0ngTokenWr0ngToken";
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::spawn(
        &ch,
        &tmp.path().join("gw"),
        &[
            ("HOOKHOUSE_LOG_FORMAT", "json"),
            ("HOOKHOUSE_SHUTDOWN_GRACE_SECS", "3"),
        ],
    );
    let client = reqwest::Client::new();
    let p = creds.pipeline_id;
    let mut sent = Vec::new();
    for (query, reason) in [
        (
            format!("?pipeline_id={p}&key={}&token={wrong_token}", creds.key),
            "WRONG_TOKEN",
        ),
        (
            format!("?pipeline_id={p}&key={KEY_SHAPE}&token={wrong_token}"),
            "UNKNOWN_KEY",
        ),
        (
            format!(
                "?pipeline_id={}&key={everywhere_key}&token={}",
                off.pipeline_id,
                everywhere_token.reveal()
            ),
            "PIPELINE_DISABLED",
        ),
        (
            format!(
                "?pipeline_id={p}&key={revoked_key}&token={}",
                revoked_token.reveal()
            ),
            "REVOKED_KEY",
        ),
    ] {
        let answer = post(&client, &gw.url(&query), "{}").await;
        assert_eq!(answer.status, 200);
        sent.push((answer.request_id().to_string(), reason));
    }
    let invalid = post(&client, &gw.url(&creds.query()), "{not json").await;
    assert_eq!((invalid.status, invalid.error()), (400, "INVALID_BODY"));
    assert!(
        eventually(Duration::from_secs(20), || async {
            ch.count("SELECT count() FROM hookhouse.rejected").await == 4
        })
        .await
    );
    assert!(wait_for_log(&gw, "REVOKED_KEY").await, "{}", gw.log());

    // A flood of wrong tokens: one line a second per reason, the rest counted.
    let flood = std::time::Instant::now();
    for _ in 0..30 {
        let query = format!("?pipeline_id={p}&key={}&token={wrong_token}", creds.key);
        post(&client, &gw.url(&query), "{}").await;
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            ch.count("SELECT count() FROM hookhouse.rejected").await == 34
        })
        .await
    );
    let flood_secs = flood.elapsed().as_secs() as usize;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let query = format!("?pipeline_id={p}&key={}&token={wrong_token}", creds.key);
    post(&client, &gw.url(&query), "{}").await;

    // ClickHouse lost, back, and what waited delivered.
    ch.stop();
    assert!(
        wait_for_log(&gw, "ClickHouse is unreachable").await,
        "{}",
        gw.log()
    );
    let waited = post(&client, &gw.url(&creds.query()), "{\"waited\":1}").await;
    assert_eq!(waited.status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ch.restart();
    assert!(
        wait_for_log(&gw, "ClickHouse is back").await,
        "{}",
        gw.log()
    );
    assert!(
        wait_for_log(&gw, "the log is drained").await,
        "{}",
        gw.log()
    );

    // At shutdown, what is left in the log is said.
    ch.stop();
    assert!(
        eventually(Duration::from_secs(20), || async {
            gw.log().matches("ClickHouse is unreachable").count() == 2
        })
        .await
    );
    post(&client, &gw.url(&creds.query()), "{\"left\":1}").await;
    assert_eq!(
        gw.signal_and_wait(libc::SIGTERM, Duration::from_secs(20)),
        Some(0)
    );

    let log = gw.log();
    for secret in [
        wrong_token,
        creds.token.as_str(),
        everywhere_token.reveal(),
        revoked_token.reveal(),
    ] {
        assert!(!log.contains(secret), "a token is in the log:\n{log}");
    }
    let lines = json_lines(&log);
    let rejected = with_message(&lines, "request rejected");
    for (request_id, reason) in &sent {
        let line = rejected
            .iter()
            .find(|l| l["request_id"] == request_id.as_str())
            .unwrap_or_else(|| panic!("no line for {request_id} ({reason}):\n{log}"));
        assert_eq!(line["reason"], *reason, "{line}");
        assert!(
            line["key"].is_string() && line["pipeline_id"].is_u64(),
            "{line}"
        );
    }
    let wrong: Vec<&&Value> = rejected
        .iter()
        .filter(|l| l["reason"] == "WRONG_TOKEN")
        .collect();
    let logged_or_counted: u64 = wrong
        .iter()
        .map(|l| 1 + l["suppressed"].as_u64().unwrap_or_default())
        .sum();
    // The one before the flood, one a second while the flood lands, the one after it.
    assert!(
        wrong.len() <= 3 + flood_secs,
        "{} WRONG_TOKEN lines:\n{log}",
        wrong.len()
    );
    assert_eq!(logged_or_counted, 32, "{log}");

    let refused = with_message(&lines, "request refused with 400 INVALID_BODY");
    assert_eq!(refused.len(), 1, "{log}");
    assert_eq!(refused[0]["error"], "INVALID_BODY");
    let back = with_message(&lines, "ClickHouse is back");
    assert!(back[0]["down_secs"].is_u64(), "{log}");
    // The request that waited (and any still on its way when ClickHouse went): the writer may
    // have sent them before the pinger saw ClickHouse back, so they count from the outage's start.
    let drained = with_message(&lines, "the log is drained");
    assert!(drained[0]["records"].as_u64() >= Some(1), "{log}");
    let stopped = with_message(&lines, "stopped;");
    assert_eq!(stopped.len(), 1, "{log}");
    assert_eq!(stopped[0]["pending"], 1, "{log}");
}

fn show(ch: &ClickhouseServer, data_dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let dir = data_dir.to_str().unwrap();
    let args: Vec<&str> = ["request", "show"]
        .iter()
        .copied()
        .chain(args.iter().copied())
        .collect();
    hookhouse_cli(
        &args,
        &[
            ("HOOKHOUSE_CLICKHOUSE_URL", &ch.url()),
            ("HOOKHOUSE_DATA_DIR", dir),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_show_says_whether_a_request_landed() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "shown").await;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("gw");
    let gw = GatewayProcess::spawn(&ch, &data_dir, &[]);
    let client = reqwest::Client::new();
    let landed = post(&client, &gw.url(&creds.query()), "{}").await;
    let wrong = format!(
        "?pipeline_id={}&key={}&token=Wr0ngTokenWr0ngToken",
        creds.pipeline_id, creds.key
    );
    let rejected = post(&client, &gw.url(&wrong), "{}").await;
    let (landed, rejected) = (landed.request_id(), rejected.request_id());
    assert!(
        eventually(Duration::from_secs(20), || async {
            landed_counts(&ch).await.len() == 2
        })
        .await
    );

    let (code, out, err) = show(&ch, &data_dir, &[landed]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "{landed}: landed in hookhouse.events, pipeline {}",
            creds.pipeline_id
        )),
        "{out}"
    );
    let (code, out, err) = show(&ch, &data_dir, &[rejected, "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            shown["status"].clone(),
            shown["reason"].clone(),
            shown["table"].clone()
        ),
        ("rejected".into(), "WRONG_TOKEN".into(), "rejected".into())
    );
    assert_eq!(shown["key"], creds.key.as_str());

    // ClickHouse down: a new request waits in the log, read beside the running gateway.
    let mut ch = ch;
    ch.stop();
    let pending = post(&client, &gw.url(&creds.query()), "{\"p\":1}").await;
    let pending = pending.request_id().to_string();
    let (code, out, err) = show(&ch, &data_dir, &[&pending, "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "pending", "{out}");
    assert!(err.contains("ClickHouse not asked"), "{err}");
    // A delivered request is not taken for pending though its segment is still there.
    let (code, _, err) = show(&ch, &data_dir, &[landed]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HOOKHOUSE_CLICKHOUSE_URL"), "{err}");
    ch.restart();
    assert!(
        eventually(Duration::from_secs(30), || async {
            landed_counts(&ch).await.contains_key(&pending)
        })
        .await
    );
    let (code, out, _) = show(&ch, &data_dir, &[&pending]);
    assert_eq!(code, 0);
    assert!(out.contains("landed in hookhouse.events"), "{out}");

    let (code, out, err) = show(&ch, &data_dir, &["abcdefghijabcdefghij", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(
        out.trim(),
        r#"{"request_id":"abcdefghijabcdefghij","status":"unknown"}"#
    );
    assert!(
        err.contains("request abcdefghijabcdefghij is unknown"),
        "{err}"
    );
    let (code, out, err) = show(&ch, &data_dir, &["ABC"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("is not a request id: a __kdd_request_id is 20 lowercase letters"),
        "{err}"
    );
}
