//! The journal's identity: which journal this is, the epochs its events are keyed by at the
//! central store, and what a start does with a journal SQLite calls corrupt (docs/adr/0007).
//!
//! Why: central keys events by (gateway_id, epoch, seq) and ignores a key it already holds.
//! `seq` alone repeats whenever the journal goes back in time — deleted, truncated to zero,
//! restored from a backup, its WAL lost after a kill -9 — and central would then drop every new
//! event as a repeat.
//!
//! Guarantees:
//! - Every start begins a new epoch (128 random bits) at `first_seq = MAX(seq) + 1`, committed
//!   before the writer takes anything. Whatever prefix of the journal survives a loss, the events
//!   written after it are in an epoch no earlier run used, so they never collide at central; the
//!   events that survived keep their epoch, so resending them stays a repeat.
//! - A journal from before epochs keeps the legacy epoch `''` for its events (their central key
//!   is unchanged).
//! - A journal SQLite reports as corrupt or not a database at start — or that an earlier
//!   [`quick_check`] found corrupt (the marker file) — is moved aside to
//!   `journal.corrupt-<UTC time>.db` (with its `-wal` and `-shm`), never deleted; a fresh journal
//!   is created and the start goes on, so alarms flow. The [`StartReport`] says so (metric,
//!   ERROR log; the alerting domain raises `journal_replaced`).
//! - Any other failure (I/O, disk full, permissions, a journal from a newer version) stops the
//!   start as before: those are not the file's fault and setting it aside would lose nothing
//!   but gain nothing.

use super::format_ts;
use jiff::Timestamp;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A journal up to this size gets `PRAGMA quick_check` in the start path (about 0.5 s warm,
/// 2.5 s from a slow disk at this size, measured in docs/adr/0007); a larger one is checked
/// beside the working gateway ([`quick_check`], started by the alerting domain).
pub const START_CHECK_LIMIT: u64 = 64 * 1024 * 1024;

/// Name of the marker a failed [`quick_check`] leaves beside the journal: the next start sets
/// the journal aside.
const CHECK_FAILED: &str = "check-failed";

/// The epochs of this journal, oldest first. Fixed for the life of the process (only a start
/// adds one).
#[derive(Debug, Clone, Default)]
pub struct Epochs(Vec<(i64, String)>);

impl Epochs {
    /// The epoch of event `seq`.
    pub fn of(&self, seq: i64) -> &str {
        let after = self.0.partition_point(|(first, _)| *first <= seq);
        after
            .checked_sub(1)
            .and_then(|i| self.0.get(i))
            .map_or("", |(_, e)| e.as_str())
    }

    /// The epoch of this run (its new events).
    pub fn current(&self) -> &str {
        self.0.last().map_or("", |(_, e)| e.as_str())
    }
}

/// What opening the journal found and did. Read by `/healthz`, the alerting domain and the
/// forwarder.
#[derive(Debug, Clone)]
pub struct StartReport {
    /// The journal file.
    pub path: PathBuf,
    /// The journal's id (random, hex).
    pub journal_id: String,
    /// When the journal was created (RFC 3339 UTC).
    pub created_at: String,
    /// Why: `new`, `legacy`, or `replaced a corrupt journal set aside as …`.
    pub origin: String,
    /// Its epochs; [`Epochs::current`] is this run's.
    pub epochs: Epochs,
    /// Where a corrupt journal was moved at this start, if one was.
    pub replaced: Option<PathBuf>,
}

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite refused (not corruption: I/O, disk full, permissions …).
    #[error("cannot open the journal {path}: {source}")]
    Sqlite {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        source: sqlx::Error,
    },
    /// The migrations failed for a reason other than corruption (e.g. a journal written by a
    /// newer gateway).
    #[error("journal migration failed on {path}: {source}; is this journal from a newer eldergate? (install that version, or move the file aside)")]
    Migrate {
        /// The journal file.
        path: PathBuf,
        /// What sqlx said.
        source: sqlx::migrate::MigrateError,
    },
    /// A corrupt journal could not be moved aside.
    #[error("the journal {path} is corrupt and could not be moved aside: {source}; move journal.db* out of the data dir by hand")]
    SetAside {
        /// The journal file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
}

/// Whether SQLite says the file is damaged or not a database (SQLITE_CORRUPT, SQLITE_NOTADB).
pub fn is_corruption(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            matches!(code, Some(11 | 26))
                || d.message().contains("malformed")
                || d.message().contains("not a database")
        }
        _ => false,
    }
}

