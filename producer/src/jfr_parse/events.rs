//! One chunk's events: records of types aggregation does not need are skipped by
//! their size without decoding; the others are decoded only up to the fields
//! read (stack trace, weight or duration, parked class, setting), under the
//! window's event budget, and summed per (profile type, stack) for the chunk.

use std::collections::HashMap;
use std::sync::Arc;

use javelin_schema::wire::ProfileType;

use super::constant_pool::{IdMap, MAX_DECODED_BYTES_PER_CHUNK, Pools, Resolved, Val, read_field};
use super::metadata::{Encoding, Metadata, skip_value};
use super::reader::Reader;
use super::{
    CpuEvent, DecodeError, EventRules, Frame, Frames, HEADER_SIZE, NO_STACK_FRAME, TypeCounts,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ExecutionSample,
    CpuTimeSample,
    CpuTimeSamplesLost,
    AllocationSample,
    InNewTlab,
    OutsideTlab,
    MonitorEnter,
    ThreadPark,
    ActiveSetting,
}

impl Kind {
    fn profile(self) -> Option<ProfileType> {
        match self {
            Kind::ExecutionSample | Kind::CpuTimeSample => Some(ProfileType::Cpu),
            Kind::AllocationSample | Kind::InNewTlab | Kind::OutsideTlab => {
                Some(ProfileType::Alloc)
            }
            Kind::MonitorEnter => Some(ProfileType::Lock),
            Kind::ThreadPark => Some(ProfileType::Park),
            Kind::CpuTimeSamplesLost | Kind::ActiveSetting => None,
        }
    }
}

/// The events aggregation reads, and their fields after the stack trace.
/// Built-in JFR samples allocations; async-profiler writes TLAB events.
const EVENTS: [(&str, Kind, [&str; 3]); 9] = [
    ("jdk.ExecutionSample", Kind::ExecutionSample, ["", "", ""]),
    // JDK 25+ (JEP 509): each sample stands for `samplingPeriod` ticks of CPU time.
    (
        "jdk.CPUTimeSample",
        Kind::CpuTimeSample,
        ["samplingPeriod", "", ""],
    ),
    (
        "jdk.CPUTimeSamplesLost",
        Kind::CpuTimeSamplesLost,
        ["lostSamples", "", ""],
    ),
    (
        "jdk.ObjectAllocationSample",
        Kind::AllocationSample,
        ["weight", "", ""],
    ),
    (
        "jdk.ObjectAllocationInNewTLAB",
        Kind::InNewTlab,
        ["tlabSize", "allocationSize", ""],
    ),
    (
        "jdk.ObjectAllocationOutsideTLAB",
        Kind::OutsideTlab,
        ["allocationSize", "", ""],
    ),
    (
        "jdk.JavaMonitorEnter",
        Kind::MonitorEnter,
        ["duration", "", ""],
    ),
    (
        "jdk.ThreadPark",
        Kind::ThreadPark,
        ["duration", "parkedClass", ""],
    ),
    (
        "jdk.ActiveSetting",
        Kind::ActiveSetting,
        ["id", "name", "value"],
    ),
];

/// How one field of an event is read: an integer (a constant-pool reference
/// or a number) kept in a slot or dropped, or skipped by its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Long,
    Int,
    Short,
    Char,
    Byte,
    Skip(usize),
    String,
    /// Anything else (inline objects, arrays): skipped through the metadata.
    Other(usize),
}

/// Which slot an [`Op`] fills (0 = stackTrace, 1..=3 as in [`EVENTS`]).
const NO_SLOT: u8 = u8::MAX;

/// How to decode one event type, up to the last field read.
#[derive(Debug, Clone)]
struct Plan {
    kind: Kind,
    type_index: u32,
    /// Per field up to the last one read: which slot it fills, if any (ActiveSetting).
    fields: Vec<Option<u8>>,
    ops: Vec<(Op, u8)>,
}

