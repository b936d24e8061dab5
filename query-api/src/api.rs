//! HTTP API under `/api/v1` and the UI at `/`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use javelin_schema::rows::TargetStatusRow;
use javelin_schema::wire::ProfileType;
use serde::Serialize;

use crate::consumers::{self, ConsumerState};
use crate::error::ApiError;
use crate::export::{self, ValueMeaning};
use crate::flamegraph::{CallTree, DiffFlamegraph, Flamegraph};
use crate::params::{self, Limits, Params, Range};
use crate::ranked_diff::{By, Order, RankedRow, ranked};
use crate::store::{HealthBucket, Label, LedgerSummary, Resolution, Selection, StackValue, Store};
use crate::timeline::{Breakdown, Points};
use crate::top::{SortBy, TopRow, top};

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub limits: Limits,
    /// Bearer token required on `/api/v1/*` (none = open).
    pub auth_token: Option<String>,
    /// Consumers' Prometheus endpoints, for lag and retry state on the health page.
    pub consumer_metrics_urls: Vec<String>,
    pub http: reqwest::Client,
}

pub fn router(state: AppState) -> Router {
    let token = Arc::new(state.auth_token.clone());
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/services", get(services))
        .route("/api/v1/profile-types", get(profile_types))
        .route("/api/v1/labels", get(labels))
        .route("/api/v1/flamegraph", get(flamegraph))
        .route("/api/v1/top", get(top_table))
        .route("/api/v1/diff", get(diff))
        .route("/api/v1/diff/functions", get(diff_functions))
        .route("/api/v1/timeline", get(timeline))
        .route("/api/v1/tags", get(tags))
        .route("/api/v1/sandwich", get(sandwich))
        .route("/api/v1/export/pprof", get(export_pprof))
        .route("/api/v1/export/collapsed", get(export_collapsed))
        .route("/api/v1/health", get(health))
        .route("/api/v1/targets", get(targets))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            token,
            crate::auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.limits.request_deadline,
            crate::error::deadline,
        ));
    // The request id layer wraps everything (auth, the fallback): every
    // answer carries the id, every error answer is the JSON error.
    Router::new()
        .route("/", get(ui))
        .merge(api)
        .with_state(Arc::new(state))
        .layer(axum::middleware::from_fn(crate::error::request_id))
}

type Shared = State<Arc<AppState>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

#[derive(Debug, Serialize)]
struct ServicesResponse {
    services: Vec<String>,
    /// The range read (ms): as asked, or the last hour by default.
    #[serde(flatten)]
    range: Range,
}

/// Services with samples in `from`..`to`; both optional (default: the last
/// hour, see [`params::range`]); the answer says which range it read.
async fn services(State(s): Shared, Query(p): Query<Params>) -> ApiResult<ServicesResponse> {
    let range = params::range(&s.limits, &p)?;
    Ok(Json(ServicesResponse {
        services: s.store.services(range.from_s, range.to_s).await?,
        range,
    }))
}

#[derive(Debug, Serialize)]
struct TypeInfo {
    name: &'static str,
    unit: &'static str,
    count_unit: &'static str,
}

#[derive(Debug, Serialize)]
struct TypesResponse {
    types: Vec<TypeInfo>,
    #[serde(flatten)]
    range: Range,
}

/// A service's profile types in `from`..`to` (optional: the last hour).
async fn profile_types(State(s): Shared, Query(p): Query<Params>) -> ApiResult<TypesResponse> {
    let service = params::service(&p)?;
    let range = params::range(&s.limits, &p)?;
    let names = s
        .store
        .profile_types(&service, range.from_s, range.to_s)
        .await?;
    let types = names
        .iter()
        .filter_map(|n| ProfileType::from_name(n))
        .map(|t| TypeInfo {
            name: t.name(),
            unit: t.value_unit(),
            count_unit: t.count_unit(),
        })
        .collect();
    Ok(Json(TypesResponse { types, range }))
}

#[derive(Debug, Serialize)]
struct LabelsResponse {
    label: String,
    values: Vec<String>,
    /// More values exist than the list holds (at most `MAX_LABEL_VALUES`).
    truncated: bool,
    #[serde(flatten)]
    range: Range,
}

/// Label values listed at most.
const MAX_LABEL_VALUES: u32 = 1000;

