//! The edge of every request: the bounds of its head (URI and headers), enforced here so
//! that exceeding them answers a problem, and every error answer — whoever made it,
//! a handler, an extractor's rejection, the router (404, 405) or a body limit (413) — is
//! `application/problem+json` with a `code`.
//!
//! hyper parses the head before any of this runs; its own hard limits (see
//! [`crate::server`]) lie well above these, so only a head too malformed or too large to
//! parse at all gets hyper's bare status line.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Longest path and query, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields in one request.
pub const MAX_HEADER_COUNT: usize = 100;
/// Largest total of header names and values, in bytes.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Runs the rest of a request as a task of its own, to its end, whether or not anyone
/// still waits for the answer: a client that hangs up, or the guard's time limit, drops
/// the request's future (the guard then answers that the outcome is unknown). A
/// handler dropped half way stops between two statements: sqlx 0.9 leaves a connection
/// whose `BEGIN` was cancelled inside that transaction (its member locks held) and puts it
/// back in the pool, where the next journal on it finds "a transaction in progress".
/// A panic in the task is raised again here, for the panic layer around to answer.
pub(crate) async fn detached(request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    match tokio::spawn(next.run(request).in_current_span()).await {
        Ok(response) => response,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: the runtime is shutting down.
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            )
            .into_response(),
        },
    }
}

pub(crate) async fn edge(request: Request, next: Next) -> Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the path and query are {uri} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_COUNT || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} header fields of {bytes} bytes; at most {MAX_HEADER_COUNT} fields of {MAX_HEADER_BYTES} bytes are read",
                headers.len()
            ),
        )
        .into_response();
    }
    as_problem(next.run(request).await).await
}

/// Whether the answer explains itself already: a problem, or a page (the console's and
/// portal's error pages are HTML for people).
fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| {
            t.as_bytes().starts_with(b"application/problem+json")
                || t.as_bytes().starts_with(b"text/html")
        })
}

/// The stable code of an error status that was not answered as a problem already.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

fn default_detail(status: StatusCode) -> String {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "this path does not take this method; the Allow header lists those it takes".into()
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this route takes".into(),
        s if s.is_server_error() => "something went wrong on our side; it is logged".into(),
        s => s.canonical_reason().unwrap_or("error").to_lowercase(),
    }
}

/// An error answer that is not a problem yet becomes one: its text (an extractor's
/// rejection says what was wrong) is the detail, its headers (`Allow`, `Retry-After`) stay.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = if status.is_server_error() {
        None // a server error's text may say more than a client should read
    } else {
        axum::body::to_bytes(body, 2048)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    let detail = text.unwrap_or_else(|| default_detail(status));
    let (problem, body) = ApiError::new(status, code_for(status), detail)
        .into_response()
        .into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem.headers {
        parts.headers.insert(name, value.clone());
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt as _;

    /// A request whose caller stops waiting (a client that hung up) still runs to its end.
    #[tokio::test]
    async fn a_request_runs_to_its_end_when_its_caller_goes_away() {
        let done = Arc::new(AtomicBool::new(false));
        let handler = {
            let done = Arc::clone(&done);
            move || async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.store(true, Ordering::SeqCst);
                "done"
            }
        };
        let app = Router::new()
            .route("/slow", post(handler))
            .layer(axum::middleware::from_fn(super::detached));
        let request = axum::http::Request::post("/slow")
            .body(Body::empty())
            .expect("a request");
        // The caller gives up long before the handler is done: its future is dropped.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), app.oneshot(request)).await;
        assert!(
            gave_up.is_err(),
            "the handler answered too soon for the test"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            done.load(Ordering::SeqCst),
            "the request stopped half way when its caller went away"
        );
    }

    /// A handler's panic still reaches the panic layer around (a 500 problem, not a hang).
    #[tokio::test]
    async fn a_panic_in_a_detached_request_is_answered() {
        let app = Router::new()
            .route(
                "/panics",
                post(|| async {
                    if true {
                        panic!("on purpose");
                    }
                    "never"
                }),
            )
            .layer(axum::middleware::from_fn(super::detached))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                crate::routes::panicked,
            ));
        let request = axum::http::Request::post("/panics")
            .body(Body::empty())
            .expect("a request");
        let response = app.oneshot(request).await.expect("an answer");
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
