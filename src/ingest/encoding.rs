//! `Content-Encoding` at the edge (CONTRACT §8, "Bodies"): `gzip` (and `x-gzip`) and `deflate`
//! are decoded as the body streams in; anything else is refused before the body is read.
//!
//! The size limit is on the decoded bytes, and it holds while decoding: output grows in steps
//! that never pass `limit + 1` bytes of buffer (one byte past the limit is how "too large" is
//! told from "exactly the limit"), and every step is paid for from the caller's byte budget
//! before it is allocated. A bomb (a few KiB that would decode to a GiB) is stopped once it has
//! produced `limit + 1` bytes, having never held more.
//!
//! Why not actix's own decoder (`dev::Decompress`, there with the `compress-gzip` feature)?
//! `web::Payload`, which the ingest handler takes, is not decoded by actix (only the `Bytes`,
//! `String` and `Json` extractors are), and that decoder writes each chunk's whole output into
//! one buffer before returning it: a 16 KiB chunk of a bomb becomes tens of MiB at once, past
//! any limit. So the body is decoded here, exactly once.
//!
//! Decoding runs inline on the worker, like the JSON check that follows it: both are bounded by
//! the same limit and cost the same order of time per byte.

use flate2::{Crc, Decompress, FlushDecompress, Status};

/// A body's `Content-Encoding`, among those hookhouse decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    Identity,
    Gzip,
    Deflate,
}

/// A `Content-Encoding` hookhouse does not decode: 415 `UNSUPPORTED_ENCODING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedEncoding;

impl ContentCoding {
    /// From the values of the request's `Content-Encoding` headers: none (or an empty one) is
    /// identity; one known coding is that coding. Several codings (a list, or the header
    /// twice) are refused: no sender of webhooks stacks them, and each would multiply the work
    /// a small body can cause.
    pub fn from_header_values<'a>(
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<ContentCoding, UnsupportedEncoding> {
        let mut coding = ContentCoding::Identity;
        let mut seen = false;
        for value in values {
            let value = value.trim_ascii();
            if value.is_empty() {
                continue;
            }
            if seen {
                return Err(UnsupportedEncoding);
            }
            seen = true;
            coding = if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip")
            {
                ContentCoding::Gzip
            } else if value.eq_ignore_ascii_case(b"deflate") {
                ContentCoding::Deflate
            } else if value.eq_ignore_ascii_case(b"identity") {
                ContentCoding::Identity
            } else {
                return Err(UnsupportedEncoding);
            };
        }
        Ok(coding)
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// It decodes to more than the limit: 413.
    TooLarge,
    /// Not a valid stream of its coding (bad header, data or checksum; cut short; bytes after
    /// its end): 400 `INVALID_BODY`.
    Invalid,
    /// The byte budget of requests in flight refused the memory to go on: 503.
    OverBudget,
}

/// Asked for `n` more bytes of memory before they are allocated; `false` refuses them.
pub type Budget<'a> = dyn FnMut(usize) -> bool + 'a;

/// The first size the output buffer is given; it then doubles, up to `limit + 1`.
const FIRST_OUTPUT: usize = 8 * 1024;
/// A gzip member header longer than this (a huge file name or extra field) is refused.
const MAX_GZIP_HEADER: usize = 64 * 1024;

/// A streaming decoder for one body, fed the chunks as they arrive.
pub struct BodyDecoder {
    stream: Stream,
    out: Output,
    /// Whether any byte arrived: an empty body is empty whatever its declared coding.
    fed: bool,
}

impl BodyDecoder {
    /// A decoder for `coding`, producing at most `limit` bytes; `None` for identity, which
    /// needs none.
    pub fn new(coding: ContentCoding, limit: usize) -> Option<BodyDecoder> {
        let stream = match coding {
            ContentCoding::Identity => return None,
            ContentCoding::Gzip => Stream::Gzip {
                inflate: Decompress::new(false),
                stage: GzipStage::Header(Vec::new()),
                crc: Crc::new(),
            },
            ContentCoding::Deflate => Stream::Deflate(DeflateStage::Sniff(Vec::new())),
        };
        Some(BodyDecoder {
            stream,
            out: Output {
                buf: Vec::new(),
                limit,
            },
            fed: false,
        })
    }

