//! Wiring: the only place that knows every stage. [`Application::build`] opens the log, binds the
//! listener and starts the writer; [`Application::run`] serves until a shutdown signal and then
//! stops the stages in order: refuse new requests, finish those in flight, fsync and close the
//! log, let the writer land what it holds, exit.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::clickhouse::{Clickhouse, Delivery};
use crate::config::Settings;
use crate::credentials::SharedCredentials;
use crate::http::{self, AppState, Health, KeyRateLimiter};
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::wal::{checkpoint, Checkpoint, DataDirLock, Wal, WalConfig};
use crate::writer::retry::Retry;
use crate::writer::supervisor::{self, WriterHealth};
use crate::writer::{Writer, WriterConfig};
use crate::{events, telemetry};

/// How long readiness reports shutting down before the listener closes.
const DRAIN_DELAY: Duration = Duration::from_millis(500);

pub struct Application {
    port: u16,
    server: Server,
    server_handle: ServerHandle,
    wal: Arc<Wal>,
    health: Arc<Health>,
    writer: JoinHandle<()>,
    trigger: ShutdownTrigger,
    grace: Duration,
    /// Held until the gateway is gone: one data folder, one gateway.
    _lock: DataDirLock,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // Before anything is opened: bad certificate files stop start-up at once.
        let tls = http::tls::server_config(&settings)?;
        // First, so that what recovery finds is counted too.
        let metrics = telemetry::metrics();
        events::describe();
        let data_dir = settings.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
        let lock = DataDirLock::acquire(&data_dir)?;
        // Before anything starts: a gateway that cannot listen must not leave a writer behind.
        let addr = settings.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (HOOKHOUSE_LISTEN)"))?;
        let instance_id = instance_id(&data_dir)?;
        let wal_config = WalConfig {
            dir: data_dir.clone(),
            max_bytes: settings.wal_max_bytes,
            segment_bytes: settings.wal_segment_bytes,
            fsync: settings.fsync,
        };
        let (wal, recovery) = tokio::task::spawn_blocking(move || Wal::open(wal_config))
            .await?
            .with_context(|| {
                format!("cannot open the write-ahead log in {}", data_dir.display())
            })?;
        events::wal::recovered(
            recovery.segments,
            recovery.bytes,
            recovery.last_seq,
            recovery.checkpoint.confirmed,
        );
        let wal = Arc::new(wal);
        let shared = wal.shared().clone();
        let shared_for_gauges = shared.clone();

        let (trigger, shutdown) = shutdown::channel();
        let ch = Clickhouse::new(&settings)?;
        // Longer than any one step of the writer may take without a sign of life.
        let stall_after = settings.clickhouse_insert_timeout() * 2 + Duration::from_secs(60);
        let writer_health = Arc::new(WriterHealth::new(stall_after));
        let health = Arc::new(Health::new(shared.clone(), writer_health.clone()));
        tokio::spawn(
            health
                .clone()
                .watch_clickhouse(ch.clone(), shutdown.clone()),
        );

        let secrets_key = match &settings.secrets_key_file {
            // Checked when the settings were loaded; read once more here, for its bytes.
            Some(path) => Some(Arc::new(
                crate::signing::SecretsKey::load(path)
                    .map_err(|error| anyhow::anyhow!("HOOKHOUSE_SECRETS_KEY_FILE: {error}"))?,
            )),
            None => None,
        };
        let credentials = Arc::new(SharedCredentials::new(secrets_key.clone()));
        let notify = crate::notify::start(
            ch.clone(),
            secrets_key,
            &settings.data_dir,
            crate::notify::NotifyConfig {
                backoff_scale: settings.notify_backoff_scale,
                max_pending: settings.notify_max_pending as usize,
                refresh: settings.credentials_refresh(),
            },
            shutdown.clone(),
        )
        .await?;
        tokio::spawn(refresh_credentials(
            credentials.clone(),
            ch.clone(),
            settings.credentials_refresh(),
            shutdown.clone(),
        ));
        let writer_config = WriterConfig {
            batch_max_rows: settings.batch_max_rows as usize,
            batch_max_bytes: settings.batch_max_bytes as usize,
            batch_max_wait: settings.batch_max_wait(),
            credentials_refresh: settings.credentials_refresh(),
            insert_timeout: settings.clickhouse_insert_timeout(),
            data_dir: settings.data_dir.clone(),
        };
        let delivery = Delivery::new(ch, instance_id);
        let mut first_checkpoint = Some(recovery.checkpoint);
        let start_writer = {
            let (shared, credentials, health, writer_health, shutdown) = (
                shared,
                credentials.clone(),
                health.clone(),
                writer_health.clone(),
                shutdown.clone(),
            );
            move || {
                // A writer started again after a panic goes on from the checkpoint it stored.
                let checkpoint = first_checkpoint
                    .take()
                    .or_else(|| {
                        checkpoint::read_only(&writer_config.data_dir)
                            .ok()
                            .flatten()
                    })
                    // Unreadable now: check everything it may have sent, which the newest
                    // durable record bounds.
                    .unwrap_or(Checkpoint {
                        confirmed: recovery.checkpoint.confirmed,
                        attempted: shared.durable().borrow().seq,
                    });
                let retry = Retry::new(
                    shutdown.clone(),
                    health.clickhouse_back(),
                    writer_health.clone(),
                );
                Writer::new(
                    delivery.clone(),
                    shared.clone(),
                    checkpoint,
                    credentials.clone(),
                    notify.clone(),
                    &writer_config,
                    retry,
                )
                .run()
            }
        };
        let writer = tokio::spawn(supervisor::supervise(
            writer_health,
            shutdown.clone(),
            start_writer,
        ));

