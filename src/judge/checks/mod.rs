//! The checks. Each keeps its sequential evidence, is fed every tick with
//! the samples that arrived since the last one, and reports a result. This
//! module holds what they share: the report the verdict and the exporters
//! read, and the one rule that turns evidence into a result. One file per
//! check: `error_ratio` and `latency` (canary vs baseline, the latter over
//! `distribution`), `endpoints` and `kinds` (the error ratio per endpoint
//! and per kind of error), `guardrails` (canary alone), `metric` (any OTLP
//! metric).

mod distribution;
mod endpoints;
mod error_ratio;
mod guardrails;
mod kinds;
mod latency;
mod metric;

use serde::{Deserialize, Serialize};

use crate::window::Signals;

pub use endpoints::{EndpointCounters, EndpointReport, EndpointTests};
pub use error_ratio::ErrorTest;
pub use guardrails::GuardTest;
pub use kinds::{KindCounters, KindReport, KindTests};
pub use latency::LatencyTest;
pub use metric::MetricTest;

/// pass / marginal / fail / nodata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    Pass,
    Marginal,
    Fail,
    Nodata,
}

impl CheckResult {
    /// The one string form: `pass`, `marginal`, `fail`, `nodata`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Pass => "pass",
            CheckResult::Marginal => "marginal",
            CheckResult::Fail => "fail",
            CheckResult::Nodata => "nodata",
        }
    }

    /// 0 pass, 1 marginal, 2 fail, 3 no data: the check metric's value.
    pub fn value(self) -> u8 {
        match self {
            CheckResult::Pass => 0,
            CheckResult::Marginal => 1,
            CheckResult::Fail => 2,
            CheckResult::Nodata => 3,
        }
    }
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Numbers describing one cohort for a check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CohortStats {
    pub requests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Events per request (metric checks on sums).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request: Option<f64>,
    /// Median value over the window (metric checks on gauges and histograms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
}

impl CohortStats {
    pub(super) fn errors(requests: u64, errors: u64) -> Self {
        Self {
            requests,
            errors: Some(errors),
            error_ratio: (requests > 0).then(|| errors as f64 / requests as f64),
            ..Self::default()
        }
    }

    pub(super) fn latency(window: &Signals) -> Self {
        let ms = |us: &Option<u64>| us.map(|us| us as f64 / 1000.0);
        let at = window.latency.quantiles(&[0.5, 0.95, 0.99]);
        Self {
            requests: window.latency.count(),
            p50_ms: ms(&at[0]),
            p95_ms: ms(&at[1]),
            p99_ms: ms(&at[2]),
            ..Self::default()
        }
    }
}

/// The evidence behind a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistic {
    /// Anytime-valid e-value for a regression beyond tolerance.
    pub e_value: f64,
    /// The matching anytime-valid p-value, min(1, 1/e).
    pub p_value: f64,
    /// Group-sequential p-value of "a regression as large as the pass
    /// bound": green needs it within the error budget spent so far.
    pub pass_p_value: f64,
}

impl Statistic {
    pub(super) fn new(log_e: f64, pass_p: f64) -> Self {
        let e = log_e.exp();
        Self {
            e_value: round_sig(e),
            p_value: round_sig((1.0 / e).min(1.0)),
            pass_p_value: round_sig(pass_p),
        }
    }
}

/// Four significant digits are plenty for people and keep JSON stable.
pub(super) fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return if x.is_finite() { x } else { f64::MAX };
    }
    let mag = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * mag).round() / mag
}

/// One check's report, as the verdict object carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub name: String,
    pub result: CheckResult,
    pub critical: bool,
    pub weight: f64,
    pub canary: CohortStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<CohortStats>,
    pub statistic: Statistic,
    /// The evidence in words ("no regression (ruled out beyond +10%)",
    /// "leaning worse (odds 40 : 1)"); the statistic says it in numbers.
    pub evidence: String,
    /// One sentence a person can act on.
    pub detail: String,
    /// Canary requests to look at when it fails or is marginal.
    pub exemplars: Vec<ExemplarRef>,
}

/// A canary request behind a check's result: its trace and span ids (hex),
/// its latency and, with `[judge] trace_url_template`, a link to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExemplarRef {
    pub trace_id: String,
    pub span_id: String,
    /// Latency in milliseconds.
    pub value: f64,
    pub failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The red evidence threshold, as a natural log. (Green's level travels
/// with each look: see `spending::Look`.)
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    pub fail: f64,
}

impl Levels {
    /// Half-way to red (e ≥ √(1/α)): evidence leaning towards a regression,
    /// which holds green back even when the pass bound is met.
    pub fn leaning(self) -> f64 {
        self.fail / 2.0
    }

