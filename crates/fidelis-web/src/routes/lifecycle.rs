//! The member lifecycle: tier standing and manual tier assignment, transfers between
//! members, merging duplicates, reinstating expired points, groups (households).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use fidelis_core::ids::ExternalId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::members::{body_member, member};
use super::{Problems, instant, program};
use crate::auth::{Caller, Permission, Role};
use crate::dto::{
    AssignTierRequest, CurrencyBalanceBody, GroupBody, GroupMemberRequest, GroupRedemptionRequest,
    GroupRequest, MergeBody, MergeRequest, OutcomeBody, ReinstateRequest, TierChangeBody,
    TierStandingBody, TiersBody, TransferRequest,
};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tiers))
        .routes(routes!(assign_tier))
        .routes(routes!(transfer))
        .routes(routes!(merge))
        .routes(routes!(reinstate))
        .routes(routes!(create_group))
        .routes(routes!(get_group))
        .routes(routes!(join_group))
        .routes(routes!(redeem_from_group))
}

async fn group_body(
    state: &AppState,
    program: &fidelis_store::LoadedProgram,
    g: fidelis_store::GroupView,
) -> ApiResult<GroupBody> {
    let member = state.store.require_member(program, &g.group).await?;
    let balances = state.store.balances(program, &member, Utc::now()).await?;
    Ok(GroupBody {
        group: g.group,
        share_percent: g.share_percent,
        redeem: g.redeem.name().to_owned(),
        owner: g.owner,
        members: g.members,
        balances: balances.iter().map(CurrencyBalanceBody::from).collect(),
    })
}

/// Creates a group (household) with its own balances; the owner joins it. Members give it
/// `share_percent` of the redeemable points they earn; `redeem` says who may spend.
#[utoipa::path(post, path = "/programs/{program}/groups", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = GroupRequest,
    responses((status = 201, body = GroupBody, description = "The group was created"), Problems))]
async fn create_group(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<GroupRequest>,
) -> ApiResult<(StatusCode, Json<GroupBody>)> {
    caller.require(Permission::MembersWrite, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden("members may not create groups"));
    }
    let group = ExternalId::parse(&request.group)
        .map_err(|e| ApiError::unprocessable("invalid_request", format!("group {e}")))?;
    let redeem = fidelis_store::RedeemRule::parse(&request.redeem).ok_or_else(|| {
        ApiError::unprocessable("invalid_request", "redeem is owner or any_member")
    })?;
    let name_length = request.name.chars().count();
    if !(1..=128).contains(&name_length) || request.name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "name: 1 to 128 printable characters",
        ));
    }
    let program = program(&state, &code).await?;
    body_member(&state, &program, &request.owner).await?;
    let g = state
        .store
        .create_group(
            &program,
            &group,
            &request.name,
            request.share_percent,
            redeem,
            &request.owner,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(group_body(&state, &program, g).await?),
    ))
}

/// A group: its rule, members and balances.
#[utoipa::path(get, path = "/programs/{program}/groups/{group}", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("group" = String, Path, description = "The group's external id", example = "household-1", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = GroupBody, description = "The group with its members"), Problems))]
pub(crate) async fn get_group(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, group)): Path<(String, String)>,
) -> ApiResult<Json<GroupBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    let program = program(&state, &code).await?;
    let g = state.store.require_group(&program, &group).await?;
    if caller.role == Role::Member && !g.members.iter().any(|m| caller.require_member(m).is_ok()) {
        return Err(ApiError::forbidden("members read only their own group"));
    }
    Ok(Json(group_body(&state, &program, g).await?))
}

/// Adds a member to a group (a member belongs to at most one). Audited.
#[utoipa::path(post, path = "/programs/{program}/groups/{group}/members", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("group" = String, Path, description = "The group's external id", example = "household-1", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = GroupMemberRequest,
    responses((status = 200, body = GroupBody, description = "The group with its members"), Problems))]
async fn join_group(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, group)): Path<(String, String)>,
    ApiJson(request): ApiJson<GroupMemberRequest>,
) -> ApiResult<Json<GroupBody>> {
    caller.require(Permission::MembersWrite, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden("members may not change groups"));
    }
    let program = program(&state, &code).await?;
    body_member(&state, &program, &request.member).await?;
    let g = state
        .store
        .join_group(
            &program,
            &group,
            &request.member,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    Ok(Json(group_body(&state, &program, g).await?))
}

/// Spends the group's points for one of its members, as the group's rule allows.
/// Idempotent on `external_id`.
#[utoipa::path(post, path = "/programs/{program}/groups/{group}/redemptions", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("group" = String, Path, description = "The group's external id", example = "household-1", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = GroupRedemptionRequest,
    responses((status = 201, body = OutcomeBody, description = "Spent from the group's balance"), (status = 200, body = OutcomeBody, description = "A replay: the first outcome", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))), Problems))]
async fn redeem_from_group(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, group)): Path<(String, String)>,
    ApiJson(request): ApiJson<GroupRedemptionRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    caller.require_member(&request.member)?;
    if caller.role == Role::Partner {
        return Err(ApiError::forbidden("partners do not spend group points"));
    }
    external_id(&request.external_id)?;
    if request.points <= 0 {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "points must be positive",
        ));
    }
    let program = program(&state, &code).await?;
    body_member(&state, &program, &request.member).await?;
    match state
        .store
        .redeem_from_group(
            &program,
            &group,
            &request.member,
            &request.currency,
            request.points,
            &request.external_id,
            Utc::now(),
        )
        .await?
    {
        Ok(posted) => Ok(outcome_response(&posted.outcome, posted.replayed)),
        Err(e) => Err(e.into()),
    }
}

