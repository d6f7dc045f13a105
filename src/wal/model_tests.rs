//! The log against a model, over random sequences of appends, reads, checkpoints, crashes,
//! reopens and failed writes and fsyncs, in both fsync modes (a parameter of each case).
//!
//! The model is the list of acknowledged records, the confirmed checkpoint, and the records in
//! doubt: sent, but never answered before a crash or answered with an error. After every step
//! the log must hold exactly the acknowledged records above the checkpoint, in order, each once;
//! a record in doubt may be among them, once, where its number puts it, and is acknowledged from
//! then on; its disk accounting must match the files; and every byte recovery cut must be in
//! `quarantine/`. A recovery that does not find a record in doubt settles it: it must never
//! appear afterwards.
//!
//! A crash drops the `Wal` without closing it, with requests still in flight, lets the appender
//! write what was queued, then truncates the newest segment anywhere at or after the last offset
//! an acknowledged append saw, and may append garbage or a torn frame, as a crash in the middle
//! of a write would. Records found after a crash that were in flight join the model; the others
//! must never appear. That is a crash of the process. In `interval` mode the offset an
//! acknowledged append saw is only written, not yet fsynced, but the kernel still holds those
//! bytes, so here too no acknowledged record may be lost. A crash of the machine, which may also
//! drop written bytes never fsynced, is not simulated: `interval` mode does not promise to
//! survive it (CONTRACT §5), and in `always` mode every acknowledged byte is fsynced, so it could
//! do no more than the damage above.
//!
//! Failed writes and fsyncs come from the appender's fail points `wal::write` (optionally after
//! writing part of the group, as a full disk does) and `wal::fsync`, on for the whole of the next
//! `Append` step. Every request in it is answered `AppendError::Io` and its record is in doubt:
//! after a failed write what was written of the group is cut and its numbers may be given out
//! again; after a failed fsync the frames stay and their numbers are not (the model only takes
//! growing numbers, each once). In `interval` mode a group is answered once written, and the
//! failing fsync is most often the timer's, after the answer: those requests may be answered 200,
//! and the step waits for that fsync. `Shared::failing` is set by the failure and cleared by the
//! next append that succeeds, which starts a new segment.
//!
//! Fail points are process-global: every test here holds [`one_log_at_a_time`] while its `Wal`
//! is open, so that a fault meant for one log never hits another. No other lib test opens one.
//!
//! Segments are 512 bytes, so a few records roll the log and checkpoints free whole segments.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::FutureExt;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

use super::log::{AppendError, DurablePos, FsyncMode, Shared, Wal, WalConfig};
use super::reader::{release_through, LogReader};
use super::record::{self, NewRecord, MAGIC};
use super::segment::{list_segments, segment_path};
use super::{Checkpoint, CheckpointFile};
use crate::ingest::{AcceptedAt, Key, PipelineId, RequestId, Token};

const SEGMENT_BYTES: u64 = 512;

/// Held by each test that opens a `Wal`, for as long as it is open: see the module docs.
fn one_log_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_LOG: Mutex<()> = Mutex::new(());
    // A failed case leaves no fail point behind (they are removed on drop), so the lock is good.
    ONE_LOG.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a crash leaves after the last byte it kept.
#[derive(Debug, Clone)]
enum Garbage {
    Nothing,
    Random(Vec<u8>),
    /// A magic number and random bytes: looks like the start of a frame.
    Magic(Vec<u8>),
    /// The first part of a real frame for the next sequence number.
    TornFrame(Index),
}

