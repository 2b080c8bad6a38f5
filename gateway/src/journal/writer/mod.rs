//! The single writer of the journal: group commit, two lanes, dedupe, alert state.
//!
//! The writer keeps three pieces of state in memory, all derived from the database and rebuilt
//! from it at start and after any failed transaction: the next `seq`, the open alerts per
//! (device, kind), and the recent (device, device sequence) pairs for dedupe.

mod alerts;
mod canteen;
mod roster;
pub use alerts::alert_from_row;

use super::{
    format_ts, AlarmOutcome, Command, DeadLetter, DeviceStatus, JournalError, StaffResult,
};
use super::{AdminResult, StaffRefusal, TopUpResult};
use crate::central::EventRow;
use crate::registry::Registry;
use eldergate_protocol::payload::Down;
use eldergate_protocol::payload::StaffAlert;
use jiff::Timestamp;
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Most rows one bulk-lane transaction writes.
pub(super) const BULK_BUDGET: usize = 512;

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
    /// A reader's answer.
    Tap(oneshot::Sender<Result<Down, JournalError>>, Down),
    /// A top-up's outcome.
    TopUp(oneshot::Sender<TopUpResult>, Result<i64, String>),
    /// A staff operation's outcome.
    Admin(
        oneshot::Sender<AdminResult>,
        Result<serde_json::Value, String>,
    ),
    /// A roster import's outcome, and the roster to switch to once committed.
    Roster(oneshot::Sender<AdminResult>, roster::RosterOutcome),
    /// Alert changes with nobody waiting (escalations, supervision): notify only.
    Notify(Vec<StaffAlert>),
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
    open_alerts: HashMap<(String, String), StaffAlert>,
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
        w.seed_cards().await?;
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
            let subject: String = row.try_get("subject")?;
            self.open_alerts
                .insert((subject, alert.kind.clone()), alert);
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
                        After::Tap(reply, down) => {
                            let _ = reply.send(Ok(down));
                        }
                        After::TopUp(reply, r) => {
                            let _ = reply.send(Ok(r));
                        }
                        After::Admin(reply, r) => {
                            let _ = reply.send(Ok(r));
                        }
                        After::Roster(reply, (r, apply)) => {
                            let r = match apply {
                                Some((residents, staged)) => {
                                    self.switch_roster(r, residents, staged).await
                                }
                                None => r,
                            };
                            let _ = reply.send(Ok(r));
                        }
                        After::Notify(alerts) => {
                            if let Some(tx) = &self.alert_tx {
                                for a in alerts {
                                    let _ = tx.send(a);
                                }
                            }
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
                        Reply::Tap(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::TopUp(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::Admin(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Reply::None => {}
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
                    Command::Tap { reader, tap, received_at, reply } => {
                        match self.apply_tap(&reader, &tap, received_at).await {
                            Ok(d) => after.push(After::Tap(reply, d)),
                            Err(e) => {
                                let _ = reply.send(Err(e.clone()));
                                return Err(e);
                            }
                        }
                    }
                    Command::TopUp { resident, amount_fen, by, reason, reply } => {
                        match self.apply_topup(&resident, amount_fen, &by, reason.as_deref()).await {
                            Ok(r) => after.push(After::TopUp(reply, r)),
                            Err(e) => {
                                let _ = reply.send(Err(e.clone()));
                                return Err(e);
                            }
                        }
                    }
                    Command::Canteen { op, by, reply } => match self.apply_canteen_op(&op, &by).await {
                        Ok(r) => after.push(After::Admin(reply, r)),
                        Err(e) => {
                            let _ = reply.send(Err(e.clone()));
                            return Err(e);
                        }
                    },
                    Command::ImportRoster { import, reply } => match self.apply_roster(&import).await {
                        Ok(r) => after.push(After::Roster(reply, r)),
                        Err(e) => {
                            let _ = reply.send(Err(e.clone()));
                            return Err(e);
                        }
                    },
                    Command::Escalate { alert_id, step } => {
                        if let Some(a) = self.escalate(alert_id, step).await? {
                            after.push(After::Notify(vec![a]));
                        }
                    }
                    Command::Observe(obs) => {
                        let changed = self.observe(&obs).await?;
                        if !changed.is_empty() {
                            after.push(After::Notify(changed));
                        }
                    }
                    Command::WebhookResult { id, error } => {
                        sqlx::query(
                            "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?,
                               delivered_at = CASE WHEN ? IS NULL THEN ? ELSE NULL END WHERE id = ?",
                        )
                        .bind(&error)
                        .bind(&error)
                        .bind(format_ts(Timestamp::now()))
                        .bind(id)
                        .execute(&mut self.conn)
                        .await?;
                    }
                    Command::Notified { alert_id, step, to, at } => {
                        self.apply_notified(alert_id, step, &to, at).await?;
                    }
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
                        After::Notify(_) => Reply::None,
                        After::Tap(r, _) => Reply::Tap(r),
                        After::TopUp(r, _) => Reply::TopUp(r),
                        After::Admin(r, _) => Reply::Admin(r),
                        After::Roster(r, (_, staged)) => {
                            if let Some((_, f)) = staged {
                                f.discard();
                            }
                            Reply::Admin(r)
                        }
                    })
                    .collect();
                for cmd in commands {
                    match cmd {
                        Command::Alarm { reply, .. } => replies.push(Reply::Alarm(reply)),
                        Command::Staff { reply, .. } => replies.push(Reply::Staff(reply)),
                        Command::DeadLetter(_, Some(reply)) => replies.push(Reply::Done(reply)),
                        Command::Tap { reply, .. } => replies.push(Reply::Tap(reply)),
                        Command::TopUp { reply, .. } => replies.push(Reply::TopUp(reply)),
                        Command::Canteen { reply, .. } => replies.push(Reply::Admin(reply)),
                        Command::ImportRoster { reply, .. } => replies.push(Reply::Admin(reply)),
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
    Tap(oneshot::Sender<Result<Down, JournalError>>),
    TopUp(oneshot::Sender<TopUpResult>),
    Admin(oneshot::Sender<AdminResult>),
    None,
}

fn dummy_outcome() -> AlarmOutcome {
    AlarmOutcome {
        seq: 0,
        duplicate: false,
        alert: None,
    }
}
