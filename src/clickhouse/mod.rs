//! Everything that talks to ClickHouse: the client and its error classes, row types, the
//! statements the writer sends, migrations, and the pipeline and token store. No other module
//! holds SQL text or the raw client.
//!
//! Every statement names its database explicitly (`db.table`), so one client serves before and
//! after `CREATE DATABASE`. The SQL sticks to what ClickHouse 18.16 and current releases share.

pub mod client;
pub mod cluster;
pub mod delivery;
pub mod http_client;
pub mod migrate;
pub mod rows;
pub mod sql;
pub mod store;

pub use client::{ChError, Clickhouse, Failure, ServerFeatures};
pub use delivery::Delivery;
