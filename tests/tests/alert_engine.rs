//! The alert engine end to end: escalation ladders, restarts, device supervision, daily check-in,
//! webhooks. Real Mosquitto and PostgreSQL, the real gateway binary; ladders and intervals are
//! configured in seconds so the tests run quickly, and nothing asserts on how fast anything was.

use eldergate_e2e::*;
use eldergate_protocol::payload::{AlarmAction, AlertState, StaffAlert};
use eldergate_protocol::topic;
use eldergate_sim::{Fleet, StaffClient, StaffMessage};
use rumqttc::QoS;
use sqlx::Row;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(60);

struct World {
    _broker: Mosquitto,
    port: u16,
    db: TestDb,
    gw: Gateway,
}

async fn world(buttons: usize, heartbeat_s: u32, extra: &str) -> World {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut spec = GatewaySpec::new(broker.port, db.url.clone(), buttons);
    spec.heartbeat_s = heartbeat_s;
    spec.residents = true;
    spec.extra = extra.to_string();
    let gw = Gateway::start(&spec).await.unwrap();
    World {
        port: broker.port,
        _broker: broker,
        db,
        gw,
    }
}

/// The next alert message matching `pred`.
async fn next(
    rx: &mut tokio::sync::broadcast::Receiver<StaffMessage>,
    what: &str,
    pred: impl Fn(&StaffAlert) -> bool,
) -> StaffAlert {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(StaffMessage::Alert(a, _)) if pred(&a) => return *a,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("staff client stopped: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

const FAST_LADDER: &str = r#"
[escalation.high]
steps = [
  { after_s = 0, notify = ["grid_worker"] },
  { after_s = 1, notify = ["role:duty"] },
  { after_s = 2, notify = ["role:manager"] },
]
repeat_s = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ladder_steps_fire_in_order_to_the_right_people_and_stop_on_ack() {
    let w = world(2, 300, FAST_LADDER).await;
    let staff = StaffClient::start("127.0.0.1", w.port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let fleet = Fleet::start(fleet_options(w.port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;

    let raised = next(&mut heard, "raised", |a| a.change == "raised").await;
    assert_eq!(
        raised.notify,
        ["S001"],
        "step 0 goes to the resident's grid worker (grid G01)"
    );
    assert_eq!(
        raised.resident_name.as_deref(),
        Some("张*1"),
        "names are masked"
    );
    let s1 = next(&mut heard, "step 1", |a| a.change == "escalated").await;
    assert_eq!(
        (s1.step, s1.notify.clone()),
        (1, vec!["S009".to_string(), "S010".to_string()])
    );
    let s2 = next(&mut heard, "step 2", |a| a.change == "escalated").await;
    assert_eq!((s2.step, s2.notify.clone()), (2, vec!["S012".to_string()]));
    let s3 = next(&mut heard, "a repeat", |a| a.change == "escalated").await;
    assert_eq!(
        (s3.step, s3.notify.clone()),
        (3, vec!["S012".to_string()]),
        "after the last step it repeats to the last step's people"
    );

    let r =
        w.gw.api()
            .post(w.gw.url(&format!("/api/alerts/{}/ack", raised.alert_id)))
            .json(&serde_json::json!({"by": "S001", "note": "on my way"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    next(&mut heard, "acknowledged", |a| a.change == "acknowledged").await;
    // With repeats every second, three more seconds would bring three more steps if the ack did
    // not stop the ladder.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let journal = w.gw.journal().await.unwrap();
    let steps: Vec<i64> = sqlx::query("SELECT json_extract(body, '$.step') FROM events WHERE kind = 'alert_escalated' ORDER BY seq")
        .fetch_all(&journal)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let acked_at: i64 =
        sqlx::query("SELECT MAX(seq) FROM events WHERE kind = 'alert_acknowledged'")
            .fetch_one(&journal)
            .await
            .unwrap()
            .get(0);
    let after_ack: i64 =
        sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'alert_escalated' AND seq > ?")
            .bind(acked_at)
            .fetch_one(&journal)
            .await
            .unwrap()
            .get(0);
    assert_eq!(
        after_ack, 0,
        "no escalation after the acknowledgement (steps fired: {steps:?})"
    );
    let (notified, first_at): (i64, Option<String>) = (
        sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'alert_notified'")
            .fetch_one(&journal)
            .await
            .unwrap()
            .get(0),
        sqlx::query("SELECT notified_at FROM alerts")
            .fetch_one(&journal)
            .await
            .unwrap()
            .get(0),
    );
    assert!(
        notified >= 4,
        "raise + 3 steps are recorded as notifications, got {notified}"
    );
    assert!(
        first_at.is_some(),
        "the notified stage is recorded on the alert"
    );
    assert!(
        steps.windows(2).all(|p| p[1] == p[0] + 1),
        "steps in order, none twice: {steps:?}"
    );
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_and_per_person_topic_carry_the_alert() {
    let w = world(2, 300, "").await;
    // S001 is R00002's grid worker: the alert arrives on S001's own topic.
    let personal = format!("eldergate/v1/{SITE}/staff/alerts/S001");
    let (_c, mut mine, ok) = connect_as(w.port, None, "t-s001", Some(&personal)).await;
    assert!(ok);
    let resp =
        w.gw.api()
            .get(w.gw.url("/api/alerts/stream"))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let fleet = Fleet::start(fleet_options(w.port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0002", AlarmAction::Press).await;
    use futures_util::StreamExt;
    let text = tokio::time::timeout(WAIT, async {
        let mut seen = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("btn-0002") {
                return seen;
            }
        }
        seen
    })
    .await
    .unwrap();
    assert!(text.contains("event: alert"), "{text}");
    assert!(text.contains("\"change\":\"raised\""), "{text}");
    let (t, body) = tokio::time::timeout(WAIT, mine.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t, personal);
    let alert: StaffAlert = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert.device_id, "btn-0002");
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_ladder_neither_forgets_nor_double_fires_a_step() {
    let extra = r#"
[escalation.high]
steps = [
  { after_s = 0, notify = ["grid_worker"] },
  { after_s = 2, notify = ["role:duty"] },
  { after_s = 4, notify = ["role:manager"] },
]
"#;
    let mut w = world(2, 300, extra).await;
    let fleet = Fleet::start(fleet_options(w.port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await);
    // Killed before step 1 is due; it must still fire after the restart.
    w.gw.kill9();
    w.gw.spawn().await.unwrap();
    let journal = w.gw.journal().await.unwrap();
    let count = |step: i64| {
        let journal = journal.clone();
        async move {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'alert_escalated' AND json_extract(body, '$.step') = ?")
                .bind(step)
                .fetch_one(&journal)
                .await?
                .get(0);
            anyhow::Ok(n)
        }
    };
    eventually(WAIT, "step 1 after the restart", || async {
        Ok((count(1).await? >= 1).then_some(()))
    })
    .await
    .unwrap();
    // Killed again between step 1 and step 2: step 1 must not fire again, step 2 must fire.
    w.gw.kill9();
    w.gw.spawn().await.unwrap();
    eventually(WAIT, "step 2 after the second restart", || async {
        Ok((count(2).await? >= 1).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(count(1).await.unwrap(), 1, "step 1 fired twice");
    assert_eq!(count(2).await.unwrap(), 1, "step 2 fired twice");
    let republished: i64 = sqlx::query("SELECT COUNT(*) FROM alerts WHERE state = 'raised'")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(republished, 1);
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_devices_go_offline_after_the_grace_and_come_back_online() {
    let extra = "[supervision]\nmissed_heartbeats = 2\ngrace_s = 3\nlow_battery_pct = 20\n";
    // Taken before the gateway starts, so it is no later than the gateway's own grace start.
    let started = std::time::Instant::now();
    let w = world(3, 1, extra).await;
    let staff = StaffClient::start("127.0.0.1", w.port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let hb = raw_client(w.port, "t-heartbeats").await;
    let stop = Arc::new(AtomicUsize::new(0));
    {
        let (hb, stop) = (hb.clone(), stop.clone());
        tokio::spawn(async move {
            while stop.load(Ordering::Relaxed) == 0 {
                for d in ["btn-0001", "btn-0003"] {
                    let _ = hb
                        .publish(
                            topic::telemetry(SITE, d, "heartbeat"),
                            QoS::AtMostOnce,
                            false,
                            br#"{"v":1,"battery_pct":90}"#.to_vec(),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    }
    let offline = next(&mut heard, "an offline alert", |a| {
        a.kind == "device_offline"
    })
    .await;
    assert_eq!(
        offline.device_id, "btn-0002",
        "only the silent device goes offline"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "no offline alert inside the grace period"
    );
    assert_eq!(offline.notify, ["S001"]);
    // It speaks again: resolved automatically, with the gap in the note.
    hb.publish(
        topic::telemetry(SITE, "btn-0002", "heartbeat"),
        QoS::AtMostOnce,
        false,
        br#"{"v":1}"#.to_vec(),
    )
    .await
    .unwrap();
    let back = next(&mut heard, "back online", |a| {
        a.kind == "device_offline" && a.state == AlertState::Resolved
    })
    .await;
    let note = back.resolved.unwrap().note.unwrap();
    assert!(note.contains("back online"), "{note}");
    // A last will saying offline is believed at once.
    hb.publish(
        topic::telemetry(SITE, "btn-0003", "status"),
        QoS::AtLeastOnce,
        true,
        br#"{"v":1,"online":false}"#.to_vec(),
    )
    .await
    .unwrap();
    let gone = next(&mut heard, "offline by last will", |a| {
        a.kind == "device_offline" && a.device_id == "btn-0003" && a.state == AlertState::Raised
    })
    .await;
    assert!(gone.detail.unwrap().contains("last will"));
    stop.store(1, Ordering::Relaxed);
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_battery_is_raised_once_not_every_heartbeat() {
    let w = world(2, 300, "").await;
    let staff = StaffClient::start("127.0.0.1", w.port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let hb = raw_client(w.port, "t-hb").await;
    for _ in 0..5 {
        hb.publish(
            topic::telemetry(SITE, "btn-0001", "heartbeat"),
            QoS::AtLeastOnce,
            false,
            br#"{"v":1,"battery_pct":12}"#.to_vec(),
        )
        .await
        .unwrap();
    }
    let low = next(&mut heard, "low battery", |a| a.kind == "low_battery").await;
    assert_eq!(low.detail.as_deref(), Some("battery 12%"));
    hb.publish(
        topic::telemetry(SITE, "btn-0001", "heartbeat"),
        QoS::AtLeastOnce,
        false,
        br#"{"v":1,"battery_pct":95}"#.to_vec(),
    )
    .await
    .unwrap();
    next(&mut heard, "battery ok", |a| {
        a.kind == "low_battery" && a.state == AlertState::Resolved
    })
    .await;
    let journal = w.gw.journal().await.unwrap();
    let raised: i64 = sqlx::query("SELECT COUNT(*) FROM alerts WHERE kind = 'low_battery'")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(raised, 1);
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_check_in_becomes_a_visit_task_for_the_grid_worker() {
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let now = jiff::Timestamp::now().to_zoned(tz);
    if now.time() > jiff::civil::time(23, 58, 0, 0) {
        eprintln!("skipped: too close to local midnight for a same-day deadline");
        return;
    }
    let deadline = now
        .time()
        .checked_add(jiff::SignedDuration::from_secs(15))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, common::RULES).unwrap();
    let extra = format!(
        "[checkin]\nenabled = true\ndeadline = \"{}\"\n[canteen]\nrules = \"{}\"\ndouble_tap_s = 0\n",
        deadline.strftime("%H:%M:%S"),
        rules.display()
    );
    let w = world(3, 300, &extra).await;
    let staff = StaffClient::start("127.0.0.1", w.port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    // R00002 checks in (double press); R00001 does nothing.
    let fleet = Fleet::start(fleet_options(w.port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0002", AlarmAction::Checkin).await;
    assert!(fleet.wait_all_acked(WAIT).await);
    // R00003 taps their card at the canteen reader (no balance: refused, but they were seen).
    let (_reader, mut answers, ok) = connect_as(
        w.port,
        None,
        "t-reader-down",
        Some(&format!("eldergate/v1/{SITE}/down/rdr-01")),
    )
    .await;
    assert!(ok);
    let reader = raw_client(w.port, "t-reader").await;
    common::publish_tap(
        &reader,
        serde_json::json!({"v": 1, "seq": 1, "card": "CA000003"}),
    )
    .await;
    tokio::time::timeout(WAIT, answers.recv())
        .await
        .expect("the reader's answer")
        .unwrap();
    let task = next(&mut heard, "a missed check-in", |a| {
        a.kind == "missed_checkin"
    })
    .await;
    assert_eq!(task.resident_id.as_deref(), Some("R00001"));
    assert_eq!(
        task.notify,
        ["S001"],
        "the resident's grid worker gets the visit"
    );
    let r = w.gw
        .api()
        .post(w.gw.url(&format!("/api/alerts/{}/resolve", task.alert_id)))
        .json(&serde_json::json!({"by": "S001", "note": "visited at 10:40; resident well, phone was off"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let journal = w.gw.journal().await.unwrap();
    let tasks: Vec<String> =
        sqlx::query("SELECT resident_id FROM alerts WHERE kind = 'missed_checkin'")
            .fetch_all(&journal)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(tasks, ["R00001"]);
    let runs: i64 = sqlx::query("SELECT COUNT(*) FROM checkin_runs")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_target_down_then_up_gets_the_notification() {
    // A webhook receiver that fails its first two requests.
    let hits = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    {
        let (hits, bodies) = (hits.clone(), bodies.clone());
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |body: String| {
                let (hits, bodies) = (hits.clone(), bodies.clone());
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        bodies.lock().unwrap().push(body);
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let extra =
        format!("[[webhooks]]\ntarget = \"S001\"\nurl = \"http://127.0.0.1:{hook_port}/notify\"\n");
    let w = world(2, 300, &extra).await;
    let fleet = Fleet::start(fleet_options(w.port, "t-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    let journal = w.gw.journal().await.unwrap();
    let (attempts, delivered): (i64, Option<String>) =
        eventually(WAIT, "the webhook delivered", || async {
            let row = sqlx::query("SELECT attempts, delivered_at FROM webhook_outbox")
                .fetch_optional(&journal)
                .await?;
            Ok(row
                .map(|r| (r.get::<i64, _>(0), r.get::<Option<String>, _>(1)))
                .filter(|(_, d)| d.is_some()))
        })
        .await
        .unwrap();
    assert!(delivered.is_some());
    assert_eq!(attempts, 3, "two failures, then delivered");
    let body = bodies.lock().unwrap()[0].clone();
    assert!(body.contains("\"device_id\":\"btn-0001\""), "{body}");
    // The alarm itself never waited for the webhook.
    assert!(fleet.wait_all_acked(WAIT).await);
    w.db.drop_db().await;
}
