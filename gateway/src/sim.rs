//! Simulated devices and staff, speaking the real protocols to a real gateway.
//!
//! Which one to use for what:
//! - [`FirmwareFleet`] — **the device simulator.** Runs the firmware crate's own logic
//!   (`AlarmButton` with debounce, classification, outbox and backoff; heartbeats through its
//!   `BatterySensor` with a draining coin cell; the card-reader `Terminal` with a display that
//!   records what the senior reads) for many devices at once, at random ([`RandomSeniors`]) or by
//!   a script ([`ScriptedSeniors`], [`script`]), over a real serial port or pty
//!   ([`crate::sim_serial`]) or over MQTT ([`mqtt_link`]). Used by `eldergate sim`, the demo, the
//!   simulator tests and the firmware rows of the benchmark.
//! - [`Fleet`] — a **load generator**: stand-in buttons that publish v1 alarm events as fast as
//!   asked and retransmit until acked, without the firmware. Only for rates the firmware
//!   simulator cannot produce (the benchmarks' durable-ingest and latency runs).
//! - [`StaffClient`] — a staff member's MQTT client (the demo's duty worker, tests, benchmarks).
//!
//! Sequence numbers: by default every run starts each device at a random number (a device
//! without storage, SPEC.md §5). With a sequence directory ([`FirmwareDevices::build_with_seq_dir`],
//! `eldergate sim --seq-dir DIR`) each device keeps its high-water mark in `DIR/<device>.seq`
//! ([`FileSeqStore`]) through the firmware's own `SeqAllocator`, so a restarted simulator goes on
//! above every number it used before, as a device with flash does.

mod device;
mod firmware_fleet;
mod fleet;
mod mqtt_client;
pub mod mqtt_link;
pub mod script;
mod senior;
mod seq_file;
mod staff;

pub use device::{
    answer_text, card_uid, yuan, CardsAtReader, DisplayLog, DrainingCoinCell, MainsPower, NoLed,
    ScriptedButton, Shown, SimButton, SimReader,
};
pub use firmware_fleet::{run, AckedEvent, FirmwareFleet, Senior, SimLink, SimStats, TICK};
pub use fleet::{press_randomly, Fleet, FleetOptions};
pub use mqtt_link::{MqttLinkOptions, MqttLinkStats};
pub use senior::{RandomSeniors, ScriptedSeniors};
pub use seq_file::{FileSeqStore, SeqFileError};
pub use staff::{StaffClient, StaffMessage};

use crate::config::{DeviceKind, Link, Loaded};
use anyhow::Context;
use eldergate_firmware::seq::{SeqAllocator, DEFAULT_SEQ_BLOCK};
use rand::Rng;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the firmware devices are built.
#[derive(Debug, Clone)]
pub struct FirmwareDevices {
    /// Alarm-button ids (1–16 characters: they travel in serial frames).
    pub buttons: Vec<String>,
    /// Card-reader ids.
    pub readers: Vec<String>,
    /// Heartbeat interval; None for no heartbeats. The first heartbeat of each device comes
    /// within the first interval (at most 5 s), spread so the devices report in soon.
    pub heartbeat_every: Option<Duration>,
    /// Print what the readers' displays show (the CLI and the demo).
    pub print_displays: bool,
    /// The price the counter staff type for every tap, fen; None = the period's menu price.
    pub counter_price_fen: Option<i32>,
}

impl FirmwareDevices {
    /// Builds the fleet: random first sequence numbers (SPEC.md §5: "after a reset without
    /// storage, start from a random value", so a restarted simulator is not taken for a
    /// retransmission), fresh coin cells (2.8–3.0 V, 1 mV per heartbeat).
    pub fn build(&self) -> FirmwareFleet {
        let mut rng = rand::rng();
        let log = DisplayLog::default();
        let buttons = self
            .buttons
            .iter()
            .map(|id| self.button(SimButton::new(id, fresh_seq(&mut rng)), &mut rng))
            .collect();
        let readers = self
            .readers
            .iter()
            .map(|id| {
                let reader =
                    SimReader::new(id, fresh_seq(&mut rng), log.clone(), self.print_displays);
                self.reader(reader, &mut rng)
            })
            .collect();
        FirmwareFleet::new(buttons, readers, log)
    }

