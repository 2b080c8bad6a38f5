//! Scale and footprint benchmarks (issue 16, item 4). They measure; they do not pass or fail.
//! Run in release (`tests/scale`, which builds first); each prints a markdown table with a
//! baseline taken in the same run. CPU is the process's own user + system ticks from
//! `/proc/PID/stat` over a window, not wall-clock time, so other load on the machine does not
//! count against the gateway (it can still slow it down).
//!
//!   eldergate-scale fleet   [--devices 10000 --every 60 --warmup 75 --window 60]
//!   eldergate-scale start   [--runs 11 --idle 5 --only embedded|external]
//!   eldergate-scale backlog [--events 1000000]
//!   eldergate-scale ingest  [--presses 30000 --rounds 3 --batch 64 --compare OTHER_ELDERGATE]

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use eldergate_e2e::raw_mqtt::{heartbeat_device, HeartbeatStats};
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::Fleet;
use sqlx::Row;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "eldergate-bench/throughput.rs"]
mod throughput;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N devices, each on its own MQTT connection, one QoS 1 heartbeat every `every` seconds:
    /// the gateway's CPU and RSS with its embedded broker, then with an external Mosquitto.
    Fleet {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Seconds between heartbeats of one device.
        #[arg(long, default_value_t = 60)]
        every: u64,
        /// Seconds after the last device connected before the window (every device has sent
        /// its first heartbeat by then).
        #[arg(long, default_value_t = 75)]
        warmup: u64,
        /// Seconds of the measuring window.
        #[arg(long, default_value_t = 60)]
        window: u64,
        /// Only this broker mode; default both.
        #[arg(long, value_enum)]
        only: Option<BrokerMode>,
    },
    /// Start to `/healthz` and idle RSS, median of `runs` starts of the same journal.
    Start {
        #[arg(long, default_value_t = 11)]
        runs: usize,
        /// Seconds idle before RSS is read.
        #[arg(long, default_value_t = 5)]
        idle: u64,
        /// Only this broker mode; default both. A production build of the gateway (without
        /// the `embedded-broker` feature) can run only `external`.
        #[arg(long, value_enum)]
        only: Option<BrokerMode>,
    },
    /// A journal seeded with `events` unforwarded events, drained to PostgreSQL; baseline: psql
    /// \copy of the same rows.
    Backlog {
        #[arg(long, default_value_t = 1_000_000)]
        events: i64,
    },
    /// Durable ingest with the gateway's `broker.write_batch` = 1 and = `batch`, against the echo
    /// round trip, alternating, `rounds` times.
    Ingest {
        #[arg(long, default_value_t = 30_000)]
        presses: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Another `eldergate` binary (e.g. the build before a change, copied aside) measured in
        /// the same rounds with `write_batch = batch`, between this build's two measures.
        #[arg(long)]
        compare: Option<std::path::PathBuf>,
    },
}

/// User + system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses: state is the 1st,
    // utime the 12th, stime the 13th (proc(5) fields 14 and 15).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(f.get(i).context("short /proc/PID/stat")?.parse()?)
    };
    Ok(field(11)? + field(12)?)
}

