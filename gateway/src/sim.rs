//! Simulated alarm buttons and a simulated staff client, speaking the real v1 MQTT contract.
//!
//! Used by the demo, the end-to-end tests and the benchmarks. A simulated button behaves like the
//! firmware must: a new event takes the next sequence number; it is retransmitted with the *same*
//! sequence number until a `Down::Ack` for it arrives; acks for unknown sequence numbers are
//! ignored. (The no_std firmware and its host simulator come with the serial issue; this is the
//! MQTT-side stand-in.)

use anyhow::Context;
use eldergate_protocol::payload::{
    AlarmAction, AlarmMessage, Down, StaffAlert, StaffCommand, StaffCommandResult, StaffVerb,
};
use eldergate_protocol::topic;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

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
    /// Username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
}

struct Unacked {
    payload: Vec<u8>,
    first_sent: Instant,
    last_sent: Instant,
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
    state: Arc<Mutex<FleetState>>,
    acked_notify: Arc<Notify>,
}

fn mqtt_options(
    host: &str,
    port: u16,
    client_id: &str,
    credentials: &Option<(String, String)>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(10))
        .set_clean_session(true)
        .set_inflight(1000)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((u, p)) = credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    o
}

/// Polls an event loop forever (reconnecting with a short pause), subscribing to `filters` on
/// every connect and handing every incoming publish to `on_publish`. `ready` is notified after
/// the first SubAck.
fn drive(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    ready: Arc<Notify>,
    on_publish: impl Fn(&str, &[u8]) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    for f in &filters {
                        let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => ready.notify_waiters(),
                Ok(Event::Incoming(Incoming::Publish(p))) => on_publish(&p.topic, &p.payload),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
}

impl Fleet {
    /// Connects, subscribes to the downlink, and starts the retransmit timer.
    pub async fn start(opts: FleetOptions) -> anyhow::Result<Fleet> {
        let (client, eventloop) = crate::mqtt::new_client(
            mqtt_options(&opts.host, opts.port, &opts.client_id, &opts.credentials),
            100_000,
        );
        let state: Arc<Mutex<FleetState>> = Arc::default();
        let acked_notify = Arc::new(Notify::new());
        let ready = Arc::new(Notify::new());
        let ready_wait = ready.notified();
        let (st, an) = (state.clone(), acked_notify.clone());
        drive(
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
            state,
            acked_notify,
        };
        let f = fleet.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                f.retransmit_due(opts.retransmit_after).await;
            }
        });
        Ok(fleet)
    }

    async fn retransmit_due(&self, after: Duration) {
        let due: Vec<(String, Vec<u8>)> = match self.state.lock() {
            Ok(mut s) => {
                let mut due = Vec::new();
                for ((device, _), u) in s.unacked.iter_mut() {
                    if u.last_sent.elapsed() >= after {
                        u.last_sent = Instant::now();
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

/// What a staff client hears.
#[derive(Debug, Clone)]
pub enum StaffMessage {
    /// An alert change, with when it arrived.
    Alert(Box<StaffAlert>, Instant),
    /// The result of a staff command.
    Result(StaffCommandResult),
}

/// A simulated staff member's MQTT client: hears alerts, sends commands.
#[derive(Clone)]
pub struct StaffClient {
    client: AsyncClient,
    site: String,
    tx: broadcast::Sender<StaffMessage>,
}

impl StaffClient {
    /// Connects and subscribes to `staff/alerts` and `staff/results`.
    pub async fn start(
        host: &str,
        port: u16,
        site: &str,
        client_id: &str,
        credentials: Option<(String, String)>,
    ) -> anyhow::Result<StaffClient> {
        let (client, eventloop) =
            crate::mqtt::new_client(mqtt_options(host, port, client_id, &credentials), 10_000);
        let (tx, _) = broadcast::channel(100_000);
        let ready = Arc::new(Notify::new());
        let ready_wait = ready.notified();
        let t2 = tx.clone();
        let results = topic::staff_results(site);
        drive(
            eventloop,
            client.clone(),
            vec![topic::staff_alerts(site), topic::staff_results(site)],
            ready.clone(),
            move |t, payload| {
                if t == results {
                    if let Ok(r) = serde_json::from_slice(payload) {
                        let _ = t2.send(StaffMessage::Result(r));
                    }
                } else if let Ok(a) = serde_json::from_slice(payload) {
                    let _ = t2.send(StaffMessage::Alert(Box::new(a), Instant::now()));
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(30), ready_wait)
            .await
            .context("staff client could not subscribe within 30 s; is the broker up?")?;
        Ok(StaffClient {
            client,
            site: site.to_string(),
            tx,
        })
    }

    /// Everything heard from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StaffMessage> {
        self.tx.subscribe()
    }

    /// Sends a staff command.
    pub async fn command(
        &self,
        cmd: StaffVerb,
        alert_id: i64,
        by: &str,
        note: Option<&str>,
        request_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let c = StaffCommand {
            v: 1,
            cmd,
            alert_id,
            by: by.into(),
            note: note.map(Into::into),
            request_id: request_id.map(Into::into),
        };
        self.client
            .publish(
                topic::staff_cmd(&self.site),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&c)?,
            )
            .await?;
        Ok(())
    }
}

/// `eldergate sim`: simulated buttons pressing now and then.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Broker, `mqtt://host:port`.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// Site id.
    #[arg(long)]
    pub site: String,
    /// Device ids to simulate (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub devices: Vec<String>,
    /// Mean seconds between presses across the fleet.
    #[arg(long, default_value_t = 5.0)]
    pub press_every: f64,
    /// Broker username (password from ELDERGATE_SIM_PASSWORD).
    #[arg(long)]
    pub username: Option<String>,
    /// Instead of MQTT: run the buttons' firmware logic over this serial port (or pty), e.g.
    /// the other end of a dongle's line. Baud 115200.
    #[arg(long)]
    pub serial: Option<String>,
}

/// Runs `eldergate sim` until `stop`.
pub async fn run_cli(args: SimArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    if let Some(path) = &args.serial {
        return run_serial_cli(path, &args.devices, args.press_every, stop).await;
    }
    let addr = crate::mqtt::parse_broker_url(&args.broker).map_err(anyhow::Error::msg)?;
    let credentials = match args.username {
        Some(u) => Some((
            u,
            std::env::var("ELDERGATE_SIM_PASSWORD")
                .context("set ELDERGATE_SIM_PASSWORD for --username")?,
        )),
        None => None,
    };
    let fleet = Fleet::start(FleetOptions {
        host: addr.host,
        port: addr.port,
        site: args.site,
        client_id: format!("eldergate-sim-{}", std::process::id()),
        retransmit_after: Duration::from_secs(2),
        credentials,
    })
    .await?;
    let presses = press_randomly(fleet.clone(), args.devices, args.press_every);
    tokio::select! {
        _ = stop => {}
        _ = presses => {}
    }
    tracing::info!(
        acked = fleet.acked().len(),
        unacked = fleet.unacked_count(),
        retransmissions = fleet.retransmissions(),
        "simulator stopped"
    );
    Ok(())
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

/// `eldergate sim --serial PATH`: the firmware logic of each button on the host, pressed at random
/// (mean gap `mean_s` across the fleet), over a real serial port.
async fn run_serial_cli(
    path: &str,
    devices: &[String],
    mean_s: f64,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use crate::sim_serial::{run_on_port, SimButton};
    use rand::Rng;
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(path, 115_200))
        .with_context(|| format!("cannot open serial port {path}"))?;
    let buttons: Vec<SimButton> = devices
        .iter()
        .map(|d| SimButton::new(d, rand::rng().random_range(1..1_000_000)))
        .collect();
    // Each tick (10 ms) a button is pressed with probability 10 ms / mean gap, for 150 ms.
    let mut held: Vec<Option<Duration>> = vec![None; buttons.len()];
    let p = (0.01 / mean_s.max(0.05)).min(1.0);
    let press = move |bs: &[SimButton], now: Duration| {
        let mut rng = rand::rng();
        for (i, b) in bs.iter().enumerate() {
            match held[i] {
                Some(until) if now >= until => {
                    b.pin.set_pressed(false);
                    held[i] = None;
                }
                None if rng.random_bool(p / bs.len().max(1) as f64) => {
                    b.pin.set_pressed(true);
                    held[i] = Some(now + Duration::from_millis(150));
                    tracing::info!(device = %b.id, "simulated press (serial)");
                }
                _ => {}
            }
        }
    };
    let buttons = run_on_port(port, buttons, press, stop).await;
    for b in &buttons {
        tracing::info!(device = %b.id, next_seq = b.firmware.outbox.next_seq(), idle = b.firmware.outbox.is_idle(), "simulated serial button stopped");
    }
    Ok(())
}
