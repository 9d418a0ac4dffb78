//! A member's badges and benefits: the badges promotions awarded (once, or counted when
//! repeatable), and the benefits the member enjoys now — its tiers' and those promotions
//! granted for a period — read the same way.
//!
//! Who may read: whoever may read the member (`members:read`; a member token its own).

use std::sync::Arc;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, cached_program};
use crate::AppState;
use crate::auth::{Caller, Permission};
use crate::error::ApiResult;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(member_badges))
        .routes(routes!(member_benefits))
}

/// A badge a member holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BadgeBody {
    pub badge: String,
    pub name: String,
    /// How many times it was awarded (1 unless the badge is repeatable).
    pub times: i64,
    pub first_awarded_at: DateTime<Utc>,
    pub last_awarded_at: DateTime<Utc>,
    /// `promotion:CODE`: what first awarded it.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BadgeList {
    pub badges: Vec<BadgeBody>,
}

/// A benefit a member enjoys now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BenefitBody {
    pub code: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `tier:GROUP:TIER` for a tier's benefit, `promotion:CODE` for a granted one.
    pub source: String,
    /// A granted benefit's end (a tier's lasts as long as the tier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BenefitList {
    pub benefits: Vec<BenefitBody>,
}

/// The badges a member holds, by when first awarded.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/badges", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = BadgeList, description = "The member's badges"), Problems))]
pub(crate) async fn member_badges(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, member)): Path<(String, String)>,
) -> ApiResult<axum::Json<BadgeList>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&member)?;
    let program = cached_program(&state, &code).await?;
    let m = state.store.require_member(&program, &member).await?;
    let badges = state.store.member_badges(&program.program, m.id).await?;
    Ok(axum::Json(BadgeList {
        badges: badges
            .into_iter()
            .map(|b| BadgeBody {
                badge: b.badge,
                name: b.name,
                times: b.times,
                first_awarded_at: b.first_at,
                last_awarded_at: b.last_at,
                source: b.source,
            })
            .collect(),
    }))
}

/// The benefits a member enjoys now: its tiers' and those promotions granted it for a
/// period (until `valid_until`).
#[utoipa::path(get, path = "/programs/{program}/members/{member}/benefits", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"),
           ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = BenefitList, description = "The member's benefits"), Problems))]
pub(crate) async fn member_benefits(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, member)): Path<(String, String)>,
) -> ApiResult<axum::Json<BenefitList>> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&member)?;
    let program = cached_program(&state, &code).await?;
    let now = Utc::now();
    let m = state.store.require_member(&program, &member).await?;
    let mut benefits: Vec<BenefitBody> = state
        .store
        .tier_standing(&program, &member, now)
        .await?
        .into_iter()
        .flat_map(|s| {
            let source = format!("tier:{}:{}", s.group, s.tier);
            s.benefits.into_iter().map(move |b| BenefitBody {
                code: b.code.to_string(),
                name: b.name,
                value: b.value.map(|v| v.to_string()),
                source: source.clone(),
                valid_until: None,
            })
        })
        .collect();
    benefits.extend(
        state
            .store
            .member_benefits(m.id, now)
            .await?
            .into_iter()
            .map(|g| BenefitBody {
                code: g.code,
                name: g.name,
                value: g.value,
                source: g.source,
                valid_until: Some(g.ends_at),
            }),
    );
    Ok(axum::Json(BenefitList { benefits }))
}