impl Plan {
    fn new(meta: &Metadata, kind: Kind, type_index: u32, extra: [&str; 3]) -> Option<Plan> {
        let ty = meta.get(type_index)?;
        let mut slots: [Option<usize>; 4] = [None; 4];
        if kind.profile().is_some() {
            slots[0] = ty.field("stackTrace");
        }
        for (i, f) in extra.iter().enumerate() {
            if !f.is_empty() {
                slots[i + 1] = ty.field(f);
            }
        }
        // Stack traces and parked classes are constant-pool references, the
        // rest plain integers; a field of another shape is not read.
        let wants_ref = |slot: usize| slot == 0 || (kind == Kind::ThreadPark && slot == 2);
        if kind != Kind::ActiveSetting {
            for (slot, field) in slots.iter_mut().enumerate() {
                let ok = field.and_then(|f| ty.fields.get(f)).is_some_and(|f| {
                    let integer = matches!(
                        f.ty.and_then(|t| meta.get(t)).map(|t| t.encoding),
                        Some(Encoding::Long | Encoding::Int | Encoding::Short | Encoding::Byte)
                    );
                    !f.array
                        && if wants_ref(slot) {
                            f.constant_pool
                        } else {
                            !f.constant_pool && integer
                        }
                });
                if !ok {
                    *field = None;
                }
            }
        }
        let last = slots.iter().flatten().max().map_or(0, |m| m + 1);
        let fields: Vec<Option<u8>> = (0..last)
            .map(|i| slots.iter().position(|s| *s == Some(i)).map(|s| s as u8))
            .collect();
        let ops = ty
            .fields
            .iter()
            .zip(&fields)
            .enumerate()
            .map(|(i, (f, slot))| {
                let op = if f.array {
                    Op::Other(i)
                } else if f.constant_pool {
                    Op::Long
                } else {
                    match f.ty.and_then(|t| meta.get(t)).map(|t| t.encoding) {
                        Some(Encoding::Long) => Op::Long,
                        Some(Encoding::Int) => Op::Int,
                        Some(Encoding::Short) => Op::Short,
                        Some(Encoding::Char) => Op::Char,
                        Some(Encoding::Byte) => Op::Byte,
                        Some(Encoding::Float) => Op::Skip(4),
                        Some(Encoding::Double) => Op::Skip(8),
                        Some(Encoding::String) => Op::String,
                        _ => Op::Other(i),
                    }
                };
                (op, slot.unwrap_or(NO_SLOT))
            })
            .collect();
        Some(Plan {
            kind,
            type_index,
            fields,
            ops,
        })
    }

    /// Reads the plan's integer fields into `ints`; bit `i` of the result says slot `i` was read.
    #[inline]
    fn read(
        &self,
        r: &mut Reader<'_>,
        meta: &Metadata,
        ints: &mut [i64; 4],
        steps: &mut usize,
    ) -> Result<u8, DecodeError> {
        let mut have = 0u8;
        for &(op, slot) in &self.ops {
            let v = match op {
                Op::Long => r.long()?,
                Op::Int => r.int()?,
                Op::Short => r.short()?,
                Op::Char => i64::from(u32::from(r.char()?)),
                Op::Byte => i64::from(r.u8()?),
                Op::Skip(n) => {
                    r.skip(n)?;
                    continue;
                }
                Op::String => {
                    r.skip_string()?;
                    continue;
                }
                Op::Other(i) => {
                    let field = meta
                        .get(self.type_index)
                        .and_then(|t| t.fields.get(i))
                        .ok_or(DecodeError::UnknownType {
                            at: r.pos(),
                            id: -1,
                        })?;
                    skip_value(r, meta, field, 1, steps)?;
                    continue;
                }
            };
            if let Some(out) = ints.get_mut(usize::from(slot)) {
                *out = v;
                have |= 1 << slot;
            }
        }
        Ok(have)
    }
}

/// Event type ids up to this are looked up in a table, others in a map.
const TABLE_IDS: i64 = 1 << 16;

struct Plans {
    table: Vec<u8>,
    map: IdMap<u8>,
    plans: Vec<Plan>,
}

