//! Metrics exports mapped: request-duration histograms become requests,
//! errors and latencies; the metrics `[[checks.metric]]` reads become
//! observations; cumulative streams go through the delta tracker.

use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point::Value as NumberValue, Metric, NumberDataPoint,
};

use super::{attr, attribute, pairs, Mapper};
use crate::ingest::buckets::{unit_to_micros, Buckets};
use crate::ingest::delta::{Cumulative, Delta, DeltaTracker, Full};
use crate::ingest::facts::error_kind;
use crate::ingest::identity::Found;
use crate::model::{Batch, MetricObservation, RequestSource, UnixNanos, NANOS_PER_SEC};

/// OTLP `AggregationTemporality` values.
pub(super) const DELTA: i32 = 1;
pub(super) const CUMULATIVE: i32 = 2;

impl Mapper {
    /// Requests, errors and latencies from the request-duration histogram of
    /// a metrics export; cumulative streams go through `deltas`.
    pub fn metrics<'a>(
        &self,
        req: &'a ExportMetricsServiceRequest,
        deltas: &mut DeltaTracker,
        now: UnixNanos,
    ) -> Batch<'a> {
        let mut batch = Batch::default();
        for (r, rm) in req.resource_metrics.iter().enumerate() {
            let resource_attrs: &[KeyValue] = rm
                .resource
                .as_ref()
                .map(|r| &r.attributes[..])
                .unwrap_or(&[]);
            let resource = Found::scan(resource_attrs, &self.keys);
            let resource_id = {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                hash_attrs(resource_attrs, &mut h);
                h.finish()
            };
            for (s, sm) in rm.scope_metrics.iter().enumerate() {
                let scope = sm.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                for (m, metric) in sm.metrics.iter().enumerate() {
                    let points = point_count(metric);
                    batch.items += points;
                    let stream = StreamKey {
                        resource: resource_attrs,
                        resource_id,
                        scope,
                        metric,
                    };
                    if let Some(checks) = self.checked.get(&metric.name) {
                        let at = format!("resource_metrics[{r}].scope_metrics[{s}].metrics[{m}]");
                        self.check_points(
                            &mut batch, metric, checks, resource, stream, deltas, now, &at,
                        );
                        continue;
                    }
                    let Some(default_unit) = self.durations.get(&metric.name) else {
                        batch.ignore_metric(&metric.name, points);
                        continue;
                    };
                    let at = format!("resource_metrics[{r}].scope_metrics[{s}].metrics[{m}]");
                    let unit = if metric.unit.is_empty() {
                        default_unit
                    } else {
                        &metric.unit
                    };
                    let factor = match unit_to_micros(unit) {
                        Ok(f) => f,
                        Err(e) => {
                            batch.reject(points, format_args!("{at} ({}): {e}", metric.name));
                            continue;
                        }
                    };
                    self.duration_points(
                        &mut batch, metric, resource, stream, factor, deltas, now, &at,
                    );
                }
            }
        }
        for group in &mut batch.groups {
            group.sample.source = RequestSource::Metrics;
        }
        batch
    }

    /// Requests, errors and latencies from the request-duration histogram.
    #[allow(clippy::too_many_arguments)]
    fn duration_points<'a>(
        &self,
        batch: &mut Batch<'a>,
        metric: &'a Metric,
        resource: Found<'a>,
        stream: StreamKey<'_>,
        factor: f64,
        deltas: &mut DeltaTracker,
        now: UnixNanos,
        at: &str,
    ) {
        let Some(points) = hist_points(metric, false) else {
            let n = point_count(metric);
            batch.reject(n, format_args!("{at} ({}): not a histogram", metric.name));
            return;
        };
        for (p, attributes, count, buckets) in resolve(batch, points, stream, deltas, now, at) {
            let found = Found::scan(attributes, &self.keys).over(resource);
            let failed = self.status.failed_kv(attributes);
            let Some(group) = attribute(batch, found, || format!("{at}.data_points[{p}]")) else {
                continue;
            };
            group.items += 1;
            group.sample.requests = group.sample.requests.saturating_add(count);
            let get = |k: &str| attr(pairs(attributes), k);
            let endpoint = self
                .endpoints
                .endpoint(get, None, &mut String::new())
                .map(|e| {
                    group
                        .sample
                        .add_endpoint(e, count, if failed { count } else { 0 })
                });
            if failed {
                group.sample.errors = group.sample.errors.saturating_add(count);
                let kind = error_kind(get, None, &self.status.http, &self.status.grpc);
                group
                    .sample
                    .add_error_kind(kind.as_deref().unwrap_or("error"), count);
            }
            // Points over the same bounds merge rather than pile up.
            group.sample.make_room(buckets.max_points());
            let from = group.sample.latencies_us.len();
            buckets.latencies(factor, &mut group.sample.latencies_us);
            if let Some(i) = endpoint {
                let s = &mut group.sample;
                let added = s.latencies_us[from..].iter().map(|&(us, n)| (i, us, n));
                s.endpoint_latencies.extend(added);
            }
        }
    }

    /// Observations of a metric that `[[checks.metric]]` reads: increments
    /// of monotonic sums, values of gauges, non-monotonic sums and
    /// histograms (in thousandths of the metric's unit).
    #[allow(clippy::too_many_arguments)]
    fn check_points<'a>(
        &self,
        batch: &mut Batch<'a>,
        metric: &'a Metric,
        checks: &[u16],
        resource: Found<'a>,
        stream: StreamKey<'_>,
        deltas: &mut DeltaTracker,
        now: UnixNanos,
        at: &str,
    ) {
        let mut observed: Vec<(usize, &'a [KeyValue], Vec<MetricObservation>)> = Vec::new();
        let values = match &metric.data {
            Some(Data::Gauge(g)) => Some(&g.data_points),
            Some(Data::Sum(s)) if !s.is_monotonic => Some(&s.data_points),
            _ => None,
        };
        if let Some(points) = values {
            for (p, point) in points.iter().enumerate() {
                let Some(v) = number(point) else {
                    continue;
                };
                if !v.is_finite() {
                    batch.reject(
                        1,
                        format_args!("{at}.data_points[{p}]: value is not finite"),
                    );
                    continue;
                }
                let milli = (v * 1000.0).max(0.0).round() as u64;
                observed.push((
                    p,
                    &point.attributes,
                    vec![MetricObservation::Values { milli, count: 1 }],
                ));
            }
        } else if let Some(points) = hist_points(metric, true) {
            let is_sum = matches!(metric.data, Some(Data::Sum(_)));
            for (p, attributes, count, buckets) in resolve(batch, points, stream, deltas, now, at) {
                let obs = if is_sum {
                    vec![MetricObservation::Count(count)]
                } else {
                    let mut values = Vec::new();
                    buckets.latencies(1000.0, &mut values);
                    values
                        .into_iter()
                        .map(|(milli, count)| MetricObservation::Values { milli, count })
                        .collect()
                };
                observed.push((p, attributes, obs));
            }
        } else {
            let n = point_count(metric);
            batch.reject(
                n,
                format_args!("{at} ({}): summaries cannot be checked", metric.name),
            );
            return;
        }
        for (p, attributes, obs) in observed {
            let found = Found::scan(attributes, &self.keys).over(resource);
            let Some(group) = attribute(batch, found, || format!("{at}.data_points[{p}]")) else {
                continue;
            };
            group.items += 1;
            for o in obs {
                group.sample.metrics.extend(checks.iter().map(|c| (*c, o)));
            }
        }
    }
}

