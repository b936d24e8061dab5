//! The consume loop: poll → batch → insert (with retry) → store offsets.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) only after every
//! message of the batch has its rows in ClickHouse or is in the dead-letter
//! topic; librdkafka's auto-commit then commits stored offsets. Messages of a
//! batch are stored in the order they arrived, so per partition the committed
//! offset is always the end of a contiguous, durably handled run.
//!
//! While ClickHouse is failing, the batch is kept and retried with capped,
//! jittered backoff; the assigned partitions are paused and the consumer keeps
//! polling, so it stays in the group (heartbeats, `max.poll.interval.ms`) and
//! serves rebalances. A partition revoked meanwhile cannot have its offsets
//! stored by us; its new owner re-delivers those messages, and the rows are
//! idempotent (ReplacingMergeTree keys), so nothing is double-counted.

use std::future::Future;

use anyhow::Context;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::{BatchWriter, Pending, Rows, write_isolating};
use crate::config::RunArgs;
use crate::convert::{self, Source};
use crate::dead_letter::DeadLetters;
use crate::metrics::{ConsumerMetrics, Lag};
use crate::rate_limit::RowBudget;
use crate::sink::{Backoff, Batch, Sink, classify};
use javelin_schema::telemetry::Telemetry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl BatchWriter for Sink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), clickhouse::error::Error> {
        self.write(batch).await
    }
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
    let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
    let topics = [args.profiles_topic.clone(), args.status_topic.clone()];
    consumer.subscribe(&[topics[0].as_str(), topics[1].as_str()])?;
    let telemetry = Telemetry::new("javelin-consumer", args.otlp_endpoint.as_deref())?;
    let metrics = ConsumerMetrics::new(&telemetry);
    let retrying = metrics.retrying.clone();
    let bound = telemetry
        .serve(
            &args.metrics_listen,
            Arc::new(move || !retrying.load(Ordering::Relaxed)),
        )
        .await?;
    // Scripts and tests read this line to find the port.
    println!("javelin-consumer metrics on http://{bound}/metrics");
    let total_partitions = Arc::new(AtomicUsize::new(0));
    tokio::spawn(sample_lag(
        consumer.clone(),
        topics.to_vec(),
        metrics.lag.clone(),
        total_partitions.clone(),
    ));
    let mut budget = RowBudget::new(
        args.max_rows_per_second,
        u32::try_from(args.batch_max_rows).unwrap_or(u32::MAX),
    );
    let dead_letters = DeadLetters::new(&args.brokers, &args.dlq_topic, &consumer_id)?;
    // Rows travel as plain RowBinary: writing into an older schema would be refused row by row.
    let pending = javelin_schema::migrations::pending(&args.clickhouse_client())
        .await
        .with_context(|| {
            format!(
                "checking the schema of database {}",
                args.clickhouse.database
            )
        })?;
    anyhow::ensure!(
        pending.is_empty(),
        "database {} lacks schema migrations {pending:?}: run `javelin-consumer migrate` first",
        args.clickhouse.database
    );
    let mut sink = Sink::new(args.clickhouse_client(), args.stack_cache_entries);
    tokio::spawn(crate::retention::run(
        args.clickhouse_client(),
        args.clickhouse.database.clone(),
        args.retention_days,
        Duration::from_secs(3600),
    ));
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    tracing::info!(group = %args.group_id, topics = ?[&args.profiles_topic, &args.status_topic], "consuming");

    tokio::pin!(shutdown);
    let mut stopping = false;
    while !stopping {
        let mut pending: Vec<Pending> = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_millis(args.batch_linger_ms);
        while rows < args.batch_max_rows && bytes < args.batch_max_bytes {
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
                convert::status_row(payload).map(Rows::Status)
            } else {
                convert::window_rows(payload, &source, now).map(Rows::Window)
            };
            let rows_of_message = match decoded {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(topic = %source.topic, partition = source.partition, offset = source.offset, %error, "dead-lettering an invalid message");
                    dead_letter(
                        &dead_letters,
                        message.key(),
                        payload,
                        &source,
                        &error.to_string(),
                        "invalid_message",
                        &backoff,
                    )
                    .await;
                    metrics.dead_letter("invalid_message");
                    Rows::DeadLettered
                }
            };
            rows += match &rows_of_message {
                Rows::Window(w) => w.samples.len() + w.stacks.len() + 1,
                Rows::Status(_) => 1,
                Rows::DeadLettered => 0,
            };
            pending.push(Pending {
                source,
                key: message.key().map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                rows: rows_of_message,
            });
        }
        // The share follows the assignment, also while idle.
        let owned = consumer.assignment().map_or(0, |a| a.count());
        budget.set_partitions(owned, total_partitions.load(Ordering::Relaxed));
        metrics
            .rate_share
            .store(u64::from(budget.share()), Ordering::Relaxed);
        if pending.is_empty() {
            continue;
        }
        metrics.throttled(budget.acquire(rows).await);
        let started = Instant::now();
        let rejected =
            write_until_stored(&consumer, &mut sink, &pending, &mut backoff, &metrics).await;
        metrics.written(&Batch::of(&pending), started.elapsed().as_secs_f64());
        for (index, reason) in rejected {
            metrics.dead_letter("rejected_by_clickhouse");
            let m = &pending[index];
            tracing::warn!(topic = %m.source.topic, partition = m.source.partition, offset = m.source.offset, %reason, "ClickHouse rejected a message's rows; dead-lettering it");
            dead_letter(
                &dead_letters,
                m.key.as_deref(),
                &m.payload,
                &m.source,
                &reason,
                "rejected_by_clickhouse",
                &backoff,
            )
            .await;
            // The ledger shows the rejection next to the agent's accounting (best effort:
            // the ledger row may be what ClickHouse refuses).
            if let Rows::Window(w) = &m.rows
                && let Some(mut row) = w.ledger.clone()
            {
                row.status = "rejected".into();
                row.reason = reason.chars().take(1000).collect();
                let ledger = Batch {
                    ledger: vec![row],
                    ..Batch::default()
                };
                if let Err(e) = sink.write(&ledger).await {
                    tracing::warn!(error = %e, "could not record the rejection in the ledger");
                }
            }
        }
        store_offsets(&consumer, &pending);
        tracing::debug!(messages = pending.len(), rows, took = ?started.elapsed(), "batch stored");
    }
    telemetry.shutdown();
    // Stored offsets are committed synchronously on the way out.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final commit failed; the last batch may be re-delivered (it is idempotent)");
    }
    Ok(())
}

