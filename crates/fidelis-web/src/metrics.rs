//! Prometheus metrics: requests and latency per route, journals by outcome, points issued
//! and redeemed per currency. Recorded through the `metrics` facade; rendered at
//! `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use fidelis_core::outcome::Outcome;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Latency buckets, in seconds: from a cached read to a slow batch.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone)]
pub(crate) struct Metrics {
    handle: Option<PrometheusHandle>,
}

impl Metrics {
    /// The process's recorder, installed on first use (a process has one; tests build many
    /// apps in one process).
    pub(crate) fn global() -> Self {
        static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        });
        Self {
            handle: handle.clone(),
        }
    }

    pub(crate) fn render(&self) -> String {
        self.handle
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default()
    }
}

/// The method as a label: the standard methods by name, anything else `other` — a client
/// inventing method names must not add a series per name.
fn method_label(method: &axum::http::Method) -> &str {
    use axum::http::Method;
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    if STANDARD.contains(method) {
        method.as_str()
    } else {
        "other"
    }
}

/// Counts every request and times it, by matched route (never by raw path, which would
/// make a series per member) and by a bounded method label. Every label is bounded: the
/// routes are the application's, statuses are three digits.
pub(crate) async fn record(
    State(_state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Records a journal's result: its outcome, and the points it issued and redeemed.
pub(crate) fn journal(outcome: Result<(&Outcome, bool), &str>) {
    match outcome {
        Ok((o, replayed)) => {
            let label = if replayed { "replayed" } else { "processed" };
            metrics::counter!("fidelis_journals_total", "outcome" => label).increment(1);
            if replayed {
                return;
            }
            for a in &o.awards {
                metrics::counter!("fidelis_points_total", "currency" => a.currency.to_string(), "direction" => "issued")
                    .increment(a.points.unsigned_abs());
            }
            for d in &o.debited {
                metrics::counter!("fidelis_points_total", "currency" => d.currency.to_string(), "direction" => "redeemed")
                    .increment(d.points.unsigned_abs());
            }
            for e in &o.expired {
                metrics::counter!("fidelis_points_total", "currency" => e.currency.to_string(), "direction" => "expired")
                    .increment(e.points.unsigned_abs());
            }
        }
        Err(code) => {
            metrics::counter!("fidelis_journals_total", "outcome" => "rejected", "code" => code.to_owned()).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn invented_methods_share_one_label() {
        for name in ["FOO", "X-RANDOM-1", "get"] {
            let method =
                axum::http::Method::from_bytes(name.as_bytes()).expect("a valid method name");
            assert_eq!(method_label(&method), "other", "{name}");
        }
        assert_eq!(method_label(&axum::http::Method::POST), "POST");
    }
}
