//! (f) and (g): the alarm and canteen paths through the firmware simulator — the firmware's own
//! button and terminal logic on the host, over the MQTT adapter — each beside a same-run baseline
//! (the stand-in load generator for presses, the raw tap → answer of (e) for taps).

use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::script::{Gesture, ScriptStep};
use eldergate_sim::{FirmwareDevices, FirmwareFleet, Fleet, ScriptedSeniors, SimStats};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Card readers of the firmware terminals in (g).
pub const FIRMWARE_READERS: usize = 10;

/// Runs a firmware fleet over MQTT acting out `steps`, until `done` says so (or 120 s).
async fn run_firmware(
    port: u16,
    fleet: FirmwareFleet,
    steps: Vec<ScriptStep>,
    done: impl Fn(&SimStats) -> bool,
) -> anyhow::Result<Arc<SimStats>> {
    let stats = fleet.stats();
    let link = firmware_mqtt_link(port, "bench-firmware").await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let seniors = ScriptedSeniors::new(steps, &[]);
    let task = tokio::spawn(eldergate_sim::run(fleet, link, seniors, async move {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&stats) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    task.await?;
    Ok(stats)
}

fn step(i: usize, rate: u64, device: String, gesture: Gesture) -> ScriptStep {
    ScriptStep {
        at: Duration::from_millis(500) + Duration::from_secs_f64(i as f64 / rate.max(1) as f64),
        device,
        gesture,
        line: i + 1,
    }
}

/// (f) Firmware buttons over MQTT, one press each on `first..first+n`, paced at `rate`/s: SOS
/// frame's first send → ACK in the firmware. Baseline: the stand-in `Fleet` on the `n` buttons
/// before them, same pace (both on buttons nothing else used, so no press is a duplicate).
pub async fn firmware_press_latency(
    port: u16,
    first: usize,
    n: usize,
    rate: u64,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let fleet = Fleet::start(fleet_options(port, "bench-standin")).await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for i in first..first + n {
        tick.tick().await;
        fleet.send(&button(i), AlarmAction::Press).await;
    }
    fleet.wait_all_acked(Duration::from_secs(60)).await;
    let mut baseline = fleet.take_ack_latencies();
    baseline.sort();
    let ids: Vec<String> = (first + n..first + 2 * n).map(button).collect();
    let steps = ids
        .iter()
        .enumerate()
        .map(|(i, d)| step(i, rate, d.clone(), Gesture::Press))
        .collect();
    let devices = FirmwareDevices {
        buttons: ids,
        readers: vec![],
        heartbeat_every: None,
        print_displays: false,
        counter_price_fen: None,
    }
    .build();
    let stats = run_firmware(port, devices, steps, |s| s.acked().len() >= n).await?;
    let mut fw: Vec<Duration> = stats.acked().iter().map(|a| a.latency).collect();
    fw.sort();
    Ok((fw, baseline))
}

/// (g) Firmware card-reader terminals over MQTT: `taps` taps at `rate`/s spread over
/// [`FIRMWARE_READERS`] readers and the cards of residents 1..=`residents` (topped up by (e)):
/// CARD_TAP send → DISPLAY reaching the terminal.
pub async fn firmware_tap_latency(
    port: u16,
    taps: usize,
    rate: u64,
    residents: usize,
) -> anyhow::Result<Vec<Duration>> {
    let readers: Vec<String> = (1..=FIRMWARE_READERS)
        .map(|i| format!("rdr-b{i:02}"))
        .collect();
    let steps = (0..taps)
        .map(|i| {
            let uid = (0xCA00_0001u32 + (i % residents) as u32)
                .to_be_bytes()
                .to_vec();
            let gesture = Gesture::Tap(Some(uid));
            step(i, rate, readers[i % readers.len()].clone(), gesture)
        })
        .collect();
    let devices = FirmwareDevices {
        buttons: vec![],
        readers,
        heartbeat_every: None,
        print_displays: false,
        counter_price_fen: None,
    }
    .build();
    let stats = run_firmware(port, devices, steps, |s| s.answer_latencies().len() >= taps).await?;
    let mut lat = stats.answer_latencies();
    lat.sort();
    Ok(lat)
}
