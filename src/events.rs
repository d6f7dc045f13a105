//! Everything that happens, logged and counted in one place.
//!
//! Each function here is one kind of event: it emits the tracing event and moves the Prometheus
//! series that count it, so the two can never disagree and call sites stay one line. The series
//! names are listed in the README's Operations section.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

/// Describes every series and shows the unlabelled ones at zero from the start, so that
/// dashboards and alerts see them before the first event.
pub fn describe() {
    let counters = [
        (
            "hookhouse_http_requests_total",
            "Answers given, by HTTP code and error code.",
        ),
        (
            "hookhouse_http_received_bytes_total",
            "Request body bytes read (decoded, for a body with a Content-Encoding).",
        ),
        (
            "hookhouse_clickhouse_failovers_total",
            "Times a connection to a ClickHouse node failed and the next node of HOOKHOUSE_CLICKHOUSE_URL was taken.",
        ),
        (
            "hookhouse_rate_limited_total",
            "Requests refused with 429 for their key's rate.",
        ),
        (
            "hookhouse_wal_appended_records_total",
            "Records made durable in the write-ahead log.",
        ),
        (
            "hookhouse_wal_appended_bytes_total",
            "Bytes made durable in the write-ahead log.",
        ),
        (
            "hookhouse_wal_over_budget_total",
            "Requests refused with 503 for the log's disk budget.",
        ),
        (
            "hookhouse_wal_write_errors_total",
            "Failed log writes or fsyncs (each answered 503).",
        ),
        (
            "hookhouse_wal_torn_bytes_total",
            "Bytes cut off a torn log tail at start-up (kept in quarantine/).",
        ),
        (
            "hookhouse_wal_damaged_bytes_total",
            "Unreadable log bytes moved to quarantine/.",
        ),
        (
            "hookhouse_rows_inserted_total",
            "Rows inserted into `events`.",
        ),
        (
            "hookhouse_rows_rejected_total",
            "Rows inserted into `rejected`, by reason.",
        ),
        (
            "hookhouse_rows_already_present_total",
            "Rows not sent again because an unconfirmed insert had landed them.",
        ),
        (
            "hookhouse_clickhouse_errors_total",
            "Failed ClickHouse calls, by kind.",
        ),
        (
            "hookhouse_clickhouse_retries_total",
            "ClickHouse calls retried after a backoff.",
        ),
        (
            "hookhouse_credentials_reloads_total",
            "Reloads of pipelines and tokens from ClickHouse.",
        ),
        (
            "hookhouse_presence_checked_rows_total",
            "Rows looked up in ClickHouse before sending, because an earlier insert may have landed them.",
        ),
        (
            "hookhouse_rows_undeliverable_total",
            "Rows neither `events` nor `rejected` takes, kept in undeliverable/.",
        ),
        (
            "hookhouse_writer_deaths_total",
            "Times the batch writer panicked and was started again.",
        ),
        (
            "hookhouse_notifications_sent_total",
            "Notifications delivered (a 2xx within 10 s), by type.",
        ),
        (
            "hookhouse_notifications_failed_total",
            "Notifications given up after their retries, or answered 410, by type.",
        ),
        (
            "hookhouse_notification_retries_total",
            "Attempts to deliver a notification after its first.",
        ),
        (
            "hookhouse_notifications_dropped_total",
            "Notifications not sent: their subscription was disabled or deleted, or had notify_max_pending waiting, by reason.",
        ),
        (
            "hookhouse_subscriptions_disabled_total",
            "Subscriptions this gateway disabled: `gone` (410) or `failures` (20 in a row).",
        ),
        (
            "hookhouse_notification_attempts_unrecorded_total",
            "Attempts not kept in `notification_attempts` (ClickHouse away too long).",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
    }
    for name in [
        "hookhouse_http_received_bytes_total",
        "hookhouse_rate_limited_total",
        "hookhouse_wal_appended_records_total",
        "hookhouse_wal_appended_bytes_total",
        "hookhouse_wal_over_budget_total",
        "hookhouse_wal_write_errors_total",
        "hookhouse_wal_torn_bytes_total",
        "hookhouse_wal_damaged_bytes_total",
        "hookhouse_rows_inserted_total",
        "hookhouse_rows_already_present_total",
        "hookhouse_clickhouse_retries_total",
        "hookhouse_credentials_reloads_total",
        "hookhouse_presence_checked_rows_total",
        "hookhouse_rows_undeliverable_total",
        "hookhouse_writer_deaths_total",
        "hookhouse_notification_retries_total",
        "hookhouse_notification_attempts_unrecorded_total",
    ] {
        counter!(name).increment(0);
    }
    describe_gauge!(
        "hookhouse_notifications_pending",
        "Notifications waiting on this gateway to be delivered (queue depth), with open data.landed spans."
    );
    gauge!("hookhouse_notifications_pending").set(0.0);
    describe_gauge!(
        "hookhouse_wal_bytes",
        Unit::Bytes,
        "Bytes of log segments on disk (counted against HOOKHOUSE_WAL_MAX_BYTES)."
    );
    describe_gauge!(
        "hookhouse_wal_pending_records",
        "Records in the log not yet confirmed by ClickHouse."
    );
    gauge!("hookhouse_wal_bytes").set(0.0);
    gauge!("hookhouse_wal_pending_records").set(0.0);
    let histograms = [
        (
            "hookhouse_wal_fsync_seconds",
            "Time to write and fsync one group commit.",
        ),
        (
            "hookhouse_wal_group_records",
            "Requests sharing one group commit.",
        ),
        ("hookhouse_batch_rows", "Rows per ClickHouse batch."),
        (
            "hookhouse_insert_seconds",
            "Time to land one batch (check, insert, checkpoint).",
        ),
        (
            "hookhouse_landing_lag_seconds",
            "From a request's 200 to its row being queryable.",
        ),
        (
            "hookhouse_notification_delivery_seconds",
            "From a notification's making to its delivery (retries included).",
        ),
    ];
    for (name, help) in histograms {
        describe_histogram!(name, help);
    }
}

/// Settings.
pub mod config {
    /// A `HOOKHOUSE_*` variable that is no setting: said once at start, never refused (scripts
    /// keep their own), so that a misspelt setting is seen.
    pub fn unknown_variable(variable: &str, suggestion: Option<&str>) {
        match suggestion {
            Some(known) => tracing::warn!(
                variable,
                "{variable} is not a hookhouse setting and is ignored; did you mean {known}?"
            ),
            None => tracing::warn!(
                variable,
                "{variable} is not a hookhouse setting and is ignored"
            ),
        }
    }
}

/// Lines that a flood could repeat, one per key (a reason, an error code) at most once per
/// period; [`PerKey::allow`] says how many were held back since the last one let through.
pub struct PerKey {
    state: std::sync::Mutex<Vec<(&'static str, u64, u64)>>,
}

impl PerKey {
    pub const fn new() -> PerKey {
        PerKey {
            state: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be written now, with the number of lines
    /// for it held back since the last; `None` when this one is held back (and counted).
    pub fn allow(&self, key: &'static str, every: Duration) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = state.iter_mut().find(|(k, _, _)| *k == key) else {
            state.push((key, now, 0));
            return Some(0);
        };
        if now.saturating_sub(entry.1) >= every.as_millis() as u64 {
            let suppressed = entry.2;
            *entry = (key, now, 0);
            Some(suppressed)
        } else {
            entry.2 += 1;
            None
        }
    }
}

impl Default for PerKey {
    fn default() -> Self {
        Self::new()
    }
}

/// ClickHouse as the health pinger sees it: lost, back, and the backlog delivered after.
pub mod clickhouse {
    use super::*;

    pub fn lost(error: &str) {
        tracing::warn!(%error, "ClickHouse is unreachable: requests are kept in the log and delivered when it is back");
    }

    pub fn back(down_for: Duration, waiting_records: u64) {
        let down_secs = down_for.as_secs();
        if waiting_records == 0 {
            tracing::info!(
                down_secs,
                waiting_records,
                "ClickHouse is back after {down_secs}s; nothing waited in the log"
            );
        } else {
            tracing::info!(
                down_secs,
                waiting_records,
                "ClickHouse is back after {down_secs}s; delivering the {waiting_records} records that waited in the log"
            );
        }
    }

    /// A connection to the ClickHouse node `from` failed; requests go to `to` from now on
    /// (`HOOKHOUSE_CLICKHOUSE_URL` lists several nodes).
    pub fn failed_over(from: &str, to: &str, error: &dyn std::fmt::Display) {
        counter!("hookhouse_clickhouse_failovers_total").increment(1);
        tracing::warn!(%from, %to, %error, "ClickHouse node unreachable: failing over to the next one");
    }

    /// What waited in the log through an outage is in ClickHouse now: `records` delivered since
    /// ClickHouse was lost (none are while it is away).
    pub fn backlog_delivered(records: u64, took: Duration) {
        tracing::info!(
            records,
            took_ms = took.as_millis() as u64,
            "delivered {records} records that waited through the outage; the log is drained"
        );
    }
}

/// Start-up and shutdown.
pub mod lifecycle {
    /// The gateway stopped; `pending` records stay in the log for the next start.
    pub fn stopped(pending: u64, writer_finished: bool) {
        if writer_finished && pending == 0 {
            tracing::info!(pending, "stopped; every accepted request is in ClickHouse");
        } else if writer_finished {
            tracing::info!(
                pending,
                "stopped; {pending} records stay in the log and land at the next start"
            );
        } else {
            tracing::warn!(pending, "stopped; the writer did not finish within the grace period: {pending} records stay in the log and land at the next start");
        }
    }
}

/// The edge: answers and bytes.
pub mod http {
    use super::*;

    pub fn answered(status: u16, error: Option<&'static str>) {
        counter!("hookhouse_http_requests_total", "code" => status.to_string(), "error" => error.unwrap_or("")).increment(1);
        if let Some(code) = error.filter(|_| (400..500).contains(&status)) {
            refused(status, code);
        }
    }

    /// A 4xx answer: the sender's mistake, logged so that the operator can tell the sender,
    /// at most once a second per error code (a flood then says how many it held back).
    fn refused(status: u16, code: &'static str) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow(code, Duration::from_secs(1)) {
            tracing::info!(
                status,
                error = code,
                suppressed,
                "request refused with {status} {code}"
            );
        }
    }

    pub fn body_received(bytes: usize) {
        counter!("hookhouse_http_received_bytes_total").increment(bytes as u64);
    }

    pub fn rate_limited(key: &str) {
        tracing::debug!(key, "request over the per-key rate limit");
        counter!("hookhouse_rate_limited_total").increment(1);
    }

    /// A body refused because the bytes held by requests in flight reached their budget.
    /// A request to a verifying pipeline refused with 401 at the edge.
    pub fn signature_refused(pipeline_id: u64, scheme: &'static str, why: &dyn std::fmt::Display) {
        counter!("hookhouse_signatures_refused_total", "scheme" => scheme).increment(1);
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow(scheme, Duration::from_secs(1)) {
            tracing::warn!(pipeline_id, scheme, %why, suppressed, "signature refused (401)");
        }
    }

    /// Slack's URL check answered with its challenge.
    pub fn challenge_answered(pipeline_id: u64) {
        tracing::info!(pipeline_id, "answered Slack's url_verification challenge");
    }

    pub fn inflight_bytes_exhausted() {
        tracing::debug!(
            "request refused: the body bytes in flight are at HOOKHOUSE_MAX_INFLIGHT_BYTES"
        );
    }

    pub fn accepted(request_id: &str, pipeline_id: u64, bytes: usize) {
        tracing::debug!(
            request_id,
            pipeline_id,
            bytes,
            "request accepted and durable"
        );
    }

    pub fn append_failed(request_id: &str, error: &dyn std::fmt::Display) {
        tracing::warn!(request_id, %error, "request not acknowledged: the log did not take it");
    }
}

/// The write-ahead log.
pub mod wal {
    use super::*;
    use std::path::Path;

    pub fn recovered(segments: usize, bytes: u64, last_seq: u64, confirmed: u64) {
        tracing::info!(
            segments,
            bytes,
            last_seq,
            confirmed,
            pending = last_seq.saturating_sub(confirmed),
            "write-ahead log opened"
        );
    }

    /// The checkpoint was missing (`damaged` false) or unreadable, and bounds were taken from the log.
    pub fn checkpoint_derived(damaged: bool, checkpoint: crate::wal::Checkpoint) {
        if !damaged && checkpoint.confirmed == 0 && checkpoint.attempted == 0 {
            // A new data folder (or a lost checkpoint with nothing in the log): nothing to check,
            // and no cause for a warning on every first start.
            tracing::debug!("no checkpoint yet and nothing in the log: a new data folder");
            return;
        }
        tracing::warn!(
            damaged,
            confirmed = checkpoint.confirmed,
            check_through = checkpoint.attempted,
            "the checkpoint was missing or unreadable; bounds taken from the log: every record in it is checked against ClickHouse before it is sent"
        );
    }

    pub fn group_committed(records: usize, bytes: usize, took: Duration) {
        histogram!("hookhouse_wal_group_records").record(records as f64);
        histogram!("hookhouse_wal_fsync_seconds").record(took.as_secs_f64());
        counter!("hookhouse_wal_appended_records_total").increment(records as u64);
        counter!("hookhouse_wal_appended_bytes_total").increment(bytes as u64);
    }

    /// A request refused for the disk budget; `newly_full` when the log just became full.
    pub fn over_budget(newly_full: bool) {
        if newly_full {
            tracing::warn!("write-ahead log over its disk budget (HOOKHOUSE_WAL_MAX_BYTES): answering 503 until it drains below 90%");
        }
        counter!("hookhouse_wal_over_budget_total").increment(1);
    }

    pub fn write_failed(error: &std::io::Error) {
        tracing::error!(%error, "write-ahead log write or fsync failed: answering 503");
        counter!("hookhouse_wal_write_errors_total").increment(1);
    }

    pub fn torn_tail_cut(segment: &Path, bytes: u64) {
        tracing::warn!(segment = %segment.display(), bytes, "cut a torn tail off the newest log segment (kept in quarantine/)");
        counter!("hookhouse_wal_torn_bytes_total").increment(bytes);
    }

    pub fn damage_found(segment: &Path, offset: u64, bytes: usize, kept: &Path) {
        tracing::error!(segment = %segment.display(), offset, bytes, kept = %kept.display(), "unreadable bytes in the log, moved aside");
        counter!("hookhouse_wal_damaged_bytes_total").increment(bytes as u64);
    }

    pub fn state(bytes_on_disk: u64, pending_records: u64) {
        gauge!("hookhouse_wal_bytes").set(bytes_on_disk as f64);
        gauge!("hookhouse_wal_pending_records").set(pending_records as f64);
    }

    pub fn released(bytes: u64) {
        tracing::debug!(bytes, "deleted log segments that are in ClickHouse");
    }
}

/// The batch writer and ClickHouse.
pub mod writer {
    use super::*;

    pub fn batch_inserted(rows: usize, rejected: usize, took: Duration) {
        tracing::debug!(
            rows,
            rejected,
            took_ms = took.as_millis() as u64,
            "batch landed"
        );
        histogram!("hookhouse_batch_rows").record((rows + rejected) as f64);
        histogram!("hookhouse_insert_seconds").record(took.as_secs_f64());
        counter!("hookhouse_rows_inserted_total").increment(rows as u64);
    }

    /// A request landed in `rejected`. Logged with its reason, pipeline, key and request id
    /// (never the token), at most once a second per reason: a flood of wrong tokens gives one
    /// line a second, each saying how many like it were not logged.
    pub fn rejected(request: &crate::writer::exactly_once::RejectedRequest) {
        let reason = request.reason;
        counter!("hookhouse_rows_rejected_total", "reason" => reason).increment(1);
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow(reason, Duration::from_secs(1)) {
            tracing::warn!(
                reason,
                pipeline_id = request.pipeline_id,
                key = %request.key,
                request_id = %request.request_id,
                suppressed,
                "request rejected: it landed in `rejected`, not in the pipeline's data"
            );
        }
    }

    /// Rows now queryable, with how long after their 200 each landed.
    pub fn landed(lags: impl Iterator<Item = Duration>) {
        let histogram = histogram!("hookhouse_landing_lag_seconds");
        for lag in lags {
            histogram.record(lag.as_secs_f64());
        }
    }

    pub fn clickhouse_failed(
        what: &'static str,
        kind: &'static str,
        error: &dyn std::fmt::Display,
        retry_in: Option<Duration>,
    ) {
        match retry_in {
            Some(delay) => {
                tracing::warn!(what, kind, %error, retry_in_ms = delay.as_millis() as u64, "ClickHouse failed; will retry")
            }
            None => tracing::error!(what, kind, %error, "ClickHouse refused for good"),
        }
        counter!("hookhouse_clickhouse_errors_total", "kind" => kind).increment(1);
        if retry_in.is_some() {
            counter!("hookhouse_clickhouse_retries_total").increment(1);
        }
    }

    pub fn disk_failed(what: &'static str, error: &dyn std::fmt::Display, retry_in: Duration) {
        tracing::error!(what, %error, retry_in_ms = retry_in.as_millis() as u64, "the writer's disk failed; will retry");
    }

    /// Every row fails because `events` or `rejected` changed under the gateway.
    pub fn tables_changed(drift: &str, error: &dyn std::fmt::Display) {
        static LIMIT: PerKey = PerKey::new();
        if let Some(suppressed) = LIMIT.allow("tables_changed", Duration::from_secs(10)) {
            tracing::error!(%drift, %error, suppressed, "ClickHouse refuses every row because its tables changed; nothing is rejected for it: the rows wait in the log until the tables take them again");
        }
    }

    pub fn presence_checked(rows: usize) {
        counter!("hookhouse_presence_checked_rows_total").increment(rows as u64);
    }

    pub fn waiting_for_own_inserts(running: u64) {
        static LIMIT: PerKey = PerKey::new();
        if let Some(suppressed) = LIMIT.allow("waiting_for_own_inserts", Duration::from_secs(10)) {
            tracing::warn!(running, suppressed, "waiting for this gateway's earlier inserts to finish in ClickHouse before checking what landed");
        }
    }

    pub fn stopping_own_inserts(running: u64) {
        tracing::warn!(running, "this gateway's earlier inserts ran well past their timeout; asking ClickHouse to stop them (KILL QUERY) before checking what landed");
    }

    pub fn set_aside(request_id: &str) {
        tracing::error!(
            request_id,
            "ClickHouse refuses this row even in `rejected`; kept in undeliverable/"
        );
        counter!("hookhouse_rows_undeliverable_total").increment(1);
    }

    pub fn died(panic: &str, deaths: u32, restart_in: Duration) {
        tracing::error!(
            panic,
            deaths,
            restart_in_ms = restart_in.as_millis() as u64,
            "the batch writer died; starting a new one from the checkpoint"
        );
        counter!("hookhouse_writer_deaths_total").increment(1);
    }

    /// `migrate` found this node without some of hookhouse's tables (added to the cluster, or
    /// given an empty disk, after the migrations ran) and made them here.
    pub fn tables_made_here(count: usize) {
        tracing::warn!(count, "this node lacked hookhouse tables that the other nodes have: made them here; they fetch their rows from the other replicas");
    }

    /// This node's replica of `table` (pipelines or tokens) could not be brought up to date
    /// before a credential reload: the reload uses what it has.
    pub fn credentials_not_synced(table: &str, error: &dyn std::fmt::Display) {
        static LIMIT: PerKey = PerKey::new();
        if let Some(suppressed) = LIMIT.allow("credentials_not_synced", Duration::from_secs(30)) {
            tracing::warn!(table, %error, suppressed, "this node's replica lags; checking credentials with what it has");
        }
    }

    /// Tables that deduplicate inserts, and an unconfirmed batch with no usable record of how it
    /// was first sent (a data folder from a version without plans, or a damaged plan): only the
    /// rows ClickHouse does not show are sent again.
    pub fn no_plan_for_retry(first_seq: u64, last_seq: u64) {
        tracing::warn!(
            first_seq,
            last_seq,
            "no record of how these records were first sent: checking which landed and sending the rest"
        );
    }

    /// The writer found replicated (deduplicating) tables: retries repeat the first attempt's
    /// blocks exactly.
    pub fn identical_retries(engine: &str) {
        tracing::info!(
            engine,
            "the data tables deduplicate inserts: a retry sends exactly the blocks it repeats"
        );
    }

    pub fn duplicates_skipped(count: usize) {
        tracing::info!(
            count,
            "rows already in ClickHouse from an unconfirmed insert were not sent again"
        );
        counter!("hookhouse_rows_already_present_total").increment(count as u64);
    }

    pub fn poison_found(request_id: &str, error: &dyn std::fmt::Display) {
        tracing::error!(request_id, %error, "ClickHouse refuses this row for good; it goes to `rejected` as INSERT_FAILED");
    }

    /// A pipeline that verifies signatures whose secrets this gateway cannot open: its
    /// requests go to `rejected` until the key is right. At most one line a minute.
    pub fn signing_unreadable(pipeline_id: u64, why: &str) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow("signing_unreadable", Duration::from_secs(60)) {
            tracing::error!(
                pipeline_id,
                why,
                suppressed,
                "pipeline verifies signatures, and this gateway cannot: its requests land in `rejected` as INVALID_SIGNATURE (replay them once fixed: hookhouse rejected replay)"
            );
        }
    }

    pub fn credentials_reloaded(keys: usize, pipelines: usize) {
        tracing::debug!(keys, pipelines, "credentials reloaded from ClickHouse");
        counter!("hookhouse_credentials_reloads_total").increment(1);
    }

    /// Several ClickHouse URLs, and tables that do not deduplicate inserts.
    pub fn failover_off() {
        tracing::error!(
            "HOOKHOUSE_CLICKHOUSE_URL lists several nodes, but the data tables are not replicated \
             (plain MergeTree): failing over could land a row twice, so this gateway stays on the \
             node it talks to now; migrate with HOOKHOUSE_CLICKHOUSE_CLUSTER set for replicated tables"
        );
    }

    pub fn migrations_applied(applied: &[u32]) {
        if !applied.is_empty() {
            tracing::info!(?applied, "schema migrations applied");
        }
    }
}

pub mod notify {
    use super::*;

    pub fn delivered(kind: &str, latency: Duration) {
        counter!("hookhouse_notifications_sent_total", "type" => kind.to_owned()).increment(1);
        histogram!("hookhouse_notification_delivery_seconds").record(latency.as_secs_f64());
    }

    /// An attempt that failed; `retry_in` is `None` when it was the last.
    pub fn attempt_failed(
        subscription_id: &str,
        webhook_id: &str,
        attempt: u32,
        error: &str,
        retry_in: Option<Duration>,
    ) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow("attempt_failed", Duration::from_secs(10)) {
            tracing::warn!(
                subscription_id,
                webhook_id,
                attempt,
                error,
                retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
                suppressed,
                "a notification was not delivered"
            );
        }
    }

    pub fn retried() {
        counter!("hookhouse_notification_retries_total").increment(1);
    }

    pub fn given_up(subscription_id: &str, webhook_id: &str, kind: &str) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow("given_up", Duration::from_secs(10)) {
            tracing::warn!(
                subscription_id,
                webhook_id,
                kind,
                suppressed,
                "a notification failed every attempt; it is given up"
            );
        }
        counter!("hookhouse_notifications_failed_total", "type" => kind.to_owned()).increment(1);
    }

    pub fn dropped(reason: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow(reason, Duration::from_secs(60)) {
            tracing::warn!(reason, count, suppressed, "notifications dropped");
        }
        counter!("hookhouse_notifications_dropped_total", "reason" => reason).increment(count);
    }

    pub fn subscription_disabled(subscription_id: &str, reason: &'static str, why: &str) {
        tracing::error!(
            subscription_id,
            why,
            "subscription disabled; `hookhouse subscription enable` turns it on again"
        );
        counter!("hookhouse_subscriptions_disabled_total", "reason" => reason).increment(1);
    }

    pub fn secret_unreadable(subscription_id: &str, why: &str) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow("secret_unreadable", Duration::from_secs(60)) {
            tracing::error!(
                subscription_id,
                why,
                suppressed,
                "this gateway cannot sign the subscription's notifications; they wait until it can"
            );
        }
    }

    pub fn attempts_unrecorded(count: u64, error: Option<&dyn std::fmt::Display>) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow("attempts_unrecorded", Duration::from_secs(60)) {
            match error {
                Some(error) => {
                    tracing::warn!(%error, suppressed, "cannot keep notification attempts in ClickHouse; retrying")
                }
                None => tracing::warn!(
                    count,
                    suppressed,
                    "notification attempts not kept in ClickHouse: too many waiting"
                ),
            }
        }
        counter!("hookhouse_notification_attempts_unrecorded_total").increment(count);
    }

    pub fn subscriptions_unloaded(error: &dyn std::fmt::Display) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow("subscriptions_unloaded", Duration::from_secs(60)) {
            tracing::warn!(%error, suppressed, "cannot load subscriptions from ClickHouse; retrying");
        }
    }

    pub fn outbox_failed(error: &dyn std::fmt::Display) {
        static LIMITS: PerKey = PerKey::new();
        if let Some(suppressed) = LIMITS.allow("outbox_failed", Duration::from_secs(10)) {
            tracing::error!(%error, suppressed, "cannot write the notification outbox");
        }
    }

    pub fn pending(waiting: usize) {
        gauge!("hookhouse_notifications_pending").set(waiting as f64);
    }
}
