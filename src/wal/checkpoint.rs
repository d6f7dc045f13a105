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

    /// Reads the checkpoint, creating the file (both slots) if there is none. An unreadable file
    /// is logged and read as "nothing confirmed, anything may have been attempted": every record
    /// is then checked against ClickHouse before it is inserted, which is slow but loses and
    /// duplicates nothing.
    pub fn load(&self) -> io::Result<Checkpoint> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let existed = self.path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        if !existed || file.metadata()?.len() < (2 * SLOT) as u64 {
            let fresh = Checkpoint {
                confirmed: 0,
                attempted: 0,
            };
            let len = file.metadata()?.len();
            if existed && len > 0 {
                tracing::error!(path = %self.path.display(), len, "checkpoint file is damaged; every logged record will be checked against ClickHouse before it is inserted");
                let damaged = Checkpoint {
                    confirmed: 0,
                    attempted: u64::MAX,
                };
                write_slots(&file, damaged)?;
                *state = Some((file, 1));
                return Ok(damaged);
            }
            write_slots(&file, fresh)?;
            if let Some(dir) = self.path.parent() {
                sync_dir(dir)?;
            }
            *state = Some((file, 1));
            return Ok(fresh);
        }
        let mut buf = [0u8; 2 * SLOT];
        file.read_exact_at(&mut buf, 0)?;
        let best = [decode(&buf[..SLOT]), decode(&buf[SLOT..])]
            .into_iter()
            .flatten()
            .max_by_key(|(counter, _)| *counter);
        match best {
            Some((counter, checkpoint)) => {
                *state = Some((file, counter));
                Ok(checkpoint)
            }
            None => {
                tracing::error!(path = %self.path.display(), "checkpoint file is damaged; every logged record will be checked against ClickHouse before it is inserted");
                let damaged = Checkpoint {
                    confirmed: 0,
                    attempted: u64::MAX,
                };
                write_slots(&file, damaged)?;
                *state = Some((file, 1));
                Ok(damaged)
            }
        }
    }

    /// Writes `checkpoint` over the older slot and fsyncs it.
    pub fn store(&self, checkpoint: Checkpoint) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            drop(state);
            self.load()?;
            state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        }
        let (file, counter) = state.as_mut().expect("loaded above");
        let next = *counter + 1;
        file.write_all_at(&encode(next, checkpoint), slot_offset(next))?;
        file.sync_data()?;
        *counter = next;
        Ok(())
    }
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
        assert_eq!(
            file.load().unwrap(),
            Checkpoint {
                confirmed: 0,
                attempted: 0
            }
        );
        for n in 1..5 {
            let c = Checkpoint {
                confirmed: 10 * n,
                attempted: 10 * n + 5,
            };
            file.store(c).unwrap();
            assert_eq!(CheckpointFile::new(dir.path()).load().unwrap(), c);
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
        file.load().unwrap();
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
        let at = slot_offset(3) as usize + 9;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(CheckpointFile::new(dir.path()).load().unwrap(), older);
    }

    #[test]
    fn a_damaged_file_means_check_everything() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), [0xAB; 64]).unwrap();
        let c = CheckpointFile::new(dir.path()).load().unwrap();
        assert_eq!(
            c,
            Checkpoint {
                confirmed: 0,
                attempted: u64::MAX
            }
        );
        std::fs::write(dir.path().join(FILE), b"short").unwrap();
        let c = CheckpointFile::new(dir.path()).load().unwrap();
        assert_eq!(
            c,
            Checkpoint {
                confirmed: 0,
                attempted: u64::MAX
            }
        );
    }
}
