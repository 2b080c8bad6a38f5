#![no_main]
//! See ../checks.rs (`http_bodies`) for what is checked.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::http_bodies(data));
