//! The agent's spool against a real broker that is down at first: messages wait
//! (bounded, oldest dropped and counted) and are delivered once the broker is up.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::{Destination, Spool, Spooled};
use javelin_schema::testkit::{
    Reaped, TopicLog, create_topics_on, free_port, tansu_bin, unique_name, wait_for,
};
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread")]
async fn messages_wait_in_the_bounded_spool_until_kafka_is_back() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = unique_name("spool");
    let publisher = Arc::new(
        Publisher::new(PublisherConfig {
            brokers: brokers.clone(),
            profiles_topic: topic.clone(),
            status_topic: format!("{topic}.status"),
            send_timeout: Duration::from_secs(2),
            properties: vec![],
        })
        .expect("producer"),
    );
    // Room for 8 messages of 1000 bytes; 12 are pushed while Kafka is down.
    let spool = Spool::new(8_000);
    for i in 0..12u8 {
        spool.push(Spooled {
            destination: Destination::Profiles,
            key: "svc".into(),
            payload: vec![i; 1000],
            target_id: u64::from(i % 2),
        });
    }
    assert_eq!(spool.len(), (8, 8_000));
    // The four oldest (0..=3) were dropped: two per target, counted.
    assert_eq!(spool.drops(0).messages + spool.drops(1).messages, 4);
    assert_eq!(spool.drops(0).messages, 2);

    let stop = Arc::new(Notify::new());
    let sender = {
        let (spool, stop, publisher) = (spool.clone(), stop.clone(), publisher.clone());
        tokio::spawn(async move { spool.run_sender(publisher, 4, stop).await })
    };
    // Kafka is unreachable: two rounds of deliveries fail, and everything stays spooled.
    wait_for("failed delivery rounds", Duration::from_secs(30), || {
        let failed = spool.failed_deliveries() >= 8;
        async move { failed.then_some(()) }
    })
    .await;
    assert_eq!(
        (spool.len().0, spool.delivered()),
        (8, 0),
        "nothing may be delivered or lost while Kafka is down"
    );

    // Kafka comes up on that address.
    let dir = std::env::temp_dir().join(&topic);
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("tcp://{brokers}");
    let _broker = Reaped(
        Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts"),
    );
    wait_for(
        "the broker to accept connections",
        Duration::from_secs(30),
        || {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            async move { up.then_some(()) }
        },
    )
    .await;
    create_topics_on(&brokers, &[&topic], 1).await;
    wait_for("the spool to drain", Duration::from_secs(60), || {
        let drained = spool.delivered() == 8 && spool.is_empty();
        async move { drained.then_some(()) }
    })
    .await;

    // Exactly the eight newest messages arrived, in order.
    let log = TopicLog::follow_on(&brokers, &topic);
    let payloads = wait_for("the messages on the topic", Duration::from_secs(30), || {
        let p = log.payloads();
        async move { (p.len() >= 8).then_some(p) }
    })
    .await;
    let firsts: Vec<u8> = payloads.iter().map(|p| p[0]).collect();
    assert_eq!(firsts, (4..12).collect::<Vec<u8>>());
    stop.notify_one();
    tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("sender stops")
        .expect("join");
}
