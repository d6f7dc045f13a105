//! Step: drop redeliveries (CONTRACT §8). A delivery whose `(pipeline, delivery id)` already
//! landed in `events` in the 7 days before it arrived goes to `rejected` as
//! `DUPLICATE_DELIVERY`; so does a second one of the same batch.
//!
//! `events` is the record of what landed, so this holds across restarts and across gateways
//! that share the ClickHouse: a sender that redelivers to another gateway an hour later is
//! caught there. Why it stays exactly once with the step after it:
//!
//! - A row that landed before a crash and comes round again finds *itself* in `events`: a hit
//!   with its own request id is not a redelivery, so the row keeps its place, and the next step
//!   sees it present and sends nothing.
//! - Within a batch, the first record (in log order) of a delivery wins, on every attempt.
//! - A request never lands in both tables: the next step skips whatever request id either table
//!   already holds, whichever table this step now picks.
//!
//! Not closed: two gateways that receive the same delivery within the same moment (before
//! either has landed it) both land it, since ClickHouse has no compare-and-set to decide
//! between them. Senders redeliver after a timeout or by hand, long after the first landed;
//! the README states the limit.

use std::collections::{HashMap, HashSet};

use super::retry::{Retry, Stopped};
use crate::clickhouse::rows::{DeliveryRow, Landing};
use crate::clickhouse::{ChError, Delivery};
use crate::credentials::Reason;

/// How far back a delivery id counts as already landed.
pub const WINDOW_SECS: u32 = 7 * 24 * 3600;
/// Delivery ids longer than this are kept in the row but not compared: no sender's ids come
/// near it, and the queries that ask for them stay small.
pub const MAX_DELIVERY_ID_LEN: usize = 1024;

/// Where landed deliveries are looked up.
#[allow(async_fn_in_trait)]
pub trait LandedDeliveries {
    /// The rows of `events` at or after `since` holding any of `asked`.
    async fn landed(&self, asked: &[(u64, &str)], since: u32) -> Result<Vec<DeliveryRow>, ChError>;
}

impl LandedDeliveries for Delivery {
    async fn landed(&self, asked: &[(u64, &str)], since: u32) -> Result<Vec<DeliveryRow>, ChError> {
        self.redeliveries(asked, since).await
    }
}

