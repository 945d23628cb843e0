//! Mapping tests: spans and histogram points into per-release samples.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets as ExpBuckets, metric::Data, ExponentialHistogram,
    ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span, Status};

use super::metrics::{CUMULATIVE, DELTA};
use super::*;
use crate::ingest::delta::DeltaTracker;
use crate::ingest::identity::int_value;
use crate::ingest::identity::tests::{kv, kv_int};
use crate::model::{MetricObservation, NANOS_PER_SEC};
use crate::otlp_kit as kit;

fn span(kind: i32, millis: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        attributes: attrs,
        ..kit::span(0, kind, NANOS_PER_SEC, millis * 1_000_000)
    }
}

fn traces(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    kit::spans_request(resource, spans)
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const CONSUMER: i32 = 5;

fn checkout() -> Vec<KeyValue> {
    kit::release_resource("checkout", "prod", "checkout-2b5d", "2b5d9af")
}

#[test]
fn request_spans_count_with_errors_and_latency() {
    let mut failed = span(SERVER, 30, vec![]);
    failed.status = Some(Status {
        code: StatusCode::Error as i32,
        ..Default::default()
    });
    let req = traces(
        checkout(),
        vec![
            span(SERVER, 10, vec![]),
            span(CONSUMER, 20, vec![]),
            failed,
            span(SERVER, 5, vec![kv_int("http.response.status_code", 503)]),
            span(SERVER, 5, vec![kv_int("http.response.status_code", 404)]),
            span(SERVER, 5, vec![kv_int("rpc.grpc.status_code", 13)]),
            span(SERVER, 5, vec![kv_int("rpc.grpc.status_code", 5)]),
            span(CLIENT, 99, vec![]),
            span(1, 99, vec![]),
        ],
    );
    let b = Mapper::default().traces(&req);
    assert_eq!((b.items, b.invalid, b.unattributed), (9, 0, 0));
    assert_eq!(b.groups.len(), 1);
    let g = &b.groups[0];
    assert_eq!(g.release.deployment_id, "checkout-2b5d");
    assert_eq!(g.release.environment, "prod");
    assert_eq!(g.items, 7);
    assert_eq!((g.sample.requests, g.sample.errors), (7, 3));
    assert_eq!(g.sample.latencies_us[0], (10_000, 1));
    assert_eq!(g.sample.latencies_us.len(), 7);
}

#[test]
fn span_attributes_split_one_resource_into_releases() {
    let req = traces(
        vec![kv("service.name", "web")],
        vec![
            span(
                SERVER,
                1,
                vec![kv("deployment.id", "a"), kv("git.sha", "aaa")],
            ),
            span(SERVER, 1, vec![kv("deployment.id", "b")]),
            span(SERVER, 1, vec![kv("deployment.id", "a")]),
            span(SERVER, 1, vec![]),
        ],
    );
    let b = Mapper::default().traces(&req);
    assert_eq!(b.unattributed, 1);
    let counts: Vec<_> = b
        .groups
        .iter()
        .map(|g| {
            (
                g.release.deployment_id,
                g.release.git_sha,
                g.sample.requests,
            )
        })
        .collect();
    assert_eq!(counts, vec![("a", Some("aaa"), 2), ("b", None, 1)]);
}

#[test]
fn invalid_spans_are_rejected_with_a_reason() {
    let mut short_id = span(SERVER, 1, vec![]);
    short_id.trace_id = vec![1; 8];
    let mut zero_span = span(SERVER, 1, vec![]);
    zero_span.span_id = vec![0; 8];
    let mut backwards = span(SERVER, 1, vec![]);
    backwards.end_time_unix_nano = 0;
    let req = traces(
        checkout(),
        vec![short_id, zero_span, backwards, span(SERVER, 1, vec![])],
    );
    let b = Mapper::default().traces(&req);
    assert_eq!(b.invalid, 3);
    let msg = b.first_error.unwrap();
    assert!(
        msg.contains("spans[0]") && msg.contains("trace_id"),
        "{msg}"
    );
    assert_eq!(b.groups[0].sample.requests, 1);
}

#[test]
fn overlong_release_ids_are_rejected() {
    let long = "x".repeat(300);
    let req = traces(
        vec![kv("deployment.id", &long)],
        vec![span(SERVER, 1, vec![])],
    );
    let b = Mapper::default().traces(&req);
    assert_eq!((b.invalid, b.groups.len()), (1, 0));
    assert!(b.first_error.unwrap().contains("deployment id"));
}

fn duration_metric(unit: &str, data: Data) -> ExportMetricsServiceRequest {
    let metric = Metric {
        name: kit::REQUEST_DURATION.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    };
    kit::metrics_request(vec![kit::resource_metrics(checkout(), vec![metric])])
}

fn hist_point(status: i64, start: u64, time: u64, counts: Vec<u64>) -> HistogramDataPoint {
    let status = vec![kv_int("http.response.status_code", status)];
    kit::histogram_point(status, start, time, vec![0.1, 0.5], counts)
}

fn histogram(temporality: i32, points: Vec<HistogramDataPoint>) -> Data {
    Data::Histogram(Histogram {
        data_points: points,
        aggregation_temporality: temporality,
    })
}

/// The latencies of `delta_histograms_count_requests_errors_and_buckets`'
/// points: (0, 100 ms] spread from zero, (100, 500] at its geometric
/// middle, the overflow at its lower bound.
const DELTA_LATENCIES_US: [(u64, u64); 5] = [
    (16_667, 1),
    (50_000, 1),
    (83_333, 1),
    (223_607, 1),
    (500_000, 2),
];

#[test]
fn delta_histograms_count_requests_errors_and_buckets() {
    let req = duration_metric(
        "s",
        histogram(
            DELTA,
            vec![
                hist_point(200, 1, 2, vec![3, 1, 0]),
                hist_point(500, 1, 2, vec![0, 0, 2]),
            ],
        ),
    );
    let mut deltas = DeltaTracker::new(10, 0);
    let b = Mapper::default().metrics(&req, &mut deltas, 0);
    assert_eq!(b.items, 2);
    let s = &b.groups[0].sample;
    assert_eq!((s.requests, s.errors), (6, 2));
    assert_eq!(s.latencies_us, DELTA_LATENCIES_US);
    assert!(deltas.is_empty());
}

#[test]
fn cumulative_histograms_become_deltas_per_stream() {
    let mapper = Mapper::default();
    let mut deltas = DeltaTracker::new(10, 0);
    let first = duration_metric(
        "ms",
        histogram(
            CUMULATIVE,
            vec![
                hist_point(200, 5, 10, vec![1, 0, 0]),
                hist_point(503, 5, 10, vec![0, 1, 0]),
            ],
        ),
    );
    let b = mapper.metrics(&first, &mut deltas, 0);
    assert_eq!(
        (b.groups[0].sample.requests, b.groups[0].sample.errors),
        (2, 1)
    );
    let second = duration_metric(
        "ms",
        histogram(
            CUMULATIVE,
            vec![
                hist_point(200, 5, 20, vec![4, 0, 0]),
                hist_point(503, 5, 20, vec![0, 1, 0]),
            ],
        ),
    );
    let b = mapper.metrics(&second, &mut deltas, 0);
    let s = &b.groups[0].sample;
    assert_eq!((s.requests, s.errors), (3, 0));
    assert_eq!(s.latencies_us, vec![(17, 1), (50, 1), (83, 1)]);
    assert_eq!(deltas.len(), 2);
}

#[test]
fn exponential_histograms_are_read() {
    let point = ExponentialHistogramDataPoint {
        attributes: vec![],
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        count: 4,
        scale: 0,
        zero_count: 1,
        positive: Some(ExpBuckets {
            offset: 3,
            bucket_counts: vec![2, 1],
        }),
        ..Default::default()
    };
    let req = duration_metric(
        "ms",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![point],
            aggregation_temporality: DELTA,
        }),
    );
    let b = Mapper::default().metrics(&req, &mut DeltaTracker::new(10, 0), 0);
    let s = &b.groups[0].sample;
    assert_eq!((s.requests, s.errors), (4, 0));
    let total: u64 = s.latencies_us.iter().map(|(_, c)| c).sum();
    assert_eq!(total, 4);
}

