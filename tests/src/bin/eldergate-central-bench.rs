//! How many gateways one central PostgreSQL takes (docs/SCALING.md). Not a test: it measures.
//!
//! Sets up a database of its own as the district would (migrated by `central::migrate_postgres`,
//! one login role per gateway under row-level security), then for each N: N simulated gateways
//! forward at once through the gateway's own code (`CentralStore::insert`, as its own role: COPY
//! into a staging table, `INSERT … ON CONFLICT DO NOTHING` under RLS, monthly partitions), each
//! sending `--batches` batches of `--batch` realistic events (~390 bytes, as the journal holds).
//! The baseline of the same run: N superuser connections `COPY` the same CSV straight into the
//! same partitioned table (no RLS, no staging, no conflict handling).
//!
//!   cargo run -p eldergate-e2e --bin eldergate-central-bench -- --gateways 1,10,40 --batch 10

use anyhow::Context;
use clap::Parser;
use eldergate::central::CentralStore;
use eldergate::journal::{Epochs, EventRow};
use eldergate_e2e::*;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Numbers of gateways forwarding at once, comma-separated.
    #[arg(long, default_value = "1,10,40", value_delimiter = ',')]
    gateways: Vec<usize>,
    /// Events per batch (a live gateway forwards small batches; a catch-up sends 5000).
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Batches per gateway.
    #[arg(long, default_value_t = 50)]
    batches: usize,
}

fn rows(from: i64, n: usize) -> Vec<EventRow> {
    (0..n as i64)
        .map(|i| EventRow {
            seq: from + i,
            kind: "alarm_press".into(),
            device_id: Some(format!("btn-{:04}", i % 500)),
            device_seq: Some(from + i),
            alert_id: None,
            received_at: "2026-11-30T08:00:00.000Z".into(),
            device_time: Some("2026-11-30T07:59:59.900Z".into()),
            body: serde_json::json!({
                "v": 1, "seq": from + i, "action": "press", "battery_pct": 87, "rssi": -71,
                "fw": "1.4.2", "location": "3号楼2单元501", "resident_id": "R00042",
                "note": "x".repeat(200),
            })
            .to_string(),
        })
        .collect()
}

fn csv_of(gw: &str, rows: &[EventRow]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        let seq = r.seq.to_string();
        let ds = r.device_seq.map(|v| v.to_string()).unwrap_or_default();
        let _ = w.write_record([
            gw,
            "",
            &seq,
            "site",
            &r.kind,
            r.device_id.as_deref().unwrap_or(""),
            &ds,
            "",
            &r.received_at,
            r.device_time.as_deref().unwrap_or(""),
            &r.body,
        ]);
        out.extend(w.into_inner().unwrap_or_default());
    }
    out
}

async fn raw_copy(pool: &PgPool, csv: &[u8]) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY events (gateway_id, epoch, seq, site_id, kind, device_id, device_seq, alert_id, received_at, device_time, body) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (epoch))",
        )
        .await?;
    copy.send(csv).await?;
    copy.finish().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = TestDb::create().await?;
    let admin = db.pool().await?;
    eldergate::central::migrate_postgres(&admin).await?;
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let max_n = args.gateways.iter().copied().max().unwrap_or(1);
    let mut stores = Vec::new();
    let mut roles = Vec::new();
    for g in 0..max_n {
        let id = format!("b{run}-{g}");
        let (role, pw) = eldergate::district::add_gateway(&admin, &id, "site").await?;
        let url = format!("postgres://{role}:{pw}@{}/{}", pg_host_port(), db.name);
        let dir = std::env::temp_dir();
        stores.push((
            id,
            CentralStore::connect(&url, &dir, None)
                .await
                .context("connect")?,
        ));
        roles.push(role);
    }
    let raw = PgPoolOptions::new()
        .max_connections(max_n as u32)
        .connect(&db.url)
        .await?;
    println!(
        "central bench: batch {} events × {} batches per gateway; events/s (batches/s)",
        args.batch, args.batches
    );
    println!("| gateways | gateway path (own role, RLS, staging + ON CONFLICT) | raw COPY (superuser) | ratio |");
    println!("|---|---|---|---|");
    let mut offset = 0i64;
    for &n in &args.gateways {
        let total = (n * args.batches * args.batch) as f64;
        // The gateway path.
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (id, store) in stores.iter().take(n) {
            let (id, store) = (id.clone(), store.clone());
            let (b, k, off) = (args.batch, args.batches, offset);
            tasks.push(tokio::spawn(async move {
                let epochs = Epochs::default();
                for i in 0..k {
                    let r = rows(off + (i * b) as i64 + 1, b);
                    store.insert(&id, "site", &epochs, &r).await?;
                }
                Ok::<_, sqlx::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let gw_s = t.elapsed().as_secs_f64();
        // The baseline: the same rows under other ids, raw COPY.
        let t = Instant::now();
        let mut tasks = Vec::new();
        for g in 0..n {
            let (b, k, off, pool) = (args.batch, args.batches, offset, raw.clone());
            let id = format!("raw{run}-{g}");
            tasks.push(tokio::spawn(async move {
                for i in 0..k {
                    let csv = csv_of(&id, &rows(off + (i * b) as i64 + 1, b));
                    raw_copy(&pool, &csv).await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let raw_s = t.elapsed().as_secs_f64();
        offset += (args.batches * args.batch) as i64;
        println!(
            "| {n} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} |",
            total / gw_s,
            (n * args.batches) as f64 / gw_s,
            total / raw_s,
            (n * args.batches) as f64 / raw_s,
            raw_s / gw_s
        );
    }
    drop(stores);
    raw.close().await;
    admin.close().await;
    db.drop_db().await;
    if let Ok(a) = PgPool::connect(&pg_admin_url()).await {
        for r in roles {
            let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{r}\""))
                .execute(&a)
                .await;
        }
    }
    Ok(())
}
