//! The outbox: what this gateway still has to tell receivers, on disk beside the log
//! (`<data_dir>/notify/outbox.jsonl`), so that it survives kill -9 and restarts.
//!
//! It is a journal of JSON lines, each an [`Entry`]; the state is what replaying them gives.
//! Lines are appended and fsynced together before the caller acts on them (the writer moves
//! its checkpoint past a batch only once the batch's entries are durable). A torn last line
//! (kill -9 mid-write) is cut off on opening; a line that does not parse before the end stops
//! the replay there, and the rest is kept aside in `outbox.damaged` for the operator.
//!
//! The journal is rewritten from the state (temp file, fsync, rename, fsync of the folder)
//! when it has grown to several times what is live, so disk use follows the state, which is
//! bounded: at most `notify_max_pending` notifications per subscription, plus one open
//! `data.landed` span per subscription and pipeline.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::message::Span;

const FILE: &str = "outbox.jsonl";
const TEMP: &str = "outbox.tmp";
const DAMAGED: &str = "outbox.damaged";
/// Rewritten once it holds this many lines more than the live state needs, and 4× as many.
const COMPACT_AFTER: u64 = 10_000;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Entry {
    /// Rows of `pipeline` landed: added to the subscription's open `data.landed` span.
    Landed {
        sub: String,
        pipeline: u64,
        span: Span,
    },
    /// A notification to send; when `pipeline` is set it is a `data.landed` that closes the
    /// subscription's open span of that pipeline.
    Due {
        id: String,
        sub: String,
        kind: String,
        body: String,
        pipeline: Option<u64>,
        created_ms: i64,
    },
    /// `attempts` were made and failed; the next is due at `next_ms`.
    Tried {
        id: String,
        attempts: u32,
        next_ms: i64,
    },
    /// The notification is over: delivered (`ok`), given up after its retries (`!ok`, a
    /// failure the subscription's count holds), or dropped (`counted` false: the subscription
    /// was disabled or deleted).
    End {
        id: String,
        ok: bool,
        counted: bool,
        version: u64,
    },
    /// Consecutive failed notifications of a subscription at `version` (written on rewrite).
    Failures { sub: String, version: u64, n: u32 },
    /// The subscription's open spans are dropped (it was disabled or deleted).
    Forget { sub: String },
    /// Every log record up to `seq` has been told: the writer landing them again after a
    /// crash does not announce them twice.
    Told { seq: u64 },
}

/// A notification waiting to be sent, or being sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: String,
    pub sub: String,
    pub kind: String,
    pub body: String,
    pub pipeline: Option<u64>,
    pub created_ms: i64,
    pub attempts: u32,
    pub due_ms: i64,
}

/// What the journal says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct State {
    /// Open `data.landed` spans, by subscription and pipeline.
    pub open: BTreeMap<(String, u64), Span>,
    pub pending: HashMap<String, Pending>,
    /// Consecutive failed notifications by subscription, and the version they were counted at
    /// (a new version, as `enable` writes, starts again from 0).
    pub failures: HashMap<String, (u64, u32)>,
    /// The highest log sequence number told (see [`Entry::Told`]).
    pub told_through: u64,
    /// How many of `pending` each subscription has.
    by_sub: HashMap<String, usize>,
}

