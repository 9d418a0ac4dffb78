//! The member lifecycle: tier standing and manual tier assignment.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::members::member;
use super::{Problems, instant, program};
use crate::auth::{Caller, Permission, Role};
use crate::dto::{AssignTierRequest, TierChangeBody, TierStandingBody, TiersBody};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tiers))
        .routes(routes!(assign_tier))
}

/// The member's tier in each tier group as of now (or `as_of`): since when, valid until
/// when, progress in the current period toward the next tier, and the tier's benefits.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/tiers", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo"), ("member" = String, Path, description = "The member's external id", example = "C-100000"),
           ("as_of" = Option<String>, Query, description = "RFC 3339; now when absent")),
    responses((status = 200, body = TiersBody), Problems))]
async fn tiers(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    Query(query): Query<crate::dto::Query>,
) -> ApiResult<Json<TiersBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let as_of = instant(query.get("as_of").map(String::as_str), "as_of")?;
    let program = program(&state, &code).await?;
    let member = member(&state, &program, &external_id).await?;
    let standing = state
        .store
        .tier_standing(&program, &member.external_id, as_of)
        .await?;
    Ok(Json(TiersBody {
        member: member.external_id,
        as_of,
        tiers: standing.iter().map(TierStandingBody::from).collect(),
    }))
}

/// Gives the member a tier in a group by hand, with a reason (audited). The tier is
/// kept at least until `valid_until`, or until the end of the current period.
#[utoipa::path(put, path = "/programs/{program}/members/{member}/tiers/{group}", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo"), ("member" = String, Path, description = "The member's external id", example = "C-100000"),
           ("group" = String, Path, description = "The tier group's code", example = "status")),
    request_body = AssignTierRequest,
    responses((status = 200, body = TierChangeBody), Problems))]
async fn assign_tier(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id, group)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<AssignTierRequest>,
) -> ApiResult<Json<TierChangeBody>> {
    caller.require(Permission::Adjust, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden("members may not change their own tier"));
    }
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "reason must be 1 to 500 characters",
        ));
    }
    let valid_until = match request.valid_until.as_deref() {
        Some(raw) => Some(instant(Some(raw), "valid_until")?),
        None => None,
    };
    let program = program(&state, &code).await?;
    member(&state, &program, &external_id).await?;
    let change = state
        .store
        .assign_tier(
            &program,
            &external_id,
            &group,
            &request.tier,
            valid_until,
            reason,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    Ok(Json(TierChangeBody::from(&change)))
}
