//! hookhouse on a ClickHouse cluster (CONTRACT §10), against real processes: a ZooKeeper and
//! several clickhouse-server nodes started by `common::cluster`, and the real gateway binary.
//! Run by `scripts/test-cluster.sh` (CI calls it through scripts/test.sh), bounded in time.

mod common;

use std::time::Duration;

use common::cluster::{LocalCluster, CLUSTER};
use common::eventually;

/// The harness itself: ON CLUSTER DDL reaches every node, a replicated table copies an insert
/// to the other replica, and a stopped replica catches up once restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_replicates_and_a_stopped_replica_catches_up() {
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
    let cluster = LocalCluster::start(1, 2);
    let first = cli(&cluster, 0, &["migrate", "--json"]);
    assert!(first.contains("\"applied\":[1,2]"), "{first}");
    let again = cli(&cluster, 1, &["migrate", "--json"]);
    assert!(again.contains("\"applied\":[]"), "{again}");

    let engines =
        "SELECT name, engine FROM system.tables WHERE database = 'hookhouse' ORDER BY name";
    let on_a = cluster.node(0).query(engines).await;
    assert_eq!(
        on_a,
        "events\tReplicatedMergeTree\npipelines\tReplicatedReplacingMergeTree\n\
         rejected\tReplicatedMergeTree\nschema_migrations\tReplicatedMergeTree\n\
         tokens\tReplicatedReplacingMergeTree\n"
    );
    assert_eq!(cluster.node(1).query(engines).await, on_a);
    let versions = "SELECT version, count() FROM hookhouse.schema_migrations GROUP BY version ORDER BY version";
    assert!(
        eventually(Duration::from_secs(10), || async {
            cluster.node(1).query(versions).await == "1\t1\n2\t1\n"
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
    let cluster = LocalCluster::start(2, 1);
    cli(&cluster, 0, &["migrate"]);
    let (id, key, token) = pipeline_and_token(&cluster, 1, "shards");
    let gateway = common::Gateway::start(cluster.node(0), |s| {
        s.clickhouse_url = cluster.urls_from(0);
        s.clickhouse_cluster = Some(CLUSTER.into());
    })
    .await;
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

    let gateway = common::Gateway::start(cluster.node(0), |s| {
        s.clickhouse_url = cluster.urls_from(0);
        s.clickhouse_cluster = Some(CLUSTER.into());
    })
    .await;
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
    // Let the retry and the next batch finish, then bring A back and let B fetch.
    tokio::time::sleep(Duration::from_secs(2)).await;
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
