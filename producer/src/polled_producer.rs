//! A Kafka producer whose delivery reports are collected by one thread that
//! waits up to [`POLL_WAIT`] per poll, with an async `send` that resolves when
//! the broker acknowledged the message (or librdkafka gave up on it).
//!
//! Why not rdkafka's `FutureProducer`: its thread polls every 100 ms, and each
//! poll re-polls with the time left rounded down to whole milliseconds, so the
//! last fraction of a millisecond of every poll is spent spinning with a zero
//! timeout. On an idle agent that thread alone used 0.8 % of a core (25 CPU
//! ticks in 30 s), nearly all of the agent's CPU per JVM-hour
//! (docs/benchmarks.md, "Profiling overhead"). Waiting a second per poll keeps
//! the spin to at most a millisecond a second (5 ticks in 65 s measured, was
//! 50 in 60 s); reports are still served as they arrive (a poll hands each
//! event over at once and only returns at its deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio::sync::oneshot;

/// Longest wait of one poll of delivery reports: each poll ends with up to a
/// millisecond of spinning (see above), and a dropped producer's thread
/// notices the drop only after it. A second keeps both small (0.1 % of a core at most; a
/// producer replaced during an outage is gone within a second).
const POLL_WAIT: Duration = Duration::from_secs(1);

/// How often a send retries while librdkafka's own queue is full.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(100);

/// Where a delivery report goes: the sender's future.
type Report = oneshot::Sender<KafkaResult<()>>;

/// Hands each delivery report to the future of its send.
#[derive(Debug)]
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Report>;

    fn delivery(&self, result: &DeliveryResult<'_>, report: Box<Report>) {
        // The sender may have stopped waiting (its task was cancelled): fine.
        let _ = report.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// The producer and its polling thread. The thread owns the other reference
/// to the producer and polls while anyone else holds one: after the drop it
/// stops within [`POLL_WAIT`] and the producer is destroyed there (librdkafka
/// purges what is still queued and waits briefly for those reports), never on
/// the dropping (async) side.
pub struct PolledProducer {
    inner: Arc<BaseProducer<DeliveryContext>>,
    /// How long a send waits for its delivery report: librdkafka reports every
    /// message within its effective `message.timeout.ms`; `None` when that is
    /// 0 (infinite: the operator asked to wait as long as it takes).
    report_wait: Option<Duration>,
}

/// The longest `message.timeout.ms` the configuration sets (its alias
/// `delivery.timeout.ms` may be set too, through `--kafka-property`); 0 means
/// none. librdkafka's default when neither is set: 300 s.
fn message_timeout(config: &ClientConfig) -> Option<Duration> {
    let set: Vec<u64> = ["message.timeout.ms", "delivery.timeout.ms"]
        .iter()
        .filter_map(|k| config.get(k)?.trim().parse::<u64>().ok())
        .collect();
    // Which of the two librdkafka ends up with depends on the order they are
    // applied: if either is infinite, so is the wait.
    if set.contains(&0) {
        return None;
    }
    Some(Duration::from_millis(
        set.into_iter().max().unwrap_or(300_000),
    ))
}

impl PolledProducer {
    pub fn create(config: &ClientConfig) -> KafkaResult<PolledProducer> {
        let inner = Arc::new(BaseProducer::from_config_and_context(
            config,
            DeliveryContext,
        )?);
        let producer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("kafka-delivery".into())
            .spawn(move || {
                // `inner` is never cloned: a count of 1 is this thread's own.
                while Arc::strong_count(&producer) > 1 {
                    producer.poll(POLL_WAIT);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("delivery thread: {e}")))?;
        // Past its timeout librdkafka reports on its 1-s timer; the margin
        // keeps a late report from being taken for a lost one (a send given
        // up while librdkafka still holds the message would be sent twice).
        let report_wait = message_timeout(config).map(|t| t * 2 + Duration::from_secs(1));
        Ok(PolledProducer { inner, report_wait })
    }

    /// Queues one message and waits for its delivery report. A full
    /// librdkafka queue is retried until `timeout`; the report itself comes
    /// within the effective `message.timeout.ms` (waited for twice that and a
    /// second, then given up as timed out).
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        timeout: Duration,
    ) -> KafkaResult<()> {
        let (tx, rx) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(tx))
            .key(key)
            .payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.inner.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() + QUEUE_FULL_RETRY < deadline =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        // A report that never comes (a dead delivery thread) must not stall
        // the spool for good.
        let Some(wait) = self.report_wait else {
            return rx.await.unwrap_or(Err(KafkaError::Canceled));
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(report) => report.unwrap_or(Err(KafkaError::Canceled)),
            Err(_) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        }
    }

    /// The client's fatal error, if it has one (an idempotent producer's
    /// state the broker refuses for good).
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.inner.client().fatal_error()
    }
}

impl std::fmt::Debug for PolledProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledProducer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process with the delivery thread's name.
    fn delivery_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "kafka-delivery")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits (deadline 3 s) until `n` delivery threads run.
    async fn until_delivery_threads(n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while delivery_threads() != n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} threads",
                delivery_threads()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_send_nobody_acknowledges_fails_in_time_and_a_dropped_producer_leaves_no_thread() {
        let mut config = ClientConfig::new();
        // Nothing listens on port 1.
        config
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "700");
        let producer = PolledProducer::create(&config).expect("producer");
        // (The thread names itself once it runs.)
        until_delivery_threads(1, "the producer's delivery thread").await;
        let started = Instant::now();
        let sent = producer
            .send("t", "k", b"payload", None, Duration::from_secs(5))
            .await;
        assert_eq!(
            sent,
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            ))
        );
        // librdkafka gives up on its 1-s timer after the 0.7-s timeout.
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        drop(producer);
        let deadline = Instant::now() + POLL_WAIT * 3;
        while delivery_threads() > 0 {
            assert!(
                Instant::now() < deadline,
                "the delivery thread outlived its producer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn the_report_wait_follows_the_effective_message_timeout() {
        let mut config = ClientConfig::new();
        assert_eq!(message_timeout(&config), Some(Duration::from_secs(300)));
        config.set("message.timeout.ms", "30000");
        assert_eq!(message_timeout(&config), Some(Duration::from_secs(30)));
        // An operator's alias raises it: a send must not give up before librdkafka.
        config.set("delivery.timeout.ms", "900000");
        assert_eq!(message_timeout(&config), Some(Duration::from_secs(900)));
        // Either infinite: wait as long as librdkafka does.
        config.set("delivery.timeout.ms", "0");
        assert_eq!(message_timeout(&config), None);
    }
}
