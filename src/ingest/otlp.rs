//! OTLP export requests mapped to per-release samples: which spans and data
//! points are requests, which of those failed, how long they took.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point::Value as NumberValue, Metric, NumberDataPoint,
};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::buckets::{unit_to_micros, Buckets};
use super::decode::{DecodeError, Encoding};
use super::delta::{Cumulative, Delta, DeltaTracker, Full};
use super::facts::{error_kind, Attr, EndpointKeys, ERROR_TYPE, EXCEPTION_EVENT, EXCEPTION_TYPE};
use super::identity::{string_value, Found, IdentityKeys, Val};
use crate::config::Config;
use crate::model::{
    Batch, Group, MetricObservation, SpanFacts, SpanKindFilter, UnixNanos, NANOS_PER_SEC,
};

/// OTLP `Status.code` for ERROR.
const STATUS_ERROR: i32 = 2;
/// OTLP `Span.kind` for SERVER.
const SPAN_KIND_SERVER: i32 = 2;
/// OTLP `AggregationTemporality` values.
const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;

/// Finds the release of an item, counting unattributed and invalid items.
fn attribute<'a, 'b>(
    batch: &'b mut Batch<'a>,
    found: Found<'a>,
    what: impl FnOnce() -> String,
) -> Option<&'b mut Group<'a>> {
    match found.release() {
        Ok(Some(release)) => Some(batch.group(release)),
        Ok(None) => {
            batch.unattributed += 1;
            None
        }
        Err(e) => {
            batch.reject(1, format_args!("{}: {e}", what()));
            None
        }
    }
}

/// Maps OTLP requests with the configured keys and filters.
#[derive(Debug, Clone)]
pub struct Mapper {
    keys: IdentityKeys,
    kinds: SpanKindFilter,
    /// Request-duration histograms by name, with their default units.
    durations: HashMap<String, String>,
    status: StatusKeys,
    /// Metrics read by `[[checks.metric]]`, with the checks' indices.
    checked: HashMap<String, Vec<u16>>,
    /// `[limits] max_span_duration`, in nanoseconds.
    max_span: UnixNanos,
    endpoints: EndpointKeys,
    /// Every span attribute key the rules above read, with its probe.
    span_keys: Vec<(Probe, String)>,
}

/// A key's length and first eight bytes: most keys a rule does not read
/// differ from every key it does in those, told without a call to
/// `memcmp` (a tenth of the walk went there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe(u64, usize);

impl Probe {
    #[inline(always)]
    fn of(key: &[u8]) -> Self {
        let head = match key.first_chunk::<8>() {
            Some(head) => u64::from_le_bytes(*head),
            None => key
                .iter()
                .enumerate()
                .fold(0, |w, (i, &b)| w | u64::from(b) << (8 * i)),
        };
        Probe(head, key.len())
    }
}

impl Default for Mapper {
    fn default() -> Self {
        Self::new(&Config::default())
    }
}

impl Mapper {
    pub fn new(config: &Config) -> Self {
        let endpoints = EndpointKeys::new(&config.checks.endpoints);
        let keys = IdentityKeys::from(&config.identity);
        let mut span_keys: Vec<String> = keys
            .all()
            .chain(
                endpoints
                    .enabled()
                    .then(|| endpoints.attribute_keys())
                    .into_iter()
                    .flatten(),
            )
            .chain(config.ingest.http_status_keys.iter().map(String::as_str))
            .chain(config.ingest.grpc_status_keys.iter().map(String::as_str))
            .chain([ERROR_TYPE])
            .map(str::to_string)
            .collect();
        span_keys.sort();
        span_keys.dedup();
        Self {
            span_keys: span_keys
                .into_iter()
                .map(|k| (Probe::of(k.as_bytes()), k))
                .collect(),
            keys,
            kinds: config.ingest.span_kind_filter(),
            durations: config
                .ingest
                .duration_metrics
                .iter()
                .map(|d| (d.name.clone(), d.unit.clone()))
                .collect(),
            status: StatusKeys {
                http: config.ingest.http_status_keys.clone(),
                grpc: config.ingest.grpc_status_keys.clone(),
            },
            max_span: config.limits.max_span_duration.as_nanos() as UnixNanos,
            endpoints,
            checked: config.checks.metric.iter().enumerate().fold(
                HashMap::new(),
                |mut m, (i, c)| {
                    m.entry(c.metric.clone())
                        .or_insert_with(Vec::new)
                        .push(i as u16);
                    m
                },
            ),
        }
    }

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

