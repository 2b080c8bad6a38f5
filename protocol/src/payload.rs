//! JSON payloads of the v1 MQTT contract (see `MQTT.md`).
//!
//! Every payload carries `"v": 1`. Device payloads reject unknown fields: a firmware that sends
//! something the gateway does not understand is told so (dead letter) rather than half-read.
//! Times from devices are Unix milliseconds as the device believes them; the gateway never trusts
//! them for ordering and keeps them only beside its own receive time.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// What the senior did with the button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmAction {
    /// Short press: SOS, call for help.
    Press,
    /// Long press: the senior cancels a press made by mistake.
    Cancel,
    /// Double press: the daily "I am fine" check-in (平安键).
    Checkin,
}

/// `eldergate/v1/{site}/alarm/{device}`: one alarm-button event.
///
/// The device increments `seq` for each new event and reuses it when it retransmits; it
/// retransmits until it receives a [`Down::Ack`] with the same `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmMessage {
    /// Contract version, always 1.
    pub v: u8,
    /// Per-device sequence number of this event.
    pub seq: u32,
    /// What happened.
    pub action: AlarmAction,
    /// The device's own clock, Unix milliseconds, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// `eldergate/v1/{site}/tele/{device}/heartbeat`: the device is alive (QoS 0, never acked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Contract version, always 1.
    pub v: u8,
    /// Battery voltage in millivolts, if the device measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<u16>,
    /// Battery charge in percent (0–100), if the device estimates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
    /// Radio signal strength in dBm, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i16>,
    /// The device's own clock, Unix milliseconds, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// `eldergate/v1/{site}/down/{device}`: what the gateway tells a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Down {
    /// The event with this `seq` is durably committed; stop retransmitting it.
    Ack {
        /// Contract version, always 1.
        v: u8,
        /// The acknowledged sequence number.
        seq: u32,
    },
    /// A card reader's answer to a tap (after the settlement is committed): what to show.
    Display {
        /// Contract version, always 1.
        v: u8,
        /// The tap's sequence number.
        seq: u32,
        /// Outcome.
        result: TapResult,
        /// The resident's name, masked (张*华), when the card is known.
        name: Option<String>,
        /// Price, fen.
        price_fen: i64,
        /// Subsidy, fen.
        subsidy_fen: i64,
        /// Paid by the resident, fen.
        payable_fen: i64,
        /// Balance after the meal (`paid`) or now (the other results), fen. For `unknown_card`,
        /// `lost_card` and a `refused` without a name it is 0 meaning "not shown": the reader
        /// shows "—", not ¥0.00 (MQTT.md, SPEC.md §6.4).
        balance_fen: i64,
    },
    /// A health kiosk's answer to a reading or a card tap, after commit: what to show.
    Reading {
        /// Contract version, always 1.
        v: u8,
        /// The reading's (or the card tap's) sequence number.
        seq: u32,
        /// Outcome.
        result: ReadingResult,
        /// The resident's name, masked (张*华), when the reading or card is a known resident's.
        name: Option<String>,
    },
}

/// What became of a kiosk reading or card tap (SPEC.md §6.7 has the serial codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingResult {
    /// Stored for the resident named.
    Stored,
    /// Stored, and it raised an alert: the kiosk shows "please see the staff".
    SeeStaff,
    /// Stored without a resident (no card tapped, none named): staff will assign it.
    Unassigned,
    /// A card tap opened a session: the next readings from this kiosk are this resident's.
    SessionOpened,
    /// The card belongs to nobody on the roster; no session.
    UnknownCard,
}

impl ReadingResult {
    /// The READING_RESULT code of the serial protocol.
    pub fn code(self) -> u8 {
        crate::serial::ReadingResultCode::from(self).code()
    }
}

/// What a kiosk measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Blood pressure: `value` systolic, `value2` diastolic.
    BloodPressure,
    /// Capillary blood glucose.
    Glucose,
    /// Oxygen saturation (SpO2).
    Spo2,
    /// Body temperature.
    Temperature,
    /// Body weight.
    Weight,
    /// Pulse (heart rate).
    Pulse,
}

/// When a glucose reading was taken, or a blood pressure's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingContext {
    /// Glucose: fasting.
    Fasting,
    /// Glucose: after a meal.
    AfterMeal,
    /// Glucose: random.
    Random,
    /// Blood pressure: sitting.
    Sitting,
    /// Blood pressure: standing.
    Standing,
    /// Blood pressure: lying.
    Lying,
}

/// Which arm a blood pressure was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// Left arm.
    Left,
    /// Right arm.
    Right,
}

