//! The log's single appender: recovery at open, then one thread that group-commits.
//!
//! Every accepted request is sent to the appender thread with a reply channel. The thread takes
//! everything queued, encodes it into one buffer, writes it with one `write`, fsyncs once and
//! then answers them all, so concurrent requests share each fsync. Sequence numbers are handed
//! out here, in file order. Nobody else writes to segment files; the batch writer only reads
//! them, never past the durable position this thread publishes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::Stored;
use super::record::NewRecord;
use super::segment::{self, list_segments, segment_path, sync_dir, SegmentCursor, Step};
use super::{Checkpoint, CheckpointFile};
use crate::events;

/// How a 200 relates to the disk (CONTRACT §5, `HOOKHOUSE_FSYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fsync before every answer, shared by the requests queued together.
    Always,
    /// write before every answer, fsync at most every [`SYNC_INTERVAL`]: survives a crash of
    /// the process, not of the machine.
    Interval,
}

pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Once full, the log accepts again below this share of its budget (in percent).
const RESUME_AT: u64 = 90;

fn resume_below(max_bytes: u64) -> u64 {
    max_bytes / 100 * RESUME_AT
}
/// The most one group writes at once; the rest of the queue waits for the next group.
const GROUP_MAX_BYTES: usize = 16 << 20;
/// Requests that may wait for the appender before senders wait for room.
const QUEUE_DEPTH: usize = 8192;

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncMode,
}

/// The end of what is durable (or, with `interval`, written): the writer reads up to here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurablePos {
    /// First sequence number of the segment being appended to; 0 before the first append.
    pub segment: u64,
    /// Bytes of that segment that are durable.
    pub offset: u64,
    /// The last sequence number that is durable.
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the log is over its disk budget")]
    OverBudget,
    #[error("the log could not write or fsync")]
    Io,
    #[error("the log is closed")]
    Closed,
}

/// Something an append keeps alive until its record has left the queue (see
/// [`Wal::append_holding`]).
pub type Held = Option<Box<dyn Send>>;

enum Command {
    Append(NewRecord, oneshot::Sender<Result<u64, AppendError>>, Held),
    Sync,
    Close,
}

/// What recovery found when the log was opened.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub checkpoint: Checkpoint,
    /// The last sequence number in the log (or the checkpoint's, if the log is empty).
    pub last_seq: u64,
    pub segments: usize,
    pub bytes: u64,
    /// Bytes cut off the newest segment's tail and kept in `quarantine/`.
    pub torn_bytes: u64,
}

/// State shared between the appender, the edge and the writer.
pub struct Shared {
    pub dir: PathBuf,
    pub quarantine_dir: PathBuf,
    pub max_bytes: u64,
    /// Size of every segment file on disk: what counts against the budget.
    pub bytes_on_disk: AtomicU64,
    /// Set when a write or fsync failed and no write has succeeded since.
    pub failing: AtomicBool,
    /// First sequence number of the segment the appender writes to (0: none yet). Every other
    /// segment is sealed and may be deleted once ClickHouse has all of it.
    pub active_segment: AtomicU64,
    /// The last sequence number ClickHouse has confirmed, as the writer last stored it.
    pub confirmed: AtomicU64,
    /// Set when an append did not fit the budget; cleared once the log is back under
    /// [`RESUME_AT`] of it, so that the gateway does not flap between 200 and 503.
    full: AtomicBool,
    durable: watch::Sender<DurablePos>,
}

impl Shared {
    /// Whether the log refuses appends for its disk budget.
    pub fn over_budget(&self) -> bool {
        let bytes = self.bytes_on_disk.load(Ordering::Relaxed);
        if self.full.load(Ordering::Relaxed) && bytes < resume_below(self.max_bytes) {
            self.full.store(false, Ordering::Relaxed);
        }
        self.full.load(Ordering::Relaxed) || bytes >= self.max_bytes
    }

    pub fn durable(&self) -> watch::Receiver<DurablePos> {
        self.durable.subscribe()
    }

