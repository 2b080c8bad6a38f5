//! The central store: where every gateway's events end up, keyed by (gateway_id, epoch, seq).
//!
//! Invariant: [`CentralStore::insert`] is idempotent. Inserting a batch twice, or a batch that
//! overlaps one already stored, stores each (gateway_id, epoch, seq) once (`ON CONFLICT DO
//! NOTHING`), so the forwarder can retry anything it is unsure of. The epoch (the journal run
//! that wrote the event, docs/adr/0007) keeps a journal that went back in time from reusing a
//! key: without it central would drop its new events as repeats.
//!
//! The district's PostgreSQL (docs/adr/0014) gives each gateway a role that may only INSERT and
//! SELECT its own rows (row-level security) and no DDL: such a gateway never migrates, it checks
//! that the schema has every migration it knows (otherwise a connect error naming the command,
//! and the forwarder retries); `eldergate central migrate` runs them as the migrator. PostgreSQL
//! refuses `COPY FROM` under row-level security, so such a gateway always stages and merges.

use crate::journal::{Epochs, EventRow};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::QueryBuilder;
use std::path::Path;
use std::time::Duration;

/// A connected central store.
#[derive(Clone, Debug)]
pub enum CentralStore {
    /// PostgreSQL (production), and how batches go in.
    Postgres(PgPool, PgInsert),
    /// A SQLite file (the embedded default, for the demo and single-site installs).
    Sqlite(SqlitePool),
}

impl CentralStore {
    /// Connects and runs the migrations. `sqlite:` paths are relative to `data_dir`. A PostgreSQL
    /// URL goes through [`crate::central_link::pg_options`] (TLS policy, `ca_file` as trust root).
    pub async fn connect(
        url: &str,
        data_dir: &Path,
        ca_file: Option<&Path>,
    ) -> Result<Self, sqlx::Error> {
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
            let (options, _) = crate::central_link::pg_options(url, ca_file)
                .map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            migrate_if_behind(&pool).await?;
            // A gateway's own role is under row-level security (COPY FROM refused); the
            // migrator, a table owner or a superuser is not.
            let rls: bool = sqlx::query_scalar("SELECT row_security_active('events')")
                .fetch_one(&pool)
                .await?;
            let how = if rls { PgInsert::Merge } else { PgInsert::Copy };
            Ok(CentralStore::Postgres(pool, how))
        }
    }

    /// Stores a batch, idempotently, in one transaction; `epochs` gives each row's epoch.
    pub async fn insert(
        &self,
        gateway_id: &str,
        site_id: &str,
        epochs: &Epochs,
        rows: &[EventRow],
    ) -> Result<(), sqlx::Error> {
        match self {
            CentralStore::Postgres(pool, how) => {
                let csv = to_csv(gateway_id, site_id, epochs, rows).map_err(|e| {
                    sqlx::Error::Protocol(format!("cannot encode batch as CSV: {e}"))
                })?;
                if *how == PgInsert::Merge {
                    return copy_merge(pool, &csv).await;
                }
                // Fast path: COPY straight into the table. A COPY is all-or-nothing, so a batch
                // that overlaps rows already stored (a retry after an unclear failure) fails
                // whole with a unique violation and takes the merge path below.
                match copy_direct(pool, &csv).await {
                    Ok(()) => Ok(()),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        metrics::counter!("eldergate_forward_merges_total").increment(1);
                        copy_merge(pool, &csv).await
                    }
                    Err(e) => Err(e),
                }
            }
            CentralStore::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                // SQLite allows 32766 bound parameters; 11 per row.
                for chunk in rows.chunks(2900) {
                    let mut qb = QueryBuilder::new(format!("INSERT INTO events {COPY_COLUMNS} "));
                    qb.push_values(chunk, |mut b, r| {
                        b.push_bind(gateway_id)
                            .push_bind(epochs.of(r.seq))
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
                    qb.push(" ON CONFLICT (gateway_id, epoch, seq) DO NOTHING");
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await
            }
        }
    }
}

