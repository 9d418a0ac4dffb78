//! Partners of a program and their ledger: earn partners paying for the points their
//! customers earn (prepaid from a pack, or postpaid), burn partners reimbursed for points
//! redeemed with them (see `fidelis_core::partners` for the rules, `fidelis_store`'s
//! `partners` for how entries are written with the member journals that cause them).
//!
//! Who may do what: the program's managers write partners and top up packs
//! (`programs:write`, audited); staff read them (`programs:read`); a partner token reads
//! its own partner, figures and entries, and no other. Events (a pack fallen below its
//! alert) are for staff.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use fidelis_core::partners::{Billing, PartnerDocument, Roles, WhenEmpty};
use fidelis_store::{EventView, PartnerEntryView, PartnerSums, PartnerView, Statement};
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
        .routes(routes!(list_partners))
        .routes(routes!(get_partner, put_partner))
        .routes(routes!(top_up))
        .routes(routes!(partner_entries))
        .routes(routes!(list_events))
        .routes(routes!(get_settlement))
        .routes(routes!(close_settlement))
        .routes(routes!(get_liability))
}

const PROGRAM_PARAM: &str = "The program's code";
const PARTNER_PARAM: &str = "The partner's code";
/// The most entries or events one page answers.
const MAX_LIMIT: i64 = 500;

/// A partner as written (its code is the path's).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `earn` (its customers earn points it pays for), `burn` (points are redeemed with it,
    /// and it is reimbursed) or `both`.
    #[schema(value_type = String, pattern = "^(earn|burn|both)$")]
    pub roles: Roles,
    /// An earn partner's: `prepaid` (a points pack, debited as its customers earn) or
    /// `postpaid` (a running bill).
    #[schema(value_type = Option<String>, pattern = "^(prepaid|postpaid)$")]
    pub billing: Option<Billing>,
    /// The redeemable currency it counts in (the program's first one by default).
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub currency: Option<String>,
    /// Money it pays per point its customers earn (a decimal, like `"0.008"`).
    #[schema(max_length = 32, pattern = "^[0-9]+(\\.[0-9]{1,6})?$")]
    pub cost_per_point: Option<String>,
    /// Money it is reimbursed per point redeemed with it.
    #[schema(max_length = 32, pattern = "^[0-9]+(\\.[0-9]{1,6})?$")]
    pub reimbursement_per_point: Option<String>,
    /// Prepaid: an event when the pack falls below this many points.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub alert_below: Option<i64>,
    /// Prepaid: `refuse` (default) an accrual the pack cannot cover, or `owe` (award it;
    /// the pack goes below zero).
    #[schema(value_type = Option<String>, pattern = "^(refuse|owe)$")]
    pub when_empty: Option<WhenEmpty>,
    /// `false`: its journals make no partner entries (default `true`).
    pub active: Option<bool>,
}

/// A partner with its pack and figures (sums of its ledger's entries).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartnerBody {
    pub code: String,
    pub name: String,
    pub roles: String,
    pub billing: String,
    pub currency: String,
    pub cost_per_point: String,
    pub reimbursement_per_point: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_below: Option<i64>,
    pub when_empty: String,
    pub active: bool,
    /// Points left in the prepaid pack (below zero: owed, under `owe`).
    pub pack: i64,
    /// Points its customers earned with it, less those reversed.
    pub points_issued: i64,
    /// Points redeemed with it, less those reversed.
    pub points_redeemed: i64,
    /// Points bought for the pack.
    pub points_bought: i64,
    /// Money it owes (packs bought, postpaid accruals), in minor units.
    pub owed_by_partner: i64,
    /// Money owed to it (reimbursements), in minor units.
    pub owed_to_partner: i64,
    pub updated_at: DateTime<Utc>,
}

