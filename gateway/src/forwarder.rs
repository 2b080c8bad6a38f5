//! The outbox forwarder: moves journal events to the central store, exactly once in effect.
//!
//! Invariants:
//! - Reads events above the cursor in `seq` order, in batches of `central.batch_size`, and sends
//!   each batch in one idempotent transaction ([`CentralStore::insert`]).
//! - Moves the cursor only after the central store committed the batch; a crash between the two
//!   resends the batch, which the central store ignores.
//! - Retries forever with capped exponential backoff and jitter (`backon`: each pause is random
//!   between the delay and twice it, the longest `central.retry_max_s`), so the gateways of a
//!   district do not reconnect to the central store in step after it comes back; a central
//!   store that is down never blocks ingest or alarms (the forwarder only reads the journal).
//! - Each event goes with the epoch of the journal run that wrote it (`Journal::start().epochs`,
//!   docs/adr/0007): the central key is (gateway_id, epoch, seq). The cursor is this journal's:
//!   a new journal forwards its own events from 0.
//! - `eldergate_outbox_backlog` is the number of committed events not yet at the central store,
//!   set on every commit and every cursor move (not only when a batch is sent, which left it
//!   thousands of events behind the truth while the central store was down).

use crate::central::CentralStore;
use crate::journal::{BulkReader, EventRow, Journal, JournalError, Lane, OpError, Operation, Tx};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures_util::future::BoxFuture;
use sqlx::Row;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Sets `eldergate_outbox_backlog` whenever a commit or the cursor moves, until `stop`.
async fn backlog_gauge(
    mut committed: watch::Receiver<i64>,
    mut cursor: watch::Receiver<i64>,
    stop: CancellationToken,
) {
    loop {
        let backlog = (*committed.borrow_and_update() - *cursor.borrow_and_update()).max(0);
        metrics::gauge!("eldergate_outbox_backlog").set(backlog as f64);
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            r = cursor.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

type Prefetch = tokio::task::JoinHandle<Result<Vec<EventRow>, JournalError>>;

/// Up to `size` events above `cursor`, in order. On the bulk reader: sqlx handed each of a
/// batch's rows from its SQLite worker to this task, most of a drain's time (docs/adr/0023).
async fn read_batch(
    bulk: BulkReader,
    cursor: i64,
    size: u32,
) -> Result<Vec<EventRow>, JournalError> {
    bulk.read(move |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, kind, device_id, device_seq, alert_id, received_at, device_time, body
             FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(rusqlite::params![cursor, i64::from(size)], |r| {
            Ok(EventRow {
                seq: r.get(0)?,
                kind: r.get(1)?,
                device_id: r.get(2)?,
                device_seq: r.get(3)?,
                alert_id: r.get(4)?,
                received_at: r.get(5)?,
                device_time: r.get(6)?,
                body: r.get(7)?,
            })
        })?;
        rows.collect()
    })
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
        let (cursor_tx, cursor_rx) = watch::channel(cursor);
        let gauge = tokio::spawn(backlog_gauge(
            committed.clone(),
            cursor_rx,
            shutdown.clone(),
        ));
        let mut backoff = self.backoff();
        let mut store: Option<CentralStore> = None;
        let mut prefetched: Option<(i64, Prefetch)> = None;
        let bulk = self.journal.bulk_reader();
        loop {
            if shutdown.is_cancelled() {
                gauge.abort();
                break;
            }
            let t_read = std::time::Instant::now();
            // Reading the next batch overlaps with sending this one.
            let rows = match prefetched.take() {
                Some((after, task)) if after == cursor => task
                    .await
                    .unwrap_or_else(|e| Err(JournalError::Read(e.to_string()))),
                other => {
                    if let Some((_, task)) = other {
                        task.abort();
                    }
                    read_batch(bulk.clone(), cursor, self.batch_size).await
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
            let size = self.batch_size;
            prefetched = Some((last, tokio::spawn(read_batch(bulk.clone(), last, size))));
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
                    cursor_tx.send_replace(cursor);
                    self.journal.tell(Forwarded { upto: cursor }).await;
                    metrics::counter!("eldergate_forwarded_events_total")
                        .increment(rows.len() as u64);
                    backoff = self.backoff();
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

    /// 200 ms doubling, capped so that with jitter no pause exceeds `retry_max`, forever.
    fn backoff(&self) -> ExponentialBackoff {
        backoff(self.retry_max)
    }

    async fn pause(&self, backoff: &mut ExponentialBackoff, shutdown: &CancellationToken) {
        let wait = backoff.next().unwrap_or(self.retry_max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => {}
        }
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

/// The forwarder's reconnect and retry pauses: exponential from 200 ms, each with a random
/// jitter of up to its own length, never above `retry_max`; never gives up.
pub fn backoff(retry_max: Duration) -> ExponentialBackoff {
    let min = Duration::from_millis(200);
    ExponentialBuilder::default()
        .with_min_delay(min.min(retry_max / 2))
        .with_max_delay((retry_max / 2).max(Duration::from_millis(1)))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_are_capped_jittered_and_endless() {
        let max = Duration::from_secs(10);
        let pauses: Vec<Duration> = backoff(max).take(200).collect();
        assert_eq!(pauses.len(), 200, "the forwarder retries forever");
        assert!(pauses.iter().all(|p| *p <= max), "no pause above retry_max");
        assert!(pauses[0] >= Duration::from_millis(200));
        // Two gateways that fail at the same moment do not retry in step.
        let other: Vec<Duration> = backoff(max).take(200).collect();
        assert_ne!(pauses, other);
        // Late pauses spread over [max/2, max), not all at the cap.
        let late: std::collections::BTreeSet<u128> =
            pauses[20..].iter().map(|p| p.as_millis()).collect();
        assert!(late.len() > 50, "jitter spreads the pauses: {late:?}");
    }
}
