//! Members: enrollment, status, balances, the ledger, redemptions and adjustments.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::JournalDocument;
use fidelis_core::ledger::MemberStatus;
use fidelis_store::{Enrollment, MemberView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::journals::{occurred_at, post_one};
use super::{Problems, cached_program, instant, program, query_param};
use crate::auth::{Caller, Permission, Role};
use crate::dto::{
    AdjustmentRequest, AwardBody, BalancesBody, CurrencyBalanceBody, EnrollRequest, EntryBody,
    HeldTierBody, LedgerPage, ListedBalanceBody, MemberBody, MemberListItem, MemberListPage,
    OutcomeBody, ProfileRequest, RedemptionRequest, StatusRequest,
};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enroll, list_members))
        .routes(routes!(get_member))
        .routes(routes!(portal_link))
        .routes(routes!(set_status))
        .routes(routes!(update_profile))
        .routes(routes!(balances))
        .routes(routes!(ledger))
        .routes(routes!(promotion_standing))
        .routes(routes!(join_promotion))
        .routes(routes!(redeem))
        .routes(routes!(adjust))
}

/// A member of the path, or 404 (a malformed external id names no member).
pub(crate) async fn member(
    state: &AppState,
    program: &fidelis_store::LoadedProgram,
    external_id: &str,
) -> ApiResult<MemberView> {
    if ExternalId::parse(external_id).is_err() {
        return Err(ApiError::not_found(
            "unknown_member",
            format!("no member {external_id:?} in this program"),
        ));
    }
    Ok(state.store.require_member(program, external_id).await?)
}

/// A member named in the request body (a transfer's recipient, a group's owner…): one that
/// does not exist makes the request unprocessable (422 `unknown_member`), not the path
/// unknown — 404 is kept for what the path names.
pub(super) async fn body_member(
    state: &AppState,
    program: &fidelis_store::LoadedProgram,
    external_id: &str,
) -> ApiResult<MemberView> {
    member(state, program, external_id).await.map_err(|e| {
        if e.code == "unknown_member" {
            ApiError::unprocessable(
                "unknown_member",
                format!("no member {external_id:?} in this program"),
            )
        } else {
            e
        }
    })
}

/// Enrolls a member.
#[utoipa::path(post, path = "/programs/{program}/members", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = EnrollRequest,
    responses((status = 201, body = MemberBody, description = "The member was enrolled"), Problems))]
