//! The ClickHouse client and the one place that tells passing failures from permanent ones.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sql;
use crate::config::{ConfigError, Settings};
use crate::events;

/// How long a statement other than a batch insert may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A ClickHouse client bound to hookhouse's database.
///
/// `HOOKHOUSE_CLICKHOUSE_URL` may name several nodes (CONTRACT §10): every request goes to the
/// current one, the first at start. A connection failure makes the next one current (round the
/// list), and a read or a DDL statement is sent again there at once, each node tried once;
/// an insert is not (the writer decides what to send again, see `writer::exactly_once`). The
/// client stays on the node that answers, rather than going back to the first, so that a node
/// that comes and goes does not make every gateway switch back and forth.
#[derive(Clone)]
pub struct Clickhouse {
    nodes: Arc<Vec<Node>>,
    /// Index into `nodes` of the one requests go to.
    current: Arc<AtomicUsize>,
    db: String,
    /// `HOOKHOUSE_CLICKHOUSE_CLUSTER`: DDL runs `ON CLUSTER` it (see [`super::cluster`]).
    cluster: Option<String>,
    /// The data tables deduplicate inserts (replicated): every insert asks for it.
    deduplicating: Arc<AtomicBool>,
    /// Failover is off: the tables do not deduplicate (see [`Clickhouse::pin`]).
    pinned: Arc<AtomicBool>,
    /// When credentials were last synced from the other replicas, and whether it worked
    /// (see [`Clickhouse::credentials_sync_due`]).
    last_sync: Arc<Mutex<Option<(std::time::Instant, bool)>>>,
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

/// The settings that decide how an insert is cut into blocks, at their defaults (from 18.16 to
/// current releases).
const BLOCK_SETTINGS: [(&str, &str); 3] = [
    ("max_insert_block_size", "1048576"),
    ("min_insert_block_size_rows", "1048576"),
    ("min_insert_block_size_bytes", "268435456"),
];

/// Codes that say the node, not the statement, is at fault (see [`ChError::leaves_node`]).
const NODE_UNUSABLE_CODES: [u32; 3] = [242, 225, 999];

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

    /// The connection to ClickHouse failed (refused, reset, cut off): the node may be down.
    pub fn is_connection(&self) -> bool {
        matches!(self.0, clickhouse::error::Error::Network(_))
    }

    /// The node cannot serve us now: unreachable, silent past the timeout (a host that is off
    /// sends no reset), or its replicated tables read-only for want of ZooKeeper
    /// (TABLE_IS_READ_ONLY, NO_ZOOKEEPER, KEEPER_EXCEPTION). Another node may.
    pub fn leaves_node(&self) -> bool {
        self.is_connection()
            || matches!(self.0, clickhouse::error::Error::TimedOut)
            || self
                .code()
                .is_some_and(|code| NODE_UNUSABLE_CODES.contains(&code))
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

/// One node of `HOOKHOUSE_CLICKHOUSE_URL`.
struct Node {
    client: clickhouse::Client,
    /// Scheme, host and port, for logs (never credentials).
    url: String,
}

impl Clickhouse {
    /// A client for the ClickHouse `settings` name, over TLS for `https://`. It fails only on
    /// what [`Settings::validate`] checks too (the URLs, their credentials, the CA file), so with
    /// validated settings only if the CA file changed since. It does not connect yet.
    pub fn new(settings: &Settings) -> Result<Clickhouse, ConfigError> {
        let mut nodes = Vec::new();
        for endpoint in settings.clickhouse_endpoints()? {
            let client =
                super::http_client::client(&endpoint, settings.clickhouse_ca_file.as_deref())?
                    .with_url(endpoint.url.clone())
                    .with_user(endpoint.user)
                    .with_password(endpoint.password)
                    // The schema check sends a setting ClickHouse 18.16 does not know; rows are
                    // typed here and the tables are ours, so plain RowBinary is safe.
                    .with_validation(false);
            nodes.push(Node {
                client,
                url: endpoint.url,
            });
        }
        Ok(Clickhouse {
            nodes: Arc::new(nodes),
            current: Arc::default(),
            db: settings.clickhouse_database.clone(),
            cluster: settings.clickhouse_cluster.clone(),
            deduplicating: Arc::default(),
            pinned: Arc::default(),
            last_sync: Arc::default(),
            features: Arc::default(),
        })
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    /// The cluster whose nodes all get hookhouse's tables, if one is set.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// ` ON CLUSTER `name`` for DDL that every node must run, or nothing on one server. The
    /// name was checked to be a plain identifier.
    pub fn on_cluster(&self) -> String {
        self.cluster
            .as_deref()
            .map_or(String::new(), |c| format!(" ON CLUSTER `{c}`"))
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

    /// From now on every insert asks for deduplication (`insert_deduplicate=1`): the writer
    /// found replicated tables and its retries rely on it. It is the default, but a settings
    /// profile may have turned it off.
    pub fn deduplicate_inserts(&self) {
        self.deduplicating.store(true, Ordering::Relaxed);
    }

    /// Stays on the current node from now on: the tables do not deduplicate inserts, and a
    /// retry through another node could land a row twice (see `writer::exactly_once`). Returns
    /// whether there was anywhere to fail over to.
    pub fn pin(&self) -> bool {
        self.pinned.store(true, Ordering::Relaxed);
        self.nodes.len() > 1
    }

    /// Whether credentials should be synced from the other replicas before a reload: at most
    /// once a second (a flood of unknown keys asks for a reload every batch), and after a sync
    /// that could not finish (a replica is down) not for 10 s: each would wait its full bound.
    pub fn credentials_sync_due(&self) -> bool {
        let last = *self.last_sync.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            None => true,
            Some((at, true)) => at.elapsed() >= Duration::from_secs(1),
            Some((at, false)) => at.elapsed() >= Duration::from_secs(10),
        }
    }

    pub fn credentials_synced(&self, ok: bool) {
        *self.last_sync.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), ok));
    }

