//! (h) Health kiosks (issue 14): reading → kiosk answer (published on the kiosk's downlink after
//! the reading commits) and reading → staff alert, under a paced load of readings from several
//! kiosks. Each kiosk runs visits like a real one: a card tap opens a resident's session (wait for
//! `session_opened`), then that resident's readings, paced; the next tap waits for the answers
//! (a real kiosk shows each answer before the next person). Each visit is a fresh resident, so a
//! dangerous blood pressure (186/112, grade 3) is judged alone and raises its own alert.

use eldergate_e2e::{connect_as, raw_client, SITE};
use eldergate_protocol::payload::{Down, ReadingResult};
use eldergate_sim::{StaffClient, StaffMessage};
use rumqttc::QoS;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kiosk ids registered for the bench: `kiosk-b01` … .
pub fn kiosk(i: usize) -> String {
    format!("kiosk-b{i:02}")
}

/// `[[devices]]` entries registering `n` MQTT health kiosks.
pub fn kiosk_devices(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "[[devices]]\nid = \"{}\"\nkind = \"health_kiosk\"\nheartbeat_s = 86400\n",
                kiosk(i)
            )
        })
        .collect()
}

/// A reading: (measure, value, value2, unit, context).
type Sample = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

/// Normal readings of a visit, cycled.
const NORMAL: &[Sample] = &[
    ("blood_pressure", "128", Some("82"), "mmHg", Some("sitting")),
    ("glucose", "5.6", None, "mmol/L", Some("fasting")),
    ("spo2", "97", None, "%", None),
    ("pulse", "72", None, "/min", None),
    ("temperature", "36.6", None, "Cel", None),
    ("weight", "61.5", None, "kg", None),
];

/// What the health run measured.
pub struct HealthRun {
    /// Reading → answer latencies (sorted).
    pub answers: Vec<Duration>,
    /// Dangerous reading → staff `raised` alert latencies (sorted).
    pub alerts: Vec<Duration>,
    /// Readings sent, dangerous ones among them.
    pub sent: usize,
    pub dangerous: usize,
    /// Answers by result (`see_staff`, `stored`, …), readings only.
    pub results: HashMap<String, usize>,
    /// Readings per second achieved (the pacing waits for each visit's answers).
    pub rate: f64,
}

/// One kiosk's sent times: seq → (sent, is a reading).
type Pending = Arc<Mutex<HashMap<u32, (Instant, bool)>>>;

