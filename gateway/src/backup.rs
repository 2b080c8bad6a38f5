//! `eldergate backup` and `eldergate restore`: a consistent copy of the journal taken while the
//! gateway runs, and putting one back (docs/adr/0014, ADR 0007 for epochs).
//!
//! Guarantees:
//! - A backup is one SQLite transaction's snapshot (`VACUUM INTO` on a read-only connection: the
//!   writer is never blocked), written to a temporary name, checked (`quick_check`), fsynced and
//!   renamed; an existing file is never overwritten.
//! - A restore never deletes anything: the journal it replaces is renamed to
//!   `journal.before-restore-<UTC time>.db` (with its `-wal`/`-shm`), the restored copy is
//!   fsynced and renamed into place, the directory fsynced. It refuses while the gateway answers
//!   on its HTTP address.
//! - A restored journal does not reuse a sequence number the replaced journal (or the central
//!   store, or the operator's `--seq-floor`) already used: the restore appends a
//!   `journal_restored` event at `floor + 1` under a new epoch starting there, so the gateway's
//!   next `seq` (MAX + 1) continues above it. Even where no floor is known (the old journal lost
//!   with its disk, central unreachable), the next start begins a new epoch, so central never
//!   takes a new event for an old one (ADR 0007); the restore says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rand::RngCore;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, SqliteConnection};

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists.
    #[error("{0} exists; choose another name (a backup never overwrites)")]
    Exists(PathBuf),
    /// The journal or the backup cannot be read or written.
    #[error("{what}: {source}")]
    Db {
        /// What was being done.
        what: String,
        /// The SQLite error.
        source: sqlx::Error,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The backup file is damaged or not a journal.
    #[error("{0} is not a sound journal: {1}")]
    NotAJournal(PathBuf, String),
    /// The gateway still runs.
    #[error("the gateway answers at {0}: stop it first (systemctl stop eldergate)")]
    Running(String),
}

fn db(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Db { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// What a backup holds.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    /// The file written.
    pub file: PathBuf,
    /// Its size, bytes.
    pub bytes: u64,
    /// The journal's identity.
    pub journal_id: Option<String>,
    /// Highest event seq in it.
    pub max_seq: i64,
    /// Events in it.
    pub events: i64,
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct RestoreSummary {
    /// The journal now in place.
    pub journal: PathBuf,
    /// Where the journal it replaced went, if there was one.
    pub replaced_moved_to: Option<PathBuf>,
    /// Highest seq in the backup.
    pub backup_max_seq: i64,
    /// Highest seq known to be used already (replaced journal, central, `--seq-floor`).
    pub seq_floor: i64,
    /// Seq of the `journal_restored` event; the gateway continues above it.
    pub restored_event_seq: i64,
    /// Where the floor came from, and what could not be consulted.
    pub notes: Vec<String>,
}

async fn open(path: &Path, read_only: bool) -> Result<SqliteConnection, BackupError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .busy_timeout(Duration::from_secs(10));
    SqliteConnection::connect_with(&opts)
        .await
        .map_err(db(format!("cannot open {}", path.display())))
}

/// Checks a journal file and returns (journal_id, max seq, events).
async fn inspect(path: &Path) -> Result<(Option<String>, i64, i64), BackupError> {
    let mut c = open(path, true).await?;
    let bad = |e: sqlx::Error| BackupError::NotAJournal(path.to_path_buf(), e.to_string());
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut c)
        .await
        .map_err(bad)?;
    if check != "ok" {
        return Err(BackupError::NotAJournal(path.to_path_buf(), check));
    }
    let (max_seq, events): (i64, i64) =
        sqlx::query_as("SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM events")
            .fetch_one(&mut c)
            .await
            .map_err(bad)?;
    let journal_id: Option<String> =
        sqlx::query_scalar("SELECT journal_id FROM journal_identity WHERE id = 1")
            .fetch_optional(&mut c)
            .await
            .unwrap_or(None);
    c.close().await.ok();
    Ok((journal_id, max_seq, events))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot fsync {}", dir.display())))
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes a consistent copy of the journal in `data_dir` to `out` (the gateway may be running).
pub async fn backup(data_dir: &Path, out: &Path) -> Result<BackupSummary, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let journal = data_dir.join("journal.db");
    if !journal.exists() {
        return Err(BackupError::Io {
            what: format!("no journal at {}", journal.display()),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp); // a partial file of an earlier, interrupted backup
    {
        // One read transaction: the snapshot is consistent; the writer carries on (WAL).
        let mut c = open(&journal, true).await?;
        sqlx::query("VACUUM INTO ?")
            .bind(tmp.to_string_lossy().as_ref())
            .execute(&mut c)
            .await
            .map_err(db(format!("cannot back up {}", journal.display())))?;
        c.close().await.ok();
    }
    let (journal_id, max_seq, events) = match inspect(&tmp).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot fsync {}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(io(format!("cannot rename to {}", out.display())))?;
    sync_dir(&parent(out))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupSummary {
        file: out.to_path_buf(),
        bytes,
        journal_id,
        max_seq,
        events,
    })
}

/// What a restore is told.
pub struct RestoreRequest<'a> {
    /// The gateway's data dir.
    pub data_dir: &'a Path,
    /// The backup file.
    pub from: &'a Path,
    /// Highest seq the central store holds for this gateway, if it was asked.
    pub central_max_seq: Result<Option<i64>, String>,
    /// The operator's floor.
    pub seq_floor: Option<i64>,
}

