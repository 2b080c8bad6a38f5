//! Serial ingest: frames from UART / RS-485 ports (protocol/SPEC.md) into the same journal, with
//! the same ack-after-commit as MQTT.
//!
//! Invariants:
//! - An ACK frame is written only after the journal answered that the event is committed.
//! - A frame with a bad CRC gets no reply (DC-09); noise is skipped up to the next delimiter;
//!   both are counted (`eldergate_serial_crc_errors_total`, `eldergate_serial_resyncs_total`).
//! - A good frame the gateway cannot accept gets a NAK, a counter, a log line and a dead letter.
//! - A port that disappears (USB unplug) is reopened with capped backoff, forever.

use crate::alerting::supervisor::Seen;
use crate::config::SerialPortConfig;
use crate::journal::{AlarmOutcome, DeadLetter, DeviceStatus, Journal, JournalError};
use crate::registry::Registry;
use eldergate_protocol::payload::{AlarmAction, AlarmMessage, Down, Tap};
use eldergate_protocol::serial::{
    decode, encode, Body, DecodeError, Frame, FrameReader, Push, MAX_WIRE,
};
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// Longest pause between attempts to (re)open a port.
const MAX_REOPEN: Duration = Duration::from_secs(2);

/// One port's ingest.
pub struct SerialIngest {
    /// Registry.
    pub registry: Arc<Registry>,
    /// Journal.
    pub journal: Journal,
    /// Supervision.
    pub seen: mpsc::UnboundedSender<Seen>,
    /// The port.
    pub port: SerialPortConfig,
}

/// An answer owed once its commit is answered: an ACK for an alarm, a DISPLAY for a tap.
enum PendingAck {
    Alarm {
        rx: oneshot::Receiver<Result<AlarmOutcome, JournalError>>,
        device: String,
        seq: u32,
    },
    Tap {
        rx: oneshot::Receiver<Result<Down, JournalError>>,
        device: String,
        seq: u32,
    },
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
                    PendingAck::Alarm { rx, device, seq } => match rx.await {
                        Ok(Ok(_)) => frame_bytes(&Frame {
                            device: &device,
                            seq,
                            body: Body::Ack,
                        }),
                        _ => {
                            tracing::error!(device = %device, seq, "serial alarm not committed; not acknowledged (the device retransmits)");
                            None
                        }
                    },
                    PendingAck::Tap { rx, device, seq } => match rx.await {
                        Ok(Ok(down)) => down_frame(&device, &down),
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
        let nak = |reason: u8| {
            frame_bytes(&Frame {
                device: frame.device,
                seq: frame.seq,
                body: Body::Nak { reason },
            })
        };
        if !self.registry.devices.contains_key(frame.device) {
            self.dead_letter(
                "unknown_device",
                format!(
                    "device {} is not registered; add it to the config",
                    frame.device
                ),
                raw,
            )
            .await;
            if let Some(b) = nak(2) {
                let _ = out.send(b).await;
            }
            return;
        }
        match frame.body {
            Body::Alarm { action } => {
                let action = match action {
                    1 => AlarmAction::Press,
                    2 => AlarmAction::Cancel,
                    3 => AlarmAction::Checkin,
                    other => {
                        self.dead_letter(
                            "malformed_frame",
                            format!("alarm action {other} is not 1, 2 or 3"),
                            raw,
                        )
                        .await;
                        if let Some(b) = nak(1) {
                            let _ = out.send(b).await;
                        }
                        return;
                    }
                };
                let _ = self.seen.send(Seen::Activity {
                    device: frame.device.to_string(),
                    battery_pct: None,
                });
                let msg = AlarmMessage {
                    v: 1,
                    seq: frame.seq,
                    action,
                    ts: None,
                };
                let rx = self
                    .journal
                    .alarm(frame.device.to_string(), msg, Timestamp::now())
                    .await;
                let _ = acks
                    .send(PendingAck::Alarm {
                        rx,
                        device: frame.device.to_string(),
                        seq: frame.seq,
                    })
                    .await;
            }
            Body::Heartbeat {
                battery_mv,
                battery_pct,
            } => {
                let pct = (battery_pct <= 100).then_some(battery_pct);
                let _ = self.seen.send(Seen::Activity {
                    device: frame.device.to_string(),
                    battery_pct: pct,
                });
                self.journal
                    .device_status(vec![DeviceStatus {
                        device_id: frame.device.to_string(),
                        last_seen: Timestamp::now(),
                        battery_mv: Some(battery_mv),
                        battery_pct: pct,
                        rssi: None,
                    }])
                    .await;
            }
            Body::CardTap { uid, price, .. } if self.registry.canteen.is_some() => {
                let _ = self.seen.send(Seen::Activity {
                    device: frame.device.to_string(),
                    battery_pct: None,
                });
                let card: String = uid.iter().map(|b| format!("{b:02X}")).collect();
                let tap = Tap {
                    v: 1,
                    seq: frame.seq,
                    card,
                    price_fen: price.map(i64::from),
                    delivered_by: None,
                    ts: None,
                };
                let rx = self
                    .journal
                    .tap(frame.device.to_string(), tap, Timestamp::now())
                    .await;
                let _ = acks
                    .send(PendingAck::Tap {
                        rx,
                        device: frame.device.to_string(),
                        seq: frame.seq,
                    })
                    .await;
            }
            Body::CardTap { .. } | Body::Health { .. } => {
                // Health readings come with the health issue; taps need a [canteen].
                self.dead_letter(
                    "unsupported_type",
                    "health readings, or card taps without a [canteen], are not handled".into(),
                    raw,
                )
                .await;
                if let Some(b) = nak(4) {
                    let _ = out.send(b).await;
                }
            }
            Body::Ack | Body::Nak { .. } | Body::Display { .. } => {
                self.dead_letter(
                    "wrong_direction",
                    "a gateway-to-device message arrived from a device".into(),
                    raw,
                )
                .await;
            }
        }
    }

    async fn reject_undecodable(&self, e: DecodeError, raw: &[u8]) {
        let path = self.port.port.clone();
        match e {
            // Noise: no reply, no dead letter (it may not even be a frame), just counted.
            DecodeError::Crc => {
                metrics::counter!("eldergate_serial_crc_errors_total", "port" => path).increment(1)
            }
            DecodeError::Cobs | DecodeError::TooShort | DecodeError::TooLong => {
                metrics::counter!("eldergate_serial_resyncs_total", "port" => path).increment(1)
            }
            DecodeError::Version(v) => {
                self.dead_letter(
                    "unknown_version",
                    format!("serial protocol version {v}; this gateway speaks 1"),
                    raw,
                )
                .await
            }
            DecodeError::UnknownType(t) => {
                self.dead_letter("unsupported_type", format!("message type 0x{t:02x}"), raw)
                    .await
            }
            DecodeError::Malformed => {
                self.dead_letter(
                    "malformed_frame",
                    "fields do not fit the message type (SPEC.md §4)".into(),
                    raw,
                )
                .await
            }
        }
    }

    async fn dead_letter(&self, reason: &'static str, detail: String, raw: &[u8]) {
        metrics::counter!("eldergate_rejected_total", "reason" => reason).increment(1);
        tracing::warn!(port = %self.port.port, reason, %detail, "serial frame rejected; kept as a dead letter");
        // Nothing is acked for a rejected frame, so there is no commit to wait for.
        let _commit = self
            .journal
            .dead_letter(DeadLetter {
                received_at: Timestamp::now(),
                source: format!("serial:{}", self.port.port),
                reason,
                detail,
                payload: raw.to_vec(),
                payload_len: raw.len(),
            })
            .await;
    }
}