fn migrate_corruption(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::Execute(e) | M::ExecuteMigration(e, _) => is_corruption(e),
        _ => false,
    }
}

/// A failure while preparing the journal: corruption (set the file aside) or anything else.
enum Failed {
    Corrupt(String),
    Other(OpenError),
}

fn fresh_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Opens the writer's connection to the journal at `path`: creates and migrates it, gives a new
/// journal its identity, begins this run's epoch. A corrupt journal is set aside and replaced.
pub(super) async fn open(
    path: &Path,
    options: SqliteConnectOptions,
) -> Result<(SqliteConnection, StartReport), OpenError> {
    let marker = sibling(path, CHECK_FAILED);
    let reason = if marker.exists() {
        let found = std::fs::read_to_string(&marker).unwrap_or_default();
        Some(format!(
            "an earlier integrity check failed: {}",
            found.trim()
        ))
    } else {
        match prepare(path, options.clone(), "new").await {
            Ok(done) => return Ok(done),
            Err(Failed::Other(e)) => return Err(e),
            Err(Failed::Corrupt(why)) => Some(why),
        }
    };
    let why = reason.unwrap_or_default();
    let aside = set_aside(path).map_err(|source| OpenError::SetAside {
        path: path.to_path_buf(),
        source,
    })?;
    metrics::counter!("eldergate_journal_replaced_total").increment(1);
    tracing::error!(
        journal = %path.display(),
        set_aside_as = %aside.display(),
        reason = %why,
        "the journal is corrupt: it was moved aside (nothing deleted) and a new journal started, so alarms keep flowing. \
         Open alerts and events not yet at the central store from before now are in the old file: \
         copy it off the device and follow docs/adr/0007-journal-identity.md"
    );
    let origin = format!(
        "replaced a corrupt journal set aside as {}",
        aside.display()
    );
    match prepare(path, options, &origin).await {
        Ok((conn, mut report)) => {
            report.replaced = Some(aside);
            Ok((conn, report))
        }
        Err(Failed::Other(e)) => Err(e),
        Err(Failed::Corrupt(why)) => Err(OpenError::Sqlite {
            path: path.to_path_buf(),
            source: sqlx::Error::Protocol(format!("a new journal is corrupt at once: {why}")),
        }),
    }
}

