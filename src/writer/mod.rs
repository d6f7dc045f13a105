//! The batch writer: follows the log, batches, re-checks credentials, inserts into ClickHouse,
//! and only then moves the checkpoint.
//!
//! Exactly once. Before a batch is sent, the checkpoint's `attempted` mark is moved past it and
//! fsynced; `confirmed` moves after ClickHouse acknowledged it. A batch that overlaps what may
//! have been attempted before (after a crash or a failed insert) is first checked: the writer
//! waits until none of its own inserts is still running in ClickHouse (they carry a query id
//! with this gateway's instance id), asks which request ids of the batch are already in `events`
//! or `rejected`, and sends only the rest. ClickHouse 18.16 has no insert dedup token to lean on.
//!
//! Failures. Retryable ones (network, timeouts, overload, missing tables) are retried with capped
//! exponential backoff and jitter while the edge keeps accepting into the log. A permanent one
//! splits the batch in halves until the rows at fault are alone; those go to `rejected` as
//! `INSERT_FAILED` with their body, and the rest lands.

pub mod auth;
pub mod backoff;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clickhouse::client::INSERT_TIMEOUT;
use crate::clickhouse::rows::{EventRow, RejectedRow, RequestIdRow};
use crate::clickhouse::{migrate, ChError, Clickhouse, Failure};
use crate::events;
use crate::ingest::AcceptedAt;
use crate::shutdown::Shutdown;
use crate::wal::{self, Checkpoint, CheckpointFile, DurablePos, LogReader, Record};
use auth::{CredentialCache, Reason};
use backoff::Backoff;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Above this many pipelines in one batch, the presence check scans by time alone.
const MAX_PIPELINES_IN_FILTER: usize = 1000;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch_max_rows: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub credentials_refresh: Duration,
    /// Identifies this gateway's inserts in `system.processes`.
    pub instance_id: String,
    pub data_dir: PathBuf,
}

/// Why delivery stopped before the batch landed.
#[derive(Debug)]
struct Stopped;

/// One row on its way out: a record of the batch, and where it goes.
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    index: usize,
    /// `None`: `events`; otherwise `rejected` with this reason.
    reject: Option<Reason>,
}

pub struct Writer {
    ch: Clickhouse,
    shared: Arc<wal::Shared>,
    config: WriterConfig,
    checkpoint_file: Arc<CheckpointFile>,
    checkpoint: Checkpoint,
    /// Records at or below this may already be in ClickHouse from before this process started.
    check_through: u64,
    credentials: CredentialCache,
    /// Notified when ClickHouse answers again: a retry waiting out its backoff goes at once.
    clickhouse_back: Arc<tokio::sync::Notify>,
}

impl Writer {
    pub fn new(
        ch: Clickhouse,
        shared: Arc<wal::Shared>,
        checkpoint: Checkpoint,
        config: WriterConfig,
        clickhouse_back: Arc<tokio::sync::Notify>,
    ) -> Writer {
        Writer {
            ch,
            shared,
            checkpoint_file: Arc::new(CheckpointFile::new(&config.data_dir)),
            check_through: checkpoint.attempted,
            checkpoint,
            config,
            credentials: CredentialCache::default(),
            clickhouse_back,
        }
    }

