//! The exactly-once step against a model ClickHouse that fails in every way the protocol must
//! survive, with the writer crashing at every step.
//!
//! The model server lands rows, refuses inserts (passing errors, nothing landed), lets an insert
//! time out while it goes on running and lands it (or not) some polls later, and lands half of
//! an insert (`events`) before failing the other half (`rejected`). The writer is the real
//! [`ExactlyOnce`] step; a crash drops it at any call it makes to ClickHouse or to its disk
//! (before or after a stored mark takes effect, and between landing and confirming a batch),
//! while the server's running inserts live on. A restarted writer goes on from what its disk
//! stored, as after kill -9. At the end, with every running insert settled, each record must be
//! in ClickHouse exactly once, and no presence query may have been asked while one of the
//! writer's own inserts was still running.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use tokio::sync::Notify;

use super::exactly_once::{Destination, ExactlyOnce, LocalDisk};
use super::retry::Retry;
use super::supervisor::WriterHealth;
use crate::clickhouse::rows::Landing;
use crate::clickhouse::ChError;

/// An insert the client gave up on, still running in the server.
struct Running {
    ids: Vec<String>,
    polls_left: u8,
    lands: bool,
}

#[derive(Default)]
struct Server {
    landed: HashMap<String, u32>,
    running: Vec<Running>,
    /// Each call the writer makes consumes one choice; the script is proptest's.
    script: Vec<u8>,
    at: usize,
    /// Calls left before the writer crashes (None: never).
    calls_left: Option<usize>,
    crashed: bool,
    presence_while_running: bool,
    /// Durable state of the writer's disk.
    attempted: u64,
    confirmed: u64,
}

impl Server {
    fn choice(&mut self, n: u8) -> u8 {
        let c = self.script.get(self.at).copied().unwrap_or(0) % n;
        self.at += 1;
        c
    }

    /// Counts a call; true when the writer crashes at this one.
    fn crash_here(&mut self) -> bool {
        match &mut self.calls_left {
            Some(0) => {
                self.crashed = true;
                true
            }
            Some(left) => {
                *left -= 1;
                false
            }
            None => false,
        }
    }

    fn land(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            *self.landed.entry(id).or_default() += 1;
        }
    }
}

#[derive(Clone)]
struct Model(Arc<Mutex<Server>>, Arc<Notify>);

