//! Missing-points claims: a member (for itself) or staff file one for a transaction that
//! earned nothing; an agent approves it (the transaction is processed once, as the journal
//! named by its reference) or rejects it with a reason (see `fidelis_store`'s `claims`).
//!
//! Who may do what: filing needs `claims:write` (members for themselves, staff for anyone,
//! partners not); deciding needs `adjustments:write` (agents and managers); members read
//! their own claims and the decisions, staff the queue.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use fidelis_store::{ClaimView, NewClaim, StoreError};
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
        .routes(routes!(file_claim, list_claims))
        .routes(routes!(get_claim))
        .routes(routes!(approve_claim))
        .routes(routes!(reject_claim))
}

const PROGRAM_PARAM: &str = "The program's code";
const CLAIM_PARAM: &str = "The claim's id";

/// A claim for a transaction that earned nothing.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The member's external id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub member: String,
    /// The transaction's id (the receipt number): the journal's external id once approved.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub reference: String,
    /// When the transaction happened.
    pub occurred_at: DateTime<Utc>,
    /// What was spent, in the program's money currency (`"79.90"`).
    #[schema(max_length = 32, pattern = "^[0-9]+(\\.[0-9]+)?$")]
    pub amount: String,
    /// Where (the partner's code, or a store).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub partner: Option<String>,
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

/// Why a claim is rejected.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// A claim and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimBody {
    pub claim_id: String,
    pub member: String,
    pub reference: String,
    pub occurred_at: DateTime<Utc>,
    /// In the program's money currency.
    pub amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `open`, `approving` (for a moment), `approved` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub filed_at: DateTime<Utc>,
    /// How long it has waited (to its decision, or until now).
    pub age_seconds: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// True when this answers a decision made before: nothing changed now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl ClaimBody {
    fn new(c: ClaimView, money: &fidelis_core::money::MoneyCurrency, replayed: bool) -> Self {
        let until = c.decided_at.unwrap_or_else(Utc::now);
        Self {
            age_seconds: (until - c.filed_at).num_seconds().max(0),
            claim_id: c.claim_id,
            member: c.member,
            reference: c.reference,
            occurred_at: c.occurred_at,
            amount: money.format(fidelis_core::money::MinorUnits(c.amount)),
            partner: c.partner,
            note: c.note,
            status: c.status,
            reason: c.reason,
            filed_at: c.filed_at,
            decided_at: c.decided_at,
            replayed,
        }
    }
}

/// Claims as a list, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimsBody {
    pub claims: Vec<ClaimBody>,
}

/// A claim refusal: a decided claim is a conflict (409), an unknown one 404.
fn claim_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Refused(
            code @ ("claim_exists"
            | "claim_already_processed"
            | "claim_approved"
            | "claim_rejected"),
            detail,
        ) => ApiError::new(axum::http::StatusCode::CONFLICT, code, detail),
        StoreError::Refused(code @ "unknown_claim", detail) => ApiError::not_found(code, detail),
        e => e.into(),
    }
}

/// Files a claim (a member for itself). Refused when the transaction was processed
/// already (`claim_already_processed`, naming the journal) or claimed before
/// (`claim_exists`, both 409). Audited.
#[utoipa::path(post, path = "/programs/{program}/claims", tag = "claims",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body = ClaimRequest,
    responses((status = 201, body = ClaimBody, description = "Filed"), Problems))]
pub(crate) async fn file_claim(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<ClaimRequest>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<ClaimBody>)> {
    caller.require(Permission::ClaimsWrite, Some(&code))?;
    caller.require_member(&request.member)?;
    let program = cached_program(&state, &code).await?;
    let money = &program.program.money_currency;
    let amount = money.parse_amount(&request.amount).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            e.to_string(),
        )
    })?;
    let claim = state
        .store
        .file_claim(
            &program,
            &NewClaim {
                member: request.member,
                reference: request.reference,
                occurred_at: request.occurred_at,
                amount,
                partner: request.partner,
                note: request.note,
            },
            Utc::now(),
            &caller.actor(),
        )
        .await
        .map_err(claim_error)?;
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(ClaimBody::new(claim, money, false)),
    ))
}

/// Claims, oldest first (the queue): a member's own; staff any (by `status`, `member`).
#[utoipa::path(get, path = "/programs/{program}/claims", tag = "claims",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("status" = Option<String>, Query, description = "Claims in this status", pattern = "^(open|approving|approved|rejected)$"),
           ("member" = Option<String>, Query, description = "One member's claims", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"),
           ("limit" = Option<i64>, Query, description = "At most this many (100 by default, at most 500)", minimum = 1, maximum = 500)),
    responses((status = 200, body = ClaimsBody, description = "The claims"), Problems))]