/// A label's values in `from`..`to` (optional: the last hour).
async fn labels(State(s): Shared, Query(p): Query<Params>) -> ApiResult<LabelsResponse> {
    let service = params::service(&p)?;
    let range = params::range(&s.limits, &p)?;
    let name = params::text(&p, "label").unwrap_or_default();
    let label = Label::parse(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown label {name:?}; use namespace, pod, container, node or version"
        ))
    })?;
    // One more than shown: says whether the list was cut.
    let mut values = s
        .store
        .label_values(
            &service,
            label,
            range.from_s,
            range.to_s,
            MAX_LABEL_VALUES + 1,
        )
        .await?;
    let truncated = values.len() > MAX_LABEL_VALUES as usize;
    values.truncate(MAX_LABEL_VALUES as usize);
    Ok(Json(LabelsResponse {
        label: name.to_string(),
        values,
        truncated,
        range,
    }))
}

/// What the answer is based on, for the UI's evidence line.
#[derive(Debug, Serialize)]
struct Metadata {
    service: String,
    profile_type: String,
    unit: &'static str,
    from: i64,
    to: i64,
    namespace: String,
    pod: String,
    container: String,
    node: String,
    version: String,
    /// Rows read: raw sample rows, plus rollup rows for hours answered from rollups.
    scanned_rows: u64,
    /// Distinct stacks in the answer (not counted by time series).
    #[serde(skip_serializing_if = "Option::is_none")]
    stacks: Option<usize>,
    /// Which resolution answered: hours from rollups, the rest raw windows.
    resolution: Resolution,
    /// From the ingestion ledger: window parts in the range, and the evidence of loss.
    #[serde(flatten)]
    ledger: LedgerSummary,
}

/// The stacks of a selection and the metadata describing them.
async fn load(
    store: &Store,
    sel: &Selection,
    from: i64,
    to: i64,
) -> Result<(Vec<StackValue>, Metadata), ApiError> {
    let ((stacks, resolution), ledger) =
        tokio::try_join!(store.stacks(sel), store.ledger_summary(sel))?;
    let scanned_rows = stacks.iter().map(|s| s.rows).sum();
    let mut metadata = Metadata::of(sel, from, to, scanned_rows, ledger);
    metadata.stacks = Some(stacks.len());
    metadata.resolution = resolution;
    Ok((stacks, metadata))
}

impl Metadata {
    fn of(
        sel: &Selection,
        from: i64,
        to: i64,
        scanned_rows: u64,
        ledger: LedgerSummary,
    ) -> Metadata {
        let kind = ProfileType::from_name(&sel.profile_type).unwrap_or(ProfileType::Unspecified);
        Metadata {
            service: sel.service.clone(),
            profile_type: sel.profile_type.clone(),
            unit: kind.value_unit(),
            from,
            to,
            namespace: sel.namespace.clone(),
            pod: sel.pod.clone(),
            container: sel.container.clone(),
            node: sel.node.clone(),
            version: sel.version.clone(),
            scanned_rows,
            stacks: None,
            resolution: Resolution::raw(sel),
            ledger,
        }
    }
}

#[derive(Debug, Serialize)]
struct FlamegraphResponse {
    #[serde(flatten)]
    flamegraph: Flamegraph,
    unit: &'static str,
    max_nodes: usize,
    metadata: Metadata,
}

async fn flamegraph(State(s): Shared, Query(p): Query<Params>) -> ApiResult<FlamegraphResponse> {
    let (sel, from, to) = params::selection(&s.limits, &p, "")?;
    let max_nodes = params::max_nodes(&s.limits, &p)?;
    let (stacks, metadata) = load(&s.store, &sel, from, to).await?;
    let mut tree = CallTree::new();
    for stack in &stacks {
        tree.add(&stack.frames, stack.value);
    }
    Ok(Json(FlamegraphResponse {
        flamegraph: tree.to_flamegraph(max_nodes),
        unit: metadata.unit,
        max_nodes,
        metadata,
    }))
}

#[derive(Debug, Serialize)]
struct TopResponse {
    rows: Vec<TopRow>,
    /// Functions in the selection (before `limit`).
    functions: usize,
    total: i64,
    unit: &'static str,
    metadata: Metadata,
}

async fn top_table(State(s): Shared, Query(p): Query<Params>) -> ApiResult<TopResponse> {
    let (sel, from, to) = params::selection(&s.limits, &p, "")?;
    let sort = match params::text(&p, "sort").unwrap_or("self") {
        "self" => SortBy::SelfValue,
        "total" => SortBy::Total,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown sort {other:?}; use self or total"
            )));
        }
    };
    let limit = params::int(&p, "limit")?.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be in 1..=10000"));
    }
    let (stacks, metadata) = load(&s.store, &sel, from, to).await?;
    let (rows, functions) = top(&stacks, sort, limit as usize);
    Ok(Json(TopResponse {
        rows,
        functions,
        total: stacks.iter().map(|s| s.value).sum(),
        unit: metadata.unit,
        metadata,
    }))
}

