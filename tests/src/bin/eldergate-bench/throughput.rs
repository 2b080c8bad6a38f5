//! Throughput measures shared by `eldergate-bench` (b) and `eldergate-scale ingest`: the raw
//! relay, the echo round trip (the gateway's topology without the gateway) and durable ingest
//! through a gateway. `tag` makes the MQTT client ids of one call unique, so a second call in
//! the same process does not take over the first one's session.

use eldergate_e2e::{button, fleet_options};
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bench client: 30 s keep-alive, 1000 in flight, Nagle off, every packet flushed on its own.
pub fn client(port: u16, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    batched_client(port, id, 0)
}

/// [`client`] that writes up to `batch` queued packets before one flush (patched rumqttc,
/// third_party/README.md); 0 or 1 = a flush per packet.
pub fn batched_client(port: u16, id: &str, batch: usize) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_request_batch(batch);
    eldergate::mqtt::new_client(o, 100_000)
}

/// Aborts the spawned client tasks of one measure when dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Raw relay throughput: `n` QoS 1 messages as fast as one publisher can, until the subscriber has
/// them all. Messages per second.
pub async fn relay_rate(port: u16, n: usize) -> anyhow::Result<f64> {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (sub, mut sub_el) = client(port, "bench-rate-sub");
    let ready = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(tokio::sync::Notify::new());
    let (c2, r2, d2) = (count.clone(), ready.clone(), done.clone());
    let mut tasks = Tasks(Vec::new());
    tasks.0.push(tokio::spawn(async move {
        loop {
            match sub_el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = sub.try_subscribe("bench/rate/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => r2.notify_one(),
                Ok(Event::Incoming(Incoming::Publish(_))) => {
                    if c2.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        d2.notify_one();
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }));
    ready.notified().await;
    let (publ, mut pub_el) = client(port, "bench-rate-pub");
    tasks.0.push(tokio::spawn(async move {
        loop {
            if pub_el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }));
    let start = Instant::now();
    let body = br#"{"v":1,"seq":123456,"action":"press","ts":1763900000000}"#.to_vec();
    for i in 0..n {
        publ.publish(
            format!("bench/rate/btn-{:04}", i % 2000),
            QoS::AtLeastOnce,
            false,
            body.clone(),
        )
        .await?;
    }
    tokio::time::timeout(Duration::from_secs(120), done.notified()).await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The gateway's topology without the gateway: a "device" publishes QoS 1, an echo client
/// subscribed to it publishes a QoS 0 ack back, the device counts acks. Messages per second.
/// `echo_batch`: the echo client's packets per flush (0 = one flush each, as rumqttc does
/// unpatched); the device side is always unbatched, like the load generator.
pub async fn echo_rate(port: u16, n: usize, tag: &str, echo_batch: usize) -> anyhow::Result<f64> {
    Ok(echo(port, n, tag, echo_batch, None).await?.0)
}

/// [`echo_rate`]'s round trip paced at `rate` messages per second, each to its own topic: the
/// device → echo → device latency of each message (sorted). The baseline of a request answered
/// by the gateway (e.g. a kiosk reading and its answer).
#[allow(dead_code)] // eldergate-bench only, not eldergate-scale
pub async fn echo_latency(
    port: u16,
    n: usize,
    rate: u64,
    tag: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut v = echo(port, n, tag, 0, Some(rate)).await?.1;
    v.sort();
    Ok(v)
}

/// The echo: unpaced (`pace` None: as fast as the device publishes, 2000 device ids) or paced
/// (a unique id per message, its round trip timed). Messages per second and the latencies.
async fn echo(
    port: u16,
    n: usize,
    tag: &str,
    echo_batch: usize,
    pace: Option<u64>,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    if n == 0 {
        return Ok((0.0, Vec::new()));
    }
    let (echo, mut echo_el) = batched_client(port, &format!("bench-echo{tag}"), echo_batch);
    let ready = Arc::new(tokio::sync::Notify::new());
    let r2 = ready.clone();
    let req = format!("bench/echo{tag}/req/+");
    let ack = format!("bench/echo{tag}/ack");
    let ack2 = ack.clone();
    let mut tasks = Tasks(Vec::new());
    tasks.0.push(tokio::spawn(async move {
        loop {
            match echo_el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = echo.try_subscribe(req.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => r2.notify_one(),
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let dev = p.topic.rsplit('/').next().unwrap_or("x").to_string();
                    let _ = echo
                        .publish(
                            format!("{ack2}/{dev}"),
                            QoS::AtMostOnce,
                            false,
                            br#"{"type":"ack","v":1,"seq":1}"#.to_vec(),
                        )
                        .await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }));
    ready.notified().await;
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (dev, mut dev_el) = client(port, &format!("bench-echo-device{tag}"));
    let sub_ready = Arc::new(tokio::sync::Notify::new());
    let (c2, d2, s2, dev2) = (count.clone(), done.clone(), sub_ready.clone(), dev.clone());
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (sent2, lat2) = (sent.clone(), lat.clone());
    let ack_filter = format!("{ack}/+");
    tasks.0.push(tokio::spawn(async move {
        loop {
            match dev_el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = dev2.try_subscribe(ack_filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => s2.notify_one(),
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if pace.is_some() {
                        let at = Instant::now();
                        let id = p.topic.rsplit('/').next().unwrap_or("");
                        if let Some(t) = sent2.lock().ok().and_then(|mut m| m.remove(id)) {
                            if let Ok(mut l) = lat2.lock() {
                                l.push(at.duration_since(t));
                            }
                        }
                    }
                    if c2.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        d2.notify_one();
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }));
    sub_ready.notified().await;
    let body = br#"{"v":1,"seq":123456,"action":"checkin","ts":1763900000000}"#.to_vec();
    let start = Instant::now();
    let mut tick = pace.map(|r| {
        let mut t = tokio::time::interval(Duration::from_micros(1_000_000 / r.max(1)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    for i in 0..n {
        let dev_id = match tick.as_mut() {
            Some(t) => {
                t.tick().await;
                let id = format!("m{i}");
                if let Ok(mut m) = sent.lock() {
                    m.insert(id.clone(), Instant::now());
                }
                id
            }
            None => format!("btn-{:04}", i % 2000),
        };
        dev.publish(
            format!("bench/echo{tag}/req/{dev_id}"),
            QoS::AtLeastOnce,
            false,
            body.clone(),
        )
        .await?;
    }
    tokio::time::timeout(Duration::from_secs(120), done.notified()).await?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let lat = lat.lock().map(|l| l.clone()).unwrap_or_default();
    Ok((rate, lat))
}

/// The gateway's measure with the gateway replaced by a responder that keeps nothing: the same
/// load generator ([`Fleet`], the same retransmission back-off), the same topics, and the answer
/// the contract asks of the gateway (`protocol/MQTT.md`: a `Down::Ack` with the event's `seq` on
/// `down/{device}`, QoS 1) — parsed and answered at once, no journal, no fsync, no dedupe. The
/// echo of [`echo_rate`] differs from the gateway's path in two things that are not the
/// gateway's work (it answers with QoS 0, and its device is one bare client, not the fleet);
/// this one differs only in what the gateway does with an event. `write_batch` as the gateway's
/// `broker.write_batch`. Messages per second and the fleet's retransmissions.
#[allow(dead_code)] // eldergate-scale only, not eldergate-bench
pub async fn fleet_echo_run(
    port: u16,
    n: usize,
    devices: usize,
    write_batch: usize,
    tag: &str,
) -> anyhow::Result<(f64, u64)> {
    use eldergate_protocol::payload::{AlarmMessage, Down};
    use eldergate_protocol::topic::{self, UpTopic};
    let site = eldergate_e2e::SITE;
    let (echo, mut echo_el) = batched_client(port, &format!("bench-fleet-echo{tag}"), write_batch);
    let ready = Arc::new(tokio::sync::Notify::new());
    let r2 = ready.clone();
    let filter = topic::alarm_filter(site);
    let mut tasks = Tasks(Vec::new());
    tasks.0.push(tokio::spawn(async move {
        loop {
            match echo_el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = echo.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => r2.notify_one(),
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let Ok(UpTopic::Alarm { device, .. }) = topic::parse_up(&p.topic) else {
                        continue;
                    };
                    let Ok(m) = serde_json::from_slice::<AlarmMessage>(&p.payload) else {
                        continue;
                    };
                    let ack = Down::Ack { v: 1, seq: m.seq };
                    let Ok(body) = serde_json::to_vec(&ack) else {
                        continue;
                    };
                    let _ = echo
                        .publish(topic::down(site, device), QoS::AtLeastOnce, false, body)
                        .await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }));
    ready.notified().await;
    let r = gateway_run(port, n, devices, tag).await;
    drop(tasks);
    r
}

/// Durable ingest: `n` presses over `devices` devices as fast as the fleet sends, until all are
/// acked (each ack follows a committed, fsynced transaction). Presses per second.
#[allow(dead_code)] // eldergate-bench only, not eldergate-scale
pub async fn gateway_rate(port: u16, n: usize, devices: usize, tag: &str) -> anyhow::Result<f64> {
    Ok(gateway_run(port, n, devices, tag).await?.0)
}

/// [`gateway_rate`] and the fleet's retransmissions. The fleet resends an unacked event after
/// 1 s, 2 s, 4 s … as the firmware does (`eldergate_firmware::link`), not every second: a burst
/// of `n` takes seconds to drain, and a resend every second turned its tail into more work than
/// the burst itself (2026-12-01: 57,816–96,947 resends for 60,000 presses).
pub async fn gateway_run(
    port: u16,
    n: usize,
    devices: usize,
    tag: &str,
) -> anyhow::Result<(f64, u64)> {
    let mut opts = fleet_options(port, &format!("bench-rate-fleet{tag}"));
    opts.retransmit_max = Duration::from_secs(30);
    let fleet = Fleet::start(opts).await?;
    let start = Instant::now();
    for i in 0..n {
        fleet
            .send(&button(1 + i % devices), AlarmAction::Checkin)
            .await;
    }
    anyhow::ensure!(
        fleet.wait_all_acked(Duration::from_secs(300)).await,
        "not all presses acked"
    );
    let rate = n as f64 / start.elapsed().as_secs_f64();
    fleet.close();
    Ok((rate, fleet.retransmissions()))
}
