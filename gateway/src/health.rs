//! What `/healthz` reports, and the guard of the journal's disk.
//!
//! Invariants:
//! - `/healthz` answers 503 exactly when alarms cannot be taken: a vital task has died (the
//!   process is about to exit for the service manager to restart it), the writer's latest
//!   commit failed, or the alarm MQTT connection has been down for longer than a reconnect.
//!   Otherwise 200, with every part's state (writer, MQTT connections, forward backlog and its
//!   age, free disk) so a degraded part is visible before it matters.
//! - The disk guard keeps a reserve file in `data_dir` and releases it when a commit fails for
//!   lack of space, so alarms and money can still be committed; below `journal.low_disk_mb`
//!   free it tells the intake to refuse heartbeats and routine data (counted, logged) and raises
//!   one `disk_low` alert to staff, resolved when space is back.

use crate::alerting::{Observation, Observe};
use crate::journal::{Journal, JournalError};
use jiff::Timestamp;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the alarm connection may be down before `/healthz` says alarms cannot be taken.
const MQTT_DOWN_GRACE: Duration = Duration::from_secs(30);

/// Shared health state of the running gateway.
pub struct Health {
    started: Instant,
    fatal: Mutex<Option<String>>,
    /// The alarm connection is up.
    pub alarm_mqtt: Arc<AtomicBool>,
    /// The telemetry connection is up.
    pub tele_mqtt: Arc<AtomicBool>,
    alarm_down_since: Mutex<Option<Instant>>,
    /// The disk guard.
    pub disk: Arc<DiskGuard>,
    /// Start-up is over (journal open, every vital task spawned, HTTP listening).
    pub started_up: AtomicBool,
}

impl Health {
    /// Health of a gateway starting now, with its disk guard.
    pub fn new(disk: Arc<DiskGuard>) -> Health {
        Health {
            started: Instant::now(),
            fatal: Mutex::new(None),
            alarm_mqtt: Arc::default(),
            tele_mqtt: Arc::default(),
            alarm_down_since: Mutex::new(Some(Instant::now())),
            disk,
            started_up: AtomicBool::new(false),
        }
    }

    /// A vital task died: `/healthz` goes red (the process exits next).
    pub fn set_fatal(&self, why: String) {
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(why);
        }
    }

    /// Why a vital task died, if one did.
    pub fn fatal_reason(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// `/readyz`: start-up is over, no vital task died, the writer's latest commit did not fail
    /// and the alarm MQTT connection is up. `None` when ready, else why not. For start-up
    /// ordering and load balancers; `/healthz` stays the one to alert on.
    pub fn not_ready(&self, journal: &Journal) -> Option<String> {
        if !self.started_up.load(Ordering::Relaxed) {
            return Some("starting".into());
        }
        if let Some(why) = self.fatal_reason() {
            return Some(why);
        }
        if journal.writer_status().borrow().failing.is_some() {
            return Some("the journal writer's latest commit failed".into());
        }
        if !self.alarm_mqtt.load(Ordering::Relaxed) {
            return Some("the alarm MQTT connection is not up".into());
        }
        None
    }

    fn alarm_down_for(&self) -> Option<Duration> {
        let up = self.alarm_mqtt.load(Ordering::Relaxed);
        let mut since = self.alarm_down_since.lock().ok()?;
        match (up, *since) {
            (true, _) => {
                *since = None;
                None
            }
            (false, None) => {
                *since = Some(Instant::now());
                Some(Duration::ZERO)
            }
            (false, Some(t)) => Some(t.elapsed()),
        }
    }

    /// The report and whether alarms can be taken.
    pub async fn report(&self, journal: &Journal, gateway_id: &str) -> (bool, serde_json::Value) {
        let fatal = self.fatal.lock().ok().and_then(|f| f.clone());
        let writer = journal.writer_status().borrow().clone();
        let (alarm_q, bulk_q) = journal.queued();
        let writer_failing = writer.failing.is_some();
        let alarm_down = self.alarm_down_for();
        let mqtt_down_too_long = alarm_down.is_some_and(|d| d > MQTT_DOWN_GRACE)
            && self.started.elapsed() > MQTT_DOWN_GRACE;
        let committed = *journal.committed().borrow();
        let forward = sqlx::query(
            "SELECT c.forwarded_upto, (SELECT received_at FROM events WHERE seq > c.forwarded_upto ORDER BY seq LIMIT 1)
             FROM forward_cursor c",
        )
        .fetch_optional(journal.readers())
        .await
        .ok()
        .flatten();
        let (cursor, oldest): (i64, Option<String>) = forward
            .and_then(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)))
            .unwrap_or((committed, None));
        let age_s = oldest
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| Timestamp::now().duration_since(t).as_secs().max(0));
        let alarms_taken = fatal.is_none() && !writer_failing && !mqtt_down_too_long;
        let status = if !alarms_taken {
            "failing"
        } else if self.disk.is_low()
            || alarm_down.is_some()
            || !self.tele_mqtt.load(Ordering::Relaxed)
        {
            "degraded"
        } else {
            "ok"
        };
        let report = serde_json::json!({
            "status": status,
            "alarms_taken": alarms_taken,
            "gateway_id": gateway_id,
            "committed_seq": committed,
            "fatal": fatal,
            "writer": {
                "last_commit": writer.last_commit.map(|t| t.to_string()),
                "failing": writer.failing.as_ref().map(|(t, e)| serde_json::json!({"since": t.to_string(), "error": e})),
                "consecutive_failures": writer.consecutive_failures,
                "queued_alarm": alarm_q,
                "queued_bulk": bulk_q,
            },
            "mqtt": {
                "alarm": { "up": self.alarm_mqtt.load(Ordering::Relaxed), "down_for_s": alarm_down.map(|d| d.as_secs()) },
                "telemetry": { "up": self.tele_mqtt.load(Ordering::Relaxed) },
            },
            "forward": { "backlog": (committed - cursor).max(0), "oldest_unforwarded_age_s": age_s },
            "disk": self.disk.report(),
            "journal": {
                "journal_id": journal.start().journal_id,
                "epoch": journal.start().epochs.current(),
                "origin": journal.start().origin,
                "replaced_corrupt_journal": journal.start().replaced.as_ref().map(|p| p.display().to_string()),
            },
        });
        (alarms_taken, report)
    }
}

