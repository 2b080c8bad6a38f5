//! The engine with real operations on a temporary SQLite journal: one operation that always
//! fails (or panics, or is refused) cannot fail its neighbours.

use super::*;
use crate::alerting::{AlarmEvent, AlertBook};
use crate::canteen::rules::RuleSet;
use crate::canteen::{CardTap, SeedCards, TopUp};
use crate::config::{DeviceConfig, DeviceKind, Link, Resident, StaffConfig};
use crate::registry::Registry;
use eldergate_protocol::payload::{AlarmAction, Down, Tap, TapResult};
use futures_util::future::BoxFuture;
use std::sync::Arc;

const RULES: &str = r#"
name = "t"
[[periods]]
name = "all_day"
start = "00:00"
end = "23:59:59"
price_fen = 1500
"#;

fn registry() -> Registry {
    let mut r = Registry::empty("s");
    r.devices.insert(
        "btn-1".into(),
        DeviceConfig {
            id: "btn-1".into(),
            kind: DeviceKind::AlarmButton,
            link: Link::Mqtt,
            resident_id: None,
            location: None,
            heartbeat_s: 300,
        },
    );
    let mut residents = std::collections::BTreeMap::new();
    residents.insert(
        "R1".to_string(),
        Resident {
            resident_id: "R1".into(),
            name: "张三".into(),
            birth_date: Some("1940-01-01".into()),
            statuses: None,
            building: None,
            unit: None,
            room: None,
            grid: None,
            card_id: Some("C0000001".into()),
        },
    );
    r.residents = crate::roster::Roster::new(residents);
    r.staff.insert(
        "S1".into(),
        StaffConfig {
            id: "S1".into(),
            name: "op".into(),
            role: "canteen_operator".into(),
            grid: None,
            phone: None,
        },
    );
    r.canteen = Some((RuleSet::parse(RULES).expect("rules"), 0));
    r
}

/// Fails deterministically inside SQLite, like a constraint or a bug would.
struct AlwaysFails;
impl Operation for AlwaysFails {
    type Answer = ();
    const NAME: &'static str = "always_fails";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            // Writes first, so the rollback has something to undo.
            tx.append(NewEvent::new("doomed", jiff::Timestamp::now(), "{}"));
            sqlx::query("INSERT INTO no_such_table VALUES (1)")
                .execute(tx.conn())
                .await?;
            Ok(())
        })
    }
}

/// Panics half-way (a bug): the writer must survive it.
struct Panics;
impl Operation for Panics {
    type Answer = ();
    const NAME: &'static str = "panics";
    fn lane(&self) -> Lane {
        Lane::Alarm
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            tx.append(NewEvent::new("doomed", jiff::Timestamp::now(), "{}"));
            let v: Vec<u8> = Vec::new();
            let _ = v[usize::from(tx.peek_seq() > 0)];
            Ok(())
        })
    }
}

/// The journal in `dir` with the test registry and the alert book registered, writer not yet
/// running.
async fn with_alert_book(dir: &std::path::Path) -> (Journal, Writer) {
    with_alert_book_batching(dir, 64).await
}

/// [`with_alert_book`] taking up to `max_batch` operations a commit.
async fn with_alert_book_batching(dir: &std::path::Path, max_batch: usize) -> (Journal, Writer) {
    let registry = Arc::new(registry());
    let (journal, mut writer) = open(dir, max_batch, Duration::from_secs(3600))
        .await
        .expect("open");
    writer.provide(registry.clone());
    writer
        .register(AlertBook::new(registry))
        .await
        .expect("alert book");
    (journal, writer)
}

async fn journal_with_domains(dir: &std::path::Path) -> (Journal, tokio::task::JoinHandle<()>) {
    let (journal, writer) = with_alert_book(dir).await;
    let task = tokio::spawn(writer.run());
    journal.run(SeedCards).await.expect("seed");
    (journal, task)
}

