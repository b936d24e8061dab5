//! HTTP API under `/api/v1` and the UI at `/`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use javelin_schema::wire::ProfileType;
use serde::{Deserialize, Serialize};

use crate::flamegraph::{CallTree, Flamegraph};
use crate::store::{Scope, Store};

/// Query limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_max_nodes: usize,
    pub max_nodes_limit: usize,
    pub max_range_ms: i64,
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub limits: Limits,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(ui))
        .route("/api/v1/services", get(services))
        .route("/api/v1/flamegraph", get(flamegraph))
        .with_state(Arc::new(state))
}

/// An API error: a status and a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<clickhouse::error::Error> for ApiError {
    fn from(e: clickhouse::error::Error) -> ApiError {
        tracing::warn!(error = %e, "ClickHouse query failed");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("ClickHouse unavailable: {e}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
pub struct RangeParams {
    from: Option<i64>,
    to: Option<i64>,
}

fn range(limits: &Limits, from: Option<i64>, to: Option<i64>) -> Result<(u32, u32), ApiError> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ApiError::bad_request(
            "`from` and `to` (ms since the epoch) are required",
        ));
    };
    if from < 0 || to <= from {
        return Err(ApiError::bad_request(format!(
            "empty or negative range: from={from} to={to}"
        )));
    }
    if to - from > limits.max_range_ms {
        return Err(ApiError::bad_request(format!(
            "range of {} ms exceeds the limit of {} ms",
            to - from,
            limits.max_range_ms
        )));
    }
    let secs = |ms: i64| {
        u32::try_from(ms / 1000)
            .map_err(|_| ApiError::bad_request(format!("time {ms} out of range")))
    };
    // Windows are stored by their start second: round the end up so a window starting inside the range counts.
    Ok((secs(from)?, secs(to + 999)?))
}

#[derive(Debug, Serialize)]
struct ServicesResponse {
    services: Vec<String>,
}

async fn services(
    State(state): State<Arc<AppState>>,
    Query(p): Query<RangeParams>,
) -> Result<Json<ServicesResponse>, ApiError> {
    let (from_s, to_s) = range(&state.limits, p.from, p.to)?;
    Ok(Json(ServicesResponse {
        services: state.store.services(from_s, to_s).await?,
    }))
}

#[derive(Debug, Deserialize)]
pub struct FlamegraphParams {
    service: Option<String>,
    #[serde(rename = "type")]
    profile_type: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    max_nodes: Option<usize>,
}

#[derive(Debug, Serialize)]
struct FlamegraphResponse {
    #[serde(flatten)]
    flamegraph: Flamegraph,
    unit: &'static str,
    metadata: FlamegraphMetadata,
}

#[derive(Debug, Serialize)]
struct FlamegraphMetadata {
    service: String,
    profile_type: String,
    from: i64,
    to: i64,
    stacks: usize,
    max_nodes: usize,
}

async fn flamegraph(
    State(state): State<Arc<AppState>>,
    Query(p): Query<FlamegraphParams>,
) -> Result<Json<FlamegraphResponse>, ApiError> {
    let service = p
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("`service` is required"))?;
    let type_name = p.profile_type.unwrap_or_else(|| "cpu".into());
    let kind = ProfileType::from_name(&type_name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown profile type {type_name:?}; use cpu, alloc, lock or park"
        ))
    })?;
    let (from_s, to_s) = range(&state.limits, p.from, p.to)?;
    let max_nodes = p.max_nodes.unwrap_or(state.limits.default_max_nodes);
    if !(2..=state.limits.max_nodes_limit).contains(&max_nodes) {
        return Err(ApiError::bad_request(format!(
            "max_nodes must be in 2..={}",
            state.limits.max_nodes_limit
        )));
    }
    let scope = Scope {
        service: service.clone(),
        profile_type: kind.name().into(),
        from_s,
        to_s,
    };
    let stacks = state.store.stacks(&scope).await?;
    let mut tree = CallTree::new();
    for stack in &stacks {
        tree.add(&stack.frames, stack.value);
    }
    Ok(Json(FlamegraphResponse {
        flamegraph: tree.to_flamegraph(max_nodes),
        unit: kind.value_unit(),
        metadata: FlamegraphMetadata {
            service,
            profile_type: kind.name().into(),
            from: p.from.unwrap_or_default(),
            to: p.to.unwrap_or_default(),
            stacks: stacks.len(),
            max_nodes,
        },
    }))
}

async fn ui() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("../ui/index.html")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        default_max_nodes: 8192,
        max_nodes_limit: 1 << 20,
        max_range_ms: 7 * 86_400_000,
    };

    #[test]
    fn ranges_are_validated_and_rounded_to_window_seconds() {
        assert_eq!(
            range(&LIMITS, Some(1_000_500), Some(2_000_001)).ok(),
            Some((1000, 2001))
        );
        assert!(range(&LIMITS, None, Some(1)).is_err());
        assert!(range(&LIMITS, Some(5), Some(5)).is_err());
        assert!(range(&LIMITS, Some(-5), Some(5)).is_err());
        assert!(range(&LIMITS, Some(0), Some(8 * 86_400_000)).is_err());
    }
}
