//! `eldergate demo`: the whole alarm path on one machine, nothing to install.
//!
//! Runs the gateway from `deploy/eldergate.example.toml` (embedded broker, embedded SQLite central
//! store) on free ports, a fleet of simulated buttons that press now and then, and a simulated
//! duty worker who acknowledges and resolves alerts over MQTT, and prints what to watch.

use crate::config;
use crate::sim::{Fleet, FleetOptions, StaffClient, StaffMessage};
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
    /// How many MQTT alarm buttons from the registry to simulate.
    #[arg(long, default_value_t = 20)]
    pub buttons: usize,
    /// Mean seconds between button events across the fleet.
    #[arg(long, default_value_t = 6.0)]
    pub press_every: f64,
    /// Seconds before the simulated duty worker acknowledges an alert (0 = never: watch the
    /// escalation ladder widen the audience at 60 s and 180 s).
    #[arg(long, default_value_t = 15)]
    pub ack_after: u64,
}

/// `preferred` if it is free on loopback, else any free port.
fn free_port(preferred: u16) -> std::io::Result<u16> {
    match TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port()),
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
    ]);
    let loaded = config::load_with_env(&args.config, env)?;
    let site = loaded.config.site_id.clone();
    let buttons: Vec<String> = loaded
        .devices
        .values()
        .filter(|d| d.kind == config::DeviceKind::AlarmButton && d.link == config::Link::Mqtt)
        .take(args.buttons)
        .map(|d| d.id.clone())
        .collect();
    let duty = loaded
        .staff
        .values()
        .find(|s| s.role == "duty")
        .map(|s| s.id.clone())
        .unwrap_or_else(|| "S009".into());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(crate::app::run(loaded, async move {
        let _ = stop_rx.await;
    }));
    let staff = StaffClient::start("127.0.0.1", mqtt_port, &site, "demo-duty-staff", None).await?;
    let fleet = Fleet::start(FleetOptions {
        host: "127.0.0.1".into(),
        port: mqtt_port,
        site: site.clone(),
        client_id: "demo-buttons".into(),
        retransmit_after: Duration::from_secs(2),
        credentials: None,
    })
    .await?;

    let web = format!("http://127.0.0.1:{http_port}");
    println!(
        "\n=== eldergate demo is running (Ctrl-C stops it) ===\n\
         {n} simulated alarm buttons press every ~{every}s; a simulated duty worker ({duty}) acknowledges after {ack}s.\n\n\
         Watch staff alerts (MQTT, embedded broker):\n  mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t 'eldergate/v1/{site}/staff/#' -v\n\
         Open alerts:\n  curl -s {web}/api/alerts\n\
         Acknowledge alert 1 yourself (HTTP):\n  curl -s -X POST {web}/api/alerts/1/ack -H 'content-type: application/json' -d '{{\"by\":\"S010\",\"note\":\"on my way\"}}'\n\
         ... or over MQTT:\n  mosquitto_pub -h 127.0.0.1 -p {mqtt_port} -t 'eldergate/v1/{site}/staff/cmd' -m '{{\"v\":1,\"cmd\":\"ack\",\"alert_id\":1,\"by\":\"S010\"}}'\n\
         Canteen: top up a resident, then tap their card (R00001's card is 1DDCCF2D) at reader rdr-02:\n  curl -s -X POST {web}/api/residents/R00001/topup -H 'content-type: application/json' -d '{{\"amount_fen\":5000,\"by\":\"S013\"}}'\n  mosquitto_pub -h 127.0.0.1 -p {mqtt_port} -t 'eldergate/v1/{site}/tap/rdr-02' -q 1 -m '{{\"v\":1,\"seq\":1,\"card\":\"1DDCCF2D\"}}'\n  (the answer, after commit, appears on eldergate/v1/{site}/down/rdr-02 — outside the meal periods of deploy/canteen/shanghai-putuo.toml it says so; daily report: {web}/api/reports/daily?date=YYYY-MM-DD)\n\
         Metrics: {web}/metrics   Health: {web}/healthz\n\
         Journal: {journal}   Central store: {central}\n",
        n = buttons.len(),
        every = args.press_every,
        ack = args.ack_after,
        journal = data_dir.join("journal.db").display(),
        central = data_dir.join("central.db").display(),
    );

    let presses = tokio::spawn(crate::sim::press_randomly(
        fleet.clone(),
        buttons,
        args.press_every,
    ));
    let worker = tokio::spawn(duty_worker(staff, duty, args.ack_after));
    stop.await;
    presses.abort();
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