impl Plans {
    fn new(meta: &Metadata, cpu_event: CpuEvent) -> Plans {
        let mut plans = Vec::new();
        for (name, kind, extra) in EVENTS {
            let other_cpu_event = match cpu_event {
                CpuEvent::ExecutionSample => {
                    matches!(kind, Kind::CpuTimeSample | Kind::CpuTimeSamplesLost)
                }
                CpuEvent::CpuTimeSample => kind == Kind::ExecutionSample,
            };
            if other_cpu_event {
                continue;
            }
            let Some((index, ty)) = meta.by_name(name) else {
                continue;
            };
            if let Some(plan) = Plan::new(meta, kind, index, extra) {
                plans.push((ty.id, plan));
            }
        }
        let mut table = Vec::new();
        let mut map = IdMap::default();
        for (i, (id, _)) in plans.iter().enumerate() {
            let tag = (i + 1) as u8;
            if (0..TABLE_IDS).contains(id) {
                let at = *id as usize;
                if table.len() <= at {
                    table.resize(at + 1, 0);
                }
                table[at] = tag;
            } else {
                map.insert(*id, tag);
            }
        }
        Plans {
            table,
            map,
            plans: plans.into_iter().map(|(_, p)| p).collect(),
        }
    }

    #[inline]
    fn get(&self, id: i64) -> Option<&Plan> {
        let tag = if (0..TABLE_IDS).contains(&id) {
            self.table.get(id as usize).copied().unwrap_or(0)
        } else {
            self.map.get(&id).copied().unwrap_or(0)
        };
        self.plans.get(usize::from(tag).checked_sub(1)?)
    }
}

/// Per stack: (value, events) for cpu-time samples, alloc, lock, park, and the
/// number of execution samples (weighted by the period at the end of the chunk).
#[derive(Debug, Default, Clone, Copy)]
struct Row {
    sums: [(i64, i64); 4],
    execution_samples: i64,
}

fn slot(kind: ProfileType) -> usize {
    match kind {
        ProfileType::Alloc => 1,
        ProfileType::Lock => 2,
        ProfileType::Park => 3,
        _ => 0,
    }
}

const ROW_BYTES: usize = std::mem::size_of::<Row>() + std::mem::size_of::<Frames>() + 24;

const RECENT_STACKS: usize = 4096;

/// Marks a stack id that could not be resolved within the memory budget.
const OVER_BUDGET: u32 = u32::MAX;

/// The last chunk's metadata record and what it declares: consecutive chunks of
/// one recording usually repeat it byte for byte.
pub(super) type MetadataCache = Option<(bool, Vec<u8>, Metadata)>;

fn cached_metadata<'c>(
    cache: &'c mut MetadataCache,
    chunk: &[u8],
    at: usize,
    compressed: bool,
) -> Result<&'c Metadata, DecodeError> {
    let size = Reader::new(chunk, at, compressed).int()?;
    let record = usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .and_then(|s| chunk.get(at..at.checked_add(s)?))
        .ok_or(DecodeError::BadRecord { at, size })?;
    let hit = cache
        .as_ref()
        .is_some_and(|(c, bytes, _)| *c == compressed && bytes.as_slice() == record);
    if !hit {
        let meta = Metadata::read(record, 0, compressed).map_err(|e| e.shifted(at))?;
        *cache = Some((compressed, record.to_vec(), meta));
    }
    match cache {
        Some((_, _, meta)) => Ok(meta),
        None => Err(DecodeError::BadRecord { at, size }),
    }
}

