//! The OpenAPI 3 document of `/api/v1`, served at `/api/v1/openapi.json`
//! (also the input of the schemathesis fuzz pass in the test suite).

use serde_json::{Value, json};

use crate::error::ErrorKind;

fn param(name: &str, description: &str, required: bool, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": required, "description": description, "schema": schema })
}

fn time(name: &str, required: bool) -> Value {
    param(
        name,
        "Milliseconds since the epoch",
        required,
        json!({ "type": "integer", "format": "int64", "minimum": 0 }),
    )
}

/// `from` and `to` of a listing: optional, the last hour by default.
fn listing_range() -> Vec<Value> {
    let schema = json!({ "type": "integer", "format": "int64", "minimum": 0 });
    vec![
        param(
            "from",
            "Milliseconds since the epoch; default: `to` minus one hour",
            false,
            schema.clone(),
        ),
        param(
            "to",
            "Milliseconds since the epoch; default: now (so without `from` and `to` the last hour)",
            false,
            schema,
        ),
    ]
}

/// The optional `x-request-id` request header: echoed when it is 1 to 64
/// characters of `A-Za-z0-9._:-`, else replaced by a new id.
fn request_id_param() -> Value {
    json!({
        "name": "x-request-id", "in": "header", "required": false,
        "description": "An id for this request (1-64 characters of A-Za-z0-9._:-), returned in the x-request-id answer header and error bodies; anything else is replaced by a new id",
        "schema": { "type": "string" }
    })
}

/// The `from` / `to` (ms) a listing read, echoed in its answer.
fn range_properties() -> Value {
    let ms = json!({ "type": "integer", "format": "int64", "description": "The range read, ms since the epoch (as asked, or the default: the last hour)" });
    json!({ "from": ms, "to": ms })
}

/// A listing's answer: `properties` plus the range it read.
fn listing_response(mut properties: Value, required: &[&str]) -> Value {
    if let (Some(p), Value::Object(range)) = (properties.as_object_mut(), range_properties()) {
        p.extend(range);
    }
    let mut required: Vec<&str> = required.to_vec();
    required.extend(["from", "to"]);
    json!({ "application/json": { "schema": {
        "type": "object", "properties": properties, "required": required
    } } })
}

/// service, type, from, to and the label filters.
fn selection(prefix: &str, required: bool) -> Vec<Value> {
    let label = |n: &str| {
        param(
            &format!("{prefix}{n}"),
            &format!("Only samples of this {n}"),
            false,
            json!({ "type": "string" }),
        )
    };
    let mut out = Vec::new();
    if prefix.is_empty() {
        out.push(param(
            "service",
            "Service name",
            true,
            json!({ "type": "string" }),
        ));
        out.push(param(
            "type",
            "Profile type",
            false,
            json!({ "type": "string", "enum": ["cpu", "alloc", "lock", "park"], "default": "cpu" }),
        ));
    }
    out.push(time(&format!("{prefix}from"), required));
    out.push(time(&format!("{prefix}to"), required));
    out.extend(LABELS.map(label));
    out
}

fn max_nodes() -> Value {
    param(
        "max_nodes",
        "Most nodes in the answer; cut mass goes to `other` nodes",
        false,
        json!({ "type": "integer", "minimum": 2, "default": 8192 }),
    )
}

fn get(summary: &str, mut params: Vec<Value>, content: Value) -> Value {
    params.push(request_id_param());
    let header = json!({ "x-request-id": { "$ref": "#/components/headers/RequestId" } });
    let error = |description: &str| {
        json!({
            "description": description,
            "headers": header,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        })
    };
    json!({ "get": {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": { "description": "OK", "headers": header, "content": content },
            "400": error("bad_request: a parameter is missing, malformed or out of its limits; the message says which"),
            "401": error("unauthorized: bearer token missing or wrong (when auth is on)"),
            "422": error("scan_limit: the query would scan more rows than allowed (--max-rows-scanned), or a tag breakdown has more value × time-bucket pairs than allowed (--max-breakdown-pairs); narrow the range or filter"),
            "500": error("internal: a fault of the query API or its configuration; its log has the cause under the request_id"),
            "503": error("unavailable: ClickHouse cannot answer now; retry later"),
            "504": error("timeout: the query took longer than allowed (--query-timeout-seconds); narrow the range or filter")
        }
    }})
}

