//! The agent's metrics. Counters are recorded where things happen (window
//! built, events parsed or dropped, parse errors, failed collects); gauges are observed at
//! scrape time from the supervisor's and the spool's own state, so they can
//! never drift from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use javelin_schema::telemetry::Telemetry;
use javelin_schema::wire::{ProfileWindow, TargetState};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use crate::spool::Spool;

/// Current state per target, shared between target tasks and the metrics callback.
pub type TargetStates = Arc<Mutex<HashMap<u64, TargetState>>>;

/// Instruments the target tasks record into.
#[derive(Clone)]
pub struct AgentMetrics {
    windows: Counter<u64>,
    events: Counter<u64>,
    jfr_bytes: Counter<u64>,
    dump_bytes: Counter<u64>,
    truncated: Counter<u64>,
    parse_errors: Counter<u64>,
    failed_collects: Counter<u64>,
    pub states: TargetStates,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Registers the agent's instruments, including gauges read from `spool`.
    pub fn new(telemetry: &Telemetry, spool: &Spool) -> AgentMetrics {
        let meter = telemetry.meter("javelin-agent");
        let states: TargetStates = Arc::default();
        let observed = states.clone();
        meter
            .u64_observable_gauge("javelin.agent.targets")
            .with_description("Profiling targets by session-ownership state")
            .with_callback(move |o| {
                let mut by_state: HashMap<&'static str, u64> = HashMap::new();
                if let Ok(states) = observed.lock() {
                    for state in states.values() {
                        *by_state.entry(state.name()).or_default() += 1;
                    }
                }
                for (state, n) in by_state {
                    o.observe(n, &[KeyValue::new("state", state)]);
                }
            })
            .build();
        let s = spool.clone();
        meter
            .u64_observable_gauge("javelin.agent.spool.messages")
            .with_description("Messages waiting in the spool for Kafka")
            .with_callback(move |o| o.observe(s.len().0 as u64, &[]))
            .build();
        let s = spool.clone();
        meter
            .u64_observable_gauge("javelin.agent.spool.bytes")
            .with_description("Bytes waiting in the spool for Kafka")
            .with_callback(move |o| o.observe(s.len().1 as u64, &[]))
            .build();
        let s = spool.clone();
        meter
            .u64_observable_counter("javelin.agent.spool.dropped.messages")
            .with_description("Messages dropped from the full spool (oldest first)")
            .with_callback(move |o| o.observe(s.total_drops().messages, &[]))
            .build();
        let s = spool.clone();
        meter
            .u64_observable_counter("javelin.agent.published.messages")
            .with_description("Messages delivered to Kafka")
            .with_callback(move |o| o.observe(s.delivered(), &[]))
            .build();
        let s = spool.clone();
        meter
            .u64_observable_counter("javelin.agent.publish.errors")
            .with_description("Failed deliveries (each is retried)")
            .with_callback(move |o| o.observe(s.failed_deliveries(), &[]))
            .build();
        AgentMetrics {
            windows: meter
                .u64_counter("javelin.agent.windows")
                .with_description("Window parts built")
                .build(),
            events: meter
                .u64_counter("javelin.agent.events")
                .with_description("JFR events by profile type and outcome (parsed, dropped)")
                .build(),
            jfr_bytes: meter
                .u64_counter("javelin.agent.jfr.bytes")
                .with_description("JFR bytes parsed")
                .build(),
            dump_bytes: meter
                .u64_counter("javelin.agent.dump.bytes")
                .with_description(
                    "Bytes read from recorder dumps (new chunks, plus older ones where JFR.dump has no begin=)",
                )
                .build(),
            truncated: meter
                .u64_counter("javelin.agent.truncated.windows")
                .with_description("Window parts in which a bound changed the data")
                .build(),
            parse_errors: meter
                .u64_counter("javelin.agent.parse.errors")
                .with_description("Windows whose JFR data was partly unusable")
                .build(),
            failed_collects: meter
                .u64_counter("javelin.agent.collect.failures")
                .with_description(
                    "Windows whose data could not be collected, by reason (too_large, attach, read, library, shutdown_timeout, panic)",
                )
                .build(),
            states,
        }
    }

    /// Records a window whose data was lost before parsing.
    pub fn failed_collect(&self, reason: &'static str) {
        self.failed_collects
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// Records the size of a dump read for a window.
    pub fn dump_read(&self, bytes: usize) {
        self.dump_bytes.add(bytes as u64, &[]);
    }

    /// Records what one window produced.
    pub fn window(&self, windows: &[ProfileWindow], jfr_bytes: u64, parse_error: bool) {
        self.jfr_bytes.add(jfr_bytes, &[]);
        if parse_error {
            self.parse_errors.add(1, &[]);
        }
        for w in windows {
            let kind = KeyValue::new("type", w.kind().name());
            self.windows.add(1, std::slice::from_ref(&kind));
            let acc = w.accounting.unwrap_or_default();
            if acc.truncated {
                self.truncated.add(1, std::slice::from_ref(&kind));
            }
            // Accounting repeats in every part; count events once per window.
            if w.part_index == 0 {
                self.events.add(
                    acc.parsed_events,
                    &[kind.clone(), KeyValue::new("outcome", "parsed")],
                );
                self.events.add(
                    acc.dropped_events,
                    &[kind, KeyValue::new("outcome", "dropped")],
                );
            }
        }
    }

    /// Records a target's state (or its removal with `None`).
    pub fn state(&self, target_id: u64, state: Option<TargetState>) {
        if let Ok(mut states) = self.states.lock() {
            match state {
                Some(s) => states.insert(target_id, s),
                None => states.remove(&target_id),
            };
        }
    }
}
