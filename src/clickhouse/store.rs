//! Pipelines and tokens, kept in ClickHouse as versioned rows so every gateway sees one state.
//!
//! A change (create, disable, revoke) is an insert of a new version; readers take the highest
//! version with `FINAL`. Nothing is ever updated in place, so a revocation reaches every replica
//! of a replicated table like any other insert.

use std::time::{SystemTime, UNIX_EPOCH};

use super::client::{ChError, Clickhouse};
use super::rows::{
    AttemptRow, PipelineRow, RejectedReadRow, RequestIdRow, RequestOutcomeRow, SubscriptionRow,
    TokenRow,
};
use super::sql;
use crate::ingest::{Key, PipelineId, Token};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ClickHouse: {0}")]
    Clickhouse(#[from] ChError),
    #[error("no pipeline with id {0}")]
    NoSuchPipeline(u64),
    #[error("no token with key {0}")]
    NoSuchKey(String),
    #[error("no subscription with id {0}")]
    NoSuchSubscription(String),
    #[error("{0}")]
    Invalid(String),
    /// Nothing to do: the key was revoked before (its row, unchanged).
    #[error("key {} was already revoked", .0.key)]
    AlreadyRevoked(TokenRow),
}

impl From<clickhouse::error::Error> for StoreError {
    fn from(e: clickhouse::error::Error) -> StoreError {
        StoreError::Clickhouse(ChError(e))
    }
}

/// A version number for a new row: nanoseconds now, and above `previous` whatever the clock says.
fn next_version(previous: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    now.max(previous + 1)
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as u32
}

/// A name for a pipeline or token: 1 to 200 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let len = name.chars().count();
    if len == 0 || len > 200 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "a name must be 1 to 200 characters without control characters, got {name:?}"
        )));
    }
    Ok(())
}

/// How long a credential reload waits for this node's replicas of `pipelines` and `tokens`.
const CREDENTIALS_SYNC: std::time::Duration = std::time::Duration::from_secs(2);

/// On a cluster, waits (briefly) until this node has every pipeline and token version written
/// through any node: a token created through another node a moment ago is then known, and a
/// revocation is seen here as soon as it is replicated, not when this node gets round to it.
/// Best effort: when the node holding a new version is down, the reload goes on with what this
/// node has, and says so (rate-limited).
pub async fn sync_credentials(ch: &Clickhouse) {
    if ch.cluster().is_none() || !ch.credentials_sync_due() {
        return;
    }
    let mut ok = true;
    for table in ["pipelines", "tokens"] {
        if let Err(error) = ch.sync_replica(&ch.table(table), CREDENTIALS_SYNC).await {
            crate::events::writer::credentials_not_synced(table, &error);
            ok = false;
        }
    }
    ch.credentials_synced(ok);
}

pub async fn list_pipelines(ch: &Clickhouse) -> Result<Vec<PipelineRow>, StoreError> {
    let sql = format!(
        "SELECT ?fields FROM {} FINAL ORDER BY pipeline_id",
        ch.table("pipelines")
    );
    Ok(ch.fetch_all(&sql).await?)
}

pub async fn list_tokens(ch: &Clickhouse) -> Result<Vec<TokenRow>, StoreError> {
    let sql = format!(
        "SELECT ?fields FROM {} FINAL ORDER BY created_at, key",
        ch.table("tokens")
    );
    Ok(ch.fetch_all(&sql).await?)
}

/// A pipeline as stored now.
pub async fn pipeline(ch: &Clickhouse, id: u64) -> Result<PipelineRow, StoreError> {
    let sql = format!(
        "SELECT ?fields FROM {} FINAL WHERE pipeline_id = {id}",
        ch.table("pipelines")
    );
    let rows: Vec<PipelineRow> = ch.fetch_all(&sql).await?;
    rows.into_iter()
        .next()
        .ok_or(StoreError::NoSuchPipeline(id))
}

async fn find_token(ch: &Clickhouse, key: &Key) -> Result<TokenRow, StoreError> {
    // `key` is a parsed UUID, so it is safe inside the literal.
    let sql = format!(
        "SELECT ?fields FROM {} FINAL WHERE key = '{key}'",
        ch.table("tokens")
    );
    let rows: Vec<TokenRow> = ch.fetch_all(&sql).await?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::NoSuchKey(key.to_string()))
}

