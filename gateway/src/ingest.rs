//! MQTT transport: decodes publishes into [`Uplink`]s (or staff commands), hands them to the one
//! acceptance path ([`crate::intake`]), and acks only after commit.
//!
//! Two connections, two tasks each (handler → FIFO acker):
//! - the **alarm** connection carries `alarm/#` and `staff/cmd/{staff}` (the actor is the
//!   topic's staff id, bound to the publisher by the broker's ACL); alarms and staff actions go to
//!   the journal's alarm lane;
//! - the **telemetry** connection carries `tele/#` (heartbeats, link status) and `tap/#`.
//!
//! Invariants:
//! - A device's `Down::Ack` and the broker's PUBACK are sent only after the journal answered that
//!   the event is committed. The acker handles publishes in arrival order, so PUBACKs keep MQTT's
//!   ordering rule.
//! - Anything that cannot be accepted becomes a [`Rejection`]: one log line, one counter
//!   (`eldergate_rejected_total{reason}`), one dead-letter row; the PUBACK waits for that row.
//!   A staff command that cannot be read but names a `request_id` is answered on
//!   `staff/results` too.
//! - This module decodes and encodes; it decides nothing that serial could decide differently.
//! - Nothing here panics on input.

use crate::alerting::{AlarmOutcome, StaffAction, Via};
use crate::community::Link;
use crate::intake::{reject, Accepted, Intake, Rejection, Uplink, UplinkBody};
use crate::journal::{answer, Failure, Waiting};
use crate::mqtt::Inbox;
use eldergate_protocol::payload::{
    AlarmAction, DeviceLink, Down, Heartbeat, KioskCard, Reading, StaffAlert, StaffCommand,
    StaffCommandResult, Tap, TapResult,
};
use eldergate_protocol::topic::{self, TopicError, UpTopic};
use eldergate_protocol::{MAX_DEVICE_PAYLOAD, MQTT_VERSION};
use jiff::Timestamp;
use rumqttc::{AsyncClient, Publish, QoS};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The next publish, or None once `stop` is cancelled (what is not taken stays unacked at the
/// broker and is redelivered to our persistent session).
async fn next(incoming: &mut Inbox, stop: &CancellationToken) -> Option<Publish> {
    if stop.is_cancelled() {
        return None;
    }
    tokio::select! {
        p = incoming.recv() => p,
        _ = stop.cancelled() => None,
    }
}

/// Device payloads above the contract's limit are refused before any parsing.
fn check_size(payload: &[u8]) -> Result<(), Rejection> {
    if payload.len() > MAX_DEVICE_PAYLOAD {
        return Err(reject(
            "oversize",
            format!(
                "payload is {} bytes; the limit is {MAX_DEVICE_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    Ok(())
}

/// Decodes a JSON payload, telling a wrong `v` apart from malformed JSON.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    check_size(payload)?;
    match serde_json::from_slice::<T>(payload) {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Some(r) = wrong_version(payload) {
                return Err(r);
            }
            Err(reject(
                "malformed_json",
                format!("payload does not match the v1 schema: {e}"),
            ))
        }
    }
}

fn wrong_version(payload: &[u8]) -> Option<Rejection> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        v: serde_json::Value,
    }
    match serde_json::from_slice::<Versioned>(payload) {
        Ok(Versioned { v }) if v != MQTT_VERSION => Some(version_rejection(&v.to_string())),
        _ => None,
    }
}

fn version_rejection(v: &str) -> Rejection {
    reject(
        "unknown_version",
        format!("payload version {v} is not supported; this gateway speaks v{MQTT_VERSION}"),
    )
}

fn topic_rejection(e: TopicError) -> Rejection {
    let reason = match e {
        TopicError::UnknownVersion => "unknown_version",
        _ => "bad_topic",
    };
    reject(reason, e.to_string())
}

/// An alarm message. Only `v`, `seq` and `action` are needed to act: anything wrong with the
/// optional fields (a `ts` out of range or of the wrong type, an unknown field) is recorded with
/// the event, never a reason to drop an alarm.
fn decode_alarm(payload: &[u8]) -> Result<(u8, u32, UplinkBody), Rejection> {
    #[derive(serde::Deserialize)]
    struct Lenient {
        v: u8,
        seq: u32,
        action: AlarmAction,
        #[serde(default)]
        ts: Option<serde_json::Value>,
        #[serde(flatten)]
        rest: serde_json::Map<String, serde_json::Value>,
    }
    check_size(payload)?;
    let m: Lenient = match serde_json::from_slice(payload) {
        Ok(m) => m,
        Err(e) => {
            return Err(wrong_version(payload).unwrap_or_else(|| {
                reject(
                    "malformed_json",
                    format!("payload does not match the v1 alarm schema: {e}"),
                )
            }))
        }
    };
    let mut anomalies = Vec::new();
    let device_time = match &m.ts {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            match n
                .as_i64()
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            {
                Some(t) => Some(t),
                None => {
                    anomalies.push(format!("ts {n} is not a time in range; ignored"));
                    None
                }
            }
        }
        Some(other) => {
            anomalies.push(format!(
                "ts {other} is not a number of milliseconds; ignored"
            ));
            None
        }
    };
    if !m.rest.is_empty() {
        let names: Vec<&str> = m.rest.keys().map(String::as_str).collect();
        anomalies.push(format!("unknown fields {names:?}; ignored"));
    }
    let anomaly = (!anomalies.is_empty()).then(|| anomalies.join("; "));
    if let Some(a) = &anomaly {
        metrics::counter!("eldergate_alarm_anomalies_total").increment(1);
        tracing::warn!(anomaly = %a, "alarm message has bad optional fields; acting on it anyway");
    }
    Ok((
        m.v,
        m.seq,
        UplinkBody::Alarm {
            action: m.action,
            device_time,
            anomaly,
        },
    ))
}

