//! hookhouse on a ClickHouse cluster (CONTRACT §10), against real processes: a ZooKeeper and
//! several clickhouse-server nodes started by `common::cluster`, and the real gateway binary.
//! Run by `cargo test` (CI calls it through scripts/test.sh). The tests take turns: each starts
//! ZooKeeper and two to four ClickHouse servers, more than two cores hold at once, and one uses a
//! process-wide fail point.

mod common;

use std::time::Duration;

use common::cluster::{LocalCluster, CLUSTER};
use common::eventually;

/// The harness itself: ON CLUSTER DDL reaches every node, a replicated table copies an insert
/// to the other replica, and a stopped replica catches up once restarted.
/// One cluster at a time (see the module docs).
async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_replicates_and_a_stopped_replica_catches_up() {
    let _one = one_cluster_at_a_time().await;
    let mut cluster = LocalCluster::start(1, 2);
    let a = cluster.node(0);
    a.query(&format!(
        "CREATE DATABASE IF NOT EXISTS probe ON CLUSTER {CLUSTER}"
    ))
    .await;
    a.query(&format!(
        "CREATE TABLE IF NOT EXISTS probe.t ON CLUSTER {CLUSTER} (n UInt64) \
         ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/probe/t', '{{replica}}') \
         ORDER BY n"
    ))
    .await;
    a.query("INSERT INTO probe.t VALUES (1), (2)").await;
    let b = cluster.node(1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.count("SELECT count() FROM probe.t").await == 2
        })
        .await,
        "the second replica did not get the rows"
    );

    cluster.stop_node(1);
    cluster
        .node(0)
        .query("INSERT INTO probe.t VALUES (3)")
        .await;
    cluster.restart_node(1);
    let b = cluster.node(1);
    assert!(
        eventually(Duration::from_secs(20), || async {
            b.count("SELECT count() FROM probe.t").await == 3
        })
        .await,
        "the restarted replica did not catch up"
    );
}

/// Runs `hookhouse ARGS` against node `index` of `cluster`; panics unless it exits 0.
fn cli(cluster: &LocalCluster, index: usize, args: &[&str]) -> String {
    let env = cluster.env(index);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = common::hookhouse_cli(args, &env);
    assert_eq!(
        code,
        0,
        "hookhouse {args:?} failed:\n{out}\n{err}\n{}",
        cluster.error_logs()
    );
    out
}

/// `migrate` on a cluster of one shard and two replicas: every table on both nodes, replicated;
/// a second `migrate` changes nothing; pipelines and tokens made through one node are seen
/// through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_makes_replicated_tables_on_every_node_once() {
    let _one = one_cluster_at_a_time().await;
    let cluster = LocalCluster::start(1, 2);
    let first = cli(&cluster, 0, &["migrate", "--json"]);
    assert!(first.contains("\"applied\":[1,2,3]"), "{first}");
    let again = cli(&cluster, 1, &["migrate", "--json"]);
    assert!(again.contains("\"applied\":[]"), "{again}");

    let engines =
        "SELECT name, engine FROM system.tables WHERE database = 'hookhouse' ORDER BY name";
    let on_a = cluster.node(0).query(engines).await;
    assert_eq!(
        on_a,
        "events\tReplicatedMergeTree\nnotification_attempts\tReplicatedMergeTree\n\
         pipelines\tReplicatedReplacingMergeTree\nrejected\tReplicatedMergeTree\n\
         schema_migrations\tReplicatedMergeTree\nsubscriptions\tReplicatedReplacingMergeTree\n\
         tokens\tReplicatedReplacingMergeTree\n"
    );
    assert_eq!(cluster.node(1).query(engines).await, on_a);
    let versions = "SELECT version, count() FROM hookhouse.schema_migrations GROUP BY version ORDER BY version";
    assert!(
        eventually(Duration::from_secs(10), || async {
            cluster.node(1).query(versions).await == "1\t1\n2\t1\n3\t1\n"
        })
        .await,
        "schema_migrations: {}",
        cluster.node(1).query(versions).await
    );

    let created = cli(
        &cluster,
        0,
        &["pipeline", "create", "--name", "crm", "--json"],
    );
    assert!(created.contains("\"pipeline_id\":1"), "{created}");
    let token = cli(
        &cluster,
        1,
        &[
            "token",
            "create",
            "--name",
            "crm",
            "--pipeline",
            "1",
            "--json",
        ],
    );
    assert!(token.contains("\"token\":"), "{token}");
    // Through the other node, once replicated (a moment later).
    let replicated = |node: usize, args: &'static [&'static str]| {
        let cluster = &cluster;
        async move {
            eventually(Duration::from_secs(10), || async {
                cli(cluster, node, args).contains("\"name\":\"crm\"")
            })
            .await
        }
    };
    assert!(replicated(1, &["pipeline", "list", "--json"]).await);
    assert!(replicated(0, &["token", "list", "--json"]).await);
    for node in 0..2 {
        let views = cluster
            .node(node)
            .query("SELECT engine FROM system.tables WHERE database = 'hookhouse' AND name = 'pipeline_1'")
            .await;
        assert_eq!(views, "View\n", "node {node}");
    }
    let columns =
        "SELECT count() FROM system.columns WHERE database = 'hookhouse' AND table = 'events'";
    assert_eq!(cluster.node(1).count(columns).await, 9);
}