#[derive(Debug, Serialize)]
struct DiffResponse {
    #[serde(flatten)]
    diff: DiffFlamegraph,
    unit: &'static str,
    max_nodes: usize,
    left: Metadata,
    right: Metadata,
}

async fn diff(State(s): Shared, Query(p): Query<Params>) -> ApiResult<DiffResponse> {
    let (left_sel, lf, lt) = params::selection(&s.limits, &p, "")?;
    let (right_sel, rf, rt) = params::selection(&s.limits, &p, "right_")?;
    let max_nodes = params::max_nodes(&s.limits, &p)?;
    let (left, right) = tokio::try_join!(
        load(&s.store, &left_sel, lf, lt),
        load(&s.store, &right_sel, rf, rt)
    )?;
    let mut tree = CallTree::new();
    for stack in &left.0 {
        tree.add(&stack.frames, stack.value);
    }
    for stack in &right.0 {
        tree.add_right(&stack.frames, stack.value);
    }
    Ok(Json(DiffResponse {
        diff: tree.to_diff(max_nodes),
        unit: left.1.unit,
        max_nodes,
        left: left.1,
        right: right.1,
    }))
}

/// `step` in seconds (optional; ≥ 1).
fn step_param(p: &Params) -> Result<Option<u32>, ApiError> {
    match params::int(p, "step")? {
        None => Ok(None),
        Some(s) if s >= 1 => Ok(Some(u32::try_from(s).unwrap_or(u32::MAX))),
        Some(_) => Err(ApiError::bad_request("step must be at least 1 second")),
    }
}

/// The step of a time series over the selection: asked, or chosen from the
/// range and the longest window in it (see [`crate::timeline::step`]).
async fn series_step(store: &Store, sel: &Selection, p: &Params) -> Result<u32, ApiError> {
    let asked = step_param(p)?;
    let longest = match asked {
        Some(_) => 0,
        None => store.longest_window_ms(sel).await?,
    };
    Ok(crate::timeline::step(sel.from_s, sel.to_s, asked, longest))
}

#[derive(Debug, Serialize)]
struct TimelineResponse {
    step_seconds: u32,
    /// `[bucket start (s), value]`, dense from the first bucket to `to`.
    points: Points,
    total: i64,
    unit: &'static str,
    metadata: Metadata,
}

/// The selection's total per time bucket (the flamegraph's total, spread over time).
async fn timeline(State(s): Shared, Query(p): Query<Params>) -> ApiResult<TimelineResponse> {
    let (sel, from, to) = params::selection(&s.limits, &p, "")?;
    let step = series_step(&s.store, &sel, &p).await?;
    let ((buckets, resolution), ledger) =
        tokio::try_join!(s.store.timeline(&sel, step), s.store.ledger_summary(&sel))?;
    let mut metadata = Metadata::of(&sel, from, to, buckets.iter().map(|b| b.rows).sum(), ledger);
    metadata.resolution = resolution;
    Ok(Json(TimelineResponse {
        step_seconds: step,
        points: crate::timeline::timeline(sel.from_s, sel.to_s, step, &buckets),
        total: buckets.iter().map(|b| b.value).sum(),
        unit: metadata.unit,
        metadata,
    }))
}

#[derive(Debug, Serialize)]
struct TagsResponse {
    label: &'static str,
    step_seconds: u32,
    #[serde(flatten)]
    breakdown: Breakdown,
    unit: &'static str,
    metadata: Metadata,
}

/// The selection's total broken down by a label's values, over time.
async fn tags(State(s): Shared, Query(p): Query<Params>) -> ApiResult<TagsResponse> {
    let (sel, from, to) = params::selection(&s.limits, &p, "")?;
    let name = params::text(&p, "label").unwrap_or_default();
    let label = Label::parse(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown label {name:?}; use namespace, pod, container, node or version"
        ))
    })?;
    let limit = params::int(&p, "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be in 1..=100"));
    }
    let step = series_step(&s.store, &sel, &p).await?;
    let max = s.limits.max_breakdown_pairs;
    let ((rows, resolution), ledger) = tokio::try_join!(
        s.store.tag_series(&sel, label, step, max),
        s.store.ledger_summary(&sel)
    )?;
    let rows = rows.ok_or_else(|| ApiError {
        kind: crate::error::ErrorKind::ScanLimit,
        message: format!(
            "{} has too many values in this range to break down (more than {max} value × time-bucket pairs, --max-breakdown-pairs): narrow the time range, use a longer step or filter first",
            label.name()
        ),
        cause: None,
    })?;
    let mut metadata = Metadata::of(&sel, from, to, rows.iter().map(|r| r.rows).sum(), ledger);
    metadata.resolution = resolution;
    Ok(Json(TagsResponse {
        label: label.name(),
        step_seconds: step,
        breakdown: crate::timeline::breakdown(sel.from_s, sel.to_s, step, &rows, limit as usize),
        unit: metadata.unit,
        metadata,
    }))
}

