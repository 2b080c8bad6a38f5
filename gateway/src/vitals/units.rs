//! Units and plausibility of health readings, in integers only.
//!
//! One canonical unit per measure, kept as the unit's natural integer (SPEC.md §4's HEALTH
//! layout): blood pressure mmHg, glucose tenths of mmol/L, SpO2 %, temperature tenths of °C,
//! weight tenths of kg, pulse /min. A device's value is a decimal string parsed to hundredths
//! and converted with integer arithmetic, rounded half away from zero; nothing here is a float,
//! so no threshold is ever compared with a float.
//!
//! Accepted alternates (MQTT.md "Health kiosks" lists the same): blood pressure in `kPa`
//! (× 7.50062), glucose in `mg/dL` (÷ 18.0), temperature in `degF` (−32, × 5/9), weight in `lb`
//! (× 0.45359237). A unit not listed, a value that is not a decimal, or a value no living person
//! has (systolic 400, SpO2 120 %, diastolic at or above systolic) is a [`UnitError`]: a dead
//! letter on MQTT, a NAK 7 on serial; never in the record.

use eldergate_protocol::payload::Measure;

/// A reading in its canonical unit's natural integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    /// What was measured.
    pub measure: Measure,
    /// The value (systolic for blood pressure), canonical scale.
    pub v1: i64,
    /// Diastolic for blood pressure; None otherwise.
    pub v2: Option<i64>,
}

/// Why a value was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The unit is not one this measure accepts.
    #[error("unit {unit:?} is not accepted for {measure}; use one of {accepted}")]
    UnknownUnit {
        /// The unit sent.
        unit: String,
        /// The measure's name.
        measure: &'static str,
        /// The accepted units.
        accepted: &'static str,
    },
    /// Not a decimal with at most two decimals.
    #[error("value {0:?} is not a decimal number like \"142\" or \"7.8\" (at most two decimals, no sign)")]
    NotADecimal(String),
    /// Blood pressure without its diastolic, or a second value where none belongs.
    #[error("{0}")]
    Shape(&'static str),
    /// No living person has this value.
    #[error("{what} {value} is not physically possible (plausible: {range}); measure again")]
    Implausible {
        /// Which value.
        what: &'static str,
        /// The value in the canonical unit, as shown to people.
        value: String,
        /// The plausible range.
        range: &'static str,
    },
    /// Diastolic at or above systolic.
    #[error("diastolic {dia} mmHg is not below systolic {sys} mmHg; measure again")]
    DiastolicNotBelowSystolic {
        /// Systolic.
        sys: i64,
        /// Diastolic.
        dia: i64,
    },
}

impl UnitError {
    /// The dead-letter reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            UnitError::UnknownUnit { .. } => "unknown_unit",
            UnitError::NotADecimal(_) | UnitError::Shape(_) => "malformed",
            UnitError::Implausible { .. } | UnitError::DiastolicNotBelowSystolic { .. } => {
                "implausible"
            }
        }
    }
}

/// The measure's name in messages, the journal and the API.
pub fn measure_name(m: Measure) -> &'static str {
    match m {
        Measure::BloodPressure => "blood_pressure",
        Measure::Glucose => "glucose",
        Measure::Spo2 => "spo2",
        Measure::Temperature => "temperature",
        Measure::Weight => "weight",
        Measure::Pulse => "pulse",
    }
}

/// The measure of a name written by [`measure_name`].
pub fn parse_measure(s: &str) -> Option<Measure> {
    Some(match s {
        "blood_pressure" => Measure::BloodPressure,
        "glucose" => Measure::Glucose,
        "spo2" => Measure::Spo2,
        "temperature" => Measure::Temperature,
        "weight" => Measure::Weight,
        "pulse" => Measure::Pulse,
        _ => return None,
    })
}

/// The canonical unit (UCUM) and its scale: the stored integer is the value × 10^decimals.
pub fn canonical_unit(m: Measure) -> (&'static str, u32) {
    match m {
        Measure::BloodPressure => ("mm[Hg]", 0),
        Measure::Glucose => ("mmol/L", 1),
        Measure::Spo2 => ("%", 0),
        Measure::Temperature => ("Cel", 1),
        Measure::Weight => ("kg", 1),
        Measure::Pulse => ("/min", 0),
    }
}

