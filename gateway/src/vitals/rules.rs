//! Health rules as data: thresholds per quantity with a priority, trend rules, and how they
//! judge a reading. Defaults from shared/domain/health.md (China hypertension guideline grade 3,
//! NEWS2, ADA hypoglycaemia levels); a community replaces them with a rules file
//! (`[vitals] rules = "…"`, example `deploy/vitals/default.toml`); a resident's doctor narrows
//! them with a target range ([`Target`], stored in the journal with who set it and why).
//!
//! Invariants: every bound is an integer in the quantity's canonical scale (units.rs), so no
//! comparison involves a float; blood pressure is judged on the mean of the readings in its
//! window by comparing sums (`sum ≥ bound × n`), exactly; a resident's target replaces the
//! community's medium and low thresholds of that quantity but never its high ones (a doctor's
//! range cannot silence a crisis threshold).

use super::units::{parse_hundredths, to_canonical};
use eldergate_protocol::payload::{Measure, Priority};
use serde::Deserialize;
use std::path::Path;

/// A quantity a threshold is about (blood pressure has two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Systolic blood pressure, mmHg.
    Systolic,
    /// Diastolic blood pressure, mmHg.
    Diastolic,
    /// Glucose, mmol/L.
    Glucose,
    /// SpO2, %.
    Spo2,
    /// Temperature, °C.
    Temperature,
    /// Pulse, /min.
    Pulse,
}

impl Quantity {
    /// The measure it belongs to (its canonical unit and scale).
    pub fn measure(self) -> Measure {
        match self {
            Quantity::Systolic | Quantity::Diastolic => Measure::BloodPressure,
            Quantity::Glucose => Measure::Glucose,
            Quantity::Spo2 => Measure::Spo2,
            Quantity::Temperature => Measure::Temperature,
            Quantity::Pulse => Measure::Pulse,
        }
    }

    /// Name in files, the journal and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantity::Systolic => "systolic",
            Quantity::Diastolic => "diastolic",
            Quantity::Glucose => "glucose",
            Quantity::Spo2 => "spo2",
            Quantity::Temperature => "temperature",
            Quantity::Pulse => "pulse",
        }
    }

    /// Parses [`Quantity::as_str`].
    pub fn parse(s: &str) -> Option<Quantity> {
        Some(match s {
            "systolic" => Quantity::Systolic,
            "diastolic" => Quantity::Diastolic,
            "glucose" => Quantity::Glucose,
            "spo2" => Quantity::Spo2,
            "temperature" => Quantity::Temperature,
            "pulse" => Quantity::Pulse,
            _ => return None,
        })
    }

    /// The alert kind for a value beyond a bound in `high` (true) or low direction.
    pub fn alert_kind(self, high: bool) -> &'static str {
        match (self, high) {
            (Quantity::Systolic | Quantity::Diastolic, true) => "bp_high",
            (Quantity::Systolic | Quantity::Diastolic, false) => "bp_low",
            (Quantity::Glucose, true) => "glucose_high",
            (Quantity::Glucose, false) => "glucose_low",
            (Quantity::Spo2, _) => "spo2_low",
            (Quantity::Temperature, true) => "temperature_high",
            (Quantity::Temperature, false) => "temperature_low",
            (Quantity::Pulse, true) => "pulse_high",
            (Quantity::Pulse, false) => "pulse_low",
        }
    }
}

/// One threshold as written in a rules file: exactly one bound, values as decimal strings in
/// the canonical unit (`"13.9"`, never a TOML float).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdFile {
    /// The quantity.
    pub quantity: Quantity,
    /// Raise when the value is ≥ this.
    #[serde(default)]
    pub at_least: Option<String>,
    /// Raise when the value is > this.
    #[serde(default)]
    pub above: Option<String>,
    /// Raise when the value is ≤ this.
    #[serde(default)]
    pub at_most: Option<String>,
    /// Raise when the value is < this.
    #[serde(default)]
    pub below: Option<String>,
    /// The alert's priority.
    pub priority: Priority,
    /// Where the number comes from (kept in the alert detail).
    #[serde(default)]
    pub source: Option<String>,
}

/// A threshold with an inclusive integer bound in the canonical scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    /// The quantity.
    pub quantity: Quantity,
    /// True: value ≥ bound raises; false: value ≤ bound raises.
    pub high: bool,
    /// Inclusive bound, canonical scale.
    pub bound: i64,
    /// The alert's priority.
    pub priority: Priority,
    /// Where the number comes from.
    pub source: String,
}

