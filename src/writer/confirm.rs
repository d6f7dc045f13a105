//! Step 4: the batch is in ClickHouse. Move the checkpoint past it, free the log segments that
//! are now wholly delivered, and count what landed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::disk::WriterDisk;
use super::exactly_once::Landed;
use super::retry::{Retry, Stopped};
use crate::events;
use crate::ingest::AcceptedAt;
use crate::wal::{self, Record};

pub async fn confirm(
    disk: &mut WriterDisk,
    shared: &Arc<wal::Shared>,
    batch: &[Record],
    landed: &Landed,
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
