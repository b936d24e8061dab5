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

impl Arrival {
    /// Records the message's span, from its arrival to now, with its outcome
    /// (`stored…` is a success; anything else an error).
    pub fn record(&self, outcome: &'static str, attributes: Vec<KeyValue>) {
        let tracer = global::tracer("javelin-consumer");
        let mut attributes = attributes;
        attributes.push(KeyValue::new("javelin.outcome", outcome));
        let mut span = tracer
            .span_builder("javelin.consumer.store")
            .with_kind(SpanKind::Consumer)
            .with_start_time(self.at)
            .with_attributes(attributes)
            .start_with_context(&tracer, &self.parent);
        span.set_status(if outcome.starts_with("stored") {
            Status::Ok
        } else {
            Status::error(outcome)
        });
        span.end();
    }
}
