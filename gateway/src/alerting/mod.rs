//! The alerting domain: alerts raised by alarm buttons and by the gateway's own observations,
//! their escalation, and who acknowledged and resolved them.
//!
//! - [`book`]: the open alerts (the writer's state of this domain) and every alert transition
//!   inside the writer's transaction; [`ops`]: the operations the writer runs.
//! - [`escalator`]: walks each unacknowledged alert up its priority's ladder.
//! - [`supervisor`]: device offline / back online, low battery, with a grace period after start
//!   and after broker reconnects; stores heartbeats.
//! - [`checkin`]: the daily check-in of residents living alone.
//! - [`webhooks`]: delivers the webhook outbox, retrying until accepted; [`channels`]: each
//!   channel's preset, secrets and trust roots; [`presets`]: WeCom / DingTalk messages.
//! - [`journal_watch`]: tells staff when the journal was set aside at start or fails its
//!   integrity check (docs/adr/0007).
//!
//! Invariant: every timer here is derived from what the journal holds (alert `raised_at` and
//! `escalation_step`, `checkin_runs`, open alerts), so a restart neither forgets nor double-fires.
//! The watchers observe and ask; the operations decide and record.

pub mod book;
pub mod channels;
pub mod checkin;
pub mod escalator;
pub mod journal_watch;
pub mod ops;
pub mod presets;
pub mod status;
pub mod supervisor;
pub mod webhooks;

pub use book::{alert_from_row, AlertBook};
pub use ops::{AlarmEvent, AlertOutlet, Escalate, Notified, Observe, StaffAction, WebhookResult};

use eldergate_protocol::payload::StaffAlert;

/// How a staff action reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The staff command topic.
    Mqtt,
    /// `POST /api/alerts/{id}/…`.
    Http,
}

impl Via {
    /// Name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mqtt => "mqtt",
            Via::Http => "http",
        }
    }
}

/// What happened to an alarm-button event.
#[derive(Debug, Clone)]
pub struct AlarmOutcome {
    /// The event's gateway sequence number (the original one for a duplicate).
    pub seq: i64,
    /// True when this (device, device sequence) was already journaled with the same content:
    /// re-ack, nothing else.
    pub duplicate: bool,
    /// The seq of an earlier event with the same (device, device sequence) but other content,
    /// when this one reused it (acted on anyway: alarms first).
    pub conflict: Option<i64>,
    /// The alert as it is now, when this event changed one (raised, joined, cancelled).
    pub alert: Option<StaffAlert>,
}

/// Why a staff action was refused. Sent back to the person; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaffRefusal {
    /// No such alert.
    #[error("alert {0} does not exist")]
    UnknownAlert(i64),
    /// `by` is not in the staff registry.
    #[error("{0:?} is not a registered staff id")]
    UnknownStaff(String),
    /// `by`'s role may not act on alerts (a canteen operator, a manager).
    #[error("{by} is a {role}; only admin, duty and grid workers acknowledge or resolve alerts")]
    NotAllowed {
        /// Staff id.
        by: String,
        /// Their role.
        role: &'static str,
    },
    /// The alert is closed.
    #[error("alert {id} is already {state}{}", by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default())]
    Closed {
        /// Alert id.
        id: i64,
        /// Its state.
        state: &'static str,
        /// Who closed it, when a person did.
        by: Option<String>,
    },
    /// Somebody else acknowledged it first.
    #[error("alert {id} was already acknowledged by {by}")]
    AlreadyAcknowledged {
        /// Alert id.
        id: i64,
        /// Who did.
        by: String,
    },
}

/// What the gateway itself observed, raising or resolving alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// No heartbeat for too long, or the device's last will said offline.
    DeviceOffline {
        /// Device id.
        device: String,
        /// What was seen.
        detail: String,
    },
    /// A device marked offline spoke again (resolves the offline alert, gap in the note).
    DeviceOnline {
        /// Device id.
        device: String,
        /// The gap.
        detail: String,
    },
    /// Battery below the threshold (raised once, not every heartbeat).
    LowBattery {
        /// Device id.
        device: String,
        /// Percent.
        pct: u8,
    },
    /// Battery back above the threshold (resolves the low-battery alert).
    BatteryOk {
        /// Device id.
        device: String,
        /// Percent.
        pct: u8,
    },
    /// Free space in the journal's directory fell below `journal.low_disk_mb`: routine data is
    /// being refused; alarms and money are kept with the reserve.
    DiskLow {
        /// The gateway's id (the alert's subject).
        gateway: String,
        /// What was seen.
        detail: String,
    },
    /// Free space is back (resolves the disk alert).
    DiskOk {
        /// The gateway's id.
        gateway: String,
        /// What was seen.
        detail: String,
    },
    /// The journal was corrupt at start: it was set aside at `path` and a new one started.
    JournalReplaced {
        /// Where the old journal is now.
        path: String,
    },
    /// The journal's integrity check found corruption while the gateway runs.
    JournalCorrupt {
        /// What SQLite found.
        detail: String,
    },
    /// The daily check-in deadline passed: these residents living alone showed no activity.
    MissedCheckins {
        /// Local date, `YYYY-MM-DD`.
        local_date: String,
        /// Resident ids.
        residents: Vec<String>,
    },
}
