//! Guarded JFR parsing with `jfrs`.
//!
//! jfrs trusts its input: it loops forever on a non-advancing chunk iterator or a
//! zero-size record, and panics or allocates without bound on negative or huge
//! sizes. So nothing reaches it unchecked:
//! 1. [`scan_chunks`] validates every chunk header (magic, version, sizes and
//!    offsets inside the file, finished state) and walks the record chain (every
//!    record size positive and inside the chunk). Parsing stops at the first bad chunk.
//! 2. Each validated chunk is handed to jfrs alone, inside `catch_unwind`, and
//!    event offsets must strictly increase.
//! 3. A per-window event cap bounds the work; what is over it is counted, not parsed.

use std::collections::HashMap;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use javelin_schema::wire::{FrameType, ProfileType};
use jfrs::reader::JfrReader;
use jfrs::reader::event::Accessor;
use jfrs::reader::value_descriptor::ValueDescriptor;

const HEADER_SIZE: usize = 68;
const MAGIC: &[u8; 4] = b"FLR\0";

/// The single frame of events that carry no stack trace.
pub const NO_STACK_FRAME: &str = "[no stack trace]";

/// One frame: the method, the source line (0 = unknown) and how the JVM ran it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub name: Arc<str>,
    pub line: i32,
    /// `FrameType` as its wire number.
    pub kind: i32,
}

impl Frame {
    /// A frame that stands for something other than code (`[truncated]`, `[no stack trace]`).
    pub fn synthetic(name: &str) -> Frame {
        Frame {
            name: Arc::from(name),
            line: 0,
            kind: FrameType::Unspecified as i32,
        }
    }
}

/// Frames of one stack, root first, shared between events of a chunk.
pub type Frames = Arc<[Frame]>;

/// JFR's frame type descriptions (JDK and async-profiler) as wire frame types.
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JfrError {
    #[error("chunk at byte {offset}: {reason}")]
    BadChunk { offset: usize, reason: String },
    #[error("chunk at byte {offset} is still being written")]
    Unfinished { offset: usize },
    #[error("jfrs failed on chunk at byte {offset}: {reason}")]
    Decode { offset: usize, reason: String },
    #[error("jfrs panicked on chunk at byte {offset}")]
    Panic { offset: usize },
}

/// A validated chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    pub offset: usize,
    pub size: usize,
    pub start_nanos: i64,
    pub duration_nanos: i64,
    pub ticks_per_second: i64,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Validates the chunks of a JFR file, in order. Returns the good ones and the
/// first problem, after which nothing is trusted.
pub fn scan_chunks(bytes: &[u8]) -> (Vec<ChunkInfo>, Option<JfrError>) {
    let mut chunks = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match check_chunk(bytes, offset) {
            Ok(info) => {
                offset += info.size;
                chunks.push(info);
            }
            Err(e) => return (chunks, Some(e)),
        }
    }
    (chunks, None)
}

fn check_chunk(bytes: &[u8], offset: usize) -> Result<ChunkInfo, JfrError> {
    let bad = |reason: String| JfrError::BadChunk { offset, reason };
    let rest = &bytes[offset..];
    if rest.len() < HEADER_SIZE {
        return Err(bad(format!(
            "{} bytes left, a header needs {HEADER_SIZE}",
            rest.len()
        )));
    }
    if &rest[..4] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let major = u16::from_be_bytes([rest[4], rest[5]]);
    if !(1..=2).contains(&major) {
        return Err(bad(format!("unsupported major version {major}")));
    }
    if rest[64] != 0 {
        return Err(JfrError::Unfinished { offset });
    }
    let size = be_i64(rest, 8);
    if size <= HEADER_SIZE as i64 || size as u64 > rest.len() as u64 {
        return Err(bad(format!(
            "chunk size {size} with {} bytes available",
            rest.len()
        )));
    }
    let size = size as usize;
    for (name, at) in [("constant pool", 16), ("metadata", 24)] {
        let o = be_i64(rest, at);
        if o < HEADER_SIZE as i64 || o >= size as i64 {
            return Err(bad(format!("{name} offset {o} outside the chunk")));
        }
    }
    let ticks_per_second = be_i64(rest, 56);
    if ticks_per_second <= 0 {
        return Err(bad(format!("ticks per second {ticks_per_second}")));
    }
    // Byte 67 holds the feature flags; bit 0 = compressed integers.
    let compressed = rest[67] & 1 != 0;
    check_records(&rest[..size], compressed).map_err(bad)?;
    Ok(ChunkInfo {
        offset,
        size,
        start_nanos: be_i64(rest, 32),
        duration_nanos: be_i64(rest, 40),
        ticks_per_second,
    })
}

