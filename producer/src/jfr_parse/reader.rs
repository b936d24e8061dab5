//! A bounds-checked cursor over one chunk's bytes: JFR's integers (LEB128-style
//! varints when the chunk uses compressed integers, big-endian otherwise), floats
//! and strings. Every read checks the remaining bytes; nothing here can panic.

use super::DecodeError;

/// String encodings (JDK `StringPool`, jfrs `byte_stream.rs`).
const STRING_NULL: u8 = 0;
const STRING_EMPTY: u8 = 1;
const STRING_CONSTANT_POOL: u8 = 2;
const STRING_UTF8: u8 = 3;
const STRING_CHAR_ARRAY: u8 = 4;
const STRING_LATIN1: u8 = 5;

/// A string value as stored: bytes are borrowed from the chunk, never copied here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Str<'a> {
    Null,
    Empty,
    /// Index into the `java.lang.String` constant pool.
    Pool(i64),
    Utf8(&'a [u8]),
    Latin1(&'a [u8]),
    /// UTF-16 code units (encoding 4), decoded because they are not bytes.
    Chars(String),
}

impl Str<'_> {
    /// The text, if the value is inline (pool references are resolved by the caller).
    pub(super) fn text(&self) -> Option<String> {
        match self {
            Str::Null | Str::Pool(_) => None,
            Str::Empty => Some(String::new()),
            Str::Utf8(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Str::Latin1(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
            Str::Chars(s) => Some(s.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    compressed: bool,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], pos: usize, compressed: bool) -> Reader<'a> {
        Reader {
            buf,
            pos,
            compressed,
        }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn truncated(&self, need: usize) -> DecodeError {
        DecodeError::Truncated {
            at: self.pos,
            need,
            left: self.remaining(),
        }
    }

    #[inline]
    pub(super) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        self.pos += n;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..N))
            .ok_or_else(|| self.truncated(N))?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        self.pos += N;
        Ok(out)
    }

    #[inline]
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated(1))?;
        self.pos += 1;
        Ok(b)
    }

    /// JFR's varint: 7 bits per byte, at most 9 bytes, the 9th carries 8 bits.
    #[inline(always)]
    pub(super) fn varint(&mut self) -> Result<i64, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        // Fast path: nine bytes available, so no per-byte bounds checks.
        if let Some(b) = rest.first_chunk::<9>() {
            let mut value: u64 = 0;
            for (i, &byte) in b.iter().enumerate().take(8) {
                value |= u64::from(byte & 0x7f) << (7 * i);
                if byte & 0x80 == 0 {
                    self.pos += i + 1;
                    return Ok(value as i64);
                }
            }
            self.pos += 9;
            return Ok((value | (u64::from(b[8]) << 56)) as i64);
        }
        match read_varint(rest) {
            Some((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            None => Err(DecodeError::BadVarint { at: self.pos }),
        }
    }

    /// A `long` (and the record size/type header fields in raw chunks).
    #[inline(always)]
    pub(super) fn long(&mut self) -> Result<i64, DecodeError> {
        if self.compressed {
            self.varint()
        } else {
            Ok(i64::from_be_bytes(self.bytes::<8>()?))
        }
    }

    /// An `int`; compressed values are truncated to 32 bits like the JDK does.
    #[inline]
    pub(super) fn int(&mut self) -> Result<i64, DecodeError> {
        if self.compressed {
            Ok(i64::from(self.varint()? as i32))
        } else {
            Ok(i64::from(i32::from_be_bytes(self.bytes::<4>()?)))
        }
    }

    #[inline]
    pub(super) fn short(&mut self) -> Result<i64, DecodeError> {
        if self.compressed {
            Ok(i64::from(self.varint()? as i16))
        } else {
            Ok(i64::from(i16::from_be_bytes(self.bytes::<2>()?)))
        }
    }

    #[inline]
    pub(super) fn char(&mut self) -> Result<char, DecodeError> {
        let unit = if self.compressed {
            self.varint()? as u32
        } else {
            u32::from(u16::from_be_bytes(self.bytes::<2>()?))
        };
        Ok(char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// A count or length: non-negative and at most the bytes left times
    /// `per_byte` (how many items one byte can hold at most), so nothing is
    /// allocated or looped over that the input cannot back.
    pub(super) fn count(&mut self, per_byte: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.int()?;
        let limit = self.remaining().saturating_mul(per_byte);
        match usize::try_from(n) {
            Ok(n) if n <= limit => Ok(n),
            _ => Err(DecodeError::BadCount {
                at,
                count: n,
                left: self.remaining(),
            }),
        }
    }

    pub(super) fn string(&mut self) -> Result<Str<'a>, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            STRING_NULL => Ok(Str::Null),
            STRING_EMPTY => Ok(Str::Empty),
            STRING_CONSTANT_POOL => Ok(Str::Pool(self.long()?)),
            enc @ (STRING_UTF8 | STRING_LATIN1) => {
                let len = self.count(1)?;
                let start = self.pos;
                self.skip(len)?;
                let bytes = self.buf.get(start..start + len).unwrap_or(&[]);
                Ok(if enc == STRING_UTF8 {
                    Str::Utf8(bytes)
                } else {
                    Str::Latin1(bytes)
                })
            }
            STRING_CHAR_ARRAY => {
                let len = self.count(1)?;
                let mut s = String::with_capacity(len.min(4096));
                for _ in 0..len {
                    s.push(self.char()?);
                }
                Ok(Str::Chars(s))
            }
            encoding => Err(DecodeError::BadString { at, encoding }),
        }
    }

    /// Skips a string without building it.
    pub(super) fn skip_string(&mut self) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.u8()? {
            STRING_NULL | STRING_EMPTY => Ok(()),
            STRING_CONSTANT_POOL => self.long().map(drop),
            STRING_UTF8 | STRING_LATIN1 => {
                let len = self.count(1)?;
                self.skip(len)
            }
            STRING_CHAR_ARRAY => {
                let len = self.count(1)?;
                for _ in 0..len {
                    self.char()?;
                }
                Ok(())
            }
            encoding => Err(DecodeError::BadString { at, encoding }),
        }
    }
}

