//! The schema on a ClickHouse cluster (`HOOKHOUSE_CLICKHOUSE_CLUSTER`, CONTRACT §10): the
//! migrations in `schema/`, written for one server, rewritten statement by statement.
//!
//! - Every statement runs `ON CLUSTER`, so every node of the cluster gets it (a node that is down
//!   runs it from ZooKeeper's DDL queue when it is back).
//! - `MergeTree` becomes `ReplicatedMergeTree`, `ReplacingMergeTree(v)`
//!   `ReplicatedReplacingMergeTree(…, v)`. The data tables (`events`, `rejected`) are replicated
//!   within a shard (`/clickhouse/tables/{shard}/<db>/<table>`); the others (pipelines, tokens,
//!   `schema_migrations`) on every node of every shard (`/clickhouse/tables/all/<db>/<table>`,
//!   replica `{shard}_{replica}`), so that every node reads the same credentials.
//! - The data tables keep up to [`DEDUPLICATION_WINDOW`] recent insert blocks' hashes in
//!   ZooKeeper: the writer's exactly-once rests on a retried block being recognised however long
//!   its gateway or node was away (see `writer::exactly_once`).
//! - With several shards the data live in `events_local` / `rejected_local`, and `events` /
//!   `rejected` are `Distributed` tables over them on every node, sharded by
//!   `sipHash64(__kdd_request_id)`: every contract name (and every `pipeline_<id>` view, which
//!   reads `events`) answers the same from any node. ClickHouse 18.16 cannot `ALTER` a
//!   `Distributed` table `ON CLUSTER` when shards are replicated, so a migration that adds columns
//!   is followed by dropping and creating the (data-less: inserts are synchronous) `Distributed`
//!   tables again, with every column the migrations give them.
//!
//! Macros are spelled `{shard}` and `{replica}` (18.16 has no `{database}` / `{table}`
//! macros); the database and table names are written out.

use std::collections::BTreeMap;

/// The tables that hold requests: sharded when the cluster has several shards.
pub const DATA_TABLES: &[&str] = &["events", "rejected"];

/// How many recent insert blocks of a data table ZooKeeper remembers (ClickHouse's default is
/// 100: a few seconds of a busy fleet). Blocks older than 7 days are forgotten anyway
/// (`replicated_deduplication_window_seconds`).
pub const DEDUPLICATION_WINDOW: u32 = 10_000;

/// How a cluster's schema is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSchema {
    pub cluster: String,
    pub db: String,
    /// More than one shard: data tables are `<name>_local` behind `Distributed` tables.
    pub sharded: bool,
}

impl ClusterSchema {
    fn on(&self) -> String {
        format!("ON CLUSTER `{}`", self.cluster)
    }

    pub fn create_database(&self) -> String {
        format!("CREATE DATABASE IF NOT EXISTS `{}` {}", self.db, self.on())
    }

