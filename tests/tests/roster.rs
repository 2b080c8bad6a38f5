//! Roster updates while the gateway runs: a new export is checked (every problem, with its line),
//! applied in one step (new residents' cards work at once, a replaced card and the cards of
//! residents who left are retired), recorded and forwarded, saved over residents_csv so a restart
//! keeps it; a dry run changes nothing; the CLI does the same through the running gateway.

use eldergate_e2e::*;
use eldergate_protocol::payload::{Down, TapResult};
use sqlx::Row;

mod common;
use common::{canteen_spec, next_answer, publish_tap, WAIT};

const HEADER: &str =
    "resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact\n";

/// The harness's roster for 3 buttons (R00001-R00003, cards CA000001-CA000003), with R00002's
/// card replaced by CB000002, plus `more` rows.
fn roster(more: &str) -> String {
    format!(
        "{HEADER}R00001,张三1,女,1940-01-01,独居,1号楼,1单元,1,G01,,CA000001,\n\
         R00002,张三2,女,1940-01-01,独居,1号楼,1单元,2,G01,,CB000002,\n\
         R00003,张三3,女,1940-01-01,独居,1号楼,1单元,3,G01,,CA000003,\n{more}"
    )
}

async fn import(gw: &Gateway, csv: String, by: &str, dry_run: bool) -> (u16, serde_json::Value) {
    let r = gw
        .api()
        .post(gw.url("/api/roster"))
        .query(&[
            ("by", by),
            ("dry_run", if dry_run { "true" } else { "false" }),
        ])
        .body(csv)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn result(d: &Down) -> (TapResult, Option<String>) {
    match d {
        Down::Display { result, name, .. } => (*result, name.clone()),
        other => panic!("not a display: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_roster_is_checked_applied_live_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 3, 0, "");
    let mut gw = Gateway::start(&spec).await.unwrap();
    let http = gw.api();
    for r in ["R00002"] {
        let ok = http
            .post(gw.url(&format!("/api/residents/{r}/topup")))
            .json(&serde_json::json!({"amount_fen": 5000, "by": "S013"}))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let (_c, mut answers, ok) = connect_as(
        broker.port,
        None,
        "t-roster-down",
        Some(&format!("eldergate/v1/{SITE}/down/rdr-01")),
    )
    .await;
    assert!(ok);
    let reader = raw_client(broker.port, "t-roster-reader").await;
    let mut seq = 0u32;
    let mut tap = |card: &'static str| {
        seq += 1;
        let body = serde_json::json!({"v": 1, "seq": seq, "card": card});
        let reader = reader.clone();
        async move { publish_tap(&reader, body).await }
    };

    // A roster with problems: every one is named, nothing changes.
    let bad = format!(
        "{HEADER}R00002,张三2,女,1940-13-01,,,,,G01,,CA000002,\n\
         R00003,张三3,女,1940-01-01,,,,,G01,,CA000002,\n\
         R00010,,女,1940-01-01,,,,,G01,,,\n"
    );
    let (status, body) = import(&gw, bad, "S009", false).await;
    assert_eq!(status, 422, "{body}");
    let at: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["at"].as_str().unwrap())
        .collect();
    assert_eq!(at, ["roster:2", "roster:3", "roster:4"], "{body}");
    // Leaving out R00001 would orphan button btn-0001.
    let (status, body) = import(&gw, roster("").replace("R00001,", "R00099,"), "S009", false).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string().contains("devices.btn-0001.resident_id"),
        "{body}"
    );
    // Only registered staff import.
    let (status, body) = import(&gw, roster(""), "nobody", false).await;
    assert_eq!(status, 422, "{body}");

    // A dry run says what would change and changes nothing.
    let newcomer = "R00010,王五,男,1950-05-05,,2号楼,1单元,9,G01,,CC000010,\n";
    let (status, body) = import(&gw, roster(newcomer), "S009", true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], false);
    assert_eq!(body["added"], serde_json::json!(["R00010"]));
    tap("CA000002").await;
    assert_eq!(result(&next_answer(&mut answers).await).0, TapResult::Paid);

    // Applied: the newcomer's card works at once, R00002's old card is retired, the new one pays.
    let (status, body) = import(&gw, roster(newcomer), "S009", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true);
    assert_eq!(body["added"], serde_json::json!(["R00010"]));
    assert_eq!(body["changed"], serde_json::json!(["R00002"]));
    assert_eq!(
        body["cards_bound"],
        serde_json::json!(["CB000002", "CC000010"])
    );
    assert_eq!(body["cards_retired"], serde_json::json!(["CA000002"]));
    tap("CC000010").await;
    assert_eq!(
        result(&next_answer(&mut answers).await),
        (TapResult::InsufficientBalance, Some("王*".into()))
    );
    let ok = http
        .post(gw.url("/api/residents/R00010/topup"))
        .json(&serde_json::json!({"amount_fen": 5000, "by": "S013"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    tap("CC000010").await;
    assert_eq!(result(&next_answer(&mut answers).await).0, TapResult::Paid);
    tap("CA000002").await;
    assert_eq!(
        result(&next_answer(&mut answers).await),
        (TapResult::UnknownCard, None)
    );
    tap("CB000002").await;
    assert_eq!(
        result(&next_answer(&mut answers).await),
        (TapResult::Paid, Some("张*2".into()))
    );

    // The newcomer leaves again: their card is retired.
    let (status, body) = import(&gw, roster(""), "S010", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], serde_json::json!(["R00010"]));
    assert_eq!(body["cards_retired"], serde_json::json!(["CC000010"]));
    tap("CC000010").await;
    assert_eq!(
        result(&next_answer(&mut answers).await).0,
        TapResult::UnknownCard
    );
    // Their subsidized meal is still claimed this month, under their name.
    let month = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .strftime("%Y-%m")
        .to_string();
    let claim = http
        .get(gw.url(&format!("/api/reports/claim?month={month}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(claim.contains("R00010,王五"), "{claim}");
    // What is left of their balance is paid out in cash, once.
    let payout = |reason: &'static str| {
        http.post(gw.url("/api/residents/R00010/payout"))
            .json(&serde_json::json!({"by": "S013", "reason": reason}))
            .send()
    };
    let paid = payout("moved away; receipt 0042").await.unwrap();
    assert_eq!(paid.status(), 200);
    let paid: serde_json::Value = paid.json().await.unwrap();
    assert_eq!(
        (paid["amount_fen"].as_i64(), paid["balance_fen"].as_i64()),
        (Some(3650), Some(0)),
        "{paid}"
    );
    assert_eq!(payout("again").await.unwrap().status(), 409);
    // They come back: their card works again (no balance left, so the reader says so).
    let (status, body) = import(&gw, roster(newcomer), "S009", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cards_reactivated"], serde_json::json!(["CC000010"]));
    tap("CC000010").await;
    assert_eq!(
        result(&next_answer(&mut answers).await),
        (TapResult::InsufficientBalance, Some("王*".into()))
    );
    let (status, _) = import(&gw, roster(""), "S009", false).await;
    assert_eq!(status, 200);

    // Saved over residents_csv: a restart loads the imported roster.
    let saved = std::fs::read_to_string(gw.config.parent().unwrap().join("residents.csv")).unwrap();
    assert_eq!(saved, roster(""));
    gw.sigterm().unwrap();
    gw.spawn().await.unwrap();
    tap("CB000002").await;
    assert_eq!(result(&next_answer(&mut answers).await).0, TapResult::Paid);
    tap("CA000002").await;
    assert_eq!(
        result(&next_answer(&mut answers).await).0,
        TapResult::UnknownCard
    );

    // Every import is in the journal's audit trail and reaches the central store.
    let pool = db.pool().await.unwrap();
    eventually(WAIT, "four roster imports at the central store", || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'roster_imported'")
            .fetch_one(&pool)
            .await?
            .get(0);
        Ok((n == 4).then_some(()))
    })
    .await
    .unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_through_the_running_gateway_and_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 3, 0, "");
    let gw = Gateway::start(&spec).await.unwrap();
    let file = dir.path().join("new-roster.csv");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin_dir().join("eldergate"))
            .arg("roster")
            .arg("--config")
            .arg(&gw.config)
            .arg("import")
            .arg(&file)
            .env("ELDERGATE_TOKEN", &gw.token)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    std::fs::write(
        &file,
        roster("R00010,王五,男,1950-05-05,,,,,G01,,CC000010,\n"),
    )
    .unwrap();
    let (ok, out, err) = cli(&["--by", "S009", "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"applied\": false"), "{out}");
    let (ok, out, err) = cli(&["--by", "S009"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"R00010\""), "{out}");

    std::fs::write(&file, format!("{HEADER}R00001,,女,not-a-date,,,,,,,,\n")).unwrap();
    let (ok, out, err) = cli(&["--by", "S009"]);
    assert!(!ok, "{out}{err}");
    assert!(out.contains("roster:2"), "{out}");
    assert!(err.contains("the roster was not imported"), "{err}");
    db.drop_db().await;
}
