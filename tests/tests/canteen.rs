//! Meal settlement by resident card over MQTT: top-up, tap, answer after commit, retransmission
//! answered again without a second charge, double tap is the same meal, refusals.

use eldergate_e2e::*;
use eldergate_protocol::payload::{Down, TapResult};
use sqlx::Row;
use std::time::Duration;

mod common;
use common::{canteen_spec, next_answer, publish_tap, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_is_settled_once_and_answered_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 3, 60, "");
    let gw = Gateway::start(&spec).await.unwrap();

    let http = gw.api();
    let r = http
        .post(gw.url("/api/residents/R00001/topup"))
        .json(&serde_json::json!({"amount_fen": 2000, "by": "S013", "reason": "cash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let down_topic = format!("eldergate/v1/{SITE}/down/rdr-01");
    let (_c, mut answers, ok) =
        connect_as(broker.port, None, "t-reader-down", Some(&down_topic)).await;
    assert!(ok);
    let reader = raw_client(broker.port, "t-reader").await;
    let tap = |seq: u32, card: &str| {
        let reader = reader.clone();
        let body = serde_json::json!({"v": 1, "seq": seq, "card": card});
        async move { publish_tap(&reader, body).await }
    };

    tap(1, "ca000001").await;
    let first = next_answer(&mut answers).await;
    assert_eq!(
        first,
        Down::Display {
            v: 1,
            seq: 1,
            result: TapResult::Paid,
            name: Some("张*1".into()),
            price_fen: 1500,
            subsidy_fen: 150,
            payable_fen: 1350,
            balance_fen: 650
        }
    );
    // The reader did not see the answer and retransmits: same answer, no second charge.
    tap(1, "ca000001").await;
    assert_eq!(next_answer(&mut answers).await, first);
    // A second tap within the window is the same meal.
    tap(2, "CA000001").await;
    let again = next_answer(&mut answers).await;
    assert!(
        matches!(
            again,
            Down::Display {
                seq: 2,
                result: TapResult::Paid,
                balance_fen: 650,
                ..
            }
        ),
        "{again:?}"
    );
    // Refusals: an unknown card, and a resident without enough balance.
    tap(3, "DEADBEEF").await;
    assert!(matches!(
        next_answer(&mut answers).await,
        Down::Display {
            seq: 3,
            result: TapResult::UnknownCard,
            ..
        }
    ));
    tap(4, "CA000002").await;
    assert!(matches!(
        next_answer(&mut answers).await,
        Down::Display {
            seq: 4,
            result: TapResult::InsufficientBalance,
            payable_fen: 1350,
            balance_fen: 0,
            ..
        }
    ));

    let balance: serde_json::Value = http
        .get(gw.url("/api/residents/R00001/balance"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["balance_fen"], 650);
    assert_eq!(balance["ledger_rows"], 2, "one top-up, one charge");

    // The card is reported lost: refused. A new card is bound and works; the second meal of the
    // period gets no subsidy.
    let post = |path: String, body: serde_json::Value| {
        let (http, url) = (http.clone(), gw.url(&path));
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    assert_eq!(
        post(
            "/api/cards/CA000001/lost".into(),
            serde_json::json!({"by": "S009"})
        )
        .await
        .status(),
        200
    );
    tap(5, "CA000001").await;
    assert!(matches!(
        next_answer(&mut answers).await,
        Down::Display {
            seq: 5,
            result: TapResult::LostCard,
            ..
        }
    ));
    let bind = post(
        "/api/cards/0B0B0B0B/bind".into(),
        serde_json::json!({"by": "S013", "resident_id": "R00001"}),
    )
    .await;
    assert_eq!(bind.status(), 200);
    let again = post(
        "/api/cards/0B0B0B0B/bind".into(),
        serde_json::json!({"by": "S013", "resident_id": "R00002"}),
    )
    .await;
    assert_eq!(again.status(), 409, "a card binds once");
    let topup = post(
        "/api/residents/R00001/topup".into(),
        serde_json::json!({"amount_fen": 2000, "by": "S013"}),
    )
    .await;
    assert_eq!(topup.status(), 200);
    tap(6, "0b0b0b0b").await;
    let second = next_answer(&mut answers).await;
    assert!(
        matches!(
            second,
            Down::Display {
                seq: 6,
                result: TapResult::Paid,
                subsidy_fen: 0,
                payable_fen: 1500,
                balance_fen: 1150,
                ..
            }
        ),
        "{second:?}"
    );
    // Staff void the first meal: its charge comes back as a refund row; nothing is rewritten.
    let void = post(
        "/api/meals/1/void".into(),
        serde_json::json!({"by": "S013", "reason": "wrong dish"}),
    )
    .await;
    assert_eq!(void.status(), 200);
    let twice = post(
        "/api/meals/1/void".into(),
        serde_json::json!({"by": "S013", "reason": "again"}),
    )
    .await;
    assert_eq!(twice.status(), 409, "a meal is voided once");
    let balance: serde_json::Value = http
        .get(gw.url("/api/residents/R00001/balance"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["balance_fen"], 2000 - 1350 + 2000 - 1500 + 1350);
    assert_eq!(balance["ledger_rows"], 5);
    let journal = gw.journal().await.unwrap();
    let meals: i64 = sqlx::query("SELECT COUNT(*) FROM meals")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(meals, 2);
    // Everything that happened reaches the central store.
    let pool = db.pool().await.unwrap();
    let settled = eventually(WAIT, "the settlements at the central store", || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'meal_settled'")
            .fetch_one(&pool)
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        Ok((n >= 2).then_some(n))
    })
    .await
    .unwrap();
    assert_eq!(settled, 2, "each paid meal once");
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_reader_gets_its_display_answer_after_commit() {
    use eldergate_protocol::serial::{decode, encode, Body, Frame, FrameReader, Push, MAX_WIRE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyREADER");
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let serial = format!("[[serial]]\nport = \"{}\"\n", link.display());
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 3, 60, &serial);
    let gw = Gateway::start(&spec).await.unwrap();
    let r = gw
        .api()
        .post(gw.url("/api/residents/R00003/topup"))
        .json(&serde_json::json!({"amount_fen": 5000, "by": "S013"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plugged in after the gateway started (see tests/serial.rs).
    let mut master = plug_pty(&link).unwrap();
    let mut out = [0u8; MAX_WIRE];
    let uid = [0xCA, 0x00, 0x00, 0x03];
    let n = encode(
        &Frame {
            device: "rdr-01",
            seq: 77,
            // The counter staff typed ¥18.00 (it overrides the period's menu price).
            body: Body::CardTap {
                uid: &uid,
                mac: &[],
                price: Some(1800),
            },
        },
        &mut out,
    )
    .unwrap();
    let mut reader = FrameReader::new();
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + WAIT;
    let shown = 'outer: loop {
        assert!(tokio::time::Instant::now() < deadline, "no DISPLAY answer");
        // The reader resends until answered (the gateway may still be opening the port).
        master.write_all(&out[..n]).await.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(k)) = tokio::time::timeout_at(until, master.read(&mut buf)).await {
            for &b in &buf[..k] {
                if let Push::Frame(w) = reader.push(b) {
                    if let Ok(Frame {
                        seq: 77,
                        body:
                            Body::Display {
                                result,
                                name,
                                price,
                                subsidy,
                                payable,
                                balance,
                            },
                        ..
                    }) = decode(w)
                    {
                        break 'outer (result, name.to_string(), price, subsidy, payable, balance);
                    }
                }
            }
        }
    };
    assert_eq!(shown, (0, "张*3".to_string(), 1800, 180, 1620, 3380));
    let journal = gw.journal().await.unwrap();
    let meals: i64 = sqlx::query("SELECT COUNT(*) FROM meals")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(meals, 1, "resent taps are one meal");
    // Reports: the daily summary and the monthly claim (CSV with a BOM, full names, yuan).
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date();
    let daily: serde_json::Value = gw
        .api()
        .get(gw.url(&format!("/api/reports/daily?date={today}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all = daily["periods"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            all["meals"].as_i64(),
            all["gross_fen"].as_i64(),
            all["subsidy_fen"].as_i64(),
            all["paid_fen"].as_i64()
        ),
        (Some(1), Some(1800), Some(180), Some(1620))
    );
    let month = &today.to_string()[..7];
    let claim = gw
        .api()
        .get(gw.url(&format!("/api/reports/claim?month={month}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        claim.starts_with("\u{feff}".as_bytes()),
        "UTF-8 BOM for Excel"
    );
    let text = String::from_utf8(claim.to_vec()).unwrap();
    // One detail row: count and money in their own columns, then a subtotal per resident and
    // per category and the total, each with the count 1.
    assert!(text.contains("明细,"), "{text}");
    assert!(text.contains(",R00003,张三3,CA000003,"), "{text}");
    assert!(text.contains(",1,18.00,1.80,16.20,"), "{text}");
    assert!(
        text.contains("居民小计,,,R00003,张三3,,,1,18.00,1.80,16.20"),
        "{text}"
    );
    assert!(text.contains("合计,,,,,,,1,18.00,1.80,16.20"), "{text}");
    assert!(text.lines().next().unwrap().contains("SHA-256"), "{text}");
    assert_eq!(
        gw.api()
            .get(gw.url("/api/reports/claim?month=2026-13"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_retransmitting_across_a_gateway_kill_is_charged_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 2, 0, "");
    let mut gw = Gateway::start(&spec).await.unwrap();
    let r = gw
        .api()
        .post(gw.url("/api/residents/R00002/topup"))
        .json(&serde_json::json!({"amount_fen": 5000, "by": "S013"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let down_topic = format!("eldergate/v1/{SITE}/down/rdr-01");
    let (_c, mut answers, ok) =
        connect_as(broker.port, None, "t-reader-down", Some(&down_topic)).await;
    assert!(ok);
    let reader = raw_client(broker.port, "t-reader").await;
    let body = serde_json::json!({"v": 1, "seq": 9, "card": "CA000002"});
    // The tap is sent while the gateway is dead, and again after it is back: one meal, one charge.
    gw.kill9();
    publish_tap(&reader, body.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.spawn().await.unwrap();
    publish_tap(&reader, body.clone()).await;
    let first = next_answer(&mut answers).await;
    assert!(
        matches!(
            first,
            Down::Display {
                seq: 9,
                result: TapResult::Paid,
                balance_fen: 3650,
                ..
            }
        ),
        "{first:?}"
    );
    let second = next_answer(&mut answers).await;
    assert_eq!(first, second, "the retransmission gets the same answer");
    let balance: serde_json::Value = gw
        .api()
        .get(gw.url("/api/residents/R00002/balance"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            balance["balance_fen"].as_i64(),
            balance["ledger_rows"].as_i64()
        ),
        (Some(3650), Some(2))
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_meals_settle_offline_and_reach_the_central_store_once_it_is_back() {
    use eldergate_e2e::proxy::Proxy;
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let proxy = Proxy::start(pg_host_port()).await.unwrap();
    proxy.down();
    let central = db.url_via(&format!("127.0.0.1:{}", proxy.port));
    let spec = canteen_spec(dir.path(), broker.port, central, 3, 0, "");
    let gw = Gateway::start(&spec).await.unwrap();
    let http = gw.api();
    for r in ["R00001", "R00002", "R00003"] {
        let resp = http
            .post(gw.url(&format!("/api/residents/{r}/topup")))
            .json(&serde_json::json!({"amount_fen": 3000, "by": "S013"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let down_topic = format!("eldergate/v1/{SITE}/down/rdr-01");
    let (_c, mut answers, ok) =
        connect_as(broker.port, None, "t-reader-down", Some(&down_topic)).await;
    assert!(ok);
    let reader = raw_client(broker.port, "t-handheld").await;
    // The delivery worker S001 taps three residents' cards at their doors, central store down.
    for (seq, card) in [(1u32, "CA000001"), (2, "CA000002"), (3, "CA000003")] {
        let body = serde_json::json!({"v": 1, "seq": seq, "card": card, "delivered_by": "S001"});
        publish_tap(&reader, body.clone()).await;
        let a = next_answer(&mut answers).await;
        assert!(
            matches!(
                a,
                Down::Display {
                    result: TapResult::Paid,
                    ..
                }
            ),
            "{a:?}"
        );
    }
    // An unknown delivery worker is bad input, not a meal.
    let bad = serde_json::json!({"v": 1, "seq": 4, "card": "CA000001", "delivered_by": "S999"});
    publish_tap(&reader, bad).await;
    let journal = gw.journal().await.unwrap();
    eventually(WAIT, "a dead letter for the unknown worker", || async {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) FROM dead_letters WHERE reason = 'unknown_staff'")
                .fetch_one(&journal)
                .await?
                .get(0);
        Ok((n == 1).then_some(()))
    })
    .await
    .unwrap();
    let delivered: i64 = sqlx::query("SELECT COUNT(*) FROM meals WHERE delivered_by = 'S001'")
        .fetch_one(&journal)
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, 3);
    // The central store comes back: every settlement arrives, once.
    proxy.up();
    let pool = db.pool().await.unwrap();
    eventually(WAIT, "three settlements at the central store", || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'meal_settled'")
            .fetch_one(&pool)
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        Ok((n == 3).then_some(()))
    })
    .await
    .unwrap();
    let workers: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'meal_settled' AND body->>'delivered_by' = 'S001'").fetch_one(&pool).await.unwrap().get(0);
    assert_eq!(workers, 3, "who delivered travels with the settlement");
    pool.close().await;
    db.drop_db().await;
}
