//! `ExportTraceServiceRequest` protobuf walked in place: the fields the
//! mapper reads are borrowed from the request's bytes, everything else is
//! checked and skipped by wire type, and each span goes through the same
//! `Mapper::span` as a prost-decoded one. No allocation per span or
//! attribute (one scratch list of a span's attributes is reused).
//!
//! It accepts exactly what `prost` accepts for this message: the same
//! varint, key, wire-type, length and UTF-8 checks on every field it knows
//! (read or not), unknown fields and groups skipped as `prost::encoding::
//! skip_field` does, and prost's recursion limit of 100 nested messages
//! (attribute values nest through array and key-value-list values).
//! Singular fields repeated in the input follow protobuf's merge rules as
//! prost applies them: the last scalar wins, and a repeated message field
//! that is not `repeated` (`resource`, `status`, an attribute's `value`)
//! merges into the earlier one. `walk/props.rs` checks all of this against
//! prost on generated and mutated messages.

use super::facts::{EXCEPTION_EVENT, EXCEPTION_TYPE};
use super::identity::{Found, Scan};
use super::otlp::Mapper;
use super::span::{SpanView, Val};
use crate::model::Batch;
use wire::*;

pub use wire::WalkError;

mod wire;

/// Maps a protobuf `ExportTraceServiceRequest` as `Mapper::traces` maps
/// its prost decoding, or says why prost would not decode it.
pub fn traces<'a>(mapper: &'a Mapper, buf: &'a [u8]) -> Result<Batch<'a>, WalkError> {
    let mut walk = Walk {
        mapper,
        batch: Batch::default(),
        attrs: Vec::new(),
    };
    let mut r = 0;
    fields(buf, |tag, wire, b| match tag {
        1 => {
            let (body, ctx) = message(wire, b, RECURSION_LIMIT).nth("resource_spans", r)?;
            walk.resource_spans(body, ctx, r).nth("resource_spans", r)?;
            r += 1;
            Ok(())
        }
        _ => skip(wire, tag, b, RECURSION_LIMIT),
    })?;
    Ok(walk.batch)
}

struct Walk<'a> {
    mapper: &'a Mapper,
    batch: Batch<'a>,
    /// The current span's attributes (reused from span to span).
    attrs: Vec<(&'a str, Val<'a>)>,
}

impl<'a> Walk<'a> {
    fn resource_spans(&mut self, body: &'a [u8], ctx: u32, r: usize) -> R<()> {
        // The resource may come after the spans it describes (and in
        // several parts, merged): find it first.
        let keys = self.mapper.identity_keys();
        let mut scan = Scan::default();
        let mut scopes = 0;
        fields(body, |tag, wire, b| match tag {
            1 => {
                let (body, ctx) = message(wire, b, ctx).within("resource")?;
                resource(body, ctx, |k, v| scan.offer(k, v, keys)).within("resource")
            }
            2 => {
                message(wire, b, ctx).nth("scope_spans", scopes)?;
                scopes += 1;
                Ok(())
            }
            3 => text(wire, b).within("schema_url"),
            _ => skip(wire, tag, b, ctx),
        })?;
        let resource = scan.found;
        let mut s = 0;
        fields(body, |tag, wire, b| match tag {
            2 => {
                let (body, ctx) = message(wire, b, ctx)?;
                self.scope_spans(body, ctx, resource, (r, s))
                    .nth("scope_spans", s)?;
                s += 1;
                Ok(())
            }
            // Checked above.
            1 | 3 => len(b).map(drop),
            _ => skip(wire, tag, b, ctx),
        })
    }

    fn scope_spans(
        &mut self,
        body: &'a [u8],
        ctx: u32,
        resource: Found<'a>,
        (r, s): (usize, usize),
    ) -> R<()> {
        let mut i = 0;
        fields(body, |tag, wire, b| match tag {
            1 => {
                let (body, ctx) = message(wire, b, ctx).within("scope")?;
                scope(body, ctx).within("scope")
            }
            2 => {
                let (body, ctx) = message(wire, b, ctx).nth("spans", i)?;
                let view = self.span(body, ctx).nth("spans", i)?;
                let mapper = self.mapper;
                let attrs = self.attrs.iter().copied();
                mapper.span(&mut self.batch, resource, &view, attrs, (r, s, i));
                i += 1;
                Ok(())
            }
            3 => text(wire, b).within("schema_url"),
            _ => skip(wire, tag, b, ctx),
        })
    }

