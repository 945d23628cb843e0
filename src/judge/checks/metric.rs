//! Checks on any OTLP metric (`[[checks.metric]]`), canary vs baseline:
//! sums as events per request, gauges and histograms by their distribution
//! at baseline quantiles.

use super::distribution::{DistributionTest, Margins};
use super::{
    log_mean_exp, ratio, CheckReport, CheckResult, CohortStats, Evidence, Levels, Statistic,
};
use crate::config::{Direction, MetricCheck};
use crate::judge::eprocess::{ChangeDetector, Side};
use crate::judge::spending::{Look, PassTest};
use crate::window::{Distribution, MetricSignals, Signals};
use serde::{Deserialize, Serialize};

/// Events per request, canary vs baseline (a `[[checks.metric]]` on a sum).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetricSide {
    margins: Margins,
    values: DistributionTest,
    counts: CountTest,
}

/// A check on any OTLP metric: sums as events per request, gauges and
/// histograms by their distribution at baseline quantiles.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
                pass_tail: 1.0,
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

    /// Keeps the value quantiles passed once the release is green (see
    /// `DistributionTest::keep_pass`).
    pub fn keep_pass(&mut self) {
        for s in &mut self.sides {
            s.values.keep_pass();
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
        let empty = Distribution::default;
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
                        worst_log_e: s.counts.worse.log_e(),
                        thin_log_e: f64::NEG_INFINITY,
                        ready: nc > 0 && nb > 0,
                        thin: Vec::new(),
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
        let result = levels.result(ready, log_e, big_enough, passed);
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
            CheckResult::Nodata => {
                format!("no {} observations yet from one of the cohorts", cfg.metric)
            }
            CheckResult::Fail => format!(
                "{what} (p<{:.2}): a regression beyond tolerance",
                (-levels.fail).exp()
            ),
            CheckResult::Pass => format!("{what}: within bounds"),
            CheckResult::Marginal => format!("{what}: not conclusive yet"),
        };
        CheckReport {
            name: cfg.name.clone(),
            result,
            critical: cfg.critical,
            weight: cfg.weight,
            canary,
            baseline: Some(baseline),
            statistic: Statistic::new(log_e, pass_p),
            evidence: levels.words(result, log_e, Some("its tolerance".into())),
            detail,
            exemplars: Vec::new(),
        }
    }
}
