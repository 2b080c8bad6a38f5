#![no_main]
//! See ../checks.rs (`roster_csv`) for what is checked.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::roster_csv(data));
