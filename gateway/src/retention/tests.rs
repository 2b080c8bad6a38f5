//! Retention on a real SQLite journal, with the clock passed in: a week runs in seconds.

use super::*;
use crate::forwarder::Forwarded;
use crate::journal::{self, NewEvent};

/// Appends events stamped with a given (simulated) time, as the domains would.
struct Append(Vec<NewEvent>);

impl Operation for Append {
    type Answer = ();
    const NAME: &'static str = "test_append";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            for ev in self.0.drain(..) {
                tx.append(ev);
            }
            Ok(())
        })
    }
}

fn retention(routine_days: u32, records_days: u32) -> Retention {
    Retention {
        routine_days,
        records_days,
        dead_letter_days: 3,
        webhook_days: 3,
        floor_days: MIN_DAYS,
    }
}

async fn open(dir: &std::path::Path) -> Journal {
    let (journal, writer) = journal::open(dir, 2048, Duration::from_secs(3600))
        .await
        .expect("open the journal");
    tokio::spawn(writer.run());
    journal
}

async fn count(journal: &Journal, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(journal.readers())
        .await
        .and_then(|r| r.try_get(0))
        .expect("count")
}

/// One simulated hour of a busy community: many readings, a few alarms, alert changes and meals.
fn hour_of_events(at: Timestamp, hour: i64) -> Vec<NewEvent> {
    let mut evs = Vec::new();
    for i in 0..300 {
        evs.push(
            NewEvent::new(
                "vitals_reading",
                at,
                format!(
                    r#"{{"kiosk":"k-1","n":{i},"bp":"128/82","pad":"{}"}}"#,
                    "x".repeat(80)
                ),
            )
            .device("kiosk-1"),
        );
    }
    for kind in [
        "alarm_press",
        "alert_raised",
        "alert_acknowledged",
        "meal_settled",
    ] {
        evs.push(NewEvent::new(kind, at, format!(r#"{{"hour":{hour}}}"#)).device("btn-1"));
    }
    evs
}

async fn forward_all(journal: &Journal) {
    let upto = *journal.committed().borrow();
    journal
        .run(Forwarded { upto })
        .await
        .expect("move the cursor");
}

async fn prune_until_done(journal: &Journal, now: Timestamp, r: Retention) -> Pruned {
    let mut total = Pruned::default();
    loop {
        let p = journal
            .run(Prune {
                now,
                retention: r,
                disk_low: false,
            })
            .await
            .expect("prune");
        total.routine += p.routine;
        total.records += p.records;
        total.dead_letters += p.dead_letters;
        total.webhooks += p.webhooks;
        if !p.more() {
            return total;
        }
    }
}

#[tokio::test]
async fn a_week_in_accelerated_time_keeps_the_journal_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = open(dir.path()).await;
    let r = retention(2, 3);
    let start = Timestamp::from_second(1_800_000_000).expect("time");
    let mut size_by_day = Vec::new();
    for hour in 0..(7 * 24) {
        let now = start + SignedDuration::from_hours(hour);
        journal
            .run(Append(hour_of_events(now, hour)))
            .await
            .expect("append");
        forward_all(&journal).await;
        prune_until_done(&journal, now, r).await;
        if hour % 24 == 23 {
            size_by_day.push(journal_bytes(&journal).await.expect("size"));
        }
    }
    eprintln!("journal bytes at the end of each day: {size_by_day:?}");
    // Readings are kept two days, records three: from day 4 on the journal reuses its pages.
    let steady = size_by_day[3];
    let last = size_by_day[6];
    assert!(
        last <= steady + steady / 10,
        "the journal kept growing after the retention was reached: {size_by_day:?}"
    );
    // What is left is exactly what the retention keeps, and the newest event.
    let readings = count(
        &journal,
        "SELECT COUNT(*) FROM events WHERE kind = 'vitals_reading'",
    )
    .await;
    assert!(readings <= 300 * 49, "{readings} readings kept");
    assert!(readings >= 300 * 47, "{readings} readings kept");
    let presses = count(
        &journal,
        "SELECT COUNT(*) FROM events WHERE kind = 'alarm_press'",
    )
    .await;
    assert!((71..=73).contains(&presses), "{presses} presses kept");
}

#[tokio::test]
async fn nothing_the_central_store_lacks_is_pruned_however_old_or_low_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = open(dir.path()).await;
    let start = Timestamp::from_second(1_800_000_000).expect("time");
    // Day 0 is forwarded; then the central store is gone for a month.
    journal
        .run(Append(hour_of_events(start, 0)))
        .await
        .expect("append");
    forward_all(&journal).await;
    let forwarded = *journal.committed().borrow();
    for day in 1..30 {
        let at = start + SignedDuration::from_hours(24 * day);
        journal
            .run(Append(hour_of_events(at, day)))
            .await
            .expect("append");
    }
    let before = count(&journal, "SELECT COUNT(*) FROM events").await;
    let now = start + SignedDuration::from_hours(24 * 400);
    let p = journal
        .run(Prune {
            now,
            retention: retention(2, 3),
            disk_low: true,
        })
        .await
        .expect("prune");
    // Only the forwarded day went; every later event, alarms and money included, is there.
    assert_eq!(p.routine + p.records, 304);
    let after = count(&journal, "SELECT COUNT(*) FROM events").await;
    assert_eq!(after, before - 304);
    let above = count(
        &journal,
        &format!("SELECT COUNT(*) FROM events WHERE seq > {forwarded}"),
    )
    .await;
    assert_eq!(above, after, "an event above the cursor was pruned");
}

#[tokio::test]
async fn the_newest_event_is_kept_so_sequence_numbers_never_go_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = open(dir.path()).await;
    let start = Timestamp::from_second(1_800_000_000).expect("time");
    journal
        .run(Append(hour_of_events(start, 0)))
        .await
        .expect("append");
    forward_all(&journal).await;
    let newest = *journal.committed().borrow();
    let now = start + SignedDuration::from_hours(24 * 1000);
    prune_until_done(&journal, now, retention(2, 3)).await;
    let left = count(&journal, "SELECT COALESCE(MAX(seq), 0) FROM events").await;
    assert_eq!(left, newest);
    assert_eq!(count(&journal, "SELECT COUNT(*) FROM events").await, 1);
}

