//! Notifications downstream (CONTRACT §9): when data lands, the subscriptions that asked are
//! told, with Standard Webhooks signatures, retries and a log of every attempt.
//!
//! Design:
//! - **Told by the writer, after ClickHouse confirmed.** The writer hands the rows of each
//!   landed batch ([`Facts`]) to the notifier between `exactly_once` and `confirm`, and moves
//!   its checkpoint only once the notifier has made them durable. With them the outbox records
//!   the highest log sequence number told ([`outbox::Entry::Told`]): a crash before the
//!   checkpoint moved lands the batch again after the restart, and rows already told are not
//!   told twice. At least once (a notification cut off mid-attempt is sent again with the same
//!   `webhook-id`), never before ClickHouse had the rows.
//! - **The outbox is on this gateway's disk, beside the log** ([`outbox`]), not in ClickHouse:
//!   a notification is due exactly when ClickHouse may be unreachable, the writer already
//!   fsyncs beside the log, and each gateway tells only what *it* landed, so two gateways on
//!   one ClickHouse never announce the same rows (each row is landed by the one gateway that
//!   logged it). Its size is bounded (see [`outbox`]), however long a receiver is away.
//! - **Coalesced.** Rows landed for a pipeline join the subscription's open `data.landed` span;
//!   a span becomes a notification at most once a second per subscription and pipeline (per
//!   gateway: each announces its own rows). When a subscription has `notify_max_pending`
//!   notifications waiting, spans go on growing (their counts are not lost) and new
//!   `request.rejected` notifications are dropped, counted.
//! - **Nothing slow on the writer's path.** The writer waits for one fsync of the outbox per
//!   batch, never for a receiver or for ClickHouse: subscriptions are loaded, and subscriptions
//!   disabled, by a task of their own ([`subscriptions`]); attempts run in tasks of their own, at
//!   most [`IN_FLIGHT_PER_SUBSCRIPTION`] per subscription, and their outcomes are written to the
//!   outbox together; attempts are recorded in ClickHouse from a bounded queue ([`attempts`]).
//! - **Retries**: 5 after the first attempt, about 5 s, 30 s, 2 min, 10 min and 30 min apart
//!   (times `notify_backoff_scale`, ±20 % jitter), never sooner than a `Retry-After` (capped at
//!   an hour). `410` disables the subscription at once; 20 notifications in a row that fail
//!   every attempt disable it. The count belongs to the subscription's version: `enable`
//!   writes a new one, which starts from 0, and an answer to an attempt started before the
//!   change never counts against the new version ([`verdict`]).

pub mod attempts;
pub mod message;
mod notifier;
pub mod outbox;
pub mod send;
pub mod subscriptions;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::clickhouse::Clickhouse;
use crate::shutdown::Shutdown;
use crate::signing::SecretsKey;
use crate::writer::exactly_once::Confirmed;
use message::Span;
use outbox::Outbox;
use send::{Answer, Sender};

pub use attempts::ping;

/// Attempts one subscription may have in flight at once.
pub const IN_FLIGHT_PER_SUBSCRIPTION: usize = 4;
/// Retries after the first attempt, and how long after each failure (before scaling).
pub const RETRY_SCHEDULE: [Duration; 5] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
];
/// Notifications in a row that fail every attempt before a subscription is disabled.
pub const FAILURES_TO_DISABLE: u32 = 20;

/// What a landed batch tells: each row ClickHouse confirmed, with its log sequence number.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts {
    pub rows: Vec<Fact>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub seq: u64,
    pub pipeline_id: u64,
    pub request_id: String,
    pub timestamp: f64,
    /// `None`: in `events`.
    pub reason: Option<&'static str>,
}

