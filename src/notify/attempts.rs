//! `notification_attempts`: every attempt, kept in ClickHouse in batches from a bounded queue.
//!
//! Best effort by design: the outbox, not this table, is what makes notifications durable. An
//! attempt is not kept when ClickHouse is away long enough for the queue to fill, when
//! ClickHouse refuses the rows for good, or when the gateway stops with rows still queued; each
//! such row is counted in `hookhouse_notification_attempts_unrecorded_total`.

use std::time::Duration;

use tokio::sync::mpsc;

use super::message;
use super::send::{Answer, Sender};
use crate::clickhouse::rows::{AttemptRow, SubscriptionRow};
use crate::clickhouse::{store, Clickhouse, Failure};
use crate::events;
use crate::signing::Secret;

/// Attempts waiting to be written, at most.
pub const QUEUE: usize = 10_000;
/// Rows per insert, at most.
const BATCH: usize = 1000;

/// The row for one attempt, started at `started_at` (Unix seconds).
pub fn row(
    subscription_id: &str,
    webhook_id: &str,
    kind: &str,
    attempt: u32,
    answer: &Answer,
    started_at: u32,
) -> AttemptRow {
    AttemptRow {
        subscription_id: subscription_id.to_owned(),
        webhook_id: webhook_id.to_owned(),
        kind: kind.to_owned(),
        attempt,
        status_code: answer.status.unwrap_or(0),
        error: answer.error.clone().unwrap_or_default(),
        duration_ms: answer.took.as_millis().min(u128::from(u32::MAX)) as u32,
        attempted_at: started_at,
    }
}

/// Queues `row`; counts it when the queue is full.
pub fn keep(queue: &mpsc::Sender<AttemptRow>, row: AttemptRow) {
    if queue.try_send(row).is_err() {
        events::notify::attempts_unrecorded(1, None);
    }
}

/// Writes queued attempts, in batches, retrying while ClickHouse is away.
pub async fn record(ch: Clickhouse, mut queue: mpsc::Receiver<AttemptRow>) {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
        let mut pause = Duration::from_millis(200);
        loop {
            match store::insert_attempts(&ch, &batch).await {
                Ok(()) => break,
                Err(store::StoreError::Clickhouse(error))
                    if matches!(error.failure(), Failure::Permanent) =>
                {
                    events::notify::attempts_unrecorded(batch.len() as u64, Some(&error));
                    break;
                }
                Err(error) => {
                    events::notify::attempts_unrecorded(0, Some(&error));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch.clear();
    }
}

/// Sends a `ping` to a subscription now, for `subscription test`, and keeps the attempt. The
/// answer is returned even when the attempt cannot be kept (said on standard error).
pub async fn ping(
    ch: &Clickhouse,
    row: &SubscriptionRow,
    secret: &Secret,
) -> anyhow::Result<Answer> {
    let sender = Sender::new().map_err(|error| anyhow::anyhow!("notifications: {error}"))?;
    let id = message::new_webhook_id();
    let started = chrono::Utc::now();
    let body = message::ping(&row.subscription_id, started.timestamp_millis());
    let answer = sender.send(&row.url, secret, &id, &body).await;
    let attempt = self::row(
        &row.subscription_id,
        &id,
        message::PING,
        1,
        &answer,
        started.timestamp() as u32,
    );
    if let Err(error) = store::insert_attempts(ch, &[attempt]).await {
        eprintln!("warning: the attempt is not kept in notification_attempts: {error}");
    }
    Ok(answer)
}
