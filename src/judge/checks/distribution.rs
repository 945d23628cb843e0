//! A distribution, canary vs baseline, compared at baseline quantiles:
//! how many of each cohort's observations lie beyond the baseline's
//! quantile (stretched by the tolerance), tested for the canary's share.
//! Distribution and the metric checks on gauges and histograms use it.

use std::sync::Arc;

use super::{log_mean_exp, Evidence};
use crate::config::LatencyCheck;
use crate::judge::eprocess::{null_share, ChangeDetector};
use crate::judge::spending::{Look, PassTest};
use crate::window::{Counts, Distribution};
use serde::{Deserialize, Serialize};

/// How far the canary may move from a baseline quantile, and which way is bad.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Margins {
    pub tolerance: f64,
    pub tolerance_abs: f64,
    pub pass_bound: f64,
    pub pass_bound_abs: f64,
    /// At a tail quantile (one leaving at most `TAIL` beyond it), green
    /// also counts the canary within bounds up to the baseline's quantile
    /// that leaves this share of that tail beyond it (0.5: p99 up to the
    /// baseline's p99.5); 1 turns it off. See `pass_floor_quantile`.
    pub pass_tail: f64,
    /// Higher is worse (latency); else lower is worse.
    pub increase: bool,
}

/// Quantiles leaving at most this share beyond them are tail quantiles
/// (p90 and up; p10 and down where lower is worse).
const TAIL: f64 = 0.1;

impl Margins {
    pub(super) fn latency(cfg: &LatencyCheck) -> Self {
        Self {
            tolerance: cfg.tolerance,
            tolerance_abs: cfg.tolerance_abs.as_micros() as f64,
            pass_bound: cfg.pass_bound,
            pass_bound_abs: cfg.pass_bound_abs.as_micros() as f64,
            pass_tail: cfg.pass_tail,
            increase: true,
        }
    }

    /// The baseline quantile below which green may not count a canary at
    /// quantile `q` within bounds, whatever `pass_bound` says: for a tail
    /// quantile, the one that leaves `pass_tail` of its tail beyond it;
    /// None elsewhere or when off.
    ///
    /// A heavy tail needs it: with log-normal latencies of σ 1.5, "25%
    /// slower at p99" moves only a third of the slowest 1% past the
    /// baseline's p99 × 1.25, and ruling that out takes some 6,000 canary
    /// requests, a minute at 100 requests/s. "No slower than the
    /// baseline's p99.5" asks a tenth as many slow requests to rule out.
    /// Where the tail is ordinary (σ 0.5: the baseline's p99.5 is its
    /// p99 × 1.13) the relative bound is the larger and decides alone.
    fn pass_floor_quantile(&self, q: f64) -> Option<f64> {
        let tail = if self.increase { 1.0 - q } else { q };
        if !(self.pass_tail < 1.0 && self.pass_tail > 0.0 && tail > 0.0 && tail <= TAIL) {
            return None;
        }
        let left = tail * self.pass_tail;
        Some(if self.increase { 1.0 - left } else { left })
    }

    /// The canary's fail and pass thresholds for a baseline quantile `tau`,
    /// the pass threshold no nearer than `floor` (see `pass_floor_quantile`).
    fn thresholds(&self, tau: u64, floor: Option<u64>) -> (u64, u64) {
        let shift = |rel: f64, abs: f64| {
            let by = (tau as f64 * rel).max(abs).round() as u64;
            if self.increase {
                tau.saturating_add(by)
            } else {
                tau.saturating_sub(by)
            }
        };
        let pass = shift(self.pass_bound, self.pass_bound_abs);
        let pass = match floor {
            Some(f) if self.increase => pass.max(f),
            Some(f) => pass.min(f),
            None => pass,
        };
        (shift(self.tolerance, self.tolerance_abs), pass)
    }