#[derive(Debug, Clone)]
enum Op {
    /// Appends concurrently, one record per filler, and waits for every answer.
    Append(Vec<String>),
    /// Reads everything durable with the reader that lives as long as the open log.
    Read { batch: usize },
    /// Reads like the writer, then confirms up to some record it has read and releases.
    Checkpoint(Index),
    /// Sends `in_flight` without waiting, drops the log, then damages the newest segment.
    Crash {
        in_flight: Vec<String>,
        cut: Option<Index>,
        garbage: Garbage,
    },
    /// Closes the log cleanly (if open) and opens it again.
    Reopen,
    /// Makes every write of the next `Append` step fail; with `partial`, after writing a part of
    /// the group (a share of the step's bytes picked by the index).
    FailWrite { partial: Option<Index> },
    /// Makes every fsync fail during the next `Append` step.
    FailFsync,
}

/// What goes wrong during the next `Append` step.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Write { partial: Option<Index> },
    Fsync,
}

/// The log as it must look from outside.
#[derive(Debug, Default)]
struct Model {
    /// Every acknowledged record (and every in-flight one found after a crash), in log order.
    acked: Vec<(u64, Bytes)>,
    confirmed: u64,
    /// Bodies sent but never answered before a crash, or answered with an error: each may be in
    /// the log once, or not at all.
    in_doubt: HashSet<Bytes>,
    /// Bytes recovery cut off torn tails, over all reopens.
    torn: u64,
}

impl Model {
    fn last_seq(&self) -> u64 {
        self.acked.last().map_or(0, |(seq, _)| *seq)
    }

    fn ack(&mut self, seq: u64, body: Bytes) {
        assert!(
            seq > self.last_seq() && seq > self.confirmed,
            "seq {seq} handed out after {}",
            self.last_seq()
        );
        self.acked.push((seq, body));
    }

    /// A record in doubt, found in the log: acknowledged from now on.
    fn survived(&mut self, seq: u64, body: Bytes) {
        assert!(
            seq > self.confirmed,
            "seq {seq} is at or below the checkpoint"
        );
        let at = self.acked.partition_point(|(s, _)| *s < seq);
        assert!(
            self.acked.get(at).is_none_or(|(s, _)| *s != seq),
            "seq {seq} is in the log twice"
        );
        self.acked.insert(at, (seq, body));
    }

    fn unconfirmed(&self, after: u64) -> Vec<(u64, Bytes)> {
        self.acked
            .iter()
            .filter(|(seq, _)| *seq > after)
            .cloned()
            .collect()
    }

    fn is_acked(&self, seq: u64, body: &Bytes) -> bool {
        let at = self.acked.partition_point(|(s, _)| *s < seq);
        self.acked
            .get(at)
            .is_some_and(|(s, b)| *s == seq && b == body)
    }

    /// Checks everything a reader starting after `after` has returned: each acknowledged record
    /// above `after` once, in order, with records in doubt among them, which join the model.
    fn check_read(&mut self, reader: &str, after: u64, found: &[(u64, Bytes)]) {
        assert!(
            found.windows(2).all(|w| w[0].0 < w[1].0),
            "{reader}: the log is out of order: {:?}",
            seqs(found)
        );
        for (seq, body) in found {
            if self.is_acked(*seq, body) {
                continue;
            }
            assert!(
                self.in_doubt.remove(body),
                "{reader}: record {seq} was never sent, or is there twice: found {:?}",
                seqs(found)
            );
            self.survived(*seq, body.clone());
        }
        let expected = self.unconfirmed(after);
        assert_eq!(
            seqs(found),
            seqs(&expected),
            "{reader}: acknowledged records are missing or out of place"
        );
        assert!(found == expected, "{reader}: the bodies differ");
    }
}

/// The open log and the reader that follows it, as the batch writer's would.
struct OpenLog {
    wal: Wal,
    live: LogReader,
    /// The checkpoint the live reader started from, and what it has returned since.
    live_from: u64,
    live_seen: Vec<(u64, Bytes)>,
}

struct Harness {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    fsync: FsyncMode,
    log: Option<OpenLog>,
    model: Model,
    bodies: u64,
    /// To happen during the next `Append` step.
    fault: Option<Fault>,
    /// Appends have failed on the open log and none has succeeded since.
    failed: bool,
}

