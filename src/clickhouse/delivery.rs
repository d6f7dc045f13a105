//! What the batch writer sends to ClickHouse, and nothing else: a batch's rows into `events` and
//! `rejected`, which of its request ids are already there, whether this gateway's inserts are
//! still running (and stopping them), and whether the tables still take what hookhouse writes.
//!
//! Every insert is synchronous (see [`super::ServerFeatures`]) and carries a query id that
//! starts with this gateway's instance id, which is how the writer finds its own inserts in
//! `system.processes` after a crash or a timeout.

use std::collections::HashSet;
use std::time::Duration;

use super::client::{ChError, Clickhouse};
use super::rows::{ColumnRow, DeliveryRow, EventRow, Landing, RejectedRow, RequestIdRow};
use super::rows::{EVENT_COLUMNS, REJECTED_COLUMNS};
use super::sql::{self, Sought, PRESENCE_CHUNK};

/// The writer's connection to ClickHouse, named by the gateway's instance id.
#[derive(Clone)]
pub struct Delivery {
    ch: Clickhouse,
    instance_id: String,
}

impl Delivery {
    pub fn new(ch: Clickhouse, instance_id: String) -> Delivery {
        Delivery { ch, instance_id }
    }

    pub fn clickhouse(&self) -> &Clickhouse {
        &self.ch
    }

    fn query_id(&self, table: &str) -> String {
        format!(
            "{}{table}-{}",
            sql::insert_query_prefix(&self.instance_id),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// Inserts `rows` as (at most) two inserts: those without a reason into `events`, then the
    /// others into `rejected`, each acknowledged within `timeout`. A failure may leave the first
    /// landed and not the second.
    pub async fn insert(&self, rows: &[Landing<'_>], timeout: Duration) -> Result<(), ChError> {
        let node = self.ch.node();
        let result = self.insert_both(rows, timeout).await;
        if let Err(error) = &result {
            self.ch.failed(node, error);
        }
        result
    }

    async fn insert_both(&self, rows: &[Landing<'_>], timeout: Duration) -> Result<(), ChError> {
        if rows.iter().any(|r| r.reason.is_none()) {
            let mut insert = self
                .ch
                .insert::<EventRow<'static>>(
                    &self.ch.table("events"),
                    Some(self.query_id("events")),
                    timeout,
                )
                .await?;
            for row in rows.iter().filter(|r| r.reason.is_none()) {
                insert.write(&row.event_row()).await?;
            }
            insert.end().await?;
        }
        if rows.iter().any(|r| r.reason.is_some()) {
            let mut insert = self
                .ch
                .insert::<RejectedRow<'static>>(
                    &self.ch.table("rejected"),
                    Some(self.query_id("rejected")),
                    timeout,
                )
                .await?;
            for row in rows {
                if let Some(reason) = row.reason {
                    insert.write(&row.rejected_row(reason)).await?;
                }
            }
            insert.end().await?;
        }
        Ok(())
    }

    /// The request ids of `rows` that are in `events` or `rejected`, asked in chunks.
    pub async fn present(&self, rows: &[Landing<'_>]) -> Result<HashSet<String>, ChError> {
        let (events, rejected) = (self.ch.table("events"), self.ch.table("rejected"));
        let mut present = HashSet::new();
        for chunk in rows.chunks(PRESENCE_CHUNK) {
            let sought: Vec<Sought> = chunk
                .iter()
                .map(|r| Sought {
                    request_id: r.request_id,
                    pipeline_id: r.pipeline_id,
                    received_at: r.received_at,
                })
                .collect();
            let found = self
                .ch
                .fetch_all::<RequestIdRow>(&sql::presence(&events, &rejected, &sought))
                .await?;
            present.extend(found.into_iter().map(|r| r.__kdd_request_id));
        }
        Ok(present)
    }

    /// Which of the deliveries `asked` (pipeline, delivery id) are already in `events` at or
    /// after `since`, with the requests that landed them; asked in chunks of bounded size.
    pub async fn redeliveries(
        &self,
        asked: &[(u64, &str)],
        since: u32,
    ) -> Result<Vec<DeliveryRow>, ChError> {
        let events = self.ch.table("events");
        let mut found = Vec::new();
        let mut start = 0;
        while start < asked.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < asked.len()
                && (end == start
                    || (bytes < sql::REDELIVERY_CHUNK_BYTES
                        && end - start < sql::REDELIVERY_CHUNK_IDS))
            {
                bytes += asked[end].1.len() + 24;
                end += 1;
            }
            let sql = sql::redeliveries(&events, &asked[start..end], since);
            found.extend(self.ch.fetch_all_long::<DeliveryRow>(&sql).await?);
            start = end;
        }
        Ok(found)
    }

    /// The engine of the tables the writer inserts into when it deduplicates inserts
    /// (`Replicated…MergeTree`, or ClickHouse Cloud's `Shared…MergeTree`), `None` for plain
    /// `MergeTree` (see `writer::exactly_once`). Every data table must: one that does not
    /// would land a retried block twice.
    pub async fn deduplicating_engine(&self) -> Result<Option<String>, ChError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Engine {
            engine: String,
        }
        let rows: Vec<Engine> = self
            .ch
            .fetch_all(&sql::data_engines(self.ch.database()))
            .await?;
        let stored: Vec<&Engine> = rows.iter().filter(|r| r.engine != "Distributed").collect();
        let deduplicates = |e: &&Engine| {
            (e.engine.starts_with("Replicated") || e.engine.starts_with("Shared"))
                && e.engine.ends_with("MergeTree")
        };
        if stored.len() >= 2 && stored.iter().all(deduplicates) {
            Ok(stored.first().map(|e| e.engine.clone()))
        } else {
            Ok(None)
        }
    }

    /// How many of this gateway's inserts ClickHouse is running now.
    pub async fn running_inserts(&self) -> Result<u64, ChError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Count {
            n: u64,
        }
        let rows: Vec<Count> = self
            .ch
            .fetch_all(&sql::running_inserts(&self.instance_id))
            .await?;
        Ok(rows.first().map_or(0, |c| c.n))
    }