/// Parses one validated chunk. Sums go to `sink` once per (type, stack) at the end,
/// also when an error stops the chunk early.
#[allow(clippy::too_many_arguments)]
pub(super) fn parse_chunk(
    chunk: &[u8],
    metadata_cache: &mut MetadataCache,
    ticks_per_second: i64,
    rules: EventRules,
    deadline: Option<std::time::Instant>,
    budget: &mut u64,
    counts: &mut HashMap<ProfileType, TypeCounts>,
    sink: &mut dyn FnMut(ProfileType, &Frames, i64, i64),
) -> Result<(), DecodeError> {
    let header = |at: usize| {
        chunk
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0)
    };
    let compressed = chunk.get(67).is_some_and(|f| f & 1 != 0);
    let offset = |v: i64, what: &'static str| {
        usize::try_from(v)
            .ok()
            .filter(|&o| o >= HEADER_SIZE && o < chunk.len())
            .ok_or(DecodeError::BadHeader { what })
    };
    let metadata_at = offset(header(24), "metadata offset")?;
    let pool_at = offset(header(16), "constant pool offset")?;
    let meta = cached_metadata(metadata_cache, chunk, metadata_at, compressed)?;
    let mut pools = Pools::read(chunk, compressed, meta, pool_at)?;
    let plans = Plans::new(meta, rules.cpu_event);
    let execution_sample_id = meta.by_name("jdk.ExecutionSample").map(|t| t.1.id);

    let mut state = State {
        stack_ids: IdMap::default(),
        recent: vec![(i64::MIN, OVER_BUDGET); RECENT_STACKS],
        idle_classes: IdMap::default(),
        stacks: vec![Arc::from(vec![Frame::synthetic(NO_STACK_FRAME)])],
        rows: vec![Row::default()],
        period: None,
        type_counts: [None; 4],
    };
    let result = walk(
        chunk,
        compressed,
        ticks_per_second,
        meta,
        &mut pools,
        &plans,
        execution_sample_id,
        TimeBudget::new(deadline),
        budget,
        &mut state,
    );
    let period = state.period.unwrap_or(rules.cpu_period_nanos);
    for (i, kind) in [
        ProfileType::Cpu,
        ProfileType::Alloc,
        ProfileType::Lock,
        ProfileType::Park,
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(c) = state.type_counts[i] {
            let total = counts.entry(kind).or_default();
            total.raw_events += c.raw_events;
            total.parsed_events += c.parsed_events;
            total.dropped_events += c.dropped_events;
        }
    }
    for (frames, row) in state.stacks.iter().zip(&state.rows) {
        let (mut value, mut events) = row.sums[0];
        if row.execution_samples > 0 {
            value = value.saturating_add(row.execution_samples.saturating_mul(period));
            events = events.saturating_add(row.execution_samples);
        }
        if events > 0 {
            sink(ProfileType::Cpu, frames, value, events);
        }
        for kind in [ProfileType::Alloc, ProfileType::Lock, ProfileType::Park] {
            let (value, events) = row.sums[slot(kind)];
            if events > 0 {
                sink(kind, frames, value, events);
            }
        }
    }
    result
}

struct State {
    stack_ids: IdMap<u32>,
    /// The last stack ids seen, by id modulo the size: most events hit here
    /// before the map.
    recent: Vec<(i64, u32)>,
    /// Per parked class id: whether parks on it are idle.
    idle_classes: IdMap<bool>,
    stacks: Vec<Frames>,
    rows: Vec<Row>,
    period: Option<i64>,
    type_counts: [Option<TypeCounts>; 4],
}

impl State {
    /// The row of a stack-trace constant (0 = `[no stack trace]`), resolving it
    /// on first use; `None` when it does not fit the chunk's memory budget.
    #[inline]
    fn row(&mut self, meta: &Metadata, pools: &mut Pools<'_>, stack: Option<i64>) -> Option<usize> {
        let Some(id) = stack else {
            return Some(0);
        };
        let slot = (id as usize) % RECENT_STACKS;
        if let Some(&(recent, row)) = self.recent.get(slot)
            && recent == id
            && row != OVER_BUDGET
        {
            return Some(row as usize);
        }
        if let Some(&row) = self.stack_ids.get(&id) {
            if let Some(r) = self.recent.get_mut(slot) {
                *r = (id, row);
            }
            return Some(row as usize);
        }
        let over = pools
            .used()
            .saturating_add(self.rows.len().saturating_mul(ROW_BYTES))
            > MAX_DECODED_BYTES_PER_CHUNK;
        let row = match if over {
            Resolved::OverBudget
        } else {
            pools.stack(meta, id)
        } {
            Resolved::Frames(frames) => {
                self.stacks.push(frames);
                self.rows.push(Row::default());
                (self.stacks.len() - 1) as u32
            }
            Resolved::NoStack => 0,
            Resolved::OverBudget => OVER_BUDGET,
        };
        // An id over the budget is not remembered either: the map stays bounded.
        if row != OVER_BUDGET {
            self.stack_ids.insert(id, row);
        }
        (row != OVER_BUDGET).then_some(row as usize)
    }
}

