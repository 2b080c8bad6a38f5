//! Serial transport: frames from UART / RS-485 ports (protocol/SPEC.md) decoded into
//! [`Uplink`]s for the one acceptance path ([`crate::intake`]), with the same ack-after-commit
//! as MQTT.
//!
//! Invariants:
//! - An ACK (alarm) or DISPLAY (tap) frame is written only after the journal answered that the
//!   event is committed.
//! - A frame with a bad CRC gets no reply (DC-09); noise is skipped up to the next delimiter;
//!   both are counted (`eldergate_serial_crc_errors_total`, `eldergate_serial_resyncs_total`).
//! - A frame with a good CRC that cannot be accepted gets a NAK with the reason SPEC.md §5
//!   names, a counter, a log line and a dead letter — whether the frame could not be parsed or
//!   the intake refused it (the same refusals as MQTT).
//! - A port that disappears (USB unplug) is reopened with capped backoff, forever.

use crate::alerting::AlarmOutcome;
use crate::community::Link;
use crate::config::SerialPortConfig;
use crate::intake::{reject, Accepted, Intake, Rejection, Uplink, UplinkBody};
use crate::journal::{answer, Failure, Waiting};
use eldergate_protocol::payload::{AlarmAction, Down, Measure, Reading, ReadingResult, Tap};
use eldergate_protocol::serial::{
    decode_header, encode, Body, DecodeError, Frame, FrameReader, MessageType, NakReason, Push,
    Rejected, MAX_WIRE,
};
use jiff::Timestamp;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest pause between attempts to (re)open a port.
const MAX_REOPEN: Duration = Duration::from_secs(2);

/// One port's ingest.
pub struct SerialIngest {
    /// The acceptance path.
    pub intake: Intake,
    /// The port.
    pub port: SerialPortConfig,
}

/// An answer owed once its commit is answered: an ACK for an alarm, a DISPLAY for a tap.
enum PendingAck {
    Alarm {
        rx: Waiting<AlarmOutcome>,
        device: String,
        seq: u32,
    },
    Tap {
        rx: Waiting<Down>,
        device: String,
        seq: u32,
        /// The frame, kept as a dead letter if the tap is refused (a seq conflict).
        raw: Vec<u8>,
    },
}

/// The NAK reason (SPEC.md §6) for a refusal by the intake or an operation.
fn nak_reason(reason: &str) -> NakReason {
    match reason {
        "unknown_device" => NakReason::UnknownDevice,
        "unknown_version" => NakReason::UnsupportedVersion,
        "unsupported_type" | "wrong_direction" => NakReason::UnsupportedType,
        "wrong_device_kind" | "wrong_link" | "unknown_staff" => NakReason::WrongKind,
        "seq_conflict" => NakReason::Conflict,
        "implausible" => NakReason::Implausible,
        _ => NakReason::Unparseable,
    }
}

/// The dead-letter reason of a NAK reason the codec decided.
fn nak_label(r: NakReason) -> &'static str {
    match r {
        NakReason::UnknownDevice => "unknown_device",
        NakReason::UnsupportedVersion => "unknown_version",
        NakReason::UnsupportedType => "unsupported_type",
        NakReason::WrongKind => "wrong_device_kind",
        NakReason::Conflict => "seq_conflict",
        _ => "malformed_frame",
    }
}

/// A frame's body as an uplink body, or why it is not one the gateway takes.
fn uplink_body(body: &Body<'_>) -> Result<UplinkBody, Rejection> {
    match *body {
        Body::Alarm { action } => {
            let action = match action {
                1 => AlarmAction::Press,
                2 => AlarmAction::Cancel,
                3 => AlarmAction::Checkin,
                other => {
                    return Err(reject(
                        "malformed",
                        format!("alarm action {other} is not 1, 2 or 3"),
                    ))
                }
            };
            Ok(UplinkBody::Alarm {
                action,
                device_time: None,
                anomaly: None,
            })
        }
        Body::Heartbeat {
            battery_mv,
            battery_pct,
        } => Ok(UplinkBody::Heartbeat {
            battery_mv: Some(battery_mv),
            // 255 = unknown (SPEC.md §4); anything else above 100 is nonsense, treated the same.
            battery_pct: (battery_pct <= 100).then_some(battery_pct),
            rssi: None,
        }),
        Body::CardTap { uid, mac, price } => Ok(UplinkBody::Tap(Tap {
            v: 1,
            seq: 0,
            card: uid.iter().map(|b| format!("{b:02X}")).collect(),
            price_fen: price.map(i64::from),
            delivered_by: None,
            ts: None,
            mac: (!mac.is_empty()).then(|| crate::canteen::mac::to_hex(mac)),
        })),
        Body::Health {
            reading,
            value1,
            value2,
            context,
        } => health_reading(reading, value1, value2, context).map(UplinkBody::Reading),
        Body::Ack | Body::Nak { .. } | Body::Display { .. } | Body::ReadingResult { .. } => {
            Err(reject(
                "wrong_direction",
                "a gateway-to-device message arrived from a device",
            ))
        }
    }
}

