//! Step 1: the next batch from the log, bounded by rows, body bytes and time.
//!
//! A batch is sent when it reaches `BATCH_MAX_ROWS` or the byte cap, or `BATCH_MAX_WAIT_MS`
//! after its first record arrived, or at once when the gateway is shutting down. The log is
//! read on a blocking thread, never past what is durable.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::retry::{Retry, Stopped};
use crate::wal::{self, DurablePos, LogReader, Record};

pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

pub struct Batches {
    /// Taken while a blocking read runs, put back after.
    reader: Option<LogReader>,
    durable: watch::Receiver<DurablePos>,
    limits: BatchLimits,
    /// Where retries must repeat their first attempt: the first batch ends exactly here.
    first_through: Option<u64>,
    /// Records read past `first_through`: they start the batch after it.
    carried: Vec<Record>,
}

impl Batches {
    /// Reads the log from the record after `confirmed`.
    pub fn new(shared: Arc<wal::Shared>, confirmed: u64, limits: BatchLimits) -> Batches {
        Batches {
            durable: shared.durable(),
            reader: Some(LogReader::new(shared, confirmed)),
            limits,
            first_through: None,
            carried: Vec::new(),
        }
    }

    /// Makes the first batch the records up to `attempted` and no others, whatever the limits
    /// say now: the range the last run attempted, which a retry must send again as it was (see
    /// `exactly_once`). Its size was bounded by the limits of that run.
    pub fn first_batch_through(&mut self, attempted: u64) {
        self.first_through = Some(attempted);
    }

    /// The records up to `through`, read in chunks of the batch limits; what was read past it is
    /// carried to the next batch. Empty if the log holds none of them any more.
    async fn first_batch(
        &mut self,
        through: u64,
        retry: &mut Retry,
    ) -> Result<Vec<Record>, Stopped> {
        let mut batch = Vec::new();
        let mut backoff = Retry::backoff();
        loop {
            let durable = *self.durable.borrow_and_update();
            let before = batch.len();
            let rows = before + self.limits.max_rows;
            batch = match self.read(durable, batch, rows, self.limits.max_bytes).await {
                Ok(batch) => batch,
                Err((batch_so_far, error)) => {
                    retry.pause_disk("read log", &error, &mut backoff).await?;
                    batch = batch_so_far;
                    continue;
                }
            };
            if batch.last().is_some_and(|r| r.seq >= through) || batch.len() == before {
                break;
            }
        }
        let end = batch.partition_point(|r| r.seq <= through);
        self.carried = batch.split_off(end);
        Ok(batch)
    }

    /// The next batch: never empty. `Stopped` once shutting down with nothing left to read.
    pub async fn next(&mut self, retry: &mut Retry) -> Result<Vec<Record>, Stopped> {
        if let Some(through) = self.first_through.take() {
            let batch = self.first_batch(through, retry).await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
        let mut batch = std::mem::take(&mut self.carried);
        let mut bytes = batch.iter().map(|r| r.body.len()).sum::<usize>();
        let mut first_at: Option<Instant> = (!batch.is_empty()).then(Instant::now);
        let mut backoff = Retry::backoff();
        loop {
            let durable = *self.durable.borrow_and_update();
            let before = batch.len();
            let left = self.limits.max_bytes.saturating_sub(bytes);
            batch = match self.read(durable, batch, self.limits.max_rows, left).await {
                Ok(batch) => batch,
                Err((batch, error)) => {
                    retry.pause_disk("read log", &error, &mut backoff).await?;
                    batch
                }
            };
            bytes += batch[before..].iter().map(|r| r.body.len()).sum::<usize>();
            if batch.len() >= self.limits.max_rows || bytes >= self.limits.max_bytes {
                return Ok(batch);
            }
            let stopping = retry.shutdown.is_triggered();
            if batch.is_empty() {
                if stopping {
                    return Err(Stopped);
                }
                retry.idle();
                tokio::select! {
                    _ = self.durable.changed() => {}
                    _ = retry.shutdown.triggered() => {}
                }
                retry.beat();
                continue;
            }
            let deadline = *first_at.get_or_insert_with(Instant::now) + self.limits.max_wait;
            if stopping || Instant::now() >= deadline {
                return Ok(batch);
            }
            tokio::select! {
                _ = self.durable.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = retry.shutdown.triggered() => {}
            }
        }
    }

    /// Reads what the log has for the batch on a blocking thread, handing the reader back.
    async fn read(
        &mut self,
        durable: DurablePos,
        mut batch: Vec<Record>,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, (Vec<Record>, io::Error)> {
        let mut reader = self
            .reader
            .take()
            .expect("the reader is put back after every read");
        let (reader, result) = tokio::task::spawn_blocking(move || {
            // Lets tests make reading the log panic, as a bug would.
            fail::fail_point!("writer::read");
            let result = match reader.read(durable, max_rows, max_bytes, &mut batch) {
                Ok(()) => Ok(batch),
                Err(error) => Err((batch, error)),
            };
            (reader, result)
        })
        .await
        // A panic while reading is the supervisor's to handle: it starts a new writer.
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        self.reader = Some(reader);
        result
    }
}
