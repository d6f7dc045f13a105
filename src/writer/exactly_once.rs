//! Step 3: land a sorted batch in ClickHouse exactly once.
//!
//! The protocol on one server (plain `MergeTree`), and why it holds (CONTRACT §2):
//!
//! 1. Before a batch is first sent, the checkpoint's `attempted` mark is moved past it and
//!    fsynced. Records above `attempted` have never been sent by anyone: they need no check.
//! 2. A batch that may have been sent before (at or below `attempted` when this writer started,
//!    or after any failed insert of this writer) is *settled* first: the writer waits until none
//!    of this gateway's inserts is running in ClickHouse (they carry a query id with the
//!    gateway's instance id, and only this process uses that data folder, which is locked). It
//!    never goes on while one runs: an insert that outlived its client timeout may still land,
//!    and sending its rows again would land them twice. One running well past its timeout is
//!    asked to stop (`KILL QUERY … SYNC`), and the writer still waits until it is gone.
//! 3. Once settled, nothing of this gateway can land any more except what the writer sends, so
//!    asking `events` and `rejected` which of the batch's request ids they hold (by the ids
//!    themselves, in chunks: the answer is never larger than the batch) tells exactly what is
//!    missing, and only that is sent.
//! 4. Inserts are synchronous on every server (`async_insert=0` where the server knows it): an
//!    acknowledged insert's rows are visible to the next presence query.
//!
//! Failures. Passing ones are retried with capped backoff. An insert that timed out makes the
//! next one wait twice as long (up to an hour), so that a slow ClickHouse is not asked to stop
//! every insert it could have finished. A permanent refusal is either systemic (the table no
//! longer has the columns and types hookhouse writes: every row would fail, none is at fault)
//! or poison (some rows' content): the writer asks the table's columns first. Systemic: wait
//! and retry, loudly, until the table is mended; no row is rejected for it. Poison: split the
//! batch in halves until the rows at fault are alone; those go to `rejected` as
//! `INSERT_FAILED`, and a row that not even `rejected` takes is kept on disk, durably, before
//! the checkpoint moves past it.
//!
//! ## Replicated tables: identical retries (a cluster, ClickHouse Cloud)
//!
//! Settling is unsound where several servers hold the tables: after the node a gateway talks to
//! dies mid-insert, the gateway fails over to a replica whose `system.processes` does not show
//! the insert, and which may not have fetched the part the dead node committed (it cannot while
//! that node is down), so a presence check there says "missing" for rows that landed. What holds
//! instead is ClickHouse's own insert deduplication, which every `Replicated*MergeTree` (and
//! Cloud's `SharedMergeTree`) has: a block's id (partition id + hash of the block's data) is
//! registered in ZooKeeper / Keeper atomically with the part, so an identical block inserted
//! again through any replica of the shard, before or after the first one commits, is dropped
//! (and acknowledged). A block that differs in any way (a subset of the rows, another order, a
//! row in the other table) is new and lands. So, when the writer finds that the data tables
//! deduplicate (their engine, asked at start), it makes every retry the same blocks:
//!
//! 1. Before a batch is first sent, its plan ([`super::plan`]: each row's decision, `events` or
//!    `rejected` with its reason, event type and delivery id; and the inserts, one per table, each
//!    a list of rows in log order) is stored durably, then the `attempted` mark. A retry in this
//!    process sends the planned inserts as they are. After a restart the first batch is exactly
//!    the range `(confirmed, attempted]` (whatever the batch limits say now), and the stored plan
//!    gives its rows the first attempt's decisions, even if a token was revoked or a pipeline's
//!    signing changed meanwhile: otherwise a row could land in `events` by the first attempt and
//!    in `rejected` by the retry.
//! 2. Identical input makes identical blocks: ClickHouse cuts an insert into blocks by the rows
//!    it reads (`max_insert_block_size`, by default far above `BATCH_MAX_ROWS`), by partition (month of
//!    `received_at`) and, through a `Distributed` table, by shard (`sipHash64` of the request id),
//!    all functions of the rows (and of the server's block settings, which an operator should
//!    not change while a gateway has an unconfirmed batch); every column is sent (no
//!    `DEFAULT now()`).
//! 3. A block that may have landed is first looked for (by request ids, as in 3. above): if every
//!    row shows, it is not sent again; otherwise the whole block is, never a subset, since it may
//!    have landed in part (one month or one shard of it) and the rest is dropped as a duplicate.
//! 4. A refused block (poison) is split, or its single row moved to `rejected`, and the new plan
//!    is stored before the new blocks are sent: a refused insert landed nothing.
//! 5. No settling is needed: whichever of two identical inserts commits second is dropped.
//!
//! The limit is ZooKeeper's memory: the data tables keep the ids of their last 10,000 blocks
//! (`replicated_deduplication_window`, set by `migrate`; ClickHouse's default is 100) for up to a
//! week (`replicated_deduplication_window_seconds`, left at its default). A retry after more than 10,000 other blocks went into the same table and shard (a
//! gateway or node away that long under heavy load) is still safe when the node asked shows the
//! rows (step 3), but not when it shows none because it lags too: then the block lands twice.
//! A data folder from a version without plans, or a damaged plan, falls back to sending the rows
//! the node does not show, and says so in the log.
//!
//! The step talks to ClickHouse and to the local disk through two small traits, so that the
//! model test below can run this very code against a ClickHouse that crashes, times out and
//! lands inserts late.

