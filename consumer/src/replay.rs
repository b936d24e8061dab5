//! `javelin-consumer replay`: re-ingests the profile windows of a time range
//! from Kafka. Start offsets come from the broker's time index
//! (`offsets_for_times`, which may be coarse, so every message's window time is
//! checked again). Each partition is read to its end as the consumer sees it
//! (librdkafka's partition EOF, from the fetch responses), not to the end offset
//! the broker lists when replay starts: that one is only a progress estimate,
//! and some brokers list less than they hold (tansu 0.6 lists the last record
//! batch's first offset + 1, so a window's parts sent as one batch were cut).
//! Writes go through the same idempotent path as normal ingestion, so replaying
//! a range that is intact changes nothing, and replaying a lost range restores it.
//! Replay commits nothing to any consumer group.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::backoff::Backoff;
use crate::batch::{Pending, Rows, write_isolating};
use crate::config::ReplayArgs;
use crate::convert::{self, Source};
use crate::kafka_config::KafkaConnection;
use crate::sink::Sink;
use crate::trace::Arrival;

/// How long replay waits for a partition that neither delivers a message nor
/// reports its end before it gives up with an error (a broker that stopped
/// answering), instead of waiting forever.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a replay did. Every message read is counted once, as replayed,
/// skipped or invalid: `messages == windows + skipped + invalid`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub messages: u64,
    pub windows: u64,
    pub rows: u64,
    /// Outside the time range or another service.
    pub skipped: u64,
    /// Undecodable or invalid (they went to the DLQ at first ingestion).
    pub invalid: u64,
    /// Windows ClickHouse rejected (reported; the DLQ already has them from first ingestion).
    pub rejected: u64,
    /// The offsets read, per partition, in partition order.
    pub partitions: Vec<PartitionRead>,
}

/// The offsets replay read from one partition: `[start, end)`, `end` being
/// where the partition ended when replay reached it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRead {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub messages: u64,
}

impl ReplaySummary {
    /// Offsets in the ranges read that held no message (transaction markers,
    /// compacted or expired records); 0 on an ordinary topic.
    pub fn offsets_without_message(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| ((p.end - p.start).max(0) as u64).saturating_sub(p.messages))
            .sum()
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "messages read: {} (", self.messages)?;
        if self.partitions.is_empty() {
            write!(f, "no partition has messages at or after the start")?;
        }
        for (i, p) in self.partitions.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(
                f,
                "{sep}partition {}: offsets {}..{}",
                p.partition, p.start, p.end
            )?;
        }
        write!(
            f,
            "), windows replayed: {}, rows written: {}, skipped (outside range or service): {}, invalid: {}, rejected by ClickHouse: {}",
            self.windows, self.rows, self.skipped, self.invalid, self.rejected
        )?;
        match self.offsets_without_message() {
            0 => Ok(()),
            gaps => write!(f, ", offsets without a message: {gaps}"),
        }
    }
}

/// Runs the replay; `progress` is called with (messages read, messages to
/// read), the second an estimate until every partition has reached its end.
pub async fn replay(
    args: &ReplayArgs,
    progress: impl FnMut(u64, u64),
) -> anyhow::Result<ReplaySummary> {
    let kafka = KafkaConnection {
        brokers: &args.brokers,
        properties: &args.kafka_properties,
    };
    replay_on(args, kafka, progress).await
}

