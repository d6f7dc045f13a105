//! Reading the log back, in order, for the batch writer; and deleting what ClickHouse has.

use std::fs;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::log::{DurablePos, Shared};
use super::record::Record;
use super::segment::{self, list_segments, SegmentCursor, SegmentFile, Step};
use crate::events;

/// Follows the log from a sequence number on, never reading past what is durable.
pub struct LogReader {
    shared: Arc<Shared>,
    current: Option<(SegmentFile, SegmentCursor)>,
    /// The last sequence number handed out.
    after_seq: u64,
}

impl LogReader {
    pub fn new(shared: Arc<Shared>, after_seq: u64) -> LogReader {
        LogReader {
            shared,
            current: None,
            after_seq,
        }
    }

    pub fn after_seq(&self) -> u64 {
        self.after_seq
    }

    /// Appends to `out` the records after the last one read that are durable at `durable`,
    /// stopping at `max_rows` records in `out` or `max_bytes` of bodies added.
    pub fn read(
        &mut self,
        durable: DurablePos,
        max_rows: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> io::Result<()> {
        let mut bytes = 0;
        while out.len() < max_rows && bytes < max_bytes {
            if self.current.is_none() && !self.open_first(durable)? {
                return Ok(());
            }
            let (seg, cursor) = self.current.as_mut().expect("opened above");
            // Only the segment being appended to can grow; every other one is sealed.
            let active = seg.first_seq == durable.segment;
            let limit = if active { durable.offset } else { u64::MAX };
            let step = match cursor.next(limit, !active) {
                // Deleted since it was opened: everything in it is in ClickHouse.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Step::End,
                other => other?,
            };
            match step {
                Step::Record(record) => {
                    if record.seq > self.after_seq {
                        self.after_seq = record.seq;
                        bytes += record.body.len();
                        out.push(record);
                    }
                }
                Step::Damaged {
                    offset,
                    bytes: damaged,
                } => {
                    let kept = segment::quarantine(
                        &self.shared.quarantine_dir,
                        &seg.path,
                        offset,
                        &damaged,
                    )?;
                    events::wal::damage_found(&seg.path, offset, damaged.len(), &kept);
                }
                Step::End if active && seg.path.exists() => {
                    cursor.close_file();
                    return Ok(());
                }
                Step::End => {
                    let current = seg.first_seq;
                    let next = list_segments(&self.shared.dir)?
                        .into_iter()
                        .find(|s| s.first_seq > current && s.first_seq <= durable.seq);
                    match next {
                        Some(next) => self.current = Some(open(next)?),
                        None => {
                            cursor.close_file();
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Opens the segment holding the record after `after_seq`. False if none is durable yet.
    fn open_first(&mut self, durable: DurablePos) -> io::Result<bool> {
        let durable_segments: Vec<SegmentFile> = list_segments(&self.shared.dir)?
            .into_iter()
            .filter(|s| s.first_seq <= durable.seq)
            .collect();
        let wanted = self.after_seq.saturating_add(1);
        let pick = durable_segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= wanted)
            .or(durable_segments.first())
            .cloned();
        match pick {
            Some(seg) => {
                self.current = Some(open(seg)?);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

fn open(seg: SegmentFile) -> io::Result<(SegmentFile, SegmentCursor)> {
    let cursor = SegmentCursor::open(&seg.path)?;
    Ok((seg, cursor))
}

/// Deletes every segment all of whose records are at or below `confirmed`, except the one being
/// appended to. Returns the bytes freed.
pub fn release_through(shared: &Shared, confirmed: u64) -> io::Result<u64> {
    // The segment being appended to, not the last one written successfully: after failed
    // writes (a full disk) the appender has moved on, and the old one must be freed.
    let active = shared.active_segment.load(Ordering::Relaxed);
    // When everything durable is confirmed, every sealed segment is: numbers given out to
    // appends that failed leave gaps that the names alone cannot see past.
    let all_confirmed = shared.durable().borrow().seq <= confirmed;
    let segments = list_segments(&shared.dir)?;
    let mut freed = 0;
    for pair in segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        if next.first_seq > confirmed.saturating_add(1) && !all_confirmed {
            break;
        }
        if seg.first_seq == active {
            continue;
        }
        let len = fs::metadata(&seg.path)?.len();
        fs::remove_file(&seg.path)?;
        shared.bytes_on_disk.fetch_sub(len, Ordering::Relaxed);
        freed += len;
    }
    Ok(freed)
}
