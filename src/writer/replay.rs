//! `hookhouse rejected replay` (CONTRACT §8): rejected requests checked again with today's
//! credentials, secrets and filters, and those that now pass moved into `events`, each exactly
//! once however often the command runs. Rows rejected as `INSERT_FAILED` are tried only with
//! `--reason INSERT_FAILED`: ClickHouse may refuse them again, which stops that replay.
//!
//! The rows go through the writer's own steps (credentials, [`super::verify`],
//! [`super::filter`], [`super::redeliveries`]), so a replayed request passes exactly when a new
//! one would. Tokens are not checked again: only the key is kept in `rejected`, a key's token
//! never changes, and a row rejected for a reason checked after the token (every reason but
//! `UNKNOWN_KEY`, `WRONG_TOKEN` and `REVOKED_KEY`) had the right one. Those three never pass.
//!
//! Exactly once, as the writer does it: the replay's inserts carry a query id of their own
//! (per pipeline); before asking `events` what it holds, the replay waits until none of them is
//! running (one left by a replay that was killed may still land). Then it inserts only the
//! passing rows `events` does not hold yet, and deletes all passing rows from `rejected`. Run
//! again, the same rows are found in `events` and nothing is inserted twice. Two replays of one
//! pipeline must not run at the same moment.

use std::collections::BTreeMap;
use std::time::Duration;

use super::filter::name_and_filter;
use super::redeliveries::drop_redeliveries;
use super::retry::Retry;
use super::verify::verify_signatures;
use crate::clickhouse::rows::{Landing, RejectedReadRow};
use crate::clickhouse::{store, Clickhouse, Delivery};
use crate::credentials::{CredentialCache, Reason};
use crate::ingest::{Key, RequestId};

/// Rows read and checked at a time.
const PAGE: usize = 5000;
/// How long one insert into `events` may take.
const INSERT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the replay waits for an insert of a replay before it to finish.
const SETTLE_FOR: Duration = Duration::from_secs(600);

/// How long a step retries a failing ClickHouse before the command gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Reasons whose requests can never pass (see the module docs).
const NEVER_PASS: [Reason; 3] = [Reason::UnknownKey, Reason::WrongToken, Reason::RevokedKey];

/// Which rows to check again.
#[derive(Debug, Clone)]
pub struct ReplayScope {
    pub pipeline: u64,
    /// Only rows rejected for this reason (as stored, e.g. `INVALID_SIGNATURE`).
    pub reason: Option<String>,
    /// Only rows received at or after this Unix time.
    pub since: u32,
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayOutcome {
    /// Rows of `rejected` checked.
    pub checked: u64,
    /// Rows inserted into `events` now.
    pub moved: u64,
    /// Rows that passed and that `events` already held (a replay before this one).
    pub already_in_events: u64,
    /// Rows that still fail, by the reason they fail now.
    pub still_rejected: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("ClickHouse: {0}")]
    Clickhouse(#[from] crate::clickhouse::ChError),
    #[error(
        "an insert of an earlier replay of pipeline {0} is still running in ClickHouse after {1:?}; try again later"
    )]
    Unsettled(u64, Duration),
    #[error("ClickHouse kept failing for {0:?}; nothing more was moved (run it again later)")]
    GaveUp(Duration),
}

/// The reasons hookhouse writes to `rejected`, for checking `--reason`.
pub fn known_reasons() -> Vec<&'static str> {
    Reason::ALL.iter().map(|r| r.as_str()).collect()
}

pub async fn replay(
    ch: &Clickhouse,
    view: &CredentialCache,
    scope: &ReplayScope,
) -> Result<ReplayOutcome, ReplayError> {
    let delivery = Delivery::new(ch.clone(), format!("replay{}", scope.pipeline));
    settle(&delivery, scope.pipeline).await?;
    let mut outcome = ReplayOutcome::default();
    let mut after = String::new();
    loop {
        let page = store::rejected_page(
            ch,
            scope.pipeline,
            scope.reason.as_deref(),
            scope.since,
            &after,
            PAGE,
        )
        .await?;
        let Some(last) = page.last() else { break };
        after = last.__kdd_request_id.clone();
        // A row ClickHouse refused for good may be refused again and stop the replay there:
        // tried only when asked for by name.
        let insert_failed_too = scope.reason.as_deref() == Some(Reason::InsertFailed.as_str());
        replay_page(ch, &delivery, view, &page, insert_failed_too, &mut outcome).await?;
    }
    Ok(outcome)
}

