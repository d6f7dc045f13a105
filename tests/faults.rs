//! What goes wrong, and what the gateway does about it (issue: nothing acknowledged is lost or
//! duplicated). Each test runs the real binary or an in-process gateway against its own
//! ClickHouse; traffic stays on loopback and every loop is bounded.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits for `expected` ids to land and checks that each is there once and nothing is twice.
async fn assert_landed_exactly_once(ch: &ClickhouseServer, expected: &[String]) {
    let (lost, duplicated, _) = verify_exactly_once(ch, expected, Duration::from_secs(60)).await;
    assert_eq!((lost, duplicated), (0, 0), "of {} expected", expected.len());
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn quarantined(data_dir: &Path) -> Vec<Vec<u8>> {
    match std::fs::read_dir(data_dir.join("quarantine")) {
        Ok(dir) => dir
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A log filled while ClickHouse is down: `n` acknowledged requests, their ids in order, each
/// body carrying a findable marker `rec-<i>-`. The gateway is then stopped with SIGTERM.
struct FilledLog {
    ch: ClickhouseServer,
    gw: GatewayProcess,
    ids: Vec<String>,
    _tmp: tempfile::TempDir,
}

async fn fill_log(n: usize, env: &[(&str, &str)]) -> FilledLog {
    let mut ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "damage").await;
    ch.stop();
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::spawn(&ch, &tmp.path().join("gw"), env);
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let answer = post(
            &client,
            &gw.url(&creds.query()),
            format!(
                "{{\"marker\":\"rec-{i}-\",\"pad\":\"{}\"}}",
                "x".repeat(200)
            ),
        )
        .await;
        assert_eq!(answer.status, 200);
        ids.push(answer.request_id().to_string());
    }
    assert_eq!(
        gw.signal_and_wait(libc::SIGTERM, Duration::from_secs(30)),
        Some(0)
    );
    FilledLog {
        ch,
        gw,
        ids,
        _tmp: tmp,
    }
}

impl FilledLog {
    fn data_dir(&self) -> PathBuf {
        self.gw.data_dir.clone()
    }

    /// Brings ClickHouse back and starts the gateway again on the damaged log.
    async fn recover(&mut self) {
        self.ch.restart();
        self.gw.restart();
        let answer = post(
            &reqwest::Client::new(),
            &self.gw.url(&format!(
                "?pipeline_id=1&key={KEY_SHAPE}&token=abcdefgh12345678"
            )),
            "{}",
        )
        .await;
        assert_eq!(answer.status, 200, "the gateway serves after recovery");
        self.ids.push(answer.request_id().to_string());
    }
}

fn position(bytes: &[u8], needle: &str) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in segment"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_kept_aside_and_counted() {
    let mut log = fill_log(20, &[]).await;
    let newest = segments(&log.data_dir()).pop().unwrap();
    let garbage: Vec<u8> = (0..37u8).map(|b| b.wrapping_mul(97)).collect();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    std::io::Write::write_all(&mut file, &garbage).unwrap();
    log.recover().await;
    assert_landed_exactly_once(&log.ch, &log.ids).await;
    assert!(
        quarantined(&log.data_dir()).contains(&garbage),
        "the torn bytes are kept"
    );
    assert_eq!(
        metric_value(
            &scrape(log.gw.port).await,
            "hookhouse_wal_torn_bytes_total",
            ""
        ),
        37.0
    );
    assert!(log.gw.log().contains("torn tail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checksum_mid_segment_loses_only_that_record() {
    let mut log = fill_log(20, &[]).await;
    let newest = segments(&log.data_dir()).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = position(&bytes, "rec-7-");
    bytes[at] = b'R';
    std::fs::write(&newest, &bytes).unwrap();
    log.recover().await;
    let victim = log.ids.remove(7);
    assert_landed_exactly_once(&log.ch, &log.ids).await;
    assert!(!landed_counts(&log.ch).await.contains_key(&victim));
    assert!(
        quarantined(&log.data_dir())
            .iter()
            .any(|q| q.windows(6).any(|w| w == b"Rec-7-")),
        "the damaged frame is kept"
    );
    assert!(
        metric_value(
            &scrape(log.gw.port).await,
            "hookhouse_wal_damaged_bytes_total",
            ""
        ) > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_older_segment_keeps_what_is_intact() {
    // Small segments: the 30 records spread over several files.
    let mut log = fill_log(30, &[("HOOKHOUSE_WAL_SEGMENT_BYTES", "2048")]).await;
    let all = segments(&log.data_dir());
    assert!(all.len() >= 3, "{all:?}");
    let first = std::fs::read(&all[0]).unwrap();
    let in_first: Vec<usize> = (0..30)
        .filter(|i| {
            first
                .windows(format!("rec-{i}-").len())
                .any(|w| w == format!("rec-{i}-").as_bytes())
        })
        .collect();
    let cut_record = in_first[in_first.len() / 2];
    let cut = position(&first, &format!("rec-{cut_record}-"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&all[0])
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    log.recover().await;
    let lost: Vec<usize> = in_first
        .iter()
        .copied()
        .filter(|i| *i >= cut_record)
        .collect();
    let kept: Vec<String> = log
        .ids
        .iter()
        .enumerate()
        .filter(|(i, _)| !lost.contains(i))
        .map(|(_, id)| id.clone())
        .collect();
    assert_landed_exactly_once(&log.ch, &kept).await;
    assert!(
        !quarantined(&log.data_dir()).is_empty(),
        "the partial frame is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_segment_file_is_harmless() {
    let mut log = fill_log(10, &[]).await;
    let dir = log.data_dir().join("wal");
    std::fs::write(dir.join(format!("{:020}.wal", 5)), b"").unwrap();
    std::fs::write(dir.join(format!("{:020}.wal", 1_000)), b"").unwrap();
    log.recover().await;
    assert_landed_exactly_once(&log.ch, &log.ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_under_load_is_absorbed_by_the_log() {
    let mut ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "outage").await;
    let tmp = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::spawn(
        &ch,
        &tmp.path().join("gw"),
        &[("HOOKHOUSE_RATE_LIMIT_PER_KEY", "0")],
    );
    let client = reqwest::Client::new();
    let url = gw.url(&creds.query());
    let mut acked = Vec::new();
    let send = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut ids = Vec::new();
            for i in 0..n {
                let answer = post(&client, &url, format!("{{\"i\":{i}}}")).await;
                assert_eq!(
                    answer.status, 200,
                    "answers 200 from the log whatever ClickHouse does"
                );
                ids.push(answer.request_id().to_string());
            }
            ids
        }
    };
    acked.extend(send(50).await);
    ch.stop();
    let ready = format!("http://127.0.0.1:{}/readyz", gw.port);
    // Readiness reports the outage but does not fail on it (CONTRACT §6): the log buffers it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let body: serde_json::Value = reqwest::get(&ready).await.unwrap().json().await.unwrap();
            body["checks"]["clickhouse"]
                .as_str()
                .is_some_and(|c| c.starts_with("unreachable"))
        })
        .await
    );
    let answer = reqwest::get(&ready).await.unwrap();
    assert_eq!(
        answer.status(),
        200,
        "ClickHouse down does not fail readiness"
    );
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["writer"], "ok");
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        acked.extend(send(20).await);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric_value(
                &scrape(gw.port).await,
                "hookhouse_clickhouse_retries_total",
                "",
            ) >= 2.0
        })
        .await
    );
    ch.restart();
    acked.extend(send(50).await);
    assert_landed_exactly_once(&ch, &acked).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            let body: serde_json::Value = reqwest::get(&ready).await.unwrap().json().await.unwrap();
            body["checks"]["clickhouse"] == "ok"
        })
        .await
    );
}

