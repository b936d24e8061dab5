//! The consumer's half of a window's trace: one span per message, from its
//! arrival to its outcome (stored, or dead-lettered), as a child of the agent's
//! span named by the message's `traceparent` header (see
//! `javelin_schema::trace_context`). Only the parent context and the arrival
//! time are kept while the batch is in hand; the span is built when the outcome
//! is known, so nothing live is held per message.

use std::time::SystemTime;

use javelin_schema::trace_context;
use opentelemetry::trace::{Span, SpanKind, Status, Tracer};
use opentelemetry::{Context, KeyValue, global};
use rdkafka::message::{Headers, Message};

use crate::batch::{Pending, Rows};

/// When a message arrived and the trace it belongs to.
#[derive(Debug, Clone)]
pub struct Arrival {
    parent: Context,
    at: SystemTime,
}

impl Arrival {
    /// Now, continuing the trace in `message`'s headers (if any).
    pub fn of<M: Message>(message: &M) -> Arrival {
        let header = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == trace_context::TRACEPARENT)
                .and_then(|h| h.value)
        });
        Arrival {
            parent: trace_context::remote_parent(header),
            at: SystemTime::now(),
        }
    }

    /// The trace context it arrived with, to hand on (the dead-letter topic).
    pub fn traceparent(&self) -> Option<String> {
        trace_context::traceparent(&self.parent)
    }

    /// Now, in a trace of its own.
    pub fn untraced() -> Arrival {
        Arrival {
            parent: Context::new(),
            at: SystemTime::now(),
        }
    }
}

/// Records the span of each message of a finished batch; `rejected` are the
/// indexes ClickHouse refused (dead-lettered).
pub fn record_outcomes(pending: &[Pending], rejected: &[(usize, String)]) {
    let tracer = global::tracer("javelin-consumer");
    for (index, m) in pending.iter().enumerate() {
        let refused_by_clickhouse = rejected.iter().any(|(i, _)| *i == index);
        let outcome = match &m.rows {
            Rows::DeadLettered | Rows::Refused(_) => "dead_lettered_invalid",
            _ if refused_by_clickhouse => "dead_lettered_rejected",
            Rows::Window(_) => "stored",
            Rows::Status(_) => "stored_status",
        };
        let mut attributes = vec![
            KeyValue::new("messaging.destination.name", m.source.topic.clone()),
            KeyValue::new(
                "messaging.kafka.destination.partition",
                i64::from(m.source.partition),
            ),
            KeyValue::new("messaging.kafka.message.offset", m.source.offset),
            KeyValue::new("javelin.outcome", outcome),
        ];
        if let Rows::Window(w) = &m.rows {
            attributes.push(KeyValue::new("javelin.service", w.ledger.service.clone()));
            attributes.push(KeyValue::new(
                "javelin.profile_type",
                w.ledger.profile_type.clone(),
            ));
            attributes.push(KeyValue::new(
                "javelin.window_start_ms",
                w.ledger.window_start_ms,
            ));
            attributes.push(KeyValue::new("javelin.rows", w.sample_count() as i64));
        }
        let mut span = tracer
            .span_builder("javelin.consumer.store")
            .with_kind(SpanKind::Consumer)
            .with_start_time(m.arrival.at)
            .with_attributes(attributes)
            .start_with_context(&tracer, &m.arrival.parent);
        span.set_status(if outcome.starts_with("stored") {
            Status::Ok
        } else {
            Status::error(outcome)
        });
        span.end();
    }
}
