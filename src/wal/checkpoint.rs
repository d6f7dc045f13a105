//! The checkpoint: how far the log is known to be in ClickHouse, and how far an insert may have
//! reached.
//!
//! `confirmed` moves only after ClickHouse acknowledged an insert. `attempted` is written, and
//! fsynced, before an insert starts: after a crash every record up to it may or may not be in
//! ClickHouse, so the writer asks ClickHouse before inserting those again.
//!
//! The file holds two fixed slots, written alternately in place and fsynced, each with a counter
//! and a CRC; the valid slot with the higher counter wins. A torn write spoils at most the slot
//! being written, and overwriting blocks that already exist needs no free space: on a full disk
//! the checkpoint can still move, so delivery can go on and delete segments to free space.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::segment::sync_dir;

const FILE: &str = "checkpoint";
const SLOT: usize = 32;
/// counter + confirmed + attempted, then the CRC of those 24 bytes.
const PAYLOAD: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every record with `seq <= confirmed` is in ClickHouse.
    pub confirmed: u64,
    /// No record with `seq > attempted` has been sent to ClickHouse.
    pub attempted: u64,
}

pub struct CheckpointFile {
    path: PathBuf,
    /// The open file and the counter of the newest slot.
    state: Mutex<Option<(File, u64)>>,
}

impl CheckpointFile {
    pub fn new(dir: &Path) -> CheckpointFile {
        CheckpointFile {
            path: dir.join(FILE),
            state: Mutex::new(None),
        }
    }

    /// Reads the stored checkpoint. Writes nothing: what to do about a missing or damaged file
    /// is for the caller, who can see the log (see `Wal::open`).
    pub fn load(&self) -> io::Result<Stored> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let file = match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::Missing),
            Err(e) => return Err(e),
        };
        match newest_slot(&file)? {
            Some((counter, checkpoint)) => {
                *state = Some((file, counter));
                Ok(Stored::Found(checkpoint))
            }
            None => Ok(Stored::Damaged),
        }
    }

    /// Writes `checkpoint` over the older slot and fsyncs it, creating the file if need be.
    pub fn store(&self, checkpoint: Checkpoint) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            let existed = self.path.exists();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            let counter = newest_slot(&file)?.map_or(0, |(counter, _)| counter);
            if !existed || file.metadata()?.len() < (2 * SLOT) as u64 {
                // Both slots, so that the file never shrinks below them again.
                write_slots(&file, checkpoint)?;
                if let Some(dir) = self.path.parent() {
                    sync_dir(dir)?;
                }
                *state = Some((file, 1));
                return Ok(());
            }
            *state = Some((file, counter));
        }
        let (file, counter) = state.as_mut().expect("opened above");
        let next = *counter + 1;
        file.write_all_at(&encode(next, checkpoint), slot_offset(next))?;
        file.sync_data()?;
        *counter = next;
        Ok(())
    }
}

/// The checkpoint in data folder `dir`, opened read-only: for a reader beside a running gateway
/// (`hookhouse request show`), which must neither lock nor write. `None` if missing or damaged.
pub fn read_only(dir: &Path) -> io::Result<Option<Checkpoint>> {
    match File::open(dir.join(FILE)) {
        Ok(file) => Ok(newest_slot(&file)?.map(|(_, checkpoint)| checkpoint)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// No file: a new data folder, or one whose checkpoint was lost.
    Missing,
    Found(Checkpoint),
    /// Neither slot is readable.
    Damaged,
}

/// The valid slot with the higher counter, if any.
fn newest_slot(file: &File) -> io::Result<Option<(u64, Checkpoint)>> {
    let mut buf = [0u8; 2 * SLOT];
    let len = file.metadata()?.len().min(buf.len() as u64) as usize;
    file.read_exact_at(&mut buf[..len], 0)?;
    Ok([decode(&buf[..SLOT]), decode(&buf[SLOT..])]
        .into_iter()
        .flatten()
        .max_by_key(|(counter, _)| *counter))
}

fn slot_offset(counter: u64) -> u64 {
    (counter % 2) * SLOT as u64
}

/// Fills both slots (counters 0 and 1) with `checkpoint` and fsyncs.
fn write_slots(file: &File, checkpoint: Checkpoint) -> io::Result<()> {
    file.write_all_at(&encode(0, checkpoint), slot_offset(0))?;
    file.write_all_at(&encode(1, checkpoint), slot_offset(1))?;
    file.sync_all()
}

fn encode(counter: u64, c: Checkpoint) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    out[..8].copy_from_slice(&counter.to_le_bytes());
    out[8..16].copy_from_slice(&c.confirmed.to_le_bytes());
    out[16..24].copy_from_slice(&c.attempted.to_le_bytes());
    let crc = crc32c::crc32c(&out[..PAYLOAD]);
    out[PAYLOAD..PAYLOAD + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(slot: &[u8]) -> Option<(u64, Checkpoint)> {
    let word = |at: usize| {
        slot.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let crc = u32::from_le_bytes(slot.get(PAYLOAD..PAYLOAD + 4)?.try_into().ok()?);
    if crc32c::crc32c(slot.get(..PAYLOAD)?) != crc {
        return None;
    }
    Some((
        word(0)?,
        Checkpoint {
            confirmed: word(8)?,
            attempted: word(16)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path());
        assert_eq!(file.load().unwrap(), Stored::Missing);
        for n in 1..5 {
            let c = Checkpoint {
                confirmed: 10 * n,
                attempted: 10 * n + 5,
            };
            file.store(c).unwrap();
            assert_eq!(
                CheckpointFile::new(dir.path()).load().unwrap(),
                Stored::Found(c)
            );
        }
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE)).unwrap().len(),
            2 * SLOT as u64
        );
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path());
        let older = Checkpoint {
            confirmed: 1,
            attempted: 2,
        };
        let newer = Checkpoint {
            confirmed: 3,
            attempted: 4,
        };
        file.store(older).unwrap();
        file.store(newer).unwrap();
        // Spoil the newer slot as a torn write would.
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // The first store wrote both slots (counters 0 and 1); `newer` went in with counter 2.
        let at = slot_offset(2) as usize + 9;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            CheckpointFile::new(dir.path()).load().unwrap(),
            Stored::Found(older)
        );
    }

    #[test]
    fn a_damaged_file_is_told_apart_and_mended_by_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        for damage in [&[0xAB; 64][..], b"short"] {
            std::fs::write(dir.path().join(FILE), damage).unwrap();
            let file = CheckpointFile::new(dir.path());
            assert_eq!(file.load().unwrap(), Stored::Damaged);
            let c = Checkpoint {
                confirmed: 7,
                attempted: 9,
            };
            file.store(c).unwrap();
            assert_eq!(
                CheckpointFile::new(dir.path()).load().unwrap(),
                Stored::Found(c)
            );
        }
    }
}
