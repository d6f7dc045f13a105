//! Arbitrary bytes, read as a query string, through `parse_query`. The check is in `../checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::query_params(data));
