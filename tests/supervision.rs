//! A batch writer that panics is started again and `/healthz` says so meanwhile (CONTRACT §6).
//!
//! Its own test binary: the fail point that makes the writer panic is global to the process.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_panics_is_reported_by_healthz_and_started_again() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "panics").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();
    let healthz = format!("http://127.0.0.1:{}/healthz", gw.port);
    let send = |n: usize| {
        let (client, url) = (client.clone(), gw.url(&creds.query()));
        async move {
            let mut ids = Vec::new();
            for i in 0..n {
                ids.push(
                    post(&client, &url, format!("{{\"i\":{i}}}"))
                        .await
                        .request_id()
                        .to_string(),
                );
            }
            ids
        }
    };
    let mut acked = send(5).await;
    assert_eq!(
        answer(reqwest::get(&healthz).await.unwrap()).await.status,
        200
    );

    // Reading the log now panics, as a bug in it would.
    fail::cfg("writer::read", "panic").unwrap();
    acked.extend(send(5).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let health = answer(reqwest::get(&healthz).await.unwrap()).await;
            health.status == 503
                && health.json["failing"] == serde_json::json!(["writer"])
                && health.json["checks"]["writer"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("died"))
        })
        .await,
        "liveness fails while the writer is dead"
    );
    let ready = answer(
        reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.port))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ready.status, 200, "the gateway still accepts: {ready:?}");
    acked.extend(send(5).await);

    fail::remove("writer::read");
    assert!(
        eventually(Duration::from_secs(30), || async {
            answer(reqwest::get(&healthz).await.unwrap()).await.status == 200
        })
        .await,
        "a new writer is started"
    );
    let (lost, duplicated, unacked) =
        verify_exactly_once(&ch, &acked, Duration::from_secs(30)).await;
    assert_eq!((lost, duplicated, unacked), (0, 0, 0));
    assert!(metric_value(&scrape(gw.port).await, "hookhouse_writer_deaths_total", "") >= 1.0);
}