/// A canonical integer as people read it: `71` → "7.1" for a one-decimal measure.
pub fn show(m: Measure, v: i64) -> String {
    match canonical_unit(m).1 {
        0 => v.to_string(),
        _ => {
            let sign = if v < 0 { "-" } else { "" };
            format!("{sign}{}.{}", v.abs() / 10, v.abs() % 10)
        }
    }
}

/// Parses a decimal string (`"142"`, `"7.8"`, `"98.65"`) to hundredths. No sign, no exponent,
/// at most 6 integer digits and 2 decimals.
pub fn parse_hundredths(s: &str) -> Result<i64, UnitError> {
    let bad = || UnitError::NotADecimal(s.chars().take(16).collect());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty()
        || int.len() > 6
        || frac.len() > 2
        || (s.contains('.') && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let i: i64 = int.parse().map_err(|_| bad())?;
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    if frac.len() == 1 {
        f *= 10;
    }
    Ok(i * 100 + f)
}

/// `n / d` rounded half away from zero (`d` > 0).
fn div_round(n: i128, d: i128) -> i64 {
    let q = if n >= 0 {
        (2 * n + d) / (2 * d)
    } else {
        -((2 * -n + d) / (2 * d))
    };
    i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX })
}

/// Converts a value in hundredths of `unit` to the measure's canonical integer.
pub fn to_canonical(m: Measure, unit: &str, hundredths: i64) -> Result<i64, UnitError> {
    let h = i128::from(hundredths);
    let unknown = |accepted: &'static str| UnitError::UnknownUnit {
        unit: unit.chars().take(16).collect(),
        measure: measure_name(m),
        accepted,
    };
    Ok(match m {
        Measure::BloodPressure => match unit {
            "mmHg" | "mm[Hg]" => div_round(h, 100),
            // 1 kPa = 7.50062 mmHg: mmHg = h/100 × 750062/100000.
            "kPa" => div_round(h * 750_062, 10_000_000),
            _ => return Err(unknown("mmHg, kPa")),
        },
        Measure::Glucose => match unit {
            "mmol/L" => div_round(h, 10),
            // mmol/L = mg/dL ÷ 18.0; tenths = h/100 ÷ 18 × 10 = h/180.
            "mg/dL" => div_round(h, 180),
            _ => return Err(unknown("mmol/L, mg/dL")),
        },
        Measure::Spo2 => match unit {
            "%" => div_round(h, 100),
            _ => return Err(unknown("%")),
        },
        Measure::Temperature => match unit {
            "Cel" | "°C" | "C" => div_round(h, 10),
            // tenths of °C = (F − 32) × 5/9 × 10 = (h − 3200) / 18.
            "degF" | "[degF]" | "°F" | "F" => div_round(h - 3200, 18),
            _ => return Err(unknown("Cel (°C), degF (°F)")),
        },
        Measure::Weight => match unit {
            "kg" => div_round(h, 10),
            // 1 lb = 0.45359237 kg exactly: tenths = h/100 × 0.45359237 × 10.
            "lb" | "[lb_av]" => div_round(h * 45_359_237, 1_000_000_000),
            _ => return Err(unknown("kg, lb")),
        },
        Measure::Pulse => match unit {
            "/min" | "bpm" => div_round(h, 100),
            _ => return Err(unknown("/min, bpm")),
        },
    })
}

