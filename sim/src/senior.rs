//! The simulated seniors: what they do with the buttons and cards, at random or by a script.
//!
//! A senior acts through the hardware only — a pin held down for a while, a card held to a
//! reader — so the firmware's debounce and classification decide what the gateway is told,
//! exactly as on a real device.

use super::device::card_uid;
use super::firmware_fleet::{FirmwareFleet, Senior};
use super::script::{Gesture, ScriptStep};
use rand::Rng;
use std::collections::HashMap;
use std::time::Duration;

/// How long a short press is held.
const SHORT_HOLD: Duration = Duration::from_millis(150);
/// A double press: down, up, down again (well inside the firmware's 400 ms window).
const DOUBLE_DOWN: Duration = Duration::from_millis(120);
const DOUBLE_GAP: Duration = Duration::from_millis(130);
/// A long press, past the firmware's 3 s cancel threshold.
const LONG_HOLD: Duration = Duration::from_millis(3_500);

/// Pins held down over time: each button's planned (from, until) intervals.
#[derive(Default)]
struct HeldPins {
    plans: HashMap<usize, Vec<(Duration, Duration)>>,
}

impl HeldPins {
    fn busy(&self, button: usize) -> bool {
        self.plans.get(&button).is_some_and(|p| !p.is_empty())
    }

    /// Plans `gesture` on `button` from `now` (taps are not pin gestures and are ignored here).
    fn plan(&mut self, button: usize, gesture: &Gesture, now: Duration) {
        let intervals = match gesture {
            Gesture::Press => vec![(now, now + SHORT_HOLD)],
            Gesture::DoublePress => {
                let second = now + DOUBLE_DOWN + DOUBLE_GAP;
                vec![(now, now + DOUBLE_DOWN), (second, second + DOUBLE_DOWN)]
            }
            Gesture::LongPress => vec![(now, now + LONG_HOLD)],
            Gesture::Tap(_) => return,
        };
        self.plans.entry(button).or_default().extend(intervals);
    }

    /// Sets every planned pin for `now` and forgets finished intervals.
    fn apply(&mut self, fleet: &FirmwareFleet, now: Duration) {
        for (&i, plan) in self.plans.iter_mut() {
            let Some(b) = fleet.buttons.get(i) else {
                continue;
            };
            b.pin.set_pressed(
                plan.iter()
                    .any(|(from, until)| *from <= now && now < *until),
            );
            plan.retain(|(_, until)| *until > now);
        }
        self.plans.retain(|_, p| !p.is_empty());
    }
}

/// Seniors acting at random: button gestures with exponential gaps of mean `press_every` across
/// the fleet (mostly SOS presses, now and then a check-in or a cancel, as real seniors do), and
/// card taps with mean gap `tap_every` across the readers (one in ten with a card nobody
/// registered).
pub struct RandomSeniors {
    press_every: Option<Duration>,
    tap_every: Option<Duration>,
    cards: Vec<Vec<u8>>,
    pins: HeldPins,
    next_press: Duration,
    next_tap: Duration,
}

fn exponential_gap(mean: Duration) -> Duration {
    let u: f64 = rand::rng().random_range(0.001..1.0);
    Duration::from_secs_f64((-u.ln() * mean.as_secs_f64()).min(3_600.0))
}

impl RandomSeniors {
    /// `press_every` / `tap_every` of None: no presses / no taps. `cards`: roster card ids.
    pub fn new(
        press_every: Option<Duration>,
        tap_every: Option<Duration>,
        cards: &[String],
    ) -> RandomSeniors {
        RandomSeniors {
            next_press: press_every.map(exponential_gap).unwrap_or_default(),
            next_tap: tap_every.map(exponential_gap).unwrap_or_default(),
            press_every,
            tap_every,
            cards: cards.iter().filter_map(|c| card_uid(c)).collect(),
            pins: HeldPins::default(),
        }
    }

