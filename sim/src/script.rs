//! The simulator's script format: one step per line, `SECONDS DEVICE GESTURE [CARD]`.
//!
//! ```text
//! # seconds from start, device, what the senior does
//! 1      btn-0001  press            # short press: SOS
//! 3.5    btn-0002  double           # double press: check-in
//! 6      btn-0001  long             # held 3.5 s: cancel
//! 10     rdr-02    tap 1DDCCF2D     # this card (hex UID, as in the roster)
//! 12     rdr-02    tap              # the next card of the roster
//! ```
//!
//! Blank lines and `#` comments are ignored. Every problem is reported with its line number.

use super::device::card_uid;
use std::time::Duration;

/// What a senior does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gesture {
    /// A short press (SOS).
    Press,
    /// Two short presses (check-in).
    DoublePress,
    /// A press held past 3 s (cancel).
    LongPress,
    /// A card held to a reader: this UID, or the next roster card.
    Tap(Option<Vec<u8>>),
}

/// One line of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStep {
    /// When, from the start of the simulation.
    pub at: Duration,
    /// The button or reader.
    pub device: String,
    /// What happens.
    pub gesture: Gesture,
    /// Line number in the script, for messages.
    pub line: usize,
}

/// A line the script parser cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("script line {line}: {message}")]
pub struct ScriptError {
    /// Line number (1-based).
    pub line: usize,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Parses a whole script.
pub fn parse(text: &str) -> Result<Vec<ScriptStep>, ScriptError> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fail = |message: String| ScriptError { line, message };
        let words: Vec<&str> = content.split_whitespace().collect();
        let (at, device, gesture, rest) = match words.as_slice() {
            [at, device, gesture, rest @ ..] => (*at, *device, *gesture, rest),
            _ => {
                return Err(fail(format!(
                    "{content:?} needs SECONDS DEVICE GESTURE, e.g. `1.5 btn-0001 press`"
                )))
            }
        };
        let at = at
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| fail(format!("{at:?} is not a number of seconds ≥ 0")))?;
        if !eldergate_protocol::topic::is_valid_id(device)
            || device.len() > eldergate_protocol::serial::MAX_ID
        {
            return Err(fail(format!(
                "{device:?} is not a device id (1–16 of A–Z a–z 0–9 - _ .)"
            )));
        }
        let gesture =
            match (gesture, rest) {
                ("press", []) => Gesture::Press,
                ("double", []) => Gesture::DoublePress,
                ("long", []) => Gesture::LongPress,
                ("tap", []) => Gesture::Tap(None),
                ("tap", [card]) => Gesture::Tap(Some(card_uid(card).ok_or_else(|| {
                    fail(format!("{card:?} is not a card UID (8–20 hex digits)"))
                })?)),
                (g @ ("press" | "double" | "long" | "tap"), extra) => {
                    return Err(fail(format!("unexpected {extra:?} after `{g}`")))
                }
                (other, _) => {
                    return Err(fail(format!(
                        "{other:?} is not a gesture; use press, double, long or tap [CARD]"
                    )))
                }
            };
        steps.push(ScriptStep {
            at,
            device: device.to_string(),
            gesture,
            line,
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let steps = parse(
            "# comment\n1 btn-0001 press\n\n3.5 btn-0002 double\n6 btn-0001 long # cancel\n10 rdr-02 tap 1DDCCF2D\n12 rdr-02 tap\n",
        )
        .expect("valid script");
        assert_eq!(steps.len(), 5);
        assert_eq!(steps[1].at, Duration::from_millis(3_500));
        assert_eq!(steps[1].gesture, Gesture::DoublePress);
        assert_eq!(
            steps[3].gesture,
            Gesture::Tap(Some(vec![0x1D, 0xDC, 0xCF, 0x2D]))
        );
        assert_eq!(steps[4].line, 7);
    }

    #[test]
    fn every_bad_line_is_named_with_its_number() {
        let e = |s: &str| parse(s).expect_err("invalid");
        assert_eq!(e("1 btn-0001 press\nsoon btn-0001 press").line, 2);
        assert!(e("-1 btn-0001 press").message.contains("seconds"));
        assert!(e("1 btn-0001 wave").message.contains("not a gesture"));
        assert!(e("1 rdr-02 tap XYZ").message.contains("card UID"));
        assert!(e("1 btn-0001 press now").message.contains("unexpected"));
        assert!(e("1 btn/0001 press").message.contains("device id"));
        assert!(e("1 btn-0001").message.contains("needs"));
        assert!(e("NaN btn-0001 press").message.contains("seconds"));
    }
}
