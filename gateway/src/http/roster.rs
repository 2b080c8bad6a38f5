//! `POST /api/roster?by=STAFF[&dry_run=true]` with the roster CSV as the body: every row and
//! every reference is checked here (problems at once, 422), then the journal writer applies
//! it (cards bound and retired, one `roster_imported` event) and the gateway switches to it. A dry
//! run says what would change and changes nothing.
//!
//! Bounded: a body over `http.roster_max_bytes` is refused with 413 (before it is read, when it
//! says its length); one roster is read and checked at a time (another gets 503); the answer
//! lists at most `roster::MAX_LISTED_PROBLEMS` problems and counts the rest.

use super::{bad_request, Api, ApiError};
use crate::roster::ImportRoster;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

/// Query of an import.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Staff id of who imports: only the logged-in staff member's own, or any with a token's
    /// `act_as` scope; absent = the logged-in staff member.
    #[serde(default)]
    pub by: Option<String>,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

fn too_large(max: usize) -> Response {
    metrics::counter!("eldergate_http_rejected_total", "reason" => "roster_too_large").increment(1);
    tracing::warn!(
        roster_max_bytes = max,
        "roster import refused: larger than http.roster_max_bytes"
    );
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the roster is larger than {max} bytes (http.roster_max_bytes); a community's roster of a few thousand residents is far smaller: is this the roster export? If it is, raise http.roster_max_bytes"),
    )
    .into_response()
}

/// A body over the limit is still read (and thrown away) up to this size before the 413, so that
/// the client, still sending, reads the answer instead of a connection reset. A larger one is
/// cut off.
const DRAIN_MAX_BYTES: u64 = 64 << 20;

/// Reads the body, at most `max` bytes kept; a longer one is drained (see [`DRAIN_MAX_BYTES`]) and
/// refused with 413.
async fn read_body(body: Body, max: usize, declared: Option<u64>) -> Result<Bytes, Response> {
    use futures_util::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::with_capacity(
        declared
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= max)
            .unwrap_or(0),
    );
    let mut seen: u64 = 0;
    let max_u64 = u64::try_from(max).unwrap_or(u64::MAX);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            bad_request(
                "bad_body",
                format!("the roster could not be read: {e}; send the CSV file as the request body"),
            )
            .into_response()
        })?;
        seen = seen.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if seen > DRAIN_MAX_BYTES {
            break;
        }
        if seen <= max_u64 {
            kept.extend_from_slice(&chunk);
        }
    }
    if seen > max_u64 {
        return Err(too_large(max));
    }
    Ok(Bytes::from(kept))
}

#[utoipa::path(post, path = "/api/roster", tag = "roster", params(ImportQuery), request_body(content = String, content_type = "text/csv", description = "The roster CSV (at most http.roster_max_bytes)"), responses((status = 200, description = "What changed (or would, with dry_run)", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub(super) async fn import(
    State(api): State<Api>,
    actor: crate::auth::Actor,
    query: Result<Query<ImportQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, Response> {
    let Query(q) = query.map_err(|e| {
        bad_request(
            "bad_query",
            format!("{e}; use POST /api/roster (add &dry_run=true to only see the changes)"),
        )
        .into_response()
    })?;
    let by = actor
        .acting_for(q.by)
        .map_err(IntoResponse::into_response)?;
    let max = api.limits.config.roster_max_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX_BYTES) {
        return Err(too_large(max));
    }
    // A roster is held in memory while it is checked: one at a time.
    let _slot = api
        .limits
        .roster_slot
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            metrics::counter!("eldergate_http_rejected_total", "reason" => "roster_busy")
                .increment(1);
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "another roster import is being checked; try again when it has finished".into(),
            )
            .into_response()
        })?;
    let body = read_body(body, max, declared).await?;
    // Parsing a large roster takes a while: off the async workers, which also carry alarms.
    let (bytes, registry) = (body.clone(), api.registry.clone());
    let (residents, problems) = tokio::task::spawn_blocking(move || {
        let (residents, mut problems) = crate::roster::parse(&bytes, "roster");
        if problems.is_empty() {
            crate::roster::check_references_into(
                &residents,
                &registry.devices,
                &registry.staff,
                &mut problems,
            );
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
        let total = problems.total();
        tracing::warn!(
            problems = total,
            "roster import refused: the roster has problems"
        );
        let list: Vec<_> = problems
            .listed()
            .iter()
            .map(|p| serde_json::json!({ "at": p.path, "problem": p.message }))
            .collect();
        let shown = if list.len() < total {
            format!(" (the first {} are listed)", list.len())
        } else {
            String::new()
        };
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": format!("the roster has {total} problem(s){shown}; nothing was imported"),
                "problems": list,
                "problem_count": total,
            })),
        )
            .into_response());
    }
    let import = ImportRoster {
        residents: Arc::new(residents),
        csv: Arc::from(body.as_ref()),
        by,
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
