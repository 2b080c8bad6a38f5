//! The journal: the gateway's durable record, a SQLite database in `data_dir/journal.db`.
//!
//! Invariants:
//! - Exactly one task writes ([`Writer`], `engine.rs`); everything else sends it an
//!   [`Operation`] (defined by its domain) and, where an answer is needed, waits on a oneshot
//!   that is answered **only after the transaction holding the operation has committed** (WAL,
//!   `synchronous=FULL`: the commit is fsynced). Whoever acks a device, a reader or staff does so
//!   after that answer: ack-after-commit (docs/adr/0001).
//! - Group commit: the writer takes everything queued (up to `journal.max_batch`), runs it in one
//!   `BEGIN IMMEDIATE` transaction, each operation in its own SAVEPOINT, commits once, then
//!   answers all.
//! - Two lanes: alarm-lane operations are always taken first and are never committed together
//!   with a bulk batch, so an alarm waits for at most one bulk commit.
//! - Every event gets `seq`, gateway-monotonic, never reused.
//! - Readers (the forwarder, the HTTP API) use a separate read-only pool and never block the writer.
//!
//! The journal knows no domain: alerting, canteen, roster, supervision, intake and forwarding
//! own their operations and states.

mod bulk;
mod engine;
mod events;
mod identity;
mod op;
mod tx;
mod window;

pub use bulk::BulkReader;
pub use engine::{Writer, WriterStatus, BULK_BUDGET};
pub use events::{EventRow, NewEvent};
pub use identity::{is_corruption, mark_if_corrupt, Epochs, OpenError, StartReport};
pub use op::{Failure, Lane, OpError, Operation, Refusal, RefusalKind};
pub use tx::{Context, DomainState, RecentKey, Tx, TxParts};

use jiff::Timestamp;
use op::{Job, Outcome, Queued, Resubmit};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Journal failures. A failed commit is answered to every operation in its batch; the caller
/// does not ack, and the device retransmits.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// SQLite refused (disk full, I/O error, …).
    #[error("journal write failed: {0}")]
    Write(String),
    /// The writer has stopped (shutdown).
    #[error("journal writer has stopped")]
    Stopped,
    /// A bulk read failed (journal/bulk.rs).
    #[error("journal read failed: {0}")]
    Read(String),
}

impl From<sqlx::Error> for JournalError {
    fn from(e: sqlx::Error) -> Self {
        JournalError::Write(e.to_string())
    }
}

/// The journal's timestamp format (see [`format_ts`]).
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// Formats a timestamp the way the journal stores it: RFC 3339 UTC, milliseconds, sortable.
///
/// Every journal event formats one or two of these, so years 0–9999 (all a device or this clock
/// can give in practice) are written digit by digit into one allocation; the rest go through
/// `strftime` with [`TS_FORMAT`]. A test holds the two to the same output.
pub fn format_ts(t: Timestamp) -> String {
    let dt = jiff::tz::Offset::UTC.to_datetime(t);
    let Ok(year) = u16::try_from(dt.year()) else {
        return t.strftime(TS_FORMAT).to_string();
    };
    if year > 9999 {
        return t.strftime(TS_FORMAT).to_string();
    }
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, u32::from(year));
    put(5, 2, dt.month().unsigned_abs().into());
    put(8, 2, dt.day().unsigned_abs().into());
    put(11, 2, dt.hour().unsigned_abs().into());
    put(14, 2, dt.minute().unsigned_abs().into());
    put(17, 2, dt.second().unsigned_abs().into());
    put(20, 3, u32::from(dt.millisecond().unsigned_abs()));
    b.iter().map(|&c| char::from(c)).collect()
}

/// An answer that will arrive after commit.
pub type Waiting<A> = oneshot::Receiver<Result<A, Failure>>;

/// Waits for an answer; a writer that stopped first is `JournalError::Stopped`.
pub async fn answer<A>(rx: Waiting<A>) -> Result<A, Failure> {
    rx.await
        .unwrap_or(Err(Failure::Journal(JournalError::Stopped)))
}