use std::collections::HashSet;
use std::io;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::plan::Plan;
use super::retry::{Retry, Stopped};
use crate::clickhouse::rows::Landing;
use crate::clickhouse::{ChError, Failure};
use crate::credentials::Reason;
use crate::events;

/// The longest an insert may be given after repeated timeouts.
const MAX_INSERT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often a writer waiting on ClickHouse tells the supervisor it is alive.
const BEAT_EVERY: Duration = Duration::from_secs(5);
/// How often the writer asks whether its inserts still run.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Where rows land. Used with one concrete type at a time, in one task: the futures need no
/// `Send` bound of their own.
#[allow(async_fn_in_trait)]
pub trait Destination {
    /// Inserts rows into `events` (no reason) and `rejected`, within `timeout`.
    async fn insert(&self, rows: &[Landing<'_>], timeout: Duration) -> Result<(), ChError>;
    /// How many of this gateway's inserts are running.
    async fn running_inserts(&self) -> Result<u64, ChError>;
    /// Asks this gateway's running inserts to stop; returns once they have.
    async fn stop_running_inserts(&self) -> Result<(), ChError>;
    /// Which of `rows`' request ids are in `events` or `rejected`.
    async fn present(&self, rows: &[Landing<'_>]) -> Result<HashSet<String>, ChError>;
    /// Why the tables refuse every row, if they do (see the module docs).
    async fn drift(&self) -> Result<Option<String>, ChError>;
}

/// The gateway's own disk, as this step needs it.
#[allow(async_fn_in_trait)]
pub trait LocalDisk {
    /// Stores, durably, that records up to `seq` may be sent from now on.
    async fn mark_attempted(&mut self, seq: u64) -> io::Result<()>;
    /// Keeps a row that neither table takes, durably, for the operator.
    async fn set_aside(&self, row: &Landing<'_>, error: &str) -> io::Result<()>;
    /// Stores, durably, what the batch it names is sent as (replicated tables only).
    async fn store_plan(&mut self, plan: &Plan) -> io::Result<()>;
}

/// What one batch came to, for counting and for notifications.
#[derive(Debug, Default, PartialEq)]
pub struct Landed<'a> {
    /// Rows inserted into `events` now.
    pub events: usize,
    /// Rows inserted into `rejected` now, each with its reason.
    pub rejected: Vec<RejectedRequest>,
    /// Rows not sent because an earlier, unconfirmed insert had landed them.
    pub already_present: usize,
    /// Rows kept in `undeliverable/`.
    pub set_aside: usize,
    /// Every row ClickHouse now holds, inserted now or found there, in no particular order
    /// (`data.landed` and `request.rejected` are told from these by log sequence, CONTRACT §9).
    pub confirmed: Vec<Confirmed<'a>>,
}

/// A row of the batch that ClickHouse has confirmed holding.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmed<'a> {
    /// The record's sequence number in the log.
    pub seq: u64,
    pub pipeline_id: u64,
    pub request_id: &'a str,
    pub accepted_at: f64,
    /// `None`: in `events`. A row found already present is told with the reason it was sent
    /// with (ClickHouse is asked which ids it holds, not in which table).
    pub reason: Option<&'static str>,
}

impl<'a> Confirmed<'a> {
    fn of(row: &Landing<'a>) -> Confirmed<'a> {
        Confirmed {
            seq: row.seq,
            pipeline_id: row.pipeline_id,
            request_id: row.request_id,
            accepted_at: row.accepted_at,
            reason: row.reason,
        }
    }
}

/// A request that landed in `rejected`: what an operator needs to find it (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRequest {
    pub reason: &'static str,
    pub pipeline_id: u64,
    pub key: String,
    pub request_id: String,
}

pub struct ExactlyOnce<D, L> {
    pub destination: D,
    pub disk: L,
    /// Records at or below this may be in ClickHouse from before this writer started.
    check_through: u64,
    /// The `attempted` mark as stored.
    attempted: u64,
    configured_timeout: Duration,
    timeout: Duration,
    /// `Some` where ClickHouse deduplicates inserts: retries repeat the first attempt's blocks.
    identical: Option<Identical>,
}

/// The state of identical retries.
struct Identical {
    /// The plan stored by the last run, for its unconfirmed batch; taken by the first batch.
    stored: Option<Plan>,
}

impl<D: Destination, L: LocalDisk> ExactlyOnce<D, L> {
    /// `attempted` is the stored mark: everything at or below it is checked before it is sent.
    pub fn new(destination: D, disk: L, attempted: u64, insert_timeout: Duration) -> Self {
        ExactlyOnce {
            destination,
            disk,
            check_through: attempted,
            attempted,
            configured_timeout: insert_timeout,
            timeout: insert_timeout,
            identical: None,
        }
    }

    /// From now on every retry sends exactly the blocks of the attempt it repeats (the tables
    /// deduplicate inserts: see the module docs). `stored` is the plan the last run kept, if any.
    pub fn retry_identically(&mut self, stored: Option<Plan>) {
        self.identical = Some(Identical { stored });
    }

    /// Lands `rows`, the records `first_seq..=last_seq` of the log, exactly once.
    pub async fn land<'a>(
        &mut self,
        first_seq: u64,
        last_seq: u64,
        rows: Vec<Landing<'a>>,
        retry: &mut Retry,
    ) -> Result<Landed<'a>, Stopped> {
        if self.identical.is_some() {
            return self
                .land_identically(first_seq, last_seq, rows, retry)
                .await;
        }
        let mut landed = Landed::default();
        let mut needs_check = first_seq <= self.check_through;
        if last_seq > self.attempted {
            self.mark_attempted(last_seq, retry).await?;
        }
        let mut parts = vec![rows];
        while let Some(mut part) = parts.pop() {
            let mut backoff = Retry::backoff();
            loop {
                retry.beat();
                if needs_check {
                    part = self.missing(part, &mut landed, retry).await?;
                }
                if part.is_empty() {
                    break;
                }
                let insert = self.destination.insert(&part, self.timeout);
                let Err(error) = beating(retry, insert).await else {
                    self.timeout = self.configured_timeout;
                    count(&part, &mut landed);
                    break;
                };
                // Whatever happened, some of it may have landed, or may land yet.
                needs_check = true;
                if !self.refused(&error, &mut backoff, retry).await? {
                    continue;
                }
                if part.len() > 1 {
                    events::writer::clickhouse_failed("insert", error.kind(), &error, None);
                    let right = part.split_off(part.len() / 2);
                    parts.push(right);
                    parts.push(part);
                    break;
                }
                let row = &mut part[0];
                if row.reason == Some(Reason::InsertFailed.as_str()) {
                    self.set_aside(row, &error, retry).await?;
                    landed.set_aside += 1;
                    break;
                }
                events::writer::poison_found(row.request_id, &error);
                row.reason = Some(Reason::InsertFailed.as_str());
            }
        }
        Ok(landed)
    }

    /// After a failed insert: true when ClickHouse refused the rows for their content (poison:
    /// split them), false once the pause a passing failure or a changed table calls for is over
    /// (send again).
    async fn refused(
        &mut self,
        error: &ChError,
        backoff: &mut Backoff,
        retry: &mut Retry,
    ) -> Result<bool, Stopped> {
        if matches!(error.0, clickhouse::error::Error::TimedOut) {
            self.timeout = (self.timeout * 2).min(MAX_INSERT_TIMEOUT);
        }
        if error.failure() == Failure::Retryable {
            retry.pause("insert", error, backoff).await?;
            return Ok(false);
        }
        match self.destination.drift().await {
            Err(check) => retry.pause("check", &check, backoff).await?,
            Ok(Some(drift)) => {
                events::writer::tables_changed(&drift, error);
                retry.pause("insert", error, backoff).await?;
            }
            Ok(None) => return Ok(true),
        }
        Ok(false)
    }

    /// [`Self::land`] where the tables deduplicate inserts (see the module docs).
    async fn land_identically<'a>(
        &mut self,
        first_seq: u64,
        last_seq: u64,
        mut rows: Vec<Landing<'a>>,
        retry: &mut Retry,
    ) -> Result<Landed<'a>, Stopped> {
        let mut landed = Landed::default();
        let mut needs_check = first_seq <= self.check_through;
        let stored = self.identical.as_mut().and_then(|i| i.stored.take());
        // Whether the blocks sent now are those of the first attempt of this range: always, but
        // for a range attempted by a run that left no usable plan.
        let mut exact = !needs_check;
        let mut plan = match stored {
            Some(plan) if plan.fits(first_seq, last_seq, rows.len()) && plan.apply(&mut rows) => {
                exact = true;
                plan
            }
            _ => {
                if needs_check {
                    events::writer::no_plan_for_retry(first_seq, last_seq);
                }
                Plan::new(first_seq, last_seq, &rows)
            }
        };
        if last_seq > self.attempted {
            self.store_plan(&plan, retry).await?;
            self.mark_attempted(last_seq, retry).await?;
        }
        let mut part = 0;
        let mut backoff = Retry::backoff();
        while part < plan.parts() {
            retry.beat();
            let mut sent = plan.rows(part, &rows);
            if needs_check {
                let Some(missing) = self.missing_block(sent, exact, &mut landed, retry).await?
                else {
                    part += 1;
                    continue;
                };
                sent = missing;
            }
            let insert = self.destination.insert(&sent, self.timeout);
            let Err(error) = beating(retry, insert).await else {
                self.timeout = self.configured_timeout;
                count(&sent, &mut landed);
                part += 1;
                backoff = Retry::backoff();
                continue;
            };
            needs_check = true;
            if !self.refused(&error, &mut backoff, retry).await? {
                continue;
            }
            // A refused insert landed nothing; its rows go on in new blocks, recorded before
            // they are sent.
            if sent.len() > 1 {
                events::writer::clickhouse_failed("insert", error.kind(), &error, None);
                plan.split(part);
            } else if sent[0].reason == Some(Reason::InsertFailed.as_str()) {
                self.set_aside(&sent[0], &error, retry).await?;
                landed.set_aside += 1;
                part += 1;
                continue;
            } else {
                events::writer::poison_found(sent[0].request_id, &error);
                plan.reject(part, Reason::InsertFailed, &mut rows);
            }
            self.store_plan(&plan, retry).await?;
        }
        Ok(landed)
    }

    /// What to send of a block that may have landed before: nothing (`None`) when ClickHouse
    /// shows every row; else, when the block is `exact`, all of it (ClickHouse drops what it
    /// took already: a block split by month or by shard may have landed in part), and without a
    /// plan (`!exact`) only the rows it does not show.
    async fn missing_block<'a>(
        &mut self,
        block: Vec<Landing<'a>>,
        exact: bool,
        landed: &mut Landed<'a>,
        retry: &mut Retry,
    ) -> Result<Option<Vec<Landing<'a>>>, Stopped> {
        let mut backoff = Retry::backoff();
        let present = loop {
            events::writer::presence_checked(block.len());
            match beating(retry, self.destination.present(&block)).await {
                Ok(present) => break present,
                Err(error) => retry.pause("check", &error, &mut backoff).await?,
            }
        };
        if present.is_empty() || (exact && present.len() < block.len()) {
            return Ok(Some(block));
        }
        let before = block.len();
        let (found, rest): (Vec<Landing>, Vec<Landing>) = block
            .into_iter()
            .partition(|r| present.contains(r.request_id));
        landed.confirmed.extend(found.iter().map(Confirmed::of));
        events::writer::duplicates_skipped(before - rest.len());
        landed.already_present += before - rest.len();
        Ok((!rest.is_empty()).then_some(rest))
    }

    async fn store_plan(&mut self, plan: &Plan, retry: &mut Retry) -> Result<(), Stopped> {
        let mut backoff = Retry::backoff();
        while let Err(error) = self.disk.store_plan(plan).await {
            retry
                .pause_disk("attempt plan", &error, &mut backoff)
                .await?;
        }
        Ok(())
    }

    async fn mark_attempted(&mut self, seq: u64, retry: &mut Retry) -> Result<(), Stopped> {
        let mut backoff = Retry::backoff();
        loop {
            match self.disk.mark_attempted(seq).await {
                Ok(()) => {
                    self.attempted = seq;
                    return Ok(());
                }
                Err(error) => retry.pause_disk("checkpoint", &error, &mut backoff).await?,
            }
        }
    }

    async fn set_aside(
        &mut self,
        row: &Landing<'_>,
        error: &ChError,
        retry: &mut Retry,
    ) -> Result<(), Stopped> {
        let mut backoff = Retry::backoff();
        loop {
            match self.disk.set_aside(row, &error.to_string()).await {
                Ok(()) => {
                    events::writer::set_aside(row.request_id);
                    return Ok(());
                }
                Err(io) => retry.pause_disk("undeliverable", &io, &mut backoff).await?,
            }
        }
    }

    /// `part` without what ClickHouse already has, once none of this gateway's inserts runs.
    async fn missing<'a>(
        &mut self,
        part: Vec<Landing<'a>>,
        landed: &mut Landed<'a>,
        retry: &mut Retry,
    ) -> Result<Vec<Landing<'a>>, Stopped> {
        let mut backoff = Retry::backoff();
        loop {
            self.settle(retry).await?;
            events::writer::presence_checked(part.len());
            match beating(retry, self.destination.present(&part)).await {
                Ok(present) => {
                    let before = part.len();
                    let (found, rest): (Vec<Landing>, Vec<Landing>) = part
                        .into_iter()
                        .partition(|r| present.contains(r.request_id));
                    landed.confirmed.extend(found.iter().map(Confirmed::of));
                    if rest.len() < before {
                        events::writer::duplicates_skipped(before - rest.len());
                        landed.already_present += before - rest.len();
                    }
                    return Ok(rest);
                }
                Err(error) => retry.pause("check", &error, &mut backoff).await?,
            }
        }
    }

    /// Returns once none of this gateway's inserts is running in ClickHouse.
    async fn settle(&mut self, retry: &mut Retry) -> Result<(), Stopped> {
        let mut backoff = Retry::backoff();
        let mut stop_at = Instant::now() + self.timeout;
        loop {
            retry.beat();
            let running = match self.destination.running_inserts().await {
                Ok(0) => return Ok(()),
                Ok(running) => running,
                Err(error) => {
                    retry.pause("check", &error, &mut backoff).await?;
                    continue;
                }
            };
            if Instant::now() >= stop_at {
                // It has run for more than its timeout since it was given up on.
                events::writer::stopping_own_inserts(running);
                if let Err(error) = self.destination.stop_running_inserts().await {
                    events::writer::clickhouse_failed("stop", error.kind(), &error, None);
                }
                stop_at = Instant::now() + self.timeout;
            } else {
                events::writer::waiting_for_own_inserts(running);
            }
            retry.sleep(SETTLE_POLL).await?;
        }
    }
}

