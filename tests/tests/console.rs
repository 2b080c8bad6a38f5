//! The console's login, sessions, CSRF, tokens and roles, from outside: the real gateway binary,
//! real Mosquitto and PostgreSQL, plain HTTP requests (the browser tests are separate).

mod common;

use common::canteen_spec;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A client that keeps no cookies and follows no redirects: every test says what it sends.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct World {
    _broker: Mosquitto,
    broker_port: u16,
    _db: TestDb,
    gw: Gateway,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let spec = canteen_spec(dir.path(), broker.port, db.url.clone(), 2, 0, "");
    let gw = Gateway::start(&spec).await.unwrap();
    World {
        broker_port: broker.port,
        _broker: broker,
        _db: db,
        gw,
        _dir: dir,
    }
}

/// Logs in through the form; the session cookie (`eg_session=…`) or the status.
async fn login(gw: &Gateway, staff: &str, password: &str) -> Result<String, u16> {
    let r = browser()
        .post(gw.url("/console/login"))
        .form(&[("staff_id", staff), ("password", password)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("eg_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string());
    match (status, cookie) {
        (303, Some(c)) => Ok(c),
        (s, _) => Err(s),
    }
}

/// The CSRF token of the board page, read as a browser would (the `csrf-token` meta tag).
async fn csrf(gw: &Gateway, cookie: &str) -> String {
    let page = browser()
        .get(gw.url("/console"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let at = html
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta")
        + 27;
    html[at..at + 64].to_string()
}

async fn raise_alarm(w: &World) -> i64 {
    let fleet = Fleet::start(fleet_options(w.broker_port, "t-console-fleet"))
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
            Ok(open.first().and_then(|a| a["alert_id"].as_i64()))
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_login_or_token_but_health_and_metrics_stay_open_on_loopback() {
    let w = world().await;
    let anonymous = browser();
    for path in [
        "/api/alerts",
        "/api/alerts/stream",
        "/api/reports/daily?date=2026-01-01",
    ] {
        let r = anonymous.get(w.gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without credentials");
    }
    let r = anonymous
        .post(w.gw.url("/api/residents/R00001/topup"))
        .json(&serde_json::json!({"amount_fen": 100, "by": "S009"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a body's by is no credential");
    let r = anonymous
        .get(w.gw.url("/api/alerts"))
        .bearer_auth("egt_0000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a made-up token");
    assert_eq!(
        anonymous
            .get(w.gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        anonymous
            .get(w.gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = anonymous.get(w.gw.url("/console")).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "a page without login goes to the login page"
    );
    assert_eq!(r.headers()["location"], "/console/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_counted_and_then_throttled() {
    let w = world().await;
    w.gw.set_password("S009", "correct horse battery").unwrap();
    assert!(w.gw.set_password("S009", "short").is_err(), "too short");
    assert!(
        w.gw.set_password("S404", "long enough password").is_err(),
        "unknown staff"
    );
    assert_eq!(
        login(&w.gw, "S010", "correct horse battery").await,
        Err(401),
        "no password set"
    );
    for _ in 0..4 {
        assert_eq!(login(&w.gw, "S009", "wrong password!!").await, Err(401));
    }
    assert!(login(&w.gw, "S009", "correct horse battery").await.is_ok());
    // A success clears the account's failures; five more in a row lock it, right password too.
    for _ in 0..5 {
        assert_eq!(login(&w.gw, "S009", "wrong password!!").await, Err(401));
    }
    assert_eq!(
        login(&w.gw, "S009", "correct horse battery").await,
        Err(429)
    );
    assert!(w.gw.metric("eldergate_login_failed_total").await.unwrap() >= 10.0);
    let log = std::fs::read_to_string(w.gw.log_path()).unwrap();
    assert!(log.contains("failed login") && log.contains("S009"));
    assert!(
        !log.contains("wrong password!!"),
        "passwords are never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_acknowledges_as_its_own_staff_id_and_only_with_its_csrf_token() {
    let w = world().await;
    let id = raise_alarm(&w).await;
    w.gw.set_password("S009", "duty one's password").unwrap();
    let cookie = login(&w.gw, "S009", "duty one's password").await.unwrap();
    let token = csrf(&w.gw, &cookie).await;
    let ack = |csrf: Option<String>, body: serde_json::Value| {
        let mut r = browser()
            .post(w.gw.url(&format!("/api/alerts/{id}/ack")))
            .header("cookie", cookie.clone())
            .json(&body);
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.send()
    };
    let r = ack(None, serde_json::json!({"note": "x"})).await.unwrap();
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = ack(Some("0".repeat(64)), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a wrong CSRF token");
    let r = ack(Some(token.clone()), serde_json::json!({"by": "S010"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a session cannot act as someone else");
    let r = browser()
        .post(w.gw.url(&format!("/api/alerts/{id}/ack")))
        .header("cookie", cookie.clone())
        .header("x-csrf-token", token.clone())
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-origin");
    let r = ack(
        Some(token.clone()),
        serde_json::json!({"note": "on my way"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let a: serde_json::Value = r.json().await.unwrap();
    assert_eq!(a["acknowledged"]["by"], "S009", "by comes from the session");
    assert_eq!(a["acknowledged"]["note"], "on my way");

    // Logout ends the session on the server: the old cookie no longer works.
    let r = browser()
        .post(w.gw.url("/console/logout"))
        .header("cookie", cookie.clone())
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = browser()
        .get(w.gw.url("/api/alerts"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canteen_operator_tops_up_but_cannot_acknowledge_an_alarm() {
    let w = world().await;
    let id = raise_alarm(&w).await;
    let operator = w.gw.token_for("S013", "read,alerts,canteen").unwrap();
    let http = browser();
    let r = http
        .post(w.gw.url("/api/residents/R00001/topup"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({"amount_fen": 2000, "reason": "cash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(w.gw.url(&format!("/api/alerts/{id}/ack")))
        .bearer_auth(&operator)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the domain refuses the role");
    // In the page: no acknowledge button, a read-only line instead.
    w.gw.set_password("S013", "operator password").unwrap();
    let cookie = login(&w.gw, "S013", "operator password").await.unwrap();
    let html = http
        .get(w.gw.url("/console/board/rows"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(&format!("data-id=\"{id}\"")), "{html}");
    assert!(!html.contains("class=\"ack\""), "{html}");
    assert!(html.contains("只读"), "{html}");
    // A manager's token may read but not top up (scope) and a manager may not (role).
    let manager = w.gw.token_for("S012", "read").unwrap();
    let r = http
        .post(w.gw.url("/api/residents/R00001/topup"))
        .bearer_auth(&manager)
        .json(&serde_json::json!({"amount_fen": 2000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(w.gw.url("/api/residents/R00001/balance"))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_names_someone_else_only_with_act_as() {
    let w = world().await;
    // A canteen operator's token (duty staff may not move money).
    let duty = w.gw.token_for("S013", "read,canteen").unwrap();
    let r = browser()
        .post(w.gw.url("/api/residents/R00001/topup"))
        .bearer_auth(&duty)
        .json(&serde_json::json!({"amount_fen": 2000, "by": "S015"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = browser()
        .post(w.gw.url("/api/residents/R00001/topup"))
        .bearer_auth(&duty)
        .json(&serde_json::json!({"amount_fen": 2000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ledger: Vec<(String,)> = sqlx::query_as("SELECT staff_id FROM ledger WHERE kind = 'topup'")
        .fetch_all(&w.gw.journal().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        ledger,
        vec![("S013".to_string(),)],
        "the token's staff id is recorded"
    );
}
