//! One door for device input, whatever the transport: MQTT ([`crate::ingest`]) and serial
//! ([`crate::serial`]) decode their bytes into an [`Uplink`] and hand it to [`Intake::accept`],
//! which checks registration, the device's kind and link, and the contract version, tells device
//! supervision, and routes the uplink to its domain's operation. Transports only decode and
//! encode; what is accepted cannot drift between them.
//!
//! Invariants:
//! - Anything that cannot be accepted is a [`Rejection`] with a reason; the transport turns it
//!   into a dead letter ([`Intake::dead_letter`]: a log line, a counter, a row) and, on serial,
//!   a NAK.
//! - Dedupe by (device, device sequence) happens in the operations, inside the writer's
//!   transaction (an alarm's recent keys, a tap's `taps` row), never here.
//! - Heartbeats are coalesced per device and stored every few seconds (bulk lane), never acked.

use crate::alerting::status::{DeviceStatus, RecordStatus};
use crate::alerting::supervisor::Seen;
use crate::alerting::{AlarmEvent, AlarmOutcome};
use crate::canteen::CardTap;
use crate::community::{DeviceKind, Link};
use crate::health::DiskGuard;
use crate::journal::{format_ts, Journal, Lane, OpError, Operation, Tx, Waiting};
use crate::registry::Registry;
use crate::vitals::{units, KioskTap, RecordReading, VitalInput};
use eldergate_protocol::payload::{AlarmAction, Down, Reading, Tap};
use eldergate_protocol::{MAX_DEVICE_PAYLOAD, MQTT_VERSION};
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why an input was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason, also the metric label and the dead-letter `reason`.
    pub reason: &'static str,
    /// What was wrong, for people.
    pub detail: String,
}

/// A rejection with a reason and a detail.
pub fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// What a device sent, decoded by its transport.
#[derive(Debug, Clone)]
pub enum UplinkBody {
    /// An alarm button's event.
    Alarm {
        /// Press, cancel or check-in.
        action: AlarmAction,
        /// The device's clock, when it sent a usable one.
        device_time: Option<Timestamp>,
        /// What was wrong with optional fields (never a reason to drop an alarm).
        anomaly: Option<String>,
    },
    /// A heartbeat.
    Heartbeat {
        /// Battery voltage.
        battery_mv: Option<u16>,
        /// Battery percent (0–100).
        battery_pct: Option<u8>,
        /// Signal strength.
        rssi: Option<i16>,
    },
    /// A card tap at a reader.
    Tap(Tap),
    /// The device's own online/offline status (its MQTT last will).
    Link {
        /// Online?
        online: bool,
    },
    /// A health kiosk's reading, as sent (units are checked by intake, one place for every
    /// transport).
    Reading(Reading),
    /// A resident card tapped on a health kiosk: opens a kiosk session.
    KioskCard {
        /// Card id (hex UID as in the roster).
        card: String,
    },
}

impl UplinkBody {
    /// The device kinds that may send this.
    fn allowed(&self, kind: DeviceKind) -> bool {
        match self {
            UplinkBody::Alarm { .. } => kind == DeviceKind::AlarmButton,
            UplinkBody::Tap(_) => kind == DeviceKind::CardReader,
            UplinkBody::Reading(_) | UplinkBody::KioskCard { .. } => {
                kind == DeviceKind::HealthKiosk
            }
            UplinkBody::Heartbeat { .. } | UplinkBody::Link { .. } => true,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            UplinkBody::Alarm { .. } => "alarm",
            UplinkBody::Heartbeat { .. } => "heartbeat",
            UplinkBody::Tap(_) => "card tap",
            UplinkBody::Link { .. } => "link status",
            UplinkBody::Reading(_) => "health reading",
            UplinkBody::KioskCard { .. } => "kiosk card tap",
        }
    }
}

/// One device message, from any transport.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// Device id as it named itself (topic or frame header).
    pub device: String,
    /// The link it came over.
    pub link: Link,
    /// Contract version of the message.
    pub version: u8,
    /// The device's sequence number, when the message has one.
    pub seq: Option<u32>,
    /// What it says.
    pub body: UplinkBody,
    /// Gateway receive time.
    pub received_at: Timestamp,
}

/// What the transport must do once the uplink is accepted.
pub enum Accepted {
    /// Ack the device after this commit (`Down::Ack`, an ACK frame).
    Alarm(Waiting<AlarmOutcome>),
    /// Answer the reader after this commit (`Down::Display`, a DISPLAY frame).
    Tap(Waiting<Down>),
    /// Nothing to answer (heartbeats, link status).
    Nothing,
}

