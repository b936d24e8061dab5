//! Aggregates samples by (profile type, stack) for one target and one window,
//! enforcing the stack and frame bounds, and cuts the result into wire messages
//! no larger than the message bound.
//!
//! Bounds and where they live:
//! - stacks per window and type: `Bounds::max_stacks_per_window`, and bytes held
//!   by all of a window's stacks: [`MAX_AGGREGATE_BYTES`]; new stacks past
//!   either fold into one `[truncated]` stack, so totals stay exact;
//! - frames per stack: `Bounds::max_frames_per_stack`; the leaf end is kept
//!   (self time lives there) under a `[frames cut]` root;
//! - message bytes: `Bounds::max_message_bytes`; a window splits into parts with
//!   disjoint stacks, each checked at its real encoded size; a single stack
//!   larger than the bound is cut or folded into `[truncated]` and counted
//!   (`Accounting::oversized_messages`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use javelin_schema::wire::{
    self, Accounting, Limits, ProfileType, ProfileWindow, Stack, TargetIdentity,
};
use javelin_schema::{FrameKey, stack_id};
use prost::Message;

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

/// Most bytes one window's stacks may hold (all types): frames, names (each
/// counted per stack, so shared names are over-counted) and map slots. Past
/// it, new stacks fold into `[truncated]` like past the stack bound. With
/// 20,000 stacks × 4 types of up to 512 frames the stack bound alone would
/// allow ~1 GiB; this keeps an aggregator inside the agent's memory sum.
pub const MAX_AGGREGATE_BYTES: usize = 64 << 20;

/// Cost of one stack key besides its frames: map slot, Arc header, counters.
const STACK_KEY_BYTES: usize = 96;

#[derive(Debug, Default)]
struct TypeAggregate {
    stacks: HashMap<Frames, (i64, i64)>,
    /// Hashes of the distinct stacks folded into `[truncated]` (8 bytes each,
    /// at most one per event: holding the stacks would keep their frames alive).
    folded: HashSet<u64>,
    frames_cut: u64,
}

/// One window's aggregates for one target.
#[derive(Debug)]
pub struct WindowAggregator {
    bounds: Bounds,
    types: HashMap<ProfileType, TypeAggregate>,
    truncated_stack: Frames,
    /// Bytes held by the stack keys of all types (see [`MAX_AGGREGATE_BYTES`]).
    held_bytes: usize,
}

/// What a stack key holds in memory, counted conservatively.
fn stack_bytes(frames: &Frames) -> usize {
    STACK_KEY_BYTES
        + frames
            .iter()
            .map(|f| std::mem::size_of::<Frame>() + f.name.len())
            .sum::<usize>()
}

fn stack_hash(frames: &Frames) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(frames)
}

impl WindowAggregator {
    pub fn new(bounds: Bounds) -> WindowAggregator {
        WindowAggregator {
            bounds,
            types: HashMap::new(),
            truncated_stack: Arc::from(vec![Frame::synthetic(TRUNCATED_FRAME)]),
            held_bytes: 0,
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
        let key = if agg.stacks.contains_key(frames) {
            frames.clone()
        } else {
            let cost = stack_bytes(frames);
            // One slot is reserved for [truncated], so the bound holds including it.
            if (agg.stacks.len() as u64) < self.bounds.max_stacks_per_window.saturating_sub(1)
                && self.held_bytes + cost <= MAX_AGGREGATE_BYTES
            {
                self.held_bytes += cost;
                frames.clone()
            } else {
                agg.folded.insert(stack_hash(frames));
                self.truncated_stack.clone()
            }
        };
        let slot = agg.stacks.entry(key).or_insert((0, 0));
        slot.0 = slot.0.saturating_add(value);
        slot.1 = slot.1.saturating_add(count);
    }

    /// Builds the wire messages: per profile type with data or events, one or more
    /// parts, each of at most `max_message_bytes` as encoded (see [`fit_parts`]).
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
            let mut accounting = Accounting {
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
                oversized_messages: 0,
            };
            let mut stacks: Vec<(Frames, (i64, i64))> = agg.stacks.into_iter().collect();
            // Heaviest first: if a consumer ever has to drop a part, the big stacks are in part 0.
            stacks.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            let header = ProfileWindow {
                target: Some(target.clone()),
                profile_type: kind as i32,
                window_start_ms,
                window_end_ms,
                part_index: 0,
                part_count: 1,
                window_id: 0,
                strings: Vec::new(),
                stacks: Vec::new(),
                accounting: Some(accounting),
                agent_version: crate::AGENT_VERSION.to_string(),
            };
            let mut fitted = Fitted::default();
            let worst = worst_case_header(&header);
            for group in split_parts(stacks, self.bounds.max_message_bytes) {
                fit_parts(group, &worst, self.bounds.max_message_bytes, &mut fitted);
            }
            accounting.oversized_messages = fitted.oversized;
            accounting.dropped_stacks += fitted.folded;
            accounting.truncated |= fitted.oversized > 0;
            if fitted.parts.is_empty() {
                // Events but no stacks (all dropped by the event budget): one
                // empty part still carries the accounting, so the drops are
                // published and counted in the target's status.
                fitted.parts.push((Vec::new(), Vec::new()));
            }
            let part_count = fitted.parts.len() as u32;
            for (i, (strings, stacks)) in fitted.parts.into_iter().enumerate() {
                out.push(ProfileWindow {
                    part_index: i as u32,
                    part_count,
                    window_id: wire::window_id(target.target_id, kind, window_start_ms, i as u32),
                    strings,
                    stacks,
                    accounting: Some(accounting),
                    ..header.clone()
                });
            }
        }
        out
    }
}

