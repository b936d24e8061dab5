//! The bounded spool between the target tasks and Kafka.
//!
//! Targets never wait for the broker: they push encoded messages here and go on
//! profiling. One sender task drains the spool in order, with at most
//! `max_in_flight` deliveries outstanding; a failed delivery goes back to the
//! front and is retried with backoff, so while Kafka is unreachable messages
//! wait here. The spool holds at most `max_bytes` of payload and one message
//! per 4 KiB of that (a message's span and queue slot cost memory too): when a
//! new message does not fit, the oldest go first, and each drop is counted against its target, whose
//! status then reports it.
//!
//! Each message gets a span when it is spooled (ended when it is delivered or
//! dropped); its context travels as the Kafka `traceparent` header, so the
//! consumer's span joins the same trace.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use javelin_schema::trace_context;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};
use tokio::sync::Notify;

use crate::publish::Publisher;

/// Which topic a spooled message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Profiles,
    Status,
}

/// One encoded message waiting for delivery.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub destination: Destination,
    pub key: String,
    pub payload: Vec<u8>,
    pub target_id: u64,
}

/// Counters a target's status reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    /// Every message dropped (the full spool's oldest and Kafka's refusals).
    pub messages: u64,
    pub bytes: u64,
    /// Of `messages`, those Kafka refused (too large for the topic).
    pub refused: u64,
}

/// A spooled message and its delivery span.
struct Entry {
    message: Spooled,
    span: global::BoxedSpan,
    traceparent: Option<String>,
    attempts: u32,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("message", &self.message)
            .field("traceparent", &self.traceparent)
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn new(message: Spooled) -> Entry {
        let tracer = global::tracer("javelin-agent");
        let span = tracer
            .span_builder("javelin.agent.deliver")
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new(
                    "javelin.destination",
                    match message.destination {
                        Destination::Profiles => "profiles",
                        Destination::Status => "status",
                    },
                ),
                KeyValue::new("javelin.key", message.key.clone()),
                KeyValue::new("javelin.target_id", message.target_id.to_string()),
                KeyValue::new("javelin.bytes", message.payload.len() as i64),
            ])
            .start(&tracer);
        let traceparent = trace_context::traceparent(
            &Context::new().with_remote_span_context(span.span_context().clone()),
        );
        Entry {
            message,
            span,
            traceparent,
            attempts: 0,
        }
    }

    /// Ends the span of a message that left the spool without delivery.
    fn dropped(mut self, why: &'static str) {
        self.span
            .set_attribute(KeyValue::new("javelin.attempts", i64::from(self.attempts)));
        self.span.set_status(Status::error(why));
        self.span.end();
    }

    fn delivered(mut self) {
        self.span
            .set_attribute(KeyValue::new("javelin.attempts", i64::from(self.attempts)));
        self.span.set_status(Status::Ok);
        self.span.end();
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    bytes: usize,
    drops: HashMap<u64, Drops>,
    delivered: u64,
    failed_deliveries: u64,
}

/// A bounded FIFO of messages; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Spool {
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
    max_bytes: usize,
    /// Each message also costs its span, key and queue slot (under 1 KiB):
    /// capping the count bounds that too, however small the messages.
    max_messages: usize,
}

/// One message counted per this many bytes of the bound (at least 64 messages).
pub const BYTES_PER_MESSAGE_SLOT: usize = 4096;

/// Most payload bytes handed to Kafka at once (besides `--max-in-flight`):
/// in flight a message is held here and copied by librdkafka, which also
/// builds the compressed batch, so this bounds ~3× its size (at least one
/// message always goes).
pub const MAX_IN_FLIGHT_BYTES: usize = 8 << 20;

