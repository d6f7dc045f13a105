//! Replays the fuzz corpus and every crash the fuzzers found through the fuzz targets' checks.
//!
//! `fuzz/corpus/<target>/` holds the seeds (`seed-*`, committed) and whatever fuzzing runs on
//! this machine kept there (ignored by git);
//! `fuzz/regressions/<target>/` holds the inputs that once made a target fail, copied there by
//! `scripts/fuzz.sh`. The checks are the targets' own (`fuzz/checks.rs`), so plain `cargo test`
//! runs every one of those inputs without libFuzzer or a nightly compiler. No ClickHouse needed.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly in `dir`, sorted; none if the folder does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("list the fuzz inputs").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target`'s check over every input kept for it, reporting all the failures at once.
fn replay(target: &str) -> usize {
    let check = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .expect("a known target");
    let mut files = inputs(&fuzz_dir().join("corpus").join(target));
    files.extend(inputs(&fuzz_dir().join("regressions").join(target)));
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).expect("read a fuzz input");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    files.len()
}

#[test]
fn query_params() {
    assert!(replay("query_params") > 0, "the seed corpus is missing");
}

#[test]
fn body_check() {
    assert!(replay("body_check") > 0, "the seed corpus is missing");
}

#[test]
fn wal_record() {
    assert!(replay("wal_record") > 0, "the seed corpus is missing");
}

#[test]
fn segment_scan() {
    assert!(replay("segment_scan") > 0, "the seed corpus is missing");
}

/// A target added to `checks.rs` without a test here would replay nothing.
#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = checks::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["query_params", "body_check", "wal_record", "segment_scan"]
    );
}

/// The checks themselves catch what they are meant to: a sanity check of the harness.
#[test]
fn checks_accept_known_good_inputs() {
    checks::query_params(b"pipeline_id=1&key=D538B946-9D55-405A-9BD2-72D74B1CB8F5&token=abcdefgh");
    checks::body_check(b" {\"a\":[1,2.5,null,\"\\u00e7\"]} ");
    checks::body_check(b"\t\n");
    checks::body_check(b"1e400");
    checks::wal_record(&[0; 200]);
    checks::segment_scan(b"HHW1garbage");
}

/// Writes the seed corpus: a few real inputs per target. Run it by hand when a seed should
/// change (`cargo test --test fuzz_regressions -- --ignored write_seed_corpus`); the output is
/// the same every time, so rewriting it changes nothing in git.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    use hookhouse::ingest::{AcceptedAt, BodyForm, Key, PipelineId, RequestId, Token};
    use hookhouse::wal::NewRecord;

    const KEY: &str = "d538b946-9d55-405a-9bd2-72d74b1cb8f5";
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("create the corpus folder");
        fs::write(dir.join(format!("seed-{name}")), data).expect("write a seed");
    };

    let queries: [(&str, String); 6] = [
        (
            "kondado",
            format!("pipeline_id=835212&key={KEY}&token=oseutokenaqui1234"),
        ),
        (
            "any-order-upper-key",
            format!(
                "token=oseutokenaqui1234&key={}&pipeline_id=007&extra=1",
                KEY.to_uppercase()
            ),
        ),
        (
            "percent-encoded",
            "pipeline_id=%31&key=d538b946%2D9d55-405a-9bd2-72d74b1cb8f5&token=abc%41defgh".into(),
        ),
        (
            "repeated",
            format!("pipeline_id=1&pipeline_id=2&key={KEY}&token=abcdefgh"),
        ),
        ("empty-values", "pipeline_id=&key=&token=".into()),
        (
            "longest-token",
            format!(
                "pipeline_id=18446744073709551615&key={KEY}&token={}",
                "Z".repeat(256)
            ),
        ),
    ];
    for (name, query) in queries {
        write("query_params", name, query.as_bytes());
    }

    let payloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/payloads/github");
    for name in [
        "github_app_authorization.revoked.payload.json",
        "security_advisory.published.payload.json",
        "marketplace_purchase.cancelled.payload.json",
    ] {
        let body = fs::read(payloads.join(name)).expect("the shared GitHub payloads");
        write("body_check", name, &body);
        if name.starts_with("github_app") {
            write("body_check", "cut-in-half.json", &body[..body.len() / 2]);
        }
    }
    let bodies: [(&str, &[u8]); 7] = [
        ("empty-object", b"{}"),
        ("whitespace", b" \t\r\n"),
        ("scalars", b"[1,-0.5e10,\"\\u00e7\",true,null]"),
        ("huge-exponent", b"1e400"),
        ("lone-surrogate", b"\"\\ud800\""),
        ("invalid-utf8", b"{\"a\":\"\xff\"}"),
        ("nul-in-string", b"{\"a\":\"\0\"}"),
    ];
    for (name, body) in bodies {
        write("body_check", name, body);
    }
    let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
    write("body_check", "nested-129", deep.as_bytes());

    let record = |body: &[u8]| NewRecord {
        accepted_at: AcceptedAt::from_secs(1577015690.3118637),
        request_id: RequestId::from_bytes(b"abcdefghijklmnopqrst").expect("20 lowercase letters"),
        pipeline_id: PipelineId::new(835212).expect("not zero"),
        key: Key::parse(KEY).expect("a valid key"),
        token_hash: Token::parse("oseutokenaqui1234")
            .expect("a valid token")
            .hash(),
        headers: r#"{"content-type":"application/json","x-github-event":"push"}"#.to_owned(),
        form: BodyForm::Json,
        body: bytes::Bytes::copy_from_slice(body),
    };
    let frame = |seq: u64, body: &[u8]| {
        let mut out = Vec::new();
        record(body).encode_into(seq, &mut out);
        out
    };
    // Version 1, as gateways before record format 2 wrote it: still read after an upgrade.
    let frame_v1 = |seq: u64, body: &[u8]| {
        let mut out = Vec::new();
        record(body).encode_v1_into(seq, &mut out);
        out
    };
    write(
        "wal_record",
        "frame",
        &frame(42, br#"{"action":"revoked"}"#),
    );
    write("wal_record", "frame-empty-body", &frame(1, b""));
    let mut flipped = frame(7, b"[1,2,3]");
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    write("wal_record", "frame-bad-checksum", &flipped);
    let mut form = Vec::new();
    NewRecord {
        headers: "{}".to_owned(),
        form: BodyForm::FormPayload,
        ..record(b"payload=%7B%22zen%22%3A%22Keep+it+logically+awesome.%22%7D")
    }
    .encode_into(5, &mut form);
    write("wal_record", "frame-form-payload", &form);
    write(
        "wal_record",
        "frame-v1",
        &frame_v1(42, br#"{"action":"revoked"}"#),
    );
    write("wal_record", "frame-v1-empty-body", &frame_v1(1, b""));

    let three = [frame(1, b"1"), frame_v1(2, b"{\"b\":2}"), frame(3, b"[3]")].concat();
    write("segment_scan", "three-frames", &three);
    let mut damaged = three.clone();
    damaged[frame(1, b"1").len() + 20] ^= 0xff;
    write("segment_scan", "bad-frame-in-the-middle", &damaged);
    let torn = [frame(1, b"1"), b"garbageHHW1".to_vec(), frame(2, b"2")].concat();
    write(
        "segment_scan",
        "garbage-between",
        &[&torn[..], &three[..40]].concat(),
    );
}
