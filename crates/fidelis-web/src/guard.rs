//! The guard around every request: it fails fast while the database is known to be
//! unreachable, bounds each request's time (answering a problem, not a bare status), and
//! tells the store's health what requests met, so readiness and fail-fast follow the
//! database's real state.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fidelis_store::Unavailability;

use crate::AppState;
use crate::error::ApiError;

/// Routes that answer without the database, or report on it themselves.
fn is_operations(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/schemas/program.schema.json"
    )
}

pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.store.health().is_down() && !is_operations(request.uri().path()) {
        return ApiError::unavailable(Unavailability::Unreachable, "it cannot be reached")
            .into_response();
    }
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => {
            if let Some(kind) = response.extensions().get::<Unavailability>() {
                state.store.note_failure(*kind);
            }
            response
        }
        Err(_) => {
            // Slow, or a database that hangs: find out which in the background.
            state.store.suspect();
            ApiError::timeout(limit).into_response()
        }
    }
}
