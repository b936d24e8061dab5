//! Aggregates samples by (profile type, stack) for one target and one window,
//! enforcing the stack and frame bounds, and cuts the result into wire messages
//! no larger than the message bound.
//!
//! Bounds and where they live:
//! - stacks per window and type: `Bounds::max_stacks_per_window`; new stacks past
//!   it fold into one `[truncated]` stack, so totals stay exact;
//! - frames per stack: `Bounds::max_frames_per_stack`; the leaf end is kept
//!   (self time lives there) under a `[frames cut]` root;
//! - message bytes: `Bounds::max_message_bytes`; a window splits into parts with
//!   disjoint stacks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use javelin_schema::wire::{
    self, Accounting, Limits, ProfileType, ProfileWindow, Stack, TargetIdentity,
};
use javelin_schema::{FrameKey, stack_id};

use crate::jfr_parse::{Frame, Frames, TypeCounts};

/// Root frame of the stack that absorbs stacks past the stack bound.
pub const TRUNCATED_FRAME: &str = "[truncated]";
/// Root frame of a stack whose root side was cut at the frame bound.
pub const FRAMES_CUT_FRAME: &str = "[frames cut]";

/// Per-window bounds; every one is enforced and every effect is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_events_per_window: u64,
    pub max_stacks_per_window: u64,
    pub max_frames_per_stack: u32,
    pub max_message_bytes: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_events_per_window: 1_000_000,
            max_stacks_per_window: 20_000,
            max_frames_per_stack: 512,
            max_message_bytes: 900 * 1024,
        }
    }
}

#[derive(Debug, Default)]
struct TypeAggregate {
    stacks: HashMap<Frames, (i64, i64)>,
    folded: HashSet<Frames>,
    frames_cut: u64,
}

/// One window's aggregates for one target.
#[derive(Debug)]
pub struct WindowAggregator {
    bounds: Bounds,
    types: HashMap<ProfileType, TypeAggregate>,
    truncated_stack: Frames,
}

impl WindowAggregator {
    pub fn new(bounds: Bounds) -> WindowAggregator {
        WindowAggregator {
            bounds,
            types: HashMap::new(),
            truncated_stack: Arc::from(vec![Frame::synthetic(TRUNCATED_FRAME)]),
        }
    }

    /// Adds one weighted sample.
    pub fn add(&mut self, kind: ProfileType, frames: &Frames, value: i64, count: i64) {
        let agg = self.types.entry(kind).or_default();
        let max_frames = self.bounds.max_frames_per_stack.max(2) as usize;
        let cut;
        let frames = if frames.len() > max_frames {
            agg.frames_cut += 1;
            let keep = &frames[frames.len() - (max_frames - 1)..];
            let mut v: Vec<Frame> = Vec::with_capacity(max_frames);
            v.push(Frame::synthetic(FRAMES_CUT_FRAME));
            v.extend(keep.iter().cloned());
            cut = Frames::from(v);
            &cut
        } else {
            frames
        };
        let key = if agg.stacks.contains_key(frames)
            || (agg.stacks.len() as u64) < self.bounds.max_stacks_per_window.saturating_sub(1)
        {
            frames.clone()
        } else {
            // One slot is reserved for [truncated], so the bound holds including it.
            agg.folded.insert(frames.clone());
            self.truncated_stack.clone()
        };
        let slot = agg.stacks.entry(key).or_insert((0, 0));
        slot.0 = slot.0.saturating_add(value);
        slot.1 = slot.1.saturating_add(count);
    }

