//! Knowing the program: a promotion measured against its control group.
//!
//! Staff only (`programs:read`, not partners or members): the figures are the program's.

use std::sync::Arc;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use fidelis_core::analytics::experiment;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program};
use crate::AppState;
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(promotion_performance))
}

/// Points a promotion awarded in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AwardedPoints {
    pub currency: String,
    pub points: i64,
}

/// A promotion against its control group over a window. Money in minor units of the
/// program's money currency (means and intervals rounded to one).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PromotionPerformanceBody {
    pub promotion: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Members it rewarded in the window, and members it held out.
    pub treated_members: usize,
    pub control_members: usize,
    pub applied_journals: u64,
    pub control_journals: u64,
    /// Mean spend on purchases in the window, per group.
    pub treated_mean_spend: i64,
    pub control_mean_spend: i64,
    /// Treated minus control mean spend, with its 95 % interval (absent below 30 members
    /// in a group).
    pub lift_per_member: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lift_interval_95: Option<[i64; 2]>,
    /// `lift_per_member × treated_members`, and its interval.
    pub incremental_revenue: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental_revenue_interval_95: Option<[i64; 2]>,
    pub points: Vec<AwardedPoints>,
    /// The awarded points at their currencies' `value_per_point`.
    pub cost: i64,
    /// `(incremental_revenue − cost) / cost`; absent when nothing was awarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roi: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roi_interval_95: Option<[f64; 2]>,
    /// `positive`, `negative`, `not_significant` (the interval contains zero) or
    /// `sample_too_small` (under 30 members in a group).
    pub conclusion: String,
    pub money_currency: String,
}

/// A promotion measured against its control group (`control_group` in its definition)
/// over [from, to): the members it rewarded and those it held out, their mean spend on
/// purchases in the window, the difference with Welch's 95 % interval, the incremental
/// revenue, the points' cost and the return on investment. Staff only (`programs:read`).
#[utoipa::path(get, path = "/programs/{program}/analytics/promotions/{promotion}", tag = "analytics",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("promotion" = String, Path, description = "The promotion's code", example = "weekend", min_length = 1, max_length = 64),
           ("from" = chrono::DateTime<chrono::Utc>, Query, description = "The window's start, RFC 3339"),
           ("to" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Its end, excluded (RFC 3339); now when absent")),
    responses((status = 200, body = PromotionPerformanceBody, description = "The comparison"), Problems))]
async fn promotion_performance(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, promotion)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<axum::Json<PromotionPerformanceBody>> {
    caller.require(Permission::ProgramsRead, Some(&code))?;
    if matches!(caller.role, Role::Partner | Role::Member) {
        return Err(ApiError::forbidden(
            "promotion performance is for the program's staff",
        ));
    }
    let from = match query.get("from") {
        Some(_) => super::query_instant(&query, "from")?,
        None => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "from is required (RFC 3339)".to_owned(),
            ));
        }
    };
    let to = super::query_instant(&query, "to")?;
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_query",
            "from must be before to".to_owned(),
        ));
    }
    let program = cached_program(&state, &code).await?;
    let e = state
        .store
        .promotion_exposure(&program, &promotion, from, to)
        .await?;
    let r = experiment::compare(&e.treated, &e.control, e.cost);
    let round = |v: f64| v.round() as i64;
    let pair = |i: Option<(f64, f64)>| i.map(|(lo, hi)| [round(lo), round(hi)]);
    Ok(axum::Json(PromotionPerformanceBody {
        promotion,
        from,
        to,
        treated_members: r.treated,
        control_members: r.control,
        applied_journals: e.applied_journals,
        control_journals: e.control_journals,
        treated_mean_spend: round(r.treated_mean),
        control_mean_spend: round(r.control_mean),
        lift_per_member: round(r.lift),
        lift_interval_95: pair(r.lift_interval),
        incremental_revenue: round(r.incremental_revenue),
        incremental_revenue_interval_95: pair(r.revenue_interval),
        points: e
            .points
            .into_iter()
            .map(|(currency, points)| AwardedPoints { currency, points })
            .collect(),
        cost: e.cost,
        roi: r.roi,
        roi_interval_95: r.roi_interval.map(|(lo, hi)| [lo, hi]),
        conclusion: r.conclusion.name().to_owned(),
        money_currency: program.program.money_currency.code().to_owned(),
    }))
}
