//! OTLP/JSON trace exports mapped span by span as sonic-rs reads them:
//! no model of the request, no list of its spans, one reused list of the
//! current span's attributes.
//!
//! It reads what exporters write (a resource before its scope spans,
//! strings the mapper keeps without escapes) and gives up on anything
//! else, whereupon `Mapper::trace_bytes` reads the body again through the
//! model (`json.rs`), which decides what is accepted and names what is
//! not. So this reader must never accept a body the model refuses, and
//! must map what it accepts as the model does: every field goes through
//! the model's own type (the same checks, the same defaults, nulls and
//! unknown keys), structs refuse what the derive refuses (a repeated
//! field), and `json/props.rs` holds both to the same batch.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::fields::{u64_any, Any, Borrowed, Each, Hex, Id, KeyValue, Str};
use super::{exception_attr, Event, Link, Resource, Scope, Status};
use crate::ingest::identity::{Found, Scan};
use crate::ingest::otlp::Mapper;
use crate::ingest::span::{SpanView, Val};
use crate::model::Batch;

/// The batch of a trace export read straight from its body, or `None`
/// when this reader gives up (the body is then for the model to read).
pub(crate) fn traces<'a>(mapper: &'a Mapper, body: &'a [u8]) -> Option<Batch<'a>> {
    // JSON is UTF-8 (RFC 8259, 8.1), skipped parts included.
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let mut de = sonic_rs::Deserializer::from_str(text);
    let mut stream = Stream {
        mapper,
        batch: Batch::default(),
        attrs: Vec::with_capacity(16),
    };
    One::<RequestLevel>::new(&mut stream, At::default())
        .deserialize(&mut de)
        .ok()?;
    de.end().ok()?;
    Some(stream.batch)
}

struct Stream<'a> {
    mapper: &'a Mapper,
    batch: Batch<'a>,
    /// The current span's attributes that the mapper reads.
    attrs: Vec<(&'a str, Val<'a>)>,
}

/// Where an item is: its resource's identity and its (resource, scope,
/// span) position.
#[derive(Debug, Clone, Copy, Default)]
struct At<'a> {
    resource: Found<'a>,
    r: usize,
    s: usize,
    i: usize,
}

/// Why this reader gives up: the model reads the body again and decides.
fn give_up<E: de::Error>() -> E {
    E::custom("left to the model")
}

/// An item of the request's lists, read into the stream.
trait Item<'a>: Sized {
    /// The position of the item at `index` of its list.
    fn at(at: At<'a>, index: usize) -> At<'a>;
    fn read<D: Deserializer<'a>>(stream: &mut Stream<'a>, at: At<'a>, d: D)
        -> Result<(), D::Error>;
}

/// An item that is a struct, read field by field into the stream.
trait Struct<'a>: Sized {
    const NAME: &'static str;
    const FIELDS: &'static [&'static str];
    fn at(at: At<'a>, index: usize) -> At<'a>;
    fn fields<A: MapAccess<'a>>(
        stream: &mut Stream<'a>,
        at: At<'a>,
        map: A,
    ) -> Result<(), A::Error>;
}

impl<'a, S: Struct<'a>> Item<'a> for S {
    fn at(at: At<'a>, index: usize) -> At<'a> {
        <S as Struct<'a>>::at(at, index)
    }
    fn read<D: Deserializer<'a>>(
        stream: &mut Stream<'a>,
        at: At<'a>,
        d: D,
    ) -> Result<(), D::Error> {
        d.deserialize_struct(S::NAME, S::FIELDS, One::<S>::new(stream, at))
    }
}

/// One item, read into the stream.
struct One<'s, 'a, L> {
    stream: &'s mut Stream<'a>,
    at: At<'a>,
    level: PhantomData<L>,
}

impl<'s, 'a, L> One<'s, 'a, L> {
    fn new(stream: &'s mut Stream<'a>, at: At<'a>) -> Self {
        One {
            stream,
            at,
            level: PhantomData,
        }
    }
}

impl<'a, L: Item<'a>> DeserializeSeed<'a> for One<'_, 'a, L> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        L::read(self.stream, self.at, d)
    }
}

// The struct of one item: a map (the derive also takes a sequence of
// the fields in order, which exporters never write: given up).
impl<'a, L: Struct<'a>> Visitor<'a> for One<'_, 'a, L> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "struct {}", L::NAME)
    }
    fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<(), A::Error> {
        L::fields(self.stream, self.at, map)
    }
}

/// A list of items, each read into the stream.
struct List<'s, 'a, L>(One<'s, 'a, L>);