impl PartnerBody {
    fn new(v: PartnerView, sums: PartnerSums) -> Self {
        let p = v.partner;
        Self {
            code: p.code,
            name: p.name,
            roles: p.roles.name().to_owned(),
            billing: p.billing.name().to_owned(),
            currency: p.currency,
            cost_per_point: p.cost_per_point.normalize().to_string(),
            reimbursement_per_point: p.reimbursement_per_point.normalize().to_string(),
            alert_below: p.alert_below,
            when_empty: p.when_empty.name().to_owned(),
            active: p.active,
            pack: v.pack,
            points_issued: sums.issued,
            points_redeemed: sums.redeemed,
            points_bought: sums.bought,
            owed_by_partner: sums.owed_by_partner,
            owed_to_partner: sums.owed_to_partner,
            updated_at: v.updated_at,
        }
    }
}

/// Partners as a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartnersBody {
    pub partners: Vec<PartnerBody>,
}

/// Points bought for a prepaid partner's pack.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    /// The top-up's own id (the invoice's): once per id; a retry answers the first.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub top_up_id: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub points: i64,
}

/// One entry of a partner's ledger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartnerEntryBody {
    pub id: i64,
    /// `top_up`, `accrual`, `accrual_reversal`, `redemption` or `redemption_reversal`.
    pub kind: String,
    /// The member journal that caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// A top-up's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_up_id: Option<String>,
    /// Points issued, redeemed or bought (negative for a reversal).
    pub points: i64,
    /// Its change to the pack.
    pub pack: i64,
    /// Its money in minor units: positive owed by the partner, negative owed to it.
    pub amount: i64,
    /// Money per point it was counted at.
    pub rate: String,
    /// When the journal happened (settlement periods count by it).
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// True when this answers a retried top-up: nothing changed now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl PartnerEntryBody {
    fn new(e: PartnerEntryView, replayed: bool) -> Self {
        Self {
            id: e.id,
            kind: e.kind.name().to_owned(),
            journal: e.journal,
            top_up_id: e.key,
            points: e.points,
            pack: e.pack,
            amount: e.amount,
            rate: e.rate.normalize().to_string(),
            effective_at: e.effective_at,
            recorded_at: e.recorded_at,
            replayed,
        }
    }
}

/// A page of a partner's entries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartnerEntriesBody {
    pub entries: Vec<PartnerEntryBody>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// A business event (written with the change that caused it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventBody {
    pub id: i64,
    /// `partner.pack_low`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

impl From<EventView> for EventBody {
    fn from(e: EventView) -> Self {
        Self {
            id: e.id,
            kind: e.kind,
            subject: e.subject,
            payload: e.payload,
            occurred_at: e.occurred_at,
        }
    }
}

/// A page of events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventsBody {
    pub events: Vec<EventBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

fn partner_code(code: &str) -> ApiResult<()> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(unknown(code)) }
}

fn unknown(code: &str) -> ApiError {
    ApiError::not_found(
        "unknown_partner",
        format!(
            "no partner {:?} in this program",
            code.chars().take(64).collect::<String>()
        ),
    )
}

/// Staff with `programs:read`, or the partner's own token.
fn may_read(caller: &Caller, program: &str, partner: &str) -> ApiResult<()> {
    if caller.role == Role::Partner {
        // Its journals' permission, and the program it is limited to.
        caller.require(Permission::JournalsRead, Some(program))?;
        if caller.partner.as_deref() != Some(partner) {
            return Err(ApiError::forbidden(
                "a partner token may read only its own partner",
            ));
        }
        return Ok(());
    }
    caller.require(Permission::ProgramsRead, Some(program))
}

/// `before` and `limit` of a page (50 by default).
fn page(query: &crate::dto::Query) -> ApiResult<(Option<i64>, i64)> {
    let number = |name: &str| -> ApiResult<Option<i64>> {
        query
            .get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request("invalid_query", format!("{name} is a whole number"))
                })
            })
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit is 1 to {MAX_LIMIT}"),
        ));
    }
    Ok((number("before")?, limit))
}

async fn body_of(
    state: &AppState,
    program: &fidelis_store::LoadedProgram,
    view: PartnerView,
) -> ApiResult<PartnerBody> {
    let sums = state
        .store
        .partner_sums(program, &view.partner.code)
        .await?;
    Ok(PartnerBody::new(view, sums))
}

