//! Headless Chromium for the console page tests (Debian's chromium and chromium-driver; tests/run
//! installs them): a chromedriver on a free port, a phone-sized browser, screenshots under
//! target/, and the login form filled in as a person would. Shared by console_browser.rs and
//! console_pages.rs (each uses part of it).

#![allow(dead_code)]

use eldergate_e2e::{free_port, wait_for_port, Gateway};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// How long a page gets to show something.
pub const WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a free port, killed when dropped.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver.
pub fn driver() -> Driver {
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

/// Headless Chromium at `width` × 800 (a phone's viewport by mobile emulation).
pub async fn browser(d: &Driver, width: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--disable-dev-shm-usage"],
            "mobileEmulation": { "deviceMetrics": { "width": width, "height": 800, "pixelRatio": 1 } },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("cannot start headless chromium through chromedriver")
}

/// `target/console-{name}.png`.
pub fn screenshot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("console-{name}.png"))
}

/// Saves a screenshot of the page as it is.
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_path(name), png).unwrap();
}

/// Logs in through the form (forgetting any earlier session first) and waits for the board.
pub async fn log_in(c: &Client, gw: &Gateway, staff: &str, password: &str) {
    submit_login(c, gw, staff, password).await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("nav.pages"))
        .await
        .expect("logged in: the navigation bar shows");
}

/// Fills in and sends the login form (forgetting any earlier session first); does not wait for
/// what comes back (a refusal is a page too).
pub async fn submit_login(c: &Client, gw: &Gateway, staff: &str, password: &str) {
    c.goto(&gw.url("/console/login")).await.unwrap();
    c.delete_all_cookies().await.unwrap();
    c.goto(&gw.url("/console/login")).await.unwrap();
    fill_login(c, staff, password).await;
}

/// Fills in and sends the login form of the page shown now.
pub async fn fill_login(c: &Client, staff: &str, password: &str) {
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

/// The page's width in CSS pixels (more than the viewport = sideways scrolling).
pub async fn page_width(c: &Client) -> f64 {
    c.execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap_or(0.0)
}

/// Waits until the page's text contains `text` (reloads are the page's own).
pub async fn wait_for_text(c: &Client, css: &str, text: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(text) {
                    return t;
                }
            }
        }
        if std::time::Instant::now() > deadline {
            let body = match c.find(Locator::Css("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("{css} never showed {text:?}; the page says:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
