//! Personal data (PRODUCT.md §15): a member's data exported as one JSON document, and
//! erasure, which removes the member's personal data and keeps the ledger whole under a
//! pseudonymous id. The store's `personal_data` module says what each covers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::members::member;
use super::{Problems, program};
use crate::AppState;
use crate::auth::{Caller, Permission, Role};
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_member))
        .routes(routes!(erase_member))
}

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErasureBody {
    /// The member's new, pseudonymous external id: its ledger lives on under it.
    #[schema(example = "erased-k7m2q9x4ab")]
    pub member: String,
    /// Members erased: the member and every member merged into it.
    pub members: u64,
    pub erased_at: DateTime<Utc>,
    /// Rows rewritten or removed, by table.
    pub rows: BTreeMap<String, u64>,
}

/// Everything held about a member, as one JSON document: `format`, `program`, `member`,
/// `exported_at` and `tables` — every table's rows about the member and the members merged
/// into it (instants in RFC 3339; password, token and session hashes left out). Staff,
/// and a member for itself.
#[utoipa::path(get, path = "/programs/{program}/members/{member}/export", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = Object, description = "The member's data (a download)"), Problems))]
pub(crate) async fn export_member(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Permission::MembersRead, Some(&code))?;
    caller.require_member(&external_id)?;
    let program = program(&state, &code).await?;
    member(&state, &program, &external_id).await?;
    let document = state
        .store
        .export_member(&program, &external_id, Utc::now())
        .await?;
    Ok(download(&document, &code, &external_id))
}

/// The export as a JSON attachment named after the program and member.
pub(crate) fn download(document: &serde_json::Value, code: &str, external_id: &str) -> Response {
    let safe: String = external_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{code}-{safe}.json\""),
        )],
        Json(document),
    )
        .into_response()
}

/// Erases the member's personal data: the profile, sign-in and sessions, claim notes, and
/// every copy of its external id and profile values in journals, events, import
/// rejections and the audit log. The member stays, closed, under a new pseudonymous
/// external id (answered), with every journal, balance and partner figure unchanged; its
/// tokens are revoked. The member's old external id is free to enrol again. Program
/// managers and admins; audited without personal data. A second call answers 404.
#[utoipa::path(post, path = "/programs/{program}/members/{member}/erase", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$"), ("member" = String, Path, description = "The member's external id", example = "C-100000", min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
    responses((status = 200, body = ErasureBody, description = "What was erased"), Problems))]
pub(crate) async fn erase_member(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path((code, external_id)): Path<(String, String)>,
) -> ApiResult<Json<ErasureBody>> {
    caller.require(Permission::ProgramsWrite, Some(&code))?;
    if matches!(caller.role, Role::Partner | Role::Member | Role::Agent) {
        return Err(ApiError::forbidden(
            "erasing a member is for the program's managers",
        ));
    }
    let program = program(&state, &code).await?;
    member(&state, &program, &external_id).await?;
    let done = state
        .store
        .erase_member(&program, &external_id, Utc::now(), &caller.actor())
        .await?;
    Ok(Json(ErasureBody {
        member: done.member,
        members: done.members,
        erased_at: done.erased_at,
        rows: done.rows,
    }))
}