/// The targets response: one object per target (state, counters, `cpu_basis`).
fn targets_response() -> Value {
    let text = json!({ "type": "string" });
    let count = json!({ "type": "integer", "minimum": 0 });
    let target = json!({
        "type": "object",
        "properties": {
            "service": text, "target_id": count, "cluster": text, "namespace": text, "pod": text,
            "container": text, "node": text, "pid": count,
            "state": { "type": "string", "description": "profiling, orphaned_recovered, external_conflict, unknown_profiler, attach_failed, disabled, exited, over_target_limit (found while --max-targets JVMs are profiled; waiting for a slot)" },
            "recorder": { "type": "string", "description": "jfr, jfr-cpu-time or async-profiler; empty when not recording" },
            "sampling": { "type": "string", "description": "How the running session samples, in words (events, periods, thresholds, window length); empty before a session started or from older agents" },
            "cpu_basis": { "type": "string", "description": "What the target's cpu values measure, from its recorder; empty when unknown" },
            "last_error": text,
            "observed_at": { "type": "integer", "description": "Seconds since the epoch" },
            "agent_version": text,
            "windows_published": count, "spool_dropped_messages": count, "dropped_events": count,
            "dropped_stacks": count, "truncated_windows": count,
            "failed_collects": { "type": "integer", "minimum": 0, "description": "Windows whose recording could not be collected (e.g. dump over --max-dump-bytes); their data is lost" },
            "oversized_messages": { "type": "integer", "minimum": 0, "description": "Stacks that alone exceeded the message limit: frame names cut or folded into [truncated]" }
        },
        "required": ["service", "target_id", "state", "recorder", "cpu_basis", "observed_at", "failed_collects", "oversized_messages"]
    });
    listing_response(
        json!({ "targets": { "type": "array", "items": target } }),
        &["targets"],
    )
}

/// The labels a selection filters by and a breakdown splits by.
const LABELS: [&str; 5] = ["namespace", "pod", "container", "node", "version"];

/// `step` of a time series.
fn step() -> Value {
    param(
        "step",
        "Bucket length in seconds; default: a round step of at least range/240 and at least the longest window in the range; raised (to a round step) to keep at most 1000 points",
        false,
        json!({ "type": "integer", "minimum": 1 }),
    )
}

fn json_object() -> Value {
    json!({ "application/json": { "schema": { "type": "object" } } })
}

