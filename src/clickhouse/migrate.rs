//! Numbered migrations from `schema/`, compiled into the binary and applied idempotently.
//!
//! Each file is a list of statements separated by `;` at the end of a line, with `{db}` standing
//! for the database. Statements are written to be safe to run twice, because two gateways
//! starting together may both apply the same migration, and a migration cut off half-way is run
//! again whole; the tracking table then holds the version twice, which is harmless. `CREATE`
//! statements say `IF NOT EXISTS`; `ALTER TABLE … ADD COLUMN` cannot (ClickHouse 18.16 lacks
//! `ADD COLUMN IF NOT EXISTS`), so a column that already exists counts as added.

use super::client::{ChError, Clickhouse};
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
/// versions applied now.
pub async fn migrate(ch: &Clickhouse) -> Result<Vec<u32>, ChError> {
    ch.execute(&format!(
        "CREATE DATABASE IF NOT EXISTS `{}`",
        ch.database()
    ))
    .await?;
    let tracking = ch.table("schema_migrations");
    ch.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {tracking} (version UInt32, name String, applied_at DateTime) \
         ENGINE = MergeTree ORDER BY version"
    ))
    .await?;
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
        for statement in statements(sql, ch.database()) {
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
        let applied_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as u32;
        let row = Migration {
            version: *version,
            name: name.to_string(),
            applied_at,
        };
        ch.insert_one(&tracking, &row).await?;
        applied.push(*version);
    }
    events::writer::migrations_applied(&applied);
    Ok(applied)
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
    fn versions_are_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
