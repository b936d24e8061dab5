//! Publishes wire messages to Kafka: idempotent producer, LZ4, key = service for
//! profile windows and target id for status.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use javelin_schema::trace_context;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};

use crate::polled_producer::PolledProducer;
use crate::spool::Destination;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("creating the Kafka producer: {0}")]
    Create(#[source] rdkafka::error::KafkaError),
    #[error("publishing to {topic}: {source}")]
    Send {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl PublishError {
    /// Kafka refuses this message itself (too large): retrying cannot deliver it.
    pub fn refuses_message(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self,
            PublishError::Send {
                source: KafkaError::MessageProduction(
                    C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge
                ),
                ..
            }
        )
    }
}

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub brokers: String,
    pub profiles_topic: String,
    pub status_topic: String,
    /// How long one send may wait for the broker before it counts as failed.
    pub send_timeout: Duration,
    /// Extra librdkafka properties (TLS, SASL, tuning), applied last.
    pub properties: Vec<(String, String)>,
}

/// librdkafka's `queue.buffering.max.kbytes`: 128 MiB, above what the spool
/// hands it at once (`--max-in-flight` messages of at most `--max-message-bytes`,
/// 64 × 900 KiB by default), so it never refuses a send, and a hard bound.
pub const QUEUE_MAX_KBYTES: u64 = 128 * 1024;

/// librdkafka's default `message.max.bytes`.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: u64 = 1_000_000;

/// Room left under the broker's limit for what Kafka adds to our payload
/// (record batch and record headers, key, the `traceparent` header) and for
/// LZ4 on incompressible data (at most 0.4 % larger).
pub fn broker_headroom(broker_limit: u64) -> u64 {
    (broker_limit / 32).max(4096)
}

/// What the broker accepts for one message on a topic, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLimit {
    pub bytes: u64,
    /// `max.message.bytes of topic …` or `message.max.bytes of broker …`.
    pub source: String,
}

/// The message bound to use: `configured`, lowered to fit under the broker's
/// limit with [`broker_headroom`] to spare (never below 4 KiB, the smallest
/// bound `--max-message-bytes` accepts: a part's header must fit).
pub fn fit_message_bytes(configured: u64, broker: Option<&BrokerLimit>) -> u64 {
    match broker {
        Some(b) => configured.min(b.bytes.saturating_sub(broker_headroom(b.bytes)).max(4096)),
        None => configured,
    }
}

/// librdkafka's `message.max.bytes` for a message bound: the broker's limit
/// when known (batches must not exceed it); otherwise raised from the default
/// only when a message of the bound would not fit it.
pub fn client_message_max_bytes(message_bytes: u64, broker: Option<&BrokerLimit>) -> Option<u64> {
    match broker {
        // librdkafka refuses a `message.max.bytes` over 1,000,000,000 (and
        // the agent would not start): a bigger topic limit is clamped.
        Some(b) => Some(b.bytes.clamp(1000, 1_000_000_000)),
        None => {
            let needed = message_bytes + broker_headroom(message_bytes);
            (needed > LIBRDKAFKA_MESSAGE_MAX_BYTES).then_some(needed)
        }
    }
}

/// Asks the cluster how large a message on `topic` may be: the topic's
/// `max.message.bytes`, or else the broker's `message.max.bytes`. `Ok(None)`
/// when the cluster answered without either (a broker that does not report
/// configs); `Err` when it could not be asked.
pub async fn broker_message_limit(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    timeout: Duration,
) -> Result<Option<BrokerLimit>, KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        client.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let admin = Arc::new(admin);
    let metadata = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
            .await
            .map_err(|_| KafkaError::Canceled)??
    };
    let broker = metadata.brokers().first().map(|b| b.id());
    let mut resources = vec![ResourceSpecifier::Topic(topic)];
    resources.extend(broker.map(ResourceSpecifier::Broker));
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let results = admin.describe_configs(resources.iter(), &options).await?;
    let value = |i: usize, name: &str| -> Option<u64> {
        results
            .get(i)?
            .as_ref()
            .ok()?
            .get(name)?
            .value
            .as_deref()?
            .trim()
            .parse()
            .ok()
    };
    if let Some(bytes) = value(0, "max.message.bytes") {
        return Ok(Some(BrokerLimit {
            bytes,
            source: format!("max.message.bytes of topic {topic}"),
        }));
    }
    Ok(value(1, "message.max.bytes").map(|bytes| BrokerLimit {
        bytes,
        source: format!("message.max.bytes of broker {}", broker.unwrap_or_default()),
    }))
}

/// Consecutive broker-side rejections after which the producer is rebuilt.
const REJECTIONS_BEFORE_RESET: u32 = 3;

pub struct Publisher {
    /// Replaced when the broker keeps rejecting this producer's state (a broker
    /// restarted without its idempotent-producer state answers every send with
    /// an error): a new producer gets a new producer id. Duplicates this may
    /// cause are harmless downstream (windows are idempotent in ClickHouse).
    producer: RwLock<Arc<PolledProducer>>,
    rejections: AtomicU32,
    config: PublisherConfig,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(config: PublisherConfig) -> Result<Publisher, PublishError> {
        let producer = Self::create(&config)?;
        Ok(Publisher {
            producer: RwLock::new(Arc::new(producer)),
            rejections: AtomicU32::new(0),
            config,
        })
    }

