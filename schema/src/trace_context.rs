//! W3C trace context in Kafka headers: how a window's trace crosses the broker.
//!
//! The agent starts a span when it spools a message and writes its context as
//! a `traceparent` header; the consumer reads the header and records its own
//! span (received → stored or dead-lettered) as a child, so one trace follows
//! a window from the agent to ClickHouse. A missing or malformed header only
//! means the consumer's span starts a trace of its own.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The header that carries the context (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` value of the span in `cx`, when it has a valid one.
pub fn traceparent(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The remote parent a `traceparent` value names; an empty context when it
/// names none (absent, not UTF-8, or malformed).
pub fn remote_parent(traceparent: Option<&[u8]>) -> Context {
    let Some(value) = traceparent.and_then(|v| std::str::from_utf8(v).ok()) else {
        return Context::new();
    };
    let carrier = HashMap::from([(TRACEPARENT.to_string(), value.trim().to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn a_context_survives_the_header_round_trip() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
        let span_id = SpanId::from_hex("00f067aa0ba902b7").expect("hex");
        let sent = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let header = traceparent(&Context::new().with_remote_span_context(sent))
            .expect("a valid context has a header");
        assert_eq!(
            header,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let received = remote_parent(Some(header.as_bytes()));
        let span = received.span();
        let got = span.span_context();
        assert!(got.is_remote());
        assert_eq!(got.trace_id(), trace_id);
        assert_eq!(got.span_id(), span_id);
    }

    #[test]
    fn bad_headers_name_no_parent() {
        for bad in [
            None,
            Some(&b"\xff\xfe"[..]),
            Some(&b"garbage"[..]),
            Some(&b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..]),
        ] {
            let cx = remote_parent(bad);
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
        }
        assert_eq!(traceparent(&Context::new()), None);
    }
}
