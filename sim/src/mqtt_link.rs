//! The MQTT transport of the firmware simulator: the frames the firmware emits become v1 MQTT
//! publishes (protocol/MQTT.md), and the gateway's `down/{device}` messages become the frames the
//! firmware expects.
//!
//! | firmware frame | MQTT |
//! |---|---|
//! | ALARM → | `alarm/{device}`, `AlarmMessage`, QoS 1 |
//! | HEARTBEAT → | `tele/{device}/heartbeat`, `Heartbeat` (battery fields only when known), QoS 1 |
//! | CARD_TAP → | `tap/{reader}`, `Tap` (card = UID in hex, as in the roster), QoS 1 |
//! | ← ACK | `down/{device}`, `Down::Ack` |
//! | ← DISPLAY | `down/{reader}`, `Down::Display` (masked name cut to the frame's 24 bytes) |
//!
//! All simulated devices share one connection (one subscription to `down/+`). A downlink the
//! firmware could not understand (bad JSON, a device id too long for a frame) is counted in
//! [`MqttLinkStats`] and logged, never a panic.

use super::firmware_fleet::SimLink;
use super::mqtt_client::mqtt_options;
use anyhow::Context;
use eldergate_protocol::payload::{AlarmAction, AlarmMessage, Down, Heartbeat, Tap};
use eldergate_protocol::serial::{decode, Body, Frame};
use eldergate_protocol::topic;
use rumqttc::{Event, Incoming, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where the simulated devices connect.
#[derive(Debug, Clone)]
pub struct MqttLinkOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Site id.
    pub site: String,
    /// Client id of the shared connection.
    pub client_id: String,
    /// Username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
}

/// Counters of the MQTT link.
#[derive(Debug, Default)]
pub struct MqttLinkStats {
    /// Publishes handed to the client.
    pub published: AtomicU64,
    /// Frames from the firmware with no v1 MQTT equivalent (should stay 0).
    pub untranslatable_frames: AtomicU64,
    /// `down/…` messages that were not a `Down` the firmware understands.
    pub rejected_downlinks: AtomicU64,
}

/// Why a frame has no MQTT publish.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    /// The frame is not a device-to-gateway message.
    #[error("a {0} frame is not sent by devices")]
    NotFromDevice(&'static str),
    /// Alarm action code outside 1–3.
    #[error("alarm action {0} is not 1, 2 or 3")]
    BadAction(u8),
    /// A health reading (kiosks come with the health issue).
    #[error("health readings have no v1 MQTT topic yet")]
    Health,
}

/// The v1 MQTT publish (topic, JSON payload) for a frame the firmware emitted.
pub fn frame_to_publish(
    site: &str,
    frame: &Frame<'_>,
    now_ms: i64,
) -> Result<(String, Vec<u8>), TranslateError> {
    let json = |v: Result<Vec<u8>, serde_json::Error>| v.unwrap_or_default();
    match frame.body {
        Body::Alarm { action } => {
            let action = match action {
                1 => AlarmAction::Press,
                2 => AlarmAction::Cancel,
                3 => AlarmAction::Checkin,
                other => return Err(TranslateError::BadAction(other)),
            };
            let msg = AlarmMessage {
                v: 1,
                seq: frame.seq,
                action,
                ts: Some(now_ms),
            };
            Ok((
                topic::alarm(site, frame.device),
                json(serde_json::to_vec(&msg)),
            ))
        }
        Body::Heartbeat {
            battery_mv,
            battery_pct,
        } => {
            // 255 is the serial protocol's "unknown"; MQTT says so by leaving the fields out.
            let known = battery_pct <= 100;
            let msg = Heartbeat {
                v: 1,
                battery_mv: known.then_some(battery_mv),
                battery_pct: known.then_some(battery_pct),
                rssi: None,
                ts: Some(now_ms),
            };
            Ok((
                topic::telemetry(site, frame.device, "heartbeat"),
                json(serde_json::to_vec(&msg)),
            ))
        }
        Body::CardTap { uid, mac, price } => {
            let msg = Tap {
                v: 1,
                seq: frame.seq,
                card: uid.iter().map(|b| format!("{b:02X}")).collect(),
                price_fen: price.map(i64::from),
                delivered_by: None,
                ts: Some(now_ms),
                mac: (!mac.is_empty()).then(|| mac.iter().map(|b| format!("{b:02X}")).collect()),
            };
            Ok((
                topic::tap(site, frame.device),
                json(serde_json::to_vec(&msg)),
            ))
        }
        Body::Health { .. } => Err(TranslateError::Health),
        Body::Ack => Err(TranslateError::NotFromDevice("ACK")),
        Body::Nak { .. } => Err(TranslateError::NotFromDevice("NAK")),
        Body::Display { .. } => Err(TranslateError::NotFromDevice("DISPLAY")),
        Body::ReadingResult { .. } => Err(TranslateError::NotFromDevice("READING_RESULT")),
    }
}

/// The wire frame the firmware of `device` expects for a `Down` message; None when it cannot be
/// framed (a device id longer than the serial frame allows). The same framing as the gateway's
/// own serial ports.
pub fn down_to_frame(device: &str, down: &Down) -> Option<Vec<u8>> {
    eldergate::serial::down_frame(device, down)
}

