//! Arbitrary bytes as a segment file, read back by `SegmentCursor`. The check is in `../checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::segment_scan(data));
