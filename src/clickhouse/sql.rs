//! The text of every statement the writer sends besides migrations, as plain functions of their
//! inputs: the writer's steps build them here, and the current-engine check
//! (`src/bin/hookhouse-statements.rs`) prints the very same text, so the two cannot drift apart.
//!
//! Every statement here runs on ClickHouse 18.16 and on current releases alike: no
//! `JSONExtract*`, no `DateTime64`, no setting a server may not know.

/// The settings of [`super::ServerFeatures`] that the server knows.
pub const SERVER_FEATURES: &str = "SELECT name FROM system.settings WHERE name IN ('async_insert')";

/// The most request ids one presence query names. Each takes 23 bytes of SQL and a query names
/// them twice, so this stays far below ClickHouse's default `max_query_size` of 256 KiB.
pub const PRESENCE_CHUNK: usize = 2000;

/// One row a presence query looks for: a request id (20 lowercase letters, checked when it was
/// parsed, so safe inside a literal), its pipeline and the second it was received.
#[derive(Debug, Clone, Copy)]
pub struct Sought<'a> {
    pub request_id: &'a str,
    pub pipeline_id: u64,
    pub received_at: u32,
}

/// Which of `sought` (at most [`PRESENCE_CHUNK`]) are in `events` or `rejected`. Asked by the
/// ids themselves, with the pipelines and the time span only to prune partitions: the answer is
/// never larger than the question, however many rows other gateways landed in that span.
pub fn presence(events: &str, rejected: &str, sought: &[Sought<'_>]) -> String {
    let mut ids = String::with_capacity(sought.len() * 23);
    let mut pipelines: Vec<u64> = sought.iter().map(|s| s.pipeline_id).collect();
    pipelines.sort_unstable();
    pipelines.dedup();
    let (mut lo, mut hi) = (u32::MAX, u32::MIN);
    for (i, s) in sought.iter().enumerate() {
        if i > 0 {
            ids.push(',');
        }
        ids.push('\'');
        ids.push_str(s.request_id);
        ids.push('\'');
        lo = lo.min(s.received_at);
        hi = hi.max(s.received_at);
    }
    let pipelines: Vec<String> = pipelines.iter().map(u64::to_string).collect();
    let time = format!("received_at >= toDateTime({lo}) AND received_at <= toDateTime({hi})");
    format!(
        "SELECT __kdd_request_id FROM {events} WHERE pipeline_id IN ({}) AND {time} \
         AND __kdd_request_id IN ({ids}) \
         UNION ALL SELECT __kdd_request_id FROM {rejected} WHERE {time} \
         AND __kdd_request_id IN ({ids})",
        pipelines.join(","),
    )
}

/// The query id prefix of every insert of the gateway `instance` (hex, from its data folder).
pub fn insert_query_prefix(instance: &str) -> String {
    format!("hookhouse-{instance}-")
}

/// How many inserts of the gateway `instance` the server is still running.
pub fn running_inserts(instance: &str) -> String {
    format!(
        "SELECT count() AS n FROM system.processes WHERE query_id LIKE '{}%'",
        insert_query_prefix(instance)
    )
}

/// Stops the inserts of the gateway `instance` that are still running, and waits until they
/// have stopped: afterwards each has landed or not, for good.
pub fn kill_inserts(instance: &str) -> String {
    format!(
        "KILL QUERY WHERE query_id LIKE '{}%' SYNC",
        insert_query_prefix(instance)
    )
}

/// The engines of the tables that hold `events`' rows: `events` itself and, on a sharded
/// cluster, `events_local` behind it.
pub fn data_engines(db: &str) -> String {
    format!(
        "SELECT engine FROM system.tables WHERE database = '{db}' \
         AND name IN ('events', 'events_local', 'rejected', 'rejected_local')"
    )
}

/// How many shards the cluster `name` (a plain identifier, checked at start) has on the server
/// asked: none when it is not one of the server's `remote_servers`.
pub fn cluster_shards(name: &str) -> String {
    format!("SELECT uniqExact(shard_num) AS shards FROM system.clusters WHERE cluster = '{name}'")
}

/// The columns and types of hookhouse's data tables, to tell a table that changed under the
/// writer (every row fails) from rows ClickHouse refuses for their content.
pub fn data_columns(db: &str) -> String {
    format!(
        "SELECT table, name, type FROM system.columns WHERE database = '{db}' \
         AND table IN ('events', 'rejected')"
    )
}

/// A string as a ClickHouse literal: quoted, with backslash and quote escaped (inside quotes
/// ClickHouse reads backslash escapes, on every version). For text that comes from senders.
///
/// `?` is doubled: the clickhouse crate reads every `?` of a query's text as a bind
/// placeholder, quoted or not, and `??` as a literal `?`.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' | '\'' => out.push('\\'),
            '?' => out.push('?'),
            _ => {}
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// About how much SQL one redelivery query may carry (delivery ids are the senders' text, of
/// any length, so they are counted in bytes). Each query reads the pipelines' last 7 days of
/// `delivery_id`, so a batch asks in as few queries as it can: the query raises its own
/// `max_query_size` to its length, and a full batch of 50,000 ids fits in one.
pub const REDELIVERY_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The most delivery ids one redelivery query names: ClickHouse 18.16 refuses an `IN` list of
/// about 50,000 strings ("AST is too big", `max_ast_elements`).
pub const REDELIVERY_CHUNK_IDS: usize = 10_000;

/// Which of the delivery ids `asked` (pipeline, delivery id) already landed in `events` at or
/// after `since`, with the request that landed them. `events` is ordered by pipeline and time,
/// so the pipelines and the time bound prune it to the pipelines' last days.
pub fn redeliveries(events: &str, asked: &[(u64, &str)], since: u32) -> String {
    let mut pipelines: Vec<u64> = asked.iter().map(|(p, _)| *p).collect();
    pipelines.sort_unstable();
    pipelines.dedup();
    let pipelines: Vec<String> = pipelines.iter().map(u64::to_string).collect();
    let mut ids: Vec<&str> = asked.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let ids: Vec<String> = ids.into_iter().map(quote).collect();
    format!(
        "SELECT pipeline_id, delivery_id, __kdd_request_id, toUInt32(received_at) AS received_at \
         FROM {events} WHERE pipeline_id IN ({}) AND received_at >= toDateTime({since}) \
         AND delivery_id IN ({})",
        pipelines.join(","),
        ids.join(","),
    )
}

/// A page of the rows of `rejected` that `rejected replay` checks again: one pipeline,
/// optionally one reason, from a start time, after the request id `after` (pages go in request
/// id order, so rows moved meanwhile shift nothing; ids were parsed, safe in a literal).
pub fn rejected_to_replay(
    rejected: &str,
    pipeline: u64,
    reason: Option<&str>,
    since: u32,
    after: &str,
    limit: usize,
) -> String {
    let reason = reason.map_or(String::new(), |r| format!(" AND reason = {}", quote(r)));
    format!(
        "SELECT pipeline_id, __kdd_request_id, __kdd_request_unix_timestamp, \
         __kdd_requester_key, __kdd_request_body, reason, headers, body_as_sent \
         FROM {rejected} WHERE pipeline_id = {pipeline} \
         AND received_at >= toDateTime({since}){reason} AND __kdd_request_id > {} \
         ORDER BY __kdd_request_id LIMIT {limit}",
        quote(after)
    )
}

/// Which of `ids` (request ids, parsed) `events` holds for `pipeline`: the rows `rejected
/// replay` already moved.
pub fn in_events(events: &str, pipeline: u64, ids: &[&str]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    format!(
        "SELECT __kdd_request_id FROM {events} WHERE pipeline_id = {pipeline} \
         AND __kdd_request_id IN ({})",
        ids.join(",")
    )
}

/// Removes from `rejected` the requests that `rejected replay` moved to `events` (ids of 20
/// lowercase letters, parsed before). A mutation: ClickHouse applies it in the background.
pub fn delete_rejected(rejected: &str, pipeline: u64, ids: &[&str]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    format!(
        "ALTER TABLE {rejected} DELETE WHERE pipeline_id = {pipeline} \
         AND __kdd_request_id IN ({})",
        ids.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_cannot_leave_its_literal() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(quote("a\\'); DROP"), "'a\\\\\\'); DROP'");
        assert_eq!(quote("ünï 😀"), "'ünï 😀'");
        assert_eq!(quote("a?b"), "'a??b'");
    }

    #[test]
    fn a_full_presence_chunk_stays_under_max_query_size() {
        let id = "abcdefghijklmnopqrst";
        let sought: Vec<Sought> = (0..PRESENCE_CHUNK as u64)
            .map(|i| Sought {
                request_id: id,
                pipeline_id: i,
                received_at: 1_700_000_000 + i as u32,
            })
            .collect();
        let sql = presence("`db`.`events`", "`db`.`rejected`", &sought);
        assert!(sql.len() < 256 * 1024, "{} bytes", sql.len());
        assert!(sql.contains("received_at >= toDateTime(1700000000)"));
    }
}
