//! librdkafka properties reach every Kafka client, against a real broker that
//! requires SASL/SCRAM (tansu with authentication): the agent's producer
//! delivers with the right credentials and fails with wrong ones; the
//! consumer's dead-letter producer delivers an invalid message to the DLQ; and
//! replay reads a range back into ClickHouse.

mod support;

use javelin_schema::rows::SAMPLES_ONCE;
use support::bin;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_consumer::config::{Cli, Command as ConsumerCommand, ReplayArgs};
use javelin_consumer::kafka_config::KafkaConnection;
use javelin_schema::testkit::{
    Reaped, Received, RunTopics, clickhouse_client, clickhouse_url, free_port, tansu_bin,
    unique_name, wait_for,
};
use javelin_schema::wire::{ProfileType, ProfileWindow, TargetIdentity};

const USER: &str = "javelin";
const PASSWORD: &str = "s3cret";

fn broker(dir: &Path, url: &str, auth: bool) -> Reaped {
    let mut cmd = Command::new(tansu_bin());
    cmd.args([
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ])
    // Relative sqlite path: users and topics survive the restart with authentication on.
    .args(["--storage-engine", "sqlite://auth.db"])
    .current_dir(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if auth {
        cmd.arg("--authentication");
    }
    Reaped(cmd.spawn().expect("tansu starts"))
}

async fn wait_listening(port: u16) {
    wait_for("the broker to listen", Duration::from_secs(30), || {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        async move { up.then_some(()) }
    })
    .await;
}

fn tansu(args: &[&str]) {
    let status = Command::new(tansu_bin())
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("tansu runs");
    assert!(status.success(), "tansu {args:?} failed");
}

/// A broker of the test's own that requires SCRAM-SHA-256 for user `javelin`,
/// with `topics` (one partition each) created before authentication was on.
struct SecuredBroker {
    brokers: String,
    dir: PathBuf,
    _broker: Reaped,
}

impl SecuredBroker {
    async fn start(topics: &[&str]) -> SecuredBroker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(unique_name("kafka_auth"));
        std::fs::create_dir_all(&dir).expect("dir");
        {
            // Users (and, here, topics) can only be created while authentication is off.
            let _open = broker(&dir, &url, false);
            wait_listening(port).await;
            tansu(&[
                "user",
                "create",
                "--broker",
                &url,
                "--mechanism",
                "scram256",
                USER,
                PASSWORD,
            ]);
            for topic in topics {
                tansu(&[
                    "topic",
                    "create",
                    topic,
                    "--broker",
                    &url,
                    "--partitions",
                    "1",
                ]);
            }
        }
        let secured = broker(&dir, &url, true);
        wait_listening(port).await;
        SecuredBroker {
            brokers: format!("127.0.0.1:{port}"),
            dir,
            _broker: secured,
        }
    }
}

impl Drop for SecuredBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The librdkafka properties of a SASL/SCRAM client.
fn sasl(password: &str) -> Vec<(String, String)> {
    [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", USER),
        ("sasl.password", password),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn publisher(brokers: &str, topic: &str, password: &str) -> Publisher {
    Publisher::new(PublisherConfig {
        brokers: brokers.to_string(),
        profiles_topic: topic.to_string(),
        status_topic: topic.to_string(),
        send_timeout: Duration::from_secs(5),
        properties: sasl(password),
    })
    .expect("producer")
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_scram_properties_reach_librdkafka() {
    let topic = "javelin.auth.test";
    let broker = SecuredBroker::start(&[topic]).await;

    let good = publisher(&broker.brokers, topic, PASSWORD);
    good.send_to(Destination::Profiles, "svc", b"authenticated", None)
        .await
        .expect("delivered with SCRAM credentials");

    let bad = publisher(&broker.brokers, topic, "wrong");
    let refused = bad
        .send_to(Destination::Profiles, "svc", b"refused", None)
        .await;
    assert!(refused.is_err(), "a wrong password must not deliver");
}

/// The start of the first synthetic window: an hour ago, on a 10 s boundary
/// (recent: the consumer's retention drops data older than 7 days).
fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        (now - 3_600_000) / 10_000 * 10_000
    })
}