/// `eldergate/v1/{site}/tele/{kiosk}/reading`: one measurement from a health kiosk (QoS 1). The
/// kiosk retransmits (same `seq`) until it gets a `Down::Reading` with that `seq`.
///
/// Values are decimal strings (`"142"`, `"7.8"`, `"98.6"`), never JSON numbers: the gateway
/// converts them exactly, without floating point (MQTT.md lists the units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// Contract version, always 1.
    pub v: u8,
    /// Per-kiosk sequence number.
    pub seq: u32,
    /// What was measured.
    pub measure: Measure,
    /// The value (systolic for blood pressure), a decimal string with at most two decimals.
    pub value: String,
    /// Diastolic, for blood pressure only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value2: Option<String>,
    /// The unit as the device measured, e.g. `mmHg`, `kPa`, `mmol/L`, `mg/dL`, `%`, `Cel`,
    /// `degF`, `kg`, `lb`, `/min`.
    pub unit: String,
    /// Glucose: fasting / after_meal / random; blood pressure: sitting / standing / lying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReadingContext>,
    /// Blood pressure: which arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<Arm>,
    /// The resident, when the kiosk knows them (e.g. chosen on its screen); else the card
    /// tapped on this kiosk binds the reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident: Option<String>,
    /// When the device measured, Unix ms by its clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// `eldergate/v1/{site}/tele/{kiosk}/card`: a resident card tapped on a health kiosk (QoS 1):
/// opens a kiosk session. Answered with a `Down::Reading` (`session_opened` / `unknown_card`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KioskCard {
    /// Contract version, always 1.
    pub v: u8,
    /// Per-kiosk sequence number (shared with its readings).
    pub seq: u32,
    /// Card UID, hex, as printed in the roster.
    pub card: String,
    /// The kiosk's clock, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// The outcome of a card tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapResult {
    /// Settled and paid.
    Paid,
    /// The card is not bound to any resident.
    UnknownCard,
    /// The card was reported lost.
    LostCard,
    /// No meal period now.
    OutsideMealPeriod,
    /// The balance does not cover what the resident must pay.
    InsufficientBalance,
    /// The period has no menu price and the reader sent none.
    NoPrice,
    /// Refused: a price outside the rules' limits, a `delivered_by` that is not staff, a seq
    /// reused for another card: "please see staff".
    Refused,
}

impl TapResult {
    /// The DISPLAY result code of the serial protocol (SPEC.md §6.4).
    pub fn code(self) -> u8 {
        crate::serial::DisplayResult::from(self).code()
    }
}

/// `eldergate/v1/{site}/tap/{reader}`: a resident card tapped at a canteen or delivery reader.
/// The reader retransmits (same `seq`) until it gets a `Down::Display` with that `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    /// Contract version, always 1.
    pub v: u8,
    /// Per-reader sequence number.
    pub seq: u32,
    /// Card UID, hex, as printed in the roster (e.g. `1DDCCF2D`).
    pub card: String,
    /// Price entered at the counter, fen; the period's menu price when absent.
    #[serde(default)]
    pub price_fen: Option<i64>,
    /// Staff id of the delivery worker, for meals delivered to the door (上门送餐).
    #[serde(default)]
    pub delivered_by: Option<String>,
    /// The reader's clock, Unix ms.
    #[serde(default)]
    pub ts: Option<i64>,
    /// The card's MAC over this tap, 16 hex digits, when the reader computes one (the scheme is
    /// in the gateway's docs/CANTEEN.md); a mismatch is refused as a cloned card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// How urgent an alert is (IEC 60601-1-8 style: three levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Low battery and similar maintenance matters.
    Low,
    /// Device offline, missed check-in.
    Medium,
    /// SOS press.
    High,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised; nobody has acknowledged it yet.
    Raised,
    /// A staff member has taken it.
    Acknowledged,
    /// Closed by staff.
    Resolved,
    /// Cancelled by the senior (long press) before anyone acknowledged it.
    Cancelled,
}

/// `eldergate/v1/{site}/tele/{device}/status`: online/offline, typically the device's MQTT last
/// will (`{"v":1,"online":false}`, retained) and its first message after connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLink {
    /// Contract version, always 1.
    pub v: u8,
    /// True when the device says it is connected.
    pub online: bool,
}

impl AlertState {
    /// The lowercase name used in JSON and in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
            AlertState::Cancelled => "cancelled",
        }
    }

    /// Parses the name written by [`AlertState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "raised" => AlertState::Raised,
            "acknowledged" => AlertState::Acknowledged,
            "resolved" => AlertState::Resolved,
            "cancelled" => AlertState::Cancelled,
            _ => return None,
        })
    }

    /// True while staff still have something to do.
    pub fn is_open(self) -> bool {
        matches!(self, AlertState::Raised | AlertState::Acknowledged)
    }
}

