//! The production shape, end to end: a private Mosquitto with the password file and ACL that
//! `eldergate provision` generated from the registry, TLS listeners with certificates made here
//! (rcgen), the gateway over mqtts with CA verification and a client certificate, and devices
//! and staff each with their own credentials. A press, a tap, a kiosk reading and a staff
//! acknowledgement work; every identity is confined to its own topics; anonymous clients and wrong
//! secrets are refused.

use eldergate_e2e::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::{AsyncClient, MqttOptions, QoS, Transport};
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(60);
/// Long enough for a publish the broker would deliver to arrive (used only to show absence).
const QUIET: Duration = Duration::from_millis(1500);

/// The HTTP client of these tests (one place to switch to an authenticated client).
fn api(_gw: &Gateway) -> reqwest::Client {
    reqwest::Client::new()
}

/// Starts a gateway of `spec` with `broker` as its `[broker]` section and a health kiosk
/// `kiosk-01` registered on MQTT beside the buttons and the reader.
async fn start_with_kiosk(spec: &GatewaySpec, broker: &str) -> anyhow::Result<Gateway> {
    let mut spec = spec.clone();
    spec.extra_devices = "kiosk-01,health_kiosk,mqtt,,activity room,86400\n".into();
    let mut gw = Gateway::prepare_with_broker(&spec, None, broker)?;
    gw.spawn().await?;
    Ok(gw)
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair, CertificateParams) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (p.self_signed(&key).unwrap(), key, p)
}

