//! `POST /api/roster?by=STAFF[&dry_run=true]` with the roster CSV as the body: every row and
//! every reference is checked here (all problems at once, 422), then the journal writer applies
//! it (cards bound and retired, one `roster_imported` event) and the gateway switches to it. A dry
//! run says what would change and changes nothing.

use super::{bad_request, Api, ApiError};
use crate::roster::ImportRoster;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

/// Query of an import.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Staff id of who imports.
    pub by: String,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// Largest roster accepted (a community of tens of thousands of residents fits).
pub const MAX_ROSTER_BYTES: usize = 32 << 20;

pub(super) async fn import(
    State(api): State<Api>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Response> {
    let Query(q) = query.map_err(|e| {
        bad_request(
            "bad_query",
            format!(
                "{e}; use POST /api/roster?by=S013 (add &dry_run=true to only see the changes)"
            ),
        )
        .into_response()
    })?;
    // Parsing a large roster takes a while: off the async workers, which also carry alarms.
    let (bytes, registry) = (body.clone(), api.registry.clone());
    let (residents, problems) = tokio::task::spawn_blocking(move || {
        let (residents, mut problems) = crate::roster::parse(&bytes, "roster");
        if problems.is_empty() {
            problems =
                crate::roster::check_references(&residents, &registry.devices, &registry.staff);
        }
        (residents, problems)
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("roster check failed: {e}"),
        )
        .into_response()
    })?;
    if !problems.is_empty() {
        metrics::counter!("eldergate_http_rejected_total", "reason" => "roster_invalid")
            .increment(1);
        tracing::warn!(
            problems = problems.len(),
            "roster import refused: the roster has problems"
        );
        let list: Vec<_> = problems
            .iter()
            .map(|p| serde_json::json!({ "at": p.path, "problem": p.message }))
            .collect();
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": format!("the roster has {} problem(s); nothing was imported", problems.len()),
                "problems": list,
            })),
        )
            .into_response());
    }
    let import = ImportRoster {
        residents: Arc::new(residents),
        csv: Arc::from(body.as_ref()),
        by: q.by,
        dry_run: q.dry_run,
    };
    let imported = api
        .journal
        .run(import)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let summary = imported.summary.clone();
    tracing::info!(
        dry_run = q.dry_run,
        residents = summary["residents"].as_u64().unwrap_or(0),
        "roster import {}",
        if q.dry_run { "checked" } else { "applied" }
    );
    Ok(Json(summary))
}
