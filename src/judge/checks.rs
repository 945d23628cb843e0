//! The checks: error ratio and latency (canary vs baseline) and guardrails
//! (canary alone). Each keeps its sequential evidence, is fed every tick
//! with the samples that arrived since the last one, and reports a result.

use serde::Serialize;

use super::eprocess::{null_share, ChangeDetector, Side};
use super::spending::{Look, PassTest};
use crate::config::{Direction, ErrorRatioCheck, Guardrails, LatencyCheck, MetricCheck};
use crate::window::{Latency, MetricSignals, Signals};

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
    /// Events per request (metric checks on sums).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request: Option<f64>,
    /// Median value over the window (metric checks on gauges and histograms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
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
    /// Group-sequential p-value of "a regression as large as the pass
    /// bound": green needs it within the error budget spent so far.
    pub pass_p_value: f64,
}

impl Statistic {
    fn new(log_e: f64, pass_p: f64) -> Self {
        let e = log_e.exp();
        Self {
            e_value: round_sig(e),
            p_value: round_sig((1.0 / e).min(1.0)),
            pass_p_value: round_sig(pass_p),
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
    within: PassTest,
}

impl ErrorTest {
    pub fn new_epoch(&mut self) {
        self.worse.new_epoch();
    }

    pub fn feed(
        &mut self,
        canary: &Signals,
        baseline: &Signals,
        baseline_window: &Signals,
        cfg: &ErrorRatioCheck,
        look: Look,
    ) {
        // The baseline's error ratio, from its rolling window or from all
        // of this comparison, whichever has seen more requests. It depends
        // on baseline data only, so it is fixed as far as the canary's
        // outcomes are concerned.
        let baseline_ratio = if baseline_window.requests >= self.total[2] {
            ratio(baseline_window.errors, baseline_window.requests)
        } else {
            ratio(self.total[3], self.total[2])
        };
        let add = [
            canary.requests,
            canary.errors,
            baseline.requests,
            baseline.errors,
        ];
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
        // the baseline's ratio plus the pass bound.
        if let Some(base) = baseline_ratio {
            let bound = base + (base * cfg.pass_bound).max(cfg.pass_bound_abs);
            self.within.update(xc, nc, bound.min(0.999_999), look);
        }
        self.batch = [0; 4];
    }

    pub fn report(&self, cfg: &ErrorRatioCheck, levels: Levels) -> CheckReport {
        let [nc, xc, nb, xb] = self.total;
        let canary = CohortStats::errors(nc, xc);
        let baseline = CohortStats::errors(nb, xb);
        let log_e = self.worse.log_e();
        let (rc, rb) = (canary.error_ratio, baseline.error_ratio);
        let increase = rc.zip(rb).map(|(c, b)| c - b);
        let result = if nc == 0 || nb == 0 {
            Outcome::Nodata
        } else if log_e >= levels.fail && increase.is_some_and(|d| d >= cfg.tolerance_abs) {
            Outcome::Fail
        } else if self.within.passed() && log_e < levels.leaning() {
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
            statistic: Statistic::new(log_e, self.within.p_value()),
            detail,
        }
    }
}

fn ratio(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| x as f64 / n as f64)
}

/// How far the canary may move from a baseline quantile, and which way is bad.
#[derive(Debug, Clone, Copy)]
pub struct Margins {
    pub tolerance: f64,
    pub tolerance_abs: f64,
    pub pass_bound: f64,
    pub pass_bound_abs: f64,
    /// Higher is worse (latency); else lower is worse.
    pub increase: bool,
}

impl Margins {
    fn latency(cfg: &LatencyCheck) -> Self {
        Self {
            tolerance: cfg.tolerance,
            tolerance_abs: cfg.tolerance_abs.as_micros() as f64,
            pass_bound: cfg.pass_bound,
            pass_bound_abs: cfg.pass_bound_abs.as_micros() as f64,
            increase: true,
        }
    }

    /// The canary's fail and pass thresholds for a baseline quantile `tau`.
    fn thresholds(&self, tau: u64) -> (u64, u64) {
        let shift = |rel: f64, abs: f64| {
            let by = (tau as f64 * rel).max(abs).round() as u64;
            if self.increase {
                tau.saturating_add(by)
            } else {
                tau.saturating_sub(by)
            }
        };
        (
            shift(self.tolerance, self.tolerance_abs),
            shift(self.pass_bound, self.pass_bound_abs),
        )
    }

