//! The ClickHouse client and the one place that tells passing failures from permanent ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sql;
use crate::config::{ConfigError, Settings};

/// How long a statement other than a batch insert may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A ClickHouse client bound to hookhouse's database.
#[derive(Clone)]
pub struct Clickhouse {
    client: clickhouse::Client,
    db: String,
    /// What the server it talks to knows, asked once and asked again after a connection failed
    /// (the server may have been upgraded meanwhile).
    features: Arc<Mutex<Option<ServerFeatures>>>,
}

/// What hookhouse must know about a server to insert synchronously on every version (CONTRACT §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerFeatures {
    /// The server knows `async_insert` (from 21.11; on by default from 26.2). hookhouse then sends
    /// `async_insert=0`: an asynchronous insert is acknowledged before its rows are visible and
    /// shares a block with other clients' rows, which would blind the writer's presence check.
    /// A server that does not know the setting refuses it (18.16: `Code: 115`), so it is sent
    /// only where known.
    pub async_insert: bool,
}

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Network, timeouts, overload, a server restarting, a table not created yet.
    Retryable,
    /// ClickHouse will refuse the same data again: split the batch and find the rows at fault.
    Permanent,
}

/// A ClickHouse failure. Its text is the whole cause chain, each cause once: the crate's own
/// ("network error: client error (Connect)") hides why, such as an untrusted certificate. So
/// that `{:#}` does not say it all again, it reports no `source`.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::error_chain::one_line(.0))]
pub struct ChError(pub clickhouse::error::Error);

impl From<clickhouse::error::Error> for ChError {
    fn from(error: clickhouse::error::Error) -> ChError {
        ChError(error)
    }
}

impl From<tokio::time::error::Elapsed> for ChError {
    fn from(_: tokio::time::error::Elapsed) -> ChError {
        ChError(clickhouse::error::Error::TimedOut)
    }
}

/// ClickHouse error codes that mean "this data will never be accepted as it is".
///
/// Everything else is treated as passing: wrongly retrying costs time, wrongly giving up would
/// move good rows to `rejected`. Codes from ClickHouse's ErrorCodes.cpp, stable across releases.
///
/// Not here, though they sound final: CANNOT_PARSE_INPUT_ASSERTION_FAILED (27) and
/// CANNOT_READ_ALL_DATA (33). hookhouse's RowBinary is always whole and well-formed, so these
/// mean the stream was cut on its way or the table no longer has the types hookhouse writes:
/// every row would fail alike, and none of them is at fault.
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
];