fn clock_ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/PID/status` value (kB) in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn open_files_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(str::to_string)
        })
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_else(|| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU % of one core of the processes in `pids` over `window`, each.
async fn cpu_over(pids: &[u32], window: Duration) -> anyhow::Result<Vec<f64>> {
    let hz = clock_ticks_per_s();
    let t0: Vec<u64> = pids
        .iter()
        .map(|&p| cpu_ticks(p))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let t1: Vec<u64> = pids
        .iter()
        .map(|&p| cpu_ticks(p))
        .collect::<Result<_, _>>()?;
    let wall = start.elapsed().as_secs_f64();
    Ok(t0
        .iter()
        .zip(&t1)
        .map(|(a, b)| (b - a) as f64 / hz / wall * 100.0)
        .collect())
}

struct FleetResult {
    mode: &'static str,
    gw_cpu: f64,
    gw_rss: f64,
    gw_hwm: f64,
    /// The anonymous part of `gw_rss` (heap, stacks: what grows with connections; the rest is
    /// mapped code and libraries), read at the same moment.
    gw_anon: f64,
    broker_cpu: Option<f64>,
    broker_rss: Option<f64>,
    connected: u64,
    sent: u64,
    acked: u64,
    received: f64,
    idle_rss: f64,
    ramp_s: f64,
}

async fn fleet_run(
    embedded: bool,
    devices: usize,
    every: Duration,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<FleetResult> {
    let db = TestDb::create().await?;
    let mosquitto = if embedded {
        None
    } else {
        Some(Mosquitto::start()?)
    };
    let port = mosquitto.as_ref().map(|m| m.port).unwrap_or_else(free_port);
    let mut spec = GatewaySpec::new(port, db.url.clone(), devices);
    spec.heartbeat_s = u32::try_from(every.as_secs()).unwrap_or(60);
    let broker = if embedded {
        format!("mode = \"embedded\"\nlisten = \"127.0.0.1:{port}\"")
    } else {
        format!("mode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"\nanonymous = true")
    };
    let gw = Gateway::start_with_broker(&spec, None, &broker).await?;
    let pid = gw.pid().context("gateway not running")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = status_mib(pid, "VmRSS");
    let stats = Arc::new(HeartbeatStats::default());
    let connecting = Arc::new(tokio::sync::Semaphore::new(100));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(devices);
    for i in 1..=devices {
        let id = button(i);
        let topic = eldergate_protocol::topic::telemetry(SITE, &id, "heartbeat");
        // First heartbeats spread evenly over one period, so the load is steady from the start.
        let first = every.mul_f64(i as f64 / devices as f64);
        tasks.push(tokio::spawn(heartbeat_device(
            port,
            id,
            topic,
            first,
            every,
            stats.clone(),
            connecting.clone(),
        )));
    }
    while stats.connected.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed)
        < devices as u64
    {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "only {} of {devices} devices connected within 300 s",
            stats.connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(warmup).await;
    let metric = "eldergate_mqtt_received_total{connection=\"telemetry\"}";
    let (sent0, acked0, recv0) = (
        stats.sent.load(Ordering::Relaxed),
        stats.acked.load(Ordering::Relaxed),
        gw.metric(metric).await?,
    );
    let mut pids = vec![pid];
    if let Some(m) = &mosquitto {
        pids.push(m.pid());
    }
    let cpu = cpu_over(&pids, window).await?;
    let result = FleetResult {
        mode: if embedded {
            "embedded broker (rumqttd)"
        } else {
            "external Mosquitto"
        },
        gw_cpu: cpu.first().copied().unwrap_or(f64::NAN),
        gw_rss: status_mib(pid, "VmRSS"),
        gw_hwm: status_mib(pid, "VmHWM"),
        gw_anon: status_mib(pid, "RssAnon"),
        broker_cpu: cpu.get(1).copied(),
        broker_rss: mosquitto.as_ref().map(|m| status_mib(m.pid(), "VmRSS")),
        connected: stats.connected.load(Ordering::Relaxed),
        sent: stats.sent.load(Ordering::Relaxed) - sent0,
        acked: stats.acked.load(Ordering::Relaxed) - acked0,
        received: gw.metric(metric).await? - recv0,
        idle_rss,
        ramp_s,
    };
    for t in tasks {
        t.abort();
    }
    drop(gw);
    drop(mosquitto);
    db.drop_db().await;
    Ok(result)
}

/// Which broker a measure runs with (`--only`).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BrokerMode {
    /// The gateway's embedded rumqttd.
    Embedded,
    /// An external Mosquitto (production).
    External,
}

/// Whether the run with the embedded broker (or not) is wanted under `--only`.
fn wanted(only: Option<BrokerMode>, embedded: bool) -> bool {
    let mode = if embedded {
        BrokerMode::Embedded
    } else {
        BrokerMode::External
    };
    only.is_none_or(|o| o == mode)
}

async fn fleet(
    devices: usize,
    every: u64,
    warmup: u64,
    window: u64,
    only: Option<BrokerMode>,
) -> anyhow::Result<()> {
    let every = Duration::from_secs(every.max(1));
    let mut results = Vec::new();
    for embedded in [true, false] {
        if !wanted(only, embedded) {
            continue;
        }
        results.push(
            fleet_run(
                embedded,
                devices,
                every,
                Duration::from_secs(warmup),
                Duration::from_secs(window),
            )
            .await?,
        );
    }
    println!(
        "\n## eldergate-scale fleet ({}): {devices} devices, one connection each, a QoS 1 heartbeat every {} s; CPU over {window} s after {warmup} s of warm-up; open files limit (soft / hard) {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        every.as_secs(),
        open_files_limit()
    );
    println!("| broker | gateway CPU (% of a core) | gateway RSS / peak (anonymous) | Mosquitto CPU / RSS | gateway + broker CPU | heartbeats sent / acked / received by the gateway in the window | connected | idle RSS before | ramp |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {:.2} % | {:.1} / {:.1} MiB ({:.1}) | {} | {:.2} % | {} / {} / {:.0} | {} | {:.1} MiB | {:.1} s |",
            r.mode,
            r.gw_cpu,
            r.gw_rss,
            r.gw_hwm,
            r.gw_anon,
            match (r.broker_cpu, r.broker_rss) {
                (Some(c), Some(m)) => format!("{c:.2} % / {m:.1} MiB"),
                _ => "(inside the gateway)".into(),
            },
            r.gw_cpu + r.broker_cpu.unwrap_or(0.0),
            r.sent,
            r.acked,
            r.received,
            r.connected,
            r.idle_rss,
            r.ramp_s,
        );
    }
    Ok(())
}

/// Starts `eldergate run` and returns it with the time until `/healthz` answered 200.
async fn start_once(
    config: &Path,
    http_port: u16,
    log: &Path,
) -> anyhow::Result<(std::process::Child, Duration)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let url = format!("http://127.0.0.1:{http_port}/healthz");
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let start = Instant::now();
    let mut child = Command::new(bin_dir().join("eldergate"))
        .args(["run", "--config"])
        .arg(config)
        // The gateway's own log filter, as shipped (`RUST_LOG` passes through if the caller sets
        // it): until 2026-12-01 this set `info` for rumqttd, whose router then built a span for
        // every packet, which no gateway in service does.
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()?;
    loop {
        if let Ok(r) = http.get(&url).send().await {
            if r.status().is_success() {
                return Ok((child, start.elapsed()));
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "gateway exited with {status} during start; see {}",
                log.display()
            );
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "no /healthz within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn sigterm(child: &mut std::process::Child) -> anyhow::Result<()> {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    child.wait()?;
    Ok(())
}

async fn start(runs: usize, idle: u64, only: Option<BrokerMode>) -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let mosquitto = Mosquitto::start()?;
    let mut rows = Vec::new();
    for embedded in [false, true] {
        if !wanted(only, embedded) {
            continue;
        }
        let mut spec = GatewaySpec::new(mosquitto.port, db.url.clone(), 1000);
        spec.residents = true;
        let broker_port = free_port();
        let broker = if embedded {
            format!("mode = \"embedded\"\nlisten = \"127.0.0.1:{broker_port}\"")
        } else {
            format!(
                "mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\nanonymous = true",
                mosquitto.port
            )
        };
        let gw = Gateway::prepare_with_broker(&spec, None, &broker)?;
        let log = gw.config.with_file_name("scale-start.log");
        let (mut starts, mut rss, mut hwm) = (Vec::new(), Vec::new(), Vec::new());
        let mut first = None;
        for run in 0..=runs {
            let (mut child, took) = start_once(&gw.config, gw.http_port, &log).await?;
            tokio::time::sleep(Duration::from_secs(idle)).await;
            let (r, h) = (
                status_mib(child.id(), "VmRSS"),
                status_mib(child.id(), "VmHWM"),
            );
            sigterm(&mut child)?;
            if run == 0 {
                // The first start migrates central and registers the devices: shown apart.
                first = Some((took, r));
                continue;
            }
            starts.push(took.as_secs_f64() * 1000.0);
            rss.push(r);
            hwm.push(h);
        }
        let (min, max) = (
            starts.iter().copied().fold(f64::INFINITY, f64::min),
            starts.iter().copied().fold(0.0, f64::max),
        );
        rows.push(format!(
            "| {} | {:.1} ms (min {:.1}, max {:.1}) | {:.1} MiB | {:.1} MiB | {} |",
            if embedded {
                "embedded broker"
            } else {
                "external Mosquitto (production)"
            },
            median(&mut starts),
            min,
            max,
            median(&mut rss),
            median(&mut hwm),
            first
                .map(|(t, r)| format!("{:.1} ms, {r:.1} MiB", t.as_secs_f64() * 1000.0))
                .unwrap_or_default()
        ));
    }
    println!(
        "\n## eldergate-scale start ({}): median of {runs} starts of an existing journal (1,000 buttons and residents), RSS after {idle} s idle\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    println!("| broker | start → /healthz 200 | idle RSS (VmRSS) | peak (VmHWM) | first start (central migrated): start, RSS |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    drop(mosquitto);
    db.drop_db().await;
    Ok(())
}

async fn backlog(events: i64) -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let mosquitto = Mosquitto::start()?;
    let mut gw = Gateway::prepare(&GatewaySpec::new(mosquitto.port, db.url.clone(), 100), None)?;
    gw.spawn().await?;
    // One real check-in, so the seeded rows have the shape the gateway writes.
    let fleet = Fleet::start(fleet_options(mosquitto.port, "scale-backlog")).await?;
    fleet.send(&button(1), AlarmAction::Checkin).await;
    anyhow::ensure!(
        fleet.wait_all_acked(Duration::from_secs(30)).await,
        "check-in not acked"
    );
    let pool = db.pool().await?;
    let journal_path = gw.data_dir.join("journal.db");
    eventually(
        Duration::from_secs(30),
        "the check-in at central",
        || async {
            // Until the gateway has migrated central there is no table: not there yet.
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE kind = 'checkin'")
                .fetch_one(&pool)
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            Ok((n > 0).then_some(()))
        },
    )
    .await?;
    gw.sigterm()?;
    // Seed: `events` copies of the check-in above the forwarder's cursor, in one statement.
    let journal = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&journal_path))
        .await?;
    let seeded = Instant::now();
    let base: i64 = sqlx::query("SELECT MAX(seq) FROM events")
        .fetch_one(&journal)
        .await?
        .get(0);
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO events (seq, kind, device_id, device_seq, alert_id, received_at, device_time, body)
         SELECT ?2 + i, e.kind, printf('btn-%04d', 1 + i % 100), 1000 + i, NULL,
                e.received_at, e.device_time, e.body
         FROM n, (SELECT * FROM events WHERE kind = 'checkin' LIMIT 1) AS e",
    )
    .bind(events)
    .bind(base)
    .execute(&journal)
    .await?;
    let cursor: i64 = sqlx::query("SELECT forwarded_upto FROM forward_cursor")
        .fetch_one(&journal)
        .await?
        .get(0);
    let seed_s = seeded.elapsed().as_secs_f64();
    // The seeded events belong to the epoch of the run before them (docs/adr/0007).
    let epoch: String = sqlx::query_scalar(
        "SELECT epoch FROM journal_epochs WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1",
    )
    .bind(base + 1)
    .fetch_one(&journal)
    .await?;
    journal.close().await;
    let (lo, hi) = (base + 1, base + events);
    anyhow::ensure!(
        cursor < lo,
        "cursor {cursor} is not below the seeded events"
    );
    let seeded_at_central = || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE seq BETWEEN $1 AND $2")
            .bind(lo)
            .bind(hi)
            .fetch_one(&pool)
            .await?
            .get(0);
        anyhow::Ok(n)
    };
    // Polled every 20 ms, so an index probe: the MAX(seq) over the gateway's rows polled here
    // before 2026-12-01 scanned them all (the primary key leads with the epoch) and took a core
    // from the drain it measured.
    let at_central = |seq: i64| {
        let pool = pool.clone();
        let epoch = epoch.clone();
        async move {
            let there: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events WHERE gateway_id = 'gw-test' AND epoch = $1 AND seq = $2)",
            )
            .bind(epoch)
            .bind(seq)
            .fetch_one(&pool)
            .await?;
            anyhow::Ok(there)
        }
    };
    // Drain: from the spawn of the process until central has every seeded event.
    let start = Instant::now();
    gw.spawn().await?;
    let healthy = start.elapsed();
    let mut first_row = None;
    loop {
        if first_row.is_none() && at_central(lo).await? {
            first_row = Some(start.elapsed());
        }
        if at_central(hi).await? && seeded_at_central().await? >= events {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(900),
            "not drained in 900 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = start.elapsed();
    let total_at_central = seeded_at_central().await?;
    // Baseline: psql \copy of the same rows into a table like central's.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.csv");
    let psql = |sql: &str| -> anyhow::Result<()> {
        let out = Command::new("psql")
            .arg(&db.url)
            .args(["-qAt", "-c", sql])
            .stdout(Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    psql(&format!(
        "\\copy (SELECT * FROM events WHERE seq BETWEEN {lo} AND {hi}) TO '{}' CSV",
        file.display()
    ))?;
    psql("CREATE TABLE events_copy (LIKE events INCLUDING ALL)")?;
    let copy_start = Instant::now();
    psql(&format!("\\copy events_copy FROM '{}' CSV", file.display()))?;
    let copy = copy_start.elapsed();
    let dupes: i64 =
        sqlx::query("SELECT COUNT(*) - COUNT(DISTINCT (gateway_id, epoch, seq)) FROM events")
            .fetch_one(&pool)
            .await?
            .get(0);
    println!(
        "\n## eldergate-scale backlog ({}): {events} unforwarded events in the journal (seeded in {seed_s:.1} s), central PostgreSQL reachable\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    println!("| measure | eldergate | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| drain: process start → central has all {events} | {:.2} s ({:.0} rows/s; /healthz at {:.0} ms, first row at {:.2} s) | psql \\copy of the same rows {:.2} s ({:.0} rows/s) | {:.2}× the copy's time | ≤ 20 s |",
        drained.as_secs_f64(),
        events as f64 / drained.as_secs_f64(),
        healthy.as_secs_f64() * 1000.0,
        first_row.unwrap_or_default().as_secs_f64(),
        copy.as_secs_f64(),
        events as f64 / copy.as_secs_f64(),
        drained.as_secs_f64() / copy.as_secs_f64()
    );
    println!("\ncentral has {total_at_central} of the {events} seeded events; duplicates at central: {dupes}");
    // The dedupe window's loader reads the same 1,000,000 keys beside the drain (ADR 0020).
    let log = std::fs::read_to_string(gw.log_path()).unwrap_or_default();
    if let Some(line) = log.lines().rfind(|l| l.contains("dedupe window read")) {
        println!(
            "gateway: {}",
            line.split_once(" INFO").map_or(line, |(_, r)| r).trim()
        );
    }
    gw.sigterm()?;
    pool.close().await;
    drop(mosquitto);
    db.drop_db().await;
    Ok(())
}

/// One measure of `tests/scale ingest`, round after round: throughput, and the CPU each process
/// spent per message (user + system ticks over the measure, so other load on the machine does
/// not count against it).
#[derive(Default)]
struct IngestMeasure {
    rate: Vec<f64>,
    broker_us: Vec<f64>,
    gateway_us: Vec<f64>,
    load_us: Vec<f64>,
    retransmissions: Vec<u64>,
    /// The gateway's journal commits and operations per commit (its /metrics after the measure).
    commits: Vec<f64>,
    per_commit: Vec<f64>,
}

impl IngestMeasure {
    fn list(v: &[f64]) -> String {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    }
    fn med(v: &[f64]) -> f64 {
        median(&mut v.to_vec())
    }
}

/// CPU ticks of each of `pids` (0 for a process that is gone).
fn ticks(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).collect()
}

/// Records a measure's rate and its CPU per message (µs) from ticks before and after.
fn record(
    m: &mut IngestMeasure,
    presses: usize,
    rate: f64,
    before: &[u64],
    after: &[u64],
    gateway: bool,
) {
    let tick_us = 1e6 / clock_ticks_per_s();
    let us = |i: usize| {
        let d = after
            .get(i)
            .zip(before.get(i))
            .map(|(a, b)| a.saturating_sub(*b));
        d.unwrap_or(0) as f64 * tick_us / presses as f64
    };
    m.rate.push(rate);
    m.broker_us.push(us(0));
    m.load_us.push(us(1));
    if gateway {
        m.gateway_us.push(us(2));
    }
}

async fn ingest(
    presses: usize,
    rounds: usize,
    batch: usize,
    compare: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    // Every measure gets a broker of its own: the load generator's connection stays subscribed
    // to every downlink after its measure, and would double the broker's work in the next one.
    // Central is unreachable (a closed port): forwarding does not compete with ingest.
    let central = format!("postgres://postgres@127.0.0.1:{}/none", free_port());
    let devices = 2000;
    let me = std::process::id();
    let (mut echo1, mut echo_b) = (IngestMeasure::default(), IngestMeasure::default());
    let (mut fleet_echo1, mut fleet_echo_b) = (IngestMeasure::default(), IngestMeasure::default());
    let (mut gw1, mut gw_b, mut gw_c) = (
        IngestMeasure::default(),
        IngestMeasure::default(),
        IngestMeasure::default(),
    );
    let relay = {
        let m = Mosquitto::start()?;
        throughput::relay_rate(m.port, presses).await?
    };
    for round in 0..rounds {
        for (eb, out) in [(0, &mut echo1), (batch, &mut echo_b)] {
            let m = Mosquitto::start()?;
            let before = ticks(&[m.pid(), me]);
            let rate =
                throughput::echo_rate(m.port, presses, &format!("-{round}-{eb}"), eb).await?;
            record(out, presses, rate, &before, &ticks(&[m.pid(), me]), false);
        }
        for (wb, out) in [(1, &mut fleet_echo1), (batch, &mut fleet_echo_b)] {
            let m = Mosquitto::start()?;
            let before = ticks(&[m.pid(), me]);
            let (rate, retransmitted) = throughput::fleet_echo_run(
                m.port,
                presses,
                devices,
                wb,
                &format!("-{round}-fe{wb}"),
            )
            .await?;
            record(out, presses, rate, &before, &ticks(&[m.pid(), me]), false);
            out.retransmissions.push(retransmitted);
        }
        let mut gateways: Vec<(usize, Option<&std::path::Path>, &mut IngestMeasure)> =
            vec![(1, None, &mut gw1), (batch, None, &mut gw_b)];
        if let Some(c) = compare.as_deref() {
            gateways.insert(1, (batch, Some(c), &mut gw_c));
        }
        for (i, (wb, program, out)) in gateways.into_iter().enumerate() {
            let m = Mosquitto::start()?;
            let port = m.port;
            let mut spec = GatewaySpec::new(port, central.clone(), devices);
            spec.residents = true;
            let broker = format!(
                "mode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"\nanonymous = true\nwrite_batch = {wb}"
            );
            let mut gw = Gateway::prepare_with_broker(&spec, None, &broker)?;
            gw.program = program.map(Path::to_path_buf);
            gw.spawn().await?;
            let pids = [m.pid(), me, gw.pid().unwrap_or(0)];
            let before = ticks(&pids);
            let (rate, retransmitted) =
                throughput::gateway_run(port, presses, devices, &format!("-{round}-{i}")).await?;
            record(out, presses, rate, &before, &ticks(&pids), true);
            out.retransmissions.push(retransmitted);
            let commits = gw.metric("eldergate_journal_commits_total").await?;
            let ops = gw.metric("eldergate_journal_batch_size_sum").await?;
            out.commits.push(commits);
            out.per_commit.push(ops / commits.max(1.0));
            gw.sigterm()?;
        }
        eprintln!(
            "round {}: echo {:.0} / echo batched {:.0} / fleet echo {:.0} / batched {:.0} / gateway write_batch 1 {:.0} / write_batch {batch} {:.0}{} msg/s",
            round + 1,
            echo1.rate.last().copied().unwrap_or_default(),
            echo_b.rate.last().copied().unwrap_or_default(),
            fleet_echo1.rate.last().copied().unwrap_or_default(),
            fleet_echo_b.rate.last().copied().unwrap_or_default(),
            gw1.rate.last().copied().unwrap_or_default(),
            gw_b.rate.last().copied().unwrap_or_default(),
            gw_c.rate.last().map(|r| format!(" / compared binary {r:.0}")).unwrap_or_default(),
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n## eldergate-scale ingest ({}): {presses} check-ins as fast as one load-generator connection sends, until all are acked after commit; {rounds} rounds alternating, medians; load average at the end {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let (e1, eb) = (
        IngestMeasure::med(&echo1.rate),
        IngestMeasure::med(&echo_b.rate),
    );
    // Each row with the fleet echo it is compared with (the same write_batch), if any.
    let mut rows: Vec<(String, &IngestMeasure, Option<&IngestMeasure>)> = vec![
        (
            "echo round trip, echo flushes each packet".into(),
            &echo1,
            None,
        ),
        (
            format!("echo round trip, echo writes ≤ {batch} per flush"),
            &echo_b,
            None,
        ),
        (
            "fleet echo (the fleet answered as the contract asks, QoS 1 ack, nothing kept), write_batch 1".into(),
            &fleet_echo1,
            Some(&fleet_echo1),
        ),
        (
            format!("fleet echo, write_batch {batch}"),
            &fleet_echo_b,
            Some(&fleet_echo_b),
        ),
        (
            "gateway, broker.write_batch = 1 (a flush per packet)".into(),
            &gw1,
            Some(&fleet_echo1),
        ),
        (
            format!("gateway, broker.write_batch = {batch}"),
            &gw_b,
            Some(&fleet_echo_b),
        ),
    ];
    if let Some(c) = &compare {
        rows.push((
            format!("gateway {} (--compare), write_batch = {batch}", c.display()),
            &gw_c,
            Some(&fleet_echo_b),
        ));
    }
    println!("| measure | msg/s per round | median | ratio to echo (unbatched) | ratio to echo (batched) | ratio to the fleet echo of the same write_batch (per round) | fleet retransmissions | journal commits (operations per commit) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, m, fleet_echo) in &rows {
        let r = IngestMeasure::med(&m.rate);
        let vs_fleet_echo = fleet_echo.map_or("—".to_string(), |fe| {
            let per_round: Vec<String> = m
                .rate
                .iter()
                .zip(&fe.rate)
                .map(|(a, b)| format!("{:.2}", a / b))
                .collect();
            format!(
                "{:.2}× ({})",
                r / IngestMeasure::med(&fe.rate),
                per_round.join(" / ")
            )
        });
        let re = m
            .retransmissions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / ");
        let commits = m
            .commits
            .iter()
            .zip(&m.per_commit)
            .map(|(c, p)| format!("{c:.0} ({p:.1})"))
            .collect::<Vec<_>>()
            .join(" / ");
        println!(
            "| {name} | {} | {r:.0} | {:.2}× | {:.2}× | {vs_fleet_echo} | {re} | {commits} |",
            IngestMeasure::list(&m.rate),
            r / e1,
            r / eb,
        );
    }
    println!("\nCPU per message (µs of user + system time, median over rounds; load generator = this process: the fleet, and for the echo also the echo client):\n");
    println!("| measure | broker | gateway | load generator | sum |");
    println!("|---|---|---|---|---|");
    for (name, m, _) in &rows {
        let (b, l) = (
            IngestMeasure::med(&m.broker_us),
            IngestMeasure::med(&m.load_us),
        );
        let g = if m.gateway_us.is_empty() {
            0.0
        } else {
            IngestMeasure::med(&m.gateway_us)
        };
        println!("| {name} | {b:.1} | {g:.1} | {l:.1} | {:.1} |", b + g + l);
    }
    let (g1, gb) = (
        IngestMeasure::med(&gw1.rate),
        IngestMeasure::med(&gw_b.rate),
    );
    println!("\nwrite_batch {batch} / 1: {:.2}×; one-way QoS 1 relay (publisher → subscriber, no round trip) {relay:.0} msg/s: gateway write_batch {batch} / relay {:.2}×", gb / g1, gb / relay);
    if compare.is_some() {
        let gc = IngestMeasure::med(&gw_c.rate);
        let per_round: Vec<String> = gw_b
            .rate
            .iter()
            .zip(&gw_c.rate)
            .map(|(a, b)| format!("{:.2}×", a / b))
            .collect();
        println!(
            "this build / compared binary: {:.2}× (median; per round {})",
            gb / gc,
            per_round.join(", ")
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Fleet {
            devices,
            every,
            warmup,
            window,
            only,
        } => fleet(devices, every, warmup, window, only).await,
        Cmd::Start { runs, idle, only } => start(runs, idle, only).await,
        Cmd::Backlog { events } => backlog(events).await,
        Cmd::Ingest {
            presses,
            rounds,
            batch,
            compare,
        } => ingest(presses, rounds, batch, compare).await,
    }
}
