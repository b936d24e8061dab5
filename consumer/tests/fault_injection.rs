//! Fault injection with librdkafka's mock cluster (the real ClickHouse of the
//! local stack stores the rows): failing offset commits and a broker that goes
//! down while batches are in flight neither lose nor double-count data, and the
//! committed offsets still reach the end once the faults clear.

use std::time::Duration;

use javelin_schema::rows::SAMPLES_ONCE;

use clap::Parser;
use javelin_consumer::config::{Cli, Command};
use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::testkit::{
    RunTopics, clickhouse_client, clickhouse_url, unique_name, wait_for,
};
use javelin_schema::wire::{ProfileType, ProfileWindow, Stack, TargetIdentity};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn window(index: i64, base: i64) -> (Vec<u8>, i64) {
    let stacks: Vec<Stack> = (0..5u32)
        .map(|k| Stack {
            frames: vec![1, 2 + k],
            value: 100 + i64::from(k) + index,
            count: 1,
            stack_id: javelin_schema::stack_id_of_names(&["main".to_string(), format!("f{k}")]),
            lines: vec![],
            frame_types: vec![],
        })
        .collect();
    let total = stacks.iter().map(|s| s.value).sum();
    let mut strings = vec![String::new(), "main".to_string()];
    strings.extend((0..5).map(|k| format!("f{k}")));
    let w = ProfileWindow {
        target: Some(TargetIdentity {
            service: "svc".into(),
            target_id: 9,
            ..Default::default()
        }),
        profile_type: ProfileType::Cpu as i32,
        window_start_ms: base + index * 10_000,
        window_end_ms: base + index * 10_000 + 10_000,
        part_index: 0,
        part_count: 1,
        window_id: index as u64,
        strings,
        stacks,
        ..Default::default()
    };
    (w.to_bytes(), total)
}

async fn produce(producer: &FutureProducer, topic: &str, from: i64, to: i64, base: i64) -> i64 {
    let mut total = 0;
    for i in from..to {
        let (payload, value) = window(i, base);
        total += value;
        let key = format!("k{}", i % 2);
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_failures_and_a_broker_outage_lose_and_double_count_nothing() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let run = unique_name("mockfaults");
    let (profiles, status, dlq) = (format!("{run}.p"), format!("{run}.s"), format!("{run}.d"));
    for topic in [&profiles, &status, &dlq] {
        cluster.create_topic(topic, 2, 1).expect("topic");
    }
    let brokers = cluster.bootstrap_servers();
    migrate(&clickhouse_client(), &run, MigrateOptions::default())
        .await
        .expect("migrate");
    let db = clickhouse_client().with_database(&run);
    let totals = || {
        let db = db.clone();
        async move {
            db.query(&format!("SELECT count(), sum(value) FROM {SAMPLES_ONCE}"))
                .fetch_one::<(u64, i64)>()
                .await
                .ok()
        }
    };
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        / 10_000
        * 10_000
        - 3_600_000;

    // Every offset commit fails for a while.
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 20],
    );
    let mut expected = produce(&producer, &profiles, 0, 20, base).await;

    let args = |run: &str| {
        let topics = RunTopics {
            profiles: profiles.clone(),
            status: status.clone(),
            dlq: dlq.clone(),
        };
        let mut argv = vec!["javelin-consumer".to_string()];
        argv.extend(topics.consumer_args(&clickhouse_url(), run, &brokers, run));
        argv.extend(["--batch-linger-ms", "200", "--batch-max-rows", "50"].map(String::from));
        let cli = Cli::parse_from(argv);
        match cli.command {
            Command::Run(args) => *args,
            _ => unreachable!("run"),
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = tokio::spawn(javelin_consumer::ingest::run(args(&run), async {
        let _ = stopped.await;
    }));
    wait_for(
        "the first windows despite failing commits",
        Duration::from_secs(60),
        || async { totals().await.filter(|t| t.0 == 100 && t.1 == expected) },
    )
    .await;

    // The broker goes away while the consumer is mid-stream, then comes back.
    cluster.broker_down(-1).expect("broker down");
    tokio::time::sleep(Duration::from_secs(3)).await; // an outage has a length
    cluster.broker_up(-1).expect("broker up");
    expected += produce(&producer, &profiles, 20, 40, base).await;
    wait_for(
        "every window after the outage",
        Duration::from_secs(90),
        || async { totals().await.filter(|t| t.0 == 200 && t.1 == expected) },
    )
    .await;

    // With the faults cleared, commits reach the end of both partitions.
    cluster.clear_request_errors(RDKafkaApiKey::OffsetCommit);
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &run)
        .create()
        .expect("reader");
    let ends: Vec<i64> = (0..2)
        .map(|p| {
            reader
                .fetch_watermarks(&profiles, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect();
    wait_for(
        "commits at the end of every partition",
        Duration::from_secs(60),
        || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..2 {
                tpl.add_partition(&profiles, p);
            }
            let committed = reader.committed_offsets(tpl, Duration::from_secs(10)).ok();
            let done = committed.is_some_and(|c| {
                (0..2).all(|p| {
                    let at = match c.find_partition(&profiles, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => -1,
                    };
                    at == ends[p as usize] || (ends[p as usize] == 0 && at < 0)
                })
            });
            async move { done.then_some(()) }
        },
    )
    .await;
    let _ = stop.send(());
    consumer
        .await
        .expect("join")
        .expect("the consumer ends cleanly");
    let (rows, value) = totals().await.expect("totals");
    assert_eq!(
        (rows, value),
        (200, expected),
        "nothing lost, nothing double-counted"
    );
    assert_eq!(
        shown_totals(&run, base - 1_000, base + 40 * 10_000, expected).await,
        (expected, expected),
        "what the UI shows: flamegraph and top totals"
    );
    clickhouse_client()
        .query(&format!("DROP DATABASE {run}"))
        .execute()
        .await
        .expect("cleanup");
}

/// The flamegraph and top totals of `svc`/cpu that the query API (its router,
/// served in-process on a free port) shows for windows in [from_ms, to_ms),
/// once they reach `want` (or after 10 s).
async fn shown_totals(database: &str, from_ms: i64, to_ms: i64, want: i64) -> (i64, i64) {
    use javelin_query::api::{AppState, router};
    use javelin_query::params::Limits;
    use javelin_query::store::Store;
    let state = AppState {
        store: Store::new(clickhouse_client().with_database(database)),
        limits: Limits {
            default_max_nodes: 8192,
            max_nodes_limit: 1 << 20,
            max_range_ms: 7 * 86_400_000,
            request_deadline: std::time::Duration::from_secs(35),
            max_breakdown_pairs: 200_000,
        },
        auth_token: None,
        consumer_metrics_urls: vec![],
        http: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let total = |path: &'static str| async move {
        let body: serde_json::Value = reqwest::get(format!(
            "http://{address}/api/v1/{path}?service=svc&type=cpu&from={from_ms}&to={to_ms}"
        ))
        .await
        .expect("the query API answers")
        .json()
        .await
        .expect("JSON");
        body["total"]
            .as_i64()
            .unwrap_or_else(|| panic!("{path}: {body}"))
    };
    // A copy is named to readers a moment after its samples land: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut shown = (total("flamegraph").await, total("top").await);
    while shown != (want, want) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        shown = (total("flamegraph").await, total("top").await);
    }
    server.abort();
    shown
}
