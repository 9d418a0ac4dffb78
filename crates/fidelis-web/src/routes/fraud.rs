//! Fraud review: the queue of journals the program's fraud rules held, an agent's release
//! or rejection of each, and flagging members (see `fidelis_store`'s `fraud`).
//!
//! Who may do what: staff read the queue (`members:read`; members and partners may not);
//! deciding and flagging need `adjustments:write` (agents and managers). Every decision
//! is audited and sends a `journal.released` or `journal.rejected` event.

use std::sync::Arc;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use fidelis_store::{Decided, HeldJournal, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program};
use crate::auth::{Caller, Permission, Role};
use crate::dto::OutcomeBody;
use crate::error::{ApiError, ApiResult};
use crate::{ApiJson, AppState};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_held_journals))
        .routes(routes!(get_held_journal))
        .routes(routes!(release_held_journal))
        .routes(routes!(reject_held_journal))
        .routes(routes!(flag_member, unflag_member))
}

const PROGRAM_PARAM: &str = "The program's code";
const JOURNAL_PARAM: &str = "The held journal's external id";

/// A journal a fraud rule held, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeldJournalBody {
    pub external_id: String,
    pub member: String,
    #[serde(rename = "type")]
    pub journal_type: String,
    pub occurred_at: DateTime<Utc>,
    /// The rule that held it: `velocity`, `unusual_amount`, `shared_receipt`,
    /// `redemption_after_change` or `transfer_ring`.
    pub rule: String,
    /// Why, in words.
    pub reason: String,
    /// `held` (waiting), `released` or `rejected`.
    pub status: String,
    pub held_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The journal as posted.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// A release's outcome: what the journal earned (or redeemed) when processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeBody>,
}

impl HeldJournalBody {
    fn new(h: HeldJournal, outcome: Option<OutcomeBody>) -> Self {
        Self {
            document: serde_json::from_str(&h.document).unwrap_or(serde_json::Value::Null),
            external_id: h.external_id,
            member: h.member,
            journal_type: h.journal_type,
            occurred_at: h.occurred_at,
            rule: h.rule,
            reason: h.reason,
            status: h.status,
            held_at: h.held_at,
            decided_at: h.decided_at,
            decided_by: h.decided_by,
            note: h.note,
            outcome,
        }
    }
}

/// The queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeldJournalsBody {
    pub journals: Vec<HeldJournalBody>,
}

/// Why a held journal is rejected (kept in the audit trail and the queue).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectHeldRequest {
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    pub note: Option<String>,
}

/// Why a member is flagged.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagRequest {
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub reason: String,
}

/// A member's flag.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagBody {
    pub member: String,
    /// The reason, while flagged.
    pub flagged: Option<String>,
}

fn staff(caller: &Caller) -> ApiResult<()> {
    match caller.role {
        Role::Member | Role::Partner => Err(ApiError::forbidden(
            "fraud review is for the program's staff",
        )),
        _ => Ok(()),
    }
}

fn fraud_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Refused("not_found", detail) => {
            ApiError::not_found("unknown_held_journal", detail)
        }
        StoreError::Refused(code @ ("already_decided" | "release_refused"), detail) => {
            ApiError::new(axum::http::StatusCode::CONFLICT, code, detail)
        }
        e => e.into(),
    }
}

/// The journals fraud rules held, newest first (waiting ones with `status=held`).
#[utoipa::path(get, path = "/programs/{program}/held-journals", tag = "fraud",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("status" = Option<String>, Query, description = "Only those in this status", pattern = "^(held|released|rejected)$"),
           ("limit" = Option<i64>, Query, description = "At most this many (100 by default, at most 500)", minimum = 1, maximum = 500)),
    responses((status = 200, body = HeldJournalsBody, description = "The held journals"), Problems))]
pub(crate) async fn list_held_journals(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<HeldJournalsBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    staff(&caller)?;
    let status = query.get("status").map(String::as_str);
    if status.is_some_and(|s| !["held", "released", "rejected"].contains(&s)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status is held, released or rejected",
        ));
    }
    let limit = match query.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| ApiError::bad_request("invalid_query", "limit is 1 to 500"))?,
    };
    let program = cached_program(&state, &code).await?;
    let held = state.store.held_journals(&program, status, limit).await?;
    Ok(axum::Json(HeldJournalsBody {
        journals: held
            .into_iter()
            .map(|h| HeldJournalBody::new(h, None))
            .collect(),
    }))
}

/// One held journal.
#[utoipa::path(get, path = "/programs/{program}/held-journals/{journal}", tag = "fraud",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("journal" = String, Path, description = JOURNAL_PARAM, example = "T-1001", min_length = 1, max_length = 128)),
    responses((status = 200, body = HeldJournalBody, description = "The held journal"), Problems))]
