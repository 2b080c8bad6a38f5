//! Retention: what the journal forgets, and when, so a gateway runs for years on a small disk.
//!
//! The journal is the outbox (docs/adr/0003): an event must stay until the central store has it.
//! After that it is only a local copy, and keeping every copy forever fills the disk. The
//! [`Prune`] operation (bulk lane, one writer like every other change) deletes:
//! - **routine events** ([`Class::Routine`]: readings, telemetry) forwarded and older than
//!   `retention.routine_days` — these go first;
//! - **records** ([`Class::Record`]: alarms, alert audit trails, money, roster changes — every
//!   kind not known to be routine) forwarded and older than `retention.records_days` (0 = kept
//!   forever);
//! - dead letters older than `retention.dead_letter_days` (never forwarded: they are for people
//!   on site) and delivered webhook rows older than `retention.webhook_days`.
//!
//! Invariants:
//! - No event above the forward cursor is deleted, whatever its age or the free space: nothing
//!   the central store does not have is forgotten (`seq <= forward_cursor.forwarded_upto`).
//! - The newest event is never deleted: `seq` is taken as `MAX(seq) + 1` at start, and must not
//!   go back (docs/adr/0007).
//! - No age is shorter than two days nor the dedupe window (config validation): the daily
//!   check-in reads a day of events and the dedupe window is reloaded from them at start.
//! - The ledger, meals, taps, cards, alerts and checkin runs are never touched: money is
//!   append-only and a balance is derived from the ledger; open alerts and ladder timers are
//!   derived from `alerts` and `checkin_runs`.
//! - While the disk is low (`DiskGuard`), routine events are kept only for the shortest allowed
//!   age and pruning runs every minute; records keep their age: telemetry makes room first.
//! - Each `Prune` deletes at most [`PRUNE_ROWS`] rows per table, so an alarm waits behind at
//!   most one short bulk commit; the task repeats until nothing is left to prune.
//!
//! SQLite reuses the pages freed by a delete, so the file stops growing once the retention is
//! reached (proven by `retention::tests::a_week_in_accelerated_time_keeps_the_journal_bounded`);
//! it does not shrink (no VACUUM: it would hold the writer for the length of a copy of the file).

use crate::config::RetentionConfig;
use crate::health::DiskGuard;
use crate::journal::{format_ts, Journal, Lane, OpError, Operation, Tx};
use futures_util::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most rows one [`Prune`] deletes from one table.
pub const PRUNE_ROWS: i64 = 2_000;

/// The shortest age any event is kept for, in days (the daily check-in reads a day of events).
pub const MIN_DAYS: u32 = 2;

/// Event kinds (SQLite GLOB patterns) that are routine: pruned first. A kind that matches none
/// is a [`Class::Record`] — the safe side. A new kind of routine reading adds its pattern here.
pub const ROUTINE_KINDS: &[&str] = &["*reading*", "telemetry*", "heartbeat*", "device_status*"];

/// How long an event is kept after it reached the central store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Readings and telemetry: `retention.routine_days`.
    Routine,
    /// Alarms, alert audit trail, money, roster: `retention.records_days`.
    Record,
}

/// The class of an event kind (the same rule as the SQL of [`Prune`]).
pub fn class_of(kind: &str) -> Class {
    if ROUTINE_KINDS.iter().any(|p| glob_match(p, kind)) {
        Class::Routine
    } else {
        Class::Record
    }
}

/// `*` matches any run of characters; everything else itself (enough for [`ROUTINE_KINDS`]).
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// The retention in effect, in days (0 = kept forever), with the dedupe window as a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Routine events, days after forwarding.
    pub routine_days: u32,
    /// Records, days after forwarding (0 = forever).
    pub records_days: u32,
    /// Dead letters, days (0 = forever).
    pub dead_letter_days: u32,
    /// Delivered webhook rows, days (0 = forever).
    pub webhook_days: u32,
    /// The shortest age anything is kept, days (two days, or the dedupe window if longer).
    pub floor_days: u32,
}

impl Retention {
    /// From the configuration (validated: every age ≥ the floor).
    pub fn from_config(c: &RetentionConfig, dedupe_window_s: u64) -> Retention {
        Retention {
            routine_days: c.routine_days,
            records_days: c.records_days,
            dead_letter_days: c.dead_letter_days,
            webhook_days: c.webhook_days,
            floor_days: floor_days(dedupe_window_s),
        }
    }
}

/// Two days, or the dedupe window rounded up to days if longer.
pub fn floor_days(dedupe_window_s: u64) -> u32 {
    let window = u32::try_from(dedupe_window_s.div_ceil(86_400)).unwrap_or(u32::MAX);
    window.max(MIN_DAYS)
}

/// What one [`Prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Routine events.
    pub routine: u64,
    /// Records.
    pub records: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Delivered webhook rows.
    pub webhooks: u64,
}

impl Pruned {
    /// True when some table had more to prune than one operation deletes.
    pub fn more(&self) -> bool {
        let full = PRUNE_ROWS as u64;
        self.routine >= full
            || self.records >= full
            || self.dead_letters >= full
            || self.webhooks >= full
    }

    fn total(&self) -> u64 {
        self.routine + self.records + self.dead_letters + self.webhooks
    }
}