impl<'s, 'a, L> List<'s, 'a, L> {
    fn new(stream: &'s mut Stream<'a>, at: At<'a>) -> Self {
        List(One::new(stream, at))
    }
}

impl<'a, L: Item<'a>> DeserializeSeed<'a> for List<'_, 'a, L> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a, L: Item<'a>> Visitor<'a> for List<'_, 'a, L> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        let One { stream, at, .. } = self.0;
        let mut index = 0;
        while seq
            .next_element_seed(One::<L>::new(stream, L::at(at, index)))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }
}

/// A struct's field names, read as the derive reads them: the field's
/// index, `None` for a key the struct does not have. Exporters write the
/// fields in order: the one after the last is tried first.
struct Names {
    names: &'static [&'static str],
    next: usize,
}

impl<'a> DeserializeSeed<'a> for Names {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Names {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("field identifier")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        if self.names.get(self.next) == Some(&key) {
            return Ok(Some(self.next));
        }
        Ok(self.names.iter().position(|n| *n == key))
    }
}

/// The fields of a struct being read.
struct Fields {
    names: &'static [&'static str],
    /// Bit i: field i has been read.
    seen: u32,
    next: usize,
}

impl Fields {
    fn new(names: &'static [&'static str]) -> Self {
        Fields {
            names,
            seen: 0,
            next: 0,
        }
    }

    /// The next known field, each given once (a second is refused, as the
    /// derive refuses it); unknown ones skipped as the derive skips them.
    fn next<'a, A: MapAccess<'a>>(&mut self, map: &mut A) -> Result<Option<usize>, A::Error> {
        let names = self.names;
        while let Some(key) = map.next_key_seed(Names {
            names,
            next: self.next,
        })? {
            match key {
                Some(field) => {
                    if self.seen & 1 << field != 0 {
                        return Err(de::Error::custom("duplicate field"));
                    }
                    self.seen |= 1 << field;
                    self.next = field + 1;
                    return Ok(Some(field));
                }
                None => only_check::<IgnoredAny, _>(map)?,
            }
        }
        Ok(None)
    }
}

/// A field's value checked as the model's type checks it, then dropped.
fn only_check<'a, T: Deserialize<'a>, A: MapAccess<'a>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<T>().map(|_| ())
}

/// A string the batch may keep: borrowed from the body, or given up.
fn borrowed<'a, E: de::Error>(s: &Cow<'a, str>) -> Result<&'a str, E> {
    match s {
        Cow::Borrowed(s) => Ok(s),
        Cow::Owned(_) => Err(give_up()),
    }
}

/// An attribute's value as the mapper reads it, its string borrowed.
fn value<'a, E: de::Error>(kv: &KeyValue<'a>) -> Result<Val<'a>, E> {
    Ok(match &kv.value {
        Some(Any::Str(s)) => Val::Str(borrowed(s)?),
        Some(Any::Int(i)) => Val::Int(*i),
        Some(Any::Double(d)) => Val::Double(*d),
        Some(Any::Other) | None => Val::Other,
    })
}

/// `ExportTraceServiceRequest`.
enum RequestLevel {}

impl<'a> Struct<'a> for RequestLevel {
    const NAME: &'static str = "ExportTraceServiceRequest";
    const FIELDS: &'static [&'static str] = &["resourceSpans"];
    fn at(at: At<'a>, _: usize) -> At<'a> {
        at
    }
    fn fields<A: MapAccess<'a>>(
        stream: &mut Stream<'a>,
        at: At<'a>,
        mut map: A,
    ) -> Result<(), A::Error> {
        let mut fields = Fields::new(Self::FIELDS);
        while fields.next(&mut map)?.is_some() {
            map.next_value_seed(List::<ResourceSpansLevel>::new(stream, at))?;
        }
        Ok(())
    }
}

/// `ResourceSpans`: its resource must come first (exporters write it
/// first); scope spans before it are given up.
enum ResourceSpansLevel {}

impl<'a> Struct<'a> for ResourceSpansLevel {
    const NAME: &'static str = "ResourceSpans";
    const FIELDS: &'static [&'static str] = &["resource", "scopeSpans", "schemaUrl"];
    fn at(_: At<'a>, r: usize) -> At<'a> {
        At { r, ..At::default() }
    }
    fn fields<A: MapAccess<'a>>(
        stream: &mut Stream<'a>,
        mut at: At<'a>,
        mut map: A,
    ) -> Result<(), A::Error> {
        let mut fields = Fields::new(Self::FIELDS);
        let mut resource_read = false;
        while let Some(field) = fields.next(&mut map)? {
            match field {
                0 => {
                    if let Some(resource) = map.next_value::<Option<Resource<'a>>>()? {
                        let mut scan = Scan::default();
                        let keys = stream.mapper.identity_keys();
                        for kv in &resource.attributes {
                            scan.offer(&kv.key, value(kv)?, keys);
                        }
                        at.resource = scan.found;
                    }
                    resource_read = true;
                }
                1 if resource_read => {
                    map.next_value_seed(List::<ScopeSpansLevel>::new(stream, at))?
                }
                1 => return Err(give_up()),
                _ => only_check::<Str, _>(&mut map)?,
            }
        }
        Ok(())
    }
}