    fn press_someone(&mut self, fleet: &FirmwareFleet, now: Duration) {
        let mut rng = rand::rng();
        let idle: Vec<usize> = (0..fleet.buttons.len())
            .filter(|&i| !self.pins.busy(i))
            .collect();
        if idle.is_empty() {
            return;
        }
        let i = idle[rng.random_range(0..idle.len())];
        let gesture = match rng.random_range(0..10u8) {
            0 => Gesture::DoublePress,
            1 => Gesture::LongPress,
            _ => Gesture::Press,
        };
        tracing::info!(device = %fleet.buttons[i].id, ?gesture, "simulated senior at a button");
        self.pins.plan(i, &gesture, now);
    }

    fn tap_someone(&mut self, fleet: &FirmwareFleet) {
        let mut rng = rand::rng();
        if fleet.readers.is_empty() || self.cards.is_empty() {
            return;
        }
        let reader = &fleet.readers[rng.random_range(0..fleet.readers.len())];
        let uid = if rng.random_range(0..10u8) == 0 {
            // A card nobody registered (a visitor's transit card).
            vec![0xEE, rng.random(), rng.random(), rng.random()]
        } else {
            self.cards[rng.random_range(0..self.cards.len())].clone()
        };
        tracing::info!(reader = %reader.id, "simulated senior taps a card");
        reader.cards.hold(uid);
    }
}

impl Senior for RandomSeniors {
    fn act(&mut self, fleet: &FirmwareFleet, now: Duration) {
        if let Some(mean) = self.press_every {
            if now >= self.next_press && !fleet.buttons.is_empty() {
                self.next_press = now + exponential_gap(mean);
                self.press_someone(fleet, now);
            }
        }
        if let Some(mean) = self.tap_every {
            if now >= self.next_tap {
                self.next_tap = now + exponential_gap(mean);
                self.tap_someone(fleet);
            }
        }
        self.pins.apply(fleet, now);
    }
}

/// Seniors following a fixed script (see [`super::script`]); steps naming a device the fleet
/// does not have are logged and skipped.
pub struct ScriptedSeniors {
    steps: Vec<ScriptStep>,
    next: usize,
    cards: Vec<Vec<u8>>,
    next_card: usize,
    pins: HeldPins,
}

impl ScriptedSeniors {
    /// Follows `steps` (sorted by time here); a `tap` without a card takes the next of `cards`.
    pub fn new(mut steps: Vec<ScriptStep>, cards: &[String]) -> ScriptedSeniors {
        steps.sort_by_key(|s| s.at);
        ScriptedSeniors {
            steps,
            next: 0,
            cards: cards.iter().filter_map(|c| card_uid(c)).collect(),
            next_card: 0,
            pins: HeldPins::default(),
        }
    }

    /// True when every step has been acted out.
    pub fn finished(&self) -> bool {
        self.next >= self.steps.len()
    }

    fn step(&mut self, step: &ScriptStep, fleet: &FirmwareFleet, now: Duration) {
        if let Gesture::Tap(card) = &step.gesture {
            let Some(reader) = fleet.readers.iter().find(|r| r.id == step.device) else {
                tracing::warn!(line = step.line, device = %step.device, "script: no such simulated reader; step skipped");
                return;
            };
            let uid = match card {
                Some(uid) => Some(uid.clone()),
                None if self.cards.is_empty() => None,
                None => {
                    self.next_card += 1;
                    self.cards
                        .get((self.next_card - 1) % self.cards.len())
                        .cloned()
                }
            };
            match uid {
                Some(uid) => reader.cards.hold(uid),
                None => {
                    tracing::warn!(
                        line = step.line,
                        "script: `tap` without a card, and no roster cards; step skipped"
                    )
                }
            }
            return;
        }
        match fleet.buttons.iter().position(|b| b.id == step.device) {
            Some(i) => self.pins.plan(i, &step.gesture, now),
            None => {
                tracing::warn!(line = step.line, device = %step.device, "script: no such simulated button; step skipped")
            }
        }
    }
}

impl Senior for ScriptedSeniors {
    fn act(&mut self, fleet: &FirmwareFleet, now: Duration) {
        while let Some(step) = self.steps.get(self.next).cloned() {
            if step.at > now {
                break;
            }
            self.next += 1;
            tracing::info!(line = step.line, device = %step.device, gesture = ?step.gesture, "script step");
            self.step(&step, fleet, now);
        }
        self.pins.apply(fleet, now);
    }
}
