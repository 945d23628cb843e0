//! The checks: error ratio and latency (canary vs baseline) and guardrails
//! (canary alone). Each keeps its sequential evidence, is fed every tick
//! with the samples that arrived since the last one, and reports a result.

use serde::Serialize;

use super::eprocess::{null_share, ChangeDetector, PointTest};
use crate::config::{ErrorRatioCheck, Guardrails, LatencyCheck};
use crate::window::{Latency, Signals};

/// pass / marginal / fail / nodata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Marginal,
    Fail,
    Nodata,
}

/// Numbers describing one cohort for a check.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
}

impl CohortStats {
    fn errors(requests: u64, errors: u64) -> Self {
        Self {
            requests,
            errors: Some(errors),
            error_ratio: (requests > 0).then(|| errors as f64 / requests as f64),
            ..Self::default()
        }
    }

    fn latency(window: &Signals) -> Self {
        let ms = |q| window.latency.quantile(q).map(|us| us as f64 / 1000.0);
        Self {
            requests: window.latency.count(),
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            ..Self::default()
        }
    }
}

/// The evidence behind a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statistic {
    /// Anytime-valid e-value for a regression beyond tolerance.
    pub e_value: f64,
    /// The matching anytime-valid p-value, min(1, 1/e).
    pub p_value: f64,
    /// E-value for "any regression is within the pass bound".
    pub pass_e_value: f64,
}

impl Statistic {
    fn new(log_e: f64, log_pass: f64) -> Self {
        let e = log_e.exp();
        Self {
            e_value: round_sig(e),
            p_value: round_sig((1.0 / e).min(1.0)),
            pass_e_value: round_sig(log_pass.exp()),
        }
    }
}

/// Four significant digits are plenty for people and keep JSON stable.
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return if x.is_finite() { x } else { f64::MAX };
    }
    let mag = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * mag).round() / mag
}

/// One check's report, as the verdict object carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub result: Outcome,
    pub critical: bool,
    pub weight: f64,
    pub canary: CohortStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<CohortStats>,
    pub statistic: Statistic,
    /// One sentence a person can act on.
    pub detail: String,
}

/// Evidence thresholds, as natural logs.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    pub fail: f64,
    pub pass: f64,
}

impl Levels {
    /// Half-way to red (e ≥ √(1/α)): evidence leaning towards a regression,
    /// which holds green back even when the pass bound is met.
    pub fn leaning(self) -> f64 {
        self.fail / 2.0
    }

    pub fn new(confidence: f64, green_confidence: f64) -> Self {
        Self {
            fail: (1.0 / (1.0 - confidence)).ln(),
            pass: (1.0 / (1.0 - green_confidence)).ln(),
        }
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.2}%", x * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn ms(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.1}ms"))
        .unwrap_or_else(|| "n/a".into())
}

/// Error ratio, canary vs baseline: errors of both cohorts in a batch,
/// tested for the canary's share against its share of the traffic.
#[derive(Debug, Clone, Default)]
pub struct ErrorTest {
    /// Requests and errors not yet fed: (canary n, x, baseline n, x).
    batch: [u64; 4],
    /// Since judging against this baseline began.
    total: [u64; 4],
    worse: ChangeDetector,
    within: PointTest,
}

impl ErrorTest {
    pub fn new_epoch(&mut self) {
        self.worse.new_epoch();
    }

    pub fn feed(&mut self, canary: &Signals, baseline: &Signals, cfg: &ErrorRatioCheck) {
        let add = [
            canary.requests,
            canary.errors,
            baseline.requests,
            baseline.errors,
        ];
        // the baseline's error ratio before this batch: known in advance
        let baseline_ratio = ratio(self.total[3], self.total[2]);
        for ((b, t), a) in self.batch.iter_mut().zip(&mut self.total).zip(add) {
            *b += a;
            *t += a;
        }
        let [nc, xc, nb, xb] = self.batch;
        if nc == 0 || nb == 0 {
            return;
        }
        if xc + xb > 0 {
            self.worse
                .update(xc, xc + xb, null_share(nc, nb, cfg.tolerance));
        }
        // Within bounds: the canary's errors among its requests, against
        // the baseline's ratio plus the pass bound, with "like the
        // baseline" as the alternative.
        if let Some(base) = baseline_ratio {
            let bound = base + (base * cfg.pass_bound).max(cfg.pass_bound_abs);
            let like_baseline = base.max(bound / 100.0);
            self.within
                .update(xc, nc, bound.min(0.999_999), like_baseline);
        }
        self.batch = [0; 4];
    }

