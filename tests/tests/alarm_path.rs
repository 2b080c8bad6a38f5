//! The alarm path end to end: real Mosquitto, real PostgreSQL, the real gateway binary.

use eldergate_e2e::*;
use eldergate_protocol::payload::{AlarmAction, AlertState, StaffVerb};
use eldergate_protocol::topic;
use eldergate_sim::{Fleet, StaffClient, StaffMessage};
use rumqttc::QoS;
use sqlx::Row;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct World {
    _broker: Mosquitto,
    broker_port: u16,
    db: TestDb,
    gw: Gateway,
}

async fn world(buttons: usize) -> World {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = Gateway::start(&GatewaySpec {
        broker_port: broker.port,
        central_url: db.url.clone(),
        buttons,
        extra: String::new(),
        heartbeat_s: 300,
        residents: false,
        serial: false,
        extra_devices: String::new(),
    })
    .await
    .unwrap();
    World {
        broker_port: broker.port,
        _broker: broker,
        db,
        gw,
    }
}

async fn next_alert(
    rx: &mut tokio::sync::broadcast::Receiver<StaffMessage>,
    change: &str,
) -> eldergate_protocol::payload::StaffAlert {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(StaffMessage::Alert(a, _)) = rx.recv().await {
                if a.change == change {
                    return *a;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {change} alert within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_is_acked_only_after_commit() {
    let w = world(20).await;
    let fleet = Fleet::start(fleet_options(w.broker_port, "t-fleet"))
        .await
        .unwrap();
    let journal = w.gw.journal().await.unwrap();
    for round in 0..10 {
        for i in 1..=20 {
            fleet
                .send(
                    &button(i),
                    if round % 3 == 2 {
                        AlarmAction::Checkin
                    } else {
                        AlarmAction::Press
                    },
                )
                .await;
        }
    }
    // Check each ack as soon as it is seen: the event must already be in the journal.
    let mut checked = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while checked.len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 200 acked",
            checked.len()
        );
        for (device, seq) in fleet.acked() {
            if checked.insert((device.clone(), seq)) {
                let n: i64 = sqlx::query(
                    "SELECT COUNT(*) FROM events WHERE device_id = ? AND device_seq = ?",
                )
                .bind(&device)
                .bind(i64::from(seq))
                .fetch_one(&journal)
                .await
                .unwrap()
                .get(0);
                assert_eq!(
                    n, 1,
                    "{device}/{seq} was acked but is not (once) in the journal"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_retransmission_gives_one_alert() {
    let w = world(3).await;
    let staff = StaffClient::start("127.0.0.1", w.broker_port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let raw = raw_client(w.broker_port, "t-raw").await;
    // Listen to the device's downlink to count acks.
    let acks = raw_client(w.broker_port, "t-acks").await;
    let _ = acks;
    let payload = br#"{"v":1,"seq":7,"action":"press","ts":1700000000000}"#;
    for _ in 0..3 {
        raw.publish(
            topic::alarm(SITE, "btn-0001"),
            QoS::AtLeastOnce,
            false,
            payload.to_vec(),
        )
        .await
        .unwrap();
    }
    let raised = next_alert(&mut heard, "raised").await;
    assert_eq!(raised.press_count, 1);
    let journal = w.gw.journal().await.unwrap();
    eventually(WAIT, "three acks (one per copy)", || async {
        Ok((w.gw.metric("eldergate_device_acks_total").await? >= 3.0).then_some(()))
    })
    .await
    .unwrap();
    let presses: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'alarm_press'")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    let alerts: i64 = sqlx::query("SELECT COUNT(*) FROM alerts")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!((presses, alerts), (1, 1));
    assert_eq!(
        w.gw.metric("eldergate_duplicates_total").await.unwrap(),
        2.0
    );
    // The device clock is years off (ts 2023): kept, not dropped, and counted.
    assert!(
        w.gw.metric("eldergate_device_clock_skew_total")
            .await
            .unwrap()
            >= 1.0
    );
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_presses_join_the_open_alert_and_a_cancel_is_recorded() {
    let w = world(3).await;
    let staff = StaffClient::start("127.0.0.1", w.broker_port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let fleet = Fleet::start(fleet_options(w.broker_port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0002", AlarmAction::Press).await;
    let first = next_alert(&mut heard, "raised").await;
    fleet.send("btn-0002", AlarmAction::Press).await;
    fleet.send("btn-0002", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await);
    let open: Vec<serde_json::Value> =
        w.gw.api()
            .get(w.gw.url("/api/alerts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["alert_id"], first.alert_id);
    assert_eq!(open[0]["press_count"], 3);
    fleet.send("btn-0002", AlarmAction::Cancel).await;
    let cancelled = next_alert(&mut heard, "cancelled").await;
    assert_eq!(cancelled.state, AlertState::Cancelled);
    let journal = w.gw.journal().await.unwrap();
    let kinds: Vec<String> =
        sqlx::query("SELECT kind FROM events WHERE kind != 'alert_notified' ORDER BY seq")
            .fetch_all(&journal)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(
        kinds,
        [
            "alarm_press",
            "alert_raised",
            "alarm_press",
            "alarm_press",
            "alarm_cancel",
            "alert_cancelled"
        ]
    );
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_acknowledge_over_mqtt_and_resolve_over_http() {
    let w = world(3).await;
    let staff = StaffClient::start("127.0.0.1", w.broker_port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let fleet = Fleet::start(fleet_options(w.broker_port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0003", AlarmAction::Press).await;
    let alert = next_alert(&mut heard, "raised").await;
    assert_eq!(alert.notify, ["S009", "S010"]);

    staff
        .command(
            StaffVerb::Ack,
            alert.alert_id,
            "S009",
            Some("on my way"),
            Some("r1"),
        )
        .await
        .unwrap();
    let acked = next_alert(&mut heard, "acknowledged").await;
    let a = acked.acknowledged.as_ref().unwrap();
    assert_eq!(
        (a.by.as_str(), a.via.as_str(), a.note.as_deref()),
        ("S009", "mqtt", Some("on my way"))
    );

    // A second person acknowledging is told who has it; an unknown staff id is refused.
    staff
        .command(StaffVerb::Ack, alert.alert_id, "S010", None, Some("r2"))
        .await
        .unwrap();
    let result = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(StaffMessage::Result(r)) = heard.recv().await {
                if r.request_id.as_deref() == Some("r2") {
                    return r;
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(!result.ok);
    assert!(result.error.unwrap().contains("S009"));

    let http = w.gw.api();
    let r = http
        .post(w.gw.url(&format!("/api/alerts/{}/resolve", alert.alert_id)))
        .json(&serde_json::json!({"by": "S404"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "an unknown staff id is an invalid request");
    let r = http
        .post(w.gw.url(&format!("/api/alerts/{}/resolve", alert.alert_id)))
        .json(&serde_json::json!({"by": "S010", "note": "visited; fell, called 120"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["state"], "resolved");
    assert_eq!(body["resolved"]["via"], "http");
    assert_eq!(body["acknowledged"]["by"], "S009");
    let r = http
        .post(w.gw.url("/api/alerts/999/ack"))
        .json(&serde_json::json!({"by": "S010"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(w.gw.url("/api/alerts/1/ack"))
        .body("{oops")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let resolved = next_alert(&mut heard, "resolved").await;
    assert_eq!(resolved.alert_id, alert.alert_id);
    // The resolved alert is no longer open, and a new press raises a new alert.
    fleet.send("btn-0003", AlarmAction::Press).await;
    let again = next_alert(&mut heard, "raised").await;
    assert_ne!(again.alert_id, alert.alert_id);
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_becomes_dead_letters_and_nothing_stops() {
    let w = world(3).await;
    let raw = raw_client(w.broker_port, "t-raw").await;
    let good = br#"{"v":1,"seq":1,"action":"press"}"#.to_vec();
    let cases: Vec<(String, Vec<u8>)> = vec![
        (
            topic::alarm(SITE, "btn-0001"),
            b"{this is not json".to_vec(),
        ),
        (topic::alarm(SITE, "btn-9999"), good.clone()),
        (format!("eldergate/v2/{SITE}/alarm/btn-0001"), good.clone()),
        (
            topic::alarm(SITE, "btn-0001"),
            br#"{"v":9,"seq":1,"action":"press"}"#.to_vec(),
        ),
        (topic::alarm(SITE, "btn-0001"), vec![b'x'; 10_000]),
        (topic::alarm(SITE, "rdr-01"), good.clone()),
        (
            topic::telemetry(SITE, "btn-0001", "heartbeat"),
            br#"{"v":1,"battery_pct":250}"#.to_vec(),
        ),
        (
            topic::telemetry(SITE, "btn-0001", "weather"),
            br#"{"v":1}"#.to_vec(),
        ),
        (
            topic::staff_cmd(SITE, "S009"),
            br#"{"v":1,"cmd":"explode","alert_id":1,"by":"S009"}"#.to_vec(),
        ),
    ];
    for (t, p) in &cases {
        raw.publish(t.clone(), QoS::AtLeastOnce, false, p.clone())
            .await
            .unwrap();
    }
    let journal = w.gw.journal().await.unwrap();
    let reasons: Vec<String> = eventually(WAIT, "a dead letter per bad input", || async {
        let rows = sqlx::query("SELECT reason FROM dead_letters ORDER BY id")
            .fetch_all(&journal)
            .await?;
        Ok((rows.len() >= cases.len())
            .then(|| rows.iter().map(|r| r.get::<String, _>(0)).collect()))
    })
    .await
    .unwrap();
    let mut sorted = reasons.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "bad_topic",
            "malformed_json",
            "malformed_json",
            "malformed_json",
            "oversize",
            "unknown_device",
            "unknown_version",
            "unknown_version",
            "wrong_device_kind"
        ],
    );
    assert_eq!(
        w.gw.metric("eldergate_rejected_total").await.unwrap(),
        cases.len() as f64
    );
    let oversize: (i64, i64) = sqlx::query(
        "SELECT payload_len, length(payload) FROM dead_letters WHERE reason = 'oversize'",
    )
    .fetch_one(&journal)
    .await
    .map(|r| (r.get(0), r.get(1)))
    .unwrap();
    assert_eq!(oversize, (10_000, 4096));
    // The gateway is still fine: a good press goes through.
    let fleet = Fleet::start(fleet_options(w.broker_port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await);
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_update_device_status_without_becoming_events() {
    let w = world(2).await;
    let raw = raw_client(w.broker_port, "t-raw").await;
    raw.publish(
        topic::telemetry(SITE, "btn-0001", "heartbeat"),
        QoS::AtMostOnce,
        false,
        br#"{"v":1,"battery_mv":2950,"battery_pct":81,"rssi":-70}"#.to_vec(),
    )
    .await
    .unwrap();
    let journal = w.gw.journal().await.unwrap();
    let pct: i64 = eventually(WAIT, "device status row", || async {
        let row = sqlx::query("SELECT battery_pct FROM device_status WHERE device_id = 'btn-0001'")
            .fetch_optional(&journal)
            .await?;
        Ok(row.map(|r| r.get(0)))
    })
    .await
    .unwrap();
    assert_eq!(pct, 81);
    let events: i64 = sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0);
    w.db.drop_db().await;
}
