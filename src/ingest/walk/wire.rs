//! The protobuf wire format, read and checked as prost checks it: keys,
//! varints, lengths, nested messages under prost's recursion limit,
//! UTF-8 strings, fixed-width fields, unknown fields skipped; and the
//! error that names the field a fault is in. `walk.rs` reads OTLP's
//! messages with these.

/// prost's `RECURSION_LIMIT`: how deep messages may nest.
pub(super) const RECURSION_LIMIT: u32 = 100;

/// Wire types.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const START_GROUP: u8 = 3;
pub(super) const END_GROUP: u8 = 4;
pub(super) const FIXED32: u8 = 5;

/// Why bytes are not an `ExportTraceServiceRequest`, and in which field.
/// Boxed: every read returns a `Result`, and a small error keeps those in
/// registers on the path that does not fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", path(&.0.at), .0.why)]
pub struct WalkError(Box<Fault>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    why: Why,
    /// Innermost field last once reversed: (field, index in its list).
    at: Vec<(&'static str, Option<usize>)>,
}

fn path(at: &[(&'static str, Option<usize>)]) -> String {
    let mut out = String::new();
    for (i, (field, index)) in at.iter().rev().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(field);
        if let Some(n) = index {
            out.push_str(&format!("[{n}]"));
        }
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    out
}

/// The wire-format faults, as prost names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Why {
    #[error("invalid varint")]
    Varint,
    #[error("invalid key value: {0}")]
    Key(u64),
    #[error("invalid wire type value: {0}")]
    WireTypeValue(u8),
    #[error("invalid tag value: 0")]
    Tag,
    #[error("invalid wire type: {actual} (expected {expected})")]
    WireType { actual: u8, expected: u8 },
    #[error("buffer underflow")]
    Underflow,
    #[error("invalid string value: data is not UTF-8 encoded")]
    Utf8,
    #[error("recursion limit reached")]
    Recursion,
    #[error("unexpected end group tag")]
    EndGroup,
}

impl From<Why> for WalkError {
    #[cold]
    fn from(why: Why) -> Self {
        WalkError(Box::new(Fault {
            why,
            at: Vec::new(),
        }))
    }
}

impl WalkError {
    #[cold]
    fn at(mut self, field: &'static str, index: Option<usize>) -> Self {
        self.0.at.push((field, index));
        self
    }
}

pub(super) type R<T> = Result<T, WalkError>;

/// Adds the field's name to an error on the way out.
pub(super) trait In<T> {
    fn within(self, field: &'static str) -> R<T>;
    fn nth(self, field: &'static str, i: usize) -> R<T>;
}

impl<T> In<T> for R<T> {
    #[inline]
    fn within(self, field: &'static str) -> R<T> {
        self.map_err(|e| e.at(field, None))
    }
    #[inline]
    fn nth(self, field: &'static str, i: usize) -> R<T> {
        self.map_err(|e| e.at(field, Some(i)))
    }
}

/// Calls `field` with each field's tag and wire type, positioned at its
/// value, until `body` is used up.
#[inline(always)]
pub(super) fn fields<'a>(
    mut body: &'a [u8],
    mut field: impl FnMut(u32, u8, &mut &'a [u8]) -> R<()>,
) -> R<()> {
    while !body.is_empty() {
        let (tag, wire) = key(&mut body)?;
        field(tag, wire, &mut body)?;
    }
    Ok(())
}

#[inline(always)]
pub(super) fn varint(b: &mut &[u8]) -> R<u64> {
    let bytes = *b;
    match bytes.first() {
        Some(&byte) if byte < 0x80 => {
            *b = &bytes[1..];
            Ok(u64::from(byte))
        }
        _ => varint_long(b),
    }
}

/// At most 10 bytes, the tenth 0 or 1 (a u64 cannot hold more).
pub(super) fn varint_long(b: &mut &[u8]) -> R<u64> {
    let bytes = *b;
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(10).enumerate() {
        if i == 9 && byte >= 0x02 {
            return Err(Why::Varint.into());
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *b = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(Why::Varint.into())
}

#[inline(always)]
pub(super) fn key(b: &mut &[u8]) -> R<(u32, u8)> {
    let key = varint(b)?;
    if key > u64::from(u32::MAX) {
        return Err(Why::Key(key).into());
    }
    let wire = (key & 7) as u8;
    if wire > 5 {
        return Err(Why::WireTypeValue(wire).into());
    }
    let tag = key as u32 >> 3;
    if tag == 0 {
        return Err(Why::Tag.into());
    }
    Ok((tag, wire))
}

#[inline(always)]
pub(super) fn want(actual: u8, expected: u8) -> R<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Why::WireType { actual, expected }.into())
    }
}

/// A length-delimited value's bytes.
#[inline(always)]
pub(super) fn len<'a>(b: &mut &'a [u8]) -> R<&'a [u8]> {
    let n = varint(b)?;
    if n > b.len() as u64 {
        return Err(Why::Underflow.into());
    }
    let (value, rest) = b.split_at(n as usize);
    *b = rest;
    Ok(value)
}

/// A nested message's bytes and the recursion budget of its fields.
#[inline(always)]
pub(super) fn message<'a>(wire: u8, b: &mut &'a [u8], ctx: u32) -> R<(&'a [u8], u32)> {
    want(wire, LEN)?;
    if ctx == 0 {
        return Err(Why::Recursion.into());
    }
    Ok((len(b)?, ctx - 1))
}

