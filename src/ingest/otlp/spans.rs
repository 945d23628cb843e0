//! Trace exports mapped: which spans are requests, which of them failed,
//! how long they took, their endpoint and error kind. Every reader hands
//! its spans to `Mapper::span` as a `SpanView`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::{attr, attribute, pairs, Mapper};
use crate::ingest::facts::{error_kind, EXCEPTION_EVENT, EXCEPTION_TYPE};
use crate::ingest::identity::{string_value, Found};
use crate::ingest::span::{SpanView, Val};
use crate::model::{Batch, SpanFacts, UnixNanos, NANOS_PER_SEC};

/// OTLP `Status.code` for ERROR.
const STATUS_ERROR: i32 = 2;
/// OTLP `Span.kind` for SERVER.
const SPAN_KIND_SERVER: i32 = 2;

impl Mapper {
    /// Requests, errors and latencies from the request spans of a trace export.
    pub fn traces<'a>(&self, req: &'a ExportTraceServiceRequest) -> Batch<'a> {
        let mut batch = Batch::default();
        for (r, rs) in req.resource_spans.iter().enumerate() {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| Found::scan(&r.attributes, &self.keys))
                .unwrap_or_default();
            for (s, ss) in rs.scope_spans.iter().enumerate() {
                for (i, span) in ss.spans.iter().enumerate() {
                    let view = SpanView {
                        trace_id: &span.trace_id,
                        span_id: &span.span_id,
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                        kind: span.kind,
                        name: &span.name,
                        status_code: span.status.as_ref().map_or(0, |s| s.code),
                        exception_type: exception_type(span),
                    };
                    self.span(
                        &mut batch,
                        resource,
                        &view,
                        pairs(&span.attributes),
                        (r, s, i),
                    );
                }
            }
        }
        batch
    }

    /// One span of a trace export, whichever decoder read it: counted,
    /// validated, filtered by kind, attributed and added to its release's
    /// sample. `at` is its (resource, scope, span) position, for messages.
    pub(crate) fn span<'a, I>(
        &self,
        batch: &mut Batch<'a>,
        resource: Found<'a>,
        span: &SpanView<'_>,
        attrs: I,
        at: (usize, usize, usize),
    ) where
        I: Iterator<Item = (&'a str, Val<'a>)> + Clone,
    {
        batch.items += 1;
        let (r, s, i) = at;
        let at = || format!("resource_spans[{r}].scope_spans[{s}].spans[{i}]");
        if let Err(why) = validate_span(span, self.max_span) {
            batch.reject(1, format_args!("{}: {why}", at()));
            return;
        }
        if !self.kinds.accepts(span.kind) {
            return;
        }
        let found = Found::scan_pairs(attrs.clone(), &self.keys).over(resource);
        // Taken for the span and given back: the group borrows the batch.
        let mut scratch = std::mem::take(&mut batch.endpoint_scratch);
        let Some(group) = attribute(batch, found, at) else {
            batch.endpoint_scratch = scratch;
            return;
        };
        group.items += 1;
        let get = |k: &str| attr(attrs.clone(), k);
        let failed = span.status_code == STATUS_ERROR || self.status.failed(attrs.clone());
        let server = span.kind == SPAN_KIND_SERVER;
        let endpoint = self
            .endpoints
            .endpoint(get, server.then_some(span.name), &mut scratch);
        let error_kind = failed
            .then(|| {
                error_kind(
                    get,
                    span.exception_type,
                    &self.status.http,
                    &self.status.grpc,
                )
            })
            .flatten();
        group.sample.add_span(SpanFacts {
            latency_us: (span.end - span.start) / 1_000,
            failed,
            endpoint,
            error_kind: error_kind.as_deref(),
            trace_id: span.trace_id,
            span_id: span.span_id,
            end_time: span.end,
        });
        batch.endpoint_scratch = scratch;
    }
}

/// The type of a span's first recorded exception.
fn exception_type(span: &Span) -> Option<&str> {
    span.events
        .iter()
        .filter(|e| e.name == EXCEPTION_EVENT)
        .find_map(|e| {
            string_value(
                e.attributes
                    .iter()
                    .find(|kv| kv.key == EXCEPTION_TYPE)?
                    .value
                    .as_ref(),
            )
        })
}

/// Why a span breaks the OTLP data model.
fn validate_span(span: &SpanView<'_>, max: UnixNanos) -> Result<(), String> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "trace_id must be 16 bytes and not all zero (got {} bytes)",
            span.trace_id.len()
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span_id must be 8 bytes and not all zero (got {} bytes)",
            span.span_id.len()
        ));
    }
    if span.end < span.start {
        return Err("end_time_unix_nano is before start_time_unix_nano".to_string());
    }
    let lasts = span.end - span.start;
    if lasts > max {
        return Err(format!(
            "end_time_unix_nano: the span lasts {} s, longer than the {} s maximum ([limits] max_span_duration)",
            lasts / NANOS_PER_SEC,
            max / NANOS_PER_SEC
        ));
    }
    Ok(())
}