impl State {
    pub fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::Landed {
                sub,
                pipeline,
                span,
            } => match self.open.get_mut(&(sub.clone(), *pipeline)) {
                Some(open) => open.merge(span),
                None => {
                    self.open.insert((sub.clone(), *pipeline), span.clone());
                }
            },
            Entry::Due {
                id,
                sub,
                kind,
                body,
                pipeline,
                created_ms,
            } => {
                if let Some(pipeline) = pipeline {
                    self.open.remove(&(sub.clone(), *pipeline));
                }
                let was = self.pending.insert(
                    id.clone(),
                    Pending {
                        id: id.clone(),
                        sub: sub.clone(),
                        kind: kind.clone(),
                        body: body.clone(),
                        pipeline: *pipeline,
                        created_ms: *created_ms,
                        attempts: 0,
                        due_ms: *created_ms,
                    },
                );
                if was.is_none() {
                    *self.by_sub.entry(sub.clone()).or_default() += 1;
                }
            }
            Entry::Tried {
                id,
                attempts,
                next_ms,
            } => {
                if let Some(pending) = self.pending.get_mut(id) {
                    pending.attempts = *attempts;
                    pending.due_ms = *next_ms;
                }
            }
            Entry::End {
                id,
                ok,
                counted,
                version,
            } => {
                let Some(pending) = self.pending.remove(id) else {
                    return;
                };
                if let Some(n) = self.by_sub.get_mut(&pending.sub) {
                    *n -= 1;
                    if *n == 0 {
                        self.by_sub.remove(&pending.sub);
                    }
                }
                if !counted {
                    return;
                }
                let count = self.failures.entry(pending.sub).or_insert((*version, 0));
                if count.0 != *version {
                    *count = (*version, 0);
                }
                count.1 = if *ok { 0 } else { count.1 + 1 };
            }
            Entry::Failures { sub, version, n } => {
                self.failures.insert(sub.clone(), (*version, *n));
            }
            Entry::Forget { sub } => self.open.retain(|(open, _), _| open != sub),
            Entry::Told { seq } => self.told_through = self.told_through.max(*seq),
        }
    }

    /// Consecutive failed notifications of `sub` at `version`.
    pub fn failures(&self, sub: &str, version: u64) -> u32 {
        match self.failures.get(sub) {
            Some((counted_at, n)) if *counted_at == version => *n,
            _ => 0,
        }
    }

    /// How many notifications `sub` has waiting.
    pub fn pending_of(&self, sub: &str) -> usize {
        self.by_sub.get(sub).copied().unwrap_or(0)
    }

    /// How many more notifications `sub` may have waiting, at most `max_pending` in all.
    pub fn room(&self, sub: &str, max_pending: usize) -> usize {
        max_pending.saturating_sub(self.pending_of(sub))
    }

    /// The fewest lines that give this state again.
    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut pending: Vec<&Pending> = self.pending.values().collect();
        pending.sort_by_key(|p| (p.created_ms, p.id.clone()));
        for p in pending {
            out.push(Entry::Due {
                id: p.id.clone(),
                sub: p.sub.clone(),
                kind: p.kind.clone(),
                body: p.body.clone(),
                // Before the open spans below: closing its pipeline's span here closes nothing.
                pipeline: p.pipeline,
                created_ms: p.created_ms,
            });
            if p.attempts > 0 || p.due_ms != p.created_ms {
                out.push(Entry::Tried {
                    id: p.id.clone(),
                    attempts: p.attempts,
                    next_ms: p.due_ms,
                });
            }
        }
        for ((sub, pipeline), span) in &self.open {
            out.push(Entry::Landed {
                sub: sub.clone(),
                pipeline: *pipeline,
                span: span.clone(),
            });
        }
        if self.told_through > 0 {
            out.push(Entry::Told {
                seq: self.told_through,
            });
        }
        for (sub, (version, n)) in &self.failures {
            if *n > 0 {
                out.push(Entry::Failures {
                    sub: sub.clone(),
                    version: *version,
                    n: *n,
                });
            }
        }
        out
    }
}

/// `entries` as the journal holds them: one JSON object a line.
fn lines(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut bytes, entry)?;
        bytes.push(b'\n');
    }
    Ok(bytes)
}

