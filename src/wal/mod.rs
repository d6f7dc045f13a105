//! The write-ahead log: every accepted request is here, fsynced, before it is answered 200.
//!
//! Written here rather than taken from a crate (quickwit's `mrecordlog` was the candidate)
//! because hookhouse needs three things from its log that such a crate does not give together:
//! group commit driven by many concurrent HTTP requests with an answer per request; a reader that
//! follows the log while it is written, bounded by the durable position; and recovery that moves
//! unreadable bytes aside instead of failing or silently dropping them. The whole log is a few
//! hundred lines, each part tested on its own and against a model (see `tests` below).
//!
//! - [`record`]: the frame of one request (magic, length, CRC-32C, version byte).
//! - [`segment`]: segment files, reading frames back with resynchronisation, quarantine.
//! - [`log`]: recovery at open, and the appender thread that group-commits.
//! - [`reader`]: the batch writer's view of the log, and deleting segments ClickHouse has.
//! - [`checkpoint`]: how far ClickHouse has confirmed the log, and how far inserts may have gone.
//! - [`lock`]: one data folder, one gateway.
//! - [`lookup`]: one request found in the log, read-only, beside a running gateway.
//!
//! Invariants: a 200 is sent only after the record's bytes are written and (in `always` mode)
//! fsynced; a segment is deleted only when every record in it is at or below the confirmed
//! checkpoint; sequence numbers only grow.

pub mod checkpoint;
pub mod lock;
pub mod log;
pub mod lookup;
pub mod reader;
pub mod record;
pub mod segment;

#[cfg(test)]
mod model_tests;

pub use checkpoint::{Checkpoint, CheckpointFile};
pub use lock::DataDirLock;
pub use log::{AppendError, DurablePos, FsyncMode, Held, Recovery, Shared, Wal, WalConfig};
pub use reader::{release_through, LogReader};
pub use record::{NewRecord, Record};
