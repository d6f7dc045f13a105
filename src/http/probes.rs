//! Liveness, readiness and metrics for the people who run the gateway (CONTRACT §6).
//!
//! `/healthz` (liveness) answers 200 while the process serves and its batch writer is alive and
//! moving or waiting for work, 503 when the writer died or stalled: restarting the process is
//! then the cure, and the log keeps everything. `/readyz` (readiness) answers 200 while the
//! gateway can accept durably: the log is writable and under its budget, and it is not shutting
//! down. ClickHouse being down does not fail readiness: buffering through an outage is what the
//! log is for, and a load balancer that drained every gateway during an outage would turn it
//! into lost webhooks. Both report every check, from state kept fresh in the background (a
//! time-boxed ClickHouse ping every second), so a probe never waits on ClickHouse itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::clickhouse::Clickhouse;
use crate::events;
use crate::shutdown::Shutdown;
use crate::wal;
use crate::writer::supervisor::WriterHealth;

const PING_EVERY: Duration = Duration::from_secs(1);
const PING_WITHIN: Duration = Duration::from_secs(1);

/// What readiness is made of.
pub struct Health {
    clickhouse: Mutex<Result<(), String>>,
    /// Woken when ClickHouse answers again after failing, so that retries need not sleep out
    /// their backoff.
    clickhouse_back: Arc<Notify>,
    shutting_down: AtomicBool,
    wal: Arc<wal::Shared>,
    pub writer: Arc<WriterHealth>,
}

impl Health {
    pub fn new(wal: Arc<wal::Shared>, writer: Arc<WriterHealth>) -> Health {
        Health {
            clickhouse: Mutex::new(Err("not checked yet".into())),
            clickhouse_back: Arc::new(Notify::new()),
            shutting_down: AtomicBool::new(false),
            wal,
            writer,
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    fn set_clickhouse(&self, state: Result<(), String>) {
        let mut current = self.clickhouse.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_err() && state.is_ok() {
            self.clickhouse_back.notify_waiters();
        }
        *current = state;
    }

    /// Resolves the next time ClickHouse answers after failing.
    pub fn clickhouse_back(&self) -> Arc<Notify> {
        self.clickhouse_back.clone()
    }

    /// Each check's verdict: `None` when it passes, or why it fails.
    pub fn checks(&self) -> [(&'static str, Option<String>); 4] {
        let clickhouse = self
            .clickhouse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .err();
        let log = if self.wal.over_budget() {
            Some("over its disk budget (HOOKHOUSE_WAL_MAX_BYTES)".to_string())
        } else if self.wal.failing.load(Ordering::Relaxed) {
            Some("writes to the log are failing".to_string())
        } else {
            None
        };
        let shutdown = self.is_shutting_down().then(|| "shutting down".to_string());
        [
            ("log", log),
            ("shutdown", shutdown),
            ("clickhouse", clickhouse),
            ("writer", self.writer.problem()),
        ]
    }

    /// Pings ClickHouse every second until shutdown, and says when it is lost, when it is
    /// back, and when what waited in the log meanwhile has been delivered.
    pub async fn watch_clickhouse(self: Arc<Self>, ch: Clickhouse, mut shutdown: Shutdown) {
        let mut outage = Outage::Unknown;
        loop {
            let state = ch
                .ping(PING_WITHIN)
                .await
                .map_err(|e| format!("unreachable: {e}"));
            outage = outage.next(state.as_ref().err().map(String::as_str), &self.wal);
            self.set_clickhouse(state);
            tokio::select! {
                _ = tokio::time::sleep(PING_EVERY) => {}
                _ = shutdown.triggered() => return,
            }
        }
    }
}

/// Where ClickHouse stands between pings, for the lines that say it was lost and came back.
enum Outage {
    /// Not pinged yet.
    Unknown,
    Up,
    /// Unreachable since `since`; the checkpoint stood at `from` then.
    Down {
        since: Instant,
        from: u64,
    },
    /// Back since `since`; the log holds what waited, up to sequence number `until`.
    Draining {
        since: Instant,
        from: u64,
        until: u64,
    },
}

impl Outage {
    fn next(self, error: Option<&str>, wal: &wal::Shared) -> Outage {
        let confirmed = || wal.confirmed.load(Ordering::Relaxed);
        let state = match (self, error) {
            (Outage::Down { since, from }, None) => {
                // The writer may have delivered some already: it retries on its own too.
                let waiting = wal.pending_records();
                events::clickhouse::back(since.elapsed(), waiting);
                Outage::Draining {
                    since: Instant::now(),
                    from,
                    until: confirmed() + waiting,
                }
            }
            (down @ Outage::Down { .. }, Some(_)) => down,
            (_, Some(error)) => {
                events::clickhouse::lost(error);
                Outage::Down {
                    since: Instant::now(),
                    from: confirmed(),
                }
            }
            (draining @ Outage::Draining { .. }, None) => draining,
            (Outage::Unknown | Outage::Up, None) => Outage::Up,
        };
        match state {
            Outage::Draining { since, from, until } if confirmed() >= until => {
                let delivered = confirmed().saturating_sub(from);
                if delivered > 0 {
                    events::clickhouse::backlog_delivered(delivered, since.elapsed());
                }
                Outage::Up
            }
            other => other,
        }
    }
}

/// Liveness: fails only on the writer.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    answer(&state.health.checks(), &["writer"], "ok")
}

/// Readiness: fails on the log and on shutting down, never on ClickHouse.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    answer(&state.health.checks(), &["log", "shutdown"], "ready")
}

/// 200 with `status` when none of `deciding` fails, else 503 naming those that do; the body
/// reports every check either way.
fn answer(
    checks: &[(&'static str, Option<String>)],
    deciding: &[&str],
    status: &str,
) -> HttpResponse {
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(name, f)| f.is_some() && deciding.contains(name))
        .map(|(name, _)| *name)
        .collect();
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, f)| (name.to_string(), json!(f.as_deref().unwrap_or("ok"))))
        .collect();
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({"status": status, "checks": detail}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "failing": failing, "checks": detail}))
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
