//! Vouchers: issued by an agent (promotions issue theirs while processing journals, the
//! CLI in bulk), read by code or per member, and redeemed — at once, whole or in part, or
//! reserved for an order and then redeemed or reinstated by the order's key — or
//! cancelled (see `fidelis_core::vouchers` for the rules, `fidelis_store`'s `vouchers`
//! for the locking and the value ledger).
//!
//! Who may do what: reading and redeeming need `redemptions:write`/`journals:read` like
//! any spending; a member token only ever sees and uses its own member's vouchers (another
//! code is 404, as if it did not exist); a partner token redeems the codes its customers
//! present. Issuing is an agent's goodwill (`adjustments:write`), cancelling needs
//! `cancellations:write`; both are audited.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use fidelis_store::{LoadedProgram, VoucherAction, VoucherView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program, program as require_program};
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_voucher))
        .routes(routes!(get_voucher))
        .routes(routes!(redeem_voucher))
        .routes(routes!(reserve_voucher))
        .routes(routes!(redeem_reserved_voucher))
        .routes(routes!(reinstate_voucher))
        .routes(routes!(cancel_voucher))
        .routes(routes!(member_vouchers))
}

/// A voucher for a member, issued by an agent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueVoucherRequest {
    /// The voucher definition's code (the program's `vouchers:`).
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub definition: String,
    /// The member's external id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: String,
    /// The request's own id: issuing is once per key (a retry answers the voucher issued).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub key: String,
}

/// A redemption or reservation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherUseRequest {
    /// The order or receipt: a retry with the same key changes nothing and answers the
    /// voucher as it is.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub key: String,
    /// For a fixed-value voucher: how much of its value to use, in the program's money
    /// currency (`"12.50"`); all that is left when absent. Other vouchers take no amount.
    #[schema(min_length = 1, max_length = 32, pattern = "^[0-9]+(\\.[0-9]+)?$")]
    pub amount: Option<String>,
}

/// The order a reservation was made for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherKeyRequest {
    /// The key the voucher was reserved with.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub key: String,
}

/// A voucher and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VoucherBody {
    /// The voucher's code, as printed and typed (case does not matter when typed).
    pub code: String,
    /// Its definition's code.
    pub definition: String,
    /// The member it was issued to (absent for a bulk voucher given to no one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// `issued`, `reserved`, `redeemed`, `expired` or `cancelled`.
    pub status: String,
    /// `fixed`, `percent` or `free_product`.
    pub kind: String,
    /// Fixed: the amount issued (`"10.00"`); percent: the percentage; free product: the SKU.
    pub value: String,
    /// Fixed: what is left of the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    /// Redemptions left (absent: until a fixed value is spent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<i64>,
    pub valid_from: DateTime<Utc>,
    /// The first instant it is no longer valid (absent: it does not expire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    /// While reserved: the order's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_key: Option<String>,
    /// While reserved: the amount of a fixed value set aside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_amount: Option<String>,
    /// `promotion:CODE`, `agent`, `order` or `bulk`.
    pub source: String,
    pub issued_at: DateTime<Utc>,
    /// True when this answers a retry: the change had been made, nothing changed now.
    pub replayed: bool,
}

/// A member's vouchers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VoucherList {
    pub vouchers: Vec<VoucherBody>,
}

impl VoucherBody {
    fn new(program: &LoadedProgram, v: VoucherView, replayed: bool) -> Self {
        let money = program.program.money_currency;
        let fmt = |minor: i64| money.format(fidelis_core::money::MinorUnits(minor));
        let value = match v.kind.as_str() {
            "fixed" => v.value.parse().map(fmt).unwrap_or(v.value),
            _ => v.value,
        };
        Self {
            code: v.code,
            definition: v.definition,
            member: v.member,
            status: v.status.to_owned(),
            kind: v.kind,
            value,
            remaining: v.remaining.map(fmt),
            uses_left: v.uses_left,
            valid_from: v.valid_from,
            valid_until: v.valid_until,
            reservation_key: v.reservation_key,
            reserved_amount: v.reserved_amount.map(fmt),
            source: v.source,
            issued_at: v.issued_at,
            replayed,
        }
    }
}

const PROGRAM_PARAM: &str = "The program's code";
const CODE_PARAM: &str = "The voucher's code";

fn unknown(code: &str) -> ApiError {
    ApiError::not_found(
        "unknown_voucher",
        format!(
            "no voucher {:?} in this program",
            code.chars().take(64).collect::<String>()
        ),
    )
}

/// The voucher as the caller may see it: a member token only its own member's.
async fn visible(
    state: &AppState,
    caller: &Caller,
    program: &LoadedProgram,
    code: &str,
) -> ApiResult<VoucherView> {
    let voucher = state
        .store
        .voucher(program, code, Utc::now())
        .await?
        .ok_or_else(|| unknown(code))?;
    if caller.role == Role::Member && caller.member.as_deref() != voucher.member.as_deref() {
        return Err(unknown(code));
    }
    Ok(voucher)
}

