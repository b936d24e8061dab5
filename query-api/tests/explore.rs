//! The exploration endpoints (timeline, tag breakdown, node filter, sandwich,
//! ranked diff) against the real ClickHouse, with exact numbers on seeded
//! windows that are not conveniently aligned: starts at +3 s 17 ms, a gap of
//! two windows, a burst, a redelivered copy (counted once), a copy no
//! writer recorded (never counted) and a refused part claiming a two-day window.
//!
//! The data (service `svc`, type cpu, 10-s windows k = 0..11 at
//! `base + 10k + 3` s, k = 5 and 6 missing, three pods):
//!
//! | stack | frames (root first) | value per pod and window |
//! |---|---|---|
//! | score | Thread.run; Http.handle; Index.score | 100, 1000 at k = 2 (burst) |
//! | log | …; Index.score; Math.log | 20 |
//! | recompute | …; Http.handle; Report.recompute | p1 only: 5 (k < 5), 60 (k ≥ 7) |
//! | walk | Thread.run; Tree.walk; Tree.walk; Math.log | p3 only: 7 |
//!
//! Pods p1, p2 run on node n1, p3 on n2; p1 runs version 1.5.0, p2 and p3 1.4.2. Per bucket of 10 s: 372 for k in
//! {0, 1, 3, 4}, 3072 at k = 2, 0 at 5 and 6, 427 for k = 7..11; total 6695;
//! per pod p1 2425, p2 2100, p3 2170.

mod common;

use common::{drop_database, get, nodes, now_s, record_stored, start_api};
use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::rows::{LedgerRow, SampleRow, StackRow, table};
use javelin_schema::stack_id_of_names;
use javelin_schema::testkit::{Reaped, clickhouse_client, unique_name};
use serde_json::Value;

const RUN: &str = "java.lang.Thread.run";
const HANDLE: &str = "com.shop.Http.handle";
const SCORE: &str = "com.shop.search.Index.score";
const LOG: &str = "com.shop.util.Math.log";
const RECOMPUTE: &str = "com.shop.report.Report.recompute";
const WALK: &str = "com.shop.Tree.walk";

const PODS: [(&str, &str); 3] = [("p1", "n1"), ("p2", "n1"), ("p3", "n2")];
const WINDOWS: [u32; 10] = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11];

/// The counted stacks of pod `pod` (index into [`PODS`]) in window `k`.
fn stacks_of(pod: usize, k: u32) -> Vec<(Vec<&'static str>, i64)> {
    let mut out = vec![
        (vec![RUN, HANDLE, SCORE], if k == 2 { 1000 } else { 100 }),
        (vec![RUN, HANDLE, SCORE, LOG], 20),
    ];
    if pod == 0 {
        out.push((vec![RUN, HANDLE, RECOMPUTE], if k < 5 { 5 } else { 60 }));
    }
    if pod == 2 {
        out.push((vec![RUN, WALK, WALK, LOG], 7));
    }
    out
}

fn window_start(base: u32, k: u32) -> u32 {
    base + 10 * k + 3
}

fn window_id(pod: usize, base: u32, k: u32) -> u64 {
    javelin_schema::wire::window_id(
        pod as u64 + 1,
        javelin_schema::wire::ProfileType::Cpu,
        i64::from(window_start(base, k)) * 1000 + 17,
        0,
    )
}

fn sample(pod: usize, base: u32, k: u32, frames: &[&str], value: i64, insert_id: u64) -> SampleRow {
    let names: Vec<String> = frames.iter().map(|f| f.to_string()).collect();
    SampleRow {
        service: "svc".into(),
        profile_type: "cpu".into(),
        window_start: window_start(base, k),
        cluster: "c".into(),
        namespace: "shop".into(),
        pod: PODS[pod].0.into(),
        container: "app".into(),
        node: PODS[pod].1.into(),
        target_id: pod as u64 + 1,
        window_id: window_id(pod, base, k),
        stack_id: stack_id_of_names(&names),
        value,
        count: 1,
        insert_id,
        app_version: if pod == 0 { "1.5.0" } else { "1.4.2" }.into(),
    }
}

