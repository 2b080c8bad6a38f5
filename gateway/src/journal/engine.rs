//! The single writer of the journal: a group-commit engine that knows lanes, batching,
//! `BEGIN IMMEDIATE`, savepoints, sequence numbers, the events table, COMMIT and answering after
//! commit — and no domain. Operations come from the domains (see [`super::op`]).
//!
//! Invariants:
//! - Alarm-lane jobs are taken first and never share a transaction with bulk jobs; a bulk
//!   transaction writes at most [`BULK_BUDGET`] rows, so an alarm waits for little.
//! - Each job runs inside its own SAVEPOINT. A refusal, an error or a panic of one job rolls back
//!   that job only (its in-memory effects too) and is answered; the batch commits the rest. The
//!   savepoint is moved (or rolled back to) only after a job that reached the connection: a job
//!   that only appended events has nothing in SQLite to undo, so it costs no statement. Only
//!   a failed COMMIT (or a failed rollback of a savepoint, which means SQLite ended the
//!   transaction: I/O error, disk full) fails the batch: then every job is answered with the
//!   error and the in-memory state is rebuilt from the database.
//! - Every answer is sent after COMMIT returned (`synchronous=FULL`: fsynced).

use super::op::{Job, Lane};
use super::tx::{Context, DomainState, Tx};
use super::JournalError;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Most rows one bulk-lane transaction writes.
pub const BULK_BUDGET: usize = 512;

/// Called after a failed batch with its error.
pub type FailureHook = Box<dyn Fn(&JournalError) + Send>;

/// What the writer reports about itself (for `/healthz`).
#[derive(Debug, Clone, Default)]
pub struct WriterStatus {
    /// Last successful COMMIT.
    pub last_commit: Option<jiff::Timestamp>,
    /// Last failed COMMIT and its error, if the latest attempt failed.
    pub failing: Option<(jiff::Timestamp, String)>,
    /// Consecutive failed batches.
    pub consecutive_failures: u64,
    /// The dedupe window's keys from before the (re)start are still being read: duplicates are
    /// looked up in the journal meanwhile (correct, one indexed read per alarm-lane event).
    pub dedupe_window_loading: bool,
}

/// Owns the write connection. Spawn [`Writer::run`]; it ends when every [`super::Journal`]
/// handle is dropped and both queues are drained.
pub struct Writer {
    tx: Tx,
    alarm_rx: mpsc::Receiver<Box<dyn Job>>,
    bulk_rx: mpsc::Receiver<Box<dyn Job>>,
    committed: watch::Sender<i64>,
    status: watch::Sender<WriterStatus>,
    max_batch: usize,
    on_failure: Option<FailureHook>,
}

impl Writer {
    pub(super) fn new(
        tx: Tx,
        alarm_rx: mpsc::Receiver<Box<dyn Job>>,
        bulk_rx: mpsc::Receiver<Box<dyn Job>>,
        committed: watch::Sender<i64>,
        status: watch::Sender<WriterStatus>,
        max_batch: usize,
    ) -> Writer {
        Writer {
            tx,
            alarm_rx,
            bulk_rx,
            committed,
            status,
            max_batch: max_batch.max(1),
            on_failure: None,
        }
    }

    /// Registers a domain's in-memory state (loaded from the database now, and again whenever
    /// the writer rebuilds its state).
    pub async fn register<S: DomainState>(&mut self, mut state: S) -> Result<(), JournalError> {
        state.reload(self.tx.conn()).await?;
        self.tx.register(Box::new(state));
        Ok(())
    }

    /// Provides a read-only value to operations (`Tx::ctx`) and to `after_commit`.
    pub fn provide<T: std::any::Any + Send + Sync>(&mut self, value: Arc<T>) {
        self.tx.context_mut().provide(value);
    }

    /// Called after every failed batch (e.g. to release a disk reserve when the disk is full).
    pub fn on_commit_failure(&mut self, f: FailureHook) {
        self.on_failure = Some(f);
    }

    /// A registered state, e.g. the open alerts at start.
    pub fn state<S: DomainState>(&self) -> Option<&S> {
        self.tx.state::<S>()
    }

    /// The provided context (for start-up work outside a transaction).
    pub fn context(&self) -> &Context {
        self.tx.context()
    }

    /// Holds the reading of the dedupe window (tests of the look-up path); a permit releases it.
    #[cfg(test)]
    pub(crate) fn hold_window_loader(&mut self) -> Arc<tokio::sync::Semaphore> {
        self.tx.hold_window_loader()
    }

