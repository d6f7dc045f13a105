//! The windows a review of the writer and the log found, each shown against a real ClickHouse:
//! every request answered 200 lands exactly once also when an insert outlives its timeout, the
//! checkpoint is lost or damaged, a row cannot be set aside, a table changes under the gateway,
//! a presence check would be huge, two gateways share a folder, a key is flooded with a wrong
//! token, or bodies in flight would take too much memory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn send(client: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let answer = post(client, url, format!("{{\"i\":{i}}}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        ids.push(answer.request_id().to_string());
    }
    ids
}

async fn assert_exactly_once(ch: &ClickhouseServer, acked: &[String]) {
    let (lost, duplicated, unacked) = verify_exactly_once(ch, acked, Duration::from_secs(30)).await;
    assert_eq!(
        (lost, duplicated, unacked),
        (0, 0, 0),
        "lost, duplicated, landed without a 200"
    );
}

async fn counter(port: u16, name: &str) -> f64 {
    metric_value(&scrape(port).await, name, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_that_outlives_its_timeout_is_waited_for_not_sent_twice() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "slow").await;
    // Every insert into `events` takes 3 s, three times the gateway's insert timeout: the
    // client gives up while ClickHouse goes on and lands the rows.
    ch.query("ALTER TABLE hookhouse.events ADD COLUMN slow UInt8 MATERIALIZED sleep(3)")
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::spawn(
        &ch,
        &tmp.path().join("gw"),
        &[
            ("HOOKHOUSE_CLICKHOUSE_INSERT_TIMEOUT_SECS", "1"),
            ("HOOKHOUSE_BATCH_MAX_WAIT_MS", "300"),
        ],
    );
    let client = reqwest::Client::new();
    let acked = send(&client, &gw.url(&creds.query()), 30).await;
    assert_exactly_once(&ch, &acked).await;
    // A second copy would come from an insert sent while the first still ran: give any such
    // late insert time to land before counting again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_exactly_once(&ch, &acked).await;
    assert!(
        counter(gw.port, "hookhouse_rows_already_present_total").await >= 1.0,
        "the insert that timed out landed, and its rows were not sent again"
    );
}