/// `ScopeSpans`.
enum ScopeSpansLevel {}

impl<'a> Struct<'a> for ScopeSpansLevel {
    const NAME: &'static str = "ScopeSpans";
    const FIELDS: &'static [&'static str] = &["scope", "spans", "schemaUrl"];
    fn at(at: At<'a>, s: usize) -> At<'a> {
        At { s, ..at }
    }
    fn fields<A: MapAccess<'a>>(
        stream: &mut Stream<'a>,
        at: At<'a>,
        mut map: A,
    ) -> Result<(), A::Error> {
        let mut fields = Fields::new(Self::FIELDS);
        while let Some(field) = fields.next(&mut map)? {
            match field {
                0 => only_check::<Option<Scope<'a>>, _>(&mut map)?,
                1 => map.next_value_seed(List::<SpanLevel>::new(stream, at))?,
                _ => only_check::<Str, _>(&mut map)?,
            }
        }
        Ok(())
    }
}

/// A `u64` as a number or a decimal string.
struct U64(u64);

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64_any(d).map(U64)
    }
}

/// `Span`, mapped as soon as it is read.
enum SpanLevel {}

impl<'a> Struct<'a> for SpanLevel {
    const NAME: &'static str = "Span";
    const FIELDS: &'static [&'static str] = &[
        "traceId",
        "spanId",
        "traceState",
        "parentSpanId",
        "flags",
        "name",
        "kind",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "attributes",
        "droppedAttributesCount",
        "events",
        "droppedEventsCount",
        "links",
        "droppedLinksCount",
        "status",
    ];
    fn at(at: At<'a>, i: usize) -> At<'a> {
        At { i, ..at }
    }
    fn fields<A: MapAccess<'a>>(
        stream: &mut Stream<'a>,
        at: At<'a>,
        mut map: A,
    ) -> Result<(), A::Error> {
        let (mut trace_id, mut span_id) = (Id::default(), Id::default());
        let mut view = SpanView::default();
        stream.attrs.clear();
        let mut fields = Fields::new(Self::FIELDS);
        while let Some(field) = fields.next(&mut map)? {
            match field {
                0 => trace_id = map.next_value()?,
                1 => span_id = map.next_value()?,
                2 => only_check::<Str, _>(&mut map)?,
                3 => only_check::<Hex, _>(&mut map)?,
                4 | 10 | 12 | 14 => only_check::<u32, _>(&mut map)?,
                5 => view.name = borrowed(&map.next_value::<Borrowed<'a>>()?.0)?,
                6 => view.kind = map.next_value()?,
                7 => view.start = map.next_value::<U64>()?.0,
                8 => view.end = map.next_value::<U64>()?.0,
                9 => map.next_value_seed(List::<AttributeLevel>::new(stream, at))?,
                11 => {
                    let events = map.next_value::<Vec<Event<'a>>>()?;
                    if let Some(kv) = exception_attr(&events) {
                        view.exception_type = value(kv)?.str();
                    }
                }
                13 => only_check::<Each<Link<'a>>, _>(&mut map)?,
                _ => {
                    view.status_code = map
                        .next_value::<Option<Status>>()?
                        .map_or(0, |status| status.code)
                }
            }
        }
        view.trace_id = trace_id.bytes();
        view.span_id = span_id.bytes();
        let attrs = stream.attrs.iter().copied();
        let mapper = stream.mapper;
        mapper.span(
            &mut stream.batch,
            at.resource,
            &view,
            attrs,
            (at.r, at.s, at.i),
        );
        Ok(())
    }
}

/// A span's attribute, kept in the stream's list if the mapper reads its
/// key.
enum AttributeLevel {}

impl<'a> Item<'a> for AttributeLevel {
    fn at(at: At<'a>, _: usize) -> At<'a> {
        at
    }
    fn read<D: Deserializer<'a>>(stream: &mut Stream<'a>, _: At<'a>, d: D) -> Result<(), D::Error> {
        let kv = KeyValue::deserialize(d)?;
        if let Some(key) = stream.mapper.reads(kv.key.as_bytes()) {
            stream.attrs.push((key, value(&kv)?));
        }
        Ok(())
    }
}