    /// Records durable in the log but not yet confirmed by ClickHouse (gaps left by failed
    /// appends count too, so this is an upper bound).
    pub fn pending_records(&self) -> u64 {
        let durable = self.durable.borrow().seq;
        durable.saturating_sub(self.confirmed.load(Ordering::Relaxed))
    }
}

/// The handle to the log: cheap to share, used by every request.
pub struct Wal {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Wal {
    /// Recovers the log in `config.dir` and starts its appender thread.
    pub fn open(config: WalConfig) -> io::Result<(Wal, Recovery)> {
        let wal_dir = config.dir.join("wal");
        let quarantine_dir = config.dir.join("quarantine");
        fs::create_dir_all(&wal_dir)?;
        let checkpoint_file = CheckpointFile::new(&config.dir);
        let recovery = match checkpoint_file.load()? {
            Stored::Found(checkpoint) => recover(&wal_dir, &quarantine_dir, checkpoint)?,
            stored => {
                let recovery = recover_without_checkpoint(&wal_dir, &quarantine_dir)?;
                events::wal::checkpoint_derived(stored == Stored::Damaged, recovery.checkpoint);
                checkpoint_file.store(recovery.checkpoint)?;
                recovery
            }
        };
        let (durable_tx, _) = watch::channel(DurablePos {
            segment: 0,
            offset: 0,
            seq: recovery.last_seq,
        });
        let shared = Arc::new(Shared {
            dir: wal_dir,
            quarantine_dir,
            max_bytes: config.max_bytes,
            bytes_on_disk: AtomicU64::new(recovery.bytes),
            failing: AtomicBool::new(false),
            active_segment: AtomicU64::new(0),
            confirmed: AtomicU64::new(recovery.checkpoint.confirmed),
            full: AtomicBool::new(false),
            durable: durable_tx,
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let appender = Appender {
            shared: shared.clone(),
            // The segment size is capped at a quarter of the budget, so that a full log always
            // has sealed segments the writer can delete once they are in ClickHouse.
            segment_bytes: config.segment_bytes.min(config.max_bytes / 4).max(1),
            fsync: config.fsync,
            next_seq: recovery.last_seq + 1,
            active: None,
            unsynced: false,
        };
        let mut threads = vec![std::thread::Builder::new()
            .name("wal-appender".into())
            .spawn(move || appender.run(rx))?];
        if config.fsync == FsyncMode::Interval {
            // A weak sender: the timer must not keep the appender alive once the log is gone.
            let ticker = tx.downgrade();
            threads.push(
                std::thread::Builder::new()
                    .name("wal-sync-timer".into())
                    .spawn(move || {
                        while let Some(tx) = ticker.upgrade() {
                            if tx.blocking_send(Command::Sync).is_err() {
                                return;
                            }
                            drop(tx);
                            std::thread::sleep(SYNC_INTERVAL);
                        }
                    })?,
            );
        }
        Ok((
            Wal {
                tx,
                shared,
                threads: Mutex::new(threads),
            },
            recovery,
        ))
    }

    /// Appends `record` and returns its sequence number once it is durable.
    pub async fn append(&self, record: NewRecord) -> Result<u64, AppendError> {
        self.append_holding(record, None).await
    }

    /// [`Wal::append`], keeping `held` until the record has left the log's queue (written or
    /// refused), even if the caller stops waiting: what bounds the memory of requests in flight
    /// must also cover a body queued here after its sender went away.
    pub async fn append_holding(&self, record: NewRecord, held: Held) -> Result<u64, AppendError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Command::Append(record, reply_tx, held))
            .await
            .map_err(|_| AppendError::Closed)?;
        reply_rx.await.map_err(|_| AppendError::Closed)?
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Writes and fsyncs what is queued, then stops the appender. Appends after this fail.
    pub fn close(&self) {
        // A full queue still drains, so this send finishes.
        let _ = self.tx.blocking_send(Command::Close);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// A group that could not be made durable.
struct WriteFailure {
    error: io::Error,
    /// None of the group's frames can be in the log, so their numbers may be used again.
    renumber: bool,
}

struct ActiveSegment {
    first_seq: u64,
    file: File,
    len: u64,
    /// A write or fsync failed on it: the next group starts a new segment.
    broken: bool,
}

struct Appender {
    shared: Arc<Shared>,
    segment_bytes: u64,
    fsync: FsyncMode,
    next_seq: u64,
    active: Option<ActiveSegment>,
    unsynced: bool,
}

impl Appender {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut group = Vec::new();
        let mut held = Vec::new();
        let mut buf = Vec::new();
        let mut closing = false;
        while !closing {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut group_bytes = 0;
            let mut sync_asked = false;
            for cmd in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match cmd {
                    Command::Append(record, reply, hold) => {
                        group_bytes += record.frame_len();
                        group.push((record, reply));
                        held.extend(hold);
                    }
                    Command::Sync => sync_asked = true,
                    Command::Close => closing = true,
                }
                if closing || group_bytes >= GROUP_MAX_BYTES {
                    break;
                }
            }
            if !group.is_empty() {
                self.commit(&mut group, &mut buf);
            }
            held.clear();
            if (sync_asked || closing) && self.unsynced {
                self.sync_active();
            }
        }
        if self.unsynced {
            self.sync_active();
        }
        // Whatever is still queued was never written: those senders get `Closed`, not a 200.
        rx.close();
    }

    /// Writes one group, fsyncs it (in `always` mode) and answers every request in it.
    fn commit(
        &mut self,
        group: &mut Vec<(NewRecord, oneshot::Sender<Result<u64, AppendError>>)>,
        buf: &mut Vec<u8>,
    ) {
        buf.clear();
        let mut budget_left = if self.shared.over_budget() {
            0
        } else {
            self.shared
                .max_bytes
                .saturating_sub(self.shared.bytes_on_disk.load(Ordering::Relaxed))
        };
        let mut accepted = Vec::with_capacity(group.len());
        let first_seq = self.next_seq;
        for (record, reply) in group.drain(..) {
            let len = record.frame_len() as u64;
            if len > budget_left {
                let newly_full = !self.shared.full.swap(true, Ordering::Relaxed);
                events::wal::over_budget(newly_full);
                let _ = reply.send(Err(AppendError::OverBudget));
                continue;
            }
            budget_left -= len;
            record.encode_into(self.next_seq, buf);
            accepted.push((self.next_seq, reply));
            self.next_seq += 1;
        }
        if accepted.is_empty() {
            return;
        }
        let started = Instant::now();
        let result = self.write_group(first_seq, buf);
        match result {
            Ok(pos) => {
                // In `interval` mode only an fsync clears it (`sync_active`): a write that
                // succeeds says nothing of the fsyncs that keep failing.
                if self.fsync == FsyncMode::Always {
                    self.shared.failing.store(false, Ordering::Relaxed);
                }
                events::wal::group_committed(accepted.len(), buf.len(), started.elapsed());
                self.shared.durable.send_replace(pos);
                for (seq, reply) in accepted {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(WriteFailure { error, renumber }) => {
                if renumber {
                    self.next_seq = first_seq;
                }
                self.shared.failing.store(true, Ordering::Relaxed);
                events::wal::write_failed(&error);
                for (_, reply) in accepted {
                    let _ = reply.send(Err(AppendError::Io));
                }
            }
        }
    }

    fn write_group(&mut self, first_seq: u64, buf: &[u8]) -> Result<DurablePos, WriteFailure> {
        let needs_new = match &mut self.active {
            None => true,
            // A failed write into an empty segment left nothing behind: use it again rather than
            // leave an empty file per failure while the disk is full.
            Some(active) if active.broken && active.len == 0 => {
                active.broken = false;
                false
            }
            Some(active) => {
                active.broken
                    || (active.len > 0 && active.len + buf.len() as u64 > self.segment_bytes)
            }
        };
        if needs_new {
            self.roll(first_seq).map_err(|error| WriteFailure {
                error,
                renumber: true,
            })?;
        }
        let active = self.active.as_mut().expect("roll opened a segment");
        let before = active.len;
        // Any failure seals this segment: on a full disk, space comes back only by deleting
        // sealed segments, and an empty one is simply used again (see above).
        if let Err(error) = write_frames(&mut active.file, buf) {
            // Nothing of this group was acknowledged. Cutting what was written of it leaves the
            // file ending on a whole frame, and then its numbers can be given out again.
            let restored = active.file.set_len(before).is_ok();
            active.broken = true;
            return Err(WriteFailure {
                error,
                renumber: restored,
            });
        }
        if self.fsync == FsyncMode::Always {
            if let Err(error) = sync_frames(&active.file) {
                // After a failed fsync the page cache may not match the disk: the frames stay
                // where they are (unacknowledged, so delivered at most once) and their numbers
                // are never given out again.
                active.broken = true;
                active.len += buf.len() as u64;
                self.shared
                    .bytes_on_disk
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                return Err(WriteFailure {
                    error,
                    renumber: false,
                });
            }
        }
        active.len += buf.len() as u64;
        self.shared
            .bytes_on_disk
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.unsynced = self.fsync == FsyncMode::Interval;
        Ok(DurablePos {
            segment: active.first_seq,
            offset: active.len,
            seq: self.next_seq - 1,
        })
    }

    /// Seals the active segment and starts a new one whose first record is `first_seq`.
    fn roll(&mut self, first_seq: u64) -> io::Result<()> {
        if let Some(old) = self.active.take() {
            if self.unsynced && !old.broken {
                sync_frames(&old.file)?;
                self.unsynced = false;
            }
        }
        let path = segment_path(&self.shared.dir, first_seq);
        // An empty file of that name may be left by a roll that failed half way (a full disk).
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if file.metadata()?.len() != 0 {
            return Err(io::Error::other(format!(
                "segment {} already holds data",
                path.display()
            )));
        }
        // The new name must survive a crash along with the data written under it.
        sync_dir(&self.shared.dir)?;
        self.shared
            .active_segment
            .store(first_seq, Ordering::Relaxed);
        self.active = Some(ActiveSegment {
            first_seq,
            file,
            len: 0,
            broken: false,
        });
        Ok(())
    }

    fn sync_active(&mut self) {
        if let Some(active) = &mut self.active {
            if let Err(error) = sync_frames(&active.file) {
                active.broken = true;
                // Readiness must see it: in `interval` mode this is the only fsync there is.
                self.shared.failing.store(true, Ordering::Relaxed);
                events::wal::write_failed(&error);
            } else if !active.broken {
                self.shared.failing.store(false, Ordering::Relaxed);
            }
        }
        self.unsynced = false;
    }
}

/// Writes a group's frames to the active segment.
///
/// The fail point lets tests make the write fail as a full disk does, after writing the number
/// of bytes given as its argument (less than the whole group). Outside `cargo test` builds it
/// compiles to nothing.
fn write_frames(file: &mut File, buf: &[u8]) -> io::Result<()> {
    fail::fail_point!("wal::write", |written: Option<String>| {
        let written = written.and_then(|n| n.parse().ok()).unwrap_or(0);
        file.write_all(&buf[..written.min(buf.len().saturating_sub(1))])?;
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    });
    file.write_all(buf)
}

/// fsyncs a segment's data. The fail point lets tests make it fail (see [`write_frames`]).
fn sync_frames(file: &File) -> io::Result<()> {
    fail::fail_point!("wal::fsync", |_| Err(io::Error::from_raw_os_error(
        libc::EIO
    )));
    file.sync_data()
}

/// [`recover`] for a log whose checkpoint is missing or damaged: the safe bounds follow from the
/// log itself. Segments are deleted only once ClickHouse has all of them, so everything before
/// the oldest segment is confirmed; anything in the log may have been attempted, so every
/// record in it is checked against ClickHouse before it is sent. Records written after this
/// start are above that mark and need no check.
fn recover_without_checkpoint(dir: &Path, quarantine_dir: &Path) -> io::Result<Recovery> {
    let oldest = list_segments(dir)?.first().map_or(1, |s| s.first_seq);
    let bounds = Checkpoint {
        confirmed: oldest.saturating_sub(1),
        attempted: 0,
    };
    let mut recovery = recover(dir, quarantine_dir, bounds)?;
    recovery.checkpoint.attempted = recovery.last_seq;
    Ok(recovery)
}

/// Opens the log as a crash left it: cuts a torn tail off the newest segment (keeping the bytes
/// in `quarantine/`), drops empty segment files, and finds where numbering goes on. Older
/// segments were sealed with an fsync; damage inside them is met, and kept aside, when the
/// writer reads them.
fn recover(dir: &Path, quarantine_dir: &Path, checkpoint: Checkpoint) -> io::Result<Recovery> {
    let mut segments = list_segments(dir)?;
    let mut torn_bytes = 0;
    let mut last_seq = checkpoint.confirmed;
    // Empty files (a crash right after a roll) hold nothing; keeping them would only confuse
    // the order of names, so they go.
    segments.retain(|s| match fs::metadata(&s.path) {
        Ok(meta) if meta.len() == 0 => fs::remove_file(&s.path).is_err(),
        _ => true,
    });
    if let Some(newest) = segments.last() {
        last_seq = last_seq.max(newest.first_seq.saturating_sub(1));
        let len = fs::metadata(&newest.path)?.len();
        let mut cursor = SegmentCursor::open(&newest.path)?;
        let mut good_end = 0;
        loop {
            match cursor.next(len, true)? {
                Step::Record(record) => {
                    last_seq = last_seq.max(record.seq);
                    good_end = cursor.offset();
                }
                Step::Damaged { offset, bytes } => {
                    let kept = segment::quarantine(quarantine_dir, &newest.path, offset, &bytes)?;
                    events::wal::damage_found(&newest.path, offset, bytes.len(), &kept);
                }
                Step::End => break,
            }
        }
        if good_end < len {
            let file = OpenOptions::new().write(true).open(&newest.path)?;
            file.set_len(good_end)?;
            file.sync_all()?;
            torn_bytes = len - good_end;
            events::wal::torn_tail_cut(&newest.path, torn_bytes);
            if good_end == 0 {
                // Nothing readable was in it; the next append reuses its first number.
                fs::remove_file(&newest.path)?;
                segments.pop();
            }
        }
    }
    let mut bytes = 0;
    for s in &segments {
        bytes += fs::metadata(&s.path)?.len();
    }
    Ok(Recovery {
        checkpoint,
        last_seq,
        segments: segments.len(),
        bytes,
        torn_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notes, when dropped, the last durable sequence number at that moment (plus one, so that 0
    /// means "not dropped yet").
    struct Witness(watch::Receiver<DurablePos>, Arc<AtomicU64>);

    impl Drop for Witness {
        fn drop(&mut self) {
            self.1.store(self.0.borrow().seq + 1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_an_append_holds_goes_with_the_record_not_with_a_caller_that_went_away() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(WalConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 30,
            segment_bytes: 1 << 20,
            fsync: FsyncMode::Always,
        })
        .unwrap();
        let seen_at_drop = Arc::new(AtomicU64::new(0));
        let held: Held = Some(Box::new(Witness(
            wal.shared().durable(),
            seen_at_drop.clone(),
        )));
        let record = super::super::record::tests::sample(b"{}");
        // A caller that stops waiting as soon as its record is queued.
        let append = wal.append_holding(record, held);
        let _ = tokio::time::timeout(Duration::from_micros(1), append).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen_at_drop.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            seen_at_drop.load(Ordering::SeqCst),
            2,
            "released only once the record was durable (seq 1)"
        );
        tokio::task::block_in_place(|| wal.close());
    }
}
