//! HTTP API: health, Prometheus metrics, alerts (list, acknowledge, resolve), the canteen's staff
//! operations and reports, and roster imports.
//!
//! Invariants: every route is behind login (`auth`), and the JSON API's routes and its OpenAPI
//! document come from one table ([`api_routes`]); listens beyond loopback only with TLS or behind
//! a declared reverse proxy (config validation enforces it); a staff action answers 200 only after the journal committed it; every bad request gets a
//! JSON error with a message, a log line and `eldergate_http_rejected_total`. Memory and
//! descriptors are bounded per request and in all, and every response, live streams included,
//! ends at shutdown (see `serve.rs`).

use crate::alerting::{alert_from_row, StaffAction, Via};
use crate::auth::{Actor, Refused};
use crate::canteen::{CanteenAdmin, CanteenOp, TopUp};
use crate::journal::{Failure, Journal, JournalError, RefusalKind};
use crate::registry::Registry;
use axum::extract::rejection::JsonRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use eldergate_protocol::payload::{StaffAlert, StaffVerb};
use futures_util::{Stream, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use sqlx::Row;
use std::convert::Infallible;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

mod canteen;
mod roster;
mod serve;
mod vitals;

pub use roster::ImportQuery;
pub use serve::{serve, Limits, MAX_HEAD_BYTES, MAX_JSON_BODY_BYTES};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    /// Journal.
    pub journal: Journal,
    /// Registry.
    pub registry: Arc<Registry>,
    /// Metrics renderer.
    pub metrics: PrometheusHandle,
    /// Committed alert changes, for the SSE stream.
    pub live: tokio::sync::broadcast::Sender<StaffAlert>,
    /// Connection, stream and body limits (`[http]`).
    pub limits: Arc<Limits>,
    /// Cancelled at shutdown: the server stops accepting and every live stream ends.
    pub shutdown: CancellationToken,
    /// What `/healthz` reports.
    pub health: Arc<crate::health::Health>,
    /// Sessions, tokens, CSRF and throttling (the layer over every route).
    pub auth: crate::auth::Auth,
}

/// Builds the router: the JSON API (one route table with its OpenAPI document, [`api_routes`])
/// and the console's pages, all behind the auth layer.
pub fn router(api: Api) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    routes
        .merge(crate::console::routes())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        // Last, so that it wraps every route above (routes added after it would be open).
        .layer(axum::middleware::from_fn_with_state(
            api.auth.clone(),
            crate::auth::require_login,
        ))
        .with_state(api)
}

/// The JSON API's route table. Each route is added with `routes!` from its handler's
/// `#[utoipa::path]`, which names its method and path: a route and its entry in
/// `/api/openapi.json` cannot part (the test `every_api_route_is_in_the_openapi_document`
/// also refuses an `/api` route added any other way).
pub fn api_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
        .routes(routes!(list_alerts))
        .routes(routes!(stream))
        .routes(routes!(get_alert))
        .routes(routes!(ack))
        .routes(routes!(resolve))
        .routes(routes!(balance))
        .routes(routes!(topup))
        .routes(routes!(payout))
        .routes(routes!(card_lost))
        .routes(routes!(card_bind))
        .routes(routes!(meal_void))
        .routes(routes!(report_daily))
        .routes(routes!(report_claim))
        .routes(routes!(canteen::resident_statement))
        .routes(routes!(canteen::resident_away))
        .routes(routes!(canteen::resident_back))
        .routes(routes!(canteen::list_meals))
        .routes(routes!(canteen::get_card))
        // The roster reads its own body, with its own limit.
        .routes(routes!(roster::import))
        .routes(routes!(vitals::resident_readings))
        .routes(routes!(vitals::set_target))
        .routes(routes!(vitals::fhir_bundle))
        .routes(routes!(vitals::unassigned_readings))
}

/// The OpenAPI 3.1 document of the JSON API, generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// The document's frame: title, version, how to authenticate; the paths come from
/// [`api_routes`].
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "eldergate gateway API",
        description = "Alerts, the canteen's staff operations and reports, roster imports, and health readings (history, target ranges, FHIR R4 export). Every route but /healthz, /readyz and /metrics from loopback needs a console session (cookie eg_session, and X-CSRF-Token on a change) or an API token (Authorization: Bearer, from `eldergate token create` with scopes read, alerts, canteen, roster, vitals, act_as). Actions are recorded with the session's or token's staff id.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    security(("session" = []), ("token" = []))
)]
struct ApiDoc;