/// The program's partners, by code (a partner token: its own).
#[utoipa::path(get, path = "/programs/{program}/partners", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    responses((status = 200, body = PartnersBody, description = "The partners"), Problems))]
pub(crate) async fn list_partners(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
) -> ApiResult<axum::Json<PartnersBody>> {
    let own = match caller.role {
        Role::Partner => {
            let own = caller.partner.clone().unwrap_or_default();
            may_read(&caller, &code, &own)?;
            Some(own)
        }
        _ => {
            caller.require(Permission::ProgramsRead, Some(&code))?;
            None
        }
    };
    let program = cached_program(&state, &code).await?;
    let mut partners = Vec::new();
    for view in state.store.partners(&program).await? {
        if own.as_ref().is_none_or(|o| *o == view.partner.code) {
            partners.push(body_of(&state, &program, view).await?);
        }
    }
    Ok(axum::Json(PartnersBody { partners }))
}

/// One partner, with its pack and figures.
#[utoipa::path(get, path = "/programs/{program}/partners/{partner}", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("partner" = String, Path, description = PARTNER_PARAM, example = "cars", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")),
    responses((status = 200, body = PartnerBody, description = "The partner"), Problems))]
async fn get_partner(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, partner)): Path<(String, String)>,
) -> ApiResult<axum::Json<PartnerBody>> {
    may_read(&caller, &code, &partner)?;
    partner_code(&partner)?;
    let program = cached_program(&state, &code).await?;
    let view = state
        .store
        .partner(&program, &partner)
        .await?
        .ok_or_else(|| unknown(&partner))?;
    Ok(axum::Json(body_of(&state, &program, view).await?))
}

/// Creates or replaces a partner (its pack and entries stay). Every problem is listed
/// (`invalid_partner`), nothing stored. Audited.
#[utoipa::path(put, path = "/programs/{program}/partners/{partner}", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("partner" = String, Path, description = PARTNER_PARAM, example = "cars", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")),
    request_body = PartnerRequest,
    responses((status = 201, body = PartnerBody, description = "Created"),
              (status = 200, body = PartnerBody, description = "Replaced"),
              Problems))]
async fn put_partner(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, partner)): Path<(String, String)>,
    ApiJson(request): ApiJson<PartnerRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    partner_code(&partner)?;
    let program = require_program(&state, &code).await?;
    let document = PartnerDocument {
        name: request.name,
        roles: request.roles,
        billing: request.billing,
        currency: request.currency,
        cost_per_point: request.cost_per_point,
        reimbursement_per_point: request.reimbursement_per_point,
        alert_below: request.alert_below,
        when_empty: request.when_empty,
        active: request.active.unwrap_or(true),
    };
    let (view, created) = state
        .store
        .put_partner(&program, &partner, &document, Utc::now(), &caller.actor())
        .await?;
    let body = axum::Json(body_of(&state, &program, view).await?);
    Ok(if created {
        (axum::http::StatusCode::CREATED, body).into_response()
    } else {
        body.into_response()
    })
}

/// Adds points bought to a prepaid partner's pack, once per `top_up_id` (a retry answers
/// the first, `Idempotent-Replayed`; other points for the same id are
/// `409 idempotency_conflict`). A postpaid partner has no pack (`partner_not_prepaid`).
/// Audited.
#[utoipa::path(post, path = "/programs/{program}/partners/{partner}/top-ups", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("partner" = String, Path, description = PARTNER_PARAM, example = "cars", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")),
    request_body = TopUpRequest,
    responses((status = 201, body = PartnerEntryBody, description = "Topped up"),
              (status = 200, body = PartnerEntryBody, description = "A retry: the top-up made with this id", headers(("Idempotent-Replayed" = bool, description = "`true`: this answer replays the first top-up"))),
              Problems))]
async fn top_up(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, partner)): Path<(String, String)>,
    ApiJson(request): ApiJson<TopUpRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    partner_code(&partner)?;
    let program = require_program(&state, &code).await?;
    let (entry, replayed) = state
        .store
        .top_up_partner(
            &program,
            &partner,
            &request.top_up_id,
            request.points,
            Utc::now(),
            &caller.actor(),
        )
        .await?;
    Ok(super::created_or_replayed(
        PartnerEntryBody::new(entry, replayed),
        replayed,
    ))
}

