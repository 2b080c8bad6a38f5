//! Health kiosks (两测): blood pressure, glucose, SpO2, temperature, weight and pulse readings
//! from community health kiosks and volunteers' meters, over MQTT (`tele/{kiosk}/reading`,
//! `tele/{kiosk}/card`) and serial (HEALTH, CARD_TAP from a kiosk; SPEC.md §4, §6.7).
//!
//! - [`units`]: one canonical unit per measure, alternates converted exactly in integers,
//!   physically impossible values refused (dead letter / NAK 7), never stored.
//! - [`rules`]: thresholds and trends as data (defaults from shared/domain/health.md, a rules
//!   file per community, target ranges per resident); blood pressure judged on the mean of the
//!   readings in a window.
//! - [`ops`]: the operations ([`RecordReading`], [`KioskTap`]); [`targets`]: [`SetTarget`].
//! - [`query`]: per-resident history, unassigned readings (readers, for HTTP and the console).
//! - [`fhir`]: FHIR R4 Observations in a Bundle per resident and date range.
//!
//! Guarantees: a reading is answered only after COMMIT; it belongs to the resident the kiosk
//! names, or of the card tapped on that kiosk (a session), or to nobody (kept as unassigned,
//! shown to staff); alerts go through the alert book (one open alert per resident and kind,
//! escalation ladders, channels); readings are activity for the daily check-in; every reading
//! is a `vital_reading` event, forwarded to central exactly once like every event.

pub mod fhir;
pub mod ops;
pub mod query;
pub mod rules;
pub mod targets;
pub mod units;

pub use ops::{KioskTap, RecordReading, VitalInput};
pub use rules::VitalRules;
pub use targets::SetTarget;

/// The domain's settings, provided to the writer (`writer.provide`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Thresholds and trends.
    pub rules: VitalRules,
    /// A kiosk session lasts this long after the card tap (or until the next tap).
    pub session_s: u64,
    /// Blood-pressure readings of one resident within this many seconds are averaged.
    pub bp_window_s: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules: VitalRules::default(),
            session_s: 300,
            bp_window_s: 300,
        }
    }
}
