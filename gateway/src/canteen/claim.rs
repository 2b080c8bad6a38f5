//! The subsidy claim for the civil-affairs office, monthly (`YYYY-MM`) or quarterly (`YYYY-Qn`,
//! as Futian claims): CSV, UTF-8 with a BOM so Excel shows Chinese names.
//!
//! Layout (docs/CANTEEN.md "The claim"): a first line naming the rule file (name, version,
//! SHA-256) and the period; then one header and rows whose first column says what they are —
//! `明细` (one subsidized meal), `居民小计` (per resident), `类别小计` (per subsidy category: the
//! subsidy rules that paid, e.g. 80+, 低保, 特困), `合计` (the total), and `已作废` (voided meals,
//! listed for the auditor and counted in no subtotal). Counts and money are in their own columns.
//! Sums are checked: a total that leaves i64 is an error, never a wrapped number.

use super::reports::{add, yuan};
use crate::registry::Registry;
use jiff::civil::Date;
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;

/// The period a claim covers: `[from, to)` meal dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPeriod {
    /// As asked (`2026-11`, `2026-Q4`).
    pub label: String,
    /// First meal date.
    pub from: Date,
    /// The day after the last.
    pub to: Date,
}

impl ClaimPeriod {
    /// `YYYY-MM` or `YYYY-Qn` (n = 1–4); None when it is neither.
    pub fn parse(s: &str) -> Option<ClaimPeriod> {
        let (year, rest) = s.split_once('-')?;
        if year.len() != 4 {
            return None;
        }
        let year: i16 = year.parse().ok()?;
        let (first_month, months) = match rest.strip_prefix('Q') {
            Some(q) if q.len() == 1 => {
                let q: i8 = q.parse().ok().filter(|q| (1..=4).contains(q))?;
                ((q - 1) * 3 + 1, 3)
            }
            Some(_) => return None,
            None if rest.len() == 2 => (rest.parse().ok().filter(|m| (1..=12).contains(m))?, 1),
            None => return None,
        };
        let from = Date::new(year, first_month, 1).ok()?;
        let to = from.checked_add(jiff::Span::new().months(months)).ok()?;
        Some(ClaimPeriod {
            label: s.to_string(),
            from,
            to,
        })
    }
}

#[derive(Default)]
struct Sub {
    meals: i64,
    price: i64,
    subsidy: i64,
    paid: i64,
}

impl Sub {
    fn add(&mut self, price: i64, subsidy: i64, paid: i64) -> Result<(), sqlx::Error> {
        self.meals = add(self.meals, 1, "meals")?;
        self.price = add(self.price, price, "price_fen")?;
        self.subsidy = add(self.subsidy, subsidy, "subsidy_fen")?;
        self.paid = add(self.paid, paid, "payable_fen")?;
        Ok(())
    }
}

const HEADER: [&str; 14] = [
    "行类型",
    "日期",
    "餐次",
    "居民编号",
    "姓名",
    "卡号",
    "补贴类别",
    "餐数",
    "价格(元)",
    "补贴(元)",
    "自付(元)",
    "送餐员",
    "作废人",
    "作废原因",
];

