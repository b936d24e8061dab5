//! Metrics and traces for every binary: OpenTelemetry instruments, exported as
//! a Prometheus scrape endpoint (`/metrics`) and, when an endpoint is
//! configured, pushed over OTLP/HTTP; spans go to an OTLP/HTTP traces endpoint
//! when one is configured (and nowhere otherwise: their ids still travel in
//! Kafka headers, see [`crate::trace_context`]). The same small HTTP server
//! answers `/healthz` (the process runs) and `/readyz` (its dependencies
//! answer, per the binary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::{Encoder, TextEncoder};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("setting up the Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("setting up the OTLP exporter for {endpoint}: {message}")]
    Otlp { endpoint: String, message: String },
    #[error("binding the metrics listener {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The OTLP flags every binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OtlpArgs {
    /// OTLP/HTTP metrics endpoint (e.g. http://collector:4318/v1/metrics); metrics are also pushed there.
    #[arg(long = "otlp-endpoint", env = "JAVELIN_OTLP_ENDPOINT")]
    pub metrics: Option<String>,
    /// OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces): spans following each window from the agent to ClickHouse are exported there.
    #[arg(long = "otlp-traces-endpoint", env = "JAVELIN_OTLP_TRACES_ENDPOINT")]
    pub traces: Option<String>,
}

impl OtlpArgs {
    pub fn endpoints(&self) -> OtlpEndpoints<'_> {
        OtlpEndpoints {
            metrics: self.metrics.as_deref(),
            traces: self.traces.as_deref(),
        }
    }
}

/// Where OTLP exports go (none: metrics are only scraped, spans are not exported).
#[derive(Debug, Clone, Copy, Default)]
pub struct OtlpEndpoints<'a> {
    /// OTLP/HTTP metrics URL, e.g. `http://collector:4318/v1/metrics`.
    pub metrics: Option<&'a str>,
    /// OTLP/HTTP traces URL, e.g. `http://collector:4318/v1/traces`.
    pub traces: Option<&'a str>,
}

/// The meter and tracer providers and the Prometheus registry.
#[derive(Clone)]
pub struct Telemetry {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    tracer_provider: SdkTracerProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Sets up metrics and traces for `service`; metrics are also pushed every
    /// 15 s to `otlp.metrics`, spans are exported in batches to `otlp.traces`.
    /// The tracer provider becomes the global one (`opentelemetry::global::tracer`).
    pub fn new(service: &str, otlp: OtlpEndpoints<'_>) -> Result<Telemetry, TelemetryError> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource_for(service))
            .with_reader(prometheus);
        if let Some(endpoint) = otlp.metrics.filter(|e| !e.is_empty()) {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .build()
                .map_err(otlp_error(endpoint))?;
            builder = builder.with_reader(
                PeriodicReader::builder(exporter)
                    .with_interval(Duration::from_secs(15))
                    .build(),
            );
        }
        let tracer_provider = tracer_provider(resource_for(service), otlp.traces)?;
        opentelemetry::global::set_tracer_provider(tracer_provider.clone());
        Ok(Telemetry {
            registry,
            provider: builder.build(),
            tracer_provider,
        })
    }

    pub fn meter(&self, name: &'static str) -> Meter {
        self.provider.meter(name)
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends.
    /// Returns the bound address (port 0 picks a free port).
    pub async fn serve(
        &self,
        addr: &str,
        ready: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<SocketAddr, TelemetryError> {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let telemetry = self.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let t = telemetry.clone();
                    async move { t.render() }
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = ready.clone();
                    async move {
                        if ready() {
                            (axum::http::StatusCode::OK, "ready")
                        } else {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                        }
                    }
                }),
            );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        });
        Ok(bound)
    }

    /// Flushes pending OTLP exports (on shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
        let _ = self.tracer_provider.shutdown();
    }

    /// Exports the spans ended so far (tests, and before a planned exit).
    pub fn flush_traces(&self) {
        let _ = self.tracer_provider.force_flush();
    }
}

fn otlp_error<E: std::fmt::Display>(endpoint: &str) -> impl FnOnce(E) -> TelemetryError + '_ {
    move |e| TelemetryError::Otlp {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    }
}

fn resource_for(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_string())
        .build()
}

/// Spans are always created (their ids go into Kafka headers); they are
/// exported only with an endpoint. The batch processor's queue (2,048 spans by
/// default) bounds what waits for export: beyond it spans are dropped.
fn tracer_provider(
    resource: Resource,
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(otlp_error(endpoint))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;

    #[test]
    fn instruments_render_as_prometheus_text() {
        let telemetry =
            Telemetry::new("javelin-test", OtlpEndpoints::default()).expect("telemetry");
        let meter = telemetry.meter("javelin");
        let windows = meter
            .u64_counter("javelin.agent.windows")
            .with_description("Windows built")
            .build();
        windows.add(3, &[KeyValue::new("type", "cpu")]);
        let text = telemetry.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("javelin_agent_windows_total{") && l.contains("type=\"cpu\""))
            .unwrap_or_else(|| panic!("no counter line in {text}"));
        assert!(line.ends_with(" 3"), "{line}");
    }
}