/// Decodes one varint from the start of `b`: the value and its length in bytes.
pub(super) fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            value |= u64::from(byte) << 56;
            return Some((value as i64, 9));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value as i64, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_follow_jfr_encoding() {
        assert_eq!(read_varint(&[0x05]), Some((5, 1)));
        assert_eq!(read_varint(&[0x80, 0x01]), Some((128, 2)));
        // jfrs' own test vector.
        assert_eq!(read_varint(&[0x85, 0xb0, 0x03]), Some((55301, 3)));
        // Nine bytes: the ninth carries a full 8 bits.
        assert_eq!(read_varint(&[0xff; 9]), Some((-1, 9)));
        assert_eq!(read_varint(&[0x80]), None);
        assert_eq!(read_varint(&[]), None);
    }

    #[test]
    fn reads_past_the_end_are_errors_with_offsets() {
        let mut r = Reader::new(&[0x80, 0x80], 0, true);
        assert_eq!(r.varint(), Err(DecodeError::BadVarint { at: 0 }));
        let mut r = Reader::new(&[1, 2, 3], 1, false);
        assert_eq!(
            r.long(),
            Err(DecodeError::Truncated {
                at: 1,
                need: 8,
                left: 2
            })
        );
        let mut r = Reader::new(&[], 0, true);
        assert!(matches!(r.u8(), Err(DecodeError::Truncated { at: 0, .. })));
    }

    #[test]
    fn raw_integers_are_big_endian_and_ints_truncate_like_the_jdk() {
        let mut r = Reader::new(&[0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff], 0, false);
        assert_eq!(r.int(), Ok(256));
        assert_eq!(r.int(), Ok(-1));
        // A compressed int of 2^32 + 5 keeps its low 32 bits.
        let mut r = Reader::new(&[0x85, 0x80, 0x80, 0x80, 0x10], 0, true);
        assert_eq!(r.int(), Ok(5));
    }

    #[test]
    fn counts_larger_than_the_input_are_rejected_before_any_allocation() {
        // 0x7fffffff as a varint, then 2 bytes.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x07, 1, 2], 0, true);
        assert_eq!(
            r.count(1),
            Err(DecodeError::BadCount {
                at: 0,
                count: 0x7fff_ffff,
                left: 2
            })
        );
        // Negative counts too.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f], 0, true);
        assert!(matches!(
            r.count(1),
            Err(DecodeError::BadCount { count: -1, .. })
        ));
        // A string claiming more bytes than there are.
        let mut r = Reader::new(&[3, 10, b'a', b'b'], 0, true);
        assert!(matches!(
            r.string(),
            Err(DecodeError::BadCount { at: 1, .. })
        ));
    }

    #[test]
    fn strings_in_every_encoding() {
        let bytes = [
            0, 1, 2, 7, 3, 2, b'h', b'i', 4, 2, 0x68, 0xe9, 0x01, 5, 1, 0xe9, 9,
        ];
        let mut r = Reader::new(&bytes, 0, true);
        assert_eq!(r.string(), Ok(Str::Null));
        assert_eq!(r.string(), Ok(Str::Empty));
        assert_eq!(r.string(), Ok(Str::Pool(7)));
        assert_eq!(r.string().map(|s| s.text()), Ok(Some("hi".into())));
        assert_eq!(r.string().map(|s| s.text()), Ok(Some("hé".into())));
        assert_eq!(r.string().map(|s| s.text()), Ok(Some("é".into())));
        assert_eq!(
            r.string(),
            Err(DecodeError::BadString {
                at: 16,
                encoding: 9
            })
        );
    }
}