async fn insert_pipeline(ch: &Clickhouse, row: &PipelineRow) -> Result<(), StoreError> {
    Ok(ch.insert_one(&ch.table("pipelines"), row).await?)
}

async fn insert_token(ch: &Clickhouse, row: &TokenRow) -> Result<(), StoreError> {
    Ok(ch.insert_one(&ch.table("tokens"), row).await?)
}

/// Creates a pipeline with the next free id and its `pipeline_<id>` view.
///
/// Ids are allocated as one more than the largest; two operators creating pipelines in the same
/// instant against the same ClickHouse could pick the same id, which is why this is an operator
/// command and not an API.
pub async fn create_pipeline(ch: &Clickhouse, name: &str) -> Result<PipelineRow, StoreError> {
    check_name(name)?;
    // Names are how operators tell pipelines apart (in `pipeline list`, in dashboards): two of
    // one name would be sent to and queried by mistake.
    if let Some(same) = list_pipelines(ch).await?.iter().find(|p| p.name == name) {
        return Err(StoreError::Invalid(format!(
            "a pipeline named {name:?} already exists (id {}); pick another name",
            same.pipeline_id
        )));
    }
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Max {
        max: u64,
    }
    let sql = format!(
        "SELECT max(pipeline_id) AS max FROM {}",
        ch.table("pipelines")
    );
    let max = ch
        .fetch_all::<Max>(&sql)
        .await?
        .first()
        .map_or(0, |m| m.max);
    let row = PipelineRow {
        pipeline_id: max + 1,
        name: name.to_owned(),
        active: 1,
        created_at: now_secs(),
        version: next_version(0),
        scheme: String::new(),
        scheme_options: String::new(),
        secrets: Vec::new(),
        event_patterns: Vec::new(),
    };
    insert_pipeline(ch, &row).await?;
    create_view(ch, row.pipeline_id).await?;
    Ok(row)
}

/// `pipeline_<id>`: exactly the four columns Kondado delivers, for one pipeline (on every node
/// of the cluster, if one is set: it reads `events`, which every node has).
pub async fn create_view(ch: &Clickhouse, id: u64) -> Result<(), StoreError> {
    ch.execute(&format!(
        "CREATE VIEW IF NOT EXISTS {}{} AS SELECT __kdd_request_id, __kdd_request_unix_timestamp, \
         __kdd_requester_key, __kdd_request_body FROM {} WHERE pipeline_id = {id}",
        ch.table(&format!("pipeline_{id}")),
        ch.on_cluster(),
        ch.table("events"),
    ))
    .await?;
    Ok(())
}

/// Turns a pipeline's writes on or off (a disabled pipeline's requests go to `rejected`).
pub async fn set_pipeline_active(
    ch: &Clickhouse,
    id: u64,
    active: bool,
) -> Result<PipelineRow, StoreError> {
    update_pipeline(ch, id, |row| {
        row.active = u8::from(active);
        Ok(())
    })
    .await
}

/// Stores a new version of a pipeline: its current row, changed by `change`.
async fn update_pipeline(
    ch: &Clickhouse,
    id: u64,
    change: impl FnOnce(&mut PipelineRow) -> Result<(), StoreError>,
) -> Result<PipelineRow, StoreError> {
    let mut row = pipeline(ch, id).await?;
    change(&mut row)?;
    row.version = next_version(row.version);
    insert_pipeline(ch, &row).await?;
    Ok(row)
}

/// How a pipeline's sender signs, as stored: the scheme's name and options, and its sealed
/// secrets, oldest first (CONTRACT §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigning {
    pub scheme: String,
    pub scheme_options: String,
    pub secrets: Vec<String>,
}

/// Sets how a pipeline's sender signs; returns the new version of the pipeline.
pub async fn set_signing(
    ch: &Clickhouse,
    id: u64,
    change: impl FnOnce(&PipelineRow) -> Result<StoredSigning, StoreError>,
) -> Result<PipelineRow, StoreError> {
    update_pipeline(ch, id, |row| {
        let signing = change(row)?;
        row.scheme = signing.scheme;
        row.scheme_options = signing.scheme_options;
        row.secrets = signing.secrets;
        Ok(())
    })
    .await
}

