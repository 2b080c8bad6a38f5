//! The firmware simulator against the real gateway: the firmware's own button and card-reader
//! logic, on the host, over MQTT and over a pty. A press is acknowledged and raised once, also
//! across a gateway restart; a press after a restart of a simulator that keeps its sequence
//! numbers (`--seq-dir`) is a new press, not a retransmission; a reader shows the settlement
//! answer; heartbeats reach the journal.
//!
//! No timed assertions: every wait is for an outcome, with a generous deadline.

use eldergate_e2e::*;
use eldergate_sim::{
    card_uid, run, script, DisplayLog, FirmwareDevices, FirmwareFleet, ScriptedSeniors, Shown,
    StaffClient, StaffMessage,
};
use sqlx::Row;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

fn devices(buttons: &[&str], readers: &[&str], heartbeat: Option<Duration>) -> FirmwareFleet {
    FirmwareDevices {
        buttons: buttons.iter().map(|s| s.to_string()).collect(),
        readers: readers.iter().map(|s| s.to_string()).collect(),
        heartbeat_every: heartbeat,
        print_displays: false,
        counter_price_fen: None,
    }
    .build()
}

/// Runs `fleet` in the background; send on the returned channel to stop it and get it back.
fn start(
    fleet: FirmwareFleet,
    link: eldergate_sim::SimLink,
    senior: impl eldergate_sim::Senior + 'static,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<FirmwareFleet>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(fleet, link, senior, async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, task)
}

/// A resident at a reader: holds each card in turn, and holds it again when the terminal shows
/// its timeout message (as the message asks), until the terminal shows an answer for it.
fn patient_resident(cards: Vec<String>) -> impl FnMut(&FirmwareFleet, Duration) + Send {
    let mut next = 0usize;
    let mut seen = 0usize;
    let mut holding = false;
    move |fleet, _now| {
        let Some(reader) = fleet.readers.first() else {
            return;
        };
        let shown = fleet.displays.all();
        for s in &shown[seen.min(shown.len())..] {
            // An answer ends this card's turn; a timeout means: tap again.
            if s.result.is_some() {
                next += 1;
            }
            holding = false;
        }
        seen = shown.len();
        if !holding && reader.cards.waiting() == 0 {
            if let Some(uid) = cards.get(next).and_then(|c| card_uid(c)) {
                reader.cards.hold(uid);
                holding = true;
            }
        }
    }
}

/// Waits until `log` holds `n` answers (not timeout messages); returns them.
async fn answers(log: &DisplayLog, n: usize) -> Vec<Shown> {
    eventually(WAIT, "answers on the reader's display", || async {
        let got: Vec<Shown> = log
            .all()
            .into_iter()
            .filter(|s| s.result.is_some())
            .collect();
        Ok((got.len() >= n).then_some(got))
    })
    .await
    .unwrap()
}

async fn count(journal: &sqlx::SqlitePool, sql: &str, device: &str) -> i64 {
    sqlx::query(sql)
        .bind(device)
        .fetch_one(journal)
        .await
        .unwrap()
        .get(0)
}

