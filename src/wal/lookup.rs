//! Finding one request in a log that a running gateway may be writing: for
//! `hookhouse request show`. Only reads: it takes no lock, writes no checkpoint and moves
//! nothing to quarantine, so it is safe beside a running gateway (or with none).

use std::io;
use std::path::Path;

use super::record::Record;
use super::segment::{list_segments, SegmentCursor, Step};
use crate::ingest::RequestId;

/// The record of `request_id` if it waits in the log of data folder `data_dir`: in a segment
/// and past the checkpoint (a delivered record stays in its segment until the whole segment is
/// delivered). A segment deleted while it is read was delivered; it is skipped. Damaged bytes
/// are skipped as the writer would skip them.
pub fn find_pending(data_dir: &Path, request_id: &RequestId) -> io::Result<Option<Record>> {
    let confirmed = super::checkpoint::read_only(data_dir)?.map_or(0, |c| c.confirmed);
    Ok(find_in_log(data_dir, request_id)?.filter(|record| record.seq > confirmed))
}

fn find_in_log(data_dir: &Path, request_id: &RequestId) -> io::Result<Option<Record>> {
    let dir = data_dir.join("wal");
    let segments = match list_segments(&dir) {
        Ok(segments) => segments,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    for segment in segments {
        match find_in_segment(&segment.path, request_id) {
            Ok(Some(record)) => return Ok(Some(record)),
            Ok(None) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

fn find_in_segment(path: &Path, request_id: &RequestId) -> io::Result<Option<Record>> {
    let mut cursor = SegmentCursor::open(path)?;
    loop {
        match cursor.next(u64::MAX, false)? {
            Step::Record(record) if record.request_id == *request_id => return Ok(Some(record)),
            Step::Record(_) | Step::Damaged { .. } => {}
            Step::End => return Ok(None),
        }
    }
}