impl State {
    /// Idle-park rule, decided once per parked class and chunk.
    fn idle_park(&mut self, meta: &Metadata, pools: &mut Pools<'_>, class: Option<i64>) -> bool {
        let Some(id) = class else {
            return true;
        };
        if let Some(&idle) = self.idle_classes.get(&id) {
            return idle;
        }
        let idle = is_idle_park(pools.class_name(meta, id).as_deref());
        self.idle_classes.insert(id, idle);
        idle
    }
}

/// Reads a `jdk.ActiveSetting` event's id, name and value (slots 1..=3).
fn read_setting<'a>(
    r: &mut Reader<'a>,
    meta: &Metadata,
    plan: &Plan,
    steps: &mut usize,
) -> Result<[Val<'a>; 4], DecodeError> {
    let mut values = [Val::Absent, Val::Absent, Val::Absent, Val::Absent];
    let Some(ty) = meta.get(plan.type_index) else {
        return Ok(values);
    };
    for (field, slot) in ty.fields.iter().zip(&plan.fields) {
        match slot {
            Some(s) => {
                let v = read_field(r, meta, field, steps)?;
                if let Some(out) = values.get_mut(usize::from(*s)) {
                    *out = v;
                }
            }
            None => skip_value(r, meta, field, 1, steps)?,
        }
    }
    Ok(values)
}

/// A window's parse deadline, looked at every [`TimeBudget::EVERY`] events
/// (reading the clock per event would cost more than some events do).
struct TimeBudget {
    deadline: Option<std::time::Instant>,
    countdown: u32,
    spent: bool,
}

impl TimeBudget {
    const EVERY: u32 = 1024;

    fn new(deadline: Option<std::time::Instant>) -> TimeBudget {
        TimeBudget {
            deadline,
            countdown: 0,
            spent: false,
        }
    }

    /// Whether the deadline has passed (checked on the first call and then
    /// every `EVERY` calls).
    fn spent(&mut self) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        if self.spent {
            return true;
        }
        if self.countdown > 0 {
            self.countdown -= 1;
            return false;
        }
        self.countdown = Self::EVERY - 1;
        // Once spent it stays spent, without reading the clock again.
        self.spent = std::time::Instant::now() >= deadline;
        self.spent
    }
}

