//! The one-touch alarm button: debounce, classify, feed back.
//!
//! Classification (times configurable in [`Timing`]): a press held ≥ 3 s is a **cancel** (sent
//! while still held); two short presses within 400 ms are a **check-in**; a single short press is
//! an **SOS**, sent as soon as the double-press window has passed. The LED shows the link state:
//! blinking while an event waits for its ACK, steady for 2 s once acknowledged, fast blinking when
//! the link is failing or the sequence-number store is failing.
//!
//! **Alarms first: an alarm never waits.** [`AlarmButton::poll_persisted`] queues and sends every
//! action at once, even when the [`SeqStore`] cannot persist the high-water mark (SPEC.md §5):
//! the store error is reported ([`ButtonPoll::seq_store_error`]), the LED blinks fast
//! ([`AlarmButton::seq_store_failing`]) and the store is retried until it works. The cost: a
//! reset *before* a store succeeds restarts at the old mark, so the numbers sent above it since
//! the fault may be reused, and the gateway takes a reused number as a duplicate for 24 h. A held
//! SOS is a certain loss; a reuse needs a reset during a storage fault — so the alarm wins. (The
//! card-reader terminal and [`Outbox::push_persisted`] keep the strict rule: their event waits.)

use crate::link::Outbox;
use crate::seq::{SeqAllocator, SeqStore};
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

/// While the sequence-number store is failing, [`AlarmButton::poll_persisted`] retries it at the
/// next action and otherwise at most this often (at most one store attempt per poll), so a broken
/// flash is not hammered with a write every few milliseconds.
pub const SEQ_STORE_RETRY_MS: u64 = 1_000;

/// What one [`AlarmButton::poll_persisted`] did. Both fields can be set at once: a store error
/// never keeps a frame from being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a frame to send may be in `out`"]
pub struct ButtonPoll<E> {
    /// The length of the frame written into `out`, to send now.
    pub frame: Option<usize>,
    /// The store attempt of this poll failed (the action, if any, was queued and sent anyway).
    /// [`AlarmButton::seq_store_failing`] stays true until a later attempt succeeds.
    pub seq_store_error: Option<E>,
}

/// The alarm-button device: a button on an input pin (active low), an LED, and the outbox.
pub struct AlarmButton<B, L, const N: usize> {
    button: B,
    led: L,
    detector: PressDetector,
    /// Unacknowledged events.
    pub outbox: Outbox<N>,
    acked_until: u64,
    /// A store failed and none has succeeded since: numbers above the persisted mark may be in
    /// use ([`AlarmButton::poll_persisted`]).
    seq_store_failing: bool,
    /// While `seq_store_failing`: when the store is tried again without a new action.
    seq_store_retry_at: u64,
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
            seq_store_failing: false,
            seq_store_retry_at: 0,
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

    /// [`AlarmButton::poll`] for a device that keeps its sequence numbers across resets
    /// (SPEC.md §5). **An action is never held**: before it is queued, `seqs` is asked to
    /// persist its number; if that store fails, the action is queued and sent all the same with
    /// the outbox's next number (see the module docs for the trade-off).
    ///
    /// After a failed store, [`AlarmButton::seq_store_failing`] is true and the LED blinks fast
    /// until a store succeeds; the store is retried at the next action and otherwise every
    /// [`SEQ_STORE_RETRY_MS`] — never more than one store attempt per poll. A successful retry
    /// stores a mark above every number sent meanwhile. Every failed attempt is returned in
    /// [`ButtonPoll::seq_store_error`] of the poll that made it, beside the frame of that poll,
    /// so the caller sends `frame` first and then reports the error; `Err` is only a pin error.
    /// A full outbox drops the new action (the oldest events win, as in `poll`).
    pub fn poll_persisted<S: SeqStore>(
        &mut self,
        seqs: &mut SeqAllocator<S>,
        device: &str,
        now_ms: u64,
        out: &mut [u8; MAX_WIRE],
    ) -> Result<ButtonPoll<S::Error>, B::Error> {
        let pressed = self.button.is_low()?;
        let action = self
            .detector
            .sample(pressed, now_ms)
            .filter(|_| !self.outbox.is_full());
        let retry_due = self.seq_store_failing && now_ms >= self.seq_store_retry_at;
        let mut seq_store_error = None;
        if action.is_some() || retry_due {
            // While failing, the next number is above the mark, so this is a real store, and its
            // mark (next + block) covers every number already sent above the old one.
            match seqs.reserve(self.outbox.next_seq()) {
                Ok(()) => self.seq_store_failing = false,
                Err(e) => {
                    self.seq_store_failing = true;
                    self.seq_store_retry_at = now_ms.saturating_add(SEQ_STORE_RETRY_MS);
                    seq_store_error = Some(e);
                }
            }
        }
        if let Some(action) = action {
            // Alarms first: queued whether or not its number was persisted.
            let _ = self.outbox.push(action.code(), now_ms);
        }
        self.drive_led(now_ms);
        Ok(ButtonPoll {
            frame: self.outbox.poll(device, now_ms, out),
            seq_store_error,
        })
    }

    /// True from a failed store of [`AlarmButton::poll_persisted`] until a later one succeeds:
    /// numbers above the persisted mark are in use, and a reset now may reuse them.
    pub fn seq_store_failing(&self) -> bool {
        self.seq_store_failing
    }

    fn drive_led(&mut self, now_ms: u64) {
        let on = if self.outbox.failing() || self.seq_store_failing {
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