/// How a PostgreSQL central store takes a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgInsert {
    /// `COPY` straight into `events`, merging only when a batch overlaps (owner, superuser).
    Copy,
    /// `COPY` into a temporary table, then `INSERT … ON CONFLICT DO NOTHING` (a gateway's role
    /// under row-level security, where `COPY FROM` is refused).
    Merge,
}

/// Runs the central PostgreSQL migrations this build knows, as the connected role (the
/// migrator: `eldergate central migrate`), and creates the monthly partitions for the next
/// 12 months. Returns the number of partitions created.
pub async fn migrate_postgres(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::migrate!("./migrations/central_pg").run(pool).await?;
    sqlx::query_scalar(
        "SELECT eldergate_ensure_partitions(now() - interval '1 month', now() + interval '12 months')",
    )
    .fetch_one(pool)
    .await
}

/// Migrates only if the schema lacks a migration this build knows; a gateway's role (no DDL)
/// meets an up-to-date schema and never tries.
async fn migrate_if_behind(pool: &PgPool) -> Result<(), sqlx::Error> {
    let migrator = sqlx::migrate!("./migrations/central_pg");
    let wanted = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .unwrap_or(None);
    if applied.unwrap_or(0) >= wanted {
        return Ok(());
    }
    migrator.run(pool).await.map_err(|e| {
        sqlx::Error::Configuration(
            format!(
                "the central schema is at version {} and this gateway needs {wanted}; migrating \
                 as this role failed ({e}): run `eldergate central migrate` as the migrator",
                applied.unwrap_or(0)
            )
            .into(),
        )
    })?;
    Ok(())
}

const COPY_COLUMNS: &str =
    "(gateway_id, epoch, seq, site_id, kind, device_id, device_seq, alert_id, received_at, device_time, body)";

async fn copy_direct(pool: &PgPool, csv: &[u8]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY events {COPY_COLUMNS} FROM STDIN (FORMAT csv, FORCE_NOT_NULL (epoch))"
        ))
        .await?;
    copy.send(csv).await?;
    copy.finish().await?;
    tx.commit().await
}

/// COPY into a per-connection staging table, then insert what is not there yet.
async fn copy_merge(pool: &PgPool, csv: &[u8]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS staging_events
         (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
    .execute(&mut *tx)
    .await?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY staging_events {COPY_COLUMNS} FROM STDIN (FORMAT csv, FORCE_NOT_NULL (epoch))"
        ))
        .await?;
    copy.send(csv).await?;
    copy.finish().await?;
    sqlx::query(&format!(
        "INSERT INTO events {COPY_COLUMNS}
         SELECT gateway_id, epoch, seq, site_id, kind, device_id, device_seq, alert_id, received_at, device_time, body
         FROM staging_events ORDER BY seq
         ON CONFLICT (gateway_id, epoch, seq, received_at) DO NOTHING"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Encodes a batch as PostgreSQL CSV. `None` becomes an unquoted empty field, which COPY reads as
/// NULL; every text value that could be mistaken for one is quoted by the csv writer. The epoch is
/// never NULL: the legacy epoch '' is an empty field, read as '' by `FORCE_NOT_NULL (epoch)`.
fn to_csv(
    gateway_id: &str,
    site_id: &str,
    epochs: &Epochs,
    rows: &[EventRow],
) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * 256));
    for r in rows {
        let seq = r.seq.to_string();
        let device_seq = r.device_seq.map(|v| v.to_string()).unwrap_or_default();
        let alert_id = r.alert_id.map(|v| v.to_string()).unwrap_or_default();
        w.write_record([
            gateway_id,
            epochs.of(r.seq),
            seq.as_str(),
            site_id,
            r.kind.as_str(),
            r.device_id.as_deref().unwrap_or(""),
            device_seq.as_str(),
            alert_id.as_str(),
            r.received_at.as_str(),
            r.device_time.as_deref().unwrap_or(""),
            r.body.as_str(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