/// Writes the data above, plus p2's window 3 a second time (a redelivery,
/// recorded: counted once) and p2's window 4 a second time without a record
/// (never counted). Returns the base second (10-min aligned, an hour ago).
async fn seed(db: &clickhouse::Client) -> u32 {
    let base = now_s() / 600 * 600 - 3600;
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut stacks = db.insert::<StackRow>(table::STACKS).await.expect("insert");
    let mut ledger = db
        .insert::<LedgerRow>(table::INGEST_LEDGER)
        .await
        .expect("insert");
    let mut frames_written = std::collections::HashSet::new();
    for (pod, (pod_name, _)) in PODS.iter().enumerate() {
        for &k in &WINDOWS {
            for (frames, value) in stacks_of(pod, k) {
                samples
                    .write(&sample(pod, base, k, &frames, value, 1))
                    .await
                    .expect("sample");
                if pod == 1 && k == 3 {
                    samples
                        .write(&sample(pod, base, k, &frames, value, 2))
                        .await
                        .expect("redelivered sample");
                }
                if pod == 1 && k == 4 {
                    samples
                        .write(&sample(pod, base, k, &frames, value * 1000, 3))
                        .await
                        .expect("unrecorded sample");
                }
                let names: Vec<String> = frames.iter().map(|f| f.to_string()).collect();
                let id = stack_id_of_names(&names);
                if frames_written.insert(id) {
                    stacks
                        .write(&StackRow {
                            service: "svc".into(),
                            stack_id: id,
                            frames: names,
                            lines: vec![],
                            frame_types: vec![],
                            last_seen: base,
                        })
                        .await
                        .expect("stack");
                }
            }
            let start_ms = i64::from(window_start(base, k)) * 1000 + 17;
            ledger
                .write(&LedgerRow {
                    window_id: window_id(pod, base, k),
                    service: "svc".into(),
                    profile_type: "cpu".into(),
                    window_start: window_start(base, k),
                    window_start_ms: start_ms,
                    window_end_ms: start_ms + 10_000,
                    target_id: pod as u64 + 1,
                    pod: (*pod_name).into(),
                    part_index: 0,
                    part_count: 1,
                    raw_events: 10,
                    parsed_events: 10,
                    stacks: stacks_of(pod, k).len() as u64,
                    dropped_events: 0,
                    dropped_stacks: 0,
                    truncated: 0,
                    jfr_bytes: 0,
                    parse_micros: 0,
                    topic: "t".into(),
                    partition: 0,
                    offset: 0,
                    status: "accepted".into(),
                    reason: String::new(),
                    ingested_at: window_start(base, k) + 12,
                    ingest_latency_ms: 2000,
                })
                .await
                .expect("ledger");
        }
    }
    // A part the consumer refused, claiming a two-day window: in the
    // metadata as rejected, never the timeline's notion of a window length.
    let refused_start = window_start(base, 3);
    ledger
        .write(&LedgerRow {
            window_id: 999,
            service: "svc".into(),
            profile_type: "cpu".into(),
            window_start: refused_start,
            window_start_ms: i64::from(refused_start) * 1000,
            window_end_ms: i64::from(refused_start) * 1000 + 2 * 86_400_000,
            target_id: 9,
            pod: "p9".into(),
            part_index: 0,
            part_count: 1,
            raw_events: 0,
            parsed_events: 0,
            stacks: 0,
            dropped_events: 0,
            dropped_stacks: 0,
            truncated: 0,
            jfr_bytes: 0,
            parse_micros: 0,
            topic: "t".into(),
            partition: 0,
            offset: 1,
            status: "rejected".into(),
            reason: "window longer than a day".into(),
            ingested_at: refused_start + 12,
            ingest_latency_ms: 0,
        })
        .await
        .expect("refused ledger row");
    samples.end().await.expect("samples");
    stacks.end().await.expect("stacks");
    ledger.end().await.expect("ledger");
    for pod in 0..PODS.len() {
        for &k in &WINDOWS {
            let (start, id) = (window_start(base, k), window_id(pod, base, k));
            record_stored(db, pod as u64 + 1, start, id, 1).await;
            if pod == 1 && k == 3 {
                record_stored(db, pod as u64 + 1, start, id, 2).await;
            }
        }
    }
    base
}

/// A seeded database and an API serving it (with `extra` flags).
struct Seeded {
    database: String,
    base: u32,
    url: String,
    _api: Reaped,
}

impl Seeded {
    async fn start(prefix: &str, extra: &[&str]) -> Seeded {
        let database = unique_name(prefix);
        migrate(&clickhouse_client(), &database, MigrateOptions::default())
            .await
            .expect("migrate");
        let base = seed(&clickhouse_client().with_database(&database)).await;
        let (api, url) = start_api(&database, extra);
        Seeded {
            database,
            base,
            url,
            _api: api,
        }
    }

    /// ms of `base + secs` (plus `extra_ms`).
    fn ms(&self, secs: u32, extra_ms: i64) -> i64 {
        i64::from(self.base + secs) * 1000 + extra_ms
    }

