//! Numbered migrations from `schema/`, compiled into the binary and applied idempotently.
//!
//! Each file is a list of statements separated by `;` at the end of a line, with `{db}` standing
//! for the database. Statements are written to be safe to run twice, because two gateways
//! starting together may both apply the same migration, and a migration cut off half-way is run
//! again whole; the tracking table then holds the version twice, which is harmless. `CREATE`
//! statements say `IF NOT EXISTS`; `ALTER TABLE … ADD COLUMN` cannot (ClickHouse 18.16 lacks
//! `ADD COLUMN IF NOT EXISTS`), so a column that already exists counts as added.

use super::client::{ChError, Clickhouse};
use super::cluster::ClusterSchema;
use super::rows::ColumnRow;
use super::sql;
use crate::events;

/// (version, name, SQL), in order.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "tables", include_str!("../../schema/0001_tables.sql")),
    (
        2,
        "signed_senders",
        include_str!("../../schema/0002_signed_senders.sql"),
    ),
    (
        3,
        "notifications",
        include_str!("../../schema/0003_notifications.sql"),
    ),
];

/// What `ADD COLUMN` answers for a column that exists: ILLEGAL_COLUMN (44) on 18.16,
/// DUPLICATE_COLUMN (15) on current releases.
const COLUMN_EXISTS: [u32; 2] = [44, 15];

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Applied {
    version: u32,
}

/// A row of `schema_migrations`, written like every other insert (synchronously).
#[derive(Debug, clickhouse::Row, serde::Serialize)]
struct Migration {
    version: u32,
    name: String,
    applied_at: u32,
}

/// Whether the database exists and holds hookhouse's tables. Asked by read-only commands,
/// which must never create anything (CONTRACT §7).
pub async fn schema_applied(ch: &Clickhouse) -> Result<bool, ChError> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Count {
        n: u64,
    }
    let sql = format!(
        "SELECT count() AS n FROM system.tables WHERE database = '{}' \
         AND name IN ('pipelines', 'tokens')",
        ch.database()
    );
    let rows: Vec<Count> = ch.fetch_all(&sql).await?;
    Ok(rows.first().is_some_and(|c| c.n == 2))
}

