//! The consumer against the real broker and the real ClickHouse: poison messages
//! go to the dead-letter topic with their provenance while everything else lands,
//! and SIGKILLs mid-stream lose nothing and double-count nothing.

mod support;

use javelin_schema::rows::SAMPLES_ONCE;
use support::bin;

use javelin_loadtest::query_view::QueryView;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::testkit::{
    Reaped, RunTopics, TopicLog, clickhouse_client, clickhouse_url, create_topics, kafka_brokers,
    unique_name, wait_for,
};
use javelin_schema::wire::{ProfileType, ProfileWindow, TargetIdentity};

struct Pipeline {
    run: String,
    profiles: String,
    status: String,
    dlq: String,
    db: clickhouse::Client,
    publisher: Publisher,
    /// The query API on the run's database: what the UI shows.
    view: QueryView,
}

impl Pipeline {
    async fn new(partitions: i32) -> Pipeline {
        let run = unique_name("consumer");
        let (profiles, status, dlq) = (
            format!("{run}.profiles"),
            format!("{run}.status"),
            format!("{run}.dlq"),
        );
        create_topics(&[&profiles, &status, &dlq], partitions).await;
        let migrate = Command::new(bin("javelin-consumer"))
            .args([
                "migrate",
                "--clickhouse-url",
                &clickhouse_url(),
                "--database",
                &run,
            ])
            .output()
            .expect("migrate runs");
        assert!(
            migrate.status.success(),
            "{}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let publisher = Publisher::new(PublisherConfig {
            brokers: kafka_brokers(),
            profiles_topic: profiles.clone(),
            status_topic: status.clone(),
            send_timeout: Duration::from_secs(30),
            properties: vec![],
        })
        .expect("producer");
        let db = clickhouse_client().with_database(&run);
        let view = QueryView::start(&bin("javelin-query"), &clickhouse_url(), &run, &[])
            .expect("query API");
        Pipeline {
            run,
            profiles,
            status,
            dlq,
            db,
            publisher,
            view,
        }
    }

    async fn produce(&self, key: &str, payload: &[u8]) {
        self.publisher
            .send_to(Destination::Profiles, key, payload, None)
            .await
            .expect("produced");
    }

    fn consumer(&self, extra: &[&str]) -> Reaped {
        self.consumer_with_env(extra, &[])
    }

    fn consumer_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Reaped {
        let logs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
        std::fs::create_dir_all(&logs).expect("logs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.consumer.log", self.run)))
            .expect("log");
        let child = Command::new(bin("javelin-consumer"))
            .args(
                RunTopics {
                    profiles: self.profiles.clone(),
                    status: self.status.clone(),
                    dlq: self.dlq.clone(),
                }
                .consumer_args(
                    &clickhouse_url(),
                    &self.run,
                    &kafka_brokers(),
                    &self.run,
                ),
            )
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("consumer starts");
        Reaped(child)
    }

    /// (distinct samples, raw rows) in the table now, settled or not: cheap,
    /// for timing kills (no query API round trip, no wait for `stored_parts`,
    /// which a consumer killed between its two inserts leaves short).
    async fn counts(&self) -> Option<(u64, u64)> {
        self.db
            .query(&format!(
                "SELECT (SELECT count() FROM {SAMPLES_ONCE}), (SELECT count() FROM samples)"
            ))
            .fetch_one()
            .await
            .ok()
    }

    /// (rows, Σ value) of the table, one copy of each window part and stack
    /// (by content), and the raw row count, once the table is settled: every
    /// window part in it named in `stored_parts` and nothing written while the
    /// query API is read (tried for up to 10 s; `None` when it never settles).
    /// In that state the flamegraph and top totals of every service and type
    /// in the query API must equal the table's value: a loss or a double count
    /// on the path the UI takes fails the test.
    async fn totals(&self) -> Option<(u64, i64, u64)> {
        let table = || async {
            let (rows, value): (u64, i64) = self
                .db
                .query(&format!("SELECT count(), sum(value) FROM {SAMPLES_ONCE}"))
                .fetch_one()
                .await
                .ok()?;
            let (raw, parts): (u64, u64) = self
                .db
                .query("SELECT count(), uniqExact(window_id) FROM samples")
                .fetch_one()
                .await
                .ok()?;
            let named: u64 = self
                .db
                .query("SELECT uniqExact(window_id) FROM stored_parts")
                .fetch_one()
                .await
                .ok()?;
            Some((rows, value, raw, parts == named))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let before = table().await?;
            if !before.3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let now = javelin_loadtest::now_ms();
            let shown = self
                .view
                .grand_total(now - 6 * 86_400_000, now + 3_600_000)
                .await;
            let after = table().await?;
            if after != before {
                continue;
            }
            let shown = shown.unwrap_or_else(|e| panic!("the query API answers: {e:#}"));
            assert_eq!(
                (shown.flamegraph, shown.top),
                (after.1, after.1),
                "the query API shows (flamegraph, top) {shown:?}, the table holds {}",
                after.1
            );
            return Some((after.0, after.1, after.2));
        }
        None
    }
}