/// A text field as the OpenAPI document describes it: 1 to `max` characters, no control
/// character. (Keys are stored and compared; an unbounded one would be stored too.)
fn text(field: &str, raw: &str, max: usize) -> ApiResult<()> {
    let n = raw.chars().count();
    if n == 0 || n > max || raw.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_request",
            format!("{field} must be 1 to {max} characters, none of them a control character"),
        ));
    }
    Ok(())
}

/// An amount of money as the OpenAPI document describes it (`12.50`: digits, an optional
/// fraction), in the program's money currency.
fn amount(program: &LoadedProgram, raw: Option<&str>) -> ApiResult<Option<i64>> {
    raw.map(|raw| {
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(whole) && digits(fraction)) {
            return Err(ApiError::unprocessable(
                "invalid_amount",
                format!("amount {raw:?} is not a decimal such as \"12.50\""),
            ));
        }
        program
            .program
            .money_currency
            .parse_amount(raw)
            .map(|m| m.0)
            .map_err(|e| ApiError::unprocessable("invalid_amount", format!("amount {raw:?}: {e}")))
    })
    .transpose()
}

/// Applies `action` to the voucher; the caller's permission was checked.
async fn act(
    state: &AppState,
    caller: &Caller,
    program: &LoadedProgram,
    voucher: &str,
    action: VoucherAction,
) -> ApiResult<Response> {
    if let Some(key) = action.key() {
        text("key", key, fidelis_core::vouchers::MAX_KEY_LEN)?;
    }
    if caller.role == Role::Member {
        visible(state, caller, program, voucher).await?;
    }
    let (view, changed) = state
        .store
        .act_on_voucher(program, voucher, &action, Utc::now(), &caller.actor())
        .await
        .map_err(|e| match e {
            fidelis_store::StoreError::Refused("unknown_voucher", _) => unknown(voucher),
            e => voucher_error(e),
        })?;
    Ok(super::created_or_replayed(
        VoucherBody::new(program, view, !changed),
        !changed,
    ))
}

/// A voucher refusal: a state that forbids the change is a conflict (409); an amount
/// beyond the value is unprocessable (422).
fn voucher_error(e: fidelis_store::StoreError) -> ApiError {
    match e {
        fidelis_store::StoreError::Refused(
            code @ ("voucher_redeemed"
            | "voucher_expired"
            | "voucher_cancelled"
            | "voucher_not_yet_valid"
            | "voucher_reserved"
            | "voucher_not_reserved"),
            detail,
        ) => ApiError::new(axum::http::StatusCode::CONFLICT, code, detail),
        e => e.into(),
    }
}

/// Issues a voucher of a definition to a member (an agent's goodwill; audited).
/// Idempotent by `key`: a retry answers the voucher issued.
#[utoipa::path(post, path = "/programs/{program}/vouchers", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = IssueVoucherRequest,
    responses((status = 201, body = VoucherBody, description = "Issued"),
              (status = 200, body = VoucherBody, description = "A retry: the voucher issued for this key", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first outcome of the same key"))),
              Problems))]
async fn issue_voucher(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<IssueVoucherRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Adjust, Some(&code))?;
    caller.require_member(&request.member)?;
    text("member", &request.member, 128)?;
    text("key", &request.key, fidelis_core::vouchers::MAX_KEY_LEN)?;
    let program = require_program(&state, &code).await?;
    let (view, new) = state
        .store
        .issue_voucher(
            &program,
            &request.definition,
            Some(&request.member),
            "agent",
            &request.key,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    Ok(super::created_or_replayed(
        VoucherBody::new(&program, view, !new),
        !new,
    ))
}

/// A voucher by its code: what it is worth, what is left, until when, and its state.
#[utoipa::path(get, path = "/programs/{program}/vouchers/{code}", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("code" = String, Path, description = CODE_PARAM, example = "TEN-7KQ2M9XW4HPA", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")),
    responses((status = 200, body = VoucherBody, description = "The voucher"), Problems))]
async fn get_voucher(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, voucher)): Path<(String, String)>,
) -> ApiResult<axum::Json<VoucherBody>> {
    caller.require(Permission::JournalsRead, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let view = visible(&state, &caller, &program, &voucher).await?;
    Ok(axum::Json(VoucherBody::new(&program, view, false)))
}

/// Redeems a voucher now: a fixed value whole or in part (`amount`; the rest stays on the
/// voucher), any other voucher once. Refused with `voucher_redeemed`, `voucher_expired`,
/// `voucher_cancelled`, `voucher_not_yet_valid` or `voucher_reserved` (409), or
/// `voucher_value_exceeded` (422). Idempotent by `key`.
#[utoipa::path(post, path = "/programs/{program}/vouchers/{code}/redeem", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("code" = String, Path, description = CODE_PARAM, example = "TEN-7KQ2M9XW4HPA", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")),
    request_body = VoucherUseRequest,
    responses((status = 201, body = VoucherBody, description = "Redeemed"),
              (status = 200, body = VoucherBody, description = "A retry: redeemed before with this key"),
              Problems))]
