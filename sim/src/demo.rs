//! `eldergate-sim demo`: the whole system on one machine, nothing to install.
//!
//! Runs the gateway from `deploy/eldergate.example.toml` (embedded broker, embedded SQLite central
//! store) on free ports, and around it the firmware simulator: alarm buttons running the
//! firmware's own logic over MQTT and — through a pty pair the demo makes, registered as a
//! `[[serial]]` port — over the serial link protocol, all sending heartbeats (one with a nearly
//! flat coin cell); a firmware card-reader terminal tapping residents' cards and printing what its
//! display shows; and a simulated duty worker who acknowledges and resolves alerts over MQTT.
//! It prints what to watch.

use crate::{
    mqtt_link, registered, DrainingCoinCell, FirmwareDevices, MqttLinkOptions, RandomSeniors,
    StaffClient, StaffMessage,
};
use eldergate::config;
use eldergate_protocol::payload::{AlertState, StaffVerb};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Config to run (ports and data_dir are overridden).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/eldergate.example.toml"))]
    pub config: PathBuf,
    /// Where the journal and central store go (wiped at start).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/eldergate-demo"))]
    pub data_dir: PathBuf,
    /// How many firmware alarm buttons to simulate over MQTT (registered with link = mqtt).
    #[arg(long, default_value_t = 20)]
    pub buttons: usize,
    /// How many firmware alarm buttons to simulate over a pty serial link (link = serial).
    #[arg(long, default_value_t = 2)]
    pub serial_buttons: usize,
    /// Mean seconds between button gestures across all buttons.
    #[arg(long, default_value_t = 6.0)]
    pub press_every: f64,
    /// Mean seconds between card taps at the simulated reader (0 = no reader).
    #[arg(long, default_value_t = 8.0)]
    pub tap_every: f64,
    /// Seconds before the simulated duty worker acknowledges an alert (0 = never: watch the
    /// escalation ladder widen the audience at 60 s and 180 s).
    #[arg(long, default_value_t = 15)]
    pub ack_after: u64,
}

/// The reader the demo's firmware terminal plays: a registered MQTT reader other than rdr-02,
/// which the printed instructions leave to the person watching.
const DEMO_READER: &str = "rdr-04";
/// The health kiosk the demo simulates (registered in deploy/demo/community-devices.csv).
const DEMO_KIOSK: &str = "kiosk-01";
/// Time between the simulated kiosk's sessions.
const DEMO_KIOSK_EVERY: Duration = Duration::from_secs(20);
/// What a meal costs at the simulated reader (the example rules have no menu prices).
const DEMO_MEAL_FEN: i32 = 1_500;
/// Residents whose cards the reader taps, each topped up with ¥30.00 first.
const DEMO_DINERS: usize = 6;
/// Heartbeat interval of the simulated devices.
const DEMO_HEARTBEAT: Duration = Duration::from_secs(60);

/// `preferred` if it is free on loopback, else any free port.
fn free_port(preferred: u16) -> std::io::Result<u16> {
    match TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port()),
    }
}

/// A pty pair: the device end (master) for the simulator, and the path of the gateway's end.
fn serial_pair() -> Option<(tokio_serial::SerialStream, String)> {
    use tokio_serial::SerialPort;
    match tokio_serial::SerialStream::pair() {
        Ok((master, slave)) => {
            let path = slave.name()?;
            // The gateway opens the port by its path, as it would a USB dongle.
            drop(slave);
            Some((master, path))
        }
        Err(e) => {
            println!("(no pty available here — {e}; the demo runs without serial buttons)");
            None
        }
    }
}

