//! The daily check-in (平安键, the digital 敲门行动): every resident living alone (roster status
//! 独居) should show some activity each day by the deadline (local time): a check-in double press,
//! an alarm press, any other event from a device of theirs, or their resident card tapped at a
//! canteen counter or by a meal-delivery worker at their door, or a health reading of theirs at a
//! kiosk. At the deadline the gateway raises
//! one `missed_checkin` welfare-visit task per resident without activity, addressed to their grid
//! worker, who closes it (resolve) with a visit note.
//!
//! Runs once per local date: the run is recorded in `checkin_runs` in the same transaction as the
//! tasks, so a restart after the deadline neither skips nor repeats it.

use super::{Observation, Observe};
use crate::journal::Journal;
use crate::registry::Registry;
use jiff::{tz::TimeZone, Timestamp, Zoned};
use sqlx::Row;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Residents living alone with no activity between `from` and `to` (RFC 3339 UTC strings).
pub async fn missing(
    registry: &Registry,
    journal: &Journal,
    from: &str,
    to: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT device_id FROM events WHERE device_seq IS NOT NULL AND received_at >= ? AND received_at < ?")
        .bind(from)
        .bind(to)
        .fetch_all(journal.readers())
        .await?;
    let mut active: HashSet<String> = HashSet::new();
    for r in rows {
        let device: Option<String> = r.try_get(0)?;
        if let Some(res) = device.as_deref().and_then(|d| registry.resident_of(d)) {
            active.insert(res.to_string());
        }
    }
    // A card tap (a meal at the canteen, a meal delivered to the door, even a refused tap) shows
    // the resident was up and about.
    let rows = sqlx::query("SELECT DISTINCT c.resident_id FROM taps t JOIN cards c ON c.card_id = t.card_id WHERE t.received_at >= ? AND t.received_at < ?")
        .bind(from)
        .bind(to)
        .fetch_all(journal.readers())
        .await?;
    for r in rows {
        active.insert(r.try_get(0)?);
    }
    // A health reading taken at a kiosk (by card or named) is activity too (issue 14).
    active.extend(crate::vitals::query::active_residents(journal.readers(), from, to).await?);
    Ok(registry
        .residents
        .current()
        .values()
        .filter(|r| r.lives_alone() && !active.contains(&r.resident_id))
        .map(|r| r.resident_id.clone())
        .collect())
}

/// Runs forever, checking every 5 s whether today's deadline has passed without a run.
pub async fn run(registry: Arc<Registry>, journal: Journal) {
    if !registry.checkin.enabled {
        return;
    }
    let tz = match TimeZone::get(&registry.time_zone) {
        Ok(tz) => tz,
        Err(e) => {
            tracing::error!(error = %e, "check-in disabled: unknown time zone");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let now: Zoned = Timestamp::now().to_zoned(tz.clone());
        if now.time() < registry.checkin_deadline {
            continue;
        }
        let date = now.date();
        let date_s = date.to_string();
        let done = sqlx::query("SELECT 1 FROM checkin_runs WHERE local_date = ?")
            .bind(&date_s)
            .fetch_optional(journal.readers())
            .await;
        match done {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read checkin_runs");
                continue;
            }
        }
        let Ok(day_start) = date.to_zoned(tz.clone()) else {
            continue;
        };
        let Ok(deadline) = date
            .to_datetime(registry.checkin_deadline)
            .to_zoned(tz.clone())
        else {
            continue;
        };
        let from = crate::journal::format_ts(day_start.timestamp());
        let to = crate::journal::format_ts(deadline.timestamp());
        match missing(&registry, &journal, &from, &to).await {
            Ok(residents) => {
                tracing::info!(date = %date_s, missed = residents.len(), "daily check-in evaluated");
                journal
                    .tell(Observe(Observation::MissedCheckins {
                        local_date: date_s,
                        residents,
                    }))
                    .await;
                // Give the writer time to record the run before looking again.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => tracing::error!(error = %e, "daily check-in could not read the journal"),
        }
    }
}