#[test]
fn bad_units_and_temporality_are_rejected() {
    let req = duration_metric(
        "By",
        histogram(DELTA, vec![hist_point(200, 1, 2, vec![1, 0, 0])]),
    );
    let b = Mapper::default().metrics(&req, &mut DeltaTracker::new(10, 0), 0);
    assert_eq!(b.invalid, 1);
    assert!(b.first_error.unwrap().contains("unit"));
    let req = duration_metric(
        "s",
        histogram(0, vec![hist_point(200, 1, 2, vec![1, 0, 0])]),
    );
    let b = Mapper::default().metrics(&req, &mut DeltaTracker::new(10, 0), 0);
    assert_eq!(b.invalid, 1);
    let mut bad = hist_point(200, 1, 2, vec![1, 0]);
    bad.explicit_bounds = vec![1.0, 2.0, 3.0];
    let req = duration_metric("s", histogram(DELTA, vec![bad]));
    let b = Mapper::default().metrics(&req, &mut DeltaTracker::new(10, 0), 0);
    assert_eq!((b.invalid, b.groups.len()), (1, 0));
}

#[test]
fn other_metrics_are_accepted_and_ignored() {
    let mut req = duration_metric(
        "s",
        histogram(DELTA, vec![hist_point(200, 1, 2, vec![1, 0, 0])]),
    );
    req.resource_metrics[0].scope_metrics[0].metrics[0].name = "queue.depth".into();
    let b = Mapper::default().metrics(&req, &mut DeltaTracker::new(10, 0), 0);
    assert_eq!((b.items, b.invalid, b.groups.len()), (1, 0, 0));
}

