//! Arbitrary bytes as a request body through `check_body`, against serde_json. The check is in `../checks.rs`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::body_check(data));
