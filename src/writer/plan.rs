//! The plan of an attempt: what each record of a batch was decided to be (`events`, or
//! `rejected` with its reason; its event type and delivery id) and which inserts carry which
//! rows, in which order. Kept durably in the data folder before the batch is first sent.
//!
//! Where ClickHouse deduplicates inserts (replicated tables, see [`super::exactly_once`]), a
//! retry is safe only if it is the very same block as the attempt it repeats: a subset of the
//! rows, another order, or a row that moved from `events` to `rejected` because its token was
//! revoked meanwhile is a new block, and lands again. The plan is what lets a retry, in this
//! process or after a crash, send exactly what the first attempt sent.
//!
//! Rows are named by their place in the batch: a batch is the log's records from one `seq` to
//! another, in order, and the writer's steps keep one row per record in that order. A plan is
//! only used for the batch with the same first and last `seq` and the same number of rows.

use serde::{Deserialize, Serialize};

use crate::clickhouse::rows::Landing;
use crate::credentials::Reason;

/// The attempt of the records `first_seq..=last_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub first_seq: u64,
    pub last_seq: u64,
    /// One per row of the batch, in order.
    decisions: Vec<Decision>,
    /// The inserts, in the order they are sent: each the places of its rows, all bound for one
    /// table, so that one insert is one block of one table.
    parts: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Decision {
    /// `None`: `events`.
    reason: Option<String>,
    event_type: String,
    delivery_id: String,
}

impl Plan {
    /// The plan of a first attempt: the rows as the writer's steps decided them, those bound for
    /// `events` in one insert and those for `rejected` in another, each in log order.
    pub fn new(first_seq: u64, last_seq: u64, rows: &[Landing<'_>]) -> Plan {
        let decisions = rows
            .iter()
            .map(|r| Decision {
                reason: r.reason.map(str::to_string),
                event_type: r.event_type.clone(),
                delivery_id: r.delivery_id.clone(),
            })
            .collect();
        let places = |events: bool| -> Vec<u32> {
            (0..rows.len() as u32)
                .filter(|&i| rows[i as usize].reason.is_none() == events)
                .collect()
        };
        let parts = [places(true), places(false)]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        Plan {
            first_seq,
            last_seq,
            decisions,
            parts,
        }
    }

    /// Whether this plan is the one of the batch `first_seq..=last_seq` of `rows` rows.
    pub fn fits(&self, first_seq: u64, last_seq: u64, rows: usize) -> bool {
        self.first_seq == first_seq
            && self.last_seq == last_seq
            && self.decisions.len() == rows
            && self.parts.iter().flatten().all(|&i| (i as usize) < rows)
    }

    /// Gives `rows` the decisions of the first attempt. False, changing nothing, if the plan
    /// names a reason this build does not know.
    pub fn apply(&self, rows: &mut [Landing<'_>]) -> bool {
        let mut reasons = Vec::with_capacity(self.decisions.len());
        for decision in &self.decisions {
            match &decision.reason {
                None => reasons.push(None),
                Some(text) => match Reason::ALL.iter().find(|r| r.as_str() == text) {
                    Some(reason) => reasons.push(Some(reason.as_str())),
                    None => return false,
                },
            }
        }
        for ((row, decision), reason) in rows.iter_mut().zip(&self.decisions).zip(reasons) {
            row.reason = reason;
            row.event_type.clone_from(&decision.event_type);
            row.delivery_id.clone_from(&decision.delivery_id);
        }
        true
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// The rows of insert `part`, in the order they are sent.
    pub fn rows<'a>(&self, part: usize, rows: &[Landing<'a>]) -> Vec<Landing<'a>> {
        self.parts[part]
            .iter()
            .map(|&i| rows[i as usize].clone())
            .collect()
    }

    /// Insert `part` becomes two, its first half then its second (to find rows ClickHouse
    /// refuses for good).
    pub fn split(&mut self, part: usize) {
        let mut left = std::mem::take(&mut self.parts[part]);
        let right = left.split_off(left.len() / 2);
        self.parts.splice(part..=part, [left, right]);
    }

    /// Insert `part`, a single row, goes to `rejected` with `reason` instead.
    pub fn reject(&mut self, part: usize, reason: Reason, rows: &mut [Landing<'_>]) {
        for &i in &self.parts[part] {
            self.decisions[i as usize].reason = Some(reason.as_str().to_string());
            rows[i as usize].reason = Some(reason.as_str());
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a plan is plain data")
    }

    /// `None` for bytes that are not a plan (damaged, or written by another version).
    pub fn decode(bytes: &[u8]) -> Option<Plan> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn rows(reasons: &[Option<&'static str>]) -> Vec<Landing<'static>> {
        const IDS: [&str; 4] = ["a", "b", "c", "d"];
        reasons
            .iter()
            .enumerate()
            .map(|(i, reason)| {
                let mut row = Landing::new(1, IDS[i], 1.0, "k".into(), Cow::Borrowed("{}"));
                row.reason = *reason;
                row.delivery_id = format!("d{i}");
                row
            })
            .collect()
    }

    fn ids(rows: &[Landing<'_>]) -> Vec<String> {
        rows.iter().map(|r| r.request_id.to_string()).collect()
    }

    #[test]
    fn a_retry_after_a_restart_sends_what_the_first_attempt_decided() {
        let revoked = Some(Reason::RevokedKey.as_str());
        let first = rows(&[None, revoked, None, None]);
        let plan = Plan::new(10, 13, &first);
        assert_eq!(plan.parts(), 2);
        assert_eq!(ids(&plan.rows(0, &first)), ["a", "c", "d"]);
        assert_eq!(ids(&plan.rows(1, &first)), ["b"]);

        let stored = Plan::decode(&plan.encode()).expect("a plan reads back");
        assert_eq!(stored, plan);
        assert!(stored.fits(10, 13, 4));
        assert!(!stored.fits(10, 14, 4) && !stored.fits(11, 13, 4) && !stored.fits(10, 13, 3));
        // After the restart the key of "c" is revoked too, and "b"'s delivery id is read anew:
        // the first attempt's decisions win.
        let mut again = rows(&[None, revoked, revoked, None]);
        again[1].delivery_id = "other".into();
        assert!(stored.apply(&mut again));
        assert_eq!(again[2].reason, None);
        assert_eq!(again[1].delivery_id, "d1");
        assert_eq!(ids(&stored.rows(0, &again)), ["a", "c", "d"]);
        assert!(Plan::decode(b"{\"first_seq\":1").is_none());
    }

    #[test]
    fn splitting_and_rejecting_change_the_plan_in_place() {
        let mut batch = rows(&[None, None, None, Some(Reason::UnknownKey.as_str())]);
        let mut plan = Plan::new(1, 4, &batch);
        plan.split(0);
        assert_eq!(plan.parts(), 3);
        assert_eq!(ids(&plan.rows(0, &batch)), ["a"]);
        assert_eq!(ids(&plan.rows(1, &batch)), ["b", "c"]);
        plan.reject(0, Reason::InsertFailed, &mut batch);
        assert_eq!(batch[0].reason, Some("INSERT_FAILED"));
        let mut fresh = rows(&[None, None, None, None]);
        assert!(plan.apply(&mut fresh));
        assert_eq!(fresh[0].reason, Some("INSERT_FAILED"));
        assert_eq!(fresh[3].reason, Some("UNKNOWN_KEY"));
    }
}