    /// Builds the wire messages: per profile type with data or events, one or more
    /// parts of at most `max_message_bytes` (estimated) each.
    pub fn finish(
        self,
        target: &TargetIdentity,
        window_start_ms: i64,
        window_end_ms: i64,
        counts: &HashMap<ProfileType, TypeCounts>,
        jfr_bytes: u64,
        parse_micros: u64,
    ) -> Vec<ProfileWindow> {
        let mut out = Vec::new();
        let limits = Limits {
            max_events_per_window: self.bounds.max_events_per_window,
            max_stacks_per_window: self.bounds.max_stacks_per_window,
            max_frames_per_stack: self.bounds.max_frames_per_stack,
            max_message_bytes: self.bounds.max_message_bytes,
        };
        let mut types = self.types;
        for kind in ProfileType::ALL {
            let agg = types.remove(&kind).unwrap_or_default();
            let count = counts.get(&kind).copied().unwrap_or_default();
            if agg.stacks.is_empty() && count.raw_events == 0 {
                continue;
            }
            let accounting = Accounting {
                raw_events: count.raw_events,
                parsed_events: count.parsed_events,
                stacks: agg.stacks.len() as u64,
                dropped_events: count.dropped_events,
                dropped_stacks: agg.folded.len() as u64,
                truncated: !agg.folded.is_empty() || agg.frames_cut > 0 || count.dropped_events > 0,
                jfr_bytes,
                parse_micros,
                limits: Some(limits),
                truncated_frames_stacks: agg.frames_cut,
            };
            let mut stacks: Vec<(Frames, (i64, i64))> = agg.stacks.into_iter().collect();
            // Heaviest first: if a consumer ever has to drop a part, the big stacks are in part 0.
            stacks.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            let parts = split_parts(stacks, self.bounds.max_message_bytes);
            let part_count = parts.len() as u32;
            for (i, (strings, stacks)) in parts.into_iter().enumerate() {
                out.push(ProfileWindow {
                    target: Some(target.clone()),
                    profile_type: kind as i32,
                    window_start_ms,
                    window_end_ms,
                    part_index: i as u32,
                    part_count,
                    window_id: wire::window_id(target.target_id, kind, window_start_ms, i as u32),
                    strings,
                    stacks,
                    accounting: Some(accounting),
                    agent_version: crate::AGENT_VERSION.to_string(),
                });
            }
        }
        out
    }
}

/// Fixed per-message overhead assumed by the size estimate (identity, accounting, tags).
const MESSAGE_OVERHEAD: u64 = 512;

