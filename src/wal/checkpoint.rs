//! The checkpoint: how far the log is known to be in ClickHouse, and how far an insert may have
//! reached.
//!
//! `confirmed` moves only after ClickHouse acknowledged an insert. `attempted` is written, and
//! fsynced, before an insert starts: after a crash every record up to it may or may not be in
//! ClickHouse, so the writer asks ClickHouse before inserting those again. The file is replaced
//! atomically (write, fsync, rename, fsync the folder), so it is either the old or the new one.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::segment::sync_dir;

const FILE: &str = "checkpoint";
const LEN: usize = 8 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every record with `seq <= confirmed` is in ClickHouse.
    pub confirmed: u64,
    /// No record with `seq > attempted` has been sent to ClickHouse.
    pub attempted: u64,
}

#[derive(Debug, Clone)]
pub struct CheckpointFile {
    dir: PathBuf,
}

impl CheckpointFile {
    pub fn new(dir: &Path) -> CheckpointFile {
        CheckpointFile {
            dir: dir.to_path_buf(),
        }
    }

    /// Reads the checkpoint. A missing file is a fresh log. An unreadable one is logged and read
    /// as "nothing confirmed, anything may have been attempted": every record is then checked
    /// against ClickHouse before it is inserted, which is slow but loses and duplicates nothing.
    pub fn load(&self) -> io::Result<Checkpoint> {
        let bytes = match fs::read(self.dir.join(FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Checkpoint {
                    confirmed: 0,
                    attempted: 0,
                })
            }
            Err(e) => return Err(e),
        };
        match decode(&bytes) {
            Some(checkpoint) => Ok(checkpoint),
            None => {
                tracing::error!(path = %self.dir.join(FILE).display(), "checkpoint file is damaged; every logged record will be checked against ClickHouse before it is inserted");
                Ok(Checkpoint {
                    confirmed: 0,
                    attempted: u64::MAX,
                })
            }
        }
    }

    pub fn store(&self, checkpoint: Checkpoint) -> io::Result<()> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        file.write_all(&encode(checkpoint))?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(FILE))?;
        sync_dir(&self.dir)
    }
}

fn encode(c: Checkpoint) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..8].copy_from_slice(&c.confirmed.to_le_bytes());
    out[8..16].copy_from_slice(&c.attempted.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Checkpoint> {
    let bytes: &[u8; LEN] = bytes.try_into().ok()?;
    let crc = u32::from_le_bytes(bytes[16..].try_into().ok()?);
    if crc32c::crc32c(&bytes[..16]) != crc {
        return None;
    }
    Some(Checkpoint {
        confirmed: u64::from_le_bytes(bytes[..8].try_into().ok()?),
        attempted: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
    })
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
        let c = Checkpoint {
            confirmed: 41,
            attempted: 99,
        };
        file.store(c).unwrap();
        assert_eq!(file.load().unwrap(), c);
    }

    #[test]
    fn a_damaged_file_means_check_everything() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"junk").unwrap();
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