#[tokio::test]
async fn a_command_that_always_fails_cannot_stall_alarms_or_taps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _w) = journal_with_domains(dir.path()).await;
    journal
        .run(TopUp {
            resident: "R1".into(),
            amount_fen: 1_000_000,
            by: "S1".into(),
            reason: None,
            method: None,
        })
        .await
        .expect("top-up");
    let mut doomed = Vec::new();
    let mut alarms = Vec::new();
    let mut taps = Vec::new();
    // The bad command is retransmitted 100 times, interleaved with alarms and taps, all queued
    // before any is answered, so they share batches.
    for i in 0..100u32 {
        doomed.push(journal.submit(AlwaysFails).await);
        alarms.push(
            journal
                .submit(AlarmEvent {
                    device: "btn-1".into(),
                    device_seq: i,
                    action: if i == 0 {
                        AlarmAction::Press
                    } else {
                        AlarmAction::Checkin
                    },
                    device_time: None,
                    anomaly: None,
                    received_at: jiff::Timestamp::now(),
                })
                .await,
        );
        taps.push(
            journal
                .submit(CardTap {
                    reader: "rdr".into(),
                    tap: Tap {
                        v: 1,
                        seq: i,
                        card: "C0000001".into(),
                        price_fen: None,
                        delivered_by: None,
                        ts: None,
                        mac: None,
                    },
                    received_at: jiff::Timestamp::now(),
                })
                .await,
        );
    }
    for rx in doomed {
        assert!(matches!(answer(rx).await, Err(Failure::Broken(_))));
    }
    for rx in alarms {
        let outcome = answer(rx)
            .await
            .expect("alarm committed beside the failing command");
        assert!(!outcome.duplicate);
    }
    for rx in taps {
        let down = answer(rx)
            .await
            .expect("tap committed beside the failing command");
        assert!(matches!(
            down,
            Down::Display {
                result: TapResult::Paid,
                ..
            }
        ));
    }
    let db = journal.readers();
    let events: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'doomed'")
        .fetch_one(db)
        .await
        .expect("count")
        .get(0);
    assert_eq!(events, 0, "a rolled-back operation leaves no event behind");
    let presses: i64 =
        sqlx::query("SELECT COUNT(*) FROM events WHERE kind IN ('alarm_press', 'checkin')")
            .fetch_one(db)
            .await
            .expect("count")
            .get(0);
    assert_eq!(presses, 100);
    let gaps: i64 = sqlx::query("SELECT MAX(seq) - COUNT(*) FROM events")
        .fetch_one(db)
        .await
        .expect("gaps")
        .get(0);
    assert_eq!(
        gaps, 0,
        "sequence numbers of rolled-back operations are reused, not skipped"
    );
}

#[tokio::test]
async fn a_panicking_operation_is_rolled_back_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, writer) = journal_with_domains(dir.path()).await;
    let bad = journal.submit(Panics).await;
    let press = journal
        .submit(AlarmEvent {
            device: "btn-1".into(),
            device_seq: 7,
            action: AlarmAction::Press,
            device_time: None,
            anomaly: None,
            received_at: jiff::Timestamp::now(),
        })
        .await;
    assert!(matches!(answer(bad).await, Err(Failure::Broken(_))));
    let outcome = answer(press).await.expect("the press is committed");
    assert!(outcome.alert.is_some(), "and raises an alert");
    assert!(!writer.is_finished());
}

#[tokio::test]
async fn the_same_key_with_other_content_is_a_conflict_and_an_alarm_is_acted_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _w) = journal_with_domains(dir.path()).await;
    let event = |action| AlarmEvent {
        device: "btn-1".into(),
        device_seq: 5,
        action,
        device_time: None,
        anomaly: None,
        received_at: jiff::Timestamp::now(),
    };
    let checkin = journal
        .run(event(AlarmAction::Checkin))
        .await
        .expect("check-in");
    assert!(checkin.alert.is_none());
    // The device reset without keeping its numbers and presses under the same seq.
    let press = journal.run(event(AlarmAction::Press)).await.expect("press");
    assert!(!press.duplicate);
    assert_eq!(press.conflict, Some(checkin.seq));
    assert!(
        press.alert.is_some(),
        "the SOS is raised, not dropped as a duplicate"
    );
    // A true retransmission of the press is a duplicate.
    let again = journal.run(event(AlarmAction::Press)).await.expect("again");
    assert!(again.duplicate);
    assert_eq!(again.seq, press.seq);
}

