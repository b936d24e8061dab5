//! Bounds on real data (the JDK 17 demo fixture, allocation-heavy): a low stack
//! cap folds the rest into `[truncated]` with exact totals and the counters set;
//! a low message cap splits windows into parts that still add up.

use std::collections::HashMap;

use javelin_agent::aggregate::{Bounds, TRUNCATED_FRAME, WindowAggregator};
use javelin_agent::jfr_parse::{EventRules, parse_chunks, scan_chunks};
use javelin_schema::wire::{ProfileType, ProfileWindow, TargetIdentity};
use prost::Message;

const JDK17: &[u8] = include_bytes!("data/demo-jdk17.jfr");

fn windows(bounds: Bounds) -> Vec<ProfileWindow> {
    let (chunks, error) = scan_chunks(JDK17);
    assert!(error.is_none());
    let mut agg = WindowAggregator::new(bounds);
    let rules = EventRules {
        cpu_period_nanos: 10_000_000,
        max_events: bounds.max_events_per_window,
        cpu_event: javelin_agent::jfr_parse::CpuEvent::ExecutionSample,
        max_parse_time: None,
    };
    let mut budget = rules.max_events;
    let outcome = parse_chunks(JDK17, &chunks, rules, &mut budget, &mut |k, f, v, c| {
        agg.add(k, f, v, c)
    });
    let target = TargetIdentity {
        service: "javelin-demo".into(),
        target_id: 3,
        ..Default::default()
    };
    agg.finish(
        &target,
        1_000,
        11_000,
        &outcome.counts,
        JDK17.len() as u64,
        1,
    )
}

fn totals(windows: &[ProfileWindow]) -> HashMap<ProfileType, (i64, i64)> {
    let mut t: HashMap<ProfileType, (i64, i64)> = HashMap::new();
    for w in windows {
        for s in &w.stacks {
            let e = t.entry(w.kind()).or_default();
            e.0 += s.value;
            e.1 += s.count;
        }
    }
    t
}

#[test]
fn a_low_stack_cap_truncates_with_exact_totals_and_counters() {
    let free = windows(Bounds::default());
    let capped = windows(Bounds {
        max_stacks_per_window: 3,
        ..Bounds::default()
    });
    assert_eq!(
        totals(&capped),
        totals(&free),
        "folding keeps every type's totals exact"
    );
    let alloc = capped
        .iter()
        .find(|w| w.kind() == ProfileType::Alloc)
        .expect("alloc window");
    assert_eq!(alloc.stacks.len(), 3);
    let acc = alloc.accounting.expect("accounting");
    let free_alloc = free
        .iter()
        .find(|w| w.kind() == ProfileType::Alloc)
        .expect("alloc window");
    assert!(
        free_alloc.stacks.len() > 3,
        "the fixture has more alloc stacks than the cap"
    );
    assert!(acc.truncated);
    assert_eq!(
        acc.dropped_stacks as usize,
        free_alloc.stacks.len() - 2,
        "all but the 2 kept stacks folded"
    );
    let truncated = alloc
        .stacks
        .iter()
        .find(|s| alloc.frames(s).collect::<Vec<_>>() == [TRUNCATED_FRAME])
        .expect("a [truncated] stack");
    assert!(truncated.value > 0 && truncated.count > 0);
    assert_eq!(acc.limits.map(|l| l.max_stacks_per_window), Some(3));
}

#[test]
fn a_low_message_cap_splits_windows_into_parts_that_add_up() {
    let free = windows(Bounds::default());
    let bounds = Bounds {
        max_message_bytes: 1200,
        ..Bounds::default()
    };
    let split = windows(bounds);
    assert_eq!(totals(&split), totals(&free));
    assert!(
        split.len() > free.len(),
        "{} parts vs {} windows",
        split.len(),
        free.len()
    );
    for w in &split {
        assert!(
            w.encoded_len() as u64 <= bounds.max_message_bytes,
            "part of {} bytes",
            w.encoded_len()
        );
        assert!(w.validate().is_ok());
    }
}
