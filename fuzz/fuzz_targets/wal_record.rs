//! Arbitrary bytes through the log's frame decoder, and back through the encoder. The check is in `../checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::wal_record(data));