    /// Which node requests go to now (an index into `HOOKHOUSE_CLICKHOUSE_URL`'s list).
    pub fn node(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    fn client(&self) -> (usize, &clickhouse::Client) {
        let node = self.node();
        (node, &self.nodes[node].client)
    }

    /// Called with the error of a request sent to node `node`: after a connection failure the
    /// next node becomes current (unless another request moved on already), and the server's
    /// features are asked again. Returns whether it failed over.
    pub fn failed(&self, node: usize, error: &ChError) -> bool {
        if !error.leaves_node() {
            return false;
        }
        self.forget_features();
        if self.nodes.len() < 2 || self.pinned.load(Ordering::Relaxed) {
            return false;
        }
        let next = (node + 1) % self.nodes.len();
        let moved = self
            .current
            .compare_exchange(node, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if moved {
            events::clickhouse::failed_over(&self.nodes[node].url, &self.nodes[next].url, error);
        }
        true
    }

    /// Runs `request` on the current node, and on the next ones after connection failures,
    /// each node once: for requests that are safe to send again (reads, idempotent DDL).
    async fn on_some_node<T, F, Fut>(&self, request: F) -> Result<T, ChError>
    where
        F: Fn(clickhouse::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ChError>>,
    {
        let mut tries = self.nodes.len();
        loop {
            let (node, client) = self.client();
            match request(client.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    tries -= 1;
                    if !self.failed(node, &error) || tries == 0 {
                        return Err(error);
                    }
                }
            }
        }
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
            .client()
            .1
            .insert_unescaped::<T>(table)
            .await?
            .with_timeouts(Some(timeout), Some(timeout));
        if features.async_insert {
            insert = insert.with_setting("async_insert", "0");
        }
        if let Some(query_id) = query_id {
            insert = insert.with_setting("query_id", query_id);
        }
        // A retried block must be dropped by ZooKeeper's block hashes whichever replica takes
        // it (see `writer::exactly_once`), and a `Distributed` insert must be in its shards when
        // acknowledged. Both settings are known from 18.16 to current releases.
        if self.cluster.is_some() || self.deduplicating.load(Ordering::Relaxed) {
            insert = insert.with_setting("insert_deduplicate", "1");
            // Where the server cuts an insert into blocks decides what a retry is the same
            // block as: pinned here to the defaults, so that a node with another profile (or
            // version) cuts a retried insert as the first attempt was cut.
            for (setting, value) in BLOCK_SETTINGS {
                insert = insert.with_setting(setting, value);
            }
        }
        if self.cluster.is_some() {
            insert = insert.with_setting("insert_distributed_sync", "1");
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

    /// Inserts rows in one synchronous insert (on the next node after a connection failure,
    /// for the insert after this one).
    pub(crate) async fn insert_all<T>(&self, table: &str, rows: &[T]) -> Result<(), ChError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let node = self.node();
        let result = async {
            let mut insert = self.insert::<T>(table, None, QUERY_TIMEOUT).await?;
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await?;
            Ok(())
        }
        .await;
        if let Err(error) = &result {
            self.failed(node, error);
        }
        result
    }

    /// Runs a statement, time-boxed.
    pub async fn execute(&self, sql: &str) -> Result<(), ChError> {
        self.on_some_node(|client| async move {
            tokio::time::timeout(QUERY_TIMEOUT, client.query(sql).execute()).await??;
            Ok(())
        })
        .await
    }

    /// Runs a query and returns its rows, time-boxed.
    pub async fn fetch_all<T>(&self, sql: &str) -> Result<Vec<T>, ChError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.on_some_node(|client| async move {
            Ok(tokio::time::timeout(QUERY_TIMEOUT, client.query(sql).fetch_all::<T>()).await??)
        })
        .await
    }

    /// Runs a query whose text may be longer than the server's default `max_query_size`
    /// (256 KiB): the limit is raised for this query alone, to the text's length. Every version
    /// knows the setting.
    pub async fn fetch_all_long<T>(&self, sql: &str) -> Result<Vec<T>, ChError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let max_query_size = (sql.len() + 4096).to_string();
        self.on_some_node(|client| {
            let query = client
                .query(sql)
                .with_setting("max_query_size", max_query_size.clone());
            async move { Ok(tokio::time::timeout(QUERY_TIMEOUT, query.fetch_all::<T>()).await??) }
        })
        .await
    }

    /// Waits until this node's replica of `table` (quoted, from [`Clickhouse::table`]) has every
    /// part committed through any replica before now (`SYSTEM SYNC REPLICA` pulls the shared log
    /// first), for at most `within`: the server gives up then too (`receive_timeout`, which
    /// bounds the wait on every version), so no wait outlives the caller's.
    pub async fn sync_replica(&self, table: &str, within: Duration) -> Result<(), ChError> {
        let sql = format!("SYSTEM SYNC REPLICA {table}");
        let seconds = within.as_secs().max(1).to_string();
        self.on_some_node(|client| {
            let query = client
                .query(&sql)
                .with_setting("receive_timeout", seconds.clone());
            async move {
                tokio::time::timeout(within + Duration::from_secs(1), query.execute()).await??;
                Ok(())
            }
        })
        .await
    }

    /// True when ClickHouse answers a trivial query within `within`.
    pub async fn ping(&self, within: Duration) -> Result<(), ChError> {
        self.on_some_node(|client| async move {
            tokio::time::timeout(within, client.query("SELECT 1").execute()).await??;
            Ok(())
        })
        .await
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
