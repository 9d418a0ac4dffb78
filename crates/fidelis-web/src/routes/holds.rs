//! Pay with points: a hold reserves a member's points for an order, then a capture spends
//! them or a release gives them back (see `fidelis_core::process`'s `holds`). Each step is
//! a journal whose external id is derived from the order's id (`hold:`, `capture:`,
//! `release:`), so every step is idempotent by the order: retried, it answers what the
//! first call did.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use fidelis_core::journal::{
    CAPTURE_PREFIX, HOLD_PREFIX, JournalDocument, JournalError, RELEASE_PREFIX,
};
use fidelis_store::{HoldView, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program};
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_hold))
        .routes(routes!(get_hold))
        .routes(routes!(capture_hold))
        .routes(routes!(release_hold))
}

/// How long a hold lasts when the request does not say: fifteen minutes, a checkout.
const DEFAULT_TTL_SECONDS: u32 = 900;
/// The longest a hold may last: a week (a card authorisation lasts about as long).
const MAX_TTL_SECONDS: u32 = 7 * 24 * 3600;

/// Points to reserve for an order.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// The order's id in the shop or checkout: every step of the hold is idempotent by it.
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub order_id: String,
    /// The member's external id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub points: i64,
    /// Seconds until the hold expires unless captured (default 900; at most a week).
    #[schema(minimum = 1, maximum = 604_800)]
    pub ttl_seconds: Option<u32>,
    /// The partner where the points are spent (a partner token's own, when absent).
    #[schema(min_length = 1, max_length = 128)]
    pub partner: Option<String>,
}

/// A hold and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HoldBody {
    pub order_id: String,
    pub member: String,
    pub currency: String,
    pub points: i64,
    /// `held`; `expired` (past `expires_at`, not captured: the jobs release it);
    /// `captured` (spent, a redemption); `released` (given back).
    pub status: String,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// True when this answers a retry: the step had been done, nothing changed now.
    pub replayed: bool,
}

impl HoldBody {
    fn new(h: HoldView, replayed: bool) -> Self {
        Self {
            order_id: h.order,
            member: h.member,
            currency: h.currency,
            points: h.points,
            status: h.status.to_owned(),
            placed_at: h.placed_at,
            expires_at: h.expires_at,
            partner: h.partner,
            replayed,
        }
    }
}

const ORDER_PARAM: &str = "The order's id";

/// The hold of an order as the caller may see it: a member token its own member's, a
/// partner token its own partner's (404 otherwise: another's order is not confirmed).
async fn visible_hold(
    state: &AppState,
    caller: &Caller,
    program: &fidelis_store::LoadedProgram,
    order: &str,
) -> ApiResult<HoldView> {
    let unknown = || ApiError::from(JournalError::UnknownHold(order.chars().take(120).collect()));
    let hold = state
        .store
        .hold(program, order, Utc::now())
        .await?
        .ok_or_else(unknown)?;
    let visible = match caller.role {
        Role::Member => caller.member.as_deref() == Some(hold.member.as_str()),
        Role::Partner => {
            caller.partner.is_some() && caller.partner.as_deref() == hold.partner.as_deref()
        }
        _ => true,
    };
    if visible { Ok(hold) } else { Err(unknown()) }
}

/// Reserves points for an order: they leave the available balance (earliest expiry
/// first, as a redemption) and are spendable nowhere else until the hold is captured,
/// released, or expires. Idempotent by `order_id`: a retry answers the hold placed.
#[utoipa::path(post, path = "/programs/{program}/holds", tag = "holds",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = HoldRequest,
    responses((status = 201, body = HoldBody, description = "Held"),
              (status = 200, body = HoldBody, description = "A retry: the hold placed for this order", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same order"))),
              Problems))]
