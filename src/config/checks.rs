//! `[checks.*]`: what is compared, canary against baseline (error ratio,
//! latency, endpoints, any OTLP metric), with which tolerances, and the
//! absolute guardrails.

use std::time::Duration;

use serde::Deserialize;

use super::IngestConfig;

/// The checks, like a Kayenta canary config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// Canary error ratio against the baseline's.
    pub error_ratio: ErrorRatioCheck,
    /// Canary latency distribution against the baseline's.
    pub latency: LatencyCheck,
    /// Absolute limits on the canary, with or without a baseline.
    pub guardrails: Guardrails,
    /// Checks on any OTLP metric (`[[checks.metric]]`).
    pub metric: Vec<MetricCheck>,
    /// The error ratio judged per endpoint too.
    pub endpoints: EndpointsCheck,
}

/// The release judged per endpoint as well as overall, so a regression
/// confined to one endpoint is not diluted by the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsCheck {
    pub enabled: bool,
    /// Span or data point attributes naming the endpoint, the first present
    /// winning; `a/b` joins two attributes (`rpc.service/rpc.method`). An
    /// `http.route` is prefixed with the request's method when it has one.
    pub keys: Vec<String>,
    /// With no key present, a SERVER span's name is its endpoint.
    pub span_name: bool,
    /// Endpoints judged on their own per release, the first ones seen; the
    /// rest are pooled as `(other)`.
    pub top: usize,
    /// Requests each cohort needs on an endpoint before it is judged.
    pub min_requests: u64,
}

impl Default for EndpointsCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            keys: vec!["http.route".into(), "rpc.service/rpc.method".into()],
            span_name: true,
            top: 20,
            min_requests: 20,
        }
    }
}

/// Which change of a metric is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Increase,
    Decrease,
    Either,
}

/// A check on any OTLP metric, canary vs baseline, like a Kayenta metric.
/// Sums are compared as events per request (the canary's share of the
/// increments against its share of the requests); gauges and histograms by
/// their distributions at baseline quantiles, like latency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    /// The check's name in verdicts and metrics.
    pub name: String,
    /// The OTLP metric it reads.
    pub metric: String,
    /// Which change is bad.
    pub direction: Direction,
    /// Red needs evidence of a change beyond this fraction...
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// ...and beyond this much, in the metric's unit (per request for sums).
    #[serde(default)]
    pub tolerance_abs: f64,
    /// Green needs evidence the change is within this fraction...
    #[serde(default = "default_pass_bound")]
    pub pass_bound: f64,
    /// ...or within this much.
    #[serde(default)]
    pub pass_bound_abs: f64,
    /// Baseline quantiles compared at (gauges and histograms).
    #[serde(default = "default_metric_quantiles")]
    pub quantiles: Vec<f64>,
    #[serde(default)]
    pub critical: bool,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_tolerance() -> f64 {
    0.1
}

fn default_pass_bound() -> f64 {
    0.25
}

fn default_metric_quantiles() -> Vec<f64> {
    vec![0.5]
}

fn default_weight() -> f64 {
    1.0
}

/// Error ratio, canary vs baseline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorRatioCheck {
    pub enabled: bool,
    /// A failure alone makes the verdict red.
    pub critical: bool,
    /// Share of the score.
    pub weight: f64,
    /// Red needs evidence that the canary's error ratio exceeds the
    /// baseline's by more than this fraction of it...
    pub tolerance: f64,
    /// ...and an observed increase of at least this many (absolute).
    pub tolerance_abs: f64,
    /// Green needs evidence that the canary's error ratio is at most
    /// (1 + pass_bound) times the baseline's...
    pub pass_bound: f64,
    /// ...or at most the baseline's plus this (absolute).
    pub pass_bound_abs: f64,
    /// Green also rules out error kinds the baseline has not shown on this
    /// share of the canary's requests. Tighter than `pass_bound_abs`: a
    /// new kind arrives a few at a time, and its red needs a handful, so
    /// green must wait long enough that a kind on 0.5% of requests would
    /// have shown itself.
    pub new_kind_pass_bound_abs: f64,
}

impl Default for ErrorRatioCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            critical: true,
            weight: 1.0,
            tolerance: 0.0,
            tolerance_abs: 0.001,
            pass_bound: 0.5,
            pass_bound_abs: 0.0075,
            new_kind_pass_bound_abs: 0.0045,
        }
    }
}

/// Latency distribution, canary vs baseline, compared at baseline quantiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyCheck {
    pub enabled: bool,
    pub critical: bool,
    pub weight: f64,
    /// Baseline quantiles the canary is compared at.
    pub quantiles: Vec<f64>,
    /// Red needs evidence that the canary is slower than the baseline by
    /// more than this fraction at one of the quantiles...
    pub tolerance: f64,
    /// ...and by more than this much.
    #[serde(with = "humantime_serde")]
    pub tolerance_abs: Duration,
    /// Green needs evidence that the canary is at most this fraction slower
    /// at every quantile...
    pub pass_bound: f64,
    /// ...or at most this much slower.
    #[serde(with = "humantime_serde")]
    pub pass_bound_abs: Duration,
    /// ...or, at a tail quantile (p90 and up), no slower than the
    /// baseline's quantile that leaves this share of the tail beyond it
    /// (0.5: p99 no slower than the baseline's p99.5); 1 turns it off.
    pub pass_tail: f64,
}

