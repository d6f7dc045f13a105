//! Notifications downstream (CONTRACT §9), end to end: a real ClickHouse, real gateways and a
//! real receiver (tests/receiver/receiver.py) that checks every notification with the PyPI
//! `standardwebhooks` library, not with hookhouse's own code.

mod common;

use std::time::{Duration, Instant};

use common::receiver::{Received, Receiver};
use common::{
    eventually, hookhouse_cli, post, setup_pipeline, CliEnv as Env, ClickhouseServer, Credentials,
    Gateway, GatewayProcess,
};
use serde_json::{json, Value};

/// What the notification tests add to the CLI's environment.
impl Env {
    /// `subscription create … --json`: (id, secret).
    fn subscribe(&self, receiver: &Receiver, extra: &[&str]) -> (String, String) {
        let url = receiver.url("/hooks");
        let mut args = vec!["subscription", "create", "--url", url.as_str(), "--json"];
        args.extend_from_slice(extra);
        let out: Value = serde_json::from_str(&self.ok(&args)).expect("json");
        (
            out["subscription_id"].as_str().expect("id").to_string(),
            out["secret"].as_str().expect("secret").to_string(),
        )
    }

    fn subscription(&self, id: &str) -> Value {
        let list: Value =
            serde_json::from_str(&self.ok(&["subscription", "list", "--json"])).expect("json");
        list.as_array()
            .expect("array")
            .iter()
            .find(|s| s["subscription_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// What most tests start from: a ClickHouse, a pipeline and its token, the CLI's environment,
/// and a receiver subscribed with `args` (`subscription create`), answering as `plan` says.
struct World {
    ch: ClickhouseServer,
    creds: Credentials,
    env: Env,
    receiver: Receiver,
    id: String,
    secret: String,
}

async fn world(name: &str, args: &[&str], mut plan: Value) -> World {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, name).await;
    let env = Env::new(&ch);
    let receiver = Receiver::start().await;
    let (id, secret) = env.subscribe(&receiver, args);
    plan["secret"] = secret.clone().into();
    receiver.control(plan).await;
    World {
        ch,
        creds,
        env,
        receiver,
        id,
        secret,
    }
}

async fn start_gateway(ch: &ClickhouseServer, env: &Env, scale: f64) -> Gateway {
    let key = env.key_file();
    Gateway::start(ch, |s| {
        s.secrets_key_file = Some(key);
        s.notify_backoff_scale = scale;
        s.credentials_refresh_ms = 500;
    })
    .await
}

async fn send(client: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let answer = post(client, url, format!(r#"{{"n":{i}}}"#)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        ids.push(answer.request_id().to_string());
    }
    ids
}

fn of_type<'a>(received: &'a [Received], kind: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.json.as_ref().is_some_and(|j| j["type"] == kind))
        .collect()
}

/// How many rows the `data.landed` notifications among `received` tell of.
fn rows_told(received: &[&Received]) -> u64 {
    received
        .iter()
        .map(|r| {
            r.json.as_ref().expect("json")["data"]["count"]
                .as_u64()
                .expect("count")
        })
        .sum()
}

/// Waits until the receiver holds data.landed notifications whose counts add up to `rows`.
async fn wait_landed(receiver: &Receiver, rows: u64, within: Duration) -> Vec<Received> {
    let deadline = Instant::now() + within;
    loop {
        let received = receiver.received().await;
        let delivered: Vec<&Received> = of_type(&received, "data.landed")
            .into_iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect();
        let delivered = rows_told(&delivered);
        if delivered >= rows || Instant::now() > deadline {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pipeline's key with a token of the right shape that is not its token.
fn wrong_token(creds: &Credentials) -> String {
    let wrong: String = creds.token.chars().rev().collect();
    assert_ne!(wrong, creds.token);
    format!(
        "?pipeline_id={}&key={}&token={wrong}",
        creds.pipeline_id, creds.key
    )
}

#[tokio::test]
async fn landed_and_rejected_requests_are_told_signed_coalesced_and_recorded() {
    let ch = ClickhouseServer::start();
    let creds = setup_pipeline(&ch, "told").await;
    let other = setup_pipeline(&ch, "untold").await;
    let env = Env::new(&ch);
    let receiver = Receiver::start().await;
    let (id, secret) = env.subscribe(&receiver, &["--pipeline", &creds.pipeline_id.to_string()]);
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver
        .control(json!({"secret": secret, "default": 200}))
        .await;
    let gateway = start_gateway(&ch, &env, 1.0).await;
    let client = reqwest::Client::new();

    // Three seconds of traffic: at most one data.landed a second.
    let mut ids = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        ids.extend(send(&client, &gateway.url(&creds.query()), 10).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send(&client, &gateway.url(&other.query()), 5).await;
    let wrong = post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    assert_eq!(wrong.status, 200);
    let received = wait_landed(&receiver, ids.len() as u64, Duration::from_secs(30)).await;

    for r in &received {
        assert!(r.verified, "not verified by standardwebhooks: {r:?}");
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
    let landed = of_type(&received, "data.landed");
    let total = rows_told(&landed);
    assert_eq!(
        total,
        ids.len() as u64,
        "every landed row told once: {landed:#?}"
    );
    for r in &landed {
        let data = &r.json.as_ref().expect("json")["data"];
        assert_eq!(
            data["pipeline_id"], creds.pipeline_id,
            "only the subscribed pipeline"
        );
    }
    let first = &landed[0].json.as_ref().expect("json")["data"];
    let last = &landed[landed.len() - 1].json.as_ref().expect("json")["data"];
    assert_eq!(first["first_request_id"], ids[0].as_str());
    assert_eq!(last["last_request_id"], ids[ids.len() - 1].as_str());
    assert!(
        landed.len() >= 2,
        "3 s of traffic in one notification: {landed:#?}"
    );
    assert!(
        landed.len() <= 5,
        "more than one a second: {}",
        landed.len()
    );
    // Made at most once a second (the body's timestamp is when it was made; arrival times
    // also carry the receiver's and the machine's delays).
    let made: Vec<chrono::DateTime<chrono::FixedOffset>> = landed
        .iter()
        .map(|r| {
            let at = r.json.as_ref().expect("json")["timestamp"]
                .as_str()
                .expect("timestamp");
            chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339")
        })
        .collect();
    let mut made = made;
    made.sort();
    for pair in made.windows(2) {
        let apart = pair[1] - pair[0];
        assert!(
            apart >= chrono::Duration::milliseconds(1000),
            "two data.landed made {apart} apart"
        );
    }
    // The rejected request, with its reason and id and never its body.
    let rejected = of_type(&received, "request.rejected");
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    let data = &rejected[0].json.as_ref().expect("json")["data"];
    assert_eq!(data["reason"], "WRONG_TOKEN");
    assert_eq!(data["request_id"], wrong.request_id());
    assert!(data.get("body").is_none() && !rejected[0].body.contains(&creds.key));

    // Every attempt is in ClickHouse.
    let sql = format!(
        "SELECT count(), countIf(status_code = 200), uniqExact(webhook_id) FROM hookhouse.notification_attempts WHERE subscription_id = '{id}'"
    );
    let n = received.len();
    let want = format!("{n}\t{n}\t{n}");
    let recorded = eventually(Duration::from_secs(10), || async {
        ch.query(&sql).await.trim() == want
    })
    .await;
    assert!(
        recorded,
        "attempts recorded: {} of {want}",
        ch.query(&sql).await
    );
    // The secret never leaves `create`: not in the list, not in ClickHouse.
    let list = env.ok(&["subscription", "list"]);
    assert!(list.contains(&id) && !list.contains(&secret), "{list}");
    let stored = ch.query("SELECT * FROM hookhouse.subscriptions").await;
    assert!(!stored.contains(&secret[6..]), "secret stored in the clear");
    drop(gateway);
}

#[tokio::test]
async fn retries_keep_their_webhook_id_back_off_honour_retry_after_and_410_disables() {
    let World {
        ch,
        creds,
        env,
        receiver,
        id,
        secret: _,
    } = world(
        "retried",
        &["--event", "request.rejected"],
        json!({"answers": [500, 503, 502, 200], "default": 200}),
    )
    .await;
    // 5 s, 30 s, 2 min… scaled to 50 ms, 300 ms, 1.2 s.
    let gateway = start_gateway(&ch, &env, 0.01).await;
    let client = reqwest::Client::new();
    post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    let received = receiver.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 4, "{received:#?}");
    let webhook_id = received[0].webhook_id.clone().expect("webhook-id");
    assert!(received
        .iter()
        .all(|r| r.webhook_id.as_ref() == Some(&webhook_id) && r.verified));
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![Some(500), Some(503), Some(502), Some(200)]
    );
    let gaps: Vec<f64> = received.windows(2).map(|p| p[1].at - p[0].at).collect();
    assert!(
        gaps[0] >= 0.035 && gaps[1] >= 0.2 && gaps[2] >= 0.9,
        "gaps {gaps:?}"
    );
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "delays grow: {gaps:?}"
    );
    // A new webhook-timestamp (and signature) on every attempt, checked by the library.
    let sql = format!(
        "SELECT attempt, status_code FROM hookhouse.notification_attempts WHERE webhook_id = '{webhook_id}' ORDER BY attempt"
    );
    let want = "1\t500\n2\t503\n3\t502\n4\t200\n";
    let recorded = eventually(Duration::from_secs(10), || async {
        ch.query(&sql).await == want
    })
    .await;
    assert!(recorded, "attempts: {}", ch.query(&sql).await);

    // Retry-After is honoured even when the schedule is shorter.
    receiver.reset().await;
    receiver
        .control(json!({"answers": [429], "default": 200, "retry_after": "2"}))
        .await;
    post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 2, "{received:#?}");
    let gap = received[1].at - received[0].at;
    assert!(gap >= 1.9, "Retry-After: 2 not honoured: {gap}");

    // 410: disabled at once, nothing more is sent.
    receiver.reset().await;
    receiver
        .control(json!({"answers": [410], "default": 200}))
        .await;
    post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    let gone = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(gone.len(), 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.subscription(&id)["active"] == false
        })
        .await,
        "410 did not disable {id}"
    );
    let disabled = env.subscription(&id);
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{disabled}"
    );
    post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().await.len(), 1, "sent after 410");
    drop(gateway);
}

