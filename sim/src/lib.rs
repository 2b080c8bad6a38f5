//! eldergate-sim: the tools around the gateway — simulated devices and staff speaking the real
//! protocols to a real gateway, the load generator, and the demo. None of this is in the
//! production binary `eldergate` (docs/adr/0006-tools-are-not-the-daemon.md); the binary
//! `eldergate-sim` runs the demo ([`demo`]) and the device simulator ([`cli`]).
//!
//! Which one to use for what:
//! - [`FirmwareFleet`] — **the device simulator.** Runs the firmware crate's own logic
//!   (`AlarmButton` with debounce, classification, outbox and backoff; heartbeats through its
//!   `BatterySensor` with a draining coin cell; the card-reader `Terminal` with a display that
//!   records what the senior reads) for many devices at once, at random ([`RandomSeniors`]) or by
//!   a script ([`ScriptedSeniors`], [`script`]), over a real serial port or pty
//!   ([`serial`]) or over MQTT ([`mqtt_link`]). Used by `eldergate-sim sim`, the demo, the
//!   simulator tests and the firmware rows of the benchmark.
//! - [`Fleet`] — a **load generator**: stand-in buttons that publish v1 alarm events as fast as
//!   asked and retransmit until acked, without the firmware. Only for rates the firmware
//!   simulator cannot produce (the benchmarks' durable-ingest and latency runs).
//! - [`StaffClient`] — a staff member's MQTT client (the demo's duty worker, tests, benchmarks).
//! - [`demo`] — the whole system on one machine: the gateway (with its embedded broker, cargo
//!   feature `embedded-broker` of crate `eldergate`) and the simulators around it.
//!
//! Sequence numbers: by default every run starts each device at a random number (a device
//! without storage, SPEC.md §5). With a sequence directory ([`FirmwareDevices::build_with_seq_dir`],
//! `eldergate-sim sim --seq-dir DIR`) each device keeps its high-water mark in `DIR/<device>.seq`
//! ([`FileSeqStore`]) through the firmware's own `SeqAllocator`, so a restarted simulator goes on
//! above every number it used before, as a device with flash does.
#![deny(missing_docs)]

pub mod cli;
pub mod demo;
mod device;
mod firmware_fleet;
mod fleet;
pub mod kiosk;
mod mqtt_client;
pub mod mqtt_link;
pub mod script;
mod senior;
mod seq_file;
pub mod serial;
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

use eldergate::config::{DeviceKind, Link, Loaded};
use eldergate_firmware::seq::{SeqAllocator, DEFAULT_SEQ_BLOCK};
use rand::Rng;
use std::path::Path;
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
