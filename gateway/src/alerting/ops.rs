//! The alerting domain's operations on the journal: alarm-button events, staff actions,
//! escalation steps, supervision observations, and the audit records of notifications and
//! webhook deliveries. Each is applied by the writer inside its own savepoint; alert changes
//! are handed to the notifier (the [`AlertOutlet`]) only after COMMIT.

use super::book::{subject_key, AlertBook, NewAlert};
use super::{AlarmOutcome, Observation, StaffRefusal, Via};
use crate::journal::{
    format_ts, Context, Lane, NewEvent, OpError, Operation, Refusal, RefusalKind, Tx,
};
use eldergate_protocol::payload::{AlarmAction, AlertState, Priority, StaffAlert, StaffVerb};
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use tokio::sync::mpsc;

/// Clock skew beyond which a device's clock is reported (never a reason to drop anything).
const SKEW_WARN_MS: i64 = 60_000;

/// Where committed alert changes go (the notifier), provided to the writer at start.
pub struct AlertOutlet(pub mpsc::UnboundedSender<StaffAlert>);

fn publish(ctx: &Context, alerts: &[StaffAlert]) {
    if let Some(out) = ctx.get::<AlertOutlet>() {
        for a in alerts {
            let _ = out.0.send(a.clone());
        }
    }
}

/// Alarm lane: an alarm-button event from a registered alarm button.
#[derive(Debug, Clone)]
pub struct AlarmEvent {
    /// Device id.
    pub device: String,
    /// The device's sequence number.
    pub device_seq: u32,
    /// Press, cancel or check-in.
    pub action: AlarmAction,
    /// The device's clock, when it sent a usable one.
    pub device_time: Option<Timestamp>,
    /// What was wrong with the message's optional fields (kept in the event, never a reason to
    /// drop an alarm), e.g. "ts out of range".
    pub anomaly: Option<String>,
    /// Gateway receive time.
    pub received_at: Timestamp,
}

/// An alarm event's `body` in the journal: the keys in alphabetical order, nulls written, as
/// the `json!` map it replaces wrote them (one allocation instead of a map of values).
#[derive(serde::Serialize)]
struct AlarmBody<'a> {
    action: AlarmAction,
    alert_state: Option<AlertState>,
    anomaly: Option<&'a str>,
    device_ts: Option<i64>,
    resident_id: Option<&'a str>,
    reused_seq_of: Option<i64>,
}

fn action_kind(a: AlarmAction) -> &'static str {
    match a {
        AlarmAction::Press => "alarm_press",
        AlarmAction::Cancel => "alarm_cancel",
        AlarmAction::Checkin => "checkin",
    }
}

