//! What canteen staff read: a resident's statement (every ledger row with its running balance),
//! the meals of a day with their ids (to find the one to void), and a card looked up by its id.
//! Read from the journal's readers, never through the writer.
//!
//! Guarantees: a statement's running balance is the sum of the ledger rows up to that row, added
//! with checked arithmetic (a ledger whose sum leaves i64 is an error, never a wrapped number);
//! the final balance equals `SUM(amount_fen)` (what settlement uses).

use super::settle::card_key;
use crate::registry::Registry;
use serde::Serialize;
use sqlx::{Row, SqlitePool};

/// One ledger row of a statement.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StatementLine {
    /// Ledger row id.
    pub ledger_id: i64,
    /// When (UTC, RFC 3339).
    pub at: String,
    /// `topup`, `charge`, `refund` or `payout`.
    pub kind: String,
    /// Signed fen: positive into the balance, negative out of it.
    pub amount_fen: i64,
    /// The balance after this row, fen.
    pub balance_fen: i64,
    /// The meal (charges and refunds).
    pub meal_id: Option<i64>,
    /// The meal's local date and period (charges and refunds).
    pub meal: Option<String>,
    /// Staff who did it (top-ups, refunds, payouts).
    pub staff_id: Option<String>,
    /// Why (as given by staff).
    pub reason: Option<String>,
    /// How a top-up was paid.
    pub method: Option<String>,
}

/// A resident's statement.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Statement {
    /// Resident id.
    pub resident_id: String,
    /// Name (roster, or the name they had when they left it).
    pub name: Option<String>,
    /// The balance now, fen (= Σ ledger).
    pub balance_fen: i64,
    /// Ledger rows in all.
    pub ledger_rows: i64,
    /// Totals by kind, fen.
    pub totals: serde_json::Value,
    /// The last `limit` rows, oldest first, each with its running balance.
    pub lines: Vec<StatementLine>,
}

fn overflow(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("{what} does not fit in 64 bits: the ledger is corrupt").into())
}

/// The statement of `resident`: its last `limit` ledger rows with running balances.
pub async fn statement(
    pool: &SqlitePool,
    registry: &Registry,
    resident: &str,
    limit: usize,
) -> Result<Option<Statement>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT l.id, l.at, l.kind, l.amount_fen, l.meal_id, m.local_date, m.period, l.staff_id, l.reason, l.method
         FROM ledger l LEFT JOIN meals m ON m.id = l.meal_id WHERE l.resident_id = ? ORDER BY l.id",
    )
    .bind(resident)
    .fetch_all(pool)
    .await?;
    let departed: Option<String> =
        sqlx::query("SELECT name FROM departed_residents WHERE resident_id = ?")
            .bind(resident)
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    let name = registry
        .residents
        .get(resident)
        .map(|r| r.name)
        .or(departed);
    if rows.is_empty() && name.is_none() {
        return Ok(None);
    }
    let mut balance = 0i64;
    let mut totals = std::collections::BTreeMap::<String, i64>::new();
    let mut lines = Vec::with_capacity(rows.len());
    for r in &rows {
        let amount: i64 = r.try_get(3)?;
        let kind: String = r.try_get(2)?;
        balance = balance
            .checked_add(amount)
            .ok_or_else(|| overflow("the balance"))?;
        let t = totals.entry(kind.clone()).or_default();
        *t = t.checked_add(amount).ok_or_else(|| overflow("a total"))?;
        let meal = match (
            r.try_get::<Option<String>, _>(5)?,
            r.try_get::<Option<String>, _>(6)?,
        ) {
            (Some(d), Some(p)) => Some(format!("{d} {p}")),
            _ => None,
        };
        lines.push(StatementLine {
            ledger_id: r.try_get(0)?,
            at: r.try_get(1)?,
            kind,
            amount_fen: amount,
            balance_fen: balance,
            meal_id: r.try_get(4)?,
            meal,
            staff_id: r.try_get(7)?,
            reason: r.try_get(8)?,
            method: r.try_get(9)?,
        });
    }
    let ledger_rows = i64::try_from(lines.len()).unwrap_or(i64::MAX);
    let skip = lines.len().saturating_sub(limit);
    Ok(Some(Statement {
        resident_id: resident.to_string(),
        name,
        balance_fen: balance,
        ledger_rows,
        totals: serde_json::to_value(totals).unwrap_or_default(),
        lines: lines.split_off(skip),
    }))
}