/// Sets the event types a pipeline keeps (empty: all).
pub async fn set_event_patterns(
    ch: &Clickhouse,
    id: u64,
    patterns: Vec<String>,
) -> Result<PipelineRow, StoreError> {
    update_pipeline(ch, id, |row| {
        row.event_patterns = patterns;
        Ok(())
    })
    .await
}

/// Creates a token for `pipelines` (empty: every pipeline). The token is returned once, here.
pub async fn create_token(
    ch: &Clickhouse,
    name: &str,
    pipelines: &[u64],
) -> Result<(TokenRow, Key, Token), StoreError> {
    check_name(name)?;
    for id in pipelines {
        if PipelineId::new(*id).is_none() {
            return Err(StoreError::Invalid("pipeline ids start at 1".into()));
        }
        pipeline(ch, *id).await?;
    }
    let key = Key::generate();
    let token = Token::generate();
    let mut allowed = pipelines.to_vec();
    allowed.sort_unstable();
    allowed.dedup();
    let row = TokenRow {
        key: key.to_string(),
        name: name.to_owned(),
        token_hash: token.hash().to_hex(),
        pipelines: allowed,
        revoked: 0,
        created_at: now_secs(),
        version: next_version(0),
    };
    insert_token(ch, &row).await?;
    Ok((row, key, token))
}

/// Revokes a token: from now on its requests go to `rejected` as `REVOKED_KEY`.
pub async fn revoke_token(ch: &Clickhouse, key: &str) -> Result<TokenRow, StoreError> {
    let key = Key::parse(key).ok_or_else(|| {
        StoreError::Invalid(format!(
            "{key:?} is not a key (a UUID like d538b946-9d55-405a-9bd2-72d74b1cb8f5)"
        ))
    })?;
    let mut row = find_token(ch, &key).await?;
    if row.revoked != 0 {
        return Err(StoreError::AlreadyRevoked(row));
    }
    row.revoked = 1;
    row.version = next_version(row.version);
    insert_token(ch, &row).await?;
    Ok(row)
}

/// Where a request landed: its rows in `events` (reason empty) and `rejected`, by request id.
///
/// Neither table is ordered by request id, so this reads the column through: fine for an
/// operator's question, not for a hot path.
pub async fn find_request(
    ch: &Clickhouse,
    request_id: &crate::ingest::RequestId,
) -> Result<Vec<RequestOutcomeRow>, StoreError> {
    // `request_id` is parsed (20 lowercase letters), so it is safe inside the literal.
    let id = request_id.as_str();
    let mut found = Vec::new();
    for (table, reason) in [("events", "''"), ("rejected", "reason")] {
        let sql = format!(
            "SELECT '{table}' AS landed_in, pipeline_id, __kdd_request_unix_timestamp, \
             __kdd_requester_key, {reason} AS reason FROM {} WHERE __kdd_request_id = '{id}'",
            ch.table(table)
        );
        found.extend(ch.fetch_all::<RequestOutcomeRow>(&sql).await?);
    }
    Ok(found)
}

/// A page of `rejected` for `rejected replay` (see [`sql::rejected_to_replay`]).
pub async fn rejected_page(
    ch: &Clickhouse,
    pipeline: u64,
    reason: Option<&str>,
    since: u32,
    after: &str,
    limit: usize,
) -> Result<Vec<RejectedReadRow>, StoreError> {
    let sql = sql::rejected_to_replay(&ch.table("rejected"), pipeline, reason, since, after, limit);
    Ok(ch.fetch_all(&sql).await?)
}

/// Which of `ids` `events` holds for `pipeline`.
pub async fn in_events(
    ch: &Clickhouse,
    pipeline: u64,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut found = std::collections::HashSet::new();
    for chunk in ids.chunks(sql::PRESENCE_CHUNK) {
        let sql = sql::in_events(&ch.table("events"), pipeline, chunk);
        let rows: Vec<RequestIdRow> = ch.fetch_all(&sql).await?;
        found.extend(rows.into_iter().map(|r| r.__kdd_request_id));
    }
    Ok(found)
}