/// The claim for `period`.
pub async fn claim_csv(
    pool: &SqlitePool,
    registry: &Registry,
    period: &ClaimPeriod,
) -> Result<Vec<u8>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT local_date, period, meals.resident_id, card_id, price_fen, subsidy_fen, payable_fen, applied, delivered_by, d.name, voided_by, void_reason
         FROM meals LEFT JOIN departed_residents d ON d.resident_id = meals.resident_id
         WHERE local_date >= ? AND local_date < ? AND subsidy_fen > 0 ORDER BY voided_by IS NOT NULL, meals.resident_id, local_date, at",
    )
    .bind(period.from.to_string())
    .bind(period.to.to_string())
    .fetch_all(pool)
    .await?;
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::from("\u{feff}".as_bytes()));
    let (rules_name, version, sha) = registry
        .canteen
        .as_ref()
        .map(|(r, _)| {
            (
                r.name.clone(),
                r.version.clone().unwrap_or_default(),
                r.sha256.clone(),
            )
        })
        .unwrap_or_default();
    let _ = w.write_record([
        "规则",
        &rules_name,
        "版本",
        &version,
        "SHA-256",
        &sha,
        "期间",
        &period.label,
    ]);
    let _ = w.write_record(HEADER);
    let mut residents: BTreeMap<String, (String, Sub)> = BTreeMap::new();
    let mut categories: BTreeMap<String, Sub> = BTreeMap::new();
    let mut total = Sub::default();
    let mut voided = Vec::new();
    for r in rows {
        let resident: String = r.try_get(2)?;
        // A resident who has left the roster since is claimed under the name they had.
        let name = match registry.residents.get(&resident) {
            Some(r) => r.name,
            None => r.try_get::<Option<String>, _>(9)?.unwrap_or_default(),
        };
        let (price, subsidy, paid): (i64, i64, i64) = (r.try_get(4)?, r.try_get(5)?, r.try_get(6)?);
        let applied: String = r.try_get(7)?;
        let category = serde_json::from_str::<Vec<String>>(&applied)
            .unwrap_or_default()
            .join("; ");
        let voided_by: Option<String> = r.try_get(10)?;
        let record = [
            if voided_by.is_some() {
                "已作废"
            } else {
                "明细"
            }
            .to_string(),
            r.try_get::<String, _>(0)?,
            r.try_get::<String, _>(1)?,
            resident.clone(),
            name.clone(),
            r.try_get::<String, _>(3)?,
            category.clone(),
            "1".into(),
            yuan(price),
            yuan(subsidy),
            yuan(paid),
            r.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
            voided_by.clone().unwrap_or_default(),
            r.try_get::<Option<String>, _>(11)?.unwrap_or_default(),
        ];
        if voided_by.is_some() {
            voided.push(record);
            continue;
        }
        let _ = w.write_record(&record);
        residents
            .entry(resident)
            .or_insert_with(|| (name, Sub::default()))
            .1
            .add(price, subsidy, paid)?;
        categories
            .entry(category)
            .or_default()
            .add(price, subsidy, paid)?;
        total.add(price, subsidy, paid)?;
    }
    let sub_row = |kind: &str, id: &str, name: &str, category: &str, s: &Sub| {
        [
            kind.to_string(),
            String::new(),
            String::new(),
            id.to_string(),
            name.to_string(),
            String::new(),
            category.to_string(),
            s.meals.to_string(),
            yuan(s.price),
            yuan(s.subsidy),
            yuan(s.paid),
            String::new(),
            String::new(),
            String::new(),
        ]
    };
    for (id, (name, s)) in &residents {
        let _ = w.write_record(sub_row("居民小计", id, name, "", s));
    }
    for (category, s) in &categories {
        let _ = w.write_record(sub_row("类别小计", "", "", category, s));
    }
    let _ = w.write_record(sub_row("合计", "", "", "", &total));
    for record in voided {
        let _ = w.write_record(&record);
    }
    Ok(w.into_inner().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::ClaimPeriod;

    #[test]
    fn months_and_quarters_are_claim_periods_and_nothing_else() {
        let p = |s: &str| ClaimPeriod::parse(s).map(|p| (p.from.to_string(), p.to.to_string()));
        assert_eq!(
            p("2026-11"),
            Some(("2026-11-01".into(), "2026-12-01".into()))
        );
        assert_eq!(
            p("2026-12"),
            Some(("2026-12-01".into(), "2027-01-01".into()))
        );
        assert_eq!(
            p("2026-Q1"),
            Some(("2026-01-01".into(), "2026-04-01".into()))
        );
        assert_eq!(
            p("2026-Q4"),
            Some(("2026-10-01".into(), "2027-01-01".into()))
        );
        for bad in [
            "2026-13",
            "2026-00",
            "2026-Q0",
            "2026-Q5",
            "2026-Q12",
            "26-01",
            "2026-1",
            "2026",
            "",
            "9999-Q4x",
            "２０２６-01",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        assert!(ClaimPeriod::parse("9999-12").is_none() || ClaimPeriod::parse("9999-12").is_some());
    }
}