impl Operation for AlarmEvent {
    type Answer = AlarmOutcome;
    const NAME: &'static str = "alarm_event";
    fn lane(&self) -> Lane {
        Lane::Alarm
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<AlarmOutcome, OpError>> {
        Box::pin(async move {
            let kind = action_kind(self.action);
            let mut conflict = None;
            if let Some(prev) = tx.recent(&self.device, self.device_seq).await? {
                if *prev.fingerprint == *kind {
                    metrics::counter!("eldergate_duplicates_total", "source" => "alarm")
                        .increment(1);
                    tracing::debug!(device = %self.device, device_seq = self.device_seq, seq = prev.seq, "duplicate alarm event; re-ack only");
                    return Ok(AlarmOutcome {
                        seq: prev.seq,
                        duplicate: true,
                        conflict: None,
                        alert: None,
                    });
                }
                // The same key with other content: a device that reset without keeping its
                // sequence numbers. Alarms first: act on it, and say so.
                metrics::counter!("eldergate_seq_conflicts_total", "source" => "alarm")
                    .increment(1);
                tracing::warn!(device = %self.device, device_seq = self.device_seq, earlier_seq = prev.seq, earlier = %prev.fingerprint, now = kind, "device sequence number reused with other content; acting on it (did the device reset without keeping its sequence numbers?)");
                conflict = Some(prev.seq);
            }
            if let Some(dt) = self.device_time {
                let skew = self.received_at.as_millisecond() - dt.as_millisecond();
                if skew.abs() > SKEW_WARN_MS {
                    metrics::counter!("eldergate_device_clock_skew_total").increment(1);
                    tracing::warn!(device = %self.device, skew_ms = skew, "device clock is off; keeping the event with the gateway's receive time");
                }
            }
            let (book, mut parts) = tx.split::<AlertBook>()?;
            let registry = book.registry();
            let device = self.device.as_str();
            let resident = registry.resident_of(device);
            let seq = parts.take_seq();
            let alert = match self.action {
                AlarmAction::Press => Some(
                    match book.open.get_mut(&subject_key(device, resident, "sos")) {
                        Some(open) => {
                            open.press_count += 1;
                            open.change = "joined".into();
                            sqlx::query("UPDATE alerts SET press_count = ? WHERE id = ?")
                                .bind(open.press_count)
                                .bind(open.alert_id)
                                .execute(&mut *parts.conn)
                                .await?;
                            open.clone()
                        }
                        None => {
                            let new = NewAlert {
                                kind: "sos",
                                priority: Priority::High,
                                device,
                                resident,
                                detail: None,
                            };
                            book.raise(&mut parts, new, seq, self.received_at).await?
                        }
                    },
                ),
                AlarmAction::Cancel => {
                    // A senior may cancel a press nobody has taken yet. Once staff acknowledged,
                    // the visit goes ahead: the cancel is recorded but the alert stays open.
                    let key = subject_key(device, resident, "sos");
                    match book.open.get(&key) {
                        Some(open) if open.state == AlertState::Raised => {
                            let mut a = open.clone();
                            a.state = AlertState::Cancelled;
                            a.change = "cancelled".into();
                            sqlx::query("UPDATE alerts SET state = 'cancelled' WHERE id = ?")
                                .bind(a.alert_id)
                                .execute(&mut *parts.conn)
                                .await?;
                            book.open.remove(&key);
                            Some(a)
                        }
                        _ => None,
                    }
                }
                AlarmAction::Checkin => None,
            };
            let body = AlarmBody {
                action: self.action,
                alert_state: alert.as_ref().map(|a| a.state),
                anomaly: self.anomaly.as_deref(),
                device_ts: self.device_time.map(|t| t.as_millisecond()),
                resident_id: resident,
                reused_seq_of: conflict,
            };
            parts.append_at(
                seq,
                NewEvent {
                    kind: kind.to_string(),
                    device_id: Some(device.to_string()),
                    device_seq: Some(self.device_seq),
                    alert_id: alert.as_ref().map(|a| a.alert_id),
                    received_at: self.received_at,
                    device_time: self.device_time,
                    // Plain fields and strings: serialising cannot fail.
                    body: serde_json::to_string(&body).unwrap_or_else(|_| "{}".into()),
                },
            );
            if let Some(a) = alert.as_ref().filter(|a| a.change == "cancelled") {
                book.alert_event(&mut parts, a, self.received_at)?;
            }
            tx.remember(&self.device, self.device_seq, seq, kind);
            Ok(AlarmOutcome {
                seq,
                duplicate: false,
                conflict,
                alert,
            })
        })
    }
    fn after_commit(&mut self, answer: &mut AlarmOutcome, ctx: &Context) {
        if let Some(a) = &answer.alert {
            publish(ctx, std::slice::from_ref(a));
        }
    }
}

/// Alarm lane: a staff member acknowledges or resolves an alert.
#[derive(Debug, Clone)]
pub struct StaffAction {
    /// Alert id.
    pub alert_id: i64,
    /// What to do.
    pub verb: StaffVerb,
    /// Staff id (from the session or the broker identity, never trusted from a body).
    pub by: String,
    /// Note.
    pub note: Option<String>,
    /// Channel.
    pub via: Via,
}

impl From<StaffRefusal> for Refusal {
    fn from(r: StaffRefusal) -> Refusal {
        let (kind, reason) = match &r {
            StaffRefusal::UnknownAlert(_) => (RefusalKind::NotFound, "unknown_alert"),
            StaffRefusal::UnknownStaff(_) => (RefusalKind::Invalid, "unknown_staff"),
            StaffRefusal::NotAllowed { .. } => (RefusalKind::Forbidden, "role_not_allowed"),
            StaffRefusal::Closed { .. } => (RefusalKind::Conflict, "alert_closed"),
            StaffRefusal::AlreadyAcknowledged { .. } => {
                (RefusalKind::Conflict, "already_acknowledged")
            }
        };
        Refusal::new(kind, reason, r.to_string())
    }
}

impl Operation for StaffAction {
    type Answer = StaffAlert;
    const NAME: &'static str = "staff_action";
    fn lane(&self) -> Lane {
        Lane::Alarm
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<StaffAlert, OpError>> {
        Box::pin(async move {
            let registry = tx.ctx::<crate::registry::Registry>()?;
            if let Some(role) = crate::roles::role_of(&registry, &self.by) {
                if !role.may_act_on_alerts() {
                    return Err(OpError::Refused(
                        StaffRefusal::NotAllowed {
                            by: self.by.clone(),
                            role: role.as_str(),
                        }
                        .into(),
                    ));
                }
            }
            let (book, mut parts) = tx.split::<AlertBook>()?;
            let note = self.note.clone();
            match book
                .apply_staff(
                    &mut parts,
                    self.alert_id,
                    self.verb,
                    &self.by,
                    note,
                    self.via,
                )
                .await?
            {
                Ok(a) => Ok(a),
                Err(r) => Err(OpError::Refused(r.into())),
            }
        })
    }
    fn after_commit(&mut self, answer: &mut StaffAlert, ctx: &Context) {
        if answer.change != "current" {
            publish(ctx, std::slice::from_ref(answer));
        }
    }
}

/// Alarm lane: fire escalation step `step` of an alert if it is still unacknowledged.
#[derive(Debug, Clone)]
pub struct Escalate {
    /// Alert id.
    pub alert_id: i64,
    /// Ladder step (0-based; past the last step = repeats).
    pub step: u32,
}

impl Operation for Escalate {
    type Answer = Option<StaffAlert>;
    const NAME: &'static str = "escalate";
    fn lane(&self) -> Lane {
        Lane::Alarm
    }
    fn apply<'a>(
        &'a mut self,
        tx: &'a mut Tx,
    ) -> BoxFuture<'a, Result<Option<StaffAlert>, OpError>> {
        Box::pin(async move {
            let (book, mut parts) = tx.split::<AlertBook>()?;
            Ok(book.escalate(&mut parts, self.alert_id, self.step).await?)
        })
    }
    fn after_commit(&mut self, answer: &mut Option<StaffAlert>, ctx: &Context) {
        if let Some(a) = answer {
            publish(ctx, std::slice::from_ref(a));
        }
    }
}