/// Free space in the journal's directory, a reserve for alarms and money, and the low-space
/// state the intake reads.
pub struct DiskGuard {
    dir: PathBuf,
    reserve: PathBuf,
    reserve_bytes: u64,
    low_water: u64,
    low: AtomicBool,
    free: AtomicU64,
    total: AtomicU64,
}

impl DiskGuard {
    /// A guard of `dir` keeping `reserve_mb` in reserve and calling below `low_mb` free low.
    pub fn new(dir: &Path, reserve_mb: u64, low_mb: u64) -> DiskGuard {
        DiskGuard {
            dir: dir.to_path_buf(),
            reserve: dir.join("journal.reserve"),
            reserve_bytes: reserve_mb.saturating_mul(1024 * 1024),
            low_water: low_mb.saturating_mul(1024 * 1024),
            low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            total: AtomicU64::new(0),
        }
    }

    /// True while free space is below the low-water mark: refuse routine data.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    fn report(&self) -> serde_json::Value {
        let free = self.free.load(Ordering::Relaxed);
        serde_json::json!({
            "free_bytes": (free != u64::MAX).then_some(free),
            "total_bytes": self.total.load(Ordering::Relaxed),
            "low": self.is_low(),
            "low_water_bytes": self.low_water,
            "reserve_bytes": self.reserve_bytes,
            "reserve_held": self.reserve.exists(),
        })
    }

    /// Releases the reserve (a commit failed for lack of space): alarms and money go on.
    pub fn release(&self, why: &JournalError) {
        if std::fs::remove_file(&self.reserve).is_ok() {
            metrics::counter!("eldergate_disk_reserve_released_total").increment(1);
            tracing::error!(error = %why, reserve_mb = self.reserve_bytes / (1024 * 1024), "journal commit failed for lack of space: released the disk reserve so alarms and money can still be committed; free space in data_dir now");
        }
    }

    fn measure(&self) -> Option<(u64, u64)> {
        let s = rustix::fs::statvfs(&self.dir).ok()?;
        let free = s.f_bavail.saturating_mul(s.f_frsize);
        let total = s.f_blocks.saturating_mul(s.f_frsize);
        Some((free, total))
    }

    /// (Re)creates the reserve file when there is room for it and it is missing.
    fn hold_reserve(&self, free: u64) {
        if self.reserve_bytes == 0
            || self.reserve.exists()
            || free < self.reserve_bytes.saturating_mul(2)
        {
            return;
        }
        let made = (|| -> std::io::Result<()> {
            use std::io::Write;
            let tmp = self.reserve.with_extension("reserve.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            let block = vec![0u8; 1024 * 1024];
            for _ in 0..self.reserve_bytes / (1024 * 1024) {
                f.write_all(&block)?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &self.reserve)
        })();
        if let Err(e) = made {
            tracing::warn!(error = %e, "cannot write the disk reserve file");
            let _ = std::fs::remove_file(self.reserve.with_extension("reserve.tmp"));
        }
    }

    /// Watches free space every few seconds until `stop`: low-space state, the staff alert,
    /// the reserve file.
    pub async fn watch(
        self: Arc<Self>,
        journal: Journal,
        gateway: String,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let guard = self.clone();
            let Ok(Some((free, total))) = tokio::task::spawn_blocking(move || {
                let m = guard.measure();
                if let Some((free, _)) = m {
                    if !guard.is_low() {
                        guard.hold_reserve(free);
                    }
                }
                m
            })
            .await
            else {
                continue;
            };
            self.free.store(free, Ordering::Relaxed);
            self.total.store(total, Ordering::Relaxed);
            metrics::gauge!("eldergate_disk_free_bytes").set(free as f64);
            let mib = free / (1024 * 1024);
            if !self.is_low() && free < self.low_water {
                self.low.store(true, Ordering::Relaxed);
                metrics::counter!("eldergate_disk_low_total").increment(1);
                tracing::error!(free_mib = mib, "free space in data_dir is low: refusing heartbeats and routine data; alarms and money go on");
                // Retried until committed: on a disk that filled between two looks this very
                // commit is the one that fails (and releases the reserve); `low` is set, so
                // the alert would never be sent again.
                drop(
                    journal
                        .submit_until_committed(Observe(Observation::DiskLow {
                            gateway: gateway.clone(),
                            detail: format!(
                                "only {mib} MiB free in the journal's directory; free space now"
                            ),
                        }))
                        .await,
                );
            } else if self.is_low() && free > self.low_water.saturating_mul(2) {
                self.low.store(false, Ordering::Relaxed);
                tracing::info!(free_mib = mib, "free space in data_dir is back");
                drop(
                    journal
                        .submit_until_committed(Observe(Observation::DiskOk {
                            gateway: gateway.clone(),
                            detail: format!("{mib} MiB free again"),
                        }))
                        .await,
                );
            }
        }
    }
}
