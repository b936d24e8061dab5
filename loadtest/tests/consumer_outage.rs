//! A ClickHouse outage under a steady stream: the consumer keeps its batch,
//! commits nothing while ClickHouse is down, stays in the group, and afterwards
//! the stored totals equal the produced totals exactly. Uses a ClickHouse server
//! of its own (started with `dev/stack`'s own launcher on free ports), so other
//! tests keep theirs.

mod support;

use javelin_schema::rows::SAMPLES_ONCE;
use support::{bin, committed, members};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::testkit::{
    Reaped, RunTopics, create_topics, free_port, kafka_brokers, unique_name, wait_for,
};
use javelin_schema::wire::{ProfileType, TargetIdentity};
use rdkafka::consumer::{BaseConsumer, Consumer};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A ClickHouse server of this test's own, driven through `dev/stack`.
struct OwnClickHouse {
    dir: PathBuf,
    http: u16,
    tcp: u16,
}

impl OwnClickHouse {
    fn stack(&self, verb: &str) {
        let status = Command::new(repo().join("dev/stack"))
            .arg(verb)
            .env("JAVELIN_STACK_DIR", &self.dir)
            .env("JAVELIN_CLICKHOUSE_HTTP_PORT", self.http.to_string())
            .env("JAVELIN_CLICKHOUSE_TCP_PORT", self.tcp.to_string())
            .stdout(Stdio::null())
            .status()
            .expect("dev/stack runs");
        assert!(status.success(), "dev/stack {verb} failed");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.stack("stop-clickhouse");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A ClickHouse of the test's own with the schema migrated, and the run's topics.
async fn setup(run: &str) -> (OwnClickHouse, RunTopics) {
    let ch = OwnClickHouse {
        dir: std::env::temp_dir().join(run),
        http: free_port(),
        tcp: free_port(),
    };
    ch.stack("start-clickhouse");
    let topics = RunTopics {
        profiles: format!("{run}.profiles"),
        status: format!("{run}.status"),
        dlq: format!("{run}.dlq"),
    };
    create_topics(&[&topics.profiles, &topics.status, &topics.dlq], 2).await;
    let migrate = Command::new(bin("javelin-consumer"))
        .args(["migrate", "--clickhouse-url", &ch.url(), "--database", run])
        .output()
        .expect("migrate");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    (ch, topics)
}

/// The consumer of the run, logging to `log_path`.
fn spawn_consumer(ch: &OwnClickHouse, run: &str, topics: &RunTopics, log_path: &PathBuf) -> Reaped {
    std::fs::create_dir_all(log_path.parent().expect("dir")).expect("log dir");
    let log = std::fs::File::create(log_path).expect("log");
    Reaped(
        Command::new(bin("javelin-consumer"))
            .args(topics.consumer_args(&ch.url(), run, &kafka_brokers(), run))
            .args(["--batch-linger-ms", "200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("consumer"),
    )
}

/// The (rows, value) totals the samples table holds.
async fn totals(ch: &OwnClickHouse, run: &str) -> Option<(u64, i64)> {
    clickhouse::Client::default()
        .with_url(ch.url())
        .with_database(run)
        .with_validation(false)
        .query(&format!("SELECT count(), sum(value) FROM {SAMPLES_ONCE}"))
        .fetch_one::<(u64, i64)>()
        .await
        .ok()
}

/// The sums of every flamegraph and top total the query API shows for the
/// run, once they reach `want` (or after 10 s).
async fn shown_total(ch: &OwnClickHouse, run: &str, want: i64) -> (i64, i64) {
    let view =
        javelin_loadtest::query_view::QueryView::start(&bin("javelin-query"), &ch.url(), run, &[])
            .expect("query API");
    let now = javelin_loadtest::now_ms();
    let shown = view
        .grand_total_reaching(
            now - 6 * 86_400_000,
            now + 3_600_000,
            want,
            Duration::from_secs(10),
        )
        .await
        .expect("query API totals");
    (shown.flamegraph, shown.top)
}

/// Window `i` of the stream: 10 stacks of one target; returns the payload, rows and value.
fn window(i: i64, base: i64) -> (Vec<u8>, u64, i64) {
    let target = TargetIdentity {
        service: "svc".into(),
        target_id: 5,
        ..Default::default()
    };
    let mut agg = WindowAggregator::new(Bounds::default());
    let mut value = 0;
    for k in 0..10 {
        let frames: Vec<Frame> = ["main".to_string(), format!("Step{k}")]
            .iter()
            .map(|n| Frame::synthetic(n))
            .collect();
        agg.add(ProfileType::Cpu, &frames.into(), 100 + k + i, 1);
        value += 100 + k + i;
    }
    // Recent windows: the consumer's retention drops anything older than 7 days.
    let start = base + i * 1000;
    let mut parts = agg.finish(&target, start, start + 1000, &Default::default(), 0, 0);
    assert_eq!(parts.len(), 1, "one part per window");
    (parts.remove(0).to_bytes(), 10, value)
}

/// A base time an hour ago, on a whole second.
fn base_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        / 1000
        * 1000
        - 3_600_000
}

fn publisher(topics: &RunTopics) -> Publisher {
    Publisher::new(PublisherConfig {
        brokers: kafka_brokers(),
        profiles_topic: topics.profiles.clone(),
        status_topic: topics.status.clone(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })
    .expect("producer")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clickhouse_outage_loses_nothing_and_commits_nothing() {
    let outage = Duration::from_secs(
        std::env::var("JAVELIN_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let run = unique_name("outage");
    let (ch, topics) = setup(&run).await;
    let profiles = topics.profiles.clone();
    let log_path = repo().join(format!("target/e2e-logs/{run}.consumer.log"));
    let mut consumer = spawn_consumer(&ch, &run, &topics, &log_path);
    let totals = || totals(&ch, &run);

    // A steady stream: one window every 250 ms before, during and after the outage.
    let publisher = publisher(&topics);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let producer = tokio::spawn(async move {
        let (mut rows, mut value, mut i) = (0u64, 0i64, 0i64);
        let base = base_ms();
        loop {
            let (payload, r, v) = window(i, base);
            let key = if i % 2 == 0 { "a" } else { "b" };
            publisher
                .send_to(Destination::Profiles, key, &payload, None)
                .await
                .expect("produced");
            (rows, value) = (rows + r, value + v);
            i += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop_rx.changed() => return (rows, value),
            }
        }
    });

    wait_for(
        "the stream flowing into ClickHouse",
        Duration::from_secs(60),
        || async { totals().await.filter(|t| t.0 > 100) },
    )
    .await;
    let members_before = members(&run);
    assert_eq!(
        members_before.len(),
        1,
        "one consumer in the group: {members_before:?}"
    );
    ch.stack("stop-clickhouse");
    let down_at = Instant::now();
    // Offsets stored before the stop may still be committed by the next auto-commit
    // (every 1 s): the baseline is taken once the consumer is retrying and the
    // committed offsets hold still across more than one commit interval.
    let before = wait_for(
        "a retrying consumer and settled commits",
        Duration::from_secs(30),
        || {
            let (run, profiles, log_path) = (run.clone(), profiles.clone(), log_path.clone());
            async move {
                let retrying = std::fs::read_to_string(&log_path)
                    .is_ok_and(|l| l.contains("ClickHouse insert failed"));
                let first = committed(&run, &profiles, 2);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                (retrying && committed(&run, &profiles, 2) == first).then_some(first)
            }
        },
    )
    .await;
    wait_for(
        "the outage to last",
        outage + Duration::from_secs(5),
        || async { (down_at.elapsed() >= outage).then_some(()) },
    )
    .await;
    let during = committed(&run, &profiles, 2);
    assert_eq!(
        during, before,
        "no offset may be committed while ClickHouse is down"
    );
    assert!(
        consumer.0.try_wait().expect("wait").is_none(),
        "the consumer stays up through the outage"
    );
    assert_eq!(
        members(&run),
        members_before,
        "the consumer never left the group (same member id)"
    );
    ch.stack("start-clickhouse");
    let _ = stop_tx.send(true);
    let (rows, value) = producer.await.expect("producer task");
    let got = wait_for(
        "exact totals after the outage",
        Duration::from_secs(120),
        || async { totals().await.filter(|t| *t == (rows, value)) },
    )
    .await;
    assert_eq!(got, (rows, value));
    assert_eq!(
        shown_total(&ch, &run, value).await,
        (value, value),
        "what the UI shows: flamegraph and top"
    );
    // Everything produced is committed once ClickHouse is back.
    let ends = high_watermarks(&profiles, 2);
    let after = wait_for(
        "offsets committed to the end of every partition",
        Duration::from_secs(30),
        || {
            let (run, profiles, ends) = (run.clone(), profiles.clone(), ends.clone());
            async move {
                let now = committed(&run, &profiles, 2);
                let done = now
                    .iter()
                    .zip(&ends)
                    .all(|(c, end)| *c == *end || (*end == 0 && *c < 0));
                done.then_some(now)
            }
        },
    )
    .await;
    assert!(
        after.iter().sum::<i64>() > before.iter().sum::<i64>(),
        "{before:?} → {after:?}"
    );
}

/// SIGTERM while ClickHouse is down: the consumer exits promptly instead of
/// retrying forever, commits nothing it has not stored, and a restarted
/// consumer stores everything exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_outage_exits_promptly_and_loses_nothing() {
    let run = unique_name("sigterm");
    let (ch, topics) = setup(&run).await;
    let log_path = repo().join(format!("target/e2e-logs/{run}.consumer.log"));
    let mut consumer = spawn_consumer(&ch, &run, &topics, &log_path);
    let publisher = publisher(&topics);
    let base = base_ms();
    let (mut rows, mut value) = (0u64, 0i64);
    let mut publish = async |range: std::ops::Range<i64>| {
        for i in range {
            let (payload, r, v) = window(i, base);
            publisher
                .send_to(Destination::Profiles, "k", &payload, None)
                .await
                .expect("produced");
            (rows, value) = (rows + r, value + v);
        }
    };
    publish(0..20).await;
    wait_for(
        "the first windows stored",
        Duration::from_secs(60),
        || async { totals(&ch, &run).await.filter(|t| t.0 == 200) },
    )
    .await;
    ch.stack("stop-clickhouse");
    publish(20..40).await;
    wait_for("a retrying consumer", Duration::from_secs(30), || async {
        std::fs::read_to_string(&log_path)
            .is_ok_and(|l| l.contains("ClickHouse insert failed"))
            .then_some(())
    })
    .await;
    let before = committed(&run, &topics.profiles, 2);
    let term = Command::new("kill")
        .args(["-TERM", &consumer.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let exited = wait_for("the consumer to exit", Duration::from_secs(15), || {
        let status = consumer.0.try_wait().expect("wait");
        async move { status }
    })
    .await;
    assert!(exited.success(), "a clean exit: {exited}");
    assert_eq!(
        committed(&run, &topics.profiles, 2),
        before,
        "nothing committed past what was stored"
    );
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log.contains("the batch in hand is not stored"),
        "the abandoned batch is logged"
    );

    ch.stack("start-clickhouse");
    let _restarted = spawn_consumer(&ch, &run, &topics, &log_path.with_extension("2.log"));
    let got = wait_for(
        "exact totals after the restart",
        Duration::from_secs(120),
        || async { totals(&ch, &run).await.filter(|t| *t == (rows, value)) },
    )
    .await;
    assert_eq!(got, (rows, value));
    assert_eq!(
        shown_total(&ch, &run, value).await,
        (value, value),
        "what the UI shows: flamegraph and top"
    );
}

/// The end offset of each partition.
fn high_watermarks(topic: &str, partitions: i32) -> Vec<i64> {
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("client");
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}