    /// Runs until shutdown, then delivers what it holds and what the log has, stopping when
    /// the log is drained or delivery cannot go on; the caller bounds this by the grace period.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        if self.migrate(&mut shutdown).await.is_err() {
            return;
        }
        let mut durable_rx = self.shared.durable();
        let mut reader = Some(LogReader::new(
            self.shared.clone(),
            self.checkpoint.confirmed,
        ));
        loop {
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            let mut first_at: Option<Instant> = None;
            loop {
                let durable = *durable_rx.borrow_and_update();
                let taken = reader
                    .take()
                    .expect("the reader is put back after every read");
                let before = batch.len();
                let (returned, result) =
                    read_blocking(taken, durable, &self.config, batch, batch_bytes).await;
                reader = Some(returned);
                batch = match result {
                    Ok(batch) => batch,
                    Err((batch, error)) => {
                        tracing::error!(%error, "reading the log failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        batch
                    }
                };
                batch_bytes += body_bytes(&batch[before..]);
                if batch.len() >= self.config.batch_max_rows
                    || batch_bytes >= self.config.batch_max_bytes
                {
                    break;
                }
                let stopping = shutdown.is_triggered();
                if batch.is_empty() {
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = durable_rx.changed() => {}
                        _ = shutdown.triggered() => {}
                    }
                    continue;
                }
                let first_at = *first_at.get_or_insert_with(Instant::now);
                let deadline = first_at + self.config.batch_max_wait;
                if stopping || Instant::now() >= deadline {
                    break;
                }
                tokio::select! {
                    _ = durable_rx.changed() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                    _ = shutdown.triggered() => {}
                }
            }
            if self.deliver(&batch, &mut shutdown).await.is_err() {
                return;
            }
        }
    }

    async fn migrate(&mut self, shutdown: &mut Shutdown) -> Result<(), Stopped> {
        let mut backoff = Backoff::new(BACKOFF_BASE, Duration::from_secs(5));
        loop {
            match migrate::migrate(&self.ch).await {
                Ok(_) => return Ok(()),
                Err(error) => {
                    self.pause("migrate", &error, &mut backoff, shutdown)
                        .await?
                }
            }
        }
    }

    /// Lands one batch exactly once and moves the checkpoint past it.
    async fn deliver(&mut self, batch: &[Record], shutdown: &mut Shutdown) -> Result<(), Stopped> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let started = Instant::now();
        let rows = self.authenticate(batch, shutdown).await?;
        let mut rejected = 0;
        for reason in rows.iter().filter_map(|o| o.reject) {
            events::writer::rejected(reason.as_str(), 1);
            rejected += 1;
        }
        let mut needs_check = first.seq <= self.check_through;
        if last.seq > self.checkpoint.attempted {
            self.checkpoint.attempted = last.seq;
            self.store_checkpoint(shutdown).await?;
        }
        let mut parts = vec![rows];
        while let Some(mut part) = parts.pop() {
            let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
            loop {
                if needs_check {
                    part = match self.without_present(batch, part.clone()).await {
                        Ok(rest) => rest,
                        Err(error) => {
                            self.pause("check", &error, &mut backoff, shutdown).await?;
                            continue;
                        }
                    };
                }
                if part.is_empty() {
                    break;
                }
                let Err(error) = self.insert(batch, &part).await else {
                    break;
                };
                // Whatever happened, some of it may have landed.
                needs_check = true;
                match error.failure() {
                    Failure::Retryable => {
                        self.pause("insert", &error, &mut backoff, shutdown).await?
                    }
                    Failure::Permanent if part.len() > 1 => {
                        events::writer::clickhouse_failed("insert", error.kind(), &error, None);
                        let right = part.split_off(part.len() / 2);
                        parts.push(right);
                        parts.push(part);
                        break;
                    }
                    Failure::Permanent => {
                        let row = &mut part[0];
                        let record = &batch[row.index];
                        if row.reject == Some(Reason::InsertFailed) {
                            // Not even `rejected` takes it: keep it on disk for the operator.
                            self.set_aside(record, &error);
                            break;
                        }
                        events::writer::poison_found(record.request_id.as_str(), &error);
                        if row.reject.is_none() {
                            rejected += 1;
                        }
                        events::writer::rejected(Reason::InsertFailed.as_str(), 1);
                        row.reject = Some(Reason::InsertFailed);
                    }
                }
            }
        }
        self.checkpoint.confirmed = last.seq;
        self.store_checkpoint(shutdown).await?;
        self.shared
            .confirmed
            .store(last.seq, std::sync::atomic::Ordering::Relaxed);
        let now = AcceptedAt::now().secs();
        events::writer::landed(
            batch
                .iter()
                .map(|r| Duration::from_secs_f64((now - r.accepted_at.secs()).max(0.0))),
        );
        events::writer::batch_inserted(batch.len() - rejected, rejected, started.elapsed());
        self.release();
        Ok(())
    }

    /// Sorts each record into `events` or `rejected`, reloading credentials when needed.
    async fn authenticate(
        &mut self,
        batch: &[Record],
        shutdown: &mut Shutdown,
    ) -> Result<Vec<Outgoing>, Stopped> {
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        while self
            .credentials
            .needs_reload(batch, self.config.credentials_refresh)
        {
            match self.credentials.reload(&self.ch).await {
                Ok(()) => break,
                Err(error) => {
                    self.pause("credentials", &error, &mut backoff, shutdown)
                        .await?
                }
            }
        }
        Ok(batch
            .iter()
            .enumerate()
            .map(|(index, record)| Outgoing {
                index,
                reject: self.credentials.check(record).err(),
            })
            .collect())
    }

    /// Sends `part` as (at most) two inserts: its `events` rows, then its `rejected` rows.
    async fn insert(&self, batch: &[Record], part: &[Outgoing]) -> Result<(), ChError> {
        let query_id = |table: &str| {
            format!(
                "hookhouse-{}-{}-{}",
                self.config.instance_id,
                table,
                uuid::Uuid::new_v4().simple()
            )
        };
        let keys: Vec<String> = part
            .iter()
            .map(|o| batch[o.index].key.to_string())
            .collect();
        let good: Vec<usize> = (0..part.len())
            .filter(|i| part[*i].reject.is_none())
            .collect();
        if !good.is_empty() {
            let mut insert = self
                .ch
                .inner()
                .insert_unescaped::<EventRow<'static>>(&self.ch.table("events"))
                .await?
                .with_setting("query_id", query_id("events"))
                .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
            for i in &good {
                let record = &batch[part[*i].index];
                insert
                    .write(&EventRow {
                        pipeline_id: record.pipeline_id.get(),
                        __kdd_request_id: record.request_id.as_str(),
                        __kdd_request_unix_timestamp: record.accepted_at.secs(),
                        __kdd_requester_key: &keys[*i],
                        __kdd_request_body: body_text(record),
                        received_at: record.accepted_at.whole_secs(),
                    })
                    .await?;
            }
            insert.end().await?;
        }
        if good.len() < part.len() {
            let mut insert = self
                .ch
                .inner()
                .insert_unescaped::<RejectedRow<'static>>(&self.ch.table("rejected"))
                .await?
                .with_setting("query_id", query_id("rejected"))
                .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
            for (i, out) in part.iter().enumerate() {
                let Some(reason) = out.reject else { continue };
                let record = &batch[out.index];
                insert
                    .write(&RejectedRow {
                        pipeline_id: record.pipeline_id.get(),
                        __kdd_request_id: record.request_id.as_str(),
                        __kdd_request_unix_timestamp: record.accepted_at.secs(),
                        __kdd_requester_key: &keys[i],
                        __kdd_request_body: body_text(record),
                        reason: reason.as_str(),
                        received_at: record.accepted_at.whole_secs(),
                    })
                    .await?;
            }
            insert.end().await?;
        }
        Ok(())
    }

    /// `part` without the rows ClickHouse already has, after waiting out this gateway's inserts
    /// that may still be running there.
    async fn without_present(
        &self,
        batch: &[Record],
        part: Vec<Outgoing>,
    ) -> Result<Vec<Outgoing>, ChError> {
        if part.is_empty() {
            return Ok(part);
        }
        self.wait_for_own_inserts().await?;
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        let mut pipelines = HashSet::new();
        for out in &part {
            let record = &batch[out.index];
            lo = lo.min(record.accepted_at.secs());
            hi = hi.max(record.accepted_at.secs());
            pipelines.insert(record.pipeline_id.get());
        }
        // A second of margin: the float literal need not parse to the very same double.
        let (lo, hi) = (lo - 1.0, hi + 1.0);
        let time = format!(
            "received_at >= toDateTime({}) AND received_at <= toDateTime({}) \
             AND __kdd_request_unix_timestamp >= {lo} AND __kdd_request_unix_timestamp <= {hi}",
            lo.max(0.0).floor() as u64,
            hi.max(0.0).ceil() as u64,
        );
        let pipeline_filter = if pipelines.len() <= MAX_PIPELINES_IN_FILTER {
            let ids: Vec<String> = pipelines.iter().map(u64::to_string).collect();
            format!(" AND pipeline_id IN ({})", ids.join(","))
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT __kdd_request_id FROM {} WHERE {time}{pipeline_filter} \
             UNION ALL SELECT __kdd_request_id FROM {} WHERE {time}",
            self.ch.table("events"),
            self.ch.table("rejected"),
        );
        let present: HashSet<String> = self
            .ch
            .fetch_all::<RequestIdRow>(&sql)
            .await?
            .into_iter()
            .map(|r| r.__kdd_request_id)
            .collect();
        let before = part.len();
        let rest: Vec<Outgoing> = part
            .into_iter()
            .filter(|o| !present.contains(batch[o.index].request_id.as_str()))
            .collect();
        if rest.len() < before {
            events::writer::duplicates_skipped(before - rest.len());
        }
        Ok(rest)
    }

    /// Waits until no insert of this gateway is running in ClickHouse: one cut off by a crash or
    /// a timeout may still be writing, and its rows must be counted before deciding what to send.
    async fn wait_for_own_inserts(&self) -> Result<(), ChError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Count {
            n: u64,
        }
        let sql = format!(
            "SELECT count() AS n FROM system.processes WHERE query_id LIKE 'hookhouse-{}-%'",
            self.config.instance_id
        );
        let deadline = Instant::now() + INSERT_TIMEOUT * 2;
        loop {
            let running = self
                .ch
                .fetch_all::<Count>(&sql)
                .await?
                .first()
                .map_or(0, |c| c.n);
            if running == 0 || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn store_checkpoint(&self, shutdown: &mut Shutdown) -> Result<(), Stopped> {
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        loop {
            let file = self.checkpoint_file.clone();
            let checkpoint = self.checkpoint;
            let stored = tokio::task::spawn_blocking(move || file.store(checkpoint)).await;
            match stored {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => {
                    tracing::error!(%error, "writing the checkpoint failed; retrying");
                }
                Err(error) => tracing::error!(%error, "checkpoint task failed; retrying"),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.triggered() => return Err(Stopped),
            }
        }
    }

    /// Deletes the segments ClickHouse now has, off the async threads.
    fn release(&self) {
        let shared = self.shared.clone();
        let confirmed = self.checkpoint.confirmed;
        tokio::task::spawn_blocking(move || match wal::release_through(&shared, confirmed) {
            Ok(0) => {}
            Ok(freed) => events::wal::released(freed),
            Err(error) => {
                tracing::warn!(%error, "deleting delivered log segments failed; will retry after the next batch")
            }
        });
    }

    /// Keeps a record that neither `events` nor `rejected` accepts in `undeliverable/`.
    fn set_aside(&self, record: &Record, error: &ChError) {
        let dir = self.config.data_dir.join("undeliverable");
        let line = serde_json::json!({
            "pipeline_id": record.pipeline_id.get(),
            "__kdd_request_id": record.request_id.as_str(),
            "__kdd_request_unix_timestamp": record.accepted_at.secs(),
            "__kdd_requester_key": record.key.to_string(),
            "__kdd_request_body": body_text(record),
            "error": error.to_string(),
        });
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(
                dir.join(format!("{}.json", record.request_id)),
                line.to_string(),
            )
        });
        match written {
            Ok(()) => {
                tracing::error!(request_id = %record.request_id, "ClickHouse refuses this row even in `rejected`; kept in undeliverable/")
            }
            Err(e) => {
                tracing::error!(request_id = %record.request_id, error = %e, "ClickHouse refuses this row and it could not be kept on disk")
            }
        }
    }

    /// Logs a failure and waits before the next try; stops waiting on shutdown.
    async fn pause(
        &self,
        what: &'static str,
        error: &ChError,
        backoff: &mut Backoff,
        shutdown: &mut Shutdown,
    ) -> Result<(), Stopped> {
        let delay = backoff.next_delay();
        events::writer::clickhouse_failed(what, error.kind(), error, Some(delay));
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.clickhouse_back.notified() => Ok(()),
            _ = shutdown.triggered() => Err(Stopped),
        }
    }
}

fn body_text(record: &Record) -> &str {
    // The edge accepted only UTF-8; a record that decodes otherwise failed its checksum first.
    std::str::from_utf8(&record.body).unwrap_or_default()
}

fn body_bytes(batch: &[Record]) -> usize {
    batch.iter().map(|r| r.body.len()).sum()
}

type ReadResult = Result<Vec<Record>, (Vec<Record>, std::io::Error)>;

/// Reads what the log has for the batch on a blocking thread, handing the reader back.
async fn read_blocking(
    mut reader: LogReader,
    durable: DurablePos,
    config: &WriterConfig,
    mut batch: Vec<Record>,
    batch_bytes: usize,
) -> (LogReader, ReadResult) {
    let max_rows = config.batch_max_rows;
    let max_bytes = config.batch_max_bytes.saturating_sub(batch_bytes);
    let joined = tokio::task::spawn_blocking(move || {
        let result = reader.read(durable, max_rows, max_bytes, &mut batch);
        let result = match result {
            Ok(()) => Ok(batch),
            Err(e) => Err((batch, e)),
        };
        (reader, result)
    })
    .await;
    joined.expect("reading the log does not panic")
}
