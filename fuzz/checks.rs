//! The checks the fuzz targets make, in one place.
//!
//! Included with `#[path]` by every target under `fuzz_targets/` and by the main crate's
//! `tests/fuzz_regressions.rs`, which replays `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through them, so that a seed or a crash found once is checked by
//! plain `cargo test` for good. Each check takes the raw input and panics when a property fails;
//! nothing here may depend on libFuzzer.

// Each fuzz target uses one check; the regression test uses them all.
#![allow(dead_code)]

use std::io::Write;

use hookhouse::ingest::{check_body, parse_query, BodyError, Key, Token};
use hookhouse::wal::record::{self, FrameError, NewRecord, Record, HEADER_LEN, MAGIC};
use hookhouse::wal::segment::{SegmentCursor, Step};

/// A property over one input: returns if it holds, panics if not.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name: the names of their folders under `corpus/` and `regressions/`.
pub const TARGETS: [(&str, Check); 4] = [
    ("query_params", query_params),
    ("body_check", body_check),
    ("wal_record", wal_record),
    ("segment_scan", segment_scan),
];

/// `parse_query` never panics, and what it accepts is what the types promise.
pub fn query_params(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let Ok(credentials) = parse_query(&query) else {
        return;
    };
    assert!(credentials.pipeline_id.get() >= 1, "pipeline_id 0 accepted");

    let key = credentials.key.to_string();
    assert_eq!(key.len(), 36, "key {key:?} is not 36 characters");
    for (i, b) in key.bytes().enumerate() {
        match i {
            8 | 13 | 18 | 23 => assert_eq!(b, b'-', "key {key:?}: no hyphen at {i}"),
            _ => assert!(
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
                "key {key:?}: not lowercase hex at {i}"
            ),
        }
    }
    assert_eq!(
        Key::parse(&key),
        Some(credentials.key),
        "key does not re-parse"
    );

    let token = credentials.token.reveal();
    assert!(
        (Token::MIN_LEN..=Token::MAX_LEN).contains(&token.len()),
        "token of {} bytes accepted",
        token.len()
    );
    assert!(
        token.bytes().all(|b| b.is_ascii_alphanumeric()),
        "token with a non-alphanumeric byte accepted"
    );

    // What was accepted, written back as a plain query, parses to the same values.
    let again = parse_query(&format!(
        "pipeline_id={}&key={key}&token={token}",
        credentials.pipeline_id
    ))
    .expect("accepted values written back parse again");
    assert_eq!(again.pipeline_id, credentials.pipeline_id);
    assert_eq!(again.key, credentials.key);
    assert_eq!(again.token, credentials.token);
}

/// `check_body` never panics and accepts exactly the UTF-8 texts that serde_json parses into a
/// `Value`; an empty or all-whitespace body is `Empty`, whatever a parser would say.
pub fn body_check(data: &[u8]) {
    let ours = check_body(data);
    if data.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(ours, Err(BodyError::Empty), "whitespace body not Empty");
        return;
    }
    let reference = std::str::from_utf8(data).is_ok()
        && serde_json::from_slice::<serde_json::Value>(data).is_ok();
    match ours {
        Ok(()) => assert!(
            reference,
            "check_body accepted what serde_json refuses: {:?}",
            String::from_utf8_lossy(data)
        ),
        Err(BodyError::Invalid) => assert!(
            !reference,
            "check_body refused what serde_json accepts: {:?}",
            String::from_utf8_lossy(data)
        ),
        Err(BodyError::Empty) => panic!("a body with a non-whitespace byte called Empty"),
    }
}

/// `decode` never panics, and a frame it accepts is exactly what the encoder writes for that
/// record. A fuzzer rarely forges a CRC-32C, so the input is also decoded once more with its
/// magic and checksum made right, to reach the field checks behind the checksum.
pub fn wal_record(data: &[u8]) {
    check_decoded(data);
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        fixed[..4].copy_from_slice(&MAGIC);
        let payload_len = u32::from_le_bytes(fixed[4..8].try_into().expect("4 bytes")) as usize;
        let end = HEADER_LEN.saturating_add(payload_len).min(fixed.len());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&fixed[4..8]), &fixed[HEADER_LEN..end]);
        fixed[8..12].copy_from_slice(&crc.to_le_bytes());
        check_decoded(&fixed);
    }
}