impl Harness {
    fn new(fsync: FsyncMode) -> Harness {
        Harness {
            dir: scratch_dir(),
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime"),
            fsync,
            log: None,
            model: Model::default(),
            bodies: 0,
            fault: None,
            failed: false,
        }
    }

    fn wal_dir(&self) -> PathBuf {
        self.dir.path().join("wal")
    }

    fn config(&self) -> WalConfig {
        WalConfig {
            dir: self.dir.path().to_path_buf(),
            // Large, so that the cap of a quarter of the budget leaves segments at 512 bytes.
            max_bytes: 1 << 40,
            segment_bytes: SEGMENT_BYTES,
            fsync: self.fsync,
        }
    }

    /// A record whose body is unique in this run, so that each can be told apart on reading.
    fn record(&mut self, filler: &str) -> NewRecord {
        self.bodies += 1;
        new_record(format!(r#"{{"n":{},"f":"{filler}"}}"#, self.bodies))
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Append(fillers) => self.append(fillers),
            Op::Read { batch } => {
                self.ensure_open();
                self.live_read(*batch);
            }
            Op::Checkpoint(pick) => self.checkpoint(*pick),
            Op::Crash {
                in_flight,
                cut,
                garbage,
            } => self.crash(in_flight, *cut, garbage),
            Op::Reopen => {
                if let Some(open) = self.log.take() {
                    open.wal.close();
                }
                self.open();
            }
            Op::FailWrite { partial } => self.fault = Some(Fault::Write { partial: *partial }),
            Op::FailFsync => self.fault = Some(Fault::Fsync),
        }
        if self.log.is_some() {
            // The reader that follows the log sees every acknowledged record once, in order;
            // the counters and the checkpoint file agree with the disk and the model.
            self.live_read(usize::MAX);
            self.check_accounting();
        }
    }

    fn ensure_open(&mut self) {
        if self.log.is_none() {
            self.open();
        }
    }

    /// Opens the log and checks recovery against the model, settling the in-flight records.
    fn open(&mut self) {
        let (wal, recovery) = Wal::open(self.config()).expect("recovery never fails");
        assert_eq!(recovery.checkpoint.confirmed, self.model.confirmed);
        self.model.torn += recovery.torn_bytes;
        assert_eq!(
            quarantined_bytes(&self.dir.path().join("quarantine")),
            self.model.torn,
            "every byte cut at recovery is kept in quarantine/"
        );

        // Every acknowledged record is there. Records in doubt may be too, in among them: a
        // request answered just before the crash can follow one never answered. The live
        // reader, as a restarted writer's, starts from the checkpoint.
        let shared = wal.shared().clone();
        let mut live = LogReader::new(shared.clone(), self.model.confirmed);
        let found = drain(&mut live, *shared.durable().borrow(), usize::MAX);
        self.model
            .check_read("recovery", self.model.confirmed, &found);
        // A reader at open reads the whole log: what it did not find is gone for good.
        self.model.in_doubt.clear();
        self.failed = false;
        assert!(
            recovery.last_seq >= self.model.last_seq(),
            "recovery would hand out seq {} again",
            recovery.last_seq + 1
        );

        self.log = Some(OpenLog {
            live,
            wal,
            live_from: self.model.confirmed,
            live_seen: found,
        });
    }

    fn append(&mut self, fillers: &[String]) {
        self.ensure_open();
        let records: Vec<NewRecord> = fillers.iter().map(|f| self.record(f)).collect();
        match self.fault.take() {
            None => self.append_acknowledged(records),
            Some(fault) => self.append_failing(records, fault),
        }
    }

    /// Sends every record at once and waits for all the answers.
    fn send(&self, records: &[NewRecord]) -> Vec<Result<u64, AppendError>> {
        let open = self.log.as_ref().expect("the log is open");
        self.rt.block_on(join_all(
            records.iter().map(|record| open.wal.append(record.clone())),
        ))
    }

    fn append_acknowledged(&mut self, records: Vec<NewRecord>) {
        let answers = self.send(&records);
        let mut first = u64::MAX;
        for (record, answer) in records.into_iter().zip(answers) {
            let seq = answer.expect("an append within budget and without I/O errors succeeds");
            first = first.min(seq);
            self.model.ack(seq, record.body);
        }
        let shared = self.log.as_ref().expect("the log is open").wal.shared();
        // In `interval` mode only the timer's next successful fsync clears it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.fsync == FsyncMode::Interval
            && shared.failing.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !shared.failing.load(Ordering::Relaxed),
            "a successful append (and in interval mode its fsync) clears `failing`"
        );
        if std::mem::take(&mut self.failed) {
            assert!(
                segment_path(&self.wal_dir(), first).exists(),
                "the first append after a failure, {first}, starts a new segment"
            );
        }
    }

