//! Health kiosks (两测, issue 14) against real parts: Mosquitto, PostgreSQL, a pty pair, and an
//! independent FHIR R4 implementation (Python `fhir.resources`). Written from the contract
//! (protocol/MQTT.md "Health kiosks", SPEC.md HEALTH / READING_RESULT / NAK 7,
//! deploy/vitals/default.toml, shared/domain/health.md), not from the code.

// Tables of cases read best as tuples.
#![allow(clippy::type_complexity)]

use eldergate_e2e::*;
use eldergate_protocol::payload::StaffAlert;
use eldergate_protocol::payload::{Down, ReadingResult};
use eldergate_protocol::serial::{decode, encode, Body, Frame, FrameReader, Push, MAX_WIRE};
use eldergate_sim::{StaffClient, StaffMessage};
use serde_json::{json, Value};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// Starts a gateway with `residents` residents (cards CA000001…) and health kiosks `kiosk-01`,
/// `kiosk-02` on MQTT (and `kiosk-s1` on serial when `serial_port` is given).
async fn kiosk_gateway(
    broker_port: u16,
    central_url: String,
    residents: usize,
    extra: &str,
    serial_port: Option<&Path>,
) -> Gateway {
    let mut spec = GatewaySpec::new(broker_port, central_url, residents);
    spec.residents = true;
    spec.extra = extra.to_string();
    if let Some(p) = serial_port {
        spec.extra
            .push_str(&format!("\n[[serial]]\nport = \"{}\"\n", p.display()));
    }
    spec.extra_devices = "kiosk-01,health_kiosk,mqtt,,activity room,86400\n\
                          kiosk-02,health_kiosk,mqtt,,clinic corner,86400\n"
        .into();
    if serial_port.is_some() {
        spec.extra_devices
            .push_str("kiosk-s1,health_kiosk,serial,,volunteer desk,86400\n");
    }
    Gateway::start(&spec).await.unwrap()
}

