//! `bench-storage`: bytes per stored row of Javelin's tables against a
//! Coroot-shaped anchor holding the same rows (issue 18), on the local
//! ClickHouse 18.16 and on ClickHouse 26.9 (chdb-core).
//!
//! The run publishes deterministic CPU profiles of one service through the
//! agent's aggregator and publisher to a topic of its own; on each engine the
//! real consumer stores them into a database named after the run (migrated by
//! Javelin's migrations), the anchor's tables are filled from those rows with
//! `INSERT … SELECT`, every table is merged with `OPTIMIZE TABLE … FINAL`,
//! and the server's own accounting (`system.parts`, `system.parts_columns`)
//! gives bytes per table and per column. The schema is measured as it is.
//!
//! # Layout
//! - `rng`: the seeded generator everything is drawn from.
//! - `stacks`: Java-shaped stacks (shared upper frames, realistic depths).
//! - `sampler`: Zipf-weighted CPU samples per (pod, window).
//! - `seed`: the windows, aggregated and published as the agent does.
//! - `anchor`: Coroot's profiling tables, and their 18.16 equivalent.
//! - `engine`: one engine's database, consumer, anchor and measurements.
//! - `measure`: OPTIMIZE and the system tables' sizes.
//! - `report`: ratios, markdown, the JSON report.

mod anchor;
mod engine;
mod measure;
mod report;
mod rng;
mod sampler;
mod seed;
mod stacks;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use javelin_schema::testkit::chdb::ChdbServer;

pub use engine::EngineKind;

#[derive(Debug, clap::Args)]
pub struct BenchStorageArgs {
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The 18.16 engine: the local server.
    #[arg(
        long,
        env = "JAVELIN_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub clickhouse_url: String,
    /// Engines to measure on.
    #[arg(long, value_delimiter = ',', default_value = "18.16,26.9")]
    pub engines: Vec<EngineKind>,
    /// Pods of the one service.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub pods: u32,
    /// Windows per pod.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub windows: u32,
    /// Window length in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..))]
    pub window_secs: i64,
    /// Distinct stacks of the service.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..))]
    pub stacks: u32,
    /// CPU samples per pod and window (default: 2 busy cores × 100 Hz × 60 s).
    #[arg(long, default_value_t = 12_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub samples_per_window: u32,
    /// How each pod-window's samples enter the Coroot-shaped anchor
    /// (`profile`: a collector's order; `sorted`: by stack hash, its best case).
    #[arg(long, value_enum, default_value = "profile")]
    pub anchor_order: anchor::FillOrder,
    /// Exponent of the stacks' Zipf weights.
    #[arg(long, default_value_t = 1.1)]
    pub zipf_exponent: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the JSON report goes (default: target/loadtest-reports).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Keep each engine's database for experiments instead of dropping it:
    /// the 18.16 one stays on the server (drop it by hand), the 26.9 one is
    /// served until the harness is interrupted (Ctrl-C), then removed with
    /// its directory unless `JAVELIN_KEEP_SCENARIO_DIRS` is set.
    #[arg(long)]
    pub keep: bool,
}

pub use report::thousands;

pub async fn run(args: &BenchStorageArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at_ms = javelin_loadtest::now_ms();
    if !(args.zipf_exponent.is_finite() && args.zipf_exponent > 0.0) {
        bail!("--zipf-exponent must be a positive number");
    }
    let run = format!("bench_storage_{}", std::process::id());
    let topic = format!("{run}.profiles");
    let shape = seed::Shape {
        pods: args.pods,
        windows: args.windows,
        window_secs: args.window_secs,
        stacks: args.stacks,
        samples_per_window: args.samples_per_window,
        zipf_exponent: args.zipf_exponent,
        seed: args.seed,
    };
    let stacks = stacks::build(args.stacks as usize, args.seed);
    javelin_loadtest::topics::create(&args.brokers, std::slice::from_ref(&topic), 4)
        .await
        .with_context(|| format!("creating topic `{topic}`"))?;
    eprintln!(
        "bench-storage {run}: publishing {} pods × {} windows to `{topic}`",
        args.pods, args.windows
    );
    let seeded = seed::publish(&shape, &args.brokers, &run, &topic, &stacks).await?;
    eprintln!(
        "published {} sample rows in {} messages ({:.0} MiB) in {:.1} s",
        seeded.sample_rows,
        seeded.messages,
        seeded.payload_bytes as f64 / (1024.0 * 1024.0),
        seeded.publish_secs
    );

    let ctx = engine::RunContext {
        run: &run,
        brokers: &args.brokers,
        clickhouse_url: &args.clickhouse_url,
        window_secs: args.window_secs,
        anchor_order: args.anchor_order,
        seeded: &seeded,
        keep: args.keep,
    };
    let mut engines = Vec::new();
    let mut kept = Vec::new();
    for &kind in &args.engines {
        let (result, server) = engine::measure(kind, &ctx).await;
        kept.extend(server);
        match result {
            Ok(result) => engines.push(result),
            Err(e) => {
                eprintln!("{}: FAILED: {e:#}", kind.label());
                engines.push(report::EngineResult::failed(kind.label(), format!("{e:#}")));
            }
        }
    }
    // Its messages are GBs on a memory-backed broker: gone with the run.
    if let Err(e) =
        javelin_loadtest::topics::delete(&args.brokers, std::slice::from_ref(&topic)).await
    {
        eprintln!("warning: {e:#} (delete it by hand)");
    }

    let failed: Vec<String> = engines
        .iter()
        .filter(|e| e.error.is_some())
        .map(|e| e.engine.clone())
        .collect();
    let report = report::Report {
        run: run.clone(),
        started_at_ms,
        shape,
        seeded,
        anchor_source: anchor::SOURCE.to_string(),
        anchor_order: args.anchor_order,
        notes: vec![format!(
            "consumer logs: {}/{run}.<engine>.consumer.log",
            std::env::temp_dir().display()
        )],
        engines,
        wall_secs: started.elapsed().as_secs_f64(),
    };
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(javelin_loadtest::scenario::default_report_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("bench-storage-{started_at_ms}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", report::markdown(&report));
    println!("report: {}", path.display());
    if args.keep {
        keep_serving(&run, &args.engines, &kept).await?;
    }
    if !failed.is_empty() {
        bail!("engine(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Names what `--keep` kept; with a 26.9 engine, serves it until interrupted.
async fn keep_serving(
    run: &str,
    engines: &[EngineKind],
    kept: &[ChdbServer],
) -> anyhow::Result<()> {
    if engines.contains(&EngineKind::Local) {
        eprintln!("18.16: database `{run}` kept (drop it with `DROP DATABASE {run}`)");
    }
    if kept.is_empty() {
        return Ok(());
    }
    for server in kept {
        eprintln!(
            "26.9: database `{run}` served at {} (directory {}) until interrupted (Ctrl-C)",
            server.url,
            server.dir.display()
        );
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("interrupted: stopping the 26.9 engine");
    Ok(())
}
