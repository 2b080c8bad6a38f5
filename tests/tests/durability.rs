//! Durability and exactly-once delivery: the central store goes away, the gateway is killed.

use eldergate_e2e::proxy::Proxy;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use sqlx::Row;
use std::collections::HashSet;
use std::time::Duration;

/// Every (device, device_seq) of the alarm presses at the central store, failing on any that is
/// there more than once.
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
        set.insert((d, s as u32));
    }
    Ok(set)
}

async fn central_count(pool: &sqlx::PgPool) -> i64 {
    // The table exists only once the gateway has connected and migrated.
    sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_store_down_then_back_every_event_arrives_once() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let proxy = Proxy::start(pg_host_port()).await.unwrap();
    let central_url = db.url_via(&format!("127.0.0.1:{}", proxy.port));
    proxy.down();
    let gw = Gateway::start(&GatewaySpec {
        broker_port: broker.port,
        central_url,
        buttons: 10,
        extra: String::new(),
        heartbeat_s: 300,
        residents: false,
        serial: false,
        extra_devices: String::new(),
    })
    .await
    .unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "t-fleet"))
        .await
        .unwrap();
    for round in 0..30 {
        for i in 1..=10 {
            fleet
                .send(
                    &button(i),
                    if round == 0 {
                        AlarmAction::Press
                    } else {
                        AlarmAction::Checkin
                    },
                )
                .await;
        }
    }
    // Alarms are acked and staff are told while the central store is down.
    assert!(
        fleet.wait_all_acked(Duration::from_secs(60)).await,
        "acks must not wait for the central store"
    );
    let backlog = eventually(Duration::from_secs(30), "a backlog", || async {
        let b = gw.metric("eldergate_outbox_backlog").await?;
        Ok((b >= 300.0).then_some(b))
    })
    .await
    .unwrap();
    assert!(backlog >= 300.0);
    assert!(gw.metric("eldergate_forward_failures_total").await.unwrap() >= 1.0);

    proxy.up();
    let pool = db.pool().await.unwrap();
    let journal = gw.journal().await.unwrap();
    let total: i64 = sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    eventually(Duration::from_secs(60), "the backlog to drain", || async {
        Ok((central_count(&pool).await == total).then_some(()))
    })
    .await
    .unwrap();
    // Same rows, each once, and nothing left behind.
    let dupes: i64 = sqlx::query("SELECT COUNT(*) FROM (SELECT device_id, device_seq FROM events WHERE device_seq IS NOT NULL GROUP BY 1, 2 HAVING COUNT(*) > 1) d")
        .fetch_one(&pool).await.unwrap().get(0);
    assert_eq!(dupes, 0);
    eventually(
        Duration::from_secs(30),
        "backlog gauge to reach 0",
        || async { Ok((gw.metric("eldergate_outbox_backlog").await? == 0.0).then_some(())) },
    )
    .await
    .unwrap();
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acked_event_and_duplicates_none() {
    const DEVICES: usize = 100;
    const PRESSES_EACH: usize = 100; // 10,000 presses in all
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut gw = Gateway::start(&GatewaySpec {
        broker_port: broker.port,
        central_url: db.url.clone(),
        buttons: DEVICES,
        extra: String::new(),
        heartbeat_s: 300,
        residents: false,
        serial: false,
        extra_devices: String::new(),
    })
    .await
    .unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "t-fleet"))
        .await
        .unwrap();
    let sender = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            for _ in 0..PRESSES_EACH {
                for d in 1..=DEVICES {
                    fleet.send(&button(d), AlarmAction::Press).await;
                }
            }
        })
    };
    // Kill the gateway once a good part of the burst is acked, while the rest is in flight.
    eventually(
        Duration::from_secs(120),
        "2,000 acks before the kill",
        || async { Ok((fleet.acked().len() >= 2_000).then_some(())) },
    )
    .await
    .unwrap();
    gw.kill9();
    let acked_before_kill = fleet.acked();
    sender.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.spawn().await.unwrap();
    assert!(
        fleet.wait_all_acked(Duration::from_secs(240)).await,
        "{} presses still unacked after restart",
        fleet.unacked_count()
    );
    let acked = fleet.acked();
    assert_eq!(acked.len(), DEVICES * PRESSES_EACH);
    assert!(acked_before_kill.is_subset(&acked));

    let pool = db.pool().await.unwrap();
    let central = eventually(
        Duration::from_secs(120),
        "all presses at the central store",
        || async {
            let c = central_presses(&pool).await?;
            Ok((c.len() >= acked.len()).then_some(c))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        central, acked,
        "the central store must hold exactly the acked presses"
    );
    eprintln!(
        "kill -9 burst: {} presses, {} acked before the kill, {} retransmissions",
        acked.len(),
        acked_before_kill.len(),
        fleet.retransmissions()
    );
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut gw = Gateway::start(&GatewaySpec {
        broker_port: broker.port,
        central_url: db.url.clone(),
        buttons: 10,
        extra: String::new(),
        heartbeat_s: 300,
        residents: false,
        serial: false,
        extra_devices: String::new(),
    })
    .await
    .unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "t-fleet"))
        .await
        .unwrap();
    for _ in 0..50 {
        for d in 1..=10 {
            fleet.send(&button(d), AlarmAction::Press).await;
        }
    }
    eventually(Duration::from_secs(60), "some acks", || async {
        Ok((!fleet.acked().is_empty()).then_some(()))
    })
    .await
    .unwrap();
    let status = gw.sigterm().unwrap();
    assert!(status.success(), "gateway exited with {status}");
    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    assert!(
        log.contains("gateway stopped cleanly"),
        "no clean-stop line in the log"
    );
    gw.spawn().await.unwrap();
    assert!(fleet.wait_all_acked(Duration::from_secs(60)).await);
    let journal = gw.journal().await.unwrap();
    let presses: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'alarm_press'")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(presses, 500);
    db.drop_db().await;
}
