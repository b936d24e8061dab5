//! `javelin-loadtest`: synthetic load through the agent's real publish path, and
//! the benchmarks (see `docs/benchmarks.md`).

mod bench;
mod bench_consumer;
mod bench_query;

use std::time::Duration;

use clap::Parser;
use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::wire::{self, ProfileType, TargetIdentity};

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
    /// Agent parse + aggregate throughput on one core vs the JDK's `jfr summary`.
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
    },
    /// End-to-end consumer rows/s vs clickhouse-client inserting the same rows (the ceiling).
    BenchConsumer {
        #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(
            long,
            env = "JAVELIN_CLICKHOUSE_URL",
            default_value = "http://127.0.0.1:8123"
        )]
        clickhouse_url: String,
        /// Native port for clickhouse-client.
        #[arg(long, env = "JAVELIN_CLICKHOUSE_TCP_PORT", default_value_t = 9000)]
        clickhouse_tcp_port: u16,
        #[arg(long, default_value_t = 2000)]
        windows: u32,
        #[arg(long, default_value_t = 200)]
        stacks: u32,
    },
    /// Query API flamegraph / top latency for 1 service × 1 h × N pods seeded through the consumer.
    BenchQuery {
        #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(
            long,
            env = "JAVELIN_CLICKHOUSE_URL",
            default_value = "http://127.0.0.1:8123"
        )]
        clickhouse_url: String,
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
    /// Peak RSS of the agent profiling N demo JVMs.
    BenchAgentRss {
        #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 20)]
        jvms: usize,
        #[arg(long, default_value_t = 3)]
        windows: u64,
        #[arg(long, default_value_t = 10)]
        window_secs: u64,
    },
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    javelin_schema::process::init_logging();
    let args = match Cli::parse().command {
        Cmd::Publish(args) => args,
        Cmd::BenchParse {
            file,
            min_mb,
            repeat,
        } => return bench::bench_parse(file, min_mb, repeat),
        Cmd::BenchConsumer {
            brokers,
            clickhouse_url,
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
            brokers,
            clickhouse_url,
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
        Cmd::BenchAgentRss {
            brokers,
            jvms,
            windows,
            window_secs,
        } => {
            return bench::bench_agent_rss(&brokers, jvms, windows, window_secs);
        }
    };
    let publisher = Publisher::new(PublisherConfig {
        brokers: args.brokers.clone(),
        profiles_topic: args.profiles_topic.clone(),
        status_topic: javelin_schema::topics::STATUS.into(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let window_ms = args.window_secs * 1000;
    let first = (now_ms / window_ms - i64::from(args.windows)) * window_ms;
    let (mut messages, mut total) = (0u64, 0i64);
    for s in 0..args.services {
        for p in 0..args.pods {
            let target = TargetIdentity {
                cluster: "loadtest".into(),
                service: format!("loadtest-{s}"),
                pod: format!("loadtest-{s}-{p}"),
                node: "loadtest".into(),
                pid: p + 1,
                target_id: wire::target_id("loadtest", "loadtest", p + 1, i64::from(s)),
                ..Default::default()
            };
            for w in 0..args.windows {
                let start = first + i64::from(w) * window_ms;
                let mut agg = WindowAggregator::new(Bounds::default());
                for k in 0..args.stacks {
                    let frames: Vec<Frame> = [
                        "main".to_string(),
                        format!("svc{s}.Handler.handle"),
                        format!("svc{s}.Work.step{k}"),
                    ]
                    .iter()
                    .map(|name| Frame::synthetic(name))
                    .collect();
                    // Zipf-like weights: stack k gets 1/(k+1) of the mass.
                    let value = 10_000_000 * i64::from(args.stacks) / i64::from(k + 1);
                    total += value;
                    agg.add(ProfileType::Cpu, &frames.into(), value, 1);
                }
                for window in
                    agg.finish(&target, start, start + window_ms, &Default::default(), 0, 0)
                {
                    publisher
                        .send_to(
                            Destination::Profiles,
                            &window
                                .target
                                .as_ref()
                                .map(|t| t.service.clone())
                                .unwrap_or_default(),
                            &window.to_bytes(),
                        )
                        .await?;
                    messages += 1;
                }
            }
        }
    }
    println!("published {messages} messages, total cpu value {total} ns");
    Ok(())
}