/// The two ways to authenticate, as security schemes.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityScheme;
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::layer::SESSION_COOKIE,
                "Console session from /console/login; a change also needs its CSRF token in X-CSRF-Token",
            ))),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "API token from `eldergate token create`; its scopes decide what it may do",
                    ))
                    .build(),
            ),
        );
    }
}

/// The body of every refusal.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong and what to do.
    pub error: String,
}

/// `/api/openapi.json`: this API's OpenAPI 3.1 document (behind the same auth as the API; see
/// docs/adr/0017-console-tls-and-openapi.md).
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
async fn openapi_json() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(
        DOC.get_or_init(|| serde_json::to_value(openapi()).unwrap_or_default())
            .clone(),
    )
}

/// An error answer: status and a message that says what to do.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(reason: &'static str, message: String) -> ApiError {
    metrics::counter!("eldergate_http_rejected_total", "reason" => reason).increment(1);
    tracing::warn!(reason, %message, "HTTP request rejected");
    ApiError(StatusCode::BAD_REQUEST, message)
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        let (status, message) = r.parts();
        ApiError(status, message)
    }
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// A refusal maps to 404 (unknown), 409 (state) or 422 (invalid); a journal that could not
/// commit to 503 (retry later).
impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(r) => {
                let status = match r.kind {
                    RefusalKind::NotFound => StatusCode::NOT_FOUND,
                    RefusalKind::Conflict => StatusCode::CONFLICT,
                    RefusalKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    RefusalKind::Forbidden => StatusCode::FORBIDDEN,
                };
                metrics::counter!("eldergate_http_rejected_total", "reason" => r.reason)
                    .increment(1);
                tracing::info!(reason = r.reason, message = %r.message, "request refused");
                ApiError(status, r.message)
            }
            Failure::Journal(e) => e.into(),
            Failure::Broken(e) => {
                tracing::error!(error = %e, "request failed inside its operation");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, e)
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("journal read failed: {e}"),
        )
    }
}

/// 200 while alarms can be taken (with every part's state), 503 when they cannot.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alarms can be taken; every part's state", body = Object), (status = 503, description = "Alarms cannot be taken; every part's state", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn healthz(State(api): State<Api>) -> Response {
    let (ok, report) = api
        .health
        .report(&api.journal, &api.registry.gateway_id)
        .await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// `/readyz`: 200 `{"ready":true}` once the gateway can take alarms after start-up, else 503
/// with the reason.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "`{\"ready\": true}` once start-up is done", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn readyz(State(api): State<Api>) -> Response {
    match api.health.not_ready(&api.journal) {
        None => (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": why})),
        )
            .into_response(),
    }
}

