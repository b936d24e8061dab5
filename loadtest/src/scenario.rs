//! Scenarios: a stream of simulated agents' windows through the real pipeline
//! (publisher → Kafka → javelin-consumer → a ClickHouse of the scenario's own),
//! with a fault injected on schedule, ending with the reconciliation: what was
//! produced against what ClickHouse holds — lost, double-counted, and dropped
//! with an account in the ledger. A pass is 0 lost, 0 double-counted, every
//! drop accounted, and no unplanned ClickHouse restart.

use javelin_schema::rows::SAMPLES_ONCE;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clickhouse::Row;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;

use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::{Destination, Spool, Spooled};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::cluster::{CLUSTER, NODES, PrivateCluster};
use crate::load::{Expected, Shape, windows_for_tick};
use crate::query_view::{QueryView, ViewTotals};
use crate::servers::{ConsumerProcess, PrivateClickHouse, PrivateTansu, sibling};
use javelin_schema::topology::Topology;

/// The fault a scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Load only.
    Steady,
    /// Allocation-heavy load with lock contention; every type non-empty, truncation visible.
    HighVolume,
    /// ClickHouse stopped under load for `--outage-secs`.
    ClickhouseOutage,
    /// The consumer SIGKILLed at random points and restarted.
    ConsumerCrash,
    /// The broker (a tansu of the scenario's own, durable sqlite storage) killed
    /// for `--outage-secs` and restarted; the agents' spool carries the gap.
    BrokerRestart,
    /// A fraction of garbage and schema-invalid messages.
    Poison,
    /// A ClickHouse cluster of two shards (ZooKeeper, two servers): node 2
    /// SIGKILLed under load and started again after `--outage-secs`.
    ClusterNodeKill,
}

/// The ClickHouse a scenario writes to: one server, or a two-shard cluster.
#[derive(Debug)]
enum Backend {
    Single(PrivateClickHouse),
    Cluster(PrivateCluster),
}

/// The node a cluster scenario kills (node 1 keeps answering the pipeline's
/// and the reconciliation's queries while it is down).
const KILLED_NODE: usize = 2;

impl Backend {
    fn start(scenario: Scenario, name: &str) -> anyhow::Result<Backend> {
        Ok(if scenario == Scenario::ClusterNodeKill {
            Backend::Cluster(PrivateCluster::start(name)?)
        } else {
            Backend::Single(PrivateClickHouse::start(name)?)
        })
    }

    /// Where clients connect (node 1 of a cluster).
    fn url(&self) -> String {
        match self {
            Backend::Single(ch) => ch.url(),
            Backend::Cluster(cluster) => cluster.url(),
        }
    }

    /// The flags that name the topology to `javelin-consumer` and `javelin-query`.
    fn topology_args(&self) -> Vec<String> {
        match self {
            Backend::Single(_) => Vec::new(),
            Backend::Cluster(_) => vec!["--clickhouse-cluster".into(), CLUSTER.into()],
        }
    }

    fn topology(&self) -> Topology {
        match self {
            Backend::Single(_) => Topology::SingleNode,
            Backend::Cluster(_) => Topology::Cluster(CLUSTER.into()),
        }
    }

    /// The largest resident memory of a server process.
    fn rss_bytes(&self) -> Option<u64> {
        match self {
            Backend::Single(ch) => ch.rss_bytes(),
            Backend::Cluster(cluster) => (1..=NODES).filter_map(|n| cluster.rss_bytes(n)).max(),
        }
    }

    /// Sample rows in each node's local table (cluster only; a node that
    /// does not answer counts 0).
    async fn rows_per_shard(&self, database: &str) -> Vec<u64> {
        let Backend::Cluster(cluster) = self else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for url in cluster.urls() {
            let node = clickhouse::Client::default()
                .with_url(url)
                .with_validation(false);
            rows.push(
                node.query(&format!("SELECT count() FROM {database}.samples_local"))
                    .fetch_one::<u64>()
                    .await
                    .unwrap_or(0),
            );
        }
        rows
    }