/// Removes `ids` of `pipeline` from `rejected` (a mutation ClickHouse applies in the background).
pub async fn delete_rejected(
    ch: &Clickhouse,
    pipeline: u64,
    ids: &[&str],
) -> Result<(), StoreError> {
    let table = mutable_table(ch, "rejected").await?;
    for chunk in ids.chunks(sql::PRESENCE_CHUNK) {
        ch.execute(&sql::delete_rejected(&table, pipeline, chunk))
            .await?;
    }
    Ok(())
}

/// The table a mutation of `table`'s rows goes to: `table` itself on one server; on a cluster,
/// `ON CLUSTER`, and the `<table>_local` that holds the rows behind a `Distributed` one.
async fn mutable_table(ch: &Clickhouse, table: &str) -> Result<String, StoreError> {
    if ch.cluster().is_none() {
        return Ok(ch.table(table));
    }
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Count {
        n: u64,
    }
    let local = format!("{table}_local");
    let sql = format!(
        "SELECT count() AS n FROM system.tables WHERE database = '{}' AND name = '{local}'",
        ch.database()
    );
    let sharded = ch
        .fetch_all::<Count>(&sql)
        .await?
        .first()
        .is_some_and(|c| c.n > 0);
    let name = if sharded { local.as_str() } else { table };
    Ok(format!("{}{}", ch.table(name), ch.on_cluster()))
}

/// Every subscription's current version, deleted ones included (a gateway drops what it holds
/// for them), oldest first.
pub async fn list_subscriptions(ch: &Clickhouse) -> Result<Vec<SubscriptionRow>, StoreError> {
    let sql = format!(
        "SELECT ?fields FROM {} FINAL ORDER BY created_at, subscription_id",
        ch.table("subscriptions")
    );
    Ok(ch.fetch_all(&sql).await?)
}

/// A subscription as stored now; a deleted one is no subscription.
pub async fn subscription(ch: &Clickhouse, id: &str) -> Result<SubscriptionRow, StoreError> {
    let sql = format!(
        "SELECT ?fields FROM {} FINAL WHERE subscription_id = {}",
        ch.table("subscriptions"),
        sql::quote(id)
    );
    let rows: Vec<SubscriptionRow> = ch.fetch_all(&sql).await?;
    rows.into_iter()
        .find(|row| row.deleted == 0)
        .ok_or_else(|| StoreError::NoSuchSubscription(id.to_owned()))
}

/// Stores a new subscription (its first version).
pub async fn create_subscription(
    ch: &Clickhouse,
    mut row: SubscriptionRow,
) -> Result<SubscriptionRow, StoreError> {
    for id in &row.pipelines {
        pipeline(ch, *id).await?;
    }
    row.created_at = now_secs();
    insert_subscription_version(ch, row).await
}

/// Stores a new version of a subscription: its current row, changed by `change`.
pub async fn update_subscription(
    ch: &Clickhouse,
    id: &str,
    change: impl FnOnce(&mut SubscriptionRow),
) -> Result<SubscriptionRow, StoreError> {
    let mut row = subscription(ch, id).await?;
    change(&mut row);
    insert_subscription_version(ch, row).await
}

/// Disables a subscription for `why`, unless it changed since `version` (an operator enabled,
/// disabled or deleted it meanwhile: their word stands). `None` when nothing was written.
pub async fn disable_subscription(
    ch: &Clickhouse,
    id: &str,
    version: u64,
    why: &str,
) -> Result<Option<SubscriptionRow>, StoreError> {
    let mut row = match subscription(ch, id).await {
        Ok(row) => row,
        Err(StoreError::NoSuchSubscription(_)) => return Ok(None),
        Err(error) => return Err(error),
    };
    if row.version != version || row.active == 0 {
        return Ok(None);
    }
    row.active = 0;
    row.disabled_reason = why.to_owned();
    insert_subscription_version(ch, row).await.map(Some)
}

/// Stores `row` as the subscription's next version.
async fn insert_subscription_version(
    ch: &Clickhouse,
    mut row: SubscriptionRow,
) -> Result<SubscriptionRow, StoreError> {
    row.version = next_version(row.version);
    ch.insert_one(&ch.table("subscriptions"), &row).await?;
    Ok(row)
}

/// Keeps attempts to deliver notifications in `notification_attempts`.
pub async fn insert_attempts(ch: &Clickhouse, rows: &[AttemptRow]) -> Result<(), StoreError> {
    Ok(ch
        .insert_all(&ch.table("notification_attempts"), rows)
        .await?)
}
