-- Signed senders (CONTRACT §8). Columns are added, never rewritten: a table that already holds
-- rows gets the defaults for them. ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, so the
-- migration runner treats "column already exists" as done (two gateways may race here).

-- What the sender called the event, its own id for the delivery (empty when the scheme has
-- none) and the request's headers as a JSON object (lowercase names; never authorization,
-- cookie or proxy-authorization).
ALTER TABLE {db}.events ADD COLUMN event_type String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN delivery_id String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN headers String DEFAULT '{}';
ALTER TABLE {db}.rejected ADD COLUMN event_type String DEFAULT '';
ALTER TABLE {db}.rejected ADD COLUMN delivery_id String DEFAULT '';
ALTER TABLE {db}.rejected ADD COLUMN headers String DEFAULT '{}';
-- The bytes a signature covers, when they differ from the stored body (GitHub's form-encoded
-- delivery stores the JSON of its `payload`): `rejected replay` checks the signature again.
ALTER TABLE {db}.rejected ADD COLUMN body_as_sent String DEFAULT '';

-- How a pipeline's sender signs: the scheme's name (empty: no verification), its options
-- (the `hmac` scheme's, as JSON), its one or two secrets sealed with AES-256-GCM under
-- HOOKHOUSE_SECRETS_KEY_FILE, oldest first, and the event types it keeps (empty: all).
ALTER TABLE {db}.pipelines ADD COLUMN scheme String DEFAULT '';
ALTER TABLE {db}.pipelines ADD COLUMN scheme_options String DEFAULT '';
ALTER TABLE {db}.pipelines ADD COLUMN secrets Array(String);
ALTER TABLE {db}.pipelines ADD COLUMN event_patterns Array(String);