/// A partner's ledger, newest first: top-ups, accruals, redemptions and their reversals,
/// each linked to the member journal that caused it.
#[utoipa::path(get, path = "/programs/{program}/partners/{partner}/entries", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("partner" = String, Path, description = PARTNER_PARAM, example = "cars", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$"),
           ("before" = Option<i64>, Query, description = "Entries older than this id (`next_before` of the previous page)"),
           ("limit" = Option<i64>, Query, description = "At most this many (50 by default, at most 500)", minimum = 1, maximum = 500)),
    responses((status = 200, body = PartnerEntriesBody, description = "The entries"), Problems))]
async fn partner_entries(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, partner)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<PartnerEntriesBody>> {
    may_read(&caller, &code, &partner)?;
    partner_code(&partner)?;
    let (before, limit) = page(&query)?;
    let program = cached_program(&state, &code).await?;
    if state.store.partner(&program, &partner).await?.is_none() {
        return Err(unknown(&partner));
    }
    let entries = state
        .store
        .partner_entries(&program, &partner, before, limit)
        .await?;
    let next_before = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(axum::Json(PartnerEntriesBody {
        entries: entries
            .into_iter()
            .map(|e| PartnerEntryBody::new(e, false))
            .collect(),
        next_before,
    }))
}

/// The program's events, newest first: what happened that someone should hear of (members
/// enrolled, points earned and redeemed, tiers changed, vouchers issued, claims decided, a
/// partner's pack fallen below its alert) — the outbox that webhooks deliver.
#[utoipa::path(get, path = "/programs/{program}/events", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("before" = Option<i64>, Query, description = "Events older than this id"),
           ("limit" = Option<i64>, Query, description = "At most this many (50 by default, at most 500)", minimum = 1, maximum = 500)),
    responses((status = 200, body = EventsBody, description = "The events"), Problems))]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<EventsBody>> {
    caller.require(Permission::ProgramsRead, Some(&code))?;
    if caller.role == Role::Partner {
        return Err(ApiError::forbidden("events are for the program's staff"));
    }
    let (before, limit) = page(&query)?;
    let program = cached_program(&state, &code).await?;
    let events = state.store.events(&program, before, limit).await?;
    let next_before = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(axum::Json(EventsBody {
        events: events.into_iter().map(EventBody::from).collect(),
        next_before,
    }))
}

/// A settlement period.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodRequest {
    /// The period's start (RFC 3339).
    pub from: DateTime<Utc>,
    /// Its end, excluded.
    pub to: DateTime<Utc>,
}

/// One kind of entry in a statement.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatementLineBody {
    pub kind: String,
    pub entries: i64,
    pub points: i64,
    pub pack: i64,
    /// Minor units: positive owed by the partner, negative owed to it.
    pub amount: i64,
}

/// What a statement adds up to (money in minor units).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatementTotalsBody {
    pub points_issued: i64,
    pub points_redeemed: i64,
    pub points_bought: i64,
    pub owed_by_partner: i64,
    pub owed_to_partner: i64,
    /// Positive: the partner pays the operator; negative: the operator pays the partner.
    pub net: i64,
}

/// A partner's settlement statement: `open` (computed now) or `closed` (frozen).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatementBody {
    pub partner: String,
    pub currency: String,
    pub money_currency: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Entries dated inside the period, by kind.
    pub lines: Vec<StatementLineBody>,
    /// Entries dated before it that no closed statement covered (journals that came after
    /// an earlier period closed), by kind.
    pub adjustments: Vec<StatementLineBody>,
    pub totals: StatementTotalsBody,
    /// True when closing answered a period closed before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl StatementBody {
    fn new(s: Statement, replayed: bool) -> Self {
        let lines = |l: Vec<fidelis_store::StatementLine>| {
            l.into_iter()
                .map(|l| StatementLineBody {
                    kind: l.kind,
                    entries: l.entries,
                    points: l.points,
                    pack: l.pack,
                    amount: l.amount,
                })
                .collect()
        };
        let t = s.totals;
        Self {
            partner: s.partner,
            currency: s.currency,
            money_currency: s.money_currency,
            from: s.from,
            to: s.to,
            status: s.status,
            closed_at: s.closed_at,
            lines: lines(s.lines),
            adjustments: lines(s.adjustments),
            totals: StatementTotalsBody {
                points_issued: t.points_issued,
                points_redeemed: t.points_redeemed,
                points_bought: t.points_bought,
                owed_by_partner: t.owed_by_partner,
                owed_to_partner: t.owed_to_partner,
                net: t.net,
            },
            replayed,
        }
    }
}

