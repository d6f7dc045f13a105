//! One accepted request as bytes on disk: a frame with a magic number, a length and a checksum
//! around a versioned payload.
//!
//! ```text
//! frame   := magic "HHW1" | payload_len u32 LE | crc32c u32 LE | payload
//! payload := version u8 | seq u64 LE | accepted_at f64 bits LE | request_id [20]
//!            | pipeline_id u64 LE | key [16] | token_hash [32] | rest
//! rest (version 2) := flags u8 | headers_len u32 LE | headers [headers_len] | body (the rest)
//! rest (version 1) := body (the rest)
//! ```
//!
//! `body` is the body as sent, after any `Content-Encoding` was removed: the bytes a signature
//! covers. `flags` bit 0 says how to read it ([`BodyForm`]): clear, it is the JSON text to store;
//! set, it is a form (`application/x-www-form-urlencoded`) whose `payload` field is (GitHub's
//! default delivery). The other bits are zero. `headers` is the request's headers as the JSON
//! object of [`crate::ingest::Headers::to_json`], at most [`MAX_HEADERS_LEN`] bytes.
//!
//! Version 1 (no flags, no headers) is what hookhouse wrote before; it is read as a JSON body
//! with headers `{}`, so a log left by an older gateway still lands after an upgrade
//! (`tests/upgrade.rs`). Only version 2 is written.
//!
//! The checksum covers the length and the payload, so a torn length is caught too. The magic
//! number lets recovery find the next frame after a damaged one. A frame cannot hide inside a
//! body or the headers: neither ever holds a NUL byte (JSON has none outside escapes, the edge
//! refuses a form body with one, and headers are serialized JSON), while the high byte of every
//! frame's length is zero (payloads stay below 16 MiB: [`MAX_HEADERS_LEN`] and
//! [`MAX_BODY_LEN`] are chosen so).

use bytes::Bytes;

pub use crate::ingest::BodyForm;
use crate::ingest::{AcceptedAt, Key, PipelineId, RequestId, TokenHash};

pub const MAGIC: [u8; 4] = *b"HHW1";
pub const HEADER_LEN: usize = 12;
/// The version every new frame is written with.
pub const VERSION: u8 = 2;
/// The first version: read, never written.
pub const VERSION_1: u8 = 1;
/// version + seq + accepted_at + request_id + pipeline_id + key + token_hash.
pub const FIXED_PAYLOAD_LEN: usize = 1 + 8 + 8 + RequestId::LEN + 8 + 16 + 32;
/// What version 2 adds before the headers: flags + headers_len.
pub const V2_FIELDS_LEN: usize = 1 + 4;
/// The longest payload: the length's high byte stays zero.
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;
/// The largest headers JSON a frame may carry; the edge refuses a request whose headers are
/// larger (431 `HEADERS_TOO_LARGE`).
pub const MAX_HEADERS_LEN: usize = 64 * 1024;
/// The largest body a frame may carry beside the largest headers: far above any sane
/// `max_body_bytes`, and small enough that the length's high byte stays zero.
pub const MAX_BODY_LEN: usize =
    MAX_PAYLOAD_LEN - FIXED_PAYLOAD_LEN - V2_FIELDS_LEN - MAX_HEADERS_LEN;

// The largest frame keeps the length's high byte zero, with room for any sane body limit.
const _: () = assert!(MAX_PAYLOAD_LEN < 1 << 24 && MAX_BODY_LEN > 16_000_000);

/// `flags` bit 0: the body is a form whose `payload` field is the JSON ([`BodyForm::FormPayload`]).
const FLAG_FORM_PAYLOAD: u8 = 1;

