//! README.md's "Querying" section, run on ClickHouse 18.16 exactly as the README has it.
//!
//! Every ```` ```sql ```` block whose first line is `-- query: NAME` is taken from the README
//! (so the docs cannot drift from what is tested) and run against real GitHub webhook payloads
//! sent through a gateway; each answer is checked against the payloads, parsed here. The
//! `-- current: NAME` blocks use JSON functions that 18.16 lacks: this checks that 18.16 indeed
//! refuses them, and scripts/check-readme-queries.sh runs every block on current engines.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Every block the README has; a new one needs its check here and in
/// scripts/check_readme_queries.py.
const QUERIES: &[&str] = &[
    "requests-per-hour",
    "latest-of-a-pipeline",
    "rejected-by-reason",
    "freshness",
    "landing-lag",
    "pretty-printed-trap",
    "fields-from-bodies",
    "actions-by-regex",
];
const CURRENT_ONLY: &[&str] = &["fields-from-bodies-current", "array-elements"];

/// A key no token has.
const UNKNOWN_KEY: &str = "0b8f6c8e-3a47-4c1e-9f7e-2a5d6c4b1e90";

/// A text search finds the first `"action"` at any depth: `gollum` has none at the top level and
/// one in `pages`, as the README says.
const FIRST_ACTION_ANYWHERE: &[(&str, &str)] = &[("gollum.payload.json", "edited")];

struct Block {
    current_only: bool,
    name: String,
    sql: String,
}

/// The README's ```` ```sql ```` blocks that start with `-- query:` or `-- current:`.
fn readme_blocks() -> Vec<Block> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line != "```sql" {
            continue;
        }
        let sql: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let first = sql.first().copied().unwrap_or_default();
        let (current_only, name) = if let Some(name) = first.strip_prefix("-- query: ") {
            (false, name)
        } else if let Some(name) = first.strip_prefix("-- current: ") {
            (true, name)
        } else {
            continue;
        };
        blocks.push(Block {
            current_only,
            name: name.trim().to_string(),
            sql: sql.join("\n") + "\n",
        });
    }
    blocks
}

/// A TabSeparated field as the text it stands for.
fn unescape(field: &str) -> String {
    let mut text = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => text.push('\n'),
            Some('t') => text.push('\t'),
            Some('r') => text.push('\r'),
            Some('b') => text.push('\u{8}'),
            Some('f') => text.push('\u{c}'),
            Some('0') => text.push('\0'),
            Some(other) => text.push(other),
            None => text.push('\\'),
        }
    }
    text
}

fn rows(tsv: &str) -> Vec<Vec<String>> {
    tsv.lines()
        .map(|line| line.split('\t').map(unescape).collect())
        .collect()
}

/// `document[outer][inner]` as text, "" where either is missing or null.
fn nested(document: &Value, outer: &str, inner: &str) -> String {
    document[outer][inner]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The GitHub payloads, by file name.
fn payloads() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/payloads/github");
    let entries = std::fs::read_dir(&dir).expect("the shared GitHub payloads");
    entries
        .map(|entry| entry.expect("a payload file").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_name().expect("a file name");
            let body = std::fs::read_to_string(&path).expect("a UTF-8 payload");
            (name.to_string_lossy().into_owned(), body)
        })
        .collect()
}

/// What the gateway was sent: pipeline 1's requests in order, as (request id, payload name).
struct Sent {
    pipeline_1: Vec<(String, String)>,
    truth: BTreeMap<String, Value>,
    key: String,
}

impl Sent {
    fn name_of(&self, request_id: &str) -> &str {
        self.pipeline_1
            .iter()
            .find(|(id, _)| id == request_id)
            .map(|(_, name)| name.as_str())
            .unwrap_or_else(|| panic!("{request_id} was not sent to pipeline 1"))
    }

