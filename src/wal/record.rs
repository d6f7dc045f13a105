//! One accepted request as bytes on disk: a frame with a magic number, a length and a checksum
//! around a versioned payload.
//!
//! ```text
//! frame   := magic "HHW1" | payload_len u32 LE | crc32c u32 LE | payload
//! payload := version u8 (=1) | seq u64 LE | accepted_at f64 bits LE | request_id [20]
//!            | pipeline_id u64 LE | key [16] | token_hash [32] | body (the rest)
//! ```
//!
//! The checksum covers the length and the payload, so a torn length is caught too. The magic
//! number lets recovery find the next frame after a damaged one. A frame cannot hide inside a
//! body: bodies are UTF-8 JSON, which never holds a NUL byte, and the high byte of every
//! frame's length is zero (payloads stay far below 16 MiB).

use bytes::Bytes;

use crate::ingest::{AcceptedAt, Key, PipelineId, RequestId, TokenHash};

pub const MAGIC: [u8; 4] = *b"HHW1";
pub const HEADER_LEN: usize = 12;
pub const VERSION: u8 = 1;
/// version + seq + accepted_at + request_id + pipeline_id + key + token_hash.
pub const FIXED_PAYLOAD_LEN: usize = 1 + 8 + 8 + RequestId::LEN + 8 + 16 + 32;
/// The largest body a frame may carry: far above any sane `max_body_bytes`, and small enough
/// that the length's high byte stays zero.
pub const MAX_BODY_LEN: usize = (1 << 24) - 1 - FIXED_PAYLOAD_LEN;

/// A request accepted at the edge, before the log gives it a sequence number.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub accepted_at: AcceptedAt,
    pub request_id: RequestId,
    pub pipeline_id: PipelineId,
    pub key: Key,
    pub token_hash: TokenHash,
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
    pub body: Bytes,
}

impl NewRecord {
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + FIXED_PAYLOAD_LEN + self.body.len()
    }

    /// Appends this record's frame, numbered `seq`, to `out`.
    pub fn encode_into(&self, seq: u64, out: &mut Vec<u8>) {
        debug_assert!(
            self.body.len() <= MAX_BODY_LEN,
            "the edge caps bodies below MAX_BODY_LEN"
        );
        let payload_len = (FIXED_PAYLOAD_LEN + self.body.len()) as u32;
        let start = out.len();
        out.reserve(self.frame_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // checksum, filled in below
        out.push(VERSION);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&self.accepted_at.secs().to_bits().to_le_bytes());
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(&self.pipeline_id.get().to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.token_hash.0);
        out.extend_from_slice(&self.body);
        let crc = crc32c::crc32c(&out[start + 4..start + 8]);
        let crc = crc32c::crc32c_append(crc, &out[start + HEADER_LEN..]);
        out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Why no record could be read at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends inside the frame: a torn tail if nothing follows.
    Incomplete,
    /// Not a frame here: wrong magic, impossible length, bad checksum or unknown version.
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
    if !(FIXED_PAYLOAD_LEN..=FIXED_PAYLOAD_LEN + MAX_BODY_LEN).contains(&payload_len) {
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
    if payload[0] != VERSION {
        return Err(FrameError::Corrupt);
    }
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
        body: Bytes::copy_from_slice(&payload[FIXED_PAYLOAD_LEN..]),
    };
    Ok((record, frame_len))
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
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn round_trips() {
        let new = sample(r#"{"a":"ção 😀"}"#.as_bytes());
        let mut buf = Vec::new();
        new.encode_into(42, &mut buf);
        assert_eq!(buf.len(), new.frame_len());
        let (rec, len) = decode(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(rec.seq, 42);
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
    fn every_truncation_is_incomplete_and_every_flip_is_caught() {
        let mut buf = Vec::new();
        sample(b"[1,2,3]").encode_into(7, &mut buf);
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
        fn any_body_round_trips(body in proptest::collection::vec(any::<u8>(), 0..2048), seq: u64) {
            let new = sample(&body);
            let mut buf = Vec::new();
            new.encode_into(seq, &mut buf);
            let (rec, _) = decode(&buf).unwrap();
            prop_assert_eq!(rec.seq, seq);
            prop_assert_eq!(&rec.body[..], &body[..]);
        }
    }
}
