//! `bench-query`: flamegraph and top-table latency of the query API for one
//! service × 1 h × N pods, seeded through the real path (agent publisher →
//! Kafka → javelin-consumer → ClickHouse). The baseline in the same run is the
//! bare aggregation the API builds on (`sum(value) … GROUP BY stack_id`, no
//! deduplication), timed straight against ClickHouse.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::wire::{ProfileType, TargetIdentity};

use crate::bench_consumer::futures_join;

#[derive(Debug, Clone)]
pub struct BenchQuery {
    pub brokers: String,
    pub clickhouse_url: String,
    pub pods: u32,
    pub stacks: u32,
    pub window_secs: i64,
    pub requests: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Frames of stack `k`: a realistic depth (8) with shared upper layers.
fn frames(k: u32) -> Vec<Frame> {
    [
        "java.lang.Thread.run".to_string(),
        "io.netty.channel.nio.NioEventLoop.run".to_string(),
        "app.http.Server.handle".to_string(),
        format!("app.api.Controller{}.serve", k % 8),
        format!("app.service.Service{}.execute", k % 40),
        format!("app.repo.Repository{}.query", k % 120),
        format!("app.codec.Codec{}.decode", k % 400),
        format!("app.work.Step{k}.compute"),
    ]
    .iter()
    .map(|n| Frame::synthetic(n))
    .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Times `requests` GETs of `url`; returns sorted latencies (ms) and the last body size.
async fn time_gets(
    http: &reqwest::Client,
    url: &str,
    requests: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut times = Vec::with_capacity(requests);
    let mut size = 0;
    for _ in 0..requests {
        let started = Instant::now();
        let response = http.get(url).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    times.sort_by(f64::total_cmp);
    Ok((times, size))
}

/// The flamegraph's root value.
async fn flamegraph_total(http: &reqwest::Client, url: &str) -> anyhow::Result<i64> {
    let body: serde_json::Value = http.get(url).send().await?.json().await?;
    body["total"]
        .as_i64()
        .with_context(|| format!("a flamegraph without a total: {body}"))
}

pub async fn run(cfg: BenchQuery) -> anyhow::Result<()> {
    let run = format!("bench_query_{}", std::process::id());
    let topic = format!("{run}.profiles");
    let (server, db) =
        javelin_loadtest::servers::bench_setup(&cfg.brokers, &cfg.clickhouse_url, &run).await?;

    // One hour of windows for every pod, published as the agent does.
    let windows_per_pod = (3600 / cfg.window_secs) as u32;
    let expected = u64::from(cfg.pods) * u64::from(windows_per_pod) * u64::from(cfg.stacks);
    eprintln!(
        "seeding {expected} sample rows: {} pods × {windows_per_pod} windows × {} stacks",
        cfg.pods, cfg.stacks
    );
    let publisher = Publisher::new(PublisherConfig {
        brokers: cfg.brokers.clone(),
        profiles_topic: topic.clone(),
        status_topic: format!("{run}.status"),
        send_timeout: Duration::from_secs(120),
        properties: vec![],
    })?;
    let hour_start = now_ms() / 60_000 * 60_000 - 3_600_000;
    let stacks: Vec<_> = (0..cfg.stacks).map(|k| frames(k).into()).collect();
    for w in 0..windows_per_pod {
        let mut payloads = Vec::new();
        for pod in 0..cfg.pods {
            let target = TargetIdentity {
                service: "bench".into(),
                namespace: "prod".into(),
                pod: format!("bench-{pod}"),
                container: "app".into(),
                target_id: u64::from(pod) + 1,
                ..Default::default()
            };
            let mut agg = WindowAggregator::new(Bounds {
                max_stacks_per_window: u64::MAX,
                ..Bounds::default()
            });
            for (k, s) in stacks.iter().enumerate() {
                // Zipf-like weights: a few stacks carry most of the time.
                let value = 10_000_000 * i64::from(cfg.stacks) / (k as i64 + 1) + i64::from(pod);
                agg.add(ProfileType::Cpu, s, value, 1);
            }
            let start = hour_start + i64::from(w) * cfg.window_secs * 1000;
            for window in agg.finish(
                &target,
                start,
                start + cfg.window_secs * 1000,
                &Default::default(),
                0,
                0,
            ) {
                payloads.push(window.to_bytes());
            }
        }
        let results = futures_join(
            payloads
                .iter()
                .map(|p| publisher.send_to(Destination::Profiles, "bench", p, None)),
        )
        .await;
        for r in results {
            r?;
        }
    }

    // The real consumer stores them.
    let (_, stored) = javelin_loadtest::servers::consume_until_stored(
        &db,
        javelin_loadtest::servers::consumer_args(&cfg.clickhouse_url, &cfg.brokers, &run),
        std::env::temp_dir().join(format!("{run}.consumer.log")),
        expected,
    )
    .await?;
    eprintln!("stored in {:.1} s", stored.as_secs_f64());
    let bin = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        Ok(std::env::current_exe()?.with_file_name(name))
    };

    // The query API, release build, on a free port.
    let mut api = Command::new(bin("javelin-query")?)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--clickhouse-url",
            &cfg.clickhouse_url,
        ])
        .args(["--database", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting javelin-query")?;
    let mut line = String::new();
    BufReader::new(api.stdout.take().context("stdout")?).read_line(&mut line)?;
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .context("address line")?
        .trim_end_matches('/')
        .to_string();
    let (from, to) = (hour_start, hour_start + 3_600_000);
    let http = reqwest::Client::new();
    let selection = format!("service=bench&type=cpu&from={from}&to={to}");
    let flame_url = format!("{base}/api/v1/flamegraph?{selection}");
    let top_url = format!("{base}/api/v1/top?{selection}&sort=self&limit=100");
    // Warm-up: the first query loads marks and parts into the caches.
    time_gets(&http, &flame_url, 2).await?;
    let (flame, flame_size) = time_gets(&http, &flame_url, cfg.requests).await?;
    let (top, top_size) = time_gets(&http, &top_url, cfg.requests).await?;
    let total_before = flamegraph_total(&http, &flame_url).await?;

    // A tenth of the window parts written a second time (as a retry, a
    // redelivery or a replay does), not merged yet: the query must count them once.
    db.query(
        "INSERT INTO samples SELECT service, profile_type, window_start, cluster, namespace, pod,
            container, node, target_id, window_id, stack_id, value, count, insert_id + 1
         FROM samples WHERE service = 'bench' AND window_id % 10 = 0",
    )
    .execute()
    .await?;
    db.query(
        "INSERT INTO stored_parts SELECT service, profile_type, window_start, target_id, window_id,
            insert_id + 1, now()
         FROM stored_parts WHERE service = 'bench' AND window_id % 10 = 0",
    )
    .execute()
    .await?;
    let (rewritten, rewritten_size) = time_gets(&http, &flame_url, cfg.requests).await?;
    let total_after = flamegraph_total(&http, &flame_url).await?;
    if total_after != total_before {
        bail!("re-written parts changed the flamegraph total: {total_before} → {total_after}");
    }
    let _ = api.kill();
    let _ = api.wait();

    // Baseline: the bare aggregation, straight against ClickHouse.
    let mut base_times = Vec::with_capacity(cfg.requests);
    for _ in 0..cfg.requests {
        let started = Instant::now();
        let rows: Vec<(u64, i64)> = db
            .query("SELECT stack_id, sum(value) FROM samples WHERE service = 'bench' AND profile_type = 'cpu' AND window_start >= toDateTime(?) AND window_start < toDateTime(?) GROUP BY stack_id")
            .bind(u32::try_from(from / 1000)?)
            .bind(u32::try_from(to / 1000)?)
            .fetch_all()
            .await?;
        if rows.len() != cfg.stacks as usize {
            bail!(
                "baseline saw {} stacks, expected {}",
                rows.len(),
                cfg.stacks
            );
        }
        base_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    base_times.sort_by(f64::total_cmp);

    println!(
        "{expected} sample rows (1 service × 1 h × {} pods, {}-s windows, {} stacks), {} requests each",
        cfg.pods, cfg.window_secs, cfg.stacks, cfg.requests
    );
    println!();
    println!("| request | p50 | p99 | response | p50 / baseline p50 |");
    println!("|---|---|---|---|---|");
    let base_p50 = percentile(&base_times, 0.5);
    for (name, times, size) in [
        ("flamegraph (max_nodes 8192)", &flame, flame_size),
        ("top table (limit 100)", &top, top_size),
        (
            "flamegraph, 10 % of the parts re-written (not merged)",
            &rewritten,
            rewritten_size,
        ),
    ] {
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.1} KiB | {:.2} |",
            percentile(times, 0.5),
            percentile(times, 0.99),
            size as f64 / 1024.0,
            percentile(times, 0.5) / base_p50
        );
    }
    println!(
        "| baseline: `sum(value) … GROUP BY stack_id` in ClickHouse (no deduplication) | {:.0} ms | {:.0} ms | | 1.00 |",
        base_p50,
        percentile(&base_times, 0.99)
    );
    server
        .query(&format!("DROP DATABASE {run}"))
        .execute()
        .await?;
    Ok(())
}
