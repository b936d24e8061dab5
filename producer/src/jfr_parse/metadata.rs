//! The chunk's metadata event: the type ids and field layouts of every event and
//! constant-pool type. Read without recursion (an explicit stack, depth-limited);
//! every count is checked against the bytes left before anything is allocated.

use std::collections::HashMap;

use super::DecodeError;
use super::reader::Reader;

/// Metadata elements nest root → metadata → class → field → annotation; real
/// files use 5 levels. Anything deeper is not JFR.
pub(super) const MAX_ELEMENT_DEPTH: usize = 16;
/// Composite values (inline objects inside objects) nest a few levels in real
/// files (event → StackTrace → StackFrame); this bounds skipping them.
pub(super) const MAX_VALUE_DEPTH: usize = 16;

const EVENT_TYPE_METADATA: i64 = 0;

/// How a type's values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// `boolean`, `byte`: one raw byte.
    Byte,
    /// `short`, `int`, `long`, `char`: a (compressed) integer.
    Short,
    Int,
    Long,
    Char,
    Float,
    Double,
    String,
    /// An object: its fields in order.
    Composite,
}

impl Encoding {
    fn of(name: &str) -> Encoding {
        match name {
            "boolean" | "byte" => Encoding::Byte,
            "short" => Encoding::Short,
            "int" => Encoding::Int,
            "long" => Encoding::Long,
            "char" => Encoding::Char,
            "float" => Encoding::Float,
            "double" => Encoding::Double,
            "java.lang.String" => Encoding::String,
            _ => Encoding::Composite,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub name: String,
    /// Index into [`Metadata::types`]; `None` when the class id is not declared.
    pub ty: Option<u32>,
    pub class_id: i64,
    /// The value is an index into the type's constant pool.
    pub constant_pool: bool,
    pub array: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Type {
    pub id: i64,
    pub name: String,
    pub encoding: Encoding,
    pub fields: Vec<Field>,
}

impl Type {
    pub(super) fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

#[derive(Debug, Default)]
pub(super) struct Metadata {
    pub types: Vec<Type>,
    by_id: HashMap<i64, u32>,
}

impl Metadata {
    pub(super) fn index_of(&self, id: i64) -> Option<u32> {
        self.by_id.get(&id).copied()
    }

    pub(super) fn by_name(&self, name: &str) -> Option<(u32, &Type)> {
        self.types
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
            .map(|(i, t)| (i as u32, t))
    }

    pub(super) fn get(&self, index: u32) -> Option<&Type> {
        self.types.get(index as usize)
    }

    /// Reads the metadata event at `offset` of `chunk`.
    pub(super) fn read(
        chunk: &[u8],
        offset: usize,
        compressed: bool,
    ) -> Result<Metadata, DecodeError> {
        let mut r = Reader::new(chunk, offset, compressed);
        r.int()?; // size, checked by the record walk
        let kind = r.long()?;
        if kind != EVENT_TYPE_METADATA {
            return Err(DecodeError::BadMetadata {
                at: offset,
                what: "the metadata offset does not point at a metadata event",
            });
        }
        r.long()?; // start
        r.long()?; // duration
        r.long()?; // metadata id
        // Each string takes at least one byte.
        let count = r.count(1)?;
        let mut strings: Vec<Option<String>> = Vec::with_capacity(count);
        for _ in 0..count {
            let at = r.pos();
            let s = r.string()?;
            if let super::reader::Str::Pool(_) = s {
                return Err(DecodeError::BadMetadata {
                    at,
                    what: "a metadata string refers to a constant pool",
                });
            }
            strings.push(s.text());
        }
        let text = |r: &mut Reader<'_>| -> Result<&str, DecodeError> {
            let at = r.pos();
            let i = r.int()?;
            usize::try_from(i)
                .ok()
                .and_then(|i| strings.get(i))
                .and_then(|s| s.as_deref())
                .ok_or(DecodeError::BadMetadata {
                    at,
                    what: "string index outside the string table",
                })
        };
        let mut types: Vec<Type> = Vec::new();
        // Explicit stack of open elements: (what it is, children left).
        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Root,
            Metadata,
            Class,
            Field,
            Other,
        }
        let mut stack: Vec<(Kind, usize)> = Vec::new();
        text(&mut r)?; // root element name
        let mut next = Kind::Root;
        loop {
            let at = r.pos();
            // Each attribute takes at least two bytes.
            let attributes = r.count(1)?;
            let mut id = None;
            let mut name = None;
            let mut class = None;
            let mut constant_pool = false;
            let mut dimension = 0i32;
            for _ in 0..attributes {
                let key = text(&mut r)?;
                let value = text(&mut r)?;
                match (next, key) {
                    (Kind::Class, "id") => id = Some(parse_i64(value, at)?),
                    (Kind::Class | Kind::Field, "name") => name = Some(value.to_string()),
                    (Kind::Field, "class") => class = Some(parse_i64(value, at)?),
                    (Kind::Field, "constantPool") => constant_pool = value == "true",
                    (Kind::Field, "dimension") => {
                        dimension = value.parse().map_err(|_| DecodeError::BadMetadata {
                            at,
                            what: "field dimension is not a number",
                        })?
                    }
                    _ => {}
                }
            }
            match next {
                Kind::Class => {
                    types.push(Type {
                        id: id.ok_or(DecodeError::BadMetadata {
                            at,
                            what: "class without id",
                        })?,
                        encoding: Encoding::Composite,
                        name: name.ok_or(DecodeError::BadMetadata {
                            at,
                            what: "class without name",
                        })?,
                        fields: Vec::new(),
                    });
                }
                Kind::Field => {
                    let owner = types.last_mut().ok_or(DecodeError::BadMetadata {
                        at,
                        what: "field outside a class",
                    })?;
                    owner.fields.push(Field {
                        name: name.ok_or(DecodeError::BadMetadata {
                            at,
                            what: "field without name",
                        })?,
                        ty: None,
                        class_id: class.ok_or(DecodeError::BadMetadata {
                            at,
                            what: "field without class",
                        })?,
                        constant_pool,
                        array: dimension > 0,
                    });
                }
                _ => {}
            }
            // Each child takes at least three bytes.
            let children = r.count(1)?;
            stack.push((next, children));
            if stack.len() > MAX_ELEMENT_DEPTH {
                return Err(DecodeError::TooDeep {
                    at,
                    limit: MAX_ELEMENT_DEPTH,
                });
            }
            // Close finished elements, then open the next child, if any.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(Metadata::finish(types));
                };
                if top.1 == 0 {
                    stack.pop();
                    continue;
                }
                top.1 -= 1;
                let parent = top.0;
                let child_at = r.pos();
                let child = text(&mut r)?;
                next = match (parent, child) {
                    (Kind::Root, "metadata") => Kind::Metadata,
                    (Kind::Metadata, "class") => Kind::Class,
                    (Kind::Class, "field") => Kind::Field,
                    (_, "metadata" | "class" | "field" | "region" | "annotation" | "setting") => {
                        Kind::Other
                    }
                    _ => {
                        return Err(DecodeError::BadMetadata {
                            at: child_at,
                            what: "unknown metadata element",
                        });
                    }
                };
                break;
            }
        }
    }

