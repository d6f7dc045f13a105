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