/// A one-part cpu window of service `svc` with `stacks` stacks; its total value.
fn window(index: i64, stacks: u32) -> (ProfileWindow, i64) {
    let target = TargetIdentity {
        service: "svc".into(),
        pod: "pod-a".into(),
        target_id: 42,
        ..Default::default()
    };
    let mut agg = WindowAggregator::new(Bounds::default());
    let mut total = 0;
    for k in 0..stacks {
        let frames: Vec<Frame> = ["main".to_string(), format!("Auth.step{k}")]
            .iter()
            .map(|n| Frame::synthetic(n))
            .collect();
        let value = 500 + i64::from(k) + index;
        total += value;
        agg.add(ProfileType::Cpu, &frames.into(), value, 1);
    }
    let start = base_ms() + index * 10_000;
    let mut windows = agg.finish(&target, start, start + 10_000, &Default::default(), 0, 0);
    assert_eq!(windows.len(), 1);
    (windows.remove(0), total)
}

/// A fresh database with the consumer's schema.
fn migrated_database(name: &str) -> clickhouse::Client {
    let migrate = Command::new(bin("javelin-consumer"))
        .args([
            "migrate",
            "--clickhouse-url",
            &clickhouse_url(),
            "--database",
            name,
        ])
        .output()
        .expect("migrate runs");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    clickhouse_client().with_database(name)
}

/// (rows, Σ value) of the stored samples.
async fn totals(db: &clickhouse::Client) -> Option<(u64, i64)> {
    db.query(&format!("SELECT count(), sum(value) FROM {SAMPLES_ONCE}"))
        .fetch_one()
        .await
        .ok()
}

