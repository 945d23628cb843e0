//! `[limits]`: the bounds that keep memory finite whatever the input
//! (releases, metric streams, span durations).

use std::time::Duration;

use serde::Deserialize;

/// Bounds that keep memory finite whatever the input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most releases tracked at once; telemetry of further new releases is
    /// refused (OTLP partial success) and counted.
    pub max_releases: usize,
    /// Most releases tracked at once for one service (all environments),
    /// so junk ids under one service cannot lock the others out.
    pub max_releases_per_service: usize,
    /// A release not seen for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub release_idle_expiry: Duration,
    /// Most cumulative metric streams remembered for delta conversion.
    pub max_metric_streams: usize,
    /// Most of them for one resource (its attributes, as sent), so one
    /// sender's flood of streams cannot lock the others out.
    pub max_metric_streams_per_resource: usize,
    /// Most of them sent with one ingest token (from one address where
    /// tokens are off), so one sender's many resources cannot lock the
    /// others out either.
    pub max_metric_streams_per_sender: usize,
    /// Most bytes the remembered cumulative points take in all (a stream
    /// costs in proportion to its buckets: ~65 KiB at 4,096 bounds, under
    /// 1 KiB at the SDKs' defaults).
    pub max_metric_stream_bytes: usize,
    /// A span lasting longer is refused (partial success naming it): a
    /// request that long is a broken clock or a forged span, not a latency.
    /// At most 1h, the latency histograms' range.
    #[serde(with = "humantime_serde")]
    pub max_span_duration: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_releases: 10_000,
            max_releases_per_service: 100,
            release_idle_expiry: Duration::from_secs(15 * 60),
            max_metric_streams: 100_000,
            max_metric_streams_per_resource: 1000,
            max_metric_streams_per_sender: 50_000,
            max_metric_stream_bytes: 256 * 1024 * 1024,
            max_span_duration: Duration::from_secs(3600),
        }
    }
}

impl LimitsConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        let span = self.max_span_duration;
        if span < Duration::from_secs(1) || span > Duration::from_secs(3600) {
            problems.push(format!(
                "limits.max_span_duration must be between 1s and 1h, not {}",
                humantime::format_duration(span)
            ));
        }
        if self.max_releases_per_service == 0 {
            problems.push("limits.max_releases_per_service must be at least 1".to_string());
        }
        if self.max_releases == 0 {
            problems.push("limits.max_releases must be at least 1".to_string());
        }
        if self.release_idle_expiry < Duration::from_secs(1) {
            problems.push("limits.release_idle_expiry must be at least 1s".to_string());
        }
        if self.max_metric_streams == 0 {
            problems.push("limits.max_metric_streams must be at least 1".to_string());
        }
        if self.max_metric_streams_per_resource == 0 {
            problems.push("limits.max_metric_streams_per_resource must be at least 1".to_string());
        }
        if self.max_metric_stream_bytes < 1024 * 1024 {
            problems.push("limits.max_metric_stream_bytes must be at least 1 MiB".to_string());
        }
        if self.max_metric_streams_per_sender == 0 {
            problems.push("limits.max_metric_streams_per_sender must be at least 1".to_string());
        }
    }
}
