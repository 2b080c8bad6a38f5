//! The one-touch alarm button: debounce, classify, feed back.
//!
//! Classification (times configurable in [`Timing`]): a press held ≥ 3 s is a **cancel** (sent
//! while still held); two short presses within 400 ms are a **check-in**; a single short press is
//! an **SOS**, sent as soon as the double-press window has passed. The LED shows the link state:
//! blinking while an event waits for its ACK, steady for 2 s once acknowledged, fast blinking when
//! the link is failing.

use crate::link::Outbox;
use crate::seq::{PersistedPollError, SeqAllocator, SeqStore};
use eldergate_protocol::serial::MAX_WIRE;
use embedded_hal::digital::{InputPin, OutputPin};

/// What the senior did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Short press.
    Sos,
    /// Long press.
    Cancel,
    /// Double press.
    Checkin,
}

impl Action {
    /// The ALARM action code of SPEC.md §4.
    pub fn code(self) -> u8 {
        match self {
            Action::Sos => 1,
            Action::Cancel => 2,
            Action::Checkin => 3,
        }
    }
}

/// Timing of the classifier, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The input must be stable this long to count.
    pub debounce: u64,
    /// A second press within this long after the first release makes a check-in.
    pub double_window: u64,
    /// Held this long: cancel.
    pub long_press: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            debounce: 20,
            double_window: 400,
            long_press: 3_000,
        }
    }
}

/// Turns raw samples of the button into actions.
pub struct PressDetector {
    timing: Timing,
    raw: bool,
    raw_since: u64,
    stable: bool,
    pressed_at: u64,
    long_sent: bool,
    short_presses: u8,
    released_at: u64,
}

impl PressDetector {
    /// A detector with the button released.
    pub fn new(timing: Timing) -> Self {
        PressDetector {
            timing,
            raw: false,
            raw_since: 0,
            stable: false,
            pressed_at: 0,
            long_sent: false,
            short_presses: 0,
            released_at: 0,
        }
    }

    /// Feeds one sample (true = pressed) taken at `now_ms`; returns an action when one is decided.
    pub fn sample(&mut self, pressed: bool, now_ms: u64) -> Option<Action> {
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now_ms;
        }
        if self.raw != self.stable && now_ms.saturating_sub(self.raw_since) >= self.timing.debounce
        {
            self.stable = self.raw;
            if self.stable {
                self.pressed_at = now_ms;
                self.long_sent = false;
            } else if !self.long_sent {
                self.short_presses = self.short_presses.saturating_add(1);
                self.released_at = now_ms;
                if self.short_presses >= 2 {
                    self.short_presses = 0;
                    return Some(Action::Checkin);
                }
            }
        }
        if self.stable
            && !self.long_sent
            && now_ms.saturating_sub(self.pressed_at) >= self.timing.long_press
        {
            self.long_sent = true;
            self.short_presses = 0;
            return Some(Action::Cancel);
        }
        if !self.stable
            && self.short_presses == 1
            && now_ms.saturating_sub(self.released_at) > self.timing.double_window
        {
            self.short_presses = 0;
            return Some(Action::Sos);
        }
        None
    }
}

/// Reads the battery through whatever ADC the board has (embedded-hal 1.0 has no ADC trait).
pub trait BatterySensor {
    /// Sensor error.
    type Error;
    /// Battery voltage in millivolts.
    fn millivolts(&mut self) -> Result<u16, Self::Error>;
}

/// Charge estimate for a 3 V lithium coin cell: linear from 2.0 V (0%) to 3.0 V (100%).
pub fn coin_cell_percent(mv: u16) -> u8 {
    (u32::from(mv.clamp(2_000, 3_000) - 2_000) / 10) as u8
}

/// Writes a HEARTBEAT frame (never acknowledged, never retransmitted; SPEC.md §5).
pub fn heartbeat_frame<S: BatterySensor>(
    device: &str,
    seq: u32,
    sensor: &mut S,
    out: &mut [u8; MAX_WIRE],
) -> Option<usize> {
    use eldergate_protocol::serial::{encode, Body, Frame};
    let (battery_mv, battery_pct) = match sensor.millivolts() {
        Ok(mv) => (mv, coin_cell_percent(mv)),
        Err(_) => (0, 255),
    };
    encode(
        &Frame {
            device,
            seq,
            body: Body::Heartbeat {
                battery_mv,
                battery_pct,
            },
        },
        out,
    )
    .ok()
}

