//! The service manager's view of the gateway (systemd `Type=notify`, `WatchdogSec=`).
//!
//! Guarantees:
//! - `READY=1` is sent once the journal is open, every vital task is spawned and the HTTP API
//!   listens — the same moment `/readyz` can first answer 200 — so `systemctl start` returns
//!   only when the gateway can take alarms (or fails with its reason).
//! - The watchdog is pinged only while **the writer commits** and **no vital input task has
//!   died**: every half watchdog interval a [`WatchdogProbe`] goes through the journal's alarm
//!   lane (BEGIN IMMEDIATE … COMMIT, answered after COMMIT like any operation); a probe that is
//!   not answered within that half interval, or a recorded fatal reason, means no ping, and
//!   systemd kills and restarts the process (`Restart=always`). A hung writer — which supervision
//!   by task exit cannot see — is caught this way.
//! - A broker outage does **not** stop the pings: restarting cannot bring a broker back, and the
//!   serial alarm path and the HTTP actions still work without it. It shows on `/healthz`
//!   (503 after 30 s), which is what monitoring watches.
//! - Without `NOTIFY_SOCKET` / `WATCHDOG_USEC` (not under systemd) all of this is a no-op.

use crate::health::Health;
use crate::journal::{Journal, Lane, OpError, Operation, Tx};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A no-op operation on the alarm lane: its answer proves the writer took, applied and
/// committed a transaction just now.
pub struct WatchdogProbe;

impl Operation for WatchdogProbe {
    type Answer = ();
    const NAME: &'static str = "watchdog_probe";
    fn lane(&self) -> Lane {
        Lane::Alarm
    }
    fn cost(&self) -> usize {
        0
    }
    fn apply<'a>(&'a mut self, _tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Tells systemd the gateway is ready (no-op outside systemd).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell the service manager we are ready");
    }
}

/// Tells systemd the gateway is stopping (no-op outside systemd).
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// The watchdog interval systemd asked for, if any. As sd_watchdog_enabled(3) reads them:
/// `WATCHDOG_USEC`, for this process when `WATCHDOG_PID` names it or is not set (sd-notify's
/// `watchdog_enabled` requires the PID; systemd always sets it, a test harness cannot know it
/// before the process exists).
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        return Some(Duration::from_micros(usec));
    }
    if std::env::var_os("WATCHDOG_PID").is_some() {
        return None;
    }
    let raw = std::env::var("WATCHDOG_USEC").ok()?;
    match raw.parse::<u64>() {
        Ok(usec) if usec > 0 => Some(Duration::from_micros(usec)),
        _ => {
            tracing::warn!(value = %raw, "WATCHDOG_USEC is not a positive number of microseconds; no watchdog");
            None
        }
    }
}

/// Pings the watchdog every half `interval` while the writer commits a probe within that time
/// and no vital task has died; returns at `stop`.
pub async fn watchdog(
    journal: Journal,
    health: Arc<Health>,
    interval: Duration,
    stop: CancellationToken,
) {
    let every = (interval / 2).max(Duration::from_millis(500));
    tracing::info!(interval_s = interval.as_secs_f64(), "systemd watchdog on");
    loop {
        let probe = async {
            let rx = journal.submit(WatchdogProbe).await;
            crate::journal::answer(rx).await
        };
        let committed = tokio::select! {
            r = tokio::time::timeout(every, probe) => matches!(r, Ok(Ok(()))),
            _ = stop.cancelled() => return,
        };
        match (committed, health.fatal_reason()) {
            (true, None) => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
            (false, _) => {
                metrics::counter!("eldergate_watchdog_missed_total").increment(1);
                tracing::error!(within_s = every.as_secs_f64(), "the journal writer did not commit a watchdog probe in time; not pinging the watchdog (systemd restarts the gateway if this lasts)");
            }
            (true, Some(why)) => {
                metrics::counter!("eldergate_watchdog_missed_total").increment(1);
                tracing::error!(reason = %why, "a vital task died; not pinging the watchdog");
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}