/// Cloneable handle to the journal: send operations, read committed state.
#[derive(Clone)]
pub struct Journal {
    alarm_tx: mpsc::Sender<Box<dyn Job>>,
    bulk_tx: mpsc::Sender<Box<dyn Job>>,
    committed: watch::Receiver<i64>,
    status: watch::Receiver<WriterStatus>,
    readers: SqlitePool,
    path: Arc<std::path::PathBuf>,
    start: Arc<StartReport>,
}

/// See [`Journal::weak`].
#[derive(Clone)]
pub struct WeakJournal {
    alarm_tx: mpsc::WeakSender<Box<dyn Job>>,
    bulk_tx: mpsc::WeakSender<Box<dyn Job>>,
}

impl WeakJournal {
    /// Applies an operation and waits for the commit; `Stopped` once the writer is shutting down.
    pub async fn run<O: Operation>(&self, op: O) -> Result<O::Answer, Failure> {
        let lane = match op.lane() {
            Lane::Alarm => &self.alarm_tx,
            Lane::Bulk => &self.bulk_tx,
        };
        let Some(tx) = lane.upgrade() else {
            return Err(Failure::Journal(JournalError::Stopped));
        };
        let (reply, rx) = oneshot::channel();
        let _ = tx.send(queued(op, Some(reply))).await;
        drop(tx);
        answer(rx).await
    }

    /// Queues a bulk-lane operation with nobody waiting; a no-op once the writer is shutting down.
    pub async fn tell<O: Operation>(&self, op: O) {
        if let Some(tx) = self.bulk_tx.upgrade() {
            let _ = tx.send(queued(op, None)).await;
        }
    }
}

fn queued<O: Operation>(
    op: O,
    reply: Option<oneshot::Sender<Result<O::Answer, Failure>>>,
) -> Box<dyn Job> {
    Box::new(Queued {
        op,
        reply,
        outcome: Outcome::Pending,
        resubmit: None,
    })
}

/// Capacity of each lane's queue: enough for a burst, small enough to push back on a flood.
pub const LANE_CAPACITY: usize = 16_384;

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .log_statements(tracing::log::LevelFilter::Trace)
        // Room for the events INSERT's shapes beside every domain's statements: one per row
        // count up to `tx::INSERT_ROWS` with the savepoint's RELEASE and COMMIT around it, as
        // many again ending in COMMIT, two more (`Tx::write_events_and_commit`). A miss
        // re-parses a statement of hundreds of parameters.
        .statement_cache_capacity(384)
}

/// Opens (creating and migrating) the journal in `data_dir`, begins this run's epoch, and sets a
/// corrupt journal aside for a new one ([`Journal::start`] says so; `identity.rs`). Returns the
/// handle and the writer, which the caller equips (domain states, context) and spawns.
pub async fn open(
    data_dir: &Path,
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
    let (conn, start) = identity::open(&path, options(&path))
        .await
        .map_err(|e| JournalError::Write(e.to_string()))?;
    metrics::gauge!("eldergate_journal_replaced").set(if start.replaced.is_some() {
        1.0
    } else {
        0.0
    });
    let mut conn: SqliteConnection = conn;
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
    let (status_tx, status) = watch::channel(WriterStatus::default());
    let mut tx = Tx::new(conn, BulkReader::new(path.clone()), dedupe_window);
    if let Err(e) = tx.reload().await {
        identity::mark_if_corrupt(&path, &e.to_string());
        return Err(e);
    }
    let writer = Writer::new(tx, alarm_rx, bulk_rx, committed_tx, status_tx, max_batch);
    Ok((
        Journal {
            alarm_tx,
            bulk_tx,
            committed,
            status,
            readers,
            path: Arc::new(path),
            start: Arc::new(start),
        },
        writer,
    ))
}

impl Journal {
    fn lane(&self, lane: Lane) -> &mpsc::Sender<Box<dyn Job>> {
        match lane {
            Lane::Alarm => &self.alarm_tx,
            Lane::Bulk => &self.bulk_tx,
        }
    }