#[tokio::test]
async fn a_refusal_writes_nothing_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _w) = journal_with_domains(dir.path()).await;
    let r = journal
        .run(TopUp {
            resident: "R404".into(),
            amount_fen: 100,
            by: "S1".into(),
            reason: None,
            method: None,
        })
        .await;
    match r {
        Err(Failure::Refused(r)) => {
            assert_eq!(r.kind, RefusalKind::NotFound);
            assert_eq!(r.reason, "unknown_resident");
        }
        other => panic!("{other:?}"),
    }
}

/// Appends an event, writes `x` into a scratch table (when `touch`), then fails in SQLite (when
/// it wrote) or is refused (when it did not) or is kept.
struct Scratch {
    x: i64,
    touch: bool,
    fail: bool,
}
impl Operation for Scratch {
    type Answer = ();
    const NAME: &'static str = "scratch";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            tx.append(NewEvent::new(
                "scratch",
                jiff::Timestamp::now(),
                self.x.to_string(),
            ));
            if self.touch {
                sqlx::query("CREATE TABLE IF NOT EXISTS scratch (x INTEGER)")
                    .execute(tx.conn())
                    .await?;
                sqlx::query("INSERT INTO scratch VALUES (?)")
                    .bind(self.x)
                    .execute(tx.conn())
                    .await?;
            }
            if self.fail && self.touch {
                sqlx::query("INSERT INTO no_such_table VALUES (1)")
                    .execute(tx.conn())
                    .await?;
            }
            if self.fail {
                return Err(Refusal::conflict("scratch", "refused without writing").into());
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn operations_that_do_not_reach_sqlite_share_the_savepoint_and_rollbacks_stay_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _w) = journal_with_domains(dir.path()).await;
    // One batch (all queued before the writer answers): kept writer, kept event-only ops, a
    // failing writer, a failing event-only op, a kept writer.
    let plan = [
        (1, true, false),
        (2, false, false),
        (3, false, false),
        (4, true, true),
        (5, false, true),
        (6, true, false),
        (7, false, false),
    ];
    let mut waits = Vec::new();
    for (x, touch, fail) in plan {
        waits.push((x, fail, journal.submit(Scratch { x, touch, fail }).await));
    }
    for (x, fail, rx) in waits {
        let got = answer(rx).await;
        assert_eq!(got.is_err(), fail, "op {x}: {got:?}");
    }
    let db = journal.readers();
    let rows: Vec<i64> = sqlx::query_scalar("SELECT x FROM scratch ORDER BY x")
        .fetch_all(db)
        .await
        .expect("rows");
    assert_eq!(rows, vec![1, 6], "kept writes stay, the failed one is gone");
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body FROM events WHERE kind = 'scratch' ORDER BY seq")
            .fetch_all(db)
            .await
            .expect("events");
    assert_eq!(bodies, vec!["1", "2", "3", "6", "7"]);
}

/// The journal in `dir` opened again, as after a restart. With `hold`, the dedupe window's
/// keys are not read until a permit is added to the returned semaphore (duplicates are then
/// found by looking them up in the journal); without, they are read before the writer runs.
async fn restarted(
    dir: &std::path::Path,
    hold: bool,
) -> (
    Journal,
    tokio::task::JoinHandle<()>,
    Arc<tokio::sync::Semaphore>,
) {
    let (journal, mut writer) = with_alert_book(dir).await;
    let gate = writer.hold_window_loader();
    if !hold {
        gate.add_permits(1);
        writer.read_window().await;
    }
    (journal, tokio::spawn(writer.run()), gate)
}

