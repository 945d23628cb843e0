//! Anytime-valid evidence: e-processes for binomial shares that stay valid
//! however often they are looked at (Ville's inequality: under the null,
//! the chance an e-process *ever* reaches 1/α is at most α).
//!
//! One primitive serves every check. Each update brings `k` "events" out of
//! `m` trials and the null probability `p0` of an event for that update:
//!
//! - two-sample (canary vs baseline): the events are canary errors (or
//!   canary requests slower than a threshold) among all errors (slow
//!   requests) of both cohorts in a batch, and `p0` is the canary's share
//!   of the batch's traffic, inflated by the tolerance. Conditioning on the
//!   total removes the unknown baseline rate (Lindon & Malek, NeurIPS 2022;
//!   Lindon et al., KDD 2022), and time-varying traffic splits are exact.
//! - one-sample (guardrails): events are canary errors among requests, and
//!   `p0` is the guardrail.
//!
//! The alternative is a weighted mixture over a grid of odds ratios against
//! the null boundary, so the e-value adapts to the effect's size. Under any
//! null probability at or below (above, for the "better" direction) `p0`,
//! each component's likelihood ratio is a nonnegative supermartingale, and
//! so is their average.

use serde::{Deserialize, Serialize};
/// Odds ratios of the "worse" alternatives (event more likely than `p0`).
const WORSE: [f64; GRID] = [1.6, 2.5, 4.0, 7.0, 15.0];
/// Odds ratios of the "better" alternatives (event less likely than `p0`).
const BETTER: [f64; GRID] = [0.7, 0.5, 0.33, 0.2, 0.1];
/// Odds ratios of the "surge" alternatives: events far more likely than
/// `p0`, as when the canary shows a kind of error the baseline does not.
/// Each such event all on the canary's side is worth about ln(1/p0) nats,
/// and a handful of them is the evidence.
const SURGE: [f64; GRID] = [2.5, 8.0, 40.0, 150.0, 600.0];
/// Alternatives in each mixture.
const GRID: usize = 5;
/// Prior weights of the alternatives (they sum to one): a component costs
/// ln(1/weight) nats of evidence. Odds ratios of 2.5–4 get the most: they
/// are the regressions a canary exists to catch within a minute, where
/// every nat counts; small ones take minutes whatever the weight, and
/// large ones are caught in seconds even with little.
const WEIGHTS: [f64; GRID] = [0.05, 0.3, 0.4, 0.15, 0.1];
/// Their logs, taken once: the judge reads every e-process's value at
/// every tick.
static LOG_WEIGHTS: std::sync::LazyLock<[f64; GRID]> =
    std::sync::LazyLock::new(|| WEIGHTS.map(f64::ln));

/// Nats a change detector's evidence starts below zero at, for its
/// likeliest alternative: the prior weights of the release's start and of
/// that alternative (ln(1/(0.9 · 0.35))).
pub const PRIOR_COST: f64 = 1.155;

/// Which side of the null boundary the alternatives lie on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// Evidence that events are more likely than `p0`: a regression.
    Worse,
    /// Evidence that events are less likely than `p0`: no regression.
    Better,
    /// Evidence that events are far more likely than `p0` (see `SURGE`).
    Surge,
}

impl Side {
    fn grid(self) -> &'static [f64; GRID] {
        match self {
            Side::Worse => &WORSE,
            Side::Better => &BETTER,
            Side::Surge => &SURGE,
        }
    }
}

/// The probability with the odds of `p` multiplied by `ratio`.
pub fn scale_odds(p: f64, ratio: f64) -> f64 {
    let o = p / (1.0 - p) * ratio;
    o / (1.0 + o)
}

/// Log likelihood ratio of `k` events in `m` trials, `p1` against `p0`.
fn log_lr(k: f64, m: f64, p0: f64, p1: f64) -> f64 {
    let mut s = 0.0;
    if k > 0.0 {
        s += k * (p1 / p0).ln();
    }
    if m > k {
        s += (m - k) * ((1.0 - p1) / (1.0 - p0)).ln();
    }
    s
}

