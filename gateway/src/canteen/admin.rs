//! Staff operations on the canteen's money and cards: top-ups, lost cards, binding cards,
//! voiding meals (refund through the ledger), cash payouts of a balance. Every one is an event
//! and a ledger row where money moves; refusals are typed (404 unknown, 409 state, 422 invalid).
//! Amounts are bounded by the rule file's `[limits]` (a top-up above `max_topup_fen` is 422, one
//! that would take the balance above `max_balance_fen` is 409), so no sum of ledger rows
//! overflows.

use super::rules::Limits;
use super::settle::{balance, card_key};
use crate::journal::{format_ts, JournalError, Lane, NewEvent, OpError, Operation, Refusal, Tx};
use crate::registry::Registry;
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use sqlx::Row;

/// A staff operation on cards or meals.
#[derive(Debug, Clone)]
pub enum CanteenOp {
    /// Report a card lost: further taps are refused.
    CardLost {
        /// Card UID.
        card: String,
    },
    /// Bind a (new) card to a resident.
    BindCard {
        /// Card UID.
        card: String,
        /// Resident id.
        resident: String,
    },
    /// Void a meal: the charge is refunded through a ledger row; the meal stays, marked.
    VoidMeal {
        /// Meal id.
        meal: i64,
        /// Why.
        reason: String,
    },
    /// Pay a resident's balance out in cash (e.g. they left the community): a negative `payout`
    /// ledger row, never more than the balance.
    PayOut {
        /// Resident id (on the roster or departed: anyone with ledger rows).
        resident: String,
        /// Fen; None = the whole balance.
        amount_fen: Option<i64>,
        /// Why (receipt number, "moved away" …).
        reason: String,
    },
    /// The resident is away or in hospital from now on: taps of their card are flagged on the
    /// day report (never refused). Any staff member may say so.
    Away {
        /// Resident id.
        resident: String,
        /// `away` or `hospital`.
        kind: String,
        /// What staff know (where, until when).
        note: Option<String>,
    },
    /// The resident is back: closes the open away / hospital status.
    Back {
        /// Resident id.
        resident: String,
    },
}

/// Bulk lane: staff top up a resident's balance; answers the new balance (fen).
#[derive(Debug, Clone)]
pub struct TopUp {
    /// Resident id.
    pub resident: String,
    /// Fen, positive.
    pub amount_fen: i64,
    /// Staff id.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
    /// How it was paid: one of [`PAYMENT_METHODS`] (None: not said, `unspecified` in reports).
    pub method: Option<String>,
}

/// How a top-up may be paid (the daily cash reconciliation adds them up per method).
pub const PAYMENT_METHODS: [&str; 5] = ["cash", "wechat", "alipay", "bank", "other"];

impl Operation for TopUp {
    type Answer = i64;
    const NAME: &'static str = "topup";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<i64, OpError>> {
        Box::pin(async move {
            let registry = tx.ctx::<Registry>()?;
            let reason = self.reason.as_deref();
            if let Some(r) = too_long("reason", reason) {
                return Err(OpError::Refused(r));
            }
            if let Some(m) = self.method.as_deref() {
                if !PAYMENT_METHODS.contains(&m) {
                    return Err(OpError::Refused(Refusal::invalid(
                        "bad_method",
                        format!("method {m:?} is not one of {}", PAYMENT_METHODS.join(", ")),
                    )));
                }
            }
            apply_topup(
                tx,
                &registry,
                &self.resident,
                self.amount_fen,
                (&self.by, self.method.as_deref()),
                reason,
            )
            .await?
            .map_err(OpError::Refused)
        })
    }
}

/// Bulk lane: a staff operation on cards or meals; answers a JSON summary.
#[derive(Debug, Clone)]
pub struct CanteenAdmin {
    /// What to do.
    pub op: CanteenOp,
    /// Staff id.
    pub by: String,
}

