//! Notifications downstream (CONTRACT §9): when data lands, the subscriptions that asked are
//! told, with Standard Webhooks signatures, retries and a log of every attempt.
//!
//! Design:
//! - **Told by the writer, after ClickHouse confirmed.** The writer hands the rows of each
//!   landed batch ([`Facts`]) to the notifier between `exactly_once` and `confirm`, and moves
//!   its checkpoint only once the notifier has made them durable. A crash before that lands the
//!   batch again after the restart (found present, so confirmed) and tells it again: at least
//!   once, never before ClickHouse had the rows.
//! - **The outbox is on this gateway's disk, beside the log** ([`outbox`]), not in ClickHouse:
//!   a notification is due exactly when ClickHouse may be unreachable, the writer already
//!   fsyncs beside the log, and each gateway tells only what *it* landed, so two gateways on
//!   one ClickHouse never announce the same rows (each row is landed by the one gateway that
//!   logged it). Its size is bounded (see [`outbox`]), however long a receiver is away.
//! - **Coalesced.** Rows landed for a pipeline join the subscription's open `data.landed` span;
//!   a span becomes a notification at most once a second per subscription and pipeline. When
//!   a subscription has `notify_max_pending` notifications waiting, spans go on growing (their
//!   counts are not lost) and new `request.rejected` notifications are dropped, counted.
//! - **Delivery** ([`send`]) runs in tasks of their own, at most [`IN_FLIGHT_PER_SUBSCRIPTION`]
//!   per subscription: a slow or dead receiver holds only its own slots, never the writer (which
//!   waits for an fsync of the outbox, never for a receiver) nor the edge.
//! - **Retries**: 5 after the first attempt, about 5 s, 30 s, 2 min, 10 min and 30 min apart
//!   (times `notify_backoff_scale`, ±20 % jitter), never sooner than a `Retry-After` (capped at
//!   an hour). `410` disables the subscription at once; 20 notifications in a row that fail
//!   every attempt disable it. The count belongs to the subscription's version: `enable`
//!   writes a new one, which starts from 0.
//! - **Every attempt** goes to `notification_attempts`, in batches, from a bounded queue.

pub mod message;
pub mod outbox;
pub mod send;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::clickhouse::rows::{AttemptRow, SubscriptionRow};
use crate::clickhouse::{store, Clickhouse};
use crate::events;
use crate::shutdown::Shutdown;
use crate::signing::{Secret, SecretsKey};
use crate::writer::exactly_once::Confirmed;
use message::Span;
use outbox::{Entry, Outbox};
use send::{Answer, Sender};

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
/// At most one `data.landed` per subscription and pipeline this often.
const COALESCE_MS: i64 = 1000;
const TICK: Duration = Duration::from_millis(200);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
const ATTEMPTS_QUEUE: usize = 10_000;

/// What a landed batch tells: per pipeline, the span of rows that reached `events`, and each
/// rejected request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts {
    pub landed: Vec<(u64, Span)>,
    pub rejected: Vec<RejectedFact>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectedFact {
    pub pipeline_id: u64,
    pub request_id: String,
    pub reason: &'static str,
    pub timestamp: f64,
}