async fn enroll(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<MemberBody>)> {
    caller.require(Permission::MembersWrite, Some(&code))?;
    let program = program(&state, &code).await?;
    let external_id = ExternalId::parse(&request.member)
        .map_err(|e| ApiError::unprocessable("invalid_member", format!("member {e}")))?;
    let profile = checked_profile(request.profile.unwrap_or_default())?;
    let enrollment = Enrollment {
        external_id,
        profile,
        enrolled_at: instant(request.enrolled_at.as_deref(), "enrolled_at")?,
    };
    let consents = request.consents.unwrap_or_default().changes();
    let member = state
        .store
        .enroll_with_consents(
            &program,
            &enrollment,
            request.referral_code.as_deref(),
            &consents,
            Utc::now(),
        )
        .await?;
    let balances = state.store.balances(&program, &member, Utc::now()).await?;
    let mut body = member_body(&member, &balances);
    if request.portal_link == Some(true) {
        body.portal_link = Some(create_portal_link(&state, &caller, &program, &member).await?);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

/// The program's members: searched, filtered, sorted and paged.
#[utoipa::path(get, path = "/programs/{program}/members", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("q" = Option<String>, Query, description = "Search: each word (at most 5) is the start of the member's external id, a word of the name, the email, or (a phone number) the phone's digits; case does not matter", min_length = 1, max_length = 256, pattern = "^[ \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*[^ \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000\\u0000-\\u001F\\u007F-\\u009F]+([ \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]+[^ \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000\\u0000-\\u001F\\u007F-\\u009F]+){0,4}[ \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*$"),
           ("status" = Option<String>, Query, description = "Only members with this status", pattern = "^(active|suspended|closed)$"),
           ("tier" = Option<String>, Query, description = "Only members holding this tier (in any tier group)", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$"),
           ("enrolled_from" = Option<String>, Query, description = "Enrolled at or after this RFC 3339 instant", format = DateTime),
           ("enrolled_until" = Option<String>, Query, description = "Enrolled before this RFC 3339 instant", format = DateTime),
           ("currency" = Option<String>, Query, description = "The currency of `balance_min` and `balance_max` (the program's first currency by default)", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$"),
           ("balance_min" = Option<i64>, Query, description = "Available balance at least this (as recorded)"),
           ("balance_max" = Option<i64>, Query, description = "Available balance at most this (as recorded)"),
           ("sort" = Option<String>, Query, description = "`external_id` (default), `-external_id`, `enrolled_at` or `-enrolled_at`", pattern = "^-?(external_id|enrolled_at)$"),
           ("limit" = Option<i64>, Query, description = "Members per page, 1 to 1000 (default 50)", minimum = 1, maximum = 1000),
           ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page (same `sort`)", pattern = "^(x([0-9a-f]{2}){1,512}|t-?[0-9]{1,18}[.][0-9]{1,18})$")),
    responses((status = 200, body = MemberListPage, description = "A page of members"), Problems))]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    Query(query): Query<crate::dto::Query>,
) -> ApiResult<Json<MemberListPage>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    if matches!(caller.role, Role::Member) {
        return Err(ApiError::forbidden("a member token may not list members"));
    }
    let program = program(&state, &code).await?;
    let member_query = member_query(&query)?;
    let page = state.store.list_members(&program, &member_query).await?;
    Ok(Json(MemberListPage {
        members: page
            .members
            .into_iter()
            .map(|m| MemberListItem {
                member: m.external_id,
                status: m.status.name().to_owned(),
                profile: m.profile,
                enrolled_at: m.enrolled_at,
                tiers: m
                    .tiers
                    .into_iter()
                    .map(|(group, tier)| HeldTierBody { group, tier })
                    .collect(),
                balances: m
                    .balances
                    .into_iter()
                    .map(|(currency, available, pending)| ListedBalanceBody {
                        currency,
                        available,
                        pending,
                    })
                    .collect(),
            })
            .collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// A member list's query parameters, read: a malformed one is 400 `invalid_query` (what
/// they name is checked by [`fidelis_store::MemberQuery::check`]: 422).
pub(crate) fn member_query(query: &crate::dto::Query) -> ApiResult<fidelis_store::MemberQuery> {
    use fidelis_store::{MemberCursor, MemberQuery, MemberSort};
    let invalid = |detail: String| ApiError::bad_request("invalid_query", detail);
    let limit: i64 = query_param(query, "limit")?.unwrap_or(50);
    if !(1..=1_000).contains(&limit) {
        return Err(invalid("limit is 1 to 1000".into()));
    }
    let search = match query.get("q") {
        None => None,
        Some(raw) => {
            if raw.chars().count() > 256 || raw.chars().any(char::is_control) {
                return Err(invalid("q is at most 256 printable characters".into()));
            }
            Some(fidelis_core::members::SearchQuery::parse(raw).map_err(invalid)?)
        }
    };
    let status = match query.get("status") {
        None => None,
        Some(raw) => Some(MemberStatus::parse(raw).ok_or_else(|| {
            invalid(format!("status {raw:?} is not active, suspended or closed"))
        })?),
    };
    let sort = match query.get("sort") {
        None => MemberSort::default(),
        Some(raw) => MemberSort::parse(raw).ok_or_else(|| {
            invalid(format!(
                "sort {raw:?} is not external_id, -external_id, enrolled_at or -enrolled_at"
            ))
        })?,
    };
    let after = match query.get("cursor") {
        None => None,
        Some(raw) => Some(
            MemberCursor::decode(raw)
                .ok_or_else(|| invalid("cursor is a next_cursor from a previous page".into()))?,
        ),
    };
    let when = |name: &str| -> ApiResult<Option<chrono::DateTime<Utc>>> {
        query
            .get(name)
            .map(|raw| {
                chrono::DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| invalid(format!("{name} {raw:?} is not an RFC 3339 instant")))
            })
            .transpose()
    };
    Ok(MemberQuery {
        search,
        status,
        tier: query.get("tier").cloned(),
        enrolled_from: when("enrolled_from")?,
        enrolled_until: when("enrolled_until")?,
        currency: query.get("currency").cloned(),
        balance_min: query_param(query, "balance_min")?,
        balance_max: query_param(query, "balance_max")?,
        sort,
        after,
        limit,
    })
}

fn member_body(member: &MemberView, balances: &[fidelis_store::BalanceView]) -> MemberBody {
    MemberBody {
        member: member.external_id.clone(),
        status: member.status.name().to_owned(),
        profile: member.profile.clone(),
        enrolled_at: member.enrolled_at,
        referral_code: member.referral_code.clone(),
        referred_by: member.referred_by.clone(),
        merged_into: member.merged_into.clone(),
        group: member.group.clone(),
        balances: balances.iter().map(CurrencyBalanceBody::from).collect(),
        portal_link: None,
    }
}

/// How long a one-time portal link works.
pub(crate) const PORTAL_LINK_TTL: chrono::Duration = chrono::Duration::days(7);

/// Creates a one-time portal link for a member (audited): staff with `members:write` only.
pub(crate) async fn create_portal_link(
    state: &AppState,
    caller: &Caller,
    program: &fidelis_store::LoadedProgram,
    member: &MemberView,
) -> ApiResult<crate::dto::PortalLinkBody> {
    let code = program.program.code.as_str();
    caller.require(Permission::MembersWrite, Some(code))?;
    if matches!(caller.role, Role::Member | Role::Partner) {
        return Err(ApiError::forbidden(
            "portal links are created by program staff",
        ));
    }
    let token = crate::auth::new_token();
    let now = Utc::now();
    let expires_at = now + PORTAL_LINK_TTL;
    state
        .store
        .create_signin_link(member.id, &crate::auth::token_hash(&token), now, expires_at)
        .await?;
    let entry = caller.actor().entry(
        now,
        "member.portal_link",
        Some(code),
        Some(&member.external_id),
    );
    state.store.append_audit(&entry).await?;
    Ok(crate::dto::PortalLinkBody {
        link: format!("/portal/{code}/link/{token}"),
        expires_at,
    })
}

/// Creates a one-time link with which the member chooses a portal password (valid seven
/// days, used once; the secret is answered only here). Staff only. Audited.
#[utoipa::path(post, path = "/programs/{program}/members/{member}/portal-link", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 201, body = crate::dto::PortalLinkBody, description = "The link (shown once)"), Problems))]
pub(crate) async fn portal_link(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<crate::dto::PortalLinkBody>)> {
    caller.require(Permission::MembersWrite, Some(&code))?;
    let program = program(&state, &code).await?;
    let member = member(&state, &program, &external_id).await?;
    let link = create_portal_link(&state, &caller, &program, &member).await?;
    Ok((StatusCode::CREATED, Json(link)))
}

/// A member: profile, status and balances.
#[utoipa::path(get, path = "/programs/{program}/members/{member}", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = MemberBody, description = "The member"), Problems))]
pub(crate) async fn get_member(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<Json<MemberBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let program = program(&state, &code).await?;
    let member = member(&state, &program, &external_id).await?;
    let balances = state.store.balances(&program, &member, Utc::now()).await?;
    Ok(Json(member_body(&member, &balances)))
}

/// A profile as given at enrolment or replaced later: its known fields checked, storable
/// on both databases, at most 16 KiB (`422 invalid_member` otherwise).
fn checked_profile(
    fields: serde_json::Map<String, serde_json::Value>,
) -> ApiResult<serde_json::Value> {
    let profile = serde_json::Value::Object(fields);
    if let Some(reason) = fidelis_core::members::profile_problem(&profile)
        .or_else(|| fidelis_store::unstorable_json(&profile).map(str::to_owned))
    {
        return Err(ApiError::unprocessable(
            "invalid_member",
            format!("profile: {reason}"),
        ));
    }
    if profile.to_string().len() > 16 * 1024 {
        return Err(ApiError::unprocessable(
            "invalid_member",
            "the profile may hold at most 16 KiB",
        ));
    }
    Ok(profile)
}

/// Replaces the member's profile (checked as at enrolment). Audited with the names of the
/// fields that changed; a redemption soon after may be held by the fraud rule
/// `redemption_after_change`.
#[utoipa::path(put, path = "/programs/{program}/members/{member}/profile", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = ProfileRequest,
    responses((status = 200, body = MemberBody, description = "The member"), Problems))]
pub(crate) async fn update_profile(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<ProfileRequest>,
) -> ApiResult<Json<MemberBody>> {
    caller.require(Permission::MembersWrite, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden(
            "members change their profile through the program's staff",
        ));
    }
    let profile = checked_profile(request.profile)?;
    let program = program(&state, &code).await?;
    member(&state, &program, &external_id).await?;
    let member = state
        .store
        .update_profile(
            &program,
            &external_id,
            &profile,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    let balances = state.store.balances(&program, &member, Utc::now()).await?;
    Ok(Json(member_body(&member, &balances)))
}

/// Suspends (no earning or redemption), reactivates or closes a member. Audited.
#[utoipa::path(put, path = "/programs/{program}/members/{member}/status", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = StatusRequest,
    responses((status = 200, body = MemberBody, description = "The member"), Problems))]
