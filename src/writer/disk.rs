//! The writer's own files in the data folder: the checkpoint it moves, and `undeliverable/`,
//! where a row that neither `events` nor `rejected` takes is kept for the operator.
//!
//! Both are written durably before the writer goes on: the checkpoint moves past a record only
//! once the record is in ClickHouse or in `undeliverable/`, fsynced, file and folder.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::exactly_once::LocalDisk;
use crate::clickhouse::rows::Landing;
use crate::wal::segment::sync_dir;
use crate::wal::{Checkpoint, CheckpointFile};

pub struct WriterDisk {
    checkpoint_file: Arc<CheckpointFile>,
    checkpoint: Checkpoint,
    undeliverable: PathBuf,
}

impl WriterDisk {
    pub fn new(
        checkpoint_file: Arc<CheckpointFile>,
        checkpoint: Checkpoint,
        data_dir: &std::path::Path,
    ) -> WriterDisk {
        WriterDisk {
            checkpoint_file,
            checkpoint,
            undeliverable: data_dir.join("undeliverable"),
        }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Stores that every record up to `seq` is in ClickHouse (or set aside).
    pub async fn confirm(&mut self, seq: u64) -> io::Result<()> {
        let next = Checkpoint {
            confirmed: seq,
            ..self.checkpoint
        };
        self.store(next).await
    }

    async fn store(&mut self, next: Checkpoint) -> io::Result<()> {
        let file = self.checkpoint_file.clone();
        tokio::task::spawn_blocking(move || file.store(next))
            .await
            .map_err(io::Error::other)??;
        self.checkpoint = next;
        Ok(())
    }
}

impl LocalDisk for WriterDisk {
    async fn mark_attempted(&mut self, seq: u64) -> io::Result<()> {
        let next = Checkpoint {
            attempted: seq,
            ..self.checkpoint
        };
        self.store(next).await
    }

    async fn set_aside(&self, row: &Landing<'_>, error: &str) -> io::Result<()> {
        let line = serde_json::json!({
            "pipeline_id": row.pipeline_id,
            "__kdd_request_id": row.request_id,
            "__kdd_request_unix_timestamp": row.accepted_at,
            "__kdd_requester_key": row.key,
            "__kdd_request_body": row.body,
            "reason": row.reason,
            "error": error,
        })
        .to_string();
        let dir = self.undeliverable.clone();
        let name = format!("{}.json", row.request_id);
        tokio::task::spawn_blocking(move || write_durably(&dir, &name, line.as_bytes()))
            .await
            .map_err(io::Error::other)?
    }
}

/// Writes `name` in `dir` whole or not at all, and makes both survive a power cut.
fn write_durably(dir: &std::path::Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}
