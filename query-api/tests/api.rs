//! The query API against the real ClickHouse with known seeded windows: exact
//! totals, self / total, `other`-node arithmetic, filters, diff, exports,
//! health, targets, limits, errors and auth.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::rows::{LedgerRow, SampleRow, StackRow, TargetStatusRow, table};
use javelin_schema::stack_id_of_names;
use javelin_schema::testkit::{Reaped, clickhouse_client, clickhouse_url, unique_name};
use serde_json::Value;

/// One seeded window of one pod: (frames, value) per stack.
struct Seed {
    pod: &'static str,
    stacks: Vec<(Vec<&'static str>, i64)>,
    truncated: bool,
    dropped_events: u64,
}

fn seeds() -> Vec<Seed> {
    vec![
        Seed {
            pod: "pod-a",
            stacks: vec![
                (vec!["main", "a", "leaf"], 100),
                (vec!["main", "b"], 50),
                (vec!["main", "rec", "rec", "rec"], 30),
            ],
            truncated: true,
            dropped_events: 7,
        },
        Seed {
            pod: "pod-b",
            stacks: vec![(vec!["main", "a", "leaf"], 10), (vec!["main", "c"], 40)],
            truncated: false,
            dropped_events: 0,
        },
    ]
}

fn now_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

async fn seed(db: &clickhouse::Client, window_start: u32) {
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut stacks = db.insert::<StackRow>(table::STACKS).await.expect("insert");
    let mut ledger = db
        .insert::<LedgerRow>(table::INGEST_LEDGER)
        .await
        .expect("insert");
    for (t, s) in seeds().iter().enumerate() {
        for (frames, value) in &s.stacks {
            let names: Vec<String> = frames.iter().map(|f| f.to_string()).collect();
            let id = stack_id_of_names(&names);
            let row = SampleRow {
                service: "svc".into(),
                profile_type: "cpu".into(),
                window_start,
                cluster: "c".into(),
                namespace: "ns".into(),
                pod: s.pod.into(),
                container: "app".into(),
                node: "n".into(),
                target_id: t as u64 + 1,
                stack_id: id,
                value: *value,
                count: 1,
            };
            samples.write(&row).await.expect("sample");
            stacks
                .write(&StackRow {
                    service: "svc".into(),
                    stack_id: id,
                    frames: names,
                    lines: vec![],
                    frame_types: vec![],
                    last_seen: window_start,
                })
                .await
                .expect("stack");
        }
        ledger
            .write(&LedgerRow {
                window_id: t as u64 + 100,
                service: "svc".into(),
                profile_type: "cpu".into(),
                window_start,
                window_start_ms: i64::from(window_start) * 1000,
                window_end_ms: i64::from(window_start) * 1000 + 10_000,
                target_id: t as u64 + 1,
                pod: s.pod.into(),
                part_index: 0,
                part_count: 1,
                raw_events: 100,
                parsed_events: 100,
                stacks: s.stacks.len() as u64,
                dropped_events: s.dropped_events,
                dropped_stacks: u64::from(s.truncated),
                truncated: u8::from(s.truncated),
                jfr_bytes: 0,
                parse_micros: 0,
                topic: "t".into(),
                partition: 0,
                offset: t as i64,
                status: if s.truncated { "truncated" } else { "accepted" }.into(),
                reason: String::new(),
                ingested_at: window_start + 12,
                ingest_latency_ms: 2000,
            })
            .await
            .expect("ledger");
    }
    samples.end().await.expect("samples");
    stacks.end().await.expect("stacks");
    ledger.end().await.expect("ledger");
    let mut status = db
        .insert::<TargetStatusRow>(table::TARGET_STATUS)
        .await
        .expect("insert");
    for (t, (pod, state, error)) in [
        ("pod-a", "profiling", ""),
        (
            "pod-b",
            "external_conflict",
            "libasyncProfiler.so loaded from /opt/other",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        status
            .write(&TargetStatusRow {
                service: "svc".into(),
                target_id: t as u64 + 1,
                cluster: "c".into(),
                namespace: "ns".into(),
                pod: pod.into(),
                container: "app".into(),
                node: "n".into(),
                pid: 100 + t as u32,
                state: state.into(),
                recorder: "jfr".into(),
                last_error: error.into(),
                observed_at: window_start + 5,
                agent_version: "test".into(),
                windows_published: 1,
                spool_dropped_messages: 0,
                dropped_events: 0,
                dropped_stacks: 0,
                truncated_windows: 0,
            })
            .await
            .expect("status");
    }
    status.end().await.expect("status");
}

/// The query API on a free port, serving `database`.
fn start_api(database: &str, extra: &[&str]) -> (Reaped, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_javelin-query"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--clickhouse-url",
            &clickhouse_url(),
        ])
        .args(["--database", database])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("javelin-query starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("url")
        .trim_end_matches('/')
        .to_string();
    (Reaped(child), url)
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Flamegraph levels → (depth, name, total, self) tuples.
fn nodes(fg: &Value) -> Vec<(usize, String, i64, i64)> {
    let names: Vec<String> = serde_json::from_value(fg["names"].clone()).expect("names");
    let levels: Vec<Vec<i64>> = serde_json::from_value(fg["levels"].clone()).expect("levels");
    let mut out = vec![];
    for (d, level) in levels.iter().enumerate() {
        for t in level.chunks(4) {
            out.push((d, names[t[3] as usize].clone(), t[1], t[2]));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_exactly_from_seeded_windows() {
    let database = unique_name("query_api");
    let server = clickhouse_client();
    migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("migrate");
    let db = server.clone().with_database(&database);
    let start = now_s() / 10 * 10 - 1800;
    seed(&db, start).await;
    let (_api, base) = start_api(&database, &[]);
    let from = i64::from(start - 60) * 1000;
    let to = i64::from(start + 60) * 1000;
    let q = |path: &str, extra: &str| {
        format!("{base}/api/v1/{path}?service=svc&type=cpu&from={from}&to={to}{extra}")
    };

    // Services, types, labels.
    let (_, v) = get(&format!("{base}/api/v1/services?from={from}&to={to}")).await;
    assert_eq!(v["services"], serde_json::json!(["svc"]));
    let (_, v) = get(&q("profile-types", "")).await;
    assert_eq!(v["types"][0]["name"], "cpu");
    assert_eq!(v["types"][0]["unit"], "nanoseconds");
    let (_, v) = get(&q("labels", "&label=pod")).await;
    assert_eq!(v["values"], serde_json::json!(["pod-a", "pod-b"]));

    // Flamegraph: exact totals, filters, metadata from the ledger.
    let (status, fg) = get(&q("flamegraph", "")).await;
    assert_eq!(status, 200, "{fg}");
    assert_eq!(fg["total"], 230);
    let all = nodes(&fg);
    let node = |name: &str, depth: usize| {
        all.iter()
            .find(|n| n.1 == name && n.0 == depth)
            .cloned()
            .unwrap_or_else(|| panic!("{name} at {depth}"))
    };
    assert_eq!(node("main", 1).2, 230);
    assert_eq!(node("a", 2).2, 110);
    assert_eq!(node("leaf", 3).3, 110, "self of leaf");
    assert_eq!(node("rec", 4).3, 30);
    assert_eq!(fg["metadata"]["scanned_rows"], 5);
    assert_eq!(fg["metadata"]["window_parts"], 2);
    assert_eq!(fg["metadata"]["truncated_parts"], 1);
    assert_eq!(fg["metadata"]["dropped_events"], 7);
    let (_, only_b) = get(&q("flamegraph", "&pod=pod-b")).await;
    assert_eq!(only_b["total"], 50);
    assert_eq!(only_b["metadata"]["truncated_parts"], 0);
    let (_, none) = get(&q("flamegraph", "&namespace=elsewhere")).await;
    assert_eq!(none["total"], 0);

    // `other` arithmetic: every level still sums to the total it covers.
    let (_, cut) = get(&q("flamegraph", "&max_nodes=4")).await;
    let cut_nodes = nodes(&cut);
    assert!(cut_nodes.len() <= 4, "{cut_nodes:?}");
    assert_eq!(cut["total"], 230);
    let level2: i64 = cut_nodes.iter().filter(|n| n.0 == 2).map(|n| n.2).sum();
    assert_eq!(level2, 230, "{cut_nodes:?}");
    assert!(cut_nodes.iter().any(|n| n.1 == "other"));
    assert!(cut["omitted_nodes"].as_u64().unwrap_or(0) > 0);

    // Top table: self and total, recursion counted once.
    let (_, top) = get(&q("top", "&sort=total&limit=3")).await;
    assert_eq!(top["functions"], 6);
    assert_eq!(top["total"], 230);
    assert_eq!(top["rows"][0]["name"], "main");
    assert_eq!(top["rows"][0]["total"], 230);
    assert_eq!(top["rows"][0]["self"], 0);
    assert_eq!(top["rows"].as_array().map(Vec::len), Some(3));
    let (_, by_self) = get(&q("top", "&sort=self")).await;
    assert_eq!(by_self["rows"][0]["name"], "leaf");
    assert_eq!(by_self["rows"][0]["self"], 110);
    let rec = by_self["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "rec"))
        .cloned()
        .expect("rec");
    assert_eq!(
        (rec["self"].as_i64(), rec["total"].as_i64()),
        (Some(30), Some(30))
    );

    // Diff of two pods, normalised by each side's total.
    let (status, diff) = get(&q("diff", "&pod=pod-a&right_pod=pod-b")).await;
    assert_eq!(status, 200, "{diff}");
    assert_eq!(
        (diff["left_total"].as_i64(), diff["right_total"].as_i64()),
        (Some(180), Some(50))
    );
    let names: Vec<String> = serde_json::from_value(diff["names"].clone()).expect("names");
    let levels: Vec<Vec<f64>> = serde_json::from_value(diff["levels"].clone()).expect("levels");
    let c = levels[2]
        .chunks(7)
        .find(|t| names[t[2] as usize] == "c")
        .expect("c in the diff");
    assert_eq!(&c[3..], &[0.0, 0.0, 40.0, 40.0]);
    assert!(
        (c[1] - 40.0 / 50.0).abs() < 1e-9,
        "c: 0 % left + 80 % right"
    );

    // Collapsed export.
    let text = reqwest::get(q("export/collapsed", "&pod=pod-a"))
        .await
        .expect("collapsed")
        .text()
        .await
        .expect("text");
    assert_eq!(text, "main;a;leaf 100\nmain;b 50\nmain;rec;rec;rec 30\n");

    // Health and targets.
    let (_, health) = get(&format!(
        "{base}/api/v1/health?service=svc&from={from}&to={to}&bucket=60"
    ))
    .await;
    assert_eq!(health["totals"]["windows"], 2);
    assert_eq!(health["totals"]["truncated_parts"], 1);
    assert_eq!(health["totals"]["accepted_parts"], 1);
    assert_eq!(health["totals"]["dropped_events"], 7);
    let (_, targets) = get(&format!(
        "{base}/api/v1/targets?service=svc&from={from}&to={to}"
    ))
    .await;
    assert_eq!(targets["targets"][1]["state"], "external_conflict");
    assert!(
        targets["targets"][1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/opt/other"))
    );

    // Errors are JSON with a clear message; nothing reaches SQL unbound.
    for (url, needle) in [
        (
            format!("{base}/api/v1/flamegraph?type=cpu&from={from}&to={to}"),
            "`service` is required",
        ),
        (
            q("flamegraph", "&type=bogus").replace("type=cpu&", ""),
            "unknown profile type",
        ),
        (
            format!(
                "{base}/api/v1/flamegraph?service=svc&from={from}&to={}",
                from + 30 * 86_400_000
            ),
            "exceeds the limit",
        ),
        (q("flamegraph", "&max_nodes=1"), "max_nodes"),
        (q("labels", "&label=secret"), "unknown label"),
        (q("top", "&sort=sideways"), "unknown sort"),
        (
            format!("{base}/api/v1/services?from=abc&to=1"),
            "must be an integer",
        ),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{url}: {body}"
        );
    }
    let (status, body) = get(&q("flamegraph", "&pod=x' OR 1=1 --")).await;
    assert_eq!(
        (status, body["total"].as_i64()),
        (200, Some(0)),
        "quotes are values, not SQL"
    );
    let (status, _) = get(&format!("{base}/api/v1/nope")).await;
    assert_eq!(status, 404);
    let (status, doc) = get(&format!("{base}/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/flamegraph"].is_object());

    server
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("drop");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_and_auth_are_enforced() {
    let database = unique_name("query_limits");
    let server = clickhouse_client();
    migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("migrate");
    let db = server.clone().with_database(&database);
    let start = now_s() / 10 * 10 - 1800;
    seed(&db, start).await;
    let token = "a-long-enough-test-token";
    let (_api, base) = start_api(
        &database,
        &["--auth-token", token, "--max-rows-scanned", "2"],
    );
    let from = i64::from(start - 60) * 1000;
    let to = i64::from(start + 60) * 1000;
    let url = format!("{base}/api/v1/flamegraph?service=svc&from={from}&to={to}");
    let client = reqwest::Client::new();
    let anonymous = client.get(&url).send().await.expect("request");
    assert_eq!(anonymous.status().as_u16(), 401);
    let wrong = client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    // Authorised, but the selection reads more rows than allowed: a clear 422.
    let limited = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(limited.status().as_u16(), 422);
    let body: Value = limited.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("max-rows-scanned")),
        "{body}"
    );
    let open = client
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(open.status().as_u16(), 200, "the document is public");
    server
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("drop");
}