/// Walks the record chain: every record size must be positive and end inside the chunk.
fn check_records(chunk: &[u8], compressed: bool) -> Result<(), String> {
    let mut pos = HEADER_SIZE;
    while pos < chunk.len() {
        let size = if compressed {
            read_varint(&chunk[pos..]).ok_or_else(|| format!("unreadable record size at {pos}"))?
        } else {
            let b = chunk
                .get(pos..pos + 4)
                .ok_or_else(|| format!("truncated record size at {pos}"))?;
            i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        if size <= 0 || size as u64 > (chunk.len() - pos) as u64 {
            return Err(format!("record at {pos} has size {size}"));
        }
        pos += size as usize;
    }
    Ok(())
}

/// JFR's LEB128-style varint: 7 bits per byte, at most 9 bytes, the 9th carries 8 bits.
fn read_varint(b: &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            value |= u64::from(byte) << 56;
            return Some(value as i64);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value as i64);
        }
    }
    None
}

/// How JFR events become weighted samples.
#[derive(Debug, Clone, Copy)]
pub struct EventRules {
    /// `jdk.ExecutionSample` period: each sample stands for this much CPU time.
    pub cpu_period_nanos: i64,
    /// Events decoded per window at most (all types together); the rest are counted as dropped.
    pub max_events: u64,
}

/// Per-type counts from one parse.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TypeCounts {
    pub raw_events: u64,
    pub parsed_events: u64,
    pub dropped_events: u64,
}

/// What a parse saw, per profile type, and the first error, if any.
#[derive(Debug, Default)]
pub struct ParseOutcome {
    pub counts: HashMap<ProfileType, TypeCounts>,
    pub chunks: usize,
    pub error: Option<JfrError>,
}

fn event_type(name: &str) -> Option<ProfileType> {
    match name {
        "jdk.ExecutionSample" => Some(ProfileType::Cpu),
        // Built-in JFR samples allocations; async-profiler writes TLAB events.
        "jdk.ObjectAllocationSample"
        | "jdk.ObjectAllocationInNewTLAB"
        | "jdk.ObjectAllocationOutsideTLAB" => Some(ProfileType::Alloc),
        "jdk.JavaMonitorEnter" => Some(ProfileType::Lock),
        "jdk.ThreadPark" => Some(ProfileType::Park),
        _ => None,
    }
}

/// Parses the given validated chunks of `bytes`, calling `sink` for each sample.
/// `budget` is the number of events still allowed in this window; it is decremented.
pub fn parse_chunks(
    bytes: &[u8],
    chunks: &[ChunkInfo],
    rules: EventRules,
    budget: &mut u64,
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> ParseOutcome {
    let mut outcome = ParseOutcome::default();
    for chunk in chunks {
        let slice = &bytes[chunk.offset..chunk.offset + chunk.size];
        let result = catch_unwind(AssertUnwindSafe(|| {
            parse_one_chunk(slice, chunk, rules, budget, &mut outcome.counts, sink)
        }));
        outcome.chunks += 1;
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(reason)) => JfrError::Decode {
                offset: chunk.offset,
                reason,
            },
            Err(_) => JfrError::Panic {
                offset: chunk.offset,
            },
        };
        outcome.error = Some(error);
        break;
    }
    outcome
}

