//! Tariff and subsidy rules as data: meal periods in local time, menu prices, and subsidies by age
//! band and status, fixed or percentage, with caps and date ranges. Money is integer fen.
//!
//! Invariants: [`RuleSet::load`] accepts only a file whose every field is known and consistent
//! (periods well-formed and not overlapping, percentages 0–100, dates ordered), or says exactly
//! what is wrong; [`RuleSet::quote`] never returns a subsidy above the price or a negative payable,
//! and computes age on the meal's local date.
//!
//! Subsidies that match combine by `combine`: `max` (the single best, the usual reading of
//! "the discount is deducted at checkout") or `sum`; then the per-meal cap, then the daily cap.
//! A percentage is rounded to the fen by `rounding`: `half_up` (the default), `down` or `up`.
//!
//! Money arithmetic is checked: every amount in the file is at most [`MAX_LIMIT_FEN`], a price is
//! refused above `limits.max_price_fen` (default ¥1,000), below 0, and at 0 unless
//! `limits.allow_free_meals`; so no input can overflow a quote.

use jiff::civil::{Date, Time};
use serde::Deserialize;
use std::path::Path;

/// A rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Name shown in reports, e.g. "上海普陀 2024".
    pub name: String,
    /// The file's version, as its authors number it (printed on the claim with its hash).
    #[serde(default)]
    pub version: Option<String>,
    /// SHA-256 of the file's text, hex (printed on the claim: which rules priced these meals).
    #[serde(skip)]
    pub sha256: String,
    /// Meal periods, local time.
    pub periods: Vec<Period>,
    /// How matching subsidies combine.
    #[serde(default)]
    pub combine: Combine,
    /// At most this many subsidized meals per resident per period and day.
    #[serde(default = "one")]
    pub subsidized_meals_per_period: u32,
    /// At most this much subsidy per resident per day, fen.
    #[serde(default)]
    pub daily_cap_fen: Option<i64>,
    /// How a percentage subsidy is rounded to the fen.
    #[serde(default)]
    pub rounding: Rounding,
    /// Plausible amounts: what is beyond them is refused, never computed.
    #[serde(default)]
    pub limits: Limits,
    /// The subsidies.
    #[serde(default)]
    pub subsidies: Vec<Subsidy>,
}

fn one() -> u32 {
    1
}

/// The largest amount the file may hold anywhere (¥10,000,000,000): sums of a few of them and
/// percentages of them stay far inside i64.
pub const MAX_LIMIT_FEN: i64 = 1_000_000_000_000;

/// How a percentage subsidy is rounded to the fen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Half a fen or more rounds up (15 % of ¥14.99 = 224.85 → 225 fen).
    #[default]
    HalfUp,
    /// Fractions of a fen are dropped (→ 224 fen).
    Down,
    /// Any fraction of a fen rounds up (→ 225 fen).
    Up,
}

/// Plausible amounts (`[limits]` in the rule file). A tap beyond them is answered `refused`, a
/// top-up beyond them is refused with the limit in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Highest price of one meal, fen (default 100,000 = ¥1,000).
    pub max_price_fen: i64,
    /// Highest single top-up, fen (default 1,000,000 = ¥10,000).
    pub max_topup_fen: i64,
    /// Highest balance a top-up may leave, fen (default 10,000,000 = ¥100,000).
    pub max_balance_fen: i64,
    /// Whether a price of 0 (on the menu or entered at the counter) is a free meal; when false
    /// (the default) it is refused as a mistake.
    pub allow_free_meals: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_price_fen: 100_000,
            max_topup_fen: 1_000_000,
            max_balance_fen: 10_000_000,
            allow_free_meals: false,
        }
    }
}

/// How matching subsidies combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The largest single subsidy.
    #[default]
    Max,
    /// All of them added.
    Sum,
}

/// A meal period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// `breakfast`, `lunch`, `dinner`, …
    pub name: String,
    /// Local start, `HH:MM`.
    pub start: Time,
    /// Local end (exclusive), `HH:MM`; `24:00` is midnight at the end of the day. An end at or
    /// before the start crosses midnight (a night shift `22:00`–`02:00`): the part after midnight
    /// belongs to the meal date the period started on.
    #[serde(deserialize_with = "end_of_period")]
    pub end: Time,
    /// Menu price, fen; absent = the price is entered at the counter.
    #[serde(default)]
    pub price_fen: Option<i64>,
}

/// `HH:MM[:SS]`, or `24:00` for the midnight that ends a day (held as 00:00).
fn end_of_period<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
    let text = String::deserialize(d)?;
    if text == "24:00" || text == "24:00:00" {
        return Ok(Time::midnight());
    }
    text.parse::<Time>()
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not HH:MM or 24:00: {e}")))
}

