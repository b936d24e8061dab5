//! ClickHouse failing the way production sees it, under a steady stream, each
//! drill on a ClickHouse server of its own:
//!
//! - (a) every table of the database detached for a while,
//! - (b) the consumer's user losing access to the database,
//! - (c) the server killed with SIGKILL and started again,
//!
//! are outages: nothing is dead-lettered, the committed offsets hold still
//! while the fault lasts, and afterwards the query API (the numbers the UI
//! shows) and the table hold exactly what was produced. And
//!
//! - (d) a message whose rows ClickHouse itself refuses (a value check the
//!   server enforces) is isolated by bisection against the real server: it
//!   alone goes to the dead-letter topic, with the server's code.
//!
//! Windows start at odd milliseconds and several start within one second, as
//! a catch-up after a stalled JVM does.

mod support;

use javelin_schema::rows::SAMPLES_ONCE;
use support::{bin, committed};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_loadtest::query_view::{QueryView, ViewTotals};
use javelin_loadtest::servers::PrivateClickHouse;
use javelin_schema::testkit::{
    Reaped, RunTopics, TopicLog, create_topics, kafka_brokers, unique_name, wait_for,
};
use javelin_schema::wire::{ProfileType, TargetIdentity};

/// How long each fault lasts (`JAVELIN_TEST_DRILL_SECS`, default 30).
fn fault_duration() -> Duration {
    Duration::from_secs(
        std::env::var("JAVELIN_TEST_DRILL_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    )
}

const SERVICES: [&str; 2] = ["svc-a", "svc-b"];
/// A stack value the drill (d) server refuses.
const REFUSED_VALUE: i64 = 666_013;
const PARTITIONS: i32 = 2;

/// One drill's world: its own ClickHouse, topics, consumer and query API.
struct Drill {
    run: String,
    ch: PrivateClickHouse,
    topics: RunTopics,
    log_path: PathBuf,
    base_ms: i64,
}

impl Drill {
    async fn new(name: &str) -> Drill {
        let run = unique_name(name);
        let ch = PrivateClickHouse::start(&run).expect("a ClickHouse of the drill's own");
        let topics = RunTopics::new(&run);
        create_topics(&[&topics.profiles, &topics.status, &topics.dlq], PARTITIONS).await;
        let migrate = Command::new(bin("javelin-consumer"))
            .args(["migrate", "--clickhouse-url", &ch.url(), "--database", &run])
            .output()
            .expect("migrate");
        assert!(
            migrate.status.success(),
            "{}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let log_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/e2e-logs/{run}.consumer.log"));
        Drill {
            run,
            ch,
            topics,
            log_path,
            // An hour ago (retention keeps it), 7 ms into a second.
            base_ms: (javelin_loadtest::now_ms() - 3_600_000) / 1000 * 1000 + 7,
        }
    }

    fn consumer(&self) -> Reaped {
        std::fs::create_dir_all(self.log_path.parent().expect("dir")).expect("log dir");
        let log = std::fs::File::create(&self.log_path).expect("log");
        Reaped(
            Command::new(bin("javelin-consumer"))
                .args(self.topics.consumer_args(
                    &self.ch.url(),
                    &self.run,
                    &kafka_brokers(),
                    &self.run,
                ))
                .args(["--batch-linger-ms", "200"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("consumer"),
        )
    }

    fn db(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(self.ch.url())
            .with_database(&self.run)
            .with_validation(false)
    }

    fn consumer_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The range every window of the drill starts in, in ms.
    fn range(&self) -> (i64, i64) {
        (self.base_ms - 1_000, self.base_ms + 3_600_000)
    }

    /// Per service: what the UI shows, and what the table holds (`FINAL`).
    async fn seen(&self, view: &QueryView) -> Option<BTreeMap<&'static str, (ViewTotals, i64)>> {
        let (from, to) = self.range();
        let mut seen = BTreeMap::new();
        for service in SERVICES {
            let api = view.totals(service, "cpu", from, to).await.ok()?;
            let table: i64 = self
                .db()
                .query(&format!(
                    "SELECT sum(value) FROM {SAMPLES_ONCE} WHERE service = ?"
                ))
                .bind(service)
                .fetch_one()
                .await
                .ok()?;
            seen.insert(service, (api, table));
        }
        Some(seen)
    }
}

impl Drill {
    /// Waits until, per service, the query API's flamegraph and top totals and
    /// the table all equal `expected`; what was seen.
    async fn wait_for_exact(
        &self,
        view: &QueryView,
        expected: &BTreeMap<&'static str, i64>,
    ) -> BTreeMap<&'static str, (ViewTotals, i64)> {
        wait_for(
            "exact totals through the query API and the table",
            Duration::from_secs(120),
            || async {
                self.seen(view).await.filter(|seen| {
                    seen.iter().all(|(service, (api, table))| {
                        let want = expected.get(service).copied().unwrap_or(0);
                        api.flamegraph == want && api.top == want && *table == want
                    })
                })
            },
        )
        .await
    }
}

/// Window `i` of the stream: 600 ms long, back to back per target, so every
/// other window of a target starts in the same second as the one before it
/// (at …007 and …607 ms); 8 stacks. Returns the service, payload and value.
fn window(i: i64, base_ms: i64, refused: bool) -> (&'static str, Vec<u8>, i64) {
    let service = SERVICES[(i % 2) as usize];
    let target = TargetIdentity {
        service: service.into(),
        target_id: 40 + (i % 2) as u64,
        pod: format!("{service}-0"),
        ..Default::default()
    };
    let mut agg = WindowAggregator::new(Bounds::default());
    let mut value = 0;
    for k in 0..8 {
        let frames: Vec<Frame> = ["main".to_string(), format!("Step{k}")]
            .iter()
            .map(|n| Frame::synthetic(n))
            .collect();
        let v = if refused && k == 0 {
            REFUSED_VALUE
        } else {
            100 + k + i
        };
        agg.add(ProfileType::Cpu, &frames.into(), v, 1);
        value += v;
    }
    // Two targets alternate, each with back-to-back 600 ms windows.
    let start = base_ms + (i / 2) * 600 + (i % 2) * 13;
    let mut parts = agg.finish(&target, start, start + 600, &Default::default(), 0, 0);
    assert_eq!(parts.len(), 1, "one part per window");
    (service, parts.remove(0).to_bytes(), value)
}

/// Publishes a window every 150 ms until told to stop; returns the value
/// produced per service (the refused window excluded) and how many were sent.
struct Stream {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(BTreeMap<&'static str, i64>, i64)>,
}

impl Stream {
    /// Windows `first`, `first + 1`, … every 150 ms.
    fn start(drill: &Drill, refuse_at: Option<i64>, first: i64) -> Stream {
        let publisher = publisher(drill);
        let base = drill.base_ms;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut produced: BTreeMap<&'static str, i64> = BTreeMap::new();
            let mut i = first;
            loop {
                let refused = refuse_at == Some(i);
                let (service, payload, value) = window(i, base, refused);
                publisher
                    .send_to(Destination::Profiles, service, &payload, None)
                    .await
                    .expect("produced");
                if !refused {
                    *produced.entry(service).or_default() += value;
                }
                i += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                    _ = stopped.changed() => return (produced, i),
                }
            }
        });
        Stream { stop, task }
    }

    async fn finish(self) -> (BTreeMap<&'static str, i64>, i64) {
        let _ = self.stop.send(true);
        self.task.await.expect("stream task")
    }
}