fn parse_one_chunk(
    slice: &[u8],
    info: &ChunkInfo,
    rules: EventRules,
    budget: &mut u64,
    counts: &mut HashMap<ProfileType, TypeCounts>,
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> Result<(), String> {
    let mut reader = JfrReader::new(Cursor::new(slice));
    let Some(first) = reader.chunks().next() else {
        return Ok(());
    };
    let (mut chunk_reader, chunk) = first.map_err(|e| e.to_string())?;
    // Stack-trace constant-pool ids are chunk-scoped: cache per chunk only.
    let mut stacks: HashMap<i64, Frames> = HashMap::new();
    let no_stack: Frames = Arc::from(vec![Frame::synthetic(NO_STACK_FRAME)]);
    let execution_sample_id = chunk
        .metadata
        .type_pool
        .get_types()
        .find(|t| t.name() == "jdk.ExecutionSample")
        .map(|t| t.class_id);
    // CPU samples are weighted by the sampling period the recording itself
    // reports (jdk.ActiveSetting), known only once the chunk is read: count them
    // per stack and weigh them at the end.
    let mut cpu: HashMap<Frames, i64> = HashMap::new();
    let mut period = None;
    let mut last_offset = None;
    let result = (|| {
        for event in chunk_reader.events(&chunk) {
            let event = event.map_err(|e| e.to_string())?;
            if last_offset.is_some_and(|o| event.byte_offset <= o) {
                return Err(format!(
                    "event offset {} does not advance",
                    event.byte_offset
                ));
            }
            last_offset = Some(event.byte_offset);
            if event.class.name() == "jdk.ActiveSetting" {
                period = period.or_else(|| sampling_period(&event.value(), execution_sample_id));
                continue;
            }
            let Some(kind) = event_type(event.class.name()) else {
                continue;
            };
            let count = counts.entry(kind).or_default();
            count.raw_events += 1;
            if *budget == 0 {
                count.dropped_events += 1;
                continue;
            }
            *budget -= 1;
            let value = event.value();
            let weight = match kind {
                ProfileType::Cpu => Some(rules.cpu_period_nanos),
                ProfileType::Alloc => allocation_weight(event.class.name(), &value),
                ProfileType::Lock => duration_nanos(&value, info.ticks_per_second),
                ProfileType::Park => {
                    if is_idle_park(&value) {
                        // Not contention: an idle worker waiting for work. Counted as raw, not as data.
                        count.raw_events -= 1;
                        *budget += 1;
                        continue;
                    }
                    duration_nanos(&value, info.ticks_per_second)
                }
                ProfileType::Unspecified => None,
            };
            // An event without a stack (the JVM could not walk it) still carries weight:
            // keep it under an explicit frame so totals stay exact.
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
        Ok(())
    })();
    let period = period.unwrap_or(rules.cpu_period_nanos);
    for (frames, samples) in cpu {
        sink(
            ProfileType::Cpu,
            &frames,
            samples.saturating_mul(period),
            samples,
        );
    }
    result
}

/// The CPU sampling period (ns) from a `jdk.ActiveSetting` event: the JDK's
/// `period` of jdk.ExecutionSample (`"10 ms"`), or async-profiler's `interval`
/// (nanoseconds as a number).
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
            parse_period(setting)
        }
        "interval" => setting.trim().parse::<i64>().ok().filter(|&ns| ns > 0),
        _ => None,
    }
}

/// `"10 ms"`, `"20 ms"`, `"1 s"`, `"500 us"` → nanoseconds.
fn parse_period(text: &str) -> Option<i64> {
    let (number, unit) = text.trim().split_once(' ')?;
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

/// Bytes an allocation event stands for: the sampler's `weight` (built-in JFR);
/// for async-profiler's TLAB events the sampled interval (`tlabSize`, which it
/// sets to max(object size, interval)), else the object's own size.
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
    Some((i128::from(ticks) * 1_000_000_000 / i128::from(ticks_per_second)) as i64)
}

/// Idle-park rule: a park is contention only when it parks on a lock. Parks
/// without a blocker object, or on a `Condition` (`…$ConditionObject`: a worker
/// waiting for work, `await`), are idle waits and are not part of the park profile.
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