impl Facts {
    /// From the rows the writer confirmed, in log order.
    pub fn of(confirmed: &[Confirmed<'_>]) -> Facts {
        let mut facts = Facts::default();
        let mut index: HashMap<u64, usize> = HashMap::new();
        for row in confirmed {
            match row.reason {
                None => {
                    let point = Span {
                        count: 1,
                        first_request_id: row.request_id.to_owned(),
                        first_timestamp: row.accepted_at,
                        last_request_id: row.request_id.to_owned(),
                        last_timestamp: row.accepted_at,
                    };
                    match index.get(&row.pipeline_id) {
                        Some(&i) => facts.landed[i].1.merge(&point),
                        None => {
                            index.insert(row.pipeline_id, facts.landed.len());
                            facts.landed.push((row.pipeline_id, point));
                        }
                    }
                }
                Some(reason) => facts.rejected.push(RejectedFact {
                    pipeline_id: row.pipeline_id,
                    request_id: row.request_id.to_owned(),
                    reason,
                    timestamp: row.accepted_at,
                }),
            }
        }
        facts
    }

    pub fn is_empty(&self) -> bool {
        self.landed.is_empty() && self.rejected.is_empty()
    }
}

struct Told {
    facts: Facts,
    done: oneshot::Sender<io::Result<()>>,
}

/// The writer's side: tells the notifier what landed.
#[derive(Clone)]
pub struct Notify {
    tx: Option<mpsc::Sender<Told>>,
    /// False once subscriptions are loaded and none is active: the writer need not build facts.
    wanted: Arc<AtomicBool>,
}

impl Notify {
    /// Tells nobody (replay, tests of other parts).
    pub fn nobody() -> Notify {
        Notify {
            tx: None,
            wanted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether any subscription may want to hear of a batch.
    pub fn wanted(&self) -> bool {
        self.tx.is_some() && self.wanted.load(Ordering::Relaxed)
    }

    /// Returns once `facts` are durable in the outbox (or wanted by nobody).
    pub async fn tell(&self, facts: Facts) -> io::Result<()> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        if facts.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        if tx.send(Told { facts, done }).await.is_err() {
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

/// A subscription as this gateway uses it.
struct Subscription {
    row: SubscriptionRow,
    secret: Result<Secret, String>,
}

impl Subscription {
    fn live(&self) -> bool {
        self.row.active != 0 && self.row.deleted == 0
    }
}

/// One attempt to start.
struct Launch {
    url: String,
    secret: Secret,
    id: String,
    body: String,
    sub: String,
    version: u64,
    attempt: u32,
}

/// One attempt's result, back from its task.
struct Attempted {
    id: String,
    sub: String,
    version: u64,
    attempt: u32,
    answer: Answer,
}

/// What an attempt's answer means for its notification.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A 2xx; it counts for the subscription's run of failures unless the subscription changed.
    Delivered { counted: bool },
    /// The subscription was disabled, enabled again or deleted since the attempt started: the
    /// answer says nothing of its new version (an old failure must not disable it again after
    /// `enable`), and what it held is dropped.
    Stale,
    /// Try again after the backoff.
    Retry,
    /// Given up: every attempt failed, or the receiver answered 410.
    Failed { gone: bool },
}

fn verdict(answer: &Answer, attempt: u32, unchanged: bool) -> Verdict {
    if answer.delivered() {
        return Verdict::Delivered { counted: unchanged };
    }
    if !unchanged {
        return Verdict::Stale;
    }
    if answer.gone() {
        return Verdict::Failed { gone: true };
    }
    if attempt as usize > RETRY_SCHEDULE.len() {
        return Verdict::Failed { gone: false };
    }
    Verdict::Retry
}

/// Opens the outbox in `data_dir/notify` and starts the notifier; the handle goes to the writer.
pub fn start(
    ch: Clickhouse,
    secrets_key: Option<Arc<SecretsKey>>,
    data_dir: &Path,
    config: NotifyConfig,
    shutdown: Shutdown,
) -> anyhow::Result<Notify> {
    let dir = data_dir.join("notify");
    let outbox = Outbox::open(&dir).map_err(|error| {
        anyhow::anyhow!(
            "cannot open the notification outbox in {}: {error}",
            dir.display()
        )
    })?;
    let sender = Sender::new().map_err(|error| anyhow::anyhow!("notifications: {error}"))?;
    let (tx, rx) = mpsc::channel(16);
    let wanted = Arc::new(AtomicBool::new(true));
    let (attempts_tx, attempts_rx) = mpsc::channel(ATTEMPTS_QUEUE);
    tokio::spawn(record_attempts(ch.clone(), attempts_rx));
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let notifier = Notifier {
        ch,
        secrets_key,
        config,
        outbox: Arc::new(Mutex::new(outbox)),
        subs: None,
        wanted: wanted.clone(),
        due: BTreeSet::new(),
        in_flight: HashMap::new(),
        last_emit: HashMap::new(),
        to_disable: HashMap::new(),
        sender,
        attempts: attempts_tx,
        results: results_tx,
    };
    tokio::spawn(notifier.run(rx, results_rx, shutdown));
    Ok(Notify {
        tx: Some(tx),
        wanted,
    })
}

struct Notifier {
    ch: Clickhouse,
    secrets_key: Option<Arc<SecretsKey>>,
    config: NotifyConfig,
    outbox: Arc<Mutex<Outbox>>,
    /// `None` until loaded once.
    subs: Option<HashMap<String, Subscription>>,
    wanted: Arc<AtomicBool>,
    /// Notifications waiting for their time, by due time.
    due: BTreeSet<(i64, String)>,
    /// Attempts running, by subscription.
    in_flight: HashMap<String, usize>,
    last_emit: HashMap<(String, u64), i64>,
    /// Subscriptions this gateway must disable, and why (kept until ClickHouse took it).
    to_disable: HashMap<String, (&'static str, String)>,
    sender: Sender,
    attempts: mpsc::Sender<AttemptRow>,
    results: mpsc::UnboundedSender<Attempted>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Notifier {
    async fn run(
        mut self,
        mut told: mpsc::Receiver<Told>,
        mut results: mpsc::UnboundedReceiver<Attempted>,
        mut shutdown: Shutdown,
    ) {
        {
            let outbox = self.lock();
            let mut due: Vec<(i64, String)> = outbox
                .state()
                .pending
                .values()
                .map(|p| (p.due_ms, p.id.clone()))
                .collect();
            drop(outbox);
            self.due.extend(due.drain(..));
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reload = tokio::time::interval(self.config.refresh);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                message = told.recv() => match message {
                    Some(Told { facts, done }) => {
                        let result = self.take(facts).await;
                        let _ = done.send(result);
                    }
                    None => return,
                },
                Some(result) = results.recv() => self.settle(result).await,
                _ = tick.tick() => {
                    self.close_spans().await;
                    if !stopping {
                        self.dispatch();
                    }
                    events::notify::pending(self.waiting());
                }
                _ = reload.tick() => self.reload().await,
                _ = shutdown.triggered(), if !stopping => {
                    // Facts are still taken (the writer lands what it holds); nothing new is
                    // sent: what is due is sent after the restart.
                    stopping = true;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting(&self) -> usize {
        let outbox = self.lock();
        outbox.state().pending.len() + outbox.state().open.len()
    }

    /// Appends `entries` to the outbox off the async threads.
    async fn append(&self, entries: Vec<Entry>) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || {
            outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&entries)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Appends, retrying while the disk refuses (the outbox is what the notifier owes).
    async fn append_surely(&self, entries: Vec<Entry>) {
        let mut pause = Duration::from_millis(100);
        while let Err(error) = self.append(entries.clone()).await {
            events::notify::outbox_failed(&error);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Facts of a landed batch, fanned out to the subscriptions that want them.
    async fn take(&mut self, facts: Facts) -> io::Result<()> {
        if self.subs.is_none() {
            self.reload().await;
        }
        let Some(subs) = &self.subs else {
            return Err(io::Error::other(
                "subscriptions are not loaded from ClickHouse yet",
            ));
        };
        let now = now_ms();
        let mut entries = Vec::new();
        let mut dropped = 0;
        {
            let outbox = self.lock();
            for sub in subs.values().filter(|s| s.live()) {
                let id = &sub.row.subscription_id;
                if message::wants(&sub.row.event_types, message::DATA_LANDED) {
                    for (pipeline, span) in &facts.landed {
                        if message::covers(&sub.row.pipelines, *pipeline) {
                            entries.push(Entry::Landed {
                                sub: id.clone(),
                                pipeline: *pipeline,
                                span: span.clone(),
                            });
                        }
                    }
                }
                if message::wants(&sub.row.event_types, message::REQUEST_REJECTED) {
                    let mut room = self
                        .config
                        .max_pending
                        .saturating_sub(outbox.state().pending_of(id));
                    for fact in &facts.rejected {
                        if !message::covers(&sub.row.pipelines, fact.pipeline_id) {
                            continue;
                        }
                        if room == 0 {
                            dropped += 1;
                            continue;
                        }
                        room -= 1;
                        entries.push(Entry::Due {
                            id: message::new_webhook_id(),
                            sub: id.clone(),
                            kind: message::REQUEST_REJECTED.into(),
                            body: message::request_rejected(
                                fact.pipeline_id,
                                &fact.request_id,
                                fact.reason,
                                fact.timestamp,
                                now,
                            ),
                            pipeline: None,
                            created_ms: now,
                        });
                    }
                }
            }
        }
        events::notify::dropped("queue_full", dropped);
        let new_due: Vec<(i64, String)> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Due { id, created_ms, .. } => Some((*created_ms, id.clone())),
                _ => None,
            })
            .collect();
        self.append(entries).await?;
        self.due.extend(new_due);
        Ok(())
    }

    /// Open spans whose second has passed become `data.landed` notifications.
    async fn close_spans(&mut self) {
        let Some(subs) = &self.subs else {
            return;
        };
        let now = now_ms();
        let mut entries = Vec::new();
        {
            let outbox = self.lock();
            let mut room: HashMap<&str, usize> = HashMap::new();
            for ((sub, pipeline), span) in &outbox.state().open {
                if !subs.get(sub).is_some_and(Subscription::live) {
                    continue; // dropped on the next reload
                }
                let last = self
                    .last_emit
                    .get(&(sub.clone(), *pipeline))
                    .copied()
                    .unwrap_or(i64::MIN);
                if now < last.saturating_add(COALESCE_MS) {
                    continue;
                }
                let room = room.entry(sub).or_insert_with(|| {
                    self.config
                        .max_pending
                        .saturating_sub(outbox.state().pending_of(sub))
                });
                if *room == 0 {
                    continue; // the span goes on growing: no count is lost
                }
                *room -= 1;
                entries.push(Entry::Due {
                    id: message::new_webhook_id(),
                    sub: sub.clone(),
                    kind: message::DATA_LANDED.into(),
                    body: message::data_landed(*pipeline, span, now),
                    pipeline: Some(*pipeline),
                    created_ms: now,
                });
            }
        }
        if entries.is_empty() {
            return;
        }
        let mut made = Vec::new();
        for entry in &entries {
            if let Entry::Due {
                id,
                sub,
                pipeline: Some(pipeline),
                ..
            } = entry
            {
                self.last_emit.insert((sub.clone(), *pipeline), now);
                made.push((now, id.clone()));
            }
        }
        self.append_surely(entries).await;
        self.due.extend(made);
    }

    /// Starts the attempts that are due, within each subscription's share.
    fn dispatch(&mut self) {
        let Some(subs) = &self.subs else {
            return;
        };
        let now = now_ms();
        let mut launch = Vec::new();
        let mut gone = Vec::new();
        let mut later = Vec::new();
        let mut running = self.in_flight.clone();
        {
            let outbox = self.lock();
            for (due, id) in self.due.iter() {
                if *due > now {
                    break;
                }
                let Some(pending) = outbox.state().pending.get(id) else {
                    gone.push((*due, id.clone()));
                    continue;
                };
                let Some(sub) = subs.get(&pending.sub).filter(|s| s.live()) else {
                    continue; // dropped on the next reload, or enabled again
                };
                if self.to_disable.contains_key(&pending.sub) {
                    continue;
                }
                let secret = match &sub.secret {
                    Ok(secret) => secret.clone(),
                    Err(why) => {
                        events::notify::secret_unreadable(&pending.sub, why);
                        later.push((*due, id.clone()));
                        continue;
                    }
                };
                let share = running.entry(pending.sub.clone()).or_default();
                if *share >= IN_FLIGHT_PER_SUBSCRIPTION {
                    continue;
                }
                *share += 1;
                launch.push((
                    *due,
                    Launch {
                        url: sub.row.url.clone(),
                        secret,
                        id: id.clone(),
                        body: pending.body.clone(),
                        sub: pending.sub.clone(),
                        version: sub.row.version,
                        attempt: pending.attempts + 1,
                    },
                ));
            }
        }
        for key in gone {
            self.due.remove(&key);
        }
        for (due, id) in later {
            self.due.remove(&(due, id.clone()));
            self.due.insert((now + 10_000, id));
        }
        self.in_flight = running;
        for (due, attempt) in launch {
            self.due.remove(&(due, attempt.id.clone()));
            let sender = self.sender.clone();
            let results = self.results.clone();
            tokio::spawn(async move {
                let answer = sender
                    .send(&attempt.url, &attempt.secret, &attempt.id, &attempt.body)
                    .await;
                let _ = results.send(Attempted {
                    id: attempt.id,
                    sub: attempt.sub,
                    version: attempt.version,
                    attempt: attempt.attempt,
                    answer,
                });
            });
        }
    }

    /// What an attempt came to.
    async fn settle(&mut self, done: Attempted) {
        if let Some(n) = self.in_flight.get_mut(&done.sub) {
            *n = n.saturating_sub(1);
        }
        let Some(pending) = self.lock().state().pending.get(&done.id).cloned() else {
            return;
        };
        self.record(&pending, done.attempt, &done.answer);
        if done.attempt > 1 {
            events::notify::retried();
        }
        let now = now_ms();
        let version = done.version;
        let unchanged = self.subs.as_ref().is_some_and(|subs| {
            subs.get(&done.sub)
                .is_some_and(|s| s.live() && s.row.version == version)
        }) && !self.to_disable.contains_key(&done.sub);
        let error = done.answer.error.clone().unwrap_or_default();
        let end = |ok, counted| Entry::End {
            id: done.id.clone(),
            ok,
            counted,
            version,
        };
        match verdict(&done.answer, done.attempt, unchanged) {
            Verdict::Delivered { counted } => {
                events::notify::delivered(
                    &pending.kind,
                    Duration::from_millis((now - pending.created_ms).max(0) as u64),
                );
                self.append_surely(vec![end(true, counted)]).await;
            }
            Verdict::Stale => {
                events::notify::dropped("subscription_off", 1);
                self.append_surely(vec![end(false, false)]).await;
            }
            Verdict::Retry => {
                let delay = self.delay(done.attempt, done.answer.retry_after);
                events::notify::attempt_failed(
                    &done.sub,
                    &done.id,
                    done.attempt,
                    &error,
                    Some(delay),
                );
                let next_ms = now + delay.as_millis() as i64;
                self.append_surely(vec![Entry::Tried {
                    id: done.id.clone(),
                    attempts: done.attempt,
                    next_ms,
                }])
                .await;
                self.due.insert((next_ms, done.id));
            }
            Verdict::Failed { gone } => {
                events::notify::attempt_failed(&done.sub, &done.id, done.attempt, &error, None);
                events::notify::given_up(&done.sub, &done.id, &pending.kind);
                self.append_surely(vec![end(false, true)]).await;
                if gone {
                    self.disable(&done.sub, "gone", "the receiver answered 410 Gone".into())
                        .await;
                } else if self.lock().state().failures(&done.sub, version) >= FAILURES_TO_DISABLE {
                    self.disable(
                        &done.sub,
                        "failures",
                        format!(
                            "{FAILURES_TO_DISABLE} notifications in a row failed every attempt"
                        ),
                    )
                    .await;
                }
            }
        }
    }

    /// The pause before attempt `attempt + 1`.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        use rand::Rng;
        let index = (attempt as usize)
            .saturating_sub(1)
            .min(RETRY_SCHEDULE.len() - 1);
        let jitter = rand::rng().random_range(0.8..1.2);
        let scheduled = RETRY_SCHEDULE[index].mul_f64(self.config.backoff_scale * jitter);
        match retry_after {
            Some(asked) => scheduled.max(asked.min(MAX_RETRY_AFTER)),
            None => scheduled,
        }
    }

    fn record(&self, pending: &outbox::Pending, attempt: u32, answer: &Answer) {
        let row = AttemptRow {
            subscription_id: pending.sub.clone(),
            webhook_id: pending.id.clone(),
            kind: pending.kind.clone(),
            attempt,
            status_code: answer.status.unwrap_or(0),
            error: answer.error.clone().unwrap_or_default(),
            duration_ms: answer.took.as_millis().min(u32::MAX as u128) as u32,
            attempted_at: (now_ms() / 1000) as u32,
        };
        if self.attempts.try_send(row).is_err() {
            events::notify::attempts_unrecorded(1, None);
        }
    }

    async fn disable(&mut self, sub: &str, reason: &'static str, why: String) {
        events::notify::subscription_disabled(sub, reason, &why);
        self.to_disable.insert(sub.to_owned(), (reason, why));
        self.store_disables().await;
    }

    /// Writes the disables ClickHouse has not taken yet.
    async fn store_disables(&mut self) {
        let pending: Vec<(String, String)> = self
            .to_disable
            .iter()
            .map(|(sub, (_, why))| (sub.clone(), why.clone()))
            .collect();
        for (sub, why) in pending {
            let result = store::update_subscription(&self.ch, &sub, |row| {
                row.active = 0;
                row.disabled_reason = why;
            })
            .await;
            match result {
                Ok(row) => {
                    self.to_disable.remove(&sub);
                    if let Some(subs) = &mut self.subs {
                        if let Some(known) = subs.get_mut(&sub) {
                            known.row = row;
                        }
                    }
                }
                Err(store::StoreError::NoSuchSubscription(_)) => {
                    self.to_disable.remove(&sub);
                }
                Err(error) => events::notify::subscriptions_unloaded(&error),
            }
        }
    }

    /// Loads subscriptions again; drops what is held for those no longer live.
    async fn reload(&mut self) {
        self.store_disables().await;
        let rows = match store::list_subscriptions(&self.ch).await {
            Ok(rows) => rows,
            Err(error) => {
                events::notify::subscriptions_unloaded(&error);
                return;
            }
        };
        let mut subs = HashMap::new();
        for row in rows {
            let secret = match &self.secrets_key {
                Some(key) => key
                    .open_for_subscription(&row.subscription_id, &row.secret)
                    .map_err(|error| error.to_string()),
                None => Err("HOOKHOUSE_SECRETS_KEY_FILE is not set".into()),
            };
            subs.insert(row.subscription_id.clone(), Subscription { row, secret });
        }
        self.wanted
            .store(subs.values().any(Subscription::live), Ordering::Relaxed);
        // What is held for subscriptions that are gone, disabled or deleted is dropped.
        let mut entries = Vec::new();
        let mut dropped = 0u64;
        {
            let outbox = self.lock();
            let state = outbox.state();
            let dead = |sub: &str| !subs.get(sub).is_some_and(Subscription::live);
            for pending in state.pending.values() {
                if dead(&pending.sub) {
                    dropped += 1;
                    entries.push(Entry::End {
                        id: pending.id.clone(),
                        ok: false,
                        counted: false,
                        version: 0,
                    });
                }
            }
            let open: HashSet<&String> = state
                .open
                .keys()
                .map(|(sub, _)| sub)
                .filter(|sub| dead(sub))
                .collect();
            for sub in open {
                entries.push(Entry::Forget { sub: sub.clone() });
            }
        }
        events::notify::dropped("subscription_off", dropped);
        self.subs = Some(subs);
        self.append_surely(entries).await;
    }
}

/// Keeps attempts in `notification_attempts`, in batches, retrying while ClickHouse is away.
async fn record_attempts(ch: Clickhouse, mut rx: mpsc::Receiver<AttemptRow>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
        let mut pause = Duration::from_millis(200);
        loop {
            match store::insert_attempts(&ch, &batch).await {
                Ok(()) => break,
                Err(error) => {
                    events::notify::attempts_unrecorded(0, Some(&error));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch.clear();
    }
}

/// Sends a `ping` to a subscription now, for `subscription test`; the attempt is recorded.
pub async fn ping(
    ch: &Clickhouse,
    row: &SubscriptionRow,
    secret: &Secret,
) -> anyhow::Result<Answer> {
    let sender = Sender::new().map_err(|error| anyhow::anyhow!("notifications: {error}"))?;
    let id = message::new_webhook_id();
    let body = message::ping(&row.subscription_id, now_ms());
    let answer = sender.send(&row.url, secret, &id, &body).await;
    let attempt = AttemptRow {
        subscription_id: row.subscription_id.clone(),
        webhook_id: id,
        kind: message::PING.into(),
        attempt: 1,
        status_code: answer.status.unwrap_or(0),
        error: answer.error.clone().unwrap_or_default(),
        duration_ms: answer.took.as_millis().min(u32::MAX as u128) as u32,
        attempted_at: (now_ms() / 1000) as u32,
    };
    store::insert_attempts(ch, &[attempt]).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        id: &'static str,
        pipeline: u64,
        t: f64,
        reason: Option<&'static str>,
    ) -> Confirmed<'static> {
        Confirmed {
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
    fn five_retries_then_given_up_410_at_once_and_stale_answers_dropped() {
        for attempt in 1..=5 {
            assert_eq!(verdict(&answered(Some(500)), attempt, true), Verdict::Retry);
            assert_eq!(verdict(&answered(None), attempt, true), Verdict::Retry);
        }
        assert_eq!(
            verdict(&answered(Some(500)), 6, true),
            Verdict::Failed { gone: false }
        );
        assert_eq!(
            verdict(&answered(Some(410)), 1, true),
            Verdict::Failed { gone: true }
        );
        assert_eq!(
            verdict(&answered(Some(204)), 3, true),
            Verdict::Delivered { counted: true }
        );
        // Started before a disable and an `enable`: neither a failure of the new version nor
        // a 410 for it.
        assert_eq!(verdict(&answered(Some(500)), 6, false), Verdict::Stale);
        assert_eq!(verdict(&answered(Some(410)), 1, false), Verdict::Stale);
        assert_eq!(
            verdict(&answered(Some(200)), 1, false),
            Verdict::Delivered { counted: false }
        );
    }

    #[test]
    fn facts_give_each_pipeline_its_span_and_each_rejection_its_own() {
        let facts = Facts::of(&[
            row("a", 1, 1.0, None),
            row("b", 2, 2.0, None),
            row("c", 1, 3.0, Some("WRONG_TOKEN")),
            row("d", 1, 4.0, None),
        ]);
        assert_eq!(facts.landed.len(), 2);
        let (pipeline, span) = &facts.landed[0];
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
        assert_eq!(facts.rejected.len(), 1);
        assert_eq!(facts.rejected[0].reason, "WRONG_TOKEN");
        assert!(Facts::of(&[]).is_empty());
    }
}