    /// Observations on the bad side of `threshold`.
    fn beyond(&self, h: &dyn Counts, threshold: u64) -> u64 {
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
    fn beyond_quantile(&self, h: &dyn Counts, tau: u64, q: f64) -> u64 {
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

/// One cohort pair's observations at a tick, compared within itself: an
/// endpoint (or the whole release where no endpoint is named). Each stratum
/// has its own threshold, so a canary serving more of a slow endpoint is
/// not slower for it.
pub(super) struct Stratum<'a> {
    /// The endpoint; empty for the whole release.
    pub name: &'a str,
    pub canary: &'a dyn Counts,
    pub baseline: &'a dyn Counts,
    /// The baseline's observations the threshold is read from.
    pub reference: &'a Distribution,
}

/// Distribution at one baseline quantile: requests slower than the baseline's
/// quantile (stretched by the tolerance for the canary), tested for the
/// canary's share of them against its share of the requests. A canary no
/// slower than tolerated has, at most, its traffic share of the slow ones.
/// With endpoints, each has its threshold and its share, and their batches
/// feed the one test: the product of conditional likelihood ratios is an
/// e-process whatever the mix.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QuantileTest {
    q: f64,
    #[serde(default)]
    strata: Vec<StratumState>,
    worse: ChangeDetector,
    within: PassTest,
    /// Canary observations seen: green's side starts once the tail beyond
    /// the quantile should hold `MIN_TAIL` of them.
    #[serde(default)]
    seen: u64,
}

/// A stratum's threshold and the observations not fed yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StratumState {
    name: Arc<str>,
    /// Baseline quantile fixed for the current batch, microseconds.
    tau: Option<u64>,
    /// The pass threshold's floor fixed with it (see
    /// `Margins::pass_floor_quantile`).
    floor: Option<u64>,
    /// Not yet fed: canary slow (fail threshold), slow (pass threshold),
    /// canary count, baseline slow, baseline count.
    batch: [u64; 5],
    /// Canary slow requests beyond those its share implies, summed over
    /// the batches fed: where the regression is.
    excess: f64,
}

/// Canary observations expected beyond a quantile before green's side of
/// it is tested: a p99 waits for 1,000 requests.
pub(super) const MIN_TAIL: f64 = 10.0;

/// Strata a test keeps (endpoints are bounded by `[checks.endpoints] top`
/// before they reach it; this bounds what a checkpoint may bring).
const MAX_STRATA: usize = 64;

impl QuantileTest {
    fn new(q: f64) -> Self {
        Self {
            q,
            seen: 0,
            strata: Vec::new(),
            worse: ChangeDetector::default(),
            within: PassTest::default(),
        }
    }

    /// The state of stratum `name`, fed `at` in the strata: looked for
    /// there first, since strata come in the same order tick after tick.
    fn stratum(&mut self, at: usize, name: &str) -> Option<&mut StratumState> {
        let same = |s: &StratumState| &*s.name == name;
        let found = match self.strata.get(at) {
            Some(s) if same(s) => Some(at),
            _ => self.strata.iter().position(same),
        };
        let i = match found {
            Some(i) => i,
            None if self.strata.len() < MAX_STRATA => {
                self.strata.push(StratumState {
                    name: Arc::from(name),
                    tau: None,
                    floor: None,
                    batch: [0; 5],
                    excess: 0.0,
                });
                self.strata.len() - 1
            }
            None => return None,
        };
        Some(&mut self.strata[i])
    }

