//! Builders of OTLP messages: attributes, resources, spans, metric points
//! and the export requests holding them, written once and shared by the
//! traffic generator, the simulator, the benches and the tests.
//!
//! Pure: it builds values from the numbers it is given (ids, times, counts)
//! and imports nothing but `opentelemetry_proto`. Randomness and clocks stay
//! with the callers. A message a caller needs slightly different is one of
//! these with its fields set by struct update:
//!
//! ```
//! use opentelemetry_proto::tonic::trace::v1::Span;
//! use release_verdict::otlp_kit::{error_status, kv, release_resource, span, spans_request, SERVER};
//!
//! let start = 1_700_000_000_000_000_000;
//! let failed = Span {
//!     name: "POST /pay".into(),
//!     attributes: vec![kv("http.route", "/pay")],
//!     status: Some(error_status("upstream unavailable")),
//!     ..span(1, SERVER, start, 50_000_000)
//! };
//! let req = spans_request(release_resource("pay", "prod", "pay-2b5d9af", "2b5d9af"), vec![failed]);
//! assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 1);
//! ```

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

/// `SpanKind::Server`, the kind of span the judge counts as a request.
pub const SERVER: i32 = SpanKind::Server as i32;
/// `AggregationTemporality::Delta`: each point holds what is new.
pub const DELTA: i32 = AggregationTemporality::Delta as i32;
/// `AggregationTemporality::Cumulative`: each point holds all since its start.
pub const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
/// Where [`server_span`]s start: 2023-11-14T22:13:20Z, in Unix nanoseconds.
pub const EPOCH: u64 = 1_700_000_000_000_000_000;
/// The semantic conventions' request latency histogram, which the judge reads.
pub const REQUEST_DURATION: &str = "http.server.request.duration";

/// An attribute of any value.
pub fn attr(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    attr(key, Value::StringValue(value.into()))
}

/// An integer attribute.
pub fn kv_int(key: &str, value: i64) -> KeyValue {
    attr(key, Value::IntValue(value))
}

/// A floating-point attribute.
pub fn kv_f64(key: &str, value: f64) -> KeyValue {
    attr(key, Value::DoubleValue(value))
}

/// A boolean attribute.
pub fn kv_bool(key: &str, value: bool) -> KeyValue {
    attr(key, Value::BoolValue(value))
}

/// The resource attributes naming one deployment: service, environment,
/// deployment id and git sha, under the keys the daemon reads by default.
pub fn release_resource(service: &str, env: &str, id: &str, sha: &str) -> Vec<KeyValue> {
    vec![
        kv("service.name", service),
        kv("deployment.environment.name", env),
        kv("deployment.id", id),
        kv("git.sha", sha),
    ]
}

/// A resource with these attributes.
pub fn resource(attributes: Vec<KeyValue>) -> Resource {
    Resource {
        attributes,
        ..Default::default()
    }
}

/// A span numbered `n` of `kind`, from `start` (Unix nanoseconds) lasting
/// `nanos`. Its ids are made from `n`: valid (16 and 8 bytes, not all
/// zero), and distinct for distinct `n`.
pub fn span(n: u64, kind: i32, start: u64, nanos: u64) -> Span {
    let number = n.wrapping_add(1).max(1).to_be_bytes();
    let mut trace_id = [7u8; 16];
    trace_id[..8].copy_from_slice(&number);
    Span {
        trace_id: trace_id.to_vec(),
        span_id: number.to_vec(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(nanos),
        ..Default::default()
    }
}

/// The status of a failed span: ERROR, with `message`.
pub fn error_status(message: &str) -> Status {
    Status {
        code: StatusCode::Error as i32,
        message: message.into(),
    }
}

/// The test request: a SERVER span numbered `n`, "GET /checkout" from
/// [`EPOCH`] lasting `millis`, failed (ERROR "boom") or not.
pub fn server_span(n: u64, millis: u64, failed: bool) -> Span {
    Span {
        name: "GET /checkout".into(),
        status: failed.then(|| error_status("boom")),
        ..span(n, SERVER, EPOCH, millis * 1_000_000)
    }
}

/// One resource's spans, in one scope.
pub fn resource_spans(resource_attributes: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource(resource_attributes)),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A trace export of these spans under one resource.
pub fn spans_request(
    resource_attributes: Vec<KeyValue>,
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(resource_attributes, spans)],
    }
}

