//! A local ClickHouse cluster for tests: one ZooKeeper (Debian's `zookeeper` package, run
//! standalone from its jar) and `shards × replicas` clickhouse-server processes, each with its own
//! temporary folder and free loopback ports, all named in every node's `<remote_servers>` as the
//! cluster [`CLUSTER`], with `<macros>` (`shard`, `replica`), `<zookeeper>` and
//! `<distributed_ddl>`. ZooKeeper starts first, then every node in parallel; every process is ended by its own pid
//! (and dies with the test process should that be killed), and the folders are removed after.
//! `scripts/install-zookeeper.sh` installs ZooKeeper; `scripts/run-local.sh --cluster` starts the
//! same for a person.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookhouse::Settings;
use tempfile::TempDir;

use super::{die_with_parent, free_port, ClickhouseServer};

/// The cluster's name in `<remote_servers>`.
pub const CLUSTER: &str = "hookhouse";

/// Where Debian's `zookeeper` package puts its jar; its manifest names every library it needs.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logging backend for ZooKeeper's slf4j, so that its log says something when a test fails.
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";

/// A standalone ZooKeeper on a free loopback port, its data in a temporary folder.
pub struct ZooKeeper {
    dir: TempDir,
    child: Option<Child>,
    pub port: u16,
}

impl ZooKeeper {
    pub fn start() -> ZooKeeper {
        let mut zookeeper = ZooKeeper::unstarted();
        zookeeper.spawn();
        zookeeper.wait_ready();
        zookeeper
    }

    fn unstarted() -> ZooKeeper {
        let dir = tempfile::Builder::new()
            .prefix("hookhouse-zk-")
            .tempdir()
            .expect("temp dir");
        let zookeeper = ZooKeeper {
            dir,
            child: None,
            port: free_port(),
        };
        // A short tick lets sessions of killed ClickHouse servers expire within seconds
        // (sessions may last 2 to 20 ticks), so a restarted node takes its place at once.
        let config = format!(
            "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
             clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
             4lw.commands.whitelist=srvr\nmaxClientCnxns=0\n",
            zookeeper.dir.path().join("data").display(),
            zookeeper.port
        );
        std::fs::write(zookeeper.dir.path().join("zoo.cfg"), config).expect("write zoo.cfg");
        zookeeper
    }

    fn spawn(&mut self) {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "{ZOOKEEPER_JAR} is missing; install it with scripts/install-zookeeper.sh"
        );
        let mut classpath = ZOOKEEPER_JAR.to_string();
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            classpath = format!("{classpath}:{SLF4J_SIMPLE_JAR}");
        }
        let log = std::fs::File::create(self.dir.path().join("zookeeper.log")).expect("log");
        let mut command = Command::new("java");
        command
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.admin.enableServer=false",
            ])
            .arg("-cp")
            .arg(classpath)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ZooKeeper (java): {e}"));
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.answers() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("ZooKeeper exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ZooKeeper did not answer within 60 s: {}", self.log());
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        // `ruok` says imok as soon as the port is open; `srvr` tells a server that serves
        // (with its mode) from one still loading, which closes every session it is asked for.
        let mut answer = String::new();
        stream.write_all(b"srvr").is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.contains("Mode: standalone")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One clickhouse-server of the cluster.
pub struct Node {
    /// 1-based, as in `system.clusters`.
    pub shard: usize,
    pub replica: usize,
    pub server: ClickhouseServer,
}

/// `shards × replicas` ClickHouse servers and their ZooKeeper. Dropping it stops every process
/// (the nodes first) and removes every folder.
pub struct LocalCluster {
    pub nodes: Vec<Node>,
    pub zookeeper: ZooKeeper,
}

impl LocalCluster {
    /// Starts ZooKeeper and every node in parallel; returns once all answer.
    pub fn start(shards: usize, replicas: usize) -> LocalCluster {
        assert!(shards >= 1 && replicas >= 1);
        let mut zookeeper = ZooKeeper::unstarted();
        zookeeper.spawn();
        let mut nodes = Vec::new();
        for shard in 1..=shards {
            for replica in 1..=replicas {
                nodes.push(Node {
                    shard,
                    replica,
                    server: ClickhouseServer::unstarted(None, None, "", ""),
                });
            }
        }
        let remote_servers = remote_servers(&nodes, shards);
        for node in &mut nodes {
            let interserver = free_port();
            node.server.extra_config = format!(
                "{remote_servers}
  <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node><session_timeout_ms>5000</session_timeout_ms></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <macros><shard>{shard}</shard><replica>r{replica}</replica></macros>
  <interserver_http_port>{interserver}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>",
                zk = zookeeper.port,
                shard = node.shard,
                replica = node.replica,
            );
            node.server.write_config();
        }
        // ClickHouse 18.16 connects to ZooKeeper once, at start: a node started before
        // ZooKeeper answers has none, and crashes on its first DDL.
        zookeeper.wait_ready();
        for node in &mut nodes {
            node.server.spawn();
        }
        for node in &mut nodes {
            node.server.wait_ready();
        }
        let cluster = LocalCluster { nodes, zookeeper };
        for index in 0..cluster.nodes.len() {
            cluster.wait_for_zookeeper(index);
        }
        cluster
    }