/// A settlement refusal: a period in the wrong order or not over is a conflict (409).
fn settlement_error(e: fidelis_store::StoreError) -> ApiError {
    match e {
        fidelis_store::StoreError::Refused(
            code @ ("period_not_over" | "period_not_next" | "period_overlaps"),
            detail,
        ) => ApiError::new(axum::http::StatusCode::CONFLICT, code, detail),
        e => e.into(),
    }
}

/// A partner's settlement statement for [`from`, `to`): points issued and redeemed, the
/// money owed each way and the net, as JSON or (`format=csv`) CSV. A closed period answers
/// its statement as closed; any other is computed now from the partner's ledger.
#[utoipa::path(get, path = "/programs/{program}/partners/{partner}/settlement", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("partner" = String, Path, description = PARTNER_PARAM, example = "cars", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$"),
           ("from" = chrono::DateTime<chrono::Utc>, Query, description = "The period's start (RFC 3339)"),
           ("to" = chrono::DateTime<chrono::Utc>, Query, description = "Its end, excluded"),
           ("format" = Option<String>, Query, description = "`json` (default) or `csv`", pattern = "^(json|csv)$")),
    responses((status = 200, description = "The statement: JSON, or CSV with `format=csv`",
               content((StatementBody = "application/json"), (String = "text/csv"))),
              Problems))]
async fn get_settlement(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, partner)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<Response> {
    may_read(&caller, &code, &partner)?;
    partner_code(&partner)?;
    let instant = |name: &str| -> ApiResult<DateTime<Utc>> {
        let value = query.get(name).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("{name} is required (RFC 3339)"))
        })?;
        DateTime::parse_from_rfc3339(value)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request("invalid_query", format!("{name} is an RFC 3339 instant"))
            })
    };
    let (from, to) = (instant("from")?, instant("to")?);
    let csv = super::wants_csv(&query)?;
    let program = cached_program(&state, &code).await?;
    let statement = state
        .store
        .settlement(&program, &partner, from, to)
        .await
        .map_err(settlement_error)?;
    Ok(if csv {
        (
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            statement.to_csv(),
        )
            .into_response()
    } else {
        axum::Json(StatementBody::new(statement, false)).into_response()
    })
}

/// Closes a settlement period: its statement is stored and never changes again (journals
/// dated inside it that come later go to the next statement's adjustments). The period
/// must be over (`period_not_over`) and start where the last closed one ended
/// (`period_not_next`, `period_overlaps`, all 409). Closing it again answers the statement
/// closed. Audited.
#[utoipa::path(post, path = "/programs/{program}/partners/{partner}/settlements", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("partner" = String, Path, description = PARTNER_PARAM, example = "cars", min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")),
    request_body = PeriodRequest,
    responses((status = 201, body = StatementBody, description = "Closed"),
              (status = 200, body = StatementBody, description = "Closed before: the statement as closed", headers(("Idempotent-Replayed" = bool, description = "`true`: the period was closed before"))),
              Problems))]
async fn close_settlement(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, partner)): Path<(String, String)>,
    ApiJson(request): ApiJson<PeriodRequest>,
) -> ApiResult<Response> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    partner_code(&partner)?;
    let program = require_program(&state, &code).await?;
    let (statement, replayed) = state
        .store
        .close_settlement(
            &program,
            &partner,
            request.from,
            request.to,
            Utc::now(),
            &caller.actor(),
        )
        .await
        .map_err(settlement_error)?;
    Ok(super::created_or_replayed(
        StatementBody::new(statement, replayed),
        replayed,
    ))
}