    pub fn report(&self, cfg: &ErrorRatioCheck, levels: Levels) -> CheckReport {
        let [nc, xc, nb, xb] = self.total;
        let canary = CohortStats::errors(nc, xc);
        let baseline = CohortStats::errors(nb, xb);
        let log_e = self.worse.log_e();
        let log_pass = self.within.log_e();
        let (rc, rb) = (canary.error_ratio, baseline.error_ratio);
        let increase = rc.zip(rb).map(|(c, b)| c - b);
        let result = if nc == 0 || nb == 0 {
            Outcome::Nodata
        } else if log_e >= levels.fail && increase.is_some_and(|d| d >= cfg.tolerance_abs) {
            Outcome::Fail
        } else if log_pass >= levels.pass && log_e < levels.leaning() {
            Outcome::Pass
        } else {
            Outcome::Marginal
        };
        let detail = match result {
            Outcome::Nodata => "no requests yet from one of the cohorts".to_string(),
            Outcome::Fail => format!(
                "canary error ratio {} vs baseline {} (p<{:.2}): the canary fails more often; roll back",
                pct(rc),
                pct(rb),
                (-levels.fail).exp()
            ),
            Outcome::Pass => format!(
                "canary error ratio {} vs baseline {}: at most {:.0}% or {:.1} points above the baseline",
                pct(rc),
                pct(rb),
                cfg.pass_bound * 100.0,
                cfg.pass_bound_abs * 100.0
            ),
            Outcome::Marginal => format!(
                "canary error ratio {} vs baseline {}: not conclusive yet; wait for more traffic",
                pct(rc),
                pct(rb)
            ),
        };
        CheckReport {
            name: "error_ratio".into(),
            result,
            critical: cfg.critical,
            weight: cfg.weight,
            canary,
            baseline: Some(baseline),
            statistic: Statistic::new(log_e, log_pass),
            detail,
        }
    }
}

fn ratio(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| x as f64 / n as f64)
}

/// Latency at one baseline quantile: requests slower than the baseline's
/// quantile (stretched by the tolerance for the canary), tested for the
/// canary's share of them against its share of the requests. A canary no
/// slower than tolerated has, at most, its traffic share of the slow ones.
#[derive(Debug, Clone)]
struct QuantileTest {
    q: f64,
    /// Baseline quantile fixed for the current batch, microseconds.
    tau: Option<u64>,
    /// Not yet fed: canary slow (fail threshold), slow (pass threshold),
    /// canary count, baseline slow, baseline count.
    batch: [u64; 5],
    /// Share of the baseline's slow requests that are also slower than the
    /// pass threshold: what a canary just like the baseline would show.
    like_baseline: f64,
    worse: ChangeDetector,
    within: PointTest,
}

impl QuantileTest {
    fn new(q: f64) -> Self {
        Self {
            q,
            tau: None,
            batch: [0; 5],
            like_baseline: 1.0,
            worse: ChangeDetector::default(),
            within: PointTest::default(),
        }
    }

    /// The canary thresholds for a baseline quantile `tau`.
    fn thresholds(tau: u64, cfg: &LatencyCheck) -> (u64, u64) {
        let stretch = |rel: f64, abs: std::time::Duration| {
            let by = (tau as f64 * rel).max(abs.as_micros() as f64);
            tau + by.round() as u64
        };
        (
            stretch(cfg.tolerance, cfg.tolerance_abs),
            stretch(cfg.pass_bound, cfg.pass_bound_abs),
        )
    }

    fn feed(
        &mut self,
        canary: &Latency,
        baseline: &Latency,
        baseline_window: &Latency,
        cfg: &LatencyCheck,
        epoch_over: bool,
    ) {
        if let Some(tau) = self.tau {
            let (fail_at, pass_at) = Self::thresholds(tau, cfg);
            let add = [
                canary.count_above(fail_at),
                canary.count_above(pass_at),
                canary.count(),
                baseline.count_above(tau),
                baseline.count(),
            ];
            for (b, a) in self.batch.iter_mut().zip(add) {
                *b += a;
            }
            let [slow_fail, slow_pass, nc, slow_b, nb] = self.batch;
            if nc > 0 && nb > 0 {
                let share = null_share(nc, nb, 0.0);
                self.worse.update(slow_fail, slow_fail + slow_b, share);
                let r = self.like_baseline;
                let like_baseline = share * r / (share * r + 1.0 - share);
                self.within
                    .update(slow_pass, slow_pass + slow_b, share, like_baseline);
                self.batch = [0; 5];
            }
        }
        // The threshold moves only between batches, once per epoch, so
        // both cohorts of a batch are always held to the same one.
        let batch_empty = self.batch[2] == 0 && self.batch[4] == 0;
        if (self.tau.is_none() || epoch_over) && batch_empty {
            self.tau = baseline_window.quantile(self.q);
            if let Some(tau) = self.tau {
                let (_, pass_at) = Self::thresholds(tau, cfg);
                let slow = baseline_window.count_above(tau);
                if slow > 0 {
                    let r = baseline_window.count_above(pass_at) as f64 / slow as f64;
                    self.like_baseline = r.clamp(0.01, 0.99);
                }
            }
        }
    }
}

