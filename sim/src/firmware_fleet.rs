//! Many firmware devices on the host, driven by one loop, over any link.
//!
//! The device side always speaks serial-protocol frames (protocol/SPEC.md), exactly as the
//! firmware does on a microcontroller: [`run`] polls every button and reader, hands the frames
//! they emit to a [`SimLink`], and feeds the frames that come back (ACK, NAK, DISPLAY) to the
//! firmware. A link is two channels of wire frames; the serial link ([`crate::serial`]) moves them
//! over a real port, the MQTT link ([`super::mqtt_link`]) translates them to and from the v1 MQTT
//! contract. So there is one code path for the device logic and only the transport differs.
//!
//! Guarantees: nothing from the gateway can panic the loop (undecodable or unexpected frames are
//! counted in [`SimStats`] and logged); a full link loses the frame, as a busy UART would, and the
//! firmware's retransmission recovers it. A failed store of a device's sequence-number mark
//! (`--seq-dir`) is counted in [`SimStats::seq_store_errors`] and logged; the device goes on by
//! the firmware's policy (an alarm is sent anyway, a tap waits).

use super::device::{DevicePoll, DisplayLog, SimButton, SimReader};
use super::seq_file::SeqFileError;
use eldergate_protocol::serial::{decode, Body, MAX_WIRE};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A transport for simulated devices: wire frames (COBS-encoded, with their 0x00 delimiter) to
/// the gateway and back.
pub struct SimLink {
    /// Frames the devices send.
    pub to_gateway: mpsc::Sender<Vec<u8>>,
    /// Frames the gateway sends (one complete frame per message).
    pub from_gateway: mpsc::Receiver<Vec<u8>>,
    /// The link's background tasks, stopped when the simulation ends.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Counters of a running simulation (shared: read them while it runs).
#[derive(Default)]
pub struct SimStats {
    /// Alarm events sent for the first time.
    pub alarms_sent: AtomicU64,
    /// Alarm frames sent again because no ACK had come.
    pub retransmissions: AtomicU64,
    /// Heartbeat frames sent.
    pub heartbeats_sent: AtomicU64,
    /// Card taps sent.
    pub taps_sent: AtomicU64,
    /// ACKs for a pending event.
    pub acks: AtomicU64,
    /// DISPLAY answers received (the terminal shows those for the tap it waits on).
    pub displays: AtomicU64,
    /// NAKs received (the gateway refused a frame; the firmware keeps retransmitting it, which
    /// is worth knowing about).
    pub naks: AtomicU64,
    /// Frames from the gateway that could not be decoded, or were for no simulated device.
    pub unexpected_frames: AtomicU64,
    /// Frames lost because the link was full or gone.
    pub link_drops: AtomicU64,
    /// Failed stores of a device's sequence-number mark (`--seq-dir`); each is retried.
    pub seq_store_errors: AtomicU64,
    acked: Mutex<Vec<AckedEvent>>,
    answer_latencies: Mutex<Vec<Duration>>,
}

/// An alarm event the gateway acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedEvent {
    /// The button.
    pub device: String,
    /// The event's sequence number.
    pub seq: u32,
    /// From the first send of the frame to the ACK reaching the firmware.
    pub latency: Duration,
}