impl Period {
    /// Whether the period runs past midnight (its end is at or before its start).
    pub fn crosses_midnight(&self) -> bool {
        self.end <= self.start
    }

    /// Whether local time `t` is in the period.
    pub fn contains(&self, t: Time) -> bool {
        if self.crosses_midnight() {
            t >= self.start || t < self.end
        } else {
            self.start <= t && t < self.end
        }
    }

    /// The period as at most two half-open ranges of seconds since midnight.
    fn ranges(&self) -> Vec<(i64, i64)> {
        let secs = |t: Time| {
            i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second())
        };
        let (a, b) = (secs(self.start), secs(self.end));
        if b > a {
            vec![(a, b)]
        } else if b == 0 {
            vec![(a, 86_400)]
        } else {
            vec![(a, 86_400), (0, b)]
        }
    }
}

/// One subsidy rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subsidy {
    /// Shown on receipts and in the claim report.
    pub name: String,
    /// Minimum age on the meal's date.
    #[serde(default)]
    pub min_age: Option<u32>,
    /// Maximum age on the meal's date (inclusive).
    #[serde(default)]
    pub max_age: Option<u32>,
    /// The resident must have at least one of these statuses (低保, 特困, 失能, …).
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Only in these periods (all when empty).
    #[serde(default)]
    pub periods: Vec<String>,
    /// Only when the meal costs at least this much, fen.
    #[serde(default)]
    pub min_price_fen: Option<i64>,
    /// The amount.
    pub amount: Amount,
    /// Added to the amount, fen (e.g. Putuo's extra ¥2 when a meal costs ¥15 or more).
    #[serde(default)]
    pub extra_fen: Option<i64>,
    /// At most this much per meal, fen.
    #[serde(default)]
    pub cap_fen: Option<i64>,
    /// First valid date (inclusive).
    #[serde(default)]
    pub valid_from: Option<Date>,
    /// Last valid date (inclusive).
    #[serde(default)]
    pub valid_to: Option<Date>,
}

/// How much a subsidy is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Amount {
    /// A fixed amount, fen.
    FixedFen(i64),
    /// A percentage of the price, rounded to the fen by the file's `rounding`.
    Percent(u8),
    /// The resident pays at most this much, fen (the rest is subsidy).
    PayAtMostFen(i64),
}

/// What the rules know of a resident.
#[derive(Debug, Clone)]
pub struct ResidentFacts {
    /// Birth date.
    pub birth_date: Date,
    /// Statuses from the roster.
    pub statuses: Vec<String>,
}

/// What has happened today for this resident (from the ledger).
#[derive(Debug, Clone, Copy, Default)]
pub struct Today {
    /// Subsidy already granted today, fen.
    pub subsidy_fen: i64,
    /// Subsidized meals already taken in this period today.
    pub subsidized_in_period: u32,
}

/// The price of one meal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The period the meal falls in.
    pub period: String,
    /// Price, fen.
    pub price_fen: i64,
    /// Subsidy, fen (0 ≤ subsidy ≤ price).
    pub subsidy_fen: i64,
    /// What the resident pays, fen.
    pub payable_fen: i64,
    /// The subsidies applied, by name.
    pub applied: Vec<String>,
}

/// Why no quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The time is in no meal period.
    #[error("outside meal periods")]
    OutsideMealPeriod,
    /// The period has no menu price and none was entered.
    #[error("no price: period {0} has no menu price; enter one at the counter")]
    NoPrice(String),
    /// A negative price was entered.
    #[error("price {0} fen is negative")]
    NegativePrice(i64),
    /// A price above `limits.max_price_fen`.
    #[error("price {price} fen is above the limit of {limit} fen per meal (limits.max_price_fen)")]
    PriceTooHigh {
        /// The price, fen.
        price: i64,
        /// The limit, fen.
        limit: i64,
    },
    /// A price of 0 where the rules do not allow free meals.
    #[error("price 0: free meals are not allowed by these rules (limits.allow_free_meals)")]
    FreeMeal,
}

impl QuoteError {
    /// The reason label (metric, dead letter) of a refused price.
    pub fn reason(&self) -> &'static str {
        match self {
            QuoteError::OutsideMealPeriod => "outside_meal_period",
            QuoteError::NoPrice(_) => "no_price",
            QuoteError::NegativePrice(_) => "negative_price",
            QuoteError::PriceTooHigh { .. } => "price_too_high",
            QuoteError::FreeMeal => "free_meal_not_allowed",
        }
    }
}