fn number_metric(name: &str, data: Data) -> ExportMetricsServiceRequest {
    let mut req = duration_metric("1", data);
    req.resource_metrics[0].scope_metrics[0].metrics[0].name = name.into();
    req
}

fn number_point(
    value: f64,
    start: u64,
    time: u64,
) -> opentelemetry_proto::tonic::metrics::v1::NumberDataPoint {
    kit::number_point(Vec::new(), start, time, value)
}

fn checked_mapper() -> Mapper {
    let config = crate::config::Config::from_toml(
        "[[checks.metric]]\nname = \"queue\"\nmetric = \"app.queue.depth\"\ndirection = \"increase\"\n\
         [[checks.metric]]\nname = \"orders\"\nmetric = \"orders.placed\"\ndirection = \"decrease\"\n",
    )
    .unwrap();
    Mapper::new(&config)
}

#[test]
fn gauges_of_checked_metrics_become_values() {
    use opentelemetry_proto::tonic::metrics::v1::Gauge;
    let req = number_metric(
        "app.queue.depth",
        Data::Gauge(Gauge {
            data_points: vec![number_point(2.5, 0, 1), number_point(4.0, 0, 1)],
        }),
    );
    let b = checked_mapper().metrics(&req, &mut DeltaTracker::new(10, 0), 0);
    let s = &b.groups[0].sample;
    assert_eq!(s.requests, 0);
    assert_eq!(
        s.metrics,
        vec![
            (
                0,
                MetricObservation::Values {
                    milli: 2_500,
                    count: 1
                }
            ),
            (
                0,
                MetricObservation::Values {
                    milli: 4_000,
                    count: 1
                }
            ),
        ]
    );
}

#[test]
fn cumulative_sums_of_checked_metrics_become_increments() {
    use opentelemetry_proto::tonic::metrics::v1::Sum;
    let sum = |v: f64, t: u64| {
        number_metric(
            "orders.placed",
            Data::Sum(Sum {
                data_points: vec![number_point(v, 5, t)],
                aggregation_temporality: CUMULATIVE,
                is_monotonic: true,
            }),
        )
    };
    let mapper = checked_mapper();
    let mut deltas = DeltaTracker::new(10, 0);
    let first = sum(10.0, 10);
    let b = mapper.metrics(&first, &mut deltas, 0);
    assert_eq!(
        b.groups[0].sample.metrics,
        vec![(1, MetricObservation::Count(10))]
    );
    let second = sum(14.0, 20);
    let b = mapper.metrics(&second, &mut deltas, 0);
    assert_eq!(
        b.groups[0].sample.metrics,
        vec![(1, MetricObservation::Count(4))]
    );
}

