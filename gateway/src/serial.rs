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
use crate::journal::{answer, Waiting};
use eldergate_protocol::payload::{AlarmAction, Down, Tap};
use eldergate_protocol::serial::{
    decode, encode, Body, DecodeError, Frame, FrameReader, Push, MAX_WIRE,
};
use jiff::Timestamp;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

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
    },
}

/// The NAK reason (SPEC.md §4) for a refusal.
fn nak_reason(r: &Rejection) -> u8 {
    match r.reason {
        "unknown_device" => 2,
        "unknown_version" => 3,
        "unsupported_type" | "wrong_direction" => 4,
        "wrong_device_kind" | "wrong_link" | "unknown_staff" => 5,
        "seq_conflict" => 6,
        _ => 1,
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
        Body::CardTap { uid, price, .. } => Ok(UplinkBody::Tap(Tap {
            v: 1,
            seq: 0,
            card: uid.iter().map(|b| format!("{b:02X}")).collect(),
            price_fen: price.map(i64::from),
            delivered_by: None,
            ts: None,
        })),
        Body::Health { .. } => Err(reject(
            "unsupported_type",
            "health readings are not taken by this gateway yet (SPEC.md §4: NAK 4)",
        )),
        Body::Ack | Body::Nak { .. } | Body::Display { .. } => Err(reject(
            "wrong_direction",
            "a gateway-to-device message arrived from a device",
        )),
    }
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
            let mut name = name.clone().unwrap_or_default();
            while name.len() > eldergate_protocol::serial::MAX_NAME {
                name.pop();
            }
            let fen = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            frame_bytes(&Frame {
                device,
                seq: *seq,
                body: Body::Display {
                    result: result.code(),
                    name: &name,
                    price: fen(*price_fen),
                    subsidy: fen(*subsidy_fen),
                    payable: fen(*payable_fen),
                    balance: fen(*balance_fen),
                },
            })
        }
    }
}

fn frame_bytes(f: &Frame<'_>) -> Option<Vec<u8>> {
    let mut out = [0u8; MAX_WIRE];
    encode(f, &mut out).ok().map(|n| out[..n].to_vec())
}

impl SerialIngest {
    /// Runs until `stop` turns true: open, read, reopen after errors.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let path = self.port.port.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                break;
            }
            let builder = tokio_serial::new(&path, self.port.baud);
            match tokio_serial::SerialStream::open(&builder) {
                Ok(stream) => {
                    backoff = Duration::from_millis(100);
                    metrics::counter!("eldergate_serial_opens_total", "port" => path.clone())
                        .increment(1);
                    tracing::info!(port = %path, baud = self.port.baud, "serial port open");
                    self.serve(stream, &mut stop).await;
                    if *stop.borrow() {
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
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(MAX_REOPEN);
        }
    }

    async fn serve(&self, stream: tokio_serial::SerialStream, stop: &mut watch::Receiver<bool>) {
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
                    PendingAck::Tap { rx, device, seq } => match answer(rx).await {
                        Ok(down) => down_frame(&device, &down),
                        _ => {
                            tracing::error!(device = %device, seq, "serial tap not committed; no answer (the reader retries)");
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
                _ = stop.changed() => break,
            };
            for &b in &buf[..n] {
                match reader.push(b) {
                    Push::Pending => {}
                    Push::Resync => {
                        metrics::counter!("eldergate_serial_resyncs_total", "port" => path.clone())
                            .increment(1);
                    }
                    Push::Frame(wire) => {
                        let raw = wire.to_vec();
                        match decode(wire) {
                            Ok(frame) => self.accept(&frame, &raw, &out_tx, &ack_tx).await,
                            Err(e) => self.reject_undecodable(e, &raw).await,
                        }
                    }
                }
            }
        }
        drop(ack_tx);
        let _ = acker.await;
        drop(out_tx);
        let _ = writer.await;
    }

    async fn accept(
        &self,
        frame: &Frame<'_>,
        raw: &[u8],
        out: &mpsc::Sender<Vec<u8>>,
        acks: &mpsc::Sender<PendingAck>,
    ) {
        let path = &self.port.port;
        metrics::counter!("eldergate_serial_frames_total", "port" => path.clone()).increment(1);
        let device = frame.device.to_string();
        let accepted = match uplink_body(&frame.body) {
            Ok(mut body) => {
                if let UplinkBody::Tap(tap) = &mut body {
                    tap.seq = frame.seq;
                }
                let up = Uplink {
                    device: device.clone(),
                    link: Link::Serial,
                    version: 1,
                    seq: Some(frame.seq),
                    body,
                    received_at: Timestamp::now(),
                };
                self.intake.accept(up).await
            }
            Err(r) => Err(r),
        };
        let pending = match accepted {
            Ok(Accepted::Alarm(rx)) => PendingAck::Alarm {
                rx,
                device,
                seq: frame.seq,
            },
            Ok(Accepted::Tap(rx)) => PendingAck::Tap {
                rx,
                device,
                seq: frame.seq,
            },
            Ok(Accepted::Nothing) => return,
            Err(r) => {
                self.dead_letter(&r, raw).await;
                // A device does not listen for answers to a gateway-to-device frame.
                if r.reason != "wrong_direction" {
                    if let Some(b) = frame_bytes(&Frame {
                        device: frame.device,
                        seq: frame.seq,
                        body: Body::Nak {
                            reason: nak_reason(&r),
                        },
                    }) {
                        let _ = out.send(b).await;
                    }
                }
                return;
            }
        };
        let _ = acks.send(pending).await;
    }

    async fn reject_undecodable(&self, e: DecodeError, raw: &[u8]) {
        let path = self.port.port.clone();
        let r = match e {
            // Noise: no reply, no dead letter (it may not even be a frame), just counted.
            DecodeError::Crc => {
                metrics::counter!("eldergate_serial_crc_errors_total", "port" => path).increment(1);
                return;
            }
            DecodeError::Cobs | DecodeError::TooShort | DecodeError::TooLong => {
                metrics::counter!("eldergate_serial_resyncs_total", "port" => path).increment(1);
                return;
            }
            DecodeError::Version(v) => reject(
                "unknown_version",
                format!("serial protocol version {v}; this gateway speaks 1"),
            ),
            DecodeError::UnknownType(t) => {
                reject("unsupported_type", format!("message type 0x{t:02x}"))
            }
            DecodeError::Malformed => reject(
                "malformed",
                "fields do not fit the message type (SPEC.md §4)",
            ),
        };
        self.dead_letter(&r, raw).await;
    }

    async fn dead_letter(&self, r: &Rejection, raw: &[u8]) {
        // Nothing is acked for a rejected frame, so there is no commit to wait for.
        let _commit = self
            .intake
            .dead_letter(&format!("serial:{}", self.port.port), raw, r)
            .await;
    }
}
