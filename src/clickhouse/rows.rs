//! Row types, field for column, as RowBinary writes and reads them.

use std::borrow::Cow;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// A row of `events`. Borrows from the log record it comes from: no copy of the body.
#[derive(Debug, Row, Serialize)]
pub struct EventRow<'a> {
    pub pipeline_id: u64,
    pub __kdd_request_id: &'a str,
    pub __kdd_request_unix_timestamp: f64,
    pub __kdd_requester_key: &'a str,
    pub __kdd_request_body: &'a str,
    pub received_at: u32,
    pub event_type: &'a str,
    pub delivery_id: &'a str,
    pub headers: &'a str,
}

/// A row of `rejected`.
#[derive(Debug, Row, Serialize)]
pub struct RejectedRow<'a> {
    pub pipeline_id: u64,
    pub __kdd_request_id: &'a str,
    pub __kdd_request_unix_timestamp: f64,
    pub __kdd_requester_key: &'a str,
    pub __kdd_request_body: &'a str,
    pub reason: &'a str,
    pub received_at: u32,
    pub event_type: &'a str,
    pub delivery_id: &'a str,
    pub headers: &'a str,
    pub body_as_sent: &'a str,
}

/// A version of a pipeline; the highest version is the pipeline's state.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct PipelineRow {
    pub pipeline_id: u64,
    pub name: String,
    pub active: u8,
    pub created_at: u32,
    pub version: u64,
    /// How its sender signs (`crate::signing::Scheme::name`); empty: not verified.
    pub scheme: String,
    /// The `hmac` scheme's options, as JSON; empty for the others.
    pub scheme_options: String,
    /// One or two secrets, oldest first, each sealed (`crate::signing::SecretsKey::seal`).
    pub secrets: Vec<String>,
    /// The event types kept; empty: all.
    pub event_patterns: Vec<String>,
}

/// A version of a token; the highest version is the token's state.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct TokenRow {
    pub key: String,
    pub name: String,
    pub token_hash: String,
    pub pipelines: Vec<u64>,
    pub revoked: u8,
    pub created_at: u32,
    pub version: u64,
}

/// A version of a notification subscription (CONTRACT §9); the highest version is its state.
/// `Debug` shows neither the sealed secret nor the URL's path and query (they may hold a
/// receiver's credentials).
#[derive(Clone, Row, Serialize, Deserialize)]
pub struct SubscriptionRow {
    pub subscription_id: String,
    pub url: String,
    /// The `whsec_…` secret, sealed (`crate::signing::SecretsKey::seal_for_subscription`).
    pub secret: String,
    /// Empty: every pipeline.
    pub pipelines: Vec<u64>,
    pub event_types: Vec<String>,
    pub active: u8,
    /// Why it was disabled (by an operator, a 410, or failures); empty while active.
    pub disabled_reason: String,
    pub deleted: u8,
    pub created_at: u32,
    pub version: u64,
}

impl std::fmt::Debug for SubscriptionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRow")
            .field("subscription_id", &self.subscription_id)
            .field("url", &crate::notify::message::shown_url(&self.url))
            .field("secret", &"<sealed>")
            .field("pipelines", &self.pipelines)
            .field("event_types", &self.event_types)
            .field("active", &self.active)
            .field("disabled_reason", &self.disabled_reason)
            .field("deleted", &self.deleted)
            .field("created_at", &self.created_at)
            .field("version", &self.version)
            .finish()
    }
}

/// One attempt to deliver a notification.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct AttemptRow {
    pub subscription_id: String,
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub attempt: u32,
    pub status_code: u16,
    pub error: String,
    pub duration_ms: u32,
    pub attempted_at: u32,
}

/// A request found in `events` or `rejected` (`hookhouse request show`).
#[derive(Debug, Row, Deserialize)]
pub struct RequestOutcomeRow {
    /// `events` or `rejected`.
    pub landed_in: String,
    pub pipeline_id: u64,
    pub __kdd_request_unix_timestamp: f64,
    pub __kdd_requester_key: String,
    /// Empty for `events`.
    pub reason: String,
}

/// One column of request ids, for asking ClickHouse which rows of a batch it already has.
#[derive(Debug, Row, Deserialize)]
pub struct RequestIdRow {
    pub __kdd_request_id: String,
}