impl Facts {
    /// From the rows the writer confirmed, in log order.
    pub fn of(confirmed: &[Confirmed<'_>]) -> Facts {
        let mut rows: Vec<Fact> = confirmed
            .iter()
            .map(|row| Fact {
                seq: row.seq,
                pipeline_id: row.pipeline_id,
                request_id: row.request_id.to_owned(),
                timestamp: row.accepted_at,
                reason: row.reason,
            })
            .collect();
        rows.sort_by_key(|row| row.seq);
        Facts { rows }
    }

    /// Rows after `told_through`: per pipeline, the span of those that reached `events` (first
    /// and last in log order), and those rejected; and the highest sequence number.
    fn after(&self, told_through: u64) -> Untold<'_> {
        let mut untold = Untold::default();
        let mut index: HashMap<u64, usize> = HashMap::new();
        for row in self.rows.iter().filter(|row| row.seq > told_through) {
            untold.through = untold.through.max(row.seq);
            if row.reason.is_some() {
                untold.rejected.push(row);
                continue;
            }
            let point = Span {
                count: 1,
                first_request_id: row.request_id.clone(),
                first_timestamp: row.timestamp,
                last_request_id: row.request_id.clone(),
                last_timestamp: row.timestamp,
            };
            match index.get(&row.pipeline_id) {
                Some(&i) => untold.landed[i].1.merge(&point),
                None => {
                    index.insert(row.pipeline_id, untold.landed.len());
                    untold.landed.push((row.pipeline_id, point));
                }
            }
        }
        untold
    }
}

#[derive(Debug, Default)]
struct Untold<'a> {
    landed: Vec<(u64, Span)>,
    rejected: Vec<&'a Fact>,
    through: u64,
}

struct Told {
    facts: Facts,
    done: oneshot::Sender<io::Result<()>>,
}

/// The writer's side: tells the notifier what landed.
#[derive(Clone)]
pub struct Notify {
    tx: mpsc::Sender<Told>,
    /// False once subscriptions are loaded and none is active: the writer need not build facts.
    wanted: Arc<AtomicBool>,
}

impl Notify {
    /// Whether any subscription may want to hear of a batch.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Returns once `facts` are durable in the outbox (or wanted by nobody).
    pub async fn tell(&self, facts: Facts) -> io::Result<()> {
        if facts.rows.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        if self.tx.send(Told { facts, done }).await.is_err() {
            return Err(io::Error::other("the notifier has stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the notifier has stopped")))
    }
}

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub backoff_scale: f64,
    pub max_pending: usize,
    pub refresh: Duration,
}

/// Opens the outbox in `data_dir/notify` and starts the notifier and its helpers; the handle
/// goes to the writer.
pub async fn start(
    ch: Clickhouse,
    secrets_key: Option<Arc<SecretsKey>>,
    data_dir: &Path,
    config: NotifyConfig,
    shutdown: Shutdown,
) -> anyhow::Result<Notify> {
    let dir = data_dir.join("notify");
    let opening = dir.clone();
    let outbox = tokio::task::spawn_blocking(move || Outbox::open(&opening))
        .await?
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot open the notification outbox in {}: {error}",
                dir.display()
            )
        })?;
    let sender = Sender::new().map_err(|error| anyhow::anyhow!("notifications: {error}"))?;
    let wanted = Arc::new(AtomicBool::new(true));
    let (subs_tx, subs_rx) = watch::channel(None);
    let (disable_tx, disable_rx) = mpsc::unbounded_channel();
    tokio::spawn(subscriptions::load(
        ch.clone(),
        secrets_key,
        config.refresh,
        subs_tx,
        disable_rx,
        wanted.clone(),
        shutdown.clone(),
    ));
    let (attempts_tx, attempts_rx) = mpsc::channel(attempts::QUEUE);
    tokio::spawn(attempts::record(ch, attempts_rx));
    let (tx, rx) = mpsc::channel(16);
    let notifier =
        notifier::Notifier::new(outbox, config, sender, subs_rx, disable_tx, attempts_tx);
    tokio::spawn(notifier.run(rx, shutdown));
    Ok(Notify { tx, wanted })
}

/// What an attempt's answer means for its notification.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A 2xx; it ends the subscription's run of failures unless the subscription changed.
    Delivered { counted: bool },
    /// The subscription is disabled or deleted now: what it held is dropped.
    Stale,
    /// Try again after the backoff.
    Retry,
    /// Given up: every attempt failed, or the receiver answered 410. `counted` unless the
    /// subscription changed (an `enable`) since the attempt started: an old failure says
    /// nothing of the new version.
    Failed { gone: bool, counted: bool },
}

