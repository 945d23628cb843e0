//! The error-ratio check, canary vs baseline: the canary's share of a
//! batch's errors against its share of the batch's requests (a conditional
//! binomial that removes the baseline's own rate), and, for green, the
//! canary's errors against the baseline's ratio plus the pass bound.

use super::{pct, ratio, CheckReport, CheckResult, CohortStats, Levels, Statistic};
use crate::config::ErrorRatioCheck;
use crate::judge::eprocess::{null_share, ChangeDetector, Side};
use crate::judge::spending::{Look, PassTest};
use crate::window::Signals;
use serde::{Deserialize, Serialize};

/// Weight of the baseline's rate in the canary's expected rate for the
/// time to green, as errors expected at the bound: about a minute and a
/// half of evidence at 10 canary requests/s and 0.5% errors.
const ETA_PRIOR_WEIGHT: f64 = 10.0;

/// The highest canary error ratio green allows over a baseline's `base`.
pub fn pass_bound(base: f64, cfg: &ErrorRatioCheck) -> f64 {
    base + (base * cfg.pass_bound).max(cfg.pass_bound_abs)
}

/// Error ratio, canary vs baseline: errors of both cohorts in a batch,
/// tested for the canary's share against its share of the traffic.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorTest {
    /// Requests and errors not yet fed: (canary n, x, baseline n, x).
    batch: [u64; 4],
    /// Since judging against this baseline began.
    total: [u64; 4],
    worse: ChangeDetector,
    within: PassTest,
}

impl ErrorTest {
    /// A test whose evidence comes from events far more likely on the
    /// canary (see `eprocess::Side::Surge`): an error kind's.
    pub fn surge() -> Self {
        Self {
            worse: ChangeDetector::new(Side::Surge),
            ..Self::default()
        }
    }

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
        self.feed_counts(
            [
                canary.requests,
                canary.errors,
                baseline.requests,
                baseline.errors,
            ],
            [baseline_window.requests, baseline_window.errors],
            cfg,
            look,
        );
    }

    /// Feeds new (canary requests, errors, baseline requests, errors),
    /// with the baseline's rolling window as (requests, errors).
    pub fn feed_counts(
        &mut self,
        add: [u64; 4],
        baseline_window: [u64; 2],
        cfg: &ErrorRatioCheck,
        look: Look,
    ) {
        // The baseline's error ratio, from its rolling window or from all
        // of this comparison, whichever has seen more requests. It depends
        // on baseline data only, so it is fixed as far as the canary's
        // outcomes are concerned.
        let baseline_ratio = if baseline_window[0] >= self.total[2] {
            ratio(baseline_window[1], baseline_window[0])
        } else {
            ratio(self.total[3], self.total[2])
        };
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
            self.within
                .update(xc, nc, pass_bound(base, cfg).min(0.999_999), look);
        }
        self.batch = [0; 4];
    }

    /// The evidence of a regression, as a natural log.
    pub fn log_e(&self) -> f64 {
        self.worse.log_e()
    }

    /// Since judging against this baseline began: (canary requests,
    /// errors, baseline requests, errors).
    pub fn totals(&self) -> [u64; 4] {
        self.total
    }

    /// The chance that the pass test has passed `seconds` from now, at the
    /// traffic of the `elapsed` seconds so far (see `PassTest::pass_chance`),
    /// the canary's rate shrunk towards the baseline's: a canary waiting
    /// for green is most likely like its baseline, and a few early errors
    /// say little.
    pub fn pass_chance(
        &self,
        alpha: f64,
        cfg: &ErrorRatioCheck,
        seconds: f64,
        elapsed: f64,
    ) -> f64 {
        let [_, _, nb, xb] = self.total;
        let prior = ratio(xb, nb).map_or(0.5, |b| b / pass_bound(b, cfg).max(f64::MIN_POSITIVE));
        let rate = self.within.info() / elapsed.max(1.0);
        self.within
            .pass_chance(alpha, prior, ETA_PRIOR_WEIGHT, rate * seconds)
    }

    /// Canary errors expected at the pass bound so far: how much the
    /// green side has to go by.
    pub fn pass_info(&self) -> f64 {
        self.within.info()
    }

    /// The report (`_canary_window` is for a recent-window pass rule that
    /// was tried and slowed green too much at low traffic).
    pub fn report(
        &self,
        cfg: &ErrorRatioCheck,
        levels: Levels,
        _canary_window: &Signals,
    ) -> CheckReport {
        let [nc, xc, nb, xb] = self.total;
        let canary = CohortStats::errors(nc, xc);
        let baseline = CohortStats::errors(nb, xb);
        let log_e = self.worse.log_e();
        let (rc, rb) = (canary.error_ratio, baseline.error_ratio);
        let increase = rc.zip(rb).map(|(c, b)| c - b);
        let result = levels.result(
            nc > 0 && nb > 0,
            log_e,
            increase.is_some_and(|d| d >= cfg.tolerance_abs),
            self.within.passed(),
        );
        let detail = match result {
            CheckResult::Nodata => "no requests yet from one of the cohorts".to_string(),
            CheckResult::Fail => format!(
                "canary error ratio {} vs baseline {} (p<{:.2}): the canary fails more often; roll back",
                pct(rc),
                pct(rb),
                (-levels.fail).exp()
            ),
            CheckResult::Pass => format!(
                "canary error ratio {} vs baseline {}: shown below {} (the baseline plus {:.0}% or {:.2} points)",
                pct(rc),
                pct(rb),
                pct(rb.map(|b| pass_bound(b, cfg))),
                cfg.pass_bound * 100.0,
                cfg.pass_bound_abs * 100.0
            ),
            CheckResult::Marginal => format!(
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
            evidence: levels.words(
                result,
                log_e,
                rb.map(|b| format!("+{:.2} points", (pass_bound(b, cfg) - b) * 100.0)),
            ),
            detail,
            exemplars: Vec::new(),
        }
    }
}
