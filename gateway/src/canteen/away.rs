//! Residents reported away or in hospital (`resident_away`). While such a status is open, a tap
//! of the resident's card is settled as usual and flagged on the day report for a person to look
//! at (someone else may be using the card) — never refused: a resident who came back early must
//! still eat. A status is closed by "back", never deleted.

use crate::journal::{format_ts, JournalError, Refusal, Tx};
use crate::registry::Registry;
use jiff::Timestamp;
use sqlx::Row;

/// The kinds of absence staff can report.
pub const AWAY_KINDS: [&str; 2] = ["away", "hospital"];

/// Opens an away / hospital status (409 when one is open already).
pub(crate) async fn set_away(
    tx: &mut Tx,
    registry: &Registry,
    resident: &str,
    kind: &str,
    note: Option<&str>,
    by: &str,
    at: Timestamp,
) -> Result<Result<serde_json::Value, Refusal>, JournalError> {
    if !AWAY_KINDS.contains(&kind) {
        return Ok(Err(Refusal::invalid(
            "bad_kind",
            format!("kind {kind:?} is not one of {}", AWAY_KINDS.join(", ")),
        )));
    }
    if !registry.residents.contains(resident) {
        return Ok(Err(Refusal::not_found(
            "unknown_resident",
            format!("resident {resident} is not in the roster"),
        )));
    }
    if let Some(row) = sqlx::query(
        "SELECT kind, set_by FROM resident_away WHERE resident_id = ? AND ended_at IS NULL",
    )
    .bind(resident)
    .fetch_optional(tx.conn())
    .await?
    {
        let (k, who): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        return Ok(Err(Refusal::conflict(
            "already_away",
            format!(
                "resident {resident} is already reported {k} (by {who}); report them back first"
            ),
        )));
    }
    let id: i64 = sqlx::query(
        "INSERT INTO resident_away (resident_id, kind, note, set_by, set_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(resident)
    .bind(kind)
    .bind(note)
    .bind(by)
    .bind(format_ts(at))
    .fetch_one(tx.conn())
    .await?
    .try_get(0)?;
    Ok(Ok(serde_json::json!({
        "away_id": id, "resident_id": resident, "kind": kind, "note": note, "by": by, "since": format_ts(at),
    })))
}

/// Closes the open away / hospital status (409 when there is none).
pub(crate) async fn set_back(
    tx: &mut Tx,
    resident: &str,
    by: &str,
    at: Timestamp,
) -> Result<Result<serde_json::Value, Refusal>, JournalError> {
    let r = sqlx::query(
        "UPDATE resident_away SET ended_by = ?, ended_at = ? WHERE resident_id = ? AND ended_at IS NULL",
    )
    .bind(by)
    .bind(format_ts(at))
    .bind(resident)
    .execute(tx.conn())
    .await?;
    if r.rows_affected() == 0 {
        return Ok(Err(Refusal::conflict(
            "not_away",
            format!("resident {resident} is not reported away or in hospital"),
        )));
    }
    Ok(Ok(
        serde_json::json!({ "resident_id": resident, "by": by, "back_at": format_ts(at) }),
    ))
}