async fn replay_page(
    ch: &Clickhouse,
    delivery: &Delivery,
    view: &CredentialCache,
    page: &[RejectedReadRow],
    insert_failed_too: bool,
    outcome: &mut ReplayOutcome,
) -> Result<(), ReplayError> {
    outcome.checked += page.len() as u64;
    let mut rows: Vec<Landing<'_>> = page
        .iter()
        .map(|stored| {
            let mut row = landing(stored);
            row.reason = check_again(view, stored).err();
            if !insert_failed_too && stored.reason == Reason::InsertFailed.as_str() {
                row.reason = Some(Reason::InsertFailed.as_str());
            }
            row
        })
        .collect();
    let headers = verify_signatures(view, &mut rows);
    name_and_filter(view, &mut rows, &headers);
    let mut retry = Retry::for_command(GIVE_UP_AFTER);
    drop_redeliveries(delivery, &mut rows, &mut retry)
        .await
        .map_err(|_| ReplayError::GaveUp(GIVE_UP_AFTER))?;
    for row in rows.iter().filter(|r| r.reason.is_some()) {
        let reason = row.reason.unwrap_or_default().to_string();
        *outcome.still_rejected.entry(reason).or_default() += 1;
    }
    let pipeline = page[0].pipeline_id;
    // The whole page is asked about, whatever today's verdicts: a row moved by a replay that
    // stopped before its delete is in `events` already, and leaves `rejected` now even if it
    // would not pass today.
    let all: Vec<&str> = rows.iter().map(|r| r.request_id).collect();
    let held = store::in_events(ch, pipeline, &all).await?;
    for row in rows
        .iter()
        .filter(|r| r.reason.is_some() && held.contains(r.request_id))
    {
        let reason = row.reason.unwrap_or_default().to_string();
        if let Some(count) = outcome.still_rejected.get_mut(&reason) {
            *count -= 1;
        }
    }
    outcome.still_rejected.retain(|_, count| *count > 0);
    outcome.already_in_events += held.len() as u64;
    let missing: Vec<Landing<'_>> = rows
        .iter()
        .filter(|r| r.reason.is_none() && !held.contains(r.request_id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        if let Err(error) = delivery.insert(&missing, INSERT_TIMEOUT).await {
            // It may still land: wait until it is settled, so a replay run next finds it.
            settle(delivery, pipeline).await?;
            return Err(error.into());
        }
        outcome.moved += missing.len() as u64;
    }
    let moved: Vec<&str> = missing
        .iter()
        .map(|r| r.request_id)
        .chain(held.iter().map(String::as_str))
        .collect();
    if !moved.is_empty() {
        store::delete_rejected(ch, pipeline, &moved).await?;
    }
    Ok(())
}

/// Why a stored row fails the credential checks now; `Ok` when it passes them.
fn check_again(view: &CredentialCache, stored: &RejectedReadRow) -> Result<(), &'static str> {
    if let Some(never) = NEVER_PASS.iter().find(|r| r.as_str() == stored.reason) {
        return Err(never.as_str());
    }
    let key = Key::parse(&stored.__kdd_requester_key).ok_or(Reason::UnknownKey.as_str())?;
    view.check_again(&key, stored.pipeline_id)
        .map_err(Reason::as_str)
}

/// A stored row as the writer's steps take it.
fn landing(stored: &RejectedReadRow) -> Landing<'_> {
    let mut row = Landing::new(
        stored.pipeline_id,
        &stored.__kdd_request_id,
        stored.__kdd_request_unix_timestamp,
        stored.__kdd_requester_key.clone(),
        stored.__kdd_request_body.as_str().into(),
    );
    row.headers = &stored.headers;
    row.body_as_sent = &stored.body_as_sent;
    debug_assert!(RequestId::from_bytes(stored.__kdd_request_id.as_bytes()).is_some());
    row
}

/// Waits until no insert of a replay of this pipeline is running.
async fn settle(delivery: &Delivery, pipeline: u64) -> Result<(), ReplayError> {
    let started = std::time::Instant::now();
    loop {
        if delivery.running_inserts().await? == 0 {
            return Ok(());
        }
        if started.elapsed() > SETTLE_FOR {
            return Err(ReplayError::Unsettled(pipeline, SETTLE_FOR));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
