//! Tells staff about the journal's own health (docs/adr/0007): a corrupt journal set aside at
//! this start raises `journal_replaced`; then the journal's `PRAGMA quick_check` runs beside the
//! working gateway (seconds per GB: too slow for the start path) and corruption found raises
//! `journal_corrupt` (the next start sets the journal aside).
//!
//! Invariant: runs once per start and never blocks anything; shutdown aborts it.

use super::{Observation, Observe};
use crate::journal::Journal;
use std::time::Duration;

/// The check waits this long after start: a start is when a backlog of alarms is drained, and
/// the check reads the whole file.
const CHECK_AFTER: Duration = Duration::from_secs(30);

/// Raises the start's journal alert, if any, then runs the integrity check.
pub async fn run(journal: Journal) {
    if let Some(path) = &journal.start().replaced {
        journal
            .tell(Observe(Observation::JournalReplaced {
                path: path.display().to_string(),
            }))
            .await;
    }
    tokio::time::sleep(CHECK_AFTER).await;
    match journal.check().await {
        Ok(None) => {}
        Ok(Some(detail)) => {
            journal
                .tell(Observe(Observation::JournalCorrupt { detail }))
                .await
        }
        Err(e) => tracing::warn!(error = %e, "could not run the journal's integrity check"),
    }
}