#[derive(Debug, Serialize)]
struct SandwichResponse {
    function: String,
    #[serde(rename = "self")]
    self_value: i64,
    total: i64,
    callers: Flamegraph,
    callees: Flamegraph,
    unit: &'static str,
    max_nodes: usize,
    metadata: Metadata,
}

/// One function's callers (inverted) and callees.
async fn sandwich(State(s): Shared, Query(p): Query<Params>) -> ApiResult<SandwichResponse> {
    let (sel, from, to) = params::selection(&s.limits, &p, "")?;
    let function = params::text(&p, "function")
        .ok_or_else(|| {
            ApiError::bad_request("`function` (a frame name, as in the top table) is required")
        })?
        .to_string();
    let max_nodes = params::max_nodes(&s.limits, &p)?;
    let (stacks, metadata) = load(&s.store, &sel, from, to).await?;
    let view = crate::sandwich::sandwich(&stacks, &function);
    Ok(Json(SandwichResponse {
        function,
        self_value: view.self_value,
        total: view.total,
        callers: view.callers.to_flamegraph(max_nodes),
        callees: view.callees.to_flamegraph(max_nodes),
        unit: metadata.unit,
        max_nodes,
        metadata,
    }))
}

#[derive(Debug, Serialize)]
struct RankedDiffResponse {
    rows: Vec<RankedRow>,
    /// Functions on either side (before `limit`).
    functions: usize,
    by: By,
    order: Order,
    left_total: i64,
    right_total: i64,
    unit: &'static str,
    left: Metadata,
    right: Metadata,
}

/// The diff as a table, functions ranked by the change of their share.
async fn diff_functions(
    State(s): Shared,
    Query(p): Query<Params>,
) -> ApiResult<RankedDiffResponse> {
    let (left_sel, lf, lt) = params::selection(&s.limits, &p, "")?;
    let (right_sel, rf, rt) = params::selection(&s.limits, &p, "right_")?;
    let by = match params::text(&p, "by").unwrap_or("self") {
        "self" => By::SelfValue,
        "total" => By::Total,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown by {other:?}; use self or total"
            )));
        }
    };
    let order = match params::text(&p, "order").unwrap_or("growth") {
        "growth" => Order::Growth,
        "shrink" => Order::Shrink,
        "abs" => Order::Abs,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown order {other:?}; use growth, shrink or abs"
            )));
        }
    };
    let limit = params::int(&p, "limit")?.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be in 1..=10000"));
    }
    let (left, right) = tokio::try_join!(
        load(&s.store, &left_sel, lf, lt),
        load(&s.store, &right_sel, rf, rt)
    )?;
    let (rows, functions) = ranked(&left.0, &right.0, by, order, limit as usize);
    Ok(Json(RankedDiffResponse {
        rows,
        functions,
        by,
        order,
        left_total: left.0.iter().map(|s| s.value).sum(),
        right_total: right.0.iter().map(|s| s.value).sum(),
        unit: left.1.unit,
        left: left.1,
        right: right.1,
    }))
}

async fn export_pprof(
    State(s): Shared,
    Query(p): Query<Params>,
) -> Result<impl IntoResponse, ApiError> {
    let (sel, from, to) = params::selection(&s.limits, &p, "")?;
    let (stacks, metadata) = load(&s.store, &sel, from, to).await?;
    let body = export::pprof_gzip(
        &stacks,
        ValueMeaning {
            kind: &sel.profile_type,
            unit: metadata.unit,
            from_ms: from,
            to_ms: to,
        },
    )
    .map_err(|e| ApiError::internal(format!("encoding the profile: {e}")))?;
    let file = format!(
        "attachment; filename=\"{}-{}-{from}.pb.gz\"",
        sanitize(&sel.service),
        sel.profile_type
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, file),
        ],
        body,
    ))
}