/// A HEALTH frame (SPEC.md §4: natural integers in the canonical units) as the MQTT reading
/// it means, so that intake checks both transports' readings in one place. A context byte
/// outside its table does not fit the type (NAK 1); a value no person has — negative, or beyond
/// any plausible range (intake checks the ranges) — is NAK 7 (implausible).
fn health_reading(
    reading: u8,
    value1: i32,
    value2: i32,
    context: Option<u8>,
) -> Result<Reading, Rejection> {
    use eldergate_protocol::payload::ReadingContext as C;
    let (measure, unit) = match reading {
        1 => (Measure::BloodPressure, "mmHg"),
        2 => (Measure::Glucose, "mmol/L"),
        3 => (Measure::Spo2, "%"),
        4 => (Measure::Temperature, "Cel"),
        5 => (Measure::Weight, "kg"),
        6 => (Measure::Pulse, "/min"),
        other => {
            return Err(reject(
                "malformed",
                format!("health reading {other} is not 1-6"),
            ))
        }
    };
    // Beyond every plausible range (the largest is weight, 3500 = 350.0 kg): implausible here,
    // before the decimal text, which takes at most six integer digits.
    const NO_PERSON: i32 = 100_000;
    if !(0..NO_PERSON).contains(&value1) || !(0..NO_PERSON).contains(&value2) {
        return Err(reject(
            "implausible",
            format!("health values {value1}, {value2} are not physically possible; measure again"),
        ));
    }
    let context = match (measure, context.unwrap_or(0)) {
        (_, 0) => None,
        (Measure::Glucose, 1) => Some(C::Fasting),
        (Measure::Glucose, 2) => Some(C::AfterMeal),
        (Measure::Glucose, 3) => Some(C::Random),
        (Measure::BloodPressure, 1) => Some(C::Sitting),
        (Measure::BloodPressure, 2) => Some(C::Standing),
        (Measure::BloodPressure, 3) => Some(C::Lying),
        (_, c) => {
            return Err(reject(
                "malformed",
                format!("context {c} is not defined for health reading {reading}"),
            ))
        }
    };
    let show = |v: i32| crate::vitals::units::show(measure, i64::from(v));
    Ok(Reading {
        v: 1,
        seq: 0,
        measure,
        value: show(value1),
        value2: (measure == Measure::BloodPressure || value2 != 0).then(|| show(value2)),
        unit: unit.into(),
        context,
        arm: None,
        resident: None,
        ts: None,
    })
}

/// The serial frame for a message to a device (`Down::Ack` → ACK, `Down::Display` → DISPLAY with
/// the masked name cut to fit and amounts clamped to `i32`); None when it cannot be framed (a
/// device id longer than serial frames allow). The gateway's serial ingest and the simulator's
/// MQTT link both use it, so a reader shows the same answer whichever way it is attached.
pub fn down_frame(device: &str, down: &Down) -> Option<Vec<u8>> {
    match down {
        Down::Ack { seq, .. } => frame_bytes(&Frame {
            device,
            seq: *seq,
            body: Body::Ack,
        }),
        Down::Display {
            seq,
            result,
            name,
            price_fen,
            subsidy_fen,
            payable_fen,
            balance_fen,
            ..
        } => {
            let name = name.as_deref().unwrap_or_default();
            let fen = eldergate_protocol::serial::clamp_fen;
            frame_bytes(&Frame {
                device,
                seq: *seq,
                body: Body::Display {
                    result: result.code(),
                    name: eldergate_protocol::serial::fit_name(name),
                    price: fen(*price_fen),
                    subsidy: fen(*subsidy_fen),
                    payable: fen(*payable_fen),
                    balance: fen(*balance_fen),
                },
            })
        }
        Down::Reading {
            seq, result, name, ..
        } => reading_frame(device, *seq, *result, name.as_deref()),
    }
}