    fn feed(&mut self, strata: &[Stratum<'_>], m: &Margins, epoch_over: bool, look: Look) {
        self.seen = self
            .seen
            .saturating_add(strata.iter().map(|s| s.canary.count()).sum::<u64>());
        let active = self.active();
        let q = self.q;
        for (at, input) in strata.iter().enumerate() {
            let Some(st) = self.stratum(at, input.name) else {
                continue;
            };
            let mut fed = None;
            if let Some(tau) = st.tau {
                let (fail_at, pass_at) = m.thresholds(tau, st.floor);
                let add = [
                    m.beyond(input.canary, fail_at),
                    m.beyond(input.canary, pass_at),
                    input.canary.count(),
                    m.beyond_quantile(input.baseline, tau, q),
                    input.baseline.count(),
                ];
                for (b, a) in st.batch.iter_mut().zip(add) {
                    *b += a;
                }
                let [slow_fail, slow_pass, nc, slow_b, nb] = st.batch;
                if nc > 0 && nb > 0 {
                    let share = null_share(nc, nb, 0.0);
                    st.excess += slow_fail as f64 - share * (slow_fail + slow_b) as f64;
                    fed = Some((slow_fail, slow_pass, slow_b, share));
                    st.batch = [0; 5];
                }
            }
            // The threshold moves only between batches, once per epoch, so
            // both cohorts of a batch are always held to the same one.
            let batch_empty = st.batch[2] == 0 && st.batch[4] == 0;
            if (st.tau.is_none() || epoch_over) && batch_empty {
                st.tau = input.reference.quantile(q);
                st.floor = m
                    .pass_floor_quantile(q)
                    .and_then(|f| input.reference.quantile(f));
            }
            if let Some((slow_fail, slow_pass, slow_b, share)) = fed {
                // Evidence of a regression counts from the first request:
                // the test conditions on the slow requests of both
                // cohorts, so a thin tail cannot cry wolf, and a tail
                // regression is seen as soon as its slow requests come.
                self.worse.update(slow_fail, slow_fail + slow_b, share);
                if active {
                    self.within
                        .update(slow_pass, slow_pass + slow_b, share, look);
                }
            }
        }
    }

    /// The stratum with the most excess slow canary requests, if any has
    /// some, when there are several.
    fn worst_stratum(&self) -> Option<&str> {
        if self.strata.len() < 2 {
            return None;
        }
        self.strata
            .iter()
            .filter(|s| s.excess > 0.0 && !s.name.is_empty())
            .max_by(|a, b| a.excess.total_cmp(&b.excess))
            .map(|s| &*s.name)
    }
}

impl QuantileTest {
    /// Canary observations needed before this quantile is tested.
    fn needed(&self) -> u64 {
        (MIN_TAIL / self.tail().max(1e-6)).ceil() as u64
    }

    /// The share of observations beyond the quantile.
    fn tail(&self) -> f64 {
        if self.q > 0.5 {
            1.0 - self.q
        } else {
            self.q
        }
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
    /// Kept as passed (see `keep_pass`).
    passed_once: bool,
}

impl DistributionTest {
    pub fn new(quantiles: &[f64]) -> Self {
        Self {
            quantiles: quantiles.iter().map(|q| QuantileTest::new(*q)).collect(),
            passed_once: false,
        }
    }

    pub fn new_epoch(&mut self) {
        for q in &mut self.quantiles {
            q.worse.new_epoch();
        }
    }

    /// Feeds the whole release as one stratum.
    pub(super) fn feed(
        &mut self,
        canary: &Distribution,
        baseline: &Distribution,
        baseline_window: &Distribution,
        m: &Margins,
        epoch_over: bool,
        look: Look,
    ) {
        let whole = Stratum {
            name: "",
            canary,
            baseline,
            reference: baseline_window,
        };
        self.feed_strata(&[whole], m, epoch_over, look);
    }

