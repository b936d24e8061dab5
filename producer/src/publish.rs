//! Publishes wire messages to Kafka: idempotent producer, LZ4, key = service for
//! profile windows and target id for status.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

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

pub struct Publisher {
    producer: FutureProducer,
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
        let producer = client.create().map_err(PublishError::Create)?;
        Ok(Publisher { producer, config })
    }

    /// Sends one encoded message to the topic of `destination`.
    pub async fn send_to(
        &self,
        destination: Destination,
        key: &str,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let topic = match destination {
            Destination::Profiles => &self.config.profiles_topic,
            Destination::Status => &self.config.status_topic,
        };
        self.send(topic, key, payload).await
    }

    async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), PublishError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        self.producer
            .send(record, self.config.send_timeout)
            .await
            .map(|_| ())
            .map_err(|(source, _)| PublishError::Send {
                topic: topic.to_string(),
                source,
            })
    }
}
