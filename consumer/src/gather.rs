//! Gathering a batch: receive and decode messages until the batch is full (rows
//! or bytes) or its linger time is up. Invalid messages are dead-lettered on the
//! way, so the partition keeps flowing.
//!
//! Gathering runs while the previous batch is being written; when that write
//! finishes, gathering reports it at once (so its offsets are stored without
//! waiting for this batch's linger).

use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::task::JoinError;

use crate::backoff::Backoff;
use crate::batch::{Pending, Rows};
use crate::convert::{self, Source};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::metrics::ConsumerMetrics;
use crate::trace::Arrival;
use crate::write::{Outlets, Writer, Written, finish};

/// Where a batch ends.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub linger: Duration,
}

/// A batch being gathered.
#[derive(Debug)]
pub struct Gathered {
    pub messages: Vec<Pending>,
    pub rows: usize,
    bytes: usize,
    deadline: Instant,
}

impl Gathered {
    pub fn new(limits: &BatchLimits) -> Gathered {
        Gathered {
            messages: Vec::new(),
            rows: 0,
            bytes: 0,
            deadline: Instant::now() + limits.linger,
        }
    }

    pub fn is_full(&self, limits: &BatchLimits) -> bool {
        self.rows >= limits.max_rows || self.bytes >= limits.max_bytes
    }
}

/// What interrupted gathering.
#[derive(Debug)]
pub enum Interrupt {
    /// The batch is full or its linger time is up.
    Done,
    Shutdown,
    /// The write task panicked or was cancelled.
    WriteFailed(JoinError),
}

/// What gathering reads from and reports to.
pub struct Gatherer<'a> {
    pub consumer: &'a StreamConsumer,
    pub status_topic: &'a str,
    pub limits: BatchLimits,
    pub dead_letters: &'a DeadLetters,
    pub metrics: &'a ConsumerMetrics,
}

impl std::fmt::Debug for Gatherer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatherer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Gatherer<'_> {
    /// Decodes messages into `batch` until it is done or `shutdown` completes.
    /// When the write in flight finishes meanwhile, it is reported at once (its
    /// offsets stored without waiting for this batch's linger) and the writer
    /// becomes idle.
    pub async fn gather(
        &self,
        batch: &mut Gathered,
        writer: &mut Writer,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Interrupt {
        let dlq_backoff = Backoff::standard();
        while !batch.is_full(&self.limits) {
            let event = tokio::select! {
                m = self.consumer.recv() => Event::Message(m),
                w = join(writer) => Event::Written(Box::new(w)),
                _ = tokio::time::sleep_until(batch.deadline.into()) => return Interrupt::Done,
                _ = &mut *shutdown => return Interrupt::Shutdown,
            };
            let message = match event {
                Event::Written(w) => match *w {
                    Ok(written) => {
                        *writer = Writer::Idle(finish(self.outlets(), written).await);
                        continue;
                    }
                    Err(e) => return Interrupt::WriteFailed(e),
                },
                Event::Message(Ok(m)) => m,
                Event::Message(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka poll error");
                    continue;
                }
            };
            self.add(batch, &message, &dlq_backoff).await;
        }
        Interrupt::Done
    }

    fn outlets(&self) -> Outlets<'_> {
        Outlets {
            consumer: self.consumer,
            dead_letters: self.dead_letters,
            metrics: self.metrics,
        }
    }

    /// Decodes one message into the batch, dead-lettering it when invalid.
    async fn add(
        &self,
        batch: &mut Gathered,
        message: &BorrowedMessage<'_>,
        dlq_backoff: &Backoff,
    ) {
        let source = Source {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let payload = message.payload().unwrap_or_default();
        let arrival = Arrival::of(message);
        batch.bytes += payload.len();
        let decoded = if source.topic == self.status_topic {
            convert::status_row(payload).map(|s| Rows::Status(Box::new(s)))
        } else {
            convert::window_rows(payload, &source, crate::now_ms())
                .map(|w| Rows::Window(Box::new(w)))
        };
        let rows = match decoded {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(topic = %source.topic, partition = source.partition, offset = source.offset, %error, "dead-lettering an invalid message");
                let traceparent = arrival.traceparent();
                let letter = DeadLetter {
                    key: message.key(),
                    payload,
                    source: &source,
                    reason: &error.to_string(),
                    error_class: "invalid_message",
                    traceparent: traceparent.as_deref(),
                };
                self.dead_letters
                    .send_until_delivered(&letter, dlq_backoff)
                    .await;
                self.metrics.dead_letter("invalid_message");
                if source.topic == self.status_topic {
                    Rows::DeadLettered
                } else {
                    Rows::Refused(Box::new(convert::refused_ledger_row(
                        message.key(),
                        payload,
                        &source,
                        message.timestamp().to_millis(),
                        &error.to_string(),
                        crate::now_ms(),
                    )))
                }
            }
        };
        batch.rows += match &rows {
            Rows::Window(w) => w.sample_count() + 1,
            Rows::Status(_) | Rows::Refused(_) => 1,
            Rows::DeadLettered => 0,
        };
        batch.messages.push(Pending {
            source,
            key: message.key().map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            rows,
            arrival,
        });
    }
}

enum Event<'c> {
    Message(KafkaResult<BorrowedMessage<'c>>),
    Written(Box<Result<Written, JoinError>>),
}

/// The write in flight, once it finishes; never, when the writer is idle.
async fn join(writer: &mut Writer) -> Result<Written, JoinError> {
    match writer {
        Writer::Busy(handle) => handle.await,
        Writer::Idle(_) => std::future::pending().await,
    }
}
