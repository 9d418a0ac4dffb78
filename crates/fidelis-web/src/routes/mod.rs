//! The routes: `api()` is everything under `/api/v1` (documented in OpenAPI), and
//! `operations()` the endpoints around it (health, readiness, metrics, the document).

pub(crate) mod admin;
pub(crate) mod analytics;
pub(crate) mod badges;
pub(crate) mod catalog;
pub(crate) mod claims;
mod expiry;
pub(crate) mod fraud;
pub(crate) mod holds;
pub(crate) mod journals;
pub(crate) mod lifecycle;
pub(crate) mod members;
pub(crate) mod messages;
mod openings;
pub(crate) mod partners;
pub(crate) mod personal_data;
pub(crate) mod programs;
pub(crate) mod segments;
pub(crate) mod vouchers;
pub(crate) mod webhooks;

use std::any::Any;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use fidelis_store::LoadedProgram;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ProblemBody};
use crate::{AppState, ServerConfig};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fidelis",
        description = "The Fidelis loyalty platform's API: programs, members, journals, balances and the ledger.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "programs", description = "Program definitions and templates"),
        (name = "members", description = "Members, balances and the ledger"),
        (name = "journals", description = "Everything that changes points"),
        (name = "holds", description = "Pay with points: hold, capture, release"),
        (name = "vouchers", description = "Vouchers: issue, read, redeem (whole, in part, or reserved for an order), cancel"),
        (name = "catalog", description = "The reward catalog and its orders: items priced per tier, with stock; orders placed, fulfilled, cancelled"),
        (name = "claims", description = "Missing-points claims: filed by members or staff, approved once (the transaction processed as a journal) or rejected with a reason"),
        (name = "fraud", description = "Fraud review: journals the program's fraud rules held (nothing earned meanwhile), released (processed as of their activity) or rejected once by an agent; flagged members"),
        (name = "analytics", description = "Knowing the program: promotions measured against their control groups"),
        (name = "partners", description = "Partners and their ledger: earn partners paying for points (prepaid packs or postpaid bills), burn partners reimbursed; events"),
        (name = "webhooks", description = "The program's events sent to its subscribers: signed, retried, dead deliveries replayable"),
        (name = "messages", description = "E-mail to members: templates per event and language with a preview, and the messages sent, deferred, suppressed or dead"),
        (name = "operations", description = "Jobs, tokens, users and the audit log")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The problems any API call may answer, documented once for every operation.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Problems {
    #[response(
        status = 400,
        description = "Malformed: not JSON, wrong types, unknown fields",
        content_type = "application/problem+json"
    )]
    BadRequest(ProblemBody),
    #[response(
        status = 401,
        description = "No valid bearer token",
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer`: the scheme to authenticate with"))
    )]
    Unauthorized(ProblemBody),
    #[response(
        status = 403,
        description = "The token may not do this",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemBody),
    #[response(
        status = 404,
        description = "No such program, member or journal",
        content_type = "application/problem+json"
    )]
    NotFound(ProblemBody),
    #[response(
        status = 409,
        description = "Conflicts with what exists",
        content_type = "application/problem+json"
    )]
    Conflict(ProblemBody),
    #[response(
        status = 413,
        description = "Body too large",
        content_type = "application/problem+json"
    )]
    TooLarge(ProblemBody),
    #[response(
        status = 415,
        description = "Not JSON",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(ProblemBody),
    #[response(
        status = 422,
        description = "Well formed, but refused: the reason is in `code`",
        content_type = "application/problem+json"
    )]
    Unprocessable(ProblemBody),
    #[response(
        status = 429,
        description = "Too many requests for this token",
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    TooManyRequests(ProblemBody),
    #[response(
        status = 503,
        description = "The database could not complete the request (`database_unavailable`, `storage_unavailable`, `database_busy`) or it ran past the request timeout (`timeout`): a change's outcome is unknown; retry with the same `external_id`",
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ProblemBody),
}

/// Everything under `/api/v1`, with its OpenAPI document.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        "/api/v1",
        OpenApiRouter::new()
            .merge(programs::routes())
            .merge(members::routes())
            .merge(lifecycle::routes())
            .merge(expiry::routes())
            .merge(openings::routes())
            .merge(journals::routes())
            .merge(holds::routes())
            .merge(vouchers::routes())
            .merge(catalog::routes())
            .merge(badges::routes())
            .merge(partners::routes())
            .merge(analytics::routes())
            .merge(segments::routes())
            .merge(claims::routes())
            .merge(fraud::routes())
            .merge(webhooks::routes())
            .merge(personal_data::routes())
            .merge(messages::routes())
            .merge(admin::routes()),
    )
}

/// Health, readiness, metrics and the OpenAPI document (outside `/api/v1`, without rate
/// limits, and documented like the rest).
pub(crate) fn operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_document))
        .routes(routes!(openapi_document_v1))
        .routes(routes!(program_schema))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_document(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}

/// The OpenAPI 3.1 document of this API (the same, under the API's prefix).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_document_v1(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}

/// The JSON Schema of program definitions, for editors (a YAML or JSON language server
/// completes and checks definitions with it) and for tools that write them.
#[utoipa::path(get, path = "/schemas/program.schema.json", tag = "operations", security(()),
    responses((status = 200, description = "The program definition's JSON Schema (draft 2020-12)", body = Object, content_type = "application/schema+json")))]
async fn program_schema() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/schema+json")],
        fidelis_core::program::DEFINITION_SCHEMA,
    )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = crate::dto::Health, description = "The process answers")))]
async fn health() -> Json<crate::dto::Health> {
    Json(crate::dto::Health {
        status: "ok".into(),
    })
}

/// How long readiness may take to decide.
const READINESS_BOUND: std::time::Duration = std::time::Duration::from_millis(1_500);

/// Readiness: the database answers within 1.5 s, and — after writes failed for the
/// storage's sake (a full disk) — a write commits again.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = crate::dto::Health, description = "Ready: the database answers and writes work"), (status = 503, description = "Not ready: the database cannot be reached, or writes are failing", body = ProblemBody, content_type = "application/problem+json")))]
async fn ready(State(state): State<AppState>) -> ApiResult<Json<crate::dto::Health>> {
    state
        .store
        .readiness(READINESS_BOUND)
        .await
        .map_err(|reason| ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason)
        })?;
    Ok(Json(crate::dto::Health {
        status: "ready".into(),
    }))
}

/// Prometheus metrics: requests and latency per route, journals by outcome, points issued
/// and redeemed per currency; with a read replica, its lag (`-1` when it cannot be asked)
/// and whether the reports read from it.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // With a read replica (`serve --read-database`): its lag at the last check and whether
    // the reports read from it.
    if let Some(replica) = state.store.replica_status() {
        let lag = if replica.lag_seconds.is_finite() {
            replica.lag_seconds
        } else {
            -1.0
        };
        metrics::gauge!("fidelis_read_replica_lag_seconds").set(lag);
        metrics::gauge!("fidelis_read_replica_in_use").set(if replica.in_use { 1.0 } else { 0.0 });
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no_route", "no such endpoint; see /openapi.json")
}

/// A handler that panicked: logged, answered 500 without internals.
pub(crate) fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::internal().into_response()
}

/// Rate limiting per bearer token (a shared bucket for requests without one), applied to
/// `router`.
pub(crate) fn rate_limited(
    router: axum::Router<AppState>,
    config: &ServerConfig,
    tokens: &Arc<crate::auth::TokenCache>,
) -> axum::Router<AppState> {
    let per_second = config.rate_limit_per_second.max(1);
    let mut builder = GovernorConfigBuilder::default().key_extractor(TokenKey(Arc::clone(tokens)));
    builder
        .per_nanosecond((1_000_000_000 / per_second).max(1))
        .burst_size(u32::try_from(per_second.saturating_mul(2)).unwrap_or(u32::MAX));
    let Some(governor) = builder.finish() else {
        tracing::warn!(per_second, "rate limit not applied: invalid settings");
        return router;
    };
    let layer = GovernorLayer::new(Arc::new(governor)).error_handler(|e| {
        let mut response =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
                .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    });
    router.layer(layer)
}

/// The rate limit's key: the token's hash — or one shared key for requests without a
/// token and for tokens nobody issued ([`crate::auth::TokenCache::surely_unknown`]), so
/// that made-up tokens neither escape the limit nor each add an entry to its table.
#[derive(Clone)]
pub(crate) struct TokenKey(Arc<crate::auth::TokenCache>);

impl KeyExtractor for TokenKey {
    type Key = String;

    fn extract<T>(
        &self,
        req: &axum::http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        Ok(req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(crate::auth::bearer_token)
            .map(crate::auth::token_hash)
            .filter(|hash| !self.0.surely_unknown(hash))
            .unwrap_or_else(|| "anonymous".to_owned()))
    }
}

/// 201 with `body`, or — answering a replay of the same external id — 200 with
/// `Idempotent-Replayed: true`: every idempotent write answers this way.
pub(crate) fn created_or_replayed<T: serde::Serialize>(
    body: T,
    replayed: bool,
) -> axum::response::Response {
    if replayed {
        let mut response = (StatusCode::OK, Json(body)).into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        response
    } else {
        (StatusCode::CREATED, Json(body)).into_response()
    }
}

/// The program named in a path, or 404.
pub(crate) async fn program(state: &AppState, code: &str) -> ApiResult<Arc<LoadedProgram>> {
    if fidelis_core::ids::ProgramCode::parse(code).is_err() {
        return Err(ApiError::not_found(
            "unknown_program",
            format!("no program {code:?}"),
        ));
    }
    Ok(state.store.require_program(code).await?)
}

/// The program by its code, as cached (no database read when it is): for posting
/// journals, where the store verifies the revision inside the transaction anyway.
pub(crate) async fn cached_program(state: &AppState, code: &str) -> ApiResult<Arc<LoadedProgram>> {
    if let Some(program) = state.store.cached_program(code) {
        return Ok(program);
    }
    program(state, code).await
}

/// An RFC 3339 instant from a request body, or now; a malformed one is 422.
pub(crate) fn instant(raw: Option<&str>, field: &str) -> ApiResult<DateTime<Utc>> {
    parse_instant(raw).map_err(|raw| {
        ApiError::unprocessable(
            "invalid_request",
            format!("{field} {raw:?} is not an RFC 3339 instant"),
        )
    })
}

/// An instant in the query (`as_of`): now when absent; a malformed one is a query error
/// (400 `invalid_query`), like every other query parameter.
/// Whether the query asks for CSV (`format=csv`) rather than JSON (`format=json`, or no
/// `format`); any other format is a 400 `invalid_query`.
pub(crate) fn wants_csv(query: &crate::dto::Query) -> ApiResult<bool> {
    match query.get("format").map(String::as_str) {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            "format is json or csv".to_owned(),
        )),
    }
}

pub(crate) fn query_instant(query: &crate::dto::Query, name: &str) -> ApiResult<DateTime<Utc>> {
    parse_instant(query.get(name).map(String::as_str)).map_err(|raw| {
        ApiError::bad_request(
            "invalid_query",
            format!("query parameter {name}={raw:?} is not an RFC 3339 instant"),
        )
    })
}

/// An RFC 3339 instant, now when absent; the raw text back when it is not one.
fn parse_instant(raw: Option<&str>) -> Result<DateTime<Utc>, String> {
    match raw {
        None => Ok(Utc::now()),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| raw.to_owned()),
    }
}

/// A query parameter's value, parsed.
pub(crate) fn query_param<T: std::str::FromStr>(
    query: &crate::dto::Query,
    name: &str,
) -> ApiResult<Option<T>> {
    query
        .get(name)
        .map(|raw| {
            raw.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("query parameter {name}={raw:?} is not valid"),
                )
            })
        })
        .transpose()
}