/// A request accepted at the edge, before the log gives it a sequence number.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub accepted_at: AcceptedAt,
    pub request_id: RequestId,
    pub pipeline_id: PipelineId,
    pub key: Key,
    pub token_hash: TokenHash,
    /// The request's headers, as [`crate::ingest::Headers::to_json`] writes them; at most
    /// [`MAX_HEADERS_LEN`] bytes.
    pub headers: String,
    /// How to read `body`.
    pub form: BodyForm,
    /// The body as sent, after `Content-Encoding` was removed: what a signature covers.
    pub body: Bytes,
}

/// A request as read back from the log.
#[derive(Debug, Clone)]
pub struct Record {
    /// Position in the log: strictly increasing, with gaps where appends failed.
    pub seq: u64,
    pub accepted_at: AcceptedAt,
    pub request_id: RequestId,
    pub pipeline_id: PipelineId,
    pub key: Key,
    pub token_hash: TokenHash,
    /// The request's headers as a JSON object; `{}` for a version-1 record.
    pub headers: String,
    /// How to read `body`; [`BodyForm::Json`] for a version-1 record.
    pub form: BodyForm,
    /// The body as sent, after `Content-Encoding` was removed; the text to store is
    /// [`crate::ingest::body::stored_body`] of it.
    pub body: Bytes,
}

impl NewRecord {
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + FIXED_PAYLOAD_LEN + V2_FIELDS_LEN + self.headers.len() + self.body.len()
    }

    /// Appends this record's frame, numbered `seq`, to `out`.
    pub fn encode_into(&self, seq: u64, out: &mut Vec<u8>) {
        debug_assert!(
            self.body.len() <= MAX_BODY_LEN,
            "the edge caps bodies below MAX_BODY_LEN"
        );
        debug_assert!(
            self.headers.len() <= MAX_HEADERS_LEN,
            "the edge refuses headers over MAX_HEADERS_LEN"
        );
        let start = self.encode_fixed(VERSION, seq, self.frame_len(), out);
        let flags = match self.form {
            BodyForm::Json => 0,
            BodyForm::FormPayload => FLAG_FORM_PAYLOAD,
        };
        out.push(flags);
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        out.extend_from_slice(self.headers.as_bytes());
        out.extend_from_slice(&self.body);
        seal(out, start);
    }

    /// Appends this record's frame in version 1, as hookhouse wrote it before version 2:
    /// without headers and form. Only for tests and the fuzz checks, which must keep making
    /// such frames to show they are still read.
    #[doc(hidden)]
    pub fn encode_v1_into(&self, seq: u64, out: &mut Vec<u8>) {
        let frame_len = HEADER_LEN + FIXED_PAYLOAD_LEN + self.body.len();
        let start = self.encode_fixed(VERSION_1, seq, frame_len, out);
        out.extend_from_slice(&self.body);
        seal(out, start);
    }

    /// The frame header (checksum left zero) and the fixed fields; returns where the frame starts.
    fn encode_fixed(&self, version: u8, seq: u64, frame_len: usize, out: &mut Vec<u8>) -> usize {
        let payload_len = (frame_len - HEADER_LEN) as u32;
        let start = out.len();
        out.reserve(frame_len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // checksum, filled in by `seal`
        out.push(version);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&self.accepted_at.secs().to_bits().to_le_bytes());
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(&self.pipeline_id.get().to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.token_hash.0);
        start
    }
}