/// Input the gateway could not accept, kept for people to read.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// When it arrived.
    pub received_at: Timestamp,
    /// Topic, port or path.
    pub source: String,
    /// Short machine-readable reason (also the metric label).
    pub reason: &'static str,
    /// What was wrong, for people.
    pub detail: String,
    /// The bytes (truncated to [`MAX_DEVICE_PAYLOAD`]).
    pub payload: Vec<u8>,
    /// Full length of the payload.
    pub payload_len: usize,
}

impl Operation for DeadLetter {
    type Answer = ();
    const NAME: &'static str = "dead_letter";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO dead_letters (received_at, source, reason, detail, payload, payload_len)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(format_ts(self.received_at))
            .bind(&self.source)
            .bind(self.reason)
            .bind(&self.detail)
            .bind(&self.payload)
            .bind(i64::try_from(self.payload_len).unwrap_or(i64::MAX))
            .execute(tx.conn())
            .await?;
            Ok(())
        })
    }
}

/// A reading's units and plausibility, checked (vitals/units.rs): an unknown unit or an
/// impossible value is a rejection (`unknown_unit`, `implausible`, `malformed`), never stored.
pub fn vital_input(r: &Reading) -> Result<VitalInput, Rejection> {
    let measurement = units::measurement(r.measure, &r.value, r.value2.as_deref(), &r.unit)
        .map_err(|e| reject(e.reason(), e.to_string()))?;
    let value_in = match &r.value2 {
        Some(v2) => format!("{}/{} {}", r.value, v2, r.unit),
        None => format!("{} {}", r.value, r.unit),
    };
    let device_time = r.ts.and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let resident = match r.resident.as_deref() {
        Some(id) if id.is_empty() || id.len() > 64 => {
            return Err(reject(
                "malformed",
                "resident is empty or longer than 64 bytes",
            ))
        }
        other => other.map(str::to_string),
    };
    Ok(VitalInput {
        measurement,
        value_in: value_in.chars().take(64).collect(),
        context: r.context,
        arm: r.arm,
        resident,
        device_time,
    })
}

/// The checks every uplink passes, whatever its transport: contract version, registration,
/// the device's link and kind.
pub fn check(registry: &Registry, up: &Uplink) -> Result<(), Rejection> {
    if up.version != MQTT_VERSION {
        return Err(reject(
            "unknown_version",
            format!(
                "message version {} is not supported; this gateway speaks v{MQTT_VERSION}",
                up.version
            ),
        ));
    }
    let Some(device) = registry.devices.get(&up.device) else {
        return Err(reject(
            "unknown_device",
            format!("device {} is not registered; add it under [[devices]] or to device_csv in the config", up.device),
        ));
    };
    if device.link != up.link {
        return Err(reject(
            "wrong_link",
            format!(
                "device {} is registered on the {} link but spoke over {}; fix its `link` in the device registry",
                up.device,
                device.link.as_str(),
                up.link.as_str()
            ),
        ));
    }
    if !up.body.allowed(device.kind) {
        return Err(reject(
            "wrong_device_kind",
            format!(
                "device {} is a {}; it may not send a {}",
                up.device,
                device.kind.as_str(),
                up.body.name()
            ),
        ));
    }
    Ok(())
}

/// The acceptance path shared by every transport.
#[derive(Clone)]
pub struct Intake {
    /// Registry.
    pub registry: Arc<Registry>,
    /// Journal.
    pub journal: Journal,
    /// Device supervision hears of every accepted device message.
    pub seen: mpsc::UnboundedSender<Seen>,
    latest: Arc<Mutex<HashMap<String, DeviceStatus>>>,
    disk: Option<Arc<DiskGuard>>,
}

impl Intake {
    /// The intake; spawn [`Intake::flush_heartbeats`] beside it.
    pub fn new(
        registry: Arc<Registry>,
        journal: Journal,
        seen: mpsc::UnboundedSender<Seen>,
    ) -> Intake {
        Intake {
            registry,
            journal,
            seen,
            latest: Arc::default(),
            disk: None,
        }
    }

    /// Sheds routine data (heartbeats, dead-letter rows) while `disk` says space is low.
    pub fn with_disk(mut self, disk: Arc<DiskGuard>) -> Intake {
        self.disk = Some(disk);
        self
    }