    /// The bytes of memory the decoded output holds (its buffer's capacity).
    pub fn held(&self) -> usize {
        self.out.buf.capacity()
    }

    /// Decodes one chunk of the body as sent.
    pub fn feed(&mut self, chunk: &[u8], budget: &mut Budget<'_>) -> Result<(), DecodeError> {
        self.fed |= !chunk.is_empty();
        match &mut self.stream {
            Stream::Gzip {
                inflate,
                stage,
                crc,
            } => feed_gzip(inflate, stage, crc, chunk, &mut self.out, budget),
            Stream::Deflate(stage) => feed_deflate(stage, chunk, &mut self.out, budget),
        }
    }

    /// The decoded body, once the whole body was fed: refused if the stream did not end.
    pub fn finish(mut self, budget: &mut Budget<'_>) -> Result<Vec<u8>, DecodeError> {
        if !self.fed {
            return Ok(Vec::new());
        }
        let ended = match &mut self.stream {
            Stream::Gzip { stage, .. } => matches!(stage, GzipStage::Between),
            Stream::Deflate(DeflateStage::Ended) => true,
            Stream::Deflate(DeflateStage::Sniff(_)) => false,
            Stream::Deflate(DeflateStage::Inflating(inflate)) => {
                // All input is in: let the inflater say whether the stream is complete.
                inflate_into(inflate, &[], FlushDecompress::Finish, &mut self.out, budget)?.1
            }
        };
        if ended {
            Ok(self.out.buf)
        } else {
            Err(DecodeError::Invalid)
        }
    }
}

enum Stream {
    Gzip {
        inflate: Decompress,
        stage: GzipStage,
        /// CRC-32 of the current member's output.
        crc: Crc,
    },
    Deflate(DeflateStage),
}

enum GzipStage {
    /// Collecting a member's header (RFC 1952 §2.3), usually found whole in the first chunk.
    Header(Vec<u8>),
    /// Inflating a member's data; the output holds its first byte at `start`.
    Data { start: usize },
    /// Collecting a member's trailer: CRC-32 and size of its data.
    Trailer { start: usize, bytes: Vec<u8> },
    /// After a whole member: the body may end here, or another member follows.
    Between,
}

enum DeflateStage {
    /// Waiting for the first two bytes, which say zlib or raw deflate.
    Sniff(Vec<u8>),
    Inflating(Decompress),
    /// The stream ended; nothing may follow.
    Ended,
}

/// The decoded bytes so far, in a buffer that never grows past `limit + 1`.
struct Output {
    buf: Vec<u8>,
    limit: usize,
}

impl Output {
    /// Makes room for at least one more byte, or says the body is too large.
    fn make_room(&mut self, budget: &mut Budget<'_>) -> Result<(), DecodeError> {
        let (len, capacity) = (self.buf.len(), self.buf.capacity());
        if len < capacity {
            return Ok(());
        }
        if len > self.limit {
            return Err(DecodeError::TooLarge);
        }
        let target = (capacity * 2).max(FIRST_OUTPUT).min(self.limit + 1);
        if !budget(target - capacity) {
            return Err(DecodeError::OverBudget);
        }
        self.buf.reserve_exact(target - len);
        Ok(())
    }
}

fn feed_gzip(
    inflate: &mut Decompress,
    stage: &mut GzipStage,
    crc: &mut Crc,
    mut input: &[u8],
    out: &mut Output,
    budget: &mut Budget<'_>,
) -> Result<(), DecodeError> {
    while !input.is_empty() {
        match stage {
            GzipStage::Between => *stage = GzipStage::Header(Vec::new()),
            GzipStage::Header(held) => {
                // Parse from the chunk itself when a header starts and ends in it (the usual
                // case); otherwise collect the bytes until it is whole.
                let (len, from_input) = if held.is_empty() {
                    match gzip_header_len(input)? {
                        Some(len) => (len, len),
                        None => {
                            held.extend_from_slice(input);
                            (0, input.len())
                        }
                    }
                } else {
                    let before = held.len();
                    held.extend_from_slice(input);
                    match gzip_header_len(held)? {
                        Some(len) => (len, len - before),
                        None => (0, input.len()),
                    }
                };
                if len == 0 && held.len() > MAX_GZIP_HEADER {
                    return Err(DecodeError::Invalid);
                }
                input = &input[from_input..];
                if len > 0 {
                    inflate.reset(false);
                    *crc = Crc::new();
                    *stage = GzipStage::Data {
                        start: out.buf.len(),
                    };
                }
            }
            GzipStage::Data { start } => {
                let start = *start;
                let before = out.buf.len();
                let (used, ended) =
                    inflate_into(inflate, input, FlushDecompress::None, out, budget)?;
                crc.update(&out.buf[before..]);
                input = &input[used..];
                if ended {
                    *stage = GzipStage::Trailer {
                        start,
                        bytes: Vec::with_capacity(8),
                    };
                }
            }
            GzipStage::Trailer { start, bytes } => {
                let take = (8 - bytes.len()).min(input.len());
                bytes.extend_from_slice(&input[..take]);
                input = &input[take..];
                if bytes.len() == 8 {
                    let sum = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let size = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                    // ISIZE is the member's size modulo 2^32 (RFC 1952).
                    let produced = (out.buf.len() - *start) as u32;
                    if sum != crc.sum() || size != produced {
                        return Err(DecodeError::Invalid);
                    }
                    *stage = GzipStage::Between;
                }
            }
        }
    }
    Ok(())
}

/// The length of the gzip member header at the start of `buf`, `None` if `buf` ends inside it.
fn gzip_header_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    const RESERVED: u8 = 0xe0;
    let magic = [0x1f, 0x8b, 8]; // ID1, ID2, CM = deflate
    let seen = buf.len().min(magic.len());
    if buf[..seen] != magic[..seen] {
        return Err(DecodeError::Invalid);
    }
    if buf.len() < 10 {
        return Ok(None);
    }
    let flags = buf[3];
    if flags & RESERVED != 0 {
        return Err(DecodeError::Invalid);
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(len) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            // A zero-terminated string.
            match buf
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(nul) => at += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        let Some(check) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        let mut crc = Crc::new();
        crc.update(&buf[..at]);
        if u16::from_le_bytes([check[0], check[1]]) != crc.sum() as u16 {
            return Err(DecodeError::Invalid);
        }
        at += 2;
    }
    Ok((at <= buf.len()).then_some(at))
}