/// Why a rule file was rejected.
#[derive(Debug, thiserror::Error)]
#[error("rule file {file}: {problems}")]
pub struct RuleError {
    /// The file.
    pub file: String,
    /// What is wrong, `; `-separated.
    pub problems: String,
}

/// Age in whole years on `on`.
pub fn age_on(birth: Date, on: Date) -> u32 {
    let mut years = i32::from(on.year()) - i32::from(birth.year());
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).unwrap_or(0)
}

/// `percent` % of `price`, rounded to the fen; None when out of range (never for a price within
/// [`MAX_LIMIT_FEN`]).
pub fn percent_of(price: i64, percent: u8, rounding: Rounding) -> Option<i64> {
    let n = i128::from(price).checked_mul(i128::from(percent))?;
    let add = match rounding {
        Rounding::HalfUp => 50,
        Rounding::Down => 0,
        Rounding::Up => 99,
    };
    // Prices are not negative here, so adding before dividing rounds as named.
    i64::try_from(n.checked_add(add)?.checked_div(100)?).ok()
}

impl RuleSet {
    /// Reads and checks a rule file.
    pub fn load(path: &Path) -> Result<RuleSet, RuleError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: file.clone(),
            problems: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|problems| RuleError { file, problems })
    }

    /// Parses and checks rule text.
    pub fn parse(text: &str) -> Result<RuleSet, String> {
        let mut rules: RuleSet = toml::from_str(text).map_err(|e| e.to_string())?;
        rules.sha256 = {
            use sha2::Digest;
            crate::canteen::mac::to_hex(&sha2::Sha256::digest(text.as_bytes())).to_lowercase()
        };
        let mut problems = Vec::new();
        let l = rules.limits;
        for (name, v) in [
            ("limits.max_price_fen", l.max_price_fen),
            ("limits.max_topup_fen", l.max_topup_fen),
            ("limits.max_balance_fen", l.max_balance_fen),
        ] {
            if !(1..=MAX_LIMIT_FEN).contains(&v) {
                problems.push(format!("{name}: {v} is outside 1..={MAX_LIMIT_FEN}"));
            }
        }
        if let Some(v) = rules.daily_cap_fen {
            if !(0..=MAX_LIMIT_FEN).contains(&v) {
                problems.push(format!("daily_cap_fen: {v} is outside 0..={MAX_LIMIT_FEN}"));
            }
        }
        if rules.periods.is_empty() {
            problems.push("periods: at least one meal period is needed".to_string());
        }
        for (i, p) in rules.periods.iter().enumerate() {
            if p.end == p.start {
                problems.push(format!(
                    "periods[{i}] ({}): end {} is its start; a period is shorter than a day",
                    p.name, p.end
                ));
            }
            if let Some(v) = p.price_fen {
                if v < 0 || v > rules.limits.max_price_fen {
                    problems.push(format!(
                        "periods[{i}].price_fen: {v} is outside 0..={} (limits.max_price_fen)",
                        rules.limits.max_price_fen
                    ));
                } else if v == 0 && !rules.limits.allow_free_meals {
                    problems.push(format!(
                        "periods[{i}].price_fen: 0 is a free meal; set limits.allow_free_meals = true if that is meant"
                    ));
                }
            }
            for (j, q) in rules.periods.iter().enumerate().skip(i + 1) {
                let overlap = p
                    .ranges()
                    .iter()
                    .any(|(a, b)| q.ranges().iter().any(|(c, d)| a < d && c < b));
                if overlap {
                    problems.push(format!(
                        "periods[{i}] ({}) and periods[{j}] ({}) overlap",
                        p.name, q.name
                    ));
                }
            }
        }
        for (i, s) in rules.subsidies.iter().enumerate() {
            let at = format!("subsidies[{i}] ({})", s.name);
            match s.amount {
                Amount::Percent(p) if p > 100 => {
                    problems.push(format!("{at}.amount: percent {p} is above 100"))
                }
                Amount::FixedFen(v) | Amount::PayAtMostFen(v) if v < 0 => {
                    problems.push(format!("{at}.amount: must not be negative"))
                }
                Amount::FixedFen(v) | Amount::PayAtMostFen(v) if v > MAX_LIMIT_FEN => {
                    problems.push(format!("{at}.amount: {v} is above {MAX_LIMIT_FEN}"))
                }
                _ => {}
            }
            for (field, v) in [
                ("extra_fen", s.extra_fen),
                ("cap_fen", s.cap_fen),
                ("min_price_fen", s.min_price_fen),
            ] {
                if let Some(v) = v {
                    if !(0..=MAX_LIMIT_FEN).contains(&v) {
                        problems.push(format!("{at}.{field}: {v} is outside 0..={MAX_LIMIT_FEN}"));
                    }
                }
            }
            if let (Some(a), Some(b)) = (s.min_age, s.max_age) {
                if a > b {
                    problems.push(format!("{at}: min_age {a} is above max_age {b}"));
                }
            }
            if let (Some(a), Some(b)) = (s.valid_from, s.valid_to) {
                if a > b {
                    problems.push(format!("{at}: valid_from {a} is after valid_to {b}"));
                }
            }
            for p in &s.periods {
                if !rules.periods.iter().any(|x| &x.name == p) {
                    problems.push(format!("{at}.periods: no meal period named {p:?}"));
                }
            }
        }
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(problems.join("; "))
        }
    }

    /// The period containing local time `t`.
    pub fn period_at(&self, t: Time) -> Option<&Period> {
        self.periods.iter().find(|p| p.contains(t))
    }

    /// The period containing local `date`/`time` and the meal date it counts on: the date the
    /// period started (a tap at 01:00 in a `22:00`–`02:00` period counts on the day before).
    pub fn meal_at(&self, date: Date, time: Time) -> Option<(&Period, Date)> {
        let p = self.period_at(time)?;
        let on = if p.crosses_midnight() && time < p.end {
            date.yesterday().ok()?
        } else {
            date
        };
        Some((p, on))
    }

    /// Prices a meal at local date and time `date`/`time` for `who`. `entered_fen` is the price
    /// typed at the counter (used when the period has no menu price, or to override it). Ages and
    /// date ranges are taken on the meal date ([`RuleSet::meal_at`]).
    pub fn quote(
        &self,
        date: Date,
        time: Time,
        who: &ResidentFacts,
        entered_fen: Option<i64>,
        today: Today,
    ) -> Result<Quote, QuoteError> {
        let (period, date) = self
            .meal_at(date, time)
            .ok_or(QuoteError::OutsideMealPeriod)?;
        let price = entered_fen
            .or(period.price_fen)
            .ok_or_else(|| QuoteError::NoPrice(period.name.clone()))?;
        if price < 0 {
            return Err(QuoteError::NegativePrice(price));
        }
        if price > self.limits.max_price_fen {
            return Err(QuoteError::PriceTooHigh {
                price,
                limit: self.limits.max_price_fen,
            });
        }
        if price == 0 && !self.limits.allow_free_meals {
            return Err(QuoteError::FreeMeal);
        }
        let age = age_on(who.birth_date, date);
        let mut applied = Vec::new();
        let mut subsidy = 0i64;
        if today.subsidized_in_period < self.subsidized_meals_per_period {
            for s in &self.subsidies {
                let matches = s.min_age.is_none_or(|a| age >= a)
                    && s.max_age.is_none_or(|a| age <= a)
                    && (s.statuses.is_empty()
                        || s.statuses.iter().any(|x| who.statuses.contains(x)))
                    && (s.periods.is_empty() || s.periods.contains(&period.name))
                    && s.min_price_fen.is_none_or(|m| price >= m)
                    && s.valid_from.is_none_or(|d| date >= d)
                    && s.valid_to.is_none_or(|d| date <= d);
                if !matches {
                    continue;
                }
                // Every operand is within 0..=MAX_LIMIT_FEN (checked at load and above), so
                // saturating never saturates; the result is clamped to the price anyway.
                let base = match s.amount {
                    Amount::FixedFen(v) => v,
                    Amount::Percent(p) => percent_of(price, p, self.rounding).unwrap_or(price),
                    Amount::PayAtMostFen(v) => price.saturating_sub(v).max(0),
                };
                let mut amount = base.saturating_add(s.extra_fen.unwrap_or(0));
                if let Some(cap) = s.cap_fen {
                    amount = amount.min(cap);
                }
                let amount = amount.clamp(0, price);
                if amount == 0 {
                    continue;
                }
                match self.combine {
                    Combine::Sum => {
                        subsidy = subsidy.saturating_add(amount);
                        applied.push(s.name.clone());
                    }
                    Combine::Max if amount > subsidy => {
                        subsidy = amount;
                        applied = vec![s.name.clone()];
                    }
                    Combine::Max => {}
                }
            }
        }
        subsidy = subsidy.min(price);
        if let Some(cap) = self.daily_cap_fen {
            subsidy = subsidy.min(cap.saturating_sub(today.subsidy_fen).max(0));
        }
        if subsidy == 0 {
            applied.clear();
        }
        Ok(Quote {
            period: period.name.clone(),
            price_fen: price,
            subsidy_fen: subsidy,
            payable_fen: price.saturating_sub(subsidy),
            applied,
        })
    }
}

#[cfg(test)]
mod tests;