/// Packs stacks into parts, each with its own string table, so that the encoded
/// size stays under `max_bytes`. A part always takes at least one stack.
fn split_parts(
    stacks: Vec<(Frames, (i64, i64))>,
    max_bytes: u64,
) -> Vec<(Vec<String>, Vec<Stack>)> {
    let mut parts = Vec::new();
    let mut strings = vec![String::new()];
    let mut index: HashMap<Arc<str>, u32> = HashMap::new();
    let mut part_stacks = Vec::new();
    let mut size = MESSAGE_OVERHEAD;
    for (frames, (value, count)) in stacks {
        let new_strings: u64 = frames
            .iter()
            .filter(|f| !index.contains_key(&f.name))
            .map(|f| f.name.len() as u64 + 3)
            .sum();
        // Per frame: a string index, a line and a type, each a varint.
        let stack_bytes = frames.len() as u64 * 9 + 32;
        if !part_stacks.is_empty() && size + new_strings + stack_bytes > max_bytes {
            parts.push((
                std::mem::replace(&mut strings, vec![String::new()]),
                std::mem::take(&mut part_stacks),
            ));
            index.clear();
            size = MESSAGE_OVERHEAD;
        }
        let ids: Vec<u32> = frames
            .iter()
            .map(|f| {
                *index.entry(f.name.clone()).or_insert_with(|| {
                    strings.push(f.name.to_string());
                    size += f.name.len() as u64 + 3;
                    (strings.len() - 1) as u32
                })
            })
            .collect();
        size += stack_bytes;
        part_stacks.push(Stack {
            frames: ids,
            value,
            count,
            stack_id: stack_id(frames.iter().map(|f| FrameKey {
                name: &f.name,
                line: f.line,
                kind: f.kind,
            })),
            lines: frames.iter().map(|f| f.line).collect(),
            frame_types: frames.iter().map(|f| f.kind).collect(),
        });
    }
    if !part_stacks.is_empty() {
        parts.push((strings, part_stacks));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn frames(names: &[&str]) -> Frames {
        names
            .iter()
            .map(|s| Frame::synthetic(s))
            .collect::<Vec<_>>()
            .into()
    }

    fn target() -> TargetIdentity {
        TargetIdentity {
            service: "svc".into(),
            target_id: 9,
            ..Default::default()
        }
    }

    fn total(windows: &[ProfileWindow]) -> (i64, i64) {
        windows
            .iter()
            .flat_map(|w| &w.stacks)
            .fold((0, 0), |a, s| (a.0 + s.value, a.1 + s.count))
    }

    #[test]
    fn aggregates_by_stack() {
        let mut agg = WindowAggregator::new(Bounds::default());
        agg.add(ProfileType::Cpu, &frames(&["main", "work"]), 10, 1);
        agg.add(ProfileType::Cpu, &frames(&["main", "work"]), 10, 1);
        agg.add(ProfileType::Cpu, &frames(&["main", "idle"]), 10, 1);
        let out = agg.finish(&target(), 0, 10_000, &HashMap::new(), 0, 0);
        assert_eq!(out.len(), 1);
        let w = &out[0];
        assert_eq!(w.stacks.len(), 2);
        assert_eq!(w.stacks[0].value, 20);
        assert_eq!(w.frames(&w.stacks[0]).collect::<Vec<_>>(), ["main", "work"]);
        assert_eq!(
            w.stacks[0].stack_id,
            javelin_schema::stack_id_of_names(&["main", "work"])
        );
        assert_eq!(w.stacks[0].lines, [0, 0]);
        assert!(w.validate().is_ok());
    }

    #[test]
    fn stacks_past_the_bound_fold_into_truncated_with_exact_totals() {
        let bounds = Bounds {
            max_stacks_per_window: 3,
            ..Bounds::default()
        };
        let mut agg = WindowAggregator::new(bounds);
        for i in 0..10 {
            agg.add(
                ProfileType::Alloc,
                &frames(&["main", &format!("f{i}")]),
                100,
                2,
            );
        }
        let out = agg.finish(&target(), 0, 1, &HashMap::new(), 0, 0);
        let w = &out[0];
        assert_eq!(w.stacks.len(), 3, "bound includes the [truncated] stack");
        assert_eq!(total(&out), (1000, 20));
        let acc = w.accounting.as_ref().expect("accounting");
        assert_eq!(acc.dropped_stacks, 8);
        assert!(acc.truncated);
        let truncated = w
            .stacks
            .iter()
            .find(|s| w.frames(s).next() == Some(TRUNCATED_FRAME))
            .expect("folded");
        assert_eq!(truncated.value, 800);
    }

    #[test]
    fn deep_stacks_keep_their_leaf() {
        let bounds = Bounds {
            max_frames_per_stack: 4,
            ..Bounds::default()
        };
        let mut agg = WindowAggregator::new(bounds);
        agg.add(
            ProfileType::Cpu,
            &frames(&["a", "b", "c", "d", "e", "leaf"]),
            1,
            1,
        );
        let out = agg.finish(&target(), 0, 1, &HashMap::new(), 0, 0);
        let w = &out[0];
        assert_eq!(
            w.frames(&w.stacks[0]).collect::<Vec<_>>(),
            [FRAMES_CUT_FRAME, "d", "e", "leaf"]
        );
        assert_eq!(
            w.accounting.as_ref().map(|a| a.truncated_frames_stacks),
            Some(1)
        );
    }

    #[test]
    fn large_windows_split_into_parts_under_the_byte_bound() {
        let bounds = Bounds {
            max_message_bytes: 4096,
            ..Bounds::default()
        };
        let mut agg = WindowAggregator::new(bounds);
        for i in 0..500 {
            agg.add(
                ProfileType::Cpu,
                &frames(&[
                    "main",
                    &format!("com.example.SomeRatherLongClassName.method{i}"),
                ]),
                7,
                1,
            );
        }
        let out = agg.finish(&target(), 0, 1, &HashMap::new(), 0, 0);
        assert!(out.len() > 5, "{} parts", out.len());
        let mut ids = HashSet::new();
        for w in &out {
            assert!(w.encoded_len() <= 4096, "part of {} bytes", w.encoded_len());
            assert_eq!(w.part_count as usize, out.len());
            assert!(w.validate().is_ok());
            assert!(ids.insert(w.window_id), "window ids differ per part");
        }
        let stacks: usize = out.iter().map(|w| w.stacks.len()).sum();
        assert_eq!(stacks, 500, "parts hold disjoint stacks");
        assert_eq!(total(&out), (3500, 500));
    }
}
