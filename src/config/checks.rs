//! The judge's and the checks' sections of the configuration (`[judge]`,
//! `[checks.*]`): how often and how strictly releases are judged, and what
//! is compared with which tolerances. Validated with the rest in `mod.rs`.

use std::time::Duration;

use serde::Deserialize;

/// How often and how strictly releases are judged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Evaluation period.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Length of the rolling window that latency thresholds and reported
    /// rates and quantiles are read from.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Sub-windows in the rolling window.
    pub window_slots: usize,
    /// Confidence for red: the chance a release that meets its tolerances is
    /// ever called red is at most 1 − confidence, however long it is watched.
    pub confidence: f64,
    /// Confidence for green: the chance green is given while a check is
    /// beyond its pass bound is at most 1 − green_confidence.
    pub green_confidence: f64,
    /// Requests each cohort needs before green.
    pub min_requests: u64,
    /// Time the canary needs to have been seen before green.
    #[serde(with = "humantime_serde")]
    pub min_duration: Duration,
    /// A regression is looked for from every epoch boundary on, so one that
    /// starts late is not buried under the healthy time before it.
    #[serde(with = "humantime_serde")]
    pub epoch: Duration,
    /// A link to a trace in your tracing UI, `{trace_id}` (and optionally
    /// `{span_id}`) filled in: exemplars in verdicts carry it as `url`.
    pub trace_url_template: Option<String>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            window: Duration::from_secs(60),
            window_slots: 6,
            confidence: 0.99,
            green_confidence: 0.9,
            min_requests: 200,
            min_duration: Duration::from_secs(30),
            epoch: Duration::from_secs(15),
            trace_url_template: None,
        }
    }
}

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
            quantiles: vec![0.5, 0.95, 0.99],
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