/// The journal on disk and the state it holds.
pub struct Outbox {
    dir: PathBuf,
    file: File,
    state: State,
    /// Lines in the file.
    lines: u64,
    /// The file's length after the last append that succeeded.
    len: u64,
    /// A failed append left bytes that could not be cut off: the next append writes the file
    /// anew first, so a torn line never sits before good ones.
    torn: bool,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, replaying what it holds.
    pub fn open(dir: &Path) -> io::Result<Outbox> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let content = match fs::read(&path) {
            Ok(content) => content,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let mut state = State::default();
        let mut good = 0;
        let mut lines = 0;
        for line in content.split_inclusive(|b| *b == b'\n') {
            if line.last() != Some(&b'\n') {
                break; // torn: cut off below
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => state.apply(&entry),
                Err(_) => {
                    fs::write(dir.join(DAMAGED), &content[good..])?;
                    tracing::error!(
                        offset = good,
                        kept = %dir.join(DAMAGED).display(),
                        "the notification outbox is damaged; what follows the damage is kept aside"
                    );
                    break;
                }
            }
            good += line.len();
            lines += 1;
        }
        let mut outbox = Outbox {
            dir: dir.to_owned(),
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            state,
            lines,
            len: good as u64,
            torn: false,
        };
        // Also cuts off a torn or damaged tail: the file becomes what was replayed.
        if good < content.len() || lines > 0 {
            outbox.rewrite()?;
        }
        Ok(outbox)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Appends `entries` and fsyncs them, then applies them to the state. On an error the state
    /// is unchanged and what was written of them is cut off again (a line torn by a full disk
    /// must not stand before the lines of the next append: replay stops at damage).
    pub fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.torn {
            self.rewrite()?;
        }
        let bytes = lines(entries)?;
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            self.torn = self.file.set_len(self.len).is_err();
            return Err(error);
        }
        self.len += bytes.len() as u64;
        for entry in entries {
            self.state.apply(entry);
        }
        self.lines += entries.len() as u64;
        let live = (self.state.open.len() + self.state.pending.len() * 2) as u64;
        if self.lines > COMPACT_AFTER + live && self.lines > 4 * live {
            // The entries are durable: a failed compaction is not their failure. The next
            // append writes the file anew first (`torn`).
            if let Err(error) = self.rewrite() {
                tracing::warn!(%error, "cannot compact the notification outbox; will retry");
            }
        }
        Ok(())
    }

    /// Writes the state anew: temp file, fsync, rename, fsync of the folder.
    fn rewrite(&mut self) -> io::Result<()> {
        // Until the new file is in place and open, nothing may be appended through the old
        // handle (after the rename it would write into a file no longer there).
        self.torn = true;
        let entries = self.state.entries();
        let temp = self.dir.join(TEMP);
        let bytes = lines(&entries)?;
        {
            let mut file = File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        let path = self.dir.join(FILE);
        fs::rename(&temp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.lines = entries.len() as u64;
        self.len = bytes.len() as u64;
        self.torn = false;
        Ok(())
    }

    /// Bytes of the journal on disk.
    #[cfg(test)]
    fn bytes_on_disk(&self) -> u64 {
        fs::metadata(self.dir.join(FILE)).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(n: u64, first: &str, last: &str) -> Span {
        Span {
            count: n,
            first_request_id: first.into(),
            first_timestamp: 1.0,
            last_request_id: last.into(),
            last_timestamp: 2.0,
        }
    }

    fn due(id: &str, pipeline: Option<u64>) -> Entry {
        Entry::Due {
            id: id.into(),
            sub: "s".into(),
            kind: "data.landed".into(),
            body: "{}".into(),
            pipeline,
            created_ms: 5,
        }
    }

    fn landed(pipeline: u64, n: u64) -> Entry {
        Entry::Landed {
            sub: "s".into(),
            pipeline,
            span: span(n, "a", "b"),
        }
    }

    #[test]
    fn spans_merge_until_a_notification_closes_them() {
        let mut state = State::default();
        state.apply(&landed(1, 2));
        state.apply(&landed(1, 3));
        state.apply(&landed(2, 1));
        assert_eq!(state.open[&("s".to_string(), 1)].count, 5);
        state.apply(&due("m1", Some(1)));
        assert!(!state.open.contains_key(&("s".to_string(), 1)));
        assert_eq!(state.open[&("s".to_string(), 2)].count, 1);
        assert_eq!(state.pending_of("s"), 1);
    }

    #[test]
    fn failures_count_in_a_row_and_start_again_with_a_new_version() {
        let mut state = State::default();
        for i in 0..3 {
            let id = format!("m{i}");
            state.apply(&due(&id, None));
            state.apply(&Entry::End {
                id,
                ok: false,
                counted: true,
                version: 7,
            });
        }
        assert_eq!(state.failures("s", 7), 3);
        assert_eq!(state.failures("s", 8), 0, "enable writes a new version");
        state.apply(&due("ok", None));
        state.apply(&Entry::End {
            id: "ok".into(),
            ok: true,
            counted: true,
            version: 7,
        });
        assert_eq!(state.failures("s", 7), 0);
    }

    #[test]
    fn survives_reopening_a_torn_tail_and_a_rewrite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        outbox
            .append(&[landed(1, 2), due("m1", Some(1)), landed(1, 4)])
            .expect("append");
        outbox
            .append(&[Entry::Tried {
                id: "m1".into(),
                attempts: 2,
                next_ms: 99,
            }])
            .expect("append");
        let before = outbox.state().clone();
        drop(outbox);
        // kill -9 in the middle of a line
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .expect("journal");
        file.write_all(br#"{"k":"end","id":"m1","ok":tr"#)
            .expect("torn");
        drop(file);
        let reopened = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(reopened.state(), &before);
        assert_eq!(reopened.state().pending["m1"].attempts, 2);
        assert_eq!(reopened.state().pending["m1"].due_ms, 99);
        drop(reopened);
        // The rewrite on opening gives the same state again.
        assert_eq!(Outbox::open(dir.path()).expect("again").state(), &before);
    }

    #[test]
    fn a_failed_append_leaves_no_torn_line_before_the_next() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        outbox.append(&[due("m1", None)]).expect("append");
        // A full disk: the write fails, and what it wrote cannot be cut off here.
        outbox.file = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
        assert!(outbox.append(&[due("lost", None)]).is_err());
        assert!(!outbox.state().pending.contains_key("lost"));
        outbox.append(&[due("m2", None)]).expect("append after");
        drop(outbox);
        let reopened = Outbox::open(dir.path()).expect("reopen");
        let mut ids: Vec<&String> = reopened.state().pending.keys().collect();
        ids.sort();
        assert_eq!(ids, ["m1", "m2"]);
        assert!(!dir.path().join(DAMAGED).exists());
    }

    #[test]
    fn damage_stops_the_replay_and_is_kept_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        outbox.append(&[due("m1", None)]).expect("append");
        drop(outbox);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .expect("journal");
        file.write_all(b"garbage\n{\"k\":\"end\"}\n")
            .expect("damage");
        drop(file);
        let reopened = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(reopened.state().pending.len(), 1);
        let kept = fs::read(dir.path().join(DAMAGED)).expect("kept aside");
        assert!(kept.starts_with(b"garbage\n"));
    }

    #[test]
    fn the_journal_stays_the_size_of_its_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = Outbox::open(dir.path()).expect("open");
        for _ in 0..300 {
            let lines: Vec<Entry> = (0..100u64).map(|i| landed(i % 3, 1)).collect();
            outbox.append(&lines).expect("append");
        }
        assert_eq!(outbox.state().open.len(), 3);
        assert_eq!(outbox.state().open[&("s".to_string(), 0)].count, 300 * 34);
        assert!(
            outbox.lines <= COMPACT_AFTER + 10,
            "{} lines for 3 spans",
            outbox.lines
        );
        assert!(outbox.bytes_on_disk() < 2 * 1024 * 1024);
    }
}