/// Tops up each resident with ¥30.00 through the gateway's HTTP API (retried while it starts),
/// with the cashier's API token (the ledger records the token's staff member).
async fn top_up(web: &str, residents: &[String], token: &str) {
    let http = reqwest::Client::new();
    for id in residents {
        for _ in 0..50 {
            let r = http
                .post(format!("{web}/api/residents/{id}/topup"))
                .bearer_auth(token)
                .json(&serde_json::json!({"amount_fen": 3000, "reason": "demo"}))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs the demo until `stop`.
pub async fn run(
    args: DemoArgs,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mqtt_port = free_port(1883)?;
    let http_port = free_port(8080)?;
    let _ = std::fs::remove_dir_all(&args.data_dir);
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let env = std::env::vars().chain([
        (
            "ELDERGATE__BROKER__LISTEN".to_string(),
            format!("127.0.0.1:{mqtt_port}"),
        ),
        (
            "ELDERGATE__HTTP__LISTEN".to_string(),
            format!("127.0.0.1:{http_port}"),
        ),
        (
            "ELDERGATE__DATA_DIR".to_string(),
            data_dir.display().to_string(),
        ),
        // Only a few of the community's devices are simulated: the daily check-in would raise a
        // visit task for nearly every resident living alone ...
        (
            "ELDERGATE__CHECKIN__ENABLED".to_string(),
            "false".to_string(),
        ),
        // ... and supervision would declare the ~550 silent ones offline after ten minutes.
        (
            "ELDERGATE__SUPERVISION__GRACE_S".to_string(),
            "86400".to_string(),
        ),
    ]);
    let mut loaded = config::load_with_env(&args.config, env)?;
    // A roster import saves over residents_csv: the demo works on a copy in its data dir, so it
    // never rewrites the repository's synthetic roster.
    let roster = data_dir.join("residents.csv");
    if let Some(shipped) = loaded.roster_path.take() {
        std::fs::copy(&shipped, &roster)?;
        loaded.config.residents_csv = Some(roster.clone());
        loaded.roster_path = Some(roster.clone());
    }
    let site = loaded.config.site_id.clone();
    let mqtt_buttons: Vec<String> =
        registered(&loaded, config::DeviceKind::AlarmButton, config::Link::Mqtt)
            .into_iter()
            .take(args.buttons)
            .collect();
    // Environment overrides cannot add to an array of tables, so the demo's serial port is
    // added to the loaded config: the gateway serves it like any configured [[serial]] port.
    let serial = if args.serial_buttons > 0 {
        serial_pair()
    } else {
        None
    };
    let serial_buttons: Vec<String> = match &serial {
        Some((_, path)) => {
            loaded.config.serial.push(config::SerialPortConfig {
                port: path.clone(),
                baud: 115_200,
            });
            registered(
                &loaded,
                config::DeviceKind::AlarmButton,
                config::Link::Serial,
            )
            .into_iter()
            .take(args.serial_buttons)
            .collect()
        }
        None => Vec::new(),
    };
    let reader_known = loaded.devices.contains_key(DEMO_READER) && args.tap_every > 0.0;
    let kiosk_known = loaded.devices.contains_key(DEMO_KIOSK);
    let diners: Vec<(String, String)> = loaded
        .residents
        .values()
        .filter(|r| r.resident_id != "R00001")
        .filter_map(|r| Some((r.resident_id.clone(), r.card_id.clone()?)))
        .take(DEMO_DINERS)
        .collect();
    let duty = loaded
        .staff
        .values()
        .find(|s| s.role == "duty")
        .map(|s| s.id.clone())
        .unwrap_or_else(|| "S009".into());
    let cashier = loaded
        .staff
        .values()
        .find(|s| s.role == "canteen_operator")
        .map(|s| s.id.clone())
        .unwrap_or_else(|| "S013".into());

    // Console accounts and API tokens: no default password anywhere, so the demo makes fresh
    // ones each run and prints them.
    let accounts = eldergate::auth::AccountStore::open(&loaded.config.data_dir).await?;
    let console_user = loaded
        .staff
        .values()
        .find(|s| s.role == "admin")
        .map(|s| s.id.clone())
        .unwrap_or_else(|| duty.clone());
    let console_password: String = eldergate::auth::store::new_secret()
        .chars()
        .take(12)
        .collect();
    accounts
        .set_password(&console_user, &console_password)
        .await?;
    let cashier_password: String = eldergate::auth::store::new_secret()
        .chars()
        .take(12)
        .collect();
    accounts.set_password(&cashier, &cashier_password).await?;
    let api_token = accounts
        .create_token(
            &console_user,
            "demo-curl",
            "read,alerts,canteen,roster,vitals",
        )
        .await?;
    let cashier_token = accounts
        .create_token(&cashier, "demo-cashier", "read,canteen")
        .await?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(eldergate::app::run(loaded, async move {
        let _ = stop_rx.await;
    }));
    let staff = StaffClient::start("127.0.0.1", mqtt_port, &site, "demo-duty-staff", None).await?;
    let web = format!("http://127.0.0.1:{http_port}");
    if reader_known {
        let ids: Vec<String> = diners.iter().map(|(id, _)| id.clone()).collect();
        top_up(&web, &ids, &cashier_token).await;
    }

    // Firmware devices over MQTT: the buttons and the reader. The last button's coin cell is
    // nearly flat (21 %, 10 mV a heartbeat): its third heartbeat reports 19 % < 20 %.
    let mut mqtt_fleet = FirmwareDevices {
        buttons: mqtt_buttons.clone(),
        readers: if reader_known {
            vec![DEMO_READER.to_string()]
        } else {
            Vec::new()
        },
        heartbeat_every: Some(DEMO_HEARTBEAT),
        print_displays: true,
        counter_price_fen: Some(DEMO_MEAL_FEN),
    }
    .build();
    let flat = mqtt_fleet.buttons.last_mut().map(|b| {
        b.battery = DrainingCoinCell {
            millivolts: 2_215,
            drain_mv: 10,
        };
        b.id.clone()
    });
    let serial_fleet = FirmwareDevices {
        buttons: serial_buttons.clone(),
        readers: Vec::new(),
        heartbeat_every: Some(DEMO_HEARTBEAT),
        print_displays: true,
        counter_price_fen: Some(DEMO_MEAL_FEN),
    }
    .build();
    // The fleet-wide press rate is shared between the two links in proportion to their buttons.
    let all = (mqtt_buttons.len() + serial_buttons.len()).max(1) as f64;
    let gap = |n: usize| {
        (n > 0).then(|| {
            Duration::from_secs_f64((args.press_every.max(0.05) * all / n as f64).min(3_600.0))
        })
    };
    let cards: Vec<String> = diners.iter().map(|(_, c)| c.clone()).collect();
    let tap_gap = (args.tap_every > 0.0).then(|| Duration::from_secs_f64(args.tap_every.max(0.5)));
    let (link, _) = mqtt_link::connect(MqttLinkOptions {
        host: "127.0.0.1".into(),
        port: mqtt_port,
        site: site.clone(),
        client_id: "demo-devices".into(),
        credentials: None,
    })
    .await?;
    let (devices_stop, devices_stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let mqtt_devices = tokio::spawn(crate::run(
        mqtt_fleet,
        link,
        RandomSeniors::new(gap(mqtt_buttons.len()), tap_gap, &cards),
        until_stopped(devices_stopped.clone()),
    ));
    let kiosk = kiosk_known.then(|| {
        tokio::spawn(crate::kiosk::run(
            crate::kiosk::KioskOptions {
                host: "127.0.0.1".into(),
                port: mqtt_port,
                site: site.clone(),
                kiosk: DEMO_KIOSK.into(),
                cards: cards.clone(),
                every: DEMO_KIOSK_EVERY,
            },
            until_stopped(devices_stopped.clone()),
        ))
    });
    let serial_devices = serial.map(|(master, _)| {
        tokio::spawn(crate::run(
            serial_fleet,
            crate::serial::serial_link(master),
            RandomSeniors::new(gap(serial_buttons.len()), None, &[]),
            until_stopped(devices_stopped.clone()),
        ))
    });

    let reader_line = if reader_known {
        format!(
            "A firmware card-reader terminal ({DEMO_READER}, ¥{} meals) taps the cards of {} residents (topped up with ¥30.00 each by {cashier}) every ~{}s, now and then an unregistered card, and prints what its display shows as [display {DEMO_READER}] lines; outside the meal periods of deploy/canteen/shanghai-putuo.toml it says so.\n",
            crate::yuan(i64::from(DEMO_MEAL_FEN)),
            diners.len(),
            args.tap_every,
        )
    } else {
        String::new()
    };
    let kiosk_line = if kiosk_known {
        format!(
            "A health kiosk ({DEMO_KIOSK}) runs a session every ~{}s: a resident's card tap, two blood pressures (the gateway judges their mean), every third session a glucose; every fifth a grade-3 blood pressure and every ninth a low glucose raise an alert — watch the [kiosk {DEMO_KIOSK}] lines say PLEASE SEE THE STAFF and the bp_high / glucose_low alerts arrive. History: curl -s -H \"authorization: Bearer $TOKEN\" {web}/api/residents/RESIDENT/readings (FHIR: …/fhir).\n",
            DEMO_KIOSK_EVERY.as_secs()
        )
    } else {
        String::new()
    };
    println!(
        "\n=== eldergate demo is running (Ctrl-C stops it) ===\n\
         {n} alarm buttons run the firmware's own logic on this machine — {n_mqtt} over MQTT and {n_serial} over a serial pty ({serial_ids}) — and are pressed every ~{every}s across them (mostly SOS; now and then a double press = check-in or a long press = cancel); every button sends a heartbeat every {hb}s.\n\
         {flat_line}\
         {reader_line}\
         {kiosk_line}\
         A simulated duty worker ({duty}) acknowledges after {ack}s.\n\n\
         Watch staff alerts (MQTT, embedded broker):\n  mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t 'eldergate/v1/{site}/staff/#' -v\n\
         Staff console (alert board, live): {web}/console — log in as {console_user} with password {console_password} (canteen operator {cashier}: {cashier_password})\n\
         The JSON API needs a token; this one acts as {console_user}:\n  export TOKEN={api_token}\n\
         Open alerts:\n  curl -s -H \"authorization: Bearer $TOKEN\" {web}/api/alerts\n\
         Acknowledge alert 1 yourself (HTTP):\n  curl -s -X POST {web}/api/alerts/1/ack -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"note\":\"on my way\"}}'\n\
         ... or over MQTT:\n  mosquitto_pub -h 127.0.0.1 -p {mqtt_port} -t 'eldergate/v1/{site}/staff/cmd/S010' -m '{{\"v\":1,\"cmd\":\"ack\",\"alert_id\":1}}'\n\
         Canteen: top up a resident, then tap their card (R00001's card is 1DDCCF2D) at reader rdr-02:\n  curl -s -X POST {web}/api/residents/R00001/topup -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"amount_fen\":5000}}'\n  mosquitto_pub -h 127.0.0.1 -p {mqtt_port} -t 'eldergate/v1/{site}/tap/rdr-02' -q 1 -m '{{\"v\":1,\"seq\":1,\"card\":\"1DDCCF2D\"}}'\n  (the answer, after commit, appears on eldergate/v1/{site}/down/rdr-02 — outside the meal periods of deploy/canteen/shanghai-putuo.toml it says so; daily report: {web}/api/reports/daily?date=YYYY-MM-DD)\n\
         Roster: the demo's roster is {roster}; import a changed copy while it runs (a dry run shows what would change; drop dry_run=true to apply):\n  curl -s -X POST '{web}/api/roster?dry_run=true' -H \"authorization: Bearer $TOKEN\" -H 'content-type: text/csv' --data-binary @{roster}\n\
         Metrics: {web}/metrics   Health: {web}/healthz\n\
         Journal: {journal}   Central store: {central}\n",
        n = mqtt_buttons.len() + serial_buttons.len(),
        n_mqtt = mqtt_buttons.len(),
        n_serial = serial_buttons.len(),
        serial_ids = if serial_buttons.is_empty() { "none".to_string() } else { serial_buttons.join(", ") },
        every = args.press_every,
        hb = DEMO_HEARTBEAT.as_secs(),
        flat_line = flat
            .map(|id| format!("{id}'s coin cell is nearly flat: watch its LOW_BATTERY alert (low priority) come with its third heartbeat, about two minutes in.\n"))
            .unwrap_or_default(),
        ack = args.ack_after,
        journal = data_dir.join("journal.db").display(),
        central = data_dir.join("central.db").display(),
        roster = roster.display(),
    );

    let worker = tokio::spawn(duty_worker(staff, duty, args.ack_after));
    stop.await;
    let _ = devices_stop.send(true);
    let _ = mqtt_devices.await;
    if let Some(k) = kiosk {
        let _ = k.await;
    }
    if let Some(s) = serial_devices {
        let _ = s.await;
    }
    worker.abort();
    let _ = stop_tx.send(());
    gateway.await??;
    println!(
        "demo stopped; the journal and central store stay in {}",
        data_dir.display()
    );
    Ok(())
}

/// Prints every alert change and, like a duty worker, acknowledges raised alerts after a while
/// and resolves them a while later.
async fn duty_worker(staff: StaffClient, duty: String, ack_after: u64) {
    let mut rx = staff.subscribe();
    while let Ok(msg) = rx.recv().await {
        match msg {
            StaffMessage::Alert(a, _) => {
                println!(
                    "[alert {:>3}] {:<13} {:<14} {} {} {} at {} presses={} state={} -> {}",
                    a.alert_id,
                    a.change.to_uppercase(),
                    a.kind,
                    a.device_id,
                    a.resident_id.as_deref().unwrap_or("-"),
                    a.resident_name.as_deref().unwrap_or(""),
                    a.location.as_deref().unwrap_or("-"),
                    a.press_count,
                    a.state.as_str(),
                    a.notify.join(","),
                );
                if ack_after > 0 && a.change == "raised" {
                    let (s, d, id) = (staff.clone(), duty.clone(), a.alert_id);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(ack_after)).await;
                        let _ = s
                            .command(StaffVerb::Ack, id, &d, Some("on my way"), None)
                            .await;
                    });
                }
                if ack_after > 0
                    && a.state == AlertState::Acknowledged
                    && a.change == "acknowledged"
                {
                    let (s, d, id) = (staff.clone(), duty.clone(), a.alert_id);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(ack_after)).await;
                        let _ = s
                            .command(
                                StaffVerb::Resolve,
                                id,
                                &d,
                                Some("visited; resident is fine"),
                                None,
                            )
                            .await;
                    });
                }
            }
            StaffMessage::Result(r) if !r.ok => {
                println!(
                    "[staff    ] command on alert {} refused: {}",
                    r.alert_id,
                    r.error.unwrap_or_default()
                );
            }
            StaffMessage::Result(_) => {}
        }
    }
}