/// The older HTTP conventions (the Python and Node instrumentations'
/// default): `http.server.duration` in milliseconds with `http.status_code`.
#[test]
fn the_older_http_conventions_are_read_too() {
    let mut req = duration_metric("ms", histogram(DELTA, vec![]));
    let metric = &mut req.resource_metrics[0].scope_metrics[0].metrics[0];
    metric.name = "http.server.duration".into();
    let mut ok = hist_point(200, 1, 2, vec![3, 1, 0]);
    let mut failed = hist_point(503, 1, 2, vec![0, 0, 2]);
    ok.explicit_bounds = vec![100.0, 500.0];
    failed.explicit_bounds = vec![100.0, 500.0];
    for p in [&mut ok, &mut failed] {
        p.attributes = vec![kv_int(
            "http.status_code",
            int_value(p.attributes[0].value.as_ref()).unwrap(),
        )];
    }
    metric.data = Some(histogram(DELTA, vec![ok, failed]));
    let mut deltas = DeltaTracker::new(10, 0);
    let b = Mapper::default().metrics(&req, &mut deltas, 0);
    let s = &b.groups[0].sample;
    assert_eq!((s.requests, s.errors), (6, 2));
    // Bucket bounds in milliseconds: the same latencies as the seconds case.
    assert_eq!(s.latencies_us, DELTA_LATENCIES_US);
    assert!(b.ignored_metrics.is_empty());
}

/// A metric nothing reads is reported by name with its points, so the
/// daemon can say why a service is not judged.
#[test]
fn metrics_nothing_reads_are_reported_by_name() {
    let mut req = duration_metric(
        "s",
        histogram(DELTA, vec![hist_point(200, 1, 2, vec![1, 0, 0])]),
    );
    let metrics = &mut req.resource_metrics[0].scope_metrics[0].metrics;
    metrics[0].name = "myapp.request.latency".into();
    metrics.push(metrics[0].clone());
    let mut deltas = DeltaTracker::new(10, 0);
    let b = Mapper::default().metrics(&req, &mut deltas, 0);
    assert!(b.groups.is_empty());
    assert_eq!(b.ignored_metrics, vec![("myapp.request.latency", 2)]);
}

/// gRPC status codes on metric points: server errors only.
#[test]
fn grpc_status_codes_on_points_count_server_errors() {
    let mut req = duration_metric("s", histogram(DELTA, vec![]));
    let metric = &mut req.resource_metrics[0].scope_metrics[0].metrics[0];
    metric.name = "rpc.server.call.duration".into();
    let point = |code: i64| HistogramDataPoint {
        attributes: vec![kv_int("rpc.grpc.status_code", code)],
        ..hist_point(0, 1, 2, vec![1, 0, 0])
    };
    // OK, NOT_FOUND (the caller's), UNAVAILABLE (ours)
    metric.data = Some(histogram(DELTA, vec![point(0), point(5), point(14)]));
    let mut deltas = DeltaTracker::new(10, 0);
    let b = Mapper::default().metrics(&req, &mut deltas, 0);
    let s = &b.groups[0].sample;
    assert_eq!((s.requests, s.errors), (3, 1));
}

/// A cumulative exponential point of one stream, the poisoned shape of the
/// security review: scale 20 at an offset near i32::MAX.
fn exponential_point(scale: i32, offset: i32, counts: Vec<u64>) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        count: counts.iter().sum(),
        scale,
        positive: Some(ExpBuckets {
            offset,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

fn exponential(
    temporality: i32,
    point: ExponentialHistogramDataPoint,
) -> ExportMetricsServiceRequest {
    duration_metric(
        "ms",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![point],
            aggregation_temporality: temporality,
        }),
    )
}

/// What a metrics request became: points refused, the first reason, and
/// the requests of the first release.
fn mapped(
    mapper: &Mapper,
    req: ExportMetricsServiceRequest,
    deltas: &mut DeltaTracker,
    now: UnixNanos,
) -> (u64, String, u64) {
    let b = mapper.metrics(&req, deltas, now);
    (
        b.invalid,
        b.first_error.clone().unwrap_or_default(),
        b.groups.first().map_or(0, |g| g.sample.requests),
    )
}

