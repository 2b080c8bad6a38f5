//! The writer's open transaction as operations see it.
//!
//! [`Tx`] gives an operation the connection (inside the batch's transaction and the operation's
//! own SAVEPOINT), gateway sequence numbers ([`Tx::take_seq`]), typed event appends
//! ([`Tx::append`]), the recent (device, device sequence) keys for dedupe, the domains'
//! in-memory states ([`Tx::split`]) and read-only context ([`Tx::ctx`]).
//!
//! Invariants: everything an operation changes here — sequence numbers taken, events appended,
//! keys remembered, domain state — is undone with its SAVEPOINT when it is refused or fails
//! (events and keys by marks, domain states by reloading them from the database inside the
//! transaction). Events are written in one statement before COMMIT.
//!
//! Every way to the connection ([`Tx::conn`], [`TxParts::conn`]) marks the operation as having
//! touched the database; the engine moves or rolls back the savepoint only for such operations
//! (an operation that only appends events — a check-in, a heartbeat — costs no statement).

use super::bulk::BulkReader;
use super::events::{EventRow, NewEvent};
pub use super::window::RecentKey;
use super::window::{Keys, Undo};
use super::{format_ts, JournalError};
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most rows one INSERT into `events` carries (see [`Tx::write_events_and_commit`]).
pub(crate) const INSERT_ROWS: usize = 64;

/// In-memory state a domain keeps beside its tables (e.g. the open alerts). It must be derivable
/// from the database: the writer reloads it at start, after a failed COMMIT and after an
/// operation was rolled back.
pub trait DomainState: Any + Send {
    /// Rebuilds the state from the tables (inside the current transaction, if any).
    fn reload<'a>(
        &'a mut self,
        conn: &'a mut SqliteConnection,
    ) -> BoxFuture<'a, Result<(), JournalError>>;
}

/// Read-only things operations may need (the registry, outlets for after-commit notices),
/// provided once at start, looked up by type.
#[derive(Default)]
pub struct Context {
    items: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Context {
    /// Provides `value` (replacing one of the same type).
    pub fn provide<T: Any + Send + Sync>(&mut self, value: Arc<T>) {
        self.items.insert(TypeId::of::<T>(), value);
    }

    /// The provided value of type `T`, if any.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.items
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }
}

/// The dedupe window while the keys committed before the writer's (re)start are being read:
/// until they are adopted, a key not in memory is looked up in the journal (see `window.rs`).
struct Loading {
    /// The keys of events with seq up to this one are read by the loader.
    upto_seq: i64,
    /// The oldest `received_at` read (RFC 3339, as stored).
    since: String,
    /// When the window was (re)started: keys read expire one window after it.
    started: Instant,
    /// The same moment in the window's seconds (`Tx::now_s`).
    at: u32,
    /// The loader's result; `None` until the loader is started (at the writer's first batch).
    keys: Option<oneshot::Receiver<Keys>>,
    /// Tests hold the loader to exercise the look-up path, then release it.
    #[cfg(test)]
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// Marks taken before an operation, to undo it.
pub(crate) struct Mark {
    next_seq: i64,
    events: usize,
}

/// The open transaction.
pub struct Tx {
    conn: SqliteConnection,
    next_seq: i64,
    events: Vec<EventRow>,
    recent: Keys,
    /// What the operation being applied remembered, to undo it.
    undo: Vec<Undo>,
    loading: Option<Loading>,
    /// The dedupe window's loader reads with it (journal/bulk.rs).
    bulk: BulkReader,
    dedupe_window: Duration,
    /// The clock the window's entries count seconds from.
    base: Instant,
    states: HashMap<TypeId, Box<dyn DomainState>>,
    ctx: Context,
    /// The operation being applied reached the connection (it may have written).
    touched: bool,
}

impl Tx {
    pub(crate) fn new(conn: SqliteConnection, bulk: BulkReader, dedupe_window: Duration) -> Tx {
        Tx {
            conn,
            next_seq: 1,
            events: Vec::new(),
            recent: Keys::default(),
            undo: Vec::new(),
            loading: None,
            bulk,
            dedupe_window,
            base: Instant::now(),
            states: HashMap::new(),
            ctx: Context::default(),
            touched: false,
        }
    }