    /// Observations on the bad side of `threshold`.
    fn beyond(&self, h: &Latency, threshold: u64) -> u64 {
        if self.increase {
            h.count_above(threshold)
        } else {
            h.count_below(threshold)
        }
    }
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
    worse: ChangeDetector,
    within: PassTest,
}

impl QuantileTest {
    fn new(q: f64) -> Self {
        Self {
            q,
            tau: None,
            batch: [0; 5],
            worse: ChangeDetector::default(),
            within: PassTest::default(),
        }
    }

    fn feed(
        &mut self,
        canary: &Latency,
        baseline: &Latency,
        baseline_window: &Latency,
        m: &Margins,
        epoch_over: bool,
        look: Look,
    ) {
        if let Some(tau) = self.tau {
            let (fail_at, pass_at) = m.thresholds(tau);
            let add = [
                m.beyond(canary, fail_at),
                m.beyond(canary, pass_at),
                canary.count(),
                m.beyond(baseline, tau),
                baseline.count(),
            ];
            for (b, a) in self.batch.iter_mut().zip(add) {
                *b += a;
            }
            let [slow_fail, slow_pass, nc, slow_b, nb] = self.batch;
            if nc > 0 && nb > 0 {
                let share = null_share(nc, nb, 0.0);
                self.worse.update(slow_fail, slow_fail + slow_b, share);
                self.within
                    .update(slow_pass, slow_pass + slow_b, share, look);
                self.batch = [0; 5];
            }
        }
        // The threshold moves only between batches, once per epoch, so
        // both cohorts of a batch are always held to the same one.
        let batch_empty = self.batch[2] == 0 && self.batch[4] == 0;
        if (self.tau.is_none() || epoch_over) && batch_empty {
            self.tau = baseline_window.quantile(self.q);
        }
    }
}

/// A distribution, canary vs baseline, at several baseline quantiles.
#[derive(Debug, Clone)]
pub struct DistributionTest {
    quantiles: Vec<QuantileTest>,
}

impl DistributionTest {
    pub fn new(quantiles: &[f64]) -> Self {
        Self {
            quantiles: quantiles.iter().map(|q| QuantileTest::new(*q)).collect(),
        }
    }

    pub fn new_epoch(&mut self) {
        for q in &mut self.quantiles {
            q.worse.new_epoch();
        }
    }

    fn feed(
        &mut self,
        canary: &Latency,
        baseline: &Latency,
        baseline_window: &Latency,
        m: &Margins,
        epoch_over: bool,
        look: Look,
    ) {
        for q in &mut self.quantiles {
            q.feed(canary, baseline, baseline_window, m, epoch_over, look);
        }
    }

    /// The evidence at all quantiles together.
    fn evidence(&self) -> Evidence {
        // the average of e-processes is one
        let log_e = log_mean_exp(self.quantiles.iter().map(|q| q.worse.log_e()));
        let worst = self
            .quantiles
            .iter()
            .max_by(|a, b| a.worse.log_e().total_cmp(&b.worse.log_e()))
            .map(|w| w.q)
            .unwrap_or(0.5);
        Evidence {
            log_e,
            pass_p: self
                .quantiles
                .iter()
                .map(|q| q.within.p_value())
                .fold(0.0, f64::max),
            passed: self.quantiles.iter().all(|q| q.within.passed()),
            worst,
            ready: self.quantiles.iter().any(|q| q.tau.is_some()),
        }
    }
}

/// What a distribution test has shown.
struct Evidence {
    /// log e-value of a regression.
    log_e: f64,
    /// The largest pass p-value of the quantiles.
    pass_p: f64,
    /// Every quantile is shown within its pass bound.
    passed: bool,
    /// The quantile with the most evidence of a regression.
    worst: f64,
    /// Some threshold is set.
    ready: bool,
}

/// log of the mean of exp(x): averaging e-values keeps an e-value.
fn log_mean_exp(xs: impl Iterator<Item = f64>) -> f64 {
    let xs: Vec<f64> = xs.collect();
    let max = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + xs.iter().map(|l| (l - max).exp()).sum::<f64>().ln() - (xs.len() as f64).ln()
}

/// Latency distribution, canary vs baseline, at several baseline quantiles.
#[derive(Debug, Clone)]
pub struct LatencyTest {
    test: DistributionTest,
}

impl LatencyTest {
    pub fn new(cfg: &LatencyCheck) -> Self {
        Self {
            test: DistributionTest::new(&cfg.quantiles),
        }
    }

    pub fn new_epoch(&mut self) {
        self.test.new_epoch();
    }

