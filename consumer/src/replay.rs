//! `javelin-consumer replay`: re-ingests the profile windows of a time range
//! from Kafka. Start offsets come from the broker's time index
//! (`offsets_for_times`, which may be coarse, so every message's window time is
//! checked again); the end is each partition's end offset when replay starts.
//! Writes go through the same idempotent path as normal ingestion, so replaying
//! a range that is intact changes nothing, and replaying a lost range restores it.
//! Replay commits nothing to any consumer group.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::batch::{Pending, Rows, write_isolating};
use crate::config::ReplayArgs;
use crate::convert::{self, Source};
use crate::sink::{Backoff, Sink};
use crate::trace::Arrival;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub messages: u64,
    pub windows: u64,
    pub rows: u64,
    /// Outside the time range or another service.
    pub skipped: u64,
    /// Undecodable or invalid (they went to the DLQ at first ingestion).
    pub invalid: u64,
    /// Rows ClickHouse rejected (reported; the DLQ already has them from first ingestion).
    pub rejected: u64,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "messages read: {}, windows replayed: {}, rows written: {}, skipped (outside range or service): {}, invalid: {}, rejected by ClickHouse: {}",
            self.messages, self.windows, self.rows, self.skipped, self.invalid, self.rejected
        )
    }
}

/// Parses a replay bound: milliseconds since the epoch, or RFC 3339 (`2026-11-25T10:00:00Z`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| {
            format!("{text:?} is neither milliseconds since the epoch nor an RFC 3339 time: {e}")
        })
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| format!("{text:?} is before 1970"))
        })
}

/// Runs the replay; `progress` is called with (messages done, messages to read).
pub async fn replay(
    args: &ReplayArgs,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<ReplaySummary> {
    anyhow::ensure!(args.to > args.from, "--to must be after --from");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", format!("javelin-replay-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
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
    // (a window is published after it ends); where to stop: the end now.
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
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut total = 0u64;
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .context("reading watermarks")?;
        let start = match starts.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => o.max(low),
            // No message at or after the time: nothing to read here.
            _ => high,
        };
        if start < high {
            assignment
                .add_partition_offset(topic, p, Offset::Offset(start))
                .context("partition list")?;
            ends.insert(p, high);
            total += (high - start) as u64;
        }
    }
    let mut summary = ReplaySummary::default();
    progress(0, total);
    if ends.is_empty() {
        return Ok(summary);
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;

    let mut sink = Sink::new(
        args.clickhouse
            .server_client()
            .with_database(&args.clickhouse.database),
        100_000,
    );
    let mut pending: Vec<Pending> = Vec::new();
    let mut done = 0u64;
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.context("reading from Kafka")?;
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&end) = ends.get(&partition) else {
            continue;
        };
        if offset >= end {
            ends.remove(&partition);
            continue;
        }
        if offset + 1 >= end {
            ends.remove(&partition);
        }
        summary.messages += 1;
        done += 1;
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
        }
        progress(done, total);
    }
    flush(&mut sink, &mut pending, &mut summary, args.dry_run).await;
    progress(total, total);
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
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
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
    fn times_parse_as_milliseconds_or_rfc3339() {
        assert_eq!(parse_time("1764000000000"), Ok(1_764_000_000_000));
        assert_eq!(parse_time("2025-11-24T16:00:00Z"), Ok(1_764_000_000_000));
        assert!(parse_time("yesterday").is_err());
    }
}