/// One meal as staff see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MealLine {
    /// Meal id (what a void names).
    pub meal_id: i64,
    /// When settled (UTC).
    pub at: String,
    /// Meal date (local) and period.
    pub local_date: String,
    /// Period.
    pub period: String,
    /// Resident id.
    pub resident_id: String,
    /// Name (roster or departed).
    pub name: Option<String>,
    /// Card.
    pub card_id: String,
    /// Reader.
    pub reader: String,
    /// Fen.
    pub price_fen: i64,
    /// Fen.
    pub subsidy_fen: i64,
    /// Fen.
    pub payable_fen: i64,
    /// Subsidies applied.
    pub applied: Vec<String>,
    /// Delivery worker (meals delivered to the door).
    pub delivered_by: Option<String>,
    /// Staff who voided it, when voided.
    pub voided_by: Option<String>,
    /// Why it was voided.
    pub void_reason: Option<String>,
}

/// Which meals to list.
#[derive(Debug, Clone, Default)]
pub struct MealFilter {
    /// Meal date (local, `YYYY-MM-DD`).
    pub date: Option<String>,
    /// Only this resident.
    pub resident: Option<String>,
    /// Only this card (any spelling of its id).
    pub card: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// Meals by date, resident or card, newest first (voided ones included, marked).
pub async fn meals(
    pool: &SqlitePool,
    registry: &Registry,
    f: &MealFilter,
) -> Result<Vec<MealLine>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.id, m.at, m.local_date, m.period, m.resident_id, m.card_id, m.reader, m.price_fen, m.subsidy_fen,
                m.payable_fen, m.applied, m.delivered_by, m.voided_by, m.void_reason, d.name
         FROM meals m LEFT JOIN departed_residents d ON d.resident_id = m.resident_id
         WHERE (?1 IS NULL OR m.local_date = ?1) AND (?2 IS NULL OR m.resident_id = ?2) AND (?3 IS NULL OR m.card_id = ?3)
         ORDER BY m.id DESC LIMIT ?4",
    )
    .bind(&f.date)
    .bind(&f.resident)
    .bind(f.card.as_deref().map(card_key))
    .bind(f.limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let resident: String = r.try_get(4)?;
            let applied: String = r.try_get(10)?;
            Ok(MealLine {
                meal_id: r.try_get(0)?,
                at: r.try_get(1)?,
                local_date: r.try_get(2)?,
                period: r.try_get(3)?,
                name: registry
                    .residents
                    .get(&resident)
                    .map(|x| x.name)
                    .or(r.try_get(14)?),
                resident_id: resident,
                card_id: r.try_get(5)?,
                reader: r.try_get(6)?,
                price_fen: r.try_get(7)?,
                subsidy_fen: r.try_get(8)?,
                payable_fen: r.try_get(9)?,
                applied: serde_json::from_str(&applied).unwrap_or_default(),
                delivered_by: r.try_get(11)?,
                voided_by: r.try_get(12)?,
                void_reason: r.try_get(13)?,
            })
        })
        .collect()
}

/// A card as staff see it: its state, its holder and their balance.
pub async fn card(
    pool: &SqlitePool,
    registry: &Registry,
    card: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let card = card_key(card);
    let Some(row) = sqlx::query(
        "SELECT resident_id, state, changed_at, changed_by FROM cards WHERE card_id = ?",
    )
    .bind(&card)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let resident: String = row.try_get(0)?;
    let balance: i64 =
        sqlx::query("SELECT COALESCE(SUM(amount_fen), 0) FROM ledger WHERE resident_id = ?")
            .bind(&resident)
            .fetch_one(pool)
            .await?
            .try_get(0)?;
    let on_roster = registry.residents.get(&resident);
    Ok(Some(serde_json::json!({
        "card_id": card,
        "state": row.try_get::<String, _>(1)?,
        "changed_at": row.try_get::<String, _>(2)?,
        "changed_by": row.try_get::<Option<String>, _>(3)?,
        "resident_id": resident,
        "name": on_roster.as_ref().map(|r| r.name.clone()),
        "on_roster": on_roster.is_some(),
        "balance_fen": balance,
    })))
}
