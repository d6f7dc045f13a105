//! Keeps the writer running, and tells liveness (`/healthz`, CONTRACT §6) whether it is.
//!
//! The writer runs as a task; if it panics (a bug, say, in reading the log), the supervisor
//! logs and counts it, reports the writer dead, and starts a new one after a growing pause. A
//! new writer starts from the stored checkpoint and checks everything that may have been
//! attempted against ClickHouse, exactly as after a crash of the process, so a restart loses
//! and duplicates nothing. Should it keep dying, `/healthz` stays 503 and a process supervisor
//! restarts the whole gateway; the log keeps everything meanwhile.
//!
//! A writer is also unhealthy when it has work but has not moved for longer than any single
//! step may take (a call that hangs beyond every timeout): it is stalled.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events;
use crate::shutdown::Shutdown;

/// Liveness state of the writer, beaten by the writer and read by `/healthz`.
pub struct WriterHealth {
    started: Instant,
    /// Milliseconds after `started` of the last sign of life while working; 0 while idle.
    last_beat_ms: AtomicU64,
    /// Why the writer is down, while it is.
    dead: Mutex<Option<String>>,
    stall_after: Duration,
}

impl WriterHealth {
    /// A writer is stalled when it has not moved for `stall_after` while it has work.
    pub fn new(stall_after: Duration) -> WriterHealth {
        WriterHealth {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            dead: Mutex::new(None),
            stall_after,
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means idle.
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// The writer is working and has just made progress.
    pub fn beat(&self) {
        self.last_beat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The writer is waiting for work: healthy however long that takes.
    pub fn idle(&self) {
        self.last_beat_ms.store(0, Ordering::Relaxed);
    }

    fn set_dead(&self, why: Option<String>) {
        *self.dead.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// `None` when the writer is alive and moving or waiting for work; otherwise why not.
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(why);
        }
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        let silent = Duration::from_millis(self.now_ms().saturating_sub(last));
        (last != 0 && silent > self.stall_after).then(|| {
            format!(
                "stalled: no progress for {} s while the log has work",
                silent.as_secs()
            )
        })
    }
}

/// Runs writers made by `start` until shutdown, starting a new one whenever one panics.
pub async fn supervise<F, Fut>(health: Arc<WriterHealth>, mut shutdown: Shutdown, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut deaths: u32 = 0;
    loop {
        health.beat();
        // Aborted with the supervisor: a writer outliving its gateway would race the next one.
        let mut task = AbortOnDrop(tokio::spawn(start()));
        let panic = match (&mut task.0).await {
            Ok(()) => return,
            Err(error) if error.is_panic() => panic_message(error.into_panic()),
            Err(error) => error.to_string(),
        };
        deaths = deaths.saturating_add(1);
        let pause = Duration::from_millis(500u64 << deaths.min(7));
        events::writer::died(&panic, deaths, pause);
        health.set_dead(Some(format!(
            "died {deaths} time(s), last: {panic}; starting again in {} ms",
            pause.as_millis()
        )));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.triggered() => return,
        }
        health.set_dead(None);
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn idle_is_healthy_and_silence_while_working_is_a_stall() {
        let health = WriterHealth::new(Duration::from_millis(50));
        assert_eq!(health.problem(), None);
        health.beat();
        assert_eq!(health.problem(), None);
        std::thread::sleep(Duration::from_millis(80));
        assert!(health.problem().unwrap().starts_with("stalled"));
        health.idle();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(health.problem(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_panics_is_reported_and_started_again() {
        let health = Arc::new(WriterHealth::new(Duration::from_secs(60)));
        let (trigger, shutdown) = crate::shutdown::channel();
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let writer_shutdown = shutdown.clone();
        let supervisor = tokio::spawn(supervise(health.clone(), shutdown, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let mut shutdown = writer_shutdown.clone();
            async move {
                if n < 2 {
                    panic!("boom {n}");
                }
                shutdown.triggered().await
            }
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let problem = health.problem().expect("dead after the first panic");
        assert!(problem.contains("boom 0"), "{problem}");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(health.problem(), None);
        trigger.trigger();
        let _ = supervisor.await;
    }
}
