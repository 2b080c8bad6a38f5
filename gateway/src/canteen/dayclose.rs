//! The canteen's day, closed by its manager: cash by payment method, payouts, voids and refunds,
//! refusals by reason, per reader, and anti-fraud flags for a person to look at.
//!
//! Guarantees: read-only (journal readers); every sum is checked (a total that leaves i64 is an
//! error, never a wrapped number); a "day" is the local date in the site's zone — ledger rows,
//! voids and taps by the instant they happened in that day, meals by their meal date (a night
//! period after midnight belongs to the evening before). Flags never refuse anything: they say
//! what to look at.

use crate::registry::Registry;
use jiff::{civil::Date, tz::TimeZone, Timestamp};
use serde::Serialize;
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;

/// Two settlements of one card at different readers closer than this are flagged.
pub const TWO_READERS_WINDOW_S: i64 = 300;

/// A count and an amount.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    /// How many.
    pub count: i64,
    /// Fen.
    pub amount_fen: i64,
}

impl Tally {
    fn add(&mut self, amount: i64) -> Result<(), sqlx::Error> {
        self.count = self.count.checked_add(1).ok_or_else(too_big)?;
        self.amount_fen = self.amount_fen.checked_add(amount).ok_or_else(too_big)?;
        Ok(())
    }
}

fn too_big() -> sqlx::Error {
    sqlx::Error::Decode("a total of the day does not fit in 64 bits: the ledger is corrupt".into())
}

/// Per reader.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReaderDay {
    /// Taps answered, by result (`paid`, `refused`, `insufficient_balance` …).
    pub taps: BTreeMap<String, i64>,
    /// Meals settled (meal date = the day, not voided) and what residents paid, fen.
    pub meals: Tally,
    /// Subsidy of those meals, fen.
    pub subsidy_fen: i64,
}

/// Something a person should look at.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Flag {
    /// `two_readers`, `unusual_frequency`, `away` or `hospital`.
    pub kind: String,
    /// Resident.
    pub resident_id: String,
    /// Card.
    pub card_id: String,
    /// The meals concerned.
    pub meal_ids: Vec<i64>,
    /// What was seen.
    pub detail: String,
}

/// The day's close.
#[derive(Debug, Clone, Serialize)]
pub struct DayClose {
    /// Top-ups by payment method (`unspecified` when none was given).
    pub topups_by_method: BTreeMap<String, Tally>,
    /// Cash paid out of balances.
    pub payouts: Tally,
    /// Refunds of voided meals (into balances).
    pub refunds: Tally,
    /// Charges of meals (out of balances), as the ledger has them.
    pub charges: Tally,
    /// Cash that should be in the drawer from the day: cash top-ups − payouts, fen.
    pub cash_drawer_fen: i64,
    /// Meals voided during the day.
    pub voids: Vec<serde_json::Value>,
    /// Taps not paid, by the reader's result; and bad input kept as dead letters, by reason.
    pub refusals: BTreeMap<String, i64>,
    /// Per reader.
    pub readers: BTreeMap<String, ReaderDay>,
    /// For a person to look at.
    pub flags: Vec<Flag>,
}

/// `[start, end)` of local `date` in `zone`, as journal timestamps.
fn window(date: Date, zone: &str) -> Result<(String, String), sqlx::Error> {
    let bad = |e: jiff::Error| sqlx::Error::Decode(format!("time zone {zone}: {e}").into());
    let tz = TimeZone::get(zone).map_err(bad)?;
    let start = date.to_zoned(tz.clone()).map_err(bad)?.timestamp();
    let next = date.tomorrow().map_err(bad)?;
    let end = next.to_zoned(tz).map_err(bad)?.timestamp();
    Ok((
        crate::journal::format_ts(start),
        crate::journal::format_ts(end),
    ))
}

