//! The exactly-once step where the tables deduplicate inserts (replicated tables on a cluster,
//! ClickHouse Cloud), against a model of a replicated ClickHouse, with the writer crashing at
//! every step.
//!
//! The model keeps, as ZooKeeper does, the id of every block it committed (its table and its
//! rows in order) and drops a block it already has. An insert lands, fails having landed
//! nothing, lands and then fails (the answer lost), or times out and lands some calls later, or
//! never. The replica the writer asks shows each committed block only once it has "fetched" it,
//! which may be much later (a lagging replica, or one whose source is down): a presence answer
//! is true but may be incomplete. A restarted writer goes on from what its disk stored (the
//! marks and the plan), and the records' decisions change at every restart, as a token revoked
//! meanwhile would make them. At the end every record is in exactly one table, once.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use tokio::sync::Notify;

use super::exactly_once::{Destination, ExactlyOnce, LocalDisk};
use super::plan::Plan;
use super::retry::Retry;
use super::supervisor::WriterHealth;
use crate::clickhouse::rows::Landing;
use crate::clickhouse::ChError;

/// A block: `true` for `rejected`, and its request ids in order.
type Block = (bool, Vec<String>);

/// An insert the client gave up on, still running in some node.
struct Late {
    block: Block,
    calls_left: u8,
    lands: bool,
}

#[derive(Default)]
struct Cluster {
    /// How often each request id landed, in `events` and in `rejected`.
    events: HashMap<String, u32>,
    rejected: HashMap<String, u32>,
    /// Ids of committed blocks, as ZooKeeper remembers them.
    blocks: HashSet<Block>,
    /// Committed blocks the replica the writer asks has fetched.
    fetched: HashSet<Block>,
    late: Vec<Late>,
    script: Vec<u8>,
    at: usize,
    calls_left: Option<usize>,
    /// Durable state of the writer's disk.
    attempted: u64,
    confirmed: u64,
    plan: Option<Plan>,
}

impl Cluster {
    fn choice(&mut self, n: u8) -> u8 {
        let c = self.script.get(self.at).copied().unwrap_or(0) % n;
        self.at += 1;
        c
    }

    fn commit(&mut self, block: Block) {
        if self.blocks.contains(&block) {
            return;
        }
        let table = if block.0 {
            &mut self.rejected
        } else {
            &mut self.events
        };
        for id in &block.1 {
            *table.entry(id.clone()).or_default() += 1;
        }
        if self.choice(2) == 0 {
            self.fetched.insert(block.clone());
        }
        self.blocks.insert(block);
    }

    /// Time passes: late inserts come closer to their end, the replica fetches a block.
    fn tick(&mut self) {
        let mut ended = Vec::new();
        self.late.retain_mut(|late| {
            if late.calls_left == 0 {
                ended.push((late.block.clone(), late.lands));
                false
            } else {
                late.calls_left -= 1;
                true
            }
        });
        for (block, lands) in ended {
            if lands {
                self.commit(block);
            }
        }
        if self.choice(4) == 0 {
            let unfetched = self.blocks.difference(&self.fetched).next().cloned();
            if let Some(block) = unfetched {
                self.fetched.insert(block);
            }
        }
    }

    fn crash_here(&mut self) -> bool {
        match &mut self.calls_left {
            Some(0) => true,
            Some(left) => {
                *left -= 1;
                false
            }
            None => false,
        }
    }
}

#[derive(Clone)]
struct Model(Arc<Mutex<Cluster>>, Arc<Notify>);