/// What a publish is, once decoded (the registry is checked by the intake).
#[derive(Debug)]
pub enum Inbound {
    /// A device message.
    Device(Uplink),
    /// A staff command.
    Staff(StaffCommand),
}

/// A publish that could not be decoded, with the `request_id` of a staff command if one could
/// be read (the sender is answered on `staff/results`).
#[derive(Debug)]
pub struct Undecodable {
    /// Why.
    pub rejection: Rejection,
    /// The staff command's `request_id` and `alert_id`, if readable.
    pub staff_request: Option<(Option<String>, i64)>,
}

impl From<Rejection> for Undecodable {
    fn from(rejection: Rejection) -> Self {
        Undecodable {
            rejection,
            staff_request: None,
        }
    }
}

fn check_site(site: &str, ours: &str) -> Result<(), Rejection> {
    if site == ours {
        Ok(())
    } else {
        Err(reject(
            "bad_topic",
            format!("site {site:?} is not this gateway's site {ours:?}"),
        ))
    }
}

/// Decodes a publish against the v1 contract (topic, schema). `alarm_conn` says which
/// connection it came on: each carries only its own topics.
pub fn decode_publish(
    site: &str,
    topic_str: &str,
    payload: &[u8],
    alarm_conn: bool,
) -> Result<Inbound, Undecodable> {
    let t = topic::parse_up(topic_str).map_err(topic_rejection)?;
    let received_at = Timestamp::now();
    let device = |device: &str, version: u8, seq: Option<u32>, body: UplinkBody| {
        Inbound::Device(Uplink {
            device: device.to_string(),
            link: Link::Mqtt,
            version,
            seq,
            body,
            received_at,
        })
    };
    match t {
        UpTopic::Alarm { site: s, device: d } if alarm_conn => {
            check_site(s, site)?;
            let (v, seq, body) = decode_alarm(payload)?;
            Ok(device(d, v, Some(seq), body))
        }
        UpTopic::StaffCommand { site: s, staff } if alarm_conn => {
            check_site(s, site)?;
            match decode::<StaffCommand>(payload) {
                Ok(cmd) if cmd.v != MQTT_VERSION => Err(Undecodable {
                    rejection: version_rejection(&cmd.v.to_string()),
                    staff_request: Some((cmd.request_id, cmd.alert_id)),
                }),
                // The broker ties the topic's staff id to the publisher's username; a body that
                // names someone else is a forgery or a bug, never an action by that person.
                Ok(cmd) if cmd.by.as_deref().is_some_and(|by| by != staff) => Err(Undecodable {
                    rejection: reject(
                        "actor_mismatch",
                        format!(
                            "\"by\" is {:?} but the command was published on {staff}'s topic; leave \"by\" out or make it {staff:?}",
                            cmd.by.as_deref().unwrap_or_default()
                        ),
                    ),
                    staff_request: Some((cmd.request_id, cmd.alert_id)),
                }),
                Ok(mut cmd) => {
                    cmd.by = Some(staff.to_string());
                    Ok(Inbound::Staff(cmd))
                }
                Err(rejection) => Err(Undecodable {
                    rejection,
                    staff_request: readable_request(payload),
                }),
            }
        }
        UpTopic::Telemetry {
            site: s,
            device: d,
            kind,
        } if !alarm_conn => {
            check_site(s, site)?;
            match kind {
                "status" => {
                    let link: DeviceLink = decode(payload)?;
                    Ok(device(
                        d,
                        link.v,
                        None,
                        UplinkBody::Link {
                            online: link.online,
                        },
                    ))
                }
                "heartbeat" => {
                    let hb: Heartbeat = decode(payload)?;
                    if hb.battery_pct.is_some_and(|p| p > 100) {
                        return Err(reject("malformed_json", "battery_pct is above 100").into());
                    }
                    Ok(device(
                        d,
                        hb.v,
                        None,
                        UplinkBody::Heartbeat {
                            battery_mv: hb.battery_mv,
                            battery_pct: hb.battery_pct,
                            rssi: hb.rssi,
                        },
                    ))
                }
                // Health kiosks (MQTT.md "Health kiosks"): QoS 1, answered after commit.
                "reading" => {
                    let r: Reading = decode(payload)?;
                    Ok(device(d, r.v, Some(r.seq), UplinkBody::Reading(r)))
                }
                "card" => {
                    let c: KioskCard = decode(payload)?;
                    Ok(device(
                        d,
                        c.v,
                        Some(c.seq),
                        UplinkBody::KioskCard { card: c.card },
                    ))
                }
                other => {
                    Err(reject("bad_topic", format!("unknown telemetry kind {other:?}")).into())
                }
            }
        }
        UpTopic::Tap { site: s, reader } if !alarm_conn => {
            check_site(s, site)?;
            let tap: Tap = decode(payload)?;
            Ok(device(reader, tap.v, Some(tap.seq), UplinkBody::Tap(tap)))
        }
        _ if alarm_conn => Err(reject(
            "bad_topic",
            "not an alarm or staff topic (alarm connection)",
        )
        .into()),
        _ => Err(reject("bad_topic", "not a telemetry or tap topic").into()),
    }
}

