//! The consume loop: gather a batch → write it (in its own task, while the
//! next batch is gathered) → store its offsets.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) only after every
//! message of the batch has its rows in ClickHouse or is in the dead-letter
//! topic; librdkafka's auto-commit then commits stored offsets. Messages of a
//! batch are stored in the order they arrived, and one batch is written at a
//! time, in order, so per partition the committed offset is always the end of a
//! contiguous, durably handled run. At most two batches are in memory: the one
//! being written and the one being gathered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::Offset;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;

use crate::backoff::Backoff;
use crate::config::RunArgs;
use crate::dead_letter::DeadLetters;
use crate::gather::{BatchLimits, Gathered, Gatherer, Interrupt};
use crate::kafka_config::KafkaConnection;
use crate::metrics::{ConsumerMetrics, Lag};
use crate::rate_limit::RowBudget;
use crate::sink::Sink;
use crate::write::{IdleWriter, Outlets, Writer};
use javelin_schema::telemetry::Telemetry;

/// Runs the consumer until `shutdown` completes; the batch in hand is written and committed first.
pub async fn run(args: RunArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let consumer_id = format!("{}-{}", args.group_id, std::process::id());
    let kafka = KafkaConnection {
        brokers: &args.brokers,
        properties: &args.kafka_properties,
    };
    let config = kafka.client_config(
        &[
            ("client.id", consumer_id.as_str()),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            // A crashed consumer's partitions move to the others after this long.
            ("session.timeout.ms", "10000"),
            ("max.poll.interval.ms", "300000"),
            // A fetch for idle partitions must not hold up the others for long (librdkafka's default is 500 ms).
            ("fetch.wait.max.ms", "100"),
        ],
        // Offsets are stored by hand once a batch is durable; auto-commit commits them.
        &[
            ("group.id", args.group_id.as_str()),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
        ],
    );
    let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
    let topics = [args.profiles_topic.clone(), args.status_topic.clone()];
    consumer.subscribe(&[topics[0].as_str(), topics[1].as_str()])?;
    let telemetry = Telemetry::new("javelin-consumer", args.otlp.endpoints())?;
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
    tokio::spawn(crate::group_watch::run(
        consumer.clone(),
        args.group_id.clone(),
        topics.to_vec(),
    ));
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
    let dead_letters = DeadLetters::new(kafka, &args.dlq_topic, &consumer_id)?;
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
    let sink = Sink::new(
        args.clickhouse.writer_client().await?,
        args.stack_cache_entries,
    );
    tokio::spawn(crate::retention::run(
        args.clickhouse_client(),
        args.clickhouse.database.clone(),
        args.clickhouse.topology()?,
        args.retention_days,
        Duration::from_secs(3600),
    ));
    if args.rollup_interval_secs > 0 {
        // Builds write (INSERT … SELECT) and read through `stored_parts` as the API does.
        tokio::spawn(crate::rollup::run(
            args.clickhouse
                .topology()?
                .reader(args.clickhouse.writer_client().await?),
            crate::rollup::RollupOptions {
                every: Duration::from_secs(args.rollup_interval_secs),
                grace: Duration::from_secs(args.rollup_grace_secs),
                max_builds: args.rollup_max_builds,
                retention_days: args.retention_days,
            },
            crate::rollup::RollupMetrics::new(&telemetry),
        ));
    }
    let backoff = Backoff::standard();
    let limits = BatchLimits {
        max_rows: args.batch_max_rows,
        max_bytes: args.batch_max_bytes,
        linger: Duration::from_millis(args.batch_linger_ms),
    };
    tracing::info!(group = %args.group_id, topics = ?[&args.profiles_topic, &args.status_topic], "consuming");

    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    let mut stopping = false;
    let mut writer = Writer::Idle(Box::new(IdleWriter { sink, backoff }));
    let gatherer = Gatherer {
        consumer: &consumer,
        status_topic: &args.status_topic,
        limits,
        dead_letters: &dead_letters,
        metrics: &metrics,
    };
    let outlets = Outlets {
        consumer: &consumer,
        dead_letters: &dead_letters,
        metrics: &metrics,
    };
    loop {
        // Gather the next batch while the previous one is being written.
        let mut batch = Gathered::new(&limits);
        while !stopping {
            match gatherer
                .gather(&mut batch, &mut writer, &mut shutdown)
                .await
            {
                Interrupt::Done => break,
                Interrupt::Shutdown => stopping = true,
                Interrupt::WriteFailed(e) => return Err(e).context("the write task failed"),
            }
        }
        // The share follows the assignment, also while idle.
        let owned = consumer.assignment().map_or(0, |a| a.count());
        budget.set_partitions(owned, total_partitions.load(Ordering::Relaxed));
        metrics
            .rate_share
            .store(u64::from(budget.share()), Ordering::Relaxed);
        // One write at a time, in order: the previous one finishes first.
        let Some(idle) = writer
            .into_idle(outlets, &mut shutdown, &mut stopping)
            .await?
        else {
            break;
        };
        if batch.messages.is_empty() {
            writer = Writer::Idle(idle);
            if stopping {
                break;
            }
            continue;
        }
        metrics.throttled(throttle(&consumer, &budget, batch.rows).await);
        writer = Writer::start(idle, consumer.clone(), batch.messages, metrics.clone());
    }
    telemetry.shutdown();
    // Stored offsets are committed synchronously on the way out.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(error = %e, "final commit failed; the last batch may be re-delivered (it is idempotent)");
    }
    Ok(())
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
            let total = crate::group_watch::partitions_of(&consumer, &topics, timeout);
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

/// Waits for the rows-per-second budget. A wait longer than a moment pauses
/// the assigned partitions and keeps polling (holding back anything that
/// arrives), so a throttled consumer stays in the group however long it waits.
async fn throttle(consumer: &StreamConsumer, budget: &RowBudget, rows: usize) -> Duration {
    let acquire = budget.acquire(rows);
    tokio::pin!(acquire);
    let mut paused = false;
    loop {
        tokio::select! {
            waited = &mut acquire => {
                if paused
                    && let Ok(assigned) = consumer.assignment()
                    && let Err(e) = consumer.resume(&assigned)
                {
                    tracing::warn!(error = %e, "resuming partitions after throttling");
                }
                return waited;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)), if !paused => {
                paused = crate::write::pause_assigned(consumer);
            }
            message = consumer.recv(), if paused => {
                if let Ok(m) = message {
                    crate::write::hold_back(consumer, m.topic(), m.partition(), m.offset());
                }
            }
        }
    }
}
