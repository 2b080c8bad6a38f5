//! A resident's target range (a doctor's): set or cleared by staff, with who and why, kept
//! append-only in `vital_targets` and journaled as a `vital_target_set` event (forwarded).
//!
//! Who may: staff whose role is `admin`, `duty` or `grid_worker` (the people who take a
//! doctor's instruction in the community; `Role::may_set_vital_targets`); a manager (read-only)
//! and a canteen operator may not. The check is here, in the operation, given the staff id
//! (HTTP takes it from the session or token).

use super::ops::{parse_priority, priority_name};
use super::rules::{parse_bound, Quantity};
use crate::journal::{format_ts, Lane, NewEvent, OpError, Operation, Refusal, Tx};
use crate::registry::Registry;
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest reason kept.
pub const MAX_REASON: usize = 500;

/// A target range as asked for (HTTP body), values as decimals in the canonical unit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRequest {
    /// `systolic`, `diastolic`, `glucose`, `spo2`, `temperature`, `pulse`.
    pub quantity: String,
    /// Lowest value in range, e.g. `"100"`.
    #[serde(default)]
    pub min: Option<String>,
    /// Highest value in range, e.g. `"150"`.
    #[serde(default)]
    pub max: Option<String>,
    /// Priority of an alert outside the range: `medium` (default) or `low`, or `high`.
    #[serde(default)]
    pub priority: Option<String>,
    /// Why (the doctor's instruction); required.
    pub reason: String,
    /// True: remove the target (the community's thresholds apply again).
    #[serde(default)]
    pub clear: bool,
}

/// Bulk lane: sets (or clears) a resident's target range for one quantity.
#[derive(Debug, Clone)]
pub struct SetTarget {
    /// Resident id.
    pub resident: String,
    /// The request.
    pub request: TargetRequest,
    /// Staff id (the session's or the token's; a body's `by` only with `act_as`).
    pub by: String,
}

/// What was stored.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSet {
    /// Row id.
    pub id: i64,
    /// Resident.
    pub resident_id: String,
    /// Quantity.
    pub quantity: String,
    /// Canonical min.
    pub min: Option<i64>,
    /// Canonical max.
    pub max: Option<i64>,
    /// Priority.
    pub priority: String,
    /// Who.
    pub set_by: String,
    /// Why.
    pub reason: String,
    /// Cleared?
    pub cleared: bool,
}

fn invalid(reason: &'static str, m: impl Into<String>) -> OpError {
    OpError::Refused(Refusal::invalid(reason, m))
}

impl Operation for SetTarget {
    type Answer = TargetSet;
    const NAME: &'static str = "set_vital_target";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<TargetSet, OpError>> {
        Box::pin(async move {
            let registry = tx.ctx::<Registry>()?;
            let Some(staff) = registry.staff.get(&self.by) else {
                return Err(invalid(
                    "unknown_staff",
                    format!("{:?} is not a registered staff id", self.by),
                ));
            };
            if !crate::roles::Role::parse(&staff.role).may_set_vital_targets() {
                return Err(OpError::Refused(Refusal::forbidden(
                    "not_permitted",
                    format!(
                        "staff {} ({}) may not set target ranges; roles that may: admin, duty, grid_worker",
                        self.by, staff.role,
                    ),
                )));
            }
            if registry.residents.get(&self.resident).is_none() {
                return Err(OpError::Refused(Refusal::not_found(
                    "unknown_resident",
                    format!("resident {} is not on the roster", self.resident),
                )));
            }
            let r = &self.request;
            let Some(q) = Quantity::parse(&r.quantity) else {
                return Err(invalid("malformed", format!("quantity {:?} is not one of systolic, diastolic, glucose, spo2, temperature, pulse", r.quantity.chars().take(32).collect::<String>())));
            };
            let reason = r.reason.trim();
            if reason.is_empty() || reason.chars().count() > MAX_REASON {
                return Err(invalid("malformed", format!("a reason (1–{MAX_REASON} characters) is required: whose instruction, and why")));
            }
            let priority = match r.priority.as_deref() {
                None => eldergate_protocol::payload::Priority::Medium,
                Some(p) => parse_priority(p)
                    .ok_or_else(|| invalid("malformed", "priority is high, medium or low"))?,
            };
            let bound = |v: &Option<String>| -> Result<Option<i64>, OpError> {
                match v {
                    None => Ok(None),
                    Some(s) => parse_bound(q, s)
                        .map(Some)
                        .map_err(|m| invalid("malformed", m)),
                }
            };
            let (min, max) = (bound(&r.min)?, bound(&r.max)?);
            if !r.clear {
                if min.is_none() && max.is_none() {
                    return Err(invalid(
                        "malformed",
                        "give min, max or both (or clear = true)",
                    ));
                }
                let m = q.measure();
                for v in [min, max].into_iter().flatten() {
                    let probe = super::units::Measurement {
                        measure: m,
                        v1: v,
                        v2: (m == eldergate_protocol::payload::Measure::BloodPressure)
                            .then_some(if q == Quantity::Diastolic { v } else { 20 }),
                    };
                    let ok = match q {
                        Quantity::Diastolic => (20..=200).contains(&v),
                        _ => super::units::check(probe).is_ok(),
                    };
                    if !ok {
                        return Err(invalid(
                            "implausible",
                            format!(
                                "{} {} is outside what a person can have",
                                q.as_str(),
                                super::units::show(m, v)
                            ),
                        ));
                    }
                }
                if let (Some(a), Some(b)) = (min, max) {
                    if a >= b {
                        return Err(invalid("malformed", "min must be below max"));
                    }
                }
            }
            let now = Timestamp::now();
            let id: i64 = sqlx::query("INSERT INTO vital_targets (resident_id, quantity, min_value, max_value, priority, set_by, reason, set_at, cleared) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id")
                .bind(&self.resident)
                .bind(q.as_str())
                .bind(min)
                .bind(max)
                .bind(priority_name(priority))
                .bind(&self.by)
                .bind(reason)
                .bind(format_ts(now))
                .bind(i64::from(r.clear))
                .fetch_one(tx.conn())
                .await?
                .try_get(0)?;
            let set = TargetSet {
                id,
                resident_id: self.resident.clone(),
                quantity: q.as_str().into(),
                min,
                max,
                priority: priority_name(priority).into(),
                set_by: self.by.clone(),
                reason: reason.to_string(),
                cleared: r.clear,
            };
            let body = serde_json::to_string(&set)
                .map_err(|e| crate::journal::JournalError::Write(e.to_string()))?;
            tx.append(NewEvent::new("vital_target_set", now, body));
            Ok(set)
        })
    }
}

use sqlx::Row;