pub fn document() -> Value {
    let range = listing_range();
    let mut service_range = vec![param(
        "service",
        "Service name",
        true,
        json!({ "type": "string" }),
    )];
    service_range.extend(range.clone());
    let mut labels = service_range.clone();
    labels.push(param(
        "label",
        "Label to list",
        true,
        json!({ "type": "string", "enum": LABELS }),
    ));
    let mut flamegraph = selection("", true);
    flamegraph.push(max_nodes());
    let mut top = selection("", true);
    top.push(param(
        "sort",
        "Order",
        false,
        json!({ "type": "string", "enum": ["self", "total"], "default": "self" }),
    ));
    top.push(param(
        "limit",
        "Rows",
        false,
        json!({ "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 }),
    ));
    let mut diff = selection("", true);
    diff.extend(selection("right_", false));
    diff.push(max_nodes());
    let mut timeline = selection("", true);
    timeline.push(step());
    let mut tags = selection("", true);
    tags.push(param(
        "label",
        "Label whose values split the total",
        true,
        json!({ "type": "string", "enum": LABELS }),
    ));
    tags.push(param(
        "limit",
        "Values listed; the rest are summed into `other`",
        false,
        json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 10 }),
    ));
    tags.push(step());
    let mut sandwich = selection("", true);
    sandwich.push(param(
        "function",
        "A frame name, exactly as in the top table",
        true,
        json!({ "type": "string", "minLength": 1 }),
    ));
    sandwich.push(param(
        "max_nodes",
        "Most nodes in each of the two trees (callers, callees); cut mass goes to `other` nodes",
        false,
        json!({ "type": "integer", "minimum": 2, "default": 8192 }),
    ));
    let mut ranked = selection("", true);
    ranked.extend(selection("right_", false));
    ranked.push(param(
        "by",
        "Whose share is compared: self (the function is the leaf) or total (it is on the stack)",
        false,
        json!({ "type": "string", "enum": ["self", "total"], "default": "self" }),
    ));
    ranked.push(param(
        "order",
        "growth: largest increase of share first; shrink: largest decrease first; abs: largest change first",
        false,
        json!({ "type": "string", "enum": ["growth", "shrink", "abs"], "default": "growth" }),
    ));
    ranked.push(param(
        "limit",
        "Rows",
        false,
        json!({ "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 }),
    ));
    let mut health = vec![param(
        "service",
        "Service (all when absent)",
        false,
        json!({ "type": "string" }),
    )];
    health.extend(range.clone());
    health.push(param(
        "bucket",
        "Bucket length in seconds",
        false,
        json!({ "type": "integer", "minimum": 10, "default": 60 }),
    ));
    let mut targets = vec![param(
        "service",
        "Service (all when absent)",
        false,
        json!({ "type": "string" }),
    )];
    targets.extend(range.clone());
    let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Javelin query API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Profiles stored by Javelin: flamegraphs, top tables, diffs, exports, ingestion health and target status. Every profile query is scoped by service, type and time range; the listings (services, profile types, labels, health, targets) read the last hour when `from` and `to` are absent and say which range they read. Every answer carries an `x-request-id` header; every error is the `Error` object with the status of its kind (bad_request 400, unauthorized 401, not_found 404, scan_limit 422, internal 500, unavailable 503, timeout 504)."
        },
        "components": {
            "schemas": { "Error": {
                "type": "object",
                "properties": {
                    "error": { "type": "string", "description": "What is wrong and what to do; never the server's internals" },
                    "kind": { "type": "string", "enum": kinds },
                    "request_id": { "type": "string", "description": "Also in the x-request-id header; the server's log names the cause under it" }
                },
                "required": ["error", "kind", "request_id"]
            } },
            "headers": { "RequestId": {
                "description": "The request's id: the caller's x-request-id when sane, else a new one",
                "schema": { "type": "string" }
            } },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ {}, { "bearer": [] } ],
        "paths": {
            "/api/v1/services": get(
                "Services with samples in the range (default: the last hour)",
                range.clone(),
                listing_response(json!({ "services": { "type": "array", "items": { "type": "string" } } }), &["services"])
            ),
            "/api/v1/profile-types": get(
                "Profile types of a service, with units (default range: the last hour)",
                service_range,
                listing_response(json!({ "types": { "type": "array", "items": { "type": "object" } } }), &["types"])
            ),
            "/api/v1/labels": get(
                "Values of a label (namespace, pod, container, node, version: the application's version; default range: the last hour)",
                labels,
                listing_response(json!({ "label": { "type": "string" }, "values": { "type": "array", "items": { "type": "string" } }, "truncated": { "type": "boolean" } }), &["label", "values", "truncated"])
            ),
            "/api/v1/flamegraph": get("Flamegraph (names + levels) with metadata (`metadata.resolution`: hours answered from rollups, seconds read raw)", flamegraph, json_object()),
            "/api/v1/top": get("Top functions by self or total", top, json_object()),
            "/api/v1/diff": get("Diff of two selections, normalised by their totals", diff, json_object()),
            "/api/v1/diff/functions": get("The diff as a table: functions ranked by the change of their share (self or total) between the left (baseline) and right selections", ranked, json_object()),
            "/api/v1/timeline": get("The selection's total per time bucket (dense, zeros included); its total is the flamegraph's", timeline, json_object()),
            "/api/v1/tags": get("The selection's total split by a label's values, per value and time bucket: the largest `limit` values and `other`", tags, json_object()),
            "/api/v1/sandwich": get("One function's callers (inverted tree) and callees, both rooted at the function (cut at its outermost call), with its self and total as in the top table (under recursion the callees root's own self counts only stacks ending at the outermost call)", sandwich, json_object()),
            "/api/v1/export/pprof": get("gzipped pprof profile of the selection", selection("", true), json!({ "application/octet-stream": {} })),
            "/api/v1/export/collapsed": get("Collapsed stacks of the selection", selection("", true), json!({ "text/plain": {} })),
            "/api/v1/health": get("Ingestion health per time bucket and consumer state (default range: the last hour)", health, json_object()),
            "/api/v1/targets": get("Latest status of every target the agents found (profiled or waiting for a slot), with its counters and what its CPU values measure (default range: the last hour)", targets, targets_response())
        }
    })
}
