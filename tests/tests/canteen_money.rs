//! Canteen money is never wrong, read from the contract (protocol/MQTT.md "Card taps",
//! SPEC.md §6.4, the rule file's `[limits]`): absurd prices are refused with an answer and kept,
//! absurd top-ups are refused with the limit, a re-tap after a void is a new meal, a second staff
//! member cannot void a meal again, and a delivered meal by someone who is not staff is answered.

use eldergate_e2e::*;
use eldergate_protocol::payload::{Down, TapResult};
use sqlx::Row;

mod common;
use common::{canteen_spec, next_answer, publish_tap};

struct Canteen {
    gw: Gateway,
    db: TestDb,
    _broker: Mosquitto,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    reader: rumqttc::AsyncClient,
    answers: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _down: rumqttc::AsyncClient,
}

impl Canteen {
    async fn start(double_tap_s: u64) -> Canteen {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start().unwrap();
        let db = TestDb::create().await.unwrap();
        let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 2, double_tap_s, "");
        let gw = Gateway::start(&spec).await.unwrap();
        let down_topic = format!("eldergate/v1/{SITE}/down/rdr-01");
        let (down, answers, ok) =
            connect_as(broker.port, None, "t-reader-down", Some(&down_topic)).await;
        assert!(ok);
        let reader = raw_client(broker.port, "t-reader").await;
        let http = gw.api();
        Canteen {
            gw,
            db,
            _broker: broker,
            _dir: dir,
            http,
            reader,
            answers,
            _down: down,
        }
    }

    async fn tap(&mut self, body: serde_json::Value) -> Down {
        publish_tap(&self.reader, body).await;
        next_answer(&mut self.answers).await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.gw.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    async fn topup(&self, resident: &str, amount_fen: i64, by: &str) -> (u16, serde_json::Value) {
        self.post(
            &format!("/api/residents/{resident}/topup"),
            serde_json::json!({"amount_fen": amount_fen, "by": by}),
        )
        .await
    }

    /// (balance, ledger rows) of a resident.
    async fn balance(&self, resident: &str) -> (i64, i64) {
        let b: serde_json::Value = self
            .http
            .get(self.gw.url(&format!("/api/residents/{resident}/balance")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            b["balance_fen"].as_i64().unwrap(),
            b["ledger_rows"].as_i64().unwrap(),
        )
    }

    async fn count(&self, sql: &str) -> i64 {
        let journal = self.gw.journal().await.unwrap();
        sqlx::query(sql).fetch_one(&journal).await.unwrap().get(0)
    }

    async fn stop(self) {
        drop(self.gw);
        self.db.drop_db().await;
    }
}

fn refused(seq: u32, name: &str, balance_fen: i64) -> Down {
    Down::Display {
        v: 1,
        seq,
        result: TapResult::Refused,
        name: Some(name.into()),
        price_fen: 0,
        subsidy_fen: 0,
        payable_fen: 0,
        balance_fen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_price_is_refused_answered_kept_and_the_gateway_goes_on() {
    let mut c = Canteen::start(0).await;
    assert_eq!(c.topup("R00001", 2000, "S013").await.0, 200);
    let absurd = [1i64 << 62, -1, 0, i64::MAX, 100_001];
    for (seq, price) in (1u32..).zip(absurd) {
        let body = serde_json::json!({"v": 1, "seq": seq, "card": "CA000001", "price_fen": price});
        assert_eq!(
            c.tap(body).await,
            refused(seq, "张*1", 2000),
            "price {price}"
        );
    }
    // The reader did not see the answer and retransmits: the same answer, kept once.
    let again = serde_json::json!({"v": 1, "seq": 1, "card": "CA000001", "price_fen": 1i64 << 62});
    assert_eq!(c.tap(again).await, refused(1, "张*1", 2000));
    for (reason, n) in [
        ("price_too_high", 3),
        ("negative_price", 1),
        ("free_meal_not_allowed", 1),
    ] {
        let sql = format!("SELECT COUNT(*) FROM dead_letters WHERE reason = '{reason}'");
        assert_eq!(c.count(&sql).await, n, "{reason}");
    }
    assert_eq!(
        c.count("SELECT COUNT(*) FROM taps WHERE meal_id IS NULL")
            .await,
        5,
        "each refused tap is recorded with its answer"
    );
    // Nothing was charged, and the writer still settles meals.
    assert_eq!(c.balance("R00001").await, (2000, 1));
    let ok = c
        .tap(serde_json::json!({"v": 1, "seq": 6, "card": "CA000001"}))
        .await;
    assert!(
        matches!(
            ok,
            Down::Display {
                result: TapResult::Paid,
                payable_fen: 1350,
                balance_fen: 650,
                ..
            }
        ),
        "{ok:?}"
    );
    assert_eq!(c.balance("R00001").await, (650, 2));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topup_beyond_the_limits_is_refused_with_the_limit_not_retry_later() {
    let c = Canteen::start(0).await;
    for amount in [1_000_000_000_000_000i64, i64::MAX, 1_000_001] {
        let (status, body) = c.topup("R00001", amount, "S013").await;
        assert_eq!(status, 422, "{amount}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains("1000000 fen"), "the limit is named: {msg}");
    }
    for amount in [0, -1, i64::MIN] {
        assert_eq!(c.topup("R00001", amount, "S013").await.0, 422, "{amount}");
    }
    // Up to the balance cap (¥100,000) in ten top-ups of the largest size; the eleventh is refused.
    for _ in 0..10 {
        assert_eq!(c.topup("R00001", 1_000_000, "S013").await.0, 200);
    }
    let (status, body) = c.topup("R00001", 1, "S014").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("10000000 fen"));
    assert_eq!(c.balance("R00001").await, (10_000_000, 10));
    // A payout of a negative amount is a wrong request, not "nothing to pay out".
    let (status, _) = c
        .post(
            "/api/residents/R00001/payout",
            serde_json::json!({"by": "S013", "amount_fen": -5, "reason": "x"}),
        )
        .await;
    assert_eq!(status, 422);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retap_after_a_void_is_a_new_meal_and_a_double_tap_shows_todays_balance() {
    let mut c = Canteen::start(600).await;
    assert_eq!(c.topup("R00001", 5000, "S013").await.0, 200);
    let tap = |seq: u32| serde_json::json!({"v": 1, "seq": seq, "card": "CA000001"});
    let paid = |d: &Down| match d {
        Down::Display {
            result: TapResult::Paid,
            balance_fen,
            ..
        } => Some(*balance_fen),
        _ => None,
    };
    assert_eq!(paid(&c.tap(tap(1)).await), Some(3650));
    assert_eq!(paid(&c.tap(tap(2)).await), Some(3650), "a double tap");
    assert_eq!(c.count("SELECT COUNT(*) FROM meals").await, 1);
    // Staff void the meal; a second staff member voiding it again is told who did.
    let void = |by: &str| serde_json::json!({"by": by, "reason": "wrong dish"});
    assert_eq!(c.post("/api/meals/1/void", void("S013")).await.0, 200);
    let (status, body) = c.post("/api/meals/1/void", void("S014")).await;
    assert_eq!(status, 409);
    assert!(body["error"].as_str().unwrap().contains("S013"), "{body}");
    assert_eq!(c.balance("R00001").await, (5000, 3));
    // The resident taps again within the window: a new meal, charged — not the voided one.
    assert_eq!(paid(&c.tap(tap(3)).await), Some(3650));
    assert_eq!(c.count("SELECT COUNT(*) FROM meals").await, 2);
    assert_eq!(c.balance("R00001").await, (3650, 4));
    // After a top-up, a double tap of that meal shows the balance as it is now.
    assert_eq!(c.topup("R00001", 1000, "S014").await.0, 200);
    assert_eq!(paid(&c.tap(tap(4)).await), Some(4650));
    assert_eq!(c.balance("R00001").await, (4650, 5));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_meal_by_someone_not_staff_is_answered_refused() {
    let mut c = Canteen::start(0).await;
    assert_eq!(c.topup("R00002", 3000, "S013").await.0, 200);
    let bad = serde_json::json!({"v": 1, "seq": 7, "card": "CA000002", "delivered_by": "S999"});
    assert_eq!(c.tap(bad.clone()).await, refused(7, "张*2", 3000));
    assert_eq!(
        c.tap(bad).await,
        refused(7, "张*2", 3000),
        "the same answer again"
    );
    assert_eq!(
        c.count("SELECT COUNT(*) FROM dead_letters WHERE reason = 'unknown_staff'")
            .await,
        1
    );
    assert_eq!(c.count("SELECT COUNT(*) FROM meals").await, 0);
    assert_eq!(c.balance("R00002").await, (3000, 1));
    c.stop().await;
}