/// The start of the first synthetic window: an hour ago, on a 10 s boundary,
/// fixed for the test process. Recent on purpose: the consumer's retention
/// drops data older than 7 days.
fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        (now - 3_600_000) / 10_000 * 10_000
    })
}

/// Runs `javelin-consumer replay` of `topic` into the pipeline's database; its summary.
fn replay(p: &Pipeline, topic: &str, from: i64, to: i64, dry: bool) -> String {
    let mut cmd = Command::new(bin("javelin-consumer"));
    cmd.args([
        "replay",
        "--clickhouse-url",
        &clickhouse_url(),
        "--database",
        &p.run,
        "--brokers",
        &kafka_brokers(),
    ])
    .args([
        "--profiles-topic",
        topic,
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ]);
    if dry {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().expect("replay runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DLQ runbook's command: windows in the dead-letter topic are re-ingested
/// by replaying that topic; what is still invalid is counted and skipped.
#[tokio::test(flavor = "multi_thread")]
async fn windows_in_the_dead_letter_topic_are_reingested_by_replay() {
    let p = Pipeline::new(1).await;
    let to_dlq = Publisher::new(PublisherConfig {
        brokers: kafka_brokers(),
        profiles_topic: p.dlq.clone(),
        status_topic: p.status.clone(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })
    .expect("producer");
    let mut value = 0;
    for i in 0..3 {
        let (w, total) = window(i, 4);
        value += total;
        to_dlq
            .send_to(Destination::Profiles, "svc", &w.to_bytes(), None)
            .await
            .expect("produced");
    }
    to_dlq
        .send_to(Destination::Profiles, "svc", b"still not a window", None)
        .await
        .expect("produced");
    let (from, to) = (base_ms(), base_ms() + 3 * 10_000);
    let dry = replay(&p, &p.dlq, from, to, true);
    assert!(
        dry.contains("windows replayed: 3,") && dry.contains("invalid: 1"),
        "{dry}"
    );
    let summary = replay(&p, &p.dlq, from, to, false);
    assert!(
        summary.contains("windows replayed: 3,") && summary.contains("invalid: 1"),
        "{summary}"
    );
    let (rows, total, _) = p.totals().await.expect("totals");
    assert_eq!((rows, total), (12, value), "the three windows, exactly");
    let accepted: u64 =
        p.db.query("SELECT count() FROM ingest_ledger FINAL WHERE status = 'accepted'")
            .fetch_one()
            .await
            .expect("ledger");
    assert_eq!(accepted, 3, "each re-ingested window is in the ledger");
}

/// A synthetic window with `stacks` stacks; returns it and its total value.
fn window(index: i64, stacks: u32) -> (ProfileWindow, i64) {
    let target = TargetIdentity {
        service: "svc".into(),
        pod: "pod-a".into(),
        target_id: 77,
        ..Default::default()
    };
    let mut agg = WindowAggregator::new(Bounds::default());
    let mut total = 0;
    for k in 0..stacks {
        let frames: Vec<Frame> = ["main".to_string(), format!("Work.step{k}")]
            .iter()
            .map(|n| Frame::synthetic(n))
            .collect();
        let value = 1_000 + i64::from(k) + index;
        total += value;
        agg.add(ProfileType::Cpu, &frames.into(), value, 1);
    }
    let start = base_ms() + index * 10_000;
    let mut windows = agg.finish(&target, start, start + 10_000, &Default::default(), 0, 0);
    assert_eq!(windows.len(), 1);
    (windows.remove(0), total)
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_rest_lands() {
    let p = Pipeline::new(1).await;
    let dlq_log = TopicLog::follow(&p.dlq);
    let (w0, t0) = window(0, 20);
    let (w1, t1) = window(1, 20);
    let garbage = b"\xff\xfe\xfd this is not a protobuf message".to_vec();
    let mut invalid = window(2, 5).0;
    invalid.part_index = 5; // of 1 part: decodes, but violates the contract
    p.produce("svc", &w0.to_bytes()).await;
    p.produce("svc", &garbage).await;
    p.produce("svc", &invalid.to_bytes()).await;
    p.produce("svc", &w1.to_bytes()).await;

    let mut consumer = p.consumer(&[]);
    let metrics_url = metrics_url(&mut consumer);
    wait_for(
        "both valid windows in ClickHouse",
        Duration::from_secs(60),
        || async { p.totals().await.filter(|t| t.0 == 40 && t.1 == t0 + t1) },
    )
    .await;
    let dead = wait_for("two dead letters", Duration::from_secs(60), || {
        let m = dlq_log.messages();
        async move { (m.len() >= 2).then_some(m) }
    })
    .await;
    assert_eq!(dead.len(), 2);
    for (letter, (offset, payload)) in dead.iter().zip([(1, &garbage), (2, &invalid.to_bytes())]) {
        assert_eq!(&letter.payload, payload, "the original bytes, unchanged");
        assert_eq!(
            letter.header("javelin.source_topic"),
            Some(p.profiles.as_str())
        );
        assert_eq!(letter.header("javelin.source_partition"), Some("0"));
        assert_eq!(
            letter.header("javelin.source_offset"),
            Some(offset.to_string().as_str())
        );
        assert_eq!(
            letter.header("javelin.error_class"),
            Some("invalid_message")
        );
        assert!(
            letter
                .header("javelin.reason")
                .is_some_and(|r| !r.is_empty())
        );
        assert!(
            letter
                .header("javelin.consumer_id")
                .is_some_and(|c| c.starts_with(&p.run))
        );
        assert!(
            letter
                .header("javelin.time_ms")
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t > 0)
        );
    }
    assert!(
        dead[0]
            .header("javelin.reason")
            .is_some_and(|r| r.contains("protobuf"))
    );
    assert!(
        dead[1]
            .header("javelin.reason")
            .is_some_and(|r| r.contains("part 5 of 1"))
    );
    // One ledger row per message: the two windows accepted, the two refusals
    // with their reason (the garbage filed under its key, the invalid window
    // under its own identity).
    let ledger: Vec<(String, String, i64, String)> =
        wait_for("four ledger rows", Duration::from_secs(30), || async {
            p.db.query(
                "SELECT service, status, offset, reason FROM ingest_ledger FINAL ORDER BY offset",
            )
            .fetch_all::<(String, String, i64, String)>()
            .await
            .ok()
            .filter(|rows| rows.len() >= 4)
        })
        .await;
    let summary: Vec<(&str, &str, i64)> = ledger
        .iter()
        .map(|(s, st, o, _)| (s.as_str(), st.as_str(), *o))
        .collect();
    assert_eq!(
        summary,
        [
            ("svc", "accepted", 0),
            ("svc", "rejected", 1),
            ("svc", "rejected", 2),
            ("svc", "accepted", 3)
        ]
    );
    assert!(ledger[1].3.contains("protobuf"), "{:?}", ledger[1]);
    assert!(ledger[2].3.contains("part 5 of 1"), "{:?}", ledger[2]);
    // The dead letters and the written rows show in the consumer's metrics.
    let text = reqwest::get(&metrics_url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let value = |name: &str, label: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(
        value(
            "javelin_consumer_dead_letters_total",
            "class=\"invalid_message\""
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        value("javelin_consumer_rows_total", "table=\"samples\""),
        40.0,
        "{text}"
    );
    assert_eq!(value("javelin_consumer_retrying", ""), 0.0, "{text}");
    let ready = reqwest::get(metrics_url.replace("/metrics", "/readyz"))
        .await
        .expect("readyz");
    assert!(ready.status().is_success());
}

/// A restarted consumer that the coordinator leaves alone in its group with
/// no partition recovers. On the local broker (tansu 0.6) a consumer killed
/// 0.5 s after a heartbeat and restarted 4 s after it always gets a formed
/// group with an empty assignment (the dead leader's session expires while
/// the new member's SyncGroup is in flight; see consumer/src/group_watch.rs);
/// without the watchdog it would never consume again.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_left_without_partitions_by_the_coordinator_rejoins() {
    let p = Pipeline::new(4).await;
    let args = [
        "--batch-linger-ms",
        "200",
        "--kafka-property",
        "session.timeout.ms=6000",
        "--kafka-property",
        "debug=cgrp",
    ];
    let env = [("RUST_LOG", "info,librdkafka=debug")];
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/e2e-logs/{}.consumer.log", p.run));
    let heartbeats = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("Heartbeat for group")
            .count()
    };
    let keys = ["k0", "k1", "k2", "k3"];
    let (mut rows, mut value) = (0u64, 0i64);
    for i in 0..8 {
        let (w, total) = window(i, 10);
        (rows, value) = (rows + 10, value + total);
        p.produce(keys[i as usize % keys.len()], &w.to_bytes())
            .await;
    }
    let mut first = p.consumer_with_env(&args, &env);
    wait_for("the first windows", Duration::from_secs(60), || async {
        p.totals().await.filter(|t| (t.0, t.1) == (rows, value))
    })
    .await;
    // Kill it 0.5 s after a heartbeat; restart 4 s after that heartbeat.
    let seen = heartbeats();
    let beat = wait_for("a heartbeat", Duration::from_secs(30), || async {
        (heartbeats() > seen).then(std::time::Instant::now)
    })
    .await;
    tokio::time::sleep_until((beat + Duration::from_millis(500)).into()).await;
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    tokio::time::sleep_until((beat + Duration::from_secs(4)).into()).await;
    let _second = p.consumer_with_env(&args, &env);
    for i in 8..16 {
        let (w, total) = window(i, 10);
        (rows, value) = (rows + 10, value + total);
        p.produce(keys[i as usize % keys.len()], &w.to_bytes())
            .await;
    }
    wait_for(
        "the restarted consumer to store the new windows",
        Duration::from_secs(90),
        || async { p.totals().await.filter(|t| (t.0, t.1) == (rows, value)) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_nothing_and_double_counts_nothing() {
    let p = Arc::new(Pipeline::new(2).await);
    let mut expected_value = 0;
    let windows = 60;
    let stacks = 50;
    for i in 0..windows {
        let (w, total) = window(i, stacks);
        expected_value += total;
        // Two keys spread the windows over both partitions.
        p.produce(if i % 2 == 0 { "svc-a" } else { "svc-b" }, &w.to_bytes())
            .await;
    }
    let expected_rows = (windows as u64) * u64::from(stacks);
    // Small batches: many inserts, so every kill lands between or inside them.
    // A short session timeout: the group notices each killed member quickly.
    // A rate limit stretches the stream (3,000 rows at 600/s: ~5 s a
    // consumer), so the kills land inside it rather than after it.
    let small = [
        "--batch-max-rows",
        "150",
        "--batch-linger-ms",
        "200",
        "--max-rows-per-second",
        "600",
        "--kafka-property",
        "session.timeout.ms=6000",
    ];
    let mut seen = 0;
    let mut mid_stream = 0;
    for round in 0..3 {
        let mut consumer = p.consumer(&small);
        let before = seen;
        // Progress, or everything already stored: a consumer can store and
        // commit the rest between the check before a kill and the kill, and
        // then nothing is left to redo.
        seen = wait_for(
            &format!("progress before kill {round}"),
            Duration::from_secs(60),
            || async {
                p.counts()
                    .await
                    .filter(|(rows, raw)| *raw > before || *rows == expected_rows)
                    .map(|(_, raw)| raw)
            },
        )
        .await;
        consumer.0.kill().expect("SIGKILL");
        let _ = consumer.0.wait();
        // With the consumer dead nothing more is stored but an insert it had
        // already sent, which means the kill landed inside it: either way,
        // rows short of the total mean this kill landed inside the stream.
        let (rows, _) = wait_for(
            &format!("counts after kill {round}"),
            Duration::from_secs(30),
            || p.counts(),
        )
        .await;
        if rows < expected_rows {
            mid_stream += 1;
        }
    }
    // A drill whose kills all came after the last insert proves nothing.
    assert!(
        mid_stream > 0,
        "no kill landed inside the stream: every consumer had stored everything first"
    );
    let _last = p.consumer(&small);
    let (rows, value, raw) = wait_for(
        "exact totals after the crashes",
        Duration::from_secs(90),
        || async {
            p.totals()
                .await
                .filter(|t| t.0 == expected_rows && t.1 == expected_value)
        },
    )
    .await;
    assert_eq!((rows, value), (expected_rows, expected_value));
    eprintln!(
        "{mid_stream} of 3 kills inside the stream; {raw} rows written for {rows} distinct \
         samples: redelivered rows are counted once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_consumers_in_the_group_the_survivor_takes_over_when_one_dies() {
    let p = Pipeline::new(4).await;
    // 1000 rows/s for the group; each consumer owns half of the 8 partitions (2 topics × 4).
    let fast = [
        "--batch-linger-ms",
        "200",
        "--kafka-property",
        "session.timeout.ms=6000",
        "--max-rows-per-second",
        "1000",
    ];
    let mut a = p.consumer(&fast);
    let mut b = p.consumer(&fast);
    let a_metrics = metrics_url(&mut a);
    let b_metrics = metrics_url(&mut b);
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    let (mut expected_rows, mut expected_value) = (0u64, 0i64);
    for i in 0..40 {
        let (w, total) = window(i, 10);
        expected_rows += 10;
        expected_value += total;
        p.produce(keys[i as usize % keys.len()], &w.to_bytes())
            .await;
    }
    wait_for("the first 40 windows", Duration::from_secs(60), || async {
        p.totals()
            .await
            .filter(|t| t.0 == expected_rows && t.1 == expected_value)
    })
    .await;
    for url in [&a_metrics, &b_metrics] {
        wait_for(
            "each consumer's share to be half the budget",
            Duration::from_secs(60),
            || async {
                let share = gauge(url, "javelin_consumer_rate_limit_rows_per_second").await;
                (share == Some(500.0)).then_some(())
            },
        )
        .await;
    }
    a.0.kill().expect("SIGKILL one consumer");
    let _ = a.0.wait();
    for i in 40..80 {
        let (w, total) = window(i, 10);
        expected_rows += 10;
        expected_value += total;
        p.produce(keys[i as usize % keys.len()], &w.to_bytes())
            .await;
    }
    let got = wait_for(
        "the survivor to take over every partition",
        Duration::from_secs(90),
        || async {
            p.totals()
                .await
                .filter(|t| t.0 == expected_rows && t.1 == expected_value)
        },
    )
    .await;
    assert_eq!((got.0, got.1), (expected_rows, expected_value));
    wait_for(
        "the survivor's share to grow to the whole budget",
        Duration::from_secs(60),
        || async {
            (gauge(&b_metrics, "javelin_consumer_rate_limit_rows_per_second").await == Some(1000.0))
                .then_some(())
        },
    )
    .await;
}

/// The rate limit as measured in stored rows, not only as the computed share:
/// under a stream twice the group's budget, the rows written from the moment a
/// consumer takes its share never exceed the budget's pace (plus one batch
/// taken before a rebalance), for one consumer and right after a second one
/// joins. A new share used to start with a full bucket of one batch.
#[tokio::test(flavor = "multi_thread")]
async fn stored_rows_per_second_stay_within_the_budget_also_right_after_a_rebalance() {
    const RATE: f64 = 500.0;
    const BATCH: &str = "1000";
    // One batch acquired before a rebalance may still be written, plus polling jitter.
    const SLACK: f64 = 1_200.0;
    let p = Pipeline::new(4).await;
    let limited = [
        "--batch-linger-ms",
        "200",
        "--batch-max-rows",
        BATCH,
        "--max-rows-per-second",
        "500",
        "--kafka-property",
        "session.timeout.ms=6000",
    ];
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/e2e-logs/{}.consumer.log", p.run));
    let share_lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("rate-limit share")
            .count()
    };
    let stored = || async {
        p.db.query("SELECT count() FROM samples")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0) as f64
    };
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    // The stream: 100 rows every 100 ms, twice the budget, for the whole test.
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let stream = async {
        let mut i = 0i64;
        loop {
            let (w, _) = window(i, 100);
            p.produce(keys[i as usize % keys.len()], &w.to_bytes())
                .await;
            i += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = done.changed() => return i,
            }
        }
    };
    // From the moment a new share is taken: written rows against the budget's pace.
    let watch = |before: usize, phase: &'static str| async move {
        let t0 = wait_for(phase, Duration::from_secs(60), || async {
            (share_lines() > before).then(std::time::Instant::now)
        })
        .await;
        let s0 = stored().await;
        let mut worst: f64 = 0.0;
        while t0.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let written = stored().await - s0;
            let allowed = RATE * t0.elapsed().as_secs_f64() + SLACK;
            worst = worst.max(written - RATE * t0.elapsed().as_secs_f64());
            assert!(
                written <= allowed,
                "{phase}: {written} rows written {:.1} s after the share was taken (budget {RATE}/s + {SLACK})",
                t0.elapsed().as_secs_f64()
            );
        }
        let written = stored().await - s0;
        assert!(
            written >= RATE * 8.0 * 0.5 - SLACK,
            "{phase}: only {written} rows in 8 s: the budget, not starvation, must be what limits"
        );
        worst
    };
    let phases = async {
        let _a = p.consumer(&limited);
        let first = watch(0, "one consumer's share").await;
        let before = share_lines();
        let _b = p.consumer(&limited);
        let second = watch(before, "the shares after a rebalance").await;
        let _ = done_tx.send(true);
        (first, second)
    };
    let (_, (first, second)) = tokio::join!(stream, phases);
    eprintln!(
        "rows ahead of the budget's pace at worst: {first:.0} alone, {second:.0} after the rebalance"
    );
}

/// The metrics URL a consumer prints on its first stdout line.
fn metrics_url(consumer: &mut Reaped) -> String {
    use std::io::BufRead;
    let stdout = consumer.0.stdout.take().expect("consumer stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the consumer prints its metrics address");
    line.trim().rsplit(' ').next().expect("url").to_string()
}

/// The value of a label-less gauge from a Prometheus endpoint.
async fn gauge(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_restores_a_lost_range_and_changes_nothing_on_an_intact_one() {
    let p = Pipeline::new(2).await;
    let (mut rows, mut value) = (0u64, 0i64);
    for i in 0..30 {
        let (w, total) = window(i, 8);
        rows += 8;
        value += total;
        p.produce(if i % 2 == 0 { "a" } else { "b" }, &w.to_bytes())
            .await;
    }
    {
        let _consumer = p.consumer(&[]);
        wait_for("everything ingested", Duration::from_secs(60), || async {
            p.totals().await.filter(|t| t.0 == rows && t.1 == value)
        })
        .await;
    }
    // Lose windows 10..20 (their start seconds) from ClickHouse: their samples
    // and the records that name their copies, as a dropped range loses both.
    let (from_ms, to_ms) = (base_ms() + 10 * 10_000, base_ms() + 20 * 10_000);
    for table in ["samples", "stored_parts"] {
        p.db.query(&format!(
            "ALTER TABLE {table} DELETE WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?)"
        ))
        .bind(from_ms / 1000)
        .bind(to_ms / 1000)
        .execute()
        .await
        .expect("delete");
    }
    wait_for("the deletion to apply", Duration::from_secs(60), || async {
        p.totals().await.filter(|t| t.0 == rows - 80)
    })
    .await;

    let replay = |from: i64, to: i64, dry: bool| replay(&p, &p.profiles, from, to, dry);
    let dry = replay(from_ms, to_ms, true);
    assert!(
        dry.contains("dry run") && dry.contains("windows replayed: 10"),
        "{dry}"
    );
    assert_eq!(
        p.totals().await.map(|t| t.0),
        Some(rows - 80),
        "a dry run writes nothing"
    );

    let summary = replay(from_ms, to_ms, false);
    assert!(
        summary.contains("windows replayed: 10,")
            && summary.contains("skipped (outside range or service): 20"),
        "{summary}"
    );
    let restored = p.totals().await.expect("totals");
    assert_eq!(
        (restored.0, restored.1),
        (rows, value),
        "the range is back, exactly"
    );

    // Replaying everything again changes nothing.
    let all = replay(base_ms(), base_ms() + 30 * 10_000, false);
    assert!(all.contains("windows replayed: 30,"), "{all}");
    let again = p.totals().await.expect("totals");
    assert_eq!((again.0, again.1), (rows, value));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_refuses_a_database_without_its_schema() {
    let database = unique_name("consumer_unmigrated");
    clickhouse_client()
        .query(&format!("CREATE DATABASE {database}"))
        .execute()
        .await
        .expect("database");
    let out = Command::new(bin("javelin-consumer"))
        .args(RunTopics::new(&database).consumer_args(
            &clickhouse_url(),
            &database,
            &kafka_brokers(),
            &database,
        ))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every migration is missing, whatever their number.
    let all: Vec<u32> = javelin_schema::migrations::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert!(
        stderr.contains(&format!("lacks schema migrations {all:?}"))
            && stderr.contains("javelin-consumer migrate"),
        "{stderr}"
    );
    clickhouse_client()
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("cleanup");
}