    /// The connection, inside the transaction.
    pub fn conn(&mut self) -> &mut SqliteConnection {
        self.touched = true;
        &mut self.conn
    }

    /// Whether the operation applied since the last [`Tx::mark`] reached the connection.
    pub(crate) fn touched(&self) -> bool {
        self.touched
    }

    /// The connection for the engine's own statements (does not count as the operation's).
    pub(crate) fn engine_conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// The next gateway sequence number (monotonic, never reused once committed).
    pub fn take_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The seq the next [`Tx::take_seq`] will give.
    pub fn peek_seq(&self) -> i64 {
        self.next_seq
    }

    /// Appends an event under a seq taken with [`Tx::take_seq`].
    pub fn append_at(&mut self, seq: i64, ev: NewEvent) {
        self.events.push(row(seq, ev));
    }

    /// Appends an event with the next seq; returns the seq.
    pub fn append(&mut self, ev: NewEvent) -> i64 {
        let seq = self.take_seq();
        self.append_at(seq, ev);
        seq
    }

    /// What the dedupe window holds for (device, device seq): the gateway seq and fingerprint
    /// of the last event that used it. While the keys committed before the writer started are
    /// being read, a key not in memory is looked up in the journal (an indexed read).
    pub async fn recent(
        &mut self,
        device: &str,
        device_seq: u32,
    ) -> Result<Option<RecentKey>, JournalError> {
        if let Some(k) = self.recent.get(device, device_seq) {
            return Ok(Some(k));
        }
        match &self.loading {
            Some(l) if l.started.elapsed() <= self.dedupe_window => {
                metrics::counter!("eldergate_dedupe_journal_lookups_total").increment(1);
                // A read: the savepoint has nothing to keep or undo for it.
                Keys::look_up(&mut self.conn, device, device_seq, l.upto_seq, &l.since).await
            }
            _ => Ok(None),
        }
    }

    /// Remembers (device, device seq) → (seq, fingerprint) for the dedupe window.
    pub fn remember(&mut self, device: &str, device_seq: u32, seq: i64, fingerprint: &str) {
        let at = self.now_s();
        match self
            .recent
            .remember(device, device_seq, seq, fingerprint, at)
        {
            Some(u) => self.undo.push(u),
            None => {
                tracing::error!(
                    device,
                    device_seq,
                    "dedupe window cannot number more names; key not remembered"
                );
            }
        }
    }

