//! Publishes wire messages to Kafka: idempotent producer, LZ4, key = service for
//! profile windows and target id for status.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use javelin_schema::trace_context;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

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

/// Consecutive broker-side rejections after which the producer is rebuilt.
const REJECTIONS_BEFORE_RESET: u32 = 3;

pub struct Publisher {
    /// Replaced when the broker keeps rejecting this producer's state (a broker
    /// restarted without its idempotent-producer state answers every send with
    /// an error): a new producer gets a new producer id. Duplicates this may
    /// cause are harmless downstream (windows are idempotent in ClickHouse).
    producer: RwLock<Arc<FutureProducer>>,
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

    fn create(config: &PublisherConfig) -> Result<FutureProducer, PublishError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set(
                "message.timeout.ms",
                config.send_timeout.as_millis().to_string(),
            );
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        client.create().map_err(PublishError::Create)
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
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(value) = traceparent {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: trace_context::TRACEPARENT,
                value: Some(value),
            }));
        }
        let result = producer.send(record, self.config.send_timeout).await;
        match result {
            Ok(_) => {
                self.rejections.store(0, Ordering::Relaxed);
                Ok(())
            }
            Err((source, _)) => {
                let fatal = producer.client().fatal_error().is_some();
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
    fn reset(&self, broken: &Arc<FutureProducer>, why: &KafkaError) {
        self.replace(
            broken,
            &format!("the broker keeps rejecting this producer ({why}); recreating it"),
        );
    }

    fn replace(&self, broken: &Arc<FutureProducer>, why: &str) {
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
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
