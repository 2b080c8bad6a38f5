//! The console in a real browser: headless Chromium driven over WebDriver (Debian's chromium and
//! chromium-driver; tests/run installs them). Screenshots go to target/console-*.png.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{browser, driver, fill_login, page_width, screenshot, submit_login, WAIT};
use common::canteen_spec;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use fantoccini::{Client, Locator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_appears_on_the_board_without_a_reload_and_is_acknowledged_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = Gateway::start(&canteen_spec(
        dir.path(),
        broker.port,
        db.url.clone(),
        2,
        0,
        "",
    ))
    .await
    .unwrap();
    gw.set_password("S009", "duty one's password").unwrap();
    let d = driver();
    let c = browser(&d, 360).await;

    submit_login(&c, &gw, "S009", "not the password").await;
    // The refusal is a new page: wait for it (the submit returns before it has loaded).
    let refused = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("p.error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refused.contains("员工号或密码不对"), "{refused}");

    submit_login(&c, &gw, "S009", "duty one's password").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#rows"))
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//span[@id='live'][text()='实时']"))
        .await
        .expect("the board's live stream connects");

    let fleet = Fleet::start(fleet_options(broker.port, "t-browser-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await);
    let card = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("article.card.high"))
        .await
        .expect("the press appears without a reload");
    let text = card.text().await.unwrap();
    assert!(text.contains("紧急呼叫"), "{text}");
    screenshot(&c, "board-360").await;
    let width = page_width(&c).await;
    assert!(
        width <= 360.0,
        "no sideways scrolling at 360 px (page is {width} px wide)"
    );

    card.find(Locator::Css("input[name=note]"))
        .await
        .unwrap()
        .send_keys("在路上")
        .await
        .unwrap();
    card.find(Locator::Css("button.ack"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let api = gw.api();
    let acked = eventually(WAIT, "the acknowledgement is recorded", || {
        let api = api.clone();
        let url = gw.url("/api/alerts");
        async move {
            let open: Vec<serde_json::Value> = api.get(url).send().await?.json().await?;
            Ok(open.into_iter().find(|a| !a["acknowledged"].is_null()))
        }
    })
    .await
    .unwrap();
    assert_eq!(acked["acknowledged"]["by"], "S009");
    assert_eq!(acked["acknowledged"]["note"], "在路上");
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//article//div[contains(., '已确认')]"))
        .await
        .expect("the board shows who acknowledged");
    screenshot(&c, "board-acknowledged").await;
    c.close().await.unwrap();
}

/// Submits the login form as `staff` and returns the message of the page that answers (the
/// old page is marked first, so that its message is not taken for the new one's).
async fn login_message(c: &Client, gw: &Gateway, staff: &str, password: &str) -> String {
    c.goto(&gw.url("/console/login")).await.unwrap();
    c.execute("window.__old = true", vec![]).await.unwrap();
    fill_login(c, staff, password).await;
    let got = eventually(WAIT, "the answer page", || async {
        let v = c
            .execute(
                "if (window.__old) return null; const e = document.querySelector('p.error'); return e ? e.textContent : (document.readyState === 'complete' ? '' : null);",
                vec![],
            )
            .await
            .ok();
        Ok(v.and_then(|v| v.as_str().map(str::to_string)))
    })
    .await
    .unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_then_throttled_and_the_page_says_so() {
    let broker = Mosquitto::start().unwrap();
    let gw = Gateway::start(&GatewaySpec::new(
        broker.port,
        "sqlite:central.db".into(),
        1,
    ))
    .await
    .unwrap();
    gw.set_password("S009", "duty one's password").unwrap();
    let d = driver();
    let c = browser(&d, 360).await;
    for i in 0..eldergate::auth::throttle::PER_ACCOUNT {
        let m = login_message(&c, &gw, "S009", &format!("guess {i}")).await;
        assert!(m.contains("员工号或密码不对"), "attempt {i}: {m}");
    }
    // Now even the right password is refused, and the page says why and what to do.
    let m = login_message(&c, &gw, "S009", "duty one's password").await;
    assert!(m.contains("失败次数太多"), "{m}");
    assert!(m.contains("15 分钟"), "{m}");
    screenshot(&c, "login-throttled-360").await;
    // Another staff member is not locked out by S009's guesser.
    gw.set_password("S010", "duty two's password").unwrap();
    c.goto(&gw.url("/console/login")).await.unwrap();
    fill_login(&c, "S010", "duty two's password").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#rows"))
        .await
        .expect("S010 still logs in");
    let failed = gw.metric("eldergate_login_failed_total").await.unwrap();
    assert!(failed >= 6.0, "every failed login is counted ({failed})");
    c.close().await.unwrap();
}

/// `fetch` from the page, returning `[status, body]`.
async fn page_fetch(c: &Client, url: &str, init: &str) -> (u16, String) {
    let v = c
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 fetch({url:?}, {init}).then(async r => done([r.status, await r.text()]))
                   .catch(e => done([0, String(e)]));"
            ),
            vec![],
        )
        .await
        .unwrap();
    (
        v[0].as_u64().unwrap_or(0) as u16,
        v[1].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_or_a_csrf_token_the_browser_changes_nothing_and_a_canteen_operator_cannot_acknowledge(
) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let gw = Gateway::start(&canteen_spec(
        dir.path(),
        broker.port,
        db.url.clone(),
        2,
        0,
        "",
    ))
    .await
    .unwrap();
    gw.set_password("S009", "duty one's password").unwrap();
    gw.set_password("S013", "canteen's password").unwrap();
    let fleet = Fleet::start(fleet_options(broker.port, "t-browser-sec"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await);
    let api = gw.api();
    let alert = eventually(WAIT, "the press is an open alert", || {
        let (api, url) = (api.clone(), gw.url("/api/alerts"));
        async move {
            let open: Vec<serde_json::Value> = api.get(url).send().await?.json().await?;
            Ok(open.first().and_then(|a| a["alert_id"].as_i64()))
        }
    })
    .await
    .unwrap();
    let ack = format!("/api/alerts/{alert}/ack");

    let d = driver();
    let c = browser(&d, 360).await;
    // The canteen operator: the board is read-only for them ...
    submit_login(&c, &gw, "S013", "canteen's password").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(
            "//article[contains(@class,'high')]//div[contains(., '只读')]",
        ))
        .await
        .expect("the alert is on the board, marked read-only");
    // The board re-renders its rows live: ask the page as it is now.
    let buttons = c
        .execute(
            "return document.querySelectorAll('article.card button.ack, article.card button.resolve').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        buttons, 0,
        "no acknowledge or resolve button for a canteen operator"
    );
    screenshot(&c, "board-canteen-operator-360").await;
    // ... and the API refuses them even with a valid session and CSRF token.
    let csrf: String = c
        .execute(
            "return document.querySelector('meta[name=csrf-token]').content",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let with_token = format!(
        "{{method: 'POST', credentials: 'same-origin', headers: {{'content-type': 'application/json', 'x-csrf-token': {csrf:?}}}, body: '{{}}'}}"
    );
    let (status, body) = page_fetch(&c, &ack, &with_token).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = page_fetch(
        &c,
        "/console/logout",
        &format!("{{method: 'POST', credentials: 'same-origin', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'csrf={csrf}'}}"),
    )
    .await;
    assert!(status < 400, "logout with the CSRF token: {status}");
    c.delete_all_cookies().await.unwrap();
    c.goto(&gw.url("/console")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("input[name=staff_id]"))
        .await
        .expect("logged out: the login page");

    // A duty worker: without the CSRF token refused; without the session refused; with both
    // it goes through.
    submit_login(&c, &gw, "S009", "duty one's password").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("article.card.high button.ack"))
        .await
        .unwrap();
    let csrf: String = c
        .execute(
            "return document.querySelector('meta[name=csrf-token]').content",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let no_token = "{method: 'POST', credentials: 'same-origin', headers: {'content-type': 'application/json'}, body: '{}'}";
    let (status, body) = page_fetch(&c, &ack, no_token).await;
    assert_eq!(status, 403, "no CSRF token: {body}");
    assert!(body.contains("CSRF"), "{body}");
    let wrong_token = "{method: 'POST', credentials: 'same-origin', headers: {'content-type': 'application/json', 'x-csrf-token': 'forged'}, body: '{}'}";
    let (status, _) = page_fetch(&c, &ack, wrong_token).await;
    assert_eq!(status, 403, "a forged CSRF token");
    let no_session = format!(
        "{{method: 'POST', credentials: 'omit', headers: {{'content-type': 'application/json', 'x-csrf-token': {csrf:?}}}, body: '{{}}'}}"
    );
    let (status, body) = page_fetch(&c, &ack, &no_session).await;
    assert_eq!(status, 401, "no session: {body}");
    let (status, _) = page_fetch(&c, "/api/alerts", "{credentials: 'omit'}").await;
    assert_eq!(status, 401, "reading needs a session too");
    // A form post to the logout without the token does not end the session.
    let (status, _) = page_fetch(
        &c,
        "/console/logout",
        "{method: 'POST', credentials: 'same-origin', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'x=1'}",
    )
    .await;
    assert_eq!(status, 403, "logout without the CSRF token");
    let open: Vec<serde_json::Value> = api
        .get(gw.url("/api/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        open.iter().all(|a| a["acknowledged"].is_null()),
        "nothing was acknowledged by the refused requests: {open:?}"
    );
    let with_token = format!(
        "{{method: 'POST', credentials: 'same-origin', headers: {{'content-type': 'application/json', 'x-csrf-token': {csrf:?}}}, body: '{{}}'}}"
    );
    let (status, body) = page_fetch(&c, &ack, &with_token).await;
    assert_eq!(status, 200, "session and token: {body}");
    assert!(body.contains("\"by\":\"S009\""), "{body}");
    c.close().await.unwrap();
}