/// Runs `readings` readings at `rate`/s in total over `kiosks` kiosks, `per_visit` readings per
/// visit (resident), every `danger_every`-th visit starting with a grade-3 blood pressure.
/// Residents are R00001… with cards CA000001… (the bench roster), one per visit.
pub async fn health_latency(
    port: u16,
    kiosks: usize,
    readings: usize,
    rate: u64,
    per_visit: usize,
    danger_every: usize,
) -> anyhow::Result<HealthRun> {
    let kiosks = kiosks.max(1);
    let per_visit = per_visit.max(1);
    let staff = StaffClient::start("127.0.0.1", port, SITE, "bench-health-staff", None).await?;
    let mut heard = staff.subscribe();
    // resident → when its dangerous reading was published.
    let alert_sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let alert_lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (as2, al2) = (alert_sent.clone(), alert_lat.clone());
    let alert_collector = tokio::spawn(async move {
        loop {
            match heard.recv().await {
                Ok(StaffMessage::Alert(a, at)) => {
                    if a.change != "raised" || a.kind != "bp_high" {
                        continue;
                    }
                    let Some(r) = a.resident_id.as_ref() else {
                        continue;
                    };
                    if let Some(t) = as2.lock().ok().and_then(|mut m| m.remove(r)) {
                        if let Ok(mut l) = al2.lock() {
                            l.push(at.duration_since(t));
                        }
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });

    // Visits: resident index (1-based), dangerous or not; dealt to kiosks round-robin.
    let visits = readings.div_ceil(per_visit);
    let mut plan: Vec<Vec<(usize, bool, usize)>> = vec![Vec::new(); kiosks];
    let mut left = readings;
    for v in 0..visits {
        let n = left.min(per_visit);
        left -= n;
        let danger = danger_every > 0 && v % danger_every == danger_every - 1;
        plan[v % kiosks].push((v + 1, danger, n));
    }
    // Each kiosk paces its share: kiosks × (1 / rate) between its readings.
    let gap = Duration::from_micros(1_000_000 * kiosks as u64 / rate.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, visits) in plan.into_iter().enumerate() {
        let id = kiosk(k + 1);
        let alert_sent = alert_sent.clone();
        tasks.push(tokio::spawn(run_kiosk(port, id, visits, gap, alert_sent)));
    }
    let mut answers = Vec::new();
    let mut results: HashMap<String, usize> = HashMap::new();
    let mut sent = 0;
    for t in tasks {
        let (lat, res, n) = t.await??;
        answers.extend(lat);
        sent += n;
        for (k, v) in res {
            *results.entry(k).or_default() += v;
        }
    }
    let rate = sent as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let dangerous = (0..visits)
        .filter(|v| danger_every > 0 && v % danger_every == danger_every - 1)
        .count();
    // The alerts follow the answers closely; give them a bounded while.
    for _ in 0..200 {
        let pending = alert_sent.lock().map(|m| m.len()).unwrap_or(0);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alert_collector.abort();
    let mut alerts = alert_lat.lock().map(|l| l.clone()).unwrap_or_default();
    alerts.sort();
    answers.sort();
    Ok(HealthRun {
        answers,
        alerts,
        sent,
        dangerous,
        results,
        rate,
    })
}

/// One kiosk: for each visit, tap the resident's card, wait for `session_opened`, send the
/// readings paced by `gap`, wait for their answers. Returns the reading → answer latencies,
/// the answers by result, and the readings sent.
async fn run_kiosk(
    port: u16,
    id: String,
    visits: Vec<(usize, bool, usize)>,
    gap: Duration,
    alert_sent: Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<(Vec<Duration>, HashMap<String, usize>, usize)> {
    let down = format!("eldergate/v1/{SITE}/down/{id}");
    let (_down_client, mut rx, ok) =
        connect_as(port, None, &format!("bench-{id}-down"), Some(&down)).await;
    anyhow::ensure!(ok, "cannot subscribe to {down}");
    let client = raw_client(port, &format!("bench-{id}")).await;
    let pending: Pending = Arc::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let results: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (p2, l2, r2) = (pending.clone(), lat.clone(), results.clone());
    let collector = tokio::spawn(async move {
        while let Some((_, body)) = rx.recv().await {
            let at = Instant::now();
            let Ok(Down::Reading { seq, result, .. }) = serde_json::from_slice::<Down>(&body)
            else {
                continue;
            };
            let Some((t, is_reading)) = p2.lock().ok().and_then(|mut m| m.remove(&seq)) else {
                continue; // a duplicate answer
            };
            if is_reading {
                if let Ok(mut l) = l2.lock() {
                    l.push(at.duration_since(t));
                }
                let name = serde_json::to_value(result)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{result:?}"));
                if let Ok(mut r) = r2.lock() {
                    *r.entry(name).or_default() += 1;
                }
            } else if result != ReadingResult::SessionOpened {
                eprintln!("{seq}: card tap answered {result:?}, not session_opened");
            }
            if done_tx.send(seq).is_err() {
                break;
            }
        }
    });
    let topic = |kind: &str| format!("eldergate/v1/{SITE}/tele/{id}/{kind}");
    let mut tick = tokio::time::interval(gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u32;
    let mut sent = 0usize;
    let wait = Duration::from_secs(30);
    for (resident, danger, n) in visits {
        seq += 1;
        let card = format!("{:08X}", 0xCA00_0000u32 + resident as u32);
        if let Ok(mut m) = pending.lock() {
            m.insert(seq, (Instant::now(), false));
        }
        let tap = serde_json::json!({"v": 1, "seq": seq, "card": card}).to_string();
        client
            .publish(topic("card"), QoS::AtLeastOnce, false, tap.into_bytes())
            .await?;
        let mut outstanding: std::collections::HashSet<u32> = [seq].into();
        await_answers(&mut done_rx, &mut outstanding, wait, &id).await;
        for j in 0..n {
            tick.tick().await;
            seq += 1;
            let (measure, value, value2, unit, context): Sample = if danger && j == 0 {
                (
                    "blood_pressure",
                    "186",
                    Some("112"),
                    "mmHg",
                    Some("sitting"),
                )
            } else {
                NORMAL[(resident + j) % NORMAL.len()]
            };
            let mut body = serde_json::json!({"v": 1, "seq": seq, "measure": measure, "value": value, "unit": unit});
            if let Some(v2) = value2 {
                body["value2"] = v2.into();
            }
            if let Some(c) = context {
                body["context"] = c.into();
            }
            let now = Instant::now();
            if let Ok(mut m) = pending.lock() {
                m.insert(seq, (now, true));
            }
            if danger && j == 0 {
                if let Ok(mut m) = alert_sent.lock() {
                    m.insert(format!("R{resident:05}"), now);
                }
            }
            outstanding.insert(seq);
            client
                .publish(
                    topic("reading"),
                    QoS::AtLeastOnce,
                    false,
                    body.to_string().into_bytes(),
                )
                .await?;
            sent += 1;
        }
        await_answers(&mut done_rx, &mut outstanding, wait, &id).await;
    }
    collector.abort();
    let lat = lat.lock().map(|l| l.clone()).unwrap_or_default();
    let results = results.lock().map(|r| r.clone()).unwrap_or_default();
    Ok((lat, results, sent))
}

/// Waits until every seq in `outstanding` is answered, or `wait` passes (then says which not:
/// a missing answer shows as fewer samples than readings, never as a made-up latency).
async fn await_answers(
    done: &mut tokio::sync::mpsc::UnboundedReceiver<u32>,
    outstanding: &mut std::collections::HashSet<u32>,
    wait: Duration,
    id: &str,
) {
    let deadline = tokio::time::Instant::now() + wait;
    while !outstanding.is_empty() {
        match tokio::time::timeout_at(deadline, done.recv()).await {
            Ok(Some(seq)) => {
                outstanding.remove(&seq);
            }
            Ok(None) | Err(_) => {
                eprintln!("{id}: no answer to seqs {outstanding:?} within {wait:?}");
                outstanding.clear();
            }
        }
    }
}
