//! The single writer of the journal: group commit, two lanes, dedupe, alert state.
//!
//! The writer keeps three pieces of state in memory, all derived from the database and rebuilt
//! from it at start and after any failed transaction: the next `seq`, the open alerts per
//! (device, kind), and the recent (device, device sequence) pairs for dedupe.

use super::{
    format_ts, AlarmOutcome, Command, DeadLetter, DeviceStatus, JournalError, StaffRefusal,
    StaffResult, Via,
};
use crate::central::EventRow;
use crate::registry::Registry;
use eldergate_protocol::payload::{
    AlarmAction, AlarmMessage, AlertState, Priority, StaffAction, StaffAlert, StaffVerb,
};
use jiff::Timestamp;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Most rows one bulk-lane transaction writes.
const BULK_BUDGET: usize = 512;

/// Clock skew beyond which a device's clock is reported (never a reason to drop anything).
const SKEW_WARN_MS: i64 = 60_000;

/// Replies and notices held until the transaction commits.
enum After {
    Alarm(
        oneshot::Sender<Result<AlarmOutcome, JournalError>>,
        AlarmOutcome,
    ),
    Staff(
        oneshot::Sender<StaffResult>,
        Result<StaffAlert, StaffRefusal>,
    ),
    Done(oneshot::Sender<Result<(), JournalError>>),
}

/// Owns the write connection. Spawn [`Writer::run`]; it ends when every [`super::Journal`]
/// handle is dropped and both queues are drained.
pub struct Writer {
    conn: SqliteConnection,
    alarm_rx: mpsc::Receiver<Command>,
    bulk_rx: mpsc::Receiver<Command>,
    committed: watch::Sender<i64>,
    registry: Arc<Registry>,
    max_batch: usize,
    dedupe_window: Duration,
    next_seq: i64,
    open_alerts: HashMap<(String, &'static str), StaffAlert>,
    recent: HashMap<(String, u32), i64>,
    recent_order: VecDeque<(Instant, String, u32)>,
    alert_tx: Option<mpsc::UnboundedSender<StaffAlert>>,
    /// Events of the open transaction, written in one statement before COMMIT.
    pending: Vec<EventRow>,
}

impl Writer {
    pub(super) async fn new(
        conn: SqliteConnection,
        alarm_rx: mpsc::Receiver<Command>,
        bulk_rx: mpsc::Receiver<Command>,
        committed: watch::Sender<i64>,
        registry: Arc<Registry>,
        max_batch: usize,
        dedupe_window: Duration,
    ) -> Result<Self, JournalError> {
        let mut w = Writer {
            conn,
            alarm_rx,
            bulk_rx,
            committed,
            registry,
            max_batch,
            dedupe_window,
            next_seq: 1,
            open_alerts: HashMap::new(),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            alert_tx: None,
            pending: Vec::new(),
        };
        w.reload().await?;
        Ok(w)
    }

    /// Alerts changed by committed commands are sent here (to the notifier), after commit.
    pub fn notify_to(&mut self, tx: mpsc::UnboundedSender<StaffAlert>) {
        self.alert_tx = Some(tx);
    }

    /// The alerts that are open now (for republishing after a restart).
    pub fn open_alerts(&self) -> Vec<StaffAlert> {
        let mut v: Vec<_> = self.open_alerts.values().cloned().collect();
        v.sort_by_key(|a| a.alert_id);
        v
    }

    /// Rebuilds the in-memory state from the database.
    async fn reload(&mut self) -> Result<(), JournalError> {
        self.next_seq = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
            .fetch_one(&mut self.conn)
            .await?
            .try_get(0)?;
        self.open_alerts.clear();
        let rows = sqlx::query("SELECT * FROM alerts WHERE state IN ('raised', 'acknowledged')")
            .fetch_all(&mut self.conn)
            .await?;
        for row in rows {
            let alert = alert_from_row(&row, &self.registry)?;
            self.open_alerts
                .insert((alert.device_id.clone(), "sos"), alert);
        }
        self.recent.clear();
        self.recent_order.clear();
        let since = Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(self.dedupe_window).unwrap_or_default())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let rows = sqlx::query(
            "SELECT device_id, device_seq, seq FROM events
             WHERE device_seq IS NOT NULL AND received_at >= ? ORDER BY seq",
        )
        .bind(format_ts(since))
        .fetch_all(&mut self.conn)
        .await?;
        let now = Instant::now();
        for row in rows {
            let device: String = row.try_get(0)?;
            let dseq: i64 = row.try_get(1)?;
            let seq: i64 = row.try_get(2)?;
            let dseq = dseq as u32;
            self.recent.insert((device.clone(), dseq), seq);
            // Entries loaded at start expire one window after start: conservative, never early.
            self.recent_order.push_back((now, device, dseq));
        }
        Ok(())
    }