/// Fills in the checksum of the frame that starts at `start` and ends `out`.
fn seal(out: &mut [u8], start: usize) {
    let crc = crc32c::crc32c(&out[start + 4..start + 8]);
    let crc = crc32c::crc32c_append(crc, &out[start + HEADER_LEN..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Why no record could be read at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends inside the frame: a torn tail if nothing follows.
    Incomplete,
    /// Not a frame here: wrong magic, impossible length, bad checksum, unknown version or
    /// fields that the version does not allow.
    Corrupt,
}

/// Decodes the frame at the start of `buf`, returning the record and the frame's length.
pub fn decode(buf: &[u8]) -> Result<(Record, usize), FrameError> {
    if buf.len() < HEADER_LEN {
        return if MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            Err(FrameError::Incomplete)
        } else {
            Err(FrameError::Corrupt)
        };
    }
    if buf[..4] != MAGIC {
        return Err(FrameError::Corrupt);
    }
    let payload_len = u32::from_le_bytes(field(buf, 4)) as usize;
    if !(FIXED_PAYLOAD_LEN..=MAX_PAYLOAD_LEN).contains(&payload_len) {
        return Err(FrameError::Corrupt);
    }
    let frame_len = HEADER_LEN + payload_len;
    if buf.len() < frame_len {
        return Err(FrameError::Incomplete);
    }
    let crc = u32::from_le_bytes(field(buf, 8));
    let payload = &buf[HEADER_LEN..frame_len];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[4..8]), payload) != crc {
        return Err(FrameError::Corrupt);
    }
    let (headers, form, body) = match payload[0] {
        VERSION => decode_v2_rest(&payload[FIXED_PAYLOAD_LEN..])?,
        VERSION_1 => (
            "{}".to_owned(),
            BodyForm::Json,
            &payload[FIXED_PAYLOAD_LEN..],
        ),
        _ => return Err(FrameError::Corrupt),
    };
    let request_id = RequestId::from_bytes(&payload[17..37]).ok_or(FrameError::Corrupt)?;
    let pipeline_id =
        PipelineId::new(u64::from_le_bytes(field(payload, 37))).ok_or(FrameError::Corrupt)?;
    let record = Record {
        seq: u64::from_le_bytes(field(payload, 1)),
        accepted_at: AcceptedAt::from_secs(f64::from_bits(u64::from_le_bytes(field(payload, 9)))),
        request_id,
        pipeline_id,
        key: Key::from_bytes(field(payload, 45)),
        token_hash: TokenHash(field(payload, 61)),
        headers,
        form,
        body: Bytes::copy_from_slice(body),
    };
    Ok((record, frame_len))
}

/// Version 2's fields after the fixed ones: the headers, the body's form and the body.
fn decode_v2_rest(rest: &[u8]) -> Result<(String, BodyForm, &[u8]), FrameError> {
    if rest.len() < V2_FIELDS_LEN {
        return Err(FrameError::Corrupt);
    }
    let form = match rest[0] {
        0 => BodyForm::Json,
        FLAG_FORM_PAYLOAD => BodyForm::FormPayload,
        _ => return Err(FrameError::Corrupt),
    };
    let headers_len = u32::from_le_bytes(field(rest, 1)) as usize;
    if headers_len > MAX_HEADERS_LEN || headers_len > rest.len() - V2_FIELDS_LEN {
        return Err(FrameError::Corrupt);
    }
    let (headers, body) = rest[V2_FIELDS_LEN..].split_at(headers_len);
    let headers = std::str::from_utf8(headers).map_err(|_| FrameError::Corrupt)?;
    Ok((headers.to_owned(), form, body))
}

/// The next offset after `from` where a frame's magic number starts, if any.
pub fn find_magic(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|p| p + from)
}