/// A gateway in this process on node `index` of `cluster`, failing over within its shard.
async fn gateway_on(cluster: &LocalCluster, index: usize) -> common::Gateway {
    common::Gateway::start(cluster.node(index), |s| {
        s.clickhouse_url = cluster.urls_from(index);
        s.clickhouse_cluster = Some(CLUSTER.into());
    })
    .await
}

/// Creates pipeline `name` and a token for it through node `index`; returns the ingest query.
fn pipeline_and_token(cluster: &LocalCluster, index: usize, name: &str) -> (u64, String, String) {
    let created: serde_json::Value = serde_json::from_str(&cli(
        cluster,
        index,
        &["pipeline", "create", "--name", name, "--json"],
    ))
    .expect("pipeline JSON");
    let id = created["pipeline_id"].as_u64().expect("pipeline id");
    let token: serde_json::Value = serde_json::from_str(&cli(
        cluster,
        index,
        &[
            "token",
            "create",
            "--name",
            name,
            "--pipeline",
            &id.to_string(),
            "--json",
        ],
    ))
    .expect("token JSON");
    let key = token["key"].as_str().expect("key").to_string();
    let token = token["token"].as_str().expect("token").to_string();
    (id, key, token)
}

/// Two shards of one replica each: `events` is a `Distributed` table on both nodes, rows land
/// on both shards, and either node answers the same count, through `events` and the view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_spread_rows_and_answer_the_same_from_either_node() {
    let _one = one_cluster_at_a_time().await;
    let cluster = LocalCluster::start(2, 1);
    cli(&cluster, 0, &["migrate"]);
    let (id, key, token) = pipeline_and_token(&cluster, 1, "shards");
    let gateway = gateway_on(&cluster, 0).await;
    let client = reqwest::Client::new();
    let query = format!("?pipeline_id={id}&key={key}&token={token}");
    let mut acked = Vec::new();
    for n in 0..200 {
        let answer = common::post(&client, &gateway.url(&query), format!("{{\"n\":{n}}}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        acked.push(answer.request_id().to_string());
    }
    let (lost, duplicated, unacked) =
        common::verify_exactly_once(cluster.node(1), &acked, Duration::from_secs(20)).await;
    assert_eq!(
        (lost, duplicated, unacked),
        (0, 0, 0),
        "{}",
        cluster.error_logs()
    );
    let mut local = Vec::new();
    for node in 0..2 {
        let ch = cluster.node(node);
        assert_eq!(ch.count("SELECT count() FROM hookhouse.events").await, 200);
        let view = format!("SELECT count() FROM hookhouse.pipeline_{id}");
        assert_eq!(ch.count(&view).await, 200, "node {node}");
        local.push(ch.count("SELECT count() FROM hookhouse.events_local").await);
        let engine = ch
            .query(
                "SELECT engine FROM system.tables WHERE database = 'hookhouse' AND name = 'events'",
            )
            .await;
        assert_eq!(engine, "Distributed\n");
    }
    assert_eq!(local.iter().sum::<u64>(), 200);
    assert!(local.iter().all(|n| *n > 40), "rows per shard: {local:?}");
    gateway.stop().await;
}

/// The hole a retry must not fall into on a cluster: the writer's insert lands on node A and
/// the gateway dies before it confirms; A goes down too, before replica B fetched the part;
/// more requests arrive. The restarted writer talks to B, which does not show the rows. It must
/// send again exactly the block A took (ZooKeeper drops it as a duplicate), not a batch that
/// merely contains those rows (a new block: every row of it would land twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_through_another_replica_lands_nothing_twice() {
    let _one = one_cluster_at_a_time().await;
    let mut cluster = LocalCluster::start(1, 2);
    cli(&cluster, 0, &["migrate"]);
    let (id, key, token) = pipeline_and_token(&cluster, 0, "hole");
    // B takes inserts but fetches nothing from A until told.
    cluster
        .node(1)
        .query("SYSTEM STOP FETCHES hookhouse.events")
        .await;

    // The first time a batch has landed, the writer dies before confirming it, as a crash
    // would; a new one starts a second later (the supervisor's pause).
    fail::cfg("writer::landed", "1*panic").expect("fail point");

    let gateway = gateway_on(&cluster, 0).await;
    let client = reqwest::Client::new();
    let query = format!("?pipeline_id={id}&key={key}&token={token}");
    let send = |from: usize, count: usize| {
        let (client, url) = (client.clone(), gateway.url(&query));
        async move {
            let mut acked = Vec::new();
            for n in from..from + count {
                let answer = common::post(&client, &url, format!("{{\"n\":{n}}}")).await;
                assert_eq!(answer.status, 200, "{answer:?}");
                acked.push(answer.request_id().to_string());
            }
            acked
        }
    };
    let mut acked = send(0, 20).await;
    let a = cluster.node(0);
    let mut first = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        first = a.count("SELECT count() FROM hookhouse.events").await;
    }
    assert!(first > 0, "no batch landed on node A");
    cluster.stop_node(0);
    acked.extend(send(20, 20).await);

    // Through B alone: every request once (A's block counted as landed, not yet fetched).
    let b = cluster.node(1);
    assert!(
        eventually(Duration::from_secs(60), || async {
            b.count("SELECT count() FROM hookhouse.events").await >= 40 - first
        })
        .await,
        "the writer delivered nothing through node B: {}",
        cluster.error_logs()
    );
    // Let the retry and the next batch finish: B took only the requests sent after A stopped
    // (the retried block was dropped as a duplicate of A's), through a failover.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        b.count("SELECT count() FROM hookhouse.events").await,
        40 - first,
        "node B holds only what A did not take"
    );
    let metrics = common::scrape(gateway.port).await;
    assert!(common::metric_value(&metrics, "hookhouse_clickhouse_failovers_total", "") >= 1.0);
    // Bring A back and let B fetch.
    fail::remove("writer::landed");
    cluster.restart_node(0);
    cluster
        .node(1)
        .query("SYSTEM START FETCHES hookhouse.events")
        .await;
    for node in 0..2 {
        let ch = cluster.node(node);
        let (lost, duplicated, unacked) =
            common::verify_exactly_once(ch, &acked, Duration::from_secs(30)).await;
        assert_eq!(
            (lost, duplicated, unacked),
            (0, 0, 0),
            "node {node} (lost, duplicated, landed without a 200): {}",
            cluster.error_logs()
        );
        assert_eq!(ch.count("SELECT count() FROM hookhouse.events").await, 40);
    }
    gateway.stop().await;
}

