//! The query API's metrics: requests by route and status, and their latency.
//! Served on the metrics listener (`/metrics`, `/healthz`, `/readyz`), apart
//! from the API so scraping needs no token.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use javelin_schema::telemetry::Telemetry;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

#[derive(Clone)]
pub struct QueryMetrics {
    requests: Counter<u64>,
    seconds: Histogram<f64>,
}

impl std::fmt::Debug for QueryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryMetrics").finish_non_exhaustive()
    }
}

impl QueryMetrics {
    pub fn new(telemetry: &Telemetry) -> QueryMetrics {
        let meter = telemetry.meter("javelin-query");
        QueryMetrics {
            requests: meter
                .u64_counter("javelin.query.requests")
                .with_description("HTTP requests answered, by route and status code")
                .build(),
            seconds: meter
                .f64_histogram("javelin.query.request.duration")
                .with_unit("s")
                .with_description("Time to answer a request, by route")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .build(),
        }
    }
}

/// Middleware: counts and times every request under its route pattern (never
/// the raw path, which would make the label set unbounded).
pub async fn observe(
    State(metrics): State<QueryMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics.requests.add(
        1,
        &[
            KeyValue::new("route", route.clone()),
            KeyValue::new("status", status),
        ],
    );
    metrics.seconds.record(
        started.elapsed().as_secs_f64(),
        &[KeyValue::new("route", route)],
    );
    response
}
