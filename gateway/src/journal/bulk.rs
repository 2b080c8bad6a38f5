//! Reads of many journal rows at once — the forwarder's batches, the dedupe window at start —
//! with rusqlite on a blocking thread (docs/adr/0023).
//!
//! Why not sqlx here: its SQLite driver runs each statement on a worker thread and hands every
//! row to the waiting task one by one; reading 1,000,000 keys took 9.2 s that SQLite itself reads
//! in 0.3 s, and the forwarder's drain spent most of its time in those hand-offs. Everything
//! else (writes, the console's queries, single lookups) stays on sqlx.
//!
//! Invariants:
//! - Read-only: the file is opened with `SQLITE_OPEN_READ_ONLY`; nothing here can write the
//!   journal, so the writer's single-connection discipline is untouched.
//! - One connection per [`BulkReader`], reused, used by one blocking task at a time; an error
//!   drops it and the next read opens a new one.
//! - A read sees the journal as committed when its statement starts (WAL snapshot), as a sqlx
//!   reader does.

use super::JournalError;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A read-only connection to the journal for reads of many rows, run on tokio's blocking pool.
#[derive(Clone)]
pub struct BulkReader {
    path: Arc<PathBuf>,
    conn: Arc<Mutex<Option<Connection>>>,
}

impl BulkReader {
    /// A reader of the journal at `path`; the file is opened at the first read.
    pub(crate) fn new(path: PathBuf) -> BulkReader {
        BulkReader {
            path: Arc::new(path),
            conn: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `f` on this reader's connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // A read that panicked took its connection with it (the slot is empty: reopened).
            let mut slot = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            let conn = match slot.take() {
                Some(c) => c,
                None => open(&this.path)?,
            };
            let out = f(&conn)?;
            *slot = Some(conn);
            Ok(out)
        })
        .await
        .map_err(|e| JournalError::Read(format!("the read task failed: {e}")))?
        .map_err(|e: rusqlite::Error| JournalError::Read(e.to_string()))
    }
}

fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}
