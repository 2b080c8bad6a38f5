//! Read-only queries of the readings (the journal's reader pool): a resident's history, the
//! unassigned readings, target ranges. The HTTP API and the console's resident page use these;
//! the JSON shape is [`ReadingView`].

use super::units::{canonical_unit, parse_measure, show};
use serde::Serialize;
use sqlx::{Row, SqlitePool};

/// One reading as staff see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadingView {
    /// Reading id.
    pub id: i64,
    /// The `vital_reading` event's seq.
    pub seq: i64,
    /// Kiosk.
    pub device_id: String,
    /// Resident, None = unassigned.
    pub resident_id: Option<String>,
    /// `named`, `session` or `unassigned`.
    pub how: String,
    /// Measure.
    pub measure: String,
    /// Canonical integer (systolic for BP).
    pub v1: i64,
    /// Diastolic.
    pub v2: Option<i64>,
    /// Canonical value as people read it: `"142/91"`, `"7.8"`.
    pub value: String,
    /// UCUM unit of `value`.
    pub unit: String,
    /// As the device sent it.
    pub value_in: String,
    /// Context (glucose timing, BP position).
    pub context: Option<String>,
    /// Arm.
    pub arm: Option<String>,
    /// Device measurement time.
    pub device_time: Option<String>,
    /// Gateway receive time (RFC 3339 UTC).
    pub received_at: String,
    /// What the rules found: `[{kind, priority, detail, alert_id}]`.
    pub findings: serde_json::Value,
}

const COLUMNS: &str = "id, seq, device_id, resident_id, how, measure, v1, v2, value_in, context, arm, device_time, received_at, findings";

fn view(r: &sqlx::sqlite::SqliteRow) -> Result<ReadingView, sqlx::Error> {
    let measure: String = r.try_get("measure")?;
    let v1: i64 = r.try_get("v1")?;
    let v2: Option<i64> = r.try_get("v2")?;
    let (value, unit) = match parse_measure(&measure) {
        Some(m) => {
            let v = match v2 {
                Some(d) => format!("{}/{}", show(m, v1), show(m, d)),
                None => show(m, v1),
            };
            (v, canonical_unit(m).0.to_string())
        }
        None => (v1.to_string(), String::new()),
    };
    let findings: Option<String> = r.try_get("findings")?;
    Ok(ReadingView {
        id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        device_id: r.try_get("device_id")?,
        resident_id: r.try_get("resident_id")?,
        how: r.try_get("how")?,
        measure,
        v1,
        v2,
        value,
        unit,
        value_in: r.try_get("value_in")?,
        context: r.try_get("context")?,
        arm: r.try_get("arm")?,
        device_time: r.try_get("device_time")?,
        received_at: r.try_get("received_at")?,
        findings: findings
            .and_then(|f| serde_json::from_str(&f).ok())
            .unwrap_or(serde_json::Value::Array(Vec::new())),
    })
}

/// A local date (`YYYY-MM-DD`) in the community's time zone as an RFC 3339 UTC bound: its
/// start, or (`end`) the next day's start; an RFC 3339 instant as itself. None when neither.
pub fn day_bound(time_zone: &str, s: &str, end: bool) -> Option<String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(crate::journal::format_ts(t));
    }
    let date: jiff::civil::Date = s.parse().ok()?;
    let date = if end { date.tomorrow().ok()? } else { date };
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    Some(crate::journal::format_ts(
        date.to_zoned(tz).ok()?.timestamp(),
    ))
}

/// A resident's readings received in `[from, to)` (RFC 3339 UTC strings or dates
/// `YYYY-MM-DD`, compared as text), oldest first, at most `limit`.
pub async fn history(
    pool: &SqlitePool,
    resident: &str,
    from: &str,
    to: &str,
    limit: i64,
) -> Result<Vec<ReadingView>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM vital_readings WHERE resident_id = ? AND received_at >= ? AND received_at < ? ORDER BY received_at, id LIMIT ?"
    ))
    .bind(resident)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(view).collect()
}

/// Readings nobody is bound to, newest first, at most `limit`.
pub async fn unassigned(pool: &SqlitePool, limit: i64) -> Result<Vec<ReadingView>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM vital_readings WHERE resident_id IS NULL ORDER BY received_at DESC, id DESC LIMIT ?"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(view).collect()
}

/// Residents with a reading received in `[from, to)`: activity for the daily check-in.
pub async fn active_residents(
    pool: &SqlitePool,
    from: &str,
    to: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT resident_id FROM vital_readings WHERE resident_id IS NOT NULL AND received_at >= ? AND received_at < ?")
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}