    fn finish(mut types: Vec<Type>) -> Metadata {
        let mut by_id = HashMap::with_capacity(types.len());
        for (i, t) in types.iter_mut().enumerate() {
            t.encoding = Encoding::of(&t.name);
            // A later declaration of the same id wins, as in jfrs.
            by_id.insert(t.id, i as u32);
        }
        for t in &mut types {
            for f in &mut t.fields {
                f.ty = by_id.get(&f.class_id).copied();
            }
        }
        Metadata { types, by_id }
    }
}

fn parse_i64(value: &str, at: usize) -> Result<i64, DecodeError> {
    value.parse().map_err(|_| DecodeError::BadMetadata {
        at,
        what: "a class id is not a number",
    })
}

/// Skips one value of type `ty` (a field's single value or array element).
/// `steps` bounds the work: every value visited costs one, so types made of
/// empty objects cannot make skipping take longer than the input justifies.
pub(super) fn skip_value(
    r: &mut Reader<'_>,
    meta: &Metadata,
    field: &Field,
    depth: usize,
    steps: &mut usize,
) -> Result<(), DecodeError> {
    if field.array {
        // A value takes at least one byte unless it is an empty object, which
        // the step budget bounds.
        let n = r.count(1)?;
        for _ in 0..n {
            skip_single(r, meta, field, depth, steps)?;
        }
        Ok(())
    } else {
        skip_single(r, meta, field, depth, steps)
    }
}

