//! Waiting between tries: every step that talks to ClickHouse or the disk retries through
//! [`Retry`], which logs and counts the failure, waits out a capped backoff (cut short when
//! ClickHouse answers again), tells the supervisor the writer is alive, and gives up only on
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::backoff::Backoff;
use super::supervisor::WriterHealth;
use crate::clickhouse::ChError;
use crate::events;
use crate::shutdown::Shutdown;

pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Delivery stopped before the batch landed: the gateway is shutting down. What was not
/// confirmed stays in the log and lands at the next start.
#[derive(Debug)]
pub struct Stopped;

pub struct Retry {
    pub shutdown: Shutdown,
    /// Notified when ClickHouse answers again: a retry waiting out its backoff goes at once.
    clickhouse_back: Arc<Notify>,
    health: Arc<WriterHealth>,
}

impl Retry {
    pub fn new(
        shutdown: Shutdown,
        clickhouse_back: Arc<Notify>,
        health: Arc<WriterHealth>,
    ) -> Retry {
        Retry {
            shutdown,
            clickhouse_back,
            health,
        }
    }

    /// For tests of one step: a retry that is never shut down and reports to no supervisor.
    #[cfg(test)]
    pub fn detached() -> Retry {
        let (trigger, shutdown) = crate::shutdown::channel();
        // Never triggered, for the life of the test.
        std::mem::forget(trigger);
        Retry::new(
            shutdown,
            Arc::new(Notify::new()),
            Arc::new(WriterHealth::new(Duration::from_secs(3600))),
        )
    }

    /// For a one-shot command: shut down (its steps give up) `after` from now, reporting to
    /// no supervisor. Needs a Tokio runtime.
    pub fn for_command(after: Duration) -> Retry {
        let (trigger, shutdown) = crate::shutdown::channel();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            trigger.trigger();
        });
        Retry::new(
            shutdown,
            Arc::new(Notify::new()),
            Arc::new(WriterHealth::new(Duration::from_secs(3600))),
        )
    }

    pub fn backoff() -> Backoff {
        Backoff::new(BACKOFF_BASE, BACKOFF_CAP)
    }

    /// Tells the supervisor the writer is working and alive.
    pub fn beat(&self) {
        self.health.beat();
    }

    /// Tells the supervisor the writer waits for work: healthy however long that takes.
    pub fn idle(&self) {
        self.health.idle();
    }

    /// Logs a ClickHouse failure and waits before the next try.
    pub async fn pause(
        &mut self,
        what: &'static str,
        error: &ChError,
        backoff: &mut Backoff,
    ) -> Result<(), Stopped> {
        let delay = backoff.next_delay();
        events::writer::clickhouse_failed(what, error.kind(), error, Some(delay));
        self.wait(delay, true).await
    }

    /// Logs a local disk failure and waits before the next try.
    pub async fn pause_disk(
        &mut self,
        what: &'static str,
        error: &(dyn std::fmt::Display + Sync),
        backoff: &mut Backoff,
    ) -> Result<(), Stopped> {
        let delay = backoff.next_delay();
        events::writer::disk_failed(what, error, delay);
        self.wait(delay, false).await
    }

    /// Sleeps `delay`; `Stopped` on shutdown.
    pub async fn sleep(&mut self, delay: Duration) -> Result<(), Stopped> {
        self.wait(delay, false).await
    }

    async fn wait(&mut self, delay: Duration, until_clickhouse_back: bool) -> Result<(), Stopped> {
        self.beat();
        let notify = self.clickhouse_back.clone();
        let back = async {
            if until_clickhouse_back {
                notify.notified().await
            } else {
                std::future::pending().await
            }
        };
        let result = tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = back => Ok(()),
            _ = self.shutdown.triggered() => Err(Stopped),
        };
        self.beat();
        result
    }
}