async fn redeem_voucher(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, voucher)): Path<(String, String)>,
    ApiJson(request): ApiJson<VoucherUseRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let amount = amount(&program, request.amount.as_deref())?;
    let action = VoucherAction::Redeem {
        key: request.key,
        amount,
    };
    act(&state, &caller, &program, &voucher, action).await
}

/// Reserves a voucher for an order (`key`): it cannot be used elsewhere until the order
/// succeeds (`redeem-reserved`) or fails (`reinstate`). Idempotent by `key`.
#[utoipa::path(post, path = "/programs/{program}/vouchers/{code}/reserve", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("code" = String, Path, description = CODE_PARAM, example = "TEN-7KQ2M9XW4HPA", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")),
    request_body = VoucherUseRequest,
    responses((status = 201, body = VoucherBody, description = "Reserved"),
              (status = 200, body = VoucherBody, description = "A retry: reserved before with this key"),
              Problems))]
async fn reserve_voucher(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, voucher)): Path<(String, String)>,
    ApiJson(request): ApiJson<VoucherUseRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let amount = amount(&program, request.amount.as_deref())?;
    let action = VoucherAction::Reserve {
        key: request.key,
        amount,
    };
    act(&state, &caller, &program, &voucher, action).await
}

/// The order a voucher was reserved for succeeded: the reservation is redeemed (also
/// after the validity ended: the order was placed in time). `voucher_not_reserved` (409)
/// for another key. Idempotent by `key`.
#[utoipa::path(post, path = "/programs/{program}/vouchers/{code}/redeem-reserved", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("code" = String, Path, description = CODE_PARAM, example = "TEN-7KQ2M9XW4HPA", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")),
    request_body = VoucherKeyRequest,
    responses((status = 201, body = VoucherBody, description = "Redeemed"),
              (status = 200, body = VoucherBody, description = "A retry: redeemed before with this key"),
              Problems))]
async fn redeem_reserved_voucher(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, voucher)): Path<(String, String)>,
    ApiJson(request): ApiJson<VoucherKeyRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let action = VoucherAction::RedeemReserved { key: request.key };
    act(&state, &caller, &program, &voucher, action).await
}

/// The order a voucher was reserved for failed: it is issued again — or expired, when its
/// validity ended meanwhile. Idempotent by `key`.
#[utoipa::path(post, path = "/programs/{program}/vouchers/{code}/reinstate", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("code" = String, Path, description = CODE_PARAM, example = "TEN-7KQ2M9XW4HPA", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")),
    request_body = VoucherKeyRequest,
    responses((status = 201, body = VoucherBody, description = "Reinstated"),
              (status = 200, body = VoucherBody, description = "A retry: reinstated before with this key"),
              Problems))]
async fn reinstate_voucher(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, voucher)): Path<(String, String)>,
    ApiJson(request): ApiJson<VoucherKeyRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Redeem, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let action = VoucherAction::Reinstate { key: request.key };
    act(&state, &caller, &program, &voucher, action).await
}

/// Cancels a voucher (an agent's action, audited): what was left of it is gone. A
/// redeemed voucher cannot be cancelled (`voucher_redeemed`), a cancelled one not again
/// (`voucher_cancelled`).
#[utoipa::path(post, path = "/programs/{program}/vouchers/{code}/cancel", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("code" = String, Path, description = CODE_PARAM, example = "TEN-7KQ2M9XW4HPA", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")),
    responses((status = 201, body = VoucherBody, description = "Cancelled"), Problems))]
async fn cancel_voucher(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, voucher)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Permission::Cancel, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    act(&state, &caller, &program, &voucher, VoucherAction::Cancel).await
}

/// A member's vouchers, newest first (at most 200), each with its state as of now.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/vouchers", tag = "vouchers",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = String, Path, description = "The member's external id", example = "m-1", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = VoucherList, description = "The member's vouchers"), Problems))]
pub(crate) async fn member_vouchers(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, member)): Path<(String, String)>,
) -> ApiResult<axum::Json<VoucherList>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&member)?;
    let program = cached_program(&state, &code).await?;
    let view = state
        .store
        .member(&program, &member)
        .await?
        .ok_or_else(|| fidelis_store::StoreError::UnknownMember(member.clone()))?;
    let vouchers = state
        .store
        .member_vouchers(view.id, Utc::now(), 200)
        .await?
        .into_iter()
        .map(|v| VoucherBody::new(&program, v, false))
        .collect();
    Ok(axum::Json(VoucherList { vouchers }))
}
