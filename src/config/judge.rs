//! `[judge]`: how often and how strictly releases are judged, and the
//! link to a trace that exemplars carry.

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

impl JudgeConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.tick < Duration::from_millis(10) {
            problems.push("judge.tick must be at least 10ms".to_string());
        }
        if self.window < self.tick || self.window_slots == 0 || self.window_slots > 600 {
            problems.push(
                "judge.window must be at least one tick, with 1 to 600 window_slots".to_string(),
            );
        }
        for (name, c) in [
            ("judge.confidence", self.confidence),
            ("judge.green_confidence", self.green_confidence),
        ] {
            if !(0.5..1.0).contains(&c) {
                problems.push(format!("{name} must be in [0.5, 1), not {c}"));
            }
        }
        if self.epoch < self.tick {
            problems.push("judge.epoch must be at least one tick".to_string());
        }
        if let Some(t) = &self.trace_url_template {
            if !t.contains("{trace_id}") {
                problems.push(format!(
                    "judge.trace_url_template must contain {{trace_id}}, not {t:?}"
                ));
            }
        }
    }
}