impl Operation for CanteenAdmin {
    type Answer = serde_json::Value;
    const NAME: &'static str = "canteen_admin";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(
        &'a mut self,
        tx: &'a mut Tx,
    ) -> BoxFuture<'a, Result<serde_json::Value, OpError>> {
        Box::pin(async move {
            let registry = tx.ctx::<Registry>()?;
            apply_canteen_op(tx, &registry, &self.op, &self.by)
                .await?
                .map_err(OpError::Refused)
        })
    }
}

/// Longest free text (a reason, a receipt number, an absence note) a canteen operation keeps, in
/// characters: it goes into the ledger, the day report and the central store, so an absurd one
/// is refused rather than stored.
pub const MAX_TEXT: usize = 500;

/// A refusal when `text` (the request's field `field`) is longer than [`MAX_TEXT`].
fn too_long(field: &'static str, text: Option<&str>) -> Option<Refusal> {
    let n = text?.chars().count();
    (n > MAX_TEXT).then(|| {
        Refusal::invalid(
            "text_too_long",
            format!("{field} has {n} characters; at most {MAX_TEXT} are kept"),
        )
    })
}

/// A top-up by staff: a positive ledger row. Returns the new balance.
async fn apply_topup(
    tx: &mut Tx,
    registry: &Registry,
    resident: &str,
    amount_fen: i64,
    (by, method): (&str, Option<&str>),
    reason: Option<&str>,
) -> Result<Result<i64, Refusal>, JournalError> {
    let limits = registry
        .canteen
        .as_ref()
        .map(|(rules, _)| rules.limits)
        .unwrap_or_default();
    if amount_fen <= 0 {
        return Ok(Err(Refusal::invalid(
            "bad_amount",
            "amount_fen must be positive (fen, e.g. 10000 for ¥100)".to_string(),
        )));
    }
    if amount_fen > limits.max_topup_fen {
        return Ok(Err(Refusal::invalid(
            "topup_too_large",
            format!(
                "a top-up of {amount_fen} fen is above the limit of {} fen (limits.max_topup_fen in the canteen rules); split it or check the amount",
                limits.max_topup_fen
            ),
        )));
    }
    if !registry.residents.contains(resident) {
        return Ok(Err(Refusal::not_found(
            "unknown_resident",
            format!("resident {resident} is not in the roster"),
        )));
    }
    if let Err(r) = may_move_money(registry, by, "top up a balance") {
        return Ok(Err(r));
    }
    let before = balance(tx.conn(), resident).await?;
    let after = before
        .checked_add(amount_fen)
        .filter(|b| *b <= limits.max_balance_fen);
    let Some(after) = after else {
        return Ok(Err(balance_cap(resident, before, amount_fen, limits)));
    };
    let at = Timestamp::now();
    sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, staff_id, reason, at, method) VALUES (?, 'topup', ?, ?, ?, ?, ?)")
            .bind(resident)
            .bind(amount_fen)
            .bind(by)
            .bind(reason)
            .bind(format_ts(at))
            .bind(method)
            .execute(tx.conn())
            .await?;
    let body = serde_json::json!({ "resident_id": resident, "amount_fen": amount_fen, "by": by, "reason": reason, "method": method });
    tx.append(NewEvent::new("ledger_topup", at, body.to_string()));
    Ok(Ok(after))
}

/// `by` is a registered staff id (422 when not).
pub(crate) fn known_staff(registry: &Registry, by: &str) -> Result<(), Refusal> {
    if registry.staff.contains_key(by) {
        Ok(())
    } else {
        Err(Refusal::invalid(
            "unknown_staff",
            format!("{by:?} is not a registered staff id"),
        ))
    }
}

/// `by` is staff whose role may move money and bind cards
/// ([`Role::may_handle_canteen_money`](crate::roles::Role::may_handle_canteen_money); 422 unknown,
/// 403 another role).
pub(crate) fn may_move_money(registry: &Registry, by: &str, what: &str) -> Result<(), Refusal> {
    known_staff(registry, by)?;
    match registry.staff.get(by) {
        Some(s) if crate::roles::Role::parse(&s.role).may_handle_canteen_money() => Ok(()),
        Some(s) => Err(Refusal::forbidden(
            "role_not_allowed",
            format!(
                "staff {by} has the role {:?}; only a canteen_operator or an admin may {what}",
                s.role
            ),
        )),
        None => Err(Refusal::invalid(
            "unknown_staff",
            format!("{by:?} is not a registered staff id"),
        )),
    }
}

