//! Canteen reports, read from the journal (voided meals excluded): the daily summary per period
//! (the day's close is [`super::dayclose`], the subsidy claim [`super::claim`]). Money is
//! formatted from integer fen without floats.

use serde::Serialize;
use sqlx::{Row, SqlitePool};

/// Fen as yuan with two decimals: 1350 → "13.50", -5 → "-0.05".
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let a = fen.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// `a + b`, or an error naming the column when the sum leaves i64 (a ledger that large is corrupt:
/// the rule file's limits keep every amount small).
pub(crate) fn add(a: i64, b: i64, what: &str) -> Result<i64, sqlx::Error> {
    a.checked_add(b).ok_or_else(|| {
        sqlx::Error::Decode(format!("the total of {what} does not fit in 64 bits").into())
    })
}

/// One line of the daily summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeriodTotals {
    /// Meal period (or `all`).
    pub period: String,
    /// Meals served.
    pub meals: i64,
    /// Sum of prices, fen.
    pub gross_fen: i64,
    /// Sum of subsidies, fen.
    pub subsidy_fen: i64,
    /// Paid by residents, fen.
    pub paid_fen: i64,
    /// Of which delivered to the door.
    pub delivered: i64,
}

/// Daily summary for a local date `YYYY-MM-DD`: one line per period and a total (`all`).
pub async fn daily(pool: &SqlitePool, date: &str) -> Result<Vec<PeriodTotals>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT period, COUNT(*), SUM(price_fen), SUM(subsidy_fen), SUM(payable_fen), SUM(delivered_by IS NOT NULL)
         FROM meals WHERE local_date = ? AND voided_by IS NULL GROUP BY period ORDER BY MIN(at)",
    )
    .bind(date)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    let mut total = PeriodTotals {
        period: "all".into(),
        meals: 0,
        gross_fen: 0,
        subsidy_fen: 0,
        paid_fen: 0,
        delivered: 0,
    };
    for r in rows {
        let line = PeriodTotals {
            period: r.try_get(0)?,
            meals: r.try_get(1)?,
            gross_fen: r.try_get(2)?,
            subsidy_fen: r.try_get(3)?,
            paid_fen: r.try_get(4)?,
            delivered: r.try_get(5)?,
        };
        total.meals = add(total.meals, line.meals, "meals")?;
        total.gross_fen = add(total.gross_fen, line.gross_fen, "gross_fen")?;
        total.subsidy_fen = add(total.subsidy_fen, line.subsidy_fen, "subsidy_fen")?;
        total.paid_fen = add(total.paid_fen, line.paid_fen, "paid_fen")?;
        total.delivered = add(total.delivered, line.delivered, "delivered")?;
        out.push(line);
    }
    out.push(total);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::yuan;

    #[test]
    fn fen_are_printed_as_yuan_without_floats() {
        assert_eq!(yuan(1350), "13.50");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(-1205), "-12.05");
        assert_eq!(yuan(i64::MIN), "-92233720368547758.08");
    }
}