/// log(Σ exp(x_i)) without overflow.
fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// A mixture e-process started at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EProcess {
    side: Side,
    log_lr: [f64; GRID],
}

impl EProcess {
    pub fn new(side: Side) -> Self {
        Self {
            side,
            log_lr: [0.0; GRID],
        }
    }

    /// Adds `k` events in `m` trials with null event probability `p0`.
    /// Updates with `p0` at 0 or 1 carry no evidence and are skipped.
    pub fn update(&mut self, k: u64, m: u64, p0: f64) {
        if m == 0 || !(p0 > 0.0 && p0 < 1.0) {
            return;
        }
        let (k, m) = (k.min(m) as f64, m as f64);
        for (s, ratio) in self.log_lr.iter_mut().zip(self.side.grid()) {
            *s += log_lr(k, m, p0, scale_odds(p0, *ratio));
        }
    }

    /// log of the e-value: the mixture's likelihood ratio.
    pub fn log_e(&self) -> f64 {
        log_sum_exp(self.log_lr.iter().zip(*LOG_WEIGHTS).map(|(s, w)| s + w))
    }
}

/// Prior weight on "the regression was there from the release's start".
const START_WEIGHT: f64 = 0.9;

/// How many restart points a change detector keeps besides the start.
const RESTARTS_KEPT: usize = 16;

/// Evidence of a regression that may begin at any time: a mixture over
/// start epochs of e-processes, weight `START_WEIGHT` on the release's start
/// and `(1 − START_WEIGHT)/(k(k+1))` on epoch `k ≥ 1` (they sum to one). A fixed-weight mixture of test
/// supermartingales is one too, so the false-alarm bound holds over the
/// whole life of the release, yet a regression that starts late is not
/// buried under evidence of the healthy time before it. Only the newest
/// restarts are kept: dropping terms can only lower the e-value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeDetector {
    from_start: EProcess,
    restarts: Vec<(u64, EProcess)>,
    epoch: u64,
}

impl Default for ChangeDetector {
    /// Detects events becoming more likely.
    fn default() -> Self {
        Self::new(Side::Worse)
    }
}

impl ChangeDetector {
    /// Detects events becoming more (`Worse`) or less (`Better`) likely.
    pub fn new(side: Side) -> Self {
        Self {
            from_start: EProcess::new(side),
            restarts: Vec::new(),
            epoch: 0,
        }
    }

    /// Opens a new restart point (call once per epoch, before its updates).
    pub fn new_epoch(&mut self) {
        self.epoch += 1;
        if self.restarts.len() == RESTARTS_KEPT {
            self.restarts.remove(0);
        }
        self.restarts
            .push((self.epoch, EProcess::new(self.from_start.side)));
    }

    pub fn update(&mut self, k: u64, m: u64, p0: f64) {
        self.from_start.update(k, m, p0);
        for (_, e) in &mut self.restarts {
            e.update(k, m, p0);
        }
    }

    /// log of the e-value.
    pub fn log_e(&self) -> f64 {
        let start = START_WEIGHT.ln();
        let rest = (1.0 - START_WEIGHT).ln();
        let terms = std::iter::once(start + self.from_start.log_e()).chain(
            self.restarts
                .iter()
                .map(|(k, e)| rest - ((*k * (*k + 1)) as f64).ln() + e.log_e()),
        );
        log_sum_exp(terms.collect::<Vec<_>>().into_iter())
    }
}

