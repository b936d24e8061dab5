//! The run's profiles, published as the agent publishes them: per (pod,
//! window) a `WindowAggregator` fed with the sampler's counts (value = count ×
//! 10 ms in ns), cut into wire messages and sent to `<run>.profiles` through
//! the agent's `Publisher`, keyed by target id. Windows are contiguous and
//! end before now.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::{Frames, TypeCounts};
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::wire::{ProfileType, TargetIdentity};
use serde::Serialize;

use super::rng::SplitMix64;
use super::sampler::{ZipfTable, pod_ranking, window_counts};

/// The one service of the run.
pub const SERVICE: &str = "checkout";
/// CPU time one sample stands for: the sampler runs at 100 Hz.
pub const SAMPLE_PERIOD_NS: i64 = 10_000_000;

/// Stream tags (see `sampler`): the pods' identities, the windows' parse figures.
const TARGET_STREAM: u64 = 3;
const PARSE_STREAM: u64 = 4;

/// What the run publishes.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub pods: u32,
    pub windows: u32,
    pub window_secs: i64,
    pub stacks: u32,
    pub samples_per_window: u32,
    pub zipf_exponent: f64,
    pub seed: u64,
}

/// What was published: what each engine's consumer must store.
#[derive(Debug, Clone, Serialize)]
pub struct Seeded {
    /// (pod, window, stack) with at least one sample: one `samples` row each.
    pub sample_rows: u64,
    /// Wire messages (window parts): one `stored_parts` and one `ingest_ledger` row each.
    pub messages: u64,
    /// Payload bytes sent (protobuf, before the producer's compression).
    pub payload_bytes: u64,
    /// Mean frames per stack.
    pub mean_depth: f64,
    pub first_window_ms: i64,
    pub publish_secs: f64,
}

/// The identity of pod `pod`: Kubernetes-shaped names, 50 pods over 12 nodes.
pub fn target(pod: u32, seed: u64) -> TargetIdentity {
    let mut rng = SplitMix64::derived(seed, &[TARGET_STREAM, u64::from(pod)]);
    const POD_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| char::from(POD_CHARS[rng.below(POD_CHARS.len() as u64) as usize]))
        .collect();
    let node = pod % 12;
    TargetIdentity {
        cluster: "prod-eu-west-1".into(),
        namespace: "shop".into(),
        service: SERVICE.into(),
        pod: format!("{SERVICE}-7d9f8c6b5-{suffix}"),
        container: "app".into(),
        node: format!(
            "ip-10-0-{}-{}.eu-west-1.compute.internal",
            node / 4,
            10 + node * 7
        ),
        pid: 1,
        nspid: 1,
        target_id: rng.next_u64(),
        ..Default::default()
    }
}

/// Publishes every (pod, window) to `topic`.
pub async fn publish(
    shape: &Shape,
    brokers: &str,
    run: &str,
    topic: &str,
    stacks: &[Frames],
) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let publisher = Publisher::new(PublisherConfig {
        brokers: brokers.to_string(),
        profiles_topic: topic.to_string(),
        status_topic: format!("{run}.status"),
        send_timeout: Duration::from_secs(120),
        properties: vec![],
    })
    .context("creating the publisher")?;
    let table = ZipfTable::new(stacks.len(), shape.zipf_exponent);
    let rankings: Vec<Vec<u32>> = (0..shape.pods)
        .map(|pod| pod_ranking(stacks.len(), shape.seed, pod))
        .collect();
    let targets: Vec<TargetIdentity> = (0..shape.pods).map(|p| target(p, shape.seed)).collect();
    let window_ms = shape.window_secs * 1000;
    let first =
        javelin_loadtest::now_ms() / window_ms * window_ms - i64::from(shape.windows) * window_ms;
    let (mut sample_rows, mut messages, mut payload_bytes) = (0u64, 0u64, 0u64);
    for w in 0..shape.windows {
        let start = first + i64::from(w) * window_ms;
        let mut payloads = Vec::new();
        for (pod, target) in (0..shape.pods).zip(&targets) {
            let counts = window_counts(
                &table,
                &rankings[pod as usize],
                shape.samples_per_window,
                shape.seed,
                pod,
                w,
            );
            let mut agg = WindowAggregator::new(Bounds {
                max_stacks_per_window: u64::MAX,
                ..Bounds::default()
            });
            for (frames, &count) in stacks.iter().zip(&counts) {
                if count == 0 {
                    continue;
                }
                sample_rows += 1;
                let count = i64::from(count);
                agg.add(ProfileType::Cpu, frames, count * SAMPLE_PERIOD_NS, count);
            }
            // What a parse of the window's recording would have counted.
            let samples = u64::from(shape.samples_per_window);
            let parsed = HashMap::from([(
                ProfileType::Cpu,
                TypeCounts {
                    raw_events: samples,
                    parsed_events: samples,
                    dropped_events: 0,
                },
            )]);
            let mut rng =
                SplitMix64::derived(shape.seed, &[PARSE_STREAM, u64::from(pod), u64::from(w)]);
            let jfr_bytes = 1_500_000 + rng.below(500_000);
            let parse_micros = 20_000 + rng.below(30_000);
            for window in agg.finish(
                target,
                start,
                start + window_ms,
                &parsed,
                jfr_bytes,
                parse_micros,
            ) {
                let bytes = window.to_bytes();
                payload_bytes += bytes.len() as u64;
                messages += 1;
                payloads.push((target.target_id.to_string(), bytes));
            }
        }
        let sent = futures::future::join_all(
            payloads
                .iter()
                .map(|(key, p)| publisher.send_to(Destination::Profiles, key, p, None)),
        )
        .await;
        for result in sent {
            result.with_context(|| format!("publishing window {w} to `{topic}`"))?;
        }
    }
    let frames: usize = stacks.iter().map(|s| s.len()).sum();
    Ok(Seeded {
        sample_rows,
        messages,
        payload_bytes,
        mean_depth: frames as f64 / stacks.len().max(1) as f64,
        first_window_ms: first,
        publish_secs: started.elapsed().as_secs_f64(),
    })
}
