//! The journal: the gateway's durable record, a SQLite database in `data_dir/journal.db`.
//!
//! Invariants:
//! - Exactly one task writes ([`writer`]); everything else sends it a [`Command`] and, where an
//!   answer is needed, waits on a oneshot that is answered **only after the transaction holding
//!   the command has committed** (WAL, `synchronous=FULL`: the commit is fsynced). Whoever acks a
//!   device, a reader or staff does so after that answer: ack-after-commit (docs/adr/0001).
//! - Group commit: the writer takes everything queued (up to `journal.max_batch`), runs it in one
//!   `BEGIN IMMEDIATE` transaction, commits once, then answers all.
//! - Two lanes: alarm-lane commands (alarm presses, staff actions) are always taken first and are
//!   never committed together with a bulk batch, so an alarm waits for at most one bulk commit.
//! - Every event gets `seq`, gateway-monotonic, never reused.
//! - A (device, device sequence) seen within `journal.dedupe_window_s` is a duplicate: answered
//!   again with the original `seq`, no second effect.
//! - Readers (the forwarder, the HTTP API) use a separate read-only pool and never block the writer.

mod writer;

pub use writer::{alert_from_row, Writer};

use eldergate_protocol::payload::{AlarmMessage, Down, StaffAlert, StaffVerb, Tap};
use jiff::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Journal failures. A failed commit is answered to every command in its batch; the caller does
/// not ack, and the device retransmits.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// SQLite refused (disk full, I/O error, …).
    #[error("journal write failed: {0}")]
    Write(String),
    /// The writer has stopped (shutdown).
    #[error("journal writer has stopped")]
    Stopped,
}

impl From<sqlx::Error> for JournalError {
    fn from(e: sqlx::Error) -> Self {
        JournalError::Write(e.to_string())
    }
}

/// Formats a timestamp the way the journal stores it: RFC 3339 UTC, milliseconds, sortable.
pub fn format_ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// How a staff action reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The staff command topic.
    Mqtt,
    /// `POST /api/alerts/{id}/…`.
    Http,
}

impl Via {
    /// Name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mqtt => "mqtt",
            Via::Http => "http",
        }
    }
}

/// Input the gateway could not accept.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// When it arrived.
    pub received_at: Timestamp,
    /// Topic, port or path.
    pub source: String,
    /// Short machine-readable reason (also the metric label).
    pub reason: &'static str,
    /// What was wrong, for people.
    pub detail: String,
    /// The bytes (truncated to 4096).
    pub payload: Vec<u8>,
    /// Full length of the payload.
    pub payload_len: usize,
}

/// Coalesced heartbeat state of one device.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// Device id.
    pub device_id: String,
    /// Last heartbeat, gateway clock.
    pub last_seen: Timestamp,
    /// Battery voltage.
    pub battery_mv: Option<u16>,
    /// Battery percent.
    pub battery_pct: Option<u8>,
    /// Signal strength.
    pub rssi: Option<i16>,
}

/// What happened to an alarm-button event.
#[derive(Debug, Clone)]
pub struct AlarmOutcome {
    /// The event's gateway sequence number (the original one for a duplicate).
    pub seq: i64,
    /// True when this (device, device sequence) was already journaled: re-ack, nothing else.
    pub duplicate: bool,
    /// The alert as it is now, when this event changed one (raised, joined, cancelled).
    pub alert: Option<StaffAlert>,
}

/// Why a staff action was refused. Sent back to the person; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaffRefusal {
    /// No such alert.
    #[error("alert {0} does not exist")]
    UnknownAlert(i64),
    /// `by` is not in the staff registry.
    #[error("{0:?} is not a registered staff id")]
    UnknownStaff(String),
    /// The alert is closed.
    #[error("alert {id} is already {state}")]
    Closed {
        /// Alert id.
        id: i64,
        /// Its state.
        state: &'static str,
    },
    /// Somebody else acknowledged it first.
    #[error("alert {id} was already acknowledged by {by}")]
    AlreadyAcknowledged {
        /// Alert id.
        id: i64,
        /// Who did.
        by: String,
    },
}

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
}

