//! The outbox forwarder: moves journal events to the central store, exactly once in effect.
//!
//! Invariants:
//! - Reads events above the cursor in `seq` order, in batches of `central.batch_size`, and sends
//!   each batch in one idempotent transaction ([`CentralStore::insert`]).
//! - Moves the cursor only after the central store committed the batch; a crash between the two
//!   resends the batch, which the central store ignores.
//! - Retries forever with capped exponential backoff; a central store that is down never blocks
//!   ingest or alarms (the forwarder only reads the journal).
//! - Each event goes with the epoch of the journal run that wrote it (`Journal::start().epochs`,
//!   docs/adr/0007): the central key is (gateway_id, epoch, seq). The cursor is this journal's:
//!   a new journal forwards its own events from 0.
//! - `eldergate_outbox_backlog` is the number of committed events not yet at the central store.

use crate::central::CentralStore;
use crate::journal::{EventRow, Journal, Lane, OpError, Operation, Tx};
use futures_util::future::BoxFuture;
use sqlx::{Row, SqlitePool};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Prefetch = tokio::task::JoinHandle<Result<Vec<EventRow>, sqlx::Error>>;

/// Up to `size` events above `cursor`, in order.
async fn read_batch(
    pool: SqlitePool,
    cursor: i64,
    size: u32,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as::<_, EventRow>(
        "SELECT seq, kind, device_id, device_seq, alert_id, received_at, device_time, body
         FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(cursor)
    .bind(i64::from(size))
    .fetch_all(&pool)
    .await
}

/// What the forwarder needs to know.
pub struct OutboxForwarder {
    /// Journal handle.
    pub journal: Journal,
    /// Central store URL.
    pub url: String,
    /// For `sqlite:` URLs.
    pub data_dir: PathBuf,
    /// `central.ca_file`: the trust root for TLS to PostgreSQL (crate::central_link).
    pub ca_file: Option<PathBuf>,
    /// Gateway id.
    pub gateway_id: String,
    /// Site id.
    pub site_id: String,
    /// Rows per batch.
    pub batch_size: u32,
    /// Longest retry pause.
    pub retry_max: Duration,
}

impl OutboxForwarder {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut committed = self.journal.committed();
        let mut cursor: i64 = match sqlx::query("SELECT forwarded_upto FROM forward_cursor")
            .fetch_one(self.journal.readers())
            .await
            .and_then(|r| r.try_get(0))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the forward cursor; starting from 0 (the central store ignores repeats)");
                0
            }
        };
        let mut backoff = Duration::from_millis(200);
        let mut store: Option<CentralStore> = None;
        let mut prefetched: Option<(i64, Prefetch)> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            metrics::gauge!("eldergate_outbox_backlog")
                .set((*committed.borrow() - cursor).max(0) as f64);
            let t_read = std::time::Instant::now();
            // Reading the next batch overlaps with sending this one.
            let rows = match prefetched.take() {
                Some((after, task)) if after == cursor => task
                    .await
                    .unwrap_or_else(|e| Err(sqlx::Error::Protocol(e.to_string()))),
                other => {
                    if let Some((_, task)) = other {
                        task.abort();
                    }
                    read_batch(self.journal.readers().clone(), cursor, self.batch_size).await
                }
            };
            let rows = match rows {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    self.pause(&mut backoff, &shutdown).await;
                    continue;
                }
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                tokio::select! {
                    _ = committed.changed() => {}
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            };
            if store.is_none() {
                match CentralStore::connect(&self.url, &self.data_dir, self.ca_file.as_deref())
                    .await
                {
                    Ok(s) => {
                        tracing::info!(epoch = %self.journal.start().epochs.current(), "central store connected");
                        store = Some(s);
                    }
                    Err(e) => {
                        metrics::counter!("eldergate_forward_failures_total").increment(1);
                        tracing::warn!(error = %crate::central_link::explain(&e), backlog = *committed.borrow() - cursor, "central store unreachable; will retry");
                        self.pause(&mut backoff, &shutdown).await;
                        continue;
                    }
                }
            }
            let Some(s) = store.as_ref() else { continue };
            let pool = self.journal.readers().clone();
            let size = self.batch_size;
            prefetched = Some((last, tokio::spawn(read_batch(pool, last, size))));
            let t_insert = std::time::Instant::now();
            let epochs = &self.journal.start().epochs;
            match s
                .insert(&self.gateway_id, &self.site_id, epochs, &rows)
                .await
            {
                Ok(()) => {
                    tracing::debug!(
                        rows = rows.len(),
                        read_ms = (t_insert - t_read).as_millis() as u64,
                        insert_ms = t_insert.elapsed().as_millis() as u64,
                        "batch forwarded"
                    );
                    cursor = last;
                    self.journal.tell(Forwarded { upto: cursor }).await;
                    metrics::counter!("eldergate_forwarded_events_total")
                        .increment(rows.len() as u64);
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    metrics::counter!("eldergate_forward_failures_total").increment(1);
                    tracing::warn!(error = %e, batch = rows.len(), "forwarding failed; will retry the same batch");
                    if matches!(
                        e,
                        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
                    ) {
                        store = None;
                    }
                    self.pause(&mut backoff, &shutdown).await;
                }
            }
        }
    }

    async fn pause(&self, backoff: &mut Duration, shutdown: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = shutdown.cancelled() => {}
        }
        *backoff = (*backoff * 2).min(self.retry_max);
    }
}

/// Bulk lane: the central store has committed everything up to `upto`; move the cursor.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// Highest forwarded seq.
    pub upto: i64,
}

impl Operation for Forwarded {
    type Answer = ();
    const NAME: &'static str = "forwarded";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            sqlx::query("UPDATE forward_cursor SET forwarded_upto = MAX(forwarded_upto, ?)")
                .bind(self.upto)
                .execute(tx.conn())
                .await?;
            Ok(())
        })
    }
}
