//! The Javelin consumer: Kafka → ClickHouse.
//!
//! # Pipeline
//! [`ingest`] runs the loop: [`gather`] polls the consumer group and cuts
//! batches by rows, bytes and time, [`convert`] decoding and validating each
//! message into rows → [`write`] writes the batch in its own task while the next
//! one is gathered: [`batch`] isolates rows ClickHouse rejects, [`sink`] inserts,
//! retried ([`backoff`]) while ClickHouse is unavailable → only then are the batch's offsets
//! stored for commit. Undecodable or invalid messages go to the dead-letter topic
//! ([`dead_letter`]) with the reason in headers. [`trace`] continues each
//! window's trace from the agent (W3C `traceparent` header) to its outcome.
//! [`group_watch`] rejoins when a coordinator leaves the consumer alone in its
//! group with no partition.

pub mod backoff;
pub mod batch;
pub mod config;
pub mod convert;
pub mod dead_letter;
pub mod gather;
pub mod group_watch;
pub mod ingest;
pub mod kafka_config;
pub mod metrics;
pub mod rate_limit;
pub mod replay;
pub mod retention;
pub mod rollup;
pub mod sink;
pub mod trace;
pub mod write;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