    /// Queues an operation; the receiver resolves after commit (see [`answer`]). Waits while
    /// its lane is full.
    pub async fn submit<O: Operation>(&self, op: O) -> Waiting<O::Answer> {
        let (reply, rx) = oneshot::channel();
        // If the writer is gone the reply sender is dropped with the job and the receiver
        // reports it; nothing to do here.
        let _ = self.lane(op.lane()).send(queued(op, Some(reply))).await;
        rx
    }

    /// Queues an operation and, should its commit fail (a full disk, an I/O error), queues it
    /// again with backoff until it commits, is refused, or the writer stops: what a device sent
    /// is taken without a restart once the fault is gone, and its ack (the broker's PUBACK)
    /// is not lost. The receiver resolves with the final answer.
    pub async fn submit_until_committed<O: Operation + Clone>(&self, op: O) -> Waiting<O::Answer> {
        let (reply, rx) = oneshot::channel();
        let again = op.clone();
        let weak = self.weak();
        // Only a failed commit costs a task: the first attempt is answered by the writer itself.
        let resubmit: Resubmit<O::Answer> = Box::new(move |e, reply| {
            tokio::spawn(async move {
                let mut result = Err(Failure::Journal(e));
                let mut backoff = Duration::from_millis(200);
                while let Err(Failure::Journal(JournalError::Write(e))) = &result {
                    metrics::counter!("eldergate_journal_retries_total", "op" => O::NAME)
                        .increment(1);
                    tracing::warn!(op = O::NAME, error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "not committed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    result = weak.run(again.clone()).await;
                }
                let _ = reply.send(result);
            });
        });
        let lane = op.lane();
        let job: Box<dyn Job> = Box::new(Queued {
            op,
            reply: Some(reply),
            outcome: Outcome::Pending,
            resubmit: Some(resubmit),
        });
        // If the writer is gone the job is dropped with its reply: the receiver reports it.
        let _ = self.lane(lane).send(job).await;
        rx
    }

    /// Applies an operation and waits for the commit.
    pub async fn run<O: Operation>(&self, op: O) -> Result<O::Answer, Failure> {
        answer(self.submit(op).await).await
    }

    /// Queues an operation nobody waits for.
    pub async fn tell<O: Operation>(&self, op: O) {
        let _ = self.lane(op.lane()).send(queued(op, None)).await;
    }

    /// A handle that does not keep the writer alive (for tasks that are themselves fed by the
    /// writer, like the notifier: a strong handle there would make shutdown wait forever).
    pub fn weak(&self) -> WeakJournal {
        WeakJournal {
            alarm_tx: self.alarm_tx.downgrade(),
            bulk_tx: self.bulk_tx.downgrade(),
        }
    }

    /// Highest committed seq, updated after every commit.
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// The writer's own report (last commit, failing commits).
    pub fn writer_status(&self) -> watch::Receiver<WriterStatus> {
        self.status.clone()
    }

    /// Operations waiting in each lane (alarm, bulk).
    pub fn queued(&self) -> (usize, usize) {
        (
            LANE_CAPACITY - self.alarm_tx.capacity(),
            LANE_CAPACITY - self.bulk_tx.capacity(),
        )
    }

    /// What opening the journal found and did: its identity, epochs, a corrupt file set aside.
    pub fn start(&self) -> &StartReport {
        &self.start
    }

    /// Runs `PRAGMA quick_check` on the journal (seconds per GB, beside the writer); `Some`
    /// names the corruption found, and the next start sets the journal aside.
    pub async fn check(&self) -> Result<Option<String>, sqlx::Error> {
        identity::quick_check(&self.start.path).await
    }

    /// Read-only pool for queries.
    pub fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    /// A reader of many rows at once, with a connection of its own (journal/bulk.rs).
    pub fn bulk_reader(&self) -> BulkReader {
        BulkReader::new(self.path.as_ref().clone())
    }
}

#[cfg(test)]
mod tests;