/// Lands `n` requests through a gateway process, then kills it; returns it and the ids.
async fn land_and_kill(
    ch: &ClickhouseServer,
    creds: &Credentials,
    data: &Path,
    env: &[(&str, &str)],
    n: usize,
) -> (GatewayProcess, Vec<String>) {
    let mut gw = GatewayProcess::spawn(ch, data, env);
    let acked = send(&reqwest::Client::new(), &gw.url(&creds.query()), n).await;
    assert_exactly_once(ch, &acked).await;
    gw.kill9();
    (gw, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_checkpoint_is_derived_from_the_log_not_read_as_a_fresh_start() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "lost-checkpoint").await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gw");
    let (mut gw, mut acked) = land_and_kill(&ch, &creds, &data, &[], 30).await;
    // The records are still in the log's active segment; only the checkpoint is gone.
    std::fs::remove_file(data.join("checkpoint")).unwrap();
    gw.relaunch();
    acked.extend(send(&reqwest::Client::new(), &gw.url(&creds.query()), 10).await);
    assert_exactly_once(&ch, &acked).await;
    assert_eq!(
        counter(gw.port, "hookhouse_rows_already_present_total").await,
        30.0,
        "every record the log still held was found in ClickHouse and not sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_checks_what_the_log_held_and_nothing_after() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "damaged-checkpoint").await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gw");
    let (mut gw, mut acked) = land_and_kill(&ch, &creds, &data, &[], 30).await;
    std::fs::write(data.join("checkpoint"), [0xAB; 64]).unwrap();
    gw.relaunch();
    assert!(
        eventually(Duration::from_secs(20), || async {
            counter(gw.port, "hookhouse_presence_checked_rows_total").await == 30.0
        })
        .await,
        "the 30 records the log held are checked"
    );
    let client = reqwest::Client::new();
    for _ in 0..3 {
        acked.extend(send(&client, &gw.url(&creds.query()), 10).await);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_exactly_once(&ch, &acked).await;
    assert_eq!(
        counter(gw.port, "hookhouse_presence_checked_rows_total").await,
        30.0,
        "the 30 records accepted after the restart are not checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_cannot_be_set_aside_keeps_the_checkpoint_before_it() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "undeliverable").await;
    for table in ["events", "rejected"] {
        ch.query(&format!("ALTER TABLE hookhouse.{table} ADD COLUMN guard UInt8 MATERIALIZED throwIf(__kdd_request_body = '\"poison\"')")).await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gw");
    std::fs::create_dir_all(&data).unwrap();
    // A file where the folder should go: undeliverable/ cannot be written, as on a broken disk.
    std::fs::write(data.join("undeliverable"), b"in the way").unwrap();
    let gw = GatewayProcess::spawn(&ch, &data, &[]);
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    let poison = post(&client, &url, "\"poison\"")
        .await
        .request_id()
        .to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending = metric_value(&scrape(gw.port).await, "hookhouse_wal_pending_records", "");
    assert!(
        pending >= 1.0,
        "the checkpoint must not move past a row kept nowhere (pending {pending})"
    );
    std::fs::remove_file(data.join("undeliverable")).unwrap();
    let kept = data.join(format!("undeliverable/{poison}.json"));
    assert!(
        eventually(Duration::from_secs(40), || async { kept.exists() }).await,
        "kept once the disk takes it"
    );
    let line: serde_json::Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    assert_eq!(line["__kdd_request_body"], "\"poison\"");
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric_value(&scrape(gw.port).await, "hookhouse_wal_pending_records", "") == 0.0
        })
        .await
    );
    let after = send(&client, &url, 5).await;
    assert_exactly_once(&ch, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_changed_under_the_gateway_holds_rows_instead_of_rejecting_them() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "drift").await;
    let tmp = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::spawn(&ch, &tmp.path().join("gw"), &[]);
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    let mut acked = send(&client, &url, 5).await;
    assert_exactly_once(&ch, &acked).await;
    // Someone changes a column's type: every row now fails to insert, none by its own fault.
    ch.query("ALTER TABLE hookhouse.events MODIFY COLUMN __kdd_request_unix_timestamp Float32")
        .await;
    acked.extend(send(&client, &url, 20).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            counter(gw.port, "hookhouse_clickhouse_retries_total").await >= 3.0
        })
        .await
    );
    assert_eq!(ch.count("SELECT count() FROM hookhouse.rejected").await, 0);
    assert_eq!(ch.count("SELECT count() FROM hookhouse.events").await, 5);
    ch.query("ALTER TABLE hookhouse.events MODIFY COLUMN __kdd_request_unix_timestamp Float64")
        .await;
    assert_exactly_once(&ch, &acked).await;
    assert_eq!(
        ch.count("SELECT count() FROM hookhouse.events").await,
        25,
        "every row landed in events once the table was mended; none was rejected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_asked_by_the_batch_ids_however_many_rows_share_its_time_span() {
    // The gateway's user may read at most 1,000 rows per query, as operators often set.
    let ch = ClickhouseServer::start_with_users(
        "<capped><max_result_rows>1000</max_result_rows><result_overflow_mode>throw</result_overflow_mode></capped>",
        "<gateway><password></password><networks><ip>127.0.0.1</ip></networks><profile>capped</profile><quota>default</quota></gateway>",
    );
    let creds = setup_pipeline(&ch, "crowded").await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gw");
    let env = [("HOOKHOUSE_CLICKHOUSE_USER", "gateway")];
    let (mut gw, mut acked) = land_and_kill(&ch, &creds, &data, &env, 20).await;
    let client = reqwest::Client::new();
    // Other gateways landed 5,000 rows of the same pipeline in the same seconds.
    ch.query(&format!(
        "INSERT INTO hookhouse.events (pipeline_id, __kdd_request_id, __kdd_request_unix_timestamp, \
         __kdd_requester_key, __kdd_request_body) SELECT {}, concat('other', toString(number)), \
         __kdd_request_unix_timestamp, '', '{{}}' FROM numbers(5000) CROSS JOIN \
         (SELECT any(__kdd_request_unix_timestamp) AS __kdd_request_unix_timestamp FROM hookhouse.events)",
        creds.pipeline_id
    ))
    .await;
    std::fs::write(data.join("checkpoint"), [0xAB; 64]).unwrap();
    gw.relaunch();
    acked.extend(send(&client, &gw.url(&creds.query()), 5).await);
    assert!(
        eventually(Duration::from_secs(20), || async {
            counter(gw.port, "hookhouse_rows_already_present_total").await == 20.0
        })
        .await,
        "the check of the 20 old records answered with at most 20 rows"
    );
    let ours = "SELECT count() FROM hookhouse.events WHERE __kdd_request_id NOT LIKE 'other%'";
    eventually(Duration::from_secs(20), || async {
        ch.count(ours).await >= 25
    })
    .await;
    assert_eq!(ch.count(ours).await, 25);
    let counts = ch
        .query("SELECT count() FROM hookhouse.events GROUP BY __kdd_request_id HAVING count() > 1")
        .await;
    assert_eq!(counts.trim(), "", "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_a_data_folder_in_use_refuses_to_start() {
    let ch = ClickhouseServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gw");
    let first = GatewayProcess::spawn(&ch, &data, &[]);
    let second = run_with_timeout(&ch, &data, Duration::from_secs(20));
    let (code, stderr) = second.expect("the second gateway exits by itself");
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("data folder"))
        .collect();
    assert_eq!(lines.len(), 1, "one line naming the folder: {stderr}");
    assert!(lines[0].contains(&data.display().to_string()), "{stderr}");
    drop(first);
}

