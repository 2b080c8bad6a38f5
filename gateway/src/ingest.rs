//! MQTT ingest: turns publishes into journal commands, and acks only after commit.
//!
//! Two connections, two tasks each (handler → FIFO acker):
//! - the **alarm** connection carries `alarm/#` and `staff/cmd`; its commands go to the journal's
//!   alarm lane;
//! - the **telemetry** connection carries `tele/#` (heartbeats), which are coalesced in memory and
//!   flushed every few seconds on the bulk lane.
//!
//! Invariants:
//! - A device's `Down::Ack` and the broker's PUBACK are sent only after the journal answered that
//!   the event is committed. The acker handles publishes in arrival order, so PUBACKs keep MQTT's
//!   ordering rule.
//! - Anything that cannot be accepted becomes a [`Rejection`]: one log line, one counter
//!   (`eldergate_rejected_total{reason}`), one dead-letter row; the PUBACK waits for that row.
//! - Nothing here panics on input.

use crate::alerting::supervisor::Seen;
use crate::config::DeviceKind;
use crate::journal::{
    AlarmOutcome, DeadLetter, DeviceStatus, Journal, JournalError, StaffResult, Via,
};
use crate::registry::Registry;
use eldergate_protocol::payload::{
    AlarmMessage, DeviceLink, Down, Heartbeat, StaffCommand, StaffCommandResult, Tap,
};
use eldergate_protocol::topic::{self, TopicError, UpTopic};
use eldergate_protocol::{MAX_DEVICE_PAYLOAD, MQTT_VERSION};
use jiff::Timestamp;
use rumqttc::{AsyncClient, Publish, QoS};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The next publish, or None once `stop` turns true (what is not taken stays unacked at the
/// broker and is redelivered to our persistent session).
async fn next(
    incoming: &mut mpsc::Receiver<Publish>,
    mut stop: watch::Receiver<bool>,
) -> Option<Publish> {
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        p = incoming.recv() => p,
        _ = stop.changed() => None,
    }
}