fn external_id(raw: &str) -> ApiResult<ExternalId> {
    ExternalId::parse(raw)
        .map_err(|e| ApiError::unprocessable("invalid_request", format!("external_id {e}")))
}

fn reason(raw: &str) -> ApiResult<&str> {
    let reason = raw.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "reason must be 1 to 500 characters",
        ));
    }
    Ok(reason)
}

/// 201 with the outcome, or 200 (and `Idempotent-Replayed: true`) for a replay.
fn outcome_response(outcome: &fidelis_core::outcome::Outcome, replayed: bool) -> Response {
    super::created_or_replayed(OutcomeBody::new(outcome, replayed), replayed)
}

/// Sends points to another member, within the currency's daily transfer limit. Both
/// members' ledgers show the transfer. Idempotent on `external_id`. A transfer closing a
/// ring of members (the program's `transfer_ring` rule) is held for review: 202.
#[utoipa::path(post, path = "/programs/{program}/members/{member}/transfers", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The sending member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = TransferRequest,
    responses((status = 201, body = OutcomeBody, description = "Transferred"), (status = 202, body = OutcomeBody, description = "Held for review: the transfer closes a ring (fraud rule `transfer_ring`); nothing moves until an agent releases it"), (status = 200, body = OutcomeBody, description = "A replay: the first outcome", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))), Problems))]
pub(crate) async fn transfer(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, from)): Path<(String, String)>,
    ApiJson(request): ApiJson<TransferRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    caller.require_member(&from)?;
    if caller.role == Role::Partner {
        return Err(ApiError::forbidden(
            "partners do not move points between members",
        ));
    }
    let id = external_id(&request.external_id)?;
    if request.points <= 0 {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "points must be positive",
        ));
    }
    let program = program(&state, &code).await?;
    member(&state, &program, &from).await?;
    body_member(&state, &program, &request.to).await?;
    let (outcome, replayed) = state
        .store
        .transfer_screened(
            &program,
            &from,
            &request.to,
            &request.currency,
            request.points,
            &id,
            Utc::now(),
        )
        .await?;
    if outcome.status == "held" && !replayed {
        return Ok(axum::response::IntoResponse::into_response((
            axum::http::StatusCode::ACCEPTED,
            Json(OutcomeBody::new(&outcome, false)),
        )));
    }
    Ok(outcome_response(&outcome, replayed))
}

/// Merges the member (a duplicate record) into another: points move with their expiry
/// dates, promotion counters add up, the higher tier is kept; the member is closed and
/// journals posted for it later go to the survivor. Audited.
#[utoipa::path(post, path = "/programs/{program}/members/{member}/merge", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The duplicate's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = MergeRequest,
    responses((status = 200, body = MergeBody, description = "The member was merged into the survivor"), Problems))]
pub(crate) async fn merge(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, source)): Path<(String, String)>,
    ApiJson(request): ApiJson<MergeRequest>,
) -> ApiResult<Json<MergeBody>> {
    caller.require(Permission::MembersWrite, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden("members may not merge member records"));
    }
    let program = program(&state, &code).await?;
    member(&state, &program, &source).await?;
    body_member(&state, &program, &request.into).await?;
    let report = state
        .store
        .merge_members(
            &program,
            &source,
            &request.into,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    Ok(Json(MergeBody {
        source: report.source,
        survivor: report.survivor,
        moved: crate::dto::points(&report.moved),
        tier_changes: report
            .tier_changes
            .iter()
            .map(TierChangeBody::from)
            .collect(),
    }))
}

/// Reinstates the member's points of a currency that expired within the currency's
/// window (`reinstate_within_days`, the first day included) and were not reinstated
/// before. An agent's action with a reason, audited. Idempotent on `external_id`.
#[utoipa::path(post, path = "/programs/{program}/members/{member}/reinstatements", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = ReinstateRequest,
    responses((status = 201, body = OutcomeBody, description = "Reinstated"), (status = 200, body = OutcomeBody, description = "A replay: the first outcome", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))), Problems))]
pub(crate) async fn reinstate(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external)): Path<(String, String)>,
    ApiJson(request): ApiJson<ReinstateRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Adjust, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden("members may not reinstate points"));
    }
    let id = external_id(&request.external_id)?;
    let reason = reason(&request.reason)?;
    let program = program(&state, &code).await?;
    member(&state, &program, &external).await?;
    let (outcome, replayed) = state
        .store
        .reinstate(
            &program,
            &external,
            &request.currency,
            &id,
            reason,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    Ok(outcome_response(&outcome, replayed))
}

/// The member's tier in each tier group as of now (or `as_of`): since when, valid until
/// when, progress in the current period toward the next tier, and the tier's benefits.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/tiers", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("as_of" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "RFC 3339; now when absent")),
    responses((status = 200, body = TiersBody, description = "The member's tier in each tier group"), Problems))]
pub(crate) async fn tiers(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    Query(query): Query<crate::dto::Query>,
) -> ApiResult<Json<TiersBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let as_of = super::query_instant(&query, "as_of")?;
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
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("group" = String, Path, description = "The tier group's code", example = "status", min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")),
    request_body = AssignTierRequest,
    responses((status = 200, body = TierChangeBody, description = "The tier was assigned"), Problems))]
pub(crate) async fn assign_tier(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id, group)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<AssignTierRequest>,
) -> ApiResult<Json<TierChangeBody>> {
    caller.require(Permission::Adjust, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden("members may not change their own tier"));
    }
    let reason = reason(&request.reason)?;
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