    pub fn new(confidence: f64) -> Self {
        Self {
            fail: (1.0 / (1.0 - confidence)).ln(),
        }
    }

    /// The one rule every check follows: no data until both sides have
    /// some; fail on evidence of a regression (`log_e` at the red level)
    /// that is also large enough to matter; pass once shown within its
    /// bounds with nothing leaning towards a regression; marginal otherwise.
    pub fn result(
        self,
        has_data: bool,
        log_e: f64,
        large_enough: bool,
        within_bounds: bool,
    ) -> CheckResult {
        if !has_data {
            CheckResult::Nodata
        } else if log_e >= self.fail && large_enough {
            CheckResult::Fail
        } else if within_bounds && log_e < self.leaning() {
            CheckResult::Pass
        } else {
            CheckResult::Marginal
        }
    }
}

impl Levels {
    /// The evidence behind `result` in words: what was shown, and how
    /// strongly, as odds a person can weigh ("regression shown (odds
    /// 1e12 : 1)"); `ruled_out` names the bound a pass has ruled out.
    pub fn words(self, result: CheckResult, log_e: f64, ruled_out: Option<String>) -> String {
        self.words_at(self.leaning(), result, log_e, ruled_out)
    }

    /// `words` where "leaning" starts at `leaning` (a split level's tests
    /// lean at the release's own level).
    pub fn words_at(
        self,
        leaning: f64,
        result: CheckResult,
        log_e: f64,
        ruled_out: Option<String>,
    ) -> String {
        match result {
            CheckResult::Nodata => "no data yet".into(),
            CheckResult::Fail => format!("regression shown (odds {} : 1)", odds(log_e)),
            CheckResult::Pass => match ruled_out {
                Some(bound) => format!("no regression (ruled out beyond {bound})"),
                None => "no sign of a regression".into(),
            },
            CheckResult::Marginal if log_e >= self.fail => {
                format!(
                    "worse, by less than the tolerance (odds {} : 1)",
                    odds(log_e)
                )
            }
            CheckResult::Marginal if log_e >= leaning => {
                format!("leaning worse (odds {} : 1)", odds(log_e))
            }
            CheckResult::Marginal => "not conclusive yet".into(),
        }
    }
}

/// An e-value as odds against "no regression": "40", "2,500", "1e12".
pub fn odds(log_e: f64) -> String {
    let e = log_e.exp();
    if !e.is_finite() {
        "1e300".into()
    } else if e < 10_000.0 {
        grouped(e.round() as u64)
    } else {
        format!("{e:.0e}")
    }
}

/// 16200 as "16,200".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.2}%", x * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

pub(super) fn ms(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.1}ms"))
        .unwrap_or_else(|| "n/a".into())
}

pub(super) fn ratio(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| x as f64 / n as f64)
}

/// What a distribution test has shown.
pub(super) struct Evidence {
    /// log e-value of a regression.
    pub log_e: f64,
    /// The largest pass p-value of the quantiles.
    pub pass_p: f64,
    /// Every quantile is shown within its pass bound.
    pub passed: bool,
    /// The quantile with the most evidence of a regression.
    pub worst: f64,
    /// Its evidence, as a natural log: one quantile leaning towards a
    /// regression holds green back, however calm the others are.
    pub worst_log_e: f64,
    /// The most evidence of a regression at a quantile still too thin to
    /// test for green, until green has been shown (see `keep_pass`).
    pub thin_log_e: f64,
    /// Some threshold is set.
    pub ready: bool,
    /// Quantiles whose tail is still too thin to test, with the canary
    /// observations each needs.
    pub thin: Vec<(f64, u64)>,
}

/// "p50", "p99", "p99.9": a quantile as people name it.
pub(crate) fn quantile_name(q: f64) -> String {
    let p = format!("{:.3}", q * 100.0);
    format!("p{}", p.trim_end_matches('0').trim_end_matches('.'))
}

/// log of the mean of exp(x): averaging e-values keeps an e-value.
pub(super) fn log_mean_exp(xs: impl Iterator<Item = f64>) -> f64 {
    let xs: Vec<f64> = xs.collect();
    let max = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + xs.iter().map(|l| (l - max).exp()).sum::<f64>().ln() - (xs.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::quantile_name;

    #[test]
    fn quantiles_are_named_as_people_name_them() {
        let names: Vec<String> = [0.5, 0.95, 0.99, 0.999, 0.9995, 0.1]
            .into_iter()
            .map(quantile_name)
            .collect();
        assert_eq!(names, ["p50", "p95", "p99", "p99.9", "p99.95", "p10"]);
    }
}