/// Alarm lane: something supervision or the check-in job observed.
#[derive(Debug, Clone)]
pub struct Observe(pub Observation);

impl Operation for Observe {
    type Answer = Vec<StaffAlert>;
    const NAME: &'static str = "observe";
    fn lane(&self) -> Lane {
        Lane::Alarm
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<Vec<StaffAlert>, OpError>> {
        Box::pin(async move {
            let (book, mut parts) = tx.split::<AlertBook>()?;
            Ok(book.observe(&mut parts, &self.0).await?)
        })
    }
    fn after_commit(&mut self, answer: &mut Vec<StaffAlert>, ctx: &Context) {
        publish(ctx, answer);
    }
}

/// Bulk lane: the notifier handed an alert change to the broker for these people (audit): an
/// `alert_notified` event, and the alert's `notified_at` the first time.
#[derive(Debug, Clone)]
pub struct Notified {
    /// Alert id.
    pub alert_id: i64,
    /// Ladder step.
    pub step: u32,
    /// Staff ids addressed.
    pub to: Vec<String>,
    /// When.
    pub at: Timestamp,
}

impl Operation for Notified {
    type Answer = ();
    const NAME: &'static str = "notified";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            sqlx::query("UPDATE alerts SET notified_at = COALESCE(notified_at, ?) WHERE id = ?")
                .bind(format_ts(self.at))
                .bind(self.alert_id)
                .execute(tx.conn())
                .await?;
            let body = serde_json::json!({ "step": self.step, "to": self.to, "via": "mqtt" });
            tx.append(
                NewEvent::new("alert_notified", self.at, body.to_string()).alert(self.alert_id),
            );
            Ok(())
        })
    }
}

/// Bulk lane: a webhook delivery attempt ended (`error` None = delivered).
#[derive(Debug, Clone)]
pub struct WebhookResult {
    /// webhook_outbox id.
    pub id: i64,
    /// Why it failed.
    pub error: Option<String>,
}

impl Operation for WebhookResult {
    type Answer = ();
    const NAME: &'static str = "webhook_result";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?,
                   delivered_at = CASE WHEN ? IS NULL THEN ? ELSE NULL END WHERE id = ?",
            )
            .bind(&self.error)
            .bind(&self.error)
            .bind(format_ts(Timestamp::now()))
            .bind(self.id)
            .execute(tx.conn())
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_body_is_written_as_the_json_map_wrote_it() {
        for (state, anomaly, ts, resident, reused) in [
            (None, None, None, None, None),
            (
                Some(AlertState::Raised),
                Some("ts out of range \"x\""),
                Some(1_763_900_000_000),
                Some("R00001"),
                Some(7),
            ),
        ] {
            let body = AlarmBody {
                action: AlarmAction::Press,
                alert_state: state,
                anomaly,
                device_ts: ts,
                resident_id: resident,
                reused_seq_of: reused,
            };
            let map = serde_json::json!({
                "action": AlarmAction::Press,
                "device_ts": ts,
                "anomaly": anomaly,
                "reused_seq_of": reused,
                "resident_id": resident,
                "alert_state": state,
            });
            assert_eq!(serde_json::to_string(&body).unwrap(), map.to_string());
        }
    }
}
