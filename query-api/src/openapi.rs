//! The OpenAPI 3 document of `/api/v1`, served at `/api/v1/openapi.json`
//! (also the input of the schemathesis fuzz pass in the test suite).

use serde_json::{Value, json};

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
    out.extend(["namespace", "pod", "container"].map(label));
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

fn get(summary: &str, params: Vec<Value>, content: Value) -> Value {
    let error = json!({ "description": "Invalid request or limit exceeded", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({ "get": {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": { "description": "OK", "content": content },
            "400": error,
            "401": { "description": "Bearer token missing or wrong (when auth is on)" },
            "422": { "description": "The query would scan more rows than allowed" },
            "503": { "description": "ClickHouse unavailable" },
            "504": { "description": "The query took longer than allowed" }
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
    json!({ "application/json": { "schema": {
        "type": "object",
        "properties": { "targets": { "type": "array", "items": target } },
        "required": ["targets"]
    } } })
}

fn json_object() -> Value {
    json!({ "application/json": { "schema": { "type": "object" } } })
}

pub fn document() -> Value {
    let range = vec![time("from", true), time("to", true)];
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
        json!({ "type": "string", "enum": ["namespace", "pod", "container"] }),
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
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Javelin query API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Profiles stored by Javelin: flamegraphs, top tables, diffs, exports, ingestion health and target status. Every profile query is scoped by service, type and time range."
        },
        "components": {
            "schemas": { "Error": { "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] } },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ {}, { "bearer": [] } ],
        "paths": {
            "/api/v1/services": get("Services with samples in the range", range.clone(), json_object()),
            "/api/v1/profile-types": get("Profile types of a service, with units", service_range, json_object()),
            "/api/v1/labels": get("Values of a label (namespace, pod, container)", labels, json_object()),
            "/api/v1/flamegraph": get("Flamegraph (names + levels) with metadata", flamegraph, json_object()),
            "/api/v1/top": get("Top functions by self or total", top, json_object()),
            "/api/v1/diff": get("Diff of two selections, normalised by their totals", diff, json_object()),
            "/api/v1/export/pprof": get("gzipped pprof profile of the selection", selection("", true), json!({ "application/octet-stream": {} })),
            "/api/v1/export/collapsed": get("Collapsed stacks of the selection", selection("", true), json!({ "text/plain": {} })),
            "/api/v1/health": get("Ingestion health per time bucket and consumer state", health, json_object()),
            "/api/v1/targets": get("Latest status of every target the agents found (profiled or waiting for a slot), with its counters and what its CPU values measure", targets, targets_response())
        }
    })
}
