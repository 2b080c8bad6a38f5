//! Benchmark of the staff console (not a test: it measures, it does not assert), issue 13:
//!
//! (a) live board: with `--sse-clients` (50) live streams open (`/api/alerts/stream`, read as a
//!     browser's EventSource would), how long after the staff MQTT alert each stream has the
//!     press; baseline in the same run: the same alert's fan-out to as many MQTT staff clients
//!     through Mosquitto (time after the first of them has it);
//! (b) page render: server time of the board and the alert list on a journal seeded with a
//!     year of alerts for `--residents` (1,600) residents, measured as the loopback round trip
//!     on a kept-alive connection (an upper bound of the server time); baseline in the same run:
//!     the console's stylesheet through the same server and auth layer (no journal read).
//!
//! Run it with `tests/bench console` (release build; Mosquitto and PostgreSQL as tests/run sets
//! them up).

use clap::Parser;
use eldergate_e2e::*;
use eldergate_protocol::payload::AlarmAction;
use eldergate_sim::{Fleet, StaffClient, StaffMessage};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Residents on the roster (each with a button).
    #[arg(long, default_value_t = 1600)]
    residents: usize,
    /// Alerts per day in the seeded year.
    #[arg(long, default_value_t = 100)]
    alerts_per_day: usize,
    /// Live streams (browsers) open while pressing.
    #[arg(long, default_value_t = 50)]
    sse_clients: usize,
    /// Presses measured (one per fresh button), at `--press-rate` per second.
    #[arg(long, default_value_t = 200)]
    presses: usize,
    /// Presses per second.
    #[arg(long, default_value_t = 10)]
    press_rate: u64,
    /// Requests per page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// More pages to time (paths, e.g. /console/history once it exists).
    #[arg(long)]
    page: Vec<String>,
}

/// What one watcher heard: (device, arrival) of each raised alert.
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Open alerts the seeded journal keeps: on residents after the pressed ones, so that a press
/// raises a new alert instead of joining one.
const SEEDED_OPEN: usize = 40;

/// A year of alerts for the roster, written into the stopped gateway's journal: resolved ones
/// spread over the last 365 days, and [`SEEDED_OPEN`] open ones. Returns how many.
async fn seed_year(gw: &Gateway, residents: usize, per_day: usize) -> anyhow::Result<usize> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(gw.data_dir.join("journal.db"))
        .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    let now = jiff::Timestamp::now();
    let kinds = [
        ("sos", "high"),
        ("device_offline", "medium"),
        ("low_battery", "low"),
        ("missed_checkin", "medium"),
    ];
    let staff = ["S001", "S009", "S010"];
    let mut tx = pool.begin().await?;
    let total = 365 * per_day;
    for i in 0..total {
        let resident = 1 + (i * 7919) % residents;
        let (kind, priority) = kinds[i % kinds.len()];
        let age_s = (i as i64 * 86_400 * 365) / total as i64 + 3600;
        let raised = now.checked_sub(jiff::SignedDuration::from_secs(age_s))?;
        let acked = raised.checked_add(jiff::SignedDuration::from_secs(60 + (i % 600) as i64))?;
        let resolved = acked.checked_add(jiff::SignedDuration::from_secs(900))?;
        let by = staff[i % staff.len()];
        sqlx::query(
            "INSERT INTO alerts (kind, subject, priority, device_id, resident_id, location, state, press_count, raised_seq, raised_at, acked_by, acked_at, acked_via, ack_note, resolved_by, resolved_at, resolved_via, resolve_note, notified_at) VALUES (?, ?, ?, ?, ?, ?, 'resolved', 1, 0, ?, ?, ?, 'http', '在路上', ?, ?, 'http', '已上门', ?)",
        )
        .bind(kind)
        .bind(format!("R{resident:05}"))
        .bind(priority)
        .bind(button(resident))
        .bind(format!("R{resident:05}"))
        .bind(format!("楼{resident}"))
        .bind(raised.to_string())
        .bind(by)
        .bind(acked.to_string())
        .bind(by)
        .bind(resolved.to_string())
        .bind(raised.to_string())
        .execute(&mut *tx)
        .await?;
    }
    for j in 0..SEEDED_OPEN {
        let resident = residents - j;
        let raised = now.checked_sub(jiff::SignedDuration::from_secs(60 * j as i64))?;
        let (state, by) = if j % 2 == 0 {
            ("raised", None)
        } else {
            ("acknowledged", Some("S009"))
        };
        sqlx::query(
            "INSERT INTO alerts (kind, subject, priority, device_id, resident_id, location, state, press_count, raised_seq, raised_at, acked_by, acked_at, acked_via, notified_at) VALUES ('sos', ?, 'high', ?, ?, ?, ?, 1, 0, ?, ?, ?, ?, ?)",
        )
        .bind(format!("R{resident:05}"))
        .bind(button(resident))
        .bind(format!("R{resident:05}"))
        .bind(format!("楼{resident}"))
        .bind(state)
        .bind(raised.to_string())
        .bind(by)
        .bind(by.map(|_| raised.to_string()))
        .bind(by.map(|_| "http"))
        .bind(raised.to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    pool.close().await;
    Ok(total + SEEDED_OPEN)
}

/// One live stream: every `alert` event whose change is `raised`, (device, arrival).
async fn sse_client(
    url: String,
    token: String,
    ready: Arc<tokio::sync::Barrier>,
    seen: Seen,
) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    ready.wait().await;
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        let at = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if !event.lines().any(|l| l == "event: alert") {
                continue;
            }
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(a) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if a["change"] == "raised" {
                if let (Some(d), Ok(mut s)) = (a["device_id"].as_str(), seen.lock()) {
                    s.push((d.to_string(), at));
                }
            }
        }
    }
    Ok(())
}