impl Model {
    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.0.lock().unwrap()
    }

    async fn step(&self) {
        let crashed = {
            let mut c = self.cluster();
            c.tick();
            c.crash_here()
        };
        if crashed {
            self.1.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

fn retryable() -> ChError {
    ChError(clickhouse::error::Error::BadResponse(
        "Code: 999. DB::Exception: Coordination::Exception: Connection loss".into(),
    ))
}

impl Destination for Model {
    async fn insert(&self, rows: &[Landing<'_>], _timeout: Duration) -> Result<(), ChError> {
        self.step().await;
        let mut c = self.cluster();
        // As `Delivery::insert`: `events` first, then `rejected`, one block each.
        for rejected in [false, true] {
            let ids: Vec<String> = rows
                .iter()
                .filter(|r| r.reason.is_some() == rejected)
                .map(|r| r.request_id.to_string())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let block = (rejected, ids);
            match c.choice(5) {
                0 | 1 => c.commit(block),
                2 => return Err(retryable()),
                3 => {
                    let calls_left = c.choice(8);
                    let lands = c.choice(3) != 0;
                    c.late.push(Late {
                        block,
                        calls_left,
                        lands,
                    });
                    return Err(ChError(clickhouse::error::Error::TimedOut));
                }
                _ => {
                    c.commit(block);
                    return Err(retryable());
                }
            }
        }
        Ok(())
    }

    async fn running_inserts(&self) -> Result<u64, ChError> {
        unreachable!("identical retries do not settle")
    }

    async fn stop_running_inserts(&self) -> Result<(), ChError> {
        unreachable!("identical retries do not settle")
    }

    async fn present(&self, rows: &[Landing<'_>]) -> Result<HashSet<String>, ChError> {
        self.step().await;
        let mut c = self.cluster();
        if c.choice(6) == 5 {
            return Err(retryable());
        }
        let shown: HashSet<&String> = c.fetched.iter().flat_map(|(_, ids)| ids).collect();
        Ok(rows
            .iter()
            .map(|r| r.request_id.to_string())
            .filter(|id| shown.contains(id))
            .collect())
    }

    async fn drift(&self) -> Result<Option<String>, ChError> {
        unreachable!("the model refuses no insert for good")
    }
}

impl LocalDisk for Model {
    async fn mark_attempted(&mut self, seq: u64) -> io::Result<()> {
        let before = self.cluster().choice(2) == 0;
        if before {
            self.step().await;
        }
        self.cluster().attempted = seq;
        if !before {
            self.step().await;
        }
        Ok(())
    }

    async fn set_aside(&self, _row: &Landing<'_>, _error: &str) -> io::Result<()> {
        unreachable!("the model refuses no row for good")
    }

    async fn store_plan(&mut self, plan: &Plan) -> io::Result<()> {
        let before = self.cluster().choice(2) == 0;
        if before {
            self.step().await;
        }
        self.cluster().plan = Some(plan.clone());
        if !before {
            self.step().await;
        }
        Ok(())
    }
}

/// Records `from..to`, decided as the credentials of run `generation` decide them: which are
/// refused changes from one run to the next.
fn rows(ids: &[String], from: usize, to: usize, generation: usize) -> Vec<Landing<'_>> {
    (from..to)
        .map(|i| Landing {
            reason: (i + generation).is_multiple_of(3).then_some("REVOKED_KEY"),
            ..Landing::new(1, &ids[i], 0.0, String::new(), "{}".into())
        })
        .collect()
}

/// Delivers records `1..=n` in batches of at most `batch`, crashing after each budget in
/// `crashes`; each restart goes on from the stored marks and plan, as `Writer` does.
async fn run(n: usize, batch: usize, crashes: Vec<usize>, script: Vec<u8>) -> Cluster {
    let ids: Vec<String> = (0..n).map(|i| format!("request{i:013}")).collect();
    let crashed = Arc::new(Notify::new());
    let model = Model(
        Arc::new(Mutex::new(Cluster {
            script,
            ..Cluster::default()
        })),
        crashed.clone(),
    );
    let mut crashes = crashes.into_iter();
    for generation in 0.. {
        let budget = crashes.next();
        let (attempted, confirmed, plan) = {
            let mut c = model.cluster();
            c.calls_left = budget;
            (c.attempted, c.confirmed, c.plan.clone())
        };
        let mut writer = ExactlyOnce::new(
            model.clone(),
            model.clone(),
            attempted,
            Duration::from_secs(1),
        );
        writer.retry_identically((attempted > confirmed).then_some(plan).flatten());
        let (_trigger, shutdown) = crate::shutdown::channel();
        let mut retry = Retry::new(
            shutdown,
            Arc::new(Notify::new()),
            Arc::new(WriterHealth::new(Duration::from_secs(3600))),
        );
        let deliver = async {
            let mut next = confirmed as usize;
            // The first batch after a restart is the range attempted, as `Batches` makes it.
            let mut through = (attempted > confirmed).then_some(attempted as usize);
            while next < n {
                let end = through.take().unwrap_or((next + batch).min(n));
                writer
                    .land(
                        next as u64 + 1,
                        end as u64,
                        rows(&ids, next, end, generation),
                        &mut retry,
                    )
                    .await
                    .expect("no shutdown in the model");
                model.step().await;
                model.cluster().confirmed = end as u64;
                next = end;
            }
        };
        tokio::select! {
            _ = deliver => break,
            _ = crashed.notified() => {}
        }
    }
    let mut c = Arc::try_unwrap(model.0)
        .map_err(|_| "the model is still shared")
        .unwrap()
        .into_inner()
        .unwrap();
    for late in std::mem::take(&mut c.late) {
        if late.lands {
            c.commit(late.block);
        }
    }
    for id in &ids {
        let (events, rejected) = (
            c.events.get(id).copied().unwrap_or(0),
            c.rejected.get(id).copied().unwrap_or(0),
        );
        assert_eq!(
            (events + rejected, events.min(rejected)),
            (1, 0),
            "{id} lands once, in one table"
        );
    }
    c
}

proptest! {
    #![proptest_config(Config { cases: 300, ..Config::default() })]

    #[test]
    fn every_record_lands_once_through_crashes_lagging_replicas_and_changed_decisions(
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
        runtime.block_on(run(n, batch, crashes, script));
    }
}
