//! The vitals domain's operations on the journal: a kiosk reading ([`RecordReading`]), a card
//! tapped on a kiosk ([`KioskTap`]) and a resident's target range ([`SetTarget`]).
//!
//! Invariants:
//! - Idempotent by (kiosk, kiosk seq) through `vital_inputs`: a retransmission gets the stored
//!   answer; the same seq with other content is a `seq_conflict` refusal (NAK 6), never another
//!   reading's answer.
//! - A reading belongs to the resident the kiosk names (when on the roster), else to the
//!   resident of the kiosk's open session (a card tap, until `session_s` or the next tap),
//!   else to nobody: it is kept as unassigned and answered so; never attached to the previous
//!   person.
//! - The reading, its judgement, the alerts it raised (through the alert book: one open alert
//!   per subject and kind) and its `vital_reading` event (forwarded to central) commit together;
//!   the kiosk's answer and the alerts leave only after COMMIT.
//! - A dangerous reading without a resident still raises its alert, on the kiosk as subject:
//!   someone at that kiosk needs staff.

use super::rules::{effective, judge, Finding, Judged, Quantity, Target};
use super::units::{measure_name, Measurement};
use super::Settings;
use crate::alerting::book::{subject_key, NewAlert};
use crate::alerting::{AlertBook, AlertOutlet};
use crate::journal::{
    format_ts, Context, JournalError, Lane, NewEvent, OpError, Operation, Refusal, Tx,
};
use crate::registry::{mask_name, Registry};
use eldergate_protocol::payload::{
    Arm, Down, Measure, Priority, ReadingContext, ReadingResult, StaffAlert,
};
use futures_util::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

/// A checked reading from a kiosk, whatever its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitalInput {
    /// Canonical value(s).
    pub measurement: Measurement,
    /// As sent, with its unit (`"98.6 degF"`), kept beside the canonical value.
    pub value_in: String,
    /// Glucose timing / blood-pressure position.
    pub context: Option<ReadingContext>,
    /// Blood pressure: which arm.
    pub arm: Option<Arm>,
    /// The resident the kiosk named, if any.
    pub resident: Option<String>,
    /// The device's measurement time.
    pub device_time: Option<Timestamp>,
}

/// Bulk lane: one reading from a health kiosk; answered after commit with what it shows.
#[derive(Debug, Clone)]
pub struct RecordReading {
    /// Kiosk id (a registered health kiosk).
    pub kiosk: String,
    /// The kiosk's seq.
    pub device_seq: u32,
    /// The reading.
    pub input: VitalInput,
    /// Gateway receive time.
    pub received_at: Timestamp,
    raised: Vec<StaffAlert>,
}

impl RecordReading {
    /// A reading to record.
    pub fn new(kiosk: String, device_seq: u32, input: VitalInput, received_at: Timestamp) -> Self {
        RecordReading {
            kiosk,
            device_seq,
            input,
            received_at,
            raised: Vec::new(),
        }
    }
}

fn context_name(c: ReadingContext) -> &'static str {
    match c {
        ReadingContext::Fasting => "fasting",
        ReadingContext::AfterMeal => "after_meal",
        ReadingContext::Random => "random",
        ReadingContext::Sitting => "sitting",
        ReadingContext::Standing => "standing",
        ReadingContext::Lying => "lying",
    }
}

fn arm_name(a: Arm) -> &'static str {
    match a {
        Arm::Left => "left",
        Arm::Right => "right",
    }
}

pub(crate) fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Medium => "medium",
        Priority::Low => "low",
    }
}

pub(crate) fn parse_priority(s: &str) -> Option<Priority> {
    Some(match s {
        "high" => Priority::High,
        "medium" => Priority::Medium,
        "low" => Priority::Low,
        _ => return None,
    })
}