/// Latency distribution, canary vs baseline, at several baseline quantiles.
#[derive(Debug, Clone)]
pub struct LatencyTest {
    quantiles: Vec<QuantileTest>,
}

impl LatencyTest {
    pub fn new(cfg: &LatencyCheck) -> Self {
        Self {
            quantiles: cfg
                .quantiles
                .iter()
                .map(|q| QuantileTest::new(*q))
                .collect(),
        }
    }

    pub fn new_epoch(&mut self) {
        for q in &mut self.quantiles {
            q.worse.new_epoch();
        }
    }

    pub fn feed(
        &mut self,
        canary: &Signals,
        baseline: &Signals,
        baseline_window: &Signals,
        cfg: &LatencyCheck,
        epoch_over: bool,
    ) {
        for q in &mut self.quantiles {
            q.feed(
                &canary.latency,
                &baseline.latency,
                &baseline_window.latency,
                cfg,
                epoch_over,
            );
        }
    }

    pub fn report(
        &self,
        canary_window: &Signals,
        baseline_window: &Signals,
        cfg: &LatencyCheck,
        levels: Levels,
    ) -> CheckReport {
        let canary = CohortStats::latency(canary_window);
        let baseline = CohortStats::latency(baseline_window);
        let n = self.quantiles.len().max(1) as f64;
        // the average of e-processes is one
        let logs: Vec<f64> = self.quantiles.iter().map(|q| q.worse.log_e()).collect();
        let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_e = max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln() - n.ln();
        let log_pass = self
            .quantiles
            .iter()
            .map(|q| q.within.log_e())
            .fold(f64::INFINITY, f64::min);
        let worst = self
            .quantiles
            .iter()
            .max_by(|a, b| a.worse.log_e().total_cmp(&b.worse.log_e()));
        let ready = self.quantiles.iter().any(|q| q.tau.is_some());
        let result = if !ready || canary.requests == 0 {
            Outcome::Nodata
        } else if log_e >= levels.fail {
            Outcome::Fail
        } else if log_pass >= levels.pass && log_e < levels.leaning() {
            Outcome::Pass
        } else {
            Outcome::Marginal
        };
        let at = |q: f64| -> (Option<f64>, Option<f64>) {
            let get = |w: &Signals| w.latency.quantile(q).map(|us| us as f64 / 1000.0);
            (get(canary_window), get(baseline_window))
        };
        let detail = match result {
            Outcome::Nodata => "no latency observations yet from one of the cohorts".to_string(),
            Outcome::Fail => {
                let q = worst.map(|w| w.q).unwrap_or(0.5);
                let (c, b) = at(q);
                format!(
                    "canary p{} latency {} vs baseline {} (p<{:.2}): the canary is slower; roll back",
                    (q * 100.0).round(),
                    ms(c),
                    ms(b),
                    (-levels.fail).exp()
                )
            }
            Outcome::Pass => format!(
                "canary p50 {} / p95 {} vs baseline {} / {}: within {:.0}% of the baseline",
                ms(canary.p50_ms),
                ms(canary.p95_ms),
                ms(baseline.p50_ms),
                ms(baseline.p95_ms),
                cfg.pass_bound * 100.0
            ),
            Outcome::Marginal => format!(
                "canary p50 {} / p95 {} vs baseline {} / {}: not conclusive yet",
                ms(canary.p50_ms),
                ms(canary.p95_ms),
                ms(baseline.p50_ms),
                ms(baseline.p95_ms)
            ),
        };
        CheckReport {
            name: "latency".into(),
            result,
            critical: cfg.critical,
            weight: cfg.weight,
            canary,
            baseline: Some(baseline),
            statistic: Statistic::new(log_e, log_pass),
            detail,
        }
    }
}

