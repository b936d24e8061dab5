//! The consume loop: poll → batch → insert (with retry) → store offsets.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) only after every row of
//! the batch is in ClickHouse or its message is in the dead-letter topic;
//! librdkafka's auto-commit then commits stored offsets. Messages of a batch are
//! stored in the order they arrived, so per partition the committed offset is
//! always the end of a contiguous, durably handled run.

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;

use crate::config::RunArgs;
use crate::convert::{self, Source};
use crate::dead_letter::DeadLetters;
use crate::sink::{Backoff, Batch, Sink, classify};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the consumer until `shutdown` completes; the batch in hand is written and committed first.
pub async fn run(args: RunArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let consumer_id = format!("{}-{}", args.group_id, std::process::id());
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group_id)
        .set("client.id", &consumer_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "30000")
        .set("max.poll.interval.ms", "300000");
    for (k, v) in &args.kafka_properties {
        config.set(k, v);
    }
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[args.profiles_topic.as_str(), args.status_topic.as_str()])?;
    let dead_letters = DeadLetters::new(&args.brokers, &args.dlq_topic, &consumer_id)?;
    let client = args.clickhouse_client();
    let mut sink = Sink::new(client, args.stack_cache_entries);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    tracing::info!(group = %args.group_id, topics = ?[&args.profiles_topic, &args.status_topic], "consuming");

    tokio::pin!(shutdown);
    let mut stopping = false;
    while !stopping {
        let mut batch = Batch::default();
        let mut handled: Vec<Source> = Vec::new();
        let mut bytes = 0usize;
        let deadline = Instant::now() + Duration::from_millis(args.batch_linger_ms);
        while batch.rows() < args.batch_max_rows && bytes < args.batch_max_bytes {
            let message = tokio::select! {
                m = consumer.recv() => m,
                _ = tokio::time::sleep_until(deadline.into()) => break,
                _ = &mut shutdown => { stopping = true; break }
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka poll error");
                    continue;
                }
            };
            let source = Source {
                topic: message.topic().to_string(),
                partition: message.partition(),
                offset: message.offset(),
            };
            let payload = message.payload().unwrap_or_default();
            bytes += payload.len();
            let now = now_ms();
            let decoded = if source.topic == args.status_topic {
                convert::status_row(payload).map(|row| batch.statuses.push(row))
            } else {
                convert::window_rows(payload, &source, now).map(|rows| {
                    batch.samples.extend(rows.samples);
                    batch.stacks.extend(rows.stacks);
                    batch.ledger.extend(rows.ledger);
                })
            };
            if let Err(error) = decoded {
                tracing::warn!(topic = %source.topic, partition = source.partition, offset = source.offset, %error, "dead-lettering message");
                let mut dlq_backoff = backoff.clone();
                // The offset may only move past this message once the DLQ has it.
                while let Err(e) = dead_letters
                    .send(
                        message.key(),
                        payload,
                        &source,
                        &error.to_string(),
                        "invalid_message",
                        now,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "dead-letter topic unavailable; retrying");
                    tokio::time::sleep(dlq_backoff.next_delay()).await;
                }
            }
            handled.push(source);
        }
        if handled.is_empty() {
            continue;
        }
        let started = Instant::now();
        loop {
            match sink.write(&batch).await {
                Ok(()) => break,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, class = ?classify(&error), retry_in = ?delay, "ClickHouse insert failed; batch kept, offsets not stored");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        backoff.reset();
        for source in &handled {
            consumer.store_offset(&source.topic, source.partition, source.offset)?;
        }
        tracing::debug!(messages = handled.len(), rows = batch.rows(), took = ?started.elapsed(), "batch stored");
    }
    // Stored offsets are committed synchronously on the way out.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final commit failed; the last batch may be re-delivered (it is idempotent)");
    }
    Ok(())
}