fn feed_deflate(
    stage: &mut DeflateStage,
    mut input: &[u8],
    out: &mut Output,
    budget: &mut Budget<'_>,
) -> Result<(), DecodeError> {
    while !input.is_empty() {
        match stage {
            DeflateStage::Sniff(first) => {
                let take = (2 - first.len()).min(input.len());
                first.extend_from_slice(&input[..take]);
                if first.len() < 2 {
                    return Ok(());
                }
                // RFC 9110 says `deflate` is the zlib format (RFC 1950), but some senders put
                // raw deflate data (RFC 1951) under that name, a confusion as old as the name;
                // browsers and curl accept both. A zlib stream starts with two bytes that say
                // so (method 8, a window of at most 32 KiB, a check multiple of 31); raw data
                // almost never does, and if it did it would fail its zlib checksum (400).
                let zlib = first[0] & 0x0f == 8
                    && first[0] >> 4 <= 7
                    && (u16::from(first[0]) << 8 | u16::from(first[1])) % 31 == 0;
                let mut inflate = Decompress::new(zlib);
                let sniffed = std::mem::take(first);
                let (used, ended) =
                    inflate_into(&mut inflate, &sniffed, FlushDecompress::None, out, budget)?;
                if ended {
                    *stage = DeflateStage::Ended;
                    if used < sniffed.len() {
                        return Err(DecodeError::Invalid);
                    }
                } else {
                    *stage = DeflateStage::Inflating(inflate);
                }
                input = &input[take..];
            }
            DeflateStage::Inflating(inflate) => {
                let (used, ended) =
                    inflate_into(inflate, input, FlushDecompress::None, out, budget)?;
                input = &input[used..];
                if ended {
                    *stage = DeflateStage::Ended;
                }
            }
            // Bytes after the end of the stream.
            DeflateStage::Ended => return Err(DecodeError::Invalid),
        }
    }
    Ok(())
}