/// Trend rules.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Trends {
    /// Weight loss above this percent of the heaviest weight in `weight_days` raises a medium
    /// `weight_loss` alert.
    #[serde(default = "d_weight_pct")]
    pub weight_loss_pct: u32,
    /// The weight window, days.
    #[serde(default = "d_weight_days")]
    pub weight_days: u32,
    /// This many distinct days with a high blood pressure mean in `bp_days` raise a medium
    /// `bp_followup` task for the grid worker.
    #[serde(default = "d_bp_count")]
    pub bp_high_days: u32,
    /// The blood-pressure trend window, days.
    #[serde(default = "d_bp_days")]
    pub bp_days: u32,
    /// A mean counts as high at systolic ≥ this (mmHg) …
    #[serde(default = "d_bp_sys")]
    pub bp_systolic: i64,
    /// … or diastolic ≥ this (mmHg) (grade 1 hypertension).
    #[serde(default = "d_bp_dia")]
    pub bp_diastolic: i64,
}

fn d_weight_pct() -> u32 {
    5
}
fn d_weight_days() -> u32 {
    30
}
fn d_bp_count() -> u32 {
    3
}
fn d_bp_days() -> u32 {
    7
}
fn d_bp_sys() -> i64 {
    140
}
fn d_bp_dia() -> i64 {
    90
}

impl Default for Trends {
    fn default() -> Self {
        Trends {
            weight_loss_pct: d_weight_pct(),
            weight_days: d_weight_days(),
            bp_high_days: d_bp_count(),
            bp_days: d_bp_days(),
            bp_systolic: d_bp_sys(),
            bp_diastolic: d_bp_dia(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    threshold: Vec<ThresholdFile>,
    #[serde(default)]
    trends: Trends,
}

/// Why a rules file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Unreadable.
    #[error("cannot read the vitals rules file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not the schema.
    #[error("vitals rules file {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The rules of one community.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitalRules {
    /// The rules' name (for the alert detail).
    pub name: String,
    /// Thresholds.
    pub thresholds: Vec<Threshold>,
    /// Trend rules.
    pub trends: Trends,
}

/// The defaults, as a rules file (also `deploy/vitals/default.toml`).
pub const DEFAULT_RULES: &str = include_str!("../../../deploy/vitals/default.toml");

impl Default for VitalRules {
    fn default() -> Self {
        // The default file is part of the build and checked by a test.
        VitalRules::parse(DEFAULT_RULES, "built-in defaults").unwrap_or(VitalRules {
            name: "none".into(),
            thresholds: Vec::new(),
            trends: Trends::default(),
        })
    }
}

/// A bound written as a decimal in the quantity's canonical unit → canonical integer.
pub fn parse_bound(q: Quantity, s: &str) -> Result<i64, String> {
    let (unit, _) = super::units::canonical_unit(q.measure());
    let unit = match unit {
        "mm[Hg]" => "mmHg",
        u => u,
    };
    parse_hundredths(s)
        .and_then(|h| to_canonical(q.measure(), unit, h))
        .map_err(|e| e.to_string())
}

impl VitalRules {
    /// Reads a rules file.
    pub fn load(path: &Path) -> Result<VitalRules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        VitalRules::parse(&text, &path.display().to_string())
    }

    /// Parses a rules file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<VitalRules, RulesError> {
        let invalid = |message: String| RulesError::Invalid {
            path: path.to_string(),
            message,
        };
        let file: RulesFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut thresholds = Vec::new();
        for (i, t) in file.threshold.iter().enumerate() {
            let at = |what: &str, m: String| invalid(format!("threshold {}: {what}: {m}", i + 1));
            let bounds = [
                (&t.at_least, true, 0),
                (&t.above, true, 1),
                (&t.at_most, false, 0),
                (&t.below, false, -1),
            ];
            let given: Vec<_> = bounds.iter().filter(|b| b.0.is_some()).collect();
            if given.len() != 1 {
                return Err(at(
                    "bound",
                    "give exactly one of at_least, above, at_most, below".into(),
                ));
            }
            let (value, high, shift) = given[0];
            let v = value.as_deref().unwrap_or_default();
            let bound = parse_bound(t.quantity, v).map_err(|m| at(v, m))?;
            thresholds.push(Threshold {
                quantity: t.quantity,
                high: *high,
                bound: bound + shift,
                priority: t.priority,
                source: t.source.clone().unwrap_or_default(),
            });
        }
        if file.trends.weight_loss_pct == 0 || file.trends.weight_loss_pct >= 100 {
            return Err(invalid("trends.weight_loss_pct must be 1–99".into()));
        }
        Ok(VitalRules {
            name: file.name.unwrap_or_else(|| path.to_string()),
            thresholds,
            trends: file.trends,
        })
    }
}

/// A resident's target range for a quantity, set by staff for a doctor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// The quantity.
    pub quantity: Quantity,
    /// Lowest value in range (canonical), if bounded below.
    pub min: Option<i64>,
    /// Highest value in range (canonical), if bounded above.
    pub max: Option<i64>,
    /// Priority of an alert when outside.
    pub priority: Priority,
    /// Who set it.
    pub set_by: String,
    /// Why.
    pub reason: String,
}