    pub fn create_tracking(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.schema_migrations {on} \
             (version UInt32, name String, applied_at DateTime) ENGINE = {engine} ORDER BY version",
            db = self.db,
            on = self.on(),
            engine = self.engine("schema_migrations", "MergeTree"),
        )
    }

    /// The table that holds `table`'s rows on each node: `<table>_local` when sharded.
    pub fn local_name(&self, table: &str) -> String {
        if self.sharded && DATA_TABLES.contains(&table) {
            format!("{table}_local")
        } else {
            table.to_string()
        }
    }

    /// The replicated form of a one-server `engine` of `table`.
    fn engine(&self, table: &str, engine: &str) -> String {
        let local = self.local_name(table);
        let (path, replica) = if DATA_TABLES.contains(&table) {
            (
                format!("/clickhouse/tables/{{shard}}/{}/{local}", self.db),
                "{replica}",
            )
        } else {
            (
                format!("/clickhouse/tables/all/{}/{local}", self.db),
                "{shard}_{replica}",
            )
        };
        let (name, args) = match engine.split_once('(') {
            Some((name, args)) => (name, args.trim_end_matches(')')),
            None => (engine, ""),
        };
        let args = if args.is_empty() {
            String::new()
        } else {
            format!(", {args}")
        };
        format!("Replicated{name}('{path}', '{replica}'{args})")
    }

    /// The statements that stand for one statement of a migration file (`{db}` filled in).
    /// Statements it does not know are returned unchanged, which the migration test forbids.
    pub fn rewrite(&self, statement: &str) -> Vec<String> {
        if let Some(create) = CreateTable::parse(statement) {
            return vec![self.create(&create, &format!("{} ", self.on()), &create.columns)];
        }
        if let Some((table, column)) = add_column(statement) {
            return vec![format!(
                "ALTER TABLE `{}`.{} {} ADD COLUMN {column}",
                self.db,
                self.local_name(table),
                self.on()
            )];
        }
        vec![statement.to_string()]
    }

    /// The replicated table a migration's `CREATE TABLE` makes, `on` (`ON CLUSTER …` or
    /// nothing), with `columns`.
    fn create(&self, create: &CreateTable<'_>, on: &str, columns: &[String]) -> String {
        let local = self.local_name(create.table);
        let mut rest = create.rest.to_string();
        if DATA_TABLES.contains(&create.table) {
            rest.push_str(&format!(
                " SETTINGS replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
            ));
        }
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.{local} {on}({columns}) ENGINE = {engine}{rest}",
            db = self.db,
            columns = columns.join(", "),
            engine = self.engine(create.table, create.engine),
        )
    }

    /// For a node that lacks hookhouse's tables (added to the cluster, or given an empty disk,
    /// after the migrations ran): the tables that `statements` (every migration, in order)
    /// create and this node does not `have`, each made on this node alone with the columns it
    /// has now on the others (a new replica must match the table's metadata in ZooKeeper, so
    /// replaying the old `CREATE` and its `ALTER`s would not do). Each then fetches its rows
    /// from the other replicas.
    pub fn missing_here<'a>(
        &self,
        statements: impl IntoIterator<Item = &'a str> + Clone,
        have: &[String],
    ) -> Vec<String> {
        let columns = columns_after(statements.clone());
        statements
            .into_iter()
            .filter_map(CreateTable::parse)
            .filter(|create| !have.contains(&self.local_name(create.table)))
            .map(|create| {
                let columns = columns.get(create.table).map_or(&create.columns, |c| c);
                self.create(&create, "", columns)
            })
            .collect()
    }

    /// Drops and creates the `Distributed` table `table` with `columns`, on every node.
    pub fn distributed(&self, table: &str, columns: &[String]) -> [String; 2] {
        [
            format!("DROP TABLE IF EXISTS `{}`.{table} {}", self.db, self.on()),
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.{table} {on} ({columns}) ENGINE = \
                 Distributed(`{cluster}`, `{db}`, {local}, sipHash64(__kdd_request_id))",
                db = self.db,
                on = self.on(),
                columns = columns.join(", "),
                cluster = self.cluster,
                local = self.local_name(table),
            ),
        ]
    }
}

/// Every table's columns once all of `statements` ran (one-server statements, in order), each as
/// its definition (`name Type [DEFAULT …]`).
pub fn columns_after<'a>(
    statements: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, Vec<String>> {
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in statements {
        if let Some(create) = CreateTable::parse(statement) {
            tables
                .entry(create.table.to_string())
                .or_insert(create.columns);
        } else if let Some((table, column)) = add_column(statement) {
            let columns = tables.entry(table.to_string()).or_default();
            let name = column.split_whitespace().next().unwrap_or_default();
            if !columns
                .iter()
                .any(|c| c.split_whitespace().next() == Some(name))
            {
                columns.push(column.to_string());
            }
        }
    }
    tables
}

/// `CREATE TABLE IF NOT EXISTS <db>.<table> (<columns>) ENGINE = <engine><rest>`, as the
/// migration files write it.
struct CreateTable<'a> {
    table: &'a str,
    columns: Vec<String>,
    engine: &'a str,
    rest: &'a str,
}

impl<'a> CreateTable<'a> {
    fn parse(statement: &'a str) -> Option<CreateTable<'a>> {
        let after = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ")?;
        let (_, after) = after.split_once('.')?;
        let open = after.find('(')?;
        let table = after[..open].trim();
        let body = &after[open + 1..];
        let close = closing_paren(body)?;
        let columns = split_top_level(&body[..close]);
        let after = body[close + 1..].trim_start().strip_prefix("ENGINE = ")?;
        let engine_end = engine_end(after);
        Some(CreateTable {
            table,
            columns,
            engine: &after[..engine_end],
            rest: &after[engine_end..],
        })
    }
}

/// `ALTER TABLE <db>.<table> ADD COLUMN <definition>`: the table and the definition.
fn add_column(statement: &str) -> Option<(&str, &str)> {
    let after = statement.strip_prefix("ALTER TABLE ")?;
    let (target, column) = after.split_once(" ADD COLUMN ")?;
    let (_, table) = target.split_once('.')?;
    Some((table.trim(), column.trim()))
}

/// Where the parenthesis that closes an already opened one is in `text`.
fn closing_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => return Some(i),
            ')' if !quoted => depth -= 1,
            _ => {}
        }
    }
    None
}

