//! Moving in from another system: members' opening balances, tiers and promotion progress
//! as `opening` journals (see `fidelis_store::Store::open_member`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Problems, program};
use crate::AppState;
use crate::auth::{Caller, Permission};
use crate::dto::OutcomeBody;
use crate::error::{ApiError, ApiResult};

/// The most bytes of members one call brings (larger files: several calls, or the CLI).
const OPENINGS_LIMIT: usize = 16 << 20;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(open_members))
}

/// One line's result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpeningLineBody {
    pub line: u64,
    /// `opened`, `replayed` (opened before with the same document) or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::dto::BatchErrorBody>,
}

/// Brings members over from another system, one NDJSON document per line: `{"member",
/// "profile"?, "enrolled_at"?, "balances": [{"currency", "points", "earned_at",
/// "expires_at"?, "available_at"?}], "tiers": [{"group", "tier", "since", "valid_until"?,
/// "progress"?}], "promotions": [{"promotion", "progress"}]}`. Each member absent is
/// enrolled, then gets one `opening` journal: its balances as buckets with their own
/// instants (expiry and tier assessment run on them as on any points), its tiers, its
/// cumulative progress. Idempotent per member; refused (`member_has_ledger`) for a member
/// who has journals; audited.
#[utoipa::path(post, path = "/programs/{program}/members/openings", tag = "members",
    params(("program" = String, Path, description = "The program's code", example = "demo", min_length = 1, max_length = 64, pattern = "^[a-z0-9-]+$")),
    request_body(content = String, description = "NDJSON: one member's state per line", content_type = "application/x-ndjson"),
    responses((status = 200, description = "NDJSON: one result per line, in order", body = Vec<OpeningLineBody>, content_type = "application/x-ndjson"), Problems))]
async fn open_members(
    State(state): State<AppState>,
    caller: Arc<Caller>,
    Path(code): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    // Opening balances create points and members.
    caller.require(Permission::Adjust, Some(&code))?;
    caller.require(Permission::MembersWrite, Some(&code))?;
    let ndjson = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/x-ndjson") || v.starts_with("application/jsonl")
        });
    if !ndjson {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send one member per line with `Content-Type: application/x-ndjson`",
        ));
    }
    let program = program(&state, &code).await?;
    let limit = OPENINGS_LIMIT;
    let body: Bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("at most {limit} bytes of members at once; split the file"),
            )
        })?;
    let mut out = Vec::new();
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let line = i as u64 + 1;
        let rejected = |code: &str, detail: String| OpeningLineBody {
            line,
            status: "rejected".into(),
            outcome: None,
            error: Some(crate::dto::BatchErrorBody {
                code: code.into(),
                detail,
            }),
        };
        let result = match crate::extract::from_json_text::<fidelis_core::lifecycle::OpeningDocument>(
            text,
        ) {
            Err(e) => rejected("invalid_json", format!("not an opening document: {e}")),
            Ok(document) => match state
                .store
                .open_member(&program, &document, Utc::now(), &caller.actor())
                .await
            {
                Ok(o) => OpeningLineBody {
                    line,
                    status: if o.replayed { "replayed" } else { "opened" }.into(),
                    outcome: Some(OutcomeBody::new(&o.outcome, o.replayed)),
                    error: None,
                },
                Err(e) => {
                    let e = ApiError::from(e);
                    rejected(e.code, e.detail)
                }
            },
        };
        out.extend_from_slice(&serde_json::to_vec(&result).map_err(|_| ApiError::internal())?);
        out.push(b'\n');
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the body holds no member: send one JSON document per line",
        ));
    }
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
