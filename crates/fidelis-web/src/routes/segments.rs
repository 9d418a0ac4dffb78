//! Segments: the program's segments with how many members each held at the last refresh,
//! and one member's scores and segments (the churn model's P(alive), expected purchases
//! and lifetime value, RFM) for the 360° view.
//!
//! Staff only (`programs:read` for the list, `members:read` for a member; not partners or
//! members): who is likely to lapse is the program's business, not the member's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program};
use crate::AppState;
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_segments))
        .routes(routes!(member_segments))
}

/// The program's segments with their counts at the last refresh, as the list route and the
/// console's Segments page show them.
pub(crate) async fn segment_list(
    state: &AppState,
    program: &fidelis_store::LoadedProgram,
) -> ApiResult<SegmentList> {
    let last = state.store.last_refresh(program).await?;
    let count = |map: Option<&std::collections::BTreeMap<String, u64>>, code: &str| {
        map.and_then(|m| m.get(code)).copied().unwrap_or(0)
    };
    Ok(SegmentList {
        as_of: last.as_ref().map(|l| l.as_of),
        members: last.as_ref().map_or(0, |l| l.members),
        scored: last.as_ref().map_or(0, |l| l.scored),
        model_error: last.as_ref().and_then(|l| l.model_error.clone()),
        segments: program
            .program
            .segments
            .iter()
            .map(|s| SegmentBody {
                code: s.code.to_string(),
                name: s.name.clone(),
                description: s.description.clone(),
                condition: s.condition.source().to_owned(),
                members: count(last.as_ref().map(|l| &l.counts), s.code.as_str()),
                unevaluable: count(last.as_ref().map(|l| &l.unevaluable), s.code.as_str()),
            })
            .collect(),
    })
}

/// A segment and its members at the last refresh.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SegmentBody {
    pub code: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The CEL condition over `member`.
    pub condition: String,
    /// Members in it (0 before the first refresh).
    pub members: u64,
    /// Members whose condition could not be evaluated (a field null for them).
    pub unevaluable: u64,
}

/// The program's segments and their last refresh.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SegmentList {
    /// The instant of the last refresh (absent before the first; the scheduled jobs refresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// Members the refresh considered, and those the churn model scored.
    pub members: u64,
    pub scored: u64,
    /// Why the churn model could not be fitted (too little purchase history, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<String>,
    pub segments: Vec<SegmentBody>,
}

/// The program's segments with their member counts at the last refresh — as JSON or
/// (`format=csv`) one CSV row per segment. Staff only (`programs:read`).
#[utoipa::path(get, path = "/programs/{program}/segments", tag = "analytics",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("format" = Option<String>, Query, description = "`json` (default) or `csv`", pattern = "^(json|csv)$")),
    responses((status = 200, description = "The segments: JSON, or CSV with `format=csv`",
               content((SegmentList = "application/json"), (String = "text/csv"))),
              Problems))]
async fn list_segments(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<Response> {
    caller.require(Permission::ProgramsRead, Some(&code))?;
    if matches!(caller.role, Role::Partner | Role::Member) {
        return Err(ApiError::forbidden("segments are for the program's staff"));
    }
    let csv = super::wants_csv(&query)?;
    let program = cached_program(&state, &code).await?;
    let list = segment_list(&state, &program).await?;
    if csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        let as_of = list.as_of.map(|a| a.to_rfc3339()).unwrap_or_default();
        let failed = |e: csv::Error| {
            tracing::error!(error = %e, "writing the segments' CSV");
            ApiError::internal()
        };
        w.write_record(["segment", "name", "members", "unevaluable", "as_of"])
            .map_err(failed)?;
        for s in &list.segments {
            w.write_record([
                s.code.as_str(),
                s.name.as_str(),
                &s.members.to_string(),
                &s.unevaluable.to_string(),
                &as_of,
            ])
            .map_err(failed)?;
        }
        let body = w.into_inner().map_err(|e| {
            tracing::error!(error = %e, "writing the segments' CSV");
            ApiError::internal()
        })?;
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            body,
        )
            .into_response());
    }
    Ok(axum::Json(list).into_response())
}

/// A member's scores at the last segment refresh. Money in minor units.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberSegmentsBody {
    /// The refresh's instant; absent when no refresh has seen the member buy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// The segments the member is in.
    pub segments: Vec<String>,
    pub purchases_90d: i64,
    pub spend_90d: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// Recency, frequency and monetary scores 1–5 (`"545"`) and their named segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfm_segment: Option<String>,
    /// The probability the member is still active (BG/NBD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_alive: Option<f64>,
    /// Purchase days to expect in the next 90 days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_purchases_90d: Option<f64>,
    /// Discounted spend to expect in the next 12 months (Gamma-Gamma).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_value_12m: Option<i64>,
    pub money_currency: String,
}

/// A member's churn risk, lifetime value, RFM and segments as the last refresh found them.
/// Staff only (`members:read`).
#[utoipa::path(get, path = "/programs/{program}/members/{member}/segments", tag = "analytics",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = MemberSegmentsBody, description = "The member's scores"), Problems))]
pub(crate) async fn member_segments(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, member)): Path<(String, String)>,
) -> ApiResult<axum::Json<MemberSegmentsBody>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    if matches!(caller.role, Role::Partner | Role::Member) {
        return Err(ApiError::forbidden(
            "a member's scores are for the program's staff",
        ));
    }
    let program = cached_program(&state, &code).await?;
    let m = state.store.require_member(&program, &member).await?;
    let scores = state.store.member_scores(&program, m.id).await?;
    let money_currency = program.program.money_currency.code().to_owned();
    Ok(axum::Json(match scores {
        None => MemberSegmentsBody {
            as_of: None,
            segments: state.store.member_segment_codes(&program, m.id).await?,
            purchases_90d: 0,
            spend_90d: 0,
            last_purchase_at: None,
            rfm: None,
            rfm_segment: None,
            p_alive: None,
            expected_purchases_90d: None,
            lifetime_value_12m: None,
            money_currency,
        },
        Some(s) => MemberSegmentsBody {
            as_of: Some(s.as_of),
            segments: s.segments,
            purchases_90d: s.purchases_90d,
            spend_90d: s.spend_90d,
            last_purchase_at: s.last_purchase_at,
            rfm: s.rfm,
            rfm_segment: s.rfm_segment,
            p_alive: s.p_alive,
            expected_purchases_90d: s.expected_purchases_90d,
            lifetime_value_12m: s.lifetime_value.map(|v| v.round() as i64),
            money_currency,
        },
    }))
}
