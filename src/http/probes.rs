//! Liveness, readiness and metrics for the people who run the gateway.
//!
//! `/healthz` answers 200 while the process serves. `/readyz` answers from state kept fresh in
//! the background (a time-boxed ClickHouse ping every second), so a probe never waits on
//! ClickHouse itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::clickhouse::Clickhouse;
use crate::shutdown::Shutdown;
use crate::wal;

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
}

impl Health {
    pub fn new(wal: Arc<wal::Shared>) -> Health {
        Health {
            clickhouse: Mutex::new(Err("not checked yet".into())),
            clickhouse_back: Arc::new(Notify::new()),
            shutting_down: AtomicBool::new(false),
            wal,
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
    pub fn checks(&self) -> [(&'static str, Option<String>); 3] {
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
            ("clickhouse", clickhouse),
            ("log", log),
            ("shutdown", shutdown),
        ]
    }

    /// Pings ClickHouse every second until shutdown.
    pub async fn watch_clickhouse(self: Arc<Self>, ch: Clickhouse, mut shutdown: Shutdown) {
        loop {
            let state = ch
                .ping(PING_WITHIN)
                .await
                .map_err(|e| format!("unreachable: {e}"));
            self.set_clickhouse(state);
            tokio::select! {
                _ = tokio::time::sleep(PING_EVERY) => {}
                _ = shutdown.triggered() => return,
            }
        }
    }
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let checks = state.health.checks();
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, f)| f.is_some())
        .map(|(name, _)| *name)
        .collect();
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, f)| (name.to_string(), json!(f.as_deref().unwrap_or("ok"))))
        .collect();
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready", "checks": detail}))
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