/// Posts 1 KiB bodies until the gateway refuses; returns the ids acked and the refusal.
async fn fill_until_refused(url: &str, limit: usize) -> (Vec<String>, Answer) {
    let client = reqwest::Client::new();
    let body = format!("{{\"pad\":\"{}\"}}", "z".repeat(1010));
    let mut acked = Vec::new();
    for _ in 0..limit {
        let answer = post(&client, url, body.clone()).await;
        if answer.status != 200 {
            return (acked, answer);
        }
        acked.push(answer.request_id().to_string());
    }
    panic!("still accepting after {limit} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_disk_budget_new_requests_get_503_until_the_backlog_drains() {
    let mut ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "budget").await;
    ch.stop();
    let tmp = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::spawn(
        &ch,
        &tmp.path().join("gw"),
        &[("HOOKHOUSE_WAL_MAX_BYTES", "200000")],
    );
    let url = gw.url(&creds.query());
    let (acked, refused) = fill_until_refused(&url, 1000).await;
    assert!(acked.len() > 100, "{}", acked.len());
    assert_eq!(
        (refused.status, refused.error()),
        (503, "SERVICE_UNAVAILABLE")
    );
    assert!(refused.retry_after.is_some());
    let client = reqwest::Client::new();
    for body in ["{}", "1", "[]"] {
        assert_eq!(
            post(&client, &url, body).await.status,
            503,
            "full means full, even for a small body"
        );
    }
    let ready: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["failing"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("log")),
        "{ready}"
    );
    let wal_bytes: u64 = segments(&gw.data_dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(wal_bytes <= 200_000, "{wal_bytes}");
    ch.restart();
    // Accepting resumes by itself once the backlog is in ClickHouse.
    assert!(
        eventually(Duration::from_secs(30), || async {
            post(&client, &url, "{}").await.status == 200
        })
        .await
    );
    assert_landed_exactly_once(&ch, &acked).await;
}