    fn top_action(&self, name: &str) -> String {
        self.truth[name]["action"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// What a text search for `"action"` finds.
    fn first_action(&self, name: &str) -> String {
        FIRST_ACTION_ANYWHERE
            .iter()
            .find(|(file, _)| *file == name)
            .map_or_else(|| self.top_action(name), |(_, action)| action.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_queries_answer_what_the_readme_says() {
    let ch = ClickhouseServer::start();
    let github = setup_pipeline(&ch, "github").await;
    assert_eq!(
        github.pipeline_id, 1,
        "the README's queries read pipeline_1"
    );
    let other = setup_pipeline(&ch, "other").await;
    let gateway = Gateway::start(&ch, |_| {}).await;
    let client = reqwest::Client::new();

    let payloads = payloads();
    assert!(payloads.len() >= 50, "{} payloads", payloads.len());
    let mut sent = Sent {
        pipeline_1: Vec::new(),
        truth: BTreeMap::new(),
        key: github.key.clone(),
    };
    for (name, body) in &payloads {
        let answer = post(&client, &gateway.url(&github.query()), body.clone()).await;
        assert_eq!(answer.status, 200, "{name}: {answer:?}");
        sent.pipeline_1
            .push((answer.request_id().to_string(), name.clone()));
        let parsed = serde_json::from_str(body).expect("a JSON payload");
        sent.truth.insert(name.clone(), parsed);
    }
    for n in 0..5 {
        let answer = post(
            &client,
            &gateway.url(&other.query()),
            format!("{{\"n\": {n}}}"),
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let wrong_token = format!(
        "?pipeline_id=1&key={}&token=wrongtoken0000000000",
        github.key
    );
    let unknown_key = format!("?pipeline_id=1&key={UNKNOWN_KEY}&token={}", github.token);
    for query in [
        &wrong_token,
        &wrong_token,
        &wrong_token,
        &unknown_key,
        &unknown_key,
    ] {
        let answer = post(&client, &gateway.url(query), "{}").await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let expected_events = payloads.len() as u64 + 5;
    assert!(
        eventually(Duration::from_secs(20), || async {
            ch.count("SELECT count() FROM hookhouse.events").await == expected_events
                && ch.count("SELECT count() FROM hookhouse.rejected").await == 5
        })
        .await,
        "the requests did not land"
    );

    let blocks = readme_blocks();
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    let mut expected: Vec<&str> = QUERIES.iter().chain(CURRENT_ONLY).copied().collect();
    expected.sort_unstable();
    let mut found = names.clone();
    found.sort_unstable();
    assert_eq!(found, expected, "the README's query blocks changed");
    for block in &blocks {
        assert_eq!(
            block.current_only,
            CURRENT_ONLY.contains(&block.name.as_str()),
            "{}",
            block.name
        );
        if block.current_only {
            refused_by_18_16(&ch, block).await;
        } else {
            check(&ch, block, &sent).await;
        }
    }
    gateway.stop().await;
}

/// Runs `block` on 18.16 and checks its answer.
async fn check(ch: &ClickhouseServer, block: &Block, sent: &Sent) {
    let name = block.name.as_str();
    let n = sent.pipeline_1.len();
    let answer = rows(&ch.query(&block.sql).await);
    match name {
        "requests-per-hour" => {
            let mut per_pipeline = BTreeMap::new();
            for row in &answer {
                let count: usize = row[2].parse().expect("a count");
                *per_pipeline.entry(row[0].clone()).or_insert(0) += count;
            }
            let want = BTreeMap::from([("1".to_string(), n), ("2".to_string(), 5)]);
            assert_eq!(per_pipeline, want, "{name}: {answer:?}");
        }
        "latest-of-a-pipeline" => {
            let newest: Vec<&str> = sent
                .pipeline_1
                .iter()
                .rev()
                .take(10)
                .map(|(id, _)| id.as_str())
                .collect();
            let got: Vec<&str> = answer.iter().map(|row| row[0].as_str()).collect();
            assert_eq!(got, newest, "{name}");
            for row in &answer {
                let body: Value = serde_json::from_str(&row[2]).expect("a stored body");
                assert_eq!(
                    body,
                    sent.truth[sent.name_of(&row[0])],
                    "{name}: {}",
                    row[0]
                );
            }
        }
        "rejected-by-reason" => {
            let got: Vec<[&str; 4]> = answer
                .iter()
                .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()])
                .collect();
            let want = vec![
                ["WRONG_TOKEN", "1", sent.key.as_str(), "3"],
                ["UNKNOWN_KEY", "1", UNKNOWN_KEY, "2"],
            ];
            assert_eq!(got, want, "{name}");
        }
        "freshness" => {
            let got: BTreeMap<&str, (i64, &str)> = answer
                .iter()
                .map(|r| {
                    (
                        r[0].as_str(),
                        (r[2].parse().expect("seconds"), r[3].as_str()),
                    )
                })
                .collect();
            let (lag_1, count_1) = got["1"];
            let (lag_2, count_2) = got["2"];
            assert_eq!((count_1, count_2), (n.to_string().as_str(), "5"), "{name}");
            assert!(
                (0..600).contains(&lag_1) && (0..600).contains(&lag_2),
                "{name}: {answer:?}"
            );
        }
        "landing-lag" => check_landing_lag(ch, block).await,
        "pretty-printed-trap" => {
            assert_eq!(answer, vec![vec![String::new(), n.to_string()]], "{name}");
        }
        "fields-from-bodies" => {
            assert_eq!(answer.len(), n, "{name}");
            for row in &answer {
                let file = sent.name_of(&row[0]);
                let document = &sent.truth[file];
                let want = [
                    sent.first_action(file),
                    nested(document, "repository", "full_name"),
                    nested(document, "sender", "login"),
                ];
                assert_eq!(row[1..], want, "{name}: {file}");
            }
            let with_action = answer.iter().filter(|row| !row[1].is_empty()).count();
            assert!(with_action >= 40, "{name}: only {with_action} actions");
        }
        "actions-by-regex" => {
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            for (_, file) in &sent.pipeline_1 {
                *want.entry(sent.first_action(file)).or_default() += 1;
            }
            let got: BTreeMap<String, u64> = answer
                .iter()
                .map(|r| (r[0].clone(), r[1].parse().expect("a count")))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        other => panic!("README block {other} has no check here"),
    }
}

/// The parts of the inserts that landed the rows are still unmerged for a while: at least one
/// shows, with a lag in whole seconds that is small and not negative.
async fn check_landing_lag(ch: &ClickhouseServer, block: &Block) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = rows(&ch.query(&block.sql).await);
        if !answer.is_empty() {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "landing-lag: no part of level 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for row in &answer {
        let newest: i64 = row[2].parse().expect("seconds");
        let oldest: i64 = row[3].parse().expect("seconds");
        assert!(
            0 <= newest && newest <= oldest && oldest < 60,
            "landing-lag: {answer:?}"
        );
    }
}

/// 18.16 has no JSON functions: the README says these blocks are for current releases only.
async fn refused_by_18_16(ch: &ClickhouseServer, block: &Block) {
    let response = reqwest::Client::new()
        .post(ch.url())
        .body(block.sql.clone())
        .send()
        .await
        .expect("ClickHouse answers");
    let status = response.status();
    let text = response.text().await.expect("ClickHouse answer body");
    assert!(
        !status.is_success() && text.contains("Unknown function JSON"),
        "{}: {status} {text}",
        block.name
    );
}
