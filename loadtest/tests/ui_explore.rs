//! The exploration UI (issue 16) in a real browser (Debian's Chromium driven by
//! playwright-core, `ui_explore.cjs`) against the whole pipeline on real parts:
//! the demo JVM with 15-s totals-cache phases (`ReportService.recomputeTotals`
//! runs only in the stale ones), the agent with 5-s windows, tansu, the
//! consumer, ClickHouse and the query API; plus two pods' windows published
//! through the real producer path, with known frames and totals.
//!
//! Once the API shows a complete fresh phase and a complete stale phase, the
//! browser checks, against the API's exact numbers:
//! - a range brushed on the timeline becomes the URL's from/to (bucket edges)
//!   and the flamegraph total is the API's (and the buckets' sum) for it;
//! - the sandwich opened from the top table has the row's self and total;
//! - the tag explorer lists the versions and pods with the API's totals, and a
//!   click on an injected pod shows exactly its injected total and frames;
//! - one hue per Java package (same package same hue, another package another);
//! - comparing the fresh phase (baseline) with the stale one ranks
//!   `ReportService.recomputeTotals` first, as the API does; a sandwich opened
//!   from a side (ranked table, frame menu) is that side's; typed ranges keep
//!   the other ends' exact values;
//! - from the keyboard: a frame's menu and sandwich, a tag value; typing in the
//!   sandwich's box survives a refresh; an error leaves no old summary;
//! - at the API's longest range (168 h) zoom out stops, and Compare's previous
//!   period at 7 days still shows the diff, the ranked table and a timeline.
//!
//! Needs `dev/stack up` and `cargo build --workspace --bins` first. Screenshots
//! go to `target/ui-screenshots/<run>/`.

mod support;

use std::time::Duration;

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::testkit::{kafka_brokers, wait_for};
use javelin_schema::wire::{ProfileType, TargetIdentity};
use serde_json::{Value, json};
use support::pipeline::{Pipeline, now_ms};

const SERVICE: &str = "javelin-demo";
/// The demo's totals-cache phase (`-Djavelin.demo.phase.seconds`): fresh when
/// `floor(t / phase)` is even, stale (recomputing on every report) when odd.
const PHASE_SECONDS: i64 = 15;
/// The demo's request threads: twice its default, so that JFR (at most 5
/// threads in Java per 10-ms period) takes enough samples in a 10-s phase for
/// the ranking to stand clear of sampling noise (with 4, the second row came
/// within 1 pp of the first).
const DEMO_WORKERS: u32 = 8;
/// Timeline buckets the test reads phases with (the agent's window length).
const BUCKET_SECONDS: i64 = 5;
/// Picked per phase: its first two buckets. Windows start in them and, 5 s
/// long, end before the phase does.
const PHASE_BUCKETS: i64 = 2;
/// Phases picked start this long after the demo JVM.
const WARM_UP_SECONDS: i64 = 30;
/// The function the stale phases make grow.
const GROWER: &str = "ReportService.recomputeTotals";

