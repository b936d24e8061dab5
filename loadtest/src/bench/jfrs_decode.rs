//! The agent's former parse path, kept for `bench-parse`: each validated chunk
//! decoded by `jfrs` (every event into a `ValueDescriptor` tree, every constant
//! pool eagerly), stacks resolved once per chunk, weights as the agent computes
//! them. Benchmark-only: it trusts the chunks `scan_chunks` accepted and is not
//! hardened against hostile input.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use javelin_agent::jfr_parse::{ChunkInfo, Frame, Frames, NO_STACK_FRAME, TypeCounts};
use javelin_schema::wire::{FrameType, ProfileType};
use jfrs::reader::JfrReader;
use jfrs::reader::event::Accessor;
use jfrs::reader::value_descriptor::ValueDescriptor;

/// Decodes `chunks` of `bytes` with jfrs, calling `sink(kind, frames, value, count)`
/// like `parse_chunks` does. Returns the per-type counts.
pub fn decode(
    bytes: &[u8],
    chunks: &[ChunkInfo],
    cpu_period_nanos: i64,
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> Result<HashMap<ProfileType, TypeCounts>, String> {
    let mut counts = HashMap::new();
    for chunk in chunks {
        let slice = &bytes[chunk.offset..chunk.offset + chunk.size];
        decode_chunk(slice, chunk, cpu_period_nanos, &mut counts, sink)
            .map_err(|e| format!("chunk at {}: {e}", chunk.offset))?;
    }
    Ok(counts)
}

fn event_type(name: &str) -> Option<ProfileType> {
    match name {
        "jdk.ExecutionSample" => Some(ProfileType::Cpu),
        "jdk.ObjectAllocationSample"
        | "jdk.ObjectAllocationInNewTLAB"
        | "jdk.ObjectAllocationOutsideTLAB" => Some(ProfileType::Alloc),
        "jdk.JavaMonitorEnter" => Some(ProfileType::Lock),
        "jdk.ThreadPark" => Some(ProfileType::Park),
        _ => None,
    }
}

fn decode_chunk(
    slice: &[u8],
    info: &ChunkInfo,
    cpu_period_nanos: i64,
    counts: &mut HashMap<ProfileType, TypeCounts>,
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> Result<(), String> {
    let mut reader = JfrReader::new(Cursor::new(slice));
    let Some(first) = reader.chunks().next() else {
        return Ok(());
    };
    let (mut chunk_reader, chunk) = first.map_err(|e| e.to_string())?;
    let mut stacks: HashMap<i64, Frames> = HashMap::new();
    let no_stack: Frames = Arc::from(vec![Frame::synthetic(NO_STACK_FRAME)]);
    let execution_sample_id = chunk
        .metadata
        .type_pool
        .get_types()
        .find(|t| t.name() == "jdk.ExecutionSample")
        .map(|t| t.class_id);
    let mut cpu: HashMap<Frames, i64> = HashMap::new();
    let mut period = None;
    let mut last_offset = None;
    for event in chunk_reader.events(&chunk) {
        let event = event.map_err(|e| e.to_string())?;
        if last_offset.is_some_and(|o| event.byte_offset <= o) {
            return Err("event offsets do not advance".into());
        }
        last_offset = Some(event.byte_offset);
        if event.class.name() == "jdk.ActiveSetting" {
            period = period.or_else(|| sampling_period(&event.value(), execution_sample_id));
            continue;
        }
        let Some(kind) = event_type(event.class.name()) else {
            continue;
        };
        let value = event.value();
        let weight = match kind {
            ProfileType::Cpu => Some(cpu_period_nanos),
            ProfileType::Alloc => allocation_weight(event.class.name(), &value),
            ProfileType::Lock => duration_nanos(&value, info.ticks_per_second),
            ProfileType::Park => {
                if is_idle_park(&value) {
                    continue;
                }
                duration_nanos(&value, info.ticks_per_second)
            }
            ProfileType::Unspecified => None,
        };
        let count = counts.entry(kind).or_default();
        count.raw_events += 1;
        let frames = stack_of(&value, &mut stacks)
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| no_stack.clone());
        match weight {
            Some(_) if kind == ProfileType::Cpu => {
                count.parsed_events += 1;
                *cpu.entry(frames).or_default() += 1;
            }
            Some(w) if w >= 0 => {
                count.parsed_events += 1;
                sink(kind, &frames, w, 1);
            }
            _ => count.dropped_events += 1,
        }
    }
    let period = period.unwrap_or(cpu_period_nanos);
    for (frames, samples) in cpu {
        sink(
            ProfileType::Cpu,
            &frames,
            samples.saturating_mul(period),
            samples,
        );
    }
    Ok(())
}

fn sampling_period(value: &Accessor<'_>, execution_sample_id: Option<i64>) -> Option<i64> {
    let name = value
        .get_field("name")
        .and_then(|n| <&str>::try_from(n.value).ok())?;
    let setting = value
        .get_field("value")
        .and_then(|v| <&str>::try_from(v.value).ok())?;
    match name {
        "period"
            if execution_sample_id.is_some() && long_field(value, "id") == execution_sample_id =>
        {
            let (number, unit) = setting.trim().split_once(' ')?;
            let n: f64 = number.parse().ok()?;
            let scale = match unit.trim() {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                _ => return None,
            };
            Some((n * scale).round() as i64).filter(|&ns| ns > 0)
        }
        "interval" => setting.trim().parse::<i64>().ok().filter(|&ns| ns > 0),
        _ => None,
    }
}

fn allocation_weight(event: &str, value: &Accessor<'_>) -> Option<i64> {
    match event {
        "jdk.ObjectAllocationInNewTLAB" => long_field(value, "tlabSize")
            .filter(|&t| t != 0)
            .or_else(|| long_field(value, "allocationSize")),
        "jdk.ObjectAllocationOutsideTLAB" => long_field(value, "allocationSize"),
        _ => long_field(value, "weight"),
    }
}

fn long_field(value: &Accessor<'_>, name: &str) -> Option<i64> {
    value
        .get_field(name)
        .and_then(|f| i64::try_from(f.value).ok())
}

fn duration_nanos(value: &Accessor<'_>, ticks_per_second: i64) -> Option<i64> {
    let ticks = long_field(value, "duration")?;
    Some((i128::from(ticks) * 1_000_000_000 / i128::from(ticks_per_second.max(1))) as i64)
}

fn is_idle_park(value: &Accessor<'_>) -> bool {
    let class = value
        .get_field("parkedClass")
        .and_then(|c| c.resolve())
        .and_then(|c| symbol(&c, "name"));
    match class {
        None => true,
        Some(name) => name.ends_with("$ConditionObject") || name.ends_with("ConditionNode"),
    }
}

fn class_name(internal: &str) -> String {
    let name = match internal.find("$$Lambda") {
        Some(i) => &internal[..i + "$$Lambda".len()],
        None => internal,
    };
    name.replace('/', ".")
}

fn symbol(value: &Accessor<'_>, field: &str) -> Option<String> {
    let s = value.get_field(field)?.resolve()?.get_field("string")?;
    <&str>::try_from(s.value).ok().map(str::to_string)
}

fn frame_type(description: &str) -> FrameType {
    match description {
        "Interpreted" => FrameType::Interpreted,
        "JIT compiled" => FrameType::Jit,
        "Inlined" => FrameType::Inlined,
        "Native" => FrameType::Native,
        "C1 compiled" => FrameType::C1,
        "C++" => FrameType::Cpp,
        "Kernel" => FrameType::Kernel,
        _ => FrameType::Unspecified,
    }
}

fn stack_of(value: &Accessor<'_>, cache: &mut HashMap<i64, Frames>) -> Option<Frames> {
    let key = match value.get_field_raw("stackTrace").map(|a| a.value) {
        Some(ValueDescriptor::ConstantPool { constant_index, .. }) => Some(*constant_index),
        _ => None,
    };
    if let Some(frames) = key.and_then(|k| cache.get(&k)) {
        return Some(frames.clone());
    }
    let trace = value.get_field("stackTrace")?;
    let mut frames: Vec<Frame> = Vec::new();
    for frame in trace.get_field("frames")?.as_iter()? {
        let method = frame.get_field("method")?;
        let class = method
            .get_field("type")
            .and_then(|t| symbol(&t, "name"))
            .unwrap_or_default();
        let name = symbol(&method, "name").unwrap_or_default();
        let line = frame
            .get_field("lineNumber")
            .and_then(|l| i32::try_from(l.value).ok())
            .unwrap_or(0)
            .max(0);
        let kind = frame
            .get_field("type")
            .and_then(|t| t.resolve())
            .and_then(|t| t.get_field("description"))
            .and_then(|d| <&str>::try_from(d.value).ok().map(frame_type))
            .unwrap_or(FrameType::Unspecified);
        frames.push(Frame {
            name: Arc::from(format!("{}.{name}", class_name(&class))),
            line,
            kind: kind as i32,
        });
    }
    frames.reverse();
    let frames: Frames = frames.into();
    if let Some(k) = key {
        cache.insert(k, frames.clone());
    }
    Some(frames)
}