#[tokio::test]
async fn twenty_failed_notifications_disable_and_enable_starts_the_count_again() {
    let World {
        ch,
        creds,
        env,
        receiver,
        id,
        secret: _,
    } = world(
        "failing",
        &["--event", "request.rejected"],
        json!({"default": 500}),
    )
    .await;
    // Six attempts in about half a second.
    let gateway = start_gateway(&ch, &env, 0.0002).await;
    let client = reqwest::Client::new();
    for _ in 0..30 {
        post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    }
    assert!(
        eventually(Duration::from_secs(60), || async {
            env.subscription(&id)["active"] == false
        })
        .await,
        "not disabled after failures"
    );
    let reason = env.subscription(&id)["disabled_reason"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("20 notifications")),
        "{reason}"
    );
    let sql = format!(
        "SELECT count() FROM hookhouse.notification_attempts WHERE subscription_id = '{id}' AND attempt = 6"
    );
    eventually(Duration::from_secs(10), || async {
        ch.count(&sql).await >= 20
    })
    .await;
    let given_up = ch.count(&sql).await;
    assert!(
        (20..=20 + 4).contains(&given_up),
        "{given_up} notifications failed 6 times"
    );

    // enable: the count starts from 0, so one more failure does not disable it again.
    env.ok(&["subscription", "enable", "--id", &id]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.reset().await;
    post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    let received = receiver.wait_for(6, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 6, "one notification, six attempts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.subscription(&id)["active"],
        true,
        "enable did not reset the count"
    );
    // And it delivers again.
    receiver.control(json!({"default": 200})).await;
    receiver.reset().await;
    post(&client, &gateway.url(&wrong_token(&creds)), "{}").await;
    let received = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(received[0].answered, Some(200));
    drop(gateway);
}