/// Awaits `call`, telling the supervisor every few seconds that the writer is alive: an insert
/// may rightly take as long as its (growing) timeout, and liveness must not call that a stall.
async fn beating<T>(retry: &Retry, call: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(call);
    loop {
        tokio::select! {
            out = &mut call => return out,
            _ = tokio::time::sleep(BEAT_EVERY) => retry.beat(),
        }
    }
}

fn count<'a>(part: &[Landing<'a>], landed: &mut Landed<'a>) {
    for row in part {
        landed.confirmed.push(Confirmed::of(row));
        match row.reason {
            None => landed.events += 1,
            Some(reason) => landed.rejected.push(RejectedRequest {
                reason,
                pipeline_id: row.pipeline_id,
                key: row.key.clone(),
                request_id: row.request_id.to_string(),
            }),
        }
    }
}

impl Destination for crate::clickhouse::Delivery {
    async fn insert(&self, rows: &[Landing<'_>], timeout: Duration) -> Result<(), ChError> {
        crate::clickhouse::Delivery::insert(self, rows, timeout).await
    }
    async fn running_inserts(&self) -> Result<u64, ChError> {
        crate::clickhouse::Delivery::running_inserts(self).await
    }
    async fn stop_running_inserts(&self) -> Result<(), ChError> {
        crate::clickhouse::Delivery::stop_running_inserts(self).await
    }
    async fn present(&self, rows: &[Landing<'_>]) -> Result<HashSet<String>, ChError> {
        crate::clickhouse::Delivery::present(self, rows).await
    }
    async fn drift(&self) -> Result<Option<String>, ChError> {
        crate::clickhouse::Delivery::drift(self).await
    }
}