fn publisher(drill: &Drill) -> Publisher {
    Publisher::new(PublisherConfig {
        brokers: kafka_brokers(),
        profiles_topic: drill.topics.profiles.clone(),
        status_topic: drill.topics.status.clone(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })
    .expect("producer")
}

/// Publishes windows `range` at once (a backlog); the value per service,
/// the refused window excluded.
async fn publish_backlog(
    drill: &Drill,
    range: std::ops::Range<i64>,
    refuse_at: i64,
) -> BTreeMap<&'static str, i64> {
    let publisher = publisher(drill);
    let mut produced: BTreeMap<&'static str, i64> = BTreeMap::new();
    for i in range {
        let refused = i == refuse_at;
        let (service, payload, value) = window(i, drill.base_ms, refused);
        publisher
            .send_to(Destination::Profiles, service, &payload, None)
            .await
            .expect("produced");
        if !refused {
            *produced.entry(service).or_default() += value;
        }
    }
    produced
}

/// The fault a drill injects and lifts.
#[derive(Debug, Clone, Copy)]
enum Fault {
    DetachAllTables,
    AccessRevoked,
    ServerKilled,
}

impl Fault {
    async fn inject(self, drill: &Drill) {
        match self {
            Fault::DetachAllTables => {
                for table in tables(drill).await {
                    drill
                        .db()
                        .query(&format!("DETACH TABLE {table}"))
                        .execute()
                        .await
                        .expect("detach");
                }
            }
            Fault::AccessRevoked => {
                let users = drill.ch.dir.join("clickhouse/users.xml");
                let text = std::fs::read_to_string(&users).expect("users.xml");
                let revoked = text.replace(
                    "<profile>default</profile>",
                    "<profile>default</profile><allow_databases><database>default</database></allow_databases>",
                );
                assert_ne!(text, revoked, "users.xml has the default user");
                std::fs::write(&users, revoked).expect("revoke");
                // The server reloads users.xml on its own; wait until it refuses.
                wait_for(
                    "the server to refuse the database",
                    Duration::from_secs(30),
                    || async {
                        let refused = drill
                            .db()
                            .query("SELECT count() FROM samples")
                            .fetch_one::<u64>()
                            .await
                            .is_err();
                        refused.then_some(())
                    },
                )
                .await;
            }
            Fault::ServerKilled => {
                let pid =
                    std::fs::read_to_string(drill.ch.dir.join("clickhouse.pid")).expect("pid file");
                let status = Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .status()
                    .expect("kill");
                assert!(status.success(), "SIGKILL to ClickHouse {pid}");
            }
        }
    }

