//! Wire formats of eldergate, and nothing else.
//!
//! This crate knows bytes and schemas only: it never does I/O, never spawns, never allocates
//! unless the `alloc` feature is on (the topic parser works on borrowed `&str` without it), so the
//! same code runs in the gateway, the firmware and the host simulator.
//!
//! - [`topic`]: the versioned MQTT topic scheme (`eldergate/v1/{site}/...`), parsed into borrowed
//!   parts and formatted back. See `MQTT.md` beside this crate.
//! - [`payload`] (feature `alloc`): the JSON payloads every topic carries, as serde types.
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(all(test, not(feature = "openapi")))]
extern crate std;
// utoipa's derives (feature `openapi`, the gateway's OpenAPI document) name std and its macros.
#[cfg(feature = "openapi")]
#[macro_use]
extern crate std;

pub mod serial;
pub mod topic;

#[cfg(feature = "alloc")]
pub mod payload;

/// The version of the MQTT contract this crate speaks: the `v1` topic segment and the `v` field
/// of every payload.
pub const MQTT_VERSION: u8 = 1;

/// Largest MQTT payload the gateway accepts from a device, in bytes. Anything larger is
/// dead-lettered as oversize without being parsed.
pub const MAX_DEVICE_PAYLOAD: usize = 4096;
