//! The consumer's metrics and readiness: rows and batches written, insert
//! latency, retries, dead letters, throttled time, the retry (backoff) state and
//! lag per partition (sampled from the broker's watermarks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use javelin_schema::telemetry::Telemetry;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

use crate::batch::Batch;

/// Lag per (topic, partition), refreshed by the lag sampler.
pub type Lag = Arc<Mutex<HashMap<(String, i32), i64>>>;

#[derive(Clone)]
pub struct ConsumerMetrics {
    rows: Counter<u64>,
    batches: Counter<u64>,
    insert_seconds: Histogram<f64>,
    retries: Counter<u64>,
    dead_letters: Counter<u64>,
    throttled_seconds: Counter<f64>,
    /// True while a batch is being retried (ClickHouse failing).
    pub retrying: Arc<AtomicBool>,
    /// This consumer's current rows-per-second share (0 = unlimited).
    pub rate_share: Arc<AtomicU64>,
    pub lag: Lag,
}

impl std::fmt::Debug for ConsumerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerMetrics").finish_non_exhaustive()
    }
}

impl ConsumerMetrics {
    pub fn new(telemetry: &Telemetry) -> ConsumerMetrics {
        let meter = telemetry.meter("javelin-consumer");
        let retrying = Arc::new(AtomicBool::new(false));
        let lag: Lag = Arc::default();
        let r = retrying.clone();
        meter
            .u64_observable_gauge("javelin.consumer.retrying")
            .with_description("1 while a batch is being retried because ClickHouse fails")
            .with_callback(move |o| o.observe(u64::from(r.load(Ordering::Relaxed)), &[]))
            .build();
        let rate_share = Arc::new(AtomicU64::new(0));
        let r = rate_share.clone();
        meter
            .u64_observable_gauge("javelin.consumer.rate.limit.rows.per.second")
            .with_description(
                "This consumer's share of the group's rows-per-second budget (0 = unlimited)",
            )
            .with_callback(move |o| o.observe(r.load(Ordering::Relaxed), &[]))
            .build();
        let l = lag.clone();
        meter
            .i64_observable_gauge("javelin.consumer.lag")
            .with_description("Messages behind the end of each assigned partition")
            .with_callback(move |o| {
                if let Ok(lag) = l.lock() {
                    for ((topic, partition), n) in lag.iter() {
                        o.observe(
                            *n,
                            &[
                                KeyValue::new("topic", topic.clone()),
                                KeyValue::new("partition", i64::from(*partition)),
                            ],
                        );
                    }
                }
            })
            .build();
        ConsumerMetrics {
            rows: meter
                .u64_counter("javelin.consumer.rows")
                .with_description("Rows written, by table")
                .build(),
            batches: meter
                .u64_counter("javelin.consumer.batches")
                .with_description("Batches written")
                .build(),
            insert_seconds: meter
                .f64_histogram("javelin.consumer.insert.seconds")
                .with_description("Time to write a batch, retries included")
                .with_boundaries(vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ])
                .build(),
            retries: meter
                .u64_counter("javelin.consumer.retries")
                .with_description("Failed insert attempts (retried)")
                .build(),
            dead_letters: meter
                .u64_counter("javelin.consumer.dead.letters")
                .with_description("Messages sent to the dead-letter topic, by error class")
                .build(),
            throttled_seconds: meter
                .f64_counter("javelin.consumer.throttled.seconds")
                .with_description("Time spent waiting for the rows-per-second budget")
                .build(),
            retrying,
            rate_share,
            lag,
        }
    }

    pub fn written(&self, batch: &Batch<'_>, stacks: u64, seconds: f64) {
        for (table, n) in [
            ("samples", batch.samples()),
            ("stacks", stacks as usize),
            ("ingest_ledger", batch.ledger.len()),
            ("target_status", batch.statuses.len()),
        ] {
            self.rows.add(n as u64, &[KeyValue::new("table", table)]);
        }
        self.batches.add(1, &[]);
        self.insert_seconds.record(seconds, &[]);
    }

    pub fn retry(&self) {
        self.retries.add(1, &[]);
    }

    pub fn dead_letter(&self, class: &'static str) {
        self.dead_letters.add(1, &[KeyValue::new("class", class)]);
    }

    pub fn throttled(&self, waited: Duration) {
        self.throttled_seconds.add(waited.as_secs_f64(), &[]);
    }
}