/// One absolute limit on the canary: the share of its requests that are
/// errors (or slower than a latency limit) against the allowed share.
#[derive(Debug, Clone)]
struct Guard {
    kind: GuardKind,
    worse: ChangeDetector,
    within: PointTest,
    events: u64,
    trials: u64,
}

#[derive(Debug, Clone, Copy)]
enum GuardKind {
    ErrorRatio(f64),
    Latency { q: f64, max_us: u64 },
}

impl Guard {
    fn allowed(&self) -> f64 {
        match self.kind {
            GuardKind::ErrorRatio(r) => r,
            GuardKind::Latency { q, .. } => 1.0 - q,
        }
    }
}

/// The configured guardrails.
#[derive(Debug, Clone)]
pub struct GuardTest {
    guards: Vec<Guard>,
}

impl GuardTest {
    pub fn new(cfg: &Guardrails) -> Self {
        let mut kinds: Vec<GuardKind> = cfg
            .max_error_ratio
            .map(GuardKind::ErrorRatio)
            .into_iter()
            .collect();
        kinds.extend(
            cfg.latency()
                .into_iter()
                .map(|(q, max)| GuardKind::Latency {
                    q,
                    max_us: max.as_micros() as u64,
                }),
        );
        Self {
            guards: kinds
                .into_iter()
                .map(|kind| Guard {
                    kind,
                    worse: ChangeDetector::default(),
                    within: PointTest::default(),
                    events: 0,
                    trials: 0,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    pub fn new_epoch(&mut self) {
        for g in &mut self.guards {
            g.worse.new_epoch();
        }
    }

    pub fn feed(&mut self, canary: &Signals) {
        for g in &mut self.guards {
            let (k, m) = match g.kind {
                GuardKind::ErrorRatio(_) => (canary.errors, canary.requests),
                GuardKind::Latency { max_us, .. } => {
                    (canary.latency.count_above(max_us), canary.latency.count())
                }
            };
            let p0 = g.allowed();
            g.worse.update(k, m, p0);
            // the canary's own rate so far (smoothed) as the alternative
            let so_far = (g.events as f64 + 0.5) / (g.trials as f64 + 1.0);
            g.within.update(k, m, p0, so_far.clamp(p0 / 50.0, p0 * 0.9));
            g.events += k;
            g.trials += m;
        }
    }

    pub fn reports(&self, canary_window: &Signals, levels: Levels) -> Vec<CheckReport> {
        self.guards
            .iter()
            .map(|g| {
                let observed = ratio(g.events, g.trials);
                let log_e = g.worse.log_e();
                let log_pass = g.within.log_e();
                let breached = observed.is_some_and(|o| o > g.allowed());
                let result = if g.trials == 0 {
                    Outcome::Nodata
                } else if log_e >= levels.fail && breached {
                    Outcome::Fail
                } else if log_pass >= levels.pass && log_e < levels.leaning() {
                    Outcome::Pass
                } else {
                    Outcome::Marginal
                };
                let (name, canary, what) = match g.kind {
                    GuardKind::ErrorRatio(max) => (
                        "guardrail_error_ratio".to_string(),
                        CohortStats::errors(g.trials, g.events),
                        format!("error ratio {} (limit {})", pct(observed), pct(Some(max))),
                    ),
                    GuardKind::Latency { q, max_us } => {
                        let stats = CohortStats::latency(canary_window);
                        let p = canary_window
                            .latency
                            .quantile(q)
                            .map(|us| us as f64 / 1000.0);
                        (
                            format!("guardrail_p{}", (q * 100.0).round()),
                            stats,
                            format!(
                                "p{} latency {} (limit {})",
                                (q * 100.0).round(),
                                ms(p),
                                ms(Some(max_us as f64 / 1000.0))
                            ),
                        )
                    }
                };
                let detail = match result {
                    Outcome::Nodata => "no canary requests yet".to_string(),
                    Outcome::Fail => format!("canary {what} breaches its guardrail; roll back"),
                    Outcome::Pass => format!("canary {what} is within its guardrail"),
                    Outcome::Marginal => format!("canary {what}: not conclusive yet"),
                };
                CheckReport {
                    name,
                    result,
                    critical: true,
                    weight: 1.0,
                    canary,
                    baseline: None,
                    statistic: Statistic::new(log_e, log_pass),
                    detail,
                }
            })
            .collect()
    }
}
