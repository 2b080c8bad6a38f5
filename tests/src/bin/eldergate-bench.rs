//! Benchmarks of the alarm path (not a test: it measures, it does not assert).
//!
//! Starts its own Mosquitto, PostgreSQL database and `eldergate` (from the same target dir, so run
//! it in release: `tests/bench`), then measures, each beside a baseline taken in the same run:
//!
//! (a) press → staff notification latency under 5,000 msg/s of background heartbeats, against a
//!     raw QoS 1 pub→sub relay through the same Mosquitto under the same load, plus one fsync;
//! (b) durable ingest throughput (presses acked per second), against the raw relay rate;
//! (c) forwarding throughput (events per second into central PostgreSQL after an outage),
//!     against `psql \copy` of the same rows;
//! (d) serial capacity, (e) card tap → reader answer;
//! (f, g) the same paths through the firmware simulator (the firmware's own button and terminal
//!     logic over MQTT), against the stand-in load generator and (e);
//! (h) health kiosks: reading → kiosk answer, and a dangerous reading → staff alert, against the
//!     echo round trip of (b) paced at the same rate (`--only health` runs (h) alone).

use clap::Parser;
use eldergate_e2e::proxy::Proxy;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_protocol::topic;
use eldergate_sim::{Fleet, StaffClient, StaffMessage};
use rumqttc::{Event, Incoming, QoS};
use sqlx::Row;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "eldergate-bench/firmware.rs"]
mod firmware;
#[path = "eldergate-bench/health.rs"]
mod health;
#[path = "eldergate-bench/throughput.rs"]
mod throughput;
use firmware::{firmware_press_latency, firmware_tap_latency, FIRMWARE_READERS};
use throughput::{client, echo_latency, echo_rate, gateway_rate, relay_rate};

#[derive(Parser)]
struct Args {
    /// Presses measured for latency (one per fresh device).
    #[arg(long, default_value_t = 2000)]
    latency_presses: usize,
    /// Presses per second while measuring latency.
    #[arg(long, default_value_t = 200)]
    latency_rate: u64,
    /// Background heartbeats per second.
    #[arg(long, default_value_t = 5000)]
    heartbeat_rate: u64,
    /// Presses for the throughput run.
    #[arg(long, default_value_t = 30_000)]
    throughput_presses: usize,
    /// Presses of firmware buttons (one per button) for (f), and of stand-in buttons for its
    /// baseline, at 50/s.
    #[arg(long, default_value_t = 500)]
    firmware_presses: usize,
    /// Run one row only: `health` (h, with its own baseline) instead of the whole bench.
    #[arg(long, value_parser = ["health"])]
    only: Option<String>,
    /// (h) Kiosk readings measured.
    #[arg(long, default_value_t = 2000)]
    health_readings: usize,
    /// (h) Readings per second in total.
    #[arg(long, default_value_t = 200)]
    health_rate: u64,
    /// (h) Health kiosks sharing the load.
    #[arg(long, default_value_t = 8)]
    health_kiosks: usize,
    /// (h) Readings per visit (one card tap, then this many readings of one resident).
    #[arg(long, default_value_t = 4)]
    health_per_visit: usize,
    /// (h) Every Nth visit starts with a grade-3 blood pressure (186/112) that alerts staff.
    #[arg(long, default_value_t = 10)]
    health_danger_every: usize,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// fsync cost on the data dir's file system: 4 KiB write + fdatasync, 300 times.
fn fsync_cost(dir: &std::path::Path) -> anyhow::Result<(Duration, Duration)> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![7u8; 4096];
    let mut t = Vec::new();
    for _ in 0..300 {
        let s = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        t.push(s.elapsed());
    }
    let _ = std::fs::remove_file(path);
    t.sort();
    Ok((pct(&t, 0.5), pct(&t, 0.99)))
}

