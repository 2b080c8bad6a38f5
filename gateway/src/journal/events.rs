//! Journal events: what the gateway accepted, in commit order, as forwarded to the central store.

use jiff::Timestamp;

/// One journal event as stored and forwarded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Gateway sequence number.
    pub seq: i64,
    /// Event kind.
    pub kind: String,
    /// Device, if any.
    pub device_id: Option<String>,
    /// Device sequence, if any.
    pub device_seq: Option<i64>,
    /// Alert, if any.
    pub alert_id: Option<i64>,
    /// Gateway receive time (RFC 3339).
    pub received_at: String,
    /// Device time (RFC 3339).
    pub device_time: Option<String>,
    /// JSON body.
    pub body: String,
}

/// An event an operation appends (see `Tx::append`).
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Event kind (`alarm_press`, `meal_settled`, `alert_raised` …).
    pub kind: String,
    /// Device, if any.
    pub device_id: Option<String>,
    /// The device's own sequence number, if the event is a device's.
    pub device_seq: Option<u32>,
    /// Alert, if any.
    pub alert_id: Option<i64>,
    /// Gateway time.
    pub received_at: Timestamp,
    /// The device's clock, if it sent one.
    pub device_time: Option<Timestamp>,
    /// JSON body.
    pub body: String,
}

impl NewEvent {
    /// An event of `kind` at `at` with `body` and nothing else.
    pub fn new(kind: impl Into<String>, at: Timestamp, body: impl Into<String>) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            device_id: None,
            device_seq: None,
            alert_id: None,
            received_at: at,
            device_time: None,
            body: body.into(),
        }
    }

    /// The same, from a device.
    pub fn device(mut self, device: &str) -> NewEvent {
        self.device_id = Some(device.to_string());
        self
    }

    /// The same, about an alert.
    pub fn alert(mut self, alert_id: i64) -> NewEvent {
        self.alert_id = Some(alert_id);
        self
    }
}
