//! Meal settlement: the canteen's card-tap operation inside the writer's transaction.
//! Idempotent by (reader, reader seq): a retransmitted tap gets the stored answer again. A second
//! tap of the same card within the double-tap window is the same meal (unless that meal was
//! voided since), answered with today's balance. Money moves only through ledger rows
//! (append-only, fen). The reader's answer is sent only after COMMIT.
//!
//! Every tap is answered: bad input in a tap (a price out of range, a `delivered_by` that is not
//! staff) is answered `refused` and stored with the tap, so a retransmission gets the same
//! answer; it is also counted, logged and kept as a dead letter.

use crate::canteen::rules::{QuoteError, ResidentFacts, Today};
use crate::journal::{format_ts, JournalError, Lane, NewEvent, OpError, Operation, Refusal, Tx};
use crate::registry::{mask_name, Registry};
use eldergate_protocol::payload::{Down, Tap, TapResult};
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

pub use crate::roster::card_key;

/// The balance of a resident, derived from the ledger.
pub(crate) async fn balance(
    conn: &mut SqliteConnection,
    resident: &str,
) -> Result<i64, JournalError> {
    Ok(
        sqlx::query("SELECT COALESCE(SUM(amount_fen), 0) FROM ledger WHERE resident_id = ?")
            .bind(resident)
            .fetch_one(conn)
            .await?
            .try_get(0)?,
    )
}

/// Bulk lane: a card tap at a reader; answered after commit with what the reader shows.
#[derive(Debug, Clone)]
pub struct CardTap {
    /// Reader id (a registered card reader).
    pub reader: String,
    /// The tap.
    pub tap: Tap,
    /// Gateway receive time.
    pub received_at: Timestamp,
}

impl Operation for CardTap {
    type Answer = Down;
    const NAME: &'static str = "card_tap";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<Down, OpError>> {
        Box::pin(async move {
            let registry = tx.ctx::<Registry>()?;
            apply_tap(tx, &registry, &self.reader, &self.tap, self.received_at).await
        })
    }
}

/// Bulk lane, first at start: binds the roster's cards that the journal does not know yet (a
/// card already known keeps its state: a card reported lost stays lost).
#[derive(Debug, Clone, Default)]
pub struct SeedCards;

impl Operation for SeedCards {
    type Answer = ();
    const NAME: &'static str = "seed_cards";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn cost(&self) -> usize {
        crate::journal::BULK_BUDGET
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            let registry = tx.ctx::<Registry>()?;
            let now = format_ts(Timestamp::now());
            for r in registry.residents.current().values() {
                if let Some(card) = r.card_id.as_deref().map(card_key).filter(|c| !c.is_empty()) {
                    sqlx::query("INSERT OR IGNORE INTO cards (card_id, resident_id, state, changed_at, changed_by) VALUES (?, ?, 'active', ?, 'roster')")
                        .bind(card)
                        .bind(&r.resident_id)
                        .bind(&now)
                        .execute(tx.conn())
                        .await?;
                }
            }
            Ok(())
        })
    }
}

async fn apply_tap(
    tx: &mut Tx,
    registry: &Registry,
    reader: &str,
    tap: &Tap,
    at: Timestamp,
) -> Result<Down, OpError> {
    let card = card_key(&tap.card);
    if let Some(row) =
        sqlx::query("SELECT answer, card_id FROM taps WHERE reader = ? AND reader_seq = ?")
            .bind(reader)
            .bind(i64::from(tap.seq))
            .fetch_optional(tx.conn())
            .await?
    {
        let answer: String = row.try_get(0)?;
        let earlier: String = row.try_get(1)?;
        if earlier != card {
            // The same (reader, seq) with another card: not a retransmission. Never another
            // resident's answer; the reader must take a new seq.
            metrics::counter!("eldergate_seq_conflicts_total", "source" => "tap").increment(1);
            return Err(OpError::Refused(Refusal::conflict(
                "seq_conflict",
                format!(
                    "reader {reader} already used seq {} for another card; send the tap under a new seq",
                    tap.seq
                ),
            )));
        }
        metrics::counter!("eldergate_duplicates_total", "source" => "tap").increment(1);
        return serde_json::from_str(&answer)
            .map_err(|e| OpError::Failed(JournalError::Write(e.to_string())));
    }
    let answer =
        |result: TapResult, name: Option<String>, price: i64, subsidy: i64, balance: i64| {
            Down::Display {
                v: 1,
                seq: tap.seq,
                result,
                name,
                price_fen: price,
                subsidy_fen: subsidy,
                payable_fen: price.saturating_sub(subsidy),
                balance_fen: balance,
            }
        };
    let holder = sqlx::query("SELECT resident_id, state FROM cards WHERE card_id = ?")
        .bind(&card)
        .fetch_optional(tx.conn())
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
            } else if !mac_holds(tx, registry, reader, tap, &card, at).await? {
                // A cloned card: refused, and neither the holder's name nor a balance shown.
                (answer(TapResult::Refused, None, 0, 0, 0), None)
            } else {
                settle(tx, registry, reader, tap, &card, &resident, name, at).await?
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
            .execute(tx.conn())
            .await?;
    if let Down::Display { result, .. } = &down {
        metrics::counter!("eldergate_taps_total", "result" => format!("{result:?}")).increment(1);
    }
    Ok(down)
}