/// The thresholds that apply to a resident: the community's, with their targets in place of the
/// community's non-high thresholds of the same quantity.
pub fn effective(rules: &VitalRules, targets: &[Target]) -> Vec<Threshold> {
    let mut out: Vec<Threshold> = rules
        .thresholds
        .iter()
        .filter(|t| {
            t.priority == Priority::High || !targets.iter().any(|g| g.quantity == t.quantity)
        })
        .cloned()
        .collect();
    for g in targets {
        let source = format!("target set by {}: {}", g.set_by, g.reason);
        if let Some(max) = g.max {
            out.push(Threshold {
                quantity: g.quantity,
                high: true,
                bound: max + 1,
                priority: g.priority,
                source: source.clone(),
            });
        }
        if let Some(min) = g.min {
            out.push(Threshold {
                quantity: g.quantity,
                high: false,
                bound: min - 1,
                priority: g.priority,
                source,
            });
        }
    }
    out
}

/// A value to judge: `sum` of `n` readings (n = 1 for everything but blood pressure means).
#[derive(Debug, Clone, Copy)]
pub struct Judged {
    /// The quantity.
    pub quantity: Quantity,
    /// Sum of the values.
    pub sum: i64,
    /// How many.
    pub n: i64,
}

/// What a judgement found: the alert kind, its priority, and what was crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Alert kind (`bp_high` …).
    pub kind: &'static str,
    /// Priority (the highest crossed).
    pub priority: Priority,
    /// What was crossed, for people.
    pub detail: String,
}

/// Judges values against thresholds; one finding per alert kind, at the highest priority
/// crossed.
pub fn judge(thresholds: &[Threshold], values: &[Judged]) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for v in values {
        for t in thresholds.iter().filter(|t| t.quantity == v.quantity) {
            let limit = i128::from(t.bound) * i128::from(v.n);
            let sum = i128::from(v.sum);
            let crossed = if t.high { sum >= limit } else { sum <= limit };
            if !crossed {
                continue;
            }
            let kind = t.quantity.alert_kind(t.high);
            let mean = super::units::show(t.quantity.measure(), div_half_up(v.sum, v.n));
            let detail = format!(
                "{} {}{} {} {}{}",
                t.quantity.as_str(),
                mean,
                if v.n > 1 {
                    format!(" (mean of {})", v.n)
                } else {
                    String::new()
                },
                if t.high { "≥" } else { "≤" },
                super::units::show(t.quantity.measure(), t.bound),
                if t.source.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", t.source)
                }
            );
            match out.iter_mut().find(|f| f.kind == kind) {
                Some(f) if f.priority < t.priority => {
                    f.priority = t.priority;
                    f.detail = detail;
                }
                Some(_) => {}
                None => out.push(Finding {
                    kind,
                    priority: t.priority,
                    detail,
                }),
            }
        }
    }
    out
}

