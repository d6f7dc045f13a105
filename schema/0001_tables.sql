-- Accepted requests whose credentials held. Partitioned by month and ordered for the usual
-- question: one pipeline over a time range.
CREATE TABLE IF NOT EXISTS {db}.events (
    pipeline_id UInt64,
    __kdd_request_id String,
    __kdd_request_unix_timestamp Float64,
    __kdd_requester_key String,
    __kdd_request_body String,
    received_at DateTime DEFAULT toDateTime(toUInt32(__kdd_request_unix_timestamp))
) ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (pipeline_id, received_at);

-- Accepted requests that failed the write-time credential check, or that ClickHouse refused for
-- good, with the reason.
CREATE TABLE IF NOT EXISTS {db}.rejected (
    pipeline_id UInt64,
    __kdd_request_id String,
    __kdd_request_unix_timestamp Float64,
    __kdd_requester_key String,
    __kdd_request_body String,
    reason String,
    received_at DateTime DEFAULT toDateTime(toUInt32(__kdd_request_unix_timestamp))
) ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (received_at, pipeline_id);

-- Pipelines and tokens are versioned rows: a change is an insert with a higher version, read
-- with FINAL, so every gateway sharing this ClickHouse sees the same state.
CREATE TABLE IF NOT EXISTS {db}.pipelines (
    pipeline_id UInt64,
    name String,
    active UInt8,
    created_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY pipeline_id;

-- Only the SHA-256 of a token is stored. An empty `pipelines` array means every pipeline.
CREATE TABLE IF NOT EXISTS {db}.tokens (
    key String,
    name String,
    token_hash String,
    pipelines Array(UInt64),
    revoked UInt8,
    created_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY key;
