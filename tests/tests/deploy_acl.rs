//! The shipped Mosquitto ACL (deploy/mosquitto/eldergate.acl) does what it says, on a real broker:
//! no anonymous clients, a device can write only its own topics, the gateway reads them.

use eldergate_e2e::*;
use rumqttc::{Event, Incoming, MqttOptions, QoS};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SITE: &str = "community-0001";

fn passwd(file: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("mosquitto_passwd");
    if !file.exists() {
        cmd.arg("-c");
    }
    let ok = cmd
        .args(["-b"])
        .arg(file)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd is installed with mosquitto")
        .success();
    assert!(ok, "mosquitto_passwd failed");
}

/// Connects; returns the client, a receiver of publishes and whether the broker accepted us.
async fn connect(
    port: u16,
    user: Option<(&str, &str)>,
    id: &str,
    subscribe: Option<&str>,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    bool,
) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    let (client, mut el) = eldergate::mqtt::new_client(o, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (acc_tx, acc_rx) = tokio::sync::oneshot::channel();
    let mut acc_tx = Some(acc_tx);
    let c = client.clone();
    let sub = subscribe.map(str::to_string);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    if let Some(f) = &sub {
                        let _ = c.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    } else if let Some(t) = acc_tx.take() {
                        let _ = t.send(true);
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(t) = acc_tx.take() {
                        let _ = t.send(true);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let _ = tx.send(p.topic.clone());
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(t) = acc_tx.take() {
                        let _ = t.send(false);
                    }
                    return;
                }
            }
        }
    });
    let accepted = tokio::time::timeout(Duration::from_secs(10), acc_rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    (client, rx, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_acl_confines_each_device_to_its_own_topics() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    passwd(&pw, "gw-0001-a", "gw-secret");
    passwd(&pw, "btn-0001", "btn1-secret");
    passwd(&pw, "btn-0002", "btn2-secret");
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/eldergate.acl");
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        pw.display(),
        acl.display()
    ))
    .unwrap();

    let (_, _, anonymous_ok) = connect(broker.port, None, "anon", None).await;
    assert!(!anonymous_ok, "anonymous clients must be refused");
    let (_, _, wrong_pw_ok) = connect(broker.port, Some(("btn-0001", "guess")), "bad", None).await;
    assert!(!wrong_pw_ok, "a wrong password must be refused");

    let (_gw, mut heard, ok) = connect(
        broker.port,
        Some(("gw-0001-a", "gw-secret")),
        "gw",
        Some(&format!("eldergate/+/{SITE}/alarm/#")),
    )
    .await;
    assert!(ok);
    let body = br#"{"v":1,"seq":1,"action":"press"}"#.to_vec();
    // Impersonating another device is refused (Mosquitto 2.0 then drops the connection)...
    let (rogue, _, ok) = connect(
        broker.port,
        Some(("btn-0001", "btn1-secret")),
        "rogue",
        None,
    )
    .await;
    assert!(ok);
    let other = format!("eldergate/v1/{SITE}/alarm/btn-0002");
    rogue
        .publish(other, QoS::AtLeastOnce, false, body.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...while its own topic gets through.
    let (btn, _, ok) = connect(
        broker.port,
        Some(("btn-0001", "btn1-secret")),
        "btn-0001",
        None,
    )
    .await;
    assert!(ok);
    let own = format!("eldergate/v1/{SITE}/alarm/btn-0001");
    btn.publish(own, QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, format!("eldergate/v1/{SITE}/alarm/btn-0001"));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), heard.recv())
            .await
            .is_err(),
        "nothing else may arrive"
    );
}