/// Times `n` GETs of `path` on one kept-alive connection; sorted milliseconds.
async fn time_page(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut t = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let start = Instant::now();
        let r = client.get(url).header("cookie", cookie).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(status.is_success(), "{url}: {status}");
        anyhow::ensure!(!body.is_empty(), "{url}: empty");
        // The first few warm the connection and the caches.
        if i >= 5 {
            t.push(ms);
        }
    }
    t.sort_by(f64::total_cmp);
    Ok(t)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let broker = Mosquitto::start()?;
    let db = TestDb::create().await?;
    let mut spec = GatewaySpec::new(broker.port, db.url.clone(), args.residents);
    spec.residents = true;
    spec.heartbeat_s = 86_400;
    // `[http]` is written by the harness; the limits go into it.
    let mut gw = Gateway::prepare(&spec, None)?;
    let config = std::fs::read_to_string(&gw.config)?;
    std::fs::write(
        &gw.config,
        config.replacen(
            "[http]\n",
            &format!(
                "[http]\nmax_sse_clients = {}\nmax_connections = {}\n",
                args.sse_clients + 8,
                args.sse_clients + 64
            ),
            1,
        ),
    )?;
    gw.spawn().await?;
    gw.sigterm()?;
    let t = Instant::now();
    let seeded = seed_year(&gw, args.residents, args.alerts_per_day).await?;
    eprintln!(
        "seeded {seeded} alerts in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    gw.spawn().await?;
    gw.set_password("S009", "bench password of S009")?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = client
        .post(gw.url("/console/login"))
        .form(&[("staff_id", "S009"), ("password", "bench password of S009")])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("eg_session="))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("login failed: {}", login.status()))?
        .to_string();

    // (b) pages on a year of alerts.
    let baseline = time_page(
        &client,
        &gw.url("/console/static/console.css"),
        &cookie,
        args.requests,
    )
    .await?;
    let mut pages = vec![
        "/console".to_string(),
        "/console/board/rows".to_string(),
        "/api/alerts?state=all".to_string(),
    ];
    pages.extend(args.page.iter().cloned());
    let mut page_rows = Vec::new();
    for p in &pages {
        let t = time_page(&client, &gw.url(p), &cookie, args.requests).await?;
        page_rows.push((p.clone(), t));
    }

    // (a) live board under 50 streams.
    let token = gw.token_for("S012", "read")?;
    let ready = Arc::new(tokio::sync::Barrier::new(args.sse_clients + 1));
    let mut streams = Vec::new();
    let mut sse_seen = Vec::new();
    for _ in 0..args.sse_clients {
        let seen: Seen = Arc::default();
        sse_seen.push(seen.clone());
        streams.push(tokio::spawn(sse_client(
            gw.url("/api/alerts/stream"),
            token.clone(),
            ready.clone(),
            seen,
        )));
    }
    tokio::time::timeout(Duration::from_secs(60), ready.wait())
        .await
        .map_err(|_| anyhow::anyhow!("the live streams did not open within 60 s"))?;
    let mut watchers = Vec::new();
    for i in 0..args.sse_clients {
        watchers.push(
            StaffClient::start("127.0.0.1", broker.port, SITE, &format!("bench-w{i}"), None)
                .await?,
        );
    }
    let mqtt_seen: Vec<Seen> = (0..watchers.len()).map(|_| Arc::default()).collect();
    let mut collectors = Vec::new();
    for (w, seen) in watchers.iter().zip(&mqtt_seen) {
        let mut rx = w.subscribe();
        let seen = seen.clone();
        collectors.push(tokio::spawn(async move {
            while let Ok(m) = rx.recv().await {
                if let StaffMessage::Alert(a, at) = m {
                    if a.change == "raised" {
                        if let Ok(mut s) = seen.lock() {
                            s.push((a.device_id.clone(), at));
                        }
                    }
                }
            }
        }));
    }
    let fleet = Fleet::start(fleet_options(broker.port, "bench-console-fleet")).await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.press_rate.max(1)));
    let presses = args.presses.min(args.residents.saturating_sub(SEEDED_OPEN));
    for i in 1..=presses {
        tick.tick().await;
        fleet.send(&button(i), AlarmAction::Press).await;
    }
    fleet.wait_all_acked(Duration::from_secs(60)).await;
    let complete = |sets: &[Seen]| {
        sets.iter()
            .all(|s| s.lock().map(|v| v.len() >= presses).unwrap_or(true))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !(complete(&sse_seen) && complete(&mqtt_seen)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reference of each press: when the first MQTT staff client had its alert.
    let mut first: HashMap<String, Instant> = HashMap::new();
    for s in &mqtt_seen {
        for (d, at) in s.lock().map(|v| v.clone()).unwrap_or_default() {
            first
                .entry(d)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
    }
    let lag = |sets: &[Seen]| {
        let mut v = Vec::new();
        for s in sets {
            for (d, at) in s.lock().map(|v| v.clone()).unwrap_or_default() {
                if let Some(t0) = first.get(&d) {
                    let ms = if at >= *t0 {
                        at.duration_since(*t0).as_secs_f64() * 1000.0
                    } else {
                        -(t0.duration_since(at).as_secs_f64() * 1000.0)
                    };
                    v.push(ms);
                }
            }
        }
        v.sort_by(f64::total_cmp);
        v
    };
    let sse = lag(&sse_seen);
    let mqtt = lag(&mqtt_seen);
    for s in streams {
        s.abort();
    }
    for c in collectors {
        c.abort();
    }

    let b50 = pct(&baseline, 0.5);
    println!(
        "\n## Console (issue 13): {} residents, {} alerts seeded over a year, {} live streams\n",
        args.residents, seeded, args.sse_clients
    );
    println!("| measure | eldergate | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| live board: stream has the press after the staff MQTT alert, p50 / p99 ({} samples; baseline: MQTT fan-out to {} staff clients, {} samples) | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.2} (p99) | p99 ≤ 50 ms |",
        sse.len(),
        args.sse_clients,
        mqtt.len(),
        pct(&sse, 0.5),
        pct(&sse, 0.99),
        pct(&mqtt, 0.5),
        pct(&mqtt, 0.99),
        pct(&sse, 0.99) / pct(&mqtt, 0.99).max(1e-3)
    );
    for (p, t) in &page_rows {
        println!(
            "| GET {p}: round trip p50 / p99 ({} requests; baseline: the stylesheet) | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.1} (p50) | ≤ 20 ms |",
            t.len(),
            pct(t, 0.5),
            pct(t, 0.99),
            b50,
            pct(&baseline, 0.99),
            pct(t, 0.5) / b50.max(1e-3)
        );
    }
    println!(
        "\nstreams that saw every press: {}/{}; MQTT staff clients: {}/{}",
        sse_seen
            .iter()
            .filter(|s| s.lock().map(|v| v.len() >= presses).unwrap_or(false))
            .count(),
        args.sse_clients,
        mqtt_seen
            .iter()
            .filter(|s| s.lock().map(|v| v.len() >= presses).unwrap_or(false))
            .count(),
        args.sse_clients
    );
    drop(watchers);
    drop(fleet);
    gw.sigterm()?;
    db.drop_db().await;
    Ok(())
}
