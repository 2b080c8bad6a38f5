//! `eldergate-sim sim`: firmware buttons and card readers on the host, over MQTT or a serial
//! port, at random or by a script, until Ctrl-C or `--duration`.

use crate::{
    mqtt_link, registered, roster_cards, run, script, FirmwareDevices, MqttLinkOptions,
    RandomSeniors, ScriptedSeniors, SimStats,
};
use anyhow::Context;
use eldergate::config::{DeviceKind, Link};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// `eldergate-sim sim`: firmware buttons and card readers on the host, over MQTT or a serial port.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Broker, `mqtt://host:port`.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// A gateway config: the site, the device ids (buttons and readers registered for the link
    /// used) and the residents' cards (its roster) come from it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Site id (required without --config).
    #[arg(long)]
    pub site: Option<String>,
    /// Button ids to simulate (comma-separated); default: the first --buttons of the config's,
    /// or btn-0001, btn-0002, ….
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// How many buttons, when --devices does not list them.
    #[arg(long, default_value_t = 20)]
    pub buttons: u32,
    /// Reader ids to simulate (comma-separated); default: the first --readers of the config's,
    /// or rdr-01, rdr-02, ….
    #[arg(long, value_delimiter = ',')]
    pub reader_ids: Vec<String>,
    /// How many card readers, when --reader-ids does not list them.
    #[arg(long, default_value_t = 0)]
    pub readers: u32,
    /// Mean seconds between button gestures across the fleet (random behaviour).
    #[arg(long, default_value_t = 5.0)]
    pub press_every: f64,
    /// Mean seconds between card taps across the readers (random behaviour).
    #[arg(long, default_value_t = 10.0)]
    pub tap_every: f64,
    /// Seconds between heartbeats of each device (0 = none).
    #[arg(long, default_value_t = 60)]
    pub heartbeat_every: u64,
    /// A fixed script instead of random behaviour (`SECONDS DEVICE press|double|long|tap [CARD]`
    /// per line); the devices it names are simulated besides --devices / --reader-ids.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Price the readers' counter staff type for each tap, fen (0: the period's menu price);
    /// it travels in the CARD_TAP frame, over MQTT and serial alike.
    #[arg(long, default_value_t = 0)]
    pub tap_price_fen: u32,
    /// Broker username (password from ELDERGATE_SIM_PASSWORD).
    #[arg(long)]
    pub username: Option<String>,
    /// Instead of MQTT: run the devices over this serial port (or pty), e.g. the other end of a
    /// dongle's line.
    #[arg(long)]
    pub serial: Option<String>,
    /// Baud rate of --serial (8N1).
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Keep each device's sequence numbers in DIR/<device>.seq across runs, as a device with
    /// flash does (default: a random start every run).
    #[arg(long, value_name = "DIR")]
    pub seq_dir: Option<PathBuf>,
}

fn numbered(prefix: &str, width: usize, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i:0width$}")).collect()
}

