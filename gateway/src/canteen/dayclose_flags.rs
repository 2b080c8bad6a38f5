//! Anti-fraud flags of the day report (see [`super::dayclose`]): the same card settled at two
//! readers within [`TWO_READERS_WINDOW_S`], a card used far more often than its resident's own
//! recent history, and taps while the resident is reported away or in hospital. A flag is for a
//! person to look at; nothing is refused because of it.

use super::dayclose::{Flag, Settled, TWO_READERS_WINDOW_S};
use jiff::civil::Date;
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;

/// Days of history a resident's usual number of meals is taken from.
pub const HISTORY_DAYS: i64 = 28;

/// A day's meals above `max(3, 2 × the busiest day of the last HISTORY_DAYS)` are flagged.
pub fn unusual(today: i64, busiest_before: i64) -> bool {
    today > 3.max(busiest_before.saturating_mul(2))
}

pub(crate) async fn flags(
    pool: &SqlitePool,
    date: Date,
    meals: &[Settled],
) -> Result<Vec<Flag>, sqlx::Error> {
    let mut out = Vec::new();
    let mut by_card: BTreeMap<&str, Vec<&Settled>> = BTreeMap::new();
    for m in meals {
        by_card.entry(m.card.as_str()).or_default().push(m);
    }
    for (card, list) in &by_card {
        let mut sorted: Vec<&&Settled> = list.iter().filter(|m| m.at.is_some()).collect();
        sorted.sort_by_key(|m| m.at);
        for w in sorted.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (Some(ta), Some(tb)) = (a.at, b.at) else {
                continue;
            };
            let gap = tb.as_second().saturating_sub(ta.as_second());
            if a.reader != b.reader && gap <= TWO_READERS_WINDOW_S {
                out.push(Flag {
                    kind: "two_readers".into(),
                    resident_id: a.resident.clone(),
                    card_id: card.to_string(),
                    meal_ids: vec![a.id, b.id],
                    detail: format!(
                        "settled at {} and at {} {gap} s apart (a copied card, or a resident served twice?)",
                        a.reader, b.reader
                    ),
                });
            }
        }
    }
    let mut by_resident: BTreeMap<&str, Vec<&Settled>> = BTreeMap::new();
    for m in meals {
        by_resident.entry(m.resident.as_str()).or_default().push(m);
    }
    let since = date
        .checked_sub(jiff::Span::new().days(HISTORY_DAYS))
        .unwrap_or(date)
        .to_string();
    for (resident, list) in &by_resident {
        let today = i64::try_from(list.len()).unwrap_or(i64::MAX);
        if today <= 3 {
            continue;
        }
        let busiest: i64 = sqlx::query(
            "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM meals WHERE resident_id = ? AND local_date >= ? AND local_date < ? AND voided_by IS NULL GROUP BY local_date)",
        )
        .bind(resident)
        .bind(&since)
        .bind(date.to_string())
        .fetch_one(pool)
        .await?
        .try_get(0)?;
        if unusual(today, busiest) {
            out.push(Flag {
                kind: "unusual_frequency".into(),
                resident_id: resident.to_string(),
                card_id: list.first().map(|m| m.card.clone()).unwrap_or_default(),
                meal_ids: list.iter().map(|m| m.id).collect(),
                detail: format!(
                    "{today} meals today; at most {busiest} a day in the {HISTORY_DAYS} days before"
                ),
            });
        }
    }
    let away = sqlx::query(
        "SELECT resident_id, kind, set_at, ended_at, set_by, note FROM resident_away ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    for r in away {
        let resident: String = r.try_get(0)?;
        let Some(list) = by_resident.get(resident.as_str()) else {
            continue;
        };
        let (kind, set_at, ended_at): (String, String, Option<String>) =
            (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        let during: Vec<&&Settled> = list
            .iter()
            .filter(|m| m.at_text >= set_at && ended_at.as_ref().is_none_or(|e| &m.at_text < e))
            .collect();
        if let Some(first) = during.first() {
            let by: String = r.try_get(4)?;
            let note: Option<String> = r.try_get(5)?;
            out.push(Flag {
                kind: kind.clone(),
                resident_id: resident.clone(),
                card_id: first.card.clone(),
                meal_ids: during.iter().map(|m| m.id).collect(),
                detail: format!(
                    "card used while the resident is reported {kind} (since {set_at}, by {by}{})",
                    note.map(|n| format!(": {n}")).unwrap_or_default()
                ),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::unusual;

    #[test]
    fn three_meals_a_day_are_never_unusual_and_four_are_against_a_quiet_history() {
        assert!(!unusual(3, 0));
        assert!(unusual(4, 0));
        assert!(unusual(4, 1));
        assert!(!unusual(4, 2));
        assert!(!unusual(6, 3));
        assert!(unusual(7, 3));
        assert!(!unusual(i64::MAX, i64::MAX));
    }
}
