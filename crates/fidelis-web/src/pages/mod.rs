//! The pages: the admin console (`/console`) and the member portal (`/portal/{program}`),
//! rendered on the server from minijinja templates, with htmx (vendored, served from
//! `/static`) for the few places that update in place.
//!
//! # Architecture invariant
//! A page is a rendering of what the API answers: page handlers build the caller from the
//! session and call the API's own handlers (`crate::routes`), so a page shows and allows
//! exactly what the API would for the same user — no SQL, no loyalty rule and no second
//! implementation of a permission here. Every state-changing form is a POST carrying the
//! session's anti-forgery token.

pub mod charts;
pub(crate) mod console;
mod i18n;
mod portal;
pub(crate) mod session;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use minijinja::{Environment, Value};

use crate::AppState;
use crate::error::ApiError;

/// A form's fields, or a page's query.
pub(crate) type Fields = std::collections::HashMap<String, String>;

/// A page context with `extra` added to `base`.
pub(crate) fn merge(base: Value, extra: Value) -> Value {
    minijinja::context! { ..extra, ..base }
}

/// An API answer as a template value.
pub(crate) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// A query for an API handler from the pairs that have a value.
pub(crate) fn query_map(
    pairs: &[(&str, Option<&str>)],
) -> axum::extract::Query<std::collections::BTreeMap<String, String>> {
    axum::extract::Query(
        pairs
            .iter()
            .filter_map(|(k, v)| {
                v.filter(|v| !v.is_empty())
                    .map(|v| ((*k).to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

/// Points expiring per month (`YYYY-MM` in the program's zone), for the expiry charts.
pub(crate) fn expiry_by_month(
    expiring: &[crate::dto::ScheduleBody],
    tz: chrono_tz::Tz,
) -> std::collections::BTreeMap<String, i64> {
    let mut months = std::collections::BTreeMap::new();
    for s in expiring {
        *months
            .entry(s.at.with_timezone(&tz).format("%Y-%m").to_string())
            .or_default() += s.points;
    }
    months
}

/// The templates, compiled once.
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a shipped template does not compile");
            }
        }
        i18n::register(&mut env);
        env
    })
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "error.html",
    "console/sign_in.html",
    "console/programs.html",
    "console/dashboard.html",
    "console/members.html",
    "console/member.html",
    "console/definition.html",
    "console/condition_check.html",
    "console/dry_run.html",
    "console/journal.html",
    "console/promotions.html",
    "console/catalog.html",
    "console/partners.html",
    "console/fraud.html",
    "console/segments.html",
    "console/webhooks.html",
    "console/messages.html",
    "console/audit.html",
    "console/access.html",
    "portal/sign_in.html",
    "portal/set_password.html",
    "portal/home.html",
    "portal/history.html",
    "portal/promotions.html",
    "portal/rewards.html",
    "portal/claims.html",
    "portal/data.html",
);

/// A page that could not be shown: an HTML page with the status and what went wrong.
#[derive(Debug)]
pub(crate) struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "There is no such page.")
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side; it is in the server's log.",
        )
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        if e.status.is_server_error() {
            tracing::warn!(code = e.code, detail = %e.detail, "a page could not be shown");
        }
        Self::new(e.status, e.detail)
    }
}

impl From<fidelis_store::StoreError> for PageError {
    fn from(e: fidelis_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
            s if s.is_server_error() => "Server error",
            _ => "Cannot do that",
        };
        let ctx =
            minijinja::context! { title, message => self.message, status => self.status.as_u16() };
        let body = render("error.html", ctx).map_or_else(
            |_| {
                Html(format!(
                    "<!doctype html><title>{title}</title><p>{title}</p>"
                ))
            },
            |h| h,
        );
        let mut response = (self.status, body).into_response();
        no_store(&mut response);
        response
    }
}

pub(crate) type PageResult<T = Response> = Result<T, PageError>;

/// Renders a template.
pub(crate) fn render(name: &str, ctx: Value) -> Result<Html<String>, PageError> {
    environment()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| {
            tracing::error!(template = name, error = %e, "a page did not render");
            PageError::internal()
        })
}

/// A rendered page that no cache keeps (pages show personal data).
pub(crate) fn page(name: &str, ctx: Value) -> PageResult {
    let mut response = render(name, ctx)?.into_response();
    no_store(&mut response);
    Ok(response)
}

fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// After a form: back to a page (303, so a reload does not post again).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A path segment made safe to put in a URL.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const STYLE: &str = include_str!("../../static/style.css");
const HTMX: &str = include_str!("../../static/vendor/htmx.min.js");
const HTMX_LICENSE: &str = include_str!("../../static/vendor/htmx.LICENSE");

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "htmx.LICENSE" => (HTMX_LICENSE, "text/plain; charset=utf-8"),
        _ => return PageError::not_found().into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The pages' routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/static/{name}", get(asset))
        .merge(console::router())
        .merge(portal::router())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        let env = super::environment();
        for (name, _) in super::TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name} does not compile");
        }
    }

    #[test]
    fn segments_are_escaped_for_urls() {
        assert_eq!(super::segment("C-100 000/é"), "C-100%20000%2F%C3%A9");
    }
}