/// Why an input was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason, also the metric label and the dead-letter `reason`.
    pub reason: &'static str,
    /// What was wrong, for people.
    pub detail: String,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// Decodes a JSON payload, telling a wrong `v` apart from malformed JSON.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    if payload.len() > MAX_DEVICE_PAYLOAD {
        return Err(reject(
            "oversize",
            format!(
                "payload is {} bytes; the limit is {MAX_DEVICE_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    match serde_json::from_slice::<T>(payload) {
        Ok(v) => Ok(v),
        Err(e) => {
            #[derive(serde::Deserialize)]
            struct Versioned {
                v: serde_json::Value,
            }
            if let Ok(Versioned { v }) = serde_json::from_slice::<Versioned>(payload) {
                if v != MQTT_VERSION {
                    return Err(reject(
                        "unknown_version",
                        format!("payload version {v} is not supported; this gateway speaks v{MQTT_VERSION}"),
                    ));
                }
            }
            Err(reject(
                "malformed_json",
                format!("payload does not match the v1 schema: {e}"),
            ))
        }
    }
}

fn check_version(v: u8) -> Result<(), Rejection> {
    if v == MQTT_VERSION {
        Ok(())
    } else {
        Err(reject(
            "unknown_version",
            format!("payload version {v} is not supported; this gateway speaks v{MQTT_VERSION}"),
        ))
    }
}

fn topic_rejection(e: TopicError) -> Rejection {
    let reason = match e {
        TopicError::UnknownVersion => "unknown_version",
        _ => "bad_topic",
    };
    reject(reason, e.to_string())
}

/// What an alarm-connection publish is, once checked.
#[derive(Debug)]
pub enum AlarmInput {
    /// A registered alarm button's event.
    Device(String, AlarmMessage),
    /// A staff command.
    Staff(StaffCommand),
}

/// Checks a publish from the alarm connection against the contract and the registry.
pub fn classify_alarm(
    reg: &Registry,
    topic_str: &str,
    payload: &[u8],
) -> Result<AlarmInput, Rejection> {
    let t = topic::parse_up(topic_str).map_err(topic_rejection)?;
    match t {
        UpTopic::Alarm { site, device } => {
            check_site(reg, site)?;
            check_device(reg, device, Some(DeviceKind::AlarmButton))?;
            let msg: AlarmMessage = decode(payload)?;
            check_version(msg.v)?;
            Ok(AlarmInput::Device(device.to_string(), msg))
        }
        UpTopic::StaffCommand { site } => {
            check_site(reg, site)?;
            let cmd: StaffCommand = decode(payload)?;
            check_version(cmd.v)?;
            Ok(AlarmInput::Staff(cmd))
        }
        UpTopic::Tap { .. } => Err(reject("bad_topic", "card tap on the alarm connection")),
        UpTopic::Telemetry { .. } => Err(reject("bad_topic", "telemetry on the alarm connection")),
    }
}

fn check_site(reg: &Registry, site: &str) -> Result<(), Rejection> {
    if site == reg.site_id {
        Ok(())
    } else {
        Err(reject(
            "bad_topic",
            format!("site {site:?} is not this gateway's site {:?}", reg.site_id),
        ))
    }
}

fn check_device(reg: &Registry, device: &str, kind: Option<DeviceKind>) -> Result<(), Rejection> {
    match reg.devices.get(device) {
        None => Err(reject(
            "unknown_device",
            format!("device {device} is not registered; add it under [[devices]] or to device_csv in the config"),
        )),
        Some(d) if kind.is_some_and(|k| k != d.kind) => Err(reject(
            "wrong_device_kind",
            format!("device {device} is a {:?}; this topic is for {:?}", d.kind, kind),
        )),
        Some(_) => Ok(()),
    }
}

/// An accepted telemetry message.
enum Telemetry {
    Heartbeat(DeviceStatus),
    Link { device: String, online: bool },
    Tap { reader: String, tap: Tap },
}

/// Work waiting for a commit before it can be acked, in arrival order.
enum Pending {
    Alarm {
        rx: oneshot::Receiver<Result<AlarmOutcome, JournalError>>,
        publish: Publish,
        device: String,
        device_seq: u32,
    },
    Staff {
        rx: oneshot::Receiver<StaffResult>,
        publish: Publish,
        alert_id: i64,
        request_id: Option<String>,
    },
    DeadLetter {
        rx: oneshot::Receiver<Result<(), JournalError>>,
        publish: Publish,
    },
    Ack(Publish),
    Tap {
        rx: oneshot::Receiver<Result<Down, JournalError>>,
        publish: Publish,
        reader: String,
    },
}

/// Shared context of the ingest tasks.
#[derive(Clone)]
pub struct Ingest {
    /// Registry.
    pub registry: Arc<Registry>,
    /// Journal.
    pub journal: Journal,
    /// Device supervision hears of every accepted device message.
    pub seen: mpsc::UnboundedSender<Seen>,
}

impl Ingest {
    async fn dead_letter(
        &self,
        source: &str,
        payload: &[u8],
        r: &Rejection,
    ) -> oneshot::Receiver<Result<(), JournalError>> {
        metrics::counter!("eldergate_rejected_total", "reason" => r.reason).increment(1);
        tracing::warn!(source, reason = r.reason, detail = %r.detail, bytes = payload.len(), "input rejected; kept as a dead letter");
        let keep = payload.len().min(MAX_DEVICE_PAYLOAD);
        self.journal
            .dead_letter(DeadLetter {
                received_at: Timestamp::now(),
                source: source.to_string(),
                reason: r.reason,
                detail: r.detail.clone(),
                payload: payload[..keep].to_vec(),
                payload_len: payload.len(),
            })
            .await
    }

    /// Runs the alarm connection's handler and acker until `incoming` closes.
    pub async fn run_alarm(
        self,
        mut incoming: mpsc::Receiver<Publish>,
        client: AsyncClient,
        stop: watch::Receiver<bool>,
    ) {
        let (pending_tx, pending_rx) = mpsc::channel(crate::journal::LANE_CAPACITY);
        let acker = tokio::spawn(ack_in_order(
            self.registry.site_id.clone(),
            client,
            pending_rx,
        ));
        while let Some(p) = next(&mut incoming, stop.clone()).await {
            let received_at = Timestamp::now();
            metrics::counter!("eldergate_mqtt_received_total", "connection" => "alarm")
                .increment(1);
            let pending = match classify_alarm(&self.registry, &p.topic, &p.payload) {
                Ok(AlarmInput::Device(device, msg)) => {
                    let device_seq = msg.seq;
                    let _ = self.seen.send(Seen::Activity {
                        device: device.clone(),
                        battery_pct: None,
                    });
                    let rx = self.journal.alarm(device.clone(), msg, received_at).await;
                    Pending::Alarm {
                        rx,
                        publish: p,
                        device,
                        device_seq,
                    }
                }
                Ok(AlarmInput::Staff(cmd)) => {
                    let rx = self
                        .journal
                        .staff_request(cmd.alert_id, cmd.cmd, cmd.by, cmd.note, Via::Mqtt)
                        .await;
                    Pending::Staff {
                        rx,
                        publish: p,
                        alert_id: cmd.alert_id,
                        request_id: cmd.request_id,
                    }
                }
                Err(r) => {
                    let rx = self.dead_letter(&p.topic, &p.payload, &r).await;
                    Pending::DeadLetter { rx, publish: p }
                }
            };
            if pending_tx.send(pending).await.is_err() {
                break;
            }
        }
        drop(pending_tx);
        let _ = acker.await;
    }

    /// Runs the telemetry connection's handler and acker until `incoming` closes.
    pub async fn run_telemetry(
        self,
        mut incoming: mpsc::Receiver<Publish>,
        client: AsyncClient,
        stop: watch::Receiver<bool>,
    ) {
        let (pending_tx, pending_rx) = mpsc::channel(crate::journal::LANE_CAPACITY);
        let acker = tokio::spawn(ack_in_order(
            self.registry.site_id.clone(),
            client,
            pending_rx,
        ));
        let latest: Arc<Mutex<HashMap<String, DeviceStatus>>> = Arc::default();
        let flusher = tokio::spawn(flush_status(self.journal.clone(), latest.clone()));
        while let Some(p) = next(&mut incoming, stop.clone()).await {
            metrics::counter!("eldergate_mqtt_received_total", "connection" => "telemetry")
                .increment(1);
            let pending = match self.classify_telemetry(&p.topic, &p.payload) {
                Ok(Telemetry::Heartbeat(status)) => {
                    let _ = self.seen.send(Seen::Activity {
                        device: status.device_id.clone(),
                        battery_pct: status.battery_pct,
                    });
                    if let Ok(mut m) = latest.lock() {
                        m.insert(status.device_id.clone(), status);
                    }
                    Pending::Ack(p)
                }
                Ok(Telemetry::Tap { reader, tap }) => {
                    let _ = self.seen.send(Seen::Activity {
                        device: reader.clone(),
                        battery_pct: None,
                    });
                    let rx = self
                        .journal
                        .tap(reader.clone(), tap, Timestamp::now())
                        .await;
                    Pending::Tap {
                        rx,
                        publish: p,
                        reader,
                    }
                }
                Ok(Telemetry::Link { device, online }) => {
                    let _ = self.seen.send(if online {
                        Seen::Activity {
                            device,
                            battery_pct: None,
                        }
                    } else {
                        Seen::Gone { device }
                    });
                    Pending::Ack(p)
                }
                Err(r) => {
                    let rx = self.dead_letter(&p.topic, &p.payload, &r).await;
                    Pending::DeadLetter { rx, publish: p }
                }
            };
            if pending_tx.send(pending).await.is_err() {
                break;
            }
        }
        drop(pending_tx);
        let _ = acker.await;
        flusher.abort();
        flush_once(&self.journal, &latest).await;
    }

    fn classify_telemetry(&self, topic_str: &str, payload: &[u8]) -> Result<Telemetry, Rejection> {
        match topic::parse_up(topic_str).map_err(topic_rejection)? {
            UpTopic::Telemetry { site, device, kind } => {
                check_site(&self.registry, site)?;
                check_device(&self.registry, device, None)?;
                if kind == "status" {
                    let link: DeviceLink = decode(payload)?;
                    check_version(link.v)?;
                    return Ok(Telemetry::Link {
                        device: device.to_string(),
                        online: link.online,
                    });
                }
                if kind != "heartbeat" {
                    return Err(reject(
                        "bad_topic",
                        format!("unknown telemetry kind {kind:?}"),
                    ));
                }
                let hb: Heartbeat = decode(payload)?;
                check_version(hb.v)?;
                if hb.battery_pct.is_some_and(|p| p > 100) {
                    return Err(reject("malformed_json", "battery_pct is above 100"));
                }
                Ok(Telemetry::Heartbeat(DeviceStatus {
                    device_id: device.to_string(),
                    last_seen: Timestamp::now(),
                    battery_mv: hb.battery_mv,
                    battery_pct: hb.battery_pct,
                    rssi: hb.rssi,
                }))
            }
            UpTopic::Tap { site, reader } => {
                check_site(&self.registry, site)?;
                check_device(&self.registry, reader, Some(DeviceKind::CardReader))?;
                if self.registry.canteen.is_none() {
                    return Err(reject(
                        "unsupported_type",
                        "no [canteen] is configured on this gateway",
                    ));
                }
                let tap: Tap = decode(payload)?;
                check_version(tap.v)?;
                if let Some(worker) = tap.delivered_by.as_deref() {
                    if !self.registry.staff.contains_key(worker) {
                        return Err(reject(
                            "unknown_staff",
                            format!("delivered_by {worker:?} is not a registered staff id"),
                        ));
                    }
                }
                Ok(Telemetry::Tap {
                    reader: reader.to_string(),
                    tap,
                })
            }
            _ => Err(reject("bad_topic", "not a telemetry topic")),
        }
    }
}

async fn flush_status(journal: Journal, latest: Arc<Mutex<HashMap<String, DeviceStatus>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        flush_once(&journal, &latest).await;
    }
}