/// Requests sent through `gateway` until `stop`, each acknowledged id kept in `acked`; a
/// connection refused while the gateway is down is tried again a moment later.
async fn keep_sending(
    url: String,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let (mut sent, mut failed) = (0, 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        sent += 1;
        let body = format!("{{\"n\":{sent}}}");
        match client.post(&url).body(body).send().await {
            Ok(response) => {
                let answer = common::answer(response).await;
                if answer.status == 200 {
                    let id = answer.request_id().to_string();
                    acked.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                } else {
                    failed += 1;
                }
            }
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (sent, failed)
}

/// CONTRACT §10: two gateways, each on its own replica of one shard, under concurrent load;
/// each is killed with SIGKILL three times, and the replica the first one talks to is stopped
/// and started again meanwhile (that gateway fails over to the other). Afterwards every request
/// answered 200 is in `events` exactly once, counted on each replica, and nothing is twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_killed_and_a_replica_restarted_land_every_request_once() {
    let _one = one_cluster_at_a_time().await;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let started = std::time::Instant::now();
    let mut cluster = LocalCluster::start(1, 2);
    cli(&cluster, 0, &["migrate"]);
    let (id, key, token) = pipeline_and_token(&cluster, 0, "fleet");
    let query = format!("?pipeline_id={id}&key={key}&token={token}");
    let folders: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir().expect("data folder"))
        .collect();
    let mut gateways: Vec<common::GatewayProcess> = (0..2)
        .map(|node| {
            let mut env = cluster.env(node);
            env.push(("HOOKHOUSE_RATE_LIMIT_PER_KEY".into(), "0".into()));
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            common::GatewayProcess::spawn(cluster.node(node), folders[node].path(), &env)
        })
        .collect();

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|n| {
            let url = gateways[n % 2].url(&query);
            tokio::spawn(keep_sending(url, acked.clone(), stop.clone()))
        })
        .collect();

    let load_started = std::time::Instant::now();
    let mut kills = 0;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(1500 + 300 * (round % 3))).await;
        let gateway = &mut gateways[round as usize % 2];
        gateway.kill9();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        gateway.relaunch();
        match round {
            // Node A goes away under gateway 0, which fails over to B.
            1 => cluster.stop_node(0),
            4 => cluster.restart_node(0),
            _ => {}
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut refused) = (0, 0);
    for sender in senders {
        let (s, f) = sender.await.expect("sender");
        sent += s;
        refused += f;
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        acked.len() > 500,
        "too little load to mean anything: {}",
        acked.len()
    );

    let mut per_node = Vec::new();
    for node in 0..2 {
        let ch = cluster.node(node);
        let (lost, duplicated, unacked) =
            common::verify_exactly_once(ch, &acked, Duration::from_secs(60)).await;
        let logs: String = gateways.iter().map(|g| g.log()).collect();
        let tail: Vec<&str> = logs.lines().rev().take(20).collect();
        assert_eq!(
            (lost, duplicated),
            (0, 0),
            "node {node}: (lost, duplicated) of {} acknowledged\n{}\n{}",
            acked.len(),
            cluster.error_logs(),
            tail.join("\n")
        );
        let rows = ch.count("SELECT count() FROM hookhouse.events").await;
        let rejected = ch.count("SELECT count() FROM hookhouse.rejected").await;
        assert_eq!(rejected, 0, "node {node}: every request had a good token");
        per_node.push((rows, unacked));
    }
    assert_eq!(
        per_node[0].0, per_node[1].0,
        "both replicas hold the same rows"
    );
    eprintln!(
        "cluster kill test: acknowledged={} sent={sent} refused_or_cut={refused} kills={kills} \
         replica_restarts=1 events_per_replica={:?} landed_without_ack={} load_seconds={load_secs:.1} \
         total_seconds={:.1}",
        acked.len(),
        per_node.iter().map(|(rows, _)| *rows).collect::<Vec<_>>(),
        per_node[0].1,
        started.elapsed().as_secs_f64()
    );
}

