//! The writer's own files in the data folder: the checkpoint it moves, `undeliverable/`,
//! where a row that neither `events` nor `rejected` takes is kept for the operator, and (with
//! replicated tables) the plan of the batch last attempted.
//!
//! Both are written durably before the writer goes on: the checkpoint moves past a record only
//! once the record is in ClickHouse or in `undeliverable/`, fsynced, file and folder.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::exactly_once::LocalDisk;
use super::plan::Plan;
use crate::clickhouse::rows::Landing;
use crate::wal::segment::sync_dir;
use crate::wal::{Checkpoint, CheckpointFile};

/// The plan of the batch last attempted (see [`super::plan`]), beside the checkpoint.
const PLAN_FILE: &str = "attempt-plan.json";

pub struct WriterDisk {
    checkpoint_file: Arc<CheckpointFile>,
    checkpoint: Checkpoint,
    undeliverable: PathBuf,
    data_dir: PathBuf,
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
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The plan the last run stored, if it can be read: `None` when there is none or it is
    /// damaged (the caller then checks what landed).
    pub async fn load_plan(&self) -> Option<Plan> {
        let path = self.data_dir.join(PLAN_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Plan::decode(&bytes),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot read the attempt plan");
                None
            }
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

    async fn store_plan(&mut self, plan: &Plan) -> io::Result<()> {
        let bytes = plan.encode();
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || write_durably(&dir, PLAN_FILE, &bytes))
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