    /// Appends with `fault` on, then checks that the log says it is failing.
    fn append_failing(&mut self, records: Vec<NewRecord>, fault: Fault) {
        let injected = match fault {
            Fault::Write { partial } => {
                // Bytes of the group written before the error; at least one is not written.
                let total: usize = records.iter().map(NewRecord::frame_len).sum();
                let written = partial.map_or(0, |at| at.index(total));
                fail::FailGuard::new("wal::write", &format!("return({written})"))
            }
            Fault::Fsync => fail::FailGuard::new("wal::fsync", "return"),
        }
        .expect("a valid fail point");
        let answers = self.send(&records);
        // In `interval` mode a group is answered once written: its fsync comes later.
        let answered_before_fsync =
            matches!(fault, Fault::Fsync) && self.fsync == FsyncMode::Interval;
        for (record, answer) in records.into_iter().zip(answers) {
            match answer {
                Ok(seq) if answered_before_fsync => self.model.ack(seq, record.body),
                Err(AppendError::Io) => {
                    self.model.in_doubt.insert(record.body);
                }
                other => panic!("an append during {fault:?} answered {other:?}"),
            }
        }
        let shared = self.log.as_ref().expect("the log is open").wal.shared();
        if answered_before_fsync {
            // The timer asks for an fsync every SYNC_INTERVAL; while the fail point is on, the
            // first one after the writes fails.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !shared.failing.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert!(
            shared.failing.load(Ordering::Relaxed),
            "{fault:?} sets `failing`"
        );
        drop(injected);
        self.failed = true;
    }

    /// The live reader returns, over the log's lifetime, every acknowledged record after the
    /// checkpoint it started from, once each and in order.
    fn live_read(&mut self, batch: usize) {
        let open = self.log.as_mut().expect("the log is open");
        let durable = *open.wal.shared().durable().borrow();
        let got = drain(&mut open.live, durable, batch);
        open.live_seen.extend(got);
        self.model
            .check_read("the live reader", open.live_from, &open.live_seen);
    }

    fn checkpoint(&mut self, pick: Index) {
        self.ensure_open();
        self.live_read(usize::MAX);
        let open = self.log.as_ref().expect("opened above");
        let read_to = open.live.after_seq();
        let candidates: Vec<u64> = self
            .model
            .acked
            .iter()
            .map(|(seq, _)| *seq)
            .filter(|seq| *seq > self.model.confirmed && *seq <= read_to)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let confirmed = *pick.get(&candidates);
        CheckpointFile::new(self.dir.path())
            .store(Checkpoint {
                confirmed,
                attempted: confirmed,
            })
            .expect("store the checkpoint");
        self.model.confirmed = confirmed;

        let shared = open.wal.shared();
        // The segment the appender writes to: after failed appends, not the last one written.
        let active = shared.active_segment.load(Ordering::Relaxed);
        let before = segment_contents(&self.wal_dir());
        let freed = release_through(shared, confirmed).expect("release segments");
        let after: HashSet<PathBuf> = list_segments(&self.wal_dir())
            .expect("list segments")
            .into_iter()
            .map(|s| s.path)
            .collect();
        let mut deleted_bytes = 0;
        for segment in before.iter().filter(|s| !after.contains(&s.path)) {
            // Above the checkpoint, only frames of failed appends that no reader has found yet
            // (left by a failed fsync) may go: nobody was told they are in the log.
            for (seq, body) in segment.records.iter().filter(|(seq, _)| *seq > confirmed) {
                assert!(
                    self.model.in_doubt.remove(body),
                    "released {} holding {seq}, above the checkpoint {confirmed}",
                    segment.path.display(),
                );
            }
            assert_ne!(segment.first_seq, active, "released the active segment");
            deleted_bytes += segment.len;
        }
        assert_eq!(freed, deleted_bytes, "release reports the bytes it freed");
        self.check_fresh_reader();
    }

