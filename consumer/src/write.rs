//! Writing a batch: a task of its own per batch (so the next batch is gathered
//! meanwhile), retried until ClickHouse has the rows; then the messages
//! ClickHouse rejected go to the dead-letter topic and the batch's offsets are
//! stored, in arrival order.
//!
//! While ClickHouse is failing, the batch is kept and retried with capped,
//! jittered backoff; the assigned partitions are paused and the main task keeps
//! polling ([`wait_for_write`]), so the consumer stays in the group (heartbeats,
//! `max.poll.interval.ms`) and serves rebalances. A partition revoked meanwhile
//! cannot have its offsets stored by us; its new owner re-delivers those
//! messages, and a window part's copies are counted once (see `sink.rs`), so
//! nothing is double-counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::batch::{Batch, BatchWriter, Pending, Rows, Unstored, write_isolating};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::metrics::ConsumerMetrics;
use crate::sink::Sink;

impl BatchWriter for Sink {
    async fn write_batch(&mut self, batch: &Batch<'_>) -> Result<(), clickhouse::error::Error> {
        self.write(batch).await
    }

    async fn probe(&mut self) -> Result<(), clickhouse::error::Error> {
        Sink::probe(self).await
    }
}

/// The consumer's one writer: idle between batches, or busy with a write task
/// that owns its sink and backoff until it hands them back ([`Written`]).
/// Every transition consumes the old state, so there is never a moment without
/// a writer to account for.
#[derive(Debug)]
pub enum Writer {
    Idle(Box<IdleWriter>),
    Busy(JoinHandle<Written>),
}

/// What an idle writer holds: the ClickHouse sink and its retry state.
#[derive(Debug)]
pub struct IdleWriter {
    pub sink: Sink,
    pub backoff: Backoff,
}

/// Where a finished write is reported: the offsets it stores, the dead
/// letters it sends, the metrics it counts.
#[derive(Clone, Copy)]
pub struct Outlets<'a> {
    pub consumer: &'a StreamConsumer,
    pub dead_letters: &'a DeadLetters,
    pub metrics: &'a ConsumerMetrics,
}

impl std::fmt::Debug for Outlets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlets").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts writing `pending` in a task of its own; the writer is busy.
    pub fn start(
        idle: Box<IdleWriter>,
        consumer: Arc<StreamConsumer>,
        pending: Vec<Pending>,
        metrics: ConsumerMetrics,
    ) -> Writer {
        Writer::Busy(tokio::spawn(write_until_stored(
            consumer,
            idle.sink,
            idle.backoff,
            pending,
            metrics,
        )))
    }

    /// Waits for the write in hand, if any, and reports it. `None`: the batch
    /// was abandoned at a shutdown while ClickHouse was failing (see
    /// [`wait_for_write`]).
    pub async fn into_idle(
        self,
        outlets: Outlets<'_>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
        stopping: &mut bool,
    ) -> anyhow::Result<Option<Box<IdleWriter>>> {
        let idle = match self {
            Writer::Idle(idle) => Some(idle),
            Writer::Busy(mut handle) => {
                let written = wait_for_write(
                    outlets.consumer,
                    &mut handle,
                    &outlets.metrics.retrying,
                    shutdown,
                    stopping,
                )
                .await?;
                match written {
                    Some(written) => Some(finish(outlets, written).await),
                    None => return Ok(None),
                }
            }
        };
        // No write is retrying now, so no partition should be paused. A pause
        // can outlive its reason: a message held back just as the write
        // finished, or a partition paused, revoked and assigned back later
        // (librdkafka keeps an application's pause across a rebalance).
        resume_assigned(outlets.consumer);
        Ok(idle)
    }
}

/// What a write task hands back: the writer's state, the batch, and the
/// messages whose rows ClickHouse rejected.
#[derive(Debug)]
pub struct Written {
    sink: Sink,
    backoff: Backoff,
    pending: Vec<Pending>,
    rejected: Vec<(usize, String)>,
    started: Instant,
}