pub(crate) async fn set_status(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<StatusRequest>,
) -> ApiResult<Json<MemberBody>> {
    caller.require(Permission::MembersWrite, Some(&code))?;
    if caller.role == Role::Member {
        return Err(ApiError::forbidden(
            "members may not change their own status",
        ));
    }
    let status = MemberStatus::parse(&request.status).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_status",
            "status is one of active, suspended, closed",
        )
    })?;
    let program = program(&state, &code).await?;
    member(&state, &program, &external_id).await?;
    let member = state
        .store
        .set_member_status(&program, &external_id, status, Utc::now(), &caller.actor())
        .await?;
    let balances = state.store.balances(&program, &member, Utc::now()).await?;
    Ok(Json(member_body(&member, &balances)))
}

/// Balances per currency as of now (or `as_of`), with what expires and what becomes
/// available when.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/balances", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("as_of" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "RFC 3339; now when absent")),
    responses((status = 200, body = BalancesBody, description = "The member's balances with their expiry schedule"), Problems))]
pub(crate) async fn balances(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    Query(query): Query<crate::dto::Query>,
) -> ApiResult<Json<BalancesBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let as_of = super::query_instant(&query, "as_of")?;
    let program = program(&state, &code).await?;
    let member = member(&state, &program, &external_id).await?;
    let balances = state.store.balances(&program, &member, as_of).await?;
    Ok(Json(BalancesBody {
        member: member.external_id,
        as_of,
        balances: balances.iter().map(CurrencyBalanceBody::from).collect(),
    }))
}