/// An open live stream: holds one of `http.max_sse_clients` slots until the stream is dropped.
struct SseClient(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Drop for SseClient {
    fn drop(&mut self) {
        metrics::gauge!("eldergate_http_sse_clients").decrement(1);
    }
}

/// Server-sent events: one `alert` event (JSON `StaffAlert`) per committed alert change, open
/// alerts first so a console that connects late starts complete. At most `http.max_sse_clients`
/// at once (one more gets 503); every stream ends at shutdown.
#[utoipa::path(get, path = "/api/alerts/stream", tag = "alerts", responses((status = 200, description = "Server-sent events: `alert` (a StaffAlert as JSON, open alerts first) and `resync` (refetch the open alerts)", content_type = "text/event-stream", body = String), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn stream(
    State(api): State<Api>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let client = match api.limits.sse_slots.clone().try_acquire_owned() {
        Ok(permit) => {
            metrics::gauge!("eldergate_http_sse_clients").increment(1);
            SseClient(permit)
        }
        Err(_) => {
            let max = api.limits.config.max_sse_clients;
            metrics::counter!("eldergate_http_rejected_total", "reason" => "too_many_streams")
                .increment(1);
            tracing::warn!(
                max_sse_clients = max,
                "live alert stream refused: http.max_sse_clients are open"
            );
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{max} live alert streams are open, as many as http.max_sse_clients allows; close a console that is not watched, or raise the limit"),
            ));
        }
    };
    let rx = api.live.subscribe();
    let rows =
        sqlx::query("SELECT * FROM alerts WHERE state IN ('raised','acknowledged') ORDER BY id")
            .fetch_all(api.journal.readers())
            .await?;
    let mut open = Vec::new();
    for r in &rows {
        let mut a = alert_from_row(r, &api.registry)?;
        a.change = "current".into();
        open.push(a);
    }
    let to_event = |a: &StaffAlert| -> Result<SseEvent, Infallible> {
        Ok(SseEvent::default()
            .event("alert")
            .data(serde_json::to_string(a).unwrap_or_default()))
    };
    let first = futures_util::stream::iter(open.iter().map(to_event).collect::<Vec<_>>());
    // A client too slow for the broadcast buffer is told to resynchronize (refetch the open
    // alerts) instead of silently missing changes.
    let live = tokio_stream::wrappers::BroadcastStream::new(rx).map(move |m| match m {
        Ok(a) => to_event(&a),
        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
            metrics::counter!("eldergate_http_sse_resync_total").increment(1);
            tracing::warn!(
                missed = n,
                "a live alert stream lagged; telling it to resync"
            );
            Ok(SseEvent::default().event("resync").data(n.to_string()))
        }
    });
    let events = first
        .chain(live)
        .take_until(api.shutdown.clone().cancelled_owned())
        .map(move |e| {
            let _slot = &client;
            e
        });
    // Keep-alives well inside the idle timeout, so that only a client that stopped reading is
    // taken for idle.
    let every = (api.limits.idle_timeout() / 3).max(std::time::Duration::from_secs(1));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(every)))
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn metrics_text(State(api): State<Api>) -> String {
    api.metrics.render()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `open` (default) or `all`.
    state: Option<String>,
}

#[utoipa::path(get, path = "/api/alerts", tag = "alerts", params(ListQuery), responses((status = 200, description = "Open alerts (oldest first), or the latest 500 of any state", body = Vec<StaffAlert>), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn list_alerts(
    State(api): State<Api>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<StaffAlert>>, ApiError> {
    let sql = match q.state.as_deref() {
        None | Some("open") => {
            "SELECT * FROM alerts WHERE state IN ('raised','acknowledged') ORDER BY id"
        }
        Some("all") => "SELECT * FROM alerts ORDER BY id DESC LIMIT 500",
        Some(other) => {
            return Err(bad_request(
                "bad_query",
                format!("state={other:?}: use open or all"),
            ))
        }
    };
    let rows = sqlx::query(sql).fetch_all(api.journal.readers()).await?;
    let alerts = rows
        .iter()
        .map(|r| alert_from_row(r, &api.registry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(alerts))
}

#[utoipa::path(get, path = "/api/alerts/{id}", tag = "alerts", params(("id" = i64, Path, description = "Alert id")), responses((status = 200, description = "The alert", body = StaffAlert), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn get_alert(
    State(api): State<Api>,
    Path(id): Path<i64>,
) -> Result<Json<StaffAlert>, ApiError> {
    let row = sqlx::query("SELECT * FROM alerts WHERE id = ?")
        .bind(id)
        .fetch_optional(api.journal.readers())
        .await?;
    match row {
        Some(r) => Ok(Json(alert_from_row(&r, &api.registry)?)),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("alert {id} does not exist"),
        )),
    }
}

/// Body of ack / resolve.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Staff id: absent = the logged-in staff member (see `auth::Actor::acting_for`).
    #[serde(default)]
    pub by: Option<String>,
    /// Optional note.
    #[serde(default)]
    pub note: Option<String>,
}

#[utoipa::path(post, path = "/api/alerts/{id}/ack", tag = "alerts", params(("id" = i64, Path, description = "Alert id")), request_body = ActionBody, responses((status = 200, description = "Acknowledged, committed to the journal", body = StaffAlert), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn ack(
    state: State<Api>,
    actor: Actor,
    id: Path<i64>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> Result<Json<StaffAlert>, ApiError> {
    act(state, actor, id, body, StaffVerb::Ack).await
}

#[utoipa::path(post, path = "/api/alerts/{id}/resolve", tag = "alerts", params(("id" = i64, Path, description = "Alert id")), request_body = ActionBody, responses((status = 200, description = "Resolved, committed to the journal", body = StaffAlert), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn resolve(
    state: State<Api>,
    actor: Actor,
    id: Path<i64>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> Result<Json<StaffAlert>, ApiError> {
    act(state, actor, id, body, StaffVerb::Resolve).await
}