    /// Starts the planned outage.
    fn stop(&self) -> anyhow::Result<()> {
        match self {
            Backend::Single(ch) => ch.stack("stop-clickhouse"),
            Backend::Cluster(cluster) => cluster.kill_node(KILLED_NODE),
        }
    }

    /// Ends it.
    fn start_again(&self) -> anyhow::Result<()> {
        match self {
            Backend::Single(ch) => ch.stack("start-clickhouse"),
            Backend::Cluster(cluster) => cluster.start_node(KILLED_NODE),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScenarioArgs {
    pub scenario: Scenario,
    pub brokers: String,
    pub shape: Shape,
    /// Windows (ticks) each pod publishes.
    pub windows: u32,
    /// Time between ticks (the stream's pace).
    pub tick: Duration,
    pub outage: Duration,
    pub kills: u32,
    /// Poison messages per valid message (0–1).
    pub poison_fraction: f64,
    /// How long the pipeline may take to settle after the last window.
    pub settle: Duration,
    pub report_dir: PathBuf,
    pub seed: u64,
}

/// What one run measured and concluded.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub run: String,
    pub passed: bool,
    pub failures: Vec<String>,
    pub produced_messages: u64,
    pub produced_rows: u64,
    pub produced_cells: usize,
    pub lost_cells: usize,
    pub lost_value: i64,
    pub double_counted_cells: usize,
    pub double_counted_value: i64,
    pub unexpected_cells: usize,
    /// (service, type) pairs whose flamegraph or top total in the query API
    /// differs from what was produced.
    pub query_api_mismatches: usize,
    pub poison_sent: u64,
    pub rejected_in_ledger: u64,
    pub truncated_parts_produced: u64,
    pub truncated_parts_in_ledger: u64,
    pub dropped_stacks_in_ledger: u64,
    pub publish_failures: u64,
    /// Deliveries that failed and were retried from the agents' spool (a broker
    /// outage shows here: the spool carried the gap).
    pub delivery_retries: u64,
    pub consumer_starts: u32,
    pub clickhouse_restarts_planned: u32,
    pub clickhouse_restarts_unplanned: u32,
    /// Peak resident memory of the ClickHouse server process.
    pub clickhouse_peak_memory_bytes: i64,
    pub max_consumer_lag: i64,
    /// Bytes the broker's storage takes at the end (own durable tansu only;
    /// `null` for the shared in-memory broker).
    pub broker_disk_bytes: Option<u64>,
    /// Messages not yet committed by the group when the run ended.
    pub final_consumer_lag: i64,
    pub ingest_latency_p50_ms: f64,
    pub ingest_latency_max_ms: i64,
    pub elapsed_secs: f64,
    pub rows_per_second: f64,
    pub messages_per_second: f64,
    pub types_with_data: Vec<String>,
    /// Sample rows each node of a cluster holds in its local table, node 1
    /// first (empty on one server): both shards take a share.
    pub rows_per_shard: Vec<u64>,
}

#[derive(Debug, Row, Deserialize)]
struct StoredCell {
    service: String,
    profile_type: String,
    window_start: u32,
    value: i64,
}

#[derive(Debug, Row, Deserialize)]
struct LedgerTotals {
    rejected: u64,
    truncated: u64,
    dropped_stacks: u64,
    latency_p50: f64,
    latency_max: i64,
}

/// Deterministic pseudo-random numbers (xorshift64): scenarios replay with `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// Samples taken while the scenario runs.
#[derive(Debug, Default)]
struct Watch {
    peak_memory: i64,
    max_lag: i64,
    last_lag: i64,
    last_uptime: Option<u64>,
    restarts: u32,
    lag: Option<GroupLag>,
}

/// The consumer group's lag as the broker sees it: end offsets minus committed
/// offsets (independent of the consumer's own gauge).
#[derive(Debug, Clone)]
struct GroupLag {
    brokers: String,
    group: String,
    topic: String,
    partitions: i32,
}

impl GroupLag {
    /// Messages not yet committed by the group, per partition (end − committed,
    /// at least 0), summed. The end is what the broker lists: on tansu 0.6 the
    /// last record batch's first offset + 1, so lag reads low by up to one
    /// batch per partition; exact on Kafka. Flooring each partition before
    /// summing keeps a partition whose listed end lags its commits from
    /// cancelling real lag elsewhere.
    fn measure(&self) -> Option<i64> {
        self.offsets().map(|(_, lag)| lag)
    }

    /// (committed offsets summed, lag as [`Self::measure`] counts it).
    fn offsets(&self) -> Option<(i64, i64)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .ok()?;
        let timeout = Duration::from_secs(2);
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = client.committed_offsets(tpl, timeout).ok()?;
        let (mut committed_sum, mut lag) = (0, 0);
        for p in 0..self.partitions {
            let (_, high) = client.fetch_watermarks(&self.topic, p, timeout).ok()?;
            let at = match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => 0,
            };
            committed_sum += at;
            lag += (high - at).max(0);
        }
        Some((committed_sum, lag))
    }
}