/// CONTRACT §3 and §10: a token revoked through node A is refused by the gateway on node B
/// within 10 seconds: its requests go to `rejected` as `REVOKED_KEY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_one_node_is_refused_on_the_other_within_10_s() {
    let _one = one_cluster_at_a_time().await;
    let cluster = LocalCluster::start(1, 2);
    cli(&cluster, 0, &["migrate"]);
    // Created through A and used at once through B: B's gateway syncs its replica first.
    let (id, key, token) = pipeline_and_token(&cluster, 0, "revoke");
    let gateway = gateway_on(&cluster, 1).await;
    let client = reqwest::Client::new();
    let query = format!("?pipeline_id={id}&key={key}&token={token}");
    let before = common::post(&client, &gateway.url(&query), "{}").await;
    assert_eq!(before.status, 200);
    let b = cluster.node(1);
    let landed = |table: &'static str, request: String| async move {
        b.count(&format!(
            "SELECT count() FROM hookhouse.{table} WHERE __kdd_request_id = '{request}'"
        ))
        .await
    };
    let first = before.request_id().to_string();
    assert!(
        eventually(Duration::from_secs(10), || {
            let first = first.clone();
            async move { landed("events", first.clone()).await + landed("rejected", first).await > 0 }
        })
        .await,
        "the first request did not land: {}",
        cluster.error_logs()
    );
    assert_eq!(
        landed("events", first.clone()).await,
        1,
        "a token created through A works at once through B"
    );

    cli(&cluster, 0, &["token", "revoke", "--key", &key]);
    let revoked_at = std::time::Instant::now();
    // Requests from 10 s after the revocation on must all be refused.
    let mut late = Vec::new();
    while revoked_at.elapsed() < Duration::from_secs(12) {
        let answer = common::post(&client, &gateway.url(&query), "{}").await;
        assert_eq!(answer.status, 200, "a 200 never depends on the token");
        if revoked_at.elapsed() >= Duration::from_secs(10) {
            late.push(answer.request_id().to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!late.is_empty());
    for request in &late {
        let sql =
            format!("SELECT reason FROM hookhouse.rejected WHERE __kdd_request_id = '{request}'");
        let mut reason = String::new();
        for _ in 0..50 {
            reason = b.query(&sql).await;
            if !reason.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(reason, "REVOKED_KEY\n", "request {request}");
        assert_eq!(landed("events", request.clone()).await, 0);
    }
    gateway.stop().await;
}

/// Issue 10: a node that comes after the migrations ran (here: one whose disk was emptied, so
/// its replicas are gone from ZooKeeper too) gets every table from `migrate` run against it,
/// with today's columns, and its replicas fetch the rows from the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_tables_gets_them_back_from_migrate() {
    let _one = one_cluster_at_a_time().await;
    let cluster = LocalCluster::start(1, 2);
    cli(&cluster, 0, &["migrate"]);
    let (id, key, token) = pipeline_and_token(&cluster, 0, "rebuilt");
    let gateway = gateway_on(&cluster, 0).await;
    let client = reqwest::Client::new();
    let query = format!("?pipeline_id={id}&key={key}&token={token}");
    let mut acked = Vec::new();
    for n in 0..30 {
        let answer = common::post(&client, &gateway.url(&query), format!("{{\"n\":{n}}}")).await;
        assert_eq!(answer.status, 200);
        acked.push(answer.request_id().to_string());
    }
    let (lost, duplicated, _) =
        common::verify_exactly_once(cluster.node(0), &acked, Duration::from_secs(20)).await;
    assert_eq!((lost, duplicated), (0, 0));
    gateway.stop().await;

    let b = cluster.node(1);
    let tables =
        "SELECT name, engine FROM system.tables WHERE database = 'hookhouse' ORDER BY name";
    let before = cluster.node(0).query(tables).await;
    // Dropped on B alone: each replicated table leaves ZooKeeper's list of replicas.
    b.query("DROP DATABASE hookhouse").await;
    assert_eq!(b.query(tables).await, "");

    cli(&cluster, 1, &["migrate"]);
    assert_eq!(
        b.query(tables).await,
        before,
        "node B has every table again"
    );
    let view = format!("SELECT count() FROM hookhouse.pipeline_{id}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            b.count(&view).await == 30
        })
        .await,
        "node B fetched the rows: {}",
        cluster.error_logs()
    );
    let columns =
        "SELECT count() FROM system.columns WHERE database = 'hookhouse' AND table = 'events'";
    assert_eq!(b.count(columns).await, 9);
    // And nothing more happens the next time.
    let again = cli(&cluster, 1, &["migrate", "--json"]);
    assert!(again.contains("\"applied\":[]"), "{again}");
}