async fn act(
    State(api): State<Api>,
    actor: Actor,
    Path(id): Path<i64>,
    body: Result<Json<ActionBody>, JsonRejection>,
    verb: StaffVerb,
) -> Result<Json<StaffAlert>, ApiError> {
    let Json(body) = body.map_err(|e| {
        bad_request(
            "bad_body",
            format!("{e}; send JSON like {{\"note\": \"on my way\"}}"),
        )
    })?;
    let action = StaffAction {
        alert_id: id,
        verb,
        by: actor.acting_for(body.by)?,
        note: body.note,
        via: Via::Http,
    };
    Ok(Json(api.journal.run(action).await?))
}

/// Body of a top-up.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpBody {
    /// Fen, positive (10000 = ¥100).
    pub amount_fen: i64,
    /// Staff id: absent = the logged-in staff member.
    #[serde(default)]
    pub by: Option<String>,
    /// Why (receipt number, cash, transfer…).
    #[serde(default)]
    pub reason: Option<String>,
    /// How it was paid: cash, wechat, alipay, bank or other (docs/CANTEEN.md).
    #[serde(default)]
    pub method: Option<String>,
}

#[utoipa::path(post, path = "/api/residents/{id}/topup", tag = "canteen", params(("id" = String, Path, description = "Resident id")), request_body = TopUpBody, responses((status = 200, description = "`{resident_id, balance_fen}` after the committed top-up", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn topup(
    State(api): State<Api>,
    actor: Actor,
    Path(id): Path<String>,
    body: Result<Json<TopUpBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|e| {
        bad_request(
            "bad_body",
            format!("{e}; send JSON like {{\"amount_fen\": 10000}}"),
        )
    })?;
    let op = TopUp {
        resident: id.clone(),
        amount_fen: body.amount_fen,
        by: actor.acting_for(body.by)?,
        reason: body.reason,
        method: body.method,
    };
    let balance = api.journal.run(op).await?;
    Ok(Json(
        serde_json::json!({ "resident_id": id, "balance_fen": balance }),
    ))
}

/// A balance is derived from the append-only ledger; the response carries both the sum and the
/// number of ledger rows it is the sum of.
#[utoipa::path(get, path = "/api/residents/{id}/balance", tag = "canteen", params(("id" = String, Path, description = "Resident id")), responses((status = 200, description = "`{resident_id, balance_fen, ledger_rows}`: the sum of the append-only ledger", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn balance(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(amount_fen), 0), COUNT(*) FROM ledger WHERE resident_id = ?",
    )
    .bind(&id)
    .fetch_one(api.journal.readers())
    .await?;
    let (sum, rows): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(Json(
        serde_json::json!({ "resident_id": id, "balance_fen": sum, "ledger_rows": rows }),
    ))
}

/// Body of card and meal operations.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminBody {
    /// Staff id: absent = the logged-in staff member.
    #[serde(default)]
    pub by: Option<String>,
    /// Resident id (bind).
    #[serde(default)]
    pub resident_id: Option<String>,
    /// Why (void, payout).
    #[serde(default)]
    pub reason: Option<String>,
    /// Fen (payout; absent = the whole balance).
    #[serde(default)]
    pub amount_fen: Option<i64>,
    /// `away` or `hospital` (away).
    #[serde(default)]
    pub kind: Option<String>,
}

async fn admin(
    api: &Api,
    actor: &Actor,
    op: CanteenOp,
    by: Option<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let by = actor.acting_for(by)?;
    Ok(Json(api.journal.run(CanteenAdmin { op, by }).await?))
}

fn admin_body(body: Result<Json<AdminBody>, JsonRejection>) -> Result<AdminBody, ApiError> {
    body.map(|Json(b)| b).map_err(|e| {
        bad_request(
            "bad_body",
            format!("{e}; send JSON like {{\"reason\": \"…\"}}"),
        )
    })
}

#[utoipa::path(post, path = "/api/cards/{card}/lost", tag = "canteen", params(("card" = String, Path, description = "Card UID")), request_body = AdminBody, responses((status = 200, description = "The card is blocked", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn card_lost(
    State(api): State<Api>,
    actor: Actor,
    Path(card): Path<String>,
    body: Result<Json<AdminBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = admin_body(body)?;
    admin(&api, &actor, CanteenOp::CardLost { card }, b.by).await
}