#[tokio::test]
async fn subscription_commands_say_what_they_did_and_refuse_bad_input() {
    let World {
        ch,
        creds,
        env,
        receiver,
        id,
        secret: _,
    } = world("commands", &[], json!({"answers": [200, 503]})).await;

    let out = env.ok(&["subscription", "test", "--id", &id]);
    assert!(
        out.contains("answered 200") && out.contains(r#""ok""#),
        "{out}"
    );
    let (code, out, err) = env.cli(&["subscription", "test", "--id", &id]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("answered 503") && err.contains("not delivered"),
        "{out}{err}"
    );
    let received = receiver.received().await;
    assert_eq!(received.len(), 2);
    for ping in &received {
        assert!(ping.verified, "{ping:?}");
        assert_eq!(ping.json.as_ref().expect("json")["type"], "ping");
        assert_eq!(
            ping.json.as_ref().expect("json")["data"]["subscription_id"],
            id.as_str()
        );
    }
    assert_eq!(
        ch.query(&format!("SELECT count() FROM hookhouse.notification_attempts WHERE subscription_id = '{id}' AND type = 'ping'")).await.trim(),
        "2"
    );

    let out = env.ok(&["subscription", "disable", "--id", &id]);
    assert!(out.contains("disabled"), "{out}");
    assert_eq!(env.subscription(&id)["active"], false);
    env.ok(&["subscription", "enable", "--id", &id]);
    assert_eq!(env.subscription(&id)["active"], true);
    env.ok(&["subscription", "delete", "--id", &id]);
    assert_eq!(env.subscription(&id), Value::Null);
    let (code, _, err) = env.cli(&["subscription", "enable", "--id", &id]);
    assert!(code == 1 && err.contains("no subscription"), "{err}");

    let url = receiver.url("/x");
    let refused: [(&[&str], &str); 6] = [
        (
            &["subscription", "create", "--url", "ftp://example.com"],
            "http://",
        ),
        (
            &["subscription", "create", "--url", "not a url"],
            "not a URL",
        ),
        (
            &[
                "subscription",
                "create",
                "--url",
                &url,
                "--event",
                "data.changed",
            ],
            "data.changed",
        ),
        (
            &["subscription", "create", "--url", &url, "--pipeline", "999"],
            "no pipeline with id 999",
        ),
        (
            &["subscription", "disable", "--id", "sub_'; DROP TABLE x"],
            "not a subscription id",
        ),
        (
            &[
                "subscription",
                "test",
                "--id",
                "sub_0123456789abcdef0123456789abcdef",
            ],
            "no subscription",
        ),
    ];
    for (args, says) in refused {
        let (code, out, err) = env.cli(args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // Without the key there is nothing to seal a secret with.
    let (code, _, err) = hookhouse_cli(
        &["subscription", "create", "--url", &url],
        &[("HOOKHOUSE_CLICKHOUSE_URL", &env.url)],
    );
    assert!(
        code == 1 && err.contains("HOOKHOUSE_SECRETS_KEY_FILE"),
        "{err}"
    );
    let _ = creds;
}

#[tokio::test]
async fn notifications_due_at_a_kill_9_are_sent_after_the_restart() {
    let World {
        ch,
        creds,
        env,
        receiver,
        secret,
        ..
    } = world(
        "killed",
        &["--event", "data.landed"],
        json!({"default": 503}),
    )
    .await;
    let data = tempfile::tempdir().expect("data dir");
    let key = env.key_file();
    let settings = [
        ("HOOKHOUSE_SECRETS_KEY_FILE", key.to_str().expect("utf-8")),
        // first retry after about 2.5 s
        ("HOOKHOUSE_NOTIFY_BACKOFF_SCALE", "0.5"),
        ("HOOKHOUSE_CREDENTIALS_REFRESH_MS", "500"),
        ("HOOKHOUSE_LOG", "trace"),
    ];
    let mut gateway = GatewayProcess::spawn(&ch, data.path(), &settings);
    let client = reqwest::Client::new();
    let ids = send(&client, &gateway.url(&creds.query()), 20).await;
    let refused = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(refused[0].answered, Some(503));
    let webhook_id = refused[0].webhook_id.clone().expect("webhook-id");
    gateway.kill9();
    receiver.control(json!({"default": 200})).await;
    gateway.relaunch();
    let received = wait_landed(&receiver, ids.len() as u64, Duration::from_secs(30)).await;
    let delivered: Vec<&Received> = of_type(&received, "data.landed")
        .into_iter()
        .filter(|r| r.answered == Some(200))
        .collect();
    assert!(
        !delivered.is_empty(),
        "nothing delivered after the restart:\n{}",
        gateway.log()
    );
    assert_eq!(
        delivered[0].webhook_id.as_ref(),
        Some(&webhook_id),
        "the same notification, sent again"
    );
    let total = rows_told(&delivered);
    assert_eq!(total, ids.len() as u64);
    assert!(received.iter().all(|r| r.verified));
    let log = gateway.log();
    assert!(log.contains("notification"), "no trace log?");
    assert!(
        !log.contains(&secret) && !log.contains(&secret[6..]),
        "the secret is in the log"
    );
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_receiver_that_never_answers_keeps_memory_and_disk_flat_and_ingest_going() {
    let World {
        ch,
        creds,
        env,
        receiver: _receiver,
        secret: _,
        ..
    } = world("dead", &[], json!({"hang": true})).await;
    let data = tempfile::tempdir().expect("data dir");
    let key = env.key_file();
    let mut gateway = GatewayProcess::spawn(
        &ch,
        data.path(),
        &[
            ("HOOKHOUSE_SECRETS_KEY_FILE", key.to_str().expect("utf-8")),
            ("HOOKHOUSE_NOTIFY_MAX_PENDING", "200"),
            ("HOOKHOUSE_RATE_LIMIT_PER_KEY", "0"),
        ],
    );
    let client = reqwest::Client::new();
    let wrong = gateway.url(&wrong_token(&creds));
    let right = gateway.url(&creds.query());
    let mut samples = Vec::new();
    let mut sent = 0;
    for round in 0..8 {
        let mut handles = Vec::new();
        for i in 0..1000 {
            let client = client.clone();
            let url = if i % 2 == 0 {
                wrong.clone()
            } else {
                right.clone()
            };
            handles.push(tokio::spawn(async move {
                post(&client, &url, "{}").await.status
            }));
        }
        for handle in handles {
            assert_eq!(handle.await.expect("request"), 200);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if round >= 2 {
            samples.push(rss_kib(gateway.pid()));
        }
    }
    // Everything landed though the receiver never answered.
    assert!(
        eventually(Duration::from_secs(30), || async {
            ch.count("SELECT count() FROM hookhouse.events").await
                + ch.count("SELECT count() FROM hookhouse.rejected").await
                == sent
        })
        .await,
        "not everything landed"
    );
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    assert!(
        last <= first + 16 * 1024,
        "RSS grew from {first} KiB to {last} KiB: {samples:?}"
    );
    let outbox = std::fs::metadata(data.path().join("notify/outbox.jsonl"))
        .expect("outbox")
        .len();
    assert!(outbox < 4 * 1024 * 1024, "outbox is {outbox} bytes");
    let metrics = client
        .get(gateway.url("metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("hookhouse_notifications_dropped_total{reason=\"queue_full\"}"))
        .unwrap_or_default();
    assert!(
        !dropped.is_empty(),
        "nothing dropped past notify_max_pending:\n{metrics}"
    );
    let pending: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hookhouse_notifications_pending "))
        .and_then(|v| v.trim().parse().ok())
        .expect("pending gauge");
    assert!(
        pending <= 201.0,
        "{pending} waiting with notify_max_pending 200"
    );
    eprintln!("RSS samples (KiB): {samples:?}; outbox {outbox} bytes; {dropped}");
    gateway.kill9();
}

#[tokio::test]
async fn two_gateways_on_one_clickhouse_each_tell_what_they_landed_and_nothing_twice() {
    let World {
        ch,
        creds,
        env,
        receiver,
        secret: _,
        ..
    } = world(
        "fleet",
        &["--event", "data.landed"],
        json!({"default": 200}),
    )
    .await;
    let (a, b) = (
        start_gateway(&ch, &env, 1.0).await,
        start_gateway(&ch, &env, 1.0).await,
    );
    let client = reqwest::Client::new();
    let mut sent_a = Vec::new();
    let mut sent_b = Vec::new();
    for _ in 0..3 {
        sent_a.extend(send(&client, &a.url(&creds.query()), 15).await);
        sent_b.extend(send(&client, &b.url(&creds.query()), 15).await);
    }
    let total = (sent_a.len() + sent_b.len()) as u64;
    let received = wait_landed(&receiver, total, Duration::from_secs(30)).await;
    let landed = of_type(&received, "data.landed");
    let counted = rows_told(&landed);
    assert_eq!(
        counted, total,
        "every row told once across both gateways: {landed:#?}"
    );
    for r in &landed {
        let data = &r.json.as_ref().expect("json")["data"];
        let first = data["first_request_id"].as_str().expect("first");
        let last = data["last_request_id"].as_str().expect("last");
        let from_a = sent_a.iter().any(|id| id == first);
        let ours = if from_a { &sent_a } else { &sent_b };
        assert!(
            ours.iter().any(|id| id == first) && ours.iter().any(|id| id == last),
            "a notification spans two gateways' rows: {data}"
        );
    }
    drop((a, b));
}

#[tokio::test]
async fn a_fast_receiver_gets_every_notification_of_a_burst_at_once() {
    let World {
        ch,
        creds,
        env,
        receiver,
        secret: _,
        ..
    } = world(
        "burst",
        &["--event", "request.rejected"],
        json!({"default": 204}),
    )
    .await;
    let gateway = start_gateway(&ch, &env, 1.0).await;
    let client = reqwest::Client::new();
    let url = gateway.url(&wrong_token(&creds));
    let burst = 600;
    let mut handles = Vec::new();
    for _ in 0..burst {
        let (client, url) = (client.clone(), url.clone());
        handles.push(tokio::spawn(async move {
            post(&client, &url, "{}").await.status
        }));
    }
    for handle in handles {
        assert_eq!(handle.await.expect("request"), 200);
    }
    let started = Instant::now();
    // One notification each, sent as fast as the receiver answers: not paced by a timer.
    let received = receiver.wait_for(burst, Duration::from_secs(12)).await;
    let ids: std::collections::HashSet<&String> = received
        .iter()
        .filter_map(|r| r.webhook_id.as_ref())
        .collect();
    assert_eq!(
        ids.len(),
        burst,
        "{} distinct of {}",
        ids.len(),
        received.len()
    );
    assert!(received
        .iter()
        .all(|r| r.verified && r.answered == Some(204)));
    eprintln!("{burst} notifications in {:?}", started.elapsed());
}
