//! The shipped Mosquitto ACL (deploy/mosquitto/eldergate.acl) does what it says, on a real broker:
//! no anonymous clients, a device can write only its own topics, the gateway reads them.

use eldergate_e2e::*;
use rumqttc::QoS;
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
    let (client, mut rx, ok) = connect_as(port, user, id, subscribe).await;
    let (tx, topics) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((t, _)) = rx.recv().await {
            let _ = tx.send(t);
        }
    });
    (client, topics, ok)
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
