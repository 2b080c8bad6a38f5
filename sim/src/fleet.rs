//! The MQTT load generator: many stand-in buttons on one connection, publishing v1 alarm events
//! as fast as asked and retransmitting each (same `seq`) until its `Down::Ack` arrives.
//!
//! It does **not** run the firmware: it is for load the firmware simulator cannot produce
//! (tens of thousands of presses per second in the benchmarks, `gateway_rate`). For behaviour
//! — debounce, classification, the firmware's backoff, heartbeats, card readers — use
//! [`super::FirmwareFleet`].

use super::mqtt_client::{drive, mqtt_options};
use anyhow::Context;
use eldergate_protocol::payload::{AlarmAction, AlarmMessage, Down};
use eldergate_protocol::topic;
use rumqttc::{AsyncClient, QoS};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Where and how the simulated devices connect.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Site id.
    pub site: String,
    /// MQTT client id of the fleet connection.
    pub client_id: String,
    /// Retransmit an unacked event after this long.
    pub retransmit_after: Duration,
    /// Longest pause between two sends of one unacked event: each retransmission doubles the
    /// pause from `retransmit_after` up to this, as the firmware's outbox does (1 s doubling to
    /// 30 s). Equal to `retransmit_after`: a resend every `retransmit_after` (a storm).
    pub retransmit_max: Duration,
    /// Username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
}

struct Unacked {
    payload: Vec<u8>,
    first_sent: Instant,
    last_sent: Instant,
    /// Pause before the next resend.
    wait: Duration,
}

#[derive(Default)]
struct FleetState {
    next_seq: HashMap<String, u32>,
    unacked: HashMap<(String, u32), Unacked>,
    acked: HashSet<(String, u32)>,
    ack_latencies: Vec<Duration>,
    retransmissions: u64,
}

/// Many simulated buttons sharing one MQTT connection.
#[derive(Clone)]
pub struct Fleet {
    client: AsyncClient,
    site: String,
    retransmit_after: Duration,
    state: Arc<Mutex<FleetState>>,
    acked_notify: Arc<Notify>,
    /// The connection's and the retransmit timer's tasks (see [`Fleet::close`]).
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Fleet {
    /// Connects, subscribes to the downlink, and starts the retransmit timer.
    pub async fn start(opts: FleetOptions) -> anyhow::Result<Fleet> {
        let (client, eventloop) = eldergate::mqtt::new_client(
            mqtt_options(&opts.host, opts.port, &opts.client_id, &opts.credentials),
            100_000,
        );
        let state: Arc<Mutex<FleetState>> = Arc::default();
        let acked_notify = Arc::new(Notify::new());
        let ready = Arc::new(Notify::new());
        let ready_wait = ready.notified();
        let (st, an) = (state.clone(), acked_notify.clone());
        let connection = drive(
            eventloop,
            client.clone(),
            vec![topic::down_filter(&opts.site)],
            ready.clone(),
            move |t, payload| {
                let Some(device) = t.rsplit('/').next() else {
                    return;
                };
                if let Ok(Down::Ack { seq, .. }) = serde_json::from_slice::<Down>(payload) {
                    if let Ok(mut s) = st.lock() {
                        if let Some(u) = s.unacked.remove(&(device.to_string(), seq)) {
                            s.ack_latencies.push(u.first_sent.elapsed());
                            s.acked.insert((device.to_string(), seq));
                        }
                    }
                    an.notify_waiters();
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(30), ready_wait)
            .await
            .context("simulated devices could not subscribe to their downlink within 30 s; is the broker up?")?;
        let fleet = Fleet {
            client,
            site: opts.site,
            retransmit_after: opts.retransmit_after,
            state,
            acked_notify,
            tasks: Arc::default(),
        };
        let f = fleet.clone();
        let timer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                f.retransmit_due(opts.retransmit_max).await;
            }
        });
        if let Ok(mut t) = fleet.tasks.lock() {
            t.extend([connection, timer]);
        }
        Ok(fleet)
    }

