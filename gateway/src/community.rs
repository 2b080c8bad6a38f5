//! The community as the gateway knows it: what a device is and how it is attached, who the
//! residents and the staff are, and the live roster that holds the residents while the gateway
//! runs. Domain types, not configuration: config, the registry, the roster import and the
//! operations all use them; this module imports nothing of the gateway.

use arc_swap::ArcSwap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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

/// Residents by id.
pub type Residents = BTreeMap<String, Resident>;

/// The live roster, shared by every part of the gateway that reads residents. Cloning shares the
/// same cell: a replacement is seen by all clones at once.
#[derive(Clone, Default)]
pub struct Roster(Arc<ArcSwap<Residents>>);

impl fmt::Debug for Roster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roster({} residents)", self.0.load().len())
    }
}

impl Roster {
    /// A roster holding `residents`.
    pub fn new(residents: Residents) -> Roster {
        Roster(Arc::new(ArcSwap::from_pointee(residents)))
    }

    /// The roster as it is now (a snapshot; a later import does not change it).
    pub fn current(&self) -> Arc<Residents> {
        self.0.load_full()
    }

    /// One resident, as the roster has them now.
    pub fn get(&self, id: &str) -> Option<Resident> {
        self.0.load().get(id).cloned()
    }

    /// True when the resident is on the roster now.
    pub fn contains(&self, id: &str) -> bool {
        self.0.load().contains_key(id)
    }

    /// Replaces the roster. Only the journal writer calls this, after the import committed.
    pub(crate) fn replace(&self, residents: Arc<Residents>) {
        self.0.store(residents);
    }
}