    /// Reads the dedupe window now and adopts it (tests of the in-memory path).
    #[cfg(test)]
    pub(crate) async fn read_window(&mut self) {
        while self.tx.window_loading() {
            self.tx.poll_window();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Runs until both lanes are closed and drained.
    pub async fn run(mut self) {
        // The dedupe window's older keys are read beside the writer, which serves meanwhile.
        self.tx.poll_window();
        let loading = self.tx.window_loading();
        self.status
            .send_modify(|s| s.dedupe_window_loading = loading);
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
        loop {
            tokio::select! {
                biased;
                Some(c) = self.alarm_rx.recv() => batch.push(c),
                Some(c) = self.bulk_rx.recv() => batch.push(c),
                else => break,
            }
            let alarm = batch.iter().any(|j| j.lane() == Lane::Alarm);
            if alarm {
                while batch.len() < self.max_batch {
                    match self.alarm_rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
            } else {
                // An alarm never waits behind a bulk batch: bulk work is taken only when no
                // alarm is queued, and a bulk batch is kept short.
                let mut cost: usize = batch.iter().map(|j| j.cost()).sum();
                while batch.len() < self.max_batch && cost < BULK_BUDGET && self.alarm_rx.is_empty()
                {
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

    async fn commit_batch(&mut self, batch: &mut Vec<Box<dyn Job>>) {
        let started = Instant::now();
        let size = batch.len();
        let first_seq = self.tx.peek_seq();
        self.tx.poll_window();
        match self.apply_all(batch).await {
            Ok(()) => {
                metrics::histogram!("eldergate_journal_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("eldergate_journal_batch_size").record(size as f64);
                metrics::counter!("eldergate_journal_commits_total").increment(1);
                self.tx.prune_recent();
                if self.tx.peek_seq() != first_seq {
                    self.committed.send_replace(self.tx.last_seq());
                }
                let loading = self.tx.window_loading();
                self.status.send_modify(|s| {
                    s.last_commit = Some(jiff::Timestamp::now());
                    s.failing = None;
                    s.consecutive_failures = 0;
                    s.dedupe_window_loading = loading;
                });
                let ctx = self.tx.context();
                for job in batch.drain(..) {
                    job.committed(ctx);
                }
            }
            Err(e) => {
                metrics::counter!("eldergate_journal_commit_failures_total").increment(1);
                tracing::error!(error = %e, batch = size, "journal commit failed; nothing in this batch is acknowledged, devices will retransmit");
                let _ = sqlx::query("ROLLBACK").execute(self.tx.engine_conn()).await;
                if let Some(f) = &self.on_failure {
                    f(&e);
                }
                self.status.send_modify(|s| {
                    s.failing = Some((jiff::Timestamp::now(), e.to_string()));
                    s.consecutive_failures += 1;
                });
                for job in batch.drain(..) {
                    job.failed(e.clone());
                }
                if let Err(e) = self.tx.reload().await {
                    tracing::error!(error = %e, "journal state reload failed");
                }
                let loading = self.tx.window_loading();
                self.status
                    .send_modify(|s| s.dedupe_window_loading = loading);
            }
        }
    }

    /// Applies every job in one transaction, each in its own savepoint.
    async fn apply_all(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), JournalError> {
        // One savepoint is open at every job's start, with nothing written since it was opened:
        // opened with BEGIN; after a kept job that reached the connection, released and reopened
        // in one statement (one round trip through sqlx's worker); after a kept job that did not,
        // left where it is (nothing was written since). `ROLLBACK TO` keeps it open for the next
        // job. The last one is released by the statement that writes the batch's events, which
        // also carries COMMIT (`Tx::write_events_and_commit`).
        sqlx::query("BEGIN IMMEDIATE; SAVEPOINT op")
            .execute(self.tx.engine_conn())
            .await?;
        for job in batch.iter_mut() {
            let mark = self.tx.mark();
            let keep = match AssertUnwindSafe(job.apply(&mut self.tx))
                .catch_unwind()
                .await
            {
                Ok(keep) => keep,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    metrics::counter!("eldergate_op_panics_total", "op" => job.name()).increment(1);
                    tracing::error!(op = job.name(), panic = %what, "an operation panicked; rolled back, the writer goes on");
                    job.panicked();
                    false
                }
            };
            let touched = self.tx.touched();
            if keep {
                if touched {
                    sqlx::query("RELEASE op; SAVEPOINT op")
                        .execute(self.tx.engine_conn())
                        .await?;
                }
            } else {
                // If SQLite already ended the transaction (I/O error, disk full), this fails and
                // so does the batch: nothing may be committed piecemeal.
                if touched {
                    sqlx::query("ROLLBACK TO op")
                        .execute(self.tx.engine_conn())
                        .await?;
                }
                self.tx.undo(mark).await?;
                match job.refusal() {
                    Some(reason) => {
                        metrics::counter!("eldergate_op_refusals_total", "op" => job.name(), "reason" => reason)
                            .increment(1);
                    }
                    None => {
                        metrics::counter!("eldergate_op_failures_total", "op" => job.name())
                            .increment(1);
                        tracing::error!(
                            op = job.name(),
                            error = job.error().unwrap_or_default(),
                            "operation failed; rolled back alone, the rest of its batch commits"
                        );
                    }
                }
            }
        }
        self.tx.write_events_and_commit().await?;
        Ok(())
    }
}
