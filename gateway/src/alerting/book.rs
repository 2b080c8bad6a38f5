//! The alert book: the open alerts (the writer's in-memory state of this domain) and every alert
//! transition inside the writer's transaction — raising, joining, escalating, acknowledging,
//! resolving, cancelling — each journaled as an `alert_*` event (the audit trail: who, when, via
//! which channel, note) and, for every recipient with a webhook, a webhook_outbox row.
//!
//! Invariants: at most one open alert per (subject, kind), where subject is the resident (or the
//! device when it has none); every transition is a row in `events` in the same transaction as
//! the state change; the book is derivable from the `alerts` table (reloaded by the writer);
//! nothing here talks to the network.

use super::{Observation, StaffRefusal, Via};
use crate::journal::{format_ts, DomainState, JournalError, NewEvent, TxParts};
use crate::registry::{mask_name, Registry};
use eldergate_protocol::payload::{AlertState, Priority, StaffAction, StaffAlert, StaffVerb};
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;

/// The open alerts by (subject, kind).
pub struct AlertBook {
    registry: Arc<Registry>,
    pub(crate) open: HashMap<(String, String), StaffAlert>,
}

impl AlertBook {
    /// An empty book; the writer loads it when it is registered.
    pub fn new(registry: Arc<Registry>) -> AlertBook {
        AlertBook {
            registry,
            open: HashMap::new(),
        }
    }

    /// The alerts that are open now, by id (for republishing after a restart).
    pub fn open_alerts(&self) -> Vec<StaffAlert> {
        let mut v: Vec<_> = self.open.values().cloned().collect();
        v.sort_by_key(|a| a.alert_id);
        v
    }

    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}

impl DomainState for AlertBook {
    fn reload<'a>(
        &'a mut self,
        conn: &'a mut SqliteConnection,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            self.open.clear();
            let rows =
                sqlx::query("SELECT * FROM alerts WHERE state IN ('raised', 'acknowledged')")
                    .fetch_all(&mut *conn)
                    .await?;
            for row in rows {
                let alert = alert_from_row(&row, &self.registry)?;
                let subject: String = row.try_get("subject")?;
                self.open.insert((subject, alert.kind.clone()), alert);
            }
            Ok(())
        })
    }
}

/// What a new alert is about.
pub(crate) struct NewAlert<'a> {
    pub kind: &'static str,
    pub priority: Priority,
    pub device: &'a str,
    pub resident: Option<&'a str>,
    pub detail: Option<String>,
}

fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Medium => "medium",
        Priority::Low => "low",
    }
}

impl AlertBook {
    /// Raises a new alert (the caller has checked none is open for its subject and kind).
    pub(crate) async fn raise(
        &mut self,
        tx: &mut TxParts<'_>,
        new: NewAlert<'_>,
        cause_seq: i64,
        at: Timestamp,
    ) -> Result<StaffAlert, JournalError> {
        let location = self
            .registry
            .devices
            .get(new.device)
            .and_then(|d| d.location.clone());
        let subject = new.resident.unwrap_or(new.device).to_string();
        let id: i64 = sqlx::query(
            "INSERT INTO alerts (kind, subject, priority, device_id, resident_id, location, state, press_count, raised_seq, raised_at, detail)
             VALUES (?, ?, ?, ?, ?, ?, 'raised', ?, ?, ?, ?) RETURNING id",
        )
        .bind(new.kind)
        .bind(&subject)
        .bind(priority_str(new.priority))
        .bind(new.device)
        .bind(new.resident)
        .bind(&location)
        .bind(i64::from(new.kind == "sos"))
        .bind(cause_seq)
        .bind(format_ts(at))
        .bind(&new.detail)
        .fetch_one(&mut *tx.conn)
        .await?
        .try_get(0)?;
        let alert = StaffAlert {
            v: 1,
            alert_id: id,
            kind: new.kind.into(),
            priority: new.priority,
            state: AlertState::Raised,
            change: "raised".into(),
            device_id: new.device.to_string(),
            resident_id: new.resident.map(str::to_string),
            location,
            resident_name: masked_name(&self.registry, new.resident),
            detail: new.detail,
            step: 0,
            press_count: i64::from(new.kind == "sos"),
            raised_at: format_ts(at),
            notify: self.registry.recipients(new.priority, 0, new.resident),
            acknowledged: None,
            resolved: None,
        };
        metrics::counter!("eldergate_alerts_raised_total", "kind" => new.kind).increment(1);
        self.open
            .insert((subject, new.kind.to_string()), alert.clone());
        self.alert_event(tx, &alert, at)?;
        self.enqueue_webhooks(tx, &alert, at).await?;
        Ok(alert)
    }

