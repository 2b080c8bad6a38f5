//! The console's pages (history, visits, residents, devices, canteen counter, overview) from
//! outside: a real gateway, Mosquitto, PostgreSQL, and headless Chromium at a phone's 360 px
//! (screenshots under target/console-*.png); plus plain-HTTP checks of what an outsider, a wrong
//! role and absurd query values get.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{browser, driver, log_in, page_width, screenshot, wait_for_text, WAIT};
use common::canteen_spec;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use fantoccini::{Client, Locator};

/// A client that keeps no cookies and follows no redirects.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct World {
    broker: Mosquitto,
    db: TestDb,
    gw: Gateway,
    dir: tempfile::TempDir,
}

async fn world(extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 3, 0, extra);
    let gw = Gateway::start(&spec).await.unwrap();
    for (staff, password) in [
        ("S001", "grid worker password"),
        ("S009", "duty one's password"),
        ("S010", "duty two's password"),
        ("S012", "manager password"),
        ("S013", "operator password"),
        ("S015", "admin's password"),
    ] {
        gw.set_password(staff, password).unwrap();
    }
    World {
        broker,
        db,
        gw,
        dir,
    }
}

/// Presses btn-0001 (resident R00001) and returns the alert id.
async fn raise_alarm(w: &World) -> i64 {
    let fleet = Fleet::start(fleet_options(w.broker.port, "t-pages-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await);
    let api = w.gw.api();
    eventually(WAIT, "the alert is open", || {
        let api = api.clone();
        let url = w.gw.url("/api/alerts");
        async move {
            let open: Vec<serde_json::Value> = api.get(url).send().await?.json().await?;
            Ok(open
                .iter()
                .find(|a| a["kind"] == "sos")
                .and_then(|a| a["alert_id"].as_i64()))
        }
    })
    .await
    .unwrap()
}

/// R00001 taps card CA000001 at rdr-01; returns the meal id once it is settled.
async fn serve_meal(w: &World, seq: u64) -> i64 {
    let reader = raw_client(w.broker.port, &format!("t-pages-reader-{seq}")).await;
    common::publish_tap(
        &reader,
        serde_json::json!({"v": 1, "seq": seq, "card": "CA000001"}),
    )
    .await;
    let api = w.gw.api();
    eventually(WAIT, "the meal is settled", || {
        let api = api.clone();
        let url = w.gw.url("/api/meals?resident=R00001");
        async move {
            let meals: Vec<serde_json::Value> = api.get(url).send().await?.json().await?;
            Ok(meals
                .iter()
                .filter(|m| m["voided_by"].is_null())
                .find_map(|m| m["meal_id"].as_i64()))
        }
    })
    .await
    .unwrap()
}

/// Logs in over HTTP; the session cookie.
async fn login(gw: &Gateway, staff: &str, password: &str) -> String {
    let r = http()
        .post(gw.url("/console/login"))
        .form(&[("staff_id", staff), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{staff} logs in");
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("eg_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .unwrap()
}

/// The CSRF token in a page's meta tag.
async fn csrf(gw: &Gateway, cookie: &str) -> String {
    let html = http()
        .get(gw.url("/console"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = html
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta")
        + 27;
    html[at..at + 64].to_string()
}

async fn get_status(gw: &Gateway, cookie: Option<&str>, path: &str) -> (u16, String) {
    let mut r = http().get(gw.url(path));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Opens `path`, checks nothing scrolls sideways at 360 px, saves `target/console-{name}.png`.
async fn at_360(c: &Client, gw: &Gateway, path: &str, name: &str) {
    c.goto(&gw.url(path)).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("main h2"))
        .await
        .unwrap_or_else(|_| panic!("{path} shows its heading"));
    screenshot(c, name).await;
    let width = page_width(c).await;
    assert!(
        width <= 360.0,
        "{path}: no sideways scrolling at 360 px (the page is {width} px wide)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_use_the_pages_in_a_phone_browser() {
    // A check-in deadline a little ahead: R00002 shows no activity and becomes a visit task.
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let now = jiff::Timestamp::now().to_zoned(tz);
    let deadline = now
        .time()
        .checked_add(jiff::SignedDuration::from_secs(20))
        .unwrap();
    let visits = now.time() < jiff::civil::time(23, 58, 0, 0);
    let extra = if visits {
        format!(
            "[checkin]\nenabled = true\ndeadline = \"{}\"\n",
            deadline.strftime("%H:%M:%S")
        )
    } else {
        eprintln!("visit task part skipped: too close to local midnight for a same-day deadline");
        String::new()
    };
    let w = world(&extra).await;
    let gw = &w.gw;
    let alert = raise_alarm(&w).await;
    let api = gw.api();
    let r = api
        .post(gw.url(&format!("/api/alerts/{alert}/ack")))
        .json(&serde_json::json!({"by": "S009", "note": "在路上"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let d = driver();
    let c = browser(&d, 360).await;

    // Duty: the acknowledged alarm in history, with who and when; then its audit trail.
    log_in(&c, gw, "S009", "duty one's password").await;
    c.goto(&gw.url("/console/history?kind=sos")).await.unwrap();
    let acked = wait_for_text(&c, &format!("article[data-id='{alert}'] div.acked"), "S009").await;
    assert!(acked.contains("确认"), "{acked}");
    assert!(acked.contains("在路上"), "{acked}");
    assert!(
        acked.contains(
            &jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
                .date()
                .to_string()
        ),
        "when: {acked}"
    );
    screenshot(&c, "history-360").await;
    // The language switch comes back to the same page with its filters, in the other language;
    // and back again.
    for (lang, word) in [("en", "acknowledged by"), ("zh", "确认")] {
        c.find(Locator::Css("header.top nav a[href^='/console/lang']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let text = wait_for_text(&c, &format!("article[data-id='{alert}'] div.acked"), word).await;
        assert!(text.contains("S009"), "{lang}: {text}");
        let url = c.current_url().await.unwrap();
        assert_eq!(
            (url.path(), url.query()),
            ("/console/history", Some("kind=sos")),
            "{lang}: {url}"
        );
    }
    c.find(Locator::Css(&format!("article[data-id='{alert}'] h3 a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let trail = wait_for_text(&c, "#trail", "alert_acknowledged").await;
    assert!(trail.contains("alert_raised"), "{trail}");
    assert!(trail.contains("S009"), "{trail}");
    screenshot(&c, "alert-trail-360").await;

    // Every page at 360 px, as duty (who may open all of them).
    for (path, name) in [
        ("/console", "board-pages-360"),
        ("/console/visits", "visits-360"),
        ("/console/history", "history-all-360"),
        ("/console/residents?q=张三", "residents-360"),
        ("/console/residents/R00001", "resident-360"),
        ("/console/devices", "devices-360"),
        ("/console/overview", "overview-360"),
    ] {
        at_360(&c, gw, path, name).await;
    }

    // The canteen operator: top up in the page, a meal is served, void it in the page.
    log_in(&c, gw, "S013", "operator password").await;
    at_360(&c, gw, "/console/canteen?resident=R00001", "canteen-360").await;
    c.goto(&gw.url("/console/canteen?q=CA000001"))
        .await
        .unwrap();
    wait_for_text(&c, "#serving", "R00001").await;
    let form = c.find(Locator::Css("form.topup")).await.unwrap();
    form.find(Locator::Css("input[name=amount_fen]"))
        .await
        .unwrap()
        .send_keys("50")
        .await
        .unwrap();
    form.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("收据 0001")
        .await
        .unwrap();
    form.find(Locator::Css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&c, "#balance", "50.00").await;
    let ledger = wait_for_text(&c, "#ledger", "收据 0001").await;
    assert!(ledger.contains("S013"), "the session's staff id: {ledger}");
    let meal = serve_meal(&w, 1).await;
    c.refresh().await.unwrap();
    wait_for_text(&c, "#balance", "36.50").await;
    let row = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!("tr[data-meal='{meal}'] form.void")))
        .await
        .unwrap();
    row.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("打错了")
        .await
        .unwrap();
    row.find(Locator::Css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&c, &format!("tr[data-meal='{meal}']"), "已作废").await;
    wait_for_text(&c, "#balance", "50.00").await;
    let ledger = wait_for_text(&c, "#ledger", "退款").await;
    assert!(ledger.contains("打错了"), "{ledger}");
    screenshot(&c, "canteen-voided-360").await;
    let st: serde_json::Value = api
        .get(gw.url("/api/residents/R00001/statement"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["balance_fen"], 5000);
    let refund = st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "refund")
        .unwrap();
    assert_eq!(refund["staff_id"], "S013");

    // … who may not acknowledge an alarm: no button, the history refused, the API refuses.
    c.goto(&gw.url("/console")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!("article[data-id='{alert}']")))
        .await
        .unwrap();
    assert!(c.find(Locator::Css("button.ack")).await.is_err());
    let nav = c
        .find(Locator::Css("nav.pages"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(nav.contains("食堂") && !nav.contains("历史"), "{nav}");
    c.goto(&gw.url("/console/history")).await.unwrap();
    wait_for_text(&c, "main", "你的角色不能查看这个页面").await;
    c.goto(&gw.url("/console")).await.unwrap();
    let status = c
        .execute(
            "return fetch('/api/alerts/' + arguments[0] + '/ack', {method: 'POST', credentials: 'same-origin',
               headers: {'content-type': 'application/json',
                         'x-csrf-token': document.querySelector('meta[name=csrf-token]').content},
               body: '{}'}).then(r => r.status)",
            vec![serde_json::json!(alert)],
        )
        .await
        .unwrap();
    assert_eq!(
        status, 403,
        "the API refuses the canteen operator's session"
    );

    // The admin imports a roster at the counter: a dry run shows the change, nothing changes
    // until the import is confirmed.
    let roster = w.dir.path().join("new-roster.csv");
    let mut rows = String::from("resident_id,name,gender,birth_date,statuses,building,unit,room,grid,phone,card_id,emergency_contact\n");
    for i in 1..=4u32 {
        rows.push_str(&format!(
            "R{i:05},张三{i},女,1940-01-01,独居,1号楼,1单元,{i},G01,,{:08X},\n",
            0xCA00_0000u32 + i
        ));
    }
    std::fs::write(&roster, rows).unwrap();
    log_in(&c, gw, "S015", "admin's password").await;
    c.goto(&gw.url("/console/canteen")).await.unwrap();
    c.find(Locator::Css("#roster input[name=file]"))
        .await
        .unwrap()
        .send_keys(roster.to_str().unwrap())
        .await
        .unwrap();
    c.find(Locator::Css("#roster button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let dry = wait_for_text(&c, "#roster-result", "试运行").await;
    assert!(dry.contains("R00004"), "{dry}");
    let card = |api: reqwest::Client| {
        let url = gw.url("/api/cards/CA000004");
        async move { api.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(card(api.clone()).await, 404, "a dry run changes nothing");
    screenshot(&c, "roster-dry-run").await;
    c.find(Locator::Css("#roster-confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&c, "#roster-result", "已导入").await;
    assert_eq!(
        card(api.clone()).await,
        200,
        "the import bound the new card"
    );

    // The grid worker resolves the visit task with a note.
    if visits {
        let task = eventually(WAIT, "a missed check-in for R00002", || {
            let api = api.clone();
            let url = gw.url("/api/alerts");
            async move {
                let open: Vec<serde_json::Value> = api.get(url).send().await?.json().await?;
                Ok(open
                    .iter()
                    .find(|a| a["kind"] == "missed_checkin" && a["resident_id"] == "R00002")
                    .and_then(|a| a["alert_id"].as_i64()))
            }
        })
        .await
        .unwrap();
        log_in(&c, gw, "S001", "grid worker password").await;
        c.goto(&gw.url("/console/visits")).await.unwrap();
        let card = c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(&format!("article.task[data-id='{task}']")))
            .await
            .unwrap();
        let text = card.text().await.unwrap();
        assert!(
            text.contains("本网格"),
            "the grid worker's own grid: {text}"
        );
        screenshot(&c, "visits-task-360").await;
        card.find(Locator::Css("form.visit input[name=note]"))
            .await
            .unwrap()
            .send_keys("已上门，老人安好，手机没电")
            .await
            .unwrap();
        card.find(Locator::Css("form.visit button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for_text(
            &c,
            &format!("article.done[data-id='{task}']"),
            "已上门，老人安好",
        )
        .await;
        let a: serde_json::Value = api
            .get(gw.url(&format!("/api/alerts/{task}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(a["state"], "resolved");
        assert_eq!(a["resolved"]["by"], "S001");
        assert_eq!(a["resolved"]["note"], "已上门，老人安好，手机没电");
        screenshot(&c, "visits-done-360").await;
    }
    c.close().await.unwrap();
    w.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_refuse_outsiders_wrong_roles_and_absurd_queries() {
    let w = world("").await;
    let gw = &w.gw;
    let alert = raise_alarm(&w).await;
    let pages = [
        "/console/history",
        "/console/history.csv",
        "/console/visits",
        "/console/residents",
        "/console/residents/R00001",
        "/console/devices",
        "/console/canteen",
        "/console/overview",
    ];
    // No session: the login page.
    for p in pages {
        let r = http().get(gw.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{p}");
        assert_eq!(r.headers()["location"], "/console/login", "{p}");
    }
    let alert_page = format!("/console/alerts/{alert}");
    let (s, _) = get_status(gw, None, &alert_page).await;
    assert_eq!(s, 303);
    // An API token is not a console login.
    let r = gw
        .api()
        .get(gw.url("/console/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Wrong roles: 403, and the bar does not offer the page.
    let operator = login(gw, "S013", "operator password").await;
    for p in [
        "/console/history",
        "/console/history.csv",
        "/console/visits",
        "/console/devices",
        "/console/overview",
        alert_page.as_str(),
    ] {
        let (s, body) = get_status(gw, Some(&operator), p).await;
        assert_eq!(s, 403, "canteen operator on {p}: {body}");
    }
    let (s, body) = get_status(gw, Some(&operator), "/console/canteen").await;
    assert_eq!(s, 200);
    assert!(!body.contains("href=\"/console/history\""), "{body}");
    let grid = login(gw, "S001", "grid worker password").await;
    for p in ["/console/canteen", "/console/overview"] {
        let (s, _) = get_status(gw, Some(&grid), p).await;
        assert_eq!(s, 403, "grid worker on {p}");
    }
    let manager = login(gw, "S012", "manager password").await;
    let (s, _) = get_status(gw, Some(&manager), "/console/canteen?resident=R00001").await;
    assert_eq!(s, 403, "the counter is for who moves money");
    let (s, body) = get_status(gw, Some(&manager), "/console/visits").await;
    assert_eq!(s, 200);
    assert!(
        !body.contains("data-api"),
        "a manager gets no forms: {body}"
    );
    let (s, body) = get_status(gw, Some(&manager), "/console/overview").await;
    assert_eq!(s, 200);
    assert!(body.contains("class=\"num alarms\">1<"), "{body}");

    // Absurd query values: 4xx with a message, never a 500.
    let duty = login(gw, "S009", "duty one's password").await;
    let long = "x".repeat(5000);
    for p in [
        "/console/history?from=2026-13-45".to_string(),
        "/console/history?from=99999-01-01".into(),
        "/console/history?to=9999-12-31".into(),
        "/console/history?from=2026-02-01&to=2026-01-01".into(),
        "/console/history?min_ack_s=-1".into(),
        "/console/history?max_ack_s=1e99".into(),
        "/console/history?min_ack_s=99999999999999999999999".into(),
        "/console/history?min_ack_s=60&max_ack_s=10".into(),
        "/console/history?kind=%3Cscript%3E".into(),
        "/console/history?state=gone".into(),
        format!("/console/history?resident={long}"),
        "/console/history?kind=sos&kind=sos".into(),
        "/console/history.csv?from=not-a-date".into(),
        "/console/alerts/abc".into(),
        "/console/alerts/99999999999999999999999".into(),
        "/console/alerts/-1".into(),
        "/console/devices?show=everything".into(),
        format!("/console/residents?q={long}"),
        format!("/console/residents/{}", "R".repeat(300)),
        "/console/residents/R99999".into(),
    ] {
        let (s, body) = get_status(gw, Some(&duty), &p).await;
        assert!(
            (400..500).contains(&s),
            "{p}: {s} (want 4xx) {}",
            body.chars().take(300).collect::<String>()
        );
    }
    for p in [
        "/console/canteen?date=0000-00-00".to_string(),
        "/console/canteen?date=2026-02-30".into(),
        format!("/console/canteen?q={long}"),
        format!("/console/canteen?resident={long}"),
    ] {
        let (s, _) = get_status(gw, Some(&operator), &p).await;
        assert!((400..500).contains(&s), "{p}: {s} (want 4xx)");
    }
    let (s, body) = get_status(gw, Some(&operator), "/console/canteen?resident=R99999").await;
    assert_eq!(
        s, 200,
        "an unknown resident at the counter is said, not an error"
    );
    assert!(body.contains("R99999"), "{body}");
    // Odd but valid: an empty result, not an error.
    for p in [
        "/console/history?resident=%27%3B%20DROP%20TABLE%20alerts%3B--",
        "/console/history?grid=NOPE&acked_by=nobody",
        "/console/residents?q=%25",
        "/console/residents?q=%E2%80%AE",
        "/console/devices?q=%00",
    ] {
        let (s, _) = get_status(gw, Some(&duty), p).await;
        assert_eq!(s, 200, "{p}");
    }

    // The CSV export holds exactly the filtered alerts.
    let r = gw
        .api()
        .post(gw.url(&format!("/api/alerts/{alert}/ack")))
        .json(&serde_json::json!({"by": "S010"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .get(gw.url("/console/history.csv?kind=sos&acked_by=S010"))
        .header("cookie", &duty)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.text().await.unwrap();
    let mut rows = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(&rows[0][0], alert.to_string().as_str());
    assert_eq!(&rows[0][11], "S010");
    assert!(!text.contains("张三1"), "names are masked: {text}");
    let (s, text) = get_status(gw, Some(&duty), "/console/history.csv?acked_by=S009").await;
    assert_eq!(s, 200);
    assert_eq!(
        text.trim_start_matches('\u{feff}').lines().count(),
        1,
        "{text}"
    );

    // Two operators void the same meal: the second gets a clear conflict.
    let r = gw
        .api()
        .post(gw.url("/api/residents/R00001/topup"))
        .json(&serde_json::json!({"amount_fen": 5000, "by": "S013", "method": "cash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let meal = serve_meal(&w, 1).await;
    let operator_csrf = csrf(gw, &operator).await;
    let admin = login(gw, "S015", "admin's password").await;
    let admin_csrf = csrf(gw, &admin).await;
    let void = |cookie: String, token: String| {
        let url = gw.url(&format!("/api/meals/{meal}/void"));
        async move {
            http()
                .post(url)
                .header("cookie", cookie)
                .header("x-csrf-token", token)
                .json(&serde_json::json!({"reason": "served twice"}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = void(operator.clone(), operator_csrf).await;
    assert_eq!(first.status(), 200);
    let second = void(admin.clone(), admin_csrf).await;
    assert_eq!(second.status(), 409);
    let body: serde_json::Value = second.json().await.unwrap();
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("already voided by S013"), "{msg}");
    let st: serde_json::Value = gw
        .api()
        .get(gw.url("/api/residents/R00001/statement"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["balance_fen"], 5000, "refunded once");
    w.db.drop_db().await;
}

/// A grid worker learns that R00003 went into hospital and says so on the resident's page (no
/// curl); a second person who opened the page before sees the refusal when doing the same; the
/// canteen counter shows it; then R00003 is reported back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_is_reported_in_hospital_and_back_from_their_page() {
    let w = world("").await;
    let gw = &w.gw;
    let d = driver();
    let c = browser(&d, 360).await;

    log_in(&c, gw, "S001", "grid worker password").await;
    c.goto(&gw.url("/console/residents/R00003")).await.unwrap();
    click(&c, "form.away select[name=kind] option[value=hospital]").await;
    c.find(Locator::Css("form.away input[name=reason]"))
        .await
        .unwrap()
        .send_keys("人民医院 3F")
        .await
        .unwrap();
    click(&c, "form.away button").await;
    let now = wait_for_text(&c, "div.away", "住院").await;
    assert!(now.contains("人民医院 3F") && now.contains("S001"), "{now}");
    screenshot(&c, "resident-in-hospital-360").await;

    // The operator's page was opened before: the same report again is refused, and says why.
    log_in(&c, gw, "S013", "operator password").await;
    let api = gw.api();
    let r = api
        .post(gw.url("/api/residents/R00003/back"))
        .json(&serde_json::json!({"by": "S009"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.goto(&gw.url("/console/canteen?resident=R00003"))
        .await
        .unwrap();
    let r = api
        .post(gw.url("/api/residents/R00003/away"))
        .json(&serde_json::json!({"by": "S010", "kind": "away", "reason": "走亲戚"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    click(&c, "form.away button").await;
    let refused = wait_for_text(&c, "form.away .status", "S010").await;
    assert!(refused.contains("already"), "{refused}");

    // Back, from the counter.
    c.goto(&gw.url("/console/canteen?resident=R00003"))
        .await
        .unwrap();
    let now = wait_for_text(&c, "#serving div.away", "外出").await;
    assert!(now.contains("走亲戚"), "{now}");
    click(&c, "form.back button").await;
    wait_for_text(&c, "#status", "已登记回来").await;
    assert!(c.find(Locator::Css("#serving div.away")).await.is_err());
    assert!(c.find(Locator::Css("#serving form.away")).await.is_ok());
    c.close().await.unwrap();
}

/// Clicks the element `css` finds.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}
