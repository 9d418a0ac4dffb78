//! Errors on the wire: RFC 9457 problem details (`application/problem+json`) with a stable
//! machine-readable `code`. Internal details go to the log, never to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fidelis_core::journal::JournalError;
use fidelis_core::program::Problem;
use fidelis_store::{StoreError, Unavailability};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem, as answered by every failing request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemBody {
    /// `urn:fidelis:problem:CODE`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable and machine-readable: `insufficient_points`, `member_suspended`…
    pub code: String,
    /// For an invalid definition: every problem with its path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<ProblemItem>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemItem {
    pub path: String,
    pub message: String,
}

/// An error a handler answers with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub problems: Option<Vec<ProblemItem>>,
    /// Seconds for `Retry-After`, when retrying later is the answer.
    pub retry_after: Option<u32>,
    /// Set when the database was unavailable: the server's health learns from it.
    pub unavailable: Option<Unavailability>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            problems: None,
            retry_after: None,
            unavailable: None,
        }
    }

    /// The database could not complete the request: 503 with `Retry-After`, saying that
    /// a change's outcome is unknown and that a retry with the same external id is safe.
    pub fn unavailable(kind: Unavailability, reason: &str) -> Self {
        Self {
            retry_after: Some(1),
            unavailable: Some(kind),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind.code(),
                format!(
                    "the database could not complete the request ({reason}); if it was a change, \
                     whether it took effect is unknown: retry with the same external_id (a \
                     journal is applied once), or read it back"
                ),
            )
        }
    }

    /// The request took longer than the server allows: 503 with `Retry-After`, code
    /// `timeout`; the work may still complete after this answer.
    pub fn timeout(limit: std::time::Duration) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request did not complete within {} s; if it was a change, whether it \
                     took effect is unknown (it may still complete): retry with the same \
                     external_id (a journal is applied once), or read it back",
                    limit.as_secs_f64()
                ),
            )
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; it is logged",
        )
    }

    pub fn invalid_program(problems: &[Problem]) -> Self {
        Self {
            problems: Some(
                problems
                    .iter()
                    .map(|p| ProblemItem {
                        path: p.path.clone(),
                        message: p.message.clone(),
                    })
                    .collect(),
            ),
            ..Self::unprocessable(
                "invalid_program",
                format!(
                    "the program definition has {} problem(s); nothing was changed",
                    problems.len()
                ),
            )
        }
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            problem_type: format!("urn:fidelis:problem:{}", self.code),
            title: self.title().to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_owned(),
            problems: self.problems,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(kind) = self.unavailable {
            response.extensions_mut().insert(kind);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A refused journal: the status follows from what is wrong.
impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        let status = match &e {
            JournalError::IdempotencyConflict(_) | JournalError::AlreadyCancelled(_) => {
                StatusCode::CONFLICT
            }
            JournalError::UnknownOriginal(_) => StatusCode::UNPROCESSABLE_ENTITY,
            JournalError::UnknownHold(_) => StatusCode::NOT_FOUND,
            JournalError::HoldCaptured(_)
            | JournalError::HoldReleased(_)
            | JournalError::HoldExpired { .. } => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownProgram(code) => {
                Self::not_found("unknown_program", format!("no program {code:?}"))
            }
            StoreError::UnknownMember(member) => Self::not_found(
                "unknown_member",
                format!("no member {member:?} in this program"),
            ),
            StoreError::MemberExists(member) => Self::new(
                StatusCode::CONFLICT,
                "member_exists",
                format!("member {member:?} is already enrolled in this program"),
            ),
            StoreError::Conflict(detail) => Self::new(StatusCode::CONFLICT, "conflict", detail),
            // A retry with the same external id and another body conflicts, on every route.
            StoreError::Refused(code @ "idempotency_conflict", detail) => {
                Self::new(StatusCode::CONFLICT, code, detail)
            }
            // Busy elsewhere: the same request succeeds later.
            StoreError::Refused(code @ "jobs_running", detail) => {
                Self::new(StatusCode::CONFLICT, code, detail)
            }
            // A limit of what the program holds: the request is fine, the program is full.
            StoreError::Refused(code @ ("too_many_webhooks" | "member_erased"), detail) => {
                Self::new(StatusCode::CONFLICT, code, detail)
            }
            // Refusals that name what the path names: it does not exist.
            StoreError::Refused(
                code @ ("unknown_group" | "unknown_tier_group" | "unknown_partner"
                | "unknown_promotion"),
                detail,
            ) => Self::not_found(code, detail),
            StoreError::Refused(code, detail) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
            }
            StoreError::InvalidProgram(problems) => Self::invalid_program(&problems),
            StoreError::Stopped => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the server is shutting down; retry with the same external_id".to_owned(),
                )
            },
            StoreError::Unavailable { kind, detail } => {
                tracing::warn!(error = %detail, code = kind.code(), "database unavailable");
                Self::unavailable(
                    kind,
                    match kind {
                        Unavailability::Unreachable => "it cannot be reached",
                        Unavailability::Storage => "it cannot write: its disk is full or failing",
                        Unavailability::Busy => "it is busy",
                    },
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                Self::internal()
            }
        }
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;