        tokio::spawn(report_log_state(shared_for_gauges, shutdown.clone()));
        let rate_limiter = KeyRateLimiter::new(settings.rate_limit_per_key).map(Arc::new);
        if let Some(limiter) = rate_limiter.clone() {
            tokio::spawn(forget_idle_keys(limiter, shutdown.clone()));
        }
        let state = web::Data::new(AppState {
            wal: wal.clone(),
            max_body_bytes: settings.max_body_bytes as usize,
            body_timeout: settings.body_timeout(),
            rate_limiter,
            inflight: Arc::new(Semaphore::new(settings.max_inflight_requests)),
            inflight_bytes: Arc::new(Semaphore::new(settings.max_inflight_bytes as usize)),
            credentials,
            health: health.clone(),
            metrics,
        });

        let port = listener.local_addr()?.port();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
                .workers(workers)
                .max_connections(settings.max_connections.div_ceil(workers))
                .shutdown_timeout(settings.shutdown_grace_secs)
                .disable_signals();
        // Ingest, probes and metrics alike: one listener, HTTPS when configured.
        let (server, scheme) = match tls {
            Some(config) => (server.listen_rustls_0_23(listener, config)?, "https"),
            None => (server.listen(listener)?, "http"),
        };
        let server = server.run();
        tracing::info!(%addr, port, scheme, "hookhouse is listening");
        Ok(Application {
            port,
            server_handle: server.handle(),
            server,
            wal,
            health,
            writer,
            trigger,
            grace: settings.shutdown_grace(),
            _lock: lock,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `stop` resolves, then shuts down in order within the grace period.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            server,
            server_handle,
            wal,
            health,
            writer,
            trigger,
            grace,
            _lock: lock,
            ..
        } = self;
        let server = tokio::spawn(server);
        stop.await;
        let started = Instant::now();
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new requests, finishing those in flight"
        );
        health.set_shutting_down();
        // Readiness says 503 (and new requests get 503) for a moment before the listener
        // closes, so that a load balancer stops sending here before connections are refused.
        tokio::time::sleep(DRAIN_DELAY.min(grace / 4)).await;
        // Graceful: stop accepting, wait up to the grace period for requests in flight.
        server_handle.stop(true).await;
        let _ = server.await;
        // Everything answered 200 is written; fsync and close the log.
        let log = wal.shared().clone();
        tokio::task::spawn_blocking(move || wal.close()).await?;
        trigger.trigger();
        let left = grace.saturating_sub(started.elapsed());
        let mut writer = writer;
        let finished = match tokio::time::timeout(left, &mut writer).await {
            Ok(_) => true,
            Err(_) => {
                // Stopped like a crash would stop it: the next start checks what it attempted.
                writer.abort();
                let _ = writer.await;
                false
            }
        };
        events::lifecycle::stopped(log.pending_records(), finished);
        // Only now may another gateway open this data folder.
        drop(lock);
        Ok(())
    }
}

/// This gateway's id, kept in the data folder: it names the gateway's inserts in ClickHouse.
fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() && id.trim().chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(id.trim().to_string())
        }
        // A new id would hide this gateway's earlier inserts from the writer's check: say so
        // rather than guess.
        Ok(_) => anyhow::bail!(
            "{} is damaged; it names this gateway's inserts in ClickHouse. Delete it only once no \
             insert of this gateway can still be running there (see system.processes)",
            path.display()
        ),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot read {}", path.display()))
        }
        Err(_) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            crate::wal::segment::sync_dir(data_dir)?;
            Ok(id)
        }
    }
}

/// Keeps the log's gauges fresh, also while the writer waits on ClickHouse.
async fn report_log_state(shared: Arc<crate::wal::Shared>, mut shutdown: Shutdown) {
    loop {
        events::wal::state(
            shared
                .bytes_on_disk
                .load(std::sync::atomic::Ordering::Relaxed),
            shared.pending_records(),
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.triggered() => return,
        }
    }
}

/// Keeps the credential view fresh while the writer has nothing to check, so that the edge's
/// rate limiter knows right tokens from wrong ones from the start, and a revocation is known
/// before the next batch needs it. The writer still reloads on its own when a batch needs it.
async fn refresh_credentials(
    credentials: Arc<SharedCredentials>,
    ch: Clickhouse,
    every: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        if let Err(error) = credentials.reload(&ch).await {
            tracing::debug!(%error, "refreshing credentials failed; the writer retries when it needs them");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.triggered() => return,
        }
    }
}

async fn forget_idle_keys(limiter: Arc<KeyRateLimiter>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => limiter.forget_idle(),
            _ = shutdown.triggered() => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
