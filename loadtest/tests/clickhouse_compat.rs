//! A current ClickHouse next to Debian's 18.16: ClickHouse 26.9 (chdb-core's
//! engine, served over HTTP by `dev/chdb-server`) and the stack's 18.16 each
//! take the same stream through their own `javelin-consumer` and answer their
//! own `javelin-query`. Every statement either server sees comes from the
//! binaries themselves: `migrate` (the modern path with LowCardinality and TTL
//! on 26.9, the 18.16 path on the other), the consumer's inserts (with
//! `async_insert=0` where it exists), the query API's reads. The answers a
//! user sees must be equal and equal to what was produced: flamegraph, top,
//! search and focus, diff, exports, health, targets, labels; and retention ends
//! the same way, by the partition janitor on 18.16 and by TTL on 26.9.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_loadtest::load::{Expected, Shape, windows_for_tick};
use javelin_loadtest::query_view::QueryView;
use javelin_schema::rows::table;
use javelin_schema::testkit::chdb::ChdbServer;
use javelin_schema::testkit::{
    Reaped, RunTopics, clickhouse_url, create_topics, kafka_brokers, unique_name, wait_for,
};
use javelin_schema::topology::Topology;
use javelin_schema::wire::{TargetState, TargetStatus};
use serde_json::Value;
use support::bin;

const DAY_MS: i64 = 86_400_000;

/// One server under test: its consumer, its query API.
struct Side {
    version: &'static str,
    url: String,
    _consumer: Reaped,
    view: QueryView,
    http: reqwest::Client,
    base: String,
}