/// Inflates `input` into `out` until the input is used up (and its output drained) or the
/// stream ends. Returns the input bytes used and whether the stream ended.
fn inflate_into(
    inflate: &mut Decompress,
    input: &[u8],
    flush: FlushDecompress,
    out: &mut Output,
    budget: &mut Budget<'_>,
) -> Result<(usize, bool), DecodeError> {
    let mut used = 0;
    loop {
        out.make_room(budget)?;
        let (total_in, total_out) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress_vec(&input[used..], &mut out.buf, flush)
            .map_err(|_| DecodeError::Invalid)?;
        let taken = (inflate.total_in() - total_in) as usize;
        let produced = inflate.total_out() - total_out;
        used += taken;
        if out.buf.len() > out.limit {
            return Err(DecodeError::TooLarge);
        }
        if status == Status::StreamEnd {
            return Ok((used, true));
        }
        let room_left = out.buf.len() < out.buf.capacity();
        if room_left && used == input.len() {
            return Ok((used, false));
        }
        if room_left && taken == 0 && produced == 0 {
            // Input and room, yet no progress: not a stream this inflater can go on with.
            return Err(DecodeError::Invalid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use proptest::prelude::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// Decodes `wire` fed in chunks of `chunk` bytes, with an unlimited budget; returns the
    /// output and the most memory the output ever held.
    fn decode(
        coding: ContentCoding,
        wire: &[u8],
        chunk: usize,
        limit: usize,
    ) -> (Result<Vec<u8>, DecodeError>, usize) {
        let mut decoder = BodyDecoder::new(coding, limit).expect("a coding, not identity");
        let mut granted = 0;
        let mut budget = |n: usize| {
            granted += n;
            true
        };
        for piece in wire.chunks(chunk.max(1)) {
            if let Err(error) = decoder.feed(piece, &mut budget) {
                return (Err(error), decoder.held());
            }
        }
        let held = decoder.held();
        let result = decoder.finish(&mut budget);
        assert!(granted >= held, "every byte held was paid for");
        (result, granted)
    }

    const TEXT: &[u8] = "{\"a\":\"ação 😀\",\"list\":[1,2,3]}".as_bytes();

    #[test]
    fn codings_from_headers() {
        use ContentCoding::*;
        let none: [&[u8]; 0] = [];
        assert_eq!(ContentCoding::from_header_values(none), Ok(Identity));
        for (values, coding) in [
            (&[&b"gzip"[..]][..], Gzip),
            (&[b"X-GZIP"], Gzip),
            (&[b" Deflate "], Deflate),
            (&[b"identity"], Identity),
            (&[b""], Identity),
        ] {
            assert_eq!(
                ContentCoding::from_header_values(values.iter().copied()),
                Ok(coding)
            );
        }
        for values in [
            &[&b"br"[..]][..],
            &[b"compress"],
            &[b"zstd"],
            &[b"gzip, deflate"],
            &[b"gzip,identity"],
            &[b"gzip", b"gzip"],
            &[b"gzip;q=1"],
        ] {
            assert_eq!(
                ContentCoding::from_header_values(values.iter().copied()),
                Err(UnsupportedEncoding),
                "{values:?}"
            );
        }
    }

    #[test]
    fn identity_needs_no_decoder() {
        assert!(BodyDecoder::new(ContentCoding::Identity, 10).is_none());
    }

    #[test]
    fn each_coding_decodes_in_any_chunking() {
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for data in [TEXT, &big[..]] {
            for (coding, wire) in [
                (ContentCoding::Gzip, gzip(data)),
                (ContentCoding::Deflate, zlib(data)),
                (ContentCoding::Deflate, raw_deflate(data)),
            ] {
                for chunk in [1, 2, 3, 7, 100, 4096, usize::MAX] {
                    let (out, _) = decode(coding, &wire, chunk, 1 << 20);
                    assert_eq!(out.as_deref(), Ok(data), "{coding:?} in chunks of {chunk}");
                }
            }
        }
    }

    #[test]
    fn several_gzip_members_are_one_body() {
        let wire = [gzip(b"[1,"), gzip(b""), gzip(b"2]")].concat();
        assert_eq!(
            decode(ContentCoding::Gzip, &wire, 5, 100).0.as_deref(),
            Ok(&b"[1,2]"[..])
        );
    }

    #[test]
    fn gzip_header_fields_are_skipped_and_checked() {
        let data = b"{\"x\":1}";
        let mut wire = gzip(data);
        // FEXTRA, FNAME, FCOMMENT and FHCRC, spliced into the header after its 10 bytes.
        let mut header = wire[..10].to_vec();
        header[3] = 0x02 | 0x04 | 0x08 | 0x10;
        header.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        header.extend_from_slice(b"event.json\0a comment\0");
        let mut crc = Crc::new();
        crc.update(&header);
        header.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
        wire.splice(..10, header.iter().copied());
        for chunk in [1, 4, 1000] {
            assert_eq!(
                decode(ContentCoding::Gzip, &wire, chunk, 100).0.as_deref(),
                Ok(&data[..])
            );
        }
        let crc_at = header.len() - 2;
        wire[crc_at] ^= 1;
        assert_eq!(
            decode(ContentCoding::Gzip, &wire, 1000, 100).0,
            Err(DecodeError::Invalid)
        );
    }

    #[test]
    fn the_limit_is_on_decoded_bytes_and_holds_while_decoding() {
        let limit = 10 * 1024 * 1024;
        let at_limit = vec![b' '; limit];
        let over = vec![b' '; limit + 1];
        for (coding, encode) in [
            (ContentCoding::Gzip, gzip as fn(&[u8]) -> Vec<u8>),
            (ContentCoding::Deflate, zlib),
            (ContentCoding::Deflate, raw_deflate),
        ] {
            let (out, held) = decode(coding, &encode(&at_limit), 16 * 1024, limit);
            assert_eq!(out.map(|o| o.len()), Ok(limit));
            assert!(held <= limit + 1, "{held}");
            let wire = encode(&over);
            assert!(
                wire.len() < 64 * 1024,
                "a bomb: {} bytes on the wire",
                wire.len()
            );
            let (out, held) = decode(coding, &wire, 16 * 1024, limit);
            assert_eq!(
                out.map(|o| o.len()),
                Err(DecodeError::TooLarge),
                "{coding:?}"
            );
            assert!(held <= limit + 1, "held {held} bytes");
        }
    }

    /// A valid gzip body of `mib` MiB of zeros, built in a blink: one MiB compressed with a
    /// full flush (no history carried over, so the piece can be repeated), repeated, then a
    /// final empty block and the trailer, whose CRC is combined rather than computed.
    fn gzip_zeros(mib: usize) -> Vec<u8> {
        use flate2::{Compress, FlushCompress};
        let zeros = vec![0u8; 1 << 20];
        let mut compress = Compress::new(Compression::best(), false);
        let mut piece = Vec::with_capacity(64 * 1024);
        let status = compress.compress_vec(&zeros, &mut piece, FlushCompress::Full);
        assert_eq!(status.unwrap(), Status::Ok);
        assert_eq!(compress.total_in(), 1 << 20, "the MiB went in at once");
        let mut one = Crc::new();
        one.update(&zeros);
        let mut crc = Crc::new();
        let mut wire = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        for _ in 0..mib {
            wire.extend_from_slice(&piece);
            crc.combine(&one);
        }
        wire.extend_from_slice(&[0x03, 0x00]); // a final, empty, fixed-Huffman block
        wire.extend_from_slice(&crc.sum().to_le_bytes());
        wire.extend_from_slice(&((mib as u64 * (1 << 20)) as u32).to_le_bytes());
        wire
    }

    #[test]
    fn the_cheap_bomb_is_a_real_gzip_body() {
        let (out, _) = decode(ContentCoding::Gzip, &gzip_zeros(3), 4096, 3 << 20);
        assert_eq!(
            out.map(|o| (o.len(), o.iter().all(|&b| b == 0))),
            Ok((3 << 20, true))
        );
    }

    #[test]
    fn a_gigabyte_bomb_stops_at_the_limit() {
        let wire = gzip_zeros(1024);
        assert!(wire.len() < 2 << 20, "{} bytes on the wire", wire.len());
        let limit = 10 * 1024 * 1024;
        let started = std::time::Instant::now();
        let (out, held) = decode(ContentCoding::Gzip, &wire, 64 * 1024, limit);
        assert_eq!(out.map(|o| o.len()), Err(DecodeError::TooLarge));
        assert!(held <= limit + 1, "held {held} bytes");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn the_budget_is_asked_before_memory_is_taken() {
        let wire = gzip(&vec![b'x'; 100_000]);
        let mut decoder = BodyDecoder::new(ContentCoding::Gzip, 1 << 20).unwrap();
        let mut left = 20_000usize;
        let mut budget = |n: usize| {
            let ok = n <= left;
            if ok {
                left -= n;
            }
            ok
        };
        assert_eq!(
            decoder.feed(&wire, &mut budget),
            Err(DecodeError::OverBudget)
        );
        assert!(decoder.held() <= 20_000, "{}", decoder.held());
    }

    #[test]
    fn broken_streams_are_invalid() {
        let gz = gzip(TEXT);
        let z = zlib(TEXT);
        let cases: Vec<(ContentCoding, Vec<u8>, &str)> = vec![
            (ContentCoding::Gzip, TEXT.to_vec(), "not gzip at all"),
            (
                ContentCoding::Gzip,
                gz[..gz.len() - 1].to_vec(),
                "trailer cut",
            ),
            (
                ContentCoding::Gzip,
                gz[..gz.len() - 8].to_vec(),
                "no trailer",
            ),
            (ContentCoding::Gzip, gz[..gz.len() / 2].to_vec(), "data cut"),
            (ContentCoding::Gzip, gz[..5].to_vec(), "header cut"),
            (
                ContentCoding::Gzip,
                [&gz[..], b"junk"].concat(),
                "junk after",
            ),
            (
                ContentCoding::Gzip,
                [&gz[..], &[0; 8]].concat(),
                "zeros after",
            ),
            (
                ContentCoding::Gzip,
                {
                    let mut bad = gz.clone();
                    let at = bad.len() - 6;
                    bad[at] ^= 1;
                    bad
                },
                "wrong CRC",
            ),
            (
                ContentCoding::Gzip,
                {
                    let mut bad = gz.clone();
                    let at = bad.len() - 2;
                    bad[at] ^= 1;
                    bad
                },
                "wrong size",
            ),
            (
                ContentCoding::Gzip,
                {
                    let mut bad = gz.clone();
                    bad[3] = 0x80;
                    bad
                },
                "reserved flag",
            ),
            (
                ContentCoding::Deflate,
                z[..z.len() - 1].to_vec(),
                "adler cut",
            ),
            (
                ContentCoding::Deflate,
                z[..z.len() / 2].to_vec(),
                "zlib cut",
            ),
            (
                ContentCoding::Deflate,
                {
                    let mut bad = z.clone();
                    let at = bad.len() - 1;
                    bad[at] ^= 1;
                    bad
                },
                "wrong adler",
            ),
            (
                ContentCoding::Deflate,
                [&z[..], b"x"].concat(),
                "junk after",
            ),
            (ContentCoding::Deflate, b"x".to_vec(), "one byte"),
            (
                ContentCoding::Deflate,
                b"\xff\xff\xff\xff".to_vec(),
                "not deflate",
            ),
        ];
        for (coding, wire, what) in cases {
            for chunk in [1, 3, 1000] {
                assert_eq!(
                    decode(coding, &wire, chunk, 1 << 20).0,
                    Err(DecodeError::Invalid),
                    "{what}, chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn no_bytes_is_an_empty_body() {
        for coding in [ContentCoding::Gzip, ContentCoding::Deflate] {
            assert_eq!(decode(coding, b"", 1, 10).0, Ok(Vec::new()));
        }
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..600) {
            for (coding, wire) in [
                (ContentCoding::Gzip, gzip(&data)),
                (ContentCoding::Deflate, zlib(&data)),
                (ContentCoding::Deflate, raw_deflate(&data)),
            ] {
                let (out, _) = decode(coding, &wire, chunk, 4096);
                prop_assert_eq!(out, Ok(data.clone()));
            }
        }

        #[test]
        fn garbage_never_panics(wire in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
            for coding in [ContentCoding::Gzip, ContentCoding::Deflate] {
                let (out, held) = decode(coding, &wire, chunk, 1000);
                prop_assert!(held <= 1001);
                if let Ok(out) = out {
                    prop_assert!(out.len() <= 1000);
                }
            }
        }
    }
}