    /// Drops the log with requests in flight, then damages the newest segment as a crash in the
    /// middle of a write would: anything after the last acknowledged byte may be cut, and garbage
    /// may follow. Only a segment this log has written to can be torn.
    fn crash(&mut self, in_flight: &[String], cut: Option<Index>, garbage: &Garbage) {
        self.ensure_open();
        let wal_dir = self.wal_dir();
        let open = self.log.take().expect("opened above");
        let shared = open.wal.shared().clone();
        let acked_at = *shared.durable().borrow();
        let existing: HashSet<u64> = list_segments(&wal_dir)
            .expect("list segments")
            .iter()
            .map(|s| s.first_seq)
            .collect();

        // Each request is queued for the appender; its answer is never awaited.
        // Rarely the answer comes back before the request is dropped: that one is acknowledged.
        let mut any_acked = false;
        for filler in in_flight {
            let record = self.record(filler);
            let body = record.body.clone();
            match open.wal.append(record).now_or_never() {
                None => {
                    self.model.in_doubt.insert(body);
                }
                Some(Ok(seq)) => {
                    any_acked = true;
                    self.model.ack(seq, body);
                }
                Some(Err(error)) => panic!("append failed: {error}"),
            }
        }
        drop(open);
        // The appender writes what was queued before it notices the log is gone. Wait for it to
        // stop, so that the damage below lands after its last write, as it would in a real crash.
        // (Counting the records written would not do: a failed fsync leaves gaps in the numbers.)
        let shared = wait_for_appender_to_stop(shared);
        let next_seq = shared.durable().borrow().seq + 1;
        drop(shared);

        let Some(newest) = list_segments(&wal_dir).expect("list segments").pop() else {
            return;
        };
        let started_now = !existing.contains(&newest.first_seq);
        if !started_now && newest.first_seq != acked_at.segment {
            // Nothing was appended since the open: a new log writes no old segment, so a crash
            // now cannot tear one.
            return;
        }
        let len = fs::metadata(&newest.path).expect("segment metadata").len();
        let keep_at_least = if any_acked {
            len
        } else if started_now {
            0 // started by the in-flight records: none of it was acknowledged
        } else {
            acked_at.offset
        };
        let file = OpenOptions::new()
            .append(true)
            .open(&newest.path)
            .expect("open the newest segment");
        if let Some(cut) = cut {
            let keep = keep_at_least + cut.index((len - keep_at_least + 1) as usize) as u64;
            file.set_len(keep).expect("truncate the newest segment");
        }
        let tail = match garbage {
            Garbage::Nothing => Vec::new(),
            Garbage::Random(bytes) => bytes.clone(),
            Garbage::Magic(bytes) => [&MAGIC[..], bytes].concat(),
            Garbage::TornFrame(at) => {
                let mut frame = Vec::new();
                self.record("torn").encode_into(next_seq, &mut frame);
                let keep = at.index(frame.len());
                frame.truncate(keep);
                frame
            }
        };
        (&file)
            .write_all(&tail)
            .expect("append garbage to the newest segment");
    }