    fn create(config: &PublisherConfig) -> Result<PolledProducer, PublishError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set(
                "message.timeout.ms",
                config.send_timeout.as_millis().to_string(),
            )
            // librdkafka's own queue: the spool hands it at most --max-in-flight
            // messages, so this only backs the memory bound up (see
            // docs/architecture.md, "Memory").
            .set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string());
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        PolledProducer::create(&client).map_err(PublishError::Create)
    }

    /// Sends one encoded message to the topic of `destination`, with its trace
    /// context (W3C `traceparent`) as a header when it has one.
    pub async fn send_to(
        &self,
        destination: Destination,
        key: &str,
        payload: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let topic = match destination {
            Destination::Profiles => &self.config.profiles_topic,
            Destination::Status => &self.config.status_topic,
        };
        self.send(topic, key, payload, traceparent).await
    }

    async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let producer = match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let headers = traceparent.map(|value| {
            OwnedHeaders::new().insert(Header {
                key: trace_context::TRACEPARENT,
                value: Some(value),
            })
        });
        let result = producer
            .send(topic, key, payload, headers, self.config.send_timeout)
            .await;
        match result {
            Ok(_) => {
                self.rejections.store(0, Ordering::Relaxed);
                Ok(())
            }
            Err(source) => {
                let fatal = producer.fatal_error().is_some();
                if fatal || rejected_by_broker(&source) {
                    let n = self.rejections.fetch_add(1, Ordering::Relaxed) + 1;
                    if fatal || n >= REJECTIONS_BEFORE_RESET {
                        self.reset(&producer, &source);
                    }
                }
                Err(PublishError::Send {
                    topic: topic.to_string(),
                    source,
                })
            }
        }
    }

    /// Starts a fresh producer session before deliveries are retried. An
    /// idempotent producer's id and sequence numbers belong to the broker's
    /// state from before a failure; after an outage that state may be gone (a
    /// restarted broker, an expired producer id) and the old session's retries
    /// are refused or, on some brokers, break the partition. A new producer gets
    /// a new id; the failed messages are still in the spool and are re-sent
    /// through it (duplicates, if any, collapse downstream).
    pub fn renew(&self) {
        let current = match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        self.replace(
            &current,
            "deliveries failed; retrying them in a new producer session",
        );
    }

    /// Replaces `broken` with a new producer (unless another send already did).
    fn reset(&self, broken: &Arc<PolledProducer>, why: &KafkaError) {
        self.replace(
            broken,
            &format!("the broker keeps rejecting this producer ({why}); recreating it"),
        );
    }

    fn replace(&self, broken: &Arc<PolledProducer>, why: &str) {
        let Ok(mut current) = self.producer.write() else {
            return;
        };
        if !Arc::ptr_eq(&current, broken) {
            return;
        }
        match Self::create(&self.config) {
            Ok(fresh) => {
                tracing::info!("{why}");
                *current = Arc::new(fresh);
                self.rejections.store(0, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "recreating the Kafka producer failed"),
        }
    }
}

/// An error the broker returned for a produce request (as opposed to the
/// broker being unreachable or slow, which waiting fixes).
fn rejected_by_broker(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match error {
        KafkaError::MessageProduction(code) => !matches!(
            code,
            C::MessageTimedOut
                | C::QueueFull
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::RequestTimedOut
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::UnknownTopicOrPartition
                // librdkafka's own "topic not (yet) known": waiting fixes it too.
                | C::UnknownTopic
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                // Refusals of one message, not of the producer: the spool drops it.
                | C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::MessageBatchTooLarge
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_bound_fits_under_the_broker_limit_with_headroom() {
        let limit = |bytes| BrokerLimit {
            bytes,
            source: "test".into(),
        };
        // Kafka's default 1 MiB + 12: the default 900 KiB bound fits as it is.
        assert_eq!(
            fit_message_bytes(900 * 1024, Some(&limit(1_048_588))),
            900 * 1024
        );
        // A topic of 200 000 bytes: lowered, with room for headers and LZ4.
        let fitted = fit_message_bytes(900 * 1024, Some(&limit(200_000)));
        assert_eq!(fitted, 200_000 - 6_250);
        assert!(fitted + broker_headroom(200_000) <= 200_000);
        assert_eq!(
            fit_message_bytes(900 * 1024, None),
            900 * 1024,
            "unknown: kept"
        );
        assert_eq!(
            client_message_max_bytes(fitted, Some(&limit(200_000))),
            Some(200_000)
        );
        assert_eq!(
            client_message_max_bytes(900 * 1024, None),
            None,
            "librdkafka's default fits"
        );
        assert_eq!(
            client_message_max_bytes(4 << 20, None),
            Some((4 << 20) + (4 << 20) / 32),
            "raised for a larger bound"
        );
    }

    #[test]
    fn a_message_kafka_refuses_is_not_retried_and_resets_nothing() {
        use RDKafkaErrorCode as C;
        let refused = |code| PublishError::Send {
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        };
        assert!(refused(C::MessageSizeTooLarge).refuses_message());
        assert!(!refused(C::MessageTimedOut).refuses_message());
        assert!(!rejected_by_broker(&KafkaError::MessageProduction(
            C::MessageSizeTooLarge
        )));
    }

    #[test]
    fn only_broker_rejections_count_towards_a_reset() {
        use RDKafkaErrorCode as C;
        assert!(!rejected_by_broker(&KafkaError::MessageProduction(
            C::MessageTimedOut
        )));
        assert!(!rejected_by_broker(&KafkaError::MessageProduction(
            C::AllBrokersDown
        )));
        assert!(rejected_by_broker(&KafkaError::MessageProduction(
            C::Unknown
        )));
        assert!(rejected_by_broker(&KafkaError::MessageProduction(
            C::OutOfOrderSequenceNumber
        )));
    }
}