/// How long the LED stays on after an ACK.
pub const ACKED_LED_MS: u64 = 2_000;

/// The alarm-button device: a button on an input pin (active low), an LED, and the outbox.
pub struct AlarmButton<B, L, const N: usize> {
    button: B,
    led: L,
    detector: PressDetector,
    /// Unacknowledged events.
    pub outbox: Outbox<N>,
    acked_until: u64,
    /// An action waiting for its sequence number to be persisted ([`AlarmButton::poll_persisted`]).
    held: Option<Action>,
}

impl<B: InputPin, L: OutputPin, const N: usize> AlarmButton<B, L, N> {
    /// A button whose next event gets `first_seq`.
    pub fn new(button: B, led: L, timing: Timing, first_seq: u32) -> Self {
        AlarmButton {
            button,
            led,
            detector: PressDetector::new(timing),
            outbox: Outbox::new(first_seq),
            acked_until: 0,
            held: None,
        }
    }

    /// Call every few milliseconds: samples the button, queues actions, drives the LED, and
    /// writes a frame to send into `out` (returning its length) when one is due.
    pub fn poll(
        &mut self,
        device: &str,
        now_ms: u64,
        out: &mut [u8; MAX_WIRE],
    ) -> Result<Option<usize>, B::Error> {
        let pressed = self.button.is_low()?;
        if let Some(action) = self.detector.sample(pressed, now_ms) {
            // A full outbox keeps the oldest events: they are retransmitted until acked.
            let _ = self.outbox.push(action.code(), now_ms);
        }
        self.drive_led(now_ms);
        Ok(self.outbox.poll(device, now_ms, out))
    }

    /// [`AlarmButton::poll`] for a device that keeps its sequence numbers across resets: a new
    /// action is queued only once `seqs` has persisted its number (SPEC.md §5).
    ///
    /// If the store fails, the action is held (the LED blinks fast) and its store is retried on
    /// every poll; retransmissions of already queued events go on meanwhile. The store error is
    /// returned from every poll that has no frame to send; a poll that writes a frame returns it
    /// and leaves the error to the next poll. While an action is held, a further action is
    /// dropped (as with a full outbox, the oldest event wins).
    pub fn poll_persisted<S: SeqStore>(
        &mut self,
        seqs: &mut SeqAllocator<S>,
        device: &str,
        now_ms: u64,
        out: &mut [u8; MAX_WIRE],
    ) -> Result<Option<usize>, PersistedPollError<B::Error, S::Error>> {
        let pressed = self.button.is_low().map_err(PersistedPollError::Device)?;
        if let Some(action) = self.detector.sample(pressed, now_ms) {
            self.held.get_or_insert(action);
        }
        let mut store_error = None;
        if let Some(action) = self.held {
            if self.outbox.is_full() {
                // Same policy as `poll`: a full outbox keeps the oldest events.
                self.held = None;
            } else {
                match seqs.reserve(self.outbox.next_seq()) {
                    Ok(()) => {
                        self.held = None;
                        let _ = self.outbox.push(action.code(), now_ms);
                    }
                    Err(e) => store_error = Some(e),
                }
            }
        }
        self.drive_led(now_ms);
        match (self.outbox.poll(device, now_ms, out), store_error) {
            (Some(len), _) => Ok(Some(len)),
            (None, Some(e)) => Err(PersistedPollError::SeqStore(e)),
            (None, None) => Ok(None),
        }
    }

    /// True while an action waits for its sequence number to be persisted.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    fn drive_led(&mut self, now_ms: u64) {
        let on = if self.outbox.failing() || self.held.is_some() {
            (now_ms / 100) % 2 == 0
        } else if !self.outbox.is_idle() {
            (now_ms / 500) % 2 == 0
        } else {
            now_ms < self.acked_until
        };
        let _ = if on {
            self.led.set_high()
        } else {
            self.led.set_low()
        };
    }

    /// The gateway acknowledged `seq`.
    pub fn on_ack(&mut self, seq: u32, now_ms: u64) {
        if self.outbox.ack(seq) && self.outbox.is_idle() {
            self.acked_until = now_ms + ACKED_LED_MS;
        }
    }

    /// Gives back the pins.
    pub fn release(self) -> (B, L) {
        (self.button, self.led)
    }
}