async fn place_hold(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<HoldRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    if caller.role == Role::Member {
        caller.require_member(&request.member)?;
    }
    let partner = match caller.role {
        Role::Partner => {
            caller.require_partner(request.partner.as_deref().or(caller.partner.as_deref()))?;
            caller.partner.clone()
        }
        _ => request.partner.clone(),
    };
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::unprocessable(
            "invalid_request",
            format!("ttl_seconds must be 1 to {MAX_TTL_SECONDS}"),
        ));
    }
    let program = cached_program(&state, &code).await?;
    // A retry finds the hold it placed (its end was computed from the first call's now).
    let same = |h: &HoldView| {
        h.member == request.member && h.currency == request.currency && h.points == request.points
    };
    let replay = |h: HoldView| {
        if same(&h) {
            Ok(super::created_or_replayed(HoldBody::new(h, true), true))
        } else {
            Err(ApiError::from(JournalError::IdempotencyConflict(format!(
                "{HOLD_PREFIX}{}",
                request.order_id
            ))))
        }
    };
    if let Some(h) = state
        .store
        .hold(&program, &request.order_id, Utc::now())
        .await?
    {
        if caller.role != Role::Partner || h.partner == caller.partner {
            return replay(h);
        }
        return Err(JournalError::IdempotencyConflict(format!(
            "{HOLD_PREFIX}{}",
            request.order_id
        ))
        .into());
    }
    let now = Utc::now();
    let document = JournalDocument {
        external_id: Some(format!("{HOLD_PREFIX}{}", request.order_id)),
        member: Some(request.member.clone()),
        kind: Some("hold".into()),
        occurred_at: Some(now.to_rfc3339()),
        currency: Some(request.currency.clone()),
        points: Some(request.points),
        partner,
        expires_at: Some((now + Duration::seconds(i64::from(ttl))).to_rfc3339()),
        ..JournalDocument::default()
    };
    match super::journals::post_one(&state, &caller, &program, document).await {
        Ok(_) => {}
        // Two first calls raced: the other placed it.
        Err(e) if e.code == "idempotency_conflict" => {
            if let Some(h) = state
                .store
                .hold(&program, &request.order_id, Utc::now())
                .await?
            {
                return replay(h);
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    let hold = state
        .store
        .hold(&program, &request.order_id, Utc::now())
        .await?
        .ok_or_else(|| ApiError::from(StoreError::Inconsistent("a hold vanished".into())))?;
    Ok(super::created_or_replayed(
        HoldBody::new(hold, false),
        false,
    ))
}

/// An order's hold and where it stands.
#[utoipa::path(get, path = "/programs/{program}/holds/{order}", tag = "holds",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("order" = String, Path, description = ORDER_PARAM, example = "A-1001", min_length = 1, max_length = 120, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = HoldBody, description = "The hold"), Problems))]
async fn get_hold(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, order)): Path<(String, String)>,
) -> ApiResult<axum::Json<HoldBody>> {
    caller.require(Permission::JournalsRead, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let hold = visible_hold(&state, &caller, &program, &order).await?;
    Ok(axum::Json(HoldBody::new(hold, false)))
}

/// The end of a hold: `capture` or `release`.
async fn end_hold(
    state: &AppState,
    caller: &Caller,
    code: &str,
    order: &str,
    how: &str,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(code))?;
    let program = cached_program(state, code).await?;
    let hold = visible_hold(state, caller, &program, order).await?;
    let prefix = if how == "capture" {
        CAPTURE_PREFIX
    } else {
        RELEASE_PREFIX
    };
    let document = JournalDocument {
        external_id: Some(format!("{prefix}{order}")),
        member: Some(hold.member.clone()),
        kind: Some(how.to_owned()),
        ..JournalDocument::default()
    };
    let response = super::journals::post_one(state, caller, &program, document).await?;
    let replayed = response.status() == axum::http::StatusCode::OK;
    let hold = state
        .store
        .hold(&program, order, Utc::now())
        .await?
        .ok_or_else(|| ApiError::from(StoreError::Inconsistent("a hold vanished".into())))?;
    Ok(super::created_or_replayed(
        HoldBody::new(hold, replayed),
        replayed,
    ))
}

/// Spends the held points: the hold becomes a redemption from the buckets it reserved
/// (cancel the `capture:ORDER` journal to give them back, as for any redemption). Refused
/// once the hold expired (`hold_expired`) or was released (`hold_released`). Idempotent:
/// a retry answers the capture done.
#[utoipa::path(post, path = "/programs/{program}/holds/{order}/capture", tag = "holds",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("order" = String, Path, description = ORDER_PARAM, example = "A-1001", min_length = 1, max_length = 120, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 201, body = HoldBody, description = "Captured"),
              (status = 200, body = HoldBody, description = "A retry: captured before", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same order"))),
              Problems))]
async fn capture_hold(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, order)): Path<(String, String)>,
) -> ApiResult<Response> {
    end_hold(&state, &caller, &code, &order, "capture").await
}

/// Gives the held points back to the buckets they came from, with their original expiry.
/// Refused once captured (`hold_captured`). Idempotent: a retry answers the release done.
/// The jobs release holds past their end.
#[utoipa::path(post, path = "/programs/{program}/holds/{order}/release", tag = "holds",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("order" = String, Path, description = ORDER_PARAM, example = "A-1001", min_length = 1, max_length = 120, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 201, body = HoldBody, description = "Released"),
              (status = 200, body = HoldBody, description = "A retry: released before", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same order"))),
              Problems))]
async fn release_hold(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, order)): Path<(String, String)>,
) -> ApiResult<Response> {
    end_hold(&state, &caller, &code, &order, "release").await
}