/// One attempt at a batch (with its bisection) that takes longer is abandoned
/// and retried as an outage. A batch of 500,000 rows takes about a second here;
/// the bound stays far below `max.poll.interval.ms` (300 s), which a write that
/// never returns would otherwise exceed. An abandoned INSERT that completes
/// later only adds a copy (see `sink.rs`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The write task: writes the batch, isolating rejected messages, and retries
/// transient failures until they pass, with the assigned partitions paused
/// (the main task keeps polling; see [`wait_for_write`]).
pub async fn write_until_stored(
    consumer: Arc<StreamConsumer>,
    mut sink: Sink,
    mut backoff: Backoff,
    pending: Vec<Pending>,
    metrics: ConsumerMetrics,
) -> Written {
    let started = Instant::now();
    let mut paused = false;
    let rejected = loop {
        let attempt = tokio::time::timeout(WRITE_TIMEOUT, write_isolating(&mut sink, &pending));
        let outcome = match attempt.await {
            Ok(outcome) => outcome,
            // A hung server or a black-holed connection answers nothing: an outage.
            Err(_) => Err(Unstored::Unavailable(clickhouse::error::Error::TimedOut)),
        };
        match outcome {
            Ok(rejected) => break rejected,
            Err(error) => {
                metrics.retry();
                if !paused {
                    paused = pause_assigned(&consumer);
                }
                metrics.retrying.store(true, Ordering::Relaxed);
                let delay = backoff.next_delay();
                tracing::warn!(%error, code = ?error.code(), retry_in = ?delay, "ClickHouse insert failed; batch kept, offsets not stored");
                tokio::time::sleep(delay).await;
            }
        }
    };
    backoff.reset();
    metrics.retrying.store(false, Ordering::Relaxed);
    if paused {
        resume_assigned(&consumer);
    }
    Written {
        sink,
        backoff,
        pending,
        rejected,
        started,
    }
}

/// Resumes every assigned partition (a no-op for those not paused).
pub(crate) fn resume_assigned(consumer: &StreamConsumer) {
    if let Ok(assigned) = consumer.assignment()
        && let Err(e) = consumer.resume(&assigned)
    {
        tracing::warn!(error = %e, "resuming partitions");
    }
}

pub(crate) fn pause_assigned(consumer: &StreamConsumer) -> bool {
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

/// A message received while partitions are paused comes from a partition
/// assigned meanwhile: it is not processed now; its partition is rewound to it
/// and paused too.
pub(crate) fn hold_back(consumer: &StreamConsumer, topic: &str, partition: i32, offset: i64) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::warn!(error = %e, "pausing a newly assigned partition");
    }
    if let Err(e) = consumer.seek(
        topic,
        partition,
        Offset::Offset(offset),
        Duration::from_secs(5),
    ) {
        tracing::warn!(error = %e, %topic, partition, "rewinding a newly assigned partition");
    }
}