/// The `request_id` and `alert_id` of a staff command that does not match the schema, when
/// they can be read (so the sender hears why).
fn readable_request(payload: &[u8]) -> Option<(Option<String>, i64)> {
    if payload.len() > MAX_DEVICE_PAYLOAD {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let request_id = v.get("request_id")?.as_str()?.to_string();
    let alert_id = v.get("alert_id").and_then(|a| a.as_i64()).unwrap_or(0);
    Some((Some(request_id), alert_id))
}

/// Work waiting for a commit before it can be acked, in arrival order.
enum Pending {
    Alarm {
        rx: Waiting<AlarmOutcome>,
        publish: Publish,
        device: String,
        device_seq: u32,
    },
    Staff {
        rx: Waiting<StaffAlert>,
        publish: Publish,
        alert_id: i64,
        request_id: Option<String>,
    },
    DeadLetter {
        rx: Waiting<()>,
        publish: Publish,
        /// A staff command that could not be read but can be answered.
        answer: Option<StaffCommandResult>,
    },
    Ack(Publish),
    Tap {
        rx: Waiting<Down>,
        publish: Publish,
        reader: String,
    },
}

/// The MQTT transport's handlers.
#[derive(Clone)]
pub struct Ingest {
    /// The acceptance path.
    pub intake: Intake,
}

impl Ingest {
    fn site(&self) -> &str {
        &self.intake.registry.site_id
    }

    async fn rejected(&self, p: Publish, u: Undecodable) -> Pending {
        let rx = self
            .intake
            .dead_letter(&p.topic, &p.payload, &u.rejection)
            .await;
        let answer = u
            .staff_request
            .map(|(request_id, alert_id)| StaffCommandResult {
                v: MQTT_VERSION,
                request_id,
                alert_id,
                ok: false,
                error: Some(format!("{}: {}", u.rejection.reason, u.rejection.detail)),
            });
        Pending::DeadLetter {
            rx,
            publish: p,
            answer,
        }
    }

    async fn handle(&self, p: Publish, alarm_conn: bool) -> Pending {
        let inbound = match decode_publish(self.site(), &p.topic, &p.payload, alarm_conn) {
            Ok(i) => i,
            Err(u) => return self.rejected(p, u).await,
        };
        match inbound {
            Inbound::Staff(cmd) => {
                let rx = self
                    .intake
                    .journal
                    .submit(StaffAction {
                        alert_id: cmd.alert_id,
                        verb: cmd.cmd,
                        by: cmd.by.unwrap_or_default(),
                        note: cmd.note,
                        via: Via::Mqtt,
                    })
                    .await;
                Pending::Staff {
                    rx,
                    publish: p,
                    alert_id: cmd.alert_id,
                    request_id: cmd.request_id,
                }
            }
            Inbound::Device(up) => {
                let device = up.device.clone();
                let seq = up.seq.unwrap_or_default();
                match self.intake.accept(up).await {
                    Ok(Accepted::Alarm(rx)) => Pending::Alarm {
                        rx,
                        publish: p,
                        device,
                        device_seq: seq,
                    },
                    Ok(Accepted::Tap(rx)) => Pending::Tap {
                        rx,
                        publish: p,
                        reader: device,
                    },
                    Ok(Accepted::Nothing) => Pending::Ack(p),
                    Err(r) => self.rejected(p, r.into()).await,
                }
            }
        }
    }

    async fn run(
        self,
        name: &'static str,
        alarm_conn: bool,
        mut incoming: Inbox,
        client: AsyncClient,
        stop: CancellationToken,
    ) {
        let (pending_tx, pending_rx) = mpsc::channel(crate::journal::LANE_CAPACITY);
        let acker = tokio::spawn(ack_in_order(self.intake.clone(), client, pending_rx));
        // Looked up once: a labelled `counter!` hashes its key on every call.
        let received = metrics::counter!("eldergate_mqtt_received_total", "connection" => name);
        while let Some(p) = next(&mut incoming, &stop).await {
            received.increment(1);
            let pending = self.handle(p, alarm_conn).await;
            if pending_tx.send(pending).await.is_err() {
                break;
            }
        }
        drop(pending_tx);
        let _ = acker.await;
    }

    /// Runs the alarm connection's handler and acker until `incoming` closes.
    pub async fn run_alarm(self, incoming: Inbox, client: AsyncClient, stop: CancellationToken) {
        self.run("alarm", true, incoming, client, stop).await
    }

    /// Runs the telemetry connection's handler and acker until `incoming` closes.
    pub async fn run_telemetry(
        self,
        incoming: Inbox,
        client: AsyncClient,
        stop: CancellationToken,
    ) {
        self.run("telemetry", false, incoming, client, stop).await
    }
}

async fn publish_json<T: serde::Serialize>(client: &AsyncClient, topic: String, qos: QoS, v: &T) {
    if let Ok(body) = serde_json::to_vec(v) {
        let _ = client.publish(topic, qos, false, body).await;
    }
}

fn tap_seq(payload: &[u8]) -> u32 {
    serde_json::from_slice::<Tap>(payload)
        .map(|t| t.seq)
        .unwrap_or_default()
}

/// Keeps a publish whose operation failed alone as a dead letter and releases the broker's
/// delivery (PUBACK) once that is committed.
async fn release(
    intake: &Intake,
    client: &AsyncClient,
    publish: &Publish,
    reason: &'static str,
    detail: String,
) {
    let kept = intake
        .dead_letter(&publish.topic, &publish.payload, &reject(reason, detail))
        .await;
    if !matches!(answer(kept).await, Err(Failure::Journal(_))) {
        let _ = client.ack(publish).await;
    }
}

/// Acks in arrival order, each only after its commit.
async fn ack_in_order(intake: Intake, client: AsyncClient, mut rx: mpsc::Receiver<Pending>) {
    let site = intake.registry.site_id.clone();
    let acks = metrics::counter!("eldergate_device_acks_total", "duplicate" => "false");
    let acks_duplicate = metrics::counter!("eldergate_device_acks_total", "duplicate" => "true");
    while let Some(p) = rx.recv().await {
        match p {
            Pending::Alarm {
                rx,
                publish,
                device,
                device_seq,
            } => match answer(rx).await {
                Ok(outcome) => {
                    let down = Down::Ack {
                        v: MQTT_VERSION,
                        seq: device_seq,
                    };
                    publish_json(
                        &client,
                        topic::down(&site, &device),
                        QoS::AtLeastOnce,
                        &down,
                    )
                    .await;
                    let _ = client.ack(&publish).await;
                    if outcome.duplicate {
                        acks_duplicate.increment(1);
                    } else {
                        acks.increment(1);
                    }
                }
                Err(Failure::Journal(e)) => {
                    tracing::error!(device = %device, device_seq, error = %e, "alarm event not committed; not acknowledged (the device retransmits)");
                }
                Err(e) => {
                    // Failed on its own (or refused): keep it, release the broker's delivery so
                    // it cannot hold every later ack; no device ack — the device retransmits
                    // and each retransmission is tried again alone.
                    release(
                        &intake,
                        &client,
                        &publish,
                        "alarm_not_committed",
                        e.to_string(),
                    )
                    .await;
                    tracing::error!(device = %device, device_seq, error = %e, "alarm event failed alone; kept as a dead letter, not acknowledged to the device");
                }
            },
            Pending::Staff {
                rx,
                publish,
                alert_id,
                request_id,
            } => {
                let (ok, error) = match answer(rx).await {
                    Ok(_) => (true, None),
                    Err(Failure::Refused(r)) => (false, Some(r.message)),
                    Err(Failure::Journal(e)) => {
                        tracing::error!(error = %e, alert_id, "staff command not committed; not acknowledged");
                        continue;
                    }
                    Err(e @ Failure::Broken(_)) => (false, Some(e.to_string())),
                };
                let result = StaffCommandResult {
                    v: MQTT_VERSION,
                    request_id,
                    alert_id,
                    ok,
                    error,
                };
                publish_json(
                    &client,
                    topic::staff_results(&site),
                    QoS::AtLeastOnce,
                    &result,
                )
                .await;
                let _ = client.ack(&publish).await;
            }
            Pending::DeadLetter {
                rx,
                publish,
                answer: staff_answer,
            } => {
                if !matches!(answer(rx).await, Err(Failure::Journal(_))) {
                    if let Some(result) = staff_answer {
                        publish_json(
                            &client,
                            topic::staff_results(&site),
                            QoS::AtLeastOnce,
                            &result,
                        )
                        .await;
                    }
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
            } => match answer(rx).await {
                Ok(down) => {
                    // QoS 1 like device acks (MQTT.md): the reader retransmits the tap until it
                    // sees this.
                    publish_json(
                        &client,
                        topic::down(&site, &reader),
                        QoS::AtLeastOnce,
                        &down,
                    )
                    .await;
                    let _ = client.ack(&publish).await;
                }
                Err(Failure::Refused(r)) => {
                    // E.g. a seq reused for another card: refused with a reason, never another
                    // resident's answer; the reader must take a new seq.
                    let rejection = reject(r.reason, r.message);
                    let kept = intake
                        .dead_letter(&publish.topic, &publish.payload, &rejection)
                        .await;
                    let down = Down::Display {
                        v: MQTT_VERSION,
                        seq: tap_seq(&publish.payload),
                        result: TapResult::Refused,
                        name: None,
                        price_fen: 0,
                        subsidy_fen: 0,
                        payable_fen: 0,
                        balance_fen: 0,
                    };
                    if answer(kept).await.is_ok() {
                        publish_json(
                            &client,
                            topic::down(&site, &reader),
                            QoS::AtLeastOnce,
                            &down,
                        )
                        .await;
                        let _ = client.ack(&publish).await;
                    }
                }
                Err(Failure::Journal(e)) => {
                    tracing::error!(reader = %reader, error = %e, "tap not committed; no answer (the reader retransmits)")
                }
                Err(e) => {
                    release(
                        &intake,
                        &client,
                        &publish,
                        "tap_not_committed",
                        e.to_string(),
                    )
                    .await;
                    tracing::error!(reader = %reader, error = %e, "tap failed alone; kept as a dead letter, no answer (the reader retransmits)")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
