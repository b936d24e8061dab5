//! The walking skeleton, end to end on real parts: the demo JVM, the agent
//! (own attach protocol + built-in JFR), tansu, the consumer, ClickHouse and the
//! query API. Needs `dev/stack up` and `cargo build --workspace --bins` first
//! (the README's test command does both).

mod support;

use std::time::Duration;

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::testkit::{kafka_brokers, wait_for};
use javelin_schema::wire::{ProfileType, TargetIdentity};
use serde::Deserialize;
use support::pipeline::{Pipeline, now_ms};

/// The demo's CPU hot spot (loadtest/java/src/JavelinDemo.java): the search
/// path's BM25 scan, about half of the demo's CPU time.
const CPU_HOT_SPOT: &str = "SearchIndex.score";

#[derive(Debug, Deserialize)]
struct Flamegraph {
    names: Vec<String>,
    levels: Vec<Vec<i64>>,
    total: i64,
}

impl Flamegraph {
    /// Total of all nodes named `name` that are not inside another `name` node: its share of the profile.
    fn total_of(&self, name: &str) -> i64 {
        self.levels
            .iter()
            .flat_map(|level| level.chunks(4))
            .filter(|t| self.names.get(t[3] as usize).is_some_and(|n| n == name))
            .map(|t| t[1])
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_cpu_hot_method_dominates_the_flamegraph_within_60_seconds() {
    let pipeline = Pipeline::start("e2e").await;
    let (base, started, run) = (&pipeline.base, pipeline.started, &pipeline.run);
    let http = reqwest::Client::new();
    let fg: Flamegraph = wait_for(
        &format!("a CPU flamegraph where {CPU_HOT_SPOT} has ≥ 30% of the total"),
        Duration::from_secs(60),
        || {
            let http = http.clone();
            let url = format!(
                "{base}/api/v1/flamegraph?service=javelin-demo&type=cpu&from={}&to={}",
                now_ms() - 600_000,
                now_ms()
            );
            async move {
                let fg: Flamegraph = http.get(&url).send().await.ok()?.json().await.ok()?;
                (fg.total > 0 && fg.total_of(CPU_HOT_SPOT) * 10 >= fg.total * 3).then_some(fg)
            }
        },
    )
    .await;
    let share = fg.total_of(CPU_HOT_SPOT) as f64 / fg.total as f64;
    eprintln!(
        "{CPU_HOT_SPOT} share {:.1}% of {} ns after {:?}; logs: {}",
        share * 100.0,
        fg.total,
        started.elapsed(),
        pipeline.logs()
    );
    assert!(
        started.elapsed() <= Duration::from_secs(75),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(fg.names[0], "total");

    // The services listing sees the demo.
    let services: serde_json::Value = http
        .get(format!(
            "{base}/api/v1/services?from={}&to={}",
            now_ms() - 600_000,
            now_ms()
        ))
        .send()
        .await
        .expect("services")
        .json()
        .await
        .expect("json");
    assert_eq!(services["services"], serde_json::json!(["javelin-demo"]));

    // The version the demo JVM carries (JAVELIN_APP_VERSION in its
    // environment) reaches the tag explorer: every sample has it.
    let tags: serde_json::Value = http
        .get(format!(
            "{base}/api/v1/tags?service=javelin-demo&type=cpu&label=version&from={}&to={}",
            now_ms() - 600_000,
            now_ms()
        ))
        .send()
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(tags["distinct_values"], 1, "{tags}");
    assert_eq!(
        tags["values"][0]["value"],
        javelin_schema::testkit::DEMO_APP_VERSION,
        "{tags}"
    );
    assert_eq!(tags["values"][0]["total"], tags["total"], "{tags}");
    assert!(tags["total"].as_i64() > Some(0), "{tags}");

    // Bad input is a clear 400, not a crash.
    let bad = http
        .get(format!(
            "{base}/api/v1/flamegraph?service=javelin-demo&type=wall&from=1&to=2"
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.expect("json error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown profile type")),
        "{body}"
    );

    // The UI page is served.
    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .expect("ui")
        .text()
        .await
        .expect("html");
    assert!(page.contains("<canvas id=\"flamegraph\""));

    // The UI in a real browser, against this pipeline, after injecting a
    // truncated window through the real producer path.
    inject_truncated_window(&pipeline.topics.profiles, &pipeline.topics.status).await;
    wait_for(
        "the injected truncation in the ledger",
        Duration::from_secs(30),
        || {
            let url = format!(
                "{base}/api/v1/health?service=javelin-demo&from={}&to={}",
                now_ms() - 900_000,
                now_ms()
            );
            async move {
                let h: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
                (h["totals"]["truncated_parts"].as_u64() >= Some(1)).then_some(())
            }
        },
    )
    .await;
    let (findings, shots) =
        support::run_browser_script("ui_check.cjs", run, &[base.as_str(), "javelin-demo"], &[]);
    assert!(findings["truncatedParts"].as_u64() >= Some(1), "{findings}");
    // The agent's words for how the demo is sampled (built-in JFR on the
    // suite's JDK 17, 5-s windows), above the flamegraph and on the targets page.
    let sampling = "cpu: jdk.ExecutionSample every 10 ms (at most 5 running Java threads per period); \
                    alloc: jdk.ObjectAllocationSample at most 300/s; lock: jdk.JavaMonitorEnter ≥ 10 ms; \
                    park: jdk.ThreadPark ≥ 10 ms; 5-s windows";
    assert_eq!(
        findings["sampling"],
        serde_json::json!([sampling]),
        "{findings}"
    );
    assert!(
        findings["targetSampling"]
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v == sampling)),
        "{findings}"
    );
    assert_eq!(findings["searchTerm"], CPU_HOT_SPOT, "{findings}");
    assert!(findings["searchShare"].as_f64() > Some(0.3), "{findings}");
    for shot in [
        "1-flamegraph",
        "2-search",
        "3-focused",
        "4-top-table",
        "5-ingestion",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).exists(),
            "{shot}.png kept"
        );
    }
}

/// A window of the demo service whose stack bound truncated it (one stack kept,
/// the rest folded into `[truncated]`), published as the agent would.
async fn inject_truncated_window(profiles: &str, status: &str) {
    let publisher = Publisher::new(PublisherConfig {
        brokers: kafka_brokers(),
        profiles_topic: profiles.to_string(),
        status_topic: status.to_string(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })
    .expect("producer");
    let target = TargetIdentity {
        service: "javelin-demo".into(),
        pod: "injected".into(),
        target_id: 999,
        ..Default::default()
    };
    let mut agg = WindowAggregator::new(Bounds {
        max_stacks_per_window: 2,
        ..Bounds::default()
    });
    for k in 0..5 {
        let frames: Vec<Frame> = [
            "injected.Main.run".to_string(),
            format!("injected.Work.step{k}"),
        ]
        .iter()
        .map(|n| Frame::synthetic(n))
        .collect();
        agg.add(ProfileType::Cpu, &frames.into(), 1_000_000, 1);
    }
    let start = now_ms() / 1000 * 1000 - 60_000;
    for window in agg.finish(&target, start, start + 10_000, &Default::default(), 0, 0) {
        assert!(window.accounting.as_ref().is_some_and(|a| a.truncated));
        publisher
            .send_to(
                Destination::Profiles,
                "javelin-demo",
                &window.to_bytes(),
                None,
            )
            .await
            .expect("published");
    }
}
