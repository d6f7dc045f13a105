//! The HTTP edge: the ingest route, probes and metrics, and what they share; [`tls`] makes the
//! listener speak HTTPS when configured.

pub mod answer;
pub mod ingest;
pub mod limits;
pub mod probes;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::credentials::SharedCredentials;
use crate::wal::Wal;
pub use limits::KeyRateLimiter;
pub use probes::Health;

/// What every handler sees.
pub struct AppState {
    pub wal: Arc<Wal>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub rate_limiter: Option<Arc<KeyRateLimiter>>,
    pub inflight: Arc<Semaphore>,
    /// One permit per body byte held by requests in flight (`HOOKHOUSE_MAX_INFLIGHT_BYTES`).
    pub inflight_bytes: Arc<Semaphore>,
    /// The credential view the writer keeps, read here only to rate-limit fairly.
    pub credentials: Arc<SharedCredentials>,
    pub health: Arc<Health>,
    pub metrics: PrometheusHandle,
}

/// The routes: ingest at `/` (POST only), probes, metrics; anything else is 404.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::post().to(ingest::ingest))
            .default_service(web::to(ingest::method_not_allowed)),
    )
    .route("/healthz", web::get().to(probes::healthz))
    .route("/readyz", web::get().to(probes::readyz))
    .route("/metrics", web::get().to(probes::metrics))
    .default_service(web::to(ingest::not_found));
}