    pub fn feed(
        &mut self,
        canary: &Signals,
        baseline: &Signals,
        baseline_window: &Signals,
        cfg: &LatencyCheck,
        epoch_over: bool,
        look: Look,
    ) {
        let m = Margins::latency(cfg);
        self.test.feed(
            &canary.latency,
            &baseline.latency,
            &baseline_window.latency,
            &m,
            epoch_over,
            look,
        );
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
        let Evidence {
            log_e,
            pass_p,
            passed,
            worst: worst_q,
            ready,
        } = self.test.evidence();
        let result = if !ready || canary.requests == 0 {
            Outcome::Nodata
        } else if log_e >= levels.fail {
            Outcome::Fail
        } else if passed && log_e < levels.leaning() {
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
                let q = worst_q;
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
            statistic: Statistic::new(log_e, pass_p),
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
    within: PassTest,
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
                    within: PassTest::default(),
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

    pub fn feed(&mut self, canary: &Signals, look: Look) {
        for g in &mut self.guards {
            let (k, m) = match g.kind {
                GuardKind::ErrorRatio(_) => (canary.errors, canary.requests),
                GuardKind::Latency { max_us, .. } => {
                    (canary.latency.count_above(max_us), canary.latency.count())
                }
            };
            let p0 = g.allowed();
            g.worse.update(k, m, p0);
            g.within.update(k, m, p0, look);
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
                let breached = observed.is_some_and(|o| o > g.allowed());
                let result = if g.trials == 0 {
                    Outcome::Nodata
                } else if log_e >= levels.fail && breached {
                    Outcome::Fail
                } else if g.within.passed() && log_e < levels.leaning() {
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
                    statistic: Statistic::new(log_e, g.within.p_value()),
                    detail,
                }
            })
            .collect()
    }
}

/// Events per request, canary vs baseline (a `[[checks.metric]]` on a sum).
#[derive(Debug, Clone)]
struct CountTest {
    /// Not yet fed: canary requests, events, baseline requests, events.
    batch: [u64; 4],
    worse: ChangeDetector,
    within: PassTest,
}

impl CountTest {
    fn new(increase: bool) -> Self {
        Self {
            batch: [0; 4],
            worse: ChangeDetector::new(if increase { Side::Worse } else { Side::Better }),
            within: PassTest::default(),
        }
    }

    /// The canary's share of a batch's events if its rate is `multiplier`
    /// times the baseline's.
    fn share(nc: u64, nb: u64, multiplier: f64) -> f64 {
        let c = nc as f64 * multiplier.max(0.0);
        c / (c + nb as f64)
    }

    fn feed(&mut self, add: [u64; 4], m: &Margins, baseline_rate: Option<f64>, look: Look) {
        for (b, a) in self.batch.iter_mut().zip(add) {
            *b += a;
        }
        let [nc, xc, nb, xb] = self.batch;
        if nc == 0 || nb == 0 {
            return;
        }
        let sign = if m.increase { 1.0 } else { -1.0 };
        if xc + xb > 0 {
            self.worse
                .update(xc, xc + xb, Self::share(nc, nb, 1.0 + sign * m.tolerance));
            let by = match baseline_rate {
                Some(rate) if rate > 0.0 => m.pass_bound.max(m.pass_bound_abs / rate),
                _ => m.pass_bound,
            };
            let bound = Self::share(nc, nb, 1.0 + sign * by);
            self.within.update(xc, xc + xb, bound, look);
        }
        self.batch = [0; 4];
    }
}

/// One direction of a `[[checks.metric]]`.
#[derive(Debug, Clone)]
struct MetricSide {
    margins: Margins,
    values: DistributionTest,
    counts: CountTest,
}

/// A check on any OTLP metric: sums as events per request, gauges and
/// histograms by their distribution at baseline quantiles.
#[derive(Debug, Clone)]
pub struct MetricTest {
    index: usize,
    sides: Vec<MetricSide>,
    /// Since judging began: canary requests, events, baseline requests, events.
    total: [u64; 4],
    values_seen: bool,
}

impl MetricTest {
    pub fn new(index: usize, cfg: &MetricCheck) -> Self {
        let side = |increase| MetricSide {
            margins: Margins {
                tolerance: cfg.tolerance,
                tolerance_abs: cfg.tolerance_abs * 1000.0,
                pass_bound: cfg.pass_bound,
                pass_bound_abs: cfg.pass_bound_abs * 1000.0,
                increase,
            },
            values: DistributionTest::new(&cfg.quantiles),
            counts: CountTest::new(increase),
        };
        let sides = match cfg.direction {
            Direction::Increase => vec![side(true)],
            Direction::Decrease => vec![side(false)],
            Direction::Either => vec![side(true), side(false)],
        };
        Self {
            index,
            sides,
            total: [0; 4],
            values_seen: false,
        }
    }

    pub fn new_epoch(&mut self) {
        for s in &mut self.sides {
            s.values.new_epoch();
            s.counts.worse.new_epoch();
        }
    }

