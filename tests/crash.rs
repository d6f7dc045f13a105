//! Nothing acknowledged is lost or duplicated across kill -9 (CONTRACT §2).
//!
//! Concurrent keep-alive senders post to the real binary while it is killed with SIGKILL at
//! random moments and started again on the same data folder. At the end every request answered
//! 200 must be in `events` or `rejected` exactly once, and nothing may be there twice.
//!
//! `HOOKHOUSE_CRASH_CYCLES` (default 10) and `HOOKHOUSE_CRASH_SECONDS` (default 300) size the
//! loop; `scripts/soak.sh` runs it for 1,000 cycles.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;

/// What the senders saw.
#[derive(Default)]
struct Sent {
    acked: Vec<String>,
    refused: u64,
    failed: u64,
}

/// Starts `senders` tasks posting to `port` until `stop` is set. A second of them use a wrong
/// token, so `rejected` is exercised too.
fn start_senders(
    port: u16,
    creds: &Credentials,
    senders: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Sent>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..senders)
        .map(|n| {
            let token = if n % 4 == 3 {
                "wrongwrongwrong1".to_string()
            } else {
                creds.token.clone()
            };
            let url = format!(
                "http://127.0.0.1:{port}/?pipeline_id={}&key={}&token={token}",
                creds.pipeline_id, creds.key
            );
            let (stop, sent) = (stop.clone(), sent.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = format!(
                        "{{\"sender\":{n},\"n\":{i},\"pad\":\"{}\"}}",
                        "p".repeat((i % 300) as usize)
                    );
                    match client.post(&url).body(body).send().await {
                        Ok(response) if response.status() == 200 => {
                            let json: serde_json::Value = match response.json().await {
                                Ok(json) => json,
                                Err(_) => {
                                    sent.lock().unwrap().failed += 1;
                                    continue;
                                }
                            };
                            let id = json["data"]["__kdd_request_id"]
                                .as_str()
                                .unwrap()
                                .to_string();
                            sent.lock().unwrap().acked.push(id);
                        }
                        Ok(_) => sent.lock().unwrap().refused += 1,
                        Err(_) => {
                            sent.lock().unwrap().failed += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Posts for a while, kills the gateway with SIGKILL while its log holds unsent records (a
/// two-second batch wait), restarts it, and checks that every 200 landed exactly once.
async fn kill_9_while_loaded(fsync: &str) {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "crash").await;
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("HOOKHOUSE_RATE_LIMIT_PER_KEY", "0"),
        ("HOOKHOUSE_BATCH_MAX_WAIT_MS", "2000"),
        ("HOOKHOUSE_FSYNC", fsync),
    ];
    let mut gw = GatewayProcess::spawn(&ch, &data.path().join("gw"), &env);
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Sent::default())),
    );
    let senders = start_senders(gw.port, &creds, 8, stop.clone(), sent.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.kill9();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = std::mem::take(&mut sent.lock().unwrap().acked);
    assert!(
        acked.len() > 50,
        "only {} acked before the kill",
        acked.len()
    );
    gw.restart();
    let (lost, duplicated, _) = verify_exactly_once(&ch, &acked, Duration::from_secs(30)).await;
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "fsync={fsync}, of {} acknowledged\n{}",
        acked.len(),
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_requests_survive_kill_9_exactly_once() {
    kill_9_while_loaded("always").await;
}

/// `interval` fsyncs at most every 100 ms: it promises to survive a crash of the process (the
/// page cache outlives it), not of the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_interval_fsync_a_process_crash_loses_nothing() {
    kill_9_while_loaded("interval").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_and_duplicates_nothing() {
    let cycles = env_number("HOOKHOUSE_CRASH_CYCLES", 10);
    let budget = Duration::from_secs(env_number("HOOKHOUSE_CRASH_SECONDS", 300));
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "loop").await;
    let data = tempfile::tempdir().unwrap();
    // Small batches and a short wait: kills land before, during and after inserts.
    let env = [
        ("HOOKHOUSE_RATE_LIMIT_PER_KEY", "0"),
        ("HOOKHOUSE_BATCH_MAX_WAIT_MS", "30"),
        ("HOOKHOUSE_BATCH_MAX_ROWS", "500"),
    ];
    let mut gw = GatewayProcess::spawn(&ch, &data.path().join("gw"), &env);
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Sent::default())),
    );
    let senders = start_senders(gw.port, &creds, 6, stop.clone(), sent.clone());
    let started = Instant::now();
    let mut done = 0;
    while done < cycles && started.elapsed() < budget {
        let alive_for = Duration::from_millis(rand::rng().random_range(50..900));
        tokio::time::sleep(alive_for).await;
        gw.restart(); // SIGKILL, then start again on the same log
        done += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let (lost, duplicated, unacked_landed) =
        verify_exactly_once(&ch, &sent.acked, Duration::from_secs(60)).await;
    println!(
        "crash loop: cycles={done} acknowledged={} lost={lost} duplicated={duplicated} \
         landed_without_ack={unacked_landed} refused={} connection_errors={} seconds={:.0}",
        sent.acked.len(),
        sent.refused,
        sent.failed,
        started.elapsed().as_secs_f64()
    );
    assert!(done >= cycles.min(10), "only {done} cycles in {budget:?}");
    assert!(!sent.acked.is_empty());
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "{}",
        gw.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
