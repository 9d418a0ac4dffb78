//! Knowing the program: the key figures per month, and a promotion measured against its
//! control group.
//!
//! Staff only (`programs:read`, not partners or members): the figures are the program's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
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
    OpenApiRouter::new()
        .routes(routes!(promotion_performance))
        .routes(routes!(kpis))
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
/// over [from, to) (empty when `to` is not after `from`): the members it rewarded and those it held out, their mean spend on
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
    // A window that ends before it starts is empty: nobody in it.
    let to = super::query_instant(&query, "to")?;
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

/// One currency's points over the window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CurrencyKpis {
    pub currency: String,
    /// Earned (either pool) and positive adjustments; redeemed; expired.
    pub issued: i64,
    pub redeemed: i64,
    pub expired: i64,
    /// `redeemed / issued` and `expired / issued` (absent without issued points).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redemption_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakage_rate: Option<f64>,
    /// Held by members now.
    pub outstanding_available: i64,
    pub outstanding_pending: i64,
}

/// One month (in the program's time zone; the last one runs to now).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MonthKpis {
    /// `YYYY-MM`.
    pub month: String,
    pub enrolments: i64,
    /// Per currency: (issued, redeemed, expired), in the order of `currencies`.
    pub points: Vec<[i64; 3]>,
}

/// Members per tier now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TierKpis {
    pub group: String,
    pub tier: String,
    pub members: i64,
}

/// The program's key figures: members and activity now, and per month of the window
/// enrolments and points issued, redeemed and expired.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KpisBody {
    pub as_of: DateTime<Utc>,
    pub members: i64,
    /// Members who earned or spent in the last 30 and 90 days.
    pub active_30: i64,
    pub active_90: i64,
    pub enrolments: i64,
    pub currencies: Vec<CurrencyKpis>,
    pub months: Vec<MonthKpis>,
    pub tiers: Vec<TierKpis>,
}

/// The program's key figures, computed in the database: members (total, active in 30 and
/// 90 days), and per month of the last `months` (12 by default, at most 120) enrolments and
/// points issued, redeemed and expired per currency, with the window's redemption and
/// breakage rates, points outstanding and members per tier — as JSON or (`format=csv`) one
/// CSV row per month and currency. Staff only (`programs:read`).
#[utoipa::path(get, path = "/programs/{program}/analytics/kpis", tag = "analytics",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("months" = Option<u32>, Query, description = "Months back, the current one included (1–120; 12 by default)", minimum = 1, maximum = 120),
           ("format" = Option<String>, Query, description = "`json` (default) or `csv`", pattern = "^(json|csv)$")),
    responses((status = 200, description = "The figures: JSON, or CSV with `format=csv`",
               content((KpisBody = "application/json"), (String = "text/csv"))),
              Problems))]
async fn kpis(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    axum::extract::Query(query): axum::extract::Query<crate::dto::Query>,
) -> ApiResult<Response> {
    caller.require(Permission::ProgramsRead, Some(&code))?;
    if matches!(caller.role, Role::Partner | Role::Member) {
        return Err(ApiError::forbidden(
            "the key figures are for the program's staff",
        ));
    }
    let months = match query.get("months") {
        None => 12,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=120).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "months is a whole number from 1 to 120".to_owned(),
                ));
            }
        },
    };
    let csv = super::wants_csv(&query)?;
    let program = cached_program(&state, &code).await?;
    let report = kpis_report(&state.store, &program, months, Utc::now()).await?;
    if csv {
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report.csv,
        )
            .into_response());
    }
    Ok(axum::Json(report.body).into_response())
}

/// The key figures of the last `months` months as of `now`, as `GET …/analytics/kpis` and
/// `fidelis analytics kpis` answer them.
pub struct KpisReport {
    pub body: KpisBody,
    /// One row per month and currency: `month,currency,enrolments,issued,redeemed,expired`.
    pub csv: String,
}

/// Computes the key figures in the database (see [`KpisReport`]).
pub async fn kpis_report(
    store: &fidelis_store::Store,
    program: &fidelis_store::LoadedProgram,
    months: u32,
    now: DateTime<Utc>,
) -> Result<KpisReport, fidelis_store::StoreError> {
    let tz = program.program.time_zone;
    let bounds = crate::pages::console::month_bounds(tz, now, months);
    let labels: Vec<String> = bounds
        .iter()
        .take(bounds.len().saturating_sub(1))
        .map(|b| b.with_timezone(&tz).format("%Y-%m").to_string())
        .collect();
    let d = store.dashboard(program, &bounds, now).await?;
    let mut csv = String::from("month,currency,enrolments,issued,redeemed,expired\n");
    for (i, month) in labels.iter().enumerate() {
        for (currency, points) in &d.points {
            let p = points.get(i).cloned().unwrap_or_default();
            csv.push_str(&format!(
                "{month},{currency},{},{},{},{}\n",
                d.enrolments.get(i).copied().unwrap_or(0),
                p.issued,
                p.redeemed,
                p.expired
            ));
        }
    }
    let rate = |part: i64, whole: i64| (whole > 0).then(|| part as f64 / whole as f64);
    let currencies = d
        .points
        .iter()
        .map(|(currency, points)| {
            let sum =
                |f: &dyn Fn(&fidelis_store::MonthPoints) -> i64| points.iter().map(f).sum::<i64>();
            let (issued, redeemed, expired) = (
                sum(&|p| p.issued),
                sum(&|p| p.redeemed),
                sum(&|p| p.expired),
            );
            let (available, pending) = d
                .outstanding
                .iter()
                .find(|o| &o.0 == currency)
                .map_or((0, 0), |o| (o.1, o.2));
            CurrencyKpis {
                currency: currency.clone(),
                issued,
                redeemed,
                expired,
                redemption_rate: rate(redeemed, issued),
                breakage_rate: rate(expired, issued),
                outstanding_available: available,
                outstanding_pending: pending,
            }
        })
        .collect();
    let months = labels
        .iter()
        .enumerate()
        .map(|(i, month)| MonthKpis {
            month: month.clone(),
            enrolments: d.enrolments.get(i).copied().unwrap_or(0),
            points: d
                .points
                .iter()
                .map(|(_, p)| {
                    let p = p.get(i).cloned().unwrap_or_default();
                    [p.issued, p.redeemed, p.expired]
                })
                .collect(),
        })
        .collect();
    let body = KpisBody {
        as_of: now,
        members: d.members,
        active_30: d.active_30,
        active_90: d.active_90,
        enrolments: d.enrolments.iter().sum(),
        currencies,
        months,
        tiers: d
            .tiers
            .iter()
            .map(|(group, tier, members)| TierKpis {
                group: group.clone(),
                tier: tier.clone(),
                members: *members,
            })
            .collect(),
    };
    Ok(KpisReport { body, csv })
}
