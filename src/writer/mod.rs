//! The batch writer: follows the log and lands every acknowledged record exactly once, as a
//! chain of steps, each with one job and a plain input and output:
//!
//! 1. [`batch`]: the next batch from the log (bounded by rows, bytes and time).
//! 2. [`authenticate`]: each record sorted into `events` or `rejected` (CONTRACT §3).
//! 3. [`verify`]: signatures checked where the pipeline verifies them (CONTRACT §8).
//! 4. [`filter`]: event type and delivery id named; event types the pipeline does not keep
//!    go to `rejected`.
//! 5. [`redeliveries`]: a delivery that already landed goes to `rejected`.
//! 6. [`exactly_once`]: what ClickHouse does not have yet inserted, and only that.
//! 7. [`confirm`]: what landed told to the notifier (made durable in its outbox, CONTRACT §9),
//!    the checkpoint moved past the batch, delivered segments freed, counts.
//!
//! [`Writer::run`] is the short loop that runs them in order; [`supervisor`] restarts it should
//! it panic and tells `/healthz` whether it is alive. Every step retries through [`retry`]
//! until it succeeds or the gateway shuts down; the writer's files live in [`disk`].

pub mod authenticate;
pub mod backoff;
pub mod batch;
pub mod confirm;
pub mod disk;
pub mod exactly_once;
pub mod filter;
pub mod plan;
pub mod redeliveries;
pub mod replay;
pub mod retry;
pub mod supervisor;
pub mod verify;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod model_tests_replicated;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clickhouse::{migrate, Delivery};
use crate::credentials::SharedCredentials;
use crate::events;
use crate::notify::Notify;
use crate::wal::{self, Checkpoint, CheckpointFile};
use authenticate::Authenticate;
use batch::{BatchLimits, Batches};
use disk::WriterDisk;
use exactly_once::ExactlyOnce;
use retry::{Retry, Stopped};

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch_max_rows: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub credentials_refresh: Duration,
    pub insert_timeout: Duration,
    pub data_dir: PathBuf,
}

pub struct Writer {
    shared: Arc<wal::Shared>,
    batches: Batches,
    authenticate: Authenticate,
    exactly_once: ExactlyOnce<Delivery, WriterDisk>,
    notify: Notify,
    retry: Retry,
}

impl Writer {
    /// A writer that goes on from `checkpoint`, the last one stored.
    pub fn new(
        delivery: Delivery,
        shared: Arc<wal::Shared>,
        checkpoint: Checkpoint,
        credentials: Arc<SharedCredentials>,
        notify: Notify,
        config: &WriterConfig,
        retry: Retry,
    ) -> Writer {
        let limits = BatchLimits {
            max_rows: config.batch_max_rows,
            max_bytes: config.batch_max_bytes,
            max_wait: config.batch_max_wait,
        };
        let disk = WriterDisk::new(
            Arc::new(CheckpointFile::new(&config.data_dir)),
            checkpoint,
            &config.data_dir,
        );
        Writer {
            batches: Batches::new(shared.clone(), checkpoint.confirmed, limits),
            shared,
            authenticate: Authenticate::new(
                delivery.clickhouse().clone(),
                credentials,
                config.credentials_refresh,
            ),
            exactly_once: ExactlyOnce::new(
                delivery,
                disk,
                checkpoint.attempted,
                config.insert_timeout,
            ),
            notify,
            retry,
        }
    }

    /// Runs until shutdown, then delivers what it holds and what the log has, stopping when
    /// the log is drained or delivery cannot go on; the caller bounds this by the grace period.
    pub async fn run(mut self) {
        let _ = self.deliver_all().await;
    }

    async fn deliver_all(&mut self) -> Result<(), Stopped> {
        self.migrate().await?;
        self.choose_retries().await?;
        loop {
            let batch = self.batches.next(&mut self.retry).await?;
            let started = Instant::now();
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                continue;
            };
            let (mut rows, view) = self.authenticate.sort(&batch, &mut self.retry).await?;
            let headers = verify::verify_signatures(&view, &mut rows);
            filter::name_and_filter(&view, &mut rows, &headers);
            redeliveries::drop_redeliveries(
                &self.exactly_once.destination,
                &mut rows,
                &mut self.retry,
            )
            .await?;
            let landed = self
                .exactly_once
                .land(first.seq, last.seq, rows, &mut self.retry)
                .await?;
            // Lets tests stop the writer between an insert and its confirmation, as a crash can.
            fail::fail_point!("writer::landed");
            confirm::tell(&self.notify, &landed, &mut self.retry).await?;
            confirm::confirm(
                &mut self.exactly_once.disk,
                &self.shared,
                &batch,
                &landed,
                started,
                &mut self.retry,
            )
            .await?;
        }
    }

    /// Where the data tables deduplicate inserts, retries repeat their first attempt exactly,
    /// beginning with the range the last run left unconfirmed (see [`exactly_once`]).
    async fn choose_retries(&mut self) -> Result<(), Stopped> {
        let mut backoff = Retry::backoff();
        let engine = loop {
            match self.exactly_once.destination.deduplicating_engine().await {
                Ok(engine) => break engine,
                Err(error) => self.retry.pause("check", &error, &mut backoff).await?,
            }
        };
        let Some(engine) = engine else {
            // Settle-and-check is sound only against the one node whose inserts it sees.
            if self.exactly_once.destination.clickhouse().pin() {
                events::writer::failover_off();
            }
            return Ok(());
        };
        events::writer::identical_retries(&engine);
        self.exactly_once
            .destination
            .clickhouse()
            .deduplicate_inserts();
        let checkpoint = self.exactly_once.disk.checkpoint();
        let stored = if checkpoint.attempted > checkpoint.confirmed {
            self.batches.first_batch_through(checkpoint.attempted);
            self.exactly_once.disk.load_plan().await
        } else {
            None
        };
        self.exactly_once.retry_identically(stored);
        Ok(())
    }

    async fn migrate(&mut self) -> Result<(), Stopped> {
        let mut backoff = backoff::Backoff::new(retry::BACKOFF_BASE, Duration::from_secs(5));
        let ch = self.exactly_once.destination.clickhouse().clone();
        loop {
            match migrate::migrate(&ch).await {
                Ok(_) => return Ok(()),
                Err(error) => self.retry.pause("migrate", &error, &mut backoff).await?,
            }
        }
    }
}