/// Every message of partition 0 of `topic`, read with SASL credentials from
/// the beginning to the partition's end; `None` if the read fails.
async fn read_all_with_sasl(brokers: &str, topic: &str) -> Option<Vec<Received>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::{Headers, Message};
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("auth_reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in sasl(PASSWORD) {
        config.set(k, v);
    }
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().ok()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
            .ok()?;
        consumer.assign(&tpl).ok()?;
        let until = std::time::Instant::now() + Duration::from_secs(20);
        let mut read = Vec::new();
        while std::time::Instant::now() < until {
            let message = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => return Some(read),
                Some(Err(_)) => return None,
                Some(Ok(m)) => m,
            };
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_string(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            read.push(Received {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// `javelin-consumer replay` arguments, parsed as the binary parses them.
fn replay_args(brokers: &str, database: &str, topic: &str, from: i64, to: i64) -> ReplayArgs {
    let argv = [
        "javelin-consumer",
        "replay",
        "--clickhouse-url",
        &clickhouse_url(),
        "--database",
        database,
        "--brokers",
        brokers,
        "--profiles-topic",
        topic,
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ];
    match <Cli as clap::Parser>::try_parse_from(argv).expect("replay arguments") {
        Cli {
            command: ConsumerCommand::Replay(args),
            ..
        } => args,
        other => panic!("parsed as {other:?}"),
    }
}

/// Under SASL, a message the consumer cannot decode reaches the dead-letter
/// topic, unchanged and with its provenance, while the valid windows land:
/// the DLQ producer connects with the consumer's own Kafka properties.
#[tokio::test(flavor = "multi_thread")]
async fn under_sasl_an_invalid_message_reaches_the_dead_letter_topic() {
    let run = unique_name("kafka_auth_dlq");
    let topics = RunTopics::new(&run);
    let broker = SecuredBroker::start(&[&topics.profiles, &topics.status, &topics.dlq]).await;
    let db = migrated_database(&run);
    let agent = publisher(&broker.brokers, &topics.profiles, PASSWORD);
    let garbage = b"\xff\xfe not a javelin window".to_vec();
    let (mut rows, mut value) = (0u64, 0i64);
    for i in 0..3 {
        let (w, total) = window(i, 6);
        rows += 6;
        value += total;
        agent
            .send_to(Destination::Profiles, "svc", &w.to_bytes(), None)
            .await
            .expect("window delivered");
        if i == 1 {
            agent
                .send_to(Destination::Profiles, "svc", &garbage, None)
                .await
                .expect("garbage delivered");
        }
    }

    let mut args = topics.consumer_args(&clickhouse_url(), &run, &broker.brokers, &run);
    for (k, v) in sasl(PASSWORD) {
        args.extend(["--kafka-property".to_string(), format!("{k}={v}")]);
    }
    let _consumer = Reaped(
        Command::new(bin("javelin-consumer"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("consumer starts"),
    );

    wait_for(
        "the invalid message in the dead-letter topic",
        Duration::from_secs(60),
        || async {
            read_all_with_sasl(&broker.brokers, &topics.dlq)
                .await
                .filter(|read| !read.is_empty())
        },
    )
    .await;
    let got = wait_for(
        "the valid windows in ClickHouse",
        Duration::from_secs(60),
        || async { totals(&db).await.filter(|t| *t == (rows, value)) },
    )
    .await;
    assert_eq!(got, (rows, value));
    // Every window after it has landed, so its dead letter was sent before: all are in.
    let dead = read_all_with_sasl(&broker.brokers, &topics.dlq)
        .await
        .expect("the dead-letter topic reads under SASL");
    assert_eq!(dead.len(), 1, "only the invalid message: {dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.payload, garbage, "the message, unchanged");
    assert_eq!(letter.key.as_deref(), Some(&b"svc"[..]));
    assert_eq!(
        letter.header("javelin.source_topic"),
        Some(topics.profiles.as_str())
    );
    assert_eq!(letter.header("javelin.source_partition"), Some("0"));
    assert_eq!(
        letter.header("javelin.source_offset"),
        Some("2"),
        "the third message of the partition"
    );
    assert!(
        letter.header("javelin.error_class").is_some()
            && letter
                .header("javelin.reason")
                .is_some_and(|r| !r.is_empty()),
        "{:?}",
        letter.headers
    );
}

/// Under SASL, replay re-ingests a range into ClickHouse, exactly; without the
/// properties it cannot read the topic at all.
#[tokio::test(flavor = "multi_thread")]
async fn under_sasl_replay_reingests_a_range() {
    let run = unique_name("kafka_auth_replay");
    let topic = format!("{run}.profiles");
    let broker = SecuredBroker::start(&[&topic]).await;
    let agent = publisher(&broker.brokers, &topic, PASSWORD);
    let (mut rows, mut value) = (0u64, 0i64);
    for i in 0..5 {
        let (w, total) = window(i, 4);
        if (1..4).contains(&i) {
            rows += 4;
            value += total;
        }
        agent
            .send_to(Destination::Profiles, "svc", &w.to_bytes(), None)
            .await
            .expect("window delivered");
    }
    agent
        .send_to(Destination::Profiles, "svc", b"not a window", None)
        .await
        .expect("garbage delivered");
    let db = migrated_database(&run);
    // Windows 1, 2 and 3.
    let args = replay_args(
        &broker.brokers,
        &run,
        &topic,
        base_ms() + 10_000,
        base_ms() + 40_000,
    );
    let properties = sasl(PASSWORD);
    let kafka = KafkaConnection {
        brokers: &broker.brokers,
        properties: &properties,
    };
    let summary = javelin_consumer::replay::replay_on(&args, kafka, |_, _| {})
        .await
        .expect("replay under SASL");
    assert_eq!(
        (
            summary.messages,
            summary.windows,
            summary.skipped,
            summary.invalid,
            summary.rejected
        ),
        (6, 3, 2, 1, 0),
        "{summary}"
    );
    assert_eq!(totals(&db).await, Some((rows, value)), "{summary}");

    let plaintext = KafkaConnection {
        brokers: &broker.brokers,
        properties: &[],
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(120),
        javelin_consumer::replay::replay_on(&args, plaintext, |_, _| {}),
    )
    .await
    .expect("replay without credentials gives up");
    assert!(
        refused.is_err(),
        "replay without the SASL properties must not read: {refused:?}"
    );
}
