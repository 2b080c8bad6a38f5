//! The canteen staff's read routes (docs/CANTEEN.md): a resident's statement, the meals of a day
//! (with ids, to void one), a card by its id, and the away / back reports. Reads go to the
//! journal's readers; away / back go through the writer like every other staff operation.

use super::{admin, admin_body, bad_request, AdminBody, Api, ApiError};
use crate::auth::Actor;
use crate::canteen::statement::{self, MealFilter};
use crate::canteen::CanteenOp;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

/// Most rows one statement or meal list returns.
pub const MAX_ROWS: usize = 5000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StatementQuery {
    /// Most ledger rows (500 when absent, at most 5000).
    limit: Option<usize>,
}

/// `GET /api/residents/{id}/statement?limit=N`
#[utoipa::path(get, path = "/api/residents/{id}/statement", tag = "canteen", params(("id" = String, Path, description = "Resident id"), StatementQuery), responses((status = 200, description = "Balance, totals and ledger lines", body = statement::Statement), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub(super) async fn resident_statement(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<StatementQuery>,
) -> Result<Json<statement::Statement>, ApiError> {
    let limit = q.limit.unwrap_or(500).min(MAX_ROWS);
    match statement::statement(api.journal.readers(), &api.registry, &id, limit).await? {
        Some(s) => Ok(Json(s)),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("resident {id} is not on the roster and has no ledger rows"),
        )),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MealsQuery {
    /// Day, `YYYY-MM-DD`.
    date: Option<String>,
    /// Resident id.
    resident: Option<String>,
    /// Card UID.
    card: Option<String>,
    /// Most rows (1000 when absent, at most 5000).
    limit: Option<usize>,
}

/// `GET /api/meals?date=YYYY-MM-DD&resident=R…&card=…&limit=N` (at least one filter).
#[utoipa::path(get, path = "/api/meals", tag = "canteen", params(MealsQuery), responses((status = 200, description = "Meals (at least one filter)", body = Vec<statement::MealLine>), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub(super) async fn list_meals(
    State(api): State<Api>,
    Query(q): Query<MealsQuery>,
) -> Result<Json<Vec<statement::MealLine>>, ApiError> {
    if let Some(d) = &q.date {
        if d.parse::<jiff::civil::Date>().is_err() {
            return Err(bad_request(
                "bad_query",
                format!("date={d:?}: use YYYY-MM-DD"),
            ));
        }
    }
    if q.date.is_none() && q.resident.is_none() && q.card.is_none() {
        return Err(bad_request(
            "bad_query",
            "give date=YYYY-MM-DD, resident=ID or card=UID".into(),
        ));
    }
    let f = MealFilter {
        date: q.date,
        resident: q.resident,
        card: q.card,
        limit: i64::try_from(q.limit.unwrap_or(1000).min(MAX_ROWS)).unwrap_or(1000),
    };
    Ok(Json(
        statement::meals(api.journal.readers(), &api.registry, &f).await?,
    ))
}

/// `GET /api/cards/{card}`: state, holder, balance.
#[utoipa::path(get, path = "/api/cards/{card}", tag = "canteen", params(("card" = String, Path, description = "Card UID")), responses((status = 200, description = "State, holder, balance", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub(super) async fn get_card(
    State(api): State<Api>,
    Path(card): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match statement::card(api.journal.readers(), &api.registry, &card).await? {
        Some(c) => Ok(Json(c)),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("card {card} is not known; bind it with POST /api/cards/{card}/bind"),
        )),
    }
}

/// `POST /api/residents/{id}/away` `{"by", "kind": "away"|"hospital", "note"}`
#[utoipa::path(post, path = "/api/residents/{id}/away", tag = "canteen", params(("id" = String, Path, description = "Resident id")), request_body = AdminBody, responses((status = 200, description = "Recorded away (`kind`: away or hospital)", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub(super) async fn resident_away(
    State(api): State<Api>,
    actor: Actor,
    Path(resident): Path<String>,
    body: Result<Json<AdminBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = admin_body(body)?;
    let kind = b.kind.unwrap_or_else(|| "away".into());
    admin(
        &api,
        &actor,
        CanteenOp::Away {
            resident,
            kind,
            note: b.reason,
        },
        b.by,
    )
    .await
}

/// `POST /api/residents/{id}/back` `{"by"}`
#[utoipa::path(post, path = "/api/residents/{id}/back", tag = "canteen", params(("id" = String, Path, description = "Resident id")), request_body = AdminBody, responses((status = 200, description = "Recorded back", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = super::ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = super::ErrorBody)))]
pub(super) async fn resident_back(
    State(api): State<Api>,
    actor: Actor,
    Path(resident): Path<String>,
    body: Result<Json<AdminBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = admin_body(body)?;
    admin(&api, &actor, CanteenOp::Back { resident }, b.by).await
}
