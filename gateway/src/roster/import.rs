//! A roster import as an operation of the writer: cards of new residents are bound, cards of
//! residents who left the roster (and roster cards that were replaced) are retired, a returning
//! resident's retired card is reactivated, and one `roster_imported` event records it all. The
//! roster file is written and fsynced before COMMIT and moved into place after it; the running
//! gateway switches to the new roster only after COMMIT.
//!
//! A card bound in the journal to somebody else (active, lost or retired) refuses the whole
//! import: one card, one resident, and staff decide which.

use super::{card_key, diff, Residents, StagedFile};
use crate::journal::{
    format_ts, Context, JournalError, Lane, NewEvent, OpError, Operation, Refusal, Tx, BULK_BUDGET,
};
use crate::registry::Registry;
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What an import produced: the summary (or why it was refused) and, when it is to be applied
/// after commit, the new roster and its staged file.
type RosterOutcome = (
    Result<serde_json::Value, String>,
    Option<(Arc<Residents>, StagedFile)>,
);

/// Bulk lane, alone in its batch: replace the roster (or, dry run, say what would change).
#[derive(Debug)]
pub struct ImportRoster {
    /// The residents, every row checked and every device reference resolved.
    pub residents: Arc<Residents>,
    /// The CSV as uploaded, saved over `residents_csv` once the import committed.
    pub csv: Arc<[u8]>,
    /// Staff id of who imports.
    pub by: String,
    /// Only say what would change.
    pub dry_run: bool,
}

/// A committed (or dry-run) import.
#[derive(Debug)]
pub struct RosterImported {
    /// What changed (or would change), as JSON.
    pub summary: serde_json::Value,
    staged: Option<(Arc<Residents>, StagedFile)>,
}

impl Drop for RosterImported {
    fn drop(&mut self) {
        // Not committed (or not installed): the staged file goes.
        if let Some((_, f)) = self.staged.take() {
            f.discard();
        }
    }
}

impl Operation for ImportRoster {
    type Answer = RosterImported;
    const NAME: &'static str = "import_roster";
    fn lane(&self) -> Lane {
        Lane::Bulk
    }
    // Takes a whole bulk budget: nothing queued after an import shares its transaction, so
    // every later operation sees the new roster.
    fn cost(&self) -> usize {
        BULK_BUDGET
    }
    fn apply<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<RosterImported, OpError>> {
        Box::pin(async move {
            let registry = tx.ctx::<Registry>()?;
            if !registry.staff.contains_key(&self.by) {
                return Err(OpError::Refused(Refusal::invalid(
                    "unknown_staff",
                    format!("{:?} is not a registered staff id", self.by),
                )));
            }
            if let Some(role) = crate::roles::role_of(&registry, &self.by) {
                if !role.may_import_roster() {
                    return Err(OpError::Refused(Refusal::forbidden(
                        "role_not_allowed",
                        format!(
                            "{} is a {}; only admin and duty staff import a roster",
                            self.by,
                            role.as_str()
                        ),
                    )));
                }
            }
            match apply_roster(tx, &registry, self).await? {
                (Ok(summary), staged) => Ok(RosterImported { summary, staged }),
                (Err(why), _) => Err(OpError::Refused(Refusal::conflict("roster_refused", why))),
            }
        })
    }
    /// After COMMIT: every part of the gateway switches to the new roster, and the roster file
    /// is moved over `residents_csv` (fsynced) so a restart loads the same roster. A file that
    /// cannot be moved is said in the answer: the import holds until the next restart.
    fn after_commit(&mut self, answer: &mut RosterImported, ctx: &Context) {
        let Some((residents, staged)) = answer.staged.take() else {
            return;
        };
        let Some(registry) = ctx.get::<Registry>() else {
            return;
        };
        registry.residents.replace(residents);
        metrics::counter!("eldergate_roster_imports_total").increment(1);
        if let Err(e) = staged.install() {
            tracing::error!(error = %e, "roster imported but not saved over residents_csv");
            answer.summary["not_saved"] = serde_json::json!(format!(
                "{e}: the gateway uses the new roster now, but a restart would load the old residents_csv; fix the file's permissions and import again"
            ));
        }
    }
}

async fn apply_roster(
    tx: &mut Tx,
    registry: &Registry,
    import: &ImportRoster,
) -> Result<RosterOutcome, JournalError> {
    let refuse = |why: String| Ok((Err(why), None));
    if !registry.staff.contains_key(&import.by) {
        return refuse(format!("{:?} is not a registered staff id", import.by));
    }
    let Some(path) = registry.roster_path.clone() else {
        return refuse("this gateway's config has no residents_csv, so an imported roster could not survive a restart; set residents_csv to a file the gateway may write (e.g. /var/lib/eldergate/roster.csv) and restart".into());
    };
    let new = import.residents.clone();
    let changes = diff(&registry.residents.current(), &new);

    // Every card the journal knows, in one statement: the transaction stays short even for
    // a large roster (an alarm arriving meanwhile waits for it).
    let mut known: HashMap<String, (String, String)> = HashMap::new();
    for row in sqlx::query("SELECT card_id, resident_id, state FROM cards")
        .fetch_all(tx.conn())
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
    let staged = match tokio::task::spawn_blocking(move || StagedFile::write(&dest, &bytes)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return refuse(format!(
                "cannot write {}: {e}; nothing was imported",
                path.display()
            ))
        }
        Err(e) => return refuse(format!("cannot write {}: {e}", path.display())),
    };
    let now = Timestamp::now();
    let at = format_ts(now);
    for (card, resident) in &bind {
        sqlx::query("INSERT INTO cards (card_id, resident_id, state, changed_at, changed_by) VALUES (?, ?, 'active', ?, ?)")
                .bind(card)
                .bind(resident)
                .bind(&at)
                .bind(&import.by)
                .execute(tx.conn())
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
            .execute(tx.conn())
            .await?;
        }
    }
    let old = registry.residents.current();
    for id in &changes.removed {
        let name = old.get(id).map(|r| r.name.as_str()).unwrap_or_default();
        sqlx::query("INSERT OR REPLACE INTO departed_residents (resident_id, name, departed_at, departed_by) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(name)
                .bind(&at)
                .bind(&import.by)
                .execute(tx.conn())
                .await?;
    }
    for id in &changes.added {
        sqlx::query("DELETE FROM departed_residents WHERE resident_id = ?")
            .bind(id)
            .execute(tx.conn())
            .await?;
    }
    tx.append(NewEvent::new("roster_imported", now, summary.to_string()));
    summary["saved_to"] = serde_json::json!(path.display().to_string());
    Ok((Ok(summary), Some((new, staged))))
}
