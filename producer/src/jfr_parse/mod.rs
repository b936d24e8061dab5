//! Javelin's own JFR reader, hardened for untrusted input.
//!
//! A recording comes from a process we do not control, so every byte is checked:
//! 1. [`scan_chunks`] validates every chunk header (magic, version, sizes and
//!    offsets inside the file, finished state) and walks the record chain (every
//!    record size positive and inside the chunk). Parsing stops at the first bad chunk.
//! 2. [`parse_chunks`] reads each validated chunk on its own: the metadata event
//!    (type layouts, [`metadata`]), the constant pools aggregation needs
//!    ([`constant_pool`]: stacks, methods, classes, symbols, frame types, strings,
//!    indexed and decoded lazily) and the events ([`events`]): records of types
//!    not aggregated are skipped by size, the others decoded only up to the
//!    fields read. Every length, count and nesting depth is checked against the
//!    bytes left before anything is allocated; nothing recurses without a bound.
//! 3. A per-window event budget and a per-chunk memory budget bound the work;
//!    events over either are counted as dropped, not decoded.

mod constant_pool;
mod events;
mod metadata;
mod reader;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use javelin_schema::wire::{FrameType, ProfileType};

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
    #[error("chunk at byte {offset}: {reason}")]
    Decode { offset: usize, reason: DecodeError },
    #[error("the JFR reader panicked on chunk at byte {offset}")]
    Panic { offset: usize },
}