/// A trace export of `n` [`server_span`]s of one resource, lasting 10 to
/// 59 ms, every `error_every`-th failed from the first (none if 0).
pub fn trace_request(
    resource_attributes: Vec<KeyValue>,
    n: u64,
    error_every: u64,
) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| server_span(i, 10 + i % 50, error_every > 0 && i % error_every == 0))
        .collect();
    spans_request(resource_attributes, spans)
}

/// An explicit-bucket histogram point from `start` to `time` (Unix
/// nanoseconds): `counts` per bucket between `bounds`, its count their sum.
pub fn histogram_point(
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
    bounds: Vec<f64>,
    counts: Vec<u64>,
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: counts.iter().fold(0, |sum, c| sum.wrapping_add(*c)),
        explicit_bounds: bounds,
        bucket_counts: counts,
        ..Default::default()
    }
}

/// An exponential histogram point from `start` to `time`: `counts` in the
/// positive buckets from `offset` at `scale`, its count their sum.
pub fn exponential_point(
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
    scale: i32,
    offset: i32,
    counts: Vec<u64>,
) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: counts.iter().fold(0, |sum, c| sum.wrapping_add(*c)),
        scale,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

/// A number point (gauge or sum) of `value` from `start` to `time`.
pub fn number_point(
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
    value: f64,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// A metric named `name` in `unit` holding `data`.
fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

/// An explicit-bucket histogram metric of these points.
pub fn histogram_metric(
    name: &str,
    unit: &str,
    temporality: i32,
    points: Vec<HistogramDataPoint>,
) -> Metric {
    let data = Data::Histogram(Histogram {
        data_points: points,
        aggregation_temporality: temporality,
    });
    metric(name, unit, data)
}

/// An exponential histogram metric of these points.
pub fn exponential_metric(
    name: &str,
    unit: &str,
    temporality: i32,
    points: Vec<ExponentialHistogramDataPoint>,
) -> Metric {
    let data = Data::ExponentialHistogram(ExponentialHistogram {
        data_points: points,
        aggregation_temporality: temporality,
    });
    metric(name, unit, data)
}

/// A sum metric (a counter if `monotonic`) of these points.
pub fn sum_metric(
    name: &str,
    unit: &str,
    temporality: i32,
    monotonic: bool,
    points: Vec<NumberDataPoint>,
) -> Metric {
    let data = Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: temporality,
        is_monotonic: monotonic,
    });
    metric(name, unit, data)
}

/// A gauge metric of these points.
pub fn gauge_metric(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        unit,
        Data::Gauge(Gauge {
            data_points: points,
        }),
    )
}

/// One resource's metrics, in one scope.
pub fn resource_metrics(
    resource_attributes: Vec<KeyValue>,
    metrics: Vec<Metric>,
) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource(resource_attributes)),
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A metrics export of these resources' metrics.
pub fn metrics_request(resource_metrics: Vec<ResourceMetrics>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest { resource_metrics }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::delta::DeltaTracker;
    use crate::Mapper;

    /// The kit builds what the daemon takes: every span valid, each
    /// `error_every`-th counted as an error, all under the one release.
    #[test]
    fn a_trace_request_is_counted_as_built() {
        let req = trace_request(release_resource("pay", "prod", "pay-1", "abc"), 25, 10);
        let b = Mapper::default().traces(&req);
        assert_eq!((b.items, b.invalid, b.unattributed), (25, 0, 0));
        let g = &b.groups[0];
        assert_eq!(g.release.deployment_id, "pay-1");
        assert_eq!((g.sample.requests, g.sample.errors), (25, 3));
    }

    /// Points carry their buckets' sum as their count, so the daemon's
    /// check of one against the other passes.
    #[test]
    fn a_metrics_request_is_counted_as_built() {
        let ok = histogram_point(
            vec![kv_int("http.response.status_code", 200)],
            1,
            2,
            vec![0.1],
            vec![3, 1],
        );
        let failed = histogram_point(
            vec![kv_int("http.response.status_code", 503)],
            1,
            2,
            vec![0.1],
            vec![0, 2],
        );
        let req = metrics_request(vec![resource_metrics(
            release_resource("pay", "prod", "pay-1", "abc"),
            vec![histogram_metric(
                REQUEST_DURATION,
                "s",
                DELTA,
                vec![ok, failed],
            )],
        )]);
        let b = Mapper::default().metrics(&req, &mut DeltaTracker::new(10, 0), 0);
        assert_eq!((b.items, b.invalid), (2, 0));
        let s = &b.groups[0].sample;
        assert_eq!((s.requests, s.errors), (6, 2));
    }
}