/// Closes local `date`.
pub async fn close(
    pool: &SqlitePool,
    registry: &Registry,
    date: Date,
) -> Result<DayClose, sqlx::Error> {
    let (from, to) = window(date, &registry.time_zone)?;
    let mut day = DayClose {
        topups_by_method: BTreeMap::new(),
        payouts: Tally::default(),
        refunds: Tally::default(),
        charges: Tally::default(),
        cash_drawer_fen: 0,
        voids: Vec::new(),
        refusals: BTreeMap::new(),
        readers: BTreeMap::new(),
        flags: Vec::new(),
    };
    let rows = sqlx::query("SELECT kind, amount_fen, method FROM ledger WHERE at >= ? AND at < ?")
        .bind(&from)
        .bind(&to)
        .fetch_all(pool)
        .await?;
    for r in rows {
        let kind: String = r.try_get(0)?;
        let amount: i64 = r.try_get(1)?;
        match kind.as_str() {
            "topup" => {
                let method = r
                    .try_get::<Option<String>, _>(2)?
                    .unwrap_or_else(|| "unspecified".into());
                day.topups_by_method
                    .entry(method)
                    .or_default()
                    .add(amount)?;
            }
            "payout" => day.payouts.add(-amount)?,
            "refund" => day.refunds.add(amount)?,
            "charge" => day.charges.add(-amount)?,
            _ => {}
        }
    }
    let cash_in = day.topups_by_method.get("cash").map_or(0, |t| t.amount_fen);
    day.cash_drawer_fen = cash_in
        .checked_sub(day.payouts.amount_fen)
        .ok_or_else(too_big)?;
    let voids = sqlx::query(
        "SELECT m.id, m.resident_id, m.local_date, m.period, m.payable_fen, m.voided_by, m.voided_at, m.void_reason,
                (SELECT COALESCE(SUM(amount_fen), 0) FROM ledger l WHERE l.meal_id = m.id AND l.kind = 'refund')
         FROM meals m WHERE m.voided_at >= ? AND m.voided_at < ? ORDER BY m.voided_at",
    )
    .bind(&from)
    .bind(&to)
    .fetch_all(pool)
    .await?;
    for r in voids {
        day.voids.push(serde_json::json!({
            "meal_id": r.try_get::<i64, _>(0)?, "resident_id": r.try_get::<String, _>(1)?,
            "meal": format!("{} {}", r.try_get::<String, _>(2)?, r.try_get::<String, _>(3)?),
            "payable_fen": r.try_get::<i64, _>(4)?, "refund_fen": r.try_get::<i64, _>(8)?,
            "voided_by": r.try_get::<Option<String>, _>(5)?, "voided_at": r.try_get::<Option<String>, _>(6)?,
            "reason": r.try_get::<Option<String>, _>(7)?,
        }));
    }
    let taps = sqlx::query(
        "SELECT reader, COALESCE(json_extract(answer, '$.result'), 'unknown'), COUNT(*) FROM taps
         WHERE received_at >= ? AND received_at < ? GROUP BY 1, 2",
    )
    .bind(&from)
    .bind(&to)
    .fetch_all(pool)
    .await?;
    for r in taps {
        let (reader, result, n): (String, String, i64) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if result != "paid" {
            let t = day.refusals.entry(format!("result:{result}")).or_default();
            *t = t.checked_add(n).ok_or_else(too_big)?;
        }
        day.readers
            .entry(reader)
            .or_default()
            .taps
            .insert(result, n);
    }
    let dead = sqlx::query(
        "SELECT reason, COUNT(*) FROM dead_letters WHERE source LIKE 'tap/%' AND received_at >= ? AND received_at < ? GROUP BY 1",
    )
    .bind(&from)
    .bind(&to)
    .fetch_all(pool)
    .await?;
    for r in dead {
        let (reason, n): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
        day.refusals.insert(format!("reason:{reason}"), n);
    }
    let meals = sqlx::query(
        "SELECT id, reader, card_id, resident_id, at, payable_fen, subsidy_fen FROM meals
         WHERE local_date = ? AND voided_by IS NULL ORDER BY id",
    )
    .bind(date.to_string())
    .fetch_all(pool)
    .await?;
    let mut settled = Vec::with_capacity(meals.len());
    for r in &meals {
        let reader: String = r.try_get(1)?;
        let line = day.readers.entry(reader.clone()).or_default();
        line.meals.add(r.try_get(5)?)?;
        line.subsidy_fen = line
            .subsidy_fen
            .checked_add(r.try_get(6)?)
            .ok_or_else(too_big)?;
        let at: String = r.try_get(4)?;
        settled.push(Settled {
            id: r.try_get(0)?,
            reader,
            card: r.try_get(2)?,
            resident: r.try_get(3)?,
            at: at.parse().ok(),
            at_text: at,
        });
    }
    day.flags = super::dayclose_flags::flags(pool, date, &settled).await?;
    Ok(day)
}

/// A settled meal of the day, for the flags.
pub(crate) struct Settled {
    pub id: i64,
    pub reader: String,
    pub card: String,
    pub resident: String,
    pub at: Option<Timestamp>,
    pub at_text: String,
}