    /// Feeds each stratum (endpoint) against its own threshold.
    pub(super) fn feed_strata(
        &mut self,
        strata: &[Stratum<'_>],
        m: &Margins,
        epoch_over: bool,
        look: Look,
    ) {
        for q in &mut self.quantiles {
            q.feed(strata, m, epoch_over, look);
        }
    }

    /// The endpoint where the worst quantile's slow canary requests are,
    /// when it is compared endpoint by endpoint.
    pub(super) fn worst_stratum(&self) -> Option<(f64, &str)> {
        let worst = self
            .quantiles
            .iter()
            .max_by(|a, b| a.worse.log_e().total_cmp(&b.worse.log_e()))?;
        worst.worst_stratum().map(|s| (worst.q, s))
    }

    /// Keeps the test passed from now on: the release has been shown green
    /// with it, and a quantile tested later (a p99 from the 1,000th canary
    /// request) does not take that back by wanting evidence of its own,
    /// only by leaning towards a regression, or showing one.
    pub(super) fn keep_pass(&mut self) {
        self.passed_once = self.passed_once || self.tested_all_passed();
    }

    /// Whether some quantile is tested and every one tested has passed.
    fn tested_all_passed(&self) -> bool {
        self.quantiles.iter().any(|q| q.active())
            && self
                .quantiles
                .iter()
                .filter(|q| q.active())
                .all(|q| q.within.passed())
    }

    /// The evidence at all quantiles together.
    pub(super) fn evidence(&self) -> Evidence {
        // Each quantile's e-value read once: a change detector's is a sum
        // over its restarts and alternatives.
        let log_es: Vec<f64> = self.quantiles.iter().map(|q| q.worse.log_e()).collect();
        let at = || self.quantiles.iter().zip(log_es.iter().copied());
        let worst = at().max_by(|a, b| a.1.total_cmp(&b.1));
        Evidence {
            // the average of e-processes is one
            log_e: log_mean_exp(log_es.iter().copied()),
            pass_p: self
                .quantiles
                .iter()
                .map(|q| q.within.p_value())
                .fold(0.0, f64::max),
            // A quantile whose tail is still too thin is not tested yet and
            // does not hold green back: at 10 canary requests/s a p99 would
            // wait minutes for its 1,000 requests.
            passed: self.passed_once || self.tested_all_passed(),
            worst: worst.map_or(0.5, |(w, _)| w.q),
            worst_log_e: worst.map_or(0.0, |(_, log_e)| log_e),
            // Once shown green, a quantile still thin does not take it
            // back by leaning: a p99.9 at 10 canary requests/s waits 1,000 s
            // for its test, and one slow request leans it for a while. Red,
            // and the half-way mark, still can.
            thin_log_e: at()
                .filter(|(q, _)| !q.active() && !self.passed_once)
                .map(|(_, log_e)| log_e)
                .fold(f64::NEG_INFINITY, f64::max),
            ready: self
                .quantiles
                .iter()
                .any(|q| q.strata.iter().any(|s| s.tau.is_some())),
            thin: self
                .quantiles
                .iter()
                .filter(|q| !q.active())
                .map(|q| (q.q, q.needed()))
                .collect(),
        }
    }

    /// The chance that every tested quantile has passed `seconds` from now,
    /// at the canary traffic of the `elapsed` seconds so far (each as
    /// `PassTest::pass_chance` tells, taken as independent). Quantiles still
    /// too thin to test do not count (see `untested_for`), unless none is
    /// tested yet: then the first to be needs the rest of its minimum, and
    /// about as much again to pass. 0 while a tested quantile has less
    /// than `min_info` events' worth of evidence: its estimate would be
    /// mostly its prior.
    pub(super) fn pass_chance(&self, alpha: f64, seconds: f64, elapsed: f64, min_info: f64) -> f64 {
        if self.passed_once {
            return 1.0;
        }
        let coming = self.canary_rate(elapsed) * seconds;
        if !self.quantiles.iter().any(|q| q.active()) {
            let Some(first) = self.quantiles.iter().min_by_key(|q| q.needed()) else {
                return 1.0;
            };
            let to_go = (2 * first.needed()).saturating_sub(first.seen) as f64;
            return if coming >= to_go { 1.0 } else { 0.0 };
        }
        self.quantiles
            .iter()
            .filter(|q| q.active())
            .map(|q| {
                if !q.within.passed() && q.within.info() < min_info {
                    return 0.0;
                }
                // information per canary observation since it was first tested
                let tested = q.seen.saturating_sub(q.needed()).max(1) as f64;
                let more = q.within.info() / tested * coming;
                q.within.pass_chance(alpha, 0.5, 2.0, more)
            })
            .product()
    }

    /// Seconds until the next quantile too thin to test so far is tested,
    /// at the canary traffic of the `elapsed` seconds so far (None when
    /// every one is, or none will be). From then on it holds green back
    /// too, with nothing yet to tell how soon it passes: an estimate of
    /// the time to green covers only the decisions that come before it.
    pub(super) fn untested_for(&self, elapsed: f64) -> Option<f64> {
        let rate = self.canary_rate(elapsed);
        if self.passed_once || rate <= 0.0 || !self.quantiles.iter().any(|q| q.active()) {
            return None;
        }
        self.quantiles
            .iter()
            .filter(|q| !q.active())
            .map(|q| (q.needed() - q.seen) as f64 / rate)
            .min_by(f64::total_cmp)
    }

    /// Canary observations per second over the `elapsed` seconds so far.
    fn canary_rate(&self, elapsed: f64) -> f64 {
        let seen = self.quantiles.iter().map(|q| q.seen).max().unwrap_or(0);
        seen as f64 / elapsed.max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn margins(pass_tail: f64, increase: bool) -> Margins {
        Margins {
            tolerance: 0.1,
            tolerance_abs: 1000.0,
            pass_bound: 0.25,
            pass_bound_abs: 5000.0,
            pass_tail,
            increase,
        }
    }

    /// One second of log-normal latencies (median 50 ms, σ 0.5).
    fn second(rng: &mut crate::rng::Rng, n: u64) -> Distribution {
        let mut d = Distribution::default();
        for _ in 0..n {
            d.record((rng.lognormal(50.0, 0.5) * 1000.0) as u64, 1);
        }
        d
    }

    #[test]
    fn a_quantile_tested_later_does_not_take_a_pass_back() {
        // 10 canary requests a second: p50 is tested at once, p99 from the
        // 1,000th request, long after p50 has passed.
        let mut rng = crate::rng::Rng::new(3);
        let m = margins(0.5, true);
        let look = Look {
            alpha: 0.1,
            now: true,
        };
        let mut test = DistributionTest::new(&[0.5, 0.99]);
        let mut window = Distribution::default();
        let (mut passed_at, mut p99_tested) = (None, false);
        for t in 0..140 {
            let (c, b) = (second(&mut rng, 10), second(&mut rng, 90));
            window.add(&b);
            test.feed(&c, &b, &window, &m, t % 15 == 0, look);
            let e = test.evidence();
            if e.passed && passed_at.is_none() {
                passed_at = Some(t);
                // shown green
                test.keep_pass();
            }
            p99_tested |= e.thin.is_empty();
            if passed_at.is_some() {
                assert!(e.passed, "taken back at {t}s");
            }
        }
        assert!(passed_at.is_some_and(|t| t < 95), "{passed_at:?}");
        assert!(p99_tested);
    }

    /// Seconds from the 30th to the 90th where the p99, still too thin to
    /// test for green (10 canary requests a second), leans towards a
    /// regression, over 20 releases; `tail` of the canary's requests are
    /// 1 s slower.
    fn thin_p99_leaning(tail: f64) -> f64 {
        let m = margins(0.5, true);
        let look = Look {
            alpha: 0.1,
            now: true,
        };
        let (mut leaning, mut seconds) = (0, 0);
        for seed in 1..=20 {
            let mut rng = crate::rng::Rng::new(seed);
            let mut test = DistributionTest::new(&[0.5, 0.95, 0.99]);
            let mut window = Distribution::default();
            for t in 0..90 {
                let mut c = Distribution::default();
                for _ in 0..10 {
                    let slow = if rng.bernoulli(tail) { 1000.0 } else { 0.0 };
                    c.record(((rng.lognormal(50.0, 0.5) + slow) * 1000.0) as u64, 1);
                }
                let b = second(&mut rng, 90);
                window.add(&b);
                test.feed(&c, &b, &window, &m, t % 15 == 0, look);
                let e = test.evidence();
                if t >= 30 {
                    assert_eq!(e.thin.len(), 1, "only p99 waits (for 1,000 requests)");
                    seconds += 1;
                    leaning += usize::from(e.thin_log_e >= 0.0);
                }
            }
        }
        leaning as f64 / seconds as f64
    }

    #[test]
    fn a_thin_tail_that_leans_towards_a_regression_is_seen() {
        // 3% of requests 1 s slower: the p99's evidence leans that way
        // nearly all the time before it is tested (the latency check holds
        // green while it does); with no regression it seldom does.
        let regression = thin_p99_leaning(0.03);
        let healthy = thin_p99_leaning(0.0);
        assert!(regression > 0.9 && healthy < 0.2, "{regression} {healthy}");
    }

    #[test]
    fn endpoints_are_compared_each_with_its_own_threshold() {
        // Two endpoints, the second four times slower; the canary sends
        // 60% of its requests to the slow one, the baseline 20%.
        let m = margins(0.5, true);
        let look = Look {
            alpha: 0.1,
            now: true,
        };
        let slow = |rng: &mut crate::rng::Rng, n: u64, x: f64| {
            let mut d = Distribution::default();
            for _ in 0..n {
                d.record((rng.lognormal(50.0 * x, 0.5) * 1000.0) as u64, 1);
            }
            d
        };
        for regression in [1.0, 1.5] {
            let mut rng = crate::rng::Rng::new(7);
            let (mut test, mut pooled) = (
                DistributionTest::new(&[0.5, 0.95]),
                DistributionTest::new(&[0.5, 0.95]),
            );
            let (mut ref_fast, mut ref_slow, mut window) = (
                Distribution::default(),
                Distribution::default(),
                Distribution::default(),
            );
            for t in 0..60 {
                let (cf, cs) = (
                    slow(&mut rng, 40, 1.0),
                    slow(&mut rng, 60, 4.0 * regression),
                );
                let (bf, bs) = (slow(&mut rng, 720, 1.0), slow(&mut rng, 180, 4.0));
                ref_fast.add(&bf);
                ref_slow.add(&bs);
                let strata = [
                    Stratum {
                        name: "GET /fast",
                        canary: &cf,
                        baseline: &bf,
                        reference: &ref_fast,
                    },
                    Stratum {
                        name: "GET /slow",
                        canary: &cs,
                        baseline: &bs,
                        reference: &ref_slow,
                    },
                ];
                test.feed_strata(&strata, &m, t % 15 == 0, look);
                let (mut c, mut b) = (cf.clone(), bf.clone());
                c.add(&cs);
                b.add(&bs);
                window.add(&b);
                pooled.feed(&c, &b, &window, &m, t % 15 == 0, look);
            }
            // Pooled, the mix alone is overwhelming evidence.
            assert!(
                pooled.evidence().log_e > 20.0,
                "{}",
                pooled.evidence().log_e
            );
            let e = test.evidence();
            if regression == 1.0 {
                assert!(e.log_e < 1.0, "the mix is no evidence: {}", e.log_e);
                assert!(e.passed);
            } else {
                assert!(e.log_e > 20.0, "{}", e.log_e);
                assert_eq!(test.worst_stratum().map(|(_, s)| s), Some("GET /slow"));
            }
        }
    }

    #[test]
    fn the_tail_floor_applies_to_tail_quantiles_only() {
        let m = margins(0.5, true);
        assert_eq!(m.pass_floor_quantile(0.99), Some(0.995));
        assert!((m.pass_floor_quantile(0.9).unwrap() - 0.95).abs() < 1e-12);
        assert_eq!(m.pass_floor_quantile(0.5), None);
        assert_eq!(m.pass_floor_quantile(0.89), None);
        assert_eq!(margins(1.0, true).pass_floor_quantile(0.99), None);
        // lower is worse: the low tail
        let low = margins(0.5, false);
        assert_eq!(low.pass_floor_quantile(0.01), Some(0.005));
        assert_eq!(low.pass_floor_quantile(0.99), None);
    }

    #[test]
    fn the_floor_widens_the_pass_threshold_only_where_it_is_larger() {
        let m = margins(0.5, true);
        // a heavy tail: the baseline's p99.5 is 45% above its p99
        assert_eq!(m.thresholds(100_000, Some(145_000)), (110_000, 145_000));
        // an ordinary one: 13% above, and the 25% bound decides
        assert_eq!(m.thresholds(100_000, Some(113_000)), (110_000, 125_000));
        assert_eq!(m.thresholds(100_000, None), (110_000, 125_000));
        // lower is worse: the floor can only lower the pass threshold
        let low = margins(0.5, false);
        assert_eq!(low.thresholds(100_000, Some(60_000)), (90_000, 60_000));
        assert_eq!(low.thresholds(100_000, Some(90_000)), (90_000, 75_000));
    }
}