/// One currency's liability (money in minor units of the program's money currency).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CurrencyLiabilityBody {
    pub currency: String,
    /// What one point costs the operator (the currency's `value_per_point`).
    pub value_per_point: String,
    /// Points held by members (available and pending) as of the instant.
    pub outstanding_points: i64,
    /// `outstanding_points × value_per_point`.
    pub value: i64,
    /// The share of outstanding points history says will expire unclaimed (absent while
    /// fewer than 1,000 points have left their buckets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakage_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_breakage_points: Option<i64>,
    /// `value` less the expected breakage's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_value: Option<i64>,
}

/// A partner's share: points still in the buckets its accruals credited.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartnerLiabilityBody {
    pub partner: String,
    pub currency: String,
    pub outstanding_points: i64,
    pub value: i64,
}

/// A monthly cohort of credited points (UTC month), as of now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CohortBody {
    pub month: String,
    pub currency: String,
    pub credited: i64,
    pub expired: i64,
    pub outstanding: i64,
}

/// Outstanding points at a month's end (UTC).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiabilityPointBody {
    pub month: String,
    pub currency: String,
    pub outstanding_points: i64,
    pub value: i64,
}

/// The program's points liability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiabilityBody {
    pub as_of: DateTime<Utc>,
    pub money_currency: String,
    pub currencies: Vec<CurrencyLiabilityBody>,
    pub partners: Vec<PartnerLiabilityBody>,
    /// The cohorts the breakage estimate is drawn from.
    pub cohorts: Vec<CohortBody>,
    /// Month-end outstanding points, oldest first: the chart over time.
    pub history: Vec<LiabilityPointBody>,
    /// How breakage is estimated, in words.
    pub method: String,
}

/// The program's points liability as of an instant (now by default): outstanding points
/// per redeemable currency times `value_per_point`, the share per partner, the expected
/// breakage estimated from the program's own history, and month-end balances. Summed in
/// the database. Staff only (`programs:read`).
#[utoipa::path(get, path = "/programs/{program}/liability", tag = "partners",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("as_of" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "RFC 3339; now when absent")),
    responses((status = 200, body = LiabilityBody, description = "The liability"), Problems))]
async fn get_liability(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<LiabilityBody>> {
    caller.require(Permission::ProgramsRead, Some(&code))?;
    if caller.role == Role::Partner {
        return Err(ApiError::forbidden(
            "the liability is for the program's staff",
        ));
    }
    let as_of = super::query_instant(&query, "as_of")?;
    let program = cached_program(&state, &code).await?;
    let l = state.store.liability(&program, as_of).await?;
    Ok(axum::Json(LiabilityBody {
        as_of: l.as_of,
        money_currency: l.money_currency,
        currencies: l
            .currencies
            .into_iter()
            .map(|c| CurrencyLiabilityBody {
                currency: c.currency,
                value_per_point: c.value_per_point.normalize().to_string(),
                outstanding_points: c.outstanding,
                value: c.value,
                breakage_rate: c.breakage_rate,
                expected_breakage_points: c.expected_breakage,
                net_value: c.net_value,
            })
            .collect(),
        partners: l
            .partners
            .into_iter()
            .map(|p| PartnerLiabilityBody {
                partner: p.partner,
                currency: p.currency,
                outstanding_points: p.outstanding,
                value: p.value,
            })
            .collect(),
        cohorts: l
            .cohorts
            .into_iter()
            .map(|c| CohortBody {
                month: c.month,
                currency: c.currency,
                credited: c.credited,
                expired: c.expired,
                outstanding: c.outstanding,
            })
            .collect(),
        history: l
            .history
            .into_iter()
            .map(|h| LiabilityPointBody {
                month: h.month,
                currency: h.currency,
                outstanding_points: h.outstanding,
                value: h.value,
            })
            .collect(),
        method: "Breakage: of the points that have left their buckets, by monthly cohort of \
                 credit (UTC), the share that expired rather than being spent, taken back or \
                 moved, pooled over the cohorts (expired ÷ (credited − outstanding)) and applied \
                 to the points outstanding. It assumes today's points are treated as past ones \
                 were, and understates breakage while young cohorts have not reached their \
                 expiry; it is given once 1,000 points have left their buckets."
            .to_owned(),
    }))
}