impl Watch {
    async fn sample(&mut self, db: &clickhouse::Client, ch: &Backend) {
        if let Some(rss) = ch.rss_bytes() {
            self.peak_memory = self.peak_memory.max(rss as i64);
        }
        if let Ok(uptime) = db
            .query("SELECT toUInt64(uptime())")
            .fetch_one::<u64>()
            .await
        {
            if self.last_uptime.is_some_and(|last| uptime < last) {
                self.restarts += 1;
            }
            self.last_uptime = Some(uptime);
        }
        if let Some(lag) = self.lag.clone()
            && let Ok(Some(lag)) = tokio::task::spawn_blocking(move || lag.measure()).await
        {
            self.max_lag = self.max_lag.max(lag);
            self.last_lag = lag;
        }
    }
}

pub async fn run(args: ScenarioArgs) -> anyhow::Result<Report> {
    let name = format!(
        "scenario_{}_{}",
        format!("{:?}", args.scenario).to_lowercase(),
        std::process::id()
    );
    std::fs::create_dir_all(&args.report_dir)?;
    let ch = Backend::start(args.scenario, &name)?;
    let mut tansu = if args.scenario == Scenario::BrokerRestart {
        Some(PrivateTansu::start(&name)?)
    } else {
        None
    };
    let brokers = tansu
        .as_ref()
        .map_or_else(|| args.brokers.clone(), PrivateTansu::brokers);
    let server = clickhouse::Client::default()
        .with_url(ch.url())
        .with_validation(false);
    let topics = [
        format!("{name}.profiles"),
        format!("{name}.status"),
        format!("{name}.dlq"),
    ];
    crate::topics::create(&brokers, &topics, 4).await?;
    let migrate = std::process::Command::new(sibling("javelin-consumer")?)
        .args([
            "migrate",
            "--clickhouse-url",
            &ch.url(),
            "--database",
            &name,
        ])
        .args(ch.topology_args())
        .output()?;
    anyhow::ensure!(
        migrate.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    // The reconciliation reads the table path with the settings readers send.
    let db = ch.topology().reader(server.clone().with_database(&name));
    let mut consumer_args = crate::servers::consumer_args(&ch.url(), &brokers, &name);
    consumer_args.extend(ch.topology_args());
    consumer_args.extend(
        [
            "--batch-linger-ms",
            "500",
            // tansu 0.6 keeps a killed member (even as group leader) past a 10-s
            // session and hands the survivor an empty assignment; at 6 s (Kafka's
            // minimum) it evicts it in time. See docs/benchmarks.md.
            "--kafka-property",
            "session.timeout.ms=6000",
        ]
        .map(String::from),
    );
    let mut consumer = ConsumerProcess::start(
        consumer_args,
        args.report_dir.join(format!("{name}.consumer.log")),
    )?;
    // The agents' own path: windows go into the bounded spool, a sender drains
    // it into Kafka and re-queues what fails (as javelin-agent does).
    let publisher = Arc::new(Publisher::new(PublisherConfig {
        brokers: brokers.clone(),
        profiles_topic: topics[0].clone(),
        status_topic: topics[1].clone(),
        send_timeout: Duration::from_secs(5),
        properties: vec![],
    })?);
    let spool = Spool::new(SPOOL_BYTES);
    let stop_sender = Arc::new(Notify::new());
    let sender = {
        let (spool, publisher, stop) = (spool.clone(), publisher.clone(), stop_sender.clone());
        tokio::spawn(async move { spool.run_sender(publisher, 64, stop).await })
    };
    let mut pushed = 0u64;

    let mut rng = Rng(args.seed | 1);
    let mut expected = Expected::default();
    let mut watch = Watch {
        lag: Some(GroupLag {
            brokers: brokers.clone(),
            group: name.clone(),
            topic: topics[0].clone(),
            partitions: 4,
        }),
        ..Watch::default()
    };
    let (mut poison_sent, mut publish_failures, mut planned_restarts) = (0u64, 0u64, 0u32);
    // Faults on schedule: the outage over the middle third, kills at random ticks.
    let outage_at = args.windows / 3;
    let mut kill_ticks: Vec<u32> = (0..args.kills)
        .map(|_| 1 + (rng.next() % u64::from(args.windows.max(2) - 1)) as u32)
        .collect();
    kill_ticks.sort_unstable();
    kill_ticks.reverse();
    // A kill lands at its tick or later, once the running consumer has committed
    // something: killing a consumer before it ever joined tests the broker's
    // group coordinator, not the consumer (see docs/benchmarks.md on tansu).
    let mut committed_at_start = 0;
    let mut outage_started: Option<Instant> = None;
    let window_ms = args.shape.window_secs * 1000;
    // The first window is the one that just ended; with a tick of one window
    // length, each window is published as it ends (ingest latency is real).
    let first_start = crate::now_ms() / window_ms * window_ms - window_ms;
    let progress = ProgressBar::new(u64::from(args.windows)).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} windows {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_prefix(format!("{:?}", args.scenario));
    let started = Instant::now();
    for tick in 0..args.windows {
        let tick_started = Instant::now();
        if tick == outage_at {
            if matches!(
                args.scenario,
                Scenario::ClickhouseOutage | Scenario::ClusterNodeKill
            ) {
                progress.set_message("ClickHouse stopped");
                ch.stop()?;
                outage_started = Some(Instant::now());
            }
            if let Some(t) = tansu.as_mut() {
                progress.set_message("broker killed");
                t.stop();
                outage_started = Some(Instant::now());
            }
        }
        if let Some(at) = outage_started
            && at.elapsed() >= args.outage
        {
            end_outage(&ch, tansu.as_mut(), &mut watch, &mut planned_restarts)?;
            outage_started = None;
            progress.set_message("back");
        }
        if args.scenario == Scenario::ConsumerCrash
            && kill_ticks.last().is_some_and(|&t| tick >= t)
            && let Some(lag) = watch.lag.clone()
            && let Ok(Some((committed, _))) =
                tokio::task::spawn_blocking(move || lag.offsets()).await
            && committed > committed_at_start
        {
            kill_ticks.pop();
            progress.set_message(format!("SIGKILL #{}", consumer.starts));
            consumer.kill_and_restart()?;
            committed_at_start = committed;
        }
        consumer.check_alive()?;
        let start = first_start + i64::from(tick) * window_ms;
        let windows = windows_for_tick(&args.shape, start, &mut expected);
        let mut payloads: Vec<(String, Vec<u8>)> = windows
            .iter()
            .map(|(k, w)| (k.clone(), w.to_bytes()))
            .collect();
        if args.scenario == Scenario::Poison {
            for (_, window) in &windows {
                if rng.chance(args.poison_fraction) {
                    payloads.push(poison(window, rng.next()));
                    poison_sent += 1;
                }
            }
        }
        for (key, payload) in payloads {
            spool.push(Spooled {
                destination: Destination::Profiles,
                key,
                payload,
                target_id: 0,
            });
            pushed += 1;
        }
        watch.sample(&db, &ch).await;
        progress.inc(1);
        if let Some(rest) = args.tick.checked_sub(tick_started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    // An outage still running at the end is ended now.
    if let Some(at) = outage_started.take() {
        tokio::time::sleep(args.outage.saturating_sub(at.elapsed())).await;
        end_outage(&ch, tansu.as_mut(), &mut watch, &mut planned_restarts)?;
    }
    progress.set_message("settling");

    // Settle: until every produced cell is stored and every poison message is in the ledger.
    let deadline = Instant::now() + args.settle;
    let (stored, ledger) = loop {
        consumer.check_alive()?;
        watch.sample(&db, &ch).await;
        let stored = stored_cells(&db).await.unwrap_or_default();
        let ledger = ledger_totals(&db).await.ok();
        let complete = expected
            .cells
            .iter()
            .all(|(k, v)| stored.get(k).is_some_and(|s| *s == v.0))
            && ledger.as_ref().is_some_and(|l| l.rejected >= poison_sent)
            && watch.last_lag == 0
            && spool.delivered() + spool.total_drops().messages >= pushed;
        if complete || Instant::now() >= deadline {
            break (stored, ledger);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish_with_message("done");
    stop_sender.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(10), sender).await;
    publish_failures += spool.total_drops().messages;
    let delivery_retries = spool.failed_deliveries();
    let ledger = ledger.unwrap_or(LedgerTotals {
        rejected: 0,
        truncated: 0,
        dropped_stacks: 0,
        latency_p50: 0.0,
        latency_max: 0,
    });
    let broker_disk_bytes = tansu.as_ref().map(|t| dir_bytes(&t.dir));
    let rows_per_shard = ch.rows_per_shard(&name).await;
    let shown = shown_totals(&ch, &name, &expected).await;
    let observed = Observed {
        shown,
        stored,
        ledger,
        poison_sent,
        publish_failures,
        delivery_retries,
        watch,
        consumer_starts: consumer.starts,
        planned_restarts,
        elapsed,
    };
    let mut report = reconcile(&args, &name, &expected, &observed);
    report.broker_disk_bytes = broker_disk_bytes;
    report.rows_per_shard = rows_per_shard;
    if let Backend::Cluster(_) = ch
        && report.rows_per_shard.iter().filter(|&&n| n > 0).count() < NODES
    {
        report.passed = false;
        report.failures.push(format!(
            "not every shard holds rows: {:?}",
            report.rows_per_shard
        ));
    }
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.report_dir.join(format!("{name}.json")), &json)?;
    std::fs::write(
        args.report_dir.join(format!("{name}.md")),
        markdown(&report),
    )?;
    drop(consumer);
    drop(ch);
    drop(tansu);
    Ok(report)
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The agents' spool in a scenario: large enough that nothing is dropped
/// unless the broker stays away far longer than any scenario's outage.
const SPOOL_BYTES: usize = 512 << 20;

/// Brings back what the scenario stopped: ClickHouse (a planned restart) or the broker.
fn end_outage(
    ch: &Backend,
    tansu: Option<&mut PrivateTansu>,
    watch: &mut Watch,
    planned_restarts: &mut u32,
) -> anyhow::Result<()> {
    match tansu {
        Some(t) => t.resume(),
        None => {
            ch.start_again()?;
            *planned_restarts += 1;
            watch.last_uptime = None;
            Ok(())
        }
    }
}

/// A poison message standing in for `window`: garbage bytes or a window that
/// decodes but breaks the contract (part index past the part count).
fn poison(window: &javelin_schema::wire::ProfileWindow, r: u64) -> (String, Vec<u8>) {
    let key = window
        .target
        .as_ref()
        .map(|t| t.service.clone())
        .unwrap_or_default();
    if r.is_multiple_of(2) {
        (key, b"\xff\xfe garbage, not a protobuf message".to_vec())
    } else {
        let mut invalid = window.clone();
        invalid.part_index = invalid.part_count + 3;
        (key, invalid.to_bytes())
    }
}

async fn stored_cells(
    db: &clickhouse::Client,
) -> Result<std::collections::BTreeMap<crate::load::Cell, i64>, clickhouse::error::Error> {
    let rows = db
        .query(&format!("SELECT service, profile_type, toUInt32(window_start) AS window_start, sum(value) AS value FROM {SAMPLES_ONCE} GROUP BY service, profile_type, window_start"))
        .fetch_all::<StoredCell>()
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let kind = javelin_schema::wire::ProfileType::from_name(&r.profile_type)?;
            Some(((r.service, kind.name(), r.window_start), r.value))
        })
        .collect())
}

async fn ledger_totals(db: &clickhouse::Client) -> Result<LedgerTotals, clickhouse::error::Error> {
    db.query(
        "SELECT countIf(status = 'rejected') AS rejected, countIf(status = 'truncated') AS truncated,
                sum(dropped_stacks) AS dropped_stacks,
                toFloat64(quantileIf(0.5)(ingest_latency_ms, status != 'rejected')) AS latency_p50,
                maxIf(ingest_latency_ms, status != 'rejected') AS latency_max
         FROM ingest_ledger FINAL",
    )
    .fetch_one::<LedgerTotals>()
    .await
}

/// Per (service, type) over the run's range: (produced, what the query API
/// shows), or the API's error.
type Shown = anyhow::Result<Vec<((String, &'static str), i64, ViewTotals)>>;

/// The produced totals per (service, type) next to the query API's flamegraph
/// and top totals for the same range: what a user of the UI would see.
async fn shown_totals(ch: &Backend, database: &str, expected: &Expected) -> Shown {
    let mut produced: std::collections::BTreeMap<(String, &'static str), i64> =
        std::collections::BTreeMap::new();
    for ((service, kind, _), (value, _)) in &expected.cells {
        *produced.entry((service.clone(), *kind)).or_default() += value;
    }
    let starts = expected.cells.keys().map(|k| i64::from(k.2) * 1000);
    let (Some(from), Some(to)) = (starts.clone().min(), starts.max()) else {
        return Ok(Vec::new());
    };
    let view = QueryView::start(
        &crate::servers::sibling("javelin-query")?,
        &ch.url(),
        database,
        &ch.topology_args(),
    )?;
    let mut shown = Vec::new();
    for ((service, kind), value) in produced {
        let totals = view
            .totals_reaching(
                &service,
                kind,
                (from, to + 1000),
                value,
                Duration::from_secs(10),
            )
            .await?;
        shown.push(((service, kind), value, totals));
    }
    Ok(shown)
}

/// What a run saw: the stored cells, the ledger, and the run's own counters.
struct Observed {
    shown: Shown,
    stored: std::collections::BTreeMap<crate::load::Cell, i64>,
    ledger: LedgerTotals,
    poison_sent: u64,
    publish_failures: u64,
    delivery_retries: u64,
    watch: Watch,
    consumer_starts: u32,
    planned_restarts: u32,
    elapsed: f64,
}

/// Produced against stored: the verdict and every number behind it.
fn reconcile(args: &ScenarioArgs, run: &str, expected: &Expected, o: &Observed) -> Report {
    let Observed {
        shown,
        stored,
        ledger,
        poison_sent,
        publish_failures,
        delivery_retries,
        watch,
        consumer_starts,
        planned_restarts,
        elapsed,
    } = o;
    let (poison_sent, publish_failures, consumer_starts, planned_restarts, elapsed) = (
        *poison_sent,
        *publish_failures,
        *consumer_starts,
        *planned_restarts,
        *elapsed,
    );
    let (mut lost_cells, mut lost_value, mut double_cells, mut double_value) = (0, 0, 0, 0);
    for (cell, (value, _)) in &expected.cells {
        let got = stored.get(cell).copied().unwrap_or(0);
        if got < *value {
            lost_cells += 1;
            lost_value += value - got;
        } else if got > *value {
            double_cells += 1;
            double_value += got - value;
        }
    }
    let unexpected_cells = stored
        .keys()
        .filter(|k| !expected.cells.contains_key(*k))
        .count();
    let mut types: Vec<String> = stored
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, _)| k.1.to_string())
        .collect();
    types.sort();
    types.dedup();
    let mut failures = Vec::new();
    if lost_cells > 0 {
        failures.push(format!(
            "{lost_cells} cells lost {lost_value} of their value"
        ));
    }
    if double_cells > 0 {
        failures.push(format!(
            "{double_cells} cells double-counted by {double_value}"
        ));
    }
    if unexpected_cells > 0 {
        failures.push(format!("{unexpected_cells} cells nobody produced"));
    }
    let mut query_api_mismatches = 0;
    match shown {
        Ok(shown) => {
            for ((service, kind), produced, totals) in shown {
                if totals.flamegraph != *produced || totals.top != *produced {
                    query_api_mismatches += 1;
                    failures.push(format!(
                        "{service}/{kind}: produced {produced}, the query API shows flamegraph {} and top {}",
                        totals.flamegraph, totals.top
                    ));
                }
            }
        }
        Err(e) => failures.push(format!("the query API could not be read: {e:#}")),
    }
    if ledger.rejected != poison_sent {
        failures.push(format!(
            "{poison_sent} poison messages sent but {} rejected rows in the ledger",
            ledger.rejected
        ));
    }
    if ledger.truncated != expected.truncated_parts {
        failures.push(format!(
            "{} truncated parts produced but {} in the ledger",
            expected.truncated_parts, ledger.truncated
        ));
    }
    if watch.last_lag > 0 {
        failures.push(format!(
            "the consumer group still lags {} messages at the end",
            watch.last_lag
        ));
    }
    if publish_failures > 0 {
        failures.push(format!("{publish_failures} windows could not be published"));
    }
    if watch.restarts > 0 {
        failures.push(format!(
            "ClickHouse restarted {} times unplanned",
            watch.restarts
        ));
    }
    if args.scenario == Scenario::HighVolume && types.len() < 4 {
        failures.push(format!("not every type has data: {types:?}"));
    }
    Report {
        scenario: args.scenario,
        run: run.to_string(),
        passed: failures.is_empty(),
        failures,
        produced_messages: expected.messages,
        produced_rows: expected.rows,
        produced_cells: expected.cells.len(),
        lost_cells,
        lost_value,
        double_counted_cells: double_cells,
        double_counted_value: double_value,
        query_api_mismatches,
        unexpected_cells,
        poison_sent,
        rejected_in_ledger: ledger.rejected,
        truncated_parts_produced: expected.truncated_parts,
        truncated_parts_in_ledger: ledger.truncated,
        dropped_stacks_in_ledger: ledger.dropped_stacks,
        publish_failures,
        delivery_retries: *delivery_retries,
        consumer_starts,
        clickhouse_restarts_planned: planned_restarts,
        clickhouse_restarts_unplanned: watch.restarts,
        clickhouse_peak_memory_bytes: watch.peak_memory,
        max_consumer_lag: watch.max_lag,
        broker_disk_bytes: None,
        final_consumer_lag: watch.last_lag,
        ingest_latency_p50_ms: ledger.latency_p50,
        ingest_latency_max_ms: ledger.latency_max,
        elapsed_secs: elapsed,
        rows_per_second: expected.rows as f64 / elapsed.max(1e-9),
        messages_per_second: (expected.messages + poison_sent) as f64 / elapsed.max(1e-9),
        types_with_data: types,
        rows_per_shard: Vec::new(),
    }
}

/// The report as a markdown summary.
pub fn markdown(r: &Report) -> String {
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    let mut out = format!(
        "## Scenario `{}` — {verdict}\n\nrun `{}`, {:.1} s\n\n| measure | value |\n|---|---|\n",
        serde_json::to_value(r.scenario)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        r.run,
        r.elapsed_secs
    );
    for (k, v) in [
        (
            "produced messages / rows / cells",
            format!(
                "{} / {} / {}",
                r.produced_messages, r.produced_rows, r.produced_cells
            ),
        ),
        (
            "lost cells (value)",
            format!("{} ({})", r.lost_cells, r.lost_value),
        ),
        (
            "query API totals differing (service/type pairs)",
            r.query_api_mismatches.to_string(),
        ),
        (
            "double-counted cells (value)",
            format!("{} ({})", r.double_counted_cells, r.double_counted_value),
        ),
        (
            "poison sent / rejected in ledger",
            format!("{} / {}", r.poison_sent, r.rejected_in_ledger),
        ),
        (
            "truncated parts produced / in ledger",
            format!(
                "{} / {}",
                r.truncated_parts_produced, r.truncated_parts_in_ledger
            ),
        ),
        (
            "dropped stacks (ledger)",
            r.dropped_stacks_in_ledger.to_string(),
        ),
        (
            "publish failures (agent side)",
            r.publish_failures.to_string(),
        ),
        (
            "deliveries retried from the spool",
            r.delivery_retries.to_string(),
        ),
        ("consumer starts", r.consumer_starts.to_string()),
        (
            "ClickHouse restarts planned / unplanned",
            format!(
                "{} / {}",
                r.clickhouse_restarts_planned, r.clickhouse_restarts_unplanned
            ),
        ),
        (
            "ClickHouse peak memory",
            format!(
                "{:.1} MiB",
                r.clickhouse_peak_memory_bytes as f64 / 1048576.0
            ),
        ),
        (
            "broker disk",
            r.broker_disk_bytes
                .map_or("n/a (shared in-memory broker)".to_string(), |b| {
                    format!("{:.1} MiB", b as f64 / 1048576.0)
                }),
        ),
        (
            "sample rows per shard (cluster)",
            if r.rows_per_shard.is_empty() {
                "n/a (one server)".to_string()
            } else {
                format!("{:?}", r.rows_per_shard)
            },
        ),
        (
            "consumer lag max / at the end (messages)",
            format!("{} / {}", r.max_consumer_lag, r.final_consumer_lag),
        ),
        (
            "ingest latency p50 / max",
            format!(
                "{:.0} ms / {} ms",
                r.ingest_latency_p50_ms, r.ingest_latency_max_ms
            ),
        ),
        (
            "rows/s, messages/s",
            format!("{:.0}, {:.1}", r.rows_per_second, r.messages_per_second),
        ),
        ("types with data", r.types_with_data.join(", ")),
    ] {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    for f in &r.failures {
        out.push_str(&format!("\n- failure: {f}"));
    }
    out.push('\n');
    out
}

/// Reports land here unless `--report-dir` says otherwise.
pub fn default_report_dir() -> PathBuf {
    crate::servers::repo_root()
        .map(|r| r.join("target/loadtest-reports"))
        .unwrap_or_else(|_| PathBuf::from("loadtest-reports"))
}

impl Scenario {
    /// The settings of the short mode (the test suite) and of the long mode.
    pub fn defaults(self, short: bool) -> (Shape, u32, Duration, Duration, u32, f64) {
        let high = self == Scenario::HighVolume;
        let shape = Shape {
            services: if short {
                2
            } else if high {
                10
            } else {
                5
            },
            pods: if short {
                3
            } else if high {
                20
            } else {
                10
            },
            stacks: if short {
                50
            } else if high {
                2000
            } else {
                500
            },
            window_secs: if short { 1 } else { 10 },
            alloc_heavy: high,
            lock_heavy: high,
            max_stacks_per_window: if high { 1500 } else { 20_000 },
        };
        let windows = if short { 20 } else { 60 };
        let tick = Duration::from_secs(shape.window_secs as u64);
        let outage = Duration::from_secs(if short { 6 } else { 120 });
        let kills = if short { 2 } else { 10 };
        (shape, windows, tick, outage, kills, 0.05)
    }
}
