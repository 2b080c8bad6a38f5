#![no_main]
//! See ../checks.rs (`config_toml`) for what is checked.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_toml(data));