/// Bulk lane: forget what the retention allows at `now` (see the module's invariants).
#[derive(Debug, Clone)]
pub struct Prune {
    /// The time the ages are counted back from (the wall clock; a test's accelerated clock).
    pub now: Timestamp,
    /// The retention.
    pub retention: Retention,
    /// Disk space is low: routine events are kept only for the floor.
    pub disk_low: bool,
}

fn cutoff(now: Timestamp, days: u32) -> String {
    let back = SignedDuration::from_hours(i64::from(days) * 24);
    format_ts(now.checked_sub(back).unwrap_or(Timestamp::MIN))
}

fn routine_sql() -> String {
    let any: Vec<String> = ROUTINE_KINDS
        .iter()
        .map(|p| format!("kind GLOB '{p}'"))
        .collect();
    format!("({})", any.join(" OR "))
}

impl Operation for Prune {
    type Answer = Pruned;
    const NAME: &'static str = "prune";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn cost(&self) -> usize {
        crate::journal::BULK_BUDGET
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<Pruned, OpError>> {
        Box::pin(async move {
            let r = self.retention;
            let routine_days = if self.disk_low {
                r.floor_days
            } else {
                r.routine_days.max(r.floor_days)
            };
            let mut out = Pruned::default();
            // Forwarded, not the newest, old enough, of the class.
            let events = |class: &str| {
                format!(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events
                       WHERE seq <= (SELECT forwarded_upto FROM forward_cursor)
                         AND seq < (SELECT MAX(seq) FROM events)
                         AND received_at < ? AND {class}
                       ORDER BY seq LIMIT ?)"
                )
            };
            let routine = routine_sql();
            out.routine = sqlx::query(&events(&routine))
                .bind(cutoff(self.now, routine_days))
                .bind(PRUNE_ROWS)
                .execute(tx.conn())
                .await?
                .rows_affected();
            if r.records_days > 0 {
                out.records = sqlx::query(&events(&format!("NOT {routine}")))
                    .bind(cutoff(self.now, r.records_days.max(r.floor_days)))
                    .bind(PRUNE_ROWS)
                    .execute(tx.conn())
                    .await?
                    .rows_affected();
            }
            if r.dead_letter_days > 0 {
                out.dead_letters = sqlx::query(
                    "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters
                       WHERE received_at < ? ORDER BY id LIMIT ?)",
                )
                .bind(cutoff(self.now, r.dead_letter_days))
                .bind(PRUNE_ROWS)
                .execute(tx.conn())
                .await?
                .rows_affected();
            }
            if r.webhook_days > 0 {
                out.webhooks = sqlx::query(
                    "DELETE FROM webhook_outbox WHERE id IN (SELECT id FROM webhook_outbox
                       WHERE delivered_at IS NOT NULL AND delivered_at < ? ORDER BY id LIMIT ?)",
                )
                .bind(cutoff(self.now, r.webhook_days))
                .bind(PRUNE_ROWS)
                .execute(tx.conn())
                .await?
                .rows_affected();
            }
            Ok(out)
        })
    }
}

/// The journal's logical size in bytes (pages in use, including the free ones SQLite reuses).
pub async fn journal_bytes(journal: &Journal) -> Result<u64, sqlx::Error> {
    let pages: i64 = sqlx::query("PRAGMA page_count")
        .fetch_one(journal.readers())
        .await?
        .try_get(0)?;
    let size: i64 = sqlx::query("PRAGMA page_size")
        .fetch_one(journal.readers())
        .await?
        .try_get(0)?;
    Ok(u64::try_from(pages.saturating_mul(size)).unwrap_or(0))
}

/// Prunes every `interval` (every minute while the disk is low) until `stop`. Never fatal: a
/// failed prune is logged and tried again next time (the journal only grows meanwhile).
pub async fn run(
    journal: Journal,
    retention: Retention,
    interval: Duration,
    disk: Arc<DiskGuard>,
    stop: CancellationToken,
) {
    loop {
        let disk_low = disk.is_low();
        let mut total = Pruned::default();
        loop {
            let op = Prune {
                now: Timestamp::now(),
                retention,
                disk_low,
            };
            match journal.run(op).await {
                Ok(p) => {
                    total.routine += p.routine;
                    total.records += p.records;
                    total.dead_letters += p.dead_letters;
                    total.webhooks += p.webhooks;
                    for (what, n) in [
                        ("routine", p.routine),
                        ("record", p.records),
                        ("dead_letter", p.dead_letters),
                        ("webhook", p.webhooks),
                    ] {
                        metrics::counter!("eldergate_pruned_total", "what" => what).increment(n);
                    }
                    if !p.more() || stop.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the journal failed; trying again later");
                    break;
                }
            }
        }
        if total.total() > 0 {
            tracing::info!(
                routine = total.routine,
                records = total.records,
                dead_letters = total.dead_letters,
                webhooks = total.webhooks,
                disk_low,
                "journal pruned (only what the central store already has)"
            );
        }
        if let Ok(b) = journal_bytes(&journal).await {
            metrics::gauge!("eldergate_journal_bytes").set(b as f64);
        }
        let wait = if disk.is_low() {
            interval.min(Duration::from_secs(60))
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests;