    /// A reader starting from the checkpoint, as the writer's after a restart, reads exactly the
    /// acknowledged records above it.
    fn check_fresh_reader(&self) {
        let open = self.log.as_ref().expect("the log is open");
        let fresh = read_all(open.wal.shared(), self.model.confirmed, 3);
        let expected = self.model.unconfirmed(self.model.confirmed);
        assert_eq!(
            seqs(&fresh),
            seqs(&expected),
            "a reader from the checkpoint {}",
            self.model.confirmed
        );
        assert!(
            fresh == expected,
            "a reader from the checkpoint: bodies differ"
        );
    }

    fn check_accounting(&self) {
        let shared = self.log.as_ref().expect("the log is open").wal.shared();
        let on_disk: u64 = list_segments(&self.wal_dir())
            .expect("list segments")
            .iter()
            .map(|s| fs::metadata(&s.path).expect("segment metadata").len())
            .sum();
        assert_eq!(
            shared
                .bytes_on_disk
                .load(std::sync::atomic::Ordering::Relaxed),
            on_disk,
            "bytes_on_disk matches the segment files"
        );
        assert_eq!(
            match CheckpointFile::new(self.dir.path())
                .load()
                .expect("load the checkpoint")
            {
                super::checkpoint::Stored::Found(c) => c.confirmed,
                other => panic!("checkpoint {other:?}"),
            },
            self.model.confirmed
        );
    }
}

fn new_record(body: String) -> NewRecord {
    NewRecord {
        accepted_at: AcceptedAt::now(),
        request_id: RequestId::generate(),
        pipeline_id: PipelineId::new(7).expect("not zero"),
        key: Key::generate(),
        token_hash: Token::generate().hash(),
        headers: r#"{"content-type":"application/json"}"#.to_owned(),
        form: crate::ingest::BodyForm::Json,
        body: Bytes::from(body),
    }
}

/// A folder for one case, in memory where there is a tmpfs: every append fsyncs, and crashes
/// are simulated here rather than by the machine, so a disk would only make the test slow.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("hookhouse-wal-model-")
        .tempdir_in(parent)
        .expect("a temporary folder")
}

/// A fresh reader from `after`, reading everything durable now, `batch` records at a time.
fn read_all(shared: &Arc<Shared>, after: u64, batch: usize) -> Vec<(u64, Bytes)> {
    let durable = *shared.durable().borrow();
    drain(&mut LogReader::new(shared.clone(), after), durable, batch)
}

fn drain(reader: &mut LogReader, durable: DurablePos, batch: usize) -> Vec<(u64, Bytes)> {
    let mut all = Vec::new();
    for _ in 0..100_000 {
        let mut out = Vec::new();
        reader
            .read(durable, batch, usize::MAX, &mut out)
            .expect("read the log");
        if out.is_empty() {
            return all;
        }
        all.extend(out.into_iter().map(|r| (r.seq, r.body)));
    }
    panic!("the reader never ran dry");
}

/// Waits for the appender of a dropped log to finish: it holds the last other reference.
fn wait_for_appender_to_stop(shared: Arc<Shared>) -> Shared {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut shared = shared;
    loop {
        match Arc::try_unwrap(shared) {
            Ok(only) => return only,
            Err(still_shared) => shared = still_shared,
        }
        assert!(
            Instant::now() < deadline,
            "the appender never wrote the queued records"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn seqs(records: &[(u64, Bytes)]) -> Vec<u64> {
    records.iter().map(|(seq, _)| *seq).collect()
}

struct SegmentContents {
    first_seq: u64,
    path: PathBuf,
    len: u64,
    records: Vec<(u64, Bytes)>,
}

/// What each segment file holds, parsed here rather than with the cursor under test.
fn segment_contents(dir: &Path) -> Vec<SegmentContents> {
    list_segments(dir)
        .expect("list segments")
        .into_iter()
        .map(|s| {
            let bytes = fs::read(&s.path).expect("read a segment");
            let mut records = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                match record::decode(&bytes[at..]) {
                    Ok((record, len)) => {
                        records.push((record.seq, record.body));
                        at += len;
                    }
                    Err(_) => match record::find_magic(&bytes, at + 1) {
                        Some(next) => at = next,
                        None => break,
                    },
                }
            }
            SegmentContents {
                first_seq: s.first_seq,
                path: s.path,
                len: bytes.len() as u64,
                records,
            }
        })
        .collect()
}

fn quarantined_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            e.expect("list quarantine/")
                .metadata()
                .expect("metadata")
                .len()
        })
        .sum()
}

