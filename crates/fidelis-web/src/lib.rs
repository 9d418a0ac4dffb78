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
mod openapi;
pub(crate) mod pages;
/// SVG charts, drawn on the server (the console's, and `fidelis simulate`'s).
pub use pages::charts;
pub mod messages;
mod routes;
pub mod server;
pub mod streams;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use fidelis_store::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use extract::ApiJson;
pub use openapi::openapi;
pub use routes::admin::BOOTSTRAP_TOKEN;
pub use routes::analytics::{KpisBody, KpisReport, kpis_report};

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
    /// Whether the pages' cookies are marked `Secure` (the server is reached over TLS);
    /// they are also when a proxy says so with `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
    /// Webhooks reach only public addresses (see [`webhooks::is_public`]): the test-send
    /// button obeys it like the delivery worker.
    pub webhooks_public_only: bool,
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
            secure_cookies: false,
            webhooks_public_only: false,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Arc<auth::TokenCache>,
    pub config: Arc<ServerConfig>,
    /// Failed sign-ins to the pages, per account.
    throttle: Arc<pages::session::Throttle>,
    /// The console's dashboard figures per program.
    dashboards: Arc<pages::console::Dashboards>,
    metrics: metrics::Metrics,
    /// The OpenAPI document, serialized once.
    openapi: axum::body::Bytes,
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        Self {
            store,
            tokens: Arc::default(),
            config: Arc::new(config),
            throttle: Arc::default(),
            dashboards: Arc::default(),
            metrics: metrics::Metrics::global(),
            openapi: axum::body::Bytes::from(openapi().to_string()),
        }
    }
}

/// The whole application: the API under `/api/v1`, the OpenAPI document, health,
/// readiness and metrics, and the pages (`/console`, `/portal/{program}`, `/static`).
pub fn app(state: AppState) -> Router {
    let config = Arc::clone(&state.config);
    let (api, _) = routes::api().split_for_parts();
    let (operations, _) = routes::operations().split_for_parts();
    Router::new()
        .merge(routes::rate_limited(api, &config, &state.tokens))
        .merge(operations)
        .merge(pages::router())
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit))
        // Inside the guard: a request it answers as timed out still runs to its end.
        .layer(axum::middleware::from_fn(edge::detached))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(routes::panicked))
        .layer(axum::middleware::from_fn(edge::edge))
        .with_state(state)
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