#[utoipa::path(post, path = "/api/cards/{card}/bind", tag = "canteen", params(("card" = String, Path, description = "Card UID")), request_body = AdminBody, responses((status = 200, description = "The card is bound to `resident_id`", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn card_bind(
    State(api): State<Api>,
    actor: Actor,
    Path(card): Path<String>,
    body: Result<Json<AdminBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = admin_body(body)?;
    let resident = b
        .resident_id
        .ok_or_else(|| bad_request("bad_body", "resident_id is required".into()))?;
    admin(&api, &actor, CanteenOp::BindCard { card, resident }, b.by).await
}

#[utoipa::path(post, path = "/api/meals/{id}/void", tag = "canteen", params(("id" = i64, Path, description = "Meal id")), request_body = AdminBody, responses((status = 200, description = "The meal is voided and its charge refunded", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn meal_void(
    State(api): State<Api>,
    actor: Actor,
    Path(meal): Path<i64>,
    body: Result<Json<AdminBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = admin_body(body)?;
    admin(
        &api,
        &actor,
        CanteenOp::VoidMeal {
            meal,
            reason: b.reason.unwrap_or_default(),
        },
        b.by,
    )
    .await
}

#[utoipa::path(post, path = "/api/residents/{id}/payout", tag = "canteen", params(("id" = String, Path, description = "Resident id")), request_body = AdminBody, responses((status = 200, description = "Paid out (`amount_fen`, or the whole balance)", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn payout(
    State(api): State<Api>,
    actor: Actor,
    Path(resident): Path<String>,
    body: Result<Json<AdminBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = admin_body(body)?;
    admin(
        &api,
        &actor,
        CanteenOp::PayOut {
            resident,
            amount_fen: b.amount_fen,
            reason: b.reason.unwrap_or_default(),
        },
        b.by,
    )
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// Day of the daily report, `YYYY-MM-DD`.
    date: Option<String>,
    /// Month of a claim, `YYYY-MM`.
    month: Option<String>,
    /// Quarter of a claim, `YYYY-Qn`.
    quarter: Option<String>,
}

/// `GET /api/reports/daily?date=YYYY-MM-DD`
#[utoipa::path(get, path = "/api/reports/daily", tag = "canteen", params(ReportQuery), responses((status = 200, description = "`{date, periods, close}`: the day's meals by period and its close", body = Object), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn report_daily(
    State(api): State<Api>,
    Query(q): Query<ReportQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let date = q
        .date
        .filter(|d| d.parse::<jiff::civil::Date>().is_ok())
        .ok_or_else(|| bad_request("bad_query", "date=YYYY-MM-DD is required".into()))?;
    let lines = crate::canteen::reports::daily(api.journal.readers(), &date).await?;
    let day: jiff::civil::Date = date
        .parse()
        .map_err(|_| bad_request("bad_query", "date=YYYY-MM-DD is required".into()))?;
    let close = crate::canteen::dayclose::close(api.journal.readers(), &api.registry, day).await?;
    Ok(Json(
        serde_json::json!({ "date": date, "periods": lines, "close": close }),
    ))
}

/// `GET /api/reports/claim?month=YYYY-MM` or `?quarter=YYYY-Qn`: CSV (UTF-8 with BOM).
#[utoipa::path(get, path = "/api/reports/claim", tag = "canteen", params(ReportQuery), responses((status = 200, description = "The subsidy claim of a month or quarter, CSV (UTF-8 with BOM)", body = String, content_type = "text/csv"), (status = "4XX", description = "Refused: `{\"error\": …}` says why and what to do", body = ErrorBody), (status = "5XX", description = "The journal could not answer; retry", body = ErrorBody)))]
async fn report_claim(
    State(api): State<Api>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let period = q
        .month
        .or(q.quarter)
        .and_then(|p| crate::canteen::claim::ClaimPeriod::parse(&p))
        .ok_or_else(|| {
            bad_request(
                "bad_query",
                "month=YYYY-MM or quarter=YYYY-Qn is required".into(),
            )
        })?;
    let month = &period.label;
    let csv =
        crate::canteen::claim::claim_csv(api.journal.readers(), &api.registry, &period).await?;
    let disposition = format!("attachment; filename=\"subsidy-claim-{month}.csv\"");
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        csv,
    )
        .into_response())
}

#[cfg(test)]
mod tests;