    /// Reads a span, its attributes into `self.attrs`.
    fn span(&mut self, body: &'a [u8], ctx: u32) -> R<SpanView<'a>> {
        let mut view = SpanView::default();
        self.attrs.clear();
        let (mut a, mut e, mut l) = (0, 0, 0);
        fields(body, |tag, wire, b| {
            match tag {
                1 => view.trace_id = bytes(wire, b).within("trace_id")?,
                2 => view.span_id = bytes(wire, b).within("span_id")?,
                3 => text(wire, b).within("trace_state")?,
                4 => drop(bytes(wire, b).within("parent_span_id")?),
                5 => view.name = string(wire, b).within("name")?,
                6 => view.kind = int(wire, b).within("kind")? as i32,
                7 => view.start = fixed64(wire, b).within("start_time_unix_nano")?,
                8 => view.end = fixed64(wire, b).within("end_time_unix_nano")?,
                9 => {
                    let (body, ctx) = message(wire, b, ctx).nth("attributes", a)?;
                    let (key, value) = key_value(body, ctx).nth("attributes", a)?;
                    // Only what the rules read: their lookups stay short,
                    // and only their strings are made `str`s.
                    if let Some(key) = self.mapper.reads(key) {
                        self.attrs.push((key, value.val()));
                    }
                    a += 1;
                }
                10 | 12 | 14 => drop(int(wire, b)?),
                11 => {
                    let (body, ctx) = message(wire, b, ctx).nth("events", e)?;
                    let (name, exception) = event(body, ctx).nth("events", e)?;
                    if name == EXCEPTION_EVENT.as_bytes() && view.exception_type.is_none() {
                        view.exception_type = exception.str();
                    }
                    e += 1;
                }
                13 => {
                    let (body, ctx) = message(wire, b, ctx).nth("links", l)?;
                    link(body, ctx).nth("links", l)?;
                    l += 1;
                }
                15 => {
                    let (body, ctx) = message(wire, b, ctx).within("status")?;
                    status(body, ctx, &mut view.status_code).within("status")?;
                }
                16 => drop(fixed32(wire, b).within("flags")?),
                _ => skip(wire, tag, b, ctx)?,
            }
            Ok(())
        })?;
        Ok(view)
    }
}

/// A resource's attributes, offered in order to `attr`.
fn resource<'a>(body: &'a [u8], ctx: u32, mut attr: impl FnMut(&'a str, Val<'a>)) -> R<()> {
    let (mut a, mut e) = (0, 0);
    fields(body, |tag, wire, b| match tag {
        1 => {
            let (body, ctx) = message(wire, b, ctx).nth("attributes", a)?;
            let (k, v) = key_value(body, ctx).nth("attributes", a)?;
            attr(as_str(k), v.val());
            a += 1;
            Ok(())
        }
        2 => int(wire, b).map(drop),
        3 => {
            let (body, ctx) = message(wire, b, ctx).nth("entity_refs", e)?;
            entity_ref(body, ctx).nth("entity_refs", e)?;
            e += 1;
            Ok(())
        }
        _ => skip(wire, tag, b, ctx),
    })
}

fn entity_ref(body: &[u8], ctx: u32) -> R<()> {
    fields(body, |tag, wire, b| match tag {
        1..=4 => text(wire, b),
        _ => skip(wire, tag, b, ctx),
    })
}

/// `InstrumentationScope`: nothing read, everything checked.
fn scope(body: &[u8], ctx: u32) -> R<()> {
    fields(body, |tag, wire, b| match tag {
        1 | 2 => text(wire, b),
        3 => {
            let (body, ctx) = message(wire, b, ctx).within("attributes")?;
            key_value(body, ctx).within("attributes").map(drop)
        }
        4 => int(wire, b).map(drop),
        _ => skip(wire, tag, b, ctx),
    })
}

/// An event's name (its checked bytes) and the value of its first
/// `exception.type` attribute.
fn event<'a>(body: &'a [u8], ctx: u32) -> R<(&'a [u8], Val<'a>)> {
    let mut name: &[u8] = &[];
    let mut exception = None;
    fields(body, |tag, wire, b| {
        match tag {
            1 => drop(fixed64(wire, b)?),
            2 => name = checked(wire, b).within("name")?,
            3 => {
                let (body, ctx) = message(wire, b, ctx).within("attributes")?;
                let (k, v) = key_value(body, ctx).within("attributes")?;
                if exception.is_none() && k == EXCEPTION_TYPE.as_bytes() {
                    exception = Some(v.val());
                }
            }
            4 => drop(int(wire, b)?),
            _ => skip(wire, tag, b, ctx)?,
        }
        Ok(())
    })?;
    Ok((name, exception.unwrap_or(Val::Other)))
}

fn link(body: &[u8], ctx: u32) -> R<()> {
    fields(body, |tag, wire, b| match tag {
        1 | 2 => bytes(wire, b).map(drop),
        3 => text(wire, b).within("trace_state"),
        4 => {
            let (body, ctx) = message(wire, b, ctx).within("attributes")?;
            key_value(body, ctx).within("attributes").map(drop)
        }
        5 => int(wire, b).map(drop),
        6 => fixed32(wire, b).map(drop),
        _ => skip(wire, tag, b, ctx),
    })
}