    /// Asks ClickHouse to stop this gateway's running inserts, waiting until it has.
    pub async fn stop_running_inserts(&self) -> Result<(), ChError> {
        self.ch.execute(&sql::kill_inserts(&self.instance_id)).await
    }

    /// What changed in `events` or `rejected` that makes every row fail, if anything: a column
    /// hookhouse writes is gone or has another type. `None` when they are as hookhouse made them.
    pub async fn drift(&self) -> Result<Option<String>, ChError> {
        let columns: Vec<ColumnRow> = self
            .ch
            .fetch_all(&sql::data_columns(self.ch.database()))
            .await?;
        Ok(drift_in(&columns))
    }
}

fn drift_in(columns: &[ColumnRow]) -> Option<String> {
    let mut found = Vec::new();
    for (table, expected) in [("events", EVENT_COLUMNS), ("rejected", REJECTED_COLUMNS)] {
        for (name, want) in expected {
            let have = columns
                .iter()
                .find(|c| c.table == table && c.name == *name)
                .map(|c| plain_type(&c.r#type));
            match have {
                Some(have) if have == *want => {}
                Some(have) => found.push(format!("{table}.{name} is {have}, not {want}")),
                None => found.push(format!("{table}.{name} is missing")),
            }
        }
    }
    (!found.is_empty()).then(|| found.join("; "))
}

/// A type as RowBinary writes it: `LowCardinality(String)` takes a String, and a DateTime with a
/// time zone takes the same seconds.
fn plain_type(t: &str) -> &str {
    let t = t
        .strip_prefix("LowCardinality(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or(t);
    if t.starts_with("DateTime(") {
        "DateTime"
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(table: &str, name: &str, t: &str) -> ColumnRow {
        ColumnRow {
            table: table.into(),
            name: name.into(),
            r#type: t.into(),
        }
    }

    #[test]
    fn tells_a_changed_table_from_one_as_made() {
        let mut columns: Vec<ColumnRow> = EVENT_COLUMNS
            .iter()
            .map(|(n, t)| column("events", n, t))
            .chain(
                REJECTED_COLUMNS
                    .iter()
                    .map(|(n, t)| column("rejected", n, t)),
            )
            .collect();
        columns.push(column("events", "extra", "UInt8"));
        assert_eq!(drift_in(&columns), None);
        columns[1].r#type = "LowCardinality(String)".into();
        columns[5].r#type = "DateTime('UTC')".into();
        assert_eq!(drift_in(&columns), None);
        columns[2].r#type = "Float32".into();
        columns.retain(|c| !(c.table == "rejected" && c.name == "reason"));
        assert_eq!(
            drift_in(&columns).as_deref(),
            Some("events.__kdd_request_unix_timestamp is Float32, not Float64; rejected.reason is missing")
        );
    }
}
