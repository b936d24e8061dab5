//! `javelin-loadtest`: synthetic load through the agent's real publish path, and
//! the benchmarks (see `docs/benchmarks.md`).

mod bench;
mod bench_agent;
mod bench_consumer;
mod bench_migration;
mod bench_overhead;
mod bench_query;
mod bench_query_long;
mod bench_storage;
mod probe;

use std::time::Duration;

use clap::Parser;
use javelin_agent::aggregate::Bounds;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_loadtest::load::{Expected, Shape, windows_for_tick};
use javelin_loadtest::scenario::{self, Scenario, ScenarioArgs};

#[derive(Debug, Parser)]
#[command(
    name = "javelin-loadtest",
    version,
    about = "Javelin load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Publish synthetic profile windows (Zipf-like stack weights).
    Publish(Args),
    /// Agent parse + aggregate throughput on one core, beside jfrs and async-profiler's converter.
    BenchParse {
        /// JFR file to parse; generated from the demo workload when missing or too small.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Minimum size of the file, in MiB.
        #[arg(long, default_value_t = 200)]
        min_mb: u64,
        /// Runs of each measurement (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// async-profiler's jfr-converter.jar (the baseline; skipped when missing).
        /// Default: ../shared/third_party/async-profiler-4.5/jar/jfr-converter.jar from the repository.
        #[arg(long, env = "JAVELIN_JFR_CONVERTER_JAR")]
        converter_jar: Option<std::path::PathBuf>,
    },
    /// End-to-end consumer rows/s vs clickhouse-client inserting the same rows (the ceiling).
    BenchConsumer {
        #[command(flatten)]
        servers: Servers,
        /// Native port for clickhouse-client.
        #[arg(long, env = "JAVELIN_CLICKHOUSE_TCP_PORT", default_value_t = 9000)]
        clickhouse_tcp_port: u16,
        #[arg(long, default_value_t = 2000)]
        windows: u32,
        #[arg(long, default_value_t = 200)]
        stacks: u32,
    },
    /// A load scenario through the real pipeline, ending with the reconciliation
    /// (JSON report and markdown summary in --report-dir; exit 1 on FAIL).
    Scenario(ScenarioCli),
    /// Query API flamegraph / top latency for 1 service × 1 h × N pods seeded through the consumer.
    BenchQuery {
        #[command(flatten)]
        servers: Servers,
        #[arg(long, default_value_t = 50)]
        pods: u32,
        /// Distinct stacks per pod and window.
        #[arg(long, default_value_t = 1500)]
        stacks: u32,
        #[arg(long, default_value_t = 60)]
        window_secs: i64,
        /// Timed requests per endpoint.
        #[arg(long, default_value_t = 30)]
        requests: usize,
    },
    /// Peak RSS of the release agent profiling N busy JVMs, against its computed memory bound.
    BenchAgentRss(bench_agent::BenchAgentArgs),
    /// What profiling costs the profiled JVM and the node: fixed workloads without a profiler,
    /// under the agent (built-in JFR, async-profiler) and under the JDK's and asprof's own.
    BenchOverhead(bench_overhead::BenchOverheadArgs),
    /// Bytes per row of Javelin's tables against a Coroot-shaped anchor holding the
    /// same rows, on ClickHouse 18.16 and 26.9 (issue 18).
    BenchStorage(bench_storage::BenchStorageArgs),
    /// How long migration 7 (the samples layout of issue 18) takes per million
    /// rows, on ClickHouse 18.16 and 26.9.
    BenchMigration(bench_migration::BenchMigrationArgs),
    /// Flamegraph / top over 24 h and 7 days of a 50-pod service, from hourly rollups
    /// and from raw windows (issue 19); rows made by the server.
    BenchQueryLong(bench_query_long::BenchQueryLongArgs),
}

