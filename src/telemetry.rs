//! Logs (tracing, human or JSON) and the Prometheus recorder behind `/metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the log subscriber once: `HOOKHOUSE_LOG` (or `RUST_LOG`) filters, `info` by default.
/// Logs go to standard error, so that `--json` output on standard output stays clean.
pub fn init_logs(format: LogFormat) {
    let filter = std::env::var("HOOKHOUSE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// How often histogram samples are folded into buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide metrics recorder. Installed once; later calls (tests building several
/// gateways in one process) share it.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5,
                2.0, 3.0, 5.0, 10.0, 30.0,
            ];
            let counts = [
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 20000.0,
                50000.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("hookhouse_wal_group_records".into()),
                        &counts,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("hookhouse_batch_rows".into()), &counts)
                })
                .expect("bucket lists are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Histogram samples are kept one by one until upkeep folds them into buckets; the
            // exporter's own `install` would run it, this recorder must. Without it, a gateway
            // nobody scrapes grows by 8 bytes per landed row (285 MiB draining 10 M requests).
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start the metrics upkeep thread; histograms fold only when scraped");
            }
            // Fails only if another recorder is installed, which nothing in hookhouse does.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