fn alarm(device_seq: u32, action: AlarmAction) -> AlarmEvent {
    AlarmEvent {
        device: "btn-1".into(),
        device_seq,
        action,
        device_time: None,
        anomaly: None,
        received_at: jiff::Timestamp::now(),
    }
}

#[tokio::test]
async fn a_retransmission_after_a_restart_is_reacked_with_its_seq_whether_the_window_is_read_yet_or_not(
) {
    for hold in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, writer) = journal_with_domains(dir.path()).await;
        let checkin = journal
            .run(alarm(5, AlarmAction::Checkin))
            .await
            .expect("check-in");
        let press = journal
            .run(alarm(6, AlarmAction::Press))
            .await
            .expect("press");
        drop(journal);
        writer.await.expect("writer ends");

        let (journal, writer, gate) = restarted(dir.path(), hold).await;
        let again = journal
            .run(alarm(6, AlarmAction::Press))
            .await
            .expect("again");
        // Reported after every commit.
        assert_eq!(journal.writer_status().borrow().dedupe_window_loading, hold);
        assert!(again.duplicate, "hold {hold}");
        assert_eq!(again.seq, press.seq);
        assert!(again.alert.is_none(), "not acted on again");
        let again = journal
            .run(alarm(5, AlarmAction::Checkin))
            .await
            .expect("again");
        assert!(again.duplicate);
        assert_eq!(again.seq, checkin.seq);
        // The same number with other content is acted on, and the reuse is named.
        let reused = journal
            .run(alarm(5, AlarmAction::Press))
            .await
            .expect("reused");
        assert!(!reused.duplicate);
        assert_eq!(reused.conflict, Some(checkin.seq));
        let new = journal
            .run(alarm(7, AlarmAction::Checkin))
            .await
            .expect("new");
        assert!(!new.duplicate);
        assert_eq!(new.conflict, None);

        // The window is read and adopted between batches: the keys remembered meanwhile win.
        gate.add_permits(1);
        let mut n = 100;
        while journal.writer_status().borrow().dedupe_window_loading {
            n += 1;
            assert!(n < 100_000, "the dedupe window is never adopted");
            journal
                .run(alarm(n, AlarmAction::Checkin))
                .await
                .expect("check-in");
            tokio::task::yield_now().await;
        }
        for (s, action, seq) in [
            (5, AlarmAction::Press, reused.seq),
            (6, AlarmAction::Press, press.seq),
            (7, AlarmAction::Checkin, new.seq),
        ] {
            let again = journal.run(alarm(s, action)).await.expect("again");
            assert!(again.duplicate, "seq {s} after the window was adopted");
            assert_eq!(again.seq, seq);
        }
        drop(journal);
        writer.await.expect("writer ends");
    }
}

#[tokio::test]
async fn a_batch_of_more_events_than_one_insert_carries_commits_them_all_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, writer) = with_alert_book_batching(dir.path(), 1000).await;
    // Queued before the writer runs: one batch, several INSERT statements (INSERT_ROWS each).
    let n = 3 * super::tx::INSERT_ROWS as u32 + 5;
    let mut answers = Vec::new();
    for i in 0..n {
        answers.push(
            journal
                .submit(AlarmEvent {
                    device: "btn-1".into(),
                    device_seq: i,
                    action: AlarmAction::Checkin,
                    device_time: None,
                    anomaly: None,
                    received_at: jiff::Timestamp::now(),
                })
                .await,
        );
    }
    let _w = tokio::spawn(writer.run());
    let mut seqs = Vec::new();
    for rx in answers {
        seqs.push(answer(rx).await.expect("committed").seq);
    }
    let db = journal.readers();
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT seq, device_seq FROM events WHERE kind = 'checkin' ORDER BY seq")
            .fetch_all(db)
            .await
            .expect("rows");
    assert_eq!(rows.len(), n as usize);
    for (i, (seq, device_seq)) in rows.iter().enumerate() {
        assert_eq!(*device_seq, i as i64, "device order kept across statements");
        assert_eq!(*seq, seqs[i], "the answer names the row's seq");
    }
}