fn reading_frame(
    device: &str,
    seq: u32,
    result: ReadingResult,
    name: Option<&str>,
) -> Option<Vec<u8>> {
    frame_bytes(&Frame {
        device,
        seq,
        body: Body::ReadingResult {
            result: result.code(),
            name: eldergate_protocol::serial::fit_name(name.unwrap_or_default()),
        },
    })
}

fn frame_bytes(f: &Frame<'_>) -> Option<Vec<u8>> {
    let mut out = [0u8; MAX_WIRE];
    encode(f, &mut out).ok().map(|n| out[..n].to_vec())
}

impl SerialIngest {
    /// Runs until `stop` is cancelled: open, read, reopen after errors.
    pub async fn run(self, stop: CancellationToken) {
        let path = self.port.port.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            if stop.is_cancelled() {
                break;
            }
            let builder = tokio_serial::new(&path, self.port.baud);
            match tokio_serial::SerialStream::open(&builder) {
                Ok(stream) => {
                    backoff = Duration::from_millis(100);
                    metrics::counter!("eldergate_serial_opens_total", "port" => path.clone())
                        .increment(1);
                    tracing::info!(port = %path, baud = self.port.baud, "serial port open");
                    self.serve(stream, &stop).await;
                    if stop.is_cancelled() {
                        break;
                    }
                    tracing::warn!(port = %path, "serial port lost (unplugged?); reopening");
                }
                Err(e) => {
                    tracing::warn!(port = %path, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot open serial port");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => {}
            }
            backoff = (backoff * 2).min(MAX_REOPEN);
        }
    }

    async fn serve(&self, stream: tokio_serial::SerialStream, stop: &CancellationToken) {
        let path = self.port.port.clone();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
        let writer = tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let (ack_tx, mut ack_rx) = mpsc::channel::<PendingAck>(4096);
        let acks_out = out_tx.clone();
        let intake = self.intake.clone();
        let source = format!("serial:{path}");
        let acker = tokio::spawn(async move {
            while let Some(p) = ack_rx.recv().await {
                let bytes = match p {
                    PendingAck::Alarm { rx, device, seq } => match answer(rx).await {
                        Ok(_) => frame_bytes(&Frame {
                            device: &device,
                            seq,
                            body: Body::Ack,
                        }),
                        _ => {
                            tracing::error!(device = %device, seq, "serial alarm not committed; not acknowledged (the device retransmits)");
                            None
                        }
                    },
                    PendingAck::Tap {
                        rx,
                        device,
                        seq,
                        raw,
                    } => match answer(rx).await {
                        Ok(down) => down_frame(&device, &down),
                        Err(Failure::Refused(r)) => {
                            let rejection = reject(r.reason, r.message);
                            drop(intake.dead_letter(&source, &raw, &rejection).await);
                            frame_bytes(&Frame::nak(&device, seq, nak_reason(r.reason)))
                        }
                        Err(e) => {
                            tracing::error!(device = %device, seq, error = %e, "serial tap not committed; no answer (the reader retries)");
                            None
                        }
                    },
                };
                if let Some(b) = bytes {
                    let _ = acks_out.send(b).await;
                }
            }
        });
        let mut reader = FrameReader::new();
        let mut buf = [0u8; 512];
        loop {
            let n = tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = stop.cancelled() => break,
            };
            for &b in &buf[..n] {
                match reader.push(b) {
                    Push::Pending => {}
                    Push::Resync => {
                        metrics::counter!("eldergate_serial_resyncs_total", "port" => path.clone())
                            .increment(1);
                    }
                    Push::Frame(wire) => self.handle(wire, &out_tx, &ack_tx).await,
                }
            }
        }
        drop(ack_tx);
        let _ = acker.await;
        drop(out_tx);
        let _ = writer.await;
    }

