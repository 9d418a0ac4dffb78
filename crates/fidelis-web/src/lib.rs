//! The Fidelis HTTP API.
//!
//! # Architecture invariant
//! Only this crate knows HTTP and the JSON wire types (`dto`). Handlers are thin: parse and
//! authorize, call the store, map the result. No loyalty rule lives here.
//!
//! # API boundary
//! [`app`] builds the whole router from an [`AppState`] (tests call it without a socket);
//! [`serve`] binds it to an address.

pub mod auth;
pub mod demo;
pub mod dto;
mod edge;
pub mod error;
mod extract;
mod guard;
mod metrics;
mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use fidelis_store::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::HttpMethod;

pub use extract::ApiJson;
pub use routes::admin::BOOTSTRAP_TOKEN;

/// Limits and settings of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest JSON body, in bytes.
    pub body_limit: usize,
    /// Largest NDJSON batch body, in bytes.
    pub batch_body_limit: usize,
    /// Largest NDJSON batch body from a partner token, in bytes.
    pub partner_batch_body_limit: usize,
    /// Longest a request may take; past it the client gets 503 `timeout` (the outcome is
    /// unknown, a retry with the same external id is safe).
    pub request_timeout: Duration,
    /// Requests per second allowed per token (with a burst of twice as many).
    pub rate_limit_per_second: u64,
    /// Longest a client may take to send a request's head, and to start the next one on
    /// a kept-alive connection; past it the connection is closed.
    pub header_timeout: Duration,
    /// Most connections open at once (see [`server`]).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: 1 << 20,
            batch_body_limit: 256 << 20,
            partner_batch_body_limit: 16 << 20,
            request_timeout: Duration::from_secs(30),
            rate_limit_per_second: 2_000,
            header_timeout: Duration::from_secs(10),
            max_connections: 1_024,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Arc<auth::TokenCache>,
    pub config: Arc<ServerConfig>,
    metrics: metrics::Metrics,
    openapi: Arc<utoipa::openapi::OpenApi>,
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        Self {
            store,
            tokens: Arc::default(),
            config: Arc::new(config),
            metrics: metrics::Metrics::global(),
            openapi: Arc::new(openapi()),
        }
    }
}

/// The whole application: the API under `/api/v1`, the OpenAPI document, health,
/// readiness and metrics.
pub fn app(state: AppState) -> Router {
    let config = Arc::clone(&state.config);
    let (api, _) = routes::api().split_for_parts();
    let (operations, _) = routes::operations().split_for_parts();
    Router::new()
        .merge(routes::rate_limited(api, &config, &state.tokens))
        .merge(operations)
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(routes::panicked))
        .layer(axum::middleware::from_fn(edge::edge))
        .with_state(state)
}

/// The OpenAPI document: every route the application serves, with the links a client
/// (or a stateful fuzzer) follows from what it created to what it can do next.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes::api()
        .merge(routes::operations())
        .split_for_parts()
        .1;
    let member = "/api/v1/programs/{program}/members/{member}";
    let journal = "/api/v1/programs/{program}/journals/{external_id}";
    let member_links = [
        ("member", member.to_owned(), HttpMethod::Get),
        ("balances", format!("{member}/balances"), HttpMethod::Get),
        ("ledger", format!("{member}/ledger"), HttpMethod::Get),
    ];
    let journal_links = [
        ("journal", journal.to_owned(), HttpMethod::Get),
        ("cancel", format!("{journal}/cancel"), HttpMethod::Post),
    ];
    // What a POST creates (named by a field of its 201 answer) and where that leads.
    let created: [(&str, &[Target], &str); 4] = [
        (
            "/api/v1/programs/{program}/members",
            &member_links,
            "member",
        ),
        (
            "/api/v1/programs/{program}/journals",
            &journal_links,
            "external_id",
        ),
        (
            "/api/v1/programs/{program}/members/{member}/redemptions",
            &journal_links,
            "external_id",
        ),
        (
            "/api/v1/programs/{program}/members/{member}/adjustments",
            &journal_links,
            "external_id",
        ),
    ];
    for (path, targets, parameter) in created {
        for (name, target, target_method) in targets {
            let Some(operation_id) = operation(&mut doc, target, target_method.clone())
                .and_then(|o| o.operation_id.clone())
            else {
                continue;
            };
            let Some(utoipa::openapi::RefOr::T(response)) =
                operation(&mut doc, path, HttpMethod::Post)
                    .and_then(|o| o.responses.responses.get_mut("201"))
            else {
                continue;
            };
            let link = utoipa::openapi::link::Link::builder()
                .operation_id(operation_id)
                .parameter("program", "$request.path.program")
                .parameter(parameter, format!("$response.body#/{parameter}"))
                .build();
            response
                .links
                .insert((*name).to_owned(), utoipa::openapi::RefOr::T(link));
        }
    }
    doc
}

/// A link's name, and the path and method of the operation it leads to.
type Target = (&'static str, String, HttpMethod);

/// The operation at `path` and `method` of `doc`.
fn operation<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    path: &str,
    method: HttpMethod,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

/// Serves the application on `listen` until the process is stopped (Ctrl-C or SIGTERM).
pub use server::serve;

pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
