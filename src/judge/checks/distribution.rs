//! A distribution, canary vs baseline, compared at baseline quantiles:
//! how many of each cohort's observations lie beyond the baseline's
//! quantile (stretched by the tolerance), tested for the canary's share.
//! Distribution and the metric checks on gauges and histograms use it.

use super::{log_mean_exp, Evidence};
use crate::config::LatencyCheck;
use crate::judge::eprocess::{null_share, ChangeDetector};
use crate::judge::spending::{Look, PassTest};
use crate::window::Distribution;
use serde::{Deserialize, Serialize};

/// How far the canary may move from a baseline quantile, and which way is bad.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Margins {
    pub tolerance: f64,
    pub tolerance_abs: f64,
    pub pass_bound: f64,
    pub pass_bound_abs: f64,
    /// Higher is worse (latency); else lower is worse.
    pub increase: bool,
}

impl Margins {
    pub(super) fn latency(cfg: &LatencyCheck) -> Self {
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
    fn beyond(&self, h: &Distribution, threshold: u64) -> u64 {
        if self.increase {
            h.count_above(threshold)
        } else {
            h.count_below(threshold)
        }
    }

    /// The baseline's observations on the bad side of its own quantile `q`
    /// at `tau`, ties included in the share the quantile implies: with
    /// coarse timers (every request 50 ms) none is strictly beyond `tau`,
    /// and the test would have no slow request to compare with, ever.
    fn beyond_quantile(&self, h: &Distribution, tau: u64, q: f64) -> u64 {
        let n = h.count();
        let (above, below) = (h.count_above(tau), h.count_below(tau));
        let (strict, share) = if self.increase {
            (above, 1.0 - q)
        } else {
            (below, q)
        };
        let ties = n.saturating_sub(above).saturating_sub(below);
        let owed = (share * n as f64).round() as u64;
        strict + ties.min(owed.saturating_sub(strict))
    }
}

/// Distribution at one baseline quantile: requests slower than the baseline's
/// quantile (stretched by the tolerance for the canary), tested for the
/// canary's share of them against its share of the requests. A canary no
/// slower than tolerated has, at most, its traffic share of the slow ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QuantileTest {
    q: f64,
    /// Baseline quantile fixed for the current batch, microseconds.
    tau: Option<u64>,
    /// Not yet fed: canary slow (fail threshold), slow (pass threshold),
    /// canary count, baseline slow, baseline count.
    batch: [u64; 5],
    worse: ChangeDetector,
    within: PassTest,
    /// Canary observations seen: the test starts once the tail beyond the
    /// quantile should hold `MIN_TAIL` of them.
    #[serde(default)]
    seen: u64,
}

/// Canary observations expected beyond a quantile before it is tested: a
/// p99 waits for 1,000 requests, so a thin tail cannot cry wolf, and says
/// so (no data) until then.
pub(super) const MIN_TAIL: f64 = 10.0;

impl QuantileTest {
    fn new(q: f64) -> Self {
        Self {
            q,
            seen: 0,
            tau: None,
            batch: [0; 5],
            worse: ChangeDetector::default(),
            within: PassTest::default(),
        }
    }

    fn feed(
        &mut self,
        canary: &Distribution,
        baseline: &Distribution,
        baseline_window: &Distribution,
        m: &Margins,
        epoch_over: bool,
        look: Look,
    ) {
        self.seen = self.seen.saturating_add(canary.count());
        if !self.active() {
            return;
        }
        if let Some(tau) = self.tau {
            let (fail_at, pass_at) = m.thresholds(tau);
            let add = [
                m.beyond(canary, fail_at),
                m.beyond(canary, pass_at),
                canary.count(),
                m.beyond_quantile(baseline, tau, self.q),
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

impl QuantileTest {
    /// Canary observations needed before this quantile is tested.
    fn needed(&self) -> u64 {
        let tail = if self.q > 0.5 { 1.0 - self.q } else { self.q };
        (MIN_TAIL / tail.max(1e-6)).ceil() as u64
    }

    /// Whether the tail is thick enough to test.
    fn active(&self) -> bool {
        self.seen >= self.needed()
    }
}

/// A distribution, canary vs baseline, at several baseline quantiles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DistributionTest {
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

    pub(super) fn feed(
        &mut self,
        canary: &Distribution,
        baseline: &Distribution,
        baseline_window: &Distribution,
        m: &Margins,
        epoch_over: bool,
        look: Look,
    ) {
        for q in &mut self.quantiles {
            q.feed(canary, baseline, baseline_window, m, epoch_over, look);
        }
    }

    /// The evidence at all quantiles together.
    pub(super) fn evidence(&self) -> Evidence {
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
            // A quantile whose tail is still too thin is not tested yet and
            // does not hold green back: at 10 canary requests/s a p99 would
            // wait minutes for its 1,000 requests.
            passed: self.quantiles.iter().any(|q| q.active())
                && self
                    .quantiles
                    .iter()
                    .filter(|q| q.active())
                    .all(|q| q.within.passed()),
            worst,
            ready: self.quantiles.iter().any(|q| q.tau.is_some()),
            thin: self
                .quantiles
                .iter()
                .filter(|q| !q.active())
                .map(|q| (q.q, q.needed()))
                .collect(),
        }
    }

    /// Canary observations still needed for every tested quantile to
    /// pass, as a multiple of those seen so far (None when some will not
    /// pass, or there is nothing to go by). Quantiles still too thin to
    /// test do not hold green back, so they do not count, unless none is
    /// tested yet: then the first to be needs the rest of its minimum,
    /// and about as much again to pass.
    pub(super) fn eta_multiple(&self, alpha: f64) -> Option<f64> {
        let mut worst: Option<f64> = None;
        for q in self.quantiles.iter().filter(|q| q.active()) {
            let trials = q.within.trials();
            if trials == 0 {
                return None;
            }
            let m = q.within.eta_trials(alpha, 0.5, 2.0)? / trials as f64;
            worst = Some(worst.map_or(m, |w| w.max(m)));
        }
        if let Some(w) = worst {
            return Some(w);
        }
        let first = self.quantiles.iter().min_by_key(|q| q.needed())?;
        if first.seen == 0 {
            return None;
        }
        Some((2 * first.needed()).saturating_sub(first.seen) as f64 / first.seen as f64)
    }
}
