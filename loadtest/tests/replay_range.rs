//! `javelin-consumer replay` reads its whole range whatever end offset the
//! broker lists. The agent sends a window's parts together, so they go out as
//! one record batch; the local broker (tansu 0.6) lists a partition's end as
//! that batch's first offset + 1, and a replay bounded by the listed end lost
//! every part after the first. Here the range's last window is such a batch,
//! and every part of it must arrive, with the summary accounting for each
//! message read.

mod support;

use javelin_schema::rows::SAMPLES_ONCE;
use support::bin;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::testkit::{
    clickhouse_client, clickhouse_url, create_topics, kafka_brokers, unique_name,
};
use javelin_schema::wire::{ProfileType, ProfileWindow, TargetIdentity};

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

/// The parts of window `index`: `stacks` stacks per profile type in `types`,
/// parts capped at `max_message_bytes` (so a big type splits into several).
fn window_parts(
    index: i64,
    types: &[(ProfileType, u32)],
    max_message_bytes: u64,
) -> Vec<ProfileWindow> {
    let target = TargetIdentity {
        service: "svc".into(),
        pod: "pod-a".into(),
        target_id: 7,
        ..Default::default()
    };
    let mut agg = WindowAggregator::new(Bounds {
        max_message_bytes,
        ..Bounds::default()
    });
    for &(kind, stacks) in types {
        for k in 0..stacks {
            let frames: Vec<Frame> = [
                "main".to_string(),
                format!("Replay.{}{k}", kind.name()),
                format!("Replay.padding_to_fill_the_part_{k}_{index}"),
            ]
            .iter()
            .map(|n| Frame::synthetic(n))
            .collect();
            agg.add(kind, &frames.into(), 1_000 + i64::from(k) + index, 1);
        }
    }
    let start = base_ms() + index * 10_000;
    agg.finish(&target, start, start + 10_000, &Default::default(), 0, 0)
}

/// Profile type → (rows, Σ value) of `parts`.
fn totals_by_type(parts: &[ProfileWindow]) -> BTreeMap<String, (u64, i64)> {
    let mut out = BTreeMap::new();
    for p in parts {
        let slot = out.entry(p.kind().name().to_string()).or_insert((0, 0));
        slot.0 += p.stacks.len() as u64;
        slot.1 += p.stacks.iter().map(|s| s.value).sum::<i64>();
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_reads_the_last_window_sent_as_one_batch() {
    let run = unique_name("replay_range");
    let topic = format!("{run}.profiles");
    create_topics(&[&topic], 1).await;
    let publisher = Publisher::new(PublisherConfig {
        brokers: kafka_brokers(),
        profiles_topic: topic.clone(),
        status_topic: topic.clone(),
        send_timeout: Duration::from_secs(30),
        properties: vec![],
    })
    .expect("producer");
    let send = |payload: Vec<u8>| {
        let publisher = &publisher;
        async move {
            publisher
                .send_to(Destination::Profiles, "svc", &payload, None)
                .await
                .expect("produced")
        }
    };

    // One message each, awaited one by one: a window before the range, an
    // undecodable message, and two one-part windows in the range.
    let before = window_parts(0, &[(ProfileType::Cpu, 3)], 1 << 20);
    send(before[0].to_bytes()).await;
    send(b"\xff\xfe not a javelin window".to_vec()).await;
    let mut in_range: Vec<ProfileWindow> = Vec::new();
    for index in [1, 2] {
        let parts = window_parts(index, &[(ProfileType::Cpu, 5)], 1 << 20);
        assert_eq!(parts.len(), 1);
        send(parts[0].to_bytes()).await;
        in_range.extend(parts);
    }
    // The range's last window: all four types, cpu split into several parts,
    // produced back to back as the agent's spool does, so they share a batch.
    let last = window_parts(
        3,
        &[
            (ProfileType::Cpu, 24),
            (ProfileType::Alloc, 3),
            (ProfileType::Lock, 2),
            (ProfileType::Park, 2),
        ],
        2_048,
    );
    assert!(
        last.len() >= 5 && last.iter().any(|p| p.part_index > 0),
        "cpu splits into several parts: {} parts",
        last.len()
    );
    futures::future::join_all(last.iter().map(|p| send(p.to_bytes()))).await;
    in_range.extend(last.iter().cloned());
    let messages = 4 + last.len() as u64;

    // What the broker lists as the end (informational: on tansu 0.6 it is the
    // last batch's first offset + 1, short of `messages`).
    {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .create()
            .expect("client");
        let listed = client.fetch_watermarks(&topic, 0, Duration::from_secs(10));
        eprintln!("{messages} messages produced; the broker lists watermarks {listed:?}");
    }

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
    let out = Command::new(bin("javelin-consumer"))
        .args([
            "replay",
            "--clickhouse-url",
            &clickhouse_url(),
            "--database",
            &run,
            "--brokers",
            &kafka_brokers(),
            "--profiles-topic",
            &topic,
            "--from",
            &(base_ms() + 10_000).to_string(),
            "--to",
            &(base_ms() + 40_000).to_string(),
        ])
        .output()
        .expect("replay runs");
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = in_range.len();
    let want = format!(
        "messages read: {messages} (partition 0: offsets 0..{messages}), \
         windows replayed: {replayed}, rows written: {}, \
         skipped (outside range or service): 1, invalid: 1, rejected by ClickHouse: 0",
        in_range.iter().map(|p| p.stacks.len()).sum::<usize>()
    );
    assert_eq!(summary.trim(), want, "every message read is accounted for");

    // Every part of every window in the range, in the ledger and in samples, exactly.
    let db = clickhouse_client().with_database(&run);
    let mut parts: Vec<(i64, String, u32)> = db
        .query(
            "SELECT window_start_ms, profile_type, part_index FROM ingest_ledger FINAL
             WHERE status = 'accepted' ORDER BY window_start_ms, profile_type, part_index",
        )
        .fetch_all()
        .await
        .expect("ledger");
    parts.sort();
    let mut want_parts: Vec<(i64, String, u32)> = in_range
        .iter()
        .map(|p| (p.window_start_ms, p.kind().name().to_string(), p.part_index))
        .collect();
    want_parts.sort();
    assert_eq!(parts, want_parts, "every part of every window in the range");
    let stored: Vec<(String, u64, i64)> = db
        .query(&format!(
            "SELECT profile_type, count(), sum(value) FROM {SAMPLES_ONCE}
             GROUP BY profile_type ORDER BY profile_type"
        ))
        .fetch_all()
        .await
        .expect("samples");
    let stored: BTreeMap<String, (u64, i64)> = stored
        .into_iter()
        .map(|(t, rows, value)| (t, (rows, value)))
        .collect();
    assert_eq!(stored, totals_by_type(&in_range), "every sample, exactly");
}