/// A tmpfs of `size` mounted for the test, unmounted after.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_means_503_never_a_false_200_and_recovers_by_itself() {
    full_disk(false).await;
}

/// The notification outbox shares the full disk: it must not hold the writer, whose landing is
/// what frees the space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_with_notifications_due_recovers_by_itself() {
    full_disk(true).await;
}

async fn full_disk(with_subscription: bool) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs to fill needs root (CI runs as root)");
        return;
    }
    let mut ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "enospc").await;
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("secrets.key");
    let mut env = Vec::new();
    if with_subscription {
        std::fs::write(&key_file, format!("{}\n", common::SECRETS_KEY)).unwrap();
        let key = hookhouse::signing::SecretsKey::load(&key_file).unwrap();
        let id = hookhouse::notify::message::new_subscription_id();
        let secret = hookhouse::notify::message::new_secret();
        let row = hookhouse::clickhouse::rows::SubscriptionRow {
            subscription_id: id.clone(),
            // Nobody listens there: every notification waits in the outbox.
            url: format!("http://127.0.0.1:{}/", common::free_port()),
            secret: key.seal_for_subscription(&id, &secret),
            pipelines: vec![],
            event_types: vec!["*".into()],
            active: 1,
            disabled_reason: String::new(),
            deleted: 0,
            created_at: 0,
            version: 0,
        };
        hookhouse::clickhouse::store::create_subscription(&common::admin(&ch), row)
            .await
            .unwrap();
        env.push(("HOOKHOUSE_SECRETS_KEY_FILE", key_file.to_str().unwrap()));
    }
    ch.stop();
    let disk = SmallDisk::mount(&tmp.path().join("disk"), "400k").expect("mount a tmpfs (root)");
    let mut gw = GatewayProcess::spawn(&ch, &disk.0.join("gw"), &env);
    let url = gw.url(&creds.query());
    let (acked, refused) = fill_until_refused(&url, 2000).await;
    assert!(acked.len() > 50, "{}", acked.len());
    assert_eq!(
        (refused.status, refused.error()),
        (503, "SERVICE_UNAVAILABLE"),
        "{:?}",
        refused.json
    );
    assert!(refused.retry_after.is_some());
    assert!(gw.log().contains("write-ahead log write or fsync failed"));
    ch.restart();
    let client = reqwest::Client::new();
    let resumed = eventually(Duration::from_secs(30), || async {
        post(&client, &url, "{}").await.status == 200
    })
    .await;
    assert!(
        resumed,
        "{}\n{:?}",
        gw.log()
            .lines()
            .filter(|l| !l.contains("not acknowledged") && !l.contains("No space"))
            .collect::<Vec<_>>()
            .join("\n"),
        std::fs::read_dir(gw.data_dir.join("wal"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect::<Vec<_>>()
    );
    assert_landed_exactly_once(&ch, &acked).await;
    // No corruption: a crash and restart on that disk duplicate nothing.
    gw.restart();
    assert_eq!(post(&client, &url, "{}").await.status, 200);
    assert_landed_exactly_once(&ch, &acked).await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "flood").await;
    let gw = Gateway::start(&ch, |s| s.rate_limit_per_key = 5).await;
    let client = reqwest::Client::new();
    let mut codes = Vec::new();
    let mut limited = None;
    for _ in 0..30 {
        let answer = post(&client, &gw.url(&creds.query()), "{}").await;
        codes.push(answer.status);
        if answer.status == 429 {
            limited = Some(answer);
        }
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert!(
        (10..=12).contains(&ok),
        "a burst of twice the rate passes: {codes:?}"
    );
    let limited = limited.expect("some requests are limited");
    assert_eq!(limited.error(), "RATE_LIMITED");
    assert!(limited
        .retry_after
        .is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // Another key is not held back by this one.
    let other = format!("?pipeline_id=1&key={KEY_SHAPE}&token=abcdefgh12345678");
    assert_eq!(post(&client, &gw.url(&other), "{}").await.status, 200);
}

/// Opens a connection and sends headers and part of a body, then stalls.
async fn stalled_upload(port: u16, query: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{{\"slow\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

async fn read_answer(stream: &mut TcpStream, within: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    let mut text = String::new();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) if !text.is_empty() => break,
            Err(_) => {}
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_on_requests_in_flight_turns_a_flood_into_fast_503s() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "inflight").await;
    let gw = Gateway::start(&ch, |s| s.max_inflight_requests = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stalled_upload(gw.port, &creds.query()).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let answer = post(&reqwest::Client::new(), &gw.url(&creds.query()), "{}").await;
    assert_eq!(
        (answer.status, answer.error()),
        (503, "SERVICE_UNAVAILABLE")
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || async {
            post(&reqwest::Client::new(), &gw.url(&creds.query()), "{}")
                .await
                .status
                == 200
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off_and_do_not_stop_service_for_others() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "slow").await;
    let gw = Gateway::start(&ch, |s| s.body_timeout_secs = 2).await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        stalled.push(stalled_upload(gw.port, &creds.query()).await);
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            post(&client, &gw.url(&creds.query()), "{}").await.status,
            200
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "others are served while 300 uploads stall: {:?}",
        started.elapsed()
    );
    let answer = read_answer(&mut stalled[0], Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_clear_4xx_and_no_panic() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "hostile").await;
    let gw = Gateway::start(&ch, |_| {}).await;
    let raw = |request: Vec<u8>| async move {
        let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        stream.write_all(&request).await.unwrap();
        read_answer(&mut stream, Duration::from_secs(5)).await
    };
    let status = |answer: &str| {
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0)
    };
    let malformed = raw(b"THIS IS NOT HTTP\r\n\r\n".to_vec()).await;
    assert!((400..500).contains(&status(&malformed)), "{malformed:?}");
    let huge_header = format!(
        "POST /{} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        creds.query(),
        "a".repeat(200_000)
    );
    let answer = raw(huge_header.into_bytes()).await;
    assert!((400..500).contains(&status(&answer)), "{answer:?}");
    let bad_length = format!(
        "POST /{} HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n{{}}",
        creds.query()
    );
    assert!((400..500).contains(&status(&raw(bad_length.into_bytes()).await)));
    let client = reqwest::Client::new();
    for body in [
        &b"\xc3\x28"[..],
        b"{\"a\":\"\x00\"}",
        b"\x00",
        b"{\"a\":\"\xed\xa0\x80\"}",
    ] {
        let answer = post(&client, &gw.url(&creds.query()), body.to_vec()).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "INVALID_BODY"),
            "{body:?}"
        );
    }
    let query_junk = gw.url("?pipeline_id=%FF%FE&key=%00&token=%E2%82");
    assert_eq!(
        post(&client, &query_junk, "{}").await.error(),
        "INVALID_PARAMETER: pipeline_id"
    );
    // Still serving.
    assert_eq!(
        post(&client, &gw.url(&creds.query()), "{}").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_order_and_exits_0_losing_nothing() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "shutdown").await;
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::spawn(
        &ch,
        &tmp.path().join("gw"),
        &[
            ("HOOKHOUSE_BATCH_MAX_WAIT_MS", "5000"),
            ("HOOKHOUSE_SHUTDOWN_GRACE_SECS", "8"),
        ],
    );
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for i in 0..40 {
        acked.push(
            post(&client, &gw.url(&creds.query()), format!("{{\"i\":{i}}}"))
                .await
                .request_id()
                .to_string(),
        );
    }
    // An upload in flight when the signal comes is finished and answered.
    let mut in_flight = stalled_upload(gw.port, &creds.query()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(gw.pid() as i32, libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.port))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readiness turns 503 at once");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body["failing"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("shutdown")));
    let late = post(&client, &gw.url(&creds.query()), "{}").await;
    assert_eq!((late.status, late.error()), (503, "SERVICE_UNAVAILABLE"));
    in_flight
        .write_all(format!("\"{}\"}}", "s".repeat(1000 - 8 - 3)).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut in_flight, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let id = answer.split("\"__kdd_request_id\":\"").nth(1).unwrap()[..20].to_string();
    acked.push(id);
    let code = gw.signal_and_wait(0, Duration::from_secs(12));
    assert_eq!(code, Some(0), "{}", gw.log());
    // The writer landed its batch before exiting: the 5 s batch wait was cut short.
    assert_landed_exactly_once(&ch, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_clickhouse_refuses_for_good_go_to_rejected_and_the_rest_lands() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "poison").await;
    // A rule ClickHouse enforces on insert: bodies equal to "poison" are refused.
    ch.query("ALTER TABLE hookhouse.events ADD COLUMN guard UInt8 MATERIALIZED throwIf(__kdd_request_body = '\"poison\"')").await;
    let gw = Gateway::start(&ch, |s| s.batch_max_wait_ms = 500).await;
    let client = reqwest::Client::new();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..40 {
        if i % 13 == 5 {
            bad.push(
                post(&client, &gw.url(&creds.query()), "\"poison\"")
                    .await
                    .request_id()
                    .to_string(),
            );
        } else {
            good.push(
                post(&client, &gw.url(&creds.query()), format!("{{\"i\":{i}}}"))
                    .await
                    .request_id()
                    .to_string(),
            );
        }
    }
    let all: Vec<String> = good.iter().chain(&bad).cloned().collect();
    assert_landed_exactly_once(&ch, &all).await;
    let rejected = ch.query("SELECT __kdd_request_id, reason, __kdd_request_body FROM hookhouse.rejected ORDER BY __kdd_request_id").await;
    let mut expected: Vec<String> = bad
        .iter()
        .map(|id| format!("{id}\tINSERT_FAILED\t\"poison\""))
        .collect();
    expected.sort();
    assert_eq!(rejected.lines().collect::<Vec<_>>(), expected);
    assert_eq!(
        ch.count("SELECT count() FROM hookhouse.events").await,
        good.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_logs_files_or_tables() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "secret").await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gw");
    let mut gw = GatewayProcess::spawn(
        &ch,
        &data,
        &[
            ("HOOKHOUSE_LOG", "trace"),
            ("HOOKHOUSE_RATE_LIMIT_PER_KEY", "2"),
        ],
    );
    let client = reqwest::Client::new();
    let token = creds.token.clone();
    let good = creds.query();
    let urls = [
        good.clone(),
        format!(
            "?pipeline_id={}&key={}&token={token}",
            creds.pipeline_id + 50,
            creds.key
        ),
        format!("?pipeline_id=1&key={KEY_SHAPE}&token={token}"),
        format!("?pipeline_id=abc&key={}&token={token}", creds.key),
        format!("?pipeline_id=1&key=bad&token={token}"),
        format!(
            "?pipeline_id=1&key={}&token={token}&token={token}",
            creds.key
        ),
    ];
    for url in &urls {
        for body in [&b"{\"ok\":1}"[..], b"", b"{bad"] {
            post(&client, &gw.url(url), body.to_vec()).await;
        }
    }
    // Rate limited, and a shutdown, with the token in the URL too.
    for _ in 0..10 {
        post(&client, &gw.url(&good), "{}").await;
    }
    let landed = eventually(Duration::from_secs(10), || async {
        ch.count("SELECT count() FROM hookhouse.rejected").await >= 2
    })
    .await;
    assert!(landed);
    assert_eq!(
        gw.signal_and_wait(libc::SIGTERM, Duration::from_secs(20)),
        Some(0)
    );
    let log = gw.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log was verbose"
    );
    assert!(!log.contains(&token), "the token is in the gateway's log");
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is in {}",
            entry.display()
        );
    }
    for table in ["events", "rejected", "tokens", "pipelines"] {
        let dump = ch
            .query(&format!("SELECT * FROM hookhouse.{table} FORMAT TSV"))
            .await;
        assert!(!dump.contains(&token), "the token is in table {table}");
    }
    let (_, out, err) = hookhouse_cli(
        &["token", "list", "--json"],
        &[("HOOKHOUSE_CLICKHOUSE_URL", &ch.url())],
    );
    assert!(!out.contains(&token) && !err.contains(&token));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