fn div_half_up(sum: i64, n: i64) -> i64 {
    if n <= 0 {
        return sum;
    }
    (2 * sum + n).div_euclid(2 * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(q: Quantity, v: i64) -> Vec<(&'static str, Priority)> {
        let r = VitalRules::default();
        judge(
            &r.thresholds,
            &[Judged {
                quantity: q,
                sum: v,
                n: 1,
            }],
        )
        .into_iter()
        .map(|f| (f.kind, f.priority))
        .collect()
    }

    #[test]
    fn the_default_rules_parse_and_follow_health_md() {
        let r = VitalRules::parse(DEFAULT_RULES, "default").expect("default rules");
        assert!(r.thresholds.len() >= 14);
        assert_eq!(
            one(Quantity::Systolic, 180),
            vec![("bp_high", Priority::High)]
        );
        assert_eq!(
            one(Quantity::Systolic, 179),
            vec![("bp_high", Priority::Medium)]
        );
        assert_eq!(
            one(Quantity::Systolic, 160),
            vec![("bp_high", Priority::Medium)]
        );
        assert!(one(Quantity::Systolic, 159).is_empty());
        assert_eq!(
            one(Quantity::Systolic, 90),
            vec![("bp_low", Priority::High)]
        );
        assert!(one(Quantity::Systolic, 91).is_empty());
        assert_eq!(
            one(Quantity::Diastolic, 110),
            vec![("bp_high", Priority::High)]
        );
        assert_eq!(
            one(Quantity::Diastolic, 100),
            vec![("bp_high", Priority::Medium)]
        );
        assert!(one(Quantity::Diastolic, 99).is_empty());
        // ADA: < 3.0 level 2 (high), < 3.9 level 1 (medium); > 13.9 medium, > 16.7 high.
        assert_eq!(
            one(Quantity::Glucose, 29),
            vec![("glucose_low", Priority::High)]
        );
        assert_eq!(
            one(Quantity::Glucose, 30),
            vec![("glucose_low", Priority::Medium)]
        );
        assert_eq!(
            one(Quantity::Glucose, 38),
            vec![("glucose_low", Priority::Medium)]
        );
        assert!(one(Quantity::Glucose, 39).is_empty());
        assert!(one(Quantity::Glucose, 139).is_empty());
        assert_eq!(
            one(Quantity::Glucose, 140),
            vec![("glucose_high", Priority::Medium)]
        );
        assert_eq!(
            one(Quantity::Glucose, 168),
            vec![("glucose_high", Priority::High)]
        );
        // NEWS2.
        assert_eq!(one(Quantity::Spo2, 91), vec![("spo2_low", Priority::High)]);
        assert_eq!(
            one(Quantity::Spo2, 93),
            vec![("spo2_low", Priority::Medium)]
        );
        assert!(one(Quantity::Spo2, 94).is_empty());
        assert_eq!(
            one(Quantity::Temperature, 350),
            vec![("temperature_low", Priority::High)]
        );
        assert!(one(Quantity::Temperature, 351).is_empty());
        assert_eq!(
            one(Quantity::Temperature, 391),
            vec![("temperature_high", Priority::Medium)]
        );
        assert!(one(Quantity::Temperature, 390).is_empty());
        assert_eq!(
            one(Quantity::Pulse, 40),
            vec![("pulse_low", Priority::High)]
        );
        assert_eq!(
            one(Quantity::Pulse, 131),
            vec![("pulse_high", Priority::High)]
        );
        assert_eq!(
            one(Quantity::Pulse, 111),
            vec![("pulse_high", Priority::Medium)]
        );
        assert!(one(Quantity::Pulse, 110).is_empty());
        assert!(one(Quantity::Pulse, 41).is_empty());
    }

    #[test]
    fn blood_pressure_is_judged_on_the_exact_mean() {
        let r = VitalRules::default();
        let mean = |sum, n| {
            judge(
                &r.thresholds,
                &[Judged {
                    quantity: Quantity::Systolic,
                    sum,
                    n,
                }],
            )
            .first()
            .map(|f| f.priority)
        };
        // 185 and 174: mean 179.5 — grade 2, not 3.
        assert_eq!(mean(185 + 174, 2), Some(Priority::Medium));
        // 185 and 175: mean 180 — grade 3.
        assert_eq!(mean(185 + 175, 2), Some(Priority::High));
        // 165 and 150: mean 157.5 — nothing.
        assert_eq!(mean(165 + 150, 2), None);
    }

    #[test]
    fn a_target_replaces_medium_thresholds_but_never_high_ones() {
        let r = VitalRules::default();
        let t = Target {
            quantity: Quantity::Systolic,
            min: Some(100),
            max: Some(150),
            priority: Priority::Medium,
            set_by: "S001".into(),
            reason: "Dr Wang: target < 150 after stroke".into(),
        };
        let th = effective(&r, std::slice::from_ref(&t));
        let j = |v| {
            judge(
                &th,
                &[Judged {
                    quantity: Quantity::Systolic,
                    sum: v,
                    n: 1,
                }],
            )
        };
        assert_eq!(j(151)[0].priority, Priority::Medium);
        assert!(j(151)[0].detail.contains("S001"));
        assert!(j(150).is_empty());
        assert_eq!(j(99)[0].kind, "bp_low");
        assert_eq!(j(185)[0].priority, Priority::High);
        // A wide target does not lift the community's high threshold either.
        let wide = Target {
            min: None,
            max: Some(250),
            ..t
        };
        let th = effective(&r, &[wide]);
        let f = judge(
            &th,
            &[Judged {
                quantity: Quantity::Systolic,
                sum: 200,
                n: 1,
            }],
        );
        assert_eq!(f[0].priority, Priority::High);
    }

    #[test]
    fn a_rules_file_with_a_float_or_two_bounds_is_refused() {
        let two = "[[threshold]]\nquantity = \"spo2\"\nat_most = \"91\"\nbelow = \"92\"\npriority = \"high\"\n";
        assert!(VitalRules::parse(two, "x").is_err());
        let float = "[[threshold]]\nquantity = \"glucose\"\nabove = 13.9\npriority = \"high\"\n";
        assert!(VitalRules::parse(float, "x").is_err());
        let unknown = "[[threshold]]\nquantity = \"mood\"\nabove = \"1\"\npriority = \"high\"\n";
        assert!(VitalRules::parse(unknown, "x").is_err());
    }
}
