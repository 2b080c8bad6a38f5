//! The canteen staff's side over HTTP, read from docs/CANTEEN.md: find a meal and void it, a
//! resident's statement, a card looked up, away / back, and who may move money (a canteen
//! operator or an admin; anyone else is 403, an unknown id 422). Absurd and oversize values are
//! refused with a message; a second staff member cannot repeat a void.

use eldergate_e2e::*;
use eldergate_protocol::payload::{Down, TapResult};

mod common;
use common::{canteen_spec, next_answer, publish_tap};

/// The API client (the console work puts it behind login: switch it here).
fn api(gw: &Gateway) -> reqwest::Client {
    gw.api()
}

async fn post(
    http: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http.post(gw.url(path)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn get(http: &reqwest::Client, gw: &Gateway, path: &str) -> (u16, serde_json::Value) {
    let r = http.get(gw.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_find_a_meal_void_it_read_the_statement_and_only_operators_move_money() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 2, 0, "");
    let gw = Gateway::start(&spec).await.unwrap();
    let http = api(&gw);
    let down_topic = format!("eldergate/v1/{SITE}/down/rdr-01");
    let (_down, mut answers, ok) =
        connect_as(broker.port, None, "t-reader-down", Some(&down_topic)).await;
    assert!(ok);
    let reader = raw_client(broker.port, "t-reader").await;

    // Who may top up: operators and admins; a duty officer is 403, a stranger 422.
    let topup = |by: &str, fen: i64| serde_json::json!({"amount_fen": fen, "by": by, "method": "cash", "reason": "receipt 1"});
    let path = "/api/residents/R00001/topup";
    assert_eq!(post(&http, &gw, path, topup("S009", 100)).await.0, 403);
    assert_eq!(post(&http, &gw, path, topup("S001", 100)).await.0, 403);
    assert_eq!(post(&http, &gw, path, topup("nobody", 100)).await.0, 422);
    let (status, body) = post(&http, &gw, path, topup("S013", 5000)).await;
    assert_eq!((status, body["balance_fen"].as_i64()), (200, Some(5000)));
    let (status, body) = post(&http, &gw, path, topup("S015", 1000)).await;
    assert_eq!((status, body["balance_fen"].as_i64()), (200, Some(6000)));
    let (status, body) = post(
        &http,
        &gw,
        path,
        serde_json::json!({"amount_fen": 100, "by": "S013", "method": "gold bars"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cash"));

    // Two meals.
    for seq in 1..=2 {
        publish_tap(
            &reader,
            serde_json::json!({"v": 1, "seq": seq, "card": "CA000001"}),
        )
        .await;
        let d = next_answer(&mut answers).await;
        assert!(
            matches!(
                d,
                Down::Display {
                    result: TapResult::Paid,
                    ..
                }
            ),
            "{d:?}"
        );
    }
    // Find today's meals (ids, names, amounts) to void one.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .date();
    let (status, meals) = get(&http, &gw, &format!("/api/meals?date={today}")).await;
    assert_eq!(status, 200, "{meals}");
    let meals = meals.as_array().unwrap().clone();
    assert_eq!(meals.len(), 2);
    assert_eq!(meals[0]["name"], "张三1");
    let second = meals[0]["meal_id"].as_i64().unwrap();
    assert_eq!(
        meals[0]["payable_fen"], 1500,
        "the second meal of the period is not subsidized"
    );
    // By card, any spelling.
    let (_, by_card) = get(&http, &gw, "/api/meals?card=ca:00:00:01").await;
    assert_eq!(by_card.as_array().unwrap().len(), 2);
    // A duty officer may not void; an operator may, once; a second operator gets 409.
    let void = |by: &str| serde_json::json!({"by": by, "reason": "served twice"});
    let vpath = format!("/api/meals/{second}/void");
    assert_eq!(post(&http, &gw, &vpath, void("S010")).await.0, 403);
    let (status, v) = post(&http, &gw, &vpath, void("S013")).await;
    assert_eq!((status, v["refund_fen"].as_i64()), (200, Some(1500)), "{v}");
    assert_eq!(post(&http, &gw, &vpath, void("S014")).await.0, 409);
    assert_eq!(
        post(&http, &gw, "/api/meals/999999999999/void", void("S013"))
            .await
            .0,
        404
    );
    assert_eq!(
        post(&http, &gw, "/api/meals/-1/void", void("S013")).await.0,
        404
    );

    // The statement: each row with its running balance, ending at the balance.
    let (status, s) = get(&http, &gw, "/api/residents/R00001/statement").await;
    assert_eq!(status, 200, "{s}");
    let kinds: Vec<&str> = s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["topup", "topup", "charge", "charge", "refund"]);
    assert_eq!(s["balance_fen"], 6000 - 1350);
    assert_eq!(s["lines"][4]["balance_fen"], s["balance_fen"]);
    assert_eq!(s["lines"][4]["staff_id"], "S013");
    assert_eq!(s["lines"][0]["method"], "cash");
    let (_, short) = get(&http, &gw, "/api/residents/R00001/statement?limit=1").await;
    assert_eq!(short["lines"].as_array().unwrap().len(), 1);
    assert_eq!(short["ledger_rows"], 5);
    assert_eq!(
        get(&http, &gw, "/api/residents/R99999/statement").await.0,
        404
    );
    assert_eq!(
        get(&http, &gw, "/api/residents/R00001/statement?limit=-1")
            .await
            .0,
        400
    );

    // A card by its id.
    let (status, c) = get(&http, &gw, "/api/cards/ca000001").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            c["resident_id"].as_str(),
            c["state"].as_str(),
            c["balance_fen"].as_i64()
        ),
        (Some("R00001"), Some("active"), Some(4650))
    );
    assert_eq!(get(&http, &gw, "/api/cards/FFFFFFFF").await.0, 404);

    // Bad queries are 400 with a message.
    assert_eq!(get(&http, &gw, "/api/meals").await.0, 400);
    assert_eq!(get(&http, &gw, "/api/meals?date=2026-02-30").await.0, 400);
    let long = "9".repeat(5000);
    assert!(get(&http, &gw, &format!("/api/meals?date={long}")).await.0 >= 400);

    // Away / back: any staff; a second "away" is 409, an unknown kind 422.
    let away =
        |by: &str, kind: &str| serde_json::json!({"by": by, "kind": kind, "reason": "人民医院"});
    let apath = "/api/residents/R00002/away";
    assert_eq!(
        post(&http, &gw, apath, away("S001", "holiday")).await.0,
        422
    );
    assert_eq!(
        post(&http, &gw, apath, away("S001", "hospital")).await.0,
        200
    );
    assert_eq!(post(&http, &gw, apath, away("S009", "away")).await.0, 409);
    let back = serde_json::json!({"by": "S009"});
    assert_eq!(
        post(&http, &gw, "/api/residents/R00002/back", back.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        post(&http, &gw, "/api/residents/R00002/back", back).await.0,
        409
    );
    assert_eq!(
        post(
            &http,
            &gw,
            "/api/residents/R99999/away",
            away("S001", "away")
        )
        .await
        .0,
        404
    );

    // Absurd free text is refused with the limit, not stored: a note, a top-up's receipt number
    // and a payout's reason of 10,000 characters (under the API's body limit, so it is the
    // operation that says no); 500 characters are kept.
    let huge = "院".repeat(10_000);
    let (status, said) = post(
        &http,
        &gw,
        apath,
        serde_json::json!({"by": "S001", "kind": "away", "reason": huge}),
    )
    .await;
    assert_eq!(status, 422, "{said}");
    assert!(said.to_string().contains("at most 500"), "{said}");
    for (path, body) in [
        (
            "/api/residents/R00002/topup",
            serde_json::json!({"by": "S015", "amount_fen": 100, "reason": huge}),
        ),
        (
            "/api/residents/R00002/payout",
            serde_json::json!({"by": "S015", "amount_fen": 1, "reason": huge}),
        ),
    ] {
        assert_eq!(post(&http, &gw, path, body).await.0, 422, "{path}");
    }
    let (status, said) = post(
        &http,
        &gw,
        apath,
        serde_json::json!({"by": "S001", "kind": "away", "reason": "院".repeat(500)}),
    )
    .await;
    assert_eq!(status, 200, "{said}");
    assert_eq!(
        post(
            &http,
            &gw,
            "/api/residents/R00002/back",
            serde_json::json!({"by": "S001"})
        )
        .await
        .0,
        200
    );

    // The quarterly claim and a bad period.
    let q = (today.month() - 1) / 3 + 1;
    let r = http
        .get(gw.url(&format!("/api/reports/claim?quarter={}-Q{q}", today.year())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("居民小计,,,R00001,张三1"), "{text}");
    for bad in ["2026-Q5", "2026-Q0", "Q1", "2026-13"] {
        let s = http
            .get(gw.url(&format!("/api/reports/claim?quarter={bad}")))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, 400, "{bad}");
    }
    drop(gw);
    db.drop_db().await;
}
