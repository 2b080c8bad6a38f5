//! Device supervision: every device is expected to say something (a heartbeat, an event) at least
//! every `heartbeat_s`; after `missed_heartbeats` intervals of silence — or at once when its MQTT
//! last will says offline — it is reported offline; when it speaks again the offline alert is
//! resolved with the gap in the note. A battery below `low_battery_pct` raises one low-battery
//! alert (not one per heartbeat), resolved when it is back 5 points above.
//!
//! No flood: after the gateway starts, and after every reconnect of the telemetry connection,
//! every device gets `grace_s` to report in before any is declared offline.

use super::{Observation, Observe};
use crate::community::DeviceKind;
use crate::journal::Journal;
use crate::registry::Registry;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the supervisor hears.
#[derive(Debug, Clone)]
pub enum Seen {
    /// Any message from a device, with its battery if it reported one.
    Activity {
        /// Device id.
        device: String,
        /// Battery percent.
        battery_pct: Option<u8>,
    },
    /// The device's last will (or its own status message) says it went offline.
    Gone {
        /// Device id.
        device: String,
    },
    /// The telemetry connection (re)connected: give every device a fresh grace period.
    Reconnected,
}

struct DeviceState {
    last_seen: Timestamp,
    offline: bool,
    low_battery: bool,
}

/// Runs until `seen` closes. `offline` and `low` are the devices with those alerts open at start.
pub async fn run(
    registry: Arc<Registry>,
    journal: Journal,
    mut seen: mpsc::UnboundedReceiver<Seen>,
    offline: Vec<String>,
    low: Vec<String>,
) {
    let start = Timestamp::now();
    let grace = Duration::from_secs(registry.supervision.grace_s);
    let mut grace_until = start + grace;
    let mut devices: HashMap<String, DeviceState> = registry
        .devices
        .values()
        .filter(|d| d.kind != DeviceKind::CardReader || d.heartbeat_s > 0)
        .map(|d| {
            (
                d.id.clone(),
                DeviceState {
                    last_seen: start,
                    offline: offline.contains(&d.id),
                    low_battery: low.contains(&d.id),
                },
            )
        })
        .collect();
    let threshold = registry.supervision.low_battery_pct;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = seen.recv() => {
                let Some(msg) = msg else { break };
                let now = Timestamp::now();
                match msg {
                    Seen::Reconnected => {
                        grace_until = now + grace;
                        tracing::info!(grace_s = grace.as_secs(), "telemetry connection up; devices get a grace period before any is declared offline");
                    }
                    Seen::Gone { device } => {
                        if let Some(d) = devices.get_mut(&device) {
                            if !d.offline {
                                d.offline = true;
                                journal.tell(Observe(Observation::DeviceOffline { device, detail: "the device's MQTT last will says it went offline".into() })).await;
                            }
                        }
                    }
                    Seen::Activity { device, battery_pct } => {
                        let Some(d) = devices.get_mut(&device) else { continue };
                        if d.offline {
                            d.offline = false;
                            let gap = now.duration_since(d.last_seen).as_secs().max(0);
                            journal.tell(Observe(Observation::DeviceOnline { device: device.clone(), detail: format!("back online; silent for {gap} s") })).await;
                        }
                        d.last_seen = now;
                        if let Some(pct) = battery_pct {
                            if pct < threshold && !d.low_battery {
                                d.low_battery = true;
                                journal.tell(Observe(Observation::LowBattery { device, pct })).await;
                            } else if d.low_battery && pct >= threshold.saturating_add(5) {
                                d.low_battery = false;
                                journal.tell(Observe(Observation::BatteryOk { device, pct })).await;
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Timestamp::now();
                if now < grace_until {
                    continue;
                }
                for (id, d) in devices.iter_mut() {
                    let Some(cfg) = registry.devices.get(id) else { continue };
                    let limit = u64::from(cfg.heartbeat_s) * u64::from(registry.supervision.missed_heartbeats);
                    // Silence is counted from the later of the last message and the grace start.
                    let since = d.last_seen.max(grace_until - grace);
                    let silent = now.duration_since(since).as_secs().max(0) as u64;
                    if !d.offline && silent > limit {
                        d.offline = true;
                        metrics::counter!("eldergate_devices_offline_total").increment(1);
                        journal.tell(Observe(Observation::DeviceOffline { device: id.clone(), detail: format!("no message for {silent} s (heartbeat every {} s)", cfg.heartbeat_s) })).await;
                    }
                }
            }
        }
    }
}
