//! The agent's message bound against the real broker of the local stack
//! (tansu, `dev/stack up`): the profiles topic's `max.message.bytes` is read
//! with DescribeConfigs and the bound lowered to fit; a broker that reports no
//! limit (tansu reports no broker configs) or cannot be reached keeps the
//! configured bound.

use std::time::{Duration, Instant};

use clap::Parser;
use javelin_agent::config::AgentArgs;
use javelin_agent::publish::{BrokerLimit, broker_message_limit};
use javelin_schema::testkit::{kafka_brokers, unique_name};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn create_topic(name: &str, config: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

fn args(topic: &str, brokers: &str) -> AgentArgs {
    AgentArgs::parse_from([
        "javelin-agent",
        "--brokers",
        brokers,
        "--profiles-topic",
        topic,
        "--max-message-bytes",
        "921600",
    ])
}

#[tokio::test]
async fn the_bound_is_lowered_to_the_topics_max_message_bytes() {
    let topic = unique_name("javelin_limit");
    create_topic(&topic, &[("max.message.bytes", "200000")]).await;
    let limit = broker_message_limit(&kafka_brokers(), &[], &topic, TIMEOUT)
        .await
        .expect("the broker answers DescribeConfigs");
    assert_eq!(
        limit,
        Some(BrokerLimit {
            bytes: 200_000,
            source: format!("max.message.bytes of topic {topic}"),
        })
    );
    let mut args = args(&topic, &kafka_brokers());
    assert_eq!(args.fit_to_broker(limit.as_ref()), Some(921_600), "lowered");
    assert_eq!(args.max_message_bytes, 200_000 - 6_250, "with headroom");
    assert_eq!(
        args.kafka_properties.first(),
        Some(&("message.max.bytes".to_string(), "200000".to_string())),
        "librdkafka's batches are bounded by the broker's limit too"
    );
    assert_eq!(
        args.target(None).bounds.max_message_bytes,
        200_000 - 6_250,
        "the target tasks cut windows at the fitted bound"
    );
}

#[tokio::test]
async fn without_a_reported_limit_the_configured_bound_is_kept() {
    // A topic without the setting: tansu reports no broker configs either.
    let topic = unique_name("javelin_nolimit");
    create_topic(&topic, &[]).await;
    let limit = broker_message_limit(&kafka_brokers(), &[], &topic, TIMEOUT)
        .await
        .expect("the broker answers DescribeConfigs");
    assert_eq!(
        limit, None,
        "tansu 0.6 reports only configs set on the topic"
    );
    let mut args = args(&topic, &kafka_brokers());
    assert_eq!(args.fit_to_broker(limit.as_ref()), None);
    assert_eq!(args.max_message_bytes, 921_600);
    assert!(
        !args
            .kafka_properties
            .iter()
            .any(|(k, _)| k == "message.max.bytes"),
        "librdkafka's default batch size fits a 900 KiB message"
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_an_error_within_the_timeout() {
    // A port nothing listens on: the agent keeps its bound and starts.
    let port = javelin_schema::testkit::free_port();
    let started = Instant::now();
    let asked = broker_message_limit(
        &format!("127.0.0.1:{port}"),
        &[],
        "t",
        Duration::from_secs(2),
    )
    .await;
    assert!(asked.is_err(), "{asked:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A message Kafka refuses as too large is dropped and counted as refused,
/// not retried for ever, and the messages behind it are delivered.
#[tokio::test]
async fn a_message_kafka_refuses_is_dropped_counted_and_does_not_block_the_rest() {
    use javelin_agent::publish::Publisher;
    use javelin_agent::spool::{Destination, Spool, Spooled};
    use std::sync::Arc;

    let topic = unique_name("javelin_refused");
    create_topic(&topic, &[("max.message.bytes", "20000")]).await;
    let limit = broker_message_limit(&kafka_brokers(), &[], &topic, TIMEOUT)
        .await
        .expect("the broker answers DescribeConfigs");
    let mut args = args(&topic, &kafka_brokers());
    args.fit_to_broker(limit.as_ref());
    let publisher = Arc::new(Publisher::new(args.publisher()).expect("a publisher"));
    let spool = Spool::new(8 << 20);
    let message = |bytes: usize| Spooled {
        destination: Destination::Profiles,
        key: "svc".into(),
        payload: vec![7; bytes],
        target_id: 42,
    };
    spool.push(message(100_000));
    spool.push(message(1_000));
    let stop = Arc::new(tokio::sync::Notify::new());
    let sender = {
        let (spool, stop) = (spool.clone(), stop.clone());
        tokio::spawn(async move { spool.run_sender(publisher, 4, stop).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while spool.len().0 > 0 || spool.drops(42).messages == 0 {
        assert!(
            Instant::now() < deadline,
            "the spool did not settle: {:?} waiting, drops {:?}",
            spool.len(),
            spool.drops(42)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.notify_one();
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("the sender stops")
        .expect("the sender does not panic");
    let drops = spool.drops(42);
    assert_eq!((drops.messages, drops.refused), (1, 1), "{drops:?}");
    assert_eq!(drops.bytes, 100_000);
}