/// [`replay`] through a Kafka connection with the operator's properties (TLS, SASL).
pub async fn replay_on(
    args: &ReplayArgs,
    kafka: KafkaConnection<'_>,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<ReplaySummary> {
    anyhow::ensure!(args.to > args.from, "--to must be after --from");
    let group = format!("javelin-replay-{}", std::process::id());
    let consumer: BaseConsumer = kafka
        .client_config(
            // Offsets expired since they were looked up: go on from the oldest left.
            &[("auto.offset.reset", "earliest")],
            &[
                ("group.id", group.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
            ],
        )
        .create()
        .context("creating the Kafka consumer")?;
    let timeout = Duration::from_secs(10);
    let topic = args.profiles_topic.as_str();
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("reading topic metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");

    // Where to start: the first offset at or after `from` minus the window slack
    // (a window is published after it ends). Where to stop: the partition's end
    // when replay gets there; the listed end offset only sizes the progress bar.
    let mut by_time = TopicPartitionList::new();
    for &p in &partitions {
        by_time
            .add_partition_offset(topic, p, Offset::Offset(args.from - args.slack_ms))
            .context("partition list")?;
    }
    let starts = consumer
        .offsets_for_times(by_time, timeout)
        .context("finding offsets by time")?;
    let mut assignment = TopicPartitionList::new();
    let mut reads: BTreeMap<i32, PartitionRead> = BTreeMap::new();
    let mut estimated_ends: BTreeMap<i32, i64> = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .context("reading watermarks")?;
        // No message at or after the time: nothing to read here.
        let Some(Offset::Offset(start)) = starts.find_partition(topic, p).map(|e| e.offset())
        else {
            continue;
        };
        if start < 0 {
            continue;
        }
        let start = start.max(low);
        assignment
            .add_partition_offset(topic, p, Offset::Offset(start))
            .context("partition list")?;
        reads.insert(
            p,
            PartitionRead {
                partition: p,
                start,
                end: start,
                messages: 0,
            },
        );
        estimated_ends.insert(p, high.max(start));
    }
    let mut summary = ReplaySummary::default();
    let estimate = |reads: &BTreeMap<i32, PartitionRead>, ends: &BTreeMap<i32, i64>| -> u64 {
        reads
            .values()
            .map(|r| (ends.get(&r.partition).copied().unwrap_or(r.end) - r.start).max(0) as u64)
            .sum()
    };
    progress(0, estimate(&reads, &estimated_ends));
    if reads.is_empty() {
        return Ok(summary);
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;

    let mut sink = Sink::new(args.clickhouse.writer_client().await?, 100_000);
    let mut pending: Vec<Pending> = Vec::new();
    let mut open: BTreeSet<i32> = reads.keys().copied().collect();
    let mut heard = Instant::now();
    while !open.is_empty() {
        let Some(event) = consumer.poll(Duration::from_millis(500)) else {
            anyhow::ensure!(
                heard.elapsed() < STALL_TIMEOUT,
                "partitions {open:?} of {topic} neither delivered a message nor reported their end for {STALL_TIMEOUT:?}"
            );
            continue;
        };
        heard = Instant::now();
        let message = match event {
            Err(KafkaError::PartitionEOF(partition)) => {
                if open.remove(&partition)
                    && let Some(read) = reads.get(&partition)
                {
                    // The end is known now: the estimate gives way to it.
                    estimated_ends.insert(partition, read.end);
                }
                progress(summary.messages, estimate(&reads, &estimated_ends));
                continue;
            }
            Err(e) => return Err(e).context("reading from Kafka"),
            Ok(message) => message,
        };
        let (partition, offset) = (message.partition(), message.offset());
        // A partition that has reached its end is done (later messages are past the range).
        if !open.contains(&partition) {
            continue;
        }
        let Some(read) = reads.get_mut(&partition) else {
            continue;
        };
        read.messages += 1;
        read.end = read.end.max(offset + 1);
        if let Some(end) = estimated_ends.get_mut(&partition) {
            *end = (*end).max(read.end);
        }
        summary.messages += 1;
        let payload = message.payload().unwrap_or_default();
        let source = Source {
            topic: topic.to_string(),
            partition,
            offset,
        };
        match convert::window_rows(payload, &source, crate::now_ms()) {
            Err(_) => summary.invalid += 1,
            Ok(rows) => {
                let window = &rows.ledger;
                let in_range =
                    window.window_start_ms >= args.from && window.window_start_ms < args.to;
                let service_ok = args.service.as_ref().is_none_or(|s| &window.service == s);
                if !(in_range && service_ok) {
                    summary.skipped += 1;
                } else {
                    summary.windows += 1;
                    summary.rows += rows.sample_count() as u64;
                    pending.push(Pending {
                        source,
                        key: None,
                        payload: Vec::new(),
                        rows: Rows::Window(Box::new(rows)),
                        arrival: Arrival::of(&message),
                    });
                }
            }
        }
        if pending.len() >= 500 {
            flush(&mut sink, &mut pending, &mut summary, args.dry_run).await;
            // Time spent writing is not the broker's silence.
            heard = Instant::now();
        }
        progress(summary.messages, estimate(&reads, &estimated_ends));
    }
    flush(&mut sink, &mut pending, &mut summary, args.dry_run).await;
    summary.partitions = reads.into_values().collect();
    progress(summary.messages, summary.messages);
    Ok(summary)
}

async fn flush(
    sink: &mut Sink,
    pending: &mut Vec<Pending>,
    summary: &mut ReplaySummary,
    dry_run: bool,
) {
    if pending.is_empty() || dry_run {
        pending.clear();
        return;
    }
    let mut backoff = Backoff::standard();
    loop {
        match write_isolating(sink, pending).await {
            Ok(rejected) => {
                summary.rejected += rejected.len() as u64;
                break;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "ClickHouse insert failed during replay; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
    pending.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_accounts_for_every_offset_read() {
        let summary = ReplaySummary {
            messages: 7,
            windows: 5,
            rows: 40,
            skipped: 1,
            invalid: 1,
            rejected: 0,
            partitions: vec![
                PartitionRead {
                    partition: 0,
                    start: 0,
                    end: 4,
                    messages: 4,
                },
                PartitionRead {
                    partition: 1,
                    start: 10,
                    end: 14,
                    messages: 3,
                },
            ],
        };
        assert_eq!(summary.offsets_without_message(), 1);
        assert_eq!(
            summary.to_string(),
            "messages read: 7 (partition 0: offsets 0..4, partition 1: offsets 10..14), \
             windows replayed: 5, rows written: 40, skipped (outside range or service): 1, \
             invalid: 1, rejected by ClickHouse: 0, offsets without a message: 1"
        );
    }
}