    /// Seconds since `base`, for the window's entries.
    fn now_s(&self) -> u32 {
        u32::try_from(self.base.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn window_s(&self) -> u32 {
        u32::try_from(self.dedupe_window.as_secs()).unwrap_or(u32::MAX)
    }

    /// The state of type `T` and the rest of the transaction, borrowed together.
    pub fn split<T: DomainState>(&mut self) -> Result<(&mut T, TxParts<'_>), JournalError> {
        let state = self
            .states
            .get_mut(&TypeId::of::<T>())
            .and_then(|s| (s.as_mut() as &mut dyn Any).downcast_mut::<T>())
            .ok_or_else(|| {
                JournalError::Write(format!(
                    "domain state {} is not registered with the writer",
                    std::any::type_name::<T>()
                ))
            })?;
        Ok((
            state,
            TxParts {
                conn: Tracked {
                    conn: &mut self.conn,
                    touched: &mut self.touched,
                },
                next_seq: &mut self.next_seq,
                events: &mut self.events,
            },
        ))
    }

    /// A provided context value of type `T`.
    pub fn ctx<T: Any + Send + Sync>(&self) -> Result<Arc<T>, JournalError> {
        self.ctx.get::<T>().ok_or_else(|| {
            JournalError::Write(format!(
                "{} is not provided to the writer",
                std::any::type_name::<T>()
            ))
        })
    }

    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    pub(crate) fn context_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }

    pub(crate) fn register(&mut self, state: Box<dyn DomainState>) {
        let id = (state.as_ref() as &dyn Any).type_id();
        self.states.insert(id, state);
    }

    pub(crate) fn state<T: DomainState>(&self) -> Option<&T> {
        self.states
            .get(&TypeId::of::<T>())
            .and_then(|s| (s.as_ref() as &dyn Any).downcast_ref::<T>())
    }

    pub(crate) fn mark(&mut self) -> Mark {
        self.undo.clear();
        self.touched = false;
        Mark {
            next_seq: self.next_seq,
            events: self.events.len(),
        }
    }

    /// Undoes what the operation since `mark` did in memory (the caller rolled back its
    /// savepoint) and reloads the domain states from inside the transaction.
    pub(crate) async fn undo(&mut self, mark: Mark) -> Result<(), JournalError> {
        self.next_seq = mark.next_seq;
        self.events.truncate(mark.events);
        while let Some(u) = self.undo.pop() {
            self.recent.undo(u);
        }
        self.reload_states().await
    }

    async fn reload_states(&mut self) -> Result<(), JournalError> {
        for state in self.states.values_mut() {
            state.reload(&mut self.conn).await?;
        }
        Ok(())
    }

    /// Writes the batch's events and commits, in as few statements and round trips through
    /// sqlx's worker as SQLite's parameter limit allows. The engine leaves one savepoint open
    /// at the end of a batch (the one the next job would have started in); it is released in
    /// the first statement, before any row is written, so SQLite does not copy every page the
    /// INSERT changes into a statement journal for a rollback that cannot come (that copy was
    /// 5 % of the gateway's CPU under load). COMMIT rides with the last INSERT: a batch of up
    /// to [`INSERT_ROWS`] events costs one round trip. If a statement fails, those after it
    /// are not run and the caller rolls the whole transaction back.
    pub(crate) async fn write_events_and_commit(&mut self) -> Result<(), JournalError> {
        if self.events.is_empty() {
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
            return Ok(());
        }
        // At most INSERT_ROWS rows a statement: a group commit's row count changes with every
        // batch, and each count is its own statement to prepare; capped, they all stay in the
        // connection's statement cache (`options`), and a batch of more takes a few statements.
        // The rows are moved into the statement's arguments (bound by reference, sqlx would
        // copy every string once more).
        let mut pending = self.events.drain(..).peekable();
        let mut first = true;
        while pending.peek().is_some() {
            let mut qb = sqlx::QueryBuilder::new(if first {
                "RELEASE op; INSERT INTO events (seq, kind, device_id, device_seq, alert_id, received_at, device_time, body) "
            } else {
                "INSERT INTO events (seq, kind, device_id, device_seq, alert_id, received_at, device_time, body) "
            });
            first = false;
            qb.push_values(pending.by_ref().take(INSERT_ROWS), |mut b, r| {
                b.push_bind(r.seq)
                    .push_bind(r.kind)
                    .push_bind(r.device_id)
                    .push_bind(r.device_seq)
                    .push_bind(r.alert_id)
                    .push_bind(r.received_at)
                    .push_bind(r.device_time)
                    .push_bind(r.body);
            });
            if pending.peek().is_none() {
                qb.push("; COMMIT");
            }
            qb.build().execute(&mut self.conn).await?;
        }
        Ok(())
    }

    /// Rebuilds everything in memory from the database (at start and after a failed COMMIT).
    /// The dedupe window's keys are read by a loader while the writer serves (see `window.rs`).
    pub(crate) async fn reload(&mut self) -> Result<(), JournalError> {
        self.events.clear();
        self.undo.clear();
        self.next_seq = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
            .fetch_one(&mut self.conn)
            .await?
            .try_get(0)?;
        self.reload_states().await?;
        self.recent = Keys::default();
        let since = Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(self.dedupe_window).unwrap_or_default())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        #[cfg(test)]
        let gate = self.loading.as_mut().and_then(|l| l.gate.take());
        self.loading = Some(Loading {
            upto_seq: self.next_seq - 1,
            since: format_ts(since),
            started: Instant::now(),
            at: self.now_s(),
            keys: None,
            #[cfg(test)]
            gate,
        });
        Ok(())
    }

