//! A full data disk (issue 11, item 3), on a real, small tmpfs holding the journal: alarms are
//! still taken while the disk is nearly full (the reserve is released when a commit fails),
//! routine data is shed and staff are alerted; once space returns, everything the devices sent
//! meanwhile is taken and acked without a restart, and central gets every acked event.
//!
//! Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the test says so and passes.

use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_protocol::topic;
use eldergate_sim::Fleet;
use rumqttc::QoS;
use sqlx::Row;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
const MIB: u64 = 1024 * 1024;
/// Buttons that press during the test; the others only send heartbeats.
const PRESSERS: usize = 8;
const BUTTONS: usize = 200;

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mb`; None (with the reason on stderr) when not permitted.
    fn mount(size_mb: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process not yet reaped): detach it now, it goes when released.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn free_bytes(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0)
}

/// Appends zeros to `path` until at most `leave` bytes are free (or the disk is full).
fn fill(path: &Path, leave: u64) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let n = usize::try_from((free - leave).min(MIB)).unwrap_or(1 << 20);
        match f.write_all(&zeros[..n]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn healthz(gw: &Gateway) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = reqwest::get(gw.url("/healthz")).await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

/// The state of the `disk_low` alert, if there is one.
async fn disk_low_state(gw: &Gateway) -> anyhow::Result<Option<String>> {
    let all: Vec<serde_json::Value> = gw
        .api()
        .get(gw.url("/api/alerts?state=all"))
        .send()
        .await?
        .json()
        .await?;
    Ok(all
        .iter()
        .find(|a| a["kind"] == "disk_low")
        .and_then(|a| a["state"].as_str().map(str::to_string)))
}

async fn journal_presses(gw: &Gateway) -> anyhow::Result<HashSet<(String, u32)>> {
    let pool = gw.journal().await?;
    let rows = sqlx::query("SELECT device_id, device_seq FROM events WHERE kind = 'alarm_press'")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<u32, _>(1)))
        .collect())
}

async fn central_presses(pool: &sqlx::PgPool) -> anyhow::Result<HashSet<(String, u32)>> {
    let rows = sqlx::query(
        "SELECT device_id, device_seq, COUNT(*) FROM events WHERE kind = 'alarm_press' GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut set = HashSet::new();
    for r in rows {
        let (d, s, n): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        anyhow::ensure!(n == 1, "{d}/{s} is at the central store {n} times");
        set.insert((d, u32::try_from(s)?));
    }
    Ok(set)
}

/// Heartbeats from every button that does not press, once a second, until dropped.
fn heartbeats(client: rumqttc::AsyncClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            for i in PRESSERS + 1..=BUTTONS {
                let _ = client
                    .publish(
                        topic::telemetry(SITE, &button(i), "heartbeat"),
                        QoS::AtMostOnce,
                        false,
                        br#"{"v":1,"battery_mv":2950,"battery_pct":81,"rssi":-70}"#.to_vec(),
                    )
                    .await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_alarms_go_on_and_everything_is_acked_once_space_returns() {
    let Some(tmpfs) = Tmpfs::mount(24) else {
        return;
    };
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut spec = GatewaySpec::new(broker.port, db.url.clone(), BUTTONS);
    spec.extra = "[journal]\nreserve_mb = 4\nlow_disk_mb = 8\n".into();
    let data_dir: PathBuf = tmpfs.path().join("data");
    let gw = Gateway::start_with_data_dir(&spec, Some(&data_dir))
        .await
        .unwrap();
    eventually(WAIT, "the disk reserve to be held", || async {
        let (_, h) = healthz(&gw).await?;
        Ok((h["disk"]["reserve_held"] == true).then_some(()))
    })
    .await
    .unwrap();
    let hb = heartbeats(raw_client(broker.port, "t-heartbeats").await);
    let fleet = Fleet::start(fleet_options(broker.port, "t-fleet"))
        .await
        .unwrap();
    let presser = |n: usize| button(n % PRESSERS + 1);

    // 1. Nearly full: ~1 MiB left. Presses go on until a commit fails for lack of space and the
    //    reserve is released; every one of them is acked.
    let ballast = tmpfs.path().join("ballast");
    fill(&ballast, MIB).unwrap();
    let mut sent = 0usize;
    eventually(WAIT, "a commit to fail and the reserve to go", || {
        sent += 1;
        let device = presser(sent);
        let (fleet, gw) = (&fleet, &gw);
        async move {
            fleet.send(&device, AlarmAction::Press).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let released = gw.metric("eldergate_disk_reserve_released_total").await?;
            Ok((released >= 1.0).then_some(()))
        }
    })
    .await
    .unwrap();
    assert!(
        fleet.wait_all_acked(WAIT).await,
        "presses on a nearly full disk must be acked once the reserve is released"
    );
    let acked_nearly_full = fleet.acked();
    let in_journal = journal_presses(&gw).await.unwrap();
    assert!(
        acked_nearly_full.is_subset(&in_journal),
        "every acked press is in the journal"
    );
    eventually(WAIT, "heartbeats to be shed", || async {
        let shed = gw.metric("eldergate_shed_total").await?;
        Ok((shed > 0.0).then_some(()))
    })
    .await
    .unwrap();
    eventually(WAIT, "the disk_low alert", || async {
        Ok(disk_low_state(&gw)
            .await?
            .filter(|s| s == "raised")
            .map(|_| ()))
    })
    .await
    .unwrap();
    eprintln!(
        "nearly full: {sent} presses sent, {} acked",
        acked_nearly_full.len()
    );

    // 2. Full: the released reserve is taken too. Nothing can be committed: presses are not
    //    acked, /healthz says alarms cannot be taken, and the devices retransmit until the
    //    broker's in-flight window for the gateway (1,000) is full of unacked deliveries.
    let ballast2 = tmpfs.path().join("ballast2");
    fill(&ballast2, 0).unwrap();
    let received = || gw.metric("eldergate_mqtt_received_total{connection=\"alarm\"}");
    let received_before = received().await.unwrap();
    let acked_before = fleet.acked().len();
    let mut sent_full = 0usize;
    let mut saw_503 = false;
    let deadline = Instant::now() + WAIT;
    loop {
        sent_full += 1;
        fleet.send(&presser(sent_full), AlarmAction::Press).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        saw_503 |= healthz(&gw).await.unwrap().0 == 503;
        let deliveries = received().await.unwrap() - received_before;
        if saw_503 && deliveries >= f64::from(BrokerLimits::DEPLOY.max_inflight_messages) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 503 or a window not full after {WAIT:?} on a full disk ({deliveries} deliveries)"
        );
    }
    let (status, report) = healthz(&gw).await.unwrap();
    assert_eq!(
        status, 503,
        "alarms cannot be taken on a full disk: {report}"
    );
    let acked_full = fleet.acked().len() - acked_before;
    let deliveries_full = received().await.unwrap() - received_before;
    eprintln!(
        "full: {sent_full} presses sent, {acked_full} acked while full, {deliveries_full} deliveries to the gateway; writer {}",
        report["writer"]
    );

    // 3. Space returns, the gateway keeps running: every press is acked, health and the alert
    //    recover, a new device is heard at once, central gets everything.
    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(&ballast2).unwrap();
    let freed = Instant::now();
    assert!(
        fleet.wait_all_acked(WAIT).await,
        "every press sent while the disk was full is acked once space returns ({} unacked)",
        fleet.unacked_count()
    );
    let all_acked_after = freed.elapsed();
    eventually(WAIT, "/healthz 200 again", || async {
        let (status, _) = healthz(&gw).await?;
        Ok((status == 200).then_some(()))
    })
    .await
    .unwrap();
    eventually(WAIT, "the disk_low alert to resolve", || async {
        Ok(disk_low_state(&gw)
            .await?
            .filter(|s| s == "resolved")
            .map(|_| ()))
    })
    .await
    .unwrap();
    eventually(WAIT, "the disk reserve to be held again", || async {
        let (_, h) = healthz(&gw).await?;
        Ok((h["disk"]["reserve_held"] == true).then_some(()))
    })
    .await
    .unwrap();
    let fresh = Fleet::start(fleet_options(broker.port, "t-fresh"))
        .await
        .unwrap();
    fresh.send(&button(BUTTONS), AlarmAction::Press).await;
    assert!(fresh.wait_all_acked(WAIT).await, "a fresh press is acked");
    let mut acked = fleet.acked();
    acked.extend(fresh.acked());
    assert!(acked.is_subset(&journal_presses(&gw).await.unwrap()));
    let pool = db.pool().await.unwrap();
    eventually(WAIT, "central to hold every acked press", || async {
        let central = central_presses(&pool).await?;
        Ok(acked.is_subset(&central).then_some(()))
    })
    .await
    .unwrap();
    eprintln!(
        "space back: all {} presses acked {all_acked_after:?} after the ballast was removed; retransmissions {}",
        acked.len(),
        fleet.retransmissions()
    );
    hb.abort();
    pool.close().await;
    drop(gw);
    db.drop_db().await;
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_filled_at_once_still_raises_the_alert_and_takes_alarms() {
    let Some(tmpfs) = Tmpfs::mount(24) else {
        return;
    };
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut spec = GatewaySpec::new(broker.port, db.url.clone(), 4);
    spec.extra = "[journal]\nreserve_mb = 4\nlow_disk_mb = 8\n".into();
    let data_dir: PathBuf = tmpfs.path().join("data");
    let gw = Gateway::start_with_data_dir(&spec, Some(&data_dir))
        .await
        .unwrap();
    eventually(WAIT, "the disk reserve to be held", || async {
        let (_, h) = healthz(&gw).await?;
        Ok((h["disk"]["reserve_held"] == true).then_some(()))
    })
    .await
    .unwrap();
    // Something else fills the disk in one go, between two looks of the disk guard: the first
    // commit after it (the guard's own disk_low alert) fails and releases the reserve.
    fill(&tmpfs.path().join("ballast"), 0).unwrap();
    eventually(WAIT, "a commit to fail and the reserve to go", || async {
        let released = gw.metric("eldergate_disk_reserve_released_total").await?;
        Ok((released >= 1.0).then_some(()))
    })
    .await
    .unwrap();
    eventually(WAIT, "the disk_low alert", || async {
        Ok(disk_low_state(&gw)
            .await?
            .filter(|s| s == "raised")
            .map(|_| ()))
    })
    .await
    .unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "t-fleet"))
        .await
        .unwrap();
    fleet.send(&button(1), AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await, "a press is acked");
    assert!(fleet
        .acked()
        .is_subset(&journal_presses(&gw).await.unwrap()));
    drop(gw);
    db.drop_db().await;
    drop(tmpfs);
}
