//! Property tests of the whole ingest path, on the stable toolchain
//! (proptest): arbitrary bytes through both decoders, and arbitrary spans
//! and histogram points (any counts, bounds, scales, offsets, times)
//! through mapping, delta conversion, the store and the judge's tick. None
//! may panic; every item is counted as accepted, refused or unattributed.
//!
//! `PROPTEST_CASES=100000 cargo test --lib props` for a longer run.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, ExponentialHistogram,
    ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;

use super::{App, Sender};
use crate::config::Config;
use crate::ingest::decode::{decode, Encoding};
use crate::otlp_kit::attr;
use crate::self_metrics::Transport;

fn resource(id: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            attr("service.name", any_value::Value::StringValue("svc".into())),
            attr("deployment.id", any_value::Value::StringValue(id.into())),
        ],
        ..Default::default()
    })
}

/// Numbers as a hostile sender picks them: edges more often than chance.
fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(1 << 63),
        Just(1 << 32),
        0u64..1000,
        any::<u64>(),
    ]
}

fn edgy_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(i32::MAX),
        Just(i32::MIN),
        Just(0),
        -100i32..100,
        any::<i32>()
    ]
}

fn edgy_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
        0.0f64..10.0,
        any::<f64>()
    ]
}

fn explicit_point() -> impl Strategy<Value = HistogramDataPoint> {
    (
        prop::collection::vec(edgy_f64(), 0..6),
        prop::collection::vec(edgy_u64(), 0..7),
        edgy_u64(),
        edgy_u64(),
        edgy_u64(),
        any::<i64>(),
    )
        .prop_map(
            |(bounds, counts, count, start, time, status)| HistogramDataPoint {
                attributes: vec![attr(
                    "http.response.status_code",
                    any_value::Value::IntValue(status),
                )],
                start_time_unix_nano: start,
                time_unix_nano: time,
                count,
                explicit_bounds: bounds,
                bucket_counts: counts,
                ..Default::default()
            },
        )
}

fn exponential_point() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
    (
        edgy_i32(),
        edgy_i32(),
        prop::collection::vec(edgy_u64(), 0..6),
        edgy_u64(),
        edgy_u64(),
        edgy_u64(),
    )
        .prop_map(
            |(scale, offset, counts, zero, count, time)| ExponentialHistogramDataPoint {
                start_time_unix_nano: 1,
                time_unix_nano: time,
                count,
                scale,
                zero_count: zero,
                positive: Some(Buckets {
                    offset,
                    bucket_counts: counts,
                }),
                ..Default::default()
            },
        )
}

fn metrics(
    temporality: i32,
    unit: &str,
    explicit: Vec<HistogramDataPoint>,
    exponential: Vec<ExponentialHistogramDataPoint>,
) -> ExportMetricsServiceRequest {
    let metric = |data| Metric {
        name: "http.server.request.duration".into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("r1"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(Data::Histogram(Histogram {
                        data_points: explicit,
                        aggregation_temporality: temporality,
                    })),
                    metric(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: exponential,
                        aggregation_temporality: temporality,
                    })),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span() -> impl Strategy<Value = Span> {
    (
        prop::collection::vec(any::<u8>(), 0..18),
        prop::collection::vec(any::<u8>(), 0..10),
        edgy_u64(),
        edgy_u64(),
        any::<i32>(),
        any::<i64>(),
    )
        .prop_map(|(trace_id, span_id, start, end, kind, status)| Span {
            trace_id,
            span_id,
            kind: kind.rem_euclid(6),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![attr(
                "http.response.status_code",
                any_value::Value::IntValue(status),
            )],
            ..Default::default()
        })
}

/// The daemon's clock: the system's, or a replay's telemetry time, which
/// ignores times from 2100 on (`replay::LATEST_TIME`).
fn clock() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1_795_478_400_000_000_000),
        0u64..4_102_444_800_000_000_000,
    ]
}

fn cases() -> ProptestConfig {
    // A few thousand in CI; PROPTEST_CASES raises it.
    let default = ProptestConfig::default();
    ProptestConfig::with_cases(default.cases.max(2000))
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ExportTraceServiceRequest>(&bytes, Encoding::Protobuf);
        let _ = decode::<ExportMetricsServiceRequest>(&bytes, Encoding::Protobuf);
        let _ = decode::<ExportTraceServiceRequest>(&bytes, Encoding::Json);
        let _ = decode::<ExportMetricsServiceRequest>(&bytes, Encoding::Json);
    }

    #[test]
    fn arbitrary_json_text_decodes_or_fails_cleanly(text in "\\{\"resourceSpans\":\\[\\{\"scopeSpans\":\\[\\{\"spans\":\\[\\{[a-zA-Z\":,0-9\\-\\.\\[\\]\\{\\}]{0,80}\\}\\]\\}\\]\\}\\]\\}") {
        let _ = decode::<ExportTraceServiceRequest>(text.as_bytes(), Encoding::Json);
    }

    #[test]
    fn arbitrary_spans_are_counted_or_refused(spans in prop::collection::vec(span(), 0..8), now in clock()) {
        let app = App::new(Config::default(), 0);
        let n = spans.len() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource("r1"),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        let outcome = app.ingest_traces(&req, Transport::Replay, now);
        prop_assert!(outcome.rejected <= n);
        app.tick(now);
        app.tick(now.saturating_add(1_000_000_000));
    }

    #[test]
    fn arbitrary_histogram_points_never_panic(
        rounds in prop::collection::vec(
            (prop::collection::vec(explicit_point(), 0..3), prop::collection::vec(exponential_point(), 0..3)),
            1..4,
        ),
        temporality in 0i32..4,
        unit in prop_oneof![Just("s"), Just("ms"), Just("ns"), Just("By")],
        now in clock(),
    ) {
        let mut config = Config::default();
        config.limits.max_metric_streams = 4;
        let app = App::new(config, 0);
        for (k, (explicit, exponential)) in rounds.into_iter().enumerate() {
            let n = (explicit.len() + exponential.len()) as u64;
            let req = metrics(temporality, unit, explicit, exponential);
            let at = now.saturating_add(k as u64);
            let outcome = app.ingest_metrics(&req, Transport::Replay, at, None, Sender::Unknown);
            prop_assert!(outcome.rejected <= n);
            app.tick(at);
        }
    }
}