/// Connects the simulated devices to the broker: returns the link for
/// [`super::firmware_fleet::run`] once the downlink subscription is confirmed (30 s at most).
pub async fn connect(opts: MqttLinkOptions) -> anyhow::Result<(SimLink, Arc<MqttLinkStats>)> {
    let (client, mut eventloop) = eldergate::mqtt::new_client(
        mqtt_options(&opts.host, opts.port, &opts.client_id, &opts.credentials),
        100_000,
    );
    let stats = Arc::new(MqttLinkStats::default());
    let (to_gateway, mut outgoing) = mpsc::channel::<Vec<u8>>(16_384);
    let (incoming, from_gateway) = mpsc::channel::<Vec<u8>>(16_384);
    let (ready_tx, ready_rx) = oneshot::channel::<()>();

    let down_prefix = topic::down(&opts.site, "");
    let (sub, st) = (client.clone(), stats.clone());
    let filter = topic::down_filter(&opts.site);
    let receiver = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = sub.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let frame = p
                        .topic
                        .strip_prefix(&down_prefix)
                        .zip(serde_json::from_slice::<Down>(&p.payload).ok())
                        .and_then(|(device, down)| down_to_frame(device, &down));
                    match frame {
                        Some(wire) => {
                            if incoming.send(wire).await.is_err() {
                                return;
                            }
                        }
                        None => {
                            st.rejected_downlinks.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(topic = %p.topic, bytes = p.payload.len(), "simulator: a downlink the firmware cannot take; ignored");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "simulator: MQTT connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });

    let (site, st) = (opts.site.clone(), stats.clone());
    let publisher = tokio::spawn(async move {
        while let Some(mut wire) = outgoing.recv().await {
            if wire.last() == Some(&0) {
                wire.pop();
            }
            let translated = decode(&mut wire)
                .map_err(|_| TranslateError::NotFromDevice("undecodable"))
                .and_then(|f| frame_to_publish(&site, &f, jiff::Timestamp::now().as_millisecond()));
            match translated {
                Ok((topic, payload)) => {
                    // QoS 1; with the broker away the publish waits in the client's queue, and
                    // a lost one is retransmitted by the firmware anyway.
                    if client
                        .publish(topic, QoS::AtLeastOnce, false, payload)
                        .await
                        .is_ok()
                    {
                        st.published.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    st.untranslatable_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "simulator: a firmware frame has no MQTT publish; dropped");
                }
            }
        }
    });

    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .context("simulated devices could not subscribe to their downlink within 30 s; is the broker up?")?
        .context("the simulator's MQTT connection ended before it subscribed")?;
    Ok((
        SimLink {
            to_gateway,
            from_gateway,
            tasks: vec![receiver, publisher],
        },
        stats,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldergate_protocol::payload::TapResult;

    fn decoded(mut wire: Vec<u8>) -> (String, u32, String) {
        wire.pop();
        let f = decode(&mut wire).expect("a frame");
        (f.device.to_string(), f.seq, format!("{:?}", f.body))
    }

    #[test]
    fn an_alarm_frame_becomes_the_v1_alarm_publish() {
        let f = Frame {
            device: "btn-0001",
            seq: 42,
            body: Body::Alarm { action: 1 },
        };
        let (t, p) = frame_to_publish("s1", &f, 1_763_900_000_000).expect("translated");
        assert_eq!(t, "eldergate/v1/s1/alarm/btn-0001");
        let msg: AlarmMessage = serde_json::from_slice(&p).expect("an AlarmMessage");
        assert_eq!((msg.seq, msg.action), (42, AlarmAction::Press));
        let bad = Frame {
            body: Body::Alarm { action: 9 },
            ..f
        };
        assert_eq!(
            frame_to_publish("s1", &bad, 0),
            Err(TranslateError::BadAction(9))
        );
    }

    #[test]
    fn an_unknown_battery_is_left_out_of_the_heartbeat() {
        let f = Frame {
            device: "rdr-01",
            seq: 1,
            body: Body::Heartbeat {
                battery_mv: 0,
                battery_pct: 255,
            },
        };
        let (t, p) = frame_to_publish("s1", &f, 0).expect("translated");
        assert_eq!(t, "eldergate/v1/s1/tele/rdr-01/heartbeat");
        let hb: Heartbeat = serde_json::from_slice(&p).expect("a Heartbeat");
        assert_eq!((hb.battery_mv, hb.battery_pct), (None, None));
    }

    #[test]
    fn a_card_tap_carries_the_uid_as_the_roster_prints_it() {
        let f = Frame {
            device: "rdr-02",
            seq: 7,
            body: Body::CardTap {
                uid: &[0x1D, 0xDC, 0xCF, 0x2D],
                mac: &[],
                price: Some(1500),
            },
        };
        let (_, p) = frame_to_publish("s1", &f, 0).expect("translated");
        let tap: Tap = serde_json::from_slice(&p).expect("a Tap");
        assert_eq!(
            (tap.card.as_str(), tap.seq, tap.price_fen),
            ("1DDCCF2D", 7, Some(1500))
        );
    }

    #[test]
    fn downlinks_become_the_frames_the_firmware_expects() {
        let ack = down_to_frame("btn-0001", &Down::Ack { v: 1, seq: 9 }).expect("a frame");
        assert_eq!(decoded(ack), ("btn-0001".into(), 9, "Ack".into()));
        let display = Down::Display {
            v: 1,
            seq: 3,
            result: TapResult::Paid,
            name: Some("欧阳*明明明明明明明明明".into()),
            price_fen: 1500,
            subsidy_fen: 150,
            payable_fen: 1350,
            balance_fen: 1_000_000_000_000,
        };
        let (_, seq, body) = decoded(down_to_frame("rdr-02", &display).expect("a frame"));
        assert_eq!(seq, 3);
        assert!(body.contains("balance: 2147483647"), "{body}");
        assert!(down_to_frame("a-device-id-longer-than-16", &Down::Ack { v: 1, seq: 1 }).is_none());
    }
}
