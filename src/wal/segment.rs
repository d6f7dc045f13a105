//! Segment files: naming, listing, reading frames back with resynchronisation past damage, and
//! moving unreadable bytes aside.
//!
//! A segment is named after the sequence number of its first record (`00000000000000000042.wal`),
//! so sorting names sorts the log. Only the process that created a segment appends to it: after a
//! restart the log starts a new one, so a torn tail is cut once, at recovery, and never written
//! past.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{self, FrameError, Record};

const SUFFIX: &str = ".wal";
/// How much a cursor reads from disk at a time.
const READ_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    pub first_seq: u64,
    pub path: PathBuf,
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SUFFIX}"))
}

/// The segments in `dir`, oldest first. Files that are not segments are left alone.
pub fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first_seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .filter(|stem| stem.len() == 20)
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push(SegmentFile {
            first_seq,
            path: entry.path(),
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Makes a directory entry (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a cursor found next.
#[derive(Debug)]
pub enum Step {
    Record(Record),
    /// Bytes at `offset` that hold no readable frame; reading goes on after them.
    Damaged {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Nothing more to read below the limit for now.
    End,
}

/// Reads the frames of one segment in order, from disk, a chunk at a time.
pub struct SegmentCursor {
    path: PathBuf,
    /// Closed whenever the cursor has read all there is ([`SegmentCursor::close_file`]): a
    /// deleted segment frees its disk space only once no one holds it open.
    file: Option<File>,
    /// Bytes read from the file and not yet consumed start at `buf[pos]`.
    buf: Vec<u8>,
    pos: usize,
    /// File offset of `buf[0]`.
    buf_start: u64,
}

impl SegmentCursor {
    pub fn open(path: &Path) -> io::Result<SegmentCursor> {
        Ok(SegmentCursor {
            path: path.to_path_buf(),
            file: Some(File::open(path)?),
            buf: Vec::new(),
            pos: 0,
            buf_start: 0,
        })
    }

    /// Lets go of the file until more is to be read; reading reopens it (and fails with
    /// `NotFound` if the segment was deleted meanwhile).
    pub fn close_file(&mut self) {
        self.file = None;
    }

    /// File offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.buf_start + self.pos as u64
    }

    /// Next step, reading no further than file offset `limit`. With `sealed`, nothing will ever
    /// be appended, so bytes left below the limit that form no frame are damage, not a frame
    /// still being written.
    pub fn next(&mut self, limit: u64, sealed: bool) -> io::Result<Step> {
        self.compact();
        loop {
            match record::decode(&self.buf[self.pos..]) {
                Ok((rec, len)) => {
                    self.pos += len;
                    return Ok(Step::Record(rec));
                }
                Err(FrameError::Incomplete) => {
                    if self.fill(limit)? {
                        continue;
                    }
                    if sealed && self.pos < self.buf.len() {
                        return Ok(self.take_damaged(self.buf.len()));
                    }
                    return Ok(Step::End);
                }
                Err(FrameError::Corrupt) => return self.resync(limit, sealed),
            }
        }
    }

    /// After a corrupt frame at `pos`: find the next position where a whole frame decodes and
    /// report everything before it as damaged.
    fn resync(&mut self, limit: u64, sealed: bool) -> io::Result<Step> {
        let mut search_from = self.pos + 1;
        loop {
            match record::find_magic(&self.buf, search_from) {
                Some(at) => match record::decode(&self.buf[at..]) {
                    Ok(_) => return Ok(self.take_damaged(at)),
                    Err(FrameError::Corrupt) => search_from = at + 1,
                    Err(FrameError::Incomplete) => {
                        if self.fill(limit)? {
                            continue;
                        }
                        if !sealed {
                            return Ok(Step::End);
                        }
                        search_from = at + 1;
                    }
                },
                None => {
                    // Keep the last three bytes in view: a magic number may straddle the chunk.
                    search_from = self
                        .buf
                        .len()
                        .saturating_sub(record::MAGIC.len() - 1)
                        .max(search_from);
                    if self.fill(limit)? {
                        continue;
                    }
                    if !sealed {
                        return Ok(Step::End);
                    }
                    return Ok(self.take_damaged(self.buf.len()));
                }
            }
        }
    }

    fn take_damaged(&mut self, end: usize) -> Step {
        let offset = self.offset();
        let bytes = self.buf[self.pos..end].to_vec();
        self.pos = end;
        Step::Damaged { offset, bytes }
    }

    /// Drops consumed bytes from the front of the buffer. Moving the unread rest costs its
    /// length, so this waits until at least half the buffer is consumed: each byte then moves a
    /// bounded number of times, where compacting after every frame moved up to a whole chunk per
    /// frame (quadratic in the chunk, the main cost of reading the log back).
    fn compact(&mut self) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.buf_start += self.pos as u64;
            self.pos = 0;
        }
    }

    /// Reads more of the file into the buffer, up to `limit`. False when nothing more is there.
    fn fill(&mut self, limit: u64) -> io::Result<bool> {
        let read_to = self.buf_start + self.buf.len() as u64;
        if read_to >= limit {
            return Ok(false);
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::open(&self.path)?),
        };
        // Read no further than the file is long: the buffer is zero-filled up to `want`.
        let end = limit.min(file.metadata()?.len());
        if read_to >= end {
            return Ok(false);
        }
        let want = (end - read_to).min(READ_CHUNK as u64) as usize;
        let old_len = self.buf.len();
        file.seek(SeekFrom::Start(read_to))?;
        self.buf.resize(old_len + want, 0);
        let got = read_up_to(file, &mut self.buf[old_len..])?;
        self.buf.truncate(old_len + got);
        Ok(got > 0)
    }
}