/// A checked roster to import (see `crate::roster`).
#[derive(Debug, Clone)]
pub struct RosterImport {
    /// The residents, every row checked and every device reference resolved.
    pub residents: std::sync::Arc<crate::roster::Residents>,
    /// The CSV as uploaded, saved over `residents_csv` once the import committed.
    pub csv: std::sync::Arc<[u8]>,
    /// Staff id of who imports.
    pub by: String,
    /// Only say what would change.
    pub dry_run: bool,
}

/// Result of a staff operation: a JSON summary or why it was refused.
pub type AdminResult = Result<Result<serde_json::Value, String>, JournalError>;

/// Result of a top-up: the new balance (fen) or why it was refused.
pub type TopUpResult = Result<Result<i64, String>, JournalError>;

/// Result of a staff action: the alert as it now is, or why not.
pub type StaffResult = Result<Result<StaffAlert, StaffRefusal>, JournalError>;

/// A request to the writer.
#[derive(Debug)]
pub enum Command {
    /// Alarm lane: an alarm-button event from a registered device.
    Alarm {
        /// Device id (registered, alarm button).
        device: String,
        /// The message.
        msg: AlarmMessage,
        /// Gateway receive time.
        received_at: Timestamp,
        /// Answered after commit.
        reply: oneshot::Sender<Result<AlarmOutcome, JournalError>>,
    },
    /// Alarm lane: a staff member acknowledges or resolves an alert.
    Staff {
        /// Alert id.
        alert_id: i64,
        /// What to do.
        verb: StaffVerb,
        /// Staff id.
        by: String,
        /// Note.
        note: Option<String>,
        /// Channel.
        via: Via,
        /// Answered after commit.
        reply: oneshot::Sender<StaffResult>,
    },
    /// Bulk lane: keep bad input for people to read; `reply` (if any) is answered after commit.
    DeadLetter(
        DeadLetter,
        Option<oneshot::Sender<Result<(), JournalError>>>,
    ),
    /// Bulk lane: latest heartbeats.
    DeviceStatus(Vec<DeviceStatus>),
    /// Alarm lane: fire escalation step `step` of an alert if it is still unacknowledged.
    Escalate {
        /// Alert id.
        alert_id: i64,
        /// Ladder step (0-based; past the last step = repeats).
        step: u32,
    },
    /// Alarm lane: something supervision or the check-in job observed.
    Observe(Observation),
    /// Bulk lane: a card tap at a reader; answered after commit with what the reader shows.
    Tap {
        /// Reader id.
        reader: String,
        /// The tap.
        tap: Tap,
        /// Gateway receive time.
        received_at: Timestamp,
        /// Answered after commit.
        reply: oneshot::Sender<Result<Down, JournalError>>,
    },
    /// Bulk lane: staff top up a resident's balance.
    TopUp {
        /// Resident id.
        resident: String,
        /// Fen, positive.
        amount_fen: i64,
        /// Staff id.
        by: String,
        /// Why.
        reason: Option<String>,
        /// Answered after commit: the new balance, or why not.
        reply: oneshot::Sender<TopUpResult>,
    },
    /// Bulk lane: a staff operation on cards or meals.
    Canteen {
        /// What to do.
        op: CanteenOp,
        /// Staff id.
        by: String,
        /// Answered after commit: a JSON summary, or why not.
        reply: oneshot::Sender<AdminResult>,
    },
    /// Bulk lane, last of its batch: replace the roster (or, dry run, say what would change).
    ImportRoster {
        /// The roster.
        import: RosterImport,
        /// Answered after commit: a JSON summary of the changes, or why not.
        reply: oneshot::Sender<AdminResult>,
    },
    /// Bulk lane: a webhook delivery attempt ended (`error` None = delivered).
    WebhookResult {
        /// webhook_outbox id.
        id: i64,
        /// Why it failed.
        error: Option<String>,
    },
    /// Bulk lane: the notifier handed an alert change to the broker for these people (audit).
    Notified {
        /// Alert id.
        alert_id: i64,
        /// Ladder step.
        step: u32,
        /// Staff ids addressed.
        to: Vec<String>,
        /// When.
        at: Timestamp,
    },
    /// Bulk lane: the forwarder has delivered everything up to `upto`.
    Forwarded {
        /// Highest forwarded seq.
        upto: i64,
    },
}

impl Command {
    /// Rows this command writes, for keeping bulk transactions short.
    fn cost(&self) -> usize {
        match self {
            Command::DeviceStatus(v) => v.len().max(1),
            // Takes a whole bulk budget: nothing queued after an import shares its transaction,
            // so every later command sees the new roster.
            Command::ImportRoster { .. } => writer::BULK_BUDGET,
            _ => 1,
        }
    }

