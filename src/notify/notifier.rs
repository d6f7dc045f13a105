//! The notifier: one task that owns the outbox. It takes the writer's facts, turns open spans
//! into `data.landed` notifications once their second has passed, starts attempts when they are
//! due (each subscription its own queue and share), and writes what they came to.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::outbox::{Entry, Outbox};
use super::send::{Answer, Sender};
use super::subscriptions::{Disable, Subscription, Subscriptions};
use super::{
    attempts, message, verdict, Facts, NotifyConfig, Told, Verdict, FAILURES_TO_DISABLE,
    IN_FLIGHT_PER_SUBSCRIPTION, RETRY_SCHEDULE,
};
use crate::clickhouse::rows::AttemptRow;
use crate::events;
use crate::shutdown::Shutdown;
use crate::signing::Secret;

/// At most one `data.landed` per subscription and pipeline this often.
const COALESCE_MS: i64 = 1000;
/// The longest the loop sleeps: open spans are looked at this often.
const TICK: Duration = Duration::from_millis(100);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long facts wait for the first load of subscriptions before they are dropped.
const FIRST_LOAD: Duration = Duration::from_secs(5);
/// Tries of one append to the outbox before it is given up (see `append_briefly`).
const APPEND_TRIES: usize = 3;
/// How long a notification whose secret this gateway cannot open waits before it is looked at
/// again.
const UNREADABLE_WAIT_MS: i64 = 10_000;

/// One attempt, started.
struct Launch {
    url: String,
    secret: Secret,
    id: String,
    kind: String,
    body: String,
    sub: String,
    version: u64,
    attempt: u32,
}

/// One attempt's result, back from its task.
struct Attempted {
    id: String,
    sub: String,
    kind: String,
    version: u64,
    attempt: u32,
    started_at: u32,
    answer: Answer,
}

pub struct Notifier {
    outbox: Arc<Mutex<Outbox>>,
    config: NotifyConfig,
    sender: Sender,
    subs_rx: watch::Receiver<Option<Arc<Subscriptions>>>,
    subs: Option<Arc<Subscriptions>>,
    /// Notifications waiting for their time, by subscription, by due time.
    queues: HashMap<String, BTreeSet<(i64, String)>>,
    /// Attempts running, by subscription.
    in_flight: HashMap<String, usize>,
    last_emit: HashMap<(String, u64), i64>,
    /// Subscriptions asked to be disabled, at the version judged: nothing more is sent to them
    /// until the loaded view shows another version.
    disabling: HashMap<String, u64>,
    disable_tx: mpsc::UnboundedSender<Disable>,
    attempts: mpsc::Sender<AttemptRow>,
    results_tx: mpsc::UnboundedSender<Attempted>,
    results_rx: mpsc::UnboundedReceiver<Attempted>,
    stopping: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Notifier {
    pub fn new(
        outbox: Outbox,
        config: NotifyConfig,
        sender: Sender,
        subs_rx: watch::Receiver<Option<Arc<Subscriptions>>>,
        disable_tx: mpsc::UnboundedSender<Disable>,
        attempts: mpsc::Sender<AttemptRow>,
    ) -> Notifier {
        let mut queues: HashMap<String, BTreeSet<(i64, String)>> = HashMap::new();
        for pending in outbox.state().pending.values() {
            queues
                .entry(pending.sub.clone())
                .or_default()
                .insert((pending.due_ms, pending.id.clone()));
        }
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        Notifier {
            outbox: Arc::new(Mutex::new(outbox)),
            config,
            sender,
            subs_rx,
            subs: None,
            queues,
            in_flight: HashMap::new(),
            last_emit: HashMap::new(),
            disabling: HashMap::new(),
            disable_tx,
            attempts,
            results_tx,
            results_rx,
            stopping: false,
        }
    }

    pub(super) async fn run(mut self, mut told: mpsc::Receiver<Told>, mut shutdown: Shutdown) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                message = told.recv() => match message {
                    Some(Told { facts, done }) => {
                        let result = self.take(facts).await;
                        let _ = done.send(result);
                    }
                    None => return,
                },
                Some(first) = self.results_rx.recv() => {
                    let mut results = vec![first];
                    while let Ok(more) = self.results_rx.try_recv() {
                        results.push(more);
                    }
                    self.settle(results).await;
                }
                changed = self.subs_rx.changed() => {
                    if changed.is_err() {
                        return; // the loader stopped: the gateway is going
                    }
                    self.follow_subscriptions().await;
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.close_spans().await;
                }
                _ = shutdown.triggered(), if !self.stopping => {
                    // Facts are still taken (the writer lands what it holds); nothing new is
                    // sent: what is due is sent after the restart.
                    self.stopping = true;
                }
            }
            self.dispatch();
            events::notify::pending(self.waiting());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting(&self) -> usize {
        let outbox = self.lock();
        outbox.state().pending.len() + outbox.state().open.len()
    }