    /// Between batches: starts the loader of the window's keys if it is not running, and adopts
    /// what it read once it is done (the keys remembered since laid over them).
    pub(crate) fn poll_window(&mut self) {
        let Some(l) = &mut self.loading else {
            return;
        };
        let Some(rx) = &mut l.keys else {
            let (tx, rx) = oneshot::channel();
            let (bulk, upto_seq, since, at) =
                (self.bulk.clone(), l.upto_seq, l.since.clone(), l.at);
            #[cfg(test)]
            let gate = l.gate.clone();
            tokio::spawn(async move {
                #[cfg(test)]
                if let Some(g) = gate {
                    let _ = g.acquire().await;
                }
                let started = Instant::now();
                let mut backoff = Duration::from_millis(500);
                loop {
                    match Keys::read(&bulk, upto_seq, &since, at).await {
                        Ok(keys) => {
                            tracing::info!(
                                keys = keys.len(),
                                took_ms = u64::try_from(started.elapsed().as_millis())
                                    .unwrap_or(u64::MAX),
                                "dedupe window read from the journal"
                            );
                            let _ = tx.send(keys);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "cannot read the dedupe window yet; duplicates are looked up in the journal meanwhile");
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            });
            l.keys = Some(rx);
            return;
        };
        match rx.try_recv() {
            Ok(mut keys) => {
                keys.overlay(&self.recent);
                self.recent = keys;
                self.loading = None;
                metrics::gauge!("eldergate_dedupe_keys").set(self.recent.len() as f64);
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
            Err(oneshot::error::TryRecvError::Closed) => {
                // The loader ended without keys (it panicked): keep looking keys up in the
                // journal, and read them again.
                tracing::error!(
                    "the dedupe window's loader ended without its keys; reading them again"
                );
                l.keys = None;
            }
        }
    }

    /// Whether the window's keys from before the (re)start are still being read.
    pub(crate) fn window_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Holds the loader until the returned semaphore gets a permit (tests of the look-up path).
    #[cfg(test)]
    pub(crate) fn hold_window_loader(&mut self) -> Arc<tokio::sync::Semaphore> {
        let g = Arc::new(tokio::sync::Semaphore::new(0));
        if let Some(l) = &mut self.loading {
            l.gate = Some(g.clone());
        }
        g
    }

    /// Forgets keys older than the dedupe window.
    pub(crate) fn prune_recent(&mut self) {
        let (now, window) = (self.now_s(), self.window_s());
        self.recent.prune(now, window);
    }

    pub(crate) fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }
}

/// The stored form of an event.
fn row(seq: i64, ev: NewEvent) -> EventRow {
    EventRow {
        seq,
        kind: ev.kind,
        device_id: ev.device_id,
        device_seq: ev.device_seq.map(i64::from),
        alert_id: ev.alert_id,
        received_at: format_ts(ev.received_at),
        device_time: ev.device_time.map(format_ts),
        body: ev.body,
    }
}

/// The connection as [`TxParts`] lends it: mutable access marks the operation as having
/// touched the database (so its savepoint is kept or rolled back; see the module doc).
pub struct Tracked<'a> {
    conn: &'a mut SqliteConnection,
    touched: &'a mut bool,
}

impl std::ops::Deref for Tracked<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn
    }
}

impl std::ops::DerefMut for Tracked<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        *self.touched = true;
        self.conn
    }
}

/// The transaction beside a borrowed domain state (see [`Tx::split`]).
pub struct TxParts<'a> {
    /// The connection (use it as `&mut *parts.conn`).
    pub conn: Tracked<'a>,
    next_seq: &'a mut i64,
    events: &'a mut Vec<EventRow>,
}

impl TxParts<'_> {
    /// See [`Tx::take_seq`].
    pub fn take_seq(&mut self) -> i64 {
        let s = *self.next_seq;
        *self.next_seq += 1;
        s
    }

    /// See [`Tx::peek_seq`].
    pub fn peek_seq(&self) -> i64 {
        *self.next_seq
    }

    /// See [`Tx::append_at`].
    pub fn append_at(&mut self, seq: i64, ev: NewEvent) {
        self.events.push(row(seq, ev));
    }

    /// See [`Tx::append`].
    pub fn append(&mut self, ev: NewEvent) -> i64 {
        let seq = self.take_seq();
        self.append_at(seq, ev);
        seq
    }
}
