//! Operations on a gateway's journal (docs/adr/0014): `eldergate backup` while it runs,
//! `eldergate restore` while it is stopped (continuing without reusing a sequence number), and
//! a journal made by an earlier release (tests/fixtures/) opened and migrated by this one.

use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use sqlx::Row;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEVICES: usize = 5;

/// The journal fixture: made by the 2026-11-30 release (journal migrations 0001–0003) with the
/// harness's test config (site `test-site`, gateway `gw-test`, buttons btn-0001…0005) by the
/// ignored test `make_journal_fixture` below.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journal-2026-11-30.db")
}

fn eldergate(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("eldergate"))
        .args(args)
        .output()
        .expect("the eldergate binary runs")
}

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

async fn journal_presses(j: &sqlx::SqlitePool) -> HashSet<(String, i64)> {
    sqlx::query("SELECT device_id, device_seq FROM events WHERE kind = 'alarm_press'")
        .fetch_all(j)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The presses central holds; none while the forwarder has not yet made central's schema.
async fn central_presses(pool: &sqlx::PgPool) -> HashSet<(String, i64)> {
    sqlx::query("SELECT device_id, device_seq FROM events WHERE kind = 'alarm_press'")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn central_holds(pool: &sqlx::PgPool, want: &HashSet<(String, i64)>) {
    eventually(Duration::from_secs(120), "the presses at central", || {
        let pool = pool.clone();
        async move { Ok(want.is_subset(&central_presses(&pool).await).then_some(())) }
    })
    .await
    .unwrap();
}

async fn max_seq(j: &sqlx::SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
        .fetch_one(j)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_running_restores_and_continues_without_reusing_a_seq() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut gw = Gateway::start(&GatewaySpec::new(broker.port, db.url.clone(), DEVICES))
        .await
        .unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "ops-fleet"))
        .await
        .unwrap();
    let pool = db.pool().await.unwrap();
    let config = gw.config.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("journal-backup.db");

    press_all(&fleet, 10).await;
    // Backed up while presses keep coming.
    let pressing = {
        let fleet = fleet.clone();
        tokio::spawn(async move { press_all(&fleet, 10).await })
    };
    let out = eldergate(&[
        "backup",
        "--config",
        &config,
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["max_seq"].as_i64().unwrap() > 0, "{summary}");
    pressing.await.unwrap();
    // A second backup to the same file is refused; nothing is overwritten.
    let again = eldergate(&[
        "backup",
        "--config",
        &config,
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    // Restore is refused while the gateway runs.
    let refused = eldergate(&[
        "restore",
        "--config",
        &config,
        "--from",
        backup.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop it first"));

    press_all(&fleet, 5).await;
    let j = gw.journal().await.unwrap();
    let before = journal_presses(&j).await;
    let old_max = max_seq(&j).await;
    j.close().await;
    central_holds(&pool, &before).await;
    assert!(gw.sigterm().unwrap().success());

    let out = eldergate(&[
        "restore",
        "--config",
        &config,
        "--from",
        backup.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("restore: {summary:#}");
    assert!(
        summary["seq_floor"].as_i64().unwrap() >= old_max,
        "{summary}"
    );
    assert!(
        summary["backup_max_seq"].as_i64().unwrap() < old_max,
        "{summary}"
    );
    let aside = PathBuf::from(summary["replaced_moved_to"].as_str().unwrap());
    assert!(aside.exists(), "the replaced journal was not kept");

    gw.spawn().await.unwrap();
    press_all(&fleet, 4).await;
    let j = gw.journal().await.unwrap();
    let new_seqs: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM events WHERE seq > (SELECT seq FROM events WHERE kind = 'journal_restored')",
    )
    .fetch_all(&j)
    .await
    .unwrap();
    assert!(!new_seqs.is_empty());
    assert!(
        new_seqs.iter().all(|s| *s > old_max),
        "a seq at or below {old_max} was reused"
    );
    let after = journal_presses(&j).await;
    let mut all = before.clone();
    all.extend(after);
    central_holds(&pool, &all).await;
    // At central no seq of this gateway appears twice: nothing was reused.
    let reused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT seq FROM events GROUP BY seq HAVING count(*) > 1) r",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reused, 0, "seq numbers reused at central");
    let restored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'journal_restored'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(restored, 1);
    j.close().await;
    drop(gw);
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_made_by_the_2026_11_30_release_opens_migrates_and_continues() {
    let fixture = fixture();
    assert!(fixture.exists(), "{} is missing", fixture.display());
    let (fixture_max, fixture_presses, fixture_id) = {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&fixture)
            .read_only(true);
        let j = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let id: String = sqlx::query_scalar("SELECT journal_id FROM journal_identity")
            .fetch_one(&j)
            .await
            .unwrap();
        let r = (max_seq(&j).await, journal_presses(&j).await, id);
        j.close().await;
        r
    };
    assert!(!fixture_presses.is_empty());
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = GatewaySpec::new(broker.port, db.url.clone(), DEVICES);
    let mut gw = Gateway::prepare(&spec, None).unwrap();
    std::fs::create_dir_all(&gw.data_dir).unwrap();
    std::fs::copy(&fixture, gw.data_dir.join("journal.db")).unwrap();
    gw.spawn().await.unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "fixture-fleet"))
        .await
        .unwrap();
    // The buttons carry on from the numbers the fixture already holds (a fleet starting at 1 again
    // would only send what the gateway takes as retransmissions of old presses).
    let mut last = std::collections::HashMap::new();
    for (device, seq) in &fixture_presses {
        let l = last.entry(device.clone()).or_insert(*seq);
        *l = (*l).max(*seq);
    }
    for (device, seq) in last {
        fleet.continue_after(&device, u32::try_from(seq).unwrap());
    }
    press_all(&fleet, 3).await;
    let j = gw.journal().await.unwrap();
    // The same journal (identity kept), every migration of this release applied, new events
    // above the old ones, old and new at central.
    let id: String = sqlx::query_scalar("SELECT journal_id FROM journal_identity")
        .fetch_one(&j)
        .await
        .unwrap();
    assert_eq!(id, fixture_id);
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE NOT success")
        .fetch_one(&j)
        .await
        .unwrap();
    assert_eq!(failed, 0);
    let newest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&j)
        .await
        .unwrap();
    let known = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/migrations/journal"),
    )
    .unwrap()
    .filter_map(|e| {
        e.ok()?
            .file_name()
            .to_str()?
            .split('_')
            .next()?
            .parse::<i64>()
            .ok()
    })
    .max()
    .unwrap();
    assert_eq!(
        newest, known,
        "the fixture journal was not migrated to this release"
    );
    let new_min: i64 =
        sqlx::query_scalar("SELECT min(seq) FROM events WHERE kind = 'alarm_press' AND seq > ?")
            .bind(fixture_max)
            .fetch_one(&j)
            .await
            .unwrap();
    assert!(new_min > fixture_max);
    let mut all = fixture_presses.clone();
    all.extend(journal_presses(&j).await);
    assert!(all.len() > fixture_presses.len());
    let pool = db.pool().await.unwrap();
    central_holds(&pool, &all).await;
    j.close().await;
    drop(gw);
    pool.close().await;
    db.drop_db().await;
}

/// Makes tests/fixtures/journal-new.db with this build (run once per release, rename it to
/// journal-<date>.db and commit). The central store is unreachable while it runs, so the
/// fixture holds a backlog the next release must forward:
/// `cargo nextest run --workspace -E 'test(make_journal_fixture)' --run-ignored only`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn make_journal_fixture() {
    let broker = Mosquitto::start().unwrap();
    let mut gw = Gateway::start(&GatewaySpec::new(
        broker.port,
        "postgres://postgres@127.0.0.1:9/down".into(),
        DEVICES,
    ))
    .await
    .unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "mk-fleet"))
        .await
        .unwrap();
    press_all(&fleet, 4).await;
    assert!(gw.sigterm().unwrap().success());
    let journal = gw.data_dir.join("journal.db");
    let st = Command::new("sqlite3")
        .arg(&journal)
        .arg("PRAGMA wal_checkpoint(TRUNCATE);")
        .status()
        .unwrap();
    assert!(st.success());
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journal-new.db");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::copy(&journal, &out).unwrap();
    println!("wrote {}", out.display());
}