impl Spool {
    pub fn new(max_bytes: usize) -> Spool {
        Spool {
            state: Arc::default(),
            ready: Arc::new(Notify::new()),
            max_bytes,
            max_messages: (max_bytes / BYTES_PER_MESSAGE_SLOT).max(64),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (plain pushes/pops).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message, dropping the oldest ones (counted) if it would not fit.
    /// A message larger than the whole spool is itself dropped and counted.
    pub fn push(&self, message: Spooled) {
        let size = message.payload.len();
        let entry = Entry::new(message);
        {
            let mut state = self.lock();
            if size > self.max_bytes {
                let d = state.drops.entry(entry.message.target_id).or_default();
                d.messages += 1;
                d.bytes += size as u64;
                entry.dropped("larger than the whole spool");
                return;
            }
            while state.bytes + size > self.max_bytes || state.queue.len() >= self.max_messages {
                let Some(old) = state.queue.pop_front() else {
                    break;
                };
                state.bytes -= old.message.payload.len();
                let d = state.drops.entry(old.message.target_id).or_default();
                d.messages += 1;
                d.bytes += old.message.payload.len() as u64;
                old.dropped("spool full: dropped as the oldest");
            }
            state.bytes += size;
            state.queue.push_back(entry);
        }
        self.ready.notify_one();
    }

    /// Drops counted for a target so far.
    pub fn drops(&self, target_id: u64) -> Drops {
        self.lock()
            .drops
            .get(&target_id)
            .copied()
            .unwrap_or_default()
    }

    /// (messages, bytes) waiting.
    pub fn len(&self) -> (usize, usize) {
        let state = self.lock();
        (state.queue.len(), state.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }

    /// Drops over all targets.
    pub fn total_drops(&self) -> Drops {
        self.lock()
            .drops
            .values()
            .fold(Drops::default(), |a, d| Drops {
                messages: a.messages + d.messages,
                bytes: a.bytes + d.bytes,
                refused: a.refused + d.refused,
            })
    }

    /// Delivery attempts that failed (each failed message is retried).
    pub fn failed_deliveries(&self) -> u64 {
        self.lock().failed_deliveries
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.lock().delivered
    }

    /// Takes every waiting message out, oldest first, without Kafka: for a
    /// caller that reads the messages itself (tests observe a target's windows
    /// this way). Their spans end as delivered.
    pub fn drain(&self) -> Vec<Spooled> {
        self.take(usize::MAX)
            .into_iter()
            .map(|entry| {
                let message = entry.message.clone();
                entry.delivered();
                message
            })
            .collect()
    }

    fn take(&self, max: usize) -> Vec<Entry> {
        self.take_within(max, usize::MAX)
    }

    /// The oldest messages, at most `max` of them and `max_bytes` of payload
    /// (the first always).
    fn take_within(&self, max: usize, max_bytes: usize) -> Vec<Entry> {
        let mut state = self.lock();
        let mut bytes = 0usize;
        let n = state
            .queue
            .iter()
            .take(max)
            .enumerate()
            .take_while(|(i, e)| {
                bytes = bytes.saturating_add(e.message.payload.len());
                *i == 0 || bytes <= max_bytes
            })
            .count();
        let batch: Vec<Entry> = state.queue.drain(..n).collect();
        state.bytes -= batch.iter().map(|m| m.message.payload.len()).sum::<usize>();
        batch
    }

    /// Puts undelivered messages back at the front, in their original order,
    /// subject to the same bound (what no longer fits is the oldest: dropped, counted).
    fn requeue(&self, failed: Vec<Entry>) {
        let mut state = self.lock();
        let mut full = false;
        // Newest first, so once the spool is full every older message is the one dropped.
        for entry in failed.into_iter().rev() {
            let size = entry.message.payload.len();
            full = full
                || state.bytes + size > self.max_bytes
                || state.queue.len() >= self.max_messages;
            if full {
                let d = state.drops.entry(entry.message.target_id).or_default();
                d.messages += 1;
                d.bytes += size as u64;
                entry.dropped("spool full: dropped as the oldest");
                continue;
            }
            state.bytes += size;
            state.queue.push_front(entry);
        }
    }

    /// Drains the spool into Kafka until `stop` is notified and the spool is empty
    /// (or `drain_timeout` passes after the stop).
    pub async fn run_sender(
        &self,
        publisher: Arc<Publisher>,
        max_in_flight: usize,
        stop: Arc<Notify>,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut stopping = false;
        let stop_wait = stop.notified();
        tokio::pin!(stop_wait);
        loop {
            let batch = self.take_within(max_in_flight.max(1), MAX_IN_FLIGHT_BYTES);
            if batch.is_empty() {
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = self.ready.notified() => {}
                    _ = &mut stop_wait => stopping = true,
                }
                continue;
            }
            let sends = batch.iter().map(|e| {
                let m = &e.message;
                publisher.send_to(m.destination, &m.key, &m.payload, e.traceparent.as_deref())
            });
            // join_all polls every send at once, so they are all in flight together.
            let results = futures::future::join_all(sends).await;
            let mut failed = Vec::new();
            let mut delivered = 0;
            for (mut entry, result) in batch.into_iter().zip(results) {
                entry.attempts += 1;
                match result {
                    Ok(()) => {
                        delivered += 1;
                        entry.delivered();
                    }
                    // Retrying a message Kafka refuses would loop for ever: drop it, counted.
                    Err(e) if e.refuses_message() => {
                        tracing::warn!(error = %e, target_id = entry.message.target_id, bytes = entry.message.payload.len(), "Kafka refuses the message; dropped");
                        let mut state = self.lock();
                        let d = state.drops.entry(entry.message.target_id).or_default();
                        d.messages += 1;
                        d.refused += 1;
                        d.bytes += entry.message.payload.len() as u64;
                        drop(state);
                        entry.dropped("refused by Kafka");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "delivery failed; message back in the spool");
                        failed.push(entry);
                    }
                }
            }
            {
                let mut state = self.lock();
                state.delivered += delivered;
                state.failed_deliveries += failed.len() as u64;
            }
            if failed.is_empty() {
                backoff = Duration::from_millis(100);
                continue;
            }
            let (waiting, bytes) = self.len();
            tracing::warn!(failed = failed.len(), waiting, bytes, retry_in = ?backoff, "Kafka unavailable; spooling");
            self.requeue(failed);
            publisher.renew();
            if stopping {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = &mut stop_wait => stopping = true,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(target: u64, size: usize) -> Spooled {
        Spooled {
            destination: Destination::Profiles,
            key: "svc".into(),
            payload: vec![0; size],
            target_id: target,
        }
    }

    #[test]
    fn oldest_messages_go_first_and_are_counted() {
        let spool = Spool::new(100);
        spool.push(msg(1, 40));
        spool.push(msg(2, 40));
        spool.push(msg(3, 40));
        assert_eq!(spool.len(), (2, 80));
        assert_eq!(
            spool.drops(1),
            Drops {
                messages: 1,
                bytes: 40,
                refused: 0
            }
        );
        assert_eq!(spool.drops(2), Drops::default());
        spool.push(msg(4, 500));
        assert_eq!(
            spool.drops(4),
            Drops {
                messages: 1,
                bytes: 500,
                refused: 0
            },
            "too large for the spool"
        );
        assert_eq!(spool.len(), (2, 80));
    }

    #[test]
    fn the_message_count_is_bounded_too() {
        let spool = Spool::new(1 << 20);
        for t in 0..600 {
            spool.push(msg(t, 10));
        }
        assert_eq!(
            spool.len(),
            (256, 2560),
            "1 MiB holds 256 messages however small"
        );
        let batch = spool.take_within(100, 25);
        assert_eq!(batch.len(), 2, "in-flight bytes bound the batch");
        assert_eq!(
            spool.take_within(100, 5).len(),
            1,
            "one message always goes"
        );
        assert_eq!(spool.drops(0).messages, 1, "the oldest went first");
        assert_eq!(spool.drops(599).messages, 0);
    }

    #[test]
    fn requeued_messages_keep_their_order_and_the_bound() {
        let spool = Spool::new(100);
        for t in 1..=3 {
            spool.push(msg(t, 30));
        }
        let batch = spool.take(2);
        assert_eq!(
            batch
                .iter()
                .map(|e| e.message.target_id)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        spool.push(msg(4, 30));
        spool.push(msg(5, 30));
        spool.requeue(batch);
        // 3, 4, 5 fill 90 of 100 bytes: the requeued 1 and 2 are the oldest and go.
        let order: Vec<u64> = spool.take(10).iter().map(|e| e.message.target_id).collect();
        assert_eq!(order, [3, 4, 5]);
        assert_eq!((spool.drops(1).messages, spool.drops(2).messages), (1, 1));
        let spool = Spool::new(100);
        spool.push(msg(3, 30));
        spool.requeue(vec![Entry::new(msg(1, 30)), Entry::new(msg(2, 30))]);
        let order: Vec<u64> = spool.take(10).iter().map(|e| e.message.target_id).collect();
        assert_eq!(
            order,
            [1, 2, 3],
            "failed messages go back in front, in order"
        );
    }
}
