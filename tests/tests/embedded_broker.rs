//! The embedded broker (rumqttd vendored and patched: ADR 0019, third_party/README.md) is what
//! the demo and single-box installs run the alarm path on. Its per-connection code was changed
//! for memory (buffers grown on use, smaller connection tasks); nothing else in the suite drives
//! it, so this test does: many device connections at once, a storm of them dropping without a
//! DISCONNECT, and the presses of the devices still there acked after commit.

use eldergate_e2e::raw_mqtt::{heartbeat_device, HeartbeatStats};
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use sqlx::Row;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

const DEVICES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_serves_many_connections_survives_a_drop_storm_and_acks_presses() {
    let db = TestDb::create().await.unwrap();
    let port = free_port();
    let spec = GatewaySpec::new(port, db.url.clone(), DEVICES);
    let mut gw = Gateway::prepare_with_broker(
        &spec,
        None,
        &format!("mode = \"embedded\"\nlisten = \"127.0.0.1:{port}\""),
    )
    .unwrap();
    gw.spawn().await.unwrap();

    // Every device on its own connection, a QoS 1 heartbeat each second.
    let stats = Arc::new(HeartbeatStats::default());
    let connecting = Arc::new(tokio::sync::Semaphore::new(64));
    let mut devices = Vec::new();
    for i in 1..=DEVICES {
        let id = button(i);
        let topic = eldergate_protocol::topic::telemetry(SITE, &id, "heartbeat");
        devices.push(tokio::spawn(heartbeat_device(
            port,
            id,
            topic,
            Duration::from_millis(i as u64 % 1000),
            Duration::from_secs(1),
            stats.clone(),
            connecting.clone(),
        )));
    }
    eventually(
        Duration::from_secs(60),
        "every device connected and acked twice",
        || {
            let (c, f, a) = (
                stats.connected.load(Relaxed),
                stats.failed.load(Relaxed),
                stats.acked.load(Relaxed),
            );
            async move {
                anyhow::ensure!(f == 0, "{f} connections refused or lost");
                Ok((c == DEVICES as u64 && a >= 2 * DEVICES as u64).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    assert!(
        gw.metric("eldergate_mqtt_received_total{connection=\"telemetry\"}")
            .await
            .unwrap()
            >= DEVICES as f64,
        "the gateway received the heartbeats through its broker"
    );

    // Half of them drop off at once, without a DISCONNECT (the tasks and their sockets go).
    for d in devices.drain(..DEVICES / 2) {
        d.abort();
    }
    // Presses of twenty buttons through the same broker, acked after commit.
    let fleet = Fleet::start(fleet_options(port, "t-fleet")).await.unwrap();
    for i in 1..=20 {
        fleet.send(&button(i), AlarmAction::Press).await;
    }
    assert!(
        fleet.wait_all_acked(Duration::from_secs(60)).await,
        "presses acked through the embedded broker after the drop storm"
    );
    // The devices still connected keep being served.
    let before = stats.acked.load(Relaxed);
    eventually(
        Duration::from_secs(30),
        "the remaining devices still acked",
        || {
            let a = stats.acked.load(Relaxed);
            async move { Ok((a >= before + DEVICES as u64 / 2).then_some(())) }
        },
    )
    .await
    .unwrap();

    let journal = gw.journal().await.unwrap();
    let presses: i64 =
        sqlx::query("SELECT COUNT(DISTINCT device_id) FROM events WHERE kind = 'alarm_press'")
            .fetch_one(&journal)
            .await
            .unwrap()
            .get(0);
    assert_eq!(presses, 20);
    journal.close().await;
    for d in devices {
        d.abort();
    }
    let status = gw.sigterm().unwrap();
    assert!(status.success(), "gateway exited with {status}");
    db.drop_db().await;
}