/// `live`: the subscription is active now; `same_version`: at the version the attempt was
/// started under.
fn verdict(answer: &Answer, attempt: u32, live: bool, same_version: bool) -> Verdict {
    if answer.delivered() {
        return Verdict::Delivered {
            counted: same_version,
        };
    }
    if !live {
        return Verdict::Stale;
    }
    if answer.gone() {
        return Verdict::Failed {
            gone: true,
            counted: same_version,
        };
    }
    if attempt as usize > RETRY_SCHEDULE.len() {
        return Verdict::Failed {
            gone: false,
            counted: same_version,
        };
    }
    Verdict::Retry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        seq: u64,
        id: &'static str,
        pipeline: u64,
        t: f64,
        reason: Option<&'static str>,
    ) -> Confirmed<'static> {
        Confirmed {
            seq,
            pipeline_id: pipeline,
            request_id: id,
            accepted_at: t,
            reason,
        }
    }

    fn answered(status: Option<u16>) -> Answer {
        Answer {
            status,
            error: None,
            retry_after: None,
            body: String::new(),
            took: Duration::ZERO,
        }
    }

    #[test]
    fn five_retries_then_given_up_410_at_once_and_changed_subscriptions_not_counted() {
        for attempt in 1..=5 {
            assert_eq!(
                verdict(&answered(Some(500)), attempt, true, true),
                Verdict::Retry
            );
            assert_eq!(
                verdict(&answered(None), attempt, true, true),
                Verdict::Retry
            );
        }
        let failed = |gone, counted| Verdict::Failed { gone, counted };
        assert_eq!(
            verdict(&answered(Some(500)), 6, true, true),
            failed(false, true)
        );
        assert_eq!(
            verdict(&answered(Some(410)), 1, true, true),
            failed(true, true)
        );
        assert_eq!(
            verdict(&answered(Some(204)), 3, true, true),
            Verdict::Delivered { counted: true }
        );
        // Started before an `enable` (a new version): retried, and not counted at the end.
        assert_eq!(
            verdict(&answered(Some(500)), 2, true, false),
            Verdict::Retry
        );
        assert_eq!(
            verdict(&answered(Some(500)), 6, true, false),
            failed(false, false)
        );
        assert_eq!(
            verdict(&answered(Some(200)), 1, true, false),
            Verdict::Delivered { counted: false }
        );
        // Disabled or deleted meanwhile: dropped, whatever the answer but a delivery.
        assert_eq!(
            verdict(&answered(Some(500)), 6, false, false),
            Verdict::Stale
        );
        assert_eq!(
            verdict(&answered(Some(410)), 1, false, true),
            Verdict::Stale
        );
    }

    #[test]
    fn facts_give_each_pipeline_its_span_in_log_order_and_skip_what_was_told() {
        // exactly_once reports rows found present before those it inserted: not log order.
        let facts = Facts::of(&[
            row(4, "d", 1, 4.0, None),
            row(1, "a", 1, 1.0, None),
            row(2, "b", 2, 2.0, None),
            row(3, "c", 1, 3.0, Some("WRONG_TOKEN")),
        ]);
        let untold = facts.after(0);
        assert_eq!(untold.landed.len(), 2);
        let (pipeline, span) = &untold.landed[0];
        assert_eq!(*pipeline, 1);
        assert_eq!(
            (
                span.count,
                span.first_request_id.as_str(),
                span.last_request_id.as_str()
            ),
            (2, "a", "d")
        );
        assert_eq!((span.first_timestamp, span.last_timestamp), (1.0, 4.0));
        assert_eq!(untold.rejected.len(), 1);
        assert_eq!(untold.rejected[0].reason, Some("WRONG_TOKEN"));
        assert_eq!(untold.through, 4);
        // After a crash the batch is landed and told again: what was told is not.
        let again = facts.after(2);
        assert_eq!(again.landed.len(), 1);
        assert_eq!(again.landed[0].1.count, 1);
        assert_eq!(again.landed[0].1.first_request_id, "d");
        assert!(facts.after(4).landed.is_empty() && facts.after(4).through == 0);
    }
}