/// A canonical value in hundredths of `unit` (the way back, for exports and checks): e.g.
/// glucose 56 (5.6 mmol/L) in mg/dL is 10080 (100.80 mg/dL).
pub fn from_canonical(m: Measure, unit: &str, v: i64) -> Result<i64, UnitError> {
    let v = i128::from(v);
    Ok(match (m, unit) {
        (Measure::BloodPressure, "mmHg" | "mm[Hg]") | (Measure::Spo2, "%") => div_round(v * 100, 1),
        (Measure::Pulse, "/min" | "bpm") => div_round(v * 100, 1),
        (Measure::BloodPressure, "kPa") => div_round(v * 10_000_000, 750_062),
        (Measure::Glucose, "mmol/L") | (Measure::Weight, "kg") => div_round(v * 10, 1),
        (Measure::Temperature, "Cel" | "°C" | "C") => div_round(v * 10, 1),
        (Measure::Glucose, "mg/dL") => div_round(v * 180, 1),
        (Measure::Temperature, "degF" | "[degF]" | "°F" | "F") => div_round(v * 18 + 3200, 1),
        (Measure::Weight, "lb" | "[lb_av]") => div_round(v * 1_000_000_000, 45_359_237),
        _ => to_canonical(m, unit, 0).map(|_| 0)?,
    })
}

/// The plausible range of each value, canonical scale, and how it reads.
fn plausible(m: Measure) -> (&'static str, i64, i64, &'static str) {
    match m {
        Measure::BloodPressure => ("systolic", 40, 300, "40–300 mmHg"),
        Measure::Glucose => ("glucose", 5, 600, "0.5–60.0 mmol/L"),
        Measure::Spo2 => ("SpO2", 50, 100, "50–100 %"),
        Measure::Temperature => ("temperature", 250, 450, "25.0–45.0 °C"),
        Measure::Weight => ("weight", 100, 3500, "10.0–350.0 kg"),
        Measure::Pulse => ("pulse", 20, 300, "20–300 /min"),
    }
}

/// Checks a canonical measurement: shape and physical plausibility.
pub fn check(m: Measurement) -> Result<Measurement, UnitError> {
    let (what, lo, hi, range) = plausible(m.measure);
    if !(lo..=hi).contains(&m.v1) {
        return Err(UnitError::Implausible {
            what,
            value: show(m.measure, m.v1),
            range,
        });
    }
    match (m.measure, m.v2) {
        (Measure::BloodPressure, None) => {
            return Err(UnitError::Shape("blood pressure needs value2 (diastolic)"))
        }
        (Measure::BloodPressure, Some(dia)) => {
            if !(20..=200).contains(&dia) {
                return Err(UnitError::Implausible {
                    what: "diastolic",
                    value: dia.to_string(),
                    range: "20–200 mmHg",
                });
            }
            if dia >= m.v1 {
                return Err(UnitError::DiastolicNotBelowSystolic { sys: m.v1, dia });
            }
        }
        (_, Some(_)) => return Err(UnitError::Shape("value2 is for blood pressure only")),
        (_, None) => {}
    }
    Ok(m)
}

/// A device's reading (decimal strings and a unit) as a checked canonical measurement.
pub fn measurement(
    measure: Measure,
    value: &str,
    value2: Option<&str>,
    unit: &str,
) -> Result<Measurement, UnitError> {
    let v1 = to_canonical(measure, unit, parse_hundredths(value)?)?;
    let v2 = match value2 {
        Some(v) => Some(to_canonical(measure, unit, parse_hundredths(v)?)?),
        None => None,
    };
    check(Measurement { measure, v1, v2 })
}