async fn export_collapsed(
    State(s): Shared,
    Query(p): Query<Params>,
) -> Result<impl IntoResponse, ApiError> {
    let (sel, from, to) = params::selection(&s.limits, &p, "")?;
    let (stacks, _) = load(&s.store, &sel, from, to).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        export::collapsed(&stacks),
    ))
}

/// A service name as a file name part.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct HealthResponse {
    service: String,
    bucket_seconds: u32,
    buckets: Vec<HealthBucket>,
    totals: HealthBucket,
    consumers: Vec<ConsumerState>,
    #[serde(flatten)]
    range: Range,
}

/// Health buckets returned at most (bucket length is raised to fit).
const MAX_HEALTH_BUCKETS: i64 = 2000;

/// Ingestion health in `from`..`to` (optional: the last hour).
async fn health(State(s): Shared, Query(p): Query<Params>) -> ApiResult<HealthResponse> {
    let service = params::text(&p, "service").unwrap_or_default().to_string();
    let range = params::range(&s.limits, &p)?;
    let (from_s, to_s) = (range.from_s, range.to_s);
    let asked = params::int(&p, "bucket")?.unwrap_or(60);
    if asked < 10 {
        return Err(ApiError::bad_request("bucket must be at least 10 seconds"));
    }
    let span = i64::from(to_s - from_s);
    let bucket = asked
        .max((span + MAX_HEALTH_BUCKETS - 1) / MAX_HEALTH_BUCKETS)
        .min(i64::from(u32::MAX));
    let bucket = u32::try_from(bucket).unwrap_or(u32::MAX);
    let (buckets, consumers) = tokio::join!(
        s.store.health(&service, from_s, to_s, bucket),
        consumers::scrape(&s.http, &s.consumer_metrics_urls)
    );
    let buckets = buckets?;
    let totals = buckets.iter().fold(
        HealthBucket {
            time: from_s,
            windows: 0,
            accepted_parts: 0,
            truncated_parts: 0,
            rejected_parts: 0,
            dropped_events: 0,
            dropped_stacks: 0,
            max_ingest_latency_ms: 0,
        },
        |mut t, b| {
            t.windows += b.windows;
            t.accepted_parts += b.accepted_parts;
            t.truncated_parts += b.truncated_parts;
            t.rejected_parts += b.rejected_parts;
            t.dropped_events += b.dropped_events;
            t.dropped_stacks += b.dropped_stacks;
            t.max_ingest_latency_ms = t.max_ingest_latency_ms.max(b.max_ingest_latency_ms);
            t
        },
    );
    Ok(Json(HealthResponse {
        service,
        bucket_seconds: bucket,
        buckets,
        totals,
        consumers,
        range,
    }))
}

#[derive(Debug, Serialize)]
struct TargetsResponse {
    targets: Vec<TargetView>,
    #[serde(flatten)]
    range: Range,
}

/// A target's status row and what its CPU values measure.
#[derive(Debug, Serialize)]
struct TargetView {
    #[serde(flatten)]
    row: TargetStatusRow,
    cpu_basis: &'static str,
}

/// What a target's CPU samples measure, from the recorder it reported: only
/// async-profiler and JFR's CPU-time sampler (JEP 509) see every running
/// thread; JFR's execution sampler takes at most 5 per period (HotSpot's
/// `MAX_NR_OF_JAVA_SAMPLES`). Empty when unknown (no recorder, e.g. a JVM
/// waiting for a slot).
pub fn cpu_basis(recorder: &str) -> &'static str {
    match recorder {
        "async-profiler" => "cpu time (async-profiler)",
        "jfr-cpu-time" => "cpu time (JFR CPU-time sampler, JEP 509)",
        "jfr" => {
            "sampled execution time: at most 5 running Java threads per period (JFR ExecutionSample)"
        }
        _ => "",
    }
}

/// Targets seen in `from`..`to` (optional: the last hour).
async fn targets(State(s): Shared, Query(p): Query<Params>) -> ApiResult<TargetsResponse> {
    let service = params::text(&p, "service").unwrap_or_default();
    let range = params::range(&s.limits, &p)?;
    let rows = s.store.targets(service, range.from_s, range.to_s).await?;
    Ok(Json(TargetsResponse {
        range,
        targets: rows
            .into_iter()
            .map(|row| TargetView {
                cpu_basis: cpu_basis(&row.recorder),
                row,
            })
            .collect(),
    }))
}

async fn ui() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("../ui/index.html")),
    )
}