pub(crate) async fn get_held_journal(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, journal)): Path<(String, String)>,
) -> ApiResult<axum::Json<HeldJournalBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    staff(&caller)?;
    let program = cached_program(&state, &code).await?;
    let held = state
        .store
        .held_journal(&program, &journal)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_held_journal",
                format!("no held journal {journal:?}"),
            )
        })?;
    Ok(axum::Json(HeldJournalBody::new(held, None)))
}

/// Releases a held journal: it is processed as of its original activity and earns (or
/// redeems) what it would have then — points that expired meanwhile are credited and
/// expired. Decided once: a second decision is `already_decided` (409); a journal that
/// cannot be processed now (the member was suspended, the points are gone) is
/// `release_refused` (409) and stays held. Audited; a `journal.released` event.
#[utoipa::path(post, path = "/programs/{program}/held-journals/{journal}/release", tag = "fraud",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("journal" = String, Path, description = JOURNAL_PARAM, example = "T-1001", min_length = 1, max_length = 128)),
    responses((status = 200, body = HeldJournalBody, description = "Released, with the journal's outcome"), Problems))]
pub(crate) async fn release_held_journal(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, journal)): Path<(String, String)>,
) -> ApiResult<axum::Json<HeldJournalBody>> {
    caller.require(Permission::Adjust, Some(&code))?;
    staff(&caller)?;
    let program = cached_program(&state, &code).await?;
    match state
        .store
        .release_held(&program, &journal, &caller.actor(), Utc::now())
        .await
        .map_err(fraud_error)?
    {
        Decided::Released(held, outcome) => Ok(axum::Json(HeldJournalBody::new(
            held,
            Some(OutcomeBody::new(&outcome, false)),
        ))),
        Decided::Rejected(held) => Ok(axum::Json(HeldJournalBody::new(held, None))),
    }
}

/// Rejects a held journal: it never earns, and a retry of it answers `rejected`.
/// Decided once (`already_decided`, 409). Audited; a `journal.rejected` event.
#[utoipa::path(post, path = "/programs/{program}/held-journals/{journal}/reject", tag = "fraud",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("journal" = String, Path, description = JOURNAL_PARAM, example = "T-1001", min_length = 1, max_length = 128)),
    request_body = RejectHeldRequest,
    responses((status = 200, body = HeldJournalBody, description = "Rejected"), Problems))]
pub(crate) async fn reject_held_journal(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, journal)): Path<(String, String)>,
    ApiJson(request): ApiJson<RejectHeldRequest>,
) -> ApiResult<axum::Json<HeldJournalBody>> {
    caller.require(Permission::Adjust, Some(&code))?;
    staff(&caller)?;
    if let Some(note) = &request.note
        && (note.chars().count() > 1000 || note.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "note is at most 1000 characters of text",
        ));
    }
    let program = cached_program(&state, &code).await?;
    let decided = state
        .store
        .reject_held(
            &program,
            &journal,
            request.note.as_deref(),
            &caller.actor(),
            Utc::now(),
        )
        .await
        .map_err(fraud_error)?;
    let (Decided::Rejected(held) | Decided::Released(held, _)) = decided;
    Ok(axum::Json(HeldJournalBody::new(held, None)))
}

/// Flags a member for review, with the reason (shown in the console). Audited.
#[utoipa::path(put, path = "/programs/{program}/members/{member}/flag", tag = "fraud",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    request_body = FlagRequest,
    responses((status = 200, body = FlagBody, description = "Flagged"), Problems))]
pub(crate) async fn flag_member(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, member)): Path<(String, String)>,
    ApiJson(request): ApiJson<FlagRequest>,
) -> ApiResult<axum::Json<FlagBody>> {
    caller.require(Permission::Adjust, Some(&code))?;
    staff(&caller)?;
    let reason = request.reason.as_str();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "reason is 1 to 500 characters of text on one line",
        ));
    }
    let program = cached_program(&state, &code).await?;
    state
        .store
        .flag_member(&program, &member, Some(reason), &caller.actor(), Utc::now())
        .await?;
    Ok(axum::Json(FlagBody {
        member,
        flagged: Some(reason.to_owned()),
    }))
}

/// Clears a member's flag. Audited.
#[utoipa::path(delete, path = "/programs/{program}/members/{member}/flag", tag = "fraud",
    params(("program" = String, Path, description = PROGRAM_PARAM, example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = FlagBody, description = "No longer flagged"), Problems))]
pub(crate) async fn unflag_member(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, member)): Path<(String, String)>,
) -> ApiResult<axum::Json<FlagBody>> {
    caller.require(Permission::Adjust, Some(&code))?;
    staff(&caller)?;
    let program = cached_program(&state, &code).await?;
    state
        .store
        .flag_member(&program, &member, None, &caller.actor(), Utc::now())
        .await?;
    Ok(axum::Json(FlagBody {
        member,
        flagged: None,
    }))
}
