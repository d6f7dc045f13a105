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
}

/// A version of a pipeline; the highest version is the pipeline's state.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct PipelineRow {
    pub pipeline_id: u64,
    pub name: String,
    pub active: u8,
    pub created_at: u32,
    pub version: u64,
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

/// One record of a batch on its way to `events` (no reason) or `rejected` (with its reason):
/// what the writer's steps pass to ClickHouse, borrowing the body from the log record (owned
/// only when a form's `payload` had to be decoded: `crate::ingest::stored_body`).
#[derive(Debug, Clone)]
pub struct Landing<'a> {
    pub pipeline_id: u64,
    pub request_id: &'a str,
    pub accepted_at: f64,
    pub key: String,
    pub body: Cow<'a, str>,
    pub received_at: u32,
    pub reason: Option<&'static str>,
}

impl<'a> Landing<'a> {
    pub fn event_row(&self) -> EventRow<'_> {
        EventRow {
            pipeline_id: self.pipeline_id,
            __kdd_request_id: self.request_id,
            __kdd_request_unix_timestamp: self.accepted_at,
            __kdd_requester_key: &self.key,
            __kdd_request_body: &self.body,
            received_at: self.received_at,
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
];

/// [`EVENT_COLUMNS`] and `reason`.
pub const REJECTED_COLUMNS: &[(&str, &str)] = &[
    ("pipeline_id", "UInt64"),
    ("__kdd_request_id", "String"),
    ("__kdd_request_unix_timestamp", "Float64"),
    ("__kdd_requester_key", "String"),
    ("__kdd_request_body", "String"),
    ("reason", "String"),
    ("received_at", "DateTime"),
];

/// A column of `system.columns`.
#[derive(Debug, Row, Deserialize)]
pub struct ColumnRow {
    pub table: String,
    pub name: String,
    pub r#type: String,
}
