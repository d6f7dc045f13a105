//! Step 7: the batch is in ClickHouse. Tell the notifier what landed, move the checkpoint past
//! the batch, free the log segments that are now wholly delivered, and count what landed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::disk::WriterDisk;
use super::exactly_once::Landed;
use super::retry::{Retry, Stopped};
use crate::events;
use crate::ingest::AcceptedAt;
use crate::notify::{Facts, Notify};
use crate::wal::{self, Record};

/// Hands what landed to the notifier and returns once its outbox holds it: the checkpoint may
/// not pass a batch whose notifications a crash could lose (CONTRACT §9).
pub async fn tell(notify: &Notify, landed: &Landed<'_>, retry: &mut Retry) -> Result<(), Stopped> {
    if !notify.wanted() {
        return Ok(());
    }
    let facts = Facts::of(&landed.confirmed);
    let mut backoff = Retry::backoff();
    while let Err(error) = notify.tell(facts.clone()).await {
        retry
            .pause_disk("notification outbox", &error, &mut backoff)
            .await?;
    }
    Ok(())
}

pub async fn confirm(
    disk: &mut WriterDisk,
    shared: &Arc<wal::Shared>,
    batch: &[Record],
    landed: &Landed<'_>,
    started: Instant,
    retry: &mut Retry,
) -> Result<(), Stopped> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    let mut backoff = Retry::backoff();
    while let Err(error) = disk.confirm(last.seq).await {
        retry.pause_disk("checkpoint", &error, &mut backoff).await?;
    }
    shared.confirmed.store(last.seq, Ordering::Relaxed);
    let now = AcceptedAt::now().secs();
    events::writer::landed(
        batch
            .iter()
            .map(|r| Duration::from_secs_f64((now - r.accepted_at.secs()).max(0.0))),
    );
    for request in &landed.rejected {
        events::writer::rejected(request);
    }
    events::writer::batch_inserted(landed.events, landed.rejected.len(), started.elapsed());
    release(shared.clone(), last.seq);
    Ok(())
}

/// Deletes the segments ClickHouse now has, off the async threads.
fn release(shared: Arc<wal::Shared>, confirmed: u64) {
    tokio::task::spawn_blocking(move || match wal::release_through(&shared, confirmed) {
        Ok(0) => {}
        Ok(freed) => events::wal::released(freed),
        Err(error) => {
            tracing::warn!(%error, "deleting delivered log segments failed; will retry after the next batch")
        }
    });
}
