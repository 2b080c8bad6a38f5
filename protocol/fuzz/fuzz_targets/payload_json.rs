#![no_main]
//! Arbitrary bytes (up to the 4096-byte device limit) as the JSON of every payload the gateway
//! reads from outside: `AlarmMessage`, `Heartbeat`, `DeviceLink` (devices), `Tap` (card readers),
//! `StaffCommand` (staff clients), and `Down`, which firmware reads from the gateway. Decoding
//! must never panic, and an accepted payload must survive serialize → deserialize unchanged.

use eldergate_protocol::payload::{AlarmMessage, DeviceLink, Down, Heartbeat, StaffCommand, Tap};
use eldergate_protocol::MAX_DEVICE_PAYLOAD;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn check<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&v).expect("an accepted payload serializes");
        let back: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
            panic!(
                "{v:?} serialized as {:?} does not parse back: {e}",
                String::from_utf8_lossy(&text)
            )
        });
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_DEVICE_PAYLOAD {
        return; // the gateway dead-letters these unparsed
    }
    check::<AlarmMessage>(data);
    check::<Heartbeat>(data);
    check::<DeviceLink>(data);
    check::<Tap>(data);
    check::<StaffCommand>(data);
    check::<Down>(data);
});