/// Runs `eldergate-sim sim` until `stop` (or `--duration`).
pub async fn run_cli(args: SimArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let link_kind = if args.serial.is_some() {
        Link::Serial
    } else {
        Link::Mqtt
    };
    let loaded = match &args.config {
        Some(path) => Some(eldergate::config::load(path)?),
        None => None,
    };
    let site = match (&args.site, &loaded) {
        (Some(s), _) => s.clone(),
        (None, Some(l)) => l.config.site_id.clone(),
        (None, None) => anyhow::bail!("give --site, or --config to take the site from"),
    };
    let pick = |listed: &[String], kind, count: u32, prefix: &str, width| -> Vec<String> {
        let count = count as usize;
        if !listed.is_empty() {
            return listed.to_vec();
        }
        match &loaded {
            Some(l) => registered(l, kind, link_kind)
                .into_iter()
                .take(count)
                .collect(),
            None => numbered(prefix, width, count),
        }
    };
    let mut buttons = pick(
        &args.devices,
        DeviceKind::AlarmButton,
        args.buttons,
        "btn-",
        4,
    );
    let mut readers = pick(
        &args.reader_ids,
        DeviceKind::CardReader,
        args.readers,
        "rdr-",
        2,
    );
    let cards = loaded.as_ref().map(roster_cards).unwrap_or_default();
    let script = match &args.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the script {}", path.display()))?;
            let steps = script::parse(&text)?;
            if args.devices.is_empty() {
                buttons.clear();
            }
            if args.reader_ids.is_empty() {
                readers.clear();
            }
            for s in &steps {
                let ids = match s.gesture {
                    script::Gesture::Tap(_) => &mut readers,
                    _ => &mut buttons,
                };
                if !ids.contains(&s.device) {
                    ids.push(s.device.clone());
                }
            }
            Some(steps)
        }
        None => None,
    };
    if let Some(bad) = buttons
        .iter()
        .chain(&readers)
        .find(|id| id.is_empty() || id.len() > eldergate_protocol::serial::MAX_ID)
    {
        anyhow::bail!("device id {bad:?} cannot be simulated: the firmware's frames carry ids of 1–16 characters");
    }
    if !readers.is_empty() && cards.is_empty() && script.is_none() {
        tracing::warn!("no cards to tap: give --config with a residents_csv roster, or a --script with card ids");
    }
    let fleet = FirmwareDevices {
        buttons,
        readers,
        heartbeat_every: (args.heartbeat_every > 0)
            .then(|| Duration::from_secs(args.heartbeat_every)),
        print_displays: true,
        counter_price_fen: (args.tap_price_fen > 0)
            .then(|| i32::try_from(args.tap_price_fen).ok())
            .flatten(),
    }
    .build_with_seq_dir(args.seq_dir.as_deref())?;
    let stats = fleet.stats();
    println!(
        "simulating firmware devices over {}: {} alarm button(s), {} card reader(s)",
        args.serial.as_deref().unwrap_or(&args.broker),
        fleet.buttons.len(),
        fleet.readers.len(),
    );
    if let Some(dir) = &args.seq_dir {
        println!("sequence numbers kept in {}", dir.display());
    }
    let link = match &args.serial {
        Some(path) => crate::serial::open_serial_link(path, args.baud)
            .with_context(|| format!("cannot open serial port {path}"))?,
        None => {
            let addr =
                eldergate::mqtt::parse_broker_url(&args.broker).map_err(anyhow::Error::msg)?;
            let credentials = match args.username {
                Some(u) => Some((
                    u,
                    std::env::var("ELDERGATE_SIM_PASSWORD")
                        .context("set ELDERGATE_SIM_PASSWORD for --username")?,
                )),
                None => None,
            };
            mqtt_link::connect(MqttLinkOptions {
                host: addr.host,
                port: addr.port,
                site,
                client_id: format!("eldergate-sim-{}", std::process::id()),
                credentials,
            })
            .await?
            .0
        }
    };
    let stop = async move {
        match args.duration {
            0 => stop.await,
            s => {
                tokio::select! {
                    _ = stop => {}
                    _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                }
            }
        }
    };
    let fleet = match script {
        Some(steps) => run(fleet, link, ScriptedSeniors::new(steps, &cards), stop).await,
        None => {
            let every = |s: f64| (s > 0.0).then(|| Duration::from_secs_f64(s.max(0.05)));
            let seniors =
                RandomSeniors::new(every(args.press_every), every(args.tap_every), &cards);
            run(fleet, link, seniors, stop).await
        }
    };
    let unacked = fleet
        .buttons
        .iter()
        .filter(|b| !b.firmware.outbox.is_idle())
        .count();
    let get = SimStats::get;
    println!(
        "simulator stopped: {} alarm events sent, {} acked, {} retransmissions, {} buttons still waiting for an ACK; {} heartbeats; {} taps, {} answers shown; {} NAKs, {} unexpected frames, {} frames lost on a full link; {} failed sequence-number stores",
        get(&stats.alarms_sent),
        get(&stats.acks),
        get(&stats.retransmissions),
        unacked,
        get(&stats.heartbeats_sent),
        get(&stats.taps_sent),
        get(&stats.displays),
        get(&stats.naks),
        get(&stats.unexpected_frames),
        get(&stats.link_drops),
        get(&stats.seq_store_errors),
    );
    Ok(())
}