/// `text` split at commas outside parentheses and quotes, each part trimmed.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                parts.push(text[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim().to_string());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The end of an engine such as `MergeTree` or `ReplacingMergeTree(version)`.
fn engine_end(text: &str) -> usize {
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    if text[name_end..].starts_with('(') {
        closing_paren(&text[name_end + 1..]).map_or(text.len(), |close| name_end + close + 2)
    } else {
        name_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(sharded: bool) -> ClusterSchema {
        ClusterSchema {
            cluster: "c1".into(),
            db: "hh".into(),
            sharded,
        }
    }

    const EVENTS: &str = "CREATE TABLE IF NOT EXISTS `hh`.events (\n    pipeline_id UInt64,\n    \
        received_at DateTime DEFAULT toDateTime(toUInt32(t))\n) ENGINE = MergeTree\n\
        PARTITION BY toYYYYMM(received_at)\nORDER BY (pipeline_id, received_at)";
    const TOKENS: &str = "CREATE TABLE IF NOT EXISTS `hh`.tokens (\n    key String,\n    \
        version UInt64\n) ENGINE = ReplacingMergeTree(version)\nORDER BY key";

    #[test]
    fn data_tables_are_replicated_per_shard_and_sharded_behind_distributed() {
        let [one] = schema(false)
            .rewrite(EVENTS)
            .try_into()
            .expect("one statement");
        assert_eq!(
            one,
            "CREATE TABLE IF NOT EXISTS `hh`.events ON CLUSTER `c1` (pipeline_id UInt64, \
             received_at DateTime DEFAULT toDateTime(toUInt32(t))) ENGINE = \
             ReplicatedMergeTree('/clickhouse/tables/{shard}/hh/events', '{replica}')\n\
             PARTITION BY toYYYYMM(received_at)\nORDER BY (pipeline_id, received_at) \
             SETTINGS replicated_deduplication_window = 10000"
        );
        let [sharded] = schema(true)
            .rewrite(EVENTS)
            .try_into()
            .expect("one statement");
        assert!(sharded.starts_with("CREATE TABLE IF NOT EXISTS `hh`.events_local ON CLUSTER"));
        assert!(sharded.contains("'/clickhouse/tables/{shard}/hh/events_local', '{replica}'"));
        let [drop, create] = schema(true).distributed("events", &["a UInt8".into()]);
        assert_eq!(drop, "DROP TABLE IF EXISTS `hh`.events ON CLUSTER `c1`");
        assert_eq!(
            create,
            "CREATE TABLE IF NOT EXISTS `hh`.events ON CLUSTER `c1` (a UInt8) ENGINE = \
             Distributed(`c1`, `hh`, events_local, sipHash64(__kdd_request_id))"
        );
    }

    #[test]
    fn credentials_are_replicated_on_every_node() {
        for sharded in [false, true] {
            let [tokens] = schema(sharded).rewrite(TOKENS).try_into().expect("one");
            assert_eq!(
                tokens,
                "CREATE TABLE IF NOT EXISTS `hh`.tokens ON CLUSTER `c1` (key String, version \
                 UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/hh/tokens', \
                 '{shard}_{replica}', version)\nORDER BY key"
            );
        }
        assert!(schema(true)
            .create_tracking()
            .contains("ReplicatedMergeTree('/clickhouse/tables/all/hh/schema_migrations', '{shard}_{replica}')"));
    }

    #[test]
    fn a_node_without_the_tables_gets_them_with_the_columns_they_have_now() {
        let alter = "ALTER TABLE `hh`.events ADD COLUMN headers String DEFAULT '{}'";
        let statements = [EVENTS, TOKENS, alter];
        let have = ["tokens".to_string()];
        let [events] = schema(true)
            .missing_here(statements, &have)
            .try_into()
            .expect("only events is missing");
        assert!(events.starts_with("CREATE TABLE IF NOT EXISTS `hh`.events_local (pipeline_id"));
        assert!(!events.contains("ON CLUSTER"));
        assert!(events.contains("headers String DEFAULT '{}') ENGINE = ReplicatedMergeTree("));
        assert!(schema(true)
            .missing_here(statements, &["events_local".into(), "tokens".into()])
            .is_empty());
    }

    #[test]
    fn added_columns_reach_the_local_tables_and_the_distributed_ones() {
        let alter = "ALTER TABLE `hh`.events ADD COLUMN headers String DEFAULT '{}'";
        assert_eq!(
            schema(true).rewrite(alter),
            ["ALTER TABLE `hh`.events_local ON CLUSTER `c1` ADD COLUMN headers String DEFAULT '{}'"]
        );
        assert_eq!(
            schema(false).rewrite(alter),
            ["ALTER TABLE `hh`.events ON CLUSTER `c1` ADD COLUMN headers String DEFAULT '{}'"]
        );
        let columns = columns_after([EVENTS, alter, alter]);
        assert_eq!(
            columns["events"],
            [
                "pipeline_id UInt64",
                "received_at DateTime DEFAULT toDateTime(toUInt32(t))",
                "headers String DEFAULT '{}'"
            ]
        );
    }
}
