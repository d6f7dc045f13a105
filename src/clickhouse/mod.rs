//! Everything that talks to ClickHouse: the client and its error classes, row types, migrations,
//! and the pipeline and token store.
//!
//! Every statement names its database explicitly (`db.table`), so one client serves before and
//! after `CREATE DATABASE`. The SQL sticks to what ClickHouse 18.16 and current releases share.

pub mod client;
pub mod http_client;
pub mod migrate;
pub mod rows;
pub mod store;

pub use client::{ChError, Clickhouse, Failure};