/// A JVM internal class name as Java source spells it. Hidden classes (lambdas,
/// `Foo$$Lambda$14+0x0000…/0x…`) carry per-run addresses; they are cut at
/// `$$Lambda` so the same code gives the same frame, and so the same stack id, in every run.
fn class_name(internal: &str) -> String {
    let name = match internal.find("$$Lambda") {
        Some(i) => &internal[..i + "$$Lambda".len()],
        None => internal,
    };
    name.replace('/', ".")
}

/// `<accessor>.<field>` as a Symbol's string.
fn symbol(value: &Accessor<'_>, field: &str) -> Option<String> {
    let s = value.get_field(field)?.resolve()?.get_field("string")?;
    <&str>::try_from(s.value).ok().map(str::to_string)
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
        // JDK writes -1 for an unknown line, async-profiler 0: both become 0.
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
    // JFR lists the leaf first; the wire contract is root first.
    frames.reverse();
    let frames: Frames = frames.into();
    if let Some(k) = key {
        cache.insert(k, frames.clone());
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: i64, state: u8) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&2u16.to_be_bytes());
        h.extend_from_slice(&1u16.to_be_bytes());
        h.extend_from_slice(&size.to_be_bytes());
        h.extend_from_slice(&68i64.to_be_bytes()); // constant pool
        h.extend_from_slice(&68i64.to_be_bytes()); // metadata
        h.extend_from_slice(&1_000i64.to_be_bytes()); // start nanos
        h.extend_from_slice(&5i64.to_be_bytes()); // duration
        h.extend_from_slice(&0i64.to_be_bytes()); // start ticks
        h.extend_from_slice(&1_000_000_000i64.to_be_bytes()); // ticks/s
        h.extend_from_slice(&[state, 0, 0, 1]);
        h
    }

    #[test]
    fn sampling_periods_parse() {
        assert_eq!(parse_period("10 ms"), Some(10_000_000));
        assert_eq!(parse_period("1 s"), Some(1_000_000_000));
        assert_eq!(parse_period("500 us"), Some(500_000));
        assert_eq!(parse_period("everyChunk"), None);
        assert_eq!(parse_period("0 ms"), None);
    }

    #[test]
    fn class_names_are_stable_across_runs() {
        assert_eq!(class_name("java/lang/Thread"), "java.lang.Thread");
        assert_eq!(
            class_name("JavelinDemo$$Lambda$4+0x00007f6970000c28/1252169911"),
            "JavelinDemo$$Lambda"
        );
        assert_eq!(class_name("com/x/Outer$Inner"), "com.x.Outer$Inner");
    }

    #[test]
    fn varints_follow_jfr_encoding() {
        assert_eq!(read_varint(&[0x05]), Some(5));
        assert_eq!(read_varint(&[0x80, 0x01]), Some(128));
        assert_eq!(read_varint(&[0xff; 9]), Some(-1));
        assert_eq!(read_varint(&[0x80]), None);
    }

    #[test]
    fn garbage_truncation_and_bad_sizes_are_rejected() {
        assert!(matches!(
            scan_chunks(
                b"hello world, not a jfr file at all. really not one, no. nope nope nope nope"
            )
            .1,
            Some(JfrError::BadChunk { .. })
        ));
        // Truncated header.
        assert!(scan_chunks(&header(100, 0)[..40]).1.is_some());
        // Negative and oversized chunk sizes.
        assert!(scan_chunks(&header(-5, 0)).1.is_some());
        assert!(scan_chunks(&header(1 << 40, 0)).1.is_some());
        // A zero-size record would make jfrs spin forever.
        let mut chunk = header(72, 0);
        chunk.extend_from_slice(&[0, 0, 0, 0]);
        let (good, err) = scan_chunks(&chunk);
        assert!(good.is_empty());
        assert!(err.expect("error").to_string().contains("size 0"));
        // Unfinished chunk.
        let mut chunk = header(72, 7);
        chunk.extend_from_slice(&[4, 0, 0, 0]);
        assert_eq!(
            scan_chunks(&chunk).1,
            Some(JfrError::Unfinished { offset: 0 })
        );
    }

    #[test]
    fn empty_input_has_no_chunks_and_no_error() {
        assert_eq!(scan_chunks(&[]), (vec![], None));
    }
}
