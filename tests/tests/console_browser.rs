//! The console in a real browser: headless Chromium driven over WebDriver (Debian's chromium and
//! chromium-driver; tests/run installs them). Screenshots go to target/console-*.png.

mod common;

use common::canteen_spec;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver() -> Driver {
    let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "chromedriver is missing: apt-get install chromium chromium-driver (tests/run does)",
        );
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port).unwrap();
    Driver { child, port }
}

/// Headless Chromium at `width` × 800.
async fn browser(d: &Driver, width: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--disable-dev-shm-usage"],
            // A phone's viewport (a desktop window cannot be narrower than 500 px).
            "mobileEmulation": { "deviceMetrics": { "width": width, "height": 800, "pixelRatio": 1 } },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("cannot start headless chromium through chromedriver")
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("console-{name}.png"))
}

async fn log_in(c: &Client, gw: &Gateway, staff: &str, password: &str) {
    c.goto(&gw.url("/console")).await.unwrap();
    c.find(Locator::Css("input[name=staff_id]"))
        .await
        .unwrap()
        .send_keys(staff)
        .await
        .unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

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

    log_in(&c, &gw, "S009", "not the password").await;
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

    log_in(&c, &gw, "S009", "duty one's password").await;
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
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_path("board-360"), png).unwrap();
    let width: f64 = c
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap_or(0.0);
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
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_path("board-acknowledged"), png).unwrap();
    c.close().await.unwrap();
}