/// A sum's or gauge's value, integer or double.
fn number(p: &NumberDataPoint) -> Option<f64> {
    match p.value? {
        NumberValue::AsDouble(d) => Some(d),
        NumberValue::AsInt(i) => Some(i as f64),
    }
}

/// Histogram points (and, with `sums`, monotonic sum points as bare
/// counts) of a metric; None for any other kind.
fn hist_points(metric: &Metric, sums: bool) -> Option<Vec<HistPoint<'_>>> {
    Some(match &metric.data {
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| HistPoint {
                attributes: &p.attributes,
                temporality: h.aggregation_temporality,
                cumulative: Cumulative {
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                    count: p.count,
                    buckets: Buckets::Explicit {
                        bounds: p.explicit_bounds.clone(),
                        counts: p.bucket_counts.clone(),
                    },
                },
            })
            .collect(),
        Some(Data::ExponentialHistogram(h)) => h
            .data_points
            .iter()
            .map(|p| {
                let (offset, counts) = p
                    .positive
                    .as_ref()
                    .map(|b| (b.offset, b.bucket_counts.clone()))
                    .unwrap_or_default();
                HistPoint {
                    attributes: &p.attributes,
                    temporality: h.aggregation_temporality,
                    cumulative: Cumulative {
                        start: p.start_time_unix_nano,
                        time: p.time_unix_nano,
                        count: p.count,
                        buckets: Buckets::Exponential {
                            scale: p.scale,
                            zero: p.zero_count,
                            offset,
                            counts,
                        },
                    },
                }
            })
            .collect(),
        Some(Data::Sum(s)) if sums && s.is_monotonic => s
            .data_points
            .iter()
            .map(|p| {
                let v = number(p).unwrap_or(0.0);
                HistPoint {
                    attributes: &p.attributes,
                    temporality: s.aggregation_temporality,
                    cumulative: Cumulative {
                        start: p.start_time_unix_nano,
                        time: p.time_unix_nano,
                        count: if v.is_finite() {
                            v.max(0.0).round() as u64
                        } else {
                            0
                        },
                        buckets: Buckets::Explicit {
                            bounds: vec![],
                            counts: vec![],
                        },
                    },
                }
            })
            .collect(),
        _ => return None,
    })
}