#[tokio::test]
async fn records_outlive_readings_and_records_days_zero_keeps_them_forever() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = open(dir.path()).await;
    let start = Timestamp::from_second(1_800_000_000).expect("time");
    for day in 0..10 {
        let at = start + SignedDuration::from_hours(24 * day);
        journal
            .run(Append(hour_of_events(at, day)))
            .await
            .expect("append");
    }
    forward_all(&journal).await;
    let now = start + SignedDuration::from_hours(24 * 10);
    prune_until_done(&journal, now, retention(2, 0)).await;
    assert_eq!(
        count(
            &journal,
            "SELECT COUNT(*) FROM events WHERE kind <> 'vitals_reading'"
        )
        .await,
        40,
        "records_days = 0 keeps every record"
    );
    assert_eq!(
        count(
            &journal,
            "SELECT COUNT(*) FROM events WHERE kind = 'vitals_reading'"
        )
        .await,
        600,
        "readings of the last two days only"
    );
    // While the disk is low readings go down to the floor, even if configured longer.
    let p = journal
        .run(Prune {
            now: now + SignedDuration::from_hours(24),
            retention: retention(30, 0),
            disk_low: true,
        })
        .await
        .expect("prune");
    assert_eq!(p.routine, 300);
    assert_eq!(p.records, 0);
}

#[test]
fn kinds_are_records_unless_known_to_be_routine() {
    for kind in [
        "alarm_press",
        "alarm_cancel",
        "checkin",
        "alert_raised",
        "alert_notified",
        "meal_settled",
        "ledger_topup",
        "roster_imported",
        "something_new",
        "",
    ] {
        assert_eq!(class_of(kind), Class::Record, "{kind}");
    }
    for kind in [
        "vitals_reading",
        "health_reading",
        "reading",
        "telemetry",
        "heartbeat_summary",
    ] {
        assert_eq!(class_of(kind), Class::Routine, "{kind}");
    }
}

#[test]
fn the_floor_is_two_days_or_the_dedupe_window() {
    assert_eq!(floor_days(0), 2);
    assert_eq!(floor_days(86_400), 2);
    assert_eq!(floor_days(3 * 86_400 + 1), 4);
    assert_eq!(floor_days(u64::MAX), u32::MAX);
}