    async fn lift(self, drill: &Drill, detached: &[String]) {
        match self {
            Fault::DetachAllTables => {
                for table in detached {
                    drill
                        .db()
                        .query(&format!("ATTACH TABLE {table}"))
                        .execute()
                        .await
                        .expect("attach");
                }
            }
            Fault::AccessRevoked => {
                let users = drill.ch.dir.join("clickhouse/users.xml");
                let text = std::fs::read_to_string(&users).expect("users.xml");
                std::fs::write(
                    &users,
                    text.replace(
                        "<allow_databases><database>default</database></allow_databases>",
                        "",
                    ),
                )
                .expect("restore");
            }
            Fault::ServerKilled => drill.ch.stack("start-clickhouse").expect("restart"),
        }
    }
}

/// The tables of the drill's database.
async fn tables(drill: &Drill) -> Vec<String> {
    drill
        .db()
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
        .fetch_all::<String>()
        .await
        .expect("tables")
}

/// An outage drill: fault under a steady stream, then exact totals, no dead letters.
async fn outage_drill(name: &str, fault: Fault) {
    let drill = Drill::new(name).await;
    let dlq = TopicLog::follow(&drill.topics.dlq);
    let mut consumer = drill.consumer();
    let view = QueryView::start(&bin("javelin-query"), &drill.ch.url(), &drill.run, &[])
        .expect("query API");
    let stream = Stream::start(&drill, None, 0);
    wait_for(
        "the stream flowing into ClickHouse",
        Duration::from_secs(60),
        || async {
            drill
                .seen(&view)
                .await
                .filter(|s| s.values().all(|(api, _)| api.flamegraph > 0))
        },
    )
    .await;
    let detached = tables(&drill).await;
    fault.inject(&drill).await;
    let faulted_at = Instant::now();
    // Offsets stored before the fault may still be committed by the next
    // auto-commit (every 1 s): the baseline is taken once the consumer retries
    // and the committed offsets hold still across more than one interval.
    let profiles = drill.topics.profiles.clone();
    let before = wait_for(
        "a retrying consumer and settled commits",
        Duration::from_secs(60),
        || {
            let (run, profiles) = (drill.run.clone(), profiles.clone());
            let retrying = drill.consumer_log().contains("ClickHouse insert failed");
            async move {
                let first = committed(&run, &profiles, PARTITIONS);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                (retrying && committed(&run, &profiles, PARTITIONS) == first).then_some(first)
            }
        },
    )
    .await;
    let duration = fault_duration();
    wait_for(
        "the fault to last",
        duration + Duration::from_secs(5),
        || async { (faulted_at.elapsed() >= duration).then_some(()) },
    )
    .await;
    assert_eq!(
        committed(&drill.run, &profiles, PARTITIONS),
        before,
        "{fault:?}: no offset may be committed while ClickHouse fails"
    );
    assert!(
        consumer.0.try_wait().expect("wait").is_none(),
        "{fault:?}: the consumer stays up"
    );
    assert!(
        dlq.messages().is_empty(),
        "{fault:?}: an outage never dead-letters"
    );
    fault.lift(&drill, &detached).await;
    let (produced, sent) = stream.finish().await;
    let expected: BTreeMap<&'static str, i64> = produced;
    let seen = drill.wait_for_exact(&view, &expected).await;
    assert_eq!(seen.len(), SERVICES.len());
    assert!(
        dlq.messages().is_empty(),
        "{fault:?}: nothing dead-lettered ({sent} windows sent)"
    );
    let log = drill.consumer_log();
    assert!(
        !log.contains("dead-lettering"),
        "{fault:?}: the consumer dead-lettered something:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_table_detached_is_an_outage_not_poison() {
    outage_drill("drill_detach", Fault::DetachAllTables).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_revoked_is_an_outage_not_poison() {
    outage_drill("drill_access", Fault::AccessRevoked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_is_an_outage_not_poison() {
    outage_drill("drill_kill", Fault::ServerKilled).await;
}

/// (d): the server refuses one message's rows (a value check of its own, as a
/// constraint would); bisection against the real server isolates exactly
/// that message, everything else lands once.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_server_refuses_alone_is_dead_lettered_alone() {
    let drill = Drill::new("drill_refuse").await;
    // Rows with the refused value fail the insert with FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (395).
    drill
        .db()
        .query(&format!(
            "ALTER TABLE samples ADD COLUMN guard UInt8 MATERIALIZED throwIf(value = {REFUSED_VALUE})"
        ))
        .execute()
        .await
        .expect("value check");
    let dlq = TopicLog::follow(&drill.topics.dlq);
    // A backlog first, so the refused message reaches the consumer among
    // dozens of batch-mates: bisection runs against the real server.
    let refused_at = 17;
    let backlog = publish_backlog(&drill, 0..40, refused_at).await;
    let _consumer = drill.consumer();
    let view = QueryView::start(&bin("javelin-query"), &drill.ch.url(), &drill.run, &[])
        .expect("query API");
    let stream = Stream::start(&drill, None, 40);
    wait_for(
        "some windows past the refused one",
        Duration::from_secs(60),
        || async {
            let n: u64 = drill
                .db()
                .query("SELECT uniqExact(window_id) FROM samples")
                .fetch_one()
                .await
                .ok()?;
            (n > refused_at as u64 + 10).then_some(())
        },
    )
    .await;
    let (mut expected, _) = stream.finish().await;
    for (service, value) in backlog {
        *expected.entry(service).or_default() += value;
    }
    drill.wait_for_exact(&view, &expected).await;
    let letters = wait_for("the dead letter", Duration::from_secs(30), || async {
        let m = dlq.messages();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(letters.len(), 1, "exactly the refused message");
    let letter = &letters[0];
    assert_eq!(
        letter.header("javelin.error_class"),
        Some("rejected_by_clickhouse")
    );
    assert!(
        letter
            .header("javelin.reason")
            .is_some_and(|r| r.contains("Code: 395")),
        "the server's code and text: {:?}",
        letter.headers
    );
    let (_, payload, _) = window(refused_at, drill.base_ms, true);
    assert_eq!(letter.payload, payload, "the refused message itself");
    let rejected: u64 = drill
        .db()
        .query("SELECT count() FROM ingest_ledger FINAL WHERE status = 'rejected'")
        .fetch_one()
        .await
        .expect("ledger");
    assert_eq!(rejected, 1, "the ledger shows the rejection");
}
