//! The community as the gateway knows it: what a device is and how it is attached, who the
//! residents and the staff are. Domain types, not configuration: config, the roster import and the operations
//! all use them; this module imports nothing of the gateway.

use serde::Deserialize;

/// What a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// One-touch alarm button.
    AlarmButton,
    /// Canteen or handheld card reader.
    CardReader,
    /// Health kiosk.
    HealthKiosk,
}

/// How a device reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// MQTT.
    #[default]
    Mqtt,
    /// A serial port (receiver dongle, RS-485).
    Serial,
}

impl DeviceKind {
    /// The name used in config and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::AlarmButton => "alarm_button",
            DeviceKind::CardReader => "card_reader",
            DeviceKind::HealthKiosk => "health_kiosk",
        }
    }
}

impl Link {
    /// The name used in config and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Mqtt => "mqtt",
            Link::Serial => "serial",
        }
    }
}

/// One resident, from the roster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Resident {
    /// Resident id, e.g. `R00002`.
    pub resident_id: String,
    /// Full name (never logged; masked on displays).
    pub name: String,
    /// Birth date, `YYYY-MM-DD`.
    #[serde(default)]
    pub birth_date: Option<String>,
    /// `;`-separated statuses: 低保, 特困, 失能, 独居.
    #[serde(default)]
    pub statuses: Option<String>,
    /// Building.
    #[serde(default)]
    pub building: Option<String>,
    /// Unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Room.
    #[serde(default)]
    pub room: Option<String>,
    /// Grid (网格), e.g. `G03`.
    #[serde(default)]
    pub grid: Option<String>,
    /// Resident card UID (hex).
    #[serde(default)]
    pub card_id: Option<String>,
}

impl Resident {
    /// True when the roster says the resident lives alone (独居).
    pub fn lives_alone(&self) -> bool {
        self.statuses
            .as_deref()
            .is_some_and(|s| s.split(';').any(|x| x.trim() == "独居"))
    }
}

/// One registered device.
#[derive(Debug, Clone, Deserialize)]
pub struct Device {
    /// Device id, as in its topics.
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// How it connects.
    #[serde(default)]
    pub link: Link,
    /// The resident it belongs to (alarm buttons).
    #[serde(default)]
    pub resident_id: Option<String>,
    /// Where it is.
    #[serde(default)]
    pub location: Option<String>,
    /// Expected heartbeat interval.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: u32,
}

fn default_heartbeat() -> u32 {
    300
}

/// One staff member.
#[derive(Debug, Clone, Deserialize)]
pub struct StaffMember {
    /// Staff id, e.g. `S009`.
    pub id: String,
    /// Name.
    pub name: String,
    /// `grid_worker`, `duty`, `manager`, `canteen_operator`, `admin`.
    pub role: String,
    /// Grid for grid workers.
    #[serde(default)]
    pub grid: Option<String>,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
}
