//! hookhouse: a webhook ingestion gateway into ClickHouse.
//!
//! The path of one webhook, module by module:
//!
//! 1. [`http`]: `POST /?pipeline_id=…&key=…&token=…` arrives at the edge.
//! 2. [`ingest`]: parameters and body are checked in the contract's order and become typed values.
//! 3. [`wal`]: the request is appended to the write-ahead log; the group commit fsyncs it with
//!    its neighbours, and only then does the edge answer 200.
//! 4. [`writer`]: a background task follows the log, re-checks credentials, batches, and inserts.
//! 5. [`clickhouse`]: RowBinary inserts into `events` or `rejected`; the checkpoint moves after.
//!
//! Around them: [`config`] (settings), [`startup`] (wiring and ordered shutdown), [`cli`] (the
//! operator's commands), [`events`] (each thing that happens, logged and counted in one place).

pub mod cli;
pub mod clickhouse;
pub mod config;
pub mod credentials;
pub mod error_chain;
pub mod events;
pub mod http;
pub mod ingest;
pub mod notify;
pub mod shutdown;
pub mod signing;
pub mod startup;
pub mod telemetry;
pub mod wal;
pub mod writer;

pub use config::Settings;
pub use startup::Application;
