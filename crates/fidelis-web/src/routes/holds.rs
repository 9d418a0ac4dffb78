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
use fidelis_store::HoldView;
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
        .routes(routes!(quote))
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
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
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
    let now = Utc::now();
    let expires_at = now + Duration::seconds(i64::from(ttl));
    let document = JournalDocument {
        external_id: Some(format!("{HOLD_PREFIX}{}", request.order_id)),
        member: Some(request.member.clone()),
        kind: Some("hold".into()),
        occurred_at: Some(now.to_rfc3339()),
        currency: Some(request.currency.clone()),
        points: Some(request.points),
        partner: partner.clone(),
        expires_at: Some(expires_at.to_rfc3339()),
        ..JournalDocument::default()
    };
    match super::journals::post_one(&state, &caller, &program, document).await {
        Ok(_) => Ok(super::created_or_replayed(
            HoldBody {
                order_id: request.order_id,
                member: request.member,
                currency: request.currency,
                points: request.points,
                status: "held".into(),
                placed_at: now,
                expires_at,
                partner,
                replayed: false,
            },
            false,
        )),
        // The order was held before (its end computed from that call's clock): a retry
        // answers that hold; other points or another member are a conflict.
        Err(e) if e.code == "idempotency_conflict" => {
            let hold = state
                .store
                .hold(&program, &request.order_id, Utc::now())
                .await?
                .filter(|h| {
                    h.member == request.member
                        && h.currency == request.currency
                        && h.points == request.points
                        && (caller.role != Role::Partner || h.partner == caller.partner)
                })
                .ok_or(e)?;
            Ok(super::created_or_replayed(HoldBody::new(hold, true), true))
        }
        Err(e) => Err(e),
    }
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
    let (prefix, ended) = if how == "capture" {
        (CAPTURE_PREFIX, "captured")
    } else {
        (RELEASE_PREFIX, "released")
    };
    let document = JournalDocument {
        external_id: Some(format!("{prefix}{order}")),
        member: Some(hold.member.clone()),
        kind: Some(how.to_owned()),
        ..JournalDocument::default()
    };
    let response = super::journals::post_one(state, caller, &program, document).await?;
    // Done now or before (a replay): either way the hold ended as asked.
    let replayed = response.status() == axum::http::StatusCode::OK;
    let mut body = HoldBody::new(hold, replayed);
    body.status = ended.into();
    Ok(super::created_or_replayed(body, replayed))
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

/// What a member's points pay of an order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuoteBody {
    pub currency: String,
    /// The order's amount, in the program's money currency.
    pub amount: String,
    pub money_currency: String,
    /// What one point pays.
    pub money_per_point: String,
    pub minimum_points: i64,
    /// Points that would pay the whole order.
    pub points_to_cover: i64,
    /// Points the member can spend now (absent for partners, who may not read members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spendable: Option<i64>,
    /// Points the payment would use: those asked for (or all needed), no more than
    /// spendable; 0 below the minimum.
    pub points: i64,
    /// What those points pay (rounded down; never more than the order).
    pub amount_covered: String,
    /// What is left to pay otherwise.
    pub amount_remaining: String,
    pub below_minimum: bool,
}

/// How many points pay how much of an order: for a checkout, before it places a hold
/// for the points the member chooses. Writes nothing. The currency's `payment` in the
/// program definition sets the rate, the minimum and the rounding
/// (`currency_not_payable` when it has none).
#[utoipa::path(get, path = "/programs/{program}/members/{member}/quote", tag = "holds",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("currency" = String, Query, description = "The loyalty currency to pay with", example = "points", min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$"),
           ("amount" = String, Query, description = "The order's amount in the program's money currency", example = "25.00", min_length = 1, max_length = 32, pattern = "^[0-9]+(\\.[0-9]+)?$"),
           ("points" = Option<i64>, Query, description = "Points the member wants to use (default: as many as the order needs)", minimum = 1, maximum = 1_000_000_000_000_i64)),
    responses((status = 200, body = QuoteBody, description = "The quote"), Problems))]
async fn quote(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, member)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<QuoteBody>> {
    caller.require(Permission::Redeem, Some(&code))?;
    if caller.role == Role::Member {
        caller.require_member(&member)?;
    }
    let program = cached_program(&state, &code).await?;
    let p = &program.program;
    let required = |name: &str| {
        query.get(name).cloned().ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter {name} is required"),
            )
        })
    };
    let currency_code = required("currency")?;
    let currency = p
        .currency_ix(&currency_code)
        .map(|ix| p.currency(ix))
        .ok_or_else(|| {
            ApiError::from(JournalError::UnknownCurrency(
                currency_code.chars().take(32).collect(),
            ))
        })?;
    let payment = currency.payment.ok_or_else(|| {
        ApiError::unprocessable(
            "currency_not_payable",
            format!(
                "{} has no payment in the program definition: its points are not offered as payment",
                currency.code
            ),
        )
    })?;
    let amount = p
        .money_currency
        .parse_amount(&required("amount")?)
        .map_err(|e| ApiError::unprocessable("invalid_amount", format!("amount: {e}")))?;
    let wanted: Option<i64> = super::query_param(&query, "points")?;
    if wanted.is_some_and(|w| !(1..=fidelis_core::journal::MAX_POINTS).contains(&w)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "points is 1 to 1000000000000",
        ));
    }
    // Partners may not read members: they get the quote without the member's balance.
    let spendable = if caller.role == Role::Partner {
        None
    } else {
        let m = state.store.require_member(&program, &member).await?;
        let balances = state.store.balances(&program, &m, Utc::now()).await?;
        Some(
            balances
                .iter()
                .find(|b| b.currency == currency.code.as_str())
                .map_or(0, |b| b.available.max(0)),
        )
    };
    let q = fidelis_core::holds::quote(&payment, p.money_currency, amount, spendable, wanted);
    let money = p.money_currency;
    Ok(axum::Json(QuoteBody {
        currency: currency.code.to_string(),
        amount: money.format(amount),
        money_currency: money.code().to_owned(),
        money_per_point: payment.money_per_point.normalize().to_string(),
        minimum_points: payment.minimum_points,
        points_to_cover: q.points_to_cover,
        spendable,
        points: q.points,
        amount_covered: money.format(q.amount_covered),
        amount_remaining: money.format(q.amount_remaining),
        below_minimum: q.below_minimum,
    }))
}
