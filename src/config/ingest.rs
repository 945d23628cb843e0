//! `[ingest]`: which spans and metrics feed the built-in request, error
//! and latency signals, and where status codes are read from.

use serde::Deserialize;

use crate::model::SpanKindFilter;

/// Which spans and metrics feed the built-in request, error and latency signals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Span kinds that count as requests: any of `server`, `consumer`,
    /// `client`, `producer`, `internal`.
    pub span_kinds: Vec<String>,
    /// Request-duration histograms read from metrics-only services, each
    /// with the unit assumed when the metric does not say its own. Both
    /// HTTP conventions by default: the stable one, and the older one the
    /// Python and Node instrumentations still export unless told
    /// `OTEL_SEMCONV_STABILITY_OPT_IN=http`; likewise for gRPC.
    pub duration_metrics: Vec<DurationMetric>,
    /// Attributes holding an HTTP status code: 5xx is a server error.
    pub http_status_keys: Vec<String>,
    /// Attributes holding a gRPC status code (number or name): UNKNOWN,
    /// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
    /// DATA_LOSS are server errors.
    pub grpc_status_keys: Vec<String>,
}

/// A request-duration histogram and its default unit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationMetric {
    pub name: String,
    /// `s`, `ms`, `us` or `ns`; the metric's own unit wins when it has one.
    pub unit: String,
}

impl DurationMetric {
    fn new(name: &str, unit: &str) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect();
        Self {
            span_kinds: vec!["server".into(), "consumer".into()],
            duration_metrics: vec![
                DurationMetric::new("http.server.request.duration", "s"),
                DurationMetric::new("http.server.duration", "ms"),
                DurationMetric::new("rpc.server.call.duration", "s"),
                DurationMetric::new("rpc.server.duration", "ms"),
            ],
            http_status_keys: keys(&["http.response.status_code", "http.status_code"]),
            grpc_status_keys: keys(&["rpc.grpc.status_code", "rpc.response.status_code"]),
        }
    }
}

impl IngestConfig {
    /// The span kinds as a filter; only valid after `Config::validate`.
    pub fn span_kind_filter(&self) -> SpanKindFilter {
        SpanKindFilter::parse(&self.span_kinds).unwrap_or_default()
    }

    /// Whether `metric` is one of the request-duration histograms.
    pub fn is_duration_metric(&self, metric: &str) -> bool {
        self.duration_metrics.iter().any(|d| d.name == metric)
    }

    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if let Err(bad) = SpanKindFilter::parse(&self.span_kinds) {
            problems.push(format!(
                "ingest.span_kinds: unknown kind {bad:?} (expected server, consumer, client, producer or internal)"
            ));
        }
        for (i, d) in self.duration_metrics.iter().enumerate() {
            if d.name.is_empty() {
                problems.push(format!(
                    "ingest.duration_metrics[{i}].name must not be empty"
                ));
            }
            if !matches!(d.unit.as_str(), "s" | "ms" | "us" | "µs" | "ns") {
                problems.push(format!(
                    "ingest.duration_metrics[{i}] ({:?}): unit must be s, ms, us or ns, not {:?}",
                    d.name, d.unit
                ));
            }
        }
        for (name, keys) in [
            ("ingest.http_status_keys", &self.http_status_keys),
            ("ingest.grpc_status_keys", &self.grpc_status_keys),
        ] {
            if keys.iter().any(|k| k.is_empty()) {
                problems.push(format!("{name} must not contain an empty key"));
            }
        }
    }
}
