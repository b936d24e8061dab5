//! The dead-letter topic: messages the consumer cannot ingest, unchanged, with
//! why in headers, so nothing is lost and the partition keeps flowing.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::convert::Source;
use crate::kafka_config::KafkaConnection;

/// One message on its way to the dead-letter topic.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub source: &'a Source,
    pub reason: &'a str,
    pub error_class: &'a str,
    /// The message's trace context (W3C `traceparent`), kept so that
    /// re-ingesting it from the DLQ continues the window's trace.
    pub traceparent: Option<&'a str>,
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    consumer_id: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A producer for `topic` with the consumer's own Kafka settings (a
    /// cluster that needs TLS or SASL for the consumer needs it here too).
    pub fn new(
        kafka: KafkaConnection<'_>,
        topic: &str,
        consumer_id: &str,
    ) -> Result<DeadLetters, rdkafka::error::KafkaError> {
        let producer = kafka
            .client_config(
                &[
                    ("enable.idempotence", "true"),
                    ("message.timeout.ms", "30000"),
                ],
                &[],
            )
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_string(),
            consumer_id: consumer_id.to_string(),
        })
    }

    /// Sends a message to the dead-letter topic, retrying with `backoff` until
    /// the broker has it: its offset may only be stored afterwards.
    pub async fn send_until_delivered(
        &self,
        letter: &DeadLetter<'_>,
        backoff: &crate::backoff::Backoff,
    ) {
        let mut backoff = backoff.clone();
        backoff.reset();
        while let Err(e) = self.send(letter, crate::now_ms()).await {
            tracing::warn!(error = %e, "dead-letter topic unavailable; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Sends one message to the dead-letter topic; resolves once the broker has it.
    pub async fn send(
        &self,
        letter: &DeadLetter<'_>,
        now_ms: i64,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let DeadLetter {
            key,
            payload,
            source,
            reason,
            error_class,
            traceparent,
        } = *letter;
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        let time = now_ms.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "javelin.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "javelin.error_class",
                value: Some(error_class),
            })
            .insert(Header {
                key: "javelin.source_topic",
                value: Some(source.topic.as_str()),
            })
            .insert(Header {
                key: "javelin.source_partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "javelin.source_offset",
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: "javelin.consumer_id",
                value: Some(self.consumer_id.as_str()),
            })
            .insert(Header {
                key: "javelin.time_ms",
                value: Some(time.as_str()),
            });
        let headers = match traceparent {
            Some(value) => headers.insert(Header {
                key: javelin_schema::trace_context::TRACEPARENT,
                value: Some(value),
            }),
            None => headers,
        };
        let mut record = FutureRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}