/// A serial HEALTH frame's reading (SPEC.md §4: natural integers already) as a measurement.
pub fn from_serial(reading: u8, value1: i32, value2: i32) -> Result<Measurement, UnitError> {
    let measure = match reading {
        1 => Measure::BloodPressure,
        2 => Measure::Glucose,
        3 => Measure::Spo2,
        4 => Measure::Temperature,
        5 => Measure::Weight,
        6 => Measure::Pulse,
        _ => return Err(UnitError::Shape("health reading is not 1-6")),
    };
    let v2 = match measure {
        Measure::BloodPressure => Some(i64::from(value2)),
        _ if value2 == 0 => None,
        _ => return Err(UnitError::Shape("value2 must be 0 for this reading")),
    };
    check(Measurement {
        measure,
        v1: i64::from(value1),
        v2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(measure: Measure, value: &str, unit: &str) -> Result<i64, UnitError> {
        to_canonical(measure, unit, parse_hundredths(value)?)
    }

    #[test]
    fn glucose_in_mg_per_dl_is_divided_by_18_and_rounded_half_up() {
        assert_eq!(m(Measure::Glucose, "100", "mg/dL"), Ok(56)); // 5.555… → 5.6
        assert_eq!(m(Measure::Glucose, "70", "mg/dL"), Ok(39)); // 3.888… → 3.9
        assert_eq!(m(Measure::Glucose, "54", "mg/dL"), Ok(30)); // 3.0 exactly
        assert_eq!(m(Measure::Glucose, "7.8", "mmol/L"), Ok(78));
        // and back: 5.6 mmol/L is 100.80 mg/dL
        assert_eq!(from_canonical(Measure::Glucose, "mg/dL", 56), Ok(10080));
    }

    #[test]
    fn fahrenheit_kpa_and_pounds_convert_exactly_both_ways() {
        assert_eq!(m(Measure::Temperature, "98.6", "degF"), Ok(370));
        assert_eq!(m(Measure::Temperature, "102.2", "[degF]"), Ok(390));
        assert_eq!(from_canonical(Measure::Temperature, "degF", 370), Ok(9860));
        assert_eq!(m(Measure::BloodPressure, "24", "kPa"), Ok(180)); // 180.01
        assert_eq!(m(Measure::BloodPressure, "16", "kPa"), Ok(120)); // 120.0099
        assert_eq!(from_canonical(Measure::BloodPressure, "kPa", 180), Ok(2400));
        assert_eq!(m(Measure::Weight, "154.3", "lb"), Ok(700)); // 69.99 kg
        assert_eq!(m(Measure::Weight, "1", "lb"), Ok(5)); // 0.4536 → 0.5
        assert_eq!(from_canonical(Measure::Weight, "lb", 700), Ok(15432));
    }

    #[test]
    fn unknown_units_and_non_decimals_are_refused_with_a_reason() {
        assert_eq!(
            m(Measure::Glucose, "5.4", "mg%").unwrap_err().reason(),
            "unknown_unit"
        );
        assert_eq!(
            m(Measure::Spo2, "97", "mmHg").unwrap_err().reason(),
            "unknown_unit"
        );
        for bad in [
            "",
            "-5",
            "1e3",
            "7.",
            ".5",
            "7.123",
            "NaN",
            "１２０",
            "1234567",
            "5,4",
        ] {
            assert!(parse_hundredths(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn impossible_values_are_refused() {
        let bp = |s, d| measurement(Measure::BloodPressure, s, Some(d), "mmHg");
        assert_eq!(bp("400", "90").unwrap_err().reason(), "implausible");
        assert_eq!(bp("120", "130").unwrap_err().reason(), "implausible");
        assert_eq!(bp("120", "120").unwrap_err().reason(), "implausible");
        assert_eq!(
            measurement(Measure::BloodPressure, "120", None, "mmHg")
                .unwrap_err()
                .reason(),
            "malformed"
        );
        let one = |ms, v, u| measurement(ms, v, None, u).map_err(|e| e.reason());
        assert_eq!(one(Measure::Spo2, "120", "%"), Err("implausible"));
        assert_eq!(one(Measure::Temperature, "60", "Cel"), Err("implausible"));
        assert_eq!(one(Measure::Temperature, "0", "degF"), Err("implausible"));
        assert_eq!(one(Measure::Pulse, "0", "/min"), Err("implausible"));
        assert_eq!(one(Measure::Glucose, "999999", "mg/dL"), Err("implausible"));
        assert_eq!(one(Measure::Weight, "0.1", "kg"), Err("implausible"));
        assert!(one(Measure::Spo2, "100", "%").is_ok());
        assert_eq!(
            measurement(Measure::Pulse, "70", Some("1"), "/min").map_err(|e| e.reason()),
            Err("malformed")
        );
    }

    #[test]
    fn serial_readings_are_natural_integers() {
        assert_eq!(
            from_serial(2, 61, 0),
            Ok(Measurement {
                measure: Measure::Glucose,
                v1: 61,
                v2: None
            })
        );
        assert!(from_serial(1, 400, 90).is_err());
        assert!(from_serial(3, 97, 5).is_err());
        assert_eq!(show(Measure::Temperature, 368), "36.8");
    }
}