/// Counts the `raised` staff alerts of `device` heard from now on.
async fn count_raised(broker_port: u16, device: &'static str) -> Arc<AtomicUsize> {
    let staff = StaffClient::start("127.0.0.1", broker_port, SITE, "t-staff", None)
        .await
        .unwrap();
    let raised = Arc::new(AtomicUsize::new(0));
    let (r, mut rx) = (raised.clone(), staff.subscribe());
    tokio::spawn(async move {
        let _keep = staff;
        while let Ok(m) = rx.recv().await {
            if let StaffMessage::Alert(a, _) = m {
                if a.device_id == device && a.change == "raised" {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    raised
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_press_over_mqtt_is_acked_and_raised_once_and_heartbeats_arrive() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = Gateway::start(&GatewaySpec::new(broker.port, db.url.clone(), 3))
        .await
        .unwrap();
    let raised = count_raised(broker.port, "btn-0001").await;
    let fleet = devices(&["btn-0001", "btn-0002"], &[], Some(Duration::from_secs(1)));
    let (stats, first_seq) = (fleet.stats(), fleet.buttons[0].firmware.outbox.next_seq());
    let senior = ScriptedSeniors::new(script::parse("0.2 btn-0001 press").unwrap(), &[]);
    let link = firmware_mqtt_link(broker.port, "t-firmware").await.unwrap();
    let (stop, task) = start(fleet, link, senior);

    let acked = eventually(WAIT, "the ACK of the press", || async {
        Ok(stats.acked().into_iter().find(|a| a.device == "btn-0001"))
    })
    .await
    .unwrap();
    assert_eq!(acked.seq, first_seq, "the press carries the firmware's seq");
    eventually(WAIT, "the staff alert", || async {
        Ok((raised.load(Ordering::Relaxed) >= 1).then_some(()))
    })
    .await
    .unwrap();
    let journal = gw.journal().await.unwrap();
    eventually(WAIT, "battery heartbeats of both buttons", || async {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM device_status WHERE device_id IN ('btn-0001','btn-0002') AND battery_mv BETWEEN 2000 AND 3000 AND battery_pct <= 100",
        )
        .fetch_one(&journal)
        .await?
        .get(0);
        Ok((n == 2).then_some(()))
    })
    .await
    .unwrap();
    let _ = stop.send(());
    let fleet = task.await.unwrap();
    assert!(fleet.buttons.iter().all(|b| b.firmware.outbox.is_idle()));

    let presses = "SELECT COUNT(*) FROM events WHERE kind = 'alarm_press' AND device_id = ?";
    assert_eq!(count(&journal, presses, "btn-0001").await, 1);
    let alerts = "SELECT COUNT(*) FROM alerts WHERE kind = 'sos' AND device_id = ?";
    assert_eq!(count(&journal, alerts, "btn-0001").await, 1);
    assert_eq!(raised.load(Ordering::Relaxed), 1, "raised exactly once");
    assert_eq!(
        count(&journal, presses, "btn-0002").await,
        0,
        "nobody pressed btn-0002"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_button_over_mqtt_retransmits_across_a_gateway_restart() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut gw = Gateway::start(&GatewaySpec::new(broker.port, db.url.clone(), 3))
        .await
        .unwrap();
    gw.kill9();
    let fleet = devices(&["btn-0002"], &[], None);
    let (stats, first_seq) = (fleet.stats(), fleet.buttons[0].firmware.outbox.next_seq());
    let senior = ScriptedSeniors::new(script::parse("0.2 btn-0002 press").unwrap(), &[]);
    let link = firmware_mqtt_link(broker.port, "t-firmware").await.unwrap();
    let (stop, task) = start(fleet, link, senior);
    // The press happens while the gateway is down; it comes back 3 s later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.spawn().await.expect("the gateway restarted");

    // The firmware backs off 1, 2, 4, 8, 16, 30 s: allow for the ~62 s retransmission.
    eventually(
        Duration::from_secs(120),
        "the ACK after the restart",
        || async { Ok((!stats.acked().is_empty()).then_some(())) },
    )
    .await
    .unwrap();
    let _ = stop.send(());
    let fleet = task.await.unwrap();
    assert!(
        eldergate_sim::SimStats::get(&stats.retransmissions) >= 1,
        "the firmware retransmitted while the gateway was down"
    );
    assert_eq!(fleet.buttons[0].firmware.outbox.next_seq(), first_seq + 1);
    let journal = gw.journal().await.unwrap();
    let rows = sqlx::query(
        "SELECT device_seq FROM events WHERE kind = 'alarm_press' AND device_id = 'btn-0002'",
    )
    .fetch_all(&journal)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "one press, however many retransmissions");
    assert_eq!(rows[0].get::<i64, _>(0), i64::from(first_seq));
    let alerts = "SELECT COUNT(*) FROM alerts WHERE kind = 'sos' AND device_id = ?";
    assert_eq!(count(&journal, alerts, "btn-0002").await, 1);
    db.drop_db().await;
}

/// One run of the simulator with `seq_dir`: btn-0004 presses once; returns the press's seq (as
/// ACKed), the mark the button persisted, and its failed stores.
async fn press_once_with_seq_dir(broker_port: u16, seq_dir: &Path, run: u32) -> (u32, u32, u64) {
    let fleet = FirmwareDevices {
        buttons: vec!["btn-0004".into()],
        readers: vec![],
        heartbeat_every: None,
        print_displays: false,
        counter_price_fen: None,
    }
    .build_with_seq_dir(Some(seq_dir))
    .unwrap();
    let (stats, first_seq) = (fleet.stats(), fleet.buttons[0].firmware.outbox.next_seq());
    let senior = ScriptedSeniors::new(script::parse("0.2 btn-0004 press").unwrap(), &[]);
    let link = firmware_mqtt_link(broker_port, &format!("t-firmware-run{run}"))
        .await
        .unwrap();
    let (stop, task) = start(fleet, link, senior);
    let acked = eventually(WAIT, "the ACK of the press", || async {
        Ok(stats.acked().into_iter().find(|a| a.device == "btn-0004"))
    })
    .await
    .unwrap();
    let _ = stop.send(());
    let fleet = task.await.unwrap();
    assert_eq!(
        acked.seq, first_seq,
        "run {run}: the press carries the first seq"
    );
    let mark = fleet.buttons[0].seqs().expect("a persisted button").mark();
    let stored = std::fs::read_to_string(seq_dir.join("btn-0004.seq")).unwrap();
    assert_eq!(
        stored.trim(),
        mark.to_string(),
        "run {run}: the mark is on disk"
    );
    (
        acked.seq,
        mark,
        eldergate_sim::SimStats::get(&stats.seq_store_errors),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_after_a_simulator_restart_with_a_seq_dir_is_a_new_press_not_a_retransmission() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = Gateway::start(&GatewaySpec::new(broker.port, db.url.clone(), 4))
        .await
        .unwrap();
    let seq_dir = tempfile::tempdir().unwrap();
    let journal = gw.journal().await.unwrap();
    let presses = "SELECT device_seq FROM events WHERE kind = 'alarm_press' AND device_id = 'btn-0004' ORDER BY seq";
    let press_count =
        "SELECT COALESCE(SUM(press_count), 0) FROM alerts WHERE kind = 'sos' AND device_id = ?";

    let (first, first_mark, errors) = press_once_with_seq_dir(broker.port, seq_dir.path(), 1).await;
    assert_eq!(errors, 0);
    assert!(
        first_mark > first,
        "a mark above the press was persisted before it was sent"
    );
    let rows = sqlx::query(presses).fetch_all(&journal).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(count(&journal, press_count, "btn-0004").await, 1);

    // The simulator stops and starts again, building its devices from the same directory.
    let (second, second_mark, errors) =
        press_once_with_seq_dir(broker.port, seq_dir.path(), 2).await;
    assert_eq!(errors, 0);
    assert!(
        second >= first_mark,
        "the restarted button starts at the stored mark {first_mark}, got {second}"
    );
    assert!(second_mark > second);

    // ACKed after commit: the second press is in the journal as an event of its own.
    let seqs: Vec<i64> = sqlx::query(presses)
        .fetch_all(&journal)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        seqs,
        [i64::from(first), i64::from(second)],
        "two presses, the second not taken for a retransmission"
    );
    assert_eq!(
        count(&journal, press_count, "btn-0004").await,
        2,
        "the second press counts at the alert"
    );
    db.drop_db().await;
}

/// A canteen gateway whose roster gives R00001 card CA000001, with ¥20.00 on it.
async fn canteen_gateway(dir: &Path, broker_port: u16, db: &TestDb, extra: &str) -> Gateway {
    let rules = all_day_canteen_rules(dir).unwrap();
    let mut spec = GatewaySpec::new(broker_port, db.url.clone(), 2);
    spec.residents = true;
    spec.serial = extra.contains("[[serial]]");
    spec.extra = format!(
        "{extra}[canteen]\nrules = \"{}\"\ndouble_tap_s = 600\n",
        rules.display()
    );
    let gw = Gateway::start(&spec).await.unwrap();
    let r = gw
        .api()
        .post(gw.url("/api/residents/R00001/topup"))
        .json(&serde_json::json!({"amount_fen": 2000, "by": "S013"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw
}

/// The roster card of R00001 (from the gateway's own config), then a card nobody registered.
fn cards_to_tap(gw: &Gateway) -> Vec<String> {
    let loaded = eldergate::config::load(&gw.config).unwrap();
    let roster = eldergate_sim::roster_cards(&loaded);
    assert!(roster.contains(&"CA000001".to_string()), "{roster:?}");
    vec!["CA000001".into(), "EE0000FF".into()]
}

/// Paid ¥15.00 − 10% = ¥13.50 from ¥20.00: ¥6.50 left; then "unknown card".
fn assert_answers(shown: &[Shown]) {
    assert_eq!(shown[0].result, Some(0), "{shown:?}");
    assert_eq!(shown[0].balance_fen, Some(650), "charged once: {shown:?}");
    assert!(shown[0].text.contains("¥13.50") && shown[0].text.contains("¥6.50"));
    assert!(shown[0].text.contains("张*1"), "the masked name: {shown:?}");
    assert_eq!(shown[1].result, Some(1), "{shown:?}");
    assert!(shown[1].text.contains("unknown card"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_reader_over_mqtt_shows_the_settlement_answer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = canteen_gateway(dir.path(), broker.port, &db, "").await;
    let link = firmware_mqtt_link(broker.port, "t-reader").await.unwrap();
    a_reader_on(link, &gw).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_reader_over_a_pty_shows_the_display_frame() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let link_path = dir.path().join("ttyUSB-readers");
    let serial = format!("[[serial]]\nport = \"{}\"\n", link_path.display());
    let gw = canteen_gateway(dir.path(), broker.port, &db, &serial).await;
    let master = plug_pty(&link_path).unwrap();
    a_reader_on(eldergate_sim::serial::serial_link(master), &gw).await;
    db.drop_db().await;
}

/// Firmware reader rdr-01 on `link`: a resident taps (again after a timeout) until the display
/// has shown two answers, which must be the expected settlement answers.
async fn a_reader_on(link: eldergate_sim::SimLink, gw: &Gateway) {
    let fleet = devices(&[], &["rdr-01"], None);
    let log = fleet.displays.clone();
    let (stop, task) = start(fleet, link, patient_resident(cards_to_tap(gw)));
    let shown = answers(&log, 2).await;
    assert_answers(&shown);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_of_the_serial_simulator_reach_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let link_path = dir.path().join("ttyUSB-buttons");
    let mut spec = GatewaySpec::new(broker.port, db.url.clone(), 3);
    spec.extra = format!("[[serial]]\nport = \"{}\"\n", link_path.display());
    spec.serial = true;
    let gw = Gateway::start(&spec).await.unwrap();
    let master = plug_pty(&link_path).unwrap();
    let fleet = devices(&["btn-0001", "btn-0003"], &[], Some(Duration::from_secs(1)));
    let stats = fleet.stats();
    let link = eldergate_sim::serial::serial_link(master);
    let (stop, task) = start(fleet, link, |_: &FirmwareFleet, _: Duration| {});
    let journal = gw.journal().await.unwrap();
    let seen: Vec<(String, i64, i64)> = eventually(WAIT, "heartbeats in device_status", || async {
        let rows = sqlx::query(
            "SELECT device_id, battery_mv, battery_pct FROM device_status WHERE device_id IN ('btn-0001','btn-0003') AND battery_mv IS NOT NULL ORDER BY device_id",
        )
        .fetch_all(&journal)
        .await?;
        let rows: Vec<(String, i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        Ok((rows.len() == 2).then_some(rows))
    })
    .await
    .unwrap();
    for (device, mv, pct) in &seen {
        assert!((2_000..=3_000).contains(mv), "{device}: {mv} mV");
        // The firmware's own estimate for a coin cell: (mV − 2000) / 10.
        assert_eq!(*pct, (mv - 2_000) / 10, "{device}");
    }
    let _ = stop.send(());
    task.await.unwrap();
    assert!(eldergate_sim::SimStats::get(&stats.heartbeats_sent) >= 2);
    db.drop_db().await;
}
