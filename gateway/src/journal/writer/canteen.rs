//! Meal settlement inside the writer's transaction. Idempotent by (reader, reader seq): a
//! retransmitted tap gets the stored answer again. A second tap of the same card within the
//! double-tap window is the same meal. Money moves only through ledger rows (append-only, fen).

use super::super::{format_ts, CanteenOp, JournalError};
use super::{EventRow, Writer};
use crate::canteen::rules::{ResidentFacts, Today};
use crate::registry::mask_name;
use eldergate_protocol::payload::{Down, Tap, TapResult};
use jiff::Timestamp;
use sqlx::Row;

pub use crate::roster::card_key;

impl Writer {
    /// The balance of a resident, derived from the ledger.
    pub(super) async fn balance(&mut self, resident: &str) -> Result<i64, JournalError> {
        Ok(
            sqlx::query("SELECT COALESCE(SUM(amount_fen), 0) FROM ledger WHERE resident_id = ?")
                .bind(resident)
                .fetch_one(&mut self.conn)
                .await?
                .try_get(0)?,
        )
    }

    pub(super) async fn apply_tap(
        &mut self,
        reader: &str,
        tap: &Tap,
        at: Timestamp,
    ) -> Result<Down, JournalError> {
        if let Some(row) =
            sqlx::query("SELECT answer FROM taps WHERE reader = ? AND reader_seq = ?")
                .bind(reader)
                .bind(i64::from(tap.seq))
                .fetch_optional(&mut self.conn)
                .await?
        {
            metrics::counter!("eldergate_duplicates_total", "source" => "tap").increment(1);
            let answer: String = row.try_get(0)?;
            return serde_json::from_str(&answer).map_err(|e| JournalError::Write(e.to_string()));
        }
        let card = card_key(&tap.card);
        let registry = self.registry.clone();
        let answer =
            |result: TapResult, name: Option<String>, price: i64, subsidy: i64, balance: i64| {
                Down::Display {
                    v: 1,
                    seq: tap.seq,
                    result,
                    name,
                    price_fen: price,
                    subsidy_fen: subsidy,
                    payable_fen: price - subsidy,
                    balance_fen: balance,
                }
            };
        let holder = sqlx::query("SELECT resident_id, state FROM cards WHERE card_id = ?")
            .bind(&card)
            .fetch_optional(&mut self.conn)
            .await?;
        let (down, meal_id) = match holder {
            None => (answer(TapResult::UnknownCard, None, 0, 0, 0), None),
            Some(row) => {
                let resident: String = row.try_get(0)?;
                let state: String = row.try_get(1)?;
                let facts = registry.residents.get(&resident);
                let name = facts.as_ref().map(|r| mask_name(&r.name));
                if state == "lost" {
                    (answer(TapResult::LostCard, name, 0, 0, 0), None)
                } else if state != "active" || facts.is_none() {
                    // Retired with a roster import (the resident left the roster): the card
                    // belongs to nobody on the roster now.
                    (answer(TapResult::UnknownCard, None, 0, 0, 0), None)
                } else {
                    self.settle(reader, tap, &card, &resident, name, at).await?
                }
            }
        };
        let text = serde_json::to_string(&down).map_err(|e| JournalError::Write(e.to_string()))?;
        sqlx::query("INSERT INTO taps (reader, reader_seq, card_id, received_at, meal_id, answer) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(reader)
            .bind(i64::from(tap.seq))
            .bind(&card)
            .bind(format_ts(at))
            .bind(meal_id)
            .bind(&text)
            .execute(&mut self.conn)
            .await?;
        if let Down::Display { result, .. } = &down {
            metrics::counter!("eldergate_taps_total", "result" => format!("{result:?}"))
                .increment(1);
        }
        Ok(down)
    }

    async fn settle(
        &mut self,
        reader: &str,
        tap: &Tap,
        card: &str,
        resident: &str,
        name: Option<String>,
        at: Timestamp,
    ) -> Result<(Down, Option<i64>), JournalError> {
        let registry = self.registry.clone();
        let refuse = |result: TapResult, balance: i64| Down::Display {
            v: 1,
            seq: tap.seq,
            result,
            name: name.clone(),
            price_fen: 0,
            subsidy_fen: 0,
            payable_fen: 0,
            balance_fen: balance,
        };
        let Some((rules, double_tap_s)) = registry.canteen.as_ref() else {
            return Ok((refuse(TapResult::OutsideMealPeriod, 0), None));
        };
        // A second tap of the same card within the window is the same meal.
        let since = at
            .checked_sub(jiff::SignedDuration::from_secs(*double_tap_s as i64))
            .unwrap_or(at);
        if let Some(row) = sqlx::query(
            "SELECT answer, meal_id FROM taps WHERE card_id = ? AND meal_id IS NOT NULL AND received_at >= ? ORDER BY id DESC LIMIT 1",
        )
        .bind(card)
        .bind(format_ts(since))
        .fetch_optional(&mut self.conn)
        .await?
        {
            let answer: String = row.try_get(0)?;
            let meal_id: i64 = row.try_get(1)?;
            let mut down: Down = serde_json::from_str(&answer).map_err(|e| JournalError::Write(e.to_string()))?;
            if let Down::Display { seq, .. } = &mut down {
                *seq = tap.seq;
            }
            metrics::counter!("eldergate_double_taps_total").increment(1);
            return Ok((down, Some(meal_id)));
        }
        let tz = jiff::tz::TimeZone::get(&registry.time_zone)
            .map_err(|e| JournalError::Write(e.to_string()))?;
        let local = at.to_zoned(tz);
        let balance = self.balance(resident).await?;
        let facts = registry.residents.get(resident);
        let birth = facts
            .as_ref()
            .and_then(|r| r.birth_date.as_deref())
            .and_then(|d| d.parse::<jiff::civil::Date>().ok());
        let statuses: Vec<String> = facts
            .as_ref()
            .and_then(|r| r.statuses.clone())
            .map(|s| {
                s.split(';')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        // Without a birth date no age band applies (age 0); status rules still do.
        let facts = ResidentFacts {
            birth_date: birth.unwrap_or(local.date()),
            statuses,
        };
        let period_name = rules.period_at(local.time()).map(|p| p.name.clone());
        let Some(period_name) = period_name else {
            return Ok((refuse(TapResult::OutsideMealPeriod, balance), None));
        };
        let date = local.date().to_string();
        let row = sqlx::query(
            "SELECT COALESCE(SUM(subsidy_fen), 0), COALESCE(SUM(CASE WHEN period = ? AND subsidy_fen > 0 THEN 1 ELSE 0 END), 0)
             FROM meals WHERE resident_id = ? AND local_date = ? AND voided_by IS NULL",
        )
        .bind(&period_name)
        .bind(resident)
        .bind(&date)
        .fetch_one(&mut self.conn)
        .await?;
        let today = Today {
            subsidy_fen: row.try_get(0)?,
            subsidized_in_period: row.try_get::<i64, _>(1)? as u32,
        };
        let quote = match rules.quote(local.date(), local.time(), &facts, tap.price_fen, today) {
            Ok(q) => q,
            Err(crate::canteen::rules::QuoteError::OutsideMealPeriod) => {
                return Ok((refuse(TapResult::OutsideMealPeriod, balance), None))
            }
            Err(_) => return Ok((refuse(TapResult::NoPrice, balance), None)),
        };
        if quote.payable_fen > balance {
            let mut d = refuse(TapResult::InsufficientBalance, balance);
            if let Down::Display {
                price_fen,
                subsidy_fen,
                payable_fen,
                ..
            } = &mut d
            {
                *price_fen = quote.price_fen;
                *subsidy_fen = quote.subsidy_fen;
                *payable_fen = quote.payable_fen;
            }
            return Ok((d, None));
        }
        let applied = serde_json::to_string(&quote.applied)
            .map_err(|e| JournalError::Write(e.to_string()))?;
        let meal_id: i64 = sqlx::query(
            "INSERT INTO meals (resident_id, card_id, reader, local_date, period, price_fen, subsidy_fen, payable_fen, applied, at, delivered_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(resident)
        .bind(card)
        .bind(reader)
        .bind(&date)
        .bind(&quote.period)
        .bind(quote.price_fen)
        .bind(quote.subsidy_fen)
        .bind(quote.payable_fen)
        .bind(&applied)
        .bind(format_ts(at))
        .bind(&tap.delivered_by)
        .fetch_one(&mut self.conn)
        .await?
        .try_get(0)?;
        if quote.payable_fen > 0 {
            sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, meal_id, at) VALUES (?, 'charge', ?, ?, ?)")
                .bind(resident)
                .bind(-quote.payable_fen)
                .bind(meal_id)
                .bind(format_ts(at))
                .execute(&mut self.conn)
                .await?;
        }
        let seq = self.take_seq();
        self.pending.push(EventRow {
            seq,
            kind: "meal_settled".into(),
            device_id: Some(reader.to_string()),
            device_seq: None,
            alert_id: None,
            received_at: format_ts(at),
            device_time: None,
            body: serde_json::json!({
                "meal_id": meal_id, "resident_id": resident, "card_id": card, "local_date": date,
                "period": quote.period, "price_fen": quote.price_fen, "subsidy_fen": quote.subsidy_fen,
                "payable_fen": quote.payable_fen, "applied": quote.applied, "delivered_by": tap.delivered_by,
            })
            .to_string(),
        });
        let down = Down::Display {
            v: 1,
            seq: tap.seq,
            result: TapResult::Paid,
            name,
            price_fen: quote.price_fen,
            subsidy_fen: quote.subsidy_fen,
            payable_fen: quote.payable_fen,
            balance_fen: balance - quote.payable_fen,
        };
        Ok((down, Some(meal_id)))
    }

    /// A top-up by staff: a positive ledger row. Returns the new balance.
    pub(super) async fn apply_topup(
        &mut self,
        resident: &str,
        amount_fen: i64,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Result<i64, String>, JournalError> {
        if amount_fen <= 0 {
            return Ok(Err(
                "amount_fen must be positive (fen, e.g. 10000 for ¥100)".into(),
            ));
        }
        if !self.registry.residents.contains(resident) {
            return Ok(Err(format!("resident {resident} is not in the roster")));
        }
        if !self.registry.staff.contains_key(by) {
            return Ok(Err(format!("{by:?} is not a registered staff id")));
        }
        let at = Timestamp::now();
        sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, staff_id, reason, at) VALUES (?, 'topup', ?, ?, ?, ?)")
            .bind(resident)
            .bind(amount_fen)
            .bind(by)
            .bind(reason)
            .bind(format_ts(at))
            .execute(&mut self.conn)
            .await?;
        let seq = self.take_seq();
        self.pending.push(EventRow {
            seq,
            kind: "ledger_topup".into(),
            device_id: None,
            device_seq: None,
            alert_id: None,
            received_at: format_ts(at),
            device_time: None,
            body: serde_json::json!({ "resident_id": resident, "amount_fen": amount_fen, "by": by, "reason": reason }).to_string(),
        });
        Ok(Ok(self.balance(resident).await?))
    }

    /// Cards lost / bound, meals voided (refund through the ledger). Every operation is an event.
    pub(super) async fn apply_canteen_op(
        &mut self,
        op: &CanteenOp,
        by: &str,
    ) -> Result<Result<serde_json::Value, String>, JournalError> {
        if !self.registry.staff.contains_key(by) {
            return Ok(Err(format!("{by:?} is not a registered staff id")));
        }
        let at = Timestamp::now();
        let (kind, summary) = match op {
            CanteenOp::CardLost { card } => {
                let card = card_key(card);
                let r = sqlx::query("UPDATE cards SET state = 'lost', changed_at = ?, changed_by = ? WHERE card_id = ? AND state = 'active'")
                    .bind(format_ts(at))
                    .bind(by)
                    .bind(&card)
                    .execute(&mut self.conn)
                    .await?;
                if r.rows_affected() == 0 {
                    return Ok(Err(format!("card {card} is not an active card")));
                }
                (
                    "card_lost",
                    serde_json::json!({ "card_id": card, "by": by }),
                )
            }
            CanteenOp::BindCard { card, resident } => {
                let card = card_key(card);
                if card.len() < 8 {
                    return Ok(Err(
                        "card id must be at least 4 bytes of hex (8 digits)".into()
                    ));
                }
                if !self.registry.residents.contains(resident) {
                    return Ok(Err(format!("resident {resident} is not in the roster")));
                }
                let known = sqlx::query("SELECT resident_id, state FROM cards WHERE card_id = ?")
                    .bind(&card)
                    .fetch_optional(&mut self.conn)
                    .await?;
                if let Some(row) = known {
                    let (holder, state): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                    return Ok(Err(format!(
                        "card {card} is already {state} for resident {holder}"
                    )));
                }
                sqlx::query("INSERT INTO cards (card_id, resident_id, state, changed_at, changed_by) VALUES (?, ?, 'active', ?, ?)")
                    .bind(&card)
                    .bind(resident)
                    .bind(format_ts(at))
                    .bind(by)
                    .execute(&mut self.conn)
                    .await?;
                (
                    "card_bound",
                    serde_json::json!({ "card_id": card, "resident_id": resident, "by": by }),
                )
            }
            CanteenOp::VoidMeal { meal, reason } => {
                if reason.trim().is_empty() {
                    return Ok(Err("a void needs a reason".into()));
                }
                let row = sqlx::query(
                    "SELECT resident_id, payable_fen, voided_by FROM meals WHERE id = ?",
                )
                .bind(meal)
                .fetch_optional(&mut self.conn)
                .await?;
                let Some(row) = row else {
                    return Ok(Err(format!("meal {meal} does not exist")));
                };
                let (resident, payable, voided): (String, i64, Option<String>) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                if let Some(v) = voided {
                    return Ok(Err(format!("meal {meal} was already voided by {v}")));
                }
                sqlx::query(
                    "UPDATE meals SET voided_by = ?, voided_at = ?, void_reason = ? WHERE id = ?",
                )
                .bind(by)
                .bind(format_ts(at))
                .bind(reason)
                .bind(meal)
                .execute(&mut self.conn)
                .await?;
                if payable > 0 {
                    sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, meal_id, staff_id, reason, at) VALUES (?, 'refund', ?, ?, ?, ?, ?)")
                        .bind(&resident)
                        .bind(payable)
                        .bind(meal)
                        .bind(by)
                        .bind(reason)
                        .bind(format_ts(at))
                        .execute(&mut self.conn)
                        .await?;
                }
                let balance = self.balance(&resident).await?;
                (
                    "meal_voided",
                    serde_json::json!({ "meal_id": meal, "resident_id": resident, "refund_fen": payable, "balance_fen": balance, "by": by, "reason": reason }),
                )
            }
            CanteenOp::PayOut {
                resident,
                amount_fen,
                reason,
            } => {
                if reason.trim().is_empty() {
                    return Ok(Err("a payout needs a reason (receipt number, why)".into()));
                }
                let balance = self.balance(resident).await?;
                let amount = amount_fen.unwrap_or(balance);
                if amount <= 0 {
                    return Ok(Err(format!(
                        "nothing to pay out: resident {resident} has a balance of {balance} fen"
                    )));
                }
                if amount > balance {
                    return Ok(Err(format!(
                        "cannot pay out {amount} fen: resident {resident} has a balance of {balance} fen"
                    )));
                }
                sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, staff_id, reason, at) VALUES (?, 'payout', ?, ?, ?, ?)")
                    .bind(resident)
                    .bind(-amount)
                    .bind(by)
                    .bind(reason)
                    .bind(format_ts(at))
                    .execute(&mut self.conn)
                    .await?;
                (
                    "balance_paid_out",
                    serde_json::json!({ "resident_id": resident, "amount_fen": amount, "balance_fen": balance - amount, "by": by, "reason": reason }),
                )
            }
        };
        let seq = self.take_seq();
        self.pending.push(EventRow {
            seq,
            kind: kind.into(),
            device_id: None,
            device_seq: None,
            alert_id: None,
            received_at: format_ts(at),
            device_time: None,
            body: summary.to_string(),
        });
        Ok(Ok(summary))
    }

    /// Binds the roster's cards that the journal does not know yet (a card already known keeps
    /// its state: a card reported lost stays lost).
    pub(super) async fn seed_cards(&mut self) -> Result<(), JournalError> {
        let registry = self.registry.clone();
        let now = format_ts(Timestamp::now());
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await?;
        for r in registry.residents.current().values() {
            if let Some(card) = r.card_id.as_deref().map(card_key).filter(|c| !c.is_empty()) {
                sqlx::query("INSERT OR IGNORE INTO cards (card_id, resident_id, state, changed_at, changed_by) VALUES (?, ?, 'active', ?, 'roster')")
                    .bind(card)
                    .bind(&r.resident_id)
                    .bind(&now)
                    .execute(&mut self.conn)
                    .await?;
            }
        }
        sqlx::query("COMMIT").execute(&mut self.conn).await?;
        Ok(())
    }
}
