#![no_main]
//! See ../checks.rs (`canteen_rules`) for what is checked.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::canteen_rules(data));
