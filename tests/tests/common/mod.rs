//! Set-up shared by the canteen and roster tests: a gateway with the test roster and a canteen.

#![allow(dead_code)]

use eldergate_e2e::{GatewaySpec, SITE};
use eldergate_protocol::payload::Down;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(60);

pub const RULES: &str = r#"
name = "test canteen"
[[periods]]
name = "all_day"
start = "00:00"
end = "23:59:59"
price_fen = 1500
[[subsidies]]
name = "60+ 10%"
min_age = 60
amount = { percent = 10 }
"#;

/// A gateway with the test roster (cards CA000001…) and a canteen on [`RULES`], written into
/// `dir`; `extra` is more TOML (e.g. a `[[serial]]` port).
pub fn canteen_spec(
    dir: &std::path::Path,
    broker_port: u16,
    central_url: String,
    buttons: usize,
    double_tap_s: u64,
    extra: &str,
) -> GatewaySpec {
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let mut spec = GatewaySpec::new(broker_port, central_url, buttons);
    spec.residents = true;
    spec.serial = extra.contains("[[serial]]");
    spec.extra = format!(
        "{extra}[canteen]\nrules = \"{}\"\ndouble_tap_s = {double_tap_s}\n",
        rules.display()
    );
    spec
}

pub async fn next_answer(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> Down {
    let (_, body) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an answer")
        .unwrap();
    serde_json::from_slice::<Down>(&body).unwrap()
}

/// Publishes a tap (`body` as the reader would send it) from reader rdr-01, QoS 1.
pub async fn publish_tap(reader: &rumqttc::AsyncClient, body: serde_json::Value) {
    reader
        .publish(
            format!("eldergate/v1/{SITE}/tap/rdr-01"),
            rumqttc::QoS::AtLeastOnce,
            false,
            body.to_string().into_bytes(),
        )
        .await
        .unwrap();
}