/// Why a chunk could not be decoded. Offsets (`at`) are relative to the chunk start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} in the chunk header is outside the chunk")]
    BadHeader { what: &'static str },
    #[error("truncated at byte {at}: {need} bytes needed, {left} left")]
    Truncated { at: usize, need: usize, left: usize },
    #[error("unterminated varint at byte {at}")]
    BadVarint { at: usize },
    #[error("count {count} at byte {at} exceeds the {left} bytes left")]
    BadCount { at: usize, count: i64, left: usize },
    #[error("unknown string encoding {encoding} at byte {at}")]
    BadString { at: usize, encoding: u8 },
    #[error("record at byte {at} has size {size}")]
    BadRecord { at: usize, size: i64 },
    #[error("event at byte {at} reads past its record's end at byte {end}")]
    Overrun { at: usize, end: usize },
    #[error("metadata at byte {at}: {what}")]
    BadMetadata { at: usize, what: &'static str },
    #[error("nesting deeper than {limit} at byte {at}")]
    TooDeep { at: usize, limit: usize },
    #[error("value at byte {at} needs more steps than its record's size allows")]
    TooMuchWork { at: usize },
    #[error("undeclared type id {id} at byte {at}")]
    UnknownType { at: usize, id: i64 },
    #[error("checkpoint at byte {at}: {what}")]
    BadCheckpoint { at: usize, what: &'static str },
    #[error("chunk of {size} bytes at byte {offset} lies outside the {len}-byte input")]
    OutsideInput {
        offset: usize,
        size: usize,
        len: usize,
    },
}

impl DecodeError {
    /// The same error with its offset moved by `by` (for errors found in a sub-slice).
    fn shifted(self, by: usize) -> DecodeError {
        use DecodeError as E;
        let s = |at: usize| at.saturating_add(by);
        match self {
            E::Truncated { at, need, left } => E::Truncated {
                at: s(at),
                need,
                left,
            },
            E::BadVarint { at } => E::BadVarint { at: s(at) },
            E::BadCount { at, count, left } => E::BadCount {
                at: s(at),
                count,
                left,
            },
            E::BadString { at, encoding } => E::BadString {
                at: s(at),
                encoding,
            },
            E::BadRecord { at, size } => E::BadRecord { at: s(at), size },
            E::Overrun { at, end } => E::Overrun {
                at: s(at),
                end: s(end),
            },
            E::BadMetadata { at, what } => E::BadMetadata { at: s(at), what },
            E::TooDeep { at, limit } => E::TooDeep { at: s(at), limit },
            E::TooMuchWork { at } => E::TooMuchWork { at: s(at) },
            E::UnknownType { at, id } => E::UnknownType { at: s(at), id },
            E::BadCheckpoint { at, what } => E::BadCheckpoint { at: s(at), what },
            e @ (E::BadHeader { .. } | E::OutsideInput { .. }) => e,
        }
    }
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
            reader::read_varint(&chunk[pos..])
                .map(|(v, _)| v)
                .ok_or_else(|| format!("unreadable record size at {pos}"))?
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

/// How JFR events become weighted samples.
#[derive(Debug, Clone, Copy)]
pub struct EventRules {
    /// `jdk.ExecutionSample` period: each sample stands for this much CPU time.
    pub cpu_period_nanos: i64,
    /// Events decoded per window at most (all types together); the rest are counted as dropped.
    pub max_events: u64,
    /// The event the CPU profile is made of; the other CPU event is skipped.
    pub cpu_event: CpuEvent,
    /// Time budget of one window's parse: once it is spent, the remaining
    /// events are counted as dropped without being decoded (`None`: no limit).
    pub max_parse_time: Option<std::time::Duration>,
}

/// Which JFR event is the CPU profile. A chunk holds the events of every
/// recording in the JVM: an application running its own recording with
/// `jdk.ExecutionSample` (default.jfc does) next to our `jdk.CPUTimeSample`
/// would otherwise have its CPU counted twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuEvent {
    /// `jdk.ExecutionSample` (built-in JFR before JDK 25, async-profiler).
    #[default]
    ExecutionSample,
    /// `jdk.CPUTimeSample` and `jdk.CPUTimeSamplesLost` (JDK 25+, JEP 509).
    CpuTimeSample,
}

impl CpuEvent {
    /// The CPU event a recorder (by its `kind()`) records.
    pub fn of_recorder(kind: &str) -> CpuEvent {
        if kind == "jfr-cpu-time" {
            CpuEvent::CpuTimeSample
        } else {
            CpuEvent::ExecutionSample
        }
    }
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

/// Parses the given validated chunks of `bytes`, calling `sink` once per
/// (profile type, stack) and chunk with the summed value and event count.
/// `budget` is the number of events still allowed in this window; it is decremented.
pub fn parse_chunks(
    bytes: &[u8],
    chunks: &[ChunkInfo],
    rules: EventRules,
    budget: &mut u64,
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> ParseOutcome {
    let mut outcome = ParseOutcome::default();
    let mut metadata = None;
    let deadline = rules
        .max_parse_time
        .and_then(|d| std::time::Instant::now().checked_add(d));
    for chunk in chunks {
        outcome.chunks += 1;
        let Some(slice) = chunk
            .offset
            .checked_add(chunk.size)
            .and_then(|end| bytes.get(chunk.offset..end))
        else {
            outcome.error = Some(JfrError::Decode {
                offset: chunk.offset,
                reason: DecodeError::OutsideInput {
                    offset: chunk.offset,
                    size: chunk.size,
                    len: bytes.len(),
                },
            });
            break;
        };
        // The reader is written not to panic; this is the second line of defence.
        let result = catch_unwind(AssertUnwindSafe(|| {
            events::parse_chunk(
                slice,
                &mut metadata,
                chunk.ticks_per_second,
                rules,
                deadline,
                budget,
                &mut outcome.counts,
                sink,
            )
        }));
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
    fn class_names_are_stable_across_runs() {
        assert_eq!(class_name("java/lang/Thread"), "java.lang.Thread");
        assert_eq!(
            class_name("JavelinDemo$$Lambda$4+0x00007f6970000c28/1252169911"),
            "JavelinDemo$$Lambda"
        );
        assert_eq!(class_name("com/x/Outer$Inner"), "com.x.Outer$Inner");
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
