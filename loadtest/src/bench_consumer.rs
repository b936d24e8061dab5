//! `bench-consumer`: end-to-end rows/s from Kafka into ClickHouse with one
//! consumer, against `clickhouse-client` inserting the same sample rows from a
//! RowBinary file in the same run (the ceiling).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::rows::SampleRowRef;
use javelin_schema::wire::{ProfileType, TargetIdentity};

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConsumer {
    pub brokers: String,
    pub clickhouse_url: String,
    pub clickhouse_tcp_port: u16,
    pub windows: u32,
    pub stacks: u32,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The columns [`row_binary`] writes, in its order: the ceiling's INSERT names
/// them, so a column added to `samples` later cannot shift the others.
const ROW_BINARY_COLUMNS: &str = "service, profile_type, window_start, cluster, namespace, pod, \
     container, node, target_id, window_id, stack_id, value, count, insert_id, app_version";

/// RowBinary encoding of a sample row (String = LEB128 length + bytes; numbers
/// little-endian; a dictionary column is written as its plain type).
fn row_binary(row: &SampleRowRef<'_>, out: &mut Vec<u8>) {
    let string = |s: &str, out: &mut Vec<u8>| {
        let mut n = s.len() as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(s.as_bytes());
    };
    string(row.service, out);
    string(row.profile_type, out);
    out.extend_from_slice(&row.window_start.to_le_bytes());
    for s in [row.cluster, row.namespace, row.pod, row.container, row.node] {
        string(s, out);
    }
    for n in [row.target_id, row.window_id, row.stack_id] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&row.value.to_le_bytes());
    out.extend_from_slice(&row.count.to_le_bytes());
    out.extend_from_slice(&row.insert_id.to_le_bytes());
    string(row.app_version, out);
}

/// Column totals of the stored sample rows, as ClickHouse sums them (64-bit,
/// wrapping): an encoding out of step with the columns changes one.
#[derive(Debug, Default, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
struct Totals {
    rows: u64,
    target_id: u64,
    window_id: u64,
    stack_id: u64,
    value: i64,
    count: i64,
    insert_id: u64,
}

impl Totals {
    const SELECT: &str = "SELECT count(), sum(target_id), sum(window_id), sum(stack_id), \
         sum(value), sum(count), sum(insert_id) FROM samples_ceiling";

    fn add(&mut self, row: &SampleRowRef<'_>) {
        self.rows += 1;
        self.target_id = self.target_id.wrapping_add(row.target_id);
        self.window_id = self.window_id.wrapping_add(row.window_id);
        self.stack_id = self.stack_id.wrapping_add(row.stack_id);
        self.value = self.value.wrapping_add(row.value);
        self.count = self.count.wrapping_add(row.count);
        self.insert_id = self.insert_id.wrapping_add(row.insert_id);
    }
}

pub async fn run(cfg: BenchConsumer) -> anyhow::Result<()> {
    let run = format!("bench_consumer_{}", std::process::id());
    let (server, db) =
        javelin_loadtest::servers::bench_setup(&cfg.brokers, &cfg.clickhouse_url, &run).await?;
    let measured = measure(&cfg, &run, &db).await;
    // The run's database goes whatever happened (topics stay: the broker
    // keeps them in memory only until it restarts).
    let dropped = server
        .query(&format!("DROP DATABASE {run}"))
        .execute()
        .await
        .context("dropping the run's database");
    measured?;
    dropped
}