/// The broker and ClickHouse a benchmark runs against (the local stack's env file sets both).
#[derive(Debug, clap::Args)]
struct Servers {
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(
        long,
        env = "JAVELIN_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
}

#[derive(Debug, clap::Args)]
struct ScenarioCli {
    scenario: Scenario,
    /// The short mode the test suite runs (seconds, small fleet).
    #[arg(long)]
    short: bool,
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Services (default: by mode and scenario).
    #[arg(long)]
    services: Option<u32>,
    #[arg(long)]
    pods: Option<u32>,
    /// Distinct stacks per pod, window and type.
    #[arg(long)]
    stacks: Option<u32>,
    /// Windows each pod publishes.
    #[arg(long)]
    windows: Option<u32>,
    #[arg(long)]
    window_secs: Option<i64>,
    /// Milliseconds between windows (the stream's pace).
    #[arg(long)]
    tick_ms: Option<u64>,
    /// clickhouse-outage: seconds ClickHouse stays down.
    #[arg(long)]
    outage_secs: Option<u64>,
    /// consumer-crash: SIGKILLs over the run.
    #[arg(long)]
    kills: Option<u32>,
    /// poison: poison messages per valid message.
    #[arg(long)]
    poison_fraction: Option<f64>,
    /// Seconds the pipeline may take to settle after the last window.
    #[arg(long, default_value_t = 180)]
    settle_secs: u64,
    #[arg(long)]
    report_dir: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct Args {
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "JAVELIN_PROFILES_TOPIC", default_value = javelin_schema::topics::PROFILES)]
    profiles_topic: String,
    /// Services to simulate.
    #[arg(long, default_value_t = 2)]
    services: u32,
    /// Pods per service.
    #[arg(long, default_value_t = 3)]
    pods: u32,
    /// Distinct stacks per pod and window.
    #[arg(long, default_value_t = 200)]
    stacks: u32,
    /// Windows per pod.
    #[arg(long, default_value_t = 10)]
    windows: u32,
    /// Window length in seconds.
    #[arg(long, default_value_t = 10)]
    window_secs: i64,
    /// Add an allocation profile per window.
    #[arg(long)]
    alloc_heavy: bool,
    /// Add lock and park profiles per window.
    #[arg(long)]
    lock_heavy: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    javelin_schema::process::init_logging();
    let args = match Cli::parse().command {
        Cmd::Publish(args) => args,
        Cmd::Scenario(cli) => return run_scenario(cli).await,
        Cmd::BenchParse {
            file,
            min_mb,
            repeat,
            converter_jar,
        } => {
            let jar = converter_jar.unwrap_or_else(bench::default_converter_jar);
            return bench::bench_parse(file, min_mb, repeat, &jar);
        }
        Cmd::BenchConsumer {
            servers:
                Servers {
                    brokers,
                    clickhouse_url,
                },
            clickhouse_tcp_port,
            windows,
            stacks,
        } => {
            return bench_consumer::run(bench_consumer::BenchConsumer {
                brokers,
                clickhouse_url,
                clickhouse_tcp_port,
                windows,
                stacks,
            })
            .await;
        }
        Cmd::BenchQuery {
            servers:
                Servers {
                    brokers,
                    clickhouse_url,
                },
            pods,
            stacks,
            window_secs,
            requests,
        } => {
            return bench_query::run(bench_query::BenchQuery {
                brokers,
                clickhouse_url,
                pods,
                stacks,
                window_secs,
                requests,
            })
            .await;
        }
        Cmd::BenchAgentRss(args) => {
            return bench_agent::run(&args).await;
        }
        Cmd::BenchOverhead(args) => {
            return bench_overhead::run(&args).await;
        }
        Cmd::BenchStorage(args) => {
            return bench_storage::run(&args).await;
        }
        Cmd::BenchMigration(args) => {
            return bench_migration::run(&args).await;
        }
        Cmd::BenchQueryLong(args) => {
            return bench_query_long::run(&args).await;
        }
    };
    let publisher = Publisher::new(PublisherConfig {
        brokers: args.brokers.clone(),
        profiles_topic: args.profiles_topic.clone(),
        status_topic: javelin_schema::topics::STATUS.into(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })?;
    let shape = Shape {
        services: args.services,
        pods: args.pods,
        stacks: args.stacks,
        window_secs: args.window_secs,
        alloc_heavy: args.alloc_heavy,
        lock_heavy: args.lock_heavy,
        max_stacks_per_window: Bounds::default().max_stacks_per_window,
    };
    let window_ms = args.window_secs * 1000;
    let first = (javelin_loadtest::now_ms() / window_ms - i64::from(args.windows)) * window_ms;
    let mut expected = Expected::default();
    for w in 0..args.windows {
        let start = first + i64::from(w) * window_ms;
        for (key, window) in windows_for_tick(&shape, start, &mut expected) {
            publisher
                .send_to(Destination::Profiles, &key, &window.to_bytes(), None)
                .await?;
        }
    }
    let total: i64 = expected.cells.values().map(|c| c.0).sum();
    println!(
        "published {} messages ({} rows), total value {total}",
        expected.messages, expected.rows
    );
    Ok(())
}

async fn run_scenario(cli: ScenarioCli) -> anyhow::Result<()> {
    let (mut shape, windows, tick, outage, kills, poison) = cli.scenario.defaults(cli.short);
    shape.services = cli.services.unwrap_or(shape.services);
    shape.pods = cli.pods.unwrap_or(shape.pods);
    shape.stacks = cli.stacks.unwrap_or(shape.stacks);
    shape.window_secs = cli.window_secs.unwrap_or(shape.window_secs);
    if cli.scenario == Scenario::HighVolume {
        // The agents' stack bound below the fleet's stacks: every window truncates.
        shape.max_stacks_per_window = (u64::from(shape.stacks) * 3 / 4).max(2);
    }
    let args = ScenarioArgs {
        scenario: cli.scenario,
        brokers: cli.brokers,
        shape,
        windows: cli.windows.unwrap_or(windows),
        tick: cli.tick_ms.map_or(tick, Duration::from_millis),
        outage: cli.outage_secs.map_or(outage, Duration::from_secs),
        kills: cli.kills.unwrap_or(kills),
        poison_fraction: cli.poison_fraction.unwrap_or(poison).clamp(0.0, 1.0),
        settle: Duration::from_secs(cli.settle_secs),
        report_dir: cli.report_dir.unwrap_or_else(scenario::default_report_dir),
        seed: cli.seed,
    };
    let report_dir = args.report_dir.clone();
    let report = scenario::run(args).await?;
    println!("{}", scenario::markdown(&report));
    println!(
        "report: {}",
        report_dir.join(format!("{}.json", report.run)).display()
    );
    if !report.passed {
        anyhow::bail!("scenario failed: {}", report.failures.join("; "));
    }
    Ok(())
}