    /// Waits until node `index` reads ZooKeeper: a node that sends DDL before its session is
    /// up may crash (seen with 18.16 under load).
    fn wait_for_zookeeper(&self, index: usize) {
        let node = self.node(index);
        let deadline = Instant::now() + Duration::from_secs(30);
        let sql = "SELECT count() FROM system.zookeeper WHERE path = '/'";
        while Instant::now() < deadline {
            if node.try_query_blocking(sql).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {index} cannot read ZooKeeper: {}", self.error_logs());
    }

    pub fn node(&self, index: usize) -> &ClickhouseServer {
        &self.nodes[index].server
    }

    /// Kills node `index` (its data stays for [`LocalCluster::restart_node`]).
    pub fn stop_node(&mut self, index: usize) {
        self.nodes[index].server.stop();
    }

    /// Starts node `index` again on its data; returns once it answers and reads ZooKeeper.
    pub fn restart_node(&mut self, index: usize) {
        self.nodes[index].server.restart();
        self.wait_for_zookeeper(index);
    }

    /// Node `index`'s URL, then the other replicas of its shard: a gateway's
    /// `HOOKHOUSE_CLICKHOUSE_URL` that fails over within the shard.
    pub fn urls_from(&self, index: usize) -> String {
        let shard = self.nodes[index].shard;
        let mut urls = vec![self.nodes[index].server.url()];
        urls.extend(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| *i != index && n.shard == shard)
                .map(|(_, n)| n.server.url()),
        );
        urls.join(",")
    }

    /// Settings for a gateway or command on node `index` (failing over within its shard).
    pub fn settings(&self, index: usize, data_dir: &Path) -> Settings {
        Settings {
            clickhouse_url: self.urls_from(index),
            clickhouse_cluster: Some(CLUSTER.to_string()),
            ..super::test_settings(self.node(index), data_dir)
        }
    }

    /// The environment for `hookhouse` commands and gateway processes on node `index`.
    pub fn env(&self, index: usize) -> Vec<(String, String)> {
        vec![
            ("HOOKHOUSE_CLICKHOUSE_URL".into(), self.urls_from(index)),
            ("HOOKHOUSE_CLICKHOUSE_CLUSTER".into(), CLUSTER.into()),
        ]
    }

    /// The last lines of every node's error log, for a failing test's message.
    pub fn error_logs(&self) -> String {
        if std::env::var_os("HOOKHOUSE_TEST_KEEP_LOGS").is_some() {
            let _ = std::fs::write(
                std::env::temp_dir().join("hookhouse-zookeeper.log"),
                self.zookeeper.log(),
            );
        }
        let mut text = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(node.server.dir.path().join("error.log"))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("<Error>")).collect();
            let tail = &lines[lines.len().saturating_sub(5)..];
            if std::env::var_os("HOOKHOUSE_TEST_KEEP_LOGS").is_some() {
                let _ = std::fs::copy(
                    node.server.dir.path().join("server.log"),
                    std::env::temp_dir().join(format!("hookhouse-node{index}.log")),
                );
            }
            text.push_str(&format!(
                "--- node {index} error.log:\n{}\n",
                tail.join("\n")
            ));
        }
        text
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.server.stop();
        }
        self.zookeeper.stop();
    }
}

/// `<remote_servers>` naming every node, replicated within a shard (`internal_replication`: a
/// `Distributed` table writes to one replica and the replicated table copies it).
fn remote_servers(nodes: &[Node], shards: usize) -> String {
    let mut xml = format!("<remote_servers><{CLUSTER}>");
    for shard in 1..=shards {
        xml.push_str("<shard><internal_replication>true</internal_replication>");
        for node in nodes.iter().filter(|n| n.shard == shard) {
            xml.push_str(&format!(
                "<replica><host>127.0.0.1</host><port>{}</port></replica>",
                node.server.tcp_port
            ));
        }
        xml.push_str("</shard>");
    }
    xml.push_str(&format!("</{CLUSTER}></remote_servers>"));
    xml
}