/// The member's progress in cumulative promotions and what it used of promotion limits.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/promotions", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = crate::dto::PromotionStandingBody, description = "The member's cumulative progress, limits used and promotions joined"), Problems))]
pub(crate) async fn promotion_standing(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<Json<crate::dto::PromotionStandingBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let program = program(&state, &code).await?;
    let member = member(&state, &program, &external_id).await?;
    let counters = state.store.promotion_counters(&program, &member).await?;
    let money = &program.program.money_currency;
    let mut body = crate::dto::PromotionStandingBody {
        member: member.external_id.clone(),
        progress: Vec::new(),
        limits_used: Vec::new(),
        joined: Vec::new(),
    };
    for (promotion, period, times, points) in counters {
        if period == fidelis_core::promotions::JOINED {
            body.joined.push(promotion);
            continue;
        }
        let definition = program
            .program
            .promotions
            .iter()
            .find(|p| p.code.as_str() == promotion);
        match (
            period.strip_prefix(fidelis_core::promotions::PROGRESS),
            definition,
        ) {
            (Some(period), Some(p)) => {
                let Some(c) = &p.cumulative else { continue };
                body.progress.push(crate::dto::ProgressBody {
                    promotion,
                    period: period.to_owned(),
                    measure: c.measure.name().into(),
                    progress: c.show(points, money),
                    target: c.show(c.target, money),
                    completed: times,
                });
            }
            (Some(_), None) => {}
            (None, _) => body.limits_used.push(crate::dto::LimitUsedBody {
                promotion,
                period,
                times,
                points,
            }),
        }
    }
    Ok(Json(body))
}

/// Joins the member to an opt-in promotion (joining again changes nothing).
#[utoipa::path(post, path = "/programs/{program}/members/{member}/promotions/{promotion}/join", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("promotion" = String, Path, description = "The opt-in promotion's code", example = "double-december", min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")),
    responses((status = 200, body = crate::dto::PromotionStandingBody, description = "The member's cumulative progress, limits used and promotions joined"), Problems))]
pub(crate) async fn join_promotion(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id, promotion)): Path<(String, String, String)>,
) -> ApiResult<Json<crate::dto::PromotionStandingBody>> {
    caller.require(Permission::JoinPromotions, Some(&code))?;
    caller.require_member(&external_id)?;
    let program = program(&state, &code).await?;
    let member = member(&state, &program, &external_id).await?;
    let Some(definition) = program
        .program
        .promotions
        .iter()
        .find(|p| p.code.as_str() == promotion)
    else {
        return Err(ApiError::not_found(
            "unknown_promotion",
            format!("program {code} has no promotion {promotion:?}"),
        ));
    };
    if !definition.opt_in {
        return Err(ApiError::unprocessable(
            "not_opt_in",
            format!("promotion {promotion} applies to every member; there is nothing to join"),
        ));
    }
    state
        .store
        .join_promotion(&program, &member, &promotion)
        .await?;
    promotion_standing(State(state), caller, Path((code, external_id))).await
}

