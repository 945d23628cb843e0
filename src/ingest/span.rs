//! What every reader (the protobuf walk, the JSON stream, the JSON model,
//! decoded prost messages) hands the mapper: one span's fields as a view,
//! and attribute values borrowed from the request. The readers depend on
//! this and on the mapper; nothing here knows a reader.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};

use crate::model::UnixNanos;

/// What the mapping reads of one span, from whichever reader read it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub start: UnixNanos,
    pub end: UnixNanos,
    pub kind: i32,
    pub name: &'a str,
    /// `Status.code`, 0 (unset) when there is no status.
    pub status_code: i32,
    /// The `exception.type` of its first `exception` event that has one.
    pub exception_type: Option<&'a str>,
}

/// An attribute value as ingest reads it: strings, integers and doubles;
/// every other kind (and an absent value) is `Other`. Decoders hand these
/// to the identity, status and endpoint rules, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Other,
}

impl<'a> Val<'a> {
    /// The value of a decoded OTLP attribute.
    pub fn of(v: Option<&'a AnyValue>) -> Val<'a> {
        match v.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Val::Str(s),
            Some(Value::IntValue(i)) => Val::Int(*i),
            Some(Value::DoubleValue(d)) => Val::Double(*d),
            _ => Val::Other,
        }
    }

    /// String values only.
    pub fn str(self) -> Option<&'a str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, also from a decimal string or a whole double.
    pub fn int(self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(i),
            Val::Str(s) => s.trim().parse().ok(),
            Val::Double(d) if d.fract() == 0.0 => Some(d as i64),
            _ => None,
        }
    }
}