    /// A trace export straight from its bytes, handed to `then` as a batch:
    /// protobuf walked in place (`walk`), JSON mapped span by span as it is
    /// read (`json::stream`), or through a model of only the fields read
    /// when the body is not laid out as exporters write it. The same batch as decoding then `traces`, at a fraction
    /// of the cost.
    pub fn trace_bytes<R>(
        &self,
        bytes: &[u8],
        encoding: Encoding,
        then: impl FnOnce(Batch<'_>) -> R,
    ) -> Result<R, DecodeError> {
        match encoding {
            Encoding::Protobuf => Ok(then(super::walk::traces(self, bytes)?)),
            Encoding::Json => {
                if let Some(batch) = super::json::stream::traces(self, bytes) {
                    return Ok(then(batch));
                }
                let req: super::json::Request = super::decode::read_json(bytes)?;
                Ok(then(super::json::traces(self, &req)))
            }
        }
    }

    /// The key itself when `span` may read span attributes of this key: a
    /// decoder may leave the others out of the attributes it hands over
    /// (their values still checked as the wire format requires).
    #[inline]
    pub(crate) fn reads(&self, key: &[u8]) -> Option<&str> {
        let probe = Probe::of(key);
        self.span_keys
            .iter()
            .find(|(p, k)| *p == probe && (key.len() <= 8 || k.as_bytes() == key))
            .map(|(_, k)| k.as_str())
    }

    /// The identity keys, for decoders that scan resources themselves.
    pub(crate) fn identity_keys(&self) -> &IdentityKeys {
        &self.keys
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
            if let Some(endpoint) = self.endpoints.endpoint(get, None, &mut String::new()) {
                group
                    .sample
                    .add_endpoint(endpoint, count, if failed { count } else { 0 });
            }
            if failed {
                group.sample.errors = group.sample.errors.saturating_add(count);
                let kind = error_kind(get, None, &self.status.http, &self.status.grpc);
                group
                    .sample
                    .add_error_kind(kind.as_deref().unwrap_or("error"), count);
            }
            buckets.latencies(factor, &mut group.sample.latencies_us);
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

/// An attribute by key, as the endpoint and error rules read it: the first
/// attribute of that key, if a string or an integer.
fn attr<'a>(mut attrs: impl Iterator<Item = (&'a str, Val<'a>)>, key: &str) -> Option<Attr<'a>> {
    match attrs.find(|(k, _)| *k == key)?.1 {
        Val::Str(s) => Some(Attr::Str(s)),
        Val::Int(i) => Some(Attr::Int(i)),
        _ => None,
    }
}

/// Decoded OTLP attributes as (key, value) pairs.
fn pairs(attrs: &[KeyValue]) -> impl Iterator<Item = (&str, Val<'_>)> + Clone {
    attrs
        .iter()
        .map(|kv| (kv.key.as_str(), Val::of(kv.value.as_ref())))
}

/// What the mapping reads of one span, from whichever decoder read it.
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
            // A point from the future would be taken as newer than every
            // honest point after it: the stream would go silent.
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

/// HTTP status code of a span or point (current and older conventions).
/// gRPC status codes a server reports as its own failure (semantic conventions).
fn grpc_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

fn grpc_server_error_name(name: &str) -> bool {
    matches!(
        name,
        "UNKNOWN"
            | "DEADLINE_EXCEEDED"
            | "UNIMPLEMENTED"
            | "INTERNAL"
            | "UNAVAILABLE"
            | "DATA_LOSS"
    )
}

/// The attributes whose status codes say a request failed.
#[derive(Debug, Clone)]
struct StatusKeys {
    /// HTTP: 5xx is a server error.
    http: Vec<String>,
    /// gRPC, by number or name: the server-error codes.
    grpc: Vec<String>,
}

impl StatusKeys {
    /// Whether attributes carry a server-error status code.
    fn failed<'a>(&self, mut attrs: impl Iterator<Item = (&'a str, Val<'a>)>) -> bool {
        attrs.any(|(key, value)| {
            if self.http.iter().any(|k| k == key) {
                value.int().is_some_and(|c| c >= 500)
            } else if self.grpc.iter().any(|k| k == key) {
                match value.int() {
                    Some(c) => grpc_server_error(c),
                    None => value.str().is_some_and(grpc_server_error_name),
                }
            } else {
                false
            }
        })
    }

    /// Whether decoded OTLP attributes carry a server-error status code.
    fn failed_kv(&self, attrs: &[KeyValue]) -> bool {
        self.failed(pairs(attrs))
    }
}

#[cfg(test)]
mod tests;