/// Runs `hookhouse serve` on `data`; `None` if it is still running after `within` (killed).
fn run_with_timeout(ch: &ClickhouseServer, data: &Path, within: Duration) -> Option<(i32, String)> {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookhouse"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOOKHOUSE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("HOOKHOUSE_DATA_DIR", data)
        .env("HOOKHOUSE_CLICKHOUSE_URL", ch.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = std::fs::read_to_string(log.path()).unwrap();
            return Some((status.code().unwrap_or(-1), stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_with_a_wrong_token_does_not_throttle_the_right_token() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "flooded").await;
    let gw = Gateway::start(&ch, |s| s.rate_limit_per_key = 5).await;
    let client = reqwest::Client::new();
    // Let the edge's view of the credentials load.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let forged = format!(
        "?pipeline_id={}&key={}&token=wrongwrongwrong1",
        creds.pipeline_id, creds.key
    );
    let mut limited = 0;
    for _ in 0..40 {
        if post(&client, &gw.url(&forged), "{}").await.status == 429 {
            limited += 1;
        }
    }
    assert!(
        limited >= 25,
        "the flood itself is limited ({limited} of 40)"
    );
    for _ in 0..5 {
        let answer = post(&client, &gw.url(&creds.query()), "{}").await;
        assert_eq!(
            answer.status, 200,
            "the key's owner is not throttled: {answer:?}"
        );
    }
}

/// Sends the head of a POST declaring `declared` bytes and `sent` bytes of its body, then stalls.
async fn partial_upload(port: u16, query: &str, declared: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n\r\n[\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'a'; sent]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_bytes_in_flight_are_bounded_and_taken_as_they_arrive() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "memory").await;
    let mib: usize = 1024 * 1024;
    let gw = Gateway::start(&ch, |s| {
        s.max_body_bytes = mib as u64;
        s.max_inflight_bytes = mib as u64;
    })
    .await;
    // Declaring a large body holds nothing until it arrives.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(partial_upload(gw.port, &creds.query(), mib - 10, 10).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let small = post(&client, &gw.url(&creds.query()), "{}").await;
    assert_eq!(
        small.status, 200,
        "declared bytes take no budget: {small:?}"
    );
    // Bytes that arrived do: two uploads holding 400 KiB each leave no room for a third.
    held.push(partial_upload(gw.port, &creds.query(), 600 * 1024, 400 * 1024).await);
    held.push(partial_upload(gw.port, &creds.query(), 600 * 1024, 400 * 1024).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let body = format!("[\"{}\"]", "b".repeat(300 * 1024));
    let refused = post(&client, &gw.url(&creds.query()), body.clone()).await;
    assert_eq!(
        (refused.status, refused.error()),
        (503, "SERVICE_UNAVAILABLE"),
        "{refused:?}"
    );
    assert!(refused.retry_after.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || async {
            post(&client, &gw.url(&creds.query()), body.clone())
                .await
                .status
                == 200
        })
        .await,
        "accepted again once the stalled uploads are gone"
    );
}
