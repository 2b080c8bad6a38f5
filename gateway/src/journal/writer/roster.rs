//! A roster import inside the writer's transaction: cards of new residents are bound, cards of
//! residents who left the roster (and roster cards that were replaced) are retired, a returning
//! resident's retired card is reactivated, and one `roster_imported` event records it all. The
//! roster file is written and fsynced before COMMIT and moved into place after it; the running
//! gateway switches to the new roster only after COMMIT.
//!
//! A card bound in the journal to somebody else (active, lost or retired) refuses the whole
//! import: one card, one resident, and staff decide which.

use super::super::{format_ts, JournalError, RosterImport};
use super::{EventRow, Writer};
use crate::roster::{card_key, diff, Residents, StagedFile};
use jiff::Timestamp;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What an import produced: the reply (summary or refusal) and, when it is to be applied after
/// commit, the new roster and its staged file.
pub(super) type RosterOutcome = (
    Result<serde_json::Value, String>,
    Option<(Arc<Residents>, StagedFile)>,
);

impl Writer {
    pub(super) async fn apply_roster(
        &mut self,
        import: &RosterImport,
    ) -> Result<RosterOutcome, JournalError> {
        let refuse = |why: String| Ok((Err(why), None));
        if !self.registry.staff.contains_key(&import.by) {
            return refuse(format!("{:?} is not a registered staff id", import.by));
        }
        let Some(path) = self.registry.roster_path.clone() else {
            return refuse("this gateway's config has no residents_csv, so an imported roster could not survive a restart; set residents_csv to a file the gateway may write (e.g. /var/lib/eldergate/roster.csv) and restart".into());
        };
        let new = import.residents.clone();
        let changes = diff(&self.registry.residents.current(), &new);

        // Every card the journal knows, in one statement: the transaction stays short even for
        // a large roster (an alarm arriving meanwhile waits for it).
        let mut known: HashMap<String, (String, String)> = HashMap::new();
        for row in sqlx::query("SELECT card_id, resident_id, state FROM cards")
            .fetch_all(&mut self.conn)
            .await?
        {
            known.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
        }
        let mut conflicts = Vec::new();
        let (mut bind, mut reactivate, mut retire) = (Vec::new(), Vec::new(), Vec::new());
        for r in new.values() {
            let Some(card) = r.card_id.as_deref().map(card_key) else {
                continue;
            };
            match known.get(&card) {
                None => bind.push((card, r.resident_id.clone())),
                Some((holder, state)) if *holder != r.resident_id => conflicts.push(format!(
                    "card {card} of {} is {state} for resident {holder}",
                    r.resident_id
                )),
                Some((_, state)) if state == "retired" => reactivate.push(card),
                // Active stays active; lost stays lost (staff bind a new card).
                Some(_) => {}
            }
        }
        if !conflicts.is_empty() {
            return refuse(format!(
                "{}; correct the roster, or report the card lost and bind the right one first",
                conflicts.join("; ")
            ));
        }
        // The active cards of residents who left, and replaced roster cards still active.
        let replaced: HashMap<&str, &str> = changes
            .card_changes
            .iter()
            .filter_map(|(id, old, _)| Some((old.as_deref()?, id.as_str())))
            .collect();
        let removed: HashSet<&str> = changes.removed.iter().map(String::as_str).collect();
        let mut known: Vec<_> = known.into_iter().collect();
        known.sort();
        for (card, (holder, state)) in known {
            let left = removed.contains(holder.as_str());
            let swapped = replaced.get(card.as_str()) == Some(&holder.as_str());
            if state == "active" && (left || swapped) {
                retire.push(card);
            }
        }
        let cards = |v: &[(String, String)]| v.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>();
        let mut summary = serde_json::json!({
            "applied": !import.dry_run,
            "by": import.by,
            "residents": new.len(),
            "added": changes.added,
            "removed": changes.removed,
            "changed": changes.changed,
            "cards_bound": cards(&bind),
            "cards_retired": retire,
            "cards_reactivated": reactivate,
        });
        if import.dry_run {
            return Ok((Ok(summary), None));
        }

        let (dest, bytes) = (path.clone(), import.csv.clone());
        let staged =
            match tokio::task::spawn_blocking(move || StagedFile::write(&dest, &bytes)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return refuse(format!(
                        "cannot write {}: {e}; nothing was imported",
                        path.display()
                    ))
                }
                Err(e) => return refuse(format!("cannot write {}: {e}", path.display())),
            };
        let at = format_ts(Timestamp::now());
        for (card, resident) in &bind {
            sqlx::query("INSERT INTO cards (card_id, resident_id, state, changed_at, changed_by) VALUES (?, ?, 'active', ?, ?)")
                .bind(card)
                .bind(resident)
                .bind(&at)
                .bind(&import.by)
                .execute(&mut self.conn)
                .await?;
        }
        for (cards, state) in [(&retire, "retired"), (&reactivate, "active")] {
            for card in cards {
                sqlx::query(
                    "UPDATE cards SET state = ?, changed_at = ?, changed_by = ? WHERE card_id = ?",
                )
                .bind(state)
                .bind(&at)
                .bind(&import.by)
                .bind(card)
                .execute(&mut self.conn)
                .await?;
            }
        }
        let old = self.registry.residents.current();
        for id in &changes.removed {
            let name = old.get(id).map(|r| r.name.as_str()).unwrap_or_default();
            sqlx::query("INSERT OR REPLACE INTO departed_residents (resident_id, name, departed_at, departed_by) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(name)
                .bind(&at)
                .bind(&import.by)
                .execute(&mut self.conn)
                .await?;
        }
        for id in &changes.added {
            sqlx::query("DELETE FROM departed_residents WHERE resident_id = ?")
                .bind(id)
                .execute(&mut self.conn)
                .await?;
        }
        let seq = self.take_seq();
        self.pending.push(EventRow {
            seq,
            kind: "roster_imported".into(),
            device_id: None,
            device_seq: None,
            alert_id: None,
            received_at: at,
            device_time: None,
            body: summary.to_string(),
        });
        summary["saved_to"] = serde_json::json!(path.display().to_string());
        Ok((Ok(summary), Some((new, staged))))
    }

    /// After COMMIT: every part of the gateway switches to the new roster, and the roster file is
    /// moved over `residents_csv` (fsynced) so a restart loads the same roster. A file that
    /// cannot be moved is said in the reply: the import holds until the next restart.
    pub(super) async fn switch_roster(
        &mut self,
        reply: Result<serde_json::Value, String>,
        residents: Arc<Residents>,
        staged: StagedFile,
    ) -> Result<serde_json::Value, String> {
        self.registry.residents.replace(residents);
        metrics::counter!("eldergate_roster_imports_total").increment(1);
        let installed = tokio::task::spawn_blocking(move || staged.install()).await;
        let problem = match installed {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        match (reply, problem) {
            (Ok(mut summary), Some(e)) => {
                tracing::error!(error = %e, "roster imported but not saved over residents_csv");
                summary["not_saved"] = serde_json::json!(format!(
                    "{e}: the gateway uses the new roster now, but a restart would load the old residents_csv; fix the file's permissions and import again"
                ));
                Ok(summary)
            }
            (r, _) => r,
        }
    }
}