async fn flush_once(journal: &Journal, latest: &Mutex<HashMap<String, DeviceStatus>>) {
    let batch: Vec<DeviceStatus> = match latest.lock() {
        Ok(mut m) => m.drain().map(|(_, v)| v).collect(),
        Err(_) => return,
    };
    if !batch.is_empty() {
        journal.device_status(batch).await;
    }
}

/// Acks in arrival order, each only after its commit.
async fn ack_in_order(site: String, client: AsyncClient, mut rx: mpsc::Receiver<Pending>) {
    while let Some(p) = rx.recv().await {
        match p {
            Pending::Alarm {
                rx,
                publish,
                device,
                device_seq,
            } => match rx.await {
                Ok(Ok(outcome)) => {
                    let down = Down::Ack {
                        v: MQTT_VERSION,
                        seq: device_seq,
                    };
                    if let Ok(body) = serde_json::to_vec(&down) {
                        let _ = client
                            .publish(topic::down(&site, &device), QoS::AtLeastOnce, false, body)
                            .await;
                    }
                    let _ = client.ack(&publish).await;
                    metrics::counter!("eldergate_device_acks_total", "duplicate" => if outcome.duplicate { "true" } else { "false" }).increment(1);
                }
                Ok(Err(e)) => {
                    tracing::error!(device = %device, device_seq, error = %e, "alarm event not committed; not acknowledged (the device retransmits)");
                }
                Err(_) => {
                    tracing::warn!(device = %device, device_seq, "journal stopped before commit; not acknowledged")
                }
            },
            Pending::Staff {
                rx,
                publish,
                alert_id,
                request_id,
            } => {
                let (ok, error) = match rx.await {
                    Ok(Ok(Ok(_))) => (true, None),
                    Ok(Ok(Err(refusal))) => (false, Some(refusal.to_string())),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, alert_id, "staff command not committed; not acknowledged");
                        continue;
                    }
                    Err(_) => continue,
                };
                let result = StaffCommandResult {
                    v: MQTT_VERSION,
                    request_id,
                    alert_id,
                    ok,
                    error,
                };
                if let Ok(body) = serde_json::to_vec(&result) {
                    let _ = client
                        .publish(topic::staff_results(&site), QoS::AtLeastOnce, false, body)
                        .await;
                }
                let _ = client.ack(&publish).await;
            }
            Pending::DeadLetter { rx, publish } => {
                if let Ok(Ok(())) = rx.await {
                    let _ = client.ack(&publish).await;
                }
            }
            Pending::Ack(publish) => {
                let _ = client.ack(&publish).await;
            }
            Pending::Tap {
                rx,
                publish,
                reader,
            } => match rx.await {
                Ok(Ok(down)) => {
                    // QoS 0 like device acks: the reader retransmits the tap until it sees this.
                    if let Ok(body) = serde_json::to_vec(&down) {
                        let _ = client
                            .publish(topic::down(&site, &reader), QoS::AtMostOnce, false, body)
                            .await;
                    }
                    let _ = client.ack(&publish).await;
                }
                _ => {
                    tracing::error!(reader = %reader, "tap not committed; no answer (the reader retransmits)")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