fn pki(dir: &Path) -> Pki {
    let (ca_cert, ca_key, ca_params) = ca("eldergate test CA");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let (other, _, _) = ca("someone else's CA");
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (sc, sk) = leaf(
        vec!["localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "localhost",
    );
    let (cc, ck) = leaf(
        vec!["gw-test".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        "gw-test",
    );
    Pki {
        ca: write(dir, "ca.pem", &ca_cert.pem()),
        server_cert: write(dir, "server.pem", &sc),
        server_key: write(dir, "server.key", &sk),
        client_cert: write(dir, "client.pem", &cc),
        client_key: write(dir, "client.key", &ck),
        other_ca: write(dir, "other-ca.pem", &other.pem()),
    }
}

/// A TLS client on `port` (host name `localhost`, verified against `ca`): returns the client,
/// what it hears, and whether the broker took the connection (and subscription).
async fn tls_client(
    port: u16,
    ca: &Path,
    credentials: Option<(&str, &str)>,
    id: &str,
    filter: Option<String>,
) -> (AsyncClient, UnboundedReceiver<(String, Vec<u8>)>, bool) {
    let mut o = MqttOptions::new(id, "localhost", port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_transport(Transport::tls(std::fs::read(ca).unwrap(), None, None));
    connect_with(o, credentials, filter.as_deref()).await
}

async fn next(rx: &mut UnboundedReceiver<(String, Vec<u8>)>, what: &str) -> (String, Vec<u8>) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
        .unwrap_or_else(|| panic!("connection for {what} closed"))
}

async fn silent(rx: &mut UnboundedReceiver<(String, Vec<u8>)>, what: &str) {
    if let Ok(Some((t, _))) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("{what}: received {t}");
    }
}

/// Runs `eldergate provision` (the real binary) and reads the provisioning CSV.
fn provision(config: &Path, out: &Path) -> BTreeMap<String, String> {
    let o = std::process::Command::new(bin_dir().join("eldergate"))
        .args(["provision", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("provisioning.csv")).unwrap();
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    let mut secrets = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert!(!printed.contains(f[3]), "a secret was printed");
        secrets.insert(f[2].to_string(), f[3].to_string());
    }
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_shape_works_over_tls_and_confines_every_identity() {
    // rustls has two providers compiled in (rumqttc's aws-lc-rs, reqwest's ring): pick one, as
    // the gateway does at start.
    eldergate::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let gw_port = free_port();
    let dev_port = free_port();

    // The registry: 2 buttons, a reader, the staff (as every test gateway has), a canteen.
    let rules = all_day_canteen_rules(dir.path()).unwrap();
    let mut spec = GatewaySpec::new(0, "sqlite:central.db".into(), 2);
    spec.residents = true;
    spec.extra = format!("[canteen]\nrules = \"{}\"\n", rules.display());
    // A first gateway config, only to provision from (the gateway's own is written by start).
    let broker_section = |password: &str| {
        format!(
            "mode = \"external\"\nurl = \"mqtts://localhost:{gw_port}\"\nusername = \"gw-test\"\npassword = \"{password}\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        )
    };
    // Start against nothing to get the config file written, then provision from it.
    let access = dir.path().join("broker");
    let probe = start_with_kiosk(&spec, &broker_section("x")).await;
    // The gateway answers /healthz while its broker is unreachable (503 later); either way the
    // config it wrote is what we provision from.
    let config = match &probe {
        Ok(gw) => gw.config.clone(),
        Err(e) => panic!("gateway did not start: {e:#}"),
    };
    let secrets = provision(&config, &access);
    for user in [
        "gw-test", "btn-0001", "btn-0002", "rdr-01", "kiosk-01", "S001", "S009",
    ] {
        assert!(secrets.contains_key(user), "{user} was not provisioned");
    }
    // Idempotent: a second run changes no secret.
    assert_eq!(provision(&config, &access), secrets);
    drop(probe);

    let broker = Mosquitto::start_with(&format!(
        // `user root`: the test's files are root's and 0600, as `provision` writes them (in
        // production they are installed owned by mosquitto, deploy/README.md §4).
        "user root\nallow_anonymous false\npassword_file {pw}\nacl_file {acl}\n\
         listener {gw_port} 127.0.0.1\ncafile {ca}\ncertfile {sc}\nkeyfile {sk}\nrequire_certificate true\n\
         listener {dev_port} 127.0.0.1\ncafile {ca}\ncertfile {sc}\nkeyfile {sk}\n",
        pw = access.join("mosquitto.passwd").display(),
        acl = access.join("mosquitto.acl").display(),
        ca = pki.ca.display(),
        sc = pki.server_cert.display(),
        sk = pki.server_key.display(),
    ))
    .unwrap();
    wait_for_port(gw_port).unwrap();
    wait_for_port(dev_port).unwrap();

    let gw = start_with_kiosk(&spec, &broker_section(&secrets["gw-test"]))
        .await
        .unwrap();
    let ready = eventually(WAIT, "both MQTT connections up over TLS", || async {
        let h: serde_json::Value = match api(&gw).get(gw.url("/healthz")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        Ok((h["status"] == "ok").then_some(h))
    })
    .await
    .unwrap();
    assert_eq!(ready["alarms_taken"], true);

    let cred = |u: &'static str| Some((u, secrets[u].as_str()));
    let site = SITE;

    // Anonymous, a wrong secret, a foreign CA and the gateway's port without a client
    // certificate are all refused.
    for port in [broker.port, dev_port] {
        let (_, _, ok) = match port {
            p if p == broker.port => connect_as(p, None, "anon-plain", None).await,
            p => tls_client(p, &pki.ca, None, "anon-tls", None).await,
        };
        assert!(!ok, "anonymous accepted on {port}");
    }
    let (_, _, ok) = tls_client(
        dev_port,
        &pki.ca,
        Some(("btn-0001", "guess")),
        "guess",
        None,
    )
    .await;
    assert!(!ok, "a wrong password was accepted");
    let (_, _, ok) = tls_client(
        dev_port,
        &pki.other_ca,
        cred("btn-0001"),
        "foreign-ca",
        None,
    )
    .await;
    assert!(!ok, "a broker certificate from another CA was trusted");
    let (_, _, ok) = tls_client(gw_port, &pki.ca, cred("btn-0001"), "no-client-cert", None).await;
    assert!(
        !ok,
        "the gateway's listener took a client without a certificate"
    );

    // Staff S009 hears the broadcast alerts and results; S001 (grid worker) its own alerts.
    let (s009, mut s009_hears, ok) = tls_client(
        dev_port,
        &pki.ca,
        cred("S009"),
        "app-S009",
        Some(format!("eldergate/v1/{site}/staff/#")),
    )
    .await;
    assert!(ok);
    // Device A (btn-0001) listens where it must not: B's downlink and the staff topics.
    let (btn1_spy, mut spy_b_down, ok) = tls_client(
        dev_port,
        &pki.ca,
        cred("btn-0001"),
        "btn-0001-spy-down",
        Some(format!("eldergate/v1/{site}/down/btn-0002")),
    )
    .await;
    assert!(ok);
    let (_btn1_spy2, mut spy_staff, _) = tls_client(
        dev_port,
        &pki.ca,
        cred("btn-0001"),
        "btn-0001-spy-staff",
        Some(format!("eldergate/v1/{site}/staff/#")),
    )
    .await;

    // A impersonates B, and publishes a staff command: the broker drops both.
    let press = |seq: u32| format!(r#"{{"v":1,"seq":{seq},"action":"press"}}"#).into_bytes();
    let _ = btn1_spy
        .publish(
            format!("eldergate/v1/{site}/alarm/btn-0002"),
            QoS::AtLeastOnce,
            false,
            press(7),
        )
        .await;
    let (btn1_cmd, _, _) =
        tls_client(dev_port, &pki.ca, cred("btn-0001"), "btn-0001-cmd", None).await;
    let _ = btn1_cmd
        .publish(
            format!("eldergate/v1/{site}/staff/cmd/S009"),
            QoS::AtLeastOnce,
            false,
            br#"{"v":1,"cmd":"ack","alert_id":1}"#.to_vec(),
        )
        .await;
    tokio::time::sleep(QUIET).await;

    // B presses for real, over TLS with its own secret: acked on its own downlink.
    let (btn2, mut btn2_down, ok) = tls_client(
        dev_port,
        &pki.ca,
        cred("btn-0002"),
        "btn-0002",
        Some(format!("eldergate/v1/{site}/down/btn-0002")),
    )
    .await;
    assert!(ok);
    btn2.publish(
        format!("eldergate/v1/{site}/alarm/btn-0002"),
        QoS::AtLeastOnce,
        false,
        press(1),
    )
    .await
    .unwrap();
    let (t, body) = next(&mut btn2_down, "ack to btn-0002").await;
    assert_eq!(t, format!("eldergate/v1/{site}/down/btn-0002"));
    assert!(
        String::from_utf8_lossy(&body).contains("\"seq\":1"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Staff hear the alert; A heard neither B's ack nor the alert.
    let alert: serde_json::Value = loop {
        let (t, body) = next(&mut s009_hears, "the alert to S009").await;
        if t == format!("eldergate/v1/{site}/staff/alerts") {
            break serde_json::from_slice(&body).unwrap();
        }
    };
    assert_eq!(alert["device_id"], "btn-0002");
    silent(
        &mut spy_b_down,
        "btn-0001 subscribed to btn-0002's downlink",
    )
    .await;
    silent(&mut spy_staff, "btn-0001 subscribed to the staff topics").await;

    let journal = gw.journal().await.unwrap();
    let alerts: Vec<(String, String)> =
        sqlx::query("SELECT device_id, state FROM alerts WHERE kind = 'sos'")
            .fetch_all(&journal)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(
        alerts,
        [("btn-0002".to_string(), "raised".to_string())],
        "the impersonated press and A's staff command never reached the gateway"
    );
    let alert_id = alert["alert_id"].as_i64().unwrap();

    // S009 may not act as S001: the broker drops a publish on S001's topic, and a body naming
    // S001 on S009's own topic is refused by the gateway.
    let _ = s009
        .publish(
            format!("eldergate/v1/{site}/staff/cmd/S001"),
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"v":1,"cmd":"ack","alert_id":{alert_id}}}"#).into_bytes(),
        )
        .await;
    // Mosquitto drops a client whose publish its ACL denies: S009 connects again.
    tokio::time::sleep(QUIET).await;
    let (s009, mut s009_hears, ok) = tls_client(
        dev_port,
        &pki.ca,
        cred("S009"),
        "app-S009-again",
        Some(format!("eldergate/v1/{site}/staff/#")),
    )
    .await;
    assert!(ok);
    let cmd = |by: &str, rid: &str| {
        format!(r#"{{"v":1,"cmd":"ack","alert_id":{alert_id},{by}"request_id":"{rid}"}}"#)
            .into_bytes()
    };
    s009.publish(
        format!("eldergate/v1/{site}/staff/cmd/S009"),
        QoS::AtLeastOnce,
        false,
        cmd(r#""by":"S001","#, "forged"),
    )
    .await
    .unwrap();
    s009.publish(
        format!("eldergate/v1/{site}/staff/cmd/S009"),
        QoS::AtLeastOnce,
        false,
        cmd("", "mine"),
    )
    .await
    .unwrap();
    let mut results = BTreeMap::new();
    while results.len() < 2 {
        let (t, body) = next(&mut s009_hears, "staff results").await;
        if t == format!("eldergate/v1/{site}/staff/results") {
            let r: serde_json::Value = serde_json::from_slice(&body).unwrap();
            results.insert(r["request_id"].as_str().unwrap_or_default().to_string(), r);
        }
    }
    assert_eq!(results["forged"]["ok"], false);
    assert!(results["forged"]["error"]
        .as_str()
        .unwrap()
        .contains("actor_mismatch"));
    assert_eq!(results["mine"]["ok"], true, "{}", results["mine"]);
    let by: String = sqlx::query_scalar("SELECT acked_by FROM alerts WHERE id = ?")
        .bind(alert_id)
        .fetch_one(&journal)
        .await
        .unwrap_or_default();
    assert_eq!(
        by, "S009",
        "acknowledged by the broker identity, never by S001"
    );

    // The reader taps over TLS with its own secret and gets its display answer.
    let (rdr, mut rdr_down, ok) = tls_client(
        dev_port,
        &pki.ca,
        cred("rdr-01"),
        "rdr-01",
        Some(format!("eldergate/v1/{site}/down/rdr-01")),
    )
    .await;
    assert!(ok);
    rdr.publish(
        format!("eldergate/v1/{site}/tap/rdr-01"),
        QoS::AtLeastOnce,
        false,
        br#"{"v":1,"seq":1,"card":"CA000001"}"#.to_vec(),
    )
    .await
    .unwrap();
    let (_, body) = next(&mut rdr_down, "the reader's display").await;
    let down: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(down["seq"], 1, "{down}");
    assert!(down.get("result").is_some(), "{down}");
    // A button cannot tap.
    let _ = btn1_cmd
        .publish(
            format!("eldergate/v1/{site}/tap/btn-0001"),
            QoS::AtLeastOnce,
            false,
            br#"{"v":1,"seq":2,"card":"CA000001"}"#.to_vec(),
        )
        .await;
    tokio::time::sleep(QUIET).await;
    let taps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM taps")
        .fetch_one(&journal)
        .await
        .unwrap();
    assert_eq!(taps, 1);

    // The kiosk opens a session with a card and sends a reading over TLS with its own secret:
    // both answered after commit on its own downlink, the reading stored for that resident.
    let (kiosk, mut kiosk_down, ok) = tls_client(
        dev_port,
        &pki.ca,
        cred("kiosk-01"),
        "kiosk-01",
        Some(format!("eldergate/v1/{site}/down/kiosk-01")),
    )
    .await;
    assert!(ok);
    kiosk
        .publish(
            format!("eldergate/v1/{site}/tele/kiosk-01/card"),
            QoS::AtLeastOnce,
            false,
            br#"{"v":1,"seq":1,"card":"CA000002"}"#.to_vec(),
        )
        .await
        .unwrap();
    let (_, body) = next(&mut kiosk_down, "the kiosk's session answer").await;
    let down: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(down["result"], "session_opened", "{down}");
    kiosk
        .publish(
            format!("eldergate/v1/{site}/tele/kiosk-01/reading"),
            QoS::AtLeastOnce,
            false,
            br#"{"v":1,"seq":2,"measure":"blood_pressure","value":"128","value2":"82","unit":"mmHg"}"#
                .to_vec(),
        )
        .await
        .unwrap();
    let (_, body) = next(&mut kiosk_down, "the kiosk's reading answer").await;
    let down: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(down["seq"], 2, "{down}");
    assert_eq!(down["result"], "stored", "{down}");
    // A button cannot send a reading, not even under the kiosk's name.
    for topic in ["tele/btn-0001/reading", "tele/kiosk-01/reading"] {
        let _ = btn1_cmd
            .publish(
                format!("eldergate/v1/{site}/{topic}"),
                QoS::AtLeastOnce,
                false,
                br#"{"v":1,"seq":3,"measure":"pulse","value":"70","unit":"/min"}"#.to_vec(),
            )
            .await;
    }
    tokio::time::sleep(QUIET).await;
    let readings: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT device_id, resident_id FROM vital_readings")
            .fetch_all(&journal)
            .await
            .unwrap();
    assert_eq!(
        readings,
        vec![("kiosk-01".to_string(), Some("R00002".to_string()))],
        "one reading, the kiosk's, for the resident whose card was tapped"
    );
}
