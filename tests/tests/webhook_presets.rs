//! Reaching staff where they are (crate::alerting::channels, presets): a WeCom group robot, a
//! DingTalk robot with its signature, and the generic JSON webhook, all over HTTPS with a
//! private CA, against local receivers that check the format, the key and the signature the way
//! the real services document them. Real Mosquitto and PostgreSQL, the real gateway binary.

use axum::extract::{Query, State};
use axum::Json;
use base64::Engine;
use eldergate_e2e::test_ca::{serve_https, TestCa};
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use hmac::Mac;
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const WECOM_KEY: &str = "wecom-key-693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa";
const DING_TOKEN: &str = "ding-access-token-50cb6e954c89afa14fb97754";
const DING_SECRET: &str = "SEC5a3ecf88f2b3eb50db30ecfc00f53033ac909c99bf7f88";

/// What the receivers saw: (receiver, message) for every accepted message; refusals counted.
#[derive(Default)]
struct Seen {
    accepted: Vec<(&'static str, Value)>,
    refused: Vec<String>,
    wecom_calls: usize,
}
type Shared = Arc<Mutex<Seen>>;

/// WeCom: `key` in the query, `msgtype` text; answers HTTP 200 with an errcode. The first call is
/// refused with 45009 (rate limit), as WeCom does, so the gateway must retry.
async fn wecom(
    State(seen): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = seen.lock().unwrap();
    s.wecom_calls += 1;
    if q.get("key").map(String::as_str) != Some(WECOM_KEY) {
        s.refused.push(format!("wecom: bad key {q:?}"));
        return Json(json!({"errcode": 93000, "errmsg": "invalid webhook url"}));
    }
    if body["msgtype"] != "text" || !body["text"]["content"].is_string() {
        s.refused.push(format!("wecom: bad body {body}"));
        return Json(json!({"errcode": 40008, "errmsg": "invalid message type"}));
    }
    if s.wecom_calls == 1 {
        return Json(json!({"errcode": 45009, "errmsg": "api freq out of limit"}));
    }
    s.accepted.push(("wecom", body));
    Json(json!({"errcode": 0, "errmsg": "ok"}))
}

/// DingTalk: `access_token`, `timestamp` (ms, within an hour) and `sign` = base64(HMAC-SHA256
/// keyed by the secret over "timestamp\nsecret"), checked here independently of the gateway.
async fn dingtalk(
    State(seen): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = seen.lock().unwrap();
    let ts: i64 = q.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(DING_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}\n{DING_SECRET}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let now = jiff::Timestamp::now().as_millisecond();
    if q.get("access_token").map(String::as_str) != Some(DING_TOKEN) {
        s.refused.push(format!("dingtalk: bad token {q:?}"));
        return Json(json!({"errcode": 300001, "errmsg": "token is not exist"}));
    }
    if q.get("sign") != Some(&expected) || (now - ts).abs() > 3_600_000 {
        s.refused.push(format!("dingtalk: bad sign {q:?}"));
        return Json(json!({"errcode": 310000, "errmsg": "sign not match"}));
    }
    if body["msgtype"] != "markdown"
        || !body["markdown"]["title"].is_string()
        || !body["markdown"]["text"].is_string()
    {
        s.refused.push(format!("dingtalk: bad body {body}"));
        return Json(json!({"errcode": 40035, "errmsg": "缺少参数 json"}));
    }
    s.accepted.push(("dingtalk", body));
    Json(json!({"errcode": 0, "errmsg": "ok"}))
}

async fn plain(State(seen): State<Shared>, Json(body): Json<Value>) -> &'static str {
    seen.lock().unwrap().accepted.push(("json", body));
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_and_json_webhooks_are_reached_over_https_with_keys_signatures_and_retries() {
    let ca = TestCa::new("eldergate test webhook CA").unwrap();
    let cert = ca.server(&["127.0.0.1"]).unwrap();
    let seen: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/cgi-bin/webhook/send", axum::routing::post(wecom))
        .route("/robot/send", axum::routing::post(dingtalk))
        .route("/notify", axum::routing::post(plain))
        .with_state(seen.clone());
    let port = serve_https(&cert, app).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let key_file = dir.path().join("wecom.key");
    std::fs::write(&key_file, format!("{WECOM_KEY}\n")).unwrap();
    let secret_file = dir.path().join("dingtalk.secret");
    std::fs::write(&secret_file, DING_SECRET).unwrap();
    // The gateway inherits this when it starts.
    std::env::set_var("EG_TEST_DING_TOKEN", DING_TOKEN);
    let (ca_s, key_s, secret_s) = (ca_file.display(), key_file.display(), secret_file.display());
    let extra = format!(
        r#"
[[webhooks]]
name = "duty-wecom"
target = "S001"
preset = "wecom"
url = "https://127.0.0.1:{port}/cgi-bin/webhook/send"
key_file = "{key_s}"
ca_file = "{ca_s}"
[[webhooks]]
name = "duty-dingtalk"
target = "S001"
preset = "dingtalk"
format = "markdown"
url = "https://127.0.0.1:{port}/robot/send"
key_env = "EG_TEST_DING_TOKEN"
secret_file = "{secret_s}"
ca_file = "{ca_s}"
[[webhooks]]
target = "S001"
url = "https://127.0.0.1:{port}/notify"
ca_file = "{ca_s}"
[[webhooks]]
name = "no-private-ca"
target = "S001"
url = "https://127.0.0.1:{port}/notify?untrusted"
"#
    );
    // console_url is a top-level key; the harness appends `extra` after its tables, so it comes
    // through its environment override.
    std::env::set_var("ELDERGATE__CONSOLE_URL", "https://console.test/");
    let broker = Mosquitto::start().unwrap();
    let db = TestDb::create().await.unwrap();
    let mut spec = GatewaySpec::new(broker.port, db.url.clone(), 1);
    spec.residents = true;
    spec.extra = extra;
    let gw = Gateway::start(&spec).await.unwrap();

    let fleet = Fleet::start(fleet_options(broker.port, "wh-fleet"))
        .await
        .unwrap();
    fleet.send("btn-0001", AlarmAction::Press).await;
    assert!(fleet.wait_all_acked(WAIT).await);

    let journal = gw.journal().await.unwrap();
    let rows = eventually(WAIT, "three channels delivered", || async {
        let rows = sqlx::query(
            "SELECT url, attempts, last_error, delivered_at, body FROM webhook_outbox ORDER BY id",
        )
        .fetch_all(&journal)
        .await?;
        let delivered = rows
            .iter()
            .filter(|r| r.get::<Option<String>, _>(3).is_some())
            .count();
        Ok((delivered >= 3).then_some(rows))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; receivers refused: {:?}", seen.lock().unwrap().refused));
    let by_ref: HashMap<String, (i64, Option<String>, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                (r.get(1), r.get(2), r.get::<Option<String>, _>(3).is_some()),
            )
        })
        .collect();

    // WeCom: refused once with errcode 45009 (HTTP 200), which counted as a failure and was retried.
    // (A press can make more than one alert change, so a channel can have several rows.)
    let wecom_attempts: Vec<i64> = rows
        .iter()
        .filter(|r| r.get::<String, _>(0) == "duty-wecom")
        .map(|r| r.get(1))
        .collect();
    assert!(by_ref["duty-wecom"].2, "delivered");
    assert_eq!(
        wecom_attempts.first(),
        Some(&2),
        "errcode 45009, then accepted: {wecom_attempts:?}"
    );
    assert!(
        seen.lock().unwrap().wecom_calls >= 2,
        "refused once, then accepted"
    );
    assert!(
        by_ref["duty-dingtalk"].2,
        "the signed DingTalk message was accepted"
    );
    assert!(by_ref[&format!("https://127.0.0.1:{port}/notify")].2);
    // Without the private CA the certificate is refused: nothing is sent, the row stays pending.
    let untrusted = eventually(WAIT, "the untrusted channel to fail", || async {
        let r = sqlx::query("SELECT attempts, last_error, delivered_at FROM webhook_outbox WHERE url = 'no-private-ca'")
            .fetch_one(&journal)
            .await?;
        let attempts: i64 = r.get(0);
        Ok((attempts >= 1).then(|| (r.get::<Option<String>, _>(1), r.get::<Option<String>, _>(2))))
    })
    .await
    .unwrap();
    assert!(untrusted.1.is_none(), "never delivered");
    let err = untrusted.0.unwrap_or_default();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );

    {
        let s = seen.lock().unwrap();
        assert!(s.refused.is_empty(), "receivers refused: {:?}", s.refused);
        let text = s
            .accepted
            .iter()
            .find(|(r, _)| *r == "wecom")
            .map(|(_, b)| b["text"]["content"].as_str().unwrap().to_string())
            .unwrap();
        for part in [
            "[紧急] 一键呼叫 SOS · 新告警",
            "老人：张*1",
            "位置：楼1",
            "通知：第 1 级",
            "设备：btn-0001",
            "处理：https://console.test/console/alerts/",
        ] {
            assert!(text.contains(part), "{part:?} missing in\n{text}");
        }
        assert!(!text.contains("张三1"), "the name is masked");
        let md = s
            .accepted
            .iter()
            .find(|(r, _)| *r == "dingtalk")
            .map(|(_, b)| b["markdown"]["text"].as_str().unwrap().to_string())
            .unwrap();
        assert!(
            md.starts_with("**\\[紧急\\] 一键呼叫 SOS · 新告警**"),
            "{md}"
        );
        assert!(md.contains("(https://console.test/console/alerts/"), "{md}");
        let generic = s.accepted.iter().find(|(r, _)| *r == "json").unwrap();
        assert_eq!(generic.1["device_id"], "btn-0001");
    }

    // No secret is in the journal or the log.
    let log = std::fs::read_to_string(gw.log_path()).unwrap();
    let stored: Vec<String> = sqlx::query(
        "SELECT url || ' ' || COALESCE(last_error, '') || ' ' || body FROM webhook_outbox",
    )
    .fetch_all(&journal)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    for secret in [WECOM_KEY, DING_TOKEN, DING_SECRET] {
        assert!(!log.contains(secret), "a secret is in the log");
        assert!(
            !stored.iter().any(|s| s.contains(secret)),
            "a secret is in the journal"
        );
    }
    db.drop_db().await;
}