#[allow(clippy::too_many_arguments)]
fn walk(
    chunk: &[u8],
    compressed: bool,
    ticks_per_second: i64,
    meta: &Metadata,
    pools: &mut Pools<'_>,
    plans: &Plans,
    execution_sample_id: Option<i64>,
    mut time: TimeBudget,
    budget: &mut u64,
    state: &mut State,
) -> Result<(), DecodeError> {
    let mut pos = HEADER_SIZE;
    while pos < chunk.len() {
        let mut r = Reader::new(chunk, pos, compressed);
        let size = if compressed { r.varint()? } else { r.int()? };
        let end = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .and_then(|s| pos.checked_add(s))
            .filter(|&e| e <= chunk.len())
            .ok_or(DecodeError::BadRecord { at: pos, size })?;
        let type_id = r.long()?;
        let record_start = pos;
        pos = end;
        let Some(plan) = plans.get(type_id) else {
            continue;
        };
        // Fields are read from the chunk (its bounds are checked on every read)
        // and must then end inside their record: checked after the read, so
        // integers near a record's end still take the fast path.
        let profile = plan.kind.profile();
        if let Some(kind) = profile {
            let c = state.type_counts[slot(kind)].get_or_insert_with(TypeCounts::default);
            c.raw_events += 1;
            if time.spent() {
                // The window's time is up: the rest is counted, not decoded.
                *budget = 0;
            }
            if *budget == 0 {
                c.dropped_events += 1;
                continue;
            }
            *budget -= 1;
        } else if plan.kind == Kind::ActiveSetting && state.period.is_some() {
            continue;
        }
        let mut steps = (end - record_start).saturating_mul(4).saturating_add(64);
        if plan.kind == Kind::ActiveSetting {
            let mut r = Reader::new(chunk.get(..end).unwrap_or(&[]), r.pos(), compressed);
            let values = read_setting(&mut r, meta, plan, &mut steps)?;
            state.period = sampling_period(meta, pools, &values, execution_sample_id);
            continue;
        }
        let mut ints = [0i64; 4];
        let have = plan.read(&mut r, meta, &mut ints, &mut steps)?;
        if r.pos() > end {
            return Err(DecodeError::Overrun {
                at: record_start,
                end,
            });
        }
        let int = |slot: usize| (have & (1 << slot) != 0).then(|| ints[slot]);
        let weight = match plan.kind {
            Kind::ActiveSetting => continue,
            Kind::CpuTimeSamplesLost => {
                // Samples the JVM could not take: CPU events counted as dropped.
                let lost = int(1).unwrap_or(0).max(0) as u64;
                let c = state.type_counts[0].get_or_insert_with(TypeCounts::default);
                c.raw_events += lost;
                c.dropped_events += lost;
                continue;
            }
            Kind::ExecutionSample => Some(0),
            Kind::CpuTimeSample => int(1).and_then(|t| ticks_to_nanos(t, ticks_per_second)),
            Kind::AllocationSample => int(1),
            Kind::InNewTlab => int(1).filter(|&t| t != 0).or_else(|| int(2)),
            Kind::OutsideTlab => int(1),
            Kind::MonitorEnter => int(1).and_then(|t| ticks_to_nanos(t, ticks_per_second)),
            Kind::ThreadPark => {
                if state.idle_park(meta, pools, int(2)) {
                    // Not contention: an idle worker waiting for work. Neither data nor a drop.
                    if let Some(c) = state.type_counts[3].as_mut() {
                        c.raw_events -= 1;
                    }
                    *budget += 1;
                    continue;
                }
                int(1).and_then(|t| ticks_to_nanos(t, ticks_per_second))
            }
        };
        let stack = int(0);
        let Some(kind) = profile else { continue };
        let k = slot(kind);
        let row = match weight {
            Some(w) if w >= 0 => state.row(meta, pools, stack),
            _ => None,
        };
        let c = state.type_counts[k].get_or_insert_with(TypeCounts::default);
        match (row, weight) {
            (Some(row), Some(w)) => {
                c.parsed_events += 1;
                let Some(row) = state.rows.get_mut(row) else {
                    continue;
                };
                if plan.kind == Kind::ExecutionSample {
                    row.execution_samples += 1;
                } else {
                    let s = &mut row.sums[k];
                    s.0 = s.0.saturating_add(w);
                    s.1 += 1;
                }
            }
            _ => c.dropped_events += 1,
        }
    }
    Ok(())
}

fn ticks_to_nanos(ticks: i64, ticks_per_second: i64) -> Option<i64> {
    if ticks_per_second <= 0 {
        return None;
    }
    Some((i128::from(ticks) * 1_000_000_000 / i128::from(ticks_per_second)) as i64)
}

/// Idle-park rule: a park is contention only when it parks on a lock. Parks
/// without a blocker object, or on a `Condition` (`…$ConditionObject`: a worker
/// waiting for work, `await`), are idle waits and are not part of the park profile.
fn is_idle_park(class: Option<&str>) -> bool {
    match class {
        None => true,
        Some(name) => name.ends_with("$ConditionObject") || name.ends_with("ConditionNode"),
    }
}

