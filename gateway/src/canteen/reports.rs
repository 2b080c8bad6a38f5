//! Canteen reports, read from the journal (voided meals excluded): the daily summary and the
//! monthly subsidy claim for the civil-affairs office (CSV, UTF-8 with BOM so Excel shows Chinese
//! names). Money is formatted from integer fen without floats.

use crate::registry::Registry;
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
fn add(a: i64, b: i64, what: &str) -> Result<i64, sqlx::Error> {
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

/// The monthly subsidy claim (`YYYY-MM`): one row per subsidized meal, CSV with a UTF-8 BOM.
pub async fn claim_csv(
    pool: &SqlitePool,
    registry: &Registry,
    month: &str,
) -> Result<Vec<u8>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT local_date, period, meals.resident_id, card_id, price_fen, subsidy_fen, payable_fen, applied, delivered_by, d.name
         FROM meals LEFT JOIN departed_residents d ON d.resident_id = meals.resident_id WHERE local_date LIKE ? AND subsidy_fen > 0 AND voided_by IS NULL ORDER BY meals.resident_id, local_date, at",
    )
    .bind(format!("{month}-%"))
    .fetch_all(pool)
    .await?;
    let mut w = csv::Writer::from_writer(Vec::from("\u{feff}".as_bytes()));
    let header = [
        "日期",
        "餐次",
        "居民编号",
        "姓名",
        "卡号",
        "价格(元)",
        "补贴(元)",
        "自付(元)",
        "补贴项目",
        "送餐员",
    ];
    let _ = w.write_record(header);
    let (mut count, mut total) = (0i64, 0i64);
    for r in rows {
        let resident: String = r.try_get(2)?;
        // A resident who has left the roster since is claimed under the name they had.
        let name = match registry.residents.get(&resident) {
            Some(r) => r.name,
            None => r.try_get::<Option<String>, _>(9)?.unwrap_or_default(),
        };
        let subsidy: i64 = r.try_get(5)?;
        let applied: String = r.try_get(7)?;
        let applied: Vec<String> = serde_json::from_str(&applied).unwrap_or_default();
        count = add(count, 1, "meals")?;
        total = add(total, subsidy, "subsidy_fen")?;
        let _ = w.write_record([
            r.try_get::<String, _>(0)?,
            r.try_get::<String, _>(1)?,
            resident,
            name,
            r.try_get::<String, _>(3)?,
            yuan(r.try_get(4)?),
            yuan(subsidy),
            yuan(r.try_get(6)?),
            applied.join("; "),
            r.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
        ]);
    }
    let _ = w.write_record([
        "合计".to_string(),
        String::new(),
        format!("{count} 餐"),
        String::new(),
        String::new(),
        String::new(),
        yuan(total),
        String::new(),
        String::new(),
        String::new(),
    ]);
    Ok(w.into_inner().unwrap_or_default())
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
