//! OTLP/JSON trace exports read into a model of only the fields the
//! mapper reads, borrowed from the body where a string has no escapes,
//! then mapped by the same `Mapper::span` as a prost message.
//!
//! It accepts what opentelemetry-proto's serde mapping (the reference)
//! accepts: the same camelCase keys (its `rename_all`; snake_case names
//! are unknown fields there too, and ignored), unknown fields ignored,
//! every known field checked for its type even when not read (strings,
//! `u32`s, hex ids, 64-bit integers as numbers or strings, base64 bytes),
//! the same required fields (`key`, `values`, an entity's fields) and
//! nulls, enums as integers only, and, inside attribute values, unknown
//! fields parsed as strictly as the reference's flattened buffer parses
//! them. `json/props.rs` compares both on generated and mutated bodies.

// Fields that are only checked, never read, are still declared: their
// types are what is checked.
#![allow(dead_code)]

use std::borrow::Cow;

use serde::Deserialize;

use fields::{presized, u64_any, Any, Each, Hex, Id, KeyValue, Str};

use super::facts::{EXCEPTION_EVENT, EXCEPTION_TYPE};
use super::identity::Found;
use super::otlp::Mapper;
use super::span::SpanView;
use crate::model::Batch;

/// `ExportTraceServiceRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Request<'a> {
    #[serde(borrow)]
    resource_spans: Vec<ResourceSpans<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ResourceSpans<'a> {
    #[serde(borrow)]
    resource: Option<Resource<'a>>,
    #[serde(borrow)]
    scope_spans: Vec<ScopeSpans<'a>>,
    schema_url: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Resource<'a> {
    #[serde(borrow, deserialize_with = "presized")]
    attributes: Vec<KeyValue<'a>>,
    dropped_attributes_count: u32,
    entity_refs: Each<EntityRef>,
}

/// Every field required, as in the reference (no `serde(default)`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntityRef {
    schema_url: Str,
    r#type: Str,
    id_keys: Each<Str>,
    description_keys: Each<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ScopeSpans<'a> {
    #[serde(borrow)]
    scope: Option<Scope<'a>>,
    #[serde(borrow, deserialize_with = "presized")]
    spans: Vec<Span<'a>>,
    schema_url: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Scope<'a> {
    name: Str,
    version: Str,
    #[serde(borrow)]
    attributes: Each<KeyValue<'a>>,
    dropped_attributes_count: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Span<'a> {
    trace_id: Id,
    span_id: Id,
    trace_state: Str,
    parent_span_id: Hex,
    flags: u32,
    #[serde(borrow)]
    name: Cow<'a, str>,
    kind: i32,
    #[serde(deserialize_with = "u64_any")]
    start_time_unix_nano: u64,
    #[serde(deserialize_with = "u64_any")]
    end_time_unix_nano: u64,
    #[serde(borrow, deserialize_with = "presized")]
    attributes: Vec<KeyValue<'a>>,
    dropped_attributes_count: u32,
    #[serde(borrow)]
    events: Vec<Event<'a>>,
    dropped_events_count: u32,
    #[serde(borrow)]
    links: Each<Link<'a>>,
    dropped_links_count: u32,
    status: Option<Status>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Event<'a> {
    #[serde(deserialize_with = "u64_any")]
    time_unix_nano: u64,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    attributes: Vec<KeyValue<'a>>,
    dropped_attributes_count: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Link<'a> {
    trace_id: Hex,
    span_id: Hex,
    trace_state: Str,
    #[serde(borrow)]
    attributes: Each<KeyValue<'a>>,
    dropped_attributes_count: u32,
    flags: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Status {
    message: Str,
    code: i32,
}

/// The `exception.type` attribute of a span's first `exception` event
/// that has one with a string value: the span's exception type.
fn exception_attr<'e, 'a>(events: &'e [Event<'a>]) -> Option<&'e KeyValue<'a>> {
    events
        .iter()
        .filter(|e| e.name == EXCEPTION_EVENT)
        .find_map(|e| {
            e.attributes
                .iter()
                .find(|kv| kv.key == EXCEPTION_TYPE)
                .filter(|kv| matches!(kv.value, Some(Any::Str(_))))
        })
}

/// Maps a trace export read from OTLP/JSON as `Mapper::traces` maps the
/// reference's decoding of the same body.
pub fn traces<'b>(mapper: &Mapper, req: &'b Request<'_>) -> Batch<'b> {
    let mut batch = Batch::default();
    for (r, rs) in req.resource_spans.iter().enumerate() {
        let resource = rs
            .resource
            .as_ref()
            .map(|res| {
                Found::scan_pairs(
                    res.attributes.iter().map(KeyValue::pair),
                    mapper.identity_keys(),
                )
            })
            .unwrap_or_default();
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            for (i, span) in ss.spans.iter().enumerate() {
                let exception_type = exception_attr(&span.events).and_then(|kv| kv.pair().1.str());
                let view = SpanView {
                    trace_id: span.trace_id.bytes(),
                    span_id: span.span_id.bytes(),
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    kind: span.kind,
                    name: &span.name,
                    status_code: span.status.as_ref().map_or(0, |s| s.code),
                    exception_type,
                };
                let attrs = span.attributes.iter().map(KeyValue::pair);
                mapper.span(&mut batch, resource, &view, attrs, (r, s, i));
            }
        }
    }
    batch
}

mod fields;
pub(crate) mod stream;

#[cfg(test)]
mod props;