async fn prepare(
    path: &Path,
    options: SqliteConnectOptions,
    origin: &str,
) -> Result<(SqliteConnection, StartReport), Failed> {
    let sqlite = |source: sqlx::Error| {
        if is_corruption(&source) {
            Failed::Corrupt(source.to_string())
        } else {
            Failed::Other(OpenError::Sqlite {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut conn = options.connect().await.map_err(sqlite)?;
    // The header and the schema: a file that is not a database fails here, before anything
    // else reads it.
    sqlx::query("SELECT COUNT(*) FROM sqlite_schema")
        .fetch_one(&mut conn)
        .await
        .map_err(sqlite)?;
    let small = std::fs::metadata(path).is_ok_and(|m| m.len() <= START_CHECK_LIMIT);
    if small {
        if let Some(problem) = check_conn(&mut conn).await.map_err(sqlite)? {
            return Err(Failed::Corrupt(problem));
        }
    }
    sqlx::migrate!("./migrations/journal")
        .run_direct(&mut conn)
        .await
        .map_err(|source| {
            if migrate_corruption(&source) {
                Failed::Corrupt(source.to_string())
            } else {
                Failed::Other(OpenError::Migrate {
                    path: path.to_path_buf(),
                    source,
                })
            }
        })?;
    let report = begin_epoch(&mut conn, path, origin).await.map_err(sqlite)?;
    Ok((conn, report))
}

/// Gives a new journal its identity and begins this run's epoch, in one committed transaction.
async fn begin_epoch(
    conn: &mut SqliteConnection,
    path: &Path,
    origin: &str,
) -> Result<StartReport, sqlx::Error> {
    let now = format_ts(Timestamp::now());
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "INSERT OR IGNORE INTO journal_identity (id, journal_id, created_at, origin) VALUES (1, ?, ?, ?)",
    )
    .bind(fresh_id())
    .bind(&now)
    .bind(origin)
    .execute(&mut *tx)
    .await?;
    let identity = sqlx::query("SELECT journal_id, created_at, origin FROM journal_identity")
        .fetch_one(&mut *tx)
        .await?;
    // The last seq reads the rightmost path of `events`, the pages the writer appends to next.
    let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM events")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    sqlx::query("INSERT INTO journal_epochs (epoch, first_seq, started_at) VALUES (?, ?, ?)")
        .bind(fresh_id())
        .bind(last.saturating_add(1))
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    let epochs = sqlx::query("SELECT first_seq, epoch FROM journal_epochs ORDER BY first_seq, id")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    tx.commit().await?;
    let report = StartReport {
        path: path.to_path_buf(),
        journal_id: identity.try_get(0)?,
        created_at: identity.try_get(1)?,
        origin: identity.try_get(2)?,
        epochs: Epochs(epochs),
        replaced: None,
    };
    tracing::info!(
        journal_id = %report.journal_id,
        epoch = %report.epochs.current(),
        first_seq = last.saturating_add(1),
        origin = %report.origin,
        "journal opened; new epoch begun"
    );
    Ok(report)
}

/// `journal.db` → `journal.db.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Moves `journal.db`, `-wal`, `-shm` and the check marker to `journal.corrupt-<UTC>.db…` in the
/// same directory (a rename: nothing is copied or deleted) and syncs the directory. SQLite finds
/// a WAL by name, so `sqlite3 journal.corrupt-….db` still reads what the WAL held.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut target = dir.join(format!("journal.corrupt-{stamp}.db"));
    let mut n = 1u32;
    while target.exists() {
        target = dir.join(format!("journal.corrupt-{stamp}-{n}.db"));
        n = n.saturating_add(1);
    }
    for suffix in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = target.as_os_str().to_owned();
        to.push(suffix);
        rename_if_present(Path::new(&from), Path::new(&to))?;
    }
    rename_if_present(
        &sibling(path, CHECK_FAILED),
        &sibling(&target, CHECK_FAILED),
    )?;
    rename_if_present(path, &target)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(target)
}

fn rename_if_present(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Runs `PRAGMA quick_check` on its own read-only connection (it reads the whole file: about
/// 1 s per 130 MB from the page cache, 4–5 s from disk, measured in docs/adr/0007 — too slow
/// for the start path, so it runs beside a working gateway). Returns `None` when the journal is
/// sound, or what SQLite found; then the marker is written and the next start sets the journal
/// aside.
pub async fn quick_check(path: &Path) -> Result<Option<String>, sqlx::Error> {
    let started = Instant::now();
    let found = async {
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .log_statements(tracing::log::LevelFilter::Trace)
            .connect()
            .await?;
        check_conn(&mut conn).await
    }
    .await;
    let found = match found {
        Err(e) if is_corruption(&e) => Some(e.to_string()),
        other => other?,
    };
    let secs = started.elapsed().as_secs_f64();
    metrics::gauge!("eldergate_journal_check_seconds").set(secs);
    match &found {
        None => tracing::info!(seconds = secs, "journal quick_check: ok"),
        Some(problem) => {
            metrics::gauge!("eldergate_journal_corrupt").set(1.0);
            if let Err(e) = std::fs::write(sibling(path, CHECK_FAILED), problem) {
                tracing::error!(error = %e, "cannot write the journal's check-failed marker");
            }
            tracing::error!(journal = %path.display(), %problem, "journal quick_check found corruption: the journal will be set aside at the next start; restart the gateway (systemctl restart eldergate) soon");
        }
    }
    Ok(found)
}

/// `PRAGMA quick_check` on `conn`: `None` when sound, else what SQLite found (at most 20 lines).
async fn check_conn(conn: &mut SqliteConnection) -> Result<Option<String>, sqlx::Error> {
    let rows = sqlx::query("PRAGMA quick_check(20)")
        .fetch_all(&mut *conn)
        .await?;
    let lines = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match lines.as_slice() {
        [ok] if ok == "ok" => None,
        _ => Some(lines.join("; ")),
    })
}

/// A start step after [`open`] (the domains' reloads) found the journal corrupt: leave the
/// marker, so that the restart the failed start leads to sets the journal aside.
pub fn mark_if_corrupt(path: &Path, error: &str) {
    if error.contains("malformed") || error.contains("not a database") {
        let _ = std::fs::write(sibling(path, CHECK_FAILED), error);
        tracing::error!(journal = %path.display(), %error, "the journal is corrupt: the next start sets it aside");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_belongs_to_the_latest_epoch_that_began_at_or_before_it() {
        let e = Epochs(vec![
            (0, String::new()),
            (11, "a".into()),
            (11, "b".into()), // a start whose events were all lost, then another at the same seq
            (20, "c".into()),
        ]);
        assert_eq!(e.of(1), "");
        assert_eq!(e.of(10), "");
        assert_eq!(e.of(11), "b");
        assert_eq!(e.of(19), "b");
        assert_eq!(e.of(20), "c");
        assert_eq!(e.of(i64::MAX), "c");
        assert_eq!(e.current(), "c");
        assert_eq!(Epochs::default().of(5), "");
    }

    async fn start(dir: &Path) -> StartReport {
        let (journal, writer) = super::super::open(dir, 16, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let report = journal.start().clone();
        drop(writer);
        journal.readers().close().await;
        report
    }

    #[tokio::test]
    async fn every_start_begins_a_new_epoch_and_keeps_the_journal_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = start(dir.path()).await;
        let second = start(dir.path()).await;
        assert_eq!(first.origin, "new");
        assert_eq!(first.journal_id, second.journal_id);
        assert_ne!(first.epochs.current(), second.epochs.current());
        assert_eq!(first.epochs.current().len(), 32);
        assert_eq!(second.epochs.of(1), second.epochs.current());
        assert!(second.replaced.is_none());
    }

    #[tokio::test]
    async fn a_journal_that_is_not_a_database_is_set_aside_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let first = start(dir.path()).await;
        let path = dir.path().join("journal.db");
        // Everything into the main file first: SQLite reads a page from the WAL when it is there.
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let garbage = vec![0x5Au8; 8192];
        std::fs::write(&path, &garbage).unwrap();
        let second = start(dir.path()).await;
        let aside = second.replaced.clone().expect("set aside");
        assert_eq!(std::fs::read(&aside).unwrap(), garbage);
        assert!(aside
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("journal.corrupt-")));
        assert_ne!(first.journal_id, second.journal_id);
        assert!(second.origin.contains(&aside.display().to_string()));
    }

    #[tokio::test]
    async fn a_failed_check_sets_the_journal_aside_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = start(dir.path()).await;
        std::fs::write(sibling(&first.path, CHECK_FAILED), "page 3: bad").unwrap();
        let second = start(dir.path()).await;
        let aside = second.replaced.clone().expect("set aside");
        assert!(sibling(&aside, CHECK_FAILED).exists());
        assert!(!sibling(&first.path, CHECK_FAILED).exists());
        assert_ne!(first.journal_id, second.journal_id);
    }

    #[tokio::test]
    async fn a_sound_journal_passes_its_quick_check() {
        let dir = tempfile::tempdir().unwrap();
        let report = start(dir.path()).await;
        assert_eq!(quick_check(&report.path).await.unwrap(), None);
    }
}
