//! The chunk's constant pools, as far as aggregation needs them: stack traces,
//! methods, classes, symbols, frame types and strings. Checkpoints are walked
//! once to index where each of those constants starts (other pools are skipped
//! value by value); a constant is decoded only when an event refers to it, and
//! each stack trace is resolved once per chunk.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use javelin_schema::wire::FrameType;

use super::metadata::{Encoding, Field, Metadata, skip_type, skip_value};
use super::reader::{Reader, Str};
use super::{DecodeError, Frame, Frames, HEADER_SIZE, class_name, frame_type};

const EVENT_TYPE_CHECKPOINT: i64 = 1;

/// Decoded bytes per chunk at most (constant index, resolved names and frames).
/// A chunk needing more is parsed as far as this goes; events whose stack no
/// longer fits are counted as dropped.
pub(super) const MAX_DECODED_BYTES_PER_CHUNK: usize = 64 << 20;
/// Approximate cost of one indexed constant (hash map slot and offset).
const INDEX_ENTRY_BYTES: usize = 24;
/// Approximate cost of one resolved frame besides its name.
const FRAME_BYTES: usize = std::mem::size_of::<Frame>();

/// A fast hasher for integer ids (the stack cache is hit once per event),
/// seeded per process so crafted ids cannot aim at one bucket.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new().hash_one(0x006a_6176_656c_696e_u64)
    })
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        let h = (self.0 ^ i ^ seed()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }

    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// A decoded field value (only what aggregation reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Val<'a> {
    Absent,
    Int(i64),
    Ref(i64),
    Str(Str<'a>),
}

impl Val<'_> {
    pub(super) fn int(&self) -> Option<i64> {
        match self {
            Val::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// Reads one non-array field's value, or skips it when it is something else.
pub(super) fn read_field<'a>(
    r: &mut Reader<'a>,
    meta: &Metadata,
    field: &Field,
    steps: &mut usize,
) -> Result<Val<'a>, DecodeError> {
    if field.array {
        skip_value(r, meta, field, 1, steps)?;
        return Ok(Val::Absent);
    }
    if field.constant_pool {
        return Ok(Val::Ref(r.long()?));
    }
    let ty = field
        .ty
        .and_then(|t| meta.get(t))
        .ok_or(DecodeError::UnknownType {
            at: r.pos(),
            id: field.class_id,
        })?;
    Ok(match ty.encoding {
        Encoding::Byte => Val::Int(i64::from(r.u8()?)),
        Encoding::Short => Val::Int(r.short()?),
        Encoding::Int => Val::Int(r.int()?),
        Encoding::Long => Val::Int(r.long()?),
        Encoding::String => Val::Str(r.string()?),
        _ => {
            skip_type(r, meta, ty, 1, steps)?;
            Val::Absent
        }
    })
}

/// Reads the fields `wanted[i]` of one object of type `ty` into `out[i]`,
/// skipping the rest; stops after the last wanted field.
pub(super) fn read_object<'a>(
    r: &mut Reader<'a>,
    meta: &Metadata,
    ty: u32,
    wanted: &[Option<usize>],
    out: &mut [Val<'a>],
    steps: &mut usize,
) -> Result<(), DecodeError> {
    let Some(ty) = meta.get(ty) else {
        return Ok(());
    };
    let last = wanted.iter().flatten().max().copied();
    let Some(last) = last else {
        return Ok(());
    };
    for (i, field) in ty.fields.iter().enumerate().take(last + 1) {
        match wanted.iter().position(|w| *w == Some(i)) {
            Some(slot) => {
                let v = read_field(r, meta, field, steps)?;
                if let Some(o) = out.get_mut(slot) {
                    *o = v;
                }
            }
            None => skip_value(r, meta, field, 1, steps)?,
        }
    }
    Ok(())
}

/// Where the fields aggregation reads sit in this chunk's types.
#[derive(Debug, Default)]
struct Layout {
    stack_trace: Option<u32>,
    frames: Option<usize>,
    frame_ty: Option<u32>,
    frame_method: Option<usize>,
    frame_line: Option<usize>,
    frame_type: Option<usize>,
    method_ty: Option<u32>,
    method_class: Option<usize>,
    method_name: Option<usize>,
    class_ty: Option<u32>,
    class_name: Option<usize>,
    symbol_ty: Option<u32>,
    symbol_string: Option<usize>,
    frame_type_ty: Option<u32>,
    frame_type_description: Option<usize>,
}

