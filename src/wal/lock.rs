//! One data folder, one gateway (CONTRACT §11): two processes appending to and delivering from
//! the same log would deliver the same records twice, and their instance ids would be the
//! same, so neither could tell the other's inserts from its own.
//!
//! An exclusive `flock` on `data/lock`, taken at start and held for the life of the gateway.
//! The kernel drops it when the process dies, kill -9 included, so a crash never leaves a stale
//! lock behind (a pid file would). Written with `libc` rather than a crate: it is one call.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Held while the gateway runs; dropping it releases the folder.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the data folder {0} is in use by another hookhouse process (HOOKHOUSE_DATA_DIR); one folder serves one gateway")]
    InUse(String),
    #[error("cannot lock the data folder {0}: {1}")]
    Io(String, std::io::Error),
}

impl DataDirLock {
    /// Takes the folder's lock, or says at once that another process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let shown = data_dir.display().to_string();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("lock"))
            .map_err(|e| LockError::Io(shown.clone(), e))?;
        // SAFETY: flock on a descriptor this function owns, valid for the call.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            return Err(if error.kind() == std::io::ErrorKind::WouldBlock {
                LockError::InUse(shown)
            } else {
                LockError::Io(shown, error)
            });
        }
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let second = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(second, LockError::InUse(_)), "{second}");
        assert!(second
            .to_string()
            .contains(&dir.path().display().to_string()));
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
