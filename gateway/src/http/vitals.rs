//! Health readings over HTTP: a resident's history (JSON for the console's resident page), the
//! unassigned readings, target ranges, and the FHIR R4 export.
//!
//! - `GET /api/residents/{id}/readings?from=&to=&limit=` → `{resident_id, from, to, readings:
//!   [ReadingView], targets: [Target]}`; `from`/`to` are local dates (`YYYY-MM-DD`, `to`
//!   inclusive) or RFC 3339 instants; default the last 30 days.
//! - `GET /api/readings/unassigned?limit=` → `{readings: [ReadingView]}` (newest first).
//! - `POST /api/residents/{id}/vital-targets` with `{quantity, min, max, priority, reason,
//!   clear}` → the stored target, set by the logged-in staff member (a body's `by` only with the
//!   `act_as` scope); 422 for a bad value or a missing reason, 403 for a role that may not
//!   (`roles.rs`: admin, duty, grid worker; a manager only reads).
//!
//! Every route is behind the console's login (the auth layer wraps the whole router); every
//! role may read.
//! - `GET /api/residents/{id}/fhir?from=&to=` → a FHIR R4 Bundle (`application/fhir+json`).

use super::{bad_request, Api, ApiError};
use crate::auth::Actor;
use crate::journal::format_ts;
use crate::vitals::query::{history, unassigned, ReadingView};
use crate::vitals::targets::{SetTarget, TargetRequest};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde::Deserialize;

/// Most readings one answer carries.
pub const MAX_READINGS: i64 = 5000;

/// Range query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// From (local date or RFC 3339), inclusive.
    #[serde(default)]
    pub from: Option<String>,
    /// To (local date inclusive, or RFC 3339 exclusive).
    #[serde(default)]
    pub to: Option<String>,
    /// At most this many (≤ 5000).
    #[serde(default)]
    pub limit: Option<i64>,
}

fn bound(api: &Api, s: &str, end: bool) -> Result<String, ApiError> {
    crate::vitals::query::day_bound(&api.registry.time_zone, s, end).ok_or_else(|| {
        bad_request(
            "bad_query",
            format!(
                "{:?} is not a date like 2026-11-30 or an instant like 2026-11-30T08:00:00Z",
                s.chars().take(40).collect::<String>()
            ),
        )
    })
}

fn range(api: &Api, q: &RangeQuery) -> Result<(String, String, i64), ApiError> {
    let now = Timestamp::now();
    let from = match q.from.as_deref() {
        Some(s) => bound(api, s, false)?,
        None => format_ts(
            now.checked_sub(jiff::SignedDuration::from_hours(24 * 30))
                .unwrap_or(now),
        ),
    };
    let to = match q.to.as_deref() {
        Some(s) => bound(api, s, true)?,
        None => "9999-12-31T00:00:00.000Z".to_string(),
    };
    let limit = q.limit.unwrap_or(1000);
    if !(1..=MAX_READINGS).contains(&limit) {
        return Err(bad_request(
            "bad_query",
            format!("limit must be 1–{MAX_READINGS}"),
        ));
    }
    Ok((from, to, limit))
}

fn resident_known(api: &Api, id: &str) -> Result<(), ApiError> {
    if api.registry.residents.get(id).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "resident {} is not on the roster",
                id.chars().take(64).collect::<String>()
            ),
        ));
    }
    Ok(())
}

fn query_of(q: Result<Query<RangeQuery>, QueryRejection>) -> Result<RangeQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| {
        bad_request(
            "bad_query",
            format!("{e}; use ?from=2026-11-01&to=2026-11-30&limit=100"),
        )
    })
}

async fn readings_of(
    api: &Api,
    id: &str,
    q: &RangeQuery,
) -> Result<(String, String, Vec<ReadingView>), ApiError> {
    resident_known(api, id)?;
    let (from, to, limit) = range(api, q)?;
    let rows = history(api.journal.readers(), id, &from, &to, limit).await?;
    Ok((from, to, rows))
}

