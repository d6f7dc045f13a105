//! Upgrading keeps what the old gateway accepted: a log written by hookhouse with record format 1
//! (tests/fixtures/wal-v1, written by the real binary of that time) lands in full when today's
//! gateway starts on it (CONTRACT §2: every request answered 200 lands exactly once).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    pipeline_id: u64,
    key: String,
    token: String,
    requests: Vec<Sent>,
}

#[derive(Debug, Deserialize)]
struct Sent {
    request_id: String,
    body: String,
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-v1")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read fixture folder") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// The pipeline and token rows the fixture's requests were sent with, as `pipeline create` and
/// `token create` would have stored them (only the token's hash).
async fn create_credentials(ch: &ClickhouseServer, manifest: &Manifest) {
    hookhouse::clickhouse::migrate::migrate(&admin(ch))
        .await
        .expect("migrate");
    let token = hookhouse::ingest::Token::parse(&manifest.token).expect("the fixture's token");
    let hash = token.hash().to_hex();
    let id = manifest.pipeline_id;
    ch.query(&format!(
        "INSERT INTO hookhouse.pipelines (pipeline_id, name, active, created_at, version) \
         VALUES ({id}, 'upgrade', 1, now(), 1)"
    ))
    .await;
    ch.query(&format!(
        "INSERT INTO hookhouse.tokens (key, name, token_hash, pipelines, revoked, created_at, version) \
         VALUES ('{}', 'upgrade', '{hash}', [{id}], 0, now(), 1)",
        manifest.key
    ))
    .await;
}

/// `request id -> (pipeline id, key, body)` for every row of `table`; a request id seen twice
/// panics.
async fn rows(ch: &ClickhouseServer, table: &str) -> HashMap<String, (u64, String, Vec<u8>)> {
    let text = ch
        .query(&format!(
            "SELECT __kdd_request_id, pipeline_id, __kdd_requester_key, hex(__kdd_request_body) \
             FROM hookhouse.{table} FORMAT TabSeparated"
        ))
        .await;
    let mut rows = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, pipeline, key, body] = fields[..] else {
            panic!("unexpected row {line:?}");
        };
        let body = hex::decode(body).expect("hex from ClickHouse");
        let row = (
            pipeline.parse().expect("pipeline id"),
            key.to_string(),
            body,
        );
        assert!(
            rows.insert(id.to_string(), row).is_none(),
            "{id} is in {table} twice"
        );
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_by_format_1_lands_exactly_once() {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(fixture().join("manifest.json")).expect("read the manifest"),
    )
    .expect("parse the manifest");
    assert_eq!(manifest.requests.len(), 20, "the fixture as committed");
    let data = tempfile::Builder::new()
        .prefix("hookhouse-upgrade-")
        .tempdir()
        .expect("temp dir");
    copy_tree(&fixture().join("data"), data.path());

    let ch = ClickhouseServer::start();
    create_credentials(&ch, &manifest).await;
    let gw = Gateway::start_in(&ch, data, |_| {}).await;

    let landed = eventually(Duration::from_secs(30), || async {
        ch.count("SELECT count() FROM hookhouse.events").await >= 20
    })
    .await;
    let rejected = rows(&ch, "rejected").await;
    assert!(landed, "not every request landed; rejected: {rejected:?}");
    // Anything delivered twice would show up by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let events = rows(&ch, "events").await;
    assert!(rejected.is_empty(), "rejected: {rejected:?}");
    assert_eq!(events.len(), manifest.requests.len());
    for sent in &manifest.requests {
        let (pipeline, key, body) = events
            .get(&sent.request_id)
            .unwrap_or_else(|| panic!("{} did not land", sent.request_id));
        assert_eq!(*pipeline, manifest.pipeline_id);
        assert_eq!(key, &manifest.key);
        assert_eq!(
            String::from_utf8_lossy(body),
            sent.body,
            "the body of {}",
            sent.request_id
        );
        assert_eq!(body, sent.body.as_bytes());
    }

    // The upgraded gateway goes on appending (format 2) after the old records.
    let client = reqwest::Client::new();
    let query = format!(
        "?pipeline_id={}&key={}&token={}",
        manifest.pipeline_id, manifest.key, manifest.token
    );
    let answer = post(&client, &gw.url(&query), r#"{"after":"upgrade"}"#).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = answer.request_id().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            rows(&ch, "events").await.contains_key(&id)
        })
        .await,
        "a request after the upgrade lands too"
    );
    gw.stop().await;
}