fn filler() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => "[a-z0-9 ]{0,120}",
        // Bigger than a segment: such a frame gets a segment of its own.
        1 => "[a-z]{500,700}",
    ]
}

fn garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        Just(Garbage::Nothing),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Garbage::Random),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(Garbage::Magic),
        any::<Index>().prop_map(Garbage::TornFrame),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(filler(), 1..6).prop_map(Op::Append),
        2 => prop_oneof![1usize..8, Just(usize::MAX)].prop_map(|batch| Op::Read { batch }),
        2 => any::<Index>().prop_map(Op::Checkpoint),
        2 => (
            proptest::collection::vec(filler(), 0..4),
            proptest::option::of(any::<Index>()),
            garbage(),
        )
            .prop_map(|(in_flight, cut, garbage)| Op::Crash { in_flight, cut, garbage }),
        1 => Just(Op::Reopen),
        1 => proptest::option::of(any::<Index>()).prop_map(|partial| Op::FailWrite { partial }),
        1 => Just(Op::FailFsync),
    ]
}

proptest! {
    // A failing case is printed, shrunk, by the runner; it belongs in a named test below rather
    // than in a regressions file.
    // 32 cases take about ten seconds in a debug build; PROPTEST_CASES asks for more.
    #![proptest_config(Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn the_log_behaves_like_its_model(
        fsync in prop_oneof![Just(FsyncMode::Always), Just(FsyncMode::Interval)],
        ops in proptest::collection::vec(op(), 1..24),
    ) {
        let _one_log = one_log_at_a_time();
        let mut harness = Harness::new(fsync);
        for op in &ops {
            harness.step(op);
        }
        // Whatever the last step left, a clean reopen keeps it all.
        harness.step(&Op::Reopen);
    }
}

/// Found by the model (shrunk): a crash tears the first frame of a fresh segment; recovery keeps
/// the bytes in `quarantine/` and removes the file, so the next log reuses its first number and
/// name; a second crash tears that segment's first frame too. Both torn tails must be kept, but
/// both are quarantined as `00000000000000000001.wal.at-0.bin`, so the second is dropped.
#[test]
fn torn_tails_of_two_segments_with_one_name_are_both_kept() {
    let _one_log = one_log_at_a_time();
    let dir = scratch_dir();
    let config = WalConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 40,
        segment_bytes: SEGMENT_BYTES,
        fsync: FsyncMode::Always,
    };
    let mut torn = 0;
    for keep in [30, 50] {
        // What a crash during the first write to a new segment 1 leaves.
        let mut frame = Vec::new();
        new_record("{}".into()).encode_into(1, &mut frame);
        let segment = dir.path().join("wal").join(format!("{:020}.wal", 1));
        fs::create_dir_all(segment.parent().expect("in wal/")).expect("create wal/");
        fs::write(&segment, &frame[..keep]).expect("write a torn segment");

        let (wal, recovery) = Wal::open(config.clone()).expect("recovery never fails");
        wal.close();
        assert_eq!(recovery.torn_bytes, keep as u64);
        assert!(
            !segment.exists(),
            "a segment with nothing readable is removed"
        );
        torn += keep as u64;
        assert_eq!(
            quarantined_bytes(&dir.path().join("quarantine")),
            torn,
            "every byte cut at recovery is kept in quarantine/"
        );
    }
}