/// The stored answer for (kiosk, seq) when its fingerprint matches; a conflict when it does not.
async fn earlier_answer(
    conn: &mut SqliteConnection,
    kiosk: &str,
    seq: u32,
    fingerprint: &str,
) -> Result<Option<Down>, OpError> {
    let Some(row) = sqlx::query(
        "SELECT fingerprint, answer FROM vital_inputs WHERE device_id = ? AND device_seq = ?",
    )
    .bind(kiosk)
    .bind(i64::from(seq))
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let earlier: String = row.try_get(0)?;
    if earlier != fingerprint {
        metrics::counter!("eldergate_seq_conflicts_total", "source" => "vitals").increment(1);
        return Err(OpError::Refused(Refusal::conflict(
            "seq_conflict",
            format!("kiosk {kiosk} already used seq {seq} for another reading or card; send it under a new seq"),
        )));
    }
    metrics::counter!("eldergate_duplicates_total", "source" => "vitals").increment(1);
    let answer: String = row.try_get(1)?;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| OpError::Failed(JournalError::Write(e.to_string())))
}

async fn keep_answer(
    conn: &mut SqliteConnection,
    kiosk: &str,
    seq: u32,
    fingerprint: &str,
    answer: &Down,
    at: Timestamp,
) -> Result<(), OpError> {
    let text = serde_json::to_string(answer).map_err(|e| JournalError::Write(e.to_string()))?;
    sqlx::query("INSERT INTO vital_inputs (device_id, device_seq, fingerprint, answer, received_at) VALUES (?, ?, ?, ?, ?)")
        .bind(kiosk)
        .bind(i64::from(seq))
        .bind(fingerprint)
        .bind(text)
        .bind(format_ts(at))
        .execute(conn)
        .await?;
    Ok(())
}

/// The target ranges in force for a resident (latest row per quantity, unless cleared).
pub async fn targets(
    conn: &mut SqliteConnection,
    resident: &str,
) -> Result<Vec<Target>, JournalError> {
    let rows = sqlx::query(
        "SELECT quantity, min_value, max_value, priority, set_by, reason, cleared FROM vital_targets t
         WHERE resident_id = ? AND id = (SELECT MAX(id) FROM vital_targets u WHERE u.resident_id = t.resident_id AND u.quantity = t.quantity)",
    )
    .bind(resident)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let cleared: i64 = r.try_get(6)?;
        let q: String = r.try_get(0)?;
        let p: String = r.try_get(3)?;
        let (Some(quantity), Some(priority)) = (Quantity::parse(&q), parse_priority(&p)) else {
            continue;
        };
        if cleared != 0 {
            continue;
        }
        out.push(Target {
            quantity,
            min: r.try_get(1)?,
            max: r.try_get(2)?,
            priority,
            set_by: r.try_get(4)?,
            reason: r.try_get(5)?,
        });
    }
    Ok(out)
}

fn ago(at: Timestamp, secs: i64) -> String {
    format_ts(
        at.checked_sub(SignedDuration::from_secs(secs))
            .unwrap_or(at),
    )
}