async fn measure(cfg: &BenchConsumer, run: &str, db: &clickhouse::Client) -> anyhow::Result<()> {
    let topic = format!("{run}.profiles");
    // `samples` has dictionary columns of numbers (migration 7): a copy of its
    // structure needs the setting that allows them.
    let (setting, value) = javelin_schema::migrations::ServerFeatures::detect(db)
        .await?
        .dictionary_setting();
    db.query("CREATE TABLE samples_ceiling AS samples")
        .with_setting(setting, value)
        .execute()
        .await
        .context("ceiling table")?;

    // The load: windows of `stacks` stacks (Zipf-like values), 8 pods of one service.
    eprintln!("producing {} windows × {} stacks", cfg.windows, cfg.stacks);
    let publisher = Publisher::new(PublisherConfig {
        brokers: cfg.brokers.clone(),
        profiles_topic: topic.clone(),
        status_topic: format!("{run}.status"),
        send_timeout: Duration::from_secs(60),
        properties: vec![],
    })?;
    let base = now_ms() / 10_000 * 10_000 - 3_600_000;
    let mut ceiling_file = Vec::new();
    let mut sends = Vec::new();
    let mut expected = Totals::default();
    for w in 0..cfg.windows {
        let pod = w % 8;
        let target = TargetIdentity {
            service: "bench".into(),
            pod: format!("bench-{pod}"),
            target_id: u64::from(pod) + 1,
            ..Default::default()
        };
        let mut agg = WindowAggregator::new(Bounds {
            max_stacks_per_window: u64::MAX,
            ..Bounds::default()
        });
        for k in 0..cfg.stacks {
            let frames: Vec<Frame> = [
                "main".to_string(),
                "bench.Handler.handle".to_string(),
                format!("bench.Work.step{k}"),
            ]
            .iter()
            .map(|n| Frame::synthetic(n))
            .collect();
            agg.add(
                ProfileType::Cpu,
                &frames.into(),
                1_000_000 * i64::from(cfg.stacks) / i64::from(k + 1),
                1,
            );
        }
        let start = base + i64::from(w / 8) * 10_000;
        for window in agg.finish(&target, start, start + 10_000, &Default::default(), 0, 0) {
            // The rows the consumer itself would make of this message.
            let source = javelin_consumer::convert::Source {
                topic: topic.clone(),
                partition: 0,
                offset: 0,
            };
            let rows =
                javelin_consumer::convert::window_rows(&window.to_bytes(), &source, now_ms())?;
            for row in rows.samples(1) {
                row_binary(&row, &mut ceiling_file);
                expected.add(&row);
            }
            sends.push(window.to_bytes());
        }
    }
    for chunk in sends.chunks(256) {
        let results = futures_join(
            chunk
                .iter()
                .map(|p| publisher.send_to(Destination::Profiles, "bench", p, None)),
        )
        .await;
        for r in results {
            r?;
        }
    }

    // The consumer, timed from start until every sample row is in ClickHouse
    // (its log: set RUST_LOG=javelin_consumer=debug to see each batch).
    let log = std::env::temp_dir().join(format!("{run}.consumer.log"));
    eprintln!("consumer log: {}", log.display());
    let (first_rows, consumed) = javelin_loadtest::servers::consume_until_stored(
        db,
        javelin_loadtest::servers::consumer_args(&cfg.clickhouse_url, &cfg.brokers, run),
        log,
        expected.rows,
    )
    .await?;

    // The ceiling: clickhouse-client inserting the same rows from a file.
    let file = std::env::temp_dir().join(format!("{run}.rowbinary"));
    std::fs::File::create(&file)?.write_all(&ceiling_file)?;
    let started = Instant::now();
    let status = Command::new("clickhouse-client")
        .args([
            "--port",
            &cfg.clickhouse_tcp_port.to_string(),
            "--database",
            run,
        ])
        .args([
            "--query",
            &format!("INSERT INTO samples_ceiling ({ROW_BINARY_COLUMNS}) FORMAT RowBinary"),
        ])
        .stdin(std::fs::File::open(&file)?)
        .status()
        .context("running clickhouse-client")?;
    let ceiling = started.elapsed();
    let _ = std::fs::remove_file(&file);
    if !status.success() {
        bail!("clickhouse-client failed");
    }
    let stored: Totals = db.query(Totals::SELECT).fetch_one().await?;
    if stored != expected {
        bail!("the ceiling stored {stored:?}, expected {expected:?}");
    }
    let expected_rows = expected.rows;
    let rate = |d: Duration| expected_rows as f64 / d.as_secs_f64();
    println!(
        "{expected_rows} sample rows ({} windows × {} stacks, {:.1} MiB of messages)",
        cfg.windows,
        cfg.stacks,
        sends_mib(&sends)
    );
    println!();
    println!("| path | time | rows/s |");
    println!("|---|---|---|");
    println!(
        "| Kafka → javelin-consumer → ClickHouse (end to end, stacks and ledger included) | {:.2} s | {:.0} |",
        consumed.as_secs_f64(),
        rate(consumed)
    );
    println!(
        "| clickhouse-client INSERT … FORMAT RowBinary from a file (ceiling, samples only) | {:.2} s | {:.0} |",
        ceiling.as_secs_f64(),
        rate(ceiling)
    );
    if let Some(first) = first_rows {
        let steady = consumed.saturating_sub(first);
        // Stored rows are polled every 100 ms: a shorter tail has no rate.
        let steady_rate = if steady >= Duration::from_millis(200) {
            format!("{:.0}", rate(steady))
        } else {
            "— (every row arrived within a poll or two)".to_string()
        };
        println!(
            "| … of which start-up and group join until the first rows: {:.2} s; from the first rows on | {:.2} s | {steady_rate} |",
            first.as_secs_f64(),
            steady.as_secs_f64(),
        );
    }
    println!();
    println!(
        "ratio consumer / ceiling: {:.2} (target ≥ 0.80)",
        rate(consumed) / rate(ceiling)
    );
    Ok(())
}

fn sends_mib(sends: &[Vec<u8>]) -> f64 {
    sends.iter().map(|s| s.len()).sum::<usize>() as f64 / (1 << 20) as f64
}

pub(crate) async fn futures_join<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}