/// A row of `rejected` as `rejected replay` reads it back.
#[derive(Debug, Row, Deserialize)]
pub struct RejectedReadRow {
    pub pipeline_id: u64,
    pub __kdd_request_id: String,
    pub __kdd_request_unix_timestamp: f64,
    pub __kdd_requester_key: String,
    pub __kdd_request_body: String,
    pub reason: String,
    pub headers: String,
    pub body_as_sent: String,
}

/// A delivery id already in `events` (the redelivery check).
#[derive(Debug, Row, Deserialize)]
pub struct DeliveryRow {
    pub pipeline_id: u64,
    pub delivery_id: String,
    pub __kdd_request_id: String,
    pub received_at: u32,
}

/// One record of a batch on its way to `events` (no reason) or `rejected` (with its reason):
/// what the writer's steps pass to ClickHouse, borrowing from the log record where they can.
#[derive(Debug, Clone)]
pub struct Landing<'a> {
    /// The log record's sequence number (0 for a row that does not come from this gateway's
    /// log, such as a replayed one).
    pub seq: u64,
    pub pipeline_id: u64,
    pub request_id: &'a str,
    pub accepted_at: f64,
    pub key: String,
    /// The JSON text stored (for a form-encoded delivery, its `payload`).
    pub body: Cow<'a, str>,
    /// The bytes a signature covers when they differ from `body`; empty otherwise.
    pub body_as_sent: &'a str,
    pub received_at: u32,
    pub event_type: String,
    pub delivery_id: String,
    /// The request's headers, a JSON object.
    pub headers: &'a str,
    pub reason: Option<&'static str>,
}

impl<'a> Landing<'a> {
    /// A row bound for `events`, with no headers, event type or delivery id yet.
    pub fn new(
        pipeline_id: u64,
        request_id: &'a str,
        accepted_at: f64,
        key: String,
        body: Cow<'a, str>,
    ) -> Landing<'a> {
        Landing {
            seq: 0,
            pipeline_id,
            request_id,
            accepted_at,
            key,
            body,
            body_as_sent: "",
            received_at: accepted_at.clamp(0.0, u32::MAX as f64) as u32,
            event_type: String::new(),
            delivery_id: String::new(),
            headers: "{}",
            reason: None,
        }
    }

    pub fn event_row(&self) -> EventRow<'_> {
        EventRow {
            pipeline_id: self.pipeline_id,
            __kdd_request_id: self.request_id,
            __kdd_request_unix_timestamp: self.accepted_at,
            __kdd_requester_key: &self.key,
            __kdd_request_body: &self.body,
            received_at: self.received_at,
            event_type: &self.event_type,
            delivery_id: &self.delivery_id,
            headers: self.headers,
        }
    }

    pub fn rejected_row(&self, reason: &'static str) -> RejectedRow<'_> {
        RejectedRow {
            pipeline_id: self.pipeline_id,
            __kdd_request_id: self.request_id,
            __kdd_request_unix_timestamp: self.accepted_at,
            __kdd_requester_key: &self.key,
            __kdd_request_body: &self.body,
            reason,
            received_at: self.received_at,
            event_type: &self.event_type,
            delivery_id: &self.delivery_id,
            headers: self.headers,
            body_as_sent: self.body_as_sent,
        }
    }
}

/// The columns the writer writes, with the types it writes them as: a table whose columns no
/// longer take these (changed under a running gateway) refuses every row, which is not the
/// rows' fault.
pub const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("pipeline_id", "UInt64"),
    ("__kdd_request_id", "String"),
    ("__kdd_request_unix_timestamp", "Float64"),
    ("__kdd_requester_key", "String"),
    ("__kdd_request_body", "String"),
    ("received_at", "DateTime"),
    ("event_type", "String"),
    ("delivery_id", "String"),
    ("headers", "String"),
];

/// [`EVENT_COLUMNS`], `reason` and `body_as_sent`.
pub const REJECTED_COLUMNS: &[(&str, &str)] = &[
    ("pipeline_id", "UInt64"),
    ("__kdd_request_id", "String"),
    ("__kdd_request_unix_timestamp", "Float64"),
    ("__kdd_requester_key", "String"),
    ("__kdd_request_body", "String"),
    ("reason", "String"),
    ("received_at", "DateTime"),
    ("event_type", "String"),
    ("delivery_id", "String"),
    ("headers", "String"),
    ("body_as_sent", "String"),
];

/// A column of `system.columns`.
#[derive(Debug, Row, Deserialize)]
pub struct ColumnRow {
    pub table: String,
    pub name: String,
    pub r#type: String,
}