impl Side {
    fn start(
        version: &'static str,
        url: String,
        run: &str,
        topics: &RunTopics,
        group: &str,
    ) -> Side {
        let migrate = Command::new(bin("javelin-consumer"))
            .args(["migrate", "--clickhouse-url", &url, "--database", run])
            .output()
            .expect("migrate runs");
        let said = String::from_utf8_lossy(&migrate.stdout);
        assert!(
            migrate.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        assert!(said.contains(&format!("server {version}")), "{said}");
        let logs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
        std::fs::create_dir_all(&logs).expect("logs");
        let log =
            std::fs::File::create(logs.join(format!("{run}.{version}.consumer.log"))).expect("log");
        let consumer = Command::new(bin("javelin-consumer"))
            .args(topics.consumer_args(&url, run, &kafka_brokers(), group))
            .args(["--batch-linger-ms", "200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("consumer starts");
        let view = QueryView::start(&bin("javelin-query"), &url, run, &[]).expect("query API");
        let base = view.base_url().to_string();
        Side {
            version,
            url,
            _consumer: Reaped(consumer),
            view,
            http: reqwest::Client::new(),
            base,
        }
    }

    /// The body of a query API answer (status 200 required).
    async fn bytes(&self, path: &str) -> Vec<u8> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.version));
        let status = response.status();
        let body = response.bytes().await.expect("body").to_vec();
        assert!(
            status.is_success(),
            "{}: GET {path}: {status} {}",
            self.version,
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// A JSON answer (a text one, e.g. collapsed stacks, as a JSON string).
    async fn get(&self, path: &str) -> Value {
        let body = self.bytes(path).await;
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    }

    fn server(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_validation(false)
    }
}

/// Fields that differ between two correct servers: when each consumer
/// happened to ingest (latency) and a query's own bookkeeping.
fn normalized(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("max_ingest_latency_ms");
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Sum of produced values per (service, type) over `expected`.
fn totals(expected: &Expected) -> std::collections::BTreeMap<(String, &'static str), i64> {
    let mut out = std::collections::BTreeMap::new();
    for ((service, kind, _), (value, _)) in &expected.cells {
        *out.entry((service.clone(), *kind)).or_insert(0) += value;
    }
    out
}

/// `[from, to)` in ms covering every window of `expected`.
fn span(expected: &Expected, window_ms: i64) -> (i64, i64) {
    let starts: Vec<i64> = expected
        .cells
        .keys()
        .map(|k| i64::from(k.2) * 1000)
        .collect();
    let from = starts.iter().min().copied().unwrap_or(0);
    let to = starts.iter().max().copied().unwrap_or(0) + window_ms;
    (from, to)
}

#[tokio::test]
async fn clickhouse_26_9_answers_like_18_16() {
    let run = unique_name("compat");
    let chdb = ChdbServer::start(&run).expect("ClickHouse 26.9 (dev/chdb-server)");
    let topics = RunTopics::new(&run);
    create_topics(&[&topics.profiles, &topics.status, &topics.dlq], 4).await;
    let sides = [
        Side::start(
            "18.16",
            clickhouse_url(),
            &run,
            &topics,
            &format!("{run}_a"),
        ),
        Side::start("26.9", chdb.url.clone(), &run, &topics, &format!("{run}_b")),
    ];

    // The stream: every profile type, truncation (the stack bound is below the
    // stacks per window), windows at odd milliseconds with a gap, one window
    // delivered twice, and windows 6 and 8 days old (inside and outside the
    // 7-day retention).
    let shape = Shape {
        services: 2,
        pods: 2,
        stacks: 30,
        window_secs: 10,
        alloc_heavy: true,
        lock_heavy: true,
        max_stacks_per_window: 20,
    };
    let window_ms = shape.window_secs * 1000;
    let now = javelin_loadtest::now_ms();
    let base = now / window_ms * window_ms - 10 * window_ms + 17;
    let (mut recent, mut six_days, mut eight_days) = (
        Expected::default(),
        Expected::default(),
        Expected::default(),
    );
    let mut windows = Vec::new();
    for tick in [0, 1, 4] {
        windows.extend(windows_for_tick(
            &shape,
            base + tick * window_ms,
            &mut recent,
        ));
    }
    let redelivered = windows_for_tick(&shape, base, &mut Expected::default());
    windows.extend(windows_for_tick(&shape, base - 6 * DAY_MS, &mut six_days));
    windows.extend(windows_for_tick(&shape, base - 8 * DAY_MS, &mut eight_days));
    assert!(recent.truncated_parts > 0, "the stream carries truncation");
    let publisher = Publisher::new(PublisherConfig {
        brokers: kafka_brokers(),
        profiles_topic: topics.profiles.clone(),
        status_topic: topics.status.clone(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })
    .expect("producer");
    for (key, window) in windows.iter().chain(&redelivered) {
        publisher
            .send_to(Destination::Profiles, key, &window.to_bytes(), None)
            .await
            .expect("published");
    }
    // One status per target, as agents send them.
    let mut seen = std::collections::BTreeSet::new();
    for (key, window) in &windows {
        let Some(target) = window.target.clone() else {
            continue;
        };
        if !seen.insert(target.target_id) {
            continue;
        }
        let status = TargetStatus {
            target: Some(target),
            state: TargetState::Profiling as i32,
            recorder: "jfr".into(),
            last_error: String::new(),
            observed_at_ms: now - 1_234,
            agent_version: "compat".into(),
            windows_published: 3,
            spool_dropped_messages: 1,
            dropped_events: 2,
            dropped_stacks: 10,
            truncated_windows: 3,
            failed_collects: 1,
            oversized_messages: 0,
            sampling: "cpu: jdk.ExecutionSample every 10 ms; 10-s windows".into(),
        };
        publisher
            .send_to(Destination::Status, key, &status.to_bytes(), None)
            .await
            .expect("status published");
    }

    // The consumer's writer turns buffered inserts off where the server has
    // them (26.9 buffers by default; the copy is named to readers right after
    // the insert returns) and sends nothing 18.16 would refuse.
    for side in &sides {
        let cli = javelin_consumer::config::Cli::try_parse_from([
            "javelin-consumer",
            "migrate",
            "--clickhouse-url",
            &side.url,
            "--database",
            &run,
        ])
        .expect("flags");
        let javelin_consumer::config::Command::Migrate(args) = cli.command else {
            panic!("parsed as migrate");
        };
        let writer = args
            .clickhouse
            .writer_client()
            .await
            .expect("writer client");
        let one: u8 = writer
            .query("SELECT 1")
            .fetch_one()
            .await
            .unwrap_or_else(|e| panic!("{}: the writer's settings are refused: {e}", side.version));
        assert_eq!(one, 1);
        if side.version == "26.9" {
            let buffered: u8 = writer
                .query("SELECT toUInt8(getSetting('async_insert'))")
                .fetch_one()
                .await
                .expect("setting");
            assert_eq!(buffered, 0, "26.9 inserts are not buffered");
        }
    }

    // Both servers show exactly what was produced (the redelivered window once).
    let (from, to) = span(&recent, window_ms);
    for side in &sides {
        for ((service, kind), value) in totals(&recent) {
            let shown = side
                .view
                .totals_reaching(&service, kind, (from, to), value, Duration::from_secs(90))
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", side.version));
            assert_eq!(
                (shown.flamegraph, shown.top),
                (value, value),
                "{} {service}/{kind}",
                side.version
            );
        }
    }
    wait_for(
        "both servers to hold every status",
        Duration::from_secs(60),
        || async {
            let mut all = true;
            for side in &sides {
                let targets = side
                    .get(&format!(
                        "/api/v1/targets?from={}&to={}",
                        now - 60_000,
                        now + 60_000
                    ))
                    .await;
                all &= targets["targets"].as_array().map_or(0, Vec::len) == seen.len();
            }
            all.then_some(())
        },
    )
    .await;

    // Every answer a user sees, side by side.
    let (six_from, six_to) = span(&six_days, window_ms);
    let mut paths = vec![
        format!("/api/v1/services?from={from}&to={to}"),
        format!("/api/v1/health?from={from}&to={to}&bucket=10"),
        format!("/api/v1/health?service=loadtest-0&from={six_from}&to={six_to}&bucket=10"),
        format!("/api/v1/targets?from={}&to={}", now - 60_000, now + 60_000),
    ];
    for (service, kind) in totals(&recent).keys() {
        let q = format!("service={service}&type={kind}&from={from}&to={to}");
        paths.extend([
            format!("/api/v1/profile-types?service={service}&from={from}&to={to}"),
            format!("/api/v1/labels?label=pod&{q}"),
            format!("/api/v1/flamegraph?{q}"),
            format!("/api/v1/flamegraph?{q}&pod={service}-1&max_nodes=16"),
            format!("/api/v1/top?{q}"),
            format!("/api/v1/top?{q}&pod={service}-0&limit=5"),
            format!("/api/v1/diff?{q}&right_from={six_from}&right_to={six_to}"),
            format!("/api/v1/diff?{q}&pod={service}-0&right_pod={service}-1"),
            format!("/api/v1/export/collapsed?{q}"),
            format!("/api/v1/timeline?{q}"),
            format!("/api/v1/timeline?{q}&step=7&pod={service}-0"),
            format!("/api/v1/tags?{q}&label=pod&limit=1"),
            format!("/api/v1/tags?{q}&label=node"),
            format!("/api/v1/diff/functions?{q}&right_from={six_from}&right_to={six_to}"),
            format!("/api/v1/diff/functions?{q}&pod={service}-0&right_pod={service}-1&by=total&order=abs"),
        ]);
        // The sandwich of the hottest function (named by the 18.16 side).
        let top = sides[0].get(&format!("/api/v1/top?{q}&limit=1")).await;
        let hottest = top["rows"][0]["name"].as_str().unwrap_or_default();
        assert!(!hottest.is_empty(), "{top}");
        let mut sandwich = reqwest::Url::parse("http://compat/api/v1/sandwich").expect("url");
        sandwich
            .query_pairs_mut()
            .append_pair("service", service)
            .append_pair("type", kind)
            .append_pair("from", &from.to_string())
            .append_pair("to", &to.to_string())
            .append_pair("function", hottest);
        paths.push(format!(
            "{}?{}",
            sandwich.path(),
            sandwich.query().unwrap_or_default()
        ));
    }
    for path in &paths {
        let (a, b) = (sides[0].get(path).await, sides[1].get(path).await);
        assert_eq!(normalized(a), normalized(b), "GET {path}");
    }
    for (service, kind) in totals(&recent).keys() {
        let path =
            format!("/api/v1/export/pprof?service={service}&type={kind}&from={from}&to={to}");
        let (a, b) = (sides[0].bytes(&path).await, sides[1].bytes(&path).await);
        assert!(!a.is_empty() && a == b, "GET {path}: the same profile");
    }
    let health = sides[1].get(&paths[1]).await;
    assert_eq!(
        health["totals"]["truncated_parts"].as_u64(),
        Some(recent.truncated_parts),
        "{health}"
    );

    // Retention: the 8-day-old windows go, the 6-day-old ones stay. 18.16 has
    // no TTL: the consumer's janitor drops the day partitions (run here rather
    // than waiting for its hourly pass). 26.9 has the migrations' TTL: the
    // janitor leaves it alone, and ClickHouse deletes the rows in a TTL merge
    // (OPTIMIZE … FINAL makes it merge now instead of on its timer).
    let (old_from, old_to) = span(&eight_days, window_ms);
    let old_totals = totals(&eight_days);
    let ((first_service, first_kind), old_value) = old_totals
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), *v))
        .expect("old windows");
    let shown_18 = sides[0]
        .view
        .totals_reaching(
            &first_service,
            first_kind,
            (old_from, old_to),
            old_value,
            Duration::from_secs(30),
        )
        .await
        .expect("18.16 holds the old windows until its janitor runs");
    assert_eq!(shown_18.flamegraph, old_value);
    for side in &sides {
        let db = side.server().with_database(&run);
        let dropped = javelin_consumer::retention::prune(&db, &run, &Topology::SingleNode, 7)
            .await
            .expect("prune");
        if side.version == "18.16" {
            let days: std::collections::BTreeSet<&str> =
                dropped.iter().map(|(_, day)| day.as_str()).collect();
            assert_eq!(days.len(), 1, "one day partition dropped: {dropped:?}");
            assert!(
                dropped.iter().any(|(t, _)| t == table::SAMPLES),
                "{dropped:?}"
            );
        } else {
            assert!(
                dropped.is_empty(),
                "TTL is the server's job on 26.9: {dropped:?}"
            );
        }
    }
    wait_for(
        "26.9's TTL to delete the 8-day-old windows",
        Duration::from_secs(60),
        || async {
            let db = sides[1].server().with_database(&run);
            for t in [
                table::SAMPLES,
                table::STORED_PARTS,
                table::INGEST_LEDGER,
                table::STACKS,
            ] {
                db.query(&format!("OPTIMIZE TABLE {t} FINAL"))
                    .execute()
                    .await
                    .ok()?;
            }
            let shown = sides[1]
                .view
                .totals(&first_service, first_kind, old_from, old_to)
                .await
                .ok()?;
            (shown.flamegraph == 0).then_some(())
        },
    )
    .await;
    for side in &sides {
        for (service, kind) in old_totals.keys() {
            let shown = side
                .view
                .totals(service, kind, old_from, old_to)
                .await
                .expect("old range");
            assert_eq!(
                (shown.flamegraph, shown.top),
                (0, 0),
                "{} {service}/{kind}",
                side.version
            );
        }
        for ((service, kind), value) in totals(&six_days) {
            let shown = side
                .view
                .totals(&service, kind, six_from, six_to)
                .await
                .expect("6-day-old range");
            assert_eq!(
                (shown.flamegraph, shown.top),
                (value, value),
                "{} kept {service}/{kind}",
                side.version
            );
        }
    }
    let old_health = format!("/api/v1/health?from={old_from}&to={old_to}&bucket=10");
    let (a, b) = (
        sides[0].get(&old_health).await,
        sides[1].get(&old_health).await,
    );
    assert_eq!(normalized(a.clone()), normalized(b), "GET {old_health}");
    assert_eq!(a["totals"]["windows"].as_u64(), Some(0), "{a}");
}