#[allow(clippy::too_many_arguments)]
async fn settle(
    tx: &mut Tx,
    registry: &Registry,
    reader: &str,
    tap: &Tap,
    card: &str,
    resident: &str,
    name: Option<String>,
    at: Timestamp,
) -> Result<(Down, Option<i64>), JournalError> {
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
    if let Some(worker) = tap.delivered_by.as_deref() {
        if !registry.staff.contains_key(worker) {
            let detail = format!(
                "delivered_by {worker:?} is not a registered staff id; add the delivery worker under [[staff]]"
            );
            bad_tap(tx, reader, tap, at, "unknown_staff", &detail).await?;
            let balance = balance(tx.conn(), resident).await?;
            return Ok((refuse(TapResult::Refused, balance), None));
        }
    }
    // A second tap of the same card within the window is the same meal — unless it was voided
    // since (then this tap is a new meal). The answer is today's: the meal's amounts and the
    // balance as it is now, never a stored balance from before a void or a top-up.
    let since = at
        .checked_sub(jiff::SignedDuration::from_secs(
            i64::try_from(*double_tap_s).unwrap_or(i64::MAX),
        ))
        .unwrap_or(at);
    if let Some(row) = sqlx::query(
        "SELECT m.id, m.price_fen, m.subsidy_fen, m.payable_fen FROM taps t JOIN meals m ON m.id = t.meal_id
         WHERE t.card_id = ? AND t.received_at >= ? AND m.voided_by IS NULL ORDER BY t.id DESC LIMIT 1",
    )
    .bind(card)
    .bind(format_ts(since))
    .fetch_optional(tx.conn())
    .await?
    {
        let meal_id: i64 = row.try_get(0)?;
        let down = Down::Display {
            v: 1,
            seq: tap.seq,
            result: TapResult::Paid,
            name: name.clone(),
            price_fen: row.try_get(1)?,
            subsidy_fen: row.try_get(2)?,
            payable_fen: row.try_get(3)?,
            balance_fen: balance(tx.conn(), resident).await?,
        };
        metrics::counter!("eldergate_double_taps_total").increment(1);
        return Ok((down, Some(meal_id)));
    }
    let tz = jiff::tz::TimeZone::get(&registry.time_zone)
        .map_err(|e| JournalError::Write(e.to_string()))?;
    let local = at.to_zoned(tz);
    let balance = balance(tx.conn(), resident).await?;
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
    // A night period that crossed midnight counts on the date it started on.
    let meal = rules
        .meal_at(local.date(), local.time())
        .map(|(p, on)| (p.name.clone(), on));
    let Some((period_name, meal_date)) = meal else {
        return Ok((refuse(TapResult::OutsideMealPeriod, balance), None));
    };
    let date = meal_date.to_string();
    let row = sqlx::query(
            "SELECT COALESCE(SUM(subsidy_fen), 0), COALESCE(SUM(CASE WHEN period = ? AND subsidy_fen > 0 THEN 1 ELSE 0 END), 0)
             FROM meals WHERE resident_id = ? AND local_date = ? AND voided_by IS NULL",
        )
        .bind(&period_name)
        .bind(resident)
        .bind(&date)
        .fetch_one(tx.conn())
        .await?;
    let today = Today {
        subsidy_fen: row.try_get(0)?,
        subsidized_in_period: u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX),
    };
    let quote = match rules.quote(local.date(), local.time(), &facts, tap.price_fen, today) {
        Ok(q) => q,
        Err(QuoteError::OutsideMealPeriod) => {
            return Ok((refuse(TapResult::OutsideMealPeriod, balance), None))
        }
        Err(QuoteError::NoPrice(_)) => return Ok((refuse(TapResult::NoPrice, balance), None)),
        // A price out of range is a mistake at the counter or a broken reader: refused (the
        // reader shows "please see staff"), never computed.
        Err(e) => {
            bad_tap(tx, reader, tap, at, e.reason(), &e.to_string()).await?;
            return Ok((refuse(TapResult::Refused, balance), None));
        }
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
    let applied =
        serde_json::to_string(&quote.applied).map_err(|e| JournalError::Write(e.to_string()))?;
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
        .fetch_one(tx.conn())
        .await?
        .try_get(0)?;
    if quote.payable_fen > 0 {
        sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, meal_id, at) VALUES (?, 'charge', ?, ?, ?)")
                .bind(resident)
                .bind(-quote.payable_fen)
                .bind(meal_id)
                .bind(format_ts(at))
                .execute(tx.conn())
                .await?;
    }
    let body = serde_json::json!({
        "meal_id": meal_id, "resident_id": resident, "card_id": card, "local_date": date,
        "period": quote.period, "price_fen": quote.price_fen, "subsidy_fen": quote.subsidy_fen,
        "payable_fen": quote.payable_fen, "applied": quote.applied, "delivered_by": tap.delivered_by,
    });
    tx.append(NewEvent::new("meal_settled", at, body.to_string()).device(reader));
    let down = Down::Display {
        v: 1,
        seq: tap.seq,
        result: TapResult::Paid,
        name,
        price_fen: quote.price_fen,
        subsidy_fen: quote.subsidy_fen,
        payable_fen: quote.payable_fen,
        // payable ≤ balance here, both within i64: cannot overflow.
        balance_fen: balance.saturating_sub(quote.payable_fen),
    };
    Ok((down, Some(meal_id)))
}