/// Publishes QoS 0 heartbeats for `devices` at `rate` per second until `stop`.
fn background_heartbeats(port: u16, devices: Vec<String>, rate: u64, stop: Arc<AtomicBool>) {
    let (c, mut el) = client(port, "bench-heartbeats");
    let stop2 = stop.clone();
    tokio::spawn(async move {
        while !stop2.load(Ordering::Relaxed) {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    tokio::spawn(async move {
        let per_tick = (rate / 100).max(1) as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let body = br#"{"v":1,"battery_mv":2950,"battery_pct":80}"#.to_vec();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..per_tick {
                let d = &devices[i % devices.len()];
                i += 1;
                let _ = c.try_publish(
                    topic::telemetry(SITE, d, "heartbeat"),
                    QoS::AtMostOnce,
                    false,
                    body.clone(),
                );
            }
        }
    });
}

/// Raw relay latency: QoS 1 publish → subscriber receive through the broker, paced like the presses.
async fn relay_latency(port: u16, n: usize, rate: u64) -> anyhow::Result<Vec<Duration>> {
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let got: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (sub, mut sub_el) = client(port, "bench-relay-sub");
    let ready = Arc::new(tokio::sync::Notify::new());
    let (s2, g2, r2) = (sent.clone(), got.clone(), ready.clone());
    tokio::spawn(async move {
        loop {
            match sub_el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = sub.try_subscribe("bench/relay", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => r2.notify_one(),
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let id = u64::from_le_bytes(p.payload[..8].try_into().unwrap_or([0; 8]));
                    if let Some(t) = s2.lock().ok().and_then(|mut m| m.remove(&id)) {
                        if let Ok(mut g) = g2.lock() {
                            g.push(t.elapsed());
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    ready.notified().await;
    let (publ, mut pub_el) = client(port, "bench-relay-pub");
    tokio::spawn(async move {
        loop {
            if pub_el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let gap = Duration::from_micros(1_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(gap);
    for id in 0..n as u64 {
        tick.tick().await;
        let mut body = id.to_le_bytes().to_vec();
        body.extend_from_slice(&[b'x'; 40]);
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, Instant::now());
        publ.publish("bench/relay", QoS::AtLeastOnce, false, body)
            .await?;
    }
    for _ in 0..100 {
        if got.lock().map(|g| g.len() >= n).unwrap_or(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut v = got.lock().map(|g| g.clone()).unwrap_or_default();
    v.sort();
    Ok(v)
}

/// Press → staff "raised" notification latency, one press per fresh device.
async fn gateway_latency(port: u16, presses: usize, rate: u64) -> anyhow::Result<Vec<Duration>> {
    let staff = StaffClient::start("127.0.0.1", port, SITE, "bench-staff", None).await?;
    let mut heard = staff.subscribe();
    let fleet = Fleet::start(fleet_options(port, "bench-fleet")).await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (s2, l2) = (sent.clone(), lat.clone());
    let collector = tokio::spawn(async move {
        while let Ok(m) = heard.recv().await {
            if let StaffMessage::Alert(a, at) = m {
                if a.change == "raised" {
                    if let Some(t) = s2.lock().ok().and_then(|mut m| m.remove(&a.device_id)) {
                        if let Ok(mut l) = l2.lock() {
                            l.push(at.duration_since(t));
                        }
                    }
                }
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for i in 1..=presses {
        tick.tick().await;
        let d = button(i);
        if let Ok(mut m) = sent.lock() {
            m.insert(d.clone(), Instant::now());
        }
        fleet.send(&d, AlarmAction::Press).await;
    }
    fleet.wait_all_acked(Duration::from_secs(60)).await;
    for _ in 0..100 {
        if lat.lock().map(|l| l.len() >= presses).unwrap_or(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collector.abort();
    // Unsubscribed before (b) on the same broker, which would otherwise deliver each of (b)'s
    // acks to this fleet too.
    fleet.close();
    let mut v = lat.lock().map(|l| l.clone()).unwrap_or_default();
    v.sort();
    Ok(v)
}

/// `psql \copy` of the central store's rows into a fresh table: rows per second.
fn copy_rate(db: &TestDb, dir: &std::path::Path) -> anyhow::Result<(usize, f64)> {
    let file = dir.join("events.csv");
    let run = |sql: &str| -> anyhow::Result<()> {
        let out = std::process::Command::new("psql")
            .arg(&db.url)
            .args(["-qAt", "-c", sql])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&format!(
        "\\copy (SELECT * FROM events) TO '{}' CSV",
        file.display()
    ))?;
    run("CREATE TABLE events_copy (LIKE events INCLUDING ALL)")?;
    let rows = std::fs::read_to_string(&file)?.lines().count();
    let start = Instant::now();
    run(&format!("\\copy events_copy FROM '{}' CSV", file.display()))?;
    Ok((rows, rows as f64 / start.elapsed().as_secs_f64()))
}

/// (d) Serial: alarm frames through a real pty into the gateway, acked after commit. A pty has
/// no baud rate, so this is the gateway's serial capacity; it is compared with the line-rate
/// ceiling of 115200 baud 8N1 (11,520 bytes/s) for the same frames.
/// Buttons registered on the serial link (the gateway takes a device only over its own link).
const SERIAL_BUTTONS: usize = 50;

fn serial_button(i: usize) -> String {
    format!("sbtn-{:03}", i % SERIAL_BUTTONS)
}

async fn serial_rate(
    link: &std::path::Path,
    n: usize,
    devices: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    use eldergate_protocol::serial::{decode, encode, Body, Frame, FrameReader, Push, MAX_WIRE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut master = plug_pty(link)?;
    let mut wire = Vec::new();
    let mut frame_len = 0;
    for i in 0..n {
        let mut out = [0u8; MAX_WIRE];
        let device = serial_button(i % devices);
        let seq = 1_000_000 + (i / devices) as u32;
        let len = encode(
            &Frame {
                device: &device,
                seq,
                body: Body::Alarm { action: 3 },
            },
            &mut out,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        frame_len = len;
        wire.extend_from_slice(&out[..len]);
    }
    // Wait for the gateway to open the port (it retries every ≤ 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(master);
    let writer = tokio::spawn(async move {
        for chunk in wire.chunks(4096) {
            if wr.write_all(chunk).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut reader = FrameReader::new();
    let mut acks = 0usize;
    let mut buf = [0u8; 4096];
    while acks < n {
        let got = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf)).await??;
        for &b in &buf[..got] {
            if let Push::Frame(w) = reader.push(b) {
                if let Ok(Frame {
                    body: Body::Ack, ..
                }) = decode(w)
                {
                    acks += 1;
                }
            }
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let wr = writer.await?;
    master = rd.unsplit(wr);
    drop(master);
    Ok((rate, 11_520.0 / frame_len as f64, frame_len))
}

/// (e) Canteen: card tap → reader answer (published after the settlement commits), paced at
/// `rate` taps/s over `residents` residents with ample balance.
async fn tap_latency(
    port: u16,
    gw: &Gateway,
    taps: usize,
    rate: u64,
    residents: usize,
) -> anyhow::Result<Vec<Duration>> {
    let http = gw.api();
    for i in 1..=residents {
        http.post(gw.url(&format!("/api/residents/R{i:05}/topup")))
            .json(&serde_json::json!({"amount_fen": 100_000_000, "by": "S009"}))
            .send()
            .await?;
    }
    let down = format!("eldergate/v1/{SITE}/down/rdr-01");
    let (_c, mut answers, ok) = connect_as(port, None, "bench-reader-down", Some(&down)).await;
    anyhow::ensure!(ok, "cannot subscribe to the reader's downlink");
    let reader = raw_client(port, "bench-reader").await;
    let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let s2 = sent.clone();
    let collector = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Some((_, body)) = answers.recv().await {
            if let Ok(eldergate_protocol::payload::Down::Display { seq, .. }) =
                serde_json::from_slice(&body)
            {
                if let Some(t) = s2.lock().ok().and_then(|mut m| m.remove(&seq)) {
                    lat.push(t.elapsed());
                }
            }
            if lat.len() >= taps {
                break;
            }
        }
        lat
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for i in 0..taps {
        tick.tick().await;
        let seq = i as u32 + 1;
        let card = format!("{:08X}", 0xCA00_0000u32 + 1 + (i % residents) as u32);
        let body = serde_json::json!({"v": 1, "seq": seq, "card": card}).to_string();
        if let Ok(mut m) = sent.lock() {
            m.insert(seq, Instant::now());
        }
        reader
            .publish(
                topic::tap(SITE, "rdr-01"),
                QoS::AtLeastOnce,
                false,
                body.into_bytes(),
            )
            .await?;
    }
    let mut lat = tokio::time::timeout(Duration::from_secs(60), collector).await??;
    lat.sort();
    Ok(lat)
}

/// (h) The health rows: the echo round trip (device → echo client → device through the same
/// broker, QoS 1 out, QoS 0 back: the gateway's topology without the gateway, as in (b)) paced
/// at the readings' rate, then the kiosk run; table rows, to print with the others.
async fn health_rows(port: u16, fsync_p99: Duration, args: &Args) -> anyhow::Result<Vec<String>> {
    let echo = echo_latency(port, args.health_readings, args.health_rate, "-health").await?;
    let run = health::health_latency(
        port,
        args.health_kiosks,
        args.health_readings,
        args.health_rate,
        args.health_per_visit,
        args.health_danger_every,
    )
    .await?;
    let (echo_p50, echo_p99) = (pct(&echo, 0.5), pct(&echo, 0.99));
    // The answer is the same round trip around a commit (one fsync).
    let bound = echo_p99 + fsync_p99;
    let (a50, a99) = (pct(&run.answers, 0.5), pct(&run.answers, 0.99));
    let (al50, al99) = (pct(&run.alerts, 0.5), pct(&run.alerts, 0.99));
    let mut results: Vec<_> = run.results.iter().collect();
    results.sort();
    let results = results
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(vec![
        format!(
            "| (h) health reading → kiosk answer after commit, p50 ({} answers to {} readings at {:.0}/s achieved of {}/s, {} kiosks, a card tap before each {} readings; {results}) | {:.2} ms | echo round trip p50 {:.2} ms ({} at {}/s) | {:.2}× | |",
            run.answers.len(), run.sent, run.rate, args.health_rate, args.health_kiosks, args.health_per_visit,
            ms(a50), ms(echo_p50), echo.len(), args.health_rate, ms(a50) / ms(echo_p50).max(1e-9)
        ),
        format!(
            "| (h) health reading → kiosk answer p99 | {:.2} ms | echo p99 {:.2} ms; echo p99 + fsync p99 = {:.2} ms | {:.2}× echo, {:.2}× echo + fsync | ≤ 50 ms |",
            ms(a99), ms(echo_p99), ms(bound), ms(a99) / ms(echo_p99).max(1e-9), ms(a99) / ms(bound).max(1e-9)
        ),
        format!(
            "| (h) grade-3 BP reading (186/112) → staff alert, p50 / p99 ({} alerts heard of {} dangerous readings) | {:.2} / {:.2} ms | echo p99 + fsync p99 = {:.2} ms | {:.2}× (p99) | |",
            run.alerts.len(), run.dangerous, ms(al50), ms(al99), ms(bound), ms(al99) / ms(bound).max(1e-9)
        ),
    ])
}

/// `--only health`: its own broker, database and gateway (kiosks and a roster), the fsync probe
/// and the health rows.
async fn only_health(args: &Args) -> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let db = TestDb::create().await?;
    let residents = args
        .health_readings
        .div_ceil(args.health_per_visit.max(1))
        .max(1);
    let gw = Gateway::start(&GatewaySpec {
        broker_port: broker.port,
        central_url: db.url.clone(),
        buttons: residents,
        extra: health::kiosk_devices(args.health_kiosks),
        heartbeat_s: 300,
        residents: true,
        serial: false,
        extra_devices: String::new(),
    })
    .await?;
    let (_, fsync_p99) = fsync_cost(&gw.data_dir)?;
    let rows = health_rows(broker.port, fsync_p99, args).await?;
    println!(
        "\n## eldergate bench, health readings ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    println!("| measure | eldergate | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| fsync 4 KiB + fdatasync, p99 | | {:.3} ms | | |",
        ms(fsync_p99)
    );
    for r in rows {
        println!("{r}");
    }
    drop(gw);
    db.drop_db().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // At least one kiosk, one reading per visit, one reading a second (the kiosks registered
    // and the roster follow these).
    args.health_kiosks = args.health_kiosks.max(1);
    args.health_per_visit = args.health_per_visit.max(1);
    args.health_rate = args.health_rate.max(1);
    if args.only.as_deref() == Some("health") {
        return only_health(&args).await;
    }
    let devices = args.latency_presses.max(2000);
    let broker = Mosquitto::start()?;
    let db = TestDb::create().await?;
    let proxy = Proxy::start(pg_host_port()).await?;
    let serial_dir = tempfile::tempdir()?;
    let serial_link = serial_dir.path().join("ttyBENCH");
    let rules_path = serial_dir.path().join("rules.toml");
    std::fs::write(
        &rules_path,
        "name = \"bench\"\n[[periods]]\nname = \"all_day\"\nstart = \"00:00\"\nend = \"23:59:59\"\nprice_fen = 1500\n[[subsidies]]\nname = \"60+\"\nmin_age = 60\namount = { percent = 10 }\n",
    )?;
    let firmware_readers: String = (1..=FIRMWARE_READERS)
        .map(|i| {
            format!(
                "[[devices]]\nid = \"rdr-b{i:02}\"\nkind = \"card_reader\"\nheartbeat_s = 86400\n"
            )
        })
        .collect::<String>()
        + &(0..SERIAL_BUTTONS)
            .map(|i| {
                format!(
                    "[[devices]]\nid = \"{}\"\nkind = \"alarm_button\"\nlink = \"serial\"\n",
                    serial_button(i)
                )
            })
            .collect::<String>()
        + &health::kiosk_devices(args.health_kiosks);
    let gw = Gateway::start(&GatewaySpec {
        broker_port: broker.port,
        central_url: db.url_via(&format!("127.0.0.1:{}", proxy.port)),
        // (f) gets 2 × firmware_presses buttons of its own after the others.
        buttons: devices + 2 * args.firmware_presses,
        extra: format!(
            "[[serial]]\nport = \"{}\"\n[canteen]\nrules = \"{}\"\ndouble_tap_s = 0\n{firmware_readers}",
            serial_link.display(),
            rules_path.display()
        ),
        heartbeat_s: 300,
        residents: true,
        serial: false,
        extra_devices: String::new(),
    })
    .await?;
    let (fsync_p50, fsync_p99) = fsync_cost(&gw.data_dir)?;

    // (a) latency under background heartbeats.
    let stop = Arc::new(AtomicBool::new(false));
    background_heartbeats(
        broker.port,
        (1..=devices).map(button).collect(),
        args.heartbeat_rate,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let relay = relay_latency(broker.port, args.latency_presses, args.latency_rate).await?;
    let gw_lat = gateway_latency(broker.port, args.latency_presses, args.latency_rate).await?;
    let heartbeats_seen = gw
        .metric("eldergate_mqtt_received_total{connection=\"telemetry\"}")
        .await?;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (b) durable ingest vs raw relay, central store down so forwarding does not compete.
    proxy.down();
    let relay_mps = relay_rate(broker.port, args.throughput_presses).await?;
    let echo_mps = echo_rate(broker.port, args.throughput_presses, "", 0).await?;
    let gw_mps = gateway_rate(broker.port, args.throughput_presses, devices, "").await?;

    // (c) forwarding the backlog vs psql \copy.
    let journal = gw.journal().await?;
    let total: i64 = sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&journal)
        .await?
        .get(0);
    let pool = db.pool().await?;
    let before: i64 = sqlx::query("SELECT COUNT(*) FROM events")
        .fetch_one(&pool)
        .await?
        .get(0);
    proxy.up();
    // Time the drain from the first forwarded row (not from `up`, which includes the
    // forwarder's reconnect backoff).
    let mut first: Option<(Instant, i64)> = None;
    let wait_start = Instant::now();
    loop {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM events")
            .fetch_one(&pool)
            .await?
            .get(0);
        if first.is_none() && n > before {
            first = Some((Instant::now(), n));
        }
        if n >= total {
            break;
        }
        anyhow::ensure!(
            wait_start.elapsed() < Duration::from_secs(300),
            "forwarding did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (start, first_n) = first.unwrap_or((Instant::now(), before));
    let fwd_rate = (total - first_n) as f64 / start.elapsed().as_secs_f64().max(1e-6);
    let dir = tempfile::tempdir()?;
    let (copy_rows, copy_rps) = copy_rate(&db, dir.path())?;

    let (serial_fps, ceiling_fps, frame_len) =
        serial_rate(&serial_link, 5000, SERIAL_BUTTONS).await?;
    let taps = tap_latency(broker.port, &gw, 2000, 200, 200).await?;
    let (fw_presses, standin_presses) =
        firmware_press_latency(broker.port, devices + 1, args.firmware_presses, 50).await?;
    let fw_taps = firmware_tap_latency(broker.port, 2000, 200, 200).await?;
    // (h) residents R00001… are the roster of the buttons; (e) topped some up, which is harmless.
    let health = health_rows(broker.port, fsync_p99, &args).await?;

    let relay_p50 = pct(&relay, 0.5);
    let relay_p99 = pct(&relay, 0.99);
    let gw_p50 = pct(&gw_lat, 0.5);
    let gw_p99 = pct(&gw_lat, 0.99);
    let bound = relay_p99 + fsync_p99;
    println!(
        "\n## eldergate bench ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    println!("| measure | eldergate | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| fsync 4 KiB + fdatasync, p50 / p99 | | {:.3} / {:.3} ms | | |",
        ms(fsync_p50),
        ms(fsync_p99)
    );
    println!(
        "| (a) press → staff alert p50 ({} presses at {}/s, {} heartbeats/s) | {:.2} ms | relay {:.2} ms | {:.2}× | |",
        gw_lat.len(), args.latency_rate, args.heartbeat_rate, ms(gw_p50), ms(relay_p50), ms(gw_p50) / ms(relay_p50).max(1e-9)
    );
    println!(
        "| (a) press → staff alert p99 | {:.2} ms | relay p99 + fsync p99 = {:.2} ms | {:.2}× | ≤ 5 ms and ≤ 3× |",
        ms(gw_p99), ms(bound), ms(gw_p99) / ms(bound).max(1e-9)
    );
    println!(
        "| (b) durable ingest ({} presses, acked after fsync) | {:.0} msg/s | raw QoS 1 relay {:.0} msg/s | {:.2}× | ≥ 0.8× |",
        args.throughput_presses, gw_mps, relay_mps, gw_mps / relay_mps
    );
    println!(
        "| (b) same, against the gateway's topology without the gateway (device → echo → device) | {:.0} msg/s | echo round trip {:.0} msg/s | {:.2}× | |",
        gw_mps, echo_mps, gw_mps / echo_mps
    );
    println!(
        "| (c) forwarding to PostgreSQL ({} events) | {:.0} rows/s | psql \\copy {:.0} rows/s ({} rows) | {:.2}× | ≥ 0.5× |",
        total - before, fwd_rate, copy_rps, copy_rows, fwd_rate / copy_rps
    );
    println!(
        "| (d) serial alarm frames through a pty, acked after commit ({frame_len}-byte frames) | {:.0} frames/s | 115200 baud line-rate ceiling {:.0} frames/s | {:.2}× | ≥ 0.9× |",
        serial_fps, ceiling_fps, serial_fps / ceiling_fps
    );
    println!(
        "| (e) card tap → reader answer after commit, p50 / p99 ({} taps at 200/s) | {:.2} / {:.2} ms | | | p99 ≤ 50 ms |",
        taps.len(),
        ms(pct(&taps, 0.5)),
        ms(pct(&taps, 0.99))
    );
    println!(
        "| (f) firmware buttons over MQTT (the firmware's own logic): SOS frame → ACK in the firmware, p50 / p99 ({} presses at 50/s) | {:.2} / {:.2} ms | stand-in load generator press → ack {:.2} / {:.2} ms | {:.2}× (p99) | |",
        fw_presses.len(),
        ms(pct(&fw_presses, 0.5)),
        ms(pct(&fw_presses, 0.99)),
        ms(pct(&standin_presses, 0.5)),
        ms(pct(&standin_presses, 0.99)),
        ms(pct(&fw_presses, 0.99)) / ms(pct(&standin_presses, 0.99)).max(1e-9)
    );
    println!(
        "| (g) firmware card-reader terminals over MQTT: CARD_TAP → DISPLAY at the terminal, p50 / p99 ({} taps at 200/s, {FIRMWARE_READERS} readers) | {:.2} / {:.2} ms | raw tap → answer (e) {:.2} / {:.2} ms | {:.2}× (p99) | |",
        fw_taps.len(),
        ms(pct(&fw_taps, 0.5)),
        ms(pct(&fw_taps, 0.99)),
        ms(pct(&taps, 0.5)),
        ms(pct(&taps, 0.99)),
        ms(pct(&fw_taps, 0.99)) / ms(pct(&taps, 0.99)).max(1e-9)
    );
    for r in health {
        println!("{r}");
    }
    println!("\nlatency samples: gateway {}, relay {}; heartbeats received by the gateway: {heartbeats_seen:.0}", gw_lat.len(), relay.len());
    if std::env::var("BENCH_TIMING").is_ok() {
        if let Ok(log) = std::fs::read_to_string(gw.log_path()) {
            for l in log.lines().filter(|l| l.contains("TIMING")) {
                println!("{l}");
            }
        }
    }
    pool.close().await;
    db.drop_db().await;
    Ok(())
}