    /// [`FirmwareDevices::build`], but with `seq_dir` every device keeps its sequence numbers
    /// in `seq_dir/<device>.seq` (created as needed): it starts at its stored mark (a random
    /// number if it has none) and polls the firmware's `poll_persisted`, so a fleet built again
    /// from the same directory never reuses a number. None: exactly [`FirmwareDevices::build`].
    /// A file that exists but holds no mark is an error, never a fresh start.
    pub fn build_with_seq_dir(
        &self,
        seq_dir: Option<&Path>,
    ) -> Result<FirmwareFleet, SeqFileError> {
        let Some(dir) = seq_dir else {
            return Ok(self.build());
        };
        seq_file::create_seq_dir(dir)?;
        let mut rng = rand::rng();
        let allocator = |id: &str, rng: &mut rand::rngs::ThreadRng| {
            SeqAllocator::start(
                FileSeqStore::new(dir, id)?,
                fresh_seq(rng),
                DEFAULT_SEQ_BLOCK,
            )
        };
        let log = DisplayLog::default();
        let mut buttons = Vec::with_capacity(self.buttons.len());
        for id in &self.buttons {
            let button = SimButton::persisted(id, allocator(id, &mut rng)?);
            buttons.push(self.button(button, &mut rng));
        }
        let mut readers = Vec::with_capacity(self.readers.len());
        for id in &self.readers {
            let seqs = allocator(id, &mut rng)?;
            let reader = SimReader::persisted(id, seqs, log.clone(), self.print_displays);
            readers.push(self.reader(reader, &mut rng));
        }
        Ok(FirmwareFleet::new(buttons, readers, log))
    }

    /// Heartbeats spread over the first interval (at most 5 s), so the devices report in soon.
    fn first_heartbeat(&self, rng: &mut impl Rng) -> (u64, u64) {
        let every_ms = self.heartbeat_every.unwrap_or_default().as_millis() as u64;
        (every_ms, rng.random_range(0..every_ms.clamp(1, 5_000)))
    }

    fn button(&self, button: SimButton, rng: &mut impl Rng) -> SimButton {
        let (every_ms, first_ms) = self.first_heartbeat(rng);
        button
            .with_heartbeat(every_ms, first_ms)
            .with_battery(DrainingCoinCell {
                millivolts: rng.random_range(2_800..=3_000),
                drain_mv: 1,
            })
    }

    fn reader(&self, reader: SimReader, rng: &mut impl Rng) -> SimReader {
        let (every_ms, first_ms) = self.first_heartbeat(rng);
        reader
            .with_heartbeat(every_ms, first_ms)
            .with_counter_price(self.counter_price_fen)
    }
}

/// The first sequence number of a device with nothing stored.
fn fresh_seq(rng: &mut impl Rng) -> u32 {
    rng.random_range(1..1_000_000_000)
}

/// Ids of the registered devices of `kind` reached over `link`, in id order.
pub fn registered(loaded: &Loaded, kind: DeviceKind, link: Link) -> Vec<String> {
    loaded
        .devices
        .values()
        .filter(|d| d.kind == kind && d.link == link)
        .map(|d| d.id.clone())
        .collect()
}

/// The residents' card ids from the roster the config points to (`residents_csv`). Ids that are
/// not a card UID are logged and left out.
pub fn roster_cards(loaded: &Loaded) -> Vec<String> {
    let mut cards = Vec::new();
    for r in loaded.residents.values() {
        match r.card_id.as_deref().map(str::trim) {
            None | Some("") => {}
            Some(c) if card_uid(c).is_some() => cards.push(c.to_string()),
            Some(_) => {
                tracing::warn!(resident = %r.resident_id, "roster card id is not a hex UID of 4–10 bytes; not tapped")
            }
        }
    }
    cards
}

/// `eldergate sim`: firmware buttons and card readers on the host, over MQTT or a serial port.
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

/// Runs `eldergate sim` until `stop` (or `--duration`).
pub async fn run_cli(args: SimArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let link_kind = if args.serial.is_some() {
        Link::Serial
    } else {
        Link::Mqtt
    };
    let loaded = match &args.config {
        Some(path) => Some(crate::config::load(path)?),
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
        Some(path) => crate::sim_serial::open_serial_link(path, args.baud)
            .with_context(|| format!("cannot open serial port {path}"))?,
        None => {
            let addr = crate::mqtt::parse_broker_url(&args.broker).map_err(anyhow::Error::msg)?;
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