fn skip_single(
    r: &mut Reader<'_>,
    meta: &Metadata,
    field: &Field,
    depth: usize,
    steps: &mut usize,
) -> Result<(), DecodeError> {
    *steps = steps
        .checked_sub(1)
        .ok_or(DecodeError::TooMuchWork { at: r.pos() })?;
    if field.constant_pool {
        return r.long().map(drop);
    }
    let ty = field
        .ty
        .and_then(|t| meta.get(t))
        .ok_or(DecodeError::UnknownType {
            at: r.pos(),
            id: field.class_id,
        })?;
    skip_type(r, meta, ty, depth, steps)
}

/// Skips one value of `ty` (not a constant-pool reference).
pub(super) fn skip_type(
    r: &mut Reader<'_>,
    meta: &Metadata,
    ty: &Type,
    depth: usize,
    steps: &mut usize,
) -> Result<(), DecodeError> {
    match ty.encoding {
        Encoding::Byte => r.skip(1),
        Encoding::Short => r.short().map(drop),
        Encoding::Int => r.int().map(drop),
        Encoding::Long => r.long().map(drop),
        Encoding::Char => r.char().map(drop),
        Encoding::Float => r.skip(4),
        Encoding::Double => r.skip(8),
        Encoding::String => r.skip_string(),
        Encoding::Composite => {
            if depth >= MAX_VALUE_DEPTH {
                return Err(DecodeError::TooDeep {
                    at: r.pos(),
                    limit: MAX_VALUE_DEPTH,
                });
            }
            for field in &ty.fields {
                skip_value(r, meta, field, depth + 1, steps)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Writes a metadata event (compressed integers) from a nested element description.
    pub(crate) struct MetaWriter {
        pub strings: Vec<String>,
        pub body: Vec<u8>,
    }

    pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
        for _ in 0..8 {
            if v < 0x80 {
                out.push(v as u8);
                return;
            }
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    impl MetaWriter {
        pub(crate) fn new() -> MetaWriter {
            MetaWriter {
                strings: Vec::new(),
                body: Vec::new(),
            }
        }

        fn string(&mut self, s: &str) -> u64 {
            if let Some(i) = self.strings.iter().position(|x| x == s) {
                return i as u64;
            }
            self.strings.push(s.to_string());
            (self.strings.len() - 1) as u64
        }

        /// Opens an element: name, attributes, number of children to follow.
        pub(crate) fn element(&mut self, name: &str, attrs: &[(&str, &str)], children: u64) {
            let n = self.string(name);
            varint(&mut self.body, n);
            varint(&mut self.body, attrs.len() as u64);
            for (k, v) in attrs {
                let k = self.string(k);
                let v = self.string(v);
                varint(&mut self.body, k);
                varint(&mut self.body, v);
            }
            varint(&mut self.body, children);
        }

        /// The whole metadata record (size, type 0, start, duration, id, strings, root).
        pub(crate) fn record(&self) -> Vec<u8> {
            let mut inner = Vec::new();
            varint(&mut inner, 0); // type
            varint(&mut inner, 0); // start
            varint(&mut inner, 0); // duration
            varint(&mut inner, 1); // metadata id
            varint(&mut inner, self.strings.len() as u64);
            for s in &self.strings {
                inner.push(3);
                varint(&mut inner, s.len() as u64);
                inner.extend_from_slice(s.as_bytes());
            }
            inner.extend_from_slice(&self.body);
            // Size as a fixed 5-byte varint, so it does not depend on itself.
            let size = inner.len() as u64 + 5;
            let mut out = vec![
                (size as u8 & 0x7f) | 0x80,
                ((size >> 7) as u8 & 0x7f) | 0x80,
                ((size >> 14) as u8 & 0x7f) | 0x80,
                ((size >> 21) as u8 & 0x7f) | 0x80,
                (size >> 28) as u8,
            ];
            out.extend_from_slice(&inner);
            out
        }
    }

    fn small() -> MetaWriter {
        let mut w = MetaWriter::new();
        w.element("root", &[], 1);
        w.element("metadata", &[], 3);
        w.element("class", &[("id", "1"), ("name", "long")], 0);
        w.element("class", &[("id", "20"), ("name", "jdk.types.Symbol")], 1);
        w.element("field", &[("name", "string"), ("class", "21")], 0);
        w.element("class", &[("id", "21"), ("name", "java.lang.String")], 2);
        w.element("annotation", &[("class", "99"), ("value", "x")], 0);
        w.element("setting", &[], 0);
        w
    }

    #[test]
    fn metadata_types_fields_and_encodings() {
        let bytes = small().record();
        let meta = Metadata::read(&bytes, 0, true).expect("metadata");
        assert_eq!(meta.types.len(), 3);
        let (_, symbol) = meta.by_name("jdk.types.Symbol").expect("symbol");
        assert_eq!(symbol.id, 20);
        assert_eq!(symbol.encoding, Encoding::Composite);
        assert_eq!(symbol.fields[0].name, "string");
        assert_eq!(symbol.fields[0].ty, meta.index_of(21));
        assert!(!symbol.fields[0].constant_pool && !symbol.fields[0].array);
        assert_eq!(
            meta.by_name("long").map(|t| t.1.encoding),
            Some(Encoding::Long)
        );
        assert_eq!(
            meta.by_name("java.lang.String").map(|t| t.1.encoding),
            Some(Encoding::String)
        );
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        let mut w = MetaWriter::new();
        w.element("root", &[], 1);
        for _ in 0..10_000 {
            w.element("annotation", &[], 1);
        }
        let bytes = w.record();
        assert_eq!(
            Metadata::read(&bytes, 0, true).map(|_| ()),
            Err(DecodeError::TooDeep {
                at: match Metadata::read(&bytes, 0, true) {
                    Err(DecodeError::TooDeep { at, .. }) => at,
                    _ => 0,
                },
                limit: MAX_ELEMENT_DEPTH
            })
        );
    }

    #[test]
    fn huge_counts_and_truncation_are_rejected() {
        // A string table claiming 0x7fffffff strings.
        let mut bytes = Vec::new();
        for v in [40u64, 0, 0, 0, 1, 0x7fff_ffff] {
            varint(&mut bytes, v);
        }
        bytes.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Metadata::read(&bytes, 0, true),
            Err(DecodeError::BadCount {
                count: 0x7fff_ffff,
                ..
            })
        ));
        // Children claiming more than the bytes left.
        let mut w = MetaWriter::new();
        w.element("root", &[], 1_000_000);
        assert!(matches!(
            Metadata::read(&w.record(), 0, true),
            Err(DecodeError::BadCount {
                count: 1_000_000,
                ..
            })
        ));
        // Every truncation of a good record is an error, never a panic.
        let good = small().record();
        for cut in 0..good.len() {
            assert!(
                Metadata::read(&good[..cut], 0, true).is_err(),
                "cut at {cut}"
            );
        }
        // Not a metadata event.
        let mut other = good.clone();
        other[5] = 1;
        assert!(matches!(
            Metadata::read(&other, 0, true),
            Err(DecodeError::BadMetadata { at: 0, .. })
        ));
    }

    #[test]
    fn skipping_empty_objects_is_bounded_by_the_step_budget() {
        // class 30 "E" has no fields; class 31 "A" has an array of E.
        let mut w = MetaWriter::new();
        w.element("root", &[], 1);
        w.element("metadata", &[], 2);
        w.element("class", &[("id", "30"), ("name", "E")], 0);
        w.element("class", &[("id", "31"), ("name", "A")], 1);
        w.element(
            "field",
            &[("name", "es"), ("class", "30"), ("dimension", "1")],
            0,
        );
        let meta = Metadata::read(&w.record(), 0, true).expect("metadata");
        let a = meta.by_name("A").expect("A").1;
        // 100 empty elements backed by 100 padding bytes.
        let mut value = Vec::new();
        varint(&mut value, 100);
        value.extend_from_slice(&[0; 100]);
        let mut steps = 50;
        assert!(matches!(
            skip_type(&mut Reader::new(&value, 0, true), &meta, a, 0, &mut steps),
            Err(DecodeError::TooMuchWork { .. })
        ));
        let mut steps = 1000;
        let mut r = Reader::new(&value, 0, true);
        assert_eq!(skip_type(&mut r, &meta, a, 0, &mut steps), Ok(()));
        assert_eq!(r.pos(), 1);
    }
}