/// `Status`: its code merged into `code` (the last one given wins).
fn status(body: &[u8], ctx: u32, code: &mut i32) -> R<()> {
    fields(body, |tag, wire, b| match tag {
        2 => text(wire, b).within("message"),
        3 => {
            *code = int(wire, b).within("code")? as i32;
            Ok(())
        }
        _ => skip(wire, tag, b, ctx),
    })
}

/// A value as the walker reads it: like `Val`, its string still the
/// bytes (checked as UTF-8), so only values kept are made `str`s.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Other,
}

impl<'a> Raw<'a> {
    fn val(self) -> Val<'a> {
        match self {
            Raw::Str(s) => Val::Str(as_str(s)),
            Raw::Int(i) => Val::Int(i),
            Raw::Double(d) => Val::Double(d),
            Raw::Other => Val::Other,
        }
    }
}

/// An attribute: its key (checked bytes) and its value as the mapper
/// reads it.
#[inline]
fn key_value<'a>(body: &'a [u8], ctx: u32) -> R<(&'a [u8], Raw<'a>)> {
    match common_key_value(body, ctx) {
        Some(kv) => Ok(kv),
        None => any_key_value(body, ctx),
    }
}

/// A `KeyValue` as SDKs lay it out (its ASCII key, then a value of one
/// ASCII string, integer or double field, nothing else) read straight
/// through. `None` for any other layout and for any fault, which
/// `any_key_value` then reads (or names) as prost would.
#[inline(always)]
fn common_key_value(body: &[u8], ctx: u32) -> Option<(&[u8], Raw<'_>)> {
    if ctx == 0 {
        return None;
    }
    let mut b = body.strip_prefix(&[1 << 3 | LEN])?;
    let key = len(&mut b).ok()?;
    let mut value = b.strip_prefix(&[2 << 3 | LEN])?;
    let mut v = len(&mut value).ok()?;
    if !value.is_empty() || !key.is_ascii() {
        return None;
    }
    let (&field, rest) = v.split_first()?;
    v = rest;
    let raw = match field {
        f if f == 1 << 3 | LEN => {
            let s = len(&mut v).ok()?;
            if !s.is_ascii() {
                return None;
            }
            Raw::Str(s)
        }
        f if f == 3 << 3 | VARINT => Raw::Int(varint(&mut v).ok()? as i64),
        f if f == 4 << 3 | FIXED64 => {
            let (x, rest) = v.split_first_chunk::<8>()?;
            v = rest;
            Raw::Double(f64::from_bits(u64::from_le_bytes(*x)))
        }
        _ => return None,
    };
    v.is_empty().then_some((key, raw))
}

/// Any `KeyValue`, field by field.
fn any_key_value<'a>(body: &'a [u8], ctx: u32) -> R<(&'a [u8], Raw<'a>)> {
    let mut key: &[u8] = &[];
    let mut value = Raw::Other;
    fields(body, |tag, wire, b| {
        match tag {
            1 => key = checked(wire, b).within("key")?,
            2 => {
                // A second `value` merges into the first: its own fields
                // (the last wins) replace what it held.
                let (body, ctx) = message(wire, b, ctx).within("value")?;
                any_value(body, ctx, &mut value).within("value")?;
            }
            3 => drop(int(wire, b)?),
            _ => skip(wire, tag, b, ctx)?,
        }
        Ok(())
    })?;
    Ok((key, value))
}

/// `AnyValue`: strings, integers and doubles kept; the rest checked.
fn any_value<'a>(body: &'a [u8], ctx: u32, value: &mut Raw<'a>) -> R<()> {
    fields(body, |tag, wire, b| {
        *value = match tag {
            1 => Raw::Str(checked(wire, b).within("string_value")?),
            2 | 8 => int(wire, b).map(|_| Raw::Other)?,
            3 => Raw::Int(int(wire, b)? as i64),
            4 => Raw::Double(f64::from_bits(fixed64(wire, b)?)),
            5 => {
                let (body, ctx) = message(wire, b, ctx).within("array_value")?;
                fields(body, |tag, wire, b| match tag {
                    1 => {
                        let (body, ctx) = message(wire, b, ctx)?;
                        any_value(body, ctx, &mut Raw::Other)
                    }
                    _ => skip(wire, tag, b, ctx),
                })
                .within("array_value")?;
                Raw::Other
            }
            6 => {
                let (body, ctx) = message(wire, b, ctx).within("kvlist_value")?;
                fields(body, |tag, wire, b| match tag {
                    1 => {
                        let (body, ctx) = message(wire, b, ctx)?;
                        key_value(body, ctx).map(drop)
                    }
                    _ => skip(wire, tag, b, ctx),
                })
                .within("kvlist_value")?;
                Raw::Other
            }
            7 => bytes(wire, b).map(|_| Raw::Other)?,
            _ => {
                skip(wire, tag, b, ctx)?;
                return Ok(());
            }
        };
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod props;