/// Sends a message to the dead-letter topic, retrying until the broker has it:
/// its offset may only be stored afterwards.
async fn dead_letter(
    dead_letters: &DeadLetters,
    key: Option<&[u8]>,
    payload: &[u8],
    source: &Source,
    reason: &str,
    class: &str,
    backoff: &Backoff,
) {
    let mut backoff = backoff.clone();
    backoff.reset();
    while let Err(e) = dead_letters
        .send(key, payload, source, reason, class, now_ms())
        .await
    {
        tracing::warn!(error = %e, "dead-letter topic unavailable; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Writes the batch, isolating rejected messages (returned), and retrying
/// transient failures until they pass, with partitions paused and polling going on.
async fn write_until_stored(
    consumer: &StreamConsumer,
    sink: &mut Sink,
    pending: &[Pending],
    backoff: &mut Backoff,
    metrics: &ConsumerMetrics,
) -> Vec<(usize, String)> {
    let mut paused = false;
    let rejected = loop {
        match write_isolating(sink, pending).await {
            Ok(rejected) => break rejected,
            Err(error) => {
                metrics.retry();
                metrics.retrying.store(true, Ordering::Relaxed);
                if !paused {
                    paused = pause_assigned(consumer);
                }
                let delay = backoff.next_delay();
                tracing::warn!(%error, class = ?classify(&error), retry_in = ?delay, "ClickHouse insert failed; batch kept, offsets not stored");
                poll_while_waiting(consumer, delay).await;
            }
        }
    };
    backoff.reset();
    metrics.retrying.store(false, Ordering::Relaxed);
    if paused
        && let Ok(assigned) = consumer.assignment()
        && let Err(e) = consumer.resume(&assigned)
    {
        tracing::warn!(error = %e, "resuming partitions");
    }
    rejected
}

fn pause_assigned(consumer: &StreamConsumer) -> bool {
    match consumer.assignment() {
        Ok(assigned) => consumer
            .pause(&assigned)
            .map_err(|e| tracing::warn!(error = %e, "pausing partitions"))
            .is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the assignment");
            false
        }
    }
}

/// Polls for `delay` so the consumer stays in the group. Paused partitions
/// deliver nothing; a message from a partition assigned during the wait is not
/// processed now: its partition is rewound to it and paused too.
async fn poll_while_waiting(consumer: &StreamConsumer, delay: Duration) {
    let wake = tokio::time::sleep(delay);
    tokio::pin!(wake);
    loop {
        tokio::select! {
            _ = &mut wake => return,
            message = consumer.recv() => {
                let Ok(message) = message else { continue };
                let (topic, partition, offset) = (message.topic().to_string(), message.partition(), message.offset());
                drop(message);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topic, partition);
                if let Err(e) = consumer.pause(&tpl) {
                    tracing::warn!(error = %e, "pausing a newly assigned partition");
                }
                if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
                    tracing::warn!(error = %e, %topic, partition, "rewinding a newly assigned partition");
                }
            }
        }
    }
}

/// Every 15 s: the partitions of the subscribed topics (for the rate-limit share)
/// and the lag of each assigned partition (end offset − position).
async fn sample_lag(
    consumer: Arc<StreamConsumer>,
    topics: Vec<String>,
    lag: Lag,
    total_partitions: Arc<AtomicUsize>,
) {
    loop {
        let consumer = consumer.clone();
        let topics = topics.clone();
        let sampled = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let total: usize = topics
                .iter()
                .filter_map(|t| consumer.fetch_metadata(Some(t), timeout).ok())
                .map(|m| {
                    m.topics()
                        .iter()
                        .map(|t| t.partitions().len())
                        .sum::<usize>()
                })
                .sum();
            let mut lags = HashMap::new();
            if let Ok(position) = consumer.position() {
                for e in position.elements() {
                    let Ok((_, high)) =
                        consumer.fetch_watermarks(e.topic(), e.partition(), timeout)
                    else {
                        continue;
                    };
                    let at = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => continue,
                    };
                    lags.insert((e.topic().to_string(), e.partition()), (high - at).max(0));
                }
            }
            (total, lags)
        })
        .await;
        if let Ok((total, lags)) = sampled {
            if total > 0 {
                total_partitions.store(total, Ordering::Relaxed);
            }
            if let Ok(mut l) = lag.lock() {
                *l = lags;
            }
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}

/// Stores the offsets of a handled batch, in order. A partition revoked while
/// the batch was in hand is no longer ours to store: skipped (its new owner
/// re-delivers those messages, and the rows are idempotent).
fn store_offsets(consumer: &StreamConsumer, pending: &[Pending]) {
    for m in pending {
        if let Err(e) = consumer.store_offset(&m.source.topic, m.source.partition, m.source.offset)
        {
            tracing::debug!(error = %e, topic = %m.source.topic, partition = m.source.partition, "offset not stored (partition no longer assigned)");
        }
    }
}