fn read_up_to(file: &mut File, out: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < out.len() {
        match file.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Keeps unreadable bytes in `quarantine/` instead of deleting them, so that an operator can look
/// at them. The same bytes met again at the same place (a segment read twice across a restart)
/// are kept once; different bytes under a name already taken (a segment name given out again
/// after an empty one was removed) get a numbered name of their own.
pub fn quarantine(dir: &Path, segment: &Path, offset: u64, bytes: &[u8]) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let stem = segment
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let mut n = 0;
    let path = loop {
        let name = match n {
            0 => format!("{stem}.at-{offset}.bin"),
            n => format!("{stem}.at-{offset}.{n}.bin"),
        };
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(kept) if kept == bytes => return Ok(path),
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break path,
            Err(e) => return Err(e),
        }
    };
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::tests::sample;

    fn write_frames(path: &Path, parts: &[&[u8]]) {
        fs::write(path, parts.concat()).unwrap();
    }

    fn frame(seq: u64, body: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        sample(body).encode_into(seq, &mut buf);
        buf
    }

    fn read_all(path: &Path, sealed: bool) -> (Vec<u64>, Vec<(u64, usize)>) {
        let mut cursor = SegmentCursor::open(path).unwrap();
        let (mut seqs, mut damaged) = (Vec::new(), Vec::new());
        loop {
            match cursor.next(u64::MAX, sealed).unwrap() {
                Step::Record(r) => seqs.push(r.seq),
                Step::Damaged { offset, bytes } => damaged.push((offset, bytes.len())),
                Step::End => return (seqs, damaged),
            }
        }
    }

    #[test]
    fn names_sort_as_the_log() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [10, 2, 300] {
            fs::write(segment_path(dir.path(), seq), b"").unwrap();
        }
        fs::write(dir.path().join("checkpoint"), b"").unwrap();
        let firsts: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.first_seq)
            .collect();
        assert_eq!(firsts, [2, 10, 300]);
    }

    #[test]
    fn skips_a_corrupt_frame_in_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let mut bad = frame(2, b"{\"b\":2}");
        let n = bad.len();
        bad[n - 2] ^= 0xff;
        write_frames(&path, &[&frame(1, b"1"), &bad, &frame(3, b"3")]);
        let (seqs, damaged) = read_all(&path, true);
        assert_eq!(seqs, [1, 3]);
        assert_eq!(damaged, [(frame(1, b"1").len() as u64, n)]);
    }

    #[test]
    fn a_torn_tail_is_damage_only_when_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let whole = frame(2, b"[1,2,3]");
        write_frames(&path, &[&frame(1, b"1"), &whole[..whole.len() - 3]]);
        assert_eq!(read_all(&path, false), (vec![1], vec![]));
        let (seqs, damaged) = read_all(&path, true);
        assert_eq!(seqs, [1]);
        assert_eq!(damaged.len(), 1);
    }

    #[test]
    fn garbage_between_frames_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let garbage = vec![0xAB; READ_CHUNK + 5];
        let big = vec![b'7'; READ_CHUNK * 2];
        write_frames(
            &path,
            &[
                &frame(1, &big),
                &garbage,
                &frame(2, b"2"),
                b"HHW",
                &frame(3, &big),
            ],
        );
        let (seqs, damaged) = read_all(&path, true);
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(
            damaged.iter().map(|d| d.1).collect::<Vec<_>>(),
            [READ_CHUNK + 5, 3]
        );
    }

    #[test]
    fn quarantine_keeps_the_same_bytes_once_and_different_bytes_apart() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("quarantine");
        let p1 = quarantine(&q, Path::new("/x/0001.wal"), 7, b"abc").unwrap();
        let p2 = quarantine(&q, Path::new("/x/0001.wal"), 7, b"abc").unwrap();
        assert_eq!(p1, p2);
        assert_eq!(fs::read(&p1).unwrap(), b"abc");
        let p3 = quarantine(&q, Path::new("/x/0001.wal"), 7, b"other").unwrap();
        assert_ne!(p1, p3);
        assert_eq!(fs::read(&p3).unwrap(), b"other");
        assert_eq!(fs::read(&p1).unwrap(), b"abc");
    }
}