impl ChError {
    /// The ClickHouse error code in the server's answer, if it sent one.
    pub fn code(&self) -> Option<u32> {
        let clickhouse::error::Error::BadResponse(text) = &self.0 else {
            return None;
        };
        let rest = &text[text.find("Code: ")? + 6..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    pub fn failure(&self) -> Failure {
        use clickhouse::error::Error as E;
        match &self.0 {
            E::BadResponse(_) => match self.code() {
                Some(code) if PERMANENT_CODES.contains(&code) => Failure::Permanent,
                _ => Failure::Retryable,
            },
            // Everything on this side (parameters, compression, the crate's own errors) would
            // fail every row alike and is none of the rows' fault: never split a batch over it.
            _ => Failure::Retryable,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        use clickhouse::error::Error as E;
        match &self.0 {
            E::Network(_) => "network",
            E::TimedOut => "timeout",
            E::BadResponse(_) => match self.failure() {
                Failure::Permanent => "refused",
                Failure::Retryable => "server",
            },
            _ => "client",
        }
    }
}

impl Clickhouse {
    /// A client for the ClickHouse `settings` name, over TLS for `https://`. It fails only on
    /// what [`Settings::validate`] checks too (the URL, its credentials, the CA file), so with
    /// validated settings only if the CA file changed since. It does not connect yet.
    pub fn new(settings: &Settings) -> Result<Clickhouse, ConfigError> {
        let endpoint = settings.clickhouse_endpoint()?;
        let client = super::http_client::client(&endpoint, settings.clickhouse_ca_file.as_deref())?
            .with_url(endpoint.url)
            .with_user(endpoint.user)
            .with_password(endpoint.password)
            // The schema check sends a setting ClickHouse 18.16 does not know; rows are typed
            // here and the tables are ours, so plain RowBinary is safe.
            .with_validation(false);
        Ok(Clickhouse {
            client,
            db: settings.clickhouse_database.clone(),
            features: Arc::default(),
        })
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    /// `db.name`, backquoted. The database name was checked to be a plain identifier.
    pub fn table(&self, name: &str) -> String {
        format!("`{}`.`{}`", self.db, name)
    }

    /// What the server knows, asked once (see [`ServerFeatures`]).
    pub async fn features(&self) -> Result<ServerFeatures, ChError> {
        if let Some(known) = *self.features.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(known);
        }
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Name {
            name: String,
        }
        let names: Vec<Name> = self.fetch_all(sql::SERVER_FEATURES).await?;
        let features = ServerFeatures {
            async_insert: names.iter().any(|n| n.name == "async_insert"),
        };
        *self.features.lock().unwrap_or_else(|e| e.into_inner()) = Some(features);
        Ok(features)
    }

    /// Forgets what the server knows, so that it is asked again: called after a connection
    /// failed, because the server behind the URL may have been replaced by a newer one.
    pub fn forget_features(&self) {
        *self.features.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Starts a synchronous RowBinary insert of `T` rows into `table` (quoted, from
    /// [`Clickhouse::table`]), named `query_id` when given, acknowledged within `timeout`.
    pub async fn insert<T: clickhouse::Row>(
        &self,
        table: &str,
        query_id: Option<String>,
        timeout: Duration,
    ) -> Result<clickhouse::insert::Insert<T>, ChError> {
        let features = self.features().await?;
        let mut insert = self
            .client
            .insert_unescaped::<T>(table)
            .await?
            .with_timeouts(Some(timeout), Some(timeout));
        if features.async_insert {
            insert = insert.with_setting("async_insert", "0");
        }
        if let Some(query_id) = query_id {
            insert = insert.with_setting("query_id", query_id);
        }
        Ok(insert)
    }

    /// Inserts one row, synchronously: what the operator's commands write.
    pub async fn insert_one<T>(&self, table: &str, row: &T) -> Result<(), ChError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        self.insert_all(table, std::slice::from_ref(row)).await
    }

    /// Inserts rows in one synchronous insert.
    pub(crate) async fn insert_all<T>(&self, table: &str, rows: &[T]) -> Result<(), ChError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let mut insert = self.insert::<T>(table, None, QUERY_TIMEOUT).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Runs a statement, time-boxed.
    pub async fn execute(&self, sql: &str) -> Result<(), ChError> {
        tokio::time::timeout(QUERY_TIMEOUT, self.client.query(sql).execute()).await??;
        Ok(())
    }

    /// Runs a query and returns its rows, time-boxed.
    pub async fn fetch_all<T>(&self, sql: &str) -> Result<Vec<T>, ChError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        Ok(tokio::time::timeout(QUERY_TIMEOUT, self.client.query(sql).fetch_all::<T>()).await??)
    }

    /// Runs a query whose text may be longer than the server's default `max_query_size`
    /// (256 KiB): the limit is raised for this query alone, to the text's length. Every version
    /// knows the setting.
    pub async fn fetch_all_long<T>(&self, sql: &str) -> Result<Vec<T>, ChError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let query = self
            .client
            .query(sql)
            .with_setting("max_query_size", (sql.len() + 4096).to_string());
        Ok(tokio::time::timeout(QUERY_TIMEOUT, query.fetch_all::<T>()).await??)
    }

    /// True when ClickHouse answers a trivial query within `within`.
    pub async fn ping(&self, within: Duration) -> Result<(), ChError> {
        tokio::time::timeout(within, self.client.query("SELECT 1").execute()).await??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> ChError {
        ChError(clickhouse::error::Error::BadResponse(text.into()))
    }

    #[test]
    fn classifies_by_code() {
        let refused = bad("Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero");
        assert_eq!(refused.code(), Some(395));
        assert_eq!(refused.failure(), Failure::Permanent);
        let missing_table =
            bad("Code: 60, e.displayText() = DB::Exception: Table hh.events doesn't exist.");
        assert_eq!(missing_table.failure(), Failure::Retryable);
        let too_many_parts = bad("Code: 252. DB::Exception: Too many parts (300).");
        assert_eq!(too_many_parts.code(), Some(252));
        assert_eq!(too_many_parts.failure(), Failure::Retryable);
        assert_eq!(bad("no code at all").failure(), Failure::Retryable);
        assert_eq!(
            ChError(clickhouse::error::Error::TimedOut).failure(),
            Failure::Retryable
        );
    }
}