/// Marks the redeliveries among `rows` bound for `events`.
pub async fn drop_redeliveries(
    landed: &impl LandedDeliveries,
    rows: &mut [Landing<'_>],
    retry: &mut Retry,
) -> Result<(), Stopped> {
    let candidates: Vec<usize> = (0..rows.len()).filter(|&i| checked(&rows[i])).collect();
    let Some(since) = candidates
        .iter()
        .map(|&i| rows[i].received_at.saturating_sub(WINDOW_SECS))
        .min()
    else {
        return Ok(());
    };
    let asked: Vec<(u64, &str)> = candidates
        .iter()
        .map(|&i| (rows[i].pipeline_id, rows[i].delivery_id.as_str()))
        .collect();
    let mut backoff = Retry::backoff();
    let found = loop {
        match landed.landed(&asked, since).await {
            Ok(found) => break found,
            Err(error) => retry.pause("redeliveries", &error, &mut backoff).await?,
        }
    };
    let verdicts = decide(rows, &candidates, &found);
    for i in verdicts {
        rows[i].reason = Some(Reason::DuplicateDelivery.as_str());
    }
    Ok(())
}

/// Whether a row takes part: bound for `events`, with a delivery id the check can ask for.
fn checked(row: &Landing<'_>) -> bool {
    row.reason.is_none()
        && !row.delivery_id.is_empty()
        && row.delivery_id.len() <= MAX_DELIVERY_ID_LEN
}

/// The indexes of `candidates` that are redeliveries, given what `events` holds.
fn decide(rows: &[Landing<'_>], candidates: &[usize], found: &[DeliveryRow]) -> Vec<usize> {
    let mut landed: HashMap<(u64, &str), Vec<(&str, u32)>> = HashMap::new();
    for row in found {
        landed
            .entry((row.pipeline_id, row.delivery_id.as_str()))
            .or_default()
            .push((row.__kdd_request_id.as_str(), row.received_at));
    }
    let mut seen: HashSet<(u64, &str)> = HashSet::new();
    let mut duplicates = Vec::new();
    for &i in candidates {
        let row = &rows[i];
        let delivery = (row.pipeline_id, row.delivery_id.as_str());
        let since = row.received_at.saturating_sub(WINDOW_SECS);
        let landed_before = landed.get(&delivery).is_some_and(|hits| {
            hits.iter()
                .any(|(request, at)| *request != row.request_id && *at >= since)
        });
        if landed_before || !seen.insert(delivery) {
            duplicates.push(i);
        }
    }
    duplicates
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// What the step asked: the deliveries and the time bound.
    type Asked = (Vec<(u64, String)>, u32);

    struct Landed(Vec<DeliveryRow>, RefCell<Vec<Asked>>);

    impl LandedDeliveries for Landed {
        async fn landed(
            &self,
            asked: &[(u64, &str)],
            since: u32,
        ) -> Result<Vec<DeliveryRow>, ChError> {
            let asked = asked.iter().map(|(p, d)| (*p, d.to_string())).collect();
            self.1.borrow_mut().push((asked, since));
            Ok(self
                .0
                .iter()
                .map(|r| DeliveryRow {
                    pipeline_id: r.pipeline_id,
                    delivery_id: r.delivery_id.clone(),
                    __kdd_request_id: r.__kdd_request_id.clone(),
                    received_at: r.received_at,
                })
                .collect())
        }
    }

    fn row<'a>(id: &'a str, pipeline: u64, delivery: &str, at: u32) -> Landing<'a> {
        let mut row = Landing::new(pipeline, id, f64::from(at), String::new(), "{}".into());
        row.delivery_id = delivery.into();
        row
    }

    fn hit(id: &str, pipeline: u64, delivery: &str, at: u32) -> DeliveryRow {
        DeliveryRow {
            pipeline_id: pipeline,
            delivery_id: delivery.into(),
            __kdd_request_id: id.into(),
            received_at: at,
        }
    }

    async fn run(rows: &mut [Landing<'_>], landed: &Landed) {
        let mut retry = Retry::detached();
        drop_redeliveries(landed, rows, &mut retry)
            .await
            .expect("never stopped");
    }

    fn reasons(rows: &[Landing<'_>]) -> Vec<Option<&'static str>> {
        rows.iter().map(|r| r.reason).collect()
    }

    const DUP: Option<&str> = Some("DUPLICATE_DELIVERY");
    const T: u32 = 1_800_000_000;

    #[tokio::test]
    async fn a_delivery_landed_by_another_request_in_the_window_is_a_redelivery() {
        let landed = Landed(
            vec![
                hit("first", 1, "d1", T - 100),
                hit("old", 1, "d2", T - WINDOW_SECS - 1),
                hit("other-pipeline", 2, "d3", T - 100),
            ],
            RefCell::default(),
        );
        let mut rows = vec![
            row("a", 1, "d1", T),
            row("b", 1, "d2", T),
            row("c", 1, "d3", T),
        ];
        run(&mut rows, &landed).await;
        assert_eq!(reasons(&rows), vec![DUP, None, None]);
        let asked = landed.1.borrow();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].1, T - WINDOW_SECS);
    }

    #[tokio::test]
    async fn a_row_that_finds_itself_keeps_its_place_and_the_first_of_a_batch_wins() {
        let landed = Landed(vec![hit("a", 1, "d1", T)], RefCell::default());
        let mut rows = vec![
            row("a", 1, "d1", T),
            row("b", 1, "d1", T),
            row("c", 1, "d9", T),
            row("d", 1, "d9", T),
            row("e", 2, "d9", T),
        ];
        run(&mut rows, &landed).await;
        assert_eq!(reasons(&rows), vec![None, DUP, None, DUP, None]);
    }

    #[tokio::test]
    async fn rows_already_rejected_without_an_id_or_with_a_huge_one_are_not_asked_about() {
        let landed = Landed(vec![], RefCell::default());
        let mut rows = vec![
            row("a", 1, "", T),
            row("b", 1, &"x".repeat(MAX_DELIVERY_ID_LEN + 1), T),
        ];
        rows.push(Landing {
            reason: Some("WRONG_TOKEN"),
            ..row("c", 1, "d1", T)
        });
        run(&mut rows, &landed).await;
        assert_eq!(reasons(&rows), vec![None, None, Some("WRONG_TOKEN")]);
        assert!(landed.1.borrow().is_empty(), "nothing to ask");
    }
}