/// Whether the tap's card MAC (when the reader sent one) holds: a mismatch is kept like bad input
/// (`card_mac_mismatch`: a cloned card or a broken reader); a MAC this gateway cannot check (no
/// site secret) is counted and settled.
async fn mac_holds(
    tx: &mut Tx,
    registry: &Registry,
    reader: &str,
    tap: &Tap,
    card: &str,
    at: Timestamp,
) -> Result<bool, JournalError> {
    let check = super::mac::check(
        registry.card_mac.as_ref(),
        reader,
        tap.seq,
        card,
        tap.mac.as_deref(),
    );
    metrics::counter!("eldergate_card_macs_total", "check" => format!("{check:?}")).increment(1);
    match check {
        super::mac::MacCheck::Mismatch => {
            let detail = format!(
                "the card MAC does not match card {card}: a cloned card or a reader with the wrong key; take the card and check it"
            );
            bad_tap(tx, reader, tap, at, "card_mac_mismatch", &detail).await?;
            Ok(false)
        }
        super::mac::MacCheck::Unchecked => {
            tracing::warn!(
                reader,
                "a reader sends card MACs but canteen.card_mac_secret_file is not set: not checked"
            );
            Ok(true)
        }
        super::mac::MacCheck::Absent | super::mac::MacCheck::Valid => Ok(true),
    }
}

/// Keeps bad input in a tap that is answered `refused`: a counter, a log line (no names) and a
/// dead-letter row in the same transaction as the tap's answer.
async fn bad_tap(
    tx: &mut Tx,
    reader: &str,
    tap: &Tap,
    at: Timestamp,
    reason: &'static str,
    detail: &str,
) -> Result<(), JournalError> {
    metrics::counter!("eldergate_rejected_total", "reason" => reason).increment(1);
    tracing::warn!(
        reader,
        seq = tap.seq,
        reason,
        detail,
        "tap refused; answered and kept as a dead letter"
    );
    let payload = serde_json::to_vec(tap).map_err(|e| JournalError::Write(e.to_string()))?;
    sqlx::query(
        "INSERT INTO dead_letters (received_at, source, reason, detail, payload, payload_len)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(format_ts(at))
    .bind(format!("tap/{reader}"))
    .bind(reason)
    .bind(detail)
    .bind(&payload)
    .bind(i64::try_from(payload.len()).unwrap_or(i64::MAX))
    .execute(tx.conn())
    .await?;
    Ok(())
}