fn check_decoded(buf: &[u8]) {
    let (record, len) = match record::decode(buf) {
        Ok(decoded) => decoded,
        Err(FrameError::Incomplete) => {
            // Incomplete means "a frame may still be arriving": the bytes seen so far start like one.
            let seen = buf.len().min(MAGIC.len());
            assert_eq!(buf[..seen], MAGIC[..seen], "Incomplete without the magic");
            return;
        }
        Err(FrameError::Corrupt) => return,
    };
    assert!(
        len <= buf.len(),
        "frame of {len} bytes from {} bytes",
        buf.len()
    );
    assert_eq!(
        reencode(&record, buf[HEADER_LEN]),
        buf[..len],
        "re-encoding differs"
    );
    // A frame cut short is never mistaken for a record, nor for corruption.
    for cut in [0, 1, 3, 4, HEADER_LEN - 1, HEADER_LEN, len / 2, len - 1] {
        assert_eq!(
            record::decode(&buf[..cut]).err(),
            Some(FrameError::Incomplete),
            "frame cut at {cut} of {len}"
        );
    }
}

/// The frame the appender would write for `record` at its sequence number, in `version` (a
/// version-1 frame, which only older gateways wrote, is re-encoded as they did).
pub fn reencode(record: &Record, version: u8) -> Vec<u8> {
    let new = NewRecord {
        accepted_at: record.accepted_at,
        request_id: record.request_id,
        pipeline_id: record.pipeline_id,
        key: record.key,
        token_hash: record.token_hash,
        headers: record.headers.clone(),
        form: record.form,
        body: record.body.clone(),
    };
    let mut out = Vec::with_capacity(new.frame_len());
    if version == record::VERSION_1 {
        new.encode_v1_into(record.seq, &mut out);
        return out;
    }
    new.encode_into(record.seq, &mut out);
    assert_eq!(
        out.len(),
        new.frame_len(),
        "frame_len disagrees with the encoder"
    );
    out
}

/// One step of a cursor over a whole file: a record or a damaged region, by byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Region {
    Record { start: u64, end: u64, seq: u64 },
    Damaged { start: u64, end: u64 },
}

/// A segment of arbitrary bytes read back as a sealed segment: the cursor never panics, and its
/// records and damaged regions tile the file exactly, in order. Read as a segment still being
/// written, it reports a prefix of the same steps.
pub fn segment_scan(data: &[u8]) {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(data).expect("write the segment");
    file.flush().expect("flush the segment");

    let sealed = scan(file.path(), data, true);
    let mut at = 0u64;
    for region in &sealed {
        let (start, end) = match *region {
            Region::Record { start, end, .. } | Region::Damaged { start, end } => (start, end),
        };
        assert_eq!(start, at, "gap or overlap before {region:?}");
        assert!(end > start, "empty region {region:?}");
        at = end;
    }
    assert_eq!(
        at,
        data.len() as u64,
        "the regions do not reach the end of the file"
    );
    for pair in sealed.windows(2) {
        assert!(
            !matches!(pair, [Region::Damaged { .. }, Region::Damaged { .. }]),
            "two damaged regions in a row: {pair:?}"
        );
    }

    let growing = scan(file.path(), data, false);
    assert!(
        growing.len() <= sealed.len() && growing[..] == sealed[..growing.len()],
        "an unsealed read is not a prefix of the sealed one: {growing:?} vs {sealed:?}"
    );
}

fn scan(path: &std::path::Path, data: &[u8], sealed: bool) -> Vec<Region> {
    let mut cursor = SegmentCursor::open(path).expect("open the segment");
    let mut regions = Vec::new();
    // Every step but the last consumes at least one byte.
    for _ in 0..=data.len() + 1 {
        let start = cursor.offset();
        let step = cursor.next(u64::MAX, sealed).expect("read the segment");
        let end = cursor.offset();
        match step {
            Step::Record(record) => {
                let frame = &data[start as usize..end as usize];
                assert_eq!(
                    reencode(&record, frame[HEADER_LEN]),
                    frame,
                    "record at {start} re-encodes differently"
                );
                regions.push(Region::Record {
                    start,
                    end,
                    seq: record.seq,
                });
            }
            Step::Damaged { offset, bytes } => {
                assert_eq!(offset, start, "damage reported away from the cursor");
                assert_eq!(
                    bytes,
                    &data[start as usize..end as usize],
                    "damaged bytes are not the file's"
                );
                regions.push(Region::Damaged { start, end });
            }
            Step::End => {
                assert_eq!(start, end, "End moved the cursor");
                return regions;
            }
        }
    }
    panic!(
        "the cursor did not reach End within {} steps",
        data.len() + 2
    );
}