    async fn retransmit_due(&self, max: Duration) {
        let due: Vec<(String, Vec<u8>)> = match self.state.lock() {
            Ok(mut s) => {
                let mut due = Vec::new();
                for ((device, _), u) in s.unacked.iter_mut() {
                    if u.last_sent.elapsed() >= u.wait {
                        u.last_sent = Instant::now();
                        u.wait = (u.wait * 2).min(max.max(u.wait));
                        due.push((device.clone(), u.payload.clone()));
                    }
                }
                s.retransmissions += due.len() as u64;
                due
            }
            Err(_) => return,
        };
        for (device, payload) in due {
            let _ = self
                .client
                .publish(
                    topic::alarm(&self.site, &device),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await;
        }
    }

    /// Continues a device's numbering after `last`, as a button does that kept its sequence number
    /// across a reboot (its next event is `last + 1`). Without it a fleet starts every device at 1,
    /// which a gateway that already holds those numbers takes as retransmissions.
    pub fn continue_after(&self, device: &str, last: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.next_seq.insert(device.to_string(), last);
        }
    }

    /// A button event: takes the device's next sequence number and sends it (retransmitted until
    /// acked). Returns the sequence number.
    pub async fn send(&self, device: &str, action: AlarmAction) -> u32 {
        let now = Instant::now();
        let (seq, payload) = {
            let Ok(mut s) = self.state.lock() else {
                return 0;
            };
            let seq = {
                let n = s.next_seq.entry(device.to_string()).or_insert(0);
                *n += 1;
                *n
            };
            let msg = AlarmMessage {
                v: 1,
                seq,
                action,
                ts: Some(jiff::Timestamp::now().as_millisecond()),
            };
            let payload = serde_json::to_vec(&msg).unwrap_or_default();
            s.unacked.insert(
                (device.to_string(), seq),
                Unacked {
                    payload: payload.clone(),
                    first_sent: now,
                    last_sent: now,
                    wait: self.retransmit_after,
                },
            );
            (seq, payload)
        };
        let _ = self
            .client
            .publish(
                topic::alarm(&self.site, device),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await;
        seq
    }

    /// Closes the connection and stops retransmitting (every clone of this fleet). Without it
    /// the connection lives as long as the runtime and stays subscribed to every downlink: a
    /// later measure on the same broker pays for a second delivery of each of its acks.
    pub fn close(&self) {
        if let Ok(mut t) = self.tasks.lock() {
            for task in t.drain(..) {
                task.abort();
            }
        }
    }

    /// Every (device, seq) the gateway has acknowledged.
    pub fn acked(&self) -> HashSet<(String, u32)> {
        self.state
            .lock()
            .map(|s| s.acked.clone())
            .unwrap_or_default()
    }

    /// How many events still wait for an ack.
    pub fn unacked_count(&self) -> usize {
        self.state.lock().map(|s| s.unacked.len()).unwrap_or(0)
    }

    /// How many retransmissions so far.
    pub fn retransmissions(&self) -> u64 {
        self.state.lock().map(|s| s.retransmissions).unwrap_or(0)
    }

    /// Takes the press → ack latencies recorded so far.
    pub fn take_ack_latencies(&self) -> Vec<Duration> {
        self.state
            .lock()
            .map(|mut s| std::mem::take(&mut s.ack_latencies))
            .unwrap_or_default()
    }

    /// Waits until nothing is unacked, or `timeout`. True when all are acked.
    pub async fn wait_all_acked(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.acked_notify.notified();
            if self.unacked_count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            })
            .await
            .is_err()
            {
                return self.unacked_count() == 0;
            }
        }
    }
}

/// Presses a random device every ~`mean_s` seconds (exponential gaps), forever.
pub async fn press_randomly(fleet: Fleet, devices: Vec<String>, mean_s: f64) {
    use rand::Rng;
    if devices.is_empty() {
        return std::future::pending().await;
    }
    loop {
        let (gap, idx, roll) = {
            let mut rng = rand::rng();
            let u: f64 = rng.random_range(0.001..1.0);
            (
                -u.ln() * mean_s.max(0.05),
                rng.random_range(0..devices.len()),
                rng.random_range(0..10u8),
            )
        };
        tokio::time::sleep(Duration::from_secs_f64(gap.min(60.0))).await;
        let device = &devices[idx];
        // Mostly SOS presses; now and then a check-in or a cancel, as real seniors do.
        let action = match roll {
            0 => AlarmAction::Checkin,
            1 => AlarmAction::Cancel,
            _ => AlarmAction::Press,
        };
        let seq = fleet.send(device, action).await;
        tracing::info!(device = %device, seq, ?action, "simulated button event");
    }
}
