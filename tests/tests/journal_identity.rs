//! A journal with an identity (docs/adr/0007): whatever happens to the journal file — deleted,
//! truncated to zero, corrupted, its WAL lost after a kill -9 — the gateway comes back, takes
//! alarms, and the central store keeps every event it acknowledged, before and after: a journal
//! that starts over reuses seq numbers but never an epoch, so central drops nothing as a repeat.

use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use sqlx::Row;
use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEVICES: usize = 10;

/// What is done to the journal while the gateway is down.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Deleted,
    TruncatedToZero,
    GarbageHeader,
    GarbageMiddle,
    WalLost,
}

/// Every (device, device_seq) of the alarm presses at the central store.
async fn central_presses(pool: &sqlx::PgPool) -> anyhow::Result<HashSet<(String, u32)>> {
    let rows = sqlx::query(
        "SELECT device_id, device_seq FROM events WHERE kind = 'alarm_press' AND device_seq IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    let mut set = HashSet::new();
    for r in rows {
        let (d, s): (String, i64) = (r.get(0), r.get(1));
        set.insert((d, u32::try_from(s)?));
    }
    Ok(set)
}

/// Presses `rounds` times on every device and waits for every ack.
async fn press_all(fleet: &Fleet, rounds: usize) {
    for _ in 0..rounds {
        for d in 1..=DEVICES {
            fleet.send(&button(d), AlarmAction::Press).await;
        }
    }
    assert!(
        fleet.wait_all_acked(Duration::from_secs(120)).await,
        "{} presses unacked",
        fleet.unacked_count()
    );
}

/// Waits until the central store holds every acked press.
async fn central_holds(pool: &sqlx::PgPool, acked: &HashSet<(String, u32)>) {
    let central = eventually(
        Duration::from_secs(120),
        "every acked press at the central store",
        || async {
            // The table exists once the gateway has connected and migrated.
            let c = central_presses(pool).await.unwrap_or_default();
            Ok(acked.is_subset(&c).then_some(c))
        },
    )
    .await;
    let central = match central {
        Ok(c) => c,
        Err(e) => {
            let have = central_presses(pool).await.unwrap_or_default();
            let missing = acked.difference(&have).count();
            panic!("{e}: {missing} of {} acked presses missing", acked.len());
        }
    };
    assert!(acked.is_subset(&central));
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

async fn journal_id(gw: &Gateway) -> String {
    let reader = gw.journal().await.unwrap();
    let id: String = sqlx::query("SELECT journal_id FROM journal_identity")
        .fetch_one(&reader)
        .await
        .unwrap()
        .get(0);
    reader.close().await;
    id
}

/// Copies the WAL into the journal file (a second connection, as `sqlite3` would).
async fn checkpoint(journal: &Path) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(journal)
        .connect()
        .await
        .unwrap();
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let busy: i64 = row.get(0);
    assert_eq!(busy, 0, "the checkpoint did not complete");
}

/// Overwrites `len` bytes at `offset` with a pattern no SQLite page has.
fn scribble(path: &Path, offset: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let garbage: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ 0xA5).collect();
    f.write_all(&garbage).unwrap();
    f.sync_all().unwrap();
}

fn set_aside_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("journal.corrupt-"))
        .collect()
}