/// `eldergate/v1/{site}/staff/alerts`: an alert as staff see it, sent when it is raised and on
/// every change (another press joined it, acknowledged, resolved, cancelled). Receivers key on
/// `alert_id` and keep the latest; the same message may arrive twice (QoS 1, or republished after
/// a gateway restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaffAlert {
    /// Contract version, always 1.
    pub v: u8,
    /// Gateway-wide alert id; use it to acknowledge.
    pub alert_id: i64,
    /// What kind of alert, e.g. `sos`.
    pub kind: String,
    /// How urgent.
    pub priority: Priority,
    /// Current state.
    pub state: AlertState,
    /// What changed to cause this message: `raised`, `joined`, `escalated`, `acknowledged`,
    /// `resolved`, `cancelled`, `republished`.
    pub change: String,
    /// The device that raised it.
    pub device_id: String,
    /// The resident the device belongs to, if registered.
    pub resident_id: Option<String>,
    /// Where the device is (building, unit, room).
    pub location: Option<String>,
    /// The resident's name, masked (张*华), if the roster is configured.
    #[serde(default)]
    pub resident_name: Option<String>,
    /// What the gateway observed, e.g. "no heartbeat for 900 s", "battery 12%".
    #[serde(default)]
    pub detail: Option<String>,
    /// The escalation step this message belongs to (0 = first).
    #[serde(default)]
    pub step: u32,
    /// How many presses joined this alert.
    pub press_count: i64,
    /// When the gateway received the first press, RFC 3339 UTC.
    pub raised_at: String,
    /// Staff ids to tell.
    pub notify: Vec<String>,
    /// Who acknowledged, when, how, and their note.
    pub acknowledged: Option<StaffAction>,
    /// Who resolved, when, how, and their note.
    pub resolved: Option<StaffAction>,
}

/// A staff member's action on an alert, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaffAction {
    /// Staff id.
    pub by: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// `mqtt` or `http`.
    pub via: String,
    /// Free text, e.g. "visited, resident fell, called 120".
    pub note: Option<String>,
}

/// What a staff command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffVerb {
    /// "I have it": stops further notifications.
    Ack,
    /// "It is dealt with": closes the alert.
    Resolve,
}

/// `eldergate/v1/{site}/staff/cmd/{staff}`: a staff member acknowledges or resolves an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffCommand {
    /// Contract version, always 1.
    pub v: u8,
    /// What to do.
    pub cmd: StaffVerb,
    /// Which alert.
    pub alert_id: i64,
    /// Staff id of the person acting. The actor is the topic's `{staff}`; `by` may be left out,
    /// and a command whose `by` names anyone else is refused.
    #[serde(default)]
    pub by: Option<String>,
    /// Optional note.
    #[serde(default)]
    pub note: Option<String>,
    /// Echoed in the result so a client can match it.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `eldergate/v1/{site}/staff/results`: the outcome of one [`StaffCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffCommandResult {
    /// Contract version, always 1.
    pub v: u8,
    /// The command's `request_id`, if it had one.
    pub request_id: Option<String>,
    /// The alert the command named.
    pub alert_id: i64,
    /// True when the command took effect (or had already, by the same person).
    pub ok: bool,
    /// Why not, when `ok` is false.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_message_matches_the_documented_example() {
        let m: AlarmMessage =
            serde_json::from_str(r#"{"v":1,"seq":42,"action":"press","ts":1763900000000}"#)
                .unwrap();
        assert_eq!(m.seq, 42);
        assert_eq!(m.action, AlarmAction::Press);
    }

    #[test]
    fn unknown_fields_in_device_payloads_are_rejected() {
        assert!(serde_json::from_str::<AlarmMessage>(
            r#"{"v":1,"seq":1,"action":"press","colour":"red"}"#
        )
        .is_err());
    }

    #[test]
    fn ack_is_tagged_with_its_type() {
        let s = serde_json::to_string(&Down::Ack { v: 1, seq: 9 }).unwrap();
        assert_eq!(s, r#"{"type":"ack","v":1,"seq":9}"#);
    }

    #[test]
    fn staff_command_matches_the_documented_example() {
        let c: StaffCommand = serde_json::from_str(
            r#"{"v":1,"cmd":"ack","alert_id":7,"by":"S009","note":"on my way","request_id":"r1"}"#,
        )
        .unwrap();
        assert_eq!(c.cmd, StaffVerb::Ack);
        assert_eq!(c.by.as_deref(), Some("S009"));
    }
}
