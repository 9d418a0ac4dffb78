//! Extending expiries: an operator gives every open bucket of a currency expiring in a
//! window more time (see `fidelis_store::ExpiryExtension`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use fidelis_core::ids::ExternalId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, instant, program};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(extend_expiries))
}

/// Every open bucket of `currency` expiring in `[expiring_from, expiring_until)` gets
/// `days` or `months` more.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiryExtensionRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub external_id: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    /// RFC 3339: buckets expiring at or after this instant …
    #[schema(format = DateTime)]
    pub expiring_from: String,
    /// … and before this one.
    #[schema(format = DateTime)]
    pub expiring_until: String,
    #[schema(minimum = 1, maximum = 3660)]
    pub days: Option<u32>,
    #[schema(minimum = 1, maximum = 120)]
    pub months: Option<u32>,
    /// Why (audited): `covid-2020`, "stores closed for renovation"…
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// What an extension did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExpiryExtensionBody {
    pub members: u64,
    pub buckets: u64,
    /// The points those buckets hold.
    pub points: i64,
    /// True when this answers a replay of the same external id: nothing changed now.
    pub replayed: bool,
}

/// Extends the expiry of every open bucket of a currency that expires in a window —
/// goodwill for every member at once (what airlines did in 2020). Audited; idempotent on
/// `external_id`. Only for currencies whose buckets expire on their own (rolling, fixed
/// date); inactivity windows are extended by the program's `expiry_extension`.
#[utoipa::path(post, path = "/programs/{program}/expiry-extensions", tag = "programs",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = ExpiryExtensionRequest,
    responses((status = 201, body = ExpiryExtensionBody, description = "Extended"),
              (status = 200, body = ExpiryExtensionBody, description = "A replay: what the first call did", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))),
              Problems))]
async fn extend_expiries(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<ExpiryExtensionRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    let external_id = ExternalId::parse(&request.external_id)
        .map_err(|e| ApiError::unprocessable("invalid_request", format!("external_id {e}")))?;
    let extension = fidelis_store::ExpiryExtension {
        currency: request.currency,
        from: instant(Some(&request.expiring_from), "expiring_from")?,
        until: instant(Some(&request.expiring_until), "expiring_until")?,
        days: request.days,
        months: request.months,
        reason: request.reason,
    };
    let program = program(&state, &code).await?;
    let report = state
        .store
        .extend_expiries(
            &program,
            &extension,
            &external_id,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    let body = ExpiryExtensionBody {
        members: report.members,
        buckets: report.buckets,
        points: report.points,
        replayed: report.replayed,
    };
    Ok(super::created_or_replayed(body, report.replayed))
}