pub(crate) async fn list_claims(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<ClaimsBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    let member = match caller.role {
        Role::Member => {
            if let Some(m) = query.get("member") {
                caller.require_member(m)?;
            }
            caller.member.clone()
        }
        Role::Partner => return Err(ApiError::forbidden("a partner token may not read claims")),
        _ => query.get("member").cloned(),
    };
    let status = query.get("status").map(String::as_str);
    if status.is_some_and(|s| !["open", "approving", "approved", "rejected"].contains(&s)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status is open, approving, approved or rejected".to_owned(),
        ));
    }
    let limit = match query.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_query", "limit is 1 to 500".to_owned())
            })?,
    };
    let program = cached_program(&state, &code).await?;
    // A member named is one of the program's (an unknown one is 404, as on every route).
    if let Some(m) = &member {
        state.store.require_member(&program, m).await?;
    }
    let money = &program.program.money_currency;
    let claims = state
        .store
        .claims(&program, status, member.as_deref(), limit)
        .await?;
    Ok(axum::Json(ClaimsBody {
        claims: claims
            .into_iter()
            .map(|c| ClaimBody::new(c, money, false))
            .collect(),
    }))
}

/// One claim (a member's own: another's answers as one that does not exist).
#[utoipa::path(get, path = "/programs/{program}/claims/{claim}", tag = "claims",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("claim" = String, Path, description = CLAIM_PARAM, example = "CL-ABCDEFGHJK", min_length = 1, max_length = 64)),
    responses((status = 200, body = ClaimBody, description = "The claim"), Problems))]
async fn get_claim(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, claim)): Path<(String, String)>,
) -> ApiResult<axum::Json<ClaimBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    if caller.role == Role::Partner {
        return Err(ApiError::forbidden("a partner token may not read claims"));
    }
    let program = cached_program(&state, &code).await?;
    let found = state
        .store
        .claim(&program, &claim)
        .await?
        .filter(|c| caller.role != Role::Member || caller.member.as_deref() == Some(&c.member))
        .ok_or_else(|| {
            claim_error(StoreError::Refused(
                "unknown_claim",
                "no such claim in this program".to_owned(),
            ))
        })?;
    Ok(axum::Json(ClaimBody::new(
        found,
        &program.program.money_currency,
        false,
    )))
}

/// Approves a claim: its transaction is processed as the journal named by its reference,
/// once, however many approvals race or retry (a retry answers `Idempotent-Replayed`).
/// Refused for a rejected claim (`claim_rejected`, 409), or with the ledger's own code
/// when the journal is refused (the claim stays open). Audited; a `claim.decided` event.
#[utoipa::path(post, path = "/programs/{program}/claims/{claim}/approve", tag = "claims",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("claim" = String, Path, description = CLAIM_PARAM, example = "CL-ABCDEFGHJK", min_length = 1, max_length = 64)),
    responses((status = 200, body = ClaimBody, description = "Approved (or, with Idempotent-Replayed, approved before)", headers(("Idempotent-Replayed" = bool, description = "`true`: approved before"))),
              Problems))]
pub(crate) async fn approve_claim(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, claim)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Permission::Adjust, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let (decided, replayed) = state
        .store
        .approve_claim(&program, &claim, Utc::now(), &caller.actor())
        .await
        .map_err(claim_error)?;
    Ok(decision(
        ClaimBody::new(decided, &program.program.money_currency, replayed),
        replayed,
    ))
}

/// Rejects an open claim with a reason the member sees. Refused for an approved claim
/// (`claim_approved`, 409); a retry answers the rejection. Audited; a `claim.decided`
/// event.
#[utoipa::path(post, path = "/programs/{program}/claims/{claim}/reject", tag = "claims",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("claim" = String, Path, description = CLAIM_PARAM, example = "CL-ABCDEFGHJK", min_length = 1, max_length = 64)),
    request_body = RejectRequest,
    responses((status = 200, body = ClaimBody, description = "Rejected (or, with Idempotent-Replayed, rejected before)", headers(("Idempotent-Replayed" = bool, description = "`true`: rejected before"))),
              Problems))]
pub(crate) async fn reject_claim(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, claim)): Path<(String, String)>,
    ApiJson(request): ApiJson<RejectRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::Adjust, Some(&code))?;
    let program = cached_program(&state, &code).await?;
    let (decided, replayed) = state
        .store
        .reject_claim(
            &program,
            &claim,
            &request.reason,
            Utc::now(),
            &caller.actor(),
        )
        .await
        .map_err(claim_error)?;
    Ok(decision(
        ClaimBody::new(decided, &program.program.money_currency, replayed),
        replayed,
    ))
}

/// A decision's answer: 200, with `Idempotent-Replayed: true` when it was made before.
fn decision(body: ClaimBody, replayed: bool) -> Response {
    use axum::response::IntoResponse;
    let mut response = axum::Json(body).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}