/// Validates points and turns cumulative ones into deltas; refused points
/// are counted in the batch. Yields (index, attributes, count, buckets).
fn resolve<'a>(
    batch: &mut Batch<'_>,
    points: Vec<HistPoint<'a>>,
    stream: StreamKey<'_>,
    deltas: &mut DeltaTracker,
    now: UnixNanos,
    at: &str,
) -> Vec<(usize, &'a [KeyValue], u64, Buckets)> {
    let mut out = Vec::with_capacity(points.len());
    for (p, point) in points.into_iter().enumerate() {
        let c = &point.cumulative;
        if let Err(e) = c
            .buckets
            .validate()
            .and_then(|()| c.buckets.check_count(c.count))
        {
            batch.reject(1, format_args!("{at}.data_points[{p}]: {e}"));
            continue;
        }
        let (count, buckets) = match point.temporality {
            DELTA => (point.cumulative.count, point.cumulative.buckets),
            // A point far in the future is refused outright; one inside the
            // allowance is taken, and the points after it are ordered by
            // arrival (`DeltaTracker::observe`), so it cannot freeze its stream.
            CUMULATIVE if c.time > now.saturating_add(MAX_AHEAD) => {
                batch.reject(
                    1,
                    format_args!(
                        "{at}.data_points[{p}].time_unix_nano: {} is more than {} s ahead of the daemon's clock",
                        c.time,
                        MAX_AHEAD / NANOS_PER_SEC
                    ),
                );
                continue;
            }
            CUMULATIVE => {
                let key = stream.hash(point.attributes);
                match deltas.observe(stream.resource_id, key, point.cumulative, now) {
                    Delta::Add { count, buckets } => (count, buckets),
                    Delta::Nothing => continue,
                    Delta::Refused(full) => {
                        let bound = match full {
                            Full::Table => "the table of cumulative streams is full ([limits] max_metric_streams)",
                            Full::Resource => "the resource holds as many cumulative streams as one may ([limits] max_metric_streams_per_resource)",
                            Full::Sender => "this sender (its ingest token, or its address where tokens are off) holds as many cumulative streams as one may ([limits] max_metric_streams_per_sender)",
                            Full::Bytes => "the cumulative streams hold as many bytes of buckets as they may ([limits] max_metric_stream_bytes)",
                        };
                        batch.refuse_full(
                            1,
                            format_args!("{at}.data_points[{p}]: {bound}; idle streams are forgotten after [limits] release_idle_expiry"),
                        );
                        continue;
                    }
                }
            }
            other => {
                batch.reject(
                    1,
                    format_args!(
                        "{at}: aggregation temporality {other} is not delta (1) or cumulative (2)"
                    ),
                );
                continue;
            }
        };
        if count > MAX_POINT_COUNT {
            batch.reject(
                1,
                format_args!(
                    "{at}.data_points[{p}].count: {count} new requests in one point; at most {MAX_POINT_COUNT} are accepted"
                ),
            );
            continue;
        }
        out.push((p, point.attributes, count, buckets));
    }
    out
}

/// Most a cumulative point may be ahead of the daemon's clock.
const MAX_AHEAD: UnixNanos = 10 * 60 * NANOS_PER_SEC;

/// Most requests one point (or the delta of a cumulative one) may add:
/// 2^32, far beyond any real minute of traffic, and a bound on what one
/// sender can make the judge hold.
pub const MAX_POINT_COUNT: u64 = 1 << 32;

struct HistPoint<'a> {
    attributes: &'a [KeyValue],
    temporality: i32,
    cumulative: Cumulative,
}

/// What identifies one cumulative stream: resource, scope, metric and point attributes.
#[derive(Clone, Copy)]
struct StreamKey<'a> {
    resource: &'a [KeyValue],
    /// The resource's attributes hashed: whose stream quota it counts against.
    resource_id: u64,
    scope: &'a str,
    metric: &'a Metric,
}

impl StreamKey<'_> {
    fn hash(&self, point_attrs: &[KeyValue]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        hash_attrs(self.resource, &mut h);
        self.scope.hash(&mut h);
        self.metric.name.hash(&mut h);
        self.metric.unit.hash(&mut h);
        hash_attrs(point_attrs, &mut h);
        h.finish()
    }
}

fn hash_attrs(attrs: &[KeyValue], h: &mut impl Hasher) {
    attrs.len().hash(h);
    for kv in attrs {
        kv.key.hash(h);
        hash_value(kv.value.as_ref(), h);
    }
}

fn hash_value(v: Option<&AnyValue>, h: &mut impl Hasher) {
    match v.and_then(|v| v.value.as_ref()) {
        None => 0u8.hash(h),
        Some(Value::StringValue(s)) => (1u8, s).hash(h),
        Some(Value::StringValueStrindex(i)) => (8u8, i).hash(h),
        Some(Value::BoolValue(b)) => (2u8, b).hash(h),
        Some(Value::IntValue(i)) => (3u8, i).hash(h),
        Some(Value::DoubleValue(d)) => (4u8, d.to_bits()).hash(h),
        Some(Value::BytesValue(b)) => (5u8, b).hash(h),
        Some(Value::ArrayValue(a)) => {
            6u8.hash(h);
            a.values.len().hash(h);
            for v in &a.values {
                hash_value(Some(v), h);
            }
        }
        Some(Value::KvlistValue(l)) => {
            7u8.hash(h);
            hash_attrs(&l.values, h);
        }
    }
}

fn point_count(metric: &Metric) -> u64 {
    (match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}