fn balance_cap(resident: &str, before: i64, amount_fen: i64, limits: Limits) -> Refusal {
    Refusal::conflict(
        "balance_cap",
        format!(
            "a top-up of {amount_fen} fen would take resident {resident}'s balance of {before} fen above the limit of {} fen (limits.max_balance_fen in the canteen rules)",
            limits.max_balance_fen
        ),
    )
}

/// Cards lost / bound, meals voided (refund through the ledger). Every operation is an event.
async fn apply_canteen_op(
    tx: &mut Tx,
    registry: &Registry,
    op: &CanteenOp,
    by: &str,
) -> Result<Result<serde_json::Value, Refusal>, JournalError> {
    let needs_money_role = match op {
        CanteenOp::CardLost { .. } | CanteenOp::Away { .. } | CanteenOp::Back { .. } => None,
        CanteenOp::BindCard { .. } => Some("bind a card"),
        CanteenOp::VoidMeal { .. } => Some("void a meal"),
        CanteenOp::PayOut { .. } => Some("pay a balance out"),
    };
    let allowed = match needs_money_role {
        Some(what) => may_move_money(registry, by, what),
        None => known_staff(registry, by),
    };
    if let Err(r) = allowed {
        return Ok(Err(r));
    }
    let text = match op {
        CanteenOp::VoidMeal { reason, .. } | CanteenOp::PayOut { reason, .. } => {
            too_long("reason", Some(reason))
        }
        CanteenOp::Away { note, .. } => too_long("reason", note.as_deref()),
        CanteenOp::CardLost { .. } | CanteenOp::BindCard { .. } | CanteenOp::Back { .. } => None,
    };
    if let Some(r) = text {
        return Ok(Err(r));
    }
    let at = Timestamp::now();
    let (kind, summary) = match op {
        CanteenOp::CardLost { card } => {
            let card = card_key(card);
            let r = sqlx::query("UPDATE cards SET state = 'lost', changed_at = ?, changed_by = ? WHERE card_id = ? AND state = 'active'")
                    .bind(format_ts(at))
                    .bind(by)
                    .bind(&card)
                    .execute(tx.conn())
                    .await?;
            if r.rows_affected() == 0 {
                return Ok(Err(Refusal::conflict(
                    "card_not_active",
                    format!("card {card} is not an active card"),
                )));
            }
            (
                "card_lost",
                serde_json::json!({ "card_id": card, "by": by }),
            )
        }
        CanteenOp::BindCard { card, resident } => {
            let card = card_key(card);
            if card.len() < 8 {
                return Ok(Err(Refusal::invalid(
                    "bad_card",
                    "card id must be at least 4 bytes of hex (8 digits)".to_string(),
                )));
            }
            if !registry.residents.contains(resident) {
                return Ok(Err(Refusal::not_found(
                    "unknown_resident",
                    format!("resident {resident} is not in the roster"),
                )));
            }
            let known = sqlx::query("SELECT resident_id, state FROM cards WHERE card_id = ?")
                .bind(&card)
                .fetch_optional(tx.conn())
                .await?;
            if let Some(row) = known {
                let (holder, state): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                return Ok(Err(Refusal::conflict(
                    "card_taken",
                    format!("card {card} is already {state} for resident {holder}"),
                )));
            }
            sqlx::query("INSERT INTO cards (card_id, resident_id, state, changed_at, changed_by) VALUES (?, ?, 'active', ?, ?)")
                    .bind(&card)
                    .bind(resident)
                    .bind(format_ts(at))
                    .bind(by)
                    .execute(tx.conn())
                    .await?;
            (
                "card_bound",
                serde_json::json!({ "card_id": card, "resident_id": resident, "by": by }),
            )
        }
        CanteenOp::VoidMeal { meal, reason } => {
            if reason.trim().is_empty() {
                return Ok(Err(Refusal::invalid(
                    "reason_required",
                    "a void needs a reason".to_string(),
                )));
            }
            let row =
                sqlx::query("SELECT resident_id, payable_fen, voided_by FROM meals WHERE id = ?")
                    .bind(meal)
                    .fetch_optional(tx.conn())
                    .await?;
            let Some(row) = row else {
                return Ok(Err(Refusal::not_found(
                    "unknown_meal",
                    format!("meal {meal} does not exist"),
                )));
            };
            let (resident, payable, voided): (String, i64, Option<String>) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if let Some(v) = voided {
                return Ok(Err(Refusal::conflict(
                    "already_voided",
                    format!("meal {meal} was already voided by {v}"),
                )));
            }
            // The refund is what was actually charged for this meal and not refunded yet, never
            // more than its payable: a refund cannot create money.
            let charged: i64 = sqlx::query(
                "SELECT COALESCE(-SUM(amount_fen), 0) FROM ledger WHERE meal_id = ? AND kind IN ('charge', 'refund')",
            )
            .bind(meal)
            .fetch_one(tx.conn())
            .await?
            .try_get(0)?;
            let payable = charged.clamp(0, payable.max(0));
            sqlx::query(
                "UPDATE meals SET voided_by = ?, voided_at = ?, void_reason = ? WHERE id = ?",
            )
            .bind(by)
            .bind(format_ts(at))
            .bind(reason)
            .bind(meal)
            .execute(tx.conn())
            .await?;
            if payable > 0 {
                sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, meal_id, staff_id, reason, at) VALUES (?, 'refund', ?, ?, ?, ?, ?)")
                        .bind(&resident)
                        .bind(payable)
                        .bind(meal)
                        .bind(by)
                        .bind(reason)
                        .bind(format_ts(at))
                        .execute(tx.conn())
                        .await?;
            }
            let balance = balance(tx.conn(), &resident).await?;
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
                return Ok(Err(Refusal::invalid(
                    "reason_required",
                    "a payout needs a reason (receipt number, why)".to_string(),
                )));
            }
            if amount_fen.is_some_and(|a| a <= 0) {
                return Ok(Err(Refusal::invalid(
                    "bad_amount",
                    "amount_fen must be positive (fen), or absent to pay out the whole balance"
                        .to_string(),
                )));
            }
            let balance = balance(tx.conn(), resident).await?;
            let amount = amount_fen.unwrap_or(balance);
            if amount <= 0 {
                return Ok(Err(Refusal::conflict(
                    "nothing_to_pay_out",
                    format!(
                        "nothing to pay out: resident {resident} has a balance of {balance} fen"
                    ),
                )));
            }
            if amount > balance {
                return Ok(Err(Refusal::conflict("beyond_balance", format!(
                        "cannot pay out {amount} fen: resident {resident} has a balance of {balance} fen"
                    ))));
            }
            sqlx::query("INSERT INTO ledger (resident_id, kind, amount_fen, staff_id, reason, at) VALUES (?, 'payout', ?, ?, ?, ?)")
                    .bind(resident)
                    .bind(-amount)
                    .bind(by)
                    .bind(reason)
                    .bind(format_ts(at))
                    .execute(tx.conn())
                    .await?;
            (
                "balance_paid_out",
                // 0 < amount ≤ balance: cannot overflow.
                serde_json::json!({ "resident_id": resident, "amount_fen": amount, "balance_fen": balance.saturating_sub(amount), "by": by, "reason": reason }),
            )
        }
        CanteenOp::Away {
            resident,
            kind,
            note,
        } => {
            match super::away::set_away(tx, registry, resident, kind, note.as_deref(), by, at)
                .await?
            {
                Ok(v) => ("resident_away", v),
                Err(r) => return Ok(Err(r)),
            }
        }
        CanteenOp::Back { resident } => match super::away::set_back(tx, resident, by, at).await? {
            Ok(v) => ("resident_back", v),
            Err(r) => return Ok(Err(r)),
        },
    };
    tx.append(NewEvent::new(kind, at, summary.to_string()));
    Ok(Ok(summary))
}