    fn is_alarm_lane(&self) -> bool {
        matches!(
            self,
            Command::Alarm { .. }
                | Command::Staff { .. }
                | Command::Escalate { .. }
                | Command::Observe(_)
        )
    }
}

/// What the gateway itself observed, raising or resolving alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// No heartbeat for too long, or the device's last will said offline.
    DeviceOffline {
        /// Device id.
        device: String,
        /// What was seen.
        detail: String,
    },
    /// A device marked offline spoke again (resolves the offline alert, gap in the note).
    DeviceOnline {
        /// Device id.
        device: String,
        /// The gap.
        detail: String,
    },
    /// Battery below the threshold (raised once, not every heartbeat).
    LowBattery {
        /// Device id.
        device: String,
        /// Percent.
        pct: u8,
    },
    /// Battery back above the threshold (resolves the low-battery alert).
    BatteryOk {
        /// Device id.
        device: String,
        /// Percent.
        pct: u8,
    },
    /// The daily check-in deadline passed: these residents living alone showed no activity.
    MissedCheckins {
        /// Local date, `YYYY-MM-DD`.
        local_date: String,
        /// Resident ids.
        residents: Vec<String>,
    },
}

/// Cloneable handle to the journal: send commands, read committed state.
#[derive(Clone)]
pub struct Journal {
    alarm_tx: mpsc::Sender<Command>,
    bulk_tx: mpsc::Sender<Command>,
    committed: watch::Receiver<i64>,
    readers: SqlitePool,
}

/// See [`Journal::weak`].
#[derive(Clone)]
pub struct WeakJournal {
    bulk_tx: mpsc::WeakSender<Command>,
}

impl WeakJournal {
    /// Records that staff were notified (bulk lane); a no-op once the writer is shutting down.
    pub async fn notified(&self, alert_id: i64, step: u32, to: Vec<String>) {
        if let Some(tx) = self.bulk_tx.upgrade() {
            let at = Timestamp::now();
            let _ = tx
                .send(Command::Notified {
                    alert_id,
                    step,
                    to,
                    at,
                })
                .await;
        }
    }
}

/// Capacity of each lane's queue: enough for a burst, small enough to push back on a flood.
pub(crate) const LANE_CAPACITY: usize = 16_384;

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .log_statements(tracing::log::LevelFilter::Trace)
}

/// Opens (creating and migrating) the journal in `data_dir`. Returns the handle and the writer,
/// which the caller spawns.
pub async fn open(
    data_dir: &Path,
    registry: std::sync::Arc<crate::registry::Registry>,
    max_batch: usize,
    dedupe_window: Duration,
) -> Result<(Journal, Writer), JournalError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        JournalError::Write(format!(
            "cannot create data_dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let path = data_dir.join("journal.db");
    let mut conn: SqliteConnection = options(&path).connect().await?;
    sqlx::migrate!("./migrations/journal")
        .run_direct(&mut conn)
        .await
        .map_err(|e| JournalError::Write(format!("journal migration failed: {e}")))?;
    let readers = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options(&path).read_only(true))
        .await?;
    let (alarm_tx, alarm_rx) = mpsc::channel(LANE_CAPACITY);
    let (bulk_tx, bulk_rx) = mpsc::channel(LANE_CAPACITY);
    let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM events")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    let (committed_tx, committed) = watch::channel(last);
    let writer = Writer::new(
        conn,
        alarm_rx,
        bulk_rx,
        committed_tx,
        registry,
        max_batch,
        dedupe_window,
    )
    .await?;
    Ok((
        Journal {
            alarm_tx,
            bulk_tx,
            committed,
            readers,
        },
        writer,
    ))
}