impl Model {
    fn server(&self) -> std::sync::MutexGuard<'_, Server> {
        self.0.lock().unwrap()
    }

    /// Never returns once the writer has crashed: the select in `run` drops it.
    async fn step(&self) {
        let crashed = self.server().crash_here();
        if crashed {
            self.1.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

fn retryable() -> ChError {
    ChError(clickhouse::error::Error::BadResponse(
        "Code: 252. DB::Exception: Too many parts".into(),
    ))
}

impl Destination for Model {
    async fn insert(&self, rows: &[Landing<'_>], _timeout: Duration) -> Result<(), ChError> {
        self.step().await;
        let mut s = self.server();
        let events: Vec<String> = rows
            .iter()
            .filter(|r| r.reason.is_none())
            .map(|r| r.request_id.to_string())
            .collect();
        let rejected: Vec<String> = rows
            .iter()
            .filter(|r| r.reason.is_some())
            .map(|r| r.request_id.to_string())
            .collect();
        match s.choice(5) {
            0 | 1 => {
                s.land(events);
                s.land(rejected);
                Ok(())
            }
            2 => Err(retryable()),
            3 => {
                let polls_left = s.choice(6);
                let lands = s.choice(3) != 0;
                let ids = events.into_iter().chain(rejected).collect();
                s.running.push(Running {
                    ids,
                    polls_left,
                    lands,
                });
                Err(ChError(clickhouse::error::Error::TimedOut))
            }
            _ => {
                s.land(events);
                Err(retryable())
            }
        }
    }

    async fn running_inserts(&self) -> Result<u64, ChError> {
        self.step().await;
        let mut s = self.server();
        let mut done = Vec::new();
        s.running.retain_mut(|r| {
            if r.polls_left == 0 {
                if r.lands {
                    done.append(&mut r.ids);
                }
                false
            } else {
                r.polls_left -= 1;
                true
            }
        });
        s.land(done);
        Ok(s.running.len() as u64)
    }

    async fn stop_running_inserts(&self) -> Result<(), ChError> {
        self.step().await;
        let mut s = self.server();
        let running = std::mem::take(&mut s.running);
        for r in running {
            if s.choice(2) == 0 {
                s.land(r.ids);
            }
        }
        Ok(())
    }

    async fn present(&self, rows: &[Landing<'_>]) -> Result<HashSet<String>, ChError> {
        self.step().await;
        let mut s = self.server();
        if !s.running.is_empty() {
            s.presence_while_running = true;
        }
        // Choice 0 is what an exhausted script gives: it must mean success, or the run loops.
        if s.choice(6) == 5 {
            return Err(retryable());
        }
        Ok(rows
            .iter()
            .filter(|r| s.landed.contains_key(r.request_id))
            .map(|r| r.request_id.to_string())
            .collect())
    }

    async fn drift(&self) -> Result<Option<String>, ChError> {
        self.step().await;
        Ok(None)
    }
}

impl LocalDisk for Model {
    async fn mark_attempted(&mut self, seq: u64) -> io::Result<()> {
        // A crash may come before the mark is stored or after.
        let before = self.server().choice(2) == 0;
        if before {
            self.step().await;
        }
        self.server().attempted = seq;
        if !before {
            self.step().await;
        }
        Ok(())
    }

    async fn set_aside(&self, _row: &Landing<'_>, _error: &str) -> io::Result<()> {
        unreachable!("the model refuses no row for good")
    }

    async fn store_plan(&mut self, _plan: &super::plan::Plan) -> io::Result<()> {
        unreachable!("the model's tables do not deduplicate: no plan is kept")
    }
}

fn rows(ids: &[String], from: usize, to: usize) -> Vec<Landing<'_>> {
    (from..to)
        .map(|i| Landing {
            reason: (i % 4 == 3).then_some("WRONG_TOKEN"),
            ..Landing::new(1, &ids[i], 0.0, String::new(), "{}".into())
        })
        .collect()
}

/// Delivers records `1..=n` in batches of `batch`, crashing after each budget in `crashes`.
async fn run(n: usize, batch: usize, crashes: Vec<usize>, script: Vec<u8>) -> Server {
    let ids: Vec<String> = (0..n).map(|i| format!("request{i:013}")).collect();
    let crashed = Arc::new(Notify::new());
    let model = Model(
        Arc::new(Mutex::new(Server {
            script,
            ..Server::default()
        })),
        crashed.clone(),
    );
    let mut crashes = crashes.into_iter();
    loop {
        let budget = crashes.next();
        {
            let mut s = model.server();
            s.calls_left = budget;
            s.crashed = false;
        }
        let (attempted, confirmed) = {
            let s = model.server();
            (s.attempted, s.confirmed)
        };
        // A writer as after a restart: from the stored marks.
        let mut writer = ExactlyOnce::new(
            model.clone(),
            model.clone(),
            attempted,
            Duration::from_secs(1),
        );
        let (_trigger, shutdown) = crate::shutdown::channel();
        let mut retry = Retry::new(
            shutdown,
            Arc::new(Notify::new()),
            Arc::new(WriterHealth::new(Duration::from_secs(3600))),
        );
        let deliver = async {
            let mut next = confirmed as usize;
            while next < n {
                let end = (next + batch).min(n);
                writer
                    .land(
                        next as u64 + 1,
                        end as u64,
                        rows(&ids, next, end),
                        &mut retry,
                    )
                    .await
                    .expect("no shutdown in the model");
                // A crash between landing and confirming.
                model.step().await;
                model.server().confirmed = end as u64;
                next = end;
            }
        };
        tokio::select! {
            _ = deliver => break,
            _ = crashed.notified() => {}
        }
    }
    // Let every insert still running end, as the server would.
    let mut s = Arc::try_unwrap(model.0)
        .map_err(|_| "the model is still shared")
        .unwrap()
        .into_inner()
        .unwrap();
    let running = std::mem::take(&mut s.running);
    for r in running {
        if r.lands {
            s.land(r.ids);
        }
    }
    for id in &ids {
        assert_eq!(
            s.landed.get(id).copied(),
            Some(1),
            "{id} lands exactly once"
        );
    }
    s
}

proptest! {
    #![proptest_config(Config { cases: 200, ..Config::default() })]

    #[test]
    fn every_record_lands_exactly_once_through_crashes_and_late_inserts(
        n in 1usize..40,
        batch in 1usize..12,
        crashes in proptest::collection::vec(0usize..30, 0..6),
        script in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let server = runtime.block_on(run(n, batch, crashes, script));
        prop_assert!(!server.presence_while_running, "asked what landed while an insert ran");
    }
}