impl Default for LatencyCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            critical: true,
            weight: 1.0,
            quantiles: vec![0.5, 0.95, 0.99, 0.999],
            tolerance: 0.1,
            tolerance_abs: Duration::from_millis(1),
            pass_bound: 0.25,
            pass_bound_abs: Duration::from_millis(5),
            pass_tail: 0.5,
        }
    }
}

/// Absolute limits on the canary, as in a PrometheusRule. Off unless set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guardrails {
    /// Most errors per request, e.g. 0.02.
    pub max_error_ratio: Option<f64>,
    /// Highest median latency.
    #[serde(with = "humantime_serde")]
    pub max_p50: Option<Duration>,
    /// Highest 95th percentile latency, e.g. "500ms".
    #[serde(with = "humantime_serde")]
    pub max_p95: Option<Duration>,
    /// Highest 99th percentile latency.
    #[serde(with = "humantime_serde")]
    pub max_p99: Option<Duration>,
}

impl Guardrails {
    /// The latency guardrails as (quantile, limit).
    pub fn latency(&self) -> Vec<(f64, Duration)> {
        [
            (0.5, self.max_p50),
            (0.95, self.max_p95),
            (0.99, self.max_p99),
        ]
        .into_iter()
        .filter_map(|(q, d)| d.map(|d| (q, d)))
        .collect()
    }

    pub fn any(&self) -> bool {
        self.max_error_ratio.is_some() || !self.latency().is_empty()
    }
}

impl ChecksConfig {
    /// Adds every problem to `problems`. A `[[checks.metric]]` may not read
    /// a metric `ingest` already turns into the built-in signals.
    pub(super) fn validate(&self, ingest: &IngestConfig, problems: &mut Vec<String>) {
        let e = &self.error_ratio;
        let l = &self.latency;
        for (name, v) in [
            ("checks.error_ratio.tolerance", e.tolerance),
            ("checks.error_ratio.tolerance_abs", e.tolerance_abs),
            ("checks.error_ratio.pass_bound", e.pass_bound),
            ("checks.error_ratio.pass_bound_abs", e.pass_bound_abs),
            ("checks.error_ratio.weight", e.weight),
            ("checks.latency.tolerance", l.tolerance),
            ("checks.latency.pass_bound", l.pass_bound),
            ("checks.latency.weight", l.weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{name} must be a non-negative number, not {v}"));
            }
        }
        if !(e.new_kind_pass_bound_abs > 0.0 && e.new_kind_pass_bound_abs < 1.0) {
            problems.push(format!(
                "checks.error_ratio.new_kind_pass_bound_abs must be in (0, 1), not {}",
                e.new_kind_pass_bound_abs
            ));
        }
        if e.pass_bound < e.tolerance {
            problems
                .push("checks.error_ratio.pass_bound must be at least its tolerance".to_string());
        }
        if l.pass_bound < l.tolerance {
            problems.push("checks.latency.pass_bound must be at least its tolerance".to_string());
        }
        if !(l.pass_tail > 0.0 && l.pass_tail <= 1.0) {
            problems.push(format!(
                "checks.latency.pass_tail must be in (0, 1] (1 turns it off), not {}",
                l.pass_tail
            ));
        }
        if l.quantiles.is_empty() || l.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
            problems.push(
                "checks.latency.quantiles must list quantiles strictly between 0 and 1".to_string(),
            );
        }
        let ep = &self.endpoints;
        if ep.enabled && !(1..=100).contains(&ep.top) {
            problems.push(format!(
                "checks.endpoints.top must be between 1 and 100, not {}",
                ep.top
            ));
        }
        if ep
            .keys
            .iter()
            .any(|k| k.is_empty() || k.split('/').any(str::is_empty))
        {
            problems.push(
                "checks.endpoints.keys must be attribute names, or two joined by one '/'"
                    .to_string(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.metric.iter().enumerate() {
            let at = format!("checks.metric[{i}] ({:?})", m.name);
            if m.name.is_empty() || m.metric.is_empty() {
                problems.push(format!("{at}: name and metric must not be empty"));
            }
            if !names.insert(m.name.as_str())
                || matches!(m.name.as_str(), "error_ratio" | "latency")
            {
                problems.push(format!("{at}: the name is already taken"));
            }
            if ingest.is_duration_metric(&m.metric) {
                problems.push(format!(
                    "{at}: {} already feeds the built-in checks",
                    m.metric
                ));
            }
            for (what, v) in [
                ("tolerance", m.tolerance),
                ("tolerance_abs", m.tolerance_abs),
                ("pass_bound", m.pass_bound),
                ("pass_bound_abs", m.pass_bound_abs),
                ("weight", m.weight),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    problems.push(format!(
                        "{at}: {what} must be a non-negative number, not {v}"
                    ));
                }
            }
            if m.direction != Direction::Increase && m.tolerance >= 1.0 {
                problems.push(format!("{at}: a decrease tolerance must be below 1"));
            }
            if m.quantiles.is_empty() || m.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
                problems.push(format!("{at}: quantiles must be strictly between 0 and 1"));
            }
        }
        if self.metric.len() > 64 {
            problems.push("at most 64 [[checks.metric]] are supported".to_string());
        }
        if let Some(r) = self.guardrails.max_error_ratio {
            if !(r > 0.0 && r < 1.0) {
                problems.push(format!(
                    "checks.guardrails.max_error_ratio must be in (0, 1), not {r}"
                ));
            }
        }
    }
}