/// Puts a backup in place of the journal in `data_dir` (the gateway must be stopped).
pub async fn restore(req: RestoreRequest<'_>) -> Result<RestoreSummary, BackupError> {
    let (_, backup_max, _) = inspect(req.from).await?;
    let journal = req.data_dir.join("journal.db");
    let mut notes = Vec::new();
    let mut floor = backup_max;
    if journal.exists() {
        match inspect(&journal).await {
            Ok((_, max, _)) => {
                notes.push(format!("the replaced journal used seq up to {max}"));
                floor = floor.max(max);
            }
            Err(e) => notes.push(format!("the replaced journal could not be read ({e})")),
        }
    } else {
        notes.push("there was no journal to replace".into());
    }
    match req.central_max_seq {
        Ok(Some(max)) => {
            notes.push(format!("the central store holds seq up to {max}"));
            floor = floor.max(max);
        }
        Ok(None) => notes.push("the central store holds nothing of this gateway".into()),
        Err(e) => notes.push(format!("the central store was not consulted: {e}")),
    }
    if let Some(f) = req.seq_floor {
        notes.push(format!("--seq-floor {f}"));
        floor = floor.max(f);
    }
    if floor == backup_max {
        notes.push(
            "no higher seq is known: if the lost journal went further, its numbers are reused, \
             under a new epoch, so the central store still takes every new event (ADR 0007)"
                .into(),
        );
    }
    let tmp = req.data_dir.join("journal.restoring.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    std::fs::copy(req.from, &tmp).map_err(io(format!(
        "cannot copy {} to {}",
        req.from.display(),
        tmp.display()
    )))?;
    let restored_seq = floor.saturating_add(1);
    {
        // The restore event, under an epoch of its own starting at its seq: its key at central
        // is new whatever the old journal's epochs forwarded.
        let opts = SqliteConnectOptions::new()
            .filename(&tmp)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(db(format!("cannot open {}", tmp.display())))?;
        let now = Timestamp::now();
        let at = now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let mut epoch = [0u8; 16];
        rand::rng().fill_bytes(&mut epoch);
        let epoch: String = epoch.iter().map(|b| format!("{b:02x}")).collect();
        let body = serde_json::json!({
            "from": req.from.display().to_string(), "backup_max_seq": backup_max,
            "seq_floor": floor, "notes": notes,
        });
        let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
        sqlx::query("INSERT INTO journal_epochs (epoch, first_seq, started_at) VALUES (?, ?, ?)")
            .bind(&epoch)
            .bind(restored_seq)
            .bind(&at)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot record the restore's epoch"))?;
        sqlx::query("INSERT INTO events (seq, kind, received_at, body) VALUES (?, 'journal_restored', ?, ?)")
            .bind(restored_seq)
            .bind(&at)
            .bind(body.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db("cannot record the restore"))?;
        tx.commit().await.map_err(db("cannot commit the restore"))?;
        pool.close().await;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot fsync {}", tmp.display())))?;
    let mut moved_to = None;
    if journal.exists() {
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let aside = req
            .data_dir
            .join(format!("journal.before-restore-{stamp}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", journal.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&from, &to)
                    .map_err(io(format!("cannot move {} aside", from.display())))?;
            }
        }
        moved_to = Some(aside);
    }
    std::fs::rename(&tmp, &journal).map_err(io(format!(
        "cannot rename {} to {}",
        tmp.display(),
        journal.display()
    )))?;
    sync_dir(req.data_dir)?;
    Ok(RestoreSummary {
        journal,
        replaced_moved_to: moved_to,
        backup_max_seq: backup_max,
        seq_floor: floor,
        restored_event_seq: restored_seq,
        notes,
    })
}