#[test]
fn exponential_offsets_beyond_any_duration_are_refused() {
    let mapper = Mapper::default();
    let mut deltas = DeltaTracker::new(10, 0);
    let poisoned = exponential(CUMULATIVE, exponential_point(20, i32::MAX, vec![1, 1]));
    let (invalid, why, _) = mapped(&mapper, poisoned, &mut deltas, 0);
    assert_eq!(invalid, 1);
    assert!(why.contains("2^±64"), "{why}");
    // The retry at another scale, which used to panic, is refused too.
    let mut retry = exponential_point(19, i32::MAX, vec![1, 1]);
    retry.time_unix_nano = 3;
    let (invalid, _, _) = mapped(&mapper, exponential(CUMULATIVE, retry), &mut deltas, 0);
    assert_eq!(invalid, 1);
    assert!(deltas.is_empty(), "nothing remembered");
    // Real SDK points: 1 s in nanoseconds at scale 20 is index ~31 million.
    let real = exponential_point(20, 31_350_000, vec![1, 2, 3]);
    let (invalid, _, requests) = mapped(&mapper, exponential(DELTA, real), &mut deltas, 0);
    assert_eq!((invalid, requests), (0, 6));
}

#[test]
fn a_count_that_is_not_the_buckets_sum_is_refused() {
    let mapper = Mapper::default();
    let delta = |p: HistogramDataPoint| duration_metric("s", histogram(DELTA, vec![p]));
    let mut forged = hist_point(503, 1, 2, vec![1, 0, 0]);
    forged.count = 100_000;
    let (invalid, why, requests) = mapped(&mapper, delta(forged), &mut DeltaTracker::new(10, 0), 0);
    assert_eq!((invalid, requests), (1, 0));
    assert!(
        why.contains("count 100000 is not the sum of the bucket counts (1)"),
        "{why}"
    );
    // Counts that overflow when summed.
    let mut wraps = hist_point(200, 1, 2, vec![]);
    wraps.bucket_counts = vec![1 << 63, 1 << 63, 0];
    let (invalid, _, _) = mapped(&mapper, delta(wraps), &mut DeltaTracker::new(10, 0), 0);
    assert_eq!(invalid, 1);
    // A count with no buckets is a plain count, within the cap.
    let mut plain = hist_point(200, 1, 2, vec![]);
    plain.explicit_bounds = vec![];
    plain.count = MAX_POINT_COUNT + 1;
    let (invalid, why, _) = mapped(
        &mapper,
        delta(plain.clone()),
        &mut DeltaTracker::new(10, 0),
        0,
    );
    assert_eq!(invalid, 1);
    assert!(why.contains(".count: 4294967297 new requests"), "{why}");
    plain.count = 7;
    let (_, _, requests) = mapped(&mapper, delta(plain), &mut DeltaTracker::new(10, 0), 0);
    assert_eq!(requests, 7);
}

#[test]
fn too_many_bounds_are_refused_even_without_counts() {
    let mut point = hist_point(200, 1, 2, vec![]);
    point.explicit_bounds = (0..2_000_000).map(f64::from).collect();
    let req = duration_metric("s", histogram(CUMULATIVE, vec![point]));
    let (invalid, why, _) = mapped(&Mapper::default(), req, &mut DeltaTracker::new(10, 0), 0);
    assert_eq!(invalid, 1);
    assert!(
        why.contains("explicit_bounds has 2000000 entries; at most 4096"),
        "{why}"
    );
}

#[test]
fn a_future_dated_cumulative_point_cannot_silence_its_stream() {
    let mapper = Mapper::default();
    let mut deltas = DeltaTracker::new(10, 0);
    let now = 1_000 * NANOS_PER_SEC;
    let cumulative = |p: HistogramDataPoint| duration_metric("s", histogram(CUMULATIVE, vec![p]));
    let ahead = hist_point(200, 5, now + 3600 * NANOS_PER_SEC, vec![1, 0, 0]);
    let (invalid, why, _) = mapped(&mapper, cumulative(ahead), &mut deltas, now);
    assert_eq!(invalid, 1);
    assert!(why.contains("ahead of the daemon's clock"), "{why}");
    for (t, counts, new) in [(now - 1, vec![2, 0, 0], 2), (now, vec![5, 0, 0], 3)] {
        let honest = hist_point(200, 5, t, counts);
        let (_, _, requests) = mapped(&mapper, cumulative(honest), &mut deltas, now);
        assert_eq!(requests, new);
    }
}