/// Canary share of a batch under the null that the canary's per-request
/// event probability is at most `1 + tolerance` times the baseline's.
pub fn null_share(canary_requests: u64, baseline_requests: u64, tolerance: f64) -> f64 {
    let (c, b) = (canary_requests as f64, baseline_requests as f64);
    let c = c * (1.0 + tolerance);
    c / (c + b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn evidence_grows_under_the_alternative_and_not_under_the_null() {
        let mut rng = Rng::new(7);
        let mut worse = EProcess::new(Side::Worse);
        let mut null = EProcess::new(Side::Worse);
        for _ in 0..200 {
            // canary share of events is 0.3 where the null says 0.1
            let m = 10;
            worse.update(rng.binomial(m, 0.3), m, 0.1);
            null.update(rng.binomial(m, 0.1), m, 0.1);
        }
        assert!(worse.log_e() > 100f64.ln(), "{}", worse.log_e());
        assert!(null.log_e() < 100f64.ln(), "{}", null.log_e());
    }

    #[test]
    fn better_side_shows_a_share_below_the_null() {
        let mut rng = Rng::new(3);
        let mut better = EProcess::new(Side::Better);
        for _ in 0..300 {
            better.update(rng.binomial(20, 0.05), 20, 0.1);
        }
        assert!(better.log_e() > 20f64.ln(), "{}", better.log_e());
    }

    /// Ville's inequality, checked by simulation with fixed seeds: an
    /// e-process under the null keeps its mean at most 1, and crosses 1/α in
    /// at most about α of runs however long it is watched.
    #[test]
    fn under_the_null_the_mean_stays_at_most_one_and_crossings_are_rare() {
        let runs = 4000;
        let mut crossed = 0;
        let mut mean_e = 0.0;
        for seed in 0..runs {
            let mut rng = Rng::new(seed);
            let mut e = EProcess::new(Side::Worse);
            let mut ever = false;
            for _ in 0..100 {
                let p0 = 0.05 + 0.3 * rng.uniform();
                let m = 1 + rng.below(20);
                e.update(rng.binomial(m, p0), m, p0);
                ever |= e.log_e() >= 20f64.ln();
            }
            mean_e += e.log_e().exp() / runs as f64;
            crossed += ever as u32;
        }
        let rate = crossed as f64 / runs as f64;
        assert!(rate <= 0.05 + 0.01, "crossed 1/0.05 in {rate} of runs");
        assert!(mean_e <= 1.1, "mean e-value {mean_e}");
    }

    #[test]
    fn a_null_below_the_boundary_is_conservative() {
        // true share 0.05, boundary 0.1: evidence of "worse" must fall
        let mut rng = Rng::new(11);
        let mut e = EProcess::new(Side::Worse);
        for _ in 0..100 {
            e.update(rng.binomial(10, 0.05), 10, 0.1);
        }
        assert!(e.log_e() < 0.0);
    }

    #[test]
    fn the_change_detector_catches_a_late_regression() {
        let mut rng = Rng::new(5);
        let mut cd = ChangeDetector::default();
        let mut plain = EProcess::new(Side::Worse);
        for t in 0..400 {
            if t % 15 == 0 {
                cd.new_epoch();
            }
            let p = if t < 300 { 0.1 } else { 0.3 };
            let k = rng.binomial(5, p);
            cd.update(k, 5, 0.1);
            plain.update(k, 5, 0.1);
        }
        assert!(cd.log_e() > 100f64.ln(), "{}", cd.log_e());
        assert!(cd.log_e() > plain.log_e());
    }

    #[test]
    fn the_change_detector_stays_quiet_under_the_null() {
        let runs = 500;
        let mut crossed = 0;
        for seed in 0..runs {
            let mut rng = Rng::new(1000 + seed);
            let mut cd = ChangeDetector::default();
            let mut ever = false;
            for t in 0..300 {
                if t % 15 == 0 {
                    cd.new_epoch();
                }
                cd.update(rng.binomial(8, 0.1), 8, 0.1);
                ever |= cd.log_e() >= 100f64.ln();
            }
            crossed += ever as u32;
        }
        assert!(
            crossed as f64 / runs as f64 <= 0.01 + 0.01,
            "{crossed} of {runs}"
        );
    }

    #[test]
    fn null_share_inflates_the_canary_by_the_tolerance() {
        assert!((null_share(10, 90, 0.0) - 0.1).abs() < 1e-12);
        assert!((null_share(10, 90, 1.0) - 20.0 / 110.0).abs() < 1e-12);
        assert!((scale_odds(0.5, 3.0) - 0.75).abs() < 1e-12);
    }
}