/// `resident`'s console page as `staff` sees it (logged in over HTTP with a password set now).
async fn resident_page(gw: &Gateway, staff: &str, resident: &str) -> String {
    let password = format!("{staff}'s password for the resident page");
    gw.set_password(staff, &password).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(gw.url("/console/login"))
        .form(&[("staff_id", staff), ("password", password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{staff} logs in");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("eg_session="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let r = http
        .get(gw.url(&format!("/console/residents/{resident}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// A kiosk on MQTT: publishes readings and card taps, receives its answers.
struct Kiosk {
    id: String,
    client: rumqttc::AsyncClient,
    answers: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _down: rumqttc::AsyncClient,
}

impl Kiosk {
    async fn connect(port: u16, id: &str) -> Kiosk {
        let down = format!("eldergate/v1/{SITE}/down/{id}");
        let (c, answers, ok) = connect_as(port, None, &format!("t-{id}-down"), Some(&down)).await;
        assert!(ok, "subscribed to {down}");
        Kiosk {
            id: id.into(),
            client: raw_client(port, &format!("t-{id}")).await,
            answers,
            _down: c,
        }
    }

    async fn publish(&self, kind: &str, body: Value) {
        self.client
            .publish(
                format!("eldergate/v1/{SITE}/tele/{}/{kind}", self.id),
                rumqttc::QoS::AtLeastOnce,
                false,
                body.to_string().into_bytes(),
            )
            .await
            .unwrap();
    }

    /// Sends and waits for the answer to `seq` (earlier answers are skipped).
    async fn send(&mut self, kind: &str, body: Value) -> (ReadingResult, Option<String>) {
        let seq = body["seq"].as_u64().unwrap() as u32;
        self.publish(kind, body).await;
        self.answer(seq).await
    }

    async fn answer(&mut self, seq: u32) -> (ReadingResult, Option<String>) {
        tokio::time::timeout(WAIT, async {
            loop {
                let (_, bytes) = self.answers.recv().await.expect("answers");
                match serde_json::from_slice::<Down>(&bytes) {
                    Ok(Down::Reading {
                        seq: s,
                        result,
                        name,
                        ..
                    }) if s == seq => return (result, name),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to seq {seq} within {WAIT:?}"))
    }

    async fn tap(&mut self, seq: u32, card: &str) -> (ReadingResult, Option<String>) {
        self.send("card", json!({"v": 1, "seq": seq, "card": card}))
            .await
    }

    async fn bp(&mut self, seq: u32, sys: &str, dia: &str) -> (ReadingResult, Option<String>) {
        self.send(
            "reading",
            json!({"v": 1, "seq": seq, "measure": "blood_pressure", "value": sys, "value2": dia, "unit": "mmHg", "context": "sitting", "arm": "left"}),
        )
        .await
    }

    async fn one(
        &mut self,
        seq: u32,
        measure: &str,
        value: &str,
        unit: &str,
    ) -> (ReadingResult, Option<String>) {
        self.send(
            "reading",
            json!({"v": 1, "seq": seq, "measure": measure, "value": value, "unit": unit}),
        )
        .await
    }
}

async fn get(gw: &Gateway, path: &str) -> Value {
    let r = gw.api().get(gw.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// The readings of a resident (newest last or first: sorted here by id).
async fn readings_of(gw: &Gateway, resident: &str) -> Vec<Value> {
    let v = get(gw, &format!("/api/residents/{resident}/readings")).await;
    let mut rows = v["readings"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["id"].as_i64());
    rows
}

fn findings(r: &Value) -> Vec<(String, String)> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["priority"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn next_alert(
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

/// Every threshold of the default rules at its bound (fires, at its priority) and one step
/// inside (does not): unassigned readings from kiosk-02 (no session, no resident named, so no
/// averaging across them); the judgement is in each reading's findings and the kiosk's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_default_threshold_fires_at_its_bound_and_not_one_step_inside() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = kiosk_gateway(broker.port, db.url.clone(), 1, "", None).await;
    let mut k = Kiosk::connect(broker.port, "kiosk-02").await;
    // (measure, value, value2, unit, expected finding)
    let cases: &[(&str, &str, Option<&str>, &str, Option<(&str, &str)>)] = &[
        (
            "blood_pressure",
            "180",
            Some("80"),
            "mmHg",
            Some(("bp_high", "high")),
        ),
        (
            "blood_pressure",
            "179",
            Some("80"),
            "mmHg",
            Some(("bp_high", "medium")),
        ),
        (
            "blood_pressure",
            "160",
            Some("80"),
            "mmHg",
            Some(("bp_high", "medium")),
        ),
        ("blood_pressure", "159", Some("80"), "mmHg", None),
        (
            "blood_pressure",
            "90",
            Some("60"),
            "mmHg",
            Some(("bp_low", "high")),
        ),
        ("blood_pressure", "91", Some("60"), "mmHg", None),
        (
            "blood_pressure",
            "150",
            Some("110"),
            "mmHg",
            Some(("bp_high", "high")),
        ),
        (
            "blood_pressure",
            "150",
            Some("109"),
            "mmHg",
            Some(("bp_high", "medium")),
        ),
        (
            "blood_pressure",
            "150",
            Some("100"),
            "mmHg",
            Some(("bp_high", "medium")),
        ),
        ("blood_pressure", "150", Some("99"), "mmHg", None),
        (
            "glucose",
            "2.9",
            None,
            "mmol/L",
            Some(("glucose_low", "high")),
        ),
        (
            "glucose",
            "3.0",
            None,
            "mmol/L",
            Some(("glucose_low", "medium")),
        ),
        (
            "glucose",
            "3.8",
            None,
            "mmol/L",
            Some(("glucose_low", "medium")),
        ),
        ("glucose", "3.9", None, "mmol/L", None),
        (
            "glucose",
            "16.8",
            None,
            "mmol/L",
            Some(("glucose_high", "high")),
        ),
        (
            "glucose",
            "16.7",
            None,
            "mmol/L",
            Some(("glucose_high", "medium")),
        ),
        (
            "glucose",
            "14.0",
            None,
            "mmol/L",
            Some(("glucose_high", "medium")),
        ),
        ("glucose", "13.9", None, "mmol/L", None),
        ("spo2", "91", None, "%", Some(("spo2_low", "high"))),
        ("spo2", "92", None, "%", Some(("spo2_low", "medium"))),
        ("spo2", "93", None, "%", Some(("spo2_low", "medium"))),
        ("spo2", "94", None, "%", None),
        (
            "temperature",
            "35.0",
            None,
            "Cel",
            Some(("temperature_low", "high")),
        ),
        ("temperature", "35.1", None, "Cel", None),
        (
            "temperature",
            "39.1",
            None,
            "Cel",
            Some(("temperature_high", "medium")),
        ),
        ("temperature", "39.0", None, "Cel", None),
        ("pulse", "40", None, "/min", Some(("pulse_low", "high"))),
        ("pulse", "41", None, "/min", None),
        ("pulse", "131", None, "/min", Some(("pulse_high", "high"))),
        ("pulse", "130", None, "/min", Some(("pulse_high", "medium"))),
        ("pulse", "111", None, "/min", Some(("pulse_high", "medium"))),
        ("pulse", "110", None, "/min", None),
        ("weight", "45.0", None, "kg", None),
    ];
    for (i, (measure, value, value2, unit, expected)) in cases.iter().enumerate() {
        let seq = i as u32 + 1;
        let mut body =
            json!({"v": 1, "seq": seq, "measure": measure, "value": value, "unit": unit});
        if let Some(v2) = value2 {
            body["value2"] = json!(v2);
        }
        let (result, name) = k.send("reading", body).await;
        let want = if expected.is_some() {
            ReadingResult::SeeStaff
        } else {
            ReadingResult::Unassigned
        };
        assert_eq!(result, want, "{measure} {value}/{value2:?}");
        assert_eq!(name, None, "an unassigned reading names nobody");
    }
    let list = get(&gw, "/api/readings/unassigned?limit=100").await;
    let mut rows = list["readings"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["device_seq"].as_i64().or(r["id"].as_i64()));
    assert_eq!(rows.len(), cases.len());
    for (row, (measure, value, value2, _, expected)) in rows.iter().zip(cases) {
        let got = findings(row);
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_string()))
            .collect();
        assert_eq!(got, want, "{measure} {value}/{value2:?}: {row}");
        assert!(row["resident_id"].is_null());
    }
    db.drop_db().await;
}

/// Blood pressure is judged on the mean of the readings in the window; a card tap opens a
/// session; a second tap switches it; a session times out (a reading after it is unassigned,
/// never the previous person's); the answer says "see the staff" when an alert was raised, and
/// the staff hear it; a retransmission gets the same answer and no second reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_sessions_bp_averaging_and_answers_after_commit() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = kiosk_gateway(
        broker.port,
        db.url.clone(),
        3,
        "[vitals]\nsession_s = 10\nbp_window_s = 600\n",
        None,
    )
    .await;
    let staff = StaffClient::start("127.0.0.1", broker.port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let mut k = Kiosk::connect(broker.port, "kiosk-01").await;

    // No session yet: kept, unassigned.
    assert_eq!(
        k.bp(1, "128", "82").await,
        (ReadingResult::Unassigned, None)
    );
    // A card tap opens R00001's session (name masked).
    assert_eq!(
        k.tap(2, "ca000001").await,
        (ReadingResult::SessionOpened, Some("张*1".into()))
    );
    // 150/95 alone is below grade 2; 168/99 alone would be ≥ 160, but the mean 159/97 is not.
    assert_eq!(
        k.bp(3, "150", "95").await,
        (ReadingResult::Stored, Some("张*1".into()))
    );
    assert_eq!(
        k.bp(4, "168", "99").await,
        (ReadingResult::Stored, Some("张*1".into()))
    );
    // A third reading 190/100: alone it would be grade 3 (high); the mean 169/98 is medium.
    assert_eq!(
        k.bp(5, "190", "100").await,
        (ReadingResult::SeeStaff, Some("张*1".into()))
    );
    let alert = next_alert(&mut heard, "the bp_high alert", |a| a.kind == "bp_high").await;
    assert_eq!(alert.resident_id.as_deref(), Some("R00001"));
    assert_eq!(format!("{:?}", alert.priority), "Medium");
    // The kiosk retransmits seq 5 (lost answer): the same answer, no second reading.
    assert_eq!(
        k.bp(5, "190", "100").await,
        (ReadingResult::SeeStaff, Some("张*1".into()))
    );
    let r1 = readings_of(&gw, "R00001").await;
    assert_eq!(r1.len(), 3, "{r1:?}");
    assert!(r1.iter().all(|r| r["how"] == "session"));
    assert_eq!(
        findings(&r1[2]),
        [("bp_high".to_string(), "medium".to_string())]
    );
    assert!(findings(&r1[1]).is_empty(), "the mean 159/97 is not high");
    // The duty worker sees them on the resident's console page, the finding linked to its alert.
    let page = resident_page(&gw, "S009", "R00001").await;
    assert!(page.contains("id=\"readings\""), "{page}");
    for v in ["128/82", "150/95", "168/99", "190/100"] {
        assert_eq!(
            page.contains(v),
            v != "128/82",
            "{v} (128/82 had no session): {page}"
        );
    }
    assert!(
        page.contains(&format!("/console/alerts/{}", alert.alert_id)),
        "the bp_high finding links to alert {}: {page}",
        alert.alert_id
    );

    // A second card tap switches the session to R00002.
    assert_eq!(
        k.tap(6, "CA000002").await,
        (ReadingResult::SessionOpened, Some("张*2".into()))
    );
    assert_eq!(
        k.one(7, "glucose", "2.5", "mmol/L").await,
        (ReadingResult::SeeStaff, Some("张*2".into()))
    );
    let low = next_alert(&mut heard, "the glucose_low alert", |a| {
        a.kind == "glucose_low"
    })
    .await;
    assert_eq!(low.resident_id.as_deref(), Some("R00002"));
    assert_eq!(format!("{:?}", low.priority), "High");
    assert_eq!(
        readings_of(&gw, "R00001").await.len(),
        3,
        "nothing more for R00001"
    );
    // An unknown card ends the session and opens none: the next reading is unassigned.
    assert_eq!(
        k.tap(8, "DEADBEEF").await,
        (ReadingResult::UnknownCard, None)
    );
    assert_eq!(
        k.one(9, "pulse", "72", "bpm").await,
        (ReadingResult::Unassigned, None)
    );
    assert_eq!(readings_of(&gw, "R00002").await.len(), 1);

    // The session times out: R00003 taps, then measures after session_s (10 s).
    let tapped = tokio::time::Instant::now();
    assert_eq!(
        k.tap(10, "CA000003").await,
        (ReadingResult::SessionOpened, Some("张*3".into()))
    );
    assert_eq!(
        k.one(11, "spo2", "97", "%").await,
        (ReadingResult::Stored, Some("张*3".into()))
    );
    // Past the session's end by the gateway's clock (the session closes at tap + 10 s).
    tokio::time::sleep_until(tapped + Duration::from_secs(11)).await;
    assert_eq!(
        k.one(12, "spo2", "98", "%").await,
        (ReadingResult::Unassigned, None),
        "a reading after the session is nobody's"
    );
    assert_eq!(readings_of(&gw, "R00003").await.len(), 1);
    let unassigned = get(&gw, "/api/readings/unassigned").await;
    assert_eq!(unassigned["readings"].as_array().unwrap().len(), 3);

    // A reading naming its resident needs no session.
    assert_eq!(
        k.send(
            "reading",
            json!({"v": 1, "seq": 13, "measure": "temperature", "value": "36.6", "unit": "Cel", "resident": "R00003"})
        )
        .await,
        (ReadingResult::Stored, Some("张*3".into()))
    );
    // Naming someone not on the roster: kept, unassigned, never attached to anybody.
    assert_eq!(
        k.send(
            "reading",
            json!({"v": 1, "seq": 14, "measure": "temperature", "value": "36.6", "unit": "Cel", "resident": "R99999"})
        )
        .await,
        (ReadingResult::Unassigned, None)
    );
    // The same seq with other content is not answered as the earlier reading.
    k.publish(
        "reading",
        json!({"v": 1, "seq": 13, "measure": "temperature", "value": "39.9", "unit": "Cel", "resident": "R00003"}),
    )
    .await;
    let journal = gw.journal().await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM vital_readings")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 10,
        "every reading once (the retransmission and the conflict add none)"
    );
    db.drop_db().await;
}

/// Alternate units are converted exactly as documented (mg/dL ÷ 18, °F, lb, kPa) and the value
/// as sent is kept; impossible values and unknown units are dead letters, never readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_convert_both_ways_and_impossible_values_are_dead_letters() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = kiosk_gateway(broker.port, db.url.clone(), 1, "", None).await;
    let mut k = Kiosk::connect(broker.port, "kiosk-01").await;
    let named = |seq: u32, measure: &str, value: &str, value2: Option<&str>, unit: &str| {
        let mut b = json!({"v": 1, "seq": seq, "measure": measure, "value": value, "unit": unit, "resident": "R00001"});
        if let Some(v2) = value2 {
            b["value2"] = json!(v2);
        }
        b
    };
    // (measure, value, value2, unit) → canonical value, unit.
    let cases: &[(&str, &str, Option<&str>, &str, &str, &str)] = &[
        ("glucose", "126", None, "mg/dL", "7.0", "mmol/L"),
        ("glucose", "7.0", None, "mmol/L", "7.0", "mmol/L"),
        ("temperature", "98.6", None, "degF", "37.0", "Cel"),
        ("temperature", "37.0", None, "Cel", "37.0", "Cel"),
        ("weight", "154", None, "lb", "69.9", "kg"),
        ("weight", "69.9", None, "kg", "69.9", "kg"),
        (
            "blood_pressure",
            "16",
            Some("10.7"),
            "kPa",
            "120/80",
            "mm[Hg]",
        ),
    ];
    for (i, (m, v, v2, unit, canon, cunit)) in cases.iter().enumerate() {
        let (result, _) = k
            .send("reading", named(i as u32 + 1, m, v, *v2, unit))
            .await;
        assert_eq!(result, ReadingResult::Stored, "{m} {v} {unit}");
        let rows = readings_of(&gw, "R00001").await;
        let row = rows.last().unwrap();
        assert_eq!(row["value"], *canon, "{m} {v} {unit}: {row}");
        assert_eq!(row["unit"], *cunit);
        let sent = match v2 {
            Some(v2) => format!("{v}/{v2} {unit}"),
            None => format!("{v} {unit}"),
        };
        assert_eq!(row["value_in"], sent, "the value as sent is kept");
    }
    // The way back: the canonical value shown in the other unit gives what was sent (within the
    // one-decimal rounding of the canonical unit).
    let glucose_mg_dl = 7.0_f64 * 18.0;
    assert!((glucose_mg_dl - 126.0).abs() < 0.9);
    let fahrenheit = 37.0_f64 * 9.0 / 5.0 + 32.0;
    assert!((fahrenheit - 98.6).abs() < 0.1);

    // Impossible, unknown unit, wrong shape: dead letters with a reason, nothing stored.
    let bad: &[(Value, &str)] = &[
        (
            named(100, "blood_pressure", "400", Some("80"), "mmHg"),
            "implausible",
        ),
        (named(101, "spo2", "120", None, "%"), "implausible"),
        (
            named(102, "blood_pressure", "80", Some("120"), "mmHg"),
            "implausible",
        ),
        (
            named(103, "glucose", "5.5", None, "furlongs"),
            "unknown_unit",
        ),
        (named(104, "temperature", "-3", None, "Cel"), "malformed"),
        (
            named(105, "blood_pressure", "120", None, "mmHg"),
            "malformed",
        ),
        (named(106, "weight", "99999999999", None, "kg"), "malformed"),
        (named(107, "pulse", "1e3", None, "/min"), "malformed"),
        (named(108, "pulse", "", None, "/min"), "malformed"),
    ];
    let journal = gw.journal().await.unwrap();
    for (body, _) in bad {
        k.publish("reading", body.clone()).await;
    }
    // Oversize and absurd fields too.
    k.publish(
        "reading",
        json!({"v": 1, "seq": 109, "measure": "pulse", "value": "7".repeat(5000), "unit": "/min"}),
    )
    .await;
    k.publish(
        "reading",
        json!({"v": 1, "seq": 110, "measure": "heartache", "value": "1", "unit": "/min"}),
    )
    .await;
    let reasons: Vec<String> = eventually(WAIT, "eleven dead letters", || {
        let journal = journal.clone();
        async move {
            let rows = sqlx::query("SELECT reason FROM dead_letters ORDER BY id")
                .fetch_all(&journal)
                .await?;
            Ok((rows.len() >= 11).then(|| rows.iter().map(|r| r.get(0)).collect()))
        }
    })
    .await
    .unwrap();
    for (i, (_, reason)) in bad.iter().enumerate() {
        assert_eq!(reasons[i], *reason, "dead letter {i}: {reasons:?}");
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM vital_readings")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, cases.len() as i64, "no bad reading is in the record");
    // The gateway still answers a good reading.
    assert_eq!(
        k.send("reading", named(200, "pulse", "70", None, "/min"))
            .await
            .0,
        ReadingResult::Stored
    );
    db.drop_db().await;
}

/// A doctor's target range for one resident replaces the medium thresholds of that quantity;
/// the high ones stay. Who set it and why are kept; a manager may read but not set; the auth
/// layer guards every route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_range_per_resident_with_who_and_why() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = kiosk_gateway(broker.port, db.url.clone(), 2, "", None).await;
    let mut k = Kiosk::connect(broker.port, "kiosk-01").await;
    let url = gw.url("/api/residents/R00001/vital-targets");
    let manager = gw.token_for("S012", "read,vitals").unwrap();
    let grid = gw.token_for("S001", "read,vitals").unwrap();
    let body = json!({"quantity": "systolic", "max": "150", "reason": "Dr Wang, clinic 2026-11-28: keep below 150"});
    // No login: refused by the auth layer.
    let r = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(gw.url("/api/residents/R00001/readings"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A read-only token lacks the vitals scope.
    let reader = gw.token_for("S001", "read").unwrap();
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&reader)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A manager reads, never sets.
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&manager)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    // Someone else's name in "by" without act_as: refused.
    let mut as_other = body.clone();
    as_other["by"] = json!("S009");
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&grid)
        .json(&as_other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No reason, absurd bounds, min above max, unknown resident, unknown quantity: refused.
    for (bad, path) in [
        (
            json!({"quantity": "systolic", "max": "150", "reason": "  "}),
            "R00001",
        ),
        (
            json!({"quantity": "systolic", "max": "9999", "reason": "x"}),
            "R00001",
        ),
        (
            json!({"quantity": "systolic", "min": "150", "max": "120", "reason": "x"}),
            "R00001",
        ),
        (
            json!({"quantity": "systolic", "max": "-5", "reason": "x"}),
            "R00001",
        ),
        (
            json!({"quantity": "mood", "max": "5", "reason": "x"}),
            "R00001",
        ),
        (
            json!({"quantity": "systolic", "max": "150", "reason": "x".repeat(10_000)}),
            "R00001",
        ),
        (
            json!({"quantity": "systolic", "max": "150", "reason": "x"}),
            "R99999",
        ),
    ] {
        let r = reqwest::Client::new()
            .post(gw.url(&format!("/api/residents/{path}/vital-targets")))
            .bearer_auth(&grid)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
    // The grid worker sets it: recorded as S001 with the reason.
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&grid)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["set_by"], "S001");
    assert_eq!(set["max"], 150);

    // 152/85 for R00001 (target max 150): medium; the same for R00002: nothing.
    let bp = |seq: u32, who: &str, sys: &str| json!({"v": 1, "seq": seq, "measure": "blood_pressure", "value": sys, "value2": "85", "unit": "mmHg", "resident": who});
    assert_eq!(
        k.send("reading", bp(1, "R00001", "152")).await.0,
        ReadingResult::SeeStaff
    );
    assert_eq!(
        k.send("reading", bp(2, "R00002", "152")).await.0,
        ReadingResult::Stored
    );
    // The high threshold stays for R00001 (a target never hides grade 3).
    assert_eq!(
        k.send("reading", json!({"v": 1, "seq": 3, "measure": "blood_pressure", "value": "181", "value2": "85", "unit": "mmHg", "resident": "R00002"})).await.0,
        ReadingResult::SeeStaff
    );
    // The manager reads the history with the target, who set it and why.
    let v: Value = reqwest::Client::new()
        .get(gw.url("/api/residents/R00001/readings"))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["readings"].as_array().unwrap().len(), 1);
    let t = &v["targets"][0];
    assert_eq!(t["set_by"], "S001");
    assert!(t["reason"].as_str().unwrap().contains("Dr Wang"), "{t}");
    // Bad queries are refused with a reason, not a crash.
    for q in [
        "?from=yesterday",
        "?limit=0",
        "?limit=999999",
        "?colour=red",
    ] {
        let r = gw
            .api()
            .get(gw.url(&format!("/api/residents/R00001/readings{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
    let r = gw
        .api()
        .get(gw.url("/api/residents/R99999/readings"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Clearing it (by an admin): the community's thresholds apply again.
    let r = gw
        .api()
        .post(&url)
        .json(&json!({"quantity": "systolic", "clear": true, "reason": "Dr Wang: target no longer needed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        k.send("reading", bp(4, "R00001", "152")).await.0,
        ReadingResult::Stored
    );
    db.drop_db().await;
}

/// Trends: weight loss above 5 % within 30 days, and three days with a high BP mean within 7
/// days, each a medium follow-up task through the alert engine. The earlier readings are sent
/// now and then aged in the journal while the gateway is stopped (its clock is the one thing a
/// test cannot move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trends_weight_loss_and_three_high_bp_days_become_follow_up_tasks() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut gw = kiosk_gateway(broker.port, db.url.clone(), 2, "", None).await;
    {
        let mut k = Kiosk::connect(broker.port, "kiosk-01").await;
        let named = |seq: u32, who: &str, m: &str, v: &str, v2: Option<&str>, unit: &str| {
            let mut b = json!({"v": 1, "seq": seq, "measure": m, "value": v, "unit": unit, "resident": who});
            if let Some(v2) = v2 {
                b["value2"] = json!(v2);
            }
            b
        };
        assert_eq!(
            k.send("reading", named(1, "R00001", "weight", "60.0", None, "kg"))
                .await
                .0,
            ReadingResult::Stored
        );
        assert_eq!(
            k.send(
                "reading",
                named(2, "R00002", "blood_pressure", "145", Some("85"), "mmHg")
            )
            .await
            .0,
            ReadingResult::Stored
        );
        assert_eq!(
            k.send(
                "reading",
                named(3, "R00002", "blood_pressure", "146", Some("92"), "mmHg")
            )
            .await
            .0,
            ReadingResult::Stored
        );
    }
    // Age them: the weight 20 days ago, the blood pressures 3 and 5 days ago (gateway stopped).
    gw.sigterm().unwrap();
    {
        let opts =
            sqlx::sqlite::SqliteConnectOptions::new().filename(gw.data_dir.join("journal.db"));
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let ago = |days: i64| {
            (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days))
                .strftime("%Y-%m-%dT%H:%M:%S.000Z")
                .to_string()
        };
        for (seq, days) in [(1, 20), (2, 5), (3, 3)] {
            sqlx::query("UPDATE vital_readings SET received_at = ? WHERE device_seq = ?")
                .bind(ago(days))
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    gw.spawn().await.unwrap();
    let staff = StaffClient::start("127.0.0.1", broker.port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    let mut k = Kiosk::connect(broker.port, "kiosk-01").await;
    // 56.9 kg is a loss of 5.17 % from 60.0: a medium weight_loss task.
    let answer = k.send("reading", json!({"v": 1, "seq": 4, "measure": "weight", "value": "56.9", "unit": "kg", "resident": "R00001"})).await.0;
    assert_eq!(
        answer,
        ReadingResult::SeeStaff,
        "{:?}",
        readings_of(&gw, "R00001").await
    );
    let w = next_alert(&mut heard, "weight_loss", |a| a.kind == "weight_loss").await;
    assert_eq!(w.resident_id.as_deref(), Some("R00001"));
    assert_eq!(format!("{:?}", w.priority), "Medium");
    // A third day with a high mean (141/88 today): a medium bp_followup for the grid worker.
    assert_eq!(
        k.send("reading", json!({"v": 1, "seq": 5, "measure": "blood_pressure", "value": "141", "value2": "88", "unit": "mmHg", "resident": "R00002"})).await.0,
        ReadingResult::SeeStaff
    );
    let f = next_alert(&mut heard, "bp_followup", |a| a.kind == "bp_followup").await;
    assert_eq!(f.resident_id.as_deref(), Some("R00002"));
    assert_eq!(format!("{:?}", f.priority), "Medium");
    assert!(
        f.notify.contains(&"S001".to_string()),
        "the grid worker: {:?}",
        f.notify
    );
    // 57.5 kg (4.2 % down) alone would not be a loss above 5 %: no second task either way.
    assert_eq!(
        k.send("reading", json!({"v": 1, "seq": 6, "measure": "weight", "value": "57.5", "unit": "kg", "resident": "R00002"})).await.0,
        ReadingResult::Stored
    );
    db.drop_db().await;
}

/// A health reading and a meal tap are both activity for the daily check-in: only the resident
/// with neither gets the visit task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_and_a_meal_tap_count_as_check_in_activity() {
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let now = jiff::Timestamp::now().to_zoned(tz);
    if now.time() > jiff::civil::time(23, 58, 0, 0) {
        eprintln!("skipped: too close to local midnight for a same-day deadline");
        return;
    }
    let deadline = now
        .time()
        .checked_add(jiff::SignedDuration::from_secs(20))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = all_day_canteen_rules(dir.path()).unwrap();
    let extra = format!(
        "[checkin]\nenabled = true\ndeadline = \"{}\"\n[canteen]\nrules = \"{}\"\ndouble_tap_s = 0\n",
        deadline.strftime("%H:%M:%S"),
        rules.display()
    );
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = kiosk_gateway(broker.port, db.url.clone(), 3, &extra, None).await;
    let staff = StaffClient::start("127.0.0.1", broker.port, SITE, "t-staff", None)
        .await
        .unwrap();
    let mut heard = staff.subscribe();
    // R00001: a reading at the kiosk (card tap + BP). R00002: a meal tap (refused: no balance,
    // but seen). R00003: nothing.
    let mut k = Kiosk::connect(broker.port, "kiosk-01").await;
    assert_eq!(k.tap(1, "CA000001").await.0, ReadingResult::SessionOpened);
    assert_eq!(k.bp(2, "130", "80").await.0, ReadingResult::Stored);
    let (_r, mut answers, ok) = connect_as(
        broker.port,
        None,
        "t-reader-down",
        Some(&format!("eldergate/v1/{SITE}/down/rdr-01")),
    )
    .await;
    assert!(ok);
    let reader = raw_client(broker.port, "t-reader").await;
    reader
        .publish(
            format!("eldergate/v1/{SITE}/tap/rdr-01"),
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"v": 1, "seq": 1, "card": "CA000002"})
                .to_string()
                .into_bytes(),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, answers.recv())
        .await
        .expect("the reader's answer")
        .unwrap();
    let task = next_alert(&mut heard, "a missed check-in", |a| {
        a.kind == "missed_checkin"
    })
    .await;
    assert_eq!(task.resident_id.as_deref(), Some("R00003"));
    let journal = gw.journal().await.unwrap();
    let tasks: Vec<String> = eventually(WAIT, "the check-in run", || {
        let journal = journal.clone();
        async move {
            let runs: i64 = sqlx::query("SELECT COUNT(*) FROM checkin_runs")
                .fetch_one(&journal)
                .await?
                .get(0);
            if runs == 0 {
                return Ok(None);
            }
            let rows = sqlx::query("SELECT resident_id FROM alerts WHERE kind = 'missed_checkin'")
                .fetch_all(&journal)
                .await?;
            Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
        }
    })
    .await
    .unwrap();
    assert_eq!(tasks, ["R00003"]);
    db.drop_db().await;
}

/// Readings reach the central store exactly once (retransmissions included), and the FHIR
/// export of a resident's readings is parsed by an independent R4 implementation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_once_and_fhir_checked_by_an_independent_implementation() {
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = kiosk_gateway(broker.port, db.url.clone(), 1, "", None).await;
    let mut k = Kiosk::connect(broker.port, "kiosk-01").await;
    assert_eq!(k.tap(1, "CA000001").await.0, ReadingResult::SessionOpened);
    let readings = [
        json!({"v": 1, "seq": 2, "measure": "blood_pressure", "value": "182", "value2": "96", "unit": "mmHg", "context": "sitting", "arm": "right", "ts": 1_764_550_000_000_i64}),
        json!({"v": 1, "seq": 3, "measure": "glucose", "value": "126", "unit": "mg/dL", "context": "fasting"}),
        json!({"v": 1, "seq": 4, "measure": "spo2", "value": "96", "unit": "%"}),
        json!({"v": 1, "seq": 5, "measure": "temperature", "value": "98.6", "unit": "degF"}),
        json!({"v": 1, "seq": 6, "measure": "weight", "value": "61.2", "unit": "kg"}),
        json!({"v": 1, "seq": 7, "measure": "pulse", "value": "72", "unit": "bpm"}),
    ];
    for r in &readings {
        k.send("reading", r.clone()).await;
        // Each retransmitted once: still one reading, one event.
        k.send("reading", r.clone()).await;
    }
    let pool = db.pool().await.unwrap();
    let rows: Vec<(i64, i64)> = eventually(WAIT, "six readings at central", || {
        let pool = pool.clone();
        async move {
            let rows = sqlx::query("SELECT device_seq, COUNT(*) FROM events WHERE kind = 'vital_reading' GROUP BY 1 ORDER BY 1")
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
            Ok((rows.len() == 6).then(|| rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
        }
    })
    .await
    .unwrap();
    assert_eq!(rows, (2..=7).map(|s| (s, 1)).collect::<Vec<_>>());
    let body: Value =
        sqlx::query("SELECT body FROM events WHERE kind = 'vital_reading' AND device_seq = 3")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(body["resident_id"], "R00001");
    assert_eq!(body["v1"], 70, "126 mg/dL is 7.0 mmol/L, in tenths");

    // FHIR over HTTP (behind login), then through the independent implementation.
    let r = reqwest::Client::new()
        .get(gw.url("/api/residents/R00001/fhir"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .api()
        .get(gw.url("/api/residents/R00001/fhir"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/fhir+json");
    let bundle = r.text().await.unwrap();
    let checked = fhir_check(&bundle);
    let obs = checked["observations"].as_array().unwrap();
    assert_eq!(obs.len(), 6, "{checked}");
    let by_code = |code: &str| {
        obs.iter()
            .find(|o| o["code"] == code)
            .unwrap_or_else(|| panic!("{code} in {checked}"))
    };
    let bp = by_code("85354-9");
    assert_eq!(
        (bp["systolic"].as_str(), bp["diastolic"].as_str()),
        (Some("182"), Some("96"))
    );
    assert_eq!(bp["interpretation"][0], "HH", "grade 3 is critical high");
    assert_eq!(by_code("14743-9")["value"], "7.0");
    assert_eq!(by_code("59408-5")["value"], "96");
    assert_eq!(by_code("8310-5")["value"], "37.0");
    assert_eq!(by_code("29463-7")["value"], "61.2");
    assert_eq!(by_code("8867-4")["value"], "72");
    assert!(obs.iter().all(|o| o["subject"] == "R00001"));
    // The CLI writes the same Bundle from the journal.
    let out = std::process::Command::new(bin_dir().join("eldergate"))
        .args(["fhir", "--config"])
        .arg(&gw.config)
        .args(["--resident", "R00001"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = fhir_check(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(cli["observations"], checked["observations"]);
    pool.close().await;
    db.drop_db().await;
}

/// Runs tests/fhir_check.py (fhir.resources in the venv tests/run makes) on `bundle`.
fn fhir_check(bundle: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("ELDERGATE_FHIR_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target/fhir-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: tests/run creates the venv with fhir.resources (or set ELDERGATE_FHIR_PYTHON)",
        python.display()
    );
    let mut child = std::process::Command::new(&python)
        .arg(root.join("tests/fhir_check.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(bundle.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fhir.resources refused our Bundle: {}\n{bundle}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sends `frame` on the pty and returns the gateway's reply to its (device, seq).
async fn exchange(
    port: &mut tokio_serial::SerialStream,
    reader: &mut FrameReader,
    frame: &Frame<'_>,
    wait: Duration,
) -> Option<(u8, u8, String)> {
    let mut out = [0u8; MAX_WIRE];
    let n = encode(frame, &mut out).expect("encode");
    port.write_all(&out[..n]).await.expect("write");
    let deadline = tokio::time::Instant::now() + wait;
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout_at(deadline, port.read(&mut byte))
            .await
            .ok()?
        {
            Ok(n) if n > 0 => {}
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        if let Push::Frame(wire) = reader.push(byte[0]) {
            let mut b = wire.to_vec();
            let Ok(f) = decode(&mut b) else { continue };
            if f.device != frame.device || f.seq != frame.seq {
                continue;
            }
            return Some(match f.body {
                Body::ReadingResult { result, name } => (0x13, result, name.to_string()),
                Body::Nak { reason } => (0x06, reason, String::new()),
                Body::Ack => (0x05, 0, String::new()),
                _ => (0xee, 0, String::new()),
            });
        }
    }
}

/// Serial kiosks (real pty pair): a card tap and a HEALTH frame are answered with
/// READING_RESULT after commit; an impossible value is NAK 7 (implausible) and not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_kiosk_gets_reading_result_and_nak_7_for_impossible_values() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyKIOSK");
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = kiosk_gateway(broker.port, db.url.clone(), 1, "", Some(&link)).await;
    let mut port = plug_pty(&link).unwrap();
    let mut reader = FrameReader::new();
    let card = [0xCA, 0x00, 0x00, 0x01];
    let tap = Frame {
        device: "kiosk-s1",
        seq: 1,
        body: Body::CardTap {
            uid: &card,
            mac: &[],
            price: None,
        },
    };
    // The gateway opens the port within its reopen backoff: resend until answered.
    let mut first = None;
    for _ in 0..30 {
        first = exchange(&mut port, &mut reader, &tap, Duration::from_secs(1)).await;
        if first.is_some() {
            break;
        }
    }
    assert_eq!(first, Some((0x13, 3, "张*1".into())), "session opened");
    let health = |seq: u32, reading: u8, value1: i32, value2: i32, context: Option<u8>| Frame {
        device: "kiosk-s1",
        seq,
        body: Body::Health {
            reading,
            value1,
            value2,
            context,
        },
    };
    // 186/112: grade 3 → see the staff (1).
    let r = exchange(
        &mut port,
        &mut reader,
        &health(2, 1, 186, 112, Some(1)),
        WAIT,
    )
    .await;
    assert_eq!(r, Some((0x13, 1, "张*1".into())));
    // Retransmitted: the same answer.
    let again = exchange(
        &mut port,
        &mut reader,
        &health(2, 1, 186, 112, Some(1)),
        WAIT,
    )
    .await;
    assert_eq!(again, r);
    // Glucose 5.6 mmol/L fasting: stored (0).
    let r = exchange(&mut port, &mut reader, &health(3, 2, 56, 0, Some(1)), WAIT).await;
    assert_eq!(r, Some((0x13, 0, "张*1".into())));
    // Impossible: SBP 400, SpO2 120 %, diastolic above systolic, a negative weight → NAK 7.
    for (seq, reading, v1, v2) in [
        (4, 1, 400, 80),
        (5, 3, 120, 0),
        (6, 1, 80, 120),
        (7, 5, -600, 0),
        (8, 6, i32::MAX, 0),
    ] {
        let r = exchange(
            &mut port,
            &mut reader,
            &health(seq, reading, v1, v2, None),
            WAIT,
        )
        .await;
        assert_eq!(
            r,
            Some((0x06, 7, String::new())),
            "reading {reading} {v1}/{v2}"
        );
    }
    let journal = gw.journal().await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM vital_readings")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // A NAK leaves before its dead letter commits (nothing waits on it): wait for the five.
    eventually(WAIT, "each NAK 7 a dead letter too", || {
        let journal = journal.clone();
        async move {
            let dead: i64 =
                sqlx::query("SELECT COUNT(*) FROM dead_letters WHERE reason = 'implausible'")
                    .fetch_one(&journal)
                    .await?
                    .get(0);
            Ok((dead == 5).then_some(()))
        }
    })
    .await
    .unwrap();
    db.drop_db().await;
}

/// kill -9 during a burst of readings from several kiosks: every reading the kiosks got an
/// answer for is at the central store exactly once after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_readings_loses_no_answered_reading() {
    const READINGS: u32 = 400;
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut gw = kiosk_gateway(broker.port, db.url.clone(), 2, "", None).await;
    let mut k = Kiosk::connect(broker.port, "kiosk-01").await;
    let body = |seq: u32| json!({"v": 1, "seq": seq, "measure": "pulse", "value": (60 + seq % 40).to_string(), "unit": "/min", "resident": if seq % 2 == 0 { "R00001" } else { "R00002" }});
    for seq in 1..=READINGS {
        k.publish("reading", body(seq)).await;
    }
    // Collect answers until about half are in, then kill -9.
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < READINGS as usize / 2 {
        let (_, bytes) = tokio::time::timeout(WAIT, k.answers.recv())
            .await
            .expect("answers")
            .unwrap();
        if let Ok(Down::Reading { seq, .. }) = serde_json::from_slice::<Down>(&bytes) {
            answered.insert(seq);
        }
    }
    gw.kill9();
    // Answers already on their way are answered readings too.
    while let Ok(Some((_, bytes))) =
        tokio::time::timeout(Duration::from_millis(500), k.answers.recv()).await
    {
        if let Ok(Down::Reading { seq, .. }) = serde_json::from_slice::<Down>(&bytes) {
            answered.insert(seq);
        }
    }
    gw.spawn().await.unwrap();
    // The kiosk retransmits what it has no answer for (as its firmware does), until all are in.
    let k = Kiosk::connect(broker.port, "kiosk-01").await;
    for seq in 1..=READINGS {
        if !answered.contains(&seq) {
            k.publish("reading", body(seq)).await;
        }
    }
    let pool = db.pool().await.unwrap();
    eventually(Duration::from_secs(120), "every reading at central", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query(
                "SELECT COUNT(DISTINCT device_seq) FROM events WHERE kind = 'vital_reading'",
            )
            .fetch_one(&pool)
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
            Ok((n == i64::from(READINGS)).then_some(()))
        }
    })
    .await
    .unwrap();
    let rows = sqlx::query(
        "SELECT device_seq, COUNT(*) FROM events WHERE kind = 'vital_reading' GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for r in &rows {
        let (s, n): (i64, i64) = (r.get(0), r.get(1));
        assert_eq!(n, 1, "reading {s} is at central {n} times");
    }
    for seq in &answered {
        assert!(
            rows.iter().any(|r| r.get::<i64, _>(0) == i64::from(*seq)),
            "answered reading {seq} lost"
        );
    }
    pool.close().await;
    db.drop_db().await;
}