    fn disk_low(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.is_low())
    }

    /// Checks an uplink and routes it to its domain. A rejection is not yet kept: the caller
    /// keeps it with [`Intake::dead_letter`] (it has the raw bytes).
    pub async fn accept(&self, up: Uplink) -> Result<Accepted, Rejection> {
        check(&self.registry, &up)?;
        let battery = match &up.body {
            UplinkBody::Heartbeat { battery_pct, .. } => *battery_pct,
            _ => None,
        };
        let seen = match &up.body {
            UplinkBody::Link { online: false } => Seen::Gone {
                device: up.device.clone(),
            },
            _ => Seen::Activity {
                device: up.device.clone(),
                battery_pct: battery,
            },
        };
        match up.body {
            UplinkBody::Alarm {
                action,
                device_time,
                anomaly,
            } => {
                let Some(device_seq) = up.seq else {
                    return Err(reject("malformed", "an alarm needs a sequence number"));
                };
                let _ = self.seen.send(seen);
                let op = AlarmEvent {
                    device: up.device,
                    device_seq,
                    action,
                    device_time,
                    anomaly,
                    received_at: up.received_at,
                };
                Ok(Accepted::Alarm(
                    self.journal.submit_until_committed(op).await,
                ))
            }
            UplinkBody::KioskCard { card } => {
                let Some(device_seq) = up.seq else {
                    return Err(reject("malformed", "a card tap needs a sequence number"));
                };
                let _ = self.seen.send(seen);
                let op = KioskTap {
                    kiosk: up.device,
                    device_seq,
                    card,
                    received_at: up.received_at,
                };
                Ok(Accepted::Tap(self.journal.submit_until_committed(op).await))
            }
            UplinkBody::Reading(reading) => {
                let Some(device_seq) = up.seq else {
                    return Err(reject("malformed", "a reading needs a sequence number"));
                };
                let input = vital_input(&reading)?;
                let _ = self.seen.send(seen);
                let op = RecordReading::new(up.device, device_seq, input, up.received_at);
                Ok(Accepted::Tap(self.journal.submit_until_committed(op).await))
            }
            UplinkBody::Tap(tap) => {
                if self.registry.canteen.is_none() {
                    return Err(reject(
                        "unsupported_type",
                        "no [canteen] is configured on this gateway",
                    ));
                }
                // A `delivered_by` that is not staff is refused by the operation itself, with an
                // answer the handheld can show (settle.rs), not only a dead letter.
                let _ = self.seen.send(seen);
                let op = CardTap {
                    reader: up.device,
                    tap,
                    received_at: up.received_at,
                };
                Ok(Accepted::Tap(self.journal.submit_until_committed(op).await))
            }
            UplinkBody::Heartbeat {
                battery_mv,
                battery_pct,
                rssi,
            } => {
                if battery_pct.is_some_and(|p| p > 100) {
                    return Err(reject("malformed", "battery_pct is above 100"));
                }
                let _ = self.seen.send(seen);
                if self.disk_low() {
                    // Supervision still heard it; only the stored status is skipped.
                    metrics::counter!("eldergate_shed_total", "what" => "heartbeat").increment(1);
                    return Ok(Accepted::Nothing);
                }
                if let Ok(mut m) = self.latest.lock() {
                    m.insert(
                        up.device.clone(),
                        DeviceStatus {
                            device_id: up.device,
                            last_seen: up.received_at,
                            battery_mv,
                            battery_pct,
                            rssi,
                        },
                    );
                }
                Ok(Accepted::Nothing)
            }
            UplinkBody::Link { .. } => {
                let _ = self.seen.send(seen);
                Ok(Accepted::Nothing)
            }
        }
    }

    /// Keeps bad input: one log line, one counter, one dead-letter row (bulk lane); the receiver
    /// resolves after commit (MQTT's PUBACK waits for it).
    pub async fn dead_letter(&self, source: &str, payload: &[u8], r: &Rejection) -> Waiting<()> {
        metrics::counter!("eldergate_rejected_total", "reason" => r.reason).increment(1);
        tracing::warn!(source, reason = r.reason, detail = %r.detail, bytes = payload.len(), "input rejected; kept as a dead letter");
        if self.disk_low() {
            metrics::counter!("eldergate_shed_total", "what" => "dead_letter").increment(1);
            tracing::warn!(
                source,
                reason = r.reason,
                "disk space is low: the dead-letter row is not kept (counted)"
            );
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Ok(()));
            return rx;
        }
        let keep = payload.len().min(MAX_DEVICE_PAYLOAD);
        self.journal
            .submit_until_committed(DeadLetter {
                received_at: Timestamp::now(),
                source: source.to_string(),
                reason: r.reason,
                detail: r.detail.clone(),
                payload: payload[..keep].to_vec(),
                payload_len: payload.len(),
            })
            .await
    }

    /// Stores the latest heartbeats every few seconds until the journal closes; call
    /// [`Intake::flush_once`] at shutdown.
    pub async fn flush_heartbeats(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            self.flush_once().await;
        }
    }

    /// Stores the heartbeats held now, in small operations so that no single bulk transaction
    /// holds an alarm up for long.
    pub async fn flush_once(&self) {
        let mut batch: Vec<DeviceStatus> = match self.latest.lock() {
            Ok(mut m) => m.drain().map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(256));
            self.journal.tell(RecordStatus(batch)).await;
            batch = rest;
        }
    }
}