/// The batch's events and COMMIT go to SQLite as one statement list
/// (`Tx::write_events_and_commit`: RELEASE and the first INSERT, …, the last INSERT and
/// COMMIT). An INSERT that fails in that list — here the second, after the first wrote 64 rows
/// — commits nothing of the batch, every operation hears that it was not committed, and the
/// next batch commits with seqs after what is on disk.
#[tokio::test]
async fn an_insert_that_fails_after_another_wrote_its_rows_commits_nothing_of_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, writer) = with_alert_book_batching(dir.path(), 1000).await;
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
        .fetch_one(journal.readers())
        .await
        .expect("max seq");
    // A row in the way of the batch's second INSERT, written behind the writer's back.
    let in_the_way = next + super::tx::INSERT_ROWS as i64 + 2;
    let other = rusqlite::Connection::open(dir.path().join("journal.db")).expect("open");
    other
        .execute(
            "INSERT INTO events (seq, kind, received_at, body) VALUES (?1, 'in_the_way', '2026-12-02T00:00:00.000Z', '{}')",
            [in_the_way],
        )
        .expect("insert");
    drop(other);
    let checkin = |device_seq: u32| AlarmEvent {
        device: "btn-1".into(),
        device_seq,
        action: AlarmAction::Checkin,
        device_time: None,
        anomaly: None,
        received_at: jiff::Timestamp::now(),
    };
    let n = super::tx::INSERT_ROWS as u32 + 5;
    let mut answers = Vec::new();
    for i in 0..n {
        answers.push(journal.submit(checkin(i)).await);
    }
    let _w = tokio::spawn(writer.run());
    for rx in answers {
        assert!(
            matches!(answer(rx).await, Err(Failure::Journal(_))),
            "no operation of the failed batch is answered as committed"
        );
    }
    let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'checkin'")
        .fetch_one(journal.readers())
        .await
        .expect("count");
    assert_eq!(
        written, 0,
        "the first INSERT's 64 rows were rolled back with the rest"
    );
    // The writer rebuilt its state from the tables: the next event goes after the row on disk.
    let again = journal.run(checkin(0)).await.expect("committed");
    assert_eq!(again.seq, in_the_way + 1);
    assert!(
        !again.duplicate,
        "the failed batch's keys were not remembered"
    );
}

/// The digit-by-digit `format_ts` writes what `strftime` with the journal's format writes: at
/// the ends of jiff's range, around year 0 and 9999, and at every millisecond edge (stored
/// timestamps are compared as strings, so one differing character would reorder them).
#[test]
fn format_ts_is_strftime() {
    use jiff::{SignedDuration, Timestamp};
    let slow = |t: Timestamp| t.strftime(TS_FORMAT).to_string();
    let mut at = vec![
        Timestamp::MIN,
        Timestamp::MAX,
        Timestamp::UNIX_EPOCH,
        Timestamp::UNIX_EPOCH - SignedDuration::from_nanos(1),
    ];
    for s in [
        "0000-01-01T00:00:00Z",
        "-0001-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:59.999999999Z",
        "1999-12-31T23:59:59.9995Z",
        "2026-12-01T17:30:05.000000001Z",
        "2026-02-28T00:00:00.1Z",
    ] {
        if let Ok(t) = s.parse::<Timestamp>() {
            at.push(t);
        }
    }
    // A walk over 400 years with an odd step, so every field and sub-second digit varies.
    let mut t = "1900-01-01T00:00:00Z"
        .parse::<Timestamp>()
        .unwrap_or(Timestamp::UNIX_EPOCH);
    for _ in 0..20_000 {
        at.push(t);
        t = t
            .saturating_add(SignedDuration::new(631_152, 7_919_123))
            .unwrap_or(t);
    }
    for t in at {
        assert_eq!(format_ts(t), slow(t), "{t:?}");
    }
}
