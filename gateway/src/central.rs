//! The central store: where every gateway's events end up, keyed by (gateway_id, seq).
//!
//! Invariant: [`CentralStore::insert`] is idempotent. Inserting a batch twice, or a batch that
//! overlaps one already stored, stores each (gateway_id, seq) once (`ON CONFLICT DO NOTHING`),
//! so the forwarder can retry anything it is unsure of.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::QueryBuilder;
use std::path::Path;
use std::time::Duration;

/// One journal event as forwarded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Gateway sequence number.
    pub seq: i64,
    /// Event kind.
    pub kind: String,
    /// Device, if any.
    pub device_id: Option<String>,
    /// Device sequence, if any.
    pub device_seq: Option<i64>,
    /// Alert, if any.
    pub alert_id: Option<i64>,
    /// Gateway receive time (RFC 3339).
    pub received_at: String,
    /// Device time (RFC 3339).
    pub device_time: Option<String>,
    /// JSON body.
    pub body: String,
}

/// A connected central store.
#[derive(Clone, Debug)]
pub enum CentralStore {
    /// PostgreSQL (production).
    Postgres(PgPool),
    /// A SQLite file (the embedded default, for the demo and single-site installs).
    Sqlite(SqlitePool),
}

impl CentralStore {
    /// Connects and runs the migrations. `sqlite:` paths are relative to `data_dir`.
    pub async fn connect(url: &str, data_dir: &Path) -> Result<Self, sqlx::Error> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let opts = SqliteConnectOptions::new()
                .filename(data_dir.join(path))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/central_sqlite")
                .run(&pool)
                .await?;
            Ok(CentralStore::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await?;
            sqlx::migrate!("./migrations/central_pg").run(&pool).await?;
            Ok(CentralStore::Postgres(pool))
        }
    }

    /// Stores a batch, idempotently, in one transaction.
    pub async fn insert(
        &self,
        gateway_id: &str,
        site_id: &str,
        rows: &[EventRow],
    ) -> Result<(), sqlx::Error> {
        match self {
            CentralStore::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO events (gateway_id, seq, site_id, kind, device_id, device_seq, alert_id, received_at, device_time, body)
                     SELECT $1, t.seq, $2, t.kind, t.device_id, t.device_seq, t.alert_id,
                            t.received_at::timestamptz, t.device_time::timestamptz, t.body::jsonb
                     FROM UNNEST($3::int8[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[])
                          AS t(seq, kind, device_id, device_seq, alert_id, received_at, device_time, body)
                     ON CONFLICT (gateway_id, seq) DO NOTHING",
                )
                .bind(gateway_id)
                .bind(site_id)
                .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.device_id.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.device_seq).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.alert_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.received_at.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.device_time.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.body.clone()).collect::<Vec<_>>())
                .execute(pool)
                .await?;
                Ok(())
            }
            CentralStore::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                // SQLite allows 32766 bound parameters; 10 per row.
                for chunk in rows.chunks(3000) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO events (gateway_id, seq, site_id, kind, device_id, device_seq, alert_id, received_at, device_time, body) ",
                    );
                    qb.push_values(chunk, |mut b, r| {
                        b.push_bind(gateway_id)
                            .push_bind(r.seq)
                            .push_bind(site_id)
                            .push_bind(&r.kind)
                            .push_bind(&r.device_id)
                            .push_bind(r.device_seq)
                            .push_bind(r.alert_id)
                            .push_bind(&r.received_at)
                            .push_bind(&r.device_time)
                            .push_bind(&r.body);
                    });
                    qb.push(" ON CONFLICT (gateway_id, seq) DO NOTHING");
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await
            }
        }
    }
}