    /// When the loop must look again: the earliest due notification of a subscription with a
    /// free share, or after [`TICK`] for open spans.
    fn next_wake(&self) -> Instant {
        let now_ms = now_ms();
        let mut wait = TICK;
        if !self.stopping {
            for (sub, queue) in &self.queues {
                if !self.dispatchable(sub) {
                    continue;
                }
                if let Some((due, _)) = queue.first() {
                    let until = Duration::from_millis((*due - now_ms).max(0) as u64);
                    wait = wait.min(until);
                }
            }
        }
        Instant::now() + wait
    }

    /// Whether `sub` may be sent to now: live, not being disabled, secret readable, and with
    /// a free share of attempts.
    fn dispatchable(&self, sub: &str) -> bool {
        let live = self.subscription(sub).is_some_and(|s| s.secret.is_ok());
        live && !self.disabling.contains_key(sub)
            && self.in_flight.get(sub).copied().unwrap_or(0) < IN_FLIGHT_PER_SUBSCRIPTION
    }

    /// `sub` when it is live in the loaded view.
    fn subscription(&self, sub: &str) -> Option<&Subscription> {
        self.subs.as_ref()?.get(sub).filter(|s| s.live())
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

    /// Appends, trying a few times within about a second; false when the disk kept refusing.
    /// Never longer: the notifier's loop, and through it the writer, must not wait on a disk
    /// that is full until the writer frees it.
    async fn append_briefly(&self, entries: Vec<Entry>) -> bool {
        let mut pause = Duration::from_millis(100);
        for _ in 0..APPEND_TRIES {
            match self.append(entries.clone()).await {
                Ok(()) => return true,
                Err(error) => events::notify::outbox_failed(&error),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        false
    }

    fn enqueue(&mut self, sub: &str, due_ms: i64, id: String) {
        self.queues
            .entry(sub.to_owned())
            .or_default()
            .insert((due_ms, id));
    }

    /// Facts of a landed batch, fanned out to the subscriptions that want them, made durable
    /// with the mark of what was told.
    async fn take(&mut self, facts: Facts) -> io::Result<()> {
        if self.subs.is_none() {
            let loaded = tokio::time::timeout(FIRST_LOAD, self.subs_rx.wait_for(Option::is_some));
            if let Ok(Ok(subs)) = loaded.await {
                self.subs = subs.clone();
            }
        }
        let Some(subs) = self.subs.clone() else {
            // Never loaded (ClickHouse refuses the table?): the writer must not wait for it.
            events::notify::dropped("subscriptions_unknown", facts.rows.len() as u64);
            return Ok(());
        };
        let now = now_ms();
        let mut entries = Vec::new();
        let mut made = Vec::new();
        let mut dropped = 0;
        {
            let outbox = self.lock();
            let untold = facts.after(outbox.state().told_through);
            if untold.through == 0 {
                return Ok(());
            }
            for sub in subs.values().filter(|s| s.live()) {
                let row = &sub.row;
                let id = &row.subscription_id;
                if message::wants(&row.event_types, message::DATA_LANDED) {
                    for (pipeline, span) in &untold.landed {
                        if message::covers(&row.pipelines, *pipeline) {
                            entries.push(Entry::Landed {
                                sub: id.clone(),
                                pipeline: *pipeline,
                                span: span.clone(),
                            });
                        }
                    }
                }
                if !message::wants(&row.event_types, message::REQUEST_REJECTED) {
                    continue;
                }
                let mut room = outbox.state().room(id, self.config.max_pending);
                for fact in &untold.rejected {
                    if !message::covers(&row.pipelines, fact.pipeline_id) {
                        continue;
                    }
                    if room == 0 {
                        dropped += 1;
                        continue;
                    }
                    room -= 1;
                    let webhook_id = message::webhook_id_for(id, &fact.request_id);
                    made.push((id.clone(), webhook_id.clone()));
                    entries.push(Entry::Due {
                        id: webhook_id,
                        sub: id.clone(),
                        kind: message::REQUEST_REJECTED.into(),
                        body: message::request_rejected(
                            fact.pipeline_id,
                            &fact.request_id,
                            fact.reason.unwrap_or_default(),
                            fact.timestamp,
                            now,
                        ),
                        pipeline: None,
                        created_ms: now,
                    });
                }
            }
            if entries.is_empty() {
                return Ok(()); // nothing to tell, nothing to write
            }
            entries.push(Entry::Told {
                seq: untold.through,
            });
        }
        events::notify::dropped("queue_full", dropped);
        if !self.append_briefly(entries).await {
            // The writer must not wait for the outbox: on a full disk, landing is what frees
            // the space (the log's delivered segments). These notifications are lost, counted.
            events::notify::dropped("outbox_unwritable", (made.len() + 1) as u64);
            return Ok(());
        }
        for (sub, id) in made {
            self.enqueue(&sub, now, id);
        }
        Ok(())
    }

    /// Open spans whose second has passed become `data.landed` notifications.
    async fn close_spans(&mut self) {
        let now = now_ms();
        let mut entries = Vec::new();
        {
            let outbox = self.lock();
            let mut room: HashMap<&str, usize> = HashMap::new();
            for ((sub, pipeline), span) in &outbox.state().open {
                if self.subscription(sub).is_none() {
                    continue; // dropped when the view says so
                }
                let last = self
                    .last_emit
                    .get(&(sub.clone(), *pipeline))
                    .copied()
                    .unwrap_or(i64::MIN);
                if now < last.saturating_add(COALESCE_MS) {
                    continue;
                }
                let room = room
                    .entry(sub)
                    .or_insert_with(|| outbox.state().room(sub, self.config.max_pending));
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
        if !self.append_briefly(entries.clone()).await {
            return; // the spans stay open: tried again on the next tick
        }
        for entry in entries {
            if let Entry::Due {
                id,
                sub,
                pipeline: Some(pipeline),
                ..
            } = entry
            {
                self.last_emit.insert((sub.clone(), pipeline), now);
                self.enqueue(&sub, now, id);
            }
        }
    }

    /// Starts the attempts that are due, each subscription within its share.
    fn dispatch(&mut self) {
        if self.stopping {
            return;
        }
        let now = now_ms();
        let mut launches = Vec::new();
        let outbox = self.outbox.clone();
        let outbox = outbox.lock().unwrap_or_else(|e| e.into_inner());
        let subs: Vec<String> = self.queues.keys().cloned().collect();
        for sub in subs {
            if !self.dispatchable(&sub) {
                if let Some(Subscription {
                    secret: Err(why), ..
                }) = self.subscription(&sub)
                {
                    events::notify::secret_unreadable(&sub, why);
                    self.postpone(&sub, now);
                }
                continue;
            }
            let Some(subscription) = self.subscription(&sub) else {
                continue;
            };
            let (url, version) = (subscription.row.url.clone(), subscription.row.version);
            let Ok(secret) = subscription.secret.clone() else {
                continue;
            };
            let mut share = IN_FLIGHT_PER_SUBSCRIPTION
                .saturating_sub(self.in_flight.get(&sub).copied().unwrap_or(0));
            let Some(queue) = self.queues.get_mut(&sub) else {
                continue;
            };
            while share > 0 {
                let Some((due, id)) = queue.first().cloned() else {
                    break;
                };
                if due > now {
                    break;
                }
                queue.remove(&(due, id.clone()));
                let Some(pending) = outbox.state().pending.get(&id) else {
                    continue; // ended meanwhile
                };
                share -= 1;
                launches.push(Launch {
                    url: url.clone(),
                    secret: secret.clone(),
                    id,
                    kind: pending.kind.clone(),
                    body: pending.body.clone(),
                    sub: sub.clone(),
                    version,
                    attempt: pending.attempts + 1,
                });
            }
            if queue.is_empty() {
                self.queues.remove(&sub);
            }
        }
        for launch in launches {
            *self.in_flight.entry(launch.sub.clone()).or_default() += 1;
            let sender = self.sender.clone();
            let results = self.results_tx.clone();
            tokio::spawn(async move {
                let started_at = chrono::Utc::now().timestamp() as u32;
                let answer = sender
                    .send(&launch.url, &launch.secret, &launch.id, &launch.body)
                    .await;
                let _ = results.send(Attempted {
                    id: launch.id,
                    sub: launch.sub,
                    kind: launch.kind,
                    version: launch.version,
                    attempt: launch.attempt,
                    started_at,
                    answer,
                });
            });
        }
    }

    /// Moves `sub`'s due notifications later: it cannot be sent to now.
    fn postpone(&mut self, sub: &str, now: i64) {
        let Some(queue) = self.queues.get_mut(sub) else {
            return;
        };
        let due: Vec<(i64, String)> = queue
            .iter()
            .take_while(|(d, _)| *d <= now)
            .cloned()
            .collect();
        for (at, id) in due {
            queue.remove(&(at, id.clone()));
            queue.insert((now + UNREADABLE_WAIT_MS, id));
        }
    }

    /// What attempts came to, written to the outbox together.
    async fn settle(&mut self, results: Vec<Attempted>) {
        let now = now_ms();
        let mut entries = Vec::new();
        let mut retries = Vec::new();
        let mut judged: Vec<(String, u64)> = Vec::new();
        let mut gone: Vec<(String, u64)> = Vec::new();
        for done in results {
            if let Some(n) = self.in_flight.get_mut(&done.sub) {
                *n = n.saturating_sub(1);
            }
            attempts::keep(
                &self.attempts,
                attempts::row(
                    &done.sub,
                    &done.id,
                    &done.kind,
                    done.attempt,
                    &done.answer,
                    done.started_at,
                ),
            );
            if done.attempt > 1 {
                events::notify::retried();
            }
            let Some(created_ms) = self
                .lock()
                .state()
                .pending
                .get(&done.id)
                .map(|p| p.created_ms)
            else {
                continue; // dropped while it ran
            };
            let current = self.subscription(&done.sub).map(|s| s.row.version);
            let live = current.is_some() && !self.disabling.contains_key(&done.sub);
            let same_version = current == Some(done.version);
            let error = done.answer.error.clone().unwrap_or_default();
            let end = |ok, counted| Entry::End {
                id: done.id.clone(),
                ok,
                counted,
                version: done.version,
            };
            match verdict(&done.answer, done.attempt, live, same_version) {
                Verdict::Delivered { counted } => {
                    let latency = Duration::from_millis((now - created_ms).max(0) as u64);
                    events::notify::delivered(&done.kind, latency);
                    entries.push(end(true, counted));
                }
                Verdict::Stale => {
                    events::notify::dropped("subscription_off", 1);
                    entries.push(end(false, false));
                }
                Verdict::Retry => {
                    let delay = self.delay(done.attempt, done.answer.retry_after);
                    let attempt = done.attempt;
                    events::notify::attempt_failed(
                        &done.sub,
                        &done.id,
                        attempt,
                        &error,
                        Some(delay),
                    );
                    let next_ms = now + delay.as_millis() as i64;
                    entries.push(Entry::Tried {
                        id: done.id.clone(),
                        attempts: attempt,
                        next_ms,
                    });
                    retries.push((done.sub, next_ms, done.id));
                }
                Verdict::Failed {
                    gone: is_gone,
                    counted,
                } => {
                    events::notify::attempt_failed(&done.sub, &done.id, done.attempt, &error, None);
                    events::notify::given_up(&done.sub, &done.id, &done.kind);
                    entries.push(end(false, counted));
                    let version = current.unwrap_or(done.version);
                    if is_gone {
                        gone.push((done.sub, version));
                    } else if counted {
                        judged.push((done.sub, version));
                    }
                }
            }
        }
        // Not written: after a restart these are sent again (at least once); until then the
        // retries below still happen.
        self.append_briefly(entries).await;
        for (sub, next_ms, id) in retries {
            self.enqueue(&sub, next_ms, id);
        }
        for (sub, version) in gone {
            self.disable(
                &sub,
                version,
                "gone",
                "the receiver answered 410 Gone".into(),
            );
        }
        for (sub, version) in judged {
            if self.lock().state().failures(&sub, version) >= FAILURES_TO_DISABLE {
                let why =
                    format!("{FAILURES_TO_DISABLE} notifications in a row failed every attempt");
                self.disable(&sub, version, "failures", why);
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

    /// Stops sending to `sub` and asks the loader to disable it in ClickHouse, if it is still
    /// at `version` there.
    fn disable(&mut self, sub: &str, version: u64, reason: &'static str, why: String) {
        if self.disabling.contains_key(sub) {
            return;
        }
        events::notify::subscription_disabled(sub, reason, &why);
        self.disabling.insert(sub.to_owned(), version);
        let _ = self.disable_tx.send(Disable {
            sub: sub.to_owned(),
            version,
            why,
        });
    }

    /// A new view of subscriptions: what is held for those no longer live is dropped.
    async fn follow_subscriptions(&mut self) {
        let subs = self.subs_rx.borrow_and_update().clone();
        let Some(subs) = subs else {
            return;
        };
        self.subs = Some(subs.clone());
        self.disabling.retain(|sub, version| {
            subs.get(sub)
                .is_some_and(|s| s.live() && s.row.version == *version)
        });
        let dead = |sub: &str| !subs.get(sub).is_some_and(Subscription::live);
        let mut entries = Vec::new();
        {
            let outbox = self.lock();
            let state = outbox.state();
            for pending in state.pending.values().filter(|p| dead(&p.sub)) {
                entries.push(Entry::End {
                    id: pending.id.clone(),
                    ok: false,
                    counted: false,
                    version: 0,
                });
            }
            let mut forgotten: Vec<&String> = state
                .open
                .keys()
                .map(|(sub, _)| sub)
                .filter(|sub| dead(sub))
                .collect();
            forgotten.dedup();
            for sub in forgotten {
                entries.push(Entry::Forget { sub: sub.clone() });
            }
        }
        let dropped = entries
            .iter()
            .filter(|e| matches!(e, Entry::End { .. }))
            .count();
        events::notify::dropped("subscription_off", dropped as u64);
        self.queues.retain(|sub, _| !dead(sub));
        self.append_briefly(entries).await;
    }
}