fn field<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N]
        .try_into()
        .expect("callers check the length first")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn sample(body: &[u8]) -> NewRecord {
        NewRecord {
            accepted_at: AcceptedAt::from_secs(1577015690.3118637),
            request_id: RequestId::generate(),
            pipeline_id: PipelineId::new(835212).unwrap(),
            key: Key::generate(),
            token_hash: crate::ingest::Token::generate().hash(),
            headers: "{}".to_owned(),
            form: BodyForm::Json,
            body: Bytes::copy_from_slice(body),
        }
    }

    /// A record with headers and a form body: every field of version 2 in use.
    fn sample_form() -> NewRecord {
        NewRecord {
            headers:
                r#"{"content-type":"application/x-www-form-urlencoded","x-github-event":"push"}"#
                    .to_owned(),
            form: BodyForm::FormPayload,
            ..sample(b"payload=%7B%22a%22%3A1%7D")
        }
    }

    fn assert_same(rec: &Record, new: &NewRecord) {
        assert_eq!(
            rec.accepted_at.secs().to_bits(),
            new.accepted_at.secs().to_bits()
        );
        assert_eq!(rec.request_id, new.request_id);
        assert_eq!(rec.pipeline_id, new.pipeline_id);
        assert_eq!(rec.key, new.key);
        assert!(rec.token_hash.matches(&new.token_hash));
        assert_eq!(rec.body, new.body);
    }

    #[test]
    fn round_trips() {
        for new in [sample(r#"{"a":"ção 😀"}"#.as_bytes()), sample_form()] {
            let mut buf = Vec::new();
            new.encode_into(42, &mut buf);
            assert_eq!(buf.len(), new.frame_len());
            assert_eq!(buf[HEADER_LEN], VERSION);
            let (rec, len) = decode(&buf).unwrap();
            assert_eq!(len, buf.len());
            assert_eq!(rec.seq, 42);
            assert_same(&rec, &new);
            assert_eq!(rec.headers, new.headers);
            assert_eq!(rec.form, new.form);
        }
    }

    #[test]
    fn version_1_reads_as_json_without_headers() {
        let new = sample_form();
        let mut buf = Vec::new();
        new.encode_v1_into(9, &mut buf);
        assert_eq!(buf[HEADER_LEN], VERSION_1);
        assert_eq!(buf.len(), HEADER_LEN + FIXED_PAYLOAD_LEN + new.body.len());
        let (rec, len) = decode(&buf).unwrap();
        assert_eq!((rec.seq, len), (9, buf.len()));
        assert_same(&rec, &new);
        assert_eq!(rec.headers, "{}");
        assert_eq!(rec.form, BodyForm::Json);
    }

    /// The frames the gateway of commit fcdb052 wrote (tests/fixtures/wal-v1), read directly:
    /// the bytes of the old format, not this file's idea of them.
    #[test]
    fn the_old_gateways_log_decodes() {
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-v1");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture.join("manifest.json")).unwrap()).unwrap();
        let segment = std::fs::read(fixture.join("data/wal/00000000000000000001.wal")).unwrap();
        let mut at = 0;
        let mut records = Vec::new();
        while at < segment.len() {
            let (rec, len) = decode(&segment[at..]).expect("every frame decodes");
            assert_eq!(segment[at + HEADER_LEN], VERSION_1);
            at += len;
            records.push(rec);
        }
        let sent = manifest["requests"].as_array().unwrap();
        assert_eq!(records.len(), sent.len());
        for (rec, sent) in records.iter().zip(sent) {
            assert_eq!(
                rec.request_id.as_str(),
                sent["request_id"].as_str().unwrap()
            );
            assert_eq!(&rec.body[..], sent["body"].as_str().unwrap().as_bytes());
            assert_eq!(
                rec.pipeline_id.get(),
                manifest["pipeline_id"].as_u64().unwrap()
            );
            assert_eq!(rec.key.to_string(), manifest["key"].as_str().unwrap());
            assert_eq!((rec.headers.as_str(), rec.form), ("{}", BodyForm::Json));
        }
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_flip_is_caught() {
        let mut v2 = Vec::new();
        NewRecord {
            headers: r#"{"a":"b"}"#.to_owned(),
            ..sample(b"[1,2,3]")
        }
        .encode_into(7, &mut v2);
        let mut v1 = Vec::new();
        sample(b"[1,2,3]").encode_v1_into(7, &mut v1);
        for buf in [v2, v1] {
            for cut in 0..buf.len() {
                assert_eq!(
                    decode(&buf[..cut]).unwrap_err(),
                    FrameError::Incomplete,
                    "cut at {cut}"
                );
            }
            for i in 0..buf.len() {
                for bit in 0..8 {
                    let mut bad = buf.clone();
                    bad[i] ^= 1 << bit;
                    assert!(
                        decode(&bad).is_err(),
                        "flip of bit {bit} in byte {i} went unnoticed"
                    );
                }
            }
        }
    }

    /// Fields the version does not allow are refused even behind a right checksum.
    #[test]
    fn impossible_fields_are_corrupt_even_with_a_good_checksum() {
        let mut good = Vec::new();
        NewRecord {
            headers: r#"{"a":"é"}"#.to_owned(),
            ..sample(b"{}")
        }
        .encode_into(3, &mut good);
        let flags = HEADER_LEN + FIXED_PAYLOAD_LEN;
        let headers_len = flags + 1;
        let headers = flags + V2_FIELDS_LEN;
        let spoil = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut bad = good.clone();
            change(&mut bad);
            seal(&mut bad, 0);
            decode(&bad).map(|_| ())
        };
        assert_eq!(spoil(&|_| {}), Ok(()), "resealing alone changes nothing");
        for version in [0, 3, 255] {
            assert_eq!(
                spoil(&|b| b[HEADER_LEN] = version),
                Err(FrameError::Corrupt)
            );
        }
        for bits in [2, 3, 0x80] {
            assert_eq!(spoil(&|b| b[flags] = bits), Err(FrameError::Corrupt));
        }
        let too_long = (good.len() - headers + 1) as u32;
        assert_eq!(
            spoil(&|b| b[headers_len..headers].copy_from_slice(&too_long.to_le_bytes())),
            Err(FrameError::Corrupt)
        );
        let over_cap = (MAX_HEADERS_LEN + 1) as u32;
        assert_eq!(
            spoil(&|b| b[headers_len..headers].copy_from_slice(&over_cap.to_le_bytes())),
            Err(FrameError::Corrupt)
        );
        // Cut the "é" in half: the headers are no longer UTF-8.
        assert_eq!(spoil(&|b| b[headers + 7] = 0xff), Err(FrameError::Corrupt));
        // A version-2 payload too short to hold its own fields.
        let mut short = good[..HEADER_LEN + FIXED_PAYLOAD_LEN + 2].to_vec();
        short[4..8].copy_from_slice(&((FIXED_PAYLOAD_LEN + 2) as u32).to_le_bytes());
        seal(&mut short, 0);
        assert_eq!(decode(&short).unwrap_err(), FrameError::Corrupt);
    }

    #[test]
    fn finds_the_next_frame() {
        let mut buf = b"garbage".to_vec();
        sample(b"1").encode_into(1, &mut buf);
        assert_eq!(find_magic(&buf, 0), Some(7));
        assert_eq!(find_magic(&buf, 8), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_record_round_trips(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            headers in ".{0,300}",
            form: bool,
            seq: u64,
        ) {
            let form = if form { BodyForm::FormPayload } else { BodyForm::Json };
            let new = NewRecord { headers: headers.clone(), form, ..sample(&body) };
            let mut buf = Vec::new();
            new.encode_into(seq, &mut buf);
            let (rec, len) = decode(&buf).unwrap();
            prop_assert_eq!(len, buf.len());
            prop_assert_eq!(rec.seq, seq);
            prop_assert_eq!(&rec.body[..], &body[..]);
            prop_assert_eq!(rec.headers, headers);
            prop_assert_eq!(rec.form, form);
        }

        #[test]
        fn any_version_1_body_round_trips(body in proptest::collection::vec(any::<u8>(), 0..2048), seq: u64) {
            let mut buf = Vec::new();
            sample(&body).encode_v1_into(seq, &mut buf);
            let (rec, _) = decode(&buf).unwrap();
            prop_assert_eq!(rec.seq, seq);
            prop_assert_eq!(&rec.body[..], &body[..]);
            prop_assert_eq!(rec.headers.as_str(), "{}");
            prop_assert_eq!(rec.form, BodyForm::Json);
        }
    }
}