/// Fixed per-message overhead assumed by the size estimate (identity, accounting, tags).
const MESSAGE_OVERHEAD: u64 = 512;

/// Appended to a frame name cut to fit a message.
const CUT_SUFFIX: &str = "…[cut]";

/// One part's stacks before encoding.
type Group = Vec<(Frames, (i64, i64))>;

/// A part as encoded: its string table and stacks.
type Part = (Vec<String>, Vec<Stack>);

/// Parts that fit, and what fitting them cost.
#[derive(Debug, Default)]
struct Fitted {
    parts: Vec<Part>,
    /// Stacks that alone were over the bound (names cut or folded).
    oversized: u64,
    /// Of those, stacks folded into `[truncated]`.
    folded: u64,
}

/// Groups stacks into parts by an estimate of their encoded size (cheap, no
/// encoding); [`fit_parts`] then checks each part's real size. A part always
/// takes at least one stack.
fn split_parts(stacks: Group, max_bytes: u64) -> Vec<Group> {
    let mut parts = Vec::new();
    let mut names: HashSet<Arc<str>> = HashSet::new();
    let mut part: Group = Vec::new();
    let mut size = MESSAGE_OVERHEAD;
    for (frames, weights) in stacks {
        let new_strings: u64 = frames
            .iter()
            .filter(|f| !names.contains(&f.name))
            .map(|f| f.name.len() as u64 + 3)
            .sum();
        // Per frame: a string index, a line and a type, each a varint.
        let stack_bytes = frames.len() as u64 * 9 + 32;
        if !part.is_empty() && size + new_strings + stack_bytes > max_bytes {
            parts.push(std::mem::take(&mut part));
            names.clear();
            size = MESSAGE_OVERHEAD;
        }
        for f in frames.iter() {
            if names.insert(f.name.clone()) {
                size += f.name.len() as u64 + 3;
            }
        }
        size += stack_bytes;
        part.push((frames, weights));
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// The window's header with every field that differs per part, or may grow
/// after fitting (part numbers, window id, the oversize accounting), at its
/// largest encoding: a part that fits with it fits with the real values.
fn worst_case_header(header: &ProfileWindow) -> ProfileWindow {
    let mut h = header.clone();
    h.part_index = u32::MAX;
    h.part_count = u32::MAX;
    h.window_id = u64::MAX;
    if let Some(acc) = h.accounting.as_mut() {
        acc.dropped_stacks = u64::MAX;
        acc.oversized_messages = u64::MAX;
        acc.truncated = true;
    }
    h
}

/// Encoded size of `header` carrying `part`, by `prost::Message::encoded_len`.
fn encoded_len(header: &mut ProfileWindow, part: Part) -> (usize, Part) {
    header.strings = part.0;
    header.stacks = part.1;
    let len = header.encoded_len();
    let part = (
        std::mem::take(&mut header.strings),
        std::mem::take(&mut header.stacks),
    );
    (len, part)
}

/// Encodes `group` into parts whose real encoded size is at most `max_bytes`:
/// a part over it is halved; a single stack over it gets its frame names cut,
/// and if it is still over, is folded into a one-frame `[truncated]` stack (same
/// value and count, so totals stay exact); both are counted.
///
/// Terminates: each recursive call takes a strictly shorter group (a group of
/// n ≥ 2 stacks splits into two non-empty halves), and a single stack is cut or
/// folded once, without recursion; the depth is at most ⌈log2 n⌉.
fn fit_parts(group: Group, header: &ProfileWindow, max_bytes: u64, out: &mut Fitted) {
    let mut probe = header.clone();
    let (len, part) = encoded_len(&mut probe, encode(&group));
    if len as u64 <= max_bytes {
        out.parts.push(part);
        return;
    }
    if group.len() > 1 {
        let mut left = group;
        let right = left.split_off(left.len() / 2);
        fit_parts(left, header, max_bytes, out);
        fit_parts(right, header, max_bytes, out);
        return;
    }
    let Some((frames, weights)) = group.into_iter().next() else {
        return;
    };
    out.oversized += 1;
    let room = max_bytes.saturating_sub(header.encoded_len() as u64);
    if let Some(cut) = cut_names(&frames, room) {
        let (len, part) = encoded_len(&mut probe, encode(&[(cut, weights)]));
        if len as u64 <= max_bytes {
            out.parts.push(part);
            return;
        }
    }
    // One frame of a dozen bytes: fits whenever the header itself does (the
    // limit is at least 4 KiB; identities are far smaller).
    out.folded += 1;
    let truncated: Frames = Arc::from(vec![Frame::synthetic(TRUNCATED_FRAME)]);
    out.parts.push(encode(&[(truncated, weights)]));
}

/// Bytes a stack costs besides its names: per frame the string's tag and
/// length, a string index, a line (a negative one takes 10 bytes) and a type;
/// per stack the tags, lengths, value, count and id.
const FRAME_OVERHEAD: u64 = 4 + 5 + 10 + 2;
const STACK_OVERHEAD: u64 = 80;

/// The frames with every name cut to an equal share of `room` bytes, or
/// `None` when that share is too small to say anything.
fn cut_names(frames: &Frames, room: u64) -> Option<Frames> {
    let per_frame = room.saturating_sub(STACK_OVERHEAD) / frames.len().max(1) as u64;
    let keep = per_frame.saturating_sub(FRAME_OVERHEAD + CUT_SUFFIX.len() as u64) as usize;
    if keep < 16 {
        return None;
    }
    let cut: Vec<Frame> = frames
        .iter()
        .map(|f| {
            if f.name.len() <= keep + CUT_SUFFIX.len() {
                return f.clone();
            }
            let mut end = keep;
            while !f.name.is_char_boundary(end) {
                end -= 1;
            }
            Frame {
                name: Arc::from(format!("{}{CUT_SUFFIX}", &f.name[..end])),
                ..f.clone()
            }
        })
        .collect();
    Some(Frames::from(cut))
}

/// Encodes stacks with their own string table (index 0 is the empty string).
fn encode(group: &[(Frames, (i64, i64))]) -> Part {
    let mut strings = vec![String::new()];
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut stacks = Vec::with_capacity(group.len());
    for (frames, (value, count)) in group {
        let ids: Vec<u32> = frames
            .iter()
            .map(|f| {
                *index.entry(&f.name).or_insert_with(|| {
                    strings.push(f.name.to_string());
                    (strings.len() - 1) as u32
                })
            })
            .collect();
        stacks.push(Stack {
            frames: ids,
            value: *value,
            count: *count,
            stack_id: stack_id(frames.iter().map(|f| FrameKey {
                name: &f.name,
                line: f.line,
                kind: f.kind,
            })),
            lines: frames.iter().map(|f| f.line).collect(),
            frame_types: frames.iter().map(|f| f.kind).collect(),
        });
    }
    (strings, stacks)
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
    fn a_type_whose_events_were_all_dropped_still_publishes_its_accounting() {
        let agg = WindowAggregator::new(Bounds::default());
        let counts = HashMap::from([(
            ProfileType::Lock,
            TypeCounts {
                raw_events: 7,
                parsed_events: 0,
                dropped_events: 7,
            },
        )]);
        let out = agg.finish(&target(), 0, 1_000, &counts, 0, 0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].profile_type, ProfileType::Lock as i32);
        assert!(out[0].stacks.is_empty());
        assert_eq!((out[0].part_index, out[0].part_count), (0, 1));
        let acc = out[0].accounting.expect("accounting");
        assert_eq!((acc.raw_events, acc.dropped_events), (7, 7));
        assert!(acc.truncated);
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
    /// Stacks whose names alone are over the bound: every part is checked at its
    /// real encoded size, the oversized stack is cut (names shortened) or folded
    /// into `[truncated]`, counted, and totals stay exact.
    #[test]
    fn parts_fit_their_real_encoded_size_and_oversized_stacks_are_cut_or_folded() {
        let max = 4096u64;
        let bounds = Bounds {
            max_message_bytes: max,
            ..Bounds::default()
        };
        let mut agg = WindowAggregator::new(bounds);
        // Many ordinary stacks, some with names just under the estimate's blind spot.
        for i in 0..300 {
            agg.add(
                ProfileType::Cpu,
                &frames(&["main", &format!("a.B.m{i}_{}", "x".repeat(i % 90))]),
                3,
                1,
            );
        }
        // One stack with a few enormous names: cut to fit.
        let huge = "L".repeat(20_000);
        agg.add(
            ProfileType::Cpu,
            &frames(&["main", &huge, "leaf"]),
            1000,
            10,
        );
        // One stack of 400 long frames: no share of 4 KiB is worth keeping: folded.
        let deep: Vec<String> = (0..400)
            .map(|i| format!("deep.Frame{i}.{}", "y".repeat(60)))
            .collect();
        let deep: Vec<&str> = deep.iter().map(String::as_str).collect();
        agg.add(ProfileType::Cpu, &frames(&deep), 7, 7);
        let out = agg.finish(&target(), 0, 1, &HashMap::new(), 0, 0);
        for w in &out {
            assert!(
                w.encoded_len() as u64 <= max,
                "part {} of {} is {} bytes",
                w.part_index,
                out.len(),
                w.encoded_len()
            );
            assert!(w.validate().is_ok());
        }
        assert_eq!(
            total(&out),
            (300 * 3 + 1000 + 7, 300 + 10 + 7),
            "totals exact"
        );
        let acc = out[0].accounting.expect("accounting");
        assert_eq!(acc.oversized_messages, 2, "the huge and the deep stack");
        assert_eq!(acc.dropped_stacks, 1, "the deep one is folded");
        assert!(acc.truncated);
        assert!(
            out.iter().all(|w| w.accounting == Some(acc)),
            "same accounting in every part"
        );
        let cut = out
            .iter()
            .flat_map(|w| {
                w.stacks
                    .iter()
                    .map(move |s| w.frames(s).collect::<Vec<_>>())
            })
            .find(|f| f.len() == 3)
            .expect("the cut stack keeps its frames");
        assert_eq!(cut[0], "main");
        assert!(
            cut[1].starts_with("LLLL") && cut[1].ends_with(CUT_SUFFIX),
            "{}",
            cut[1].len()
        );
        assert_eq!(cut[2], "leaf");
        let folded = out
            .iter()
            .flat_map(|w| {
                w.stacks
                    .iter()
                    .map(move |s| (w.frames(s).collect::<Vec<_>>(), s.value))
            })
            .find(|(f, _)| f == &[TRUNCATED_FRAME])
            .expect("the deep stack is folded");
        assert_eq!(folded.1, 7);
    }

    /// The estimate badly wrong (a bound barely above one stack): parts are
    /// still halved until each fits, and the splitting ends.
    #[test]
    fn a_part_over_the_bound_is_split_until_it_fits() {
        let names: Vec<String> = (0..64)
            .map(|i| format!("n{i}{}", "z".repeat(100)))
            .collect();
        let stacks: Group = (0..64)
            .map(|i| (frames(&[names[i].as_str(), "leaf"]), (1, 1)))
            .collect();
        let header = worst_case_header(&ProfileWindow {
            target: Some(target()),
            profile_type: ProfileType::Cpu as i32,
            accounting: Some(Accounting::default()),
            ..Default::default()
        });
        let max = header.encoded_len() as u64 + 3 * 140;
        let mut fitted = Fitted::default();
        // One group of everything, as if the estimate had let it all through.
        fit_parts(stacks, &header, max, &mut fitted);
        assert_eq!(fitted.oversized, 0);
        assert_eq!(fitted.parts.iter().map(|p| p.1.len()).sum::<usize>(), 64);
        assert!(fitted.parts.len() >= 22, "{} parts", fitted.parts.len());
        for part in fitted.parts {
            let (len, _) = encoded_len(&mut header.clone(), part);
            assert!(len as u64 <= max, "{len} > {max}");
        }
    }

    #[test]
    fn cut_names_keep_an_equal_share_on_char_boundaries() {
        let f = frames(&["short", &"é".repeat(5000)]);
        let cut = cut_names(&f, 2000).expect("room for names");
        assert_eq!(&*cut[0].name, "short");
        assert!(cut[1].name.len() < 1000 && cut[1].name.ends_with(CUT_SUFFIX));
        assert!(
            cut_names(&f, 100).is_none(),
            "too little room to say anything"
        );
    }

    #[test]
    fn the_bytes_held_by_a_window_are_bounded() {
        let mut agg = WindowAggregator::new(Bounds::default());
        // 16 KiB of names per stack: 64 MiB hold about 4,060 of them.
        let name = "n".repeat(16 << 10);
        for i in 0..5000 {
            agg.add(ProfileType::Cpu, &frames(&[&name, &format!("f{i}")]), 1, 1);
        }
        assert!(agg.held_bytes <= MAX_AGGREGATE_BYTES);
        let kept = agg.types[&ProfileType::Cpu].stacks.len();
        assert!((4000..4100).contains(&kept), "{kept} stacks kept");
        let out = agg.finish(&target(), 0, 1, &HashMap::new(), 0, 0);
        assert_eq!(total(&out), (5000, 5000), "totals exact");
        let acc = out[0].accounting.expect("accounting");
        assert_eq!(
            acc.dropped_stacks,
            5000 - kept as u64 + 1,
            "folded, counted"
        );
    }
}
