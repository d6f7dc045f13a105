-- Notifications downstream (CONTRACT §9). Subscriptions are versioned rows like pipelines and
-- tokens: every gateway sees one state, and a change (disable, enable, delete, or a gateway
-- disabling a receiver that answers 410 or keeps failing) is an insert of a higher version.
-- `secret` is the `whsec_…` signing secret sealed with AES-256-GCM under
-- HOOKHOUSE_SECRETS_KEY_FILE; `pipelines` empty means every pipeline; `event_types` holds
-- `data.landed`, `request.rejected`, `ping` or `*`.
CREATE TABLE IF NOT EXISTS {db}.subscriptions (
    subscription_id String,
    url String,
    secret String,
    pipelines Array(UInt64),
    event_types Array(String),
    active UInt8,
    disabled_reason String,
    deleted UInt8,
    created_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY subscription_id;

-- Every attempt to deliver a notification, by the gateway that made it: the receiver's status
-- code (0 when it gave none), the error when there was one, and how long it took.
CREATE TABLE IF NOT EXISTS {db}.notification_attempts (
    subscription_id String,
    webhook_id String,
    type String,
    attempt UInt32,
    status_code UInt16,
    error String,
    duration_ms UInt32,
    attempted_at DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMM(attempted_at)
ORDER BY (subscription_id, attempted_at);