impl Operation for RecordReading {
    type Answer = Down;
    const NAME: &'static str = "record_reading";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn cost(&self) -> usize {
        4
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<Down, OpError>> {
        Box::pin(async move {
            self.raised.clear();
            let m = self.input.measurement;
            let fingerprint = format!(
                "reading:{}:{}:{}:{}",
                measure_name(m.measure),
                m.v1,
                m.v2.map(|v| v.to_string()).unwrap_or_default(),
                self.input.resident.as_deref().unwrap_or_default()
            );
            if let Some(a) =
                earlier_answer(tx.conn(), &self.kiosk, self.device_seq, &fingerprint).await?
            {
                return Ok(a);
            }
            let registry = tx.ctx::<Registry>()?;
            let settings = tx.ctx::<Settings>()?;
            let now = self.received_at;
            // Who it belongs to.
            let mut note = None;
            let (resident, session, how) = match self.input.resident.as_deref() {
                Some(r) if registry.residents.get(r).is_some() => {
                    (Some(r.to_string()), None, "named")
                }
                Some(r) => {
                    note = Some(format!("the kiosk named {r:?}, who is not on the roster"));
                    (None, None, "unassigned")
                }
                None => {
                    let row = sqlx::query("SELECT id, resident_id FROM vital_sessions WHERE kiosk = ? AND closed_at IS NULL AND expires_at > ? ORDER BY id DESC LIMIT 1")
                        .bind(&self.kiosk)
                        .bind(format_ts(now))
                        .fetch_optional(tx.conn())
                        .await?;
                    match row {
                        Some(r) => (
                            Some(r.try_get::<String, _>(1)?),
                            Some(r.try_get::<i64, _>(0)?),
                            "session",
                        ),
                        None => (None, None, "unassigned"),
                    }
                }
            };
            let (book, mut parts) = tx.split::<AlertBook>()?;
            let seq = parts.take_seq();
            let id: i64 = sqlx::query(
                "INSERT INTO vital_readings (seq, device_id, device_seq, resident_id, session_id, how, measure, v1, v2, value_in, context, arm, device_time, received_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(seq)
            .bind(&self.kiosk)
            .bind(i64::from(self.device_seq))
            .bind(&resident)
            .bind(session)
            .bind(how)
            .bind(measure_name(m.measure))
            .bind(m.v1)
            .bind(m.v2)
            .bind(&self.input.value_in)
            .bind(self.input.context.map(context_name))
            .bind(self.input.arm.map(arm_name))
            .bind(self.input.device_time.map(format_ts))
            .bind(format_ts(now))
            .fetch_one(&mut *parts.conn)
            .await?
            .try_get(0)?;
            // Judge: blood pressure on the mean of the window (this reading included).
            let targets = match resident.as_deref() {
                Some(r) => targets(&mut parts.conn, r).await?,
                None => Vec::new(),
            };
            let thresholds = effective(&settings.rules, &targets);
            let mut values = Vec::new();
            let mut judged = None;
            match m.measure {
                Measure::BloodPressure => {
                    let (n, s1, s2) = match resident.as_deref() {
                        Some(r) => {
                            let row = sqlx::query("SELECT COUNT(*), SUM(v1), SUM(v2) FROM vital_readings WHERE resident_id = ? AND measure = 'blood_pressure' AND received_at >= ?")
                                .bind(r)
                                .bind(ago(now, i64::try_from(settings.bp_window_s).unwrap_or(300)))
                                .fetch_one(&mut *parts.conn)
                                .await?;
                            (
                                row.try_get::<i64, _>(0)?,
                                row.try_get::<i64, _>(1)?,
                                row.try_get::<i64, _>(2)?,
                            )
                        }
                        None => (1, m.v1, m.v2.unwrap_or_default()),
                    };
                    values.push(Judged {
                        quantity: Quantity::Systolic,
                        sum: s1,
                        n,
                    });
                    values.push(Judged {
                        quantity: Quantity::Diastolic,
                        sum: s2,
                        n,
                    });
                    judged = Some((s1, s2, n));
                }
                Measure::Glucose => values.push(Judged {
                    quantity: Quantity::Glucose,
                    sum: m.v1,
                    n: 1,
                }),
                Measure::Spo2 => values.push(Judged {
                    quantity: Quantity::Spo2,
                    sum: m.v1,
                    n: 1,
                }),
                Measure::Temperature => values.push(Judged {
                    quantity: Quantity::Temperature,
                    sum: m.v1,
                    n: 1,
                }),
                Measure::Pulse => values.push(Judged {
                    quantity: Quantity::Pulse,
                    sum: m.v1,
                    n: 1,
                }),
                Measure::Weight => {}
            }
            let mut findings = judge(&thresholds, &values);
            if let Some(r) = resident.as_deref() {
                findings.extend(trends(&mut parts.conn, &settings, r, m, judged, id, now).await?);
            }
            // Alerts through the book: deduped per (subject, kind).
            let mut stored = Vec::new();
            for f in &findings {
                let new = NewAlert {
                    kind: f.kind,
                    priority: f.priority,
                    device: &self.kiosk,
                    resident: resident.as_deref(),
                    detail: Some(f.detail.clone()),
                };
                let alert = book.raise_once(&mut parts, new, now).await?;
                let alert_id = alert.as_ref().map(|a| a.alert_id).or_else(|| {
                    book.open
                        .get(&subject_key(&self.kiosk, resident.as_deref(), f.kind))
                        .map(|a| a.alert_id)
                });
                stored.push(serde_json::json!({
                    "kind": f.kind, "priority": priority_name(f.priority), "detail": f.detail, "alert_id": alert_id,
                }));
                if let Some(a) = alert {
                    self.raised.push(a);
                }
            }
            let findings_json = serde_json::Value::Array(stored).to_string();
            sqlx::query("UPDATE vital_readings SET judged_sum = ?, judged_sum2 = ?, judged_n = ?, findings = ? WHERE id = ?")
                .bind(judged.map(|j| j.0))
                .bind(judged.map(|j| j.1))
                .bind(judged.map(|j| j.2))
                .bind(&findings_json)
                .bind(id)
                .execute(&mut *parts.conn)
                .await?;
            let name = resident
                .as_deref()
                .and_then(|r| registry.residents.get(r))
                .map(|r| mask_name(&r.name));
            let result = if !findings.is_empty() {
                ReadingResult::SeeStaff
            } else if resident.is_some() {
                ReadingResult::Stored
            } else {
                ReadingResult::Unassigned
            };
            let body = serde_json::json!({
                "reading_id": id, "resident_id": resident, "how": how, "note": note,
                "measure": measure_name(m.measure), "v1": m.v1, "v2": m.v2,
                "unit": super::units::canonical_unit(m.measure).0, "value_in": self.input.value_in,
                "context": self.input.context.map(context_name), "arm": self.input.arm.map(arm_name),
                "findings": serde_json::from_str::<serde_json::Value>(&findings_json).unwrap_or_default(),
            });
            parts.append_at(
                seq,
                NewEvent {
                    kind: "vital_reading".into(),
                    device_id: Some(self.kiosk.clone()),
                    device_seq: Some(self.device_seq),
                    alert_id: None,
                    received_at: now,
                    device_time: self.input.device_time,
                    body: body.to_string(),
                },
            );
            let down = Down::Reading {
                v: 1,
                seq: self.device_seq,
                result,
                name,
            };
            keep_answer(
                &mut parts.conn,
                &self.kiosk,
                self.device_seq,
                &fingerprint,
                &down,
                now,
            )
            .await?;
            metrics::counter!("eldergate_vital_readings_total", "measure" => measure_name(m.measure), "how" => how).increment(1);
            Ok(down)
        })
    }
    fn after_commit(&mut self, _answer: &mut Down, ctx: &Context) {
        if let Some(out) = ctx.get::<AlertOutlet>() {
            for a in self.raised.drain(..) {
                let _ = out.0.send(a);
            }
        }
    }
}

/// Trend rules: weight loss over the weight window; days with a high blood-pressure mean.
async fn trends(
    conn: &mut SqliteConnection,
    settings: &Settings,
    resident: &str,
    m: Measurement,
    judged: Option<(i64, i64, i64)>,
    reading_id: i64,
    now: Timestamp,
) -> Result<Vec<Finding>, JournalError> {
    let t = &settings.rules.trends;
    let mut out = Vec::new();
    match m.measure {
        Measure::Weight => {
            let max: Option<i64> = sqlx::query("SELECT MAX(v1) FROM vital_readings WHERE resident_id = ? AND measure = 'weight' AND received_at >= ?")
                .bind(resident)
                .bind(ago(now, i64::from(t.weight_days) * 86_400))
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            if let Some(max) = max {
                // loss / max > pct / 100, in integers.
                if (max - m.v1) * 100 > i64::from(t.weight_loss_pct) * max {
                    out.push(Finding {
                        kind: "weight_loss",
                        priority: Priority::Medium,
                        detail: format!(
                            "weight {} kg, down from {} kg within {} days (more than {} %)",
                            super::units::show(Measure::Weight, m.v1),
                            super::units::show(Measure::Weight, max),
                            t.weight_days,
                            t.weight_loss_pct
                        ),
                    });
                }
            }
        }
        Measure::BloodPressure => {
            let Some((s1, s2, n)) = judged else {
                return Ok(out);
            };
            let high =
                |s1: i64, s2: i64, n: i64| s1 >= t.bp_systolic * n || s2 >= t.bp_diastolic * n;
            if !high(s1, s2, n) {
                return Ok(out);
            }
            let days: i64 = sqlx::query(
                "SELECT COUNT(DISTINCT substr(received_at, 1, 10)) FROM vital_readings
                 WHERE resident_id = ? AND measure = 'blood_pressure' AND received_at >= ?
                   AND ((judged_n > 0 AND (judged_sum >= ? * judged_n OR judged_sum2 >= ? * judged_n))
                        -- this reading: judged above, its row is updated after the trends
                        OR id = ?)",
            )
            .bind(resident)
            .bind(ago(now, i64::from(t.bp_days) * 86_400))
            .bind(t.bp_systolic)
            .bind(t.bp_diastolic)
            .bind(reading_id)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
            if days >= i64::from(t.bp_high_days) {
                out.push(Finding {
                    kind: "bp_followup",
                    priority: Priority::Medium,
                    detail: format!(
                        "blood pressure mean ≥ {}/{} on {days} days within {} days: please follow up (visit, doctor)",
                        t.bp_systolic, t.bp_diastolic, t.bp_days
                    ),
                });
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Bulk lane: a resident card tapped on a kiosk opens a session binding the kiosk's next
/// readings to the card's resident, for `session_s` or until the next tap on that kiosk.
#[derive(Debug, Clone)]
pub struct KioskTap {
    /// Kiosk id.
    pub kiosk: String,
    /// The kiosk's seq.
    pub device_seq: u32,
    /// Card id as sent.
    pub card: String,
    /// Gateway receive time.
    pub received_at: Timestamp,
}

impl Operation for KioskTap {
    type Answer = Down;
    const NAME: &'static str = "kiosk_tap";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<Down, OpError>> {
        Box::pin(async move {
            let card = crate::roster::card_key(&self.card);
            let fingerprint = format!("card:{card}");
            if let Some(a) =
                earlier_answer(tx.conn(), &self.kiosk, self.device_seq, &fingerprint).await?
            {
                return Ok(a);
            }
            let registry = tx.ctx::<Registry>()?;
            let settings = tx.ctx::<Settings>()?;
            let now = self.received_at;
            // Any tap ends the previous person's session, even an unknown card's.
            sqlx::query(
                "UPDATE vital_sessions SET closed_at = ? WHERE kiosk = ? AND closed_at IS NULL",
            )
            .bind(format_ts(now))
            .bind(&self.kiosk)
            .execute(tx.conn())
            .await?;
            let holder =
                sqlx::query("SELECT resident_id FROM cards WHERE card_id = ? AND state = 'active'")
                    .bind(&card)
                    .fetch_optional(tx.conn())
                    .await?;
            let resident = match holder {
                Some(r) => Some(r.try_get::<String, _>(0)?),
                None => None,
            }
            .filter(|r| registry.residents.get(r).is_some());
            let down = match resident {
                Some(r) => {
                    let until = now
                        .checked_add(SignedDuration::from_secs(
                            i64::try_from(settings.session_s).unwrap_or(300),
                        ))
                        .unwrap_or(now);
                    let id: i64 = sqlx::query("INSERT INTO vital_sessions (kiosk, resident_id, card_id, opened_at, expires_at) VALUES (?, ?, ?, ?, ?) RETURNING id")
                        .bind(&self.kiosk)
                        .bind(&r)
                        .bind(&card)
                        .bind(format_ts(now))
                        .bind(format_ts(until))
                        .fetch_one(tx.conn())
                        .await?
                        .try_get(0)?;
                    let body = serde_json::json!({"session_id": id, "resident_id": r, "card_id": card, "expires_at": format_ts(until)});
                    tx.append(
                        NewEvent::new("vital_session_opened", now, body.to_string())
                            .device(&self.kiosk),
                    );
                    Down::Reading {
                        v: 1,
                        seq: self.device_seq,
                        result: ReadingResult::SessionOpened,
                        name: registry.residents.get(&r).map(|x| mask_name(&x.name)),
                    }
                }
                None => Down::Reading {
                    v: 1,
                    seq: self.device_seq,
                    result: ReadingResult::UnknownCard,
                    name: None,
                },
            };
            keep_answer(
                tx.conn(),
                &self.kiosk,
                self.device_seq,
                &fingerprint,
                &down,
                now,
            )
            .await?;
            Ok(down)
        })
    }
}