async fn journal_damaged_then_every_acked_press_reaches_central(damage: Damage) {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut gw = Gateway::start(&GatewaySpec::new(broker.port, db.url.clone(), DEVICES))
        .await
        .unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "t-fleet"))
        .await
        .unwrap();
    let pool = db.pool().await.unwrap();
    let journal = gw.data_dir.join("journal.db");

    press_all(&fleet, 15).await;
    if matches!(damage, Damage::WalLost) {
        // What was checkpointed survives the loss of the WAL: the identity, the first epoch and
        // these presses. What follows lives only in the WAL.
        checkpoint(&journal).await;
    }
    press_all(&fleet, 15).await;
    if !matches!(damage, Damage::WalLost) {
        // Everything in the main file, so that damaging it damages the journal.
        checkpoint(&journal).await;
    }
    let before = fleet.acked();
    assert_eq!(before.len(), DEVICES * 30);
    let journal_id_before = journal_id(&gw).await;
    central_holds(&pool, &before).await;

    match damage {
        Damage::Deleted => {
            gw.kill9();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(with_suffix(&journal, suffix));
            }
        }
        Damage::TruncatedToZero => {
            assert!(gw.sigterm().unwrap().success());
            std::fs::File::create(&journal).unwrap();
        }
        Damage::GarbageHeader => {
            assert!(gw.sigterm().unwrap().success());
            scribble(&journal, 0, 100);
        }
        Damage::GarbageMiddle => {
            assert!(gw.sigterm().unwrap().success());
            let pages = std::fs::metadata(&journal).unwrap().len() / 4096;
            assert!(pages >= 8, "the journal has only {pages} pages");
            scribble(&journal, pages / 2 * 4096, 4096);
        }
        Damage::WalLost => {
            gw.kill9();
            std::fs::remove_file(with_suffix(&journal, "-wal")).unwrap();
        }
    }
    gw.spawn().await.unwrap();

    press_all(&fleet, 30).await;
    let all = fleet.acked();
    assert_eq!(all.len(), DEVICES * 60);
    central_holds(&pool, &all).await;

    // The new events are in another epoch than the old ones: two keys, one seq.
    let epochs: i64 = sqlx::query("SELECT COUNT(DISTINCT epoch) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert!(epochs >= 2, "only {epochs} epoch(s) at the central store");
    let reused: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT seq FROM events GROUP BY seq HAVING COUNT(*) > 1) s",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert!(
        reused > 0,
        "the new journal should have reused seq numbers (else this test proves nothing)"
    );

    let aside = set_aside_files(&gw.data_dir);
    let reader = gw.journal().await.unwrap();
    let replaced_alerts: i64 =
        sqlx::query("SELECT COUNT(*) FROM alerts WHERE kind = 'journal_replaced'")
            .fetch_one(&reader)
            .await
            .unwrap()
            .get(0);
    let origin: String = sqlx::query("SELECT origin FROM journal_identity")
        .fetch_one(&reader)
        .await
        .unwrap()
        .get(0);
    // A lost WAL leaves the same journal, gone back in time: only the per-start epoch saves it.
    assert_eq!(
        journal_id(&gw).await == journal_id_before,
        matches!(damage, Damage::WalLost)
    );
    if matches!(damage, Damage::GarbageHeader | Damage::GarbageMiddle) {
        assert!(
            aside.iter().any(|n| n.ends_with(".db")),
            "no set-aside journal in {aside:?}"
        );
        assert_eq!(replaced_alerts, 1, "no journal_replaced alert");
        assert!(origin.starts_with("replaced a corrupt journal set aside as"));
        assert_eq!(gw.metric("eldergate_journal_replaced ").await.unwrap(), 1.0);
        let log = std::fs::read_to_string(gw.log_path()).unwrap();
        assert!(log.contains("the journal is corrupt: it was moved aside"));
    } else {
        assert!(aside.is_empty(), "nothing to set aside, yet {aside:?}");
        assert_eq!(replaced_alerts, 0);
        assert_eq!(gw.metric("eldergate_journal_replaced ").await.unwrap(), 0.0);
    }
    eprintln!(
        "{damage:?}: {} presses acked and at central, {epochs} epochs, {reused} seq numbers reused, origin {origin:?}",
        all.len()
    );
    reader.close().await;
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_journal_starts_a_new_epoch_and_central_drops_nothing() {
    journal_damaged_then_every_acked_press_reaches_central(Damage::Deleted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_truncated_to_zero_starts_a_new_epoch_and_central_drops_nothing() {
    journal_damaged_then_every_acked_press_reaches_central(Damage::TruncatedToZero).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_with_a_garbage_header_is_set_aside_and_alarms_flow() {
    journal_damaged_then_every_acked_press_reaches_central(Damage::GarbageHeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_with_a_garbage_page_is_set_aside_and_alarms_flow() {
    journal_damaged_then_every_acked_press_reaches_central(Damage::GarbageMiddle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_lost_after_kill_9_starts_a_new_epoch_and_central_drops_nothing() {
    journal_damaged_then_every_acked_press_reaches_central(Damage::WalLost).await;
}
