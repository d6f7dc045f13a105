//! Metrics and logs: `/metrics` exposes each series and its counters move with traffic; logs
//! are JSON on request and carry the request id.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_series_and_move_with_traffic() {
    let mut ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "metrics").await;
    let tmp = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::spawn(
        &ch,
        &tmp.path().join("gw"),
        &[("HOOKHOUSE_RATE_LIMIT_PER_KEY", "1")],
    );
    let before = scrape(gw.port).await;
    for series in [
        "hookhouse_http_received_bytes_total",
        "hookhouse_rate_limited_total",
        "hookhouse_wal_bytes",
        "hookhouse_wal_pending_records",
        "hookhouse_wal_appended_records_total",
        "hookhouse_wal_over_budget_total",
        "hookhouse_rows_inserted_total",
        "hookhouse_clickhouse_retries_total",
    ] {
        assert!(
            before.lines().any(|l| l.starts_with(&format!("{series} "))),
            "{series} missing at start:\n{before}"
        );
    }
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    // A rate of 1 a second allows a burst of 2 (on a loaded machine a request may take long
    // enough for one more to be allowed: the third or fourth is refused).
    for _ in 0..2 {
        assert_eq!(post(&client, &url, "{\"hello\":1}").await.status, 200);
    }
    let mut refused = false;
    for _ in 0..2 {
        refused = post(&client, &url, "{\"hello\":1}").await.status == 429;
        if refused {
            break;
        }
    }
    assert!(refused, "no 429 past the burst");
    post(&client, &gw.url("?pipeline_id=1"), "{}").await;
    // Another key: this one is over its rate already.
    let wrong = format!(
        "?pipeline_id={}&key={KEY_SHAPE}&token=wrongwrong1",
        creds.pipeline_id
    );
    post(&client, &gw.url(&wrong), "{}").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric_value(&scrape(gw.port).await, "hookhouse_rows_inserted_total", "") >= 2.0
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric_value(
                &scrape(gw.port).await,
                "hookhouse_rows_rejected_total",
                "reason=\"UNKNOWN_KEY\"",
            ) >= 1.0
        })
        .await
    );
    let after = scrape(gw.port).await;
    let moved = [
        ("hookhouse_http_requests_total", "code=\"200\"", 3.0),
        (
            "hookhouse_http_requests_total",
            "error=\"MISSING_PARAMETER: key\"",
            1.0,
        ),
        ("hookhouse_http_requests_total", "code=\"429\"", 1.0),
        ("hookhouse_rate_limited_total", "", 1.0),
        ("hookhouse_http_received_bytes_total", "", 2.0 * 11.0 + 2.0),
        ("hookhouse_wal_appended_records_total", "", 3.0),
        ("hookhouse_wal_fsync_seconds_count", "", 1.0),
        ("hookhouse_wal_group_records_count", "", 1.0),
        ("hookhouse_batch_rows_count", "", 1.0),
        ("hookhouse_insert_seconds_count", "", 1.0),
        ("hookhouse_landing_lag_seconds_count", "", 3.0),
        ("hookhouse_rows_inserted_total", "", 2.0),
        (
            "hookhouse_rows_rejected_total",
            "reason=\"UNKNOWN_KEY\"",
            1.0,
        ),
        ("hookhouse_credentials_reloads_total", "", 1.0),
    ];
    for (series, labels, at_least) in moved {
        let v = metric_value(&after, series, labels);
        assert!(
            v >= at_least,
            "{series}{{{labels}}} = {v}, expected >= {at_least}\n{after}"
        );
    }
    assert!(
        after.contains("hookhouse_landing_lag_seconds_bucket{le="),
        "histograms have buckets"
    );
    assert!(
        after.contains("# HELP hookhouse_wal_bytes"),
        "series are described"
    );
    // ClickHouse down: errors and retries are counted, pending records and log bytes show.
    ch.stop();
    assert_eq!(
        post(
            &client,
            &gw.url(&format!(
                "?pipeline_id=1&key={KEY_SHAPE}&token=abcdefgh12345678"
            )),
            "{}"
        )
        .await
        .status,
        200
    );
    let counted = eventually(Duration::from_secs(15), || async {
        let text = scrape(gw.port).await;
        metric_value(&text, "hookhouse_clickhouse_retries_total", "") >= 1.0
            && metric_value(
                &text,
                "hookhouse_clickhouse_errors_total",
                "kind=\"network\"",
            ) >= 1.0
            && metric_value(&text, "hookhouse_wal_pending_records", "") >= 1.0
            && metric_value(&text, "hookhouse_wal_bytes", "") > 0.0
    })
    .await;
    assert!(counted, "{}", scrape(gw.port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "logs").await;
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::spawn(
        &ch,
        &tmp.path().join("gw"),
        &[
            ("HOOKHOUSE_LOG_FORMAT", "json"),
            ("HOOKHOUSE_LOG", "hookhouse=debug"),
        ],
    );
    let answer = post(&reqwest::Client::new(), &gw.url(&creds.query()), "{}").await;
    let id = answer.request_id().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            ch.count("SELECT count() FROM hookhouse.events").await == 1
        })
        .await
    );
    assert_eq!(
        gw.signal_and_wait(libc::SIGTERM, Duration::from_secs(20)),
        Some(0)
    );
    let log = gw.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string()),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["request_id"] == id.as_str()),
        "no line carries {id}:\n{log}"
    );
}

#[test]
fn the_grafana_dashboard_charts_every_series() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: String = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .collect::<Vec<_>>()
        .join(" ");
    let events = std::fs::read_to_string(root.join("src/events.rs")).unwrap();
    let series: std::collections::BTreeSet<&str> = events
        .split('"')
        .filter(|s| s.starts_with("hookhouse_") && !s.contains(' '))
        .collect();
    assert!(series.len() >= 20, "{series:?}");
    for name in series {
        assert!(exprs.contains(name), "the dashboard does not chart {name}");
    }
}