/// `GET /api/residents/{id}/readings`.
#[utoipa::path(get, path = "/api/residents/{id}/readings", tag = "vitals", params(("id" = String, Path, description = "Resident id"), RangeQuery), responses((status = 200, description = "`{resident_id, from, to, readings, targets}`: the resident's readings (canonical units, as sent, judged) and target ranges", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub async fn resident_readings(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_of(q)?;
    let (from, to, readings) = readings_of(&api, &id, &q).await?;
    let mut conn = api.journal.readers().acquire().await?;
    let targets = crate::vitals::ops::targets(&mut conn, &id).await?;
    Ok(Json(serde_json::json!({
        "resident_id": id, "from": from, "to": to, "readings": readings, "targets": targets,
    })))
}

/// `GET /api/readings/unassigned`.
#[utoipa::path(get, path = "/api/readings/unassigned", tag = "vitals", params(RangeQuery), responses((status = 200, description = "`{readings}`: readings no resident was bound to, newest first", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub async fn unassigned_readings(
    State(api): State<Api>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_of(q)?;
    let (_, _, limit) = range(&api, &q)?;
    let rows = unassigned(api.journal.readers(), limit).await?;
    Ok(Json(serde_json::json!({ "readings": rows })))
}

/// Body of `POST /api/residents/{id}/vital-targets`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    /// Staff id: leave it out (the logged-in staff member is recorded); another's only with a
    /// token's `act_as` scope.
    #[serde(default)]
    pub by: Option<String>,
    /// Quantity.
    pub quantity: String,
    /// Lowest value in range (decimal string, canonical unit).
    #[serde(default)]
    pub min: Option<String>,
    /// Highest value in range.
    #[serde(default)]
    pub max: Option<String>,
    /// Priority outside the range.
    #[serde(default)]
    pub priority: Option<String>,
    /// Why.
    pub reason: String,
    /// Remove the target.
    #[serde(default)]
    pub clear: bool,
}

/// `POST /api/residents/{id}/vital-targets`.
#[utoipa::path(post, path = "/api/residents/{id}/vital-targets", tag = "vitals", params(("id" = String, Path, description = "Resident id")), request_body = TargetBody, responses((status = 200, description = "The stored target range, with who set it and why", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub async fn set_target(
    State(api): State<Api>,
    actor: Actor,
    Path(id): Path<String>,
    body: Result<Json<TargetBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(b) = body.map_err(|e| {
        bad_request(
            "bad_body",
            format!("{e}; send JSON like {{\"quantity\": \"systolic\", \"max\": \"150\", \"reason\": \"Dr Wang, 2026-11-30\"}}"),
        )
    })?;
    let by = actor.acting_for(b.by)?;
    let op = SetTarget {
        resident: id,
        by,
        request: TargetRequest {
            quantity: b.quantity,
            min: b.min,
            max: b.max,
            priority: b.priority,
            reason: b.reason,
            clear: b.clear,
        },
    };
    let set = api.journal.run(op).await?;
    Ok(Json(serde_json::to_value(set).unwrap_or_default()))
}

/// `GET /api/residents/{id}/fhir`.
#[utoipa::path(get, path = "/api/residents/{id}/fhir", tag = "vitals", params(("id" = String, Path, description = "Resident id"), RangeQuery), responses((status = 200, description = "A FHIR R4 Bundle of Observations (application/fhir+json)", content_type = "application/fhir+json", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub async fn fhir_bundle(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_of(q)?;
    let (_, _, readings) = readings_of(&api, &id, &q).await?;
    let b = crate::vitals::fhir::bundle(
        &api.registry.site_id,
        &api.registry.gateway_id,
        &readings,
        &format_ts(Timestamp::now()),
    );
    Ok((
        [(header::CONTENT_TYPE, "application/fhir+json")],
        b.to_string(),
    )
        .into_response())
}