    /// One frame with its delimiter removed: checked in the order of SPEC.md §6.2, answered
    /// after commit, or NAKed with the first reason that applies.
    async fn handle(
        &self,
        wire: &mut [u8],
        out: &mpsc::Sender<Vec<u8>>,
        acks: &mpsc::Sender<PendingAck>,
    ) {
        let path = &self.port.port;
        let raw = wire.to_vec();
        let header = match decode_header(wire) {
            Ok(h) => h,
            Err(Rejected::Noise(e)) => {
                // Noise: no reply, no dead letter (it may not even be a frame), just counted.
                let metric = if e == DecodeError::Crc {
                    "eldergate_serial_crc_errors_total"
                } else {
                    "eldergate_serial_resyncs_total"
                };
                metrics::counter!(metric, "port" => path.clone()).increment(1);
                return;
            }
            Err(Rejected::Refused(r)) => {
                let rejection = reject(nak_label(r.reason), r.detail);
                self.refuse(
                    r.device.unwrap_or(""),
                    r.seq,
                    r.reason,
                    &rejection,
                    &raw,
                    out,
                )
                .await;
                return;
            }
        };
        metrics::counter!("eldergate_serial_frames_total", "port" => path.clone()).increment(1);
        let (device, seq) = (header.device, header.seq);
        let registry = &self.intake.registry;
        // 4. registered; 5. a type this gateway takes from devices.
        let not_taken = if !registry.devices.contains_key(device) {
            Some(reject(
                "unknown_device",
                format!("device {device} is not registered; add it to the config with link = \"serial\""),
            ))
        } else {
            match header.message_type() {
                None => Some(reject(
                    "unsupported_type",
                    format!("message type 0x{:02x}", header.kind),
                )),
                // A kiosk's card tap opens a kiosk session: no canteen needed.
                Some(MessageType::CardTap)
                    if registry.canteen.is_none()
                        && registry.devices.get(device).map(|d| d.kind)
                            != Some(crate::community::DeviceKind::HealthKiosk) =>
                {
                    Some(reject(
                        "unsupported_type",
                        "card taps need a [canteen] in this gateway's config",
                    ))
                }
                Some(t) if !t.from_device() => Some(reject(
                    "wrong_direction",
                    "a gateway-to-device message arrived from a device",
                )),
                _ => None,
            }
        };
        if let Some(r) = not_taken {
            self.refuse(device, seq, nak_reason(r.reason), &r, &raw, out)
                .await;
            return;
        }
        // 6. the body fits its type.
        // A HEALTH value no person has fits the type but is refused as implausible (NAK 7).
        let body = match header
            .body()
            .map_err(|r| reject("malformed_frame", r.detail))
            .and_then(|b| {
                uplink_body(&b).map_err(|r| {
                    if r.reason == "implausible" {
                        r
                    } else {
                        reject(
                            "malformed_frame",
                            "the body does not fit its type (SPEC.md §4)",
                        )
                    }
                })
            }) {
            Ok(b) => b,
            Err(r) => {
                self.refuse(device, seq, nak_reason(r.reason), &r, &raw, out)
                    .await;
                return;
            }
        };
        let mut body = body;
        let kiosk = registry.devices.get(device).map(|d| d.kind)
            == Some(crate::community::DeviceKind::HealthKiosk);
        match &mut body {
            // A card tapped on a kiosk opens a kiosk session (SPEC.md §4).
            UplinkBody::Tap(tap) if kiosk => {
                body = UplinkBody::KioskCard {
                    card: std::mem::take(&mut tap.card),
                }
            }
            UplinkBody::Tap(tap) => tap.seq = seq,
            UplinkBody::Reading(r) => r.seq = seq,
            _ => {}
        }
        // 7. kind and link, and on into the domain (8. conflicts are the operation's).
        let up = Uplink {
            device: device.to_string(),
            link: Link::Serial,
            version: 1,
            seq: Some(seq),
            body,
            received_at: Timestamp::now(),
        };
        let pending = match self.intake.accept(up).await {
            Ok(Accepted::Alarm(rx)) => PendingAck::Alarm {
                rx,
                device: device.to_string(),
                seq,
            },
            Ok(Accepted::Tap(rx)) => PendingAck::Tap {
                rx,
                device: device.to_string(),
                seq,
                raw,
            },
            Ok(Accepted::Nothing) => return,
            Err(r) => {
                self.refuse(device, seq, nak_reason(r.reason), &r, &raw, out)
                    .await;
                return;
            }
        };
        let _ = acks.send(pending).await;
    }

    /// A refused frame: a dead letter (counted, logged) and its NAK.
    async fn refuse(
        &self,
        device: &str,
        seq: u32,
        reason: NakReason,
        r: &Rejection,
        raw: &[u8],
        out: &mpsc::Sender<Vec<u8>>,
    ) {
        self.dead_letter(r, raw).await;
        if let Some(b) = frame_bytes(&Frame::nak(device, seq, reason)) {
            let _ = out.send(b).await;
        }
    }

    async fn dead_letter(&self, r: &Rejection, raw: &[u8]) {
        // Nothing is acked for a rejected frame, so there is no commit to wait for.
        let _commit = self
            .intake
            .dead_letter(&format!("serial:{}", self.port.port), raw, r)
            .await;
    }
}
