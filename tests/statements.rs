//! `hookhouse-statements` must send every request the library can send to ClickHouse: the
//! current-engine check (scripts/check-current-engine.sh) only checks what it prints. These tests
//! run it with its own canned answers (no engine needed) and compare the code paths it recorded
//! with the public async functions of the modules that talk to ClickHouse, so a new function
//! without a step in the program fails here.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

/// Functions of `Clickhouse` that only carry other code paths' statements.
const CLIENT_PRIMITIVES: &[&str] = &[
    "insert",
    "insert_one",
    "execute",
    "fetch_all",
    "fetch_all_long",
];

/// Code paths that run only with `HOOKHOUSE_CLICKHOUSE_CLUSTER`, on replicated tables and
/// ZooKeeper, which the one-server engines of the current-engine check do not have:
/// `tests/cluster.rs` runs them against ClickHouse 18.16 nodes.
const CLUSTER_ONLY: &[&str] = &["clickhouse.sync_replica", "store.sync_credentials"];

fn run_canned() -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_hookhouse-statements"))
        .arg("--canned")
        .output()
        .expect("hookhouse-statements runs");
    assert!(
        output.status.success(),
        "hookhouse-statements --canned failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("its output is UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

fn public_async_fns(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split(['(', '<']).next())
        .collect()
}

#[test]
fn every_code_path_that_talks_to_clickhouse_sends_its_requests() {
    let lines = run_canned();
    let (results, requests) = lines.split_last().expect("at least the results line");
    assert_eq!(results["what"], "results");
    let recorded: BTreeSet<&str> = requests
        .iter()
        .map(|r| {
            r["what"]
                .as_str()
                .expect("every request names its code path")
        })
        .collect();

    let client = include_str!("../src/clickhouse/client.rs");
    let mut wanted: Vec<String> = public_async_fns(client)
        .into_iter()
        .filter(|name| !CLIENT_PRIMITIVES.contains(name))
        .map(|name| format!("clickhouse.{name}"))
        .collect();
    for (module, source) in [
        ("store", include_str!("../src/clickhouse/store.rs")),
        ("delivery", include_str!("../src/clickhouse/delivery.rs")),
    ] {
        wanted.extend(
            public_async_fns(source)
                .into_iter()
                .map(|name| format!("{module}.{name}")),
        );
    }
    let migrate = public_async_fns(include_str!("../src/clickhouse/migrate.rs"));
    assert_eq!(
        migrate,
        ["schema_applied", "migrate"],
        "a new migrate function needs a step"
    );
    wanted.push("migrate".into());
    wanted.push("migrate.schema_applied".into());

    assert!(
        wanted.len() > 10,
        "the source scan found too little: {wanted:?}"
    );
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !recorded.contains(w.as_str()) && !CLUSTER_ONLY.contains(&w.as_str()))
        .collect();
    for name in CLUSTER_ONLY {
        assert!(
            wanted.iter().any(|w| w == name),
            "{name} is gone: drop it from CLUSTER_ONLY"
        );
    }
    assert!(
        missing.is_empty(),
        "src/bin/hookhouse-statements.rs calls none of {missing:?}"
    );
}

#[test]
fn inserts_carry_the_rows_uncompressed() {
    let lines = run_canned();
    let results = lines.last().expect("the results line");
    let inserted: String = lines
        .iter()
        .filter(|l| l["what"] == "delivery.insert")
        .map(|l| l["rowbinary_hex"].as_str().expect("an insert has data"))
        .collect();
    let landings = results["landings"].as_array().expect("landings");
    assert!(!landings.is_empty());
    for landing in landings {
        let body = landing["body_hex"].as_str().expect("body_hex");
        assert!(
            inserted.contains(body),
            "a body is not in the recorded inserts"
        );
    }
    for request in &lines[..lines.len() - 1] {
        if request["rowbinary_hex"].is_string() {
            assert_eq!(request["settings"]["async_insert"], "0", "{request}");
        }
    }
}