/// One stack: frames root first, and its cpu value in ns.
type Stack = (Vec<&'static str>, i64);

/// The injected pods and their stacks.
fn injected() -> Vec<(&'static str, Vec<Stack>)> {
    let main = "com.example.app.Main.run";
    vec![
        (
            "explore-pod-a",
            vec![
                (
                    vec![main, "com.example.search.SearchIndex.score"],
                    6_000_000,
                ),
                (
                    vec![main, "com.example.search.Tokenizer.tokenize"],
                    3_000_000,
                ),
                (
                    vec![main, "com.example.billing.PricingService.price"],
                    2_000_000,
                ),
            ],
        ),
        (
            "explore-pod-b",
            vec![
                (
                    vec![main, "com.example.billing.PricingService.price"],
                    4_000_000,
                ),
                (vec![main, "com.example.billing.TaxTable.lookup"], 1_000_000),
            ],
        ),
    ]
}

/// One 10-s window per injected pod starting at `start_ms`, published as the agent would.
async fn inject_pods(profiles: &str, status: &str, start_ms: i64) {
    let publisher = Publisher::new(PublisherConfig {
        brokers: kafka_brokers(),
        profiles_topic: profiles.to_string(),
        status_topic: status.to_string(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })
    .expect("producer");
    for (i, (pod, stacks)) in injected().into_iter().enumerate() {
        let target = TargetIdentity {
            service: SERVICE.into(),
            pod: pod.into(),
            target_id: 990 + i as u64,
            ..Default::default()
        };
        let mut agg = WindowAggregator::new(Bounds::default());
        for (names, value) in stacks {
            let frames: Vec<Frame> = names.iter().map(|n| Frame::synthetic(n)).collect();
            agg.add(ProfileType::Cpu, &frames.into(), value, 1);
        }
        for window in agg.finish(
            &target,
            start_ms,
            start_ms + 10_000,
            &Default::default(),
            0,
            0,
        ) {
            publisher
                .send_to(Destination::Profiles, SERVICE, &window.to_bytes(), None)
                .await
                .expect("published");
        }
    }
}

/// The demo target's cpu windows as the ledger has them, for a failure message.
async fn demo_windows(database: &str) -> String {
    let sql = format!(
        "SELECT groupArray((window_start_ms, window_end_ms, parse_micros, jfr_bytes)) \
         FROM (SELECT * FROM `{database}`.ingest_ledger \
         WHERE profile_type = 'cpu' AND pod = '' ORDER BY window_start_ms) FORMAT TSV"
    );
    let url = javelin_schema::testkit::clickhouse_url();
    match reqwest::Client::new().post(&url).body(sql).send().await {
        Ok(r) => r.text().await.unwrap_or_else(|e| e.to_string()),
        Err(e) => e.to_string(),
    }
}

async fn get(url: &str) -> Option<Value> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// A phase found on the 5-s timeline: its start (s) and whether it is stale.
fn is_stale(phase_start_s: i64) -> bool {
    (phase_start_s / PHASE_SECONDS) % 2 == 1
}

/// The latest fresh and stale phases whose first [`PHASE_BUCKETS`] buckets hold
/// demo windows, all stored (a later bucket holds data too: one target's windows
/// are published and stored in order), after `after_s`; and the start of the
/// newest bucket with data (windows starting before it are all stored).
///
/// One of the buckets holding data is enough: a window runs longer than its
/// 5 s when a collect is slow (the next deadline is then a full window after
/// it), so on a loaded machine windows can start in every other bucket.
fn complete_phases(points: &[(i64, i64)], after_s: i64) -> Option<(i64, i64, i64)> {
    let value = |t: i64| points.iter().find(|p| p.0 == t).map_or(0, |p| p.1);
    let newest = points.iter().rev().find(|p| p.1 > 0)?.0;
    let complete = |p: i64| {
        p > after_s
            && (0..PHASE_BUCKETS).any(|k| value(p + k * BUCKET_SECONDS) > 0)
            && newest >= p + PHASE_BUCKETS * BUCKET_SECONDS
    };
    let phases = points
        .iter()
        .map(|p| p.0)
        .filter(|t| t % PHASE_SECONDS == 0 && complete(*t));
    let fresh = phases.clone().filter(|t| !is_stale(*t)).max()?;
    let stale = phases.filter(|t| is_stale(*t)).max()?;
    Some((fresh, stale, newest))
}

#[tokio::test(flavor = "multi_thread")]
async fn timeline_brush_tags_sandwich_compare_and_package_colours_show_the_apis_numbers() {
    let pipeline = Pipeline::start_with(
        "ui_explore",
        &[
            &format!("-Djavelin.demo.phase.seconds={PHASE_SECONDS}"),
            &format!("-Djavelin.demo.workers={DEMO_WORKERS}"),
            // Samples at PCs between safepoints named by their own inlined
            // method: without it JFR credits part of the inlined
            // recomputeTotals loop to a neighbour (Integer.stringSize).
            "-XX:+UnlockDiagnosticVMOptions",
            "-XX:+DebugNonSafepoints",
        ],
    )
    .await;
    let (base, run) = (&pipeline.base, &pipeline.run);
    // The injected windows lie before the demo's first: no phase picked holds them.
    let inject_ms = now_ms() / 1000 * 1000 - 30_000;
    inject_pods(
        &pipeline.topics.profiles,
        &pipeline.topics.status,
        inject_ms,
    )
    .await;
    let from = inject_ms - 30_000;
    let selection = |to: i64| format!("service={SERVICE}&type=cpu&from={from}&to={to}");

    // The injected pods, each with its exact total.
    let pods: Value = injected()
        .iter()
        .map(|(pod, stacks)| {
            let frames: std::collections::BTreeSet<&str> =
                stacks.iter().flat_map(|s| s.0.iter().copied()).collect();
            let total: i64 = stacks.iter().map(|s| s.1).sum();
            (pod.to_string(), json!({ "total": total, "frames": frames }))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    wait_for(
        "both injected pods in /api/v1/tags with their totals",
        Duration::from_secs(60),
        || {
            let url = format!("{base}/api/v1/tags?{}&label=pod", selection(now_ms()));
            let pods = pods.clone();
            async move {
                let tags = get(&url).await?;
                let values = tags["values"].as_array()?;
                pods.as_object()?
                    .iter()
                    .all(|(pod, want)| {
                        values
                            .iter()
                            .any(|v| v["value"] == pod.as_str() && v["total"] == want["total"])
                    })
                    .then_some(())
            }
        },
    )
    .await;

    // A complete fresh phase and a complete stale phase of the demo, after its
    // JIT warm-up (the first phases' profiles are mostly the compilers' doing).
    let warm_s = now_ms() / 1000 - pipeline.started.elapsed().as_secs() as i64 + WARM_UP_SECONDS;
    let wait = Duration::from_secs(240);
    let deadline = std::time::Instant::now() + wait;
    let (fresh, stale, newest) = loop {
        let url = format!(
            "{base}/api/v1/timeline?{}&step={BUCKET_SECONDS}",
            selection(now_ms())
        );
        let tl = get(&url).await;
        let points: Vec<(i64, i64)> = tl
            .as_ref()
            .and_then(|tl| {
                assert_eq!(tl["step_seconds"], BUCKET_SECONDS, "{tl}");
                tl["points"].as_array().cloned()
            })
            .unwrap_or_default()
            .iter()
            .map(|p| (p[0].as_i64().unwrap_or(0), p[1].as_i64().unwrap_or(0)))
            .collect();
        if let Some(found) = complete_phases(&points, warm_s) {
            break found;
        }
        if std::time::Instant::now() > deadline {
            let windows = demo_windows(&pipeline.run).await;
            panic!(
                "timed out after {wait:?} waiting for a complete fresh and a complete stale totals \
                 phase after {warm_s} s on the 5-s timeline; last points (s, value): {points:?}; \
                 the demo's cpu windows in the ledger (start ms, end ms, parse µs, JFR bytes): \
                 {windows}; logs: {}",
                pipeline.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // A fixed range whose windows are all stored: every answer below is final.
    let to = newest * 1000;
    let span = PHASE_BUCKETS * BUCKET_SECONDS * 1000;
    let (left, right) = (
        (fresh * 1000, fresh * 1000 + span),
        (stale * 1000, stale * 1000 + span),
    );
    eprintln!(
        "fresh phase at {fresh} s, stale at {stale} s, range {from}..{to} ms; logs: {}",
        pipeline.logs()
    );

    // The API itself ranks the grower first (else the workload, not the UI, is off).
    let ranked = get(&format!(
        "{base}/api/v1/diff/functions?service={SERVICE}&type=cpu&from={}&to={}&right_from={}&right_to={}&limit=5",
        left.0, left.1, right.0, right.1
    ))
    .await
    .expect("ranked diff");
    let first: Vec<String> = ranked["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| format!("{} {:+.4}", r["name"], r["change"].as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("the API's ranked diff, fresh → stale: {first:?}");
    assert!(
        ranked["rows"][0]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with(GROWER)),
        "the API's ranked diff of a fresh against a stale phase starts with {GROWER}: {ranked}"
    );

    let spec = json!({
        "service": SERVICE, "from": from, "to": to, "bucket": BUCKET_SECONDS,
        "baseline": [left.0, left.1], "comparison": [right.0, right.1],
        "grower": GROWER, "pods": pods, "version": javelin_schema::testkit::DEMO_APP_VERSION,
    });
    let (findings, shots) = support::run_browser_script(
        "ui_explore.cjs",
        run,
        &[base.as_str()],
        &[&spec.to_string()],
    );
    // What the browser saw, restated here so a failure names it.
    let brushed = &findings["brushed"];
    assert!(
        brushed["total"].as_i64() > Some(0) && brushed["total"] == brushed["apiTotal"],
        "{findings}"
    );
    assert_eq!(
        findings["sandwich"]["self"], findings["sandwich"]["rowSelf"],
        "{findings}"
    );
    assert_eq!(
        findings["sandwich"]["total"], findings["sandwich"]["rowTotal"],
        "{findings}"
    );
    assert_eq!(
        findings["podFlame"]["total"], pods["explore-pod-a"]["total"],
        "{findings}"
    );
    assert!(
        findings["ranked"]["first"]
            .as_str()
            .is_some_and(|n| n.ends_with(GROWER)),
        "{findings}"
    );
    assert_eq!(
        findings["sandwichInComparison"]["function"], findings["ranked"]["first"],
        "{findings}"
    );
    assert!(findings["week"]["rows"].as_u64() > Some(0), "{findings}");
    for shot in [
        "1-timeline",
        "2-brushed",
        "3-sandwich",
        "4-tags",
        "5-tag-filtered",
        "6-compare",
        "7-compare-by-total",
        "8-compare-previous",
        "9-compare-week",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).exists(),
            "{shot}.png kept"
        );
    }
}