    /// `path` over the whole seeded range (`from` 1 ms past the base).
    async fn get(&self, path: &str, extra: &str) -> (u16, Value) {
        let (from, to) = (self.ms(0, 1), self.ms(120, 0));
        self.get_range(path, from, to, extra).await
    }

    async fn get_range(&self, path: &str, from: i64, to: i64, extra: &str) -> (u16, Value) {
        get(&format!(
            "{}/api/v1/{path}?service=svc&type=cpu&from={from}&to={to}{extra}",
            self.url
        ))
        .await
    }

    /// Each `(extra, needle)`: `path` answers 400 with `needle` in the error.
    async fn refuses(&self, path: &str, cases: &[(&str, &str)]) {
        for (extra, needle) in cases {
            let (status, body) = self.get(path, extra).await;
            assert_eq!(status, 400, "{extra}: {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains(needle)),
                "{extra}: {body}"
            );
        }
    }

    async fn done(self) {
        drop_database(&self.database).await;
    }
}

/// A breakdown's listed (value, total) pairs, in order.
fn tag_values(tags: &Value) -> Vec<(&str, i64)> {
    tags["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap_or(""),
                v["total"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn points(v: &Value) -> Vec<(u32, i64)> {
    serde_json::from_value(v.clone()).expect("points")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_is_dense_exact_and_sums_to_the_flamegraph() {
    let s = Seeded::start("explore_timeline", &[]).await;
    let b = s.base;

    // Default step: the range is 2 minutes of 10-s windows → 10 s.
    let (status, tl) = s.get("timeline", "").await;
    assert_eq!(status, 200, "{tl}");
    assert_eq!(tl["step_seconds"], 10);
    let expected: Vec<(u32, i64)> = (0..12)
        .map(|k| {
            let v = match k {
                2 => 3072,
                5 | 6 => 0,
                k if k < 5 => 372,
                _ => 427,
            };
            (b + 10 * k, v)
        })
        .collect();
    assert_eq!(points(&tl["points"]), expected);
    assert_eq!(tl["total"], 6695);
    assert_eq!(tl["unit"], "nanoseconds");
    // The ledger: 30 stored parts and the refused one (whose two-day
    // "window" did not stretch the step above).
    assert_eq!(tl["metadata"]["window_parts"], 31);
    assert_eq!(tl["metadata"]["rejected_parts"], 1);
    let (_, fg) = s.get("flamegraph", "").await;
    assert_eq!(
        fg["total"], tl["total"],
        "the flamegraph's total, spread over time"
    );
    assert_eq!(
        tl["metadata"]["scanned_rows"],
        fg["metadata"]["scanned_rows"]
    );

    // 60-s steps, epoch-aligned.
    let (_, tl) = s.get("timeline", "&step=60").await;
    assert_eq!(points(&tl["points"]), vec![(b, 4560), (b + 60, 2135)]);

    // A range starting at an odd millisecond inside a bucket: the first
    // bucket starts on the grid, windows before `from` are not counted.
    let (_, tl) = s
        .get_range("timeline", s.ms(25, 500), s.ms(60, 0), "&step=10")
        .await;
    assert_eq!(
        points(&tl["points"]),
        vec![(b + 20, 0), (b + 30, 372), (b + 40, 372), (b + 50, 0)]
    );
    assert_eq!(tl["total"], 744);

    // Filters apply: node n2 is p3 alone.
    let (_, tl) = s.get("timeline", "&node=n2&step=60").await;
    assert_eq!(tl["total"], 2170);
    assert_eq!(tl["metadata"]["node"], "n2");
    let (_, fg) = s.get("flamegraph", "&node=n2").await;
    assert_eq!(fg["total"], 2170, "the flamegraph filters by node too");

    // A long range: the step is raised to keep at most 1,000 points.
    let (status, tl) = s
        .get_range(
            "timeline",
            s.ms(0, 0) - 6 * 86_400_000,
            s.ms(120, 0),
            "&step=1",
        )
        .await;
    assert_eq!(status, 200, "{tl}");
    let n = tl["points"].as_array().map_or(0, Vec::len);
    assert!(n <= 1000, "{n} points");
    assert_eq!(tl["step_seconds"], 600);
    assert_eq!(tl["total"], 6695);

    // Bad input.
    s.refuses(
        "timeline",
        &[
            ("&step=0", "step must be at least 1 second"),
            ("&step=x", "`step` must be an integer"),
        ],
    )
    .await;
    s.done().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tag_breakdown_lists_the_largest_values_and_sums_the_rest() {
    let s = Seeded::start("explore_tags", &[]).await;
    let b = s.base;
    let (status, tags) = s.get("tags", "&label=pod&limit=2&step=60").await;
    assert_eq!(status, 200, "{tags}");
    assert_eq!(tags["label"], "pod");
    assert_eq!(tags["total"], 6695);
    assert_eq!(tags["distinct_values"], 3);
    assert_eq!(tag_values(&tags), [("p1", 2425), ("p3", 2170)]);
    // p1 per minute: 4 × 125 + (1000 + 20 + 5) = 1525; then 5 × 180 = 900.
    assert_eq!(
        points(&tags["values"][0]["points"]),
        vec![(b, 1525), (b + 60, 900)]
    );
    assert_eq!(tags["other"]["values"], 1);
    assert_eq!(
        tags["other"]["total"], 2100,
        "p2, its redelivered window once"
    );
    assert_eq!(
        points(&tags["other"]["points"]),
        vec![(b, 1500), (b + 60, 600)]
    );

    // By node; and a filter narrows the breakdown.
    let (_, tags) = s.get("tags", "&label=node").await;
    assert_eq!(tags["step_seconds"], 10);
    assert_eq!(tag_values(&tags), [("n1", 4525), ("n2", 2170)]);
    assert_eq!(tags["other"]["values"], 0);
    let (_, tags) = s.get("tags", "&label=node&pod=p1").await;
    assert_eq!(tags["total"], 2425);
    assert_eq!(tags["values"][0]["value"], "n1");
    assert_eq!(tags["distinct_values"], 1);
    let (_, tags) = s.get("tags", "&label=version").await;
    assert_eq!(tag_values(&tags), [("1.4.2", 4270), ("1.5.0", 2425)]);
    let (_, fg) = s.get("flamegraph", "&version=1.5.0").await;
    assert_eq!(fg["total"], 2425, "the version filters like a label");
    assert_eq!(fg["metadata"]["version"], "1.5.0");
    let (_, labels) = get(&format!(
        "{}/api/v1/labels?service=svc&label=node&from={}&to={}",
        s.url,
        s.ms(0, 0),
        s.ms(120, 0)
    ))
    .await;
    assert_eq!(labels["values"], serde_json::json!(["n1", "n2"]));

    // Bad input.
    s.refuses(
        "tags",
        &[
            ("", "unknown label \"\""),
            (
                "&label=release",
                "use namespace, pod, container, node or version",
            ),
            ("&label=pod&limit=0", "limit must be in 1..=100"),
            ("&label=pod&limit=101", "limit must be in 1..=100"),
        ],
    )
    .await;
    s.done().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_breakdown_over_its_bound_is_refused_with_what_to_do() {
    let s = Seeded::start("explore_bound", &["--max-breakdown-pairs", "5"]).await;
    // 3 pods × 10 buckets with rows = 30 pairs > 5.
    let (status, body) = s.get("tags", "&label=pod&step=10").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["kind"], "scan_limit");
    let text = body["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("pod has too many values") && text.contains("--max-breakdown-pairs"),
        "{body}"
    );
    // Within the bound (2 nodes × 2 minutes = 4 pairs) it answers.
    let (status, body) = s.get("tags", "&label=node&step=60").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 6695);
    s.done().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandwich_shows_callers_and_callees_with_the_top_tables_numbers() {
    let s = Seeded::start("explore_sandwich", &[]).await;
    let (_, top) = s.get("top", "&sort=total&limit=100").await;
    let row = |name: &str| {
        top["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in the top table: {top}"))
    };

    let enc = |f: &str| format!("&function={}", f.replace('.', "%2E"));
    let (status, sw) = s.get("sandwich", &enc(SCORE)).await;
    assert_eq!(status, 200, "{sw}");
    assert_eq!(
        (sw["total"].as_i64(), sw["self"].as_i64()),
        (Some(6300), Some(5700))
    );
    assert_eq!(
        (row(SCORE)["total"].clone(), row(SCORE)["self"].clone()),
        (sw["total"].clone(), sw["self"].clone())
    );
    assert_eq!(
        nodes(&sw["callers"]),
        vec![
            (0, SCORE.to_string(), 6300, 0),
            (1, HANDLE.into(), 6300, 0),
            (2, RUN.into(), 6300, 6300)
        ]
    );
    assert_eq!(
        nodes(&sw["callees"]),
        vec![
            (0, SCORE.to_string(), 6300, 5700),
            (1, LOG.into(), 600, 600)
        ]
    );

    // Called from two places: both callers, each with its share.
    let (_, sw) = s.get("sandwich", &enc(LOG)).await;
    assert_eq!(
        (sw["total"].as_i64(), sw["self"].as_i64()),
        (Some(670), Some(670))
    );
    assert_eq!(row(LOG)["total"], 670);
    let callers = nodes(&sw["callers"]);
    assert!(
        callers.contains(&(1, SCORE.to_string(), 600, 0)),
        "{callers:?}"
    );
    assert!(
        callers.contains(&(1, WALK.to_string(), 70, 0)),
        "{callers:?}"
    );
    assert!(
        callers.contains(&(2, WALK.to_string(), 70, 0)),
        "recursion: {callers:?}"
    );

    // Recursive: counted once per stack, cut at the outermost call.
    let (_, sw) = s.get("sandwich", &enc(WALK)).await;
    assert_eq!(
        (sw["total"].as_i64(), sw["self"].as_i64()),
        (Some(70), Some(0))
    );
    assert_eq!(row(WALK)["total"], 70);
    assert_eq!(
        nodes(&sw["callees"]),
        vec![
            (0, WALK.to_string(), 70, 0),
            (1, WALK.into(), 70, 0),
            (2, LOG.into(), 70, 70)
        ]
    );

    // A function the selection does not have; bad input.
    let (status, sw) = s.get("sandwich", "&function=nowhere").await;
    assert_eq!(status, 200);
    assert_eq!(
        (sw["total"].as_i64(), sw["self"].as_i64()),
        (Some(0), Some(0))
    );
    let (status, body) = s.get("sandwich", "").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("`function`")),
        "{body}"
    );
    s.done().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ranked_diff_puts_the_biggest_regression_first() {
    let s = Seeded::start("explore_ranked", &[]).await;
    // Baseline: windows 0..4 (with the burst); comparison: windows 7..11.
    let (from, to) = (s.ms(0, 1), s.ms(50, 0));
    let right = format!("&right_from={}&right_to={}", s.ms(60, 0), s.ms(120, 0));
    let (status, d) = s
        .get_range("diff/functions", from, to, &format!("{right}&limit=3"))
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        (d["left_total"].as_i64(), d["right_total"].as_i64()),
        (Some(4560), Some(2135))
    );
    assert_eq!(
        (d["by"].as_str(), d["order"].as_str()),
        (Some("self"), Some("growth"))
    );
    assert_eq!(d["functions"], 6);
    let rows = d["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    let r0 = &rows[0];
    assert_eq!(r0["name"], RECOMPUTE, "{d}");
    assert_eq!(
        (r0["left_self"].as_i64(), r0["right_self"].as_i64()),
        (Some(25), Some(300))
    );
    let close = |v: &Value, want: f64| (v.as_f64().unwrap_or(f64::NAN) - want).abs() < 1e-9;
    assert!(close(&r0["left_share"], 25.0 / 4560.0), "{r0}");
    assert!(close(&r0["right_share"], 300.0 / 2135.0), "{r0}");
    assert!(close(&r0["change"], 300.0 / 2135.0 - 25.0 / 4560.0), "{r0}");
    assert_eq!(rows[1]["name"], LOG, "335/2135 − 335/4560");

    // The burst makes Index.score the biggest shrink; by total, Http.handle
    // carries its callees' change.
    let (_, d) = s
        .get_range(
            "diff/functions",
            from,
            to,
            &format!("{right}&order=shrink&limit=1"),
        )
        .await;
    assert_eq!(d["rows"][0]["name"], SCORE);
    assert_eq!(
        (
            d["rows"][0]["left_self"].as_i64(),
            d["rows"][0]["right_self"].as_i64()
        ),
        (Some(4200), Some(1500))
    );
    let (_, d) = s
        .get_range(
            "diff/functions",
            from,
            to,
            &format!("{right}&by=total&order=abs&limit=100"),
        )
        .await;
    let handle = d["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == HANDLE))
        .cloned()
        .expect("Http.handle");
    // Left: everything but walk (35); right: everything but walk (35).
    assert_eq!(
        (
            handle["left_total"].as_i64(),
            handle["right_total"].as_i64()
        ),
        (Some(4525), Some(2100))
    );

    // Two pods instead of two ranges.
    let (_, d) = s.get("diff/functions", "&pod=p2&right_pod=p1").await;
    assert_eq!(
        (d["left_total"].as_i64(), d["right_total"].as_i64()),
        (Some(2100), Some(2425))
    );
    assert_eq!(d["rows"][0]["name"], RECOMPUTE, "only p1 recomputes");

    s.refuses(
        "diff/functions",
        &[
            ("&by=wall", "unknown by"),
            ("&order=up", "unknown order"),
            ("&limit=0", "limit must be in 1..=10000"),
        ],
    )
    .await;
    s.done().await;
}