/// Creates the database if needed and applies every migration not yet recorded. Returns the
/// versions applied now. With `HOOKHOUSE_CLICKHOUSE_CLUSTER`, on every node of the cluster, with
/// replicated engines (see [`super::cluster`]).
pub async fn migrate(ch: &Clickhouse) -> Result<Vec<u32>, ChError> {
    let cluster = match ch.cluster() {
        Some(name) => Some(cluster_schema(ch, name).await?),
        None => None,
    };
    let db = ch.database();
    let tracking = ch.table("schema_migrations");
    let setup = match &cluster {
        Some(schema) => [schema.create_database(), schema.create_tracking()],
        None => [
            format!("CREATE DATABASE IF NOT EXISTS `{db}`"),
            format!(
                "CREATE TABLE IF NOT EXISTS {tracking} (version UInt32, name String, applied_at \
                 DateTime) ENGINE = MergeTree ORDER BY version"
            ),
        ],
    };
    // On a cluster, DDL goes through ZooKeeper and waits for every node: sent only when needed,
    // so that a gateway starting while a node is down is not held up.
    if cluster.is_none() || !tracking_exists(ch).await? {
        for statement in &setup {
            ch.execute(statement).await?;
        }
    }
    if cluster.is_some() {
        sync_replica(ch, &tracking).await;
    }
    let done: Vec<u32> = ch
        .fetch_all::<Applied>(&format!("SELECT DISTINCT version FROM {tracking}"))
        .await?
        .into_iter()
        .map(|a| a.version)
        .collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        for statement in statements(sql, db) {
            let rewritten = match &cluster {
                Some(schema) => schema.rewrite(&statement),
                None => vec![statement],
            };
            for statement in rewritten {
                match ch.execute(&statement).await {
                    Ok(()) => {}
                    Err(error)
                        if adds_column(&statement)
                            && error
                                .code()
                                .is_some_and(|code| COLUMN_EXISTS.contains(&code)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        applied.push((*version, *name));
    }
    if let Some(schema) = &cluster {
        make_missing_here(ch, schema).await?;
    }
    if let Some(schema) = cluster.as_ref().filter(|s| s.sharded) {
        refresh_distributed(ch, schema, !applied.is_empty()).await?;
    }
    // Recorded last: a migration cut off half-way, or before its `Distributed` tables were made
    // again, is run again whole (every statement may run twice).
    let applied_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as u32;
    for (version, name) in &applied {
        let row = Migration {
            version: *version,
            name: name.to_string(),
            applied_at,
        };
        ch.insert_one(&tracking, &row).await?;
    }
    let applied: Vec<u32> = applied.into_iter().map(|(version, _)| version).collect();
    events::writer::migrations_applied(&applied);
    Ok(applied)
}

/// How the schema is laid out on the cluster `name`: sharded when it has several shards.
async fn cluster_schema(ch: &Clickhouse, name: &str) -> Result<ClusterSchema, ChError> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Shards {
        shards: u64,
    }
    let rows: Vec<Shards> = ch.fetch_all(&sql::cluster_shards(name)).await?;
    let shards = rows.first().map_or(0, |r| r.shards);
    if shards == 0 {
        return Err(ChError(clickhouse::error::Error::Custom(format!(
            "the server knows no cluster {name:?} (HOOKHOUSE_CLICKHOUSE_CLUSTER): it must be \
             one of its <remote_servers>, see system.clusters"
        ))));
    }
    Ok(ClusterSchema {
        cluster: name.to_string(),
        db: ch.database().to_string(),
        sharded: shards > 1,
    })
}

/// How long `migrate` waits for this node to have what other replicas recorded.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits, briefly, until this node's replica of `table` has every insert other replicas took:
/// versions recorded through another node a moment ago are then seen, and not applied twice.
/// Best effort: when a part cannot be fetched now (the only node holding it is down), the
/// migrations run again, which every statement allows.
async fn sync_replica(ch: &Clickhouse, table: &str) {
    if let Err(error) = ch.sync_replica(table, SYNC_WAIT).await {
        tracing::warn!(%error, table, "the replica did not sync within 10 s; going on");
    }
}

async fn tracking_exists(ch: &Clickhouse) -> Result<bool, ChError> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Count {
        n: u64,
    }
    let sql = format!(
        "SELECT count() AS n FROM system.tables WHERE database = '{}' \
         AND name = 'schema_migrations'",
        ch.database()
    );
    let rows: Vec<Count> = ch.fetch_all(&sql).await?;
    Ok(rows.first().is_some_and(|c| c.n == 1))
}

/// Gives the node `migrate` talks to the tables it lacks although the migrations ran: a node
/// added to the cluster, or one given an empty disk, after they did (`ON CLUSTER` statements
/// reached only the nodes of their time). Then every pipeline's view, which is made when the
/// pipeline is. Nothing happens on a node that has them all: one `system.tables` read.
async fn make_missing_here(ch: &Clickhouse, schema: &ClusterSchema) -> Result<(), ChError> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Name {
        name: String,
    }
    let sql = format!(
        "SELECT name FROM system.tables WHERE database = '{}'",
        ch.database()
    );
    let have: Vec<String> = ch
        .fetch_all::<Name>(&sql)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let all: Vec<String> = MIGRATIONS
        .iter()
        .flat_map(|(_, _, sql)| statements(sql, ch.database()))
        .collect();
    let missing = schema.missing_here(all.iter().map(String::as_str), &have);
    if missing.is_empty() {
        return Ok(());
    }
    events::writer::tables_made_here(missing.len());
    for statement in &missing {
        ch.execute(statement).await?;
    }
    // The new replica of `pipelines` has its rows once it fetched them.
    sync_replica(ch, &ch.table("pipelines")).await;
    let pipelines = super::store::list_pipelines(ch)
        .await
        .map_err(store_error)?;
    for pipeline in pipelines {
        super::store::create_view(ch, pipeline.pipeline_id)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

fn store_error(error: super::store::StoreError) -> ChError {
    match error {
        super::store::StoreError::Clickhouse(error) => error,
        other => ChError(clickhouse::error::Error::Custom(other.to_string())),
    }
}

/// Makes the `Distributed` tables again, on every node, when migrations were applied now or when
/// this node's do not have the columns the migrations give them (a run cut off before this).
async fn refresh_distributed(
    ch: &Clickhouse,
    schema: &ClusterSchema,
    migrated: bool,
) -> Result<(), ChError> {
    let all: Vec<String> = MIGRATIONS
        .iter()
        .flat_map(|(_, _, sql)| statements(sql, ch.database()))
        .collect();
    let columns = super::cluster::columns_after(all.iter().map(String::as_str));
    let have: Vec<ColumnRow> = ch.fetch_all(&sql::data_columns(ch.database())).await?;
    for table in super::cluster::DATA_TABLES {
        let want = columns.get(*table).map(Vec::as_slice).unwrap_or_default();
        let present = have.iter().filter(|c| c.table == *table).count();
        if migrated || present != want.len() {
            for statement in schema.distributed(table, want) {
                ch.execute(&statement).await?;
            }
        }
    }
    Ok(())
}

fn adds_column(statement: &str) -> bool {
    statement.starts_with("ALTER TABLE ") && statement.contains(" ADD COLUMN ")
}

/// Splits a migration file into statements, dropping comment lines, with `{db}` filled in.
fn statements(sql: &str, db: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .map(|line| format!("{line}\n"))
        .collect();
    without_comments
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches(';').replace("{db}", &format!("`{db}`")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_safe_to_run_twice() {
        for (_, _, sql) in MIGRATIONS {
            let statements = statements(sql, "hh");
            assert!(!statements.is_empty());
            for s in statements {
                assert!(
                    s.starts_with("CREATE TABLE IF NOT EXISTS `hh`.")
                        || (s.starts_with("ALTER TABLE `hh`.") && adds_column(&s)),
                    "{s}"
                );
                assert!(!s.contains("{db}") && !s.ends_with(';'));
                assert!(!s.contains('\n') || s.starts_with("CREATE"), "{s}");
            }
        }
    }

    #[test]
    fn every_statement_has_a_cluster_form() {
        for sharded in [false, true] {
            let schema = ClusterSchema {
                cluster: "c".into(),
                db: "hh".into(),
                sharded,
            };
            for (_, _, sql) in MIGRATIONS {
                for s in statements(sql, "hh") {
                    for rewritten in schema.rewrite(&s) {
                        assert!(rewritten.contains(" ON CLUSTER `c` "), "{rewritten}");
                        assert!(!rewritten.contains("= MergeTree"), "{rewritten}");
                        assert!(!rewritten.contains("= ReplacingMergeTree"), "{rewritten}");
                    }
                }
            }
        }
    }

    #[test]
    fn versions_are_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