/// Ledger entries, newest first.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/ledger", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("limit" = Option<i64>, Query, description = "Entries per page, 1 to 500 (default 50)", minimum = 1, maximum = 500),
           ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", pattern = "^[0-9]{1,18}:[0-9]{1,9}$")),
    responses((status = 200, body = LedgerPage, description = "A page of the member's ledger, newest first"), Problems))]
pub(crate) async fn ledger(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    Query(query): Query<crate::dto::Query>,
) -> ApiResult<Json<LedgerPage>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let limit: i64 = query_param(&query, "limit")?.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "limit is 1 to 500"));
    }
    let cursor = match query.get("cursor") {
        None => None,
        Some(raw) => Some(
            raw.split_once(':')
                .and_then(|(j, s)| Some((j.parse::<i64>().ok()?, s.parse::<i32>().ok()?)))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        "cursor is a next_cursor from a previous page",
                    )
                })?,
        ),
    };
    let program = program(&state, &code).await?;
    let member = member(&state, &program, &external_id).await?;
    let entries = state.store.ledger(&member, cursor, limit).await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| {
            entries
                .last()
                .map(|e| format!("{}:{}", e.journal_id, e.seq))
        })
        .flatten();
    Ok(Json(LedgerPage {
        entries: entries
            .into_iter()
            .map(|e| EntryBody {
                awards: e
                    .awards
                    .into_iter()
                    .map(|(source, points)| AwardBody {
                        source,
                        currency: e.currency.clone(),
                        points,
                    })
                    .collect(),
                journal: e.journal_external_id,
                journal_type: e.journal_type,
                currency: e.currency,
                kind: e.kind,
                pool: e.pool,
                points: e.amount,
                effective_at: e.effective_at,
            })
            .collect(),
        next_cursor,
    }))
}

/// Spends points, earliest expiry first. Idempotent by `external_id`.
#[utoipa::path(post, path = "/programs/{program}/members/{member}/redemptions", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = RedemptionRequest,
    responses((status = 201, body = OutcomeBody, description = "Redeemed"), (status = 202, body = OutcomeBody, description = "Held for review by a fraud rule: nothing redeemed until an agent releases it"), (status = 200, body = OutcomeBody, description = "A replay: the first outcome", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))), Problems))]
async fn redeem(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<RedemptionRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    if caller.role == Role::Member {
        caller.require_member(&external_id)?;
    }
    let partner = match caller.role {
        Role::Partner => {
            caller.require_partner(request.partner.as_deref().or(caller.partner.as_deref()))?;
            caller.partner.clone()
        }
        _ => request.partner,
    };
    let document = JournalDocument {
        external_id: Some(request.external_id),
        member: Some(external_id),
        kind: Some("redemption".into()),
        occurred_at: occurred_at(request.occurred_at.as_deref())?,
        currency: Some(request.currency),
        points: Some(request.points),
        partner,
        ..JournalDocument::default()
    };
    let program = cached_program(&state, &code).await?;
    post_one(&state, &caller, &program, document).await
}

/// A manual adjustment by an agent, with a reason code. Audited.
#[utoipa::path(post, path = "/programs/{program}/members/{member}/adjustments", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = AdjustmentRequest,
    responses((status = 201, body = OutcomeBody, description = "Adjusted"), (status = 200, body = OutcomeBody, description = "A replay: the first outcome", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same external id"))), Problems))]
pub(crate) async fn adjust(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<AdjustmentRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Adjust, Some(&code))?;
    let program = program(&state, &code).await?;
    let document = JournalDocument {
        external_id: Some(request.external_id.clone()),
        member: Some(external_id.clone()),
        kind: Some("adjustment".into()),
        occurred_at: occurred_at(request.occurred_at.as_deref())?,
        currency: Some(request.currency.clone()),
        points: Some(request.points),
        reason: Some(request.reason.clone()),
        ..JournalDocument::default()
    };
    let response = post_one(&state, &caller, &program, document).await?;
    if response.status() == StatusCode::CREATED {
        let mut audit = caller.actor().entry(
            Utc::now(),
            "member.adjustment",
            Some(&code),
            Some(&external_id),
        );
        audit.after = Some(serde_json::json!({
            "journal": request.external_id, "currency": request.currency, "points": request.points, "reason": request.reason
        }));
        state.store.append_audit(&audit).await?;
    }
    Ok(response)
}