#[test]
fn spans_longer_than_the_maximum_are_refused() {
    let mut forever = span(SERVER, 5, vec![]);
    forever.start_time_unix_nano = 0;
    forever.end_time_unix_nano = u64::MAX;
    let req = traces(checkout(), vec![forever, span(SERVER, 5, vec![])]);
    let b = Mapper::default().traces(&req);
    assert_eq!(b.invalid, 1);
    let why = b.first_error.clone().unwrap();
    assert!(why.contains("longer than the 3600 s maximum"), "{why}");
    assert_eq!(b.groups[0].sample.requests, 1);
}

#[test]
fn a_full_stream_table_is_a_retryable_refusal_not_invalid_input() {
    let mapper = Mapper::default();
    let mut deltas = DeltaTracker::new(1, 0);
    let first = duration_metric(
        "s",
        histogram(CUMULATIVE, vec![hist_point(200, 5, 10, vec![1, 0, 0])]),
    );
    assert_eq!(mapper.metrics(&first, &mut deltas, 0).full, 0);
    let second = duration_metric(
        "s",
        histogram(CUMULATIVE, vec![hist_point(503, 5, 10, vec![1, 0, 0])]),
    );
    let b = mapper.metrics(&second, &mut deltas, 0);
    assert_eq!((b.full, b.invalid), (1, 0));
    assert!(b
        .full_reason
        .clone()
        .unwrap()
        .contains("max_metric_streams"));
}

/// A cumulative stream per route and status code, as the SDKs export
/// them: every export counts each request once, from the first export on,
/// whatever attribute sets come and go.
#[test]
fn cumulative_attribute_sets_count_each_request_once_at_every_export() {
    let mapper = Mapper::default();
    // The daemon started at 100; the service's streams start after it.
    let mut deltas = DeltaTracker::new(100, 100);
    let point = |route: &str, status: i64, start: u64, time: u64, n: u64| {
        let attrs = vec![
            kv("http.route", route),
            kv("http.request.method", "GET"),
            kv_int("http.response.status_code", status),
        ];
        kit::histogram_point(attrs, start, time, vec![0.1, 0.5], vec![n, 0, 0])
    };
    // (route, status, stream start) and each stream's cumulative count at
    // each of three exports (0: not yet in the export).
    let streams: [(&str, i64, u64, [u64; 3]); 4] = [
        ("/checkout", 200, 150, [40, 85, 131]),
        ("/checkout", 500, 170, [4, 9, 13]),
        ("/cart", 200, 200, [0, 20, 20]),
        ("/cart", 503, 300, [0, 0, 2]),
    ];
    let mut counted = (0, 0);
    for (e, time) in [1_000u64, 2_000, 3_000].into_iter().enumerate() {
        let points = streams
            .iter()
            .filter(|s| s.3[e] > 0)
            .map(|&(route, status, start, n)| point(route, status, start, time, n[e]))
            .collect();
        let req = duration_metric("s", histogram(CUMULATIVE, points));
        let b = mapper.metrics(&req, &mut deltas, time);
        assert_eq!((b.invalid, b.full, b.groups.len()), (0, 0, 1));
        let s = &b.groups[0].sample;
        assert_eq!(s.source, crate::model::RequestSource::Metrics);
        counted = (counted.0 + s.requests, counted.1 + s.errors);
        let sent: u64 = streams.iter().map(|s| s.3[e]).sum();
        let failed: u64 = streams.iter().filter(|s| s.1 >= 500).map(|s| s.3[e]).sum();
        assert_eq!(counted, (sent, failed), "after export {}", e + 1);
        let by_endpoint: u64 = s.endpoints.iter().map(|x| x.requests).sum();
        assert_eq!(by_endpoint, s.requests, "export {}", e + 1);
    }
    assert_eq!(deltas.len(), 4);
}

#[test]
fn spans_are_the_spans_source() {
    let req = traces(checkout(), vec![span(SERVER, 10, vec![])]);
    let b = Mapper::default().traces(&req);
    assert_eq!(
        b.groups[0].sample.source,
        crate::model::RequestSource::Spans
    );
}
