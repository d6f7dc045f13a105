//! The ClickHouse client and the one place that tells passing failures from permanent ones.

use std::time::Duration;

use crate::config::{ConfigError, Settings};

/// How long a statement other than a batch insert may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long ClickHouse may take to acknowledge a batch insert.
pub const INSERT_TIMEOUT: Duration = Duration::from_secs(120);

/// A ClickHouse client bound to hookhouse's database.
#[derive(Clone)]
pub struct Clickhouse {
    client: clickhouse::Client,
    db: String,
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
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA
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
            E::InvalidParams(_) | E::Custom(_) | E::SequenceMustHaveLength | E::Compression(_) => {
                Failure::Permanent
            }
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
        })
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    /// `db.name`, backquoted. The database name was checked to be a plain identifier.
    pub fn table(&self, name: &str) -> String {
        format!("`{}`.`{}`", self.db, name)
    }

    pub fn inner(&self) -> &clickhouse::Client {
        &self.client
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
