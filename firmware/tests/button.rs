//! The alarm button on embedded-hal-mock pins: classification, retransmission until ACK, LED.

use eldergate_firmware::button::{Action, AlarmButton, PressDetector, Timing};
use eldergate_protocol::serial::{decode, Body, MAX_WIRE};
use embedded_hal_mock::eh1::digital::{Mock as Pin, State, Transaction as T};

/// Feeds a pressed/released pattern sampled every 5 ms; returns the actions with their times.
fn run(pattern: &[(bool, u64)]) -> Vec<(Action, u64)> {
    let mut d = PressDetector::new(Timing::default());
    let mut out = Vec::new();
    let mut t = 0;
    for &(pressed, dur) in pattern {
        let end = t + dur;
        while t < end {
            if let Some(a) = d.sample(pressed, t) {
                out.push((a, t));
            }
            t += 5;
        }
    }
    out
}

#[test]
fn a_short_press_is_an_sos_once_the_double_press_window_has_passed() {
    let got = run(&[(false, 50), (true, 150), (false, 1000)]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, Action::Sos);
}

#[test]
fn two_short_presses_are_a_check_in_not_two_sos() {
    let got = run(&[
        (false, 50),
        (true, 120),
        (false, 150),
        (true, 120),
        (false, 1000),
    ]);
    assert_eq!(
        got.iter().map(|a| a.0).collect::<Vec<_>>(),
        [Action::Checkin]
    );
}

#[test]
fn a_long_press_cancels_while_still_held_and_nothing_else() {
    let got = run(&[(false, 50), (true, 3500), (false, 1000)]);
    assert_eq!(
        got.iter().map(|a| a.0).collect::<Vec<_>>(),
        [Action::Cancel]
    );
    assert!(got[0].1 < 50 + 3500, "sent while held");
}

#[test]
fn contact_bounce_shorter_than_the_debounce_is_ignored() {
    let got = run(&[(false, 50), (true, 5), (false, 5), (true, 5), (false, 1000)]);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn the_button_retransmits_with_backoff_until_acked_and_then_shows_it() {
    // Pressed (active low) from 10 ms to 110 ms, sampled every 10 ms for 9 s.
    let mut reads = Vec::new();
    let mut t = 0u64;
    let mut samples = Vec::new();
    while t <= 9_000 {
        let pressed = (10..110).contains(&t);
        reads.push(T::get(if pressed { State::Low } else { State::High }));
        samples.push(t);
        t += 10;
    }
    let button = Pin::new(&reads);
    let mut dev: AlarmButton<_, _, 4> =
        AlarmButton::new(button, Led::default(), Timing::default(), 41);
    let mut sends = Vec::new();
    let mut out = [0u8; MAX_WIRE];
    for &now in &samples {
        if let Some(n) = dev.poll("btn-0003", now, &mut out).unwrap() {
            let mut w = out;
            let f = decode(&mut w[..n - 1]).unwrap();
            assert_eq!(f.body, Body::Alarm { action: 1 });
            assert_eq!(f.seq, 41);
            sends.push(now);
        }
        if now == 6_000 {
            dev.on_ack(41, now);
        }
    }
    // First send once the double-press window has passed, then after 1 s, 2 s (then acked).
    assert!(sends.len() == 3, "{sends:?}");
    assert_eq!(sends[1] - sends[0], 1_000);
    assert_eq!(sends[2] - sends[1], 2_000);
    assert!(dev.outbox.is_idle());
    assert_eq!(dev.outbox.next_seq(), 42);
    let (mut b, led) = dev.release();
    b.done();
    // Blinking while unacknowledged, steady on for 2 s after the ACK at 6 s, then off.
    let at = |ms: u64| led.0[(ms / 10) as usize];
    assert!((500..6_000).step_by(10).any(at) && (500..6_000).step_by(10).any(|ms| !at(ms)));
    assert!((6_000..8_000).step_by(10).all(at));
    assert!((8_000..9_000).step_by(10).all(|ms| !at(ms)));
}

/// An LED that records every level it is set to.
#[derive(Default)]
struct Led(Vec<bool>);

impl embedded_hal::digital::ErrorType for Led {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for Led {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.push(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.push(true);
        Ok(())
    }
}

struct Cell(Result<u16, ()>);

impl eldergate_firmware::button::BatterySensor for Cell {
    type Error = ();
    fn millivolts(&mut self) -> Result<u16, ()> {
        self.0
    }
}

#[test]
fn heartbeats_carry_the_battery_or_say_it_is_unknown() {
    use eldergate_firmware::button::heartbeat_frame;
    let mut out = [0u8; MAX_WIRE];
    let n = heartbeat_frame("btn-0003", 9, &mut Cell(Ok(2_810)), &mut out).unwrap();
    let mut w = out;
    assert_eq!(
        decode(&mut w[..n - 1]).unwrap().body,
        Body::Heartbeat {
            battery_mv: 2_810,
            battery_pct: 81
        }
    );
    let n = heartbeat_frame("btn-0003", 10, &mut Cell(Err(())), &mut out).unwrap();
    let mut w = out;
    assert_eq!(
        decode(&mut w[..n - 1]).unwrap().body,
        Body::Heartbeat {
            battery_mv: 0,
            battery_pct: 255
        }
    );
}
