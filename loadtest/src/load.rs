//! Simulated agents: profile windows for N services × M pods × K stacks with a
//! skewed (Zipf-like) weight per stack, built by the agent's own aggregator and
//! published through its own publisher (the real producer path). Every window
//! is remembered in [`Expected`], the reconciler's ground truth.

use std::collections::BTreeMap;

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_schema::wire::{self, ProfileType, ProfileWindow, TargetIdentity};

/// What the simulated fleet looks like.
#[derive(Debug, Clone)]
pub struct Shape {
    pub services: u32,
    pub pods: u32,
    /// Distinct stacks per pod, window and type.
    pub stacks: u32,
    pub window_secs: i64,
    /// Allocation-heavy: an `alloc` profile with large byte counts per window.
    pub alloc_heavy: bool,
    /// Lock-heavy: `lock` and `park` profiles per window.
    pub lock_heavy: bool,
    /// The agent's stack bound per window (past it stacks fold into `[truncated]`).
    pub max_stacks_per_window: u64,
}

impl Shape {
    pub fn types(&self) -> Vec<ProfileType> {
        let mut types = vec![ProfileType::Cpu];
        if self.alloc_heavy {
            types.push(ProfileType::Alloc);
        }
        if self.lock_heavy {
            types.push(ProfileType::Lock);
            types.push(ProfileType::Park);
        }
        types
    }
}

/// Key of one reconciled cell: (service, type, window start in seconds).
pub type Cell = (String, &'static str, u32);

/// Produced totals per cell: (summed value, sample rows) and the agent-side
/// accounting of what the bounds dropped.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub cells: BTreeMap<Cell, (i64, u64)>,
    pub messages: u64,
    pub rows: u64,
    pub truncated_parts: u64,
    pub dropped_stacks: u64,
}

/// The frames of stack `k` of a service: depth 6, shared upper layers.
fn frames(service: u32, kind: ProfileType, k: u32) -> Vec<Frame> {
    let leaf = match kind {
        ProfileType::Alloc => format!("svc{service}.alloc.Buffer{k}.grow"),
        ProfileType::Lock => format!("svc{service}.lock.Cache{k}.get"),
        ProfileType::Park => format!("svc{service}.park.Queue{k}.take"),
        _ => format!("svc{service}.work.Step{k}.compute"),
    };
    [
        "java.lang.Thread.run".to_string(),
        format!("svc{service}.http.Server.handle"),
        format!("svc{service}.api.Controller{}.serve", k % 4),
        format!("svc{service}.service.Service{}.execute", k % 16),
        format!("svc{service}.repo.Repository{}.query", k % 64),
        leaf,
    ]
    .iter()
    .map(|n| Frame::synthetic(n))
    .collect()
}

/// Weight of stack `k`: Zipf-like, a few stacks carry most of the mass.
fn weight(kind: ProfileType, stacks: u32, k: u32, pod: u32) -> i64 {
    let base = match kind {
        ProfileType::Alloc => 1 << 20,
        ProfileType::Cpu => 10_000_000,
        _ => 1_000_000,
    };
    base * i64::from(stacks) / i64::from(k + 1) + i64::from(pod)
}

/// The windows of window index `tick` (start `start_ms`) for every service,
/// pod and type, with their Kafka keys (the service); recorded in `expected`.
pub fn windows_for_tick(
    shape: &Shape,
    start_ms: i64,
    expected: &mut Expected,
) -> Vec<(String, ProfileWindow)> {
    let end_ms = start_ms + shape.window_secs * 1000;
    let mut out = Vec::new();
    for s in 0..shape.services {
        let service = format!("loadtest-{s}");
        for p in 0..shape.pods {
            let target = TargetIdentity {
                cluster: "loadtest".into(),
                namespace: "loadtest".into(),
                service: service.clone(),
                pod: format!("{service}-{p}"),
                container: "app".into(),
                node: "loadtest".into(),
                pid: p + 1,
                target_id: wire::target_id("loadtest", &service, p + 1, 0),
                ..Default::default()
            };
            let mut agg = WindowAggregator::new(Bounds {
                max_stacks_per_window: shape.max_stacks_per_window,
                ..Bounds::default()
            });
            for kind in shape.types() {
                for k in 0..shape.stacks {
                    let value = weight(kind, shape.stacks, k, p);
                    agg.add(kind, &frames(s, kind, k).into(), value, 1);
                    let cell = expected
                        .cells
                        .entry((service.clone(), kind.name(), (start_ms / 1000) as u32))
                        .or_default();
                    cell.0 += value;
                }
            }
            for window in agg.finish(&target, start_ms, end_ms, &Default::default(), 0, 0) {
                let rows = window.stacks.len() as u64;
                let cell = expected
                    .cells
                    .entry((
                        service.clone(),
                        window.kind().name(),
                        (start_ms / 1000) as u32,
                    ))
                    .or_default();
                cell.1 += rows;
                expected.rows += rows;
                expected.messages += 1;
                if let Some(acc) = &window.accounting {
                    expected.truncated_parts += u64::from(acc.truncated);
                    expected.dropped_stacks += acc.dropped_stacks;
                }
                out.push((service.clone(), window));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_totals_match_what_the_windows_carry() {
        let shape = Shape {
            services: 2,
            pods: 3,
            stacks: 10,
            window_secs: 10,
            alloc_heavy: true,
            lock_heavy: true,
            max_stacks_per_window: 5,
        };
        let mut expected = Expected::default();
        let windows = windows_for_tick(&shape, 1_764_000_000_000, &mut expected);
        let carried: i64 = windows
            .iter()
            .flat_map(|(_, w)| w.stacks.iter().map(|s| s.value))
            .sum();
        let recorded: i64 = expected.cells.values().map(|c| c.0).sum();
        assert_eq!(carried, recorded, "truncation keeps totals exact");
        assert_eq!(expected.cells.len(), 2 * 4, "services × types");
        assert!(expected.truncated_parts > 0 && expected.dropped_stacks > 0);
        assert_eq!(expected.messages, windows.len() as u64);
    }
}
