#![no_main]
//! See ../checks.rs (`mqtt_publish`) for what is checked.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::mqtt_publish(data));