    pub fn feed(
        &mut self,
        canary: &Signals,
        baseline: &Signals,
        baseline_window: &Signals,
        epoch_over: bool,
        look: Look,
    ) {
        let (c, b) = (canary.metric(self.index), baseline.metric(self.index));
        let count = |m: Option<&MetricSignals>| m.map(|m| m.count).unwrap_or(0);
        let add = [canary.requests, count(c), baseline.requests, count(b)];
        let baseline_rate = ratio(self.total[3], self.total[2]).map(|r| r * 1000.0);
        for (t, a) in self.total.iter_mut().zip(add) {
            *t += a;
        }
        let empty = Latency::default;
        let values = |m: Option<&MetricSignals>| m.and_then(|m| m.values.clone());
        let (cv, bv, wv) = (
            values(c),
            values(b),
            values(baseline_window.metric(self.index)),
        );
        self.values_seen |= cv.is_some() || bv.is_some();
        for s in &mut self.sides {
            s.counts
                .feed(add, &s.margins, baseline_rate.map(|r| r / 1000.0), look);
            if self.values_seen {
                let (cv, bv, wv) = (
                    cv.clone().unwrap_or_else(empty),
                    bv.clone().unwrap_or_else(empty),
                    wv.clone().unwrap_or_else(empty),
                );
                s.values.feed(&cv, &bv, &wv, &s.margins, epoch_over, look);
            }
        }
    }

    pub fn report(
        &self,
        cfg: &MetricCheck,
        canary_window: &Signals,
        baseline_window: &Signals,
        levels: Levels,
    ) -> CheckReport {
        let [nc, xc, nb, xb] = self.total;
        let per_request = |x, n| ratio(x, n);
        let median = |w: &Signals| {
            w.metric(self.index)
                .and_then(|m| m.values.as_ref())
                .and_then(|v| v.quantile(0.5))
                .map(|milli| milli as f64 / 1000.0)
        };
        let stats = |n: u64, x: u64, w: &Signals| CohortStats {
            requests: n,
            per_request: (!self.values_seen).then(|| per_request(x, n)).flatten(),
            median: median(w),
            ..CohortStats::default()
        };
        let canary = stats(nc, xc, canary_window);
        let baseline = stats(nb, xb, baseline_window);
        let evidence: Vec<Evidence> = self
            .sides
            .iter()
            .map(|s| {
                if self.values_seen {
                    s.values.evidence()
                } else {
                    Evidence {
                        log_e: s.counts.worse.log_e(),
                        pass_p: s.counts.within.p_value(),
                        passed: s.counts.within.passed(),
                        worst: 0.5,
                        ready: nc > 0 && nb > 0,
                    }
                }
            })
            .collect();
        let log_e = log_mean_exp(evidence.iter().map(|e| e.log_e));
        let pass_p = evidence.iter().map(|e| e.pass_p).fold(0.0, f64::max);
        let passed = evidence.iter().all(|e| e.passed);
        let ready = evidence.iter().any(|e| e.ready);
        // Sums: the observed change per request must also clear tolerance_abs.
        let big_enough = self.values_seen
            || match (canary.per_request, baseline.per_request) {
                (Some(c), Some(b)) => self.sides.iter().any(|s| {
                    let change = if s.margins.increase { c - b } else { b - c };
                    change >= cfg.tolerance_abs
                }),
                _ => false,
            };
        let result = if !ready {
            Outcome::Nodata
        } else if log_e >= levels.fail && big_enough {
            Outcome::Fail
        } else if passed && log_e < levels.leaning() {
            Outcome::Pass
        } else {
            Outcome::Marginal
        };
        let show = |s: &CohortStats| match (s.per_request, s.median) {
            (Some(r), _) => format!("{r:.4}/request"),
            (None, Some(m)) => format!("median {m:.3}"),
            _ => "n/a".into(),
        };
        let what = format!(
            "canary {} {} vs baseline {}",
            cfg.metric,
            show(&canary),
            show(&baseline)
        );
        let detail = match result {
            Outcome::Nodata => {
                format!("no {} observations yet from one of the cohorts", cfg.metric)
            }
            Outcome::Fail => format!(
                "{what} (p<{:.2}): a regression beyond tolerance",
                (-levels.fail).exp()
            ),
            Outcome::Pass => format!("{what}: within bounds"),
            Outcome::Marginal => format!("{what}: not conclusive yet"),
        };
        CheckReport {
            name: cfg.name.clone(),
            result,
            critical: cfg.critical,
            weight: cfg.weight,
            canary,
            baseline: Some(baseline),
            statistic: Statistic::new(log_e, pass_p),
            detail,
        }
    }
}