impl SimStats {
    /// Every acknowledged alarm event so far.
    pub fn acked(&self) -> Vec<AckedEvent> {
        self.acked.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// For every answered tap: from the CARD_TAP's send to its DISPLAY reaching the terminal.
    pub fn answer_latencies(&self) -> Vec<Duration> {
        self.answer_latencies
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The simulated devices: firmware buttons and card-reader terminals.
pub struct FirmwareFleet {
    /// Alarm buttons.
    pub buttons: Vec<SimButton>,
    /// Card readers.
    pub readers: Vec<SimReader>,
    /// What the readers' displays showed.
    pub displays: DisplayLog,
    stats: Arc<SimStats>,
    /// First send of each pending alarm event, for the ACK latency.
    first_sent: HashMap<(usize, u32), Instant>,
    /// The tap each reader waits on, and when it was sent, for the answer latency.
    tap_sent: HashMap<usize, (u32, Instant)>,
}

impl FirmwareFleet {
    /// A fleet of `buttons` and `readers`; `displays` is the log the readers were built with.
    pub fn new(buttons: Vec<SimButton>, readers: Vec<SimReader>, displays: DisplayLog) -> Self {
        FirmwareFleet {
            buttons,
            readers,
            displays,
            stats: Arc::default(),
            first_sent: HashMap::new(),
            tap_sent: HashMap::new(),
        }
    }

    /// The counters, to read while the fleet runs.
    pub fn stats(&self) -> Arc<SimStats> {
        self.stats.clone()
    }

    /// A button by id.
    pub fn button(&self, id: &str) -> Option<&SimButton> {
        self.buttons.iter().find(|b| b.id == id)
    }

    /// Polls every device once; returns the frames to send.
    fn poll(&mut self, now_ms: u64) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut out = [0u8; MAX_WIRE];
        for (i, b) in self.buttons.iter_mut().enumerate() {
            // A button sends at most one frame per poll; a backlog drains over the next ticks.
            let was_failing = b.seq_store_failing();
            let DevicePoll {
                frame,
                seq_store_error,
            } = b.poll(now_ms, &mut out);
            if let Some(n) = frame {
                let wire = out[..n].to_vec();
                note_sent(&self.stats, &mut self.first_sent, i, &wire);
                frames.push(wire);
            }
            let failing = b.seq_store_failing();
            report_seq_store(&self.stats, &b.id, was_failing, failing, seq_store_error);
        }
        for (i, r) in self.readers.iter_mut().enumerate() {
            let was_failing = r.seq_store_failing();
            let DevicePoll {
                frame,
                seq_store_error,
            } = r.poll(now_ms, &mut out);
            let failing = r.seq_store_failing();
            report_seq_store(&self.stats, &r.id, was_failing, failing, seq_store_error);
            if let Some(n) = frame {
                let wire = out[..n].to_vec();
                if let Some(Kind::Tap(seq)) = frame_kind(&wire) {
                    SimStats::count(&self.stats.taps_sent);
                    self.tap_sent.insert(i, (seq, Instant::now()));
                } else {
                    SimStats::count(&self.stats.heartbeats_sent);
                }
                frames.push(wire);
            }
        }
        frames
    }

    /// Hands one frame from the gateway to the device it is addressed to.
    fn deliver(&mut self, mut wire: Vec<u8>, now_ms: u64) {
        // The frame reader hands over frames with their delimiter; decode wants them without.
        if wire.last() == Some(&0) {
            wire.pop();
        }
        let frame = match decode(&mut wire) {
            Ok(f) => f,
            Err(e) => {
                SimStats::count(&self.stats.unexpected_frames);
                tracing::warn!(error = ?e, "simulator: undecodable frame from the gateway; ignored");
                return;
            }
        };
        match frame.body {
            Body::Ack => {
                let Some(i) = self.buttons.iter().position(|b| b.id == frame.device) else {
                    SimStats::count(&self.stats.unexpected_frames);
                    return;
                };
                let b = &mut self.buttons[i];
                let was_pending = !b.firmware.outbox.is_idle();
                b.firmware.on_ack(frame.seq, now_ms);
                if let Some(sent) = self.first_sent.remove(&(i, frame.seq)) {
                    SimStats::count(&self.stats.acks);
                    if let Ok(mut acked) = self.stats.acked.lock() {
                        acked.push(AckedEvent {
                            device: b.id.clone(),
                            seq: frame.seq,
                            latency: sent.elapsed(),
                        });
                    }
                } else if was_pending {
                    tracing::debug!(device = %b.id, seq = frame.seq, "simulator: ACK for an event not pending (a repeated ACK)");
                }
            }
            Body::Display { .. } => {
                let Some(i) = self.readers.iter().position(|r| r.id == frame.device) else {
                    SimStats::count(&self.stats.unexpected_frames);
                    return;
                };
                SimStats::count(&self.stats.displays);
                // Only the answer to the tap being waited on counts (a late answer to an
                // earlier tap is ignored by the terminal too).
                if let Some(&(seq, sent)) = self.tap_sent.get(&i) {
                    if seq == frame.seq {
                        self.tap_sent.remove(&i);
                        if let Ok(mut l) = self.stats.answer_latencies.lock() {
                            l.push(sent.elapsed());
                        }
                    }
                }
                self.readers[i].terminal.on_frame(&frame);
            }
            Body::Nak { reason } => {
                SimStats::count(&self.stats.naks);
                tracing::warn!(device = %frame.device, seq = frame.seq, reason, "simulator: the gateway refused a frame (NAK); is the device registered with this kind?");
            }
            // A health kiosk's answer: the kiosk simulator (kiosk.rs) has its own connection.
            Body::ReadingResult { .. } => {}
            _ => {
                SimStats::count(&self.stats.unexpected_frames);
                tracing::warn!(device = %frame.device, "simulator: a device-to-gateway frame came from the gateway; ignored");
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum Kind {
    Alarm(u32),
    Heartbeat,
    Tap(u32),
    Other,
}

fn frame_kind(wire: &[u8]) -> Option<Kind> {
    let mut copy = wire.to_vec();
    if copy.last() == Some(&0) {
        copy.pop();
    }
    let f = decode(&mut copy).ok()?;
    Some(match f.body {
        Body::Alarm { .. } => Kind::Alarm(f.seq),
        Body::Heartbeat { .. } => Kind::Heartbeat,
        Body::CardTap { .. } => Kind::Tap(f.seq),
        _ => Kind::Other,
    })
}

/// Counts a failed store of `device`'s mark; warns when the device starts failing (a retry that
/// fails again is only a debug line: the firmware retries about once a second) and says when a
/// retry worked.
fn report_seq_store(
    stats: &SimStats,
    device: &str,
    was_failing: bool,
    failing: bool,
    error: Option<SeqFileError>,
) {
    match error {
        Some(e) => {
            SimStats::count(&stats.seq_store_errors);
            if was_failing {
                tracing::debug!(device, error = %e, "simulator: the sequence-number store still fails");
            } else {
                tracing::warn!(device, error = %e, "simulator: cannot persist the sequence-number mark; alarms are sent anyway, card taps wait, the store is retried");
            }
        }
        None if was_failing && !failing => {
            tracing::info!(device, "simulator: the sequence-number store works again");
        }
        None => {}
    }
}

fn note_sent(
    stats: &SimStats,
    first_sent: &mut HashMap<(usize, u32), Instant>,
    button: usize,
    wire: &[u8],
) {
    match frame_kind(wire) {
        Some(Kind::Alarm(seq)) => match first_sent.entry((button, seq)) {
            Entry::Occupied(_) => SimStats::count(&stats.retransmissions),
            Entry::Vacant(v) => {
                v.insert(Instant::now());
                SimStats::count(&stats.alarms_sent);
            }
        },
        Some(Kind::Heartbeat) => SimStats::count(&stats.heartbeats_sent),
        _ => {}
    }
}

/// The simulated seniors: called every tick to press pins and hold cards.
pub trait Senior: Send {
    /// Acts at `now` (time since the simulation started).
    fn act(&mut self, fleet: &FirmwareFleet, now: Duration);
}

impl<F: FnMut(&FirmwareFleet, Duration) + Send> Senior for F {
    fn act(&mut self, fleet: &FirmwareFleet, now: Duration) {
        self(fleet, now)
    }
}

/// How often the devices are polled. The firmware's debounce is 20 ms, so 10 ms is the slowest
/// tick that still sees every press.
pub const TICK: Duration = Duration::from_millis(10);

/// Runs `fleet` over `link` until `stop` resolves, then gives the fleet back (its firmware state
/// — outboxes, next sequence numbers — is what a test checks). Frames from the gateway are handed
/// to the firmware as they arrive, frames to it are sent every [`TICK`].
pub async fn run(
    mut fleet: FirmwareFleet,
    link: SimLink,
    mut senior: impl Senior,
    stop: impl Future<Output = ()>,
) -> FirmwareFleet {
    let SimLink {
        to_gateway,
        mut from_gateway,
        tasks,
    } = link;
    let start = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            frame = from_gateway.recv() => match frame {
                Some(wire) => {
                    let now_ms = start.elapsed().as_millis() as u64;
                    fleet.deliver(wire, now_ms);
                    continue;
                }
                // The link is gone for good: nothing can be sent or heard any more.
                None => {
                    (&mut stop).await;
                    break;
                }
            },
            _ = tick.tick() => {}
        }
        let now = start.elapsed();
        senior.act(&fleet, now);
        for wire in fleet.poll(now.as_millis() as u64) {
            if to_gateway.try_send(wire).is_err() {
                SimStats::count(&fleet.stats.link_drops);
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    fleet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FirmwareDevices;

    /// Polls `fleet` every tick from `from_ms` to `to_ms`; returns the kinds of frames sent.
    fn poll_span(fleet: &mut FirmwareFleet, from_ms: u64, to_ms: u64) -> Vec<Kind> {
        (from_ms..to_ms)
            .step_by(TICK.as_millis() as usize)
            .flat_map(|t| fleet.poll(t))
            .filter_map(|w| frame_kind(&w))
            .collect()
    }

    #[test]
    fn a_failing_seq_store_holds_the_tap_but_never_the_alarm_and_both_recover() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("seq");
        let mut fleet = FirmwareDevices {
            buttons: vec!["btn-0001".into()],
            readers: vec!["rdr-01".into()],
            heartbeat_every: None,
            print_displays: false,
            counter_price_fen: None,
        }
        .build_with_seq_dir(Some(&dir))
        .unwrap();
        let stats = fleet.stats();
        // The disk goes bad: the directory is now a regular file.
        std::fs::remove_dir(&dir).unwrap();
        std::fs::write(&dir, "not a directory").unwrap();

        let first_seq = fleet.buttons[0].firmware.outbox.next_seq();
        fleet.buttons[0].pin.set_pressed(true);
        let mut sent = poll_span(&mut fleet, 0, 100);
        fleet.buttons[0].pin.set_pressed(false);
        fleet.readers[0].cards.hold(vec![0xCA, 0, 0, 1]);
        sent.extend(poll_span(&mut fleet, 100, 900));
        assert!(sent.contains(&Kind::Alarm(first_seq)), "the SOS is sent");
        assert!(
            !sent.iter().any(|k| matches!(k, Kind::Tap(_))),
            "the tap waits"
        );
        assert_eq!(fleet.readers[0].cards.waiting(), 1, "the card is not read");
        assert!(fleet.buttons[0].seq_store_failing() && fleet.readers[0].seq_store_failing());
        assert!(SimStats::get(&stats.seq_store_errors) >= 2);

        // The disk is back: both retry within a second, the tap goes out and the marks cover
        // every number in use.
        std::fs::remove_file(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let sent = poll_span(&mut fleet, 900, 3_000);
        assert!(
            sent.iter().any(|k| matches!(k, Kind::Tap(_))),
            "the tap is sent"
        );
        assert!(!fleet.buttons[0].seq_store_failing() && !fleet.readers[0].seq_store_failing());
        let button = &fleet.buttons[0];
        let seqs = button.seqs().unwrap();
        assert!(seqs.is_reserved(button.firmware.outbox.next_seq().wrapping_sub(1)));
        assert!(dir.join("btn-0001.seq").exists() && dir.join("rdr-01.seq").exists());
    }

    #[test]
    fn without_a_seq_dir_nothing_is_written_and_no_store_is_counted() {
        let mut fleet = FirmwareDevices {
            buttons: vec!["btn-0001".into()],
            readers: vec![],
            heartbeat_every: None,
            print_displays: false,
            counter_price_fen: None,
        }
        .build_with_seq_dir(None)
        .unwrap();
        fleet.buttons[0].pin.set_pressed(true);
        let mut sent = poll_span(&mut fleet, 0, 100);
        fleet.buttons[0].pin.set_pressed(false);
        sent.extend(poll_span(&mut fleet, 100, 900));
        assert!(sent.iter().any(|k| matches!(k, Kind::Alarm(_))));
        assert!(fleet.buttons[0].seqs().is_none());
        assert_eq!(SimStats::get(&fleet.stats().seq_store_errors), 0);
    }
}