    /// Runs until both lanes are closed and drained.
    pub async fn run(mut self) {
        let mut batch: Vec<Command> = Vec::with_capacity(self.max_batch);
        loop {
            tokio::select! {
                biased;
                Some(c) = self.alarm_rx.recv() => batch.push(c),
                Some(c) = self.bulk_rx.recv() => batch.push(c),
                else => break,
            }
            while batch.len() < self.max_batch {
                match self.alarm_rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            // An alarm never waits behind a bulk batch: take bulk work only when no alarm-lane
            // command is in this batch.
            // A bulk batch is also kept short (BULK_BUDGET rows), so the alarm that arrives
            // while it commits waits for little.
            if !batch.iter().any(Command::is_alarm_lane) {
                let mut cost: usize = batch.iter().map(Command::cost).sum();
                while batch.len() < self.max_batch && cost < BULK_BUDGET {
                    match self.bulk_rx.try_recv() {
                        Ok(c) => {
                            cost += c.cost();
                            batch.push(c);
                        }
                        Err(_) => break,
                    }
                }
            }
            self.commit_batch(&mut batch).await;
        }
        tracing::info!("journal writer stopped: all queued commands committed");
    }

    async fn commit_batch(&mut self, batch: &mut Vec<Command>) {
        let started = Instant::now();
        let size = batch.len();
        let first_seq = self.next_seq;
        let result = self.apply_all(batch).await;
        match result {
            Ok(after) => {
                metrics::histogram!("eldergate_journal_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("eldergate_journal_batch_size").record(size as f64);
                metrics::counter!("eldergate_journal_commits_total").increment(1);
                self.prune_recent();
                if self.next_seq != first_seq {
                    self.committed.send_replace(self.next_seq - 1);
                }
                for a in after {
                    match a {
                        After::Alarm(reply, outcome) => {
                            if let (Some(alert), Some(tx)) = (&outcome.alert, &self.alert_tx) {
                                let _ = tx.send(alert.clone());
                            }
                            let _ = reply.send(Ok(outcome));
                        }
                        After::Staff(reply, result) => {
                            if let (Ok(alert), Some(tx)) = (&result, &self.alert_tx) {
                                let _ = tx.send(alert.clone());
                            }
                            let _ = reply.send(Ok(result));
                        }
                        After::Done(reply) => {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
            }
            Err((e, replies)) => {
                self.pending.clear();
                metrics::counter!("eldergate_journal_commit_failures_total").increment(1);
                tracing::error!(error = %e, batch = size, "journal commit failed; nothing in this batch is acknowledged, devices will retransmit");
                let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
                for r in replies {
                    match r {
                        Reply::Alarm(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::Staff(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::Done(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
                if let Err(e) = self.reload().await {
                    tracing::error!(error = %e, "journal state reload failed");
                }
            }
        }
    }

    /// Applies every command in one transaction. On failure returns every reply sender so the
    /// caller can tell each waiter that nothing was committed.
    async fn apply_all(
        &mut self,
        batch: &mut Vec<Command>,
    ) -> Result<Vec<After>, (JournalError, Vec<Reply>)> {
        let mut after = Vec::with_capacity(batch.len());
        let mut commands = std::mem::take(batch).into_iter();
        let outcome: Result<(), JournalError> = async {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut self.conn)
                .await?;
            for cmd in commands.by_ref() {
                match cmd {
                    Command::Alarm {
                        device,
                        msg,
                        received_at,
                        reply,
                    } => match self.apply_alarm(&device, &msg, received_at).await {
                        Ok(o) => after.push(After::Alarm(reply, o)),
                        Err(e) => {
                            after.push(After::Alarm(reply, dummy_outcome()));
                            return Err(e);
                        }
                    },
                    Command::Staff {
                        alert_id,
                        verb,
                        by,
                        note,
                        via,
                        reply,
                    } => match self.apply_staff(alert_id, verb, &by, note, via).await {
                        Ok(r) => after.push(After::Staff(reply, r)),
                        Err(e) => {
                            after.push(After::Staff(reply, Err(StaffRefusal::UnknownAlert(0))));
                            return Err(e);
                        }
                    },
                    Command::DeadLetter(dl, reply) => {
                        if let Some(r) = reply {
                            after.push(After::Done(r));
                        }
                        self.apply_dead_letter(&dl).await?
                    }
                    Command::DeviceStatus(list) => self.apply_status(&list).await?,
                    Command::Forwarded { upto } => {
                        sqlx::query(
                            "UPDATE forward_cursor SET forwarded_upto = MAX(forwarded_upto, ?)",
                        )
                        .bind(upto)
                        .execute(&mut self.conn)
                        .await?;
                    }
                }
            }
            self.flush_events().await?;
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => Ok(after),
            Err(e) => {
                let mut replies: Vec<Reply> = after
                    .into_iter()
                    .map(|a| match a {
                        After::Alarm(r, _) => Reply::Alarm(r),
                        After::Staff(r, _) => Reply::Staff(r),
                        After::Done(r) => Reply::Done(r),
                    })
                    .collect();
                for cmd in commands {
                    match cmd {
                        Command::Alarm { reply, .. } => replies.push(Reply::Alarm(reply)),
                        Command::Staff { reply, .. } => replies.push(Reply::Staff(reply)),
                        Command::DeadLetter(_, Some(reply)) => replies.push(Reply::Done(reply)),
                        _ => {}
                    }
                }
                Err((e, replies))
            }
        }
    }

    fn take_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    async fn apply_alarm(
        &mut self,
        device: &str,
        msg: &AlarmMessage,
        received_at: Timestamp,
    ) -> Result<AlarmOutcome, JournalError> {
        if let Some(&seq) = self.recent.get(&(device.to_string(), msg.seq)) {
            metrics::counter!("eldergate_duplicates_total", "source" => "alarm").increment(1);
            tracing::debug!(
                device,
                device_seq = msg.seq,
                seq,
                "duplicate alarm event; re-ack only"
            );
            return Ok(AlarmOutcome {
                seq,
                duplicate: true,
                alert: None,
            });
        }
        let device_time = msg.ts.and_then(|ms| Timestamp::from_millisecond(ms).ok());
        if let Some(dt) = device_time {
            let skew = received_at.as_millisecond() - dt.as_millisecond();
            if skew.abs() > SKEW_WARN_MS {
                metrics::counter!("eldergate_device_clock_skew_total").increment(1);
                tracing::warn!(
                    device,
                    skew_ms = skew,
                    "device clock is off; keeping the event with the gateway's receive time"
                );
            }
        } else if msg.ts.is_some() {
            tracing::warn!(device, ts = ?msg.ts, "device timestamp out of range; ignored");
        }
        let key = (device.to_string(), "sos");
        let seq = self.take_seq();
        let (kind, alert) = match msg.action {
            AlarmAction::Press => {
                let alert = match self.open_alerts.get_mut(&key) {
                    Some(open) => {
                        open.press_count += 1;
                        open.change = "joined".into();
                        sqlx::query("UPDATE alerts SET press_count = ? WHERE id = ?")
                            .bind(open.press_count)
                            .bind(open.alert_id)
                            .execute(&mut self.conn)
                            .await?;
                        open.clone()
                    }
                    None => {
                        let alert = self.raise(device, seq, received_at).await?;
                        self.open_alerts.insert(key, alert.clone());
                        alert
                    }
                };
                ("alarm_press", Some(alert))
            }
            AlarmAction::Cancel => {
                // A senior may cancel a press nobody has taken yet. Once staff acknowledged, the
                // visit goes ahead: the cancel is recorded but the alert stays open.
                let cancelled = match self.open_alerts.get(&key) {
                    Some(open) if open.state == AlertState::Raised => {
                        let mut a = open.clone();
                        a.state = AlertState::Cancelled;
                        a.change = "cancelled".into();
                        sqlx::query("UPDATE alerts SET state = 'cancelled' WHERE id = ?")
                            .bind(a.alert_id)
                            .execute(&mut self.conn)
                            .await?;
                        self.open_alerts.remove(&key);
                        Some(a)
                    }
                    _ => None,
                };
                ("alarm_cancel", cancelled)
            }
            AlarmAction::Checkin => ("checkin", None),
        };
        let body = serde_json::json!({
            "action": msg.action,
            "device_ts": msg.ts,
            "alert_state": alert.as_ref().map(|a| a.state),
        });
        self.pending.push(EventRow {
            seq,
            kind: kind.to_string(),
            device_id: Some(device.to_string()),
            device_seq: Some(i64::from(msg.seq)),
            alert_id: alert.as_ref().map(|a| a.alert_id),
            received_at: format_ts(received_at),
            device_time: device_time.map(format_ts),
            body: body.to_string(),
        });
        if let Some(a) = alert.as_ref().filter(|a| a.change == "cancelled") {
            self.alert_event(a, received_at)?;
        }
        self.recent.insert((device.to_string(), msg.seq), seq);
        self.recent_order
            .push_back((Instant::now(), device.to_string(), msg.seq));
        Ok(AlarmOutcome {
            seq,
            duplicate: false,
            alert,
        })
    }

    async fn raise(
        &mut self,
        device: &str,
        press_seq: i64,
        at: Timestamp,
    ) -> Result<StaffAlert, JournalError> {
        let dev = self.registry.devices.get(device);
        let resident_id = dev.and_then(|d| d.resident_id.clone());
        let location = dev.and_then(|d| d.location.clone());
        let id: i64 = sqlx::query(
            "INSERT INTO alerts (kind, priority, device_id, resident_id, location, state, press_count, raised_seq, raised_at)
             VALUES ('sos', 'high', ?, ?, ?, 'raised', 1, ?, ?) RETURNING id",
        )
        .bind(device)
        .bind(&resident_id)
        .bind(&location)
        .bind(press_seq)
        .bind(format_ts(at))
        .fetch_one(&mut self.conn)
        .await?
        .try_get(0)?;
        let alert = StaffAlert {
            v: 1,
            alert_id: id,
            kind: "sos".into(),
            priority: Priority::High,
            state: AlertState::Raised,
            change: "raised".into(),
            device_id: device.to_string(),
            resident_id,
            location,
            press_count: 1,
            raised_at: format_ts(at),
            notify: self.registry.notify.clone(),
            acknowledged: None,
            resolved: None,
        };
        metrics::counter!("eldergate_alerts_raised_total", "kind" => "sos").increment(1);
        self.alert_event(&alert, at)?;
        Ok(alert)
    }

    /// Journals an alert transition as an event (it is forwarded like any other).
    fn alert_event(&mut self, alert: &StaffAlert, at: Timestamp) -> Result<(), JournalError> {
        let seq = self.take_seq();
        let body = serde_json::to_string(alert).map_err(|e| JournalError::Write(e.to_string()))?;
        self.pending.push(EventRow {
            seq,
            kind: format!("alert_{}", alert.change),
            device_id: Some(alert.device_id.clone()),
            device_seq: None,
            alert_id: Some(alert.alert_id),
            received_at: format_ts(at),
            device_time: None,
            body,
        });
        Ok(())
    }

    /// Writes the batch's events with as few statements as SQLite's parameter limit allows.
    async fn flush_events(&mut self) -> Result<(), JournalError> {
        let pending = std::mem::take(&mut self.pending);
        for chunk in pending.chunks(4000) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO events (seq, kind, device_id, device_seq, alert_id, received_at, device_time, body) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.seq)
                    .push_bind(&r.kind)
                    .push_bind(&r.device_id)
                    .push_bind(r.device_seq)
                    .push_bind(r.alert_id)
                    .push_bind(&r.received_at)
                    .push_bind(&r.device_time)
                    .push_bind(&r.body);
            });
            qb.build().execute(&mut self.conn).await?;
        }
        Ok(())
    }

    async fn apply_staff(
        &mut self,
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
            .fetch_optional(&mut self.conn)
            .await?;
        let Some(row) = row else {
            return Ok(Err(StaffRefusal::UnknownAlert(alert_id)));
        };
        let mut alert = alert_from_row(&row, &self.registry)?;
        let now = Timestamp::now();
        let action = StaffAction {
            by: by.to_string(),
            at: format_ts(now),
            via: via.as_str().into(),
            note,
        };
        match (verb, alert.state) {
            (_, AlertState::Resolved | AlertState::Cancelled) => {
                if verb == StaffVerb::Resolve && alert.state == AlertState::Resolved {
                    return Ok(Ok(alert)); // resolving twice is harmless
                }
                return Ok(Err(StaffRefusal::Closed {
                    id: alert_id,
                    state: alert.state.as_str(),
                }));
            }
            (StaffVerb::Ack, AlertState::Acknowledged) => {
                let first = alert.acknowledged.as_ref().map(|a| a.by.clone());
                return Ok(match first {
                    Some(b) if b == by => Ok(alert),
                    other => Err(StaffRefusal::AlreadyAcknowledged {
                        id: alert_id,
                        by: other.unwrap_or_default(),
                    }),
                });
            }
            (StaffVerb::Ack, _) => {
                sqlx::query(
                    "UPDATE alerts SET state = 'acknowledged', acked_by = ?, acked_at = ?, acked_via = ?, ack_note = ? WHERE id = ?",
                )
                .bind(&action.by)
                .bind(&action.at)
                .bind(&action.via)
                .bind(&action.note)
                .bind(alert_id)
                .execute(&mut self.conn)
                .await?;
                alert.state = AlertState::Acknowledged;
                alert.change = "acknowledged".into();
                alert.acknowledged = Some(action);
            }
            (StaffVerb::Resolve, _) => {
                sqlx::query(
                    "UPDATE alerts SET state = 'resolved', resolved_by = ?, resolved_at = ?, resolved_via = ?, resolve_note = ? WHERE id = ?",
                )
                .bind(&action.by)
                .bind(&action.at)
                .bind(&action.via)
                .bind(&action.note)
                .bind(alert_id)
                .execute(&mut self.conn)
                .await?;
                alert.state = AlertState::Resolved;
                alert.change = "resolved".into();
                alert.resolved = Some(action);
            }
        }
        let key = (alert.device_id.clone(), "sos");
        if alert.state.is_open() {
            self.open_alerts.insert(key, alert.clone());
        } else {
            self.open_alerts.remove(&key);
        }
        metrics::counter!("eldergate_staff_actions_total", "action" => alert.change.clone(), "via" => via.as_str()).increment(1);
        self.alert_event(&alert, now)?;
        Ok(Ok(alert))
    }

    async fn apply_dead_letter(&mut self, dl: &DeadLetter) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO dead_letters (received_at, source, reason, detail, payload, payload_len)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(format_ts(dl.received_at))
        .bind(&dl.source)
        .bind(dl.reason)
        .bind(&dl.detail)
        .bind(&dl.payload)
        .bind(dl.payload_len as i64)
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    async fn apply_status(&mut self, list: &[DeviceStatus]) -> Result<(), JournalError> {
        for chunk in list.chunks(1000) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO device_status (device_id, last_seen, battery_mv, battery_pct, rssi) ",
            );
            qb.push_values(chunk, |mut b, s| {
                b.push_bind(&s.device_id)
                    .push_bind(format_ts(s.last_seen))
                    .push_bind(s.battery_mv.map(i64::from))
                    .push_bind(s.battery_pct.map(i64::from))
                    .push_bind(s.rssi.map(i64::from));
            });
            qb.push(
                " ON CONFLICT(device_id) DO UPDATE SET last_seen = excluded.last_seen,
                  battery_mv = excluded.battery_mv, battery_pct = excluded.battery_pct, rssi = excluded.rssi",
            );
            qb.build().execute(&mut self.conn).await?;
        }
        Ok(())
    }

    fn prune_recent(&mut self) {
        while let Some((at, _, _)) = self.recent_order.front() {
            if at.elapsed() < self.dedupe_window {
                break;
            }
            if let Some((_, device, dseq)) = self.recent_order.pop_front() {
                self.recent.remove(&(device, dseq));
            }
        }
    }
}

/// A reply sender taken back from a failed batch.
enum Reply {
    Alarm(oneshot::Sender<Result<AlarmOutcome, JournalError>>),
    Staff(oneshot::Sender<StaffResult>),
    Done(oneshot::Sender<Result<(), JournalError>>),
}

fn dummy_outcome() -> AlarmOutcome {
    AlarmOutcome {
        seq: 0,
        duplicate: false,
        alert: None,
    }
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
    Ok(StaffAlert {
        v: 1,
        alert_id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        priority: match priority.as_str() {
            "low" => Priority::Low,
            "medium" => Priority::Medium,
            _ => Priority::High,
        },
        state: AlertState::parse(&state)
            .ok_or_else(|| JournalError::Write(format!("alert row has unknown state {state:?}")))?,
        change: "current".into(),
        device_id: row.try_get("device_id")?,
        resident_id: row.try_get("resident_id")?,
        location: row.try_get("location")?,
        press_count: row.try_get("press_count")?,
        raised_at: row.try_get("raised_at")?,
        notify: registry.notify.clone(),
        acknowledged: action_from(row, "acked", "ack_note")?,
        resolved: action_from(row, "resolved", "resolve_note")?,
    })
}