    /// Journals an alert transition as an event (it is forwarded like any other).
    pub(crate) fn alert_event(
        &self,
        tx: &mut TxParts<'_>,
        alert: &StaffAlert,
        at: Timestamp,
    ) -> Result<(), JournalError> {
        // The ladder's length goes with every alert event, so the district can tell an alert
        // that reached the end of its ladder (central_pg/0003, `district_alarms_ladder_end`).
        let mut body =
            serde_json::to_value(alert).map_err(|e| JournalError::Write(e.to_string()))?;
        if let Some(map) = body.as_object_mut() {
            let steps = self.registry.ladder(alert.priority).steps.len();
            map.insert("ladder_steps".into(), steps.into());
        }
        let body = body.to_string();
        tx.append(
            NewEvent::new(format!("alert_{}", alert.change), at, body)
                .device(&alert.device_id)
                .alert(alert.alert_id),
        );
        Ok(())
    }

    /// One webhook_outbox row per recipient with a webhook, in this transaction.
    async fn enqueue_webhooks(
        &self,
        tx: &mut TxParts<'_>,
        alert: &StaffAlert,
        at: Timestamp,
    ) -> Result<(), JournalError> {
        if self.registry.webhooks.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_string(alert).map_err(|e| JournalError::Write(e.to_string()))?;
        let registry = self.registry.clone();
        for staff in &alert.notify {
            for url in registry.webhooks_for(staff) {
                sqlx::query("INSERT INTO webhook_outbox (created_at, alert_id, staff_id, url, body) VALUES (?, ?, ?, ?, ?)")
                    .bind(format_ts(at))
                    .bind(alert.alert_id)
                    .bind(staff)
                    .bind(url)
                    .bind(&body)
                    .execute(&mut *tx.conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Fires escalation step `step` of an alert if it is still unacknowledged and the step is
    /// later than the last one fired. Returns the alert when a step fired.
    pub(crate) async fn escalate(
        &mut self,
        tx: &mut TxParts<'_>,
        alert_id: i64,
        step: u32,
    ) -> Result<Option<StaffAlert>, JournalError> {
        let Some(key) = self
            .open
            .iter()
            .find(|(_, a)| a.alert_id == alert_id)
            .map(|(k, _)| k.clone())
        else {
            return Ok(None);
        };
        let registry = self.registry.clone();
        let Some(alert) = self.open.get_mut(&key) else {
            return Ok(None);
        };
        if alert.state != AlertState::Raised || step <= alert.step {
            return Ok(None);
        }
        alert.step = step;
        alert.change = "escalated".into();
        alert.notify =
            registry.recipients(alert.priority, step as usize, alert.resident_id.as_deref());
        let alert = alert.clone();
        sqlx::query("UPDATE alerts SET escalation_step = ? WHERE id = ?")
            .bind(i64::from(step))
            .bind(alert_id)
            .execute(&mut *tx.conn)
            .await?;
        let now = Timestamp::now();
        metrics::counter!("eldergate_escalations_total").increment(1);
        self.alert_event(tx, &alert, now)?;
        self.enqueue_webhooks(tx, &alert, now).await?;
        Ok(Some(alert))
    }

    /// Applies what supervision or the check-in job observed. Returns the alerts it changed.
    pub(crate) async fn observe(
        &mut self,
        tx: &mut TxParts<'_>,
        obs: &Observation,
    ) -> Result<Vec<StaffAlert>, JournalError> {
        let now = Timestamp::now();
        let registry = self.registry.clone();
        let mut changed = Vec::new();
        match obs {
            Observation::DeviceOffline { device, detail } => {
                let new = NewAlert {
                    kind: "device_offline",
                    priority: Priority::Medium,
                    device,
                    resident: registry.resident_of(device),
                    detail: Some(detail.clone()),
                };
                changed.extend(self.raise_once(tx, new, now).await?);
            }
            Observation::LowBattery { device, pct } => {
                let new = NewAlert {
                    kind: "low_battery",
                    priority: Priority::Low,
                    device,
                    resident: registry.resident_of(device),
                    detail: Some(format!("battery {pct}%")),
                };
                changed.extend(self.raise_once(tx, new, now).await?);
            }
            Observation::DeviceOnline { device, detail } => {
                changed.extend(
                    self.auto_resolve(
                        tx,
                        device,
                        registry.resident_of(device),
                        "device_offline",
                        detail,
                        now,
                    )
                    .await?,
                );
            }
            Observation::BatteryOk { device, pct } => {
                changed.extend(
                    self.auto_resolve(
                        tx,
                        device,
                        registry.resident_of(device),
                        "low_battery",
                        &format!("battery back to {pct}%"),
                        now,
                    )
                    .await?,
                );
            }
            Observation::DiskLow { gateway, detail } => {
                let new = NewAlert {
                    kind: "disk_low",
                    priority: Priority::High,
                    device: gateway,
                    resident: None,
                    detail: Some(detail.clone()),
                };
                changed.extend(self.raise_once(tx, new, now).await?);
            }
            Observation::DiskOk { gateway, detail } => {
                changed.extend(
                    self.auto_resolve(tx, gateway, None, "disk_low", detail, now)
                        .await?,
                );
            }
            Observation::JournalReplaced { path } => {
                let detail = format!(
                    "the journal was corrupt and was set aside as {path}; a new journal started and alarms are taken. \
                     Alerts that were open and events not yet at the central store are in the old file: \
                     copy it off the gateway and follow docs/adr/0007-journal-identity.md"
                );
                changed.extend(
                    self.raise_once(
                        tx,
                        gateway_alert("journal_replaced", &registry, detail),
                        now,
                    )
                    .await?,
                );
            }
            Observation::JournalCorrupt { detail } => {
                let detail = format!(
                    "the journal's integrity check found corruption ({detail}); alarms are still taken. \
                     Restart the gateway soon: the start sets the journal aside and begins a new one (docs/adr/0007)"
                );
                changed.extend(
                    self.raise_once(tx, gateway_alert("journal_corrupt", &registry, detail), now)
                        .await?,
                );
            }
            Observation::MissedCheckins {
                local_date,
                residents,
            } => {
                for r in residents {
                    let device = registry
                        .devices
                        .values()
                        .find(|d| d.resident_id.as_deref() == Some(r.as_str()))
                        .map(|d| d.id.clone())
                        .unwrap_or_else(|| r.clone());
                    let detail = format!(
                        "no check-in or activity on {local_date} by {}; please visit",
                        registry.checkin.deadline
                    );
                    let new = NewAlert {
                        kind: "missed_checkin",
                        priority: Priority::Medium,
                        device: &device,
                        resident: Some(r),
                        detail: Some(detail),
                    };
                    changed.extend(self.raise_once(tx, new, now).await?);
                }
                sqlx::query("INSERT OR IGNORE INTO checkin_runs (local_date, ran_at, missed) VALUES (?, ?, ?)")
                    .bind(local_date)
                    .bind(format_ts(now))
                    .bind(residents.len() as i64)
                    .execute(&mut *tx.conn)
                    .await?;
            }
        }
        Ok(changed)
    }

    /// Raises unless one of the same kind is already open for the subject (dedupe).
    pub(crate) async fn raise_once(
        &mut self,
        tx: &mut TxParts<'_>,
        new: NewAlert<'_>,
        at: Timestamp,
    ) -> Result<Option<StaffAlert>, JournalError> {
        if self
            .open
            .contains_key(&subject_key(new.device, new.resident, new.kind))
        {
            return Ok(None);
        }
        let seq = tx.peek_seq();
        self.raise(tx, new, seq, at).await.map(Some)
    }

    /// Resolves an open alert on the gateway's own authority (device back online, battery ok).
    async fn auto_resolve(
        &mut self,
        tx: &mut TxParts<'_>,
        device: &str,
        resident: Option<&str>,
        kind: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<Option<StaffAlert>, JournalError> {
        let key = subject_key(device, resident, kind);
        let Some(mut alert) = self.open.remove(&key) else {
            return Ok(None);
        };
        let action = StaffAction {
            by: "gateway".into(),
            at: format_ts(at),
            via: "supervision".into(),
            note: Some(note.to_string()),
        };
        Self::record_action(tx, alert.alert_id, AlertState::Resolved, &action).await?;
        alert.state = AlertState::Resolved;
        alert.change = "resolved".into();
        alert.resolved = Some(action);
        self.alert_event(tx, &alert, at)?;
        Ok(Some(alert))
    }

    /// Writes who acknowledged or resolved an alert, when, via which channel, with what note.
    async fn record_action(
        tx: &mut TxParts<'_>,
        alert_id: i64,
        state: AlertState,
        action: &StaffAction,
    ) -> Result<(), JournalError> {
        let sql = if state == AlertState::Acknowledged {
            "UPDATE alerts SET state = 'acknowledged', acked_by = ?, acked_at = ?, acked_via = ?, ack_note = ? WHERE id = ?"
        } else {
            "UPDATE alerts SET state = 'resolved', resolved_by = ?, resolved_at = ?, resolved_via = ?, resolve_note = ? WHERE id = ?"
        };
        sqlx::query(sql)
            .bind(&action.by)
            .bind(&action.at)
            .bind(&action.via)
            .bind(&action.note)
            .bind(alert_id)
            .execute(&mut *tx.conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn apply_staff(
        &mut self,
        tx: &mut TxParts<'_>,
        alert_id: i64,
        verb: StaffVerb,
        by: &str,
        note: Option<String>,
        via: Via,
    ) -> Result<Result<StaffAlert, StaffRefusal>, JournalError> {
        if !self.registry.staff.contains_key(by) {
            return Ok(Err(StaffRefusal::UnknownStaff(by.to_string())));
        }
        let row = sqlx::query("SELECT * FROM alerts WHERE id = ?")
            .bind(alert_id)
            .fetch_optional(&mut *tx.conn)
            .await?;
        let Some(row) = row else {
            return Ok(Err(StaffRefusal::UnknownAlert(alert_id)));
        };
        let mut alert = alert_from_row(&row, &self.registry)?;
        let subject: String = row.try_get("subject")?;
        let now = Timestamp::now();
        let action = StaffAction {
            by: by.to_string(),
            at: format_ts(now),
            via: via.as_str().into(),
            note,
        };
        let closing_by = match alert.state {
            AlertState::Resolved => alert.resolved.as_ref().map(|a| a.by.clone()),
            AlertState::Acknowledged if verb == StaffVerb::Ack => {
                alert.acknowledged.as_ref().map(|a| a.by.clone())
            }
            _ => None,
        };
        let already = matches!(
            (verb, alert.state),
            (_, AlertState::Resolved | AlertState::Cancelled)
                | (StaffVerb::Ack, AlertState::Acknowledged)
        );
        if already {
            // Nothing changes state; a note is still kept in the audit trail (`alert_noted`).
            if action.note.as_deref().is_some_and(|n| !n.trim().is_empty()) {
                let body = serde_json::json!({
                    "by": action.by, "at": action.at, "via": action.via, "note": action.note,
                    "attempted": verb, "state": alert.state,
                });
                tx.append(
                    NewEvent::new("alert_noted", now, body.to_string())
                        .device(&alert.device_id)
                        .alert(alert_id),
                );
                metrics::counter!("eldergate_staff_actions_total", "action" => "noted", "via" => via.as_str()).increment(1);
                alert.change = "noted".into();
                return Ok(Ok(alert));
            }
            if closing_by.as_deref() == Some(by) {
                return Ok(Ok(alert)); // the same person again: harmless, nothing new to record
            }
            return Ok(Err(match (verb, alert.state) {
                (StaffVerb::Ack, AlertState::Acknowledged) => StaffRefusal::AlreadyAcknowledged {
                    id: alert_id,
                    by: closing_by.unwrap_or_default(),
                },
                _ => StaffRefusal::Closed {
                    id: alert_id,
                    state: alert.state.as_str(),
                    by: closing_by,
                },
            }));
        }
        match (verb, alert.state) {
            (StaffVerb::Ack, _) => {
                Self::record_action(tx, alert_id, AlertState::Acknowledged, &action).await?;
                alert.state = AlertState::Acknowledged;
                alert.change = "acknowledged".into();
                alert.acknowledged = Some(action);
            }
            (StaffVerb::Resolve, _) => {
                Self::record_action(tx, alert_id, AlertState::Resolved, &action).await?;
                alert.state = AlertState::Resolved;
                alert.change = "resolved".into();
                alert.resolved = Some(action);
            }
        }
        let key = (subject, alert.kind.clone());
        if alert.state.is_open() {
            self.open.insert(key, alert.clone());
        } else {
            self.open.remove(&key);
        }
        metrics::counter!("eldergate_staff_actions_total", "action" => alert.change.clone(), "via" => via.as_str()).increment(1);
        self.alert_event(tx, &alert, now)?;
        Ok(Ok(alert))
    }
}

/// An alert about the gateway itself (its subject and device are the gateway id), high
/// priority: it walks the ladder until somebody acknowledges it (docs/adr/0007 says why high).
fn gateway_alert<'a>(kind: &'static str, registry: &'a Registry, detail: String) -> NewAlert<'a> {
    NewAlert {
        kind,
        priority: Priority::High,
        device: &registry.gateway_id,
        resident: None,
        detail: Some(detail),
    }
}

/// The dedupe key of an alert: (resident or device, kind).
pub(crate) fn subject_key(device: &str, resident: Option<&str>, kind: &str) -> (String, String) {
    (resident.unwrap_or(device).to_string(), kind.to_string())
}

fn masked_name(registry: &Registry, resident: Option<&str>) -> Option<String> {
    resident
        .and_then(|r| registry.residents.get(r))
        .map(|r| mask_name(&r.name))
}

fn action_from(
    row: &SqliteRow,
    prefix: &str,
    note: &str,
) -> Result<Option<StaffAction>, sqlx::Error> {
    let by: Option<String> = row.try_get(format!("{prefix}_by").as_str())?;
    Ok(match by {
        Some(by) => Some(StaffAction {
            by,
            at: row
                .try_get::<Option<String>, _>(format!("{prefix}_at").as_str())?
                .unwrap_or_default(),
            via: row
                .try_get::<Option<String>, _>(format!("{prefix}_via").as_str())?
                .unwrap_or_default(),
            note: row.try_get(note)?,
        }),
        None => None,
    })
}

/// Reads an alert row as staff see it.
pub fn alert_from_row(row: &SqliteRow, registry: &Registry) -> Result<StaffAlert, JournalError> {
    let state: String = row.try_get("state")?;
    let priority: String = row.try_get("priority")?;
    let priority = match priority.as_str() {
        "low" => Priority::Low,
        "medium" => Priority::Medium,
        _ => Priority::High,
    };
    let resident_id: Option<String> = row.try_get("resident_id")?;
    let step: i64 = row.try_get("escalation_step")?;
    Ok(StaffAlert {
        v: 1,
        alert_id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        priority,
        state: AlertState::parse(&state)
            .ok_or_else(|| JournalError::Write(format!("alert row has unknown state {state:?}")))?,
        change: "current".into(),
        device_id: row.try_get("device_id")?,
        resident_name: masked_name(registry, resident_id.as_deref()),
        notify: registry.recipients(priority, step.max(0) as usize, resident_id.as_deref()),
        resident_id,
        location: row.try_get("location")?,
        detail: row.try_get("detail")?,
        step: step.max(0) as u32,
        press_count: row.try_get("press_count")?,
        raised_at: row.try_get("raised_at")?,
        acknowledged: action_from(row, "acked", "ack_note")?,
        resolved: action_from(row, "resolved", "resolve_note")?,
    })
}
