//! Row types, field for column, as RowBinary writes and reads them.

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

/// One column of request ids, for asking ClickHouse which rows of a batch it already has.
#[derive(Debug, Row, Deserialize)]
pub struct RequestIdRow {
    pub __kdd_request_id: String,
}