/// Waits for the write in flight. While it retries (partitions paused), the
/// consumer keeps polling so it stays in the group; a message that arrives
/// meanwhile (a newly assigned partition) is held back for later. A shutdown
/// while ClickHouse is failing abandons the batch: nothing of it is stored, so
/// it is re-delivered after the restart. `None` means abandoned.
pub async fn wait_for_write(
    consumer: &StreamConsumer,
    handle: &mut JoinHandle<Written>,
    retrying: &AtomicBool,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    stopping: &mut bool,
) -> anyhow::Result<Option<Written>> {
    loop {
        let is_retrying = retrying.load(Ordering::Relaxed);
        if *stopping && is_retrying {
            handle.abort();
            tracing::warn!(
                "stopping while ClickHouse is failing: the batch in hand is not stored and is re-delivered after the restart"
            );
            return Ok(None);
        }
        tokio::select! {
            joined = &mut *handle => return joined.map(Some).context("the write task failed"),
            message = consumer.recv(), if is_retrying => {
                if let Ok(message) = message {
                    hold_back(consumer, message.topic(), message.partition(), message.offset());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut *shutdown, if !*stopping => *stopping = true,
        }
    }
}

/// After a write: dead-letters what ClickHouse rejected (with a `rejected`
/// ledger row), records the metrics and stores the batch's offsets.
pub async fn finish(outlets: Outlets<'_>, written: Written) -> Box<IdleWriter> {
    let Outlets {
        consumer,
        dead_letters,
        metrics,
    } = outlets;
    let Written {
        mut sink,
        backoff,
        pending,
        rejected,
        started,
    } = written;
    metrics.written(
        &Batch::of(&pending),
        sink.take_stacks_written(),
        started.elapsed().as_secs_f64(),
    );
    record_outcomes(&pending, &rejected);
    for (index, reason) in rejected {
        metrics.dead_letter("rejected_by_clickhouse");
        let Some(m) = pending.get(index) else {
            continue;
        };
        tracing::warn!(topic = %m.source.topic, partition = m.source.partition, offset = m.source.offset, %reason, "ClickHouse rejected a message's rows; dead-lettering it");
        let traceparent = m.arrival.traceparent();
        let letter = DeadLetter {
            key: m.key.as_deref(),
            payload: &m.payload,
            source: &m.source,
            reason: &reason,
            error_class: "rejected_by_clickhouse",
            traceparent: traceparent.as_deref(),
        };
        dead_letters.send_until_delivered(&letter, &backoff).await;
        // The ledger shows the rejection next to the agent's accounting (best effort:
        // the ledger row may be what ClickHouse refuses).
        if let Rows::Window(w) = &m.rows {
            let mut row = w.ledger.clone();
            row.status = "rejected".into();
            row.reason = reason.chars().take(1000).collect();
            let ledger = Batch {
                ledger: vec![&row],
                ..Batch::default()
            };
            if let Err(e) = sink.write(&ledger).await {
                tracing::warn!(error = %e, "could not record the rejection in the ledger");
            }
        }
    }
    store_offsets(consumer, &pending);
    tracing::debug!(messages = pending.len(), took = ?started.elapsed(), "batch stored");
    Box::new(IdleWriter { sink, backoff })
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

/// Records the span of each message of a finished batch; `rejected` are the
/// indexes ClickHouse refused (dead-lettered).
fn record_outcomes(pending: &[Pending], rejected: &[(usize, String)]) {
    use opentelemetry::KeyValue;
    for (index, m) in pending.iter().enumerate() {
        let refused_by_clickhouse = rejected.iter().any(|(i, _)| *i == index);
        let outcome = match &m.rows {
            Rows::DeadLettered | Rows::Refused(_) => "dead_lettered_invalid",
            _ if refused_by_clickhouse => "dead_lettered_rejected",
            Rows::Window(_) => "stored",
            Rows::Status(_) => "stored_status",
        };
        let mut attributes = vec![
            KeyValue::new("messaging.destination.name", m.source.topic.clone()),
            KeyValue::new(
                "messaging.kafka.destination.partition",
                i64::from(m.source.partition),
            ),
            KeyValue::new("messaging.kafka.message.offset", m.source.offset),
        ];
        if let Rows::Window(w) = &m.rows {
            attributes.push(KeyValue::new("javelin.service", w.ledger.service.clone()));
            attributes.push(KeyValue::new(
                "javelin.profile_type",
                w.ledger.profile_type.clone(),
            ));
            attributes.push(KeyValue::new(
                "javelin.window_start_ms",
                w.ledger.window_start_ms,
            ));
            attributes.push(KeyValue::new("javelin.rows", w.sample_count() as i64));
        }
        m.arrival.record(outcome, attributes);
    }
}