#[inline(always)]
pub(super) fn bytes<'a>(wire: u8, b: &mut &'a [u8]) -> R<&'a [u8]> {
    want(wire, LEN)?;
    len(b)
}

#[inline(always)]
pub(super) fn string<'a>(wire: u8, b: &mut &'a [u8]) -> R<&'a str> {
    std::str::from_utf8(bytes(wire, b)?).map_err(|_| Why::Utf8.into())
}

/// A string field's bytes, checked as UTF-8 but not made a `str`: most
/// strings are ASCII, which an inlined check tells faster than a call to
/// `from_utf8` (a sixth of the walk went there).
#[inline(always)]
pub(super) fn checked<'a>(wire: u8, b: &mut &'a [u8]) -> R<&'a [u8]> {
    let v = bytes(wire, b)?;
    if v.is_ascii() || std::str::from_utf8(v).is_ok() {
        Ok(v)
    } else {
        Err(Why::Utf8.into())
    }
}

/// A string field not read, checked.
#[inline(always)]
pub(super) fn text(wire: u8, b: &mut &[u8]) -> R<()> {
    checked(wire, b).map(drop)
}

/// Bytes `checked` passed, as the `str` they are.
pub(super) fn as_str(checked: &[u8]) -> &str {
    // Never the default: `checked` has seen these bytes are UTF-8.
    std::str::from_utf8(checked).unwrap_or_default()
}

/// Any varint field (int32, int64, uint32, bool, enum), untruncated.
#[inline(always)]
pub(super) fn int(wire: u8, b: &mut &[u8]) -> R<u64> {
    want(wire, VARINT)?;
    varint(b)
}

#[inline(always)]
pub(super) fn fixed64(wire: u8, b: &mut &[u8]) -> R<u64> {
    want(wire, FIXED64)?;
    let (value, rest) = b.split_first_chunk::<8>().ok_or(Why::Underflow)?;
    *b = rest;
    Ok(u64::from_le_bytes(*value))
}

#[inline(always)]
pub(super) fn fixed32(wire: u8, b: &mut &[u8]) -> R<u32> {
    want(wire, FIXED32)?;
    let (value, rest) = b.split_first_chunk::<4>().ok_or(Why::Underflow)?;
    *b = rest;
    Ok(u32::from_le_bytes(*value))
}

/// An unknown field skipped, as `prost::encoding::skip_field` does.
pub(super) fn skip(wire: u8, tag: u32, b: &mut &[u8], ctx: u32) -> R<()> {
    if ctx == 0 {
        return Err(Why::Recursion.into());
    }
    let n = match wire {
        VARINT => {
            varint(b)?;
            0
        }
        FIXED64 => 8,
        FIXED32 => 4,
        LEN => varint(b)?,
        START_GROUP => loop {
            let (inner_tag, inner) = key(b)?;
            if inner == END_GROUP {
                if inner_tag != tag {
                    return Err(Why::EndGroup.into());
                }
                break 0;
            }
            skip(inner, inner_tag, b, ctx - 1)?;
        },
        _ => return Err(Why::EndGroup.into()),
    };
    if n > b.len() as u64 {
        return Err(Why::Underflow.into());
    }
    *b = &b[n as usize..];
    Ok(())
}