impl Layout {
    fn new(meta: &Metadata) -> Layout {
        let mut l = Layout::default();
        let field = |ty: Option<(u32, &super::metadata::Type)>, name: &str| {
            ty.and_then(|t| t.1.field(name))
        };
        let trace = meta.by_name("jdk.types.StackTrace");
        l.stack_trace = trace.map(|t| t.0);
        l.frames = field(trace, "frames");
        // Frames are inline objects (an array of StackFrame), as every producer writes them.
        l.frame_ty = trace
            .and_then(|t| l.frames.and_then(|f| t.1.fields.get(f)))
            .filter(|f| f.array && !f.constant_pool)
            .and_then(|f| f.ty);
        let frame = l.frame_ty.and_then(|i| meta.get(i).map(|t| (i, t)));
        l.frame_method = field(frame, "method");
        l.frame_line = field(frame, "lineNumber");
        l.frame_type = field(frame, "type");
        let method = meta.by_name("jdk.types.Method");
        l.method_ty = method.map(|t| t.0);
        l.method_class = field(method, "type");
        l.method_name = field(method, "name");
        let class = meta.by_name("java.lang.Class");
        l.class_ty = class.map(|t| t.0);
        l.class_name = field(class, "name");
        let symbol = meta.by_name("jdk.types.Symbol");
        l.symbol_ty = symbol.map(|t| t.0);
        l.symbol_string = field(symbol, "string");
        let ft = meta.by_name("jdk.types.FrameType");
        l.frame_type_ty = ft.map(|t| t.0);
        l.frame_type_description = field(ft, "description");
        l
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pool {
    StackTrace,
    Method,
    Class,
    Symbol,
    FrameType,
    String,
}

/// A stack resolved for this chunk, or why not.
#[derive(Debug, Clone)]
pub(super) enum Resolved {
    Frames(Frames),
    /// No stack trace (absent, unresolvable or empty): the `[no stack trace]` frame.
    NoStack,
    /// Over the chunk's memory budget: the event is dropped.
    OverBudget,
}

/// The indexed constant pools of one chunk and the caches built from them.
pub(super) struct Pools<'a> {
    chunk: &'a [u8],
    compressed: bool,
    layout: Layout,
    /// Type index → which pool it is (for the checkpoint walk).
    pools: Vec<(u32, Pool)>,
    string_ty: Option<u32>,
    offsets: [IdMap<usize>; 6],
    methods: IdMap<Option<Arc<str>>>,
    class_names: IdMap<Option<String>>,
    frame_types: IdMap<FrameType>,
    used: usize,
    /// Some constants were not indexed (memory budget): unresolvable stacks are dropped, not `[no stack trace]`.
    incomplete: bool,
}

impl<'a> Pools<'a> {
    /// Walks the checkpoint chain from the header's constant-pool offset backwards.
    pub(super) fn read(
        chunk: &'a [u8],
        compressed: bool,
        meta: &Metadata,
        first: usize,
    ) -> Result<Pools<'a>, DecodeError> {
        let layout = Layout::new(meta);
        let string_ty = meta.by_name("java.lang.String").map(|t| t.0);
        let mut pools = Vec::new();
        for (ty, pool) in [
            (layout.stack_trace, Pool::StackTrace),
            (layout.method_ty, Pool::Method),
            (layout.class_ty, Pool::Class),
            (layout.symbol_ty, Pool::Symbol),
            (layout.frame_type_ty, Pool::FrameType),
            (string_ty, Pool::String),
        ] {
            if let Some(ty) = ty {
                pools.push((ty, pool));
            }
        }
        let mut this = Pools {
            chunk,
            compressed,
            layout,
            pools,
            string_ty,
            offsets: Default::default(),
            methods: IdMap::default(),
            class_names: IdMap::default(),
            frame_types: IdMap::default(),
            used: 0,
            incomplete: false,
        };
        let mut offset = first;
        loop {
            let delta = this.read_checkpoint(meta, offset)?;
            if delta == 0 {
                return Ok(this);
            }
            // Deltas point back to the previous checkpoint; requiring that
            // bounds the walk by the number of records.
            let previous = i64::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(delta))
                .filter(|&p| delta < 0 && p >= HEADER_SIZE as i64);
            offset = match previous {
                Some(p) => p as usize,
                None => {
                    return Err(DecodeError::BadCheckpoint {
                        at: offset,
                        what: "delta to the previous checkpoint is not backwards inside the chunk",
                    });
                }
            };
        }
    }

    fn read_checkpoint(&mut self, meta: &Metadata, offset: usize) -> Result<i64, DecodeError> {
        let chunk = self.chunk;
        let mut r = Reader::new(chunk, offset, self.compressed);
        let size = r.int()?;
        let end = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .and_then(|s| offset.checked_add(s))
            .filter(|&e| e <= chunk.len())
            .ok_or(DecodeError::BadCheckpoint {
                at: offset,
                what: "record size outside the chunk",
            })?;
        // Reads stay inside this record.
        let record = chunk.get(..end).unwrap_or(&[]);
        let mut r = Reader::new(record, r.pos(), self.compressed);
        if r.long()? != EVENT_TYPE_CHECKPOINT {
            return Err(DecodeError::BadCheckpoint {
                at: offset,
                what: "not a checkpoint event",
            });
        }
        r.long()?; // start
        r.long()?; // duration
        let delta = r.long()?;
        r.u8()?; // flush / checkpoint type
        let pool_count = r.count(1)?;
        // Every value costs a step; values take a byte each except empty objects.
        let mut steps = end
            .saturating_sub(offset)
            .saturating_mul(4)
            .saturating_add(1024);
        for _ in 0..pool_count {
            let at = r.pos();
            let class_id = r.long()?;
            let count = r.count(1)?;
            let ty_index = meta
                .index_of(class_id)
                .ok_or(DecodeError::UnknownType { at, id: class_id })?;
            let ty = meta
                .get(ty_index)
                .ok_or(DecodeError::UnknownType { at, id: class_id })?;
            let pool = self.pools.iter().find(|p| p.0 == ty_index).map(|p| p.1);
            for _ in 0..count {
                let index = r.long()?;
                let start = r.pos();
                skip_type(&mut r, meta, ty, 0, &mut steps)?;
                if let Some(pool) = pool {
                    if self.used.saturating_add(INDEX_ENTRY_BYTES) > MAX_DECODED_BYTES_PER_CHUNK {
                        self.incomplete = true;
                        continue;
                    }
                    let map = &mut self.offsets[pool as usize];
                    // The earliest checkpoint is read last and wins, as in jfrs.
                    if map.insert(index, start).is_none() {
                        self.used += INDEX_ENTRY_BYTES;
                    }
                }
            }
        }
        Ok(delta)
    }

    fn reader_at(&self, pool: Pool, id: i64) -> Option<Reader<'a>> {
        let at = *self.offsets[pool as usize].get(&id)?;
        Some(Reader::new(self.chunk, at, self.compressed))
    }

    /// A string field's text, resolving `java.lang.String` pool references.
    pub(super) fn text(&self, meta: &Metadata, value: &Val<'_>) -> Option<String> {
        match value {
            Val::Str(Str::Pool(id)) | Val::Ref(id) => {
                let mut r = self.reader_at(Pool::String, *id)?;
                let ty = self.string_ty?;
                // A pooled string is a string value (never another reference, in practice).
                match meta.get(ty)?.encoding {
                    Encoding::String => match r.string().ok()? {
                        Str::Pool(_) => None,
                        s => s.text(),
                    },
                    _ => None,
                }
            }
            Val::Str(s) => s.text(),
            _ => None,
        }
    }

    /// A symbol's string (`jdk.types.Symbol.string`).
    fn symbol(&self, meta: &Metadata, id: i64) -> Option<String> {
        let mut r = self.reader_at(Pool::Symbol, id)?;
        let mut out = [Val::Absent];
        let mut steps = 1 << 16;
        read_object(
            &mut r,
            meta,
            self.layout.symbol_ty?,
            &[self.layout.symbol_string],
            &mut out,
            &mut steps,
        )
        .ok()?;
        self.text(meta, &out[0])
    }

    /// The internal name of a class (`java/lang/Thread`), cached per chunk.
    pub(super) fn class_name(&mut self, meta: &Metadata, id: i64) -> Option<String> {
        if let Some(name) = self.class_names.get(&id) {
            return name.clone();
        }
        let name = (|| {
            let mut r = self.reader_at(Pool::Class, id)?;
            let mut out = [Val::Absent];
            let mut steps = 1 << 16;
            read_object(
                &mut r,
                meta,
                self.layout.class_ty?,
                &[self.layout.class_name],
                &mut out,
                &mut steps,
            )
            .ok()?;
            match out[0] {
                Val::Ref(symbol) => self.symbol(meta, symbol),
                _ => None,
            }
        })();
        self.used = self
            .used
            .saturating_add(INDEX_ENTRY_BYTES + name.as_ref().map_or(0, String::len));
        self.class_names.insert(id, name.clone());
        name
    }

    /// `Class.method` of a method constant, cached per chunk; `None` if the method is not in the pool.
    fn method(&mut self, meta: &Metadata, id: i64) -> Option<Arc<str>> {
        if let Some(m) = self.methods.get(&id) {
            return m.clone();
        }
        let method = (|| {
            let mut r = self.reader_at(Pool::Method, id)?;
            let mut out = [Val::Absent, Val::Absent];
            let mut steps = 1 << 16;
            read_object(
                &mut r,
                meta,
                self.layout.method_ty?,
                &[self.layout.method_class, self.layout.method_name],
                &mut out,
                &mut steps,
            )
            .ok()?;
            let class = match out[0] {
                Val::Ref(c) => self.class_name(meta, c),
                _ => None,
            }
            .unwrap_or_default();
            let name = match out[1] {
                Val::Ref(s) => self.symbol(meta, s),
                _ => None,
            }
            .unwrap_or_default();
            Some(Arc::<str>::from(format!("{}.{name}", class_name(&class))))
        })();
        self.used = self
            .used
            .saturating_add(INDEX_ENTRY_BYTES + method.as_ref().map_or(0, |m| m.len()));
        self.methods.insert(id, method.clone());
        method
    }

    fn frame_type(&mut self, meta: &Metadata, id: i64) -> FrameType {
        if let Some(t) = self.frame_types.get(&id) {
            return *t;
        }
        let kind = (|| {
            let mut r = self.reader_at(Pool::FrameType, id)?;
            let mut out = [Val::Absent];
            let mut steps = 1 << 16;
            read_object(
                &mut r,
                meta,
                self.layout.frame_type_ty?,
                &[self.layout.frame_type_description],
                &mut out,
                &mut steps,
            )
            .ok()?;
            self.text(meta, &out[0]).map(|d| frame_type(&d))
        })()
        .unwrap_or(FrameType::Unspecified);
        self.used = self.used.saturating_add(INDEX_ENTRY_BYTES);
        self.frame_types.insert(id, kind);
        kind
    }

    /// Resolves a stack-trace constant to frames, root first.
    pub(super) fn stack(&mut self, meta: &Metadata, id: i64) -> Resolved {
        if self.used > MAX_DECODED_BYTES_PER_CHUNK {
            return Resolved::OverBudget;
        }
        let unresolved = if self.incomplete {
            Resolved::OverBudget
        } else {
            Resolved::NoStack
        };
        let Some(mut r) = self.reader_at(Pool::StackTrace, id) else {
            return unresolved;
        };
        match self.read_frames(meta, &mut r) {
            Ok(Some(frames)) if frames.is_empty() => Resolved::NoStack,
            Ok(Some(frames)) => {
                self.used = self
                    .used
                    .saturating_add(frames.len().saturating_mul(FRAME_BYTES) + INDEX_ENTRY_BYTES);
                Resolved::Frames(frames.into())
            }
            Ok(_) => unresolved,
            Err(_) => Resolved::NoStack,
        }
    }

    /// The frames of the stack trace at `r`; `None` when a frame's method is not in the pool.
    fn read_frames(
        &mut self,
        meta: &Metadata,
        r: &mut Reader<'a>,
    ) -> Result<Option<Vec<Frame>>, DecodeError> {
        let l = &self.layout;
        let (Some(trace_ty), Some(frames_field), Some(frame_ty)) =
            (l.stack_trace, l.frames, l.frame_ty)
        else {
            return Ok(None);
        };
        let wanted = [l.frame_method, l.frame_line, l.frame_type];
        let Some(trace) = meta.get(trace_ty) else {
            return Ok(None);
        };
        let mut steps = r.remaining().saturating_mul(4).saturating_add(1024);
        let mut raw: Vec<(i64, i32, Option<i64>)> = Vec::new();
        for (i, field) in trace.fields.iter().enumerate() {
            if i != frames_field {
                skip_value(r, meta, field, 1, &mut steps)?;
                continue;
            }
            // A frame takes at least one byte.
            let n = r.count(1)?;
            raw.reserve(n.min(4096));
            for _ in 0..n {
                let mut out = [Val::Absent, Val::Absent, Val::Absent];
                read_object(r, meta, frame_ty, &wanted, &mut out, &mut steps)?;
                // Skip the frame's remaining fields.
                if let Some(t) = meta.get(frame_ty) {
                    let last = wanted.iter().flatten().max().map_or(0, |m| m + 1);
                    for field in t.fields.iter().skip(last) {
                        skip_value(r, meta, field, 2, &mut steps)?;
                    }
                }
                let Val::Ref(method) = out[0] else {
                    return Ok(None);
                };
                // JDK writes -1 for an unknown line, async-profiler 0: both become 0.
                let line = out[1].int().map_or(0, |l| (l as i32).max(0));
                let kind = match out[2] {
                    Val::Ref(t) => Some(t),
                    _ => None,
                };
                raw.push((method, line, kind));
            }
            break;
        }
        let mut frames = Vec::with_capacity(raw.len());
        // JFR lists the leaf first; the wire contract is root first.
        for (method, line, kind) in raw.into_iter().rev() {
            let Some(name) = self.method(meta, method) else {
                return Ok(None);
            };
            let kind = kind.map_or(FrameType::Unspecified, |k| self.frame_type(meta, k));
            frames.push(Frame {
                name,
                line,
                kind: kind as i32,
            });
        }
        Ok(Some(frames))
    }

    pub(super) fn used(&self) -> usize {
        self.used
    }
}