/// The CPU sampling period (ns) from a `jdk.ActiveSetting` event: the JDK's
/// `period` of jdk.ExecutionSample (`"10 ms"`), or async-profiler's `interval`
/// (nanoseconds as a number).
fn sampling_period(
    meta: &Metadata,
    pools: &Pools<'_>,
    values: &[Val<'_>; 4],
    execution_sample_id: Option<i64>,
) -> Option<i64> {
    let name = pools.text(meta, &values[2])?;
    let setting = pools.text(meta, &values[3])?;
    match name.as_str() {
        "period" if execution_sample_id.is_some() && values[1].int() == execution_sample_id => {
            parse_period(&setting)
        }
        "interval" => setting.trim().parse::<i64>().ok().filter(|&ns| ns > 0),
        _ => None,
    }
}

/// `"10 ms"`, `"20 ms"`, `"1 s"`, `"500 us"` → nanoseconds.
pub(super) fn parse_period(text: &str) -> Option<i64> {
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

#[cfg(test)]
mod tests {
    use super::super::metadata::tests::{MetaWriter, varint};
    use super::*;

    /// A record: 5-byte size (so it does not depend on itself), then `body`.
    fn record(body: &[u8]) -> Vec<u8> {
        let size = body.len() as u64 + 5;
        let mut out: Vec<u8> = (0..4)
            .map(|i| ((size >> (7 * i)) as u8 & 0x7f) | 0x80)
            .collect();
        out.push((size >> 28) as u8);
        out.extend_from_slice(body);
        out
    }

    fn ints(values: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            varint(&mut out, *v);
        }
        out
    }

    /// A compressed chunk: header, metadata declaring `long`, an empty
    /// `jdk.types.StackTrace` and `jdk.ObjectAllocationSample` (id 100:
    /// startTime, stackTrace, weight), the checkpoint `checkpoint`, then `events`.
    fn chunk(checkpoint: &[u8], events: &[Vec<u8>]) -> Vec<u8> {
        let mut w = MetaWriter::new();
        w.element("root", &[], 1);
        w.element("metadata", &[], 3);
        w.element("class", &[("id", "1"), ("name", "long")], 0);
        w.element(
            "class",
            &[("id", "200"), ("name", "jdk.types.StackTrace")],
            0,
        );
        w.element(
            "class",
            &[("id", "100"), ("name", "jdk.ObjectAllocationSample")],
            3,
        );
        w.element("field", &[("name", "startTime"), ("class", "1")], 0);
        w.element(
            "field",
            &[
                ("name", "stackTrace"),
                ("class", "200"),
                ("constantPool", "true"),
            ],
            0,
        );
        w.element("field", &[("name", "weight"), ("class", "1")], 0);
        let metadata = w.record();
        let mut body = metadata.clone();
        let pool_at = HEADER_SIZE + body.len();
        body.extend_from_slice(checkpoint);
        for e in events {
            body.extend_from_slice(e);
        }
        let size = (HEADER_SIZE + body.len()) as i64;
        let mut c = Vec::new();
        c.extend_from_slice(b"FLR\0");
        c.extend_from_slice(&2u16.to_be_bytes());
        c.extend_from_slice(&1u16.to_be_bytes());
        for v in [
            size,
            pool_at as i64,
            HEADER_SIZE as i64,
            0,
            0,
            0,
            1_000_000_000,
        ] {
            c.extend_from_slice(&v.to_be_bytes());
        }
        c.extend_from_slice(&[0, 0, 0, 1]);
        c.extend_from_slice(&body);
        c
    }

    fn empty_checkpoint() -> Vec<u8> {
        // type 1, start, duration, delta 0, flush byte, no pools.
        record(&ints(&[1, 0, 0, 0, 0, 0]))
    }

    fn parse(bytes: &[u8], budget: u64) -> (Result<(), DecodeError>, Vec<(i64, i64)>, TypeCounts) {
        parse_within(bytes, budget, None)
    }

    fn parse_within(
        bytes: &[u8],
        budget: u64,
        deadline: Option<std::time::Instant>,
    ) -> (Result<(), DecodeError>, Vec<(i64, i64)>, TypeCounts) {
        let rules = EventRules {
            cpu_period_nanos: 10,
            max_events: budget,
            cpu_event: crate::jfr_parse::CpuEvent::ExecutionSample,
            max_parse_time: None,
        };
        let mut budget = budget;
        let mut counts = HashMap::new();
        let mut sums = Vec::new();
        let result = parse_chunk(
            bytes,
            &mut None,
            1_000_000_000,
            rules,
            deadline,
            &mut budget,
            &mut counts,
            &mut |k, f, v, c| {
                assert_eq!(k, ProfileType::Alloc);
                assert_eq!(f[0].name.as_ref(), NO_STACK_FRAME);
                sums.push((v, c));
            },
        );
        (
            result,
            sums,
            counts.get(&ProfileType::Alloc).copied().unwrap_or_default(),
        )
    }

    #[test]
    fn a_time_budget_once_spent_stays_spent_and_none_never_is() {
        let mut spent = TimeBudget::new(Some(std::time::Instant::now()));
        assert!((0..3 * TimeBudget::EVERY).all(|_| spent.spent()));
        let mut unlimited = TimeBudget::new(None);
        assert!((0..3 * TimeBudget::EVERY).all(|_| !unlimited.spent()));
    }

    #[test]
    fn a_spent_time_budget_counts_the_events_as_dropped_undecoded() {
        let event = record(&ints(&[100, 5, 0, 1000]));
        let bytes = chunk(&empty_checkpoint(), &[event.clone(), event.clone(), event]);
        let past = std::time::Instant::now();
        let (result, sums, counts) = parse_within(&bytes, 10, Some(past));
        assert_eq!(result, Ok(()));
        assert!(sums.is_empty(), "{sums:?}");
        assert_eq!(
            counts,
            TypeCounts {
                raw_events: 3,
                parsed_events: 0,
                dropped_events: 3
            }
        );
        // A deadline not reached changes nothing.
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (_, sums, counts) = parse_within(&bytes, 10, Some(later));
        assert_eq!((sums, counts.parsed_events), (vec![(3000, 3)], 3));
    }

    #[test]
    fn events_are_summed_and_the_budget_drops_the_rest_undecoded() {
        let event = record(&ints(&[100, 5, 0, 1000]));
        let bytes = chunk(&empty_checkpoint(), &[event.clone(), event.clone(), event]);
        let (result, sums, counts) = parse(&bytes, 2);
        assert_eq!(result, Ok(()));
        assert_eq!(sums, vec![(2000, 2)]);
        assert_eq!(
            counts,
            TypeCounts {
                raw_events: 3,
                parsed_events: 2,
                dropped_events: 1
            }
        );
    }

    #[test]
    fn an_event_reading_past_its_record_is_an_error_with_its_offset() {
        // The record holds only the type and startTime; its weight would be read from the next record.
        let short = record(&ints(&[100, 5]));
        let next = record(&ints(&[100, 5, 0, 1000]));
        let bytes = chunk(&empty_checkpoint(), &[short, next]);
        let at = bytes.len() - 10 - 7; // the short record (7 bytes) before the next (10)
        let (result, sums, _) = parse(&bytes, 10);
        assert!(
            matches!(result, Err(DecodeError::Overrun { at: a, .. }) if a == at),
            "{result:?} (expected at {at})"
        );
        assert!(sums.is_empty());
    }

    #[test]
    fn checkpoints_with_huge_counts_or_forward_deltas_are_rejected() {
        // A pool count of 0x7fffffff.
        let huge = record(&ints(&[1, 0, 0, 0, 0, 0x7fff_ffff]));
        assert!(matches!(
            parse(&chunk(&huge, &[]), 10).0,
            Err(DecodeError::BadCount {
                count: 0x7fff_ffff,
                ..
            })
        ));
        // A delta pointing forward could loop; only backwards is accepted.
        let forward = record(&ints(&[1, 0, 0, 3, 0, 0]));
        assert!(matches!(
            parse(&chunk(&forward, &[]), 10).0,
            Err(DecodeError::BadCheckpoint { .. })
        ));
        // A pool of an undeclared type.
        let unknown = record(&ints(&[1, 0, 0, 0, 0, 1, 999, 1, 1, 1]));
        assert!(matches!(
            parse(&chunk(&unknown, &[]), 10).0,
            Err(DecodeError::UnknownType { id: 999, .. })
        ));
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
    fn idle_parks() {
        assert!(is_idle_park(None));
        assert!(is_idle_park(Some(
            "java/util/concurrent/locks/AbstractQueuedSynchronizer$ConditionObject"
        )));
        assert!(!is_idle_park(Some(
            "java/util/concurrent/locks/ReentrantLock$NonfairSync"
        )));
    }
}