impl Journal {
    /// Journals an alarm-button event; resolves after commit.
    pub async fn alarm(
        &self,
        device: String,
        msg: AlarmMessage,
        received_at: Timestamp,
    ) -> oneshot::Receiver<Result<AlarmOutcome, JournalError>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Alarm {
            device,
            msg,
            received_at,
            reply,
        };
        // If the writer is gone the reply sender is dropped with the command and the receiver
        // reports it; nothing to do here.
        let _ = self.alarm_tx.send(cmd).await;
        rx
    }

    /// Queues a staff action; the receiver resolves after commit.
    pub async fn staff_request(
        &self,
        alert_id: i64,
        verb: StaffVerb,
        by: String,
        note: Option<String>,
        via: Via,
    ) -> oneshot::Receiver<StaffResult> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Staff {
            alert_id,
            verb,
            by,
            note,
            via,
            reply,
        };
        let _ = self.alarm_tx.send(cmd).await;
        rx
    }

    /// Applies a staff action and waits for the commit.
    pub async fn staff(
        &self,
        alert_id: i64,
        verb: StaffVerb,
        by: String,
        note: Option<String>,
        via: Via,
    ) -> StaffResult {
        self.staff_request(alert_id, verb, by, note, via)
            .await
            .await
            .map_err(|_| JournalError::Stopped)?
    }

    /// Keeps bad input (bulk lane); the receiver resolves after commit. The caller has already
    /// logged and counted it.
    pub async fn dead_letter(&self, dl: DeadLetter) -> oneshot::Receiver<Result<(), JournalError>> {
        let (reply, rx) = oneshot::channel();
        let _ = self
            .bulk_tx
            .send(Command::DeadLetter(dl, Some(reply)))
            .await;
        rx
    }

    /// Stores the latest heartbeats (bulk lane), in small commands so that no single bulk
    /// transaction holds an alarm up for long.
    pub async fn device_status(&self, mut batch: Vec<DeviceStatus>) {
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(256));
            let _ = self.bulk_tx.send(Command::DeviceStatus(batch)).await;
            batch = rest;
        }
    }

    /// Asks for an escalation step (alarm lane).
    pub async fn escalate(&self, alert_id: i64, step: u32) {
        let _ = self
            .alarm_tx
            .send(Command::Escalate { alert_id, step })
            .await;
    }

    /// Reports an observation (alarm lane).
    pub async fn observe(&self, obs: Observation) {
        let _ = self.alarm_tx.send(Command::Observe(obs)).await;
    }

    /// A handle that does not keep the writer alive (for tasks that are themselves fed by the
    /// writer, like the notifier: a strong handle there would make shutdown wait forever).
    pub fn weak(&self) -> WeakJournal {
        WeakJournal {
            bulk_tx: self.bulk_tx.downgrade(),
        }
    }

    /// Settles a card tap (bulk lane); the receiver resolves after commit with the answer.
    pub async fn tap(
        &self,
        reader: String,
        tap: Tap,
        received_at: Timestamp,
    ) -> oneshot::Receiver<Result<Down, JournalError>> {
        let (reply, rx) = oneshot::channel();
        let _ = self
            .bulk_tx
            .send(Command::Tap {
                reader,
                tap,
                received_at,
                reply,
            })
            .await;
        rx
    }

    /// Tops up a balance and waits for the commit.
    pub async fn topup(
        &self,
        resident: String,
        amount_fen: i64,
        by: String,
        reason: Option<String>,
    ) -> TopUpResult {
        let (reply, rx) = oneshot::channel();
        self.bulk_tx
            .send(Command::TopUp {
                resident,
                amount_fen,
                by,
                reason,
                reply,
            })
            .await
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// Imports a roster (or, dry run, says what it would change) and waits for the commit.
    pub async fn import_roster(&self, import: RosterImport) -> AdminResult {
        let (reply, rx) = oneshot::channel();
        self.bulk_tx
            .send(Command::ImportRoster { import, reply })
            .await
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// Applies a staff operation on cards or meals and waits for the commit.
    pub async fn canteen(&self, op: CanteenOp, by: String) -> AdminResult {
        let (reply, rx) = oneshot::channel();
        self.bulk_tx
            .send(Command::Canteen { op, by, reply })
            .await
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// Records a webhook attempt (bulk lane).
    pub async fn webhook_result(&self, id: i64, error: Option<String>) {
        let _ = self
            .bulk_tx
            .send(Command::WebhookResult { id, error })
            .await;
    }

    /// Records forwarding progress (bulk lane).
    pub async fn forwarded(&self, upto: i64) {
        let _ = self.bulk_tx.send(Command::Forwarded { upto }).await;
    }

    /// Highest committed seq, updated after every commit.
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// Read-only pool for queries.
    pub fn readers(&self) -> &SqlitePool {
        &self.readers
    }
}
