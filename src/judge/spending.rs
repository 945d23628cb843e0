//! Green evidence: an exact group-sequential test that a canary's event
//! probability is *below* a bound, with an α-spending function in
//! information time (Lan & DeMets, Biometrika 1983).
//!
//! Red needs evidence that survives being looked at forever, and the
//! e-processes give it. Green is a different question: "is there enough
//! data to rule out a regression as large as the pass bound?". An
//! anytime-valid likelihood ratio answers it too, but pays for every look
//! it might have taken, and with rare events that price is steep: 600
//! canary requests at 0.5% errors hold about 3 errors, and a likelihood
//! ratio against a 2% bound reaches 10 only with 4 or fewer, where an exact
//! test at a planned look accepts 5 or 6.
//!
//! So the green side keeps the exact distribution of the canary's event
//! count under the bound, for the paths that have not passed yet, and at
//! each look passes the counts low enough that the probability of *ever*
//! passing so far stays within the budget `α · spend(I)`. `I` is the
//! information: the events expected at the bound so far. The spending
//! function is fixed in advance, so the chance that a canary at (or worse
//! than) the bound is ever called within it is at most α, however often it
//! is looked at, and most of the budget goes where decisions are made.
//!
//! Conservative simplifications, each of which can only lower the chance of
//! passing: probability mass too small to matter (below 1e-20) is dropped
//! and counted as spent; updates between looks are merged into one binomial
//! at their mean probability (a binomial is more spread than the
//! Poisson-binomial it stands for, so its lower tail is heavier).

use serde::{Deserialize, Serialize};
/// Information at which half of the error budget has been spent: this many
/// events expected at the bound. The budget grows with its square at first,
/// so the earliest looks, on the least data, spend little: a canary at 10
/// requests per second (a 2% bound expects 6 errors by its first look at
/// 30 s) spends a third of it by then and two thirds by its first minute,
/// and the rest is kept for releases that need longer.
const HALF_SPENT: f64 = 8.0;

/// Looks come every update up to this information, then only when the
/// information has grown by `SPARSE_STEP`: late looks add little power,
/// and the distribution is wide by then.
const DENSE_UNTIL: f64 = 100.0;
const SPARSE_STEP: f64 = 1.05;

/// Past this information the budget left is 0.002% of α: the test stops.
const GIVE_UP: f64 = 2000.0;

/// Probabilities below this are dropped (and counted as spent).
const TINY: f64 = 1e-20;

/// The budget spent by information `i`, as a share of α.
fn spend(i: f64) -> f64 {
    i * i / (i * i + HALF_SPENT * HALF_SPENT)
}

/// When the test may pass, and at what level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    /// 1 − green confidence: the chance of passing at or beyond the bound.
    pub alpha: f64,
    /// Whether green is possible now (the release is old enough): looks
    /// before that would spend budget on decisions nobody can take.
    pub now: bool,
}

/// Where the test stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum State {
    Open,
    /// Shown within the bound.
    Passed,
    /// The budget is spent without passing.
    Exhausted,
}

/// The test that events are less likely than a bound (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassTest {
    /// P(count = offset + i, not passed yet) under the bound.
    dist: Vec<f64>,
    offset: u64,
    info: f64,
    events: u64,
    /// Trials folded into `dist`.
    #[serde(default)]
    trials: u64,
    /// Updates not yet folded into `dist`: trials and expected events.
    pending_trials: u64,
    pending_info: f64,
    last_look: f64,
    state: State,
    /// The budget a pass would have needed at the latest look.
    p_value: f64,
}

impl Default for PassTest {
    fn default() -> Self {
        Self {
            dist: vec![1.0],
            offset: 0,
            info: 0.0,
            events: 0,
            trials: 0,
            pending_trials: 0,
            pending_info: 0.0,
            last_look: 0.0,
            state: State::Open,
            p_value: 1.0,
        }
    }
}

impl PassTest {
    /// Adds `k` events in `m` trials whose event probability under the
    /// bound is `p0`, then looks if `look` allows it.
    pub fn update(&mut self, k: u64, m: u64, p0: f64, look: Look) {
        if self.state != State::Open || m == 0 || !(p0 > 0.0 && p0 < 1.0) {
            return;
        }
        self.events += k.min(m);
        self.pending_trials += m;
        self.pending_info += m as f64 * p0;
        if !look.now {
            return;
        }
        let info = self.info + self.pending_info;
        if info > DENSE_UNTIL && info < self.last_look * SPARSE_STEP {
            return;
        }
        self.fold();
        self.look(look.alpha);
    }

    /// The chance that the test has passed once `more` information (events
    /// expected at the bound) has come in, as far as the data so far can
    /// tell: the canary's rate, as a share of the bound's, is drawn from its
    /// posterior (a gamma over the events seen, shrunk towards `prior`, the
    /// share expected, worth `weight` events at the bound), its events to
    /// come from a Poisson at that rate (together a negative binomial), and
    /// the boundary then as `boundary_at` expects it. 1 once passed, 0 once
    /// exhausted.
    ///
    /// That is what an estimate of the time to green needs: with rare
    /// events, whether a canary passes in one minute or three turns on how
    /// few of its errors happen to come early, and a point estimate at the
    /// mean rate is off by more than 2× as often as not.
    pub fn pass_chance(&self, alpha: f64, prior: f64, weight: f64, more: f64) -> f64 {
        match self.state {
            State::Passed => return 1.0,
            State::Exhausted => return 0.0,
            State::Open => {}
        }
        let info = self.info + self.pending_info;
        let at = info + more.max(0.0);
        if at > GIVE_UP {
            return 0.0;
        }
        // Counts below this pass by then; the boundary never moves back.
        let boundary = self.boundary_at(alpha, info, at).max(self.offset);
        let Some(room) = boundary.checked_sub(self.events + 1) else {
            return 0.0;
        };
        let shape = self.events as f64 + prior * weight;
        let scale = info + weight;
        negative_binomial_cdf(room, shape, scale / (scale + more.max(0.0)))
    }

    /// The boundary expected at information `at` (counts below it pass), by
    /// a normal approximation of a Poisson count at the bound, in z units
    /// shifted by as much as the exact boundary at `now` sits below the
    /// same approximation there: paths that passed at earlier looks and
    /// would since have risen above the boundary spent budget too, so the
    /// exact boundary is lower than a count's own quantile, most of all
    /// at small counts.
    fn boundary_at(&self, alpha: f64, now: f64, at: f64) -> u64 {
        let z = |i: f64| normal_quantile((alpha * spend(i)).clamp(1e-12, 0.5));
        let shift = if now > 0.0 && self.offset > 0 {
            ((self.offset as f64 - 0.5 - now) / now.sqrt() - z(now)).min(0.0)
        } else {
            0.0
        };
        (at + (z(at) + shift) * at.sqrt() + 0.5).max(0.0).floor() as u64
    }

    /// Events expected at the bound so far.
    pub fn info(&self) -> f64 {
        self.info + self.pending_info
    }

    #[cfg(test)]
    pub fn state(&self) -> State {
        self.state
    }

    pub fn passed(&self) -> bool {
        self.state == State::Passed
    }

    /// The error budget passing would have needed at the latest look
    /// (1 before any): the stage-wise p-value of "beyond the bound".
    pub fn p_value(&self) -> f64 {
        self.p_value
    }

    /// Convolves the pending trials into the distribution.
    fn fold(&mut self) {
        if self.pending_trials == 0 {
            return;
        }
        let m = self.pending_trials;
        let p = (self.pending_info / m as f64).clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
        let (lo, pmf) = binomial_pmf(m, p);
        let mut next = vec![0.0; self.dist.len() + pmf.len() - 1];
        for (i, a) in self.dist.iter().enumerate() {
            for (j, b) in pmf.iter().enumerate() {
                next[i + j] += a * b;
            }
        }
        self.offset += lo;
        self.dist = next;
        self.info += self.pending_info;
        self.trials += self.pending_trials;
        self.pending_trials = 0;
        self.pending_info = 0.0;
        // drop negligible tails
        let first = self.dist.iter().position(|p| *p >= TINY);
        let last = self.dist.iter().rposition(|p| *p >= TINY);
        match (first, last) {
            (Some(a), Some(b)) => {
                self.dist.truncate(b + 1);
                self.dist.drain(..a);
                self.offset += a as u64;
            }
            _ => self.dist.clear(),
        }
    }

    fn look(&mut self, alpha: f64) {
        self.last_look = self.info;
        let alive: f64 = self.dist.iter().sum();
        let spent = (1.0 - alive).max(0.0);
        let budget = alpha * spend(self.info);
        // the stage-wise p-value: spent so far plus the paths at or below
        // the observed count
        let at_or_below: f64 = self
            .dist
            .iter()
            .take((self.events + 1).saturating_sub(self.offset) as usize)
            .sum();
        self.p_value = (spent + at_or_below).min(1.0);
        // pass the lowest counts while the budget allows
        let mut crossed = 0.0;
        let mut cut = 0;
        for p in &self.dist {
            if spent + crossed + p > budget {
                break;
            }
            crossed += p;
            cut += 1;
        }
        let boundary = self.offset + cut as u64; // counts below this pass
        self.dist.drain(..cut);
        self.offset = boundary;
        if self.events < boundary {
            self.state = State::Passed;
        } else if self.info > GIVE_UP || self.dist.is_empty() {
            self.state = State::Exhausted;
        }
        if self.state != State::Open {
            self.dist = Vec::new();
        }
    }
}

/// P(N ≤ `k`) for a negative binomial of `shape` (real) and success
/// probability `p`: the count of Poisson events whose rate is gamma.
fn negative_binomial_cdf(k: u64, shape: f64, p: f64) -> f64 {
    if shape <= 0.0 || p >= 1.0 {
        return 1.0;
    }
    let log_first = shape * p.ln();
    if log_first < -600.0 || k > 200 {
        // far from its start, or many terms to sum (an estimate's grid asks
        // for hundreds a tick): normal, with a continuity correction
        let mean = shape * (1.0 - p) / p;
        let sd = (mean / p).sqrt().max(f64::MIN_POSITIVE);
        return normal_cdf((k as f64 + 0.5 - mean) / sd);
    }
    let (mut pmf, mut cdf) = (log_first.exp(), 0.0);
    for n in 0..=k {
        cdf += pmf;
        pmf *= (n as f64 + shape) / (n as f64 + 1.0) * (1.0 - p);
    }
    cdf.min(1.0)
}

/// The standard normal distribution function (Zelen & Severo's 26.2.17,
/// error below 7.5e-8).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.231_641_9 * x.abs());
    let poly = t
        * (0.319_381_530
            + t * (-0.356_563_782
                + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    let tail = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() * poly;
    if x >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative
/// error below 1.2e-9): plenty for an estimate of time to a decision.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The binomial(m, p) probabilities that are at least `TINY`, as the first
/// count and the probabilities from there.
fn binomial_pmf(m: u64, p: f64) -> (u64, Vec<f64>) {
    let mode = (((m + 1) as f64 * p).floor() as u64).min(m);
    let (mf, q) = (m as f64, 1.0 - p);
    let ln_at_mode = ln_choose(m, mode) + mode as f64 * p.ln() + (mf - mode as f64) * q.ln();
    let at_mode = ln_at_mode.exp();
    let mut pmf = Vec::new();
    let mut x = at_mode;
    let mut k = mode;
    while k > 0 {
        // P(k−1) = P(k) · k / (m − k + 1) · q / p
        x *= k as f64 / (mf - k as f64 + 1.0) * q / p;
        if x < TINY {
            break;
        }
        pmf.push(x);
        k -= 1;
    }
    let lo = mode - pmf.len() as u64;
    pmf.reverse();
    pmf.push(at_mode);
    let mut x = at_mode;
    let mut k = mode;
    while k < m {
        // P(k+1) = P(k) · (m − k) / (k + 1) · p / q
        x *= (mf - k as f64) / (k as f64 + 1.0) * p / q;
        if x < TINY {
            break;
        }
        pmf.push(x);
        k += 1;
    }
    (lo, pmf)
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// ln Γ(x) for x ≥ 1 (Lanczos, g = 7, nine terms: about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const LOOK: Look = Look {
        alpha: 0.1,
        now: true,
    };

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut f = 1.0f64;
        for n in 1..30u32 {
            f *= n as f64;
            let got = ln_gamma(n as f64 + 1.0);
            assert!((got - f.ln()).abs() < 1e-9 * f.ln().max(1.0), "{n}: {got}");
        }
    }

    #[test]
    fn binomial_pmf_sums_to_one_and_has_the_right_mean() {
        for (m, p) in [(10, 0.3), (600, 0.02), (100_000, 0.015), (5, 0.999)] {
            let (lo, pmf) = binomial_pmf(m, p);
            let total: f64 = pmf.iter().sum();
            let mean: f64 = pmf
                .iter()
                .enumerate()
                .map(|(i, q)| (lo + i as u64) as f64 * q)
                .sum();
            assert!((total - 1.0).abs() < 1e-9, "{m} {p}: {total}");
            assert!(
                (mean - m as f64 * p).abs() < 1e-6 * m as f64,
                "{m} {p}: {mean}"
            );
        }
    }

    /// One simulated canary: `rate` requests a second at error probability
    /// `p`, tested against the bound `bound`, looking from second 30.
    fn seconds_to_pass(rng: &mut Rng, rate: f64, p: f64, bound: f64, secs: u64) -> Option<u64> {
        let mut t = PassTest::default();
        (1..=secs).find(|s| {
            let n = rng.poisson(rate);
            let k = rng.binomial(n, p);
            let look = Look {
                now: *s >= 30,
                ..LOOK
            };
            t.update(k, n, bound, look);
            t.passed()
        })
    }

    /// The share of `runs` canaries (seeds from `seed`) at 10 requests a
    /// second and error probability `p` shown within a 2% bound in `secs`.
    fn share_passing(seed: u64, runs: u64, p: f64, secs: u64) -> f64 {
        let passed = (seed..seed + runs)
            .filter(|s| seconds_to_pass(&mut Rng::new(*s), 10.0, p, 0.02, secs).is_some())
            .count();
        passed as f64 / runs as f64
    }

    /// The guarantee, checked by simulation with fixed seeds: a canary
    /// exactly at the bound passes in at most about α of runs, however long
    /// it is watched.
    #[test]
    fn at_the_bound_it_passes_at_most_alpha_of_the_time() {
        let share = share_passing(70_000, 3000, 0.02, 300);
        // α = 0.1; three standard errors of slack for the simulation
        assert!(share <= 0.1 + 0.017, "{share}");
    }

    #[test]
    fn a_canary_well_within_the_bound_passes_in_its_first_minute() {
        let share = share_passing(80_000, 400, 0.005, 60);
        assert!(share >= 0.9, "{share}");
    }

    #[test]
    fn beyond_the_bound_it_rarely_passes_and_gives_up_in_the_end() {
        let mut rng = Rng::new(4);
        let mut t = PassTest::default();
        for _ in 0..100_000 {
            let n = rng.poisson(50.0);
            t.update(rng.binomial(n, 0.03), n, 0.02, LOOK);
            if t.state() != State::Open {
                break;
            }
        }
        assert_eq!(t.state(), State::Exhausted);
        assert!(t.p_value() > 0.1, "{}", t.p_value());
    }

    #[test]
    fn no_look_no_pass_and_the_budget_waits() {
        let mut t = PassTest::default();
        let wait = Look { now: false, ..LOOK };
        for _ in 0..60 {
            t.update(0, 10, 0.02, wait);
        }
        assert_eq!(t.state(), State::Open);
        // the first look may spend what has accrued: 0 errors in 600 at a
        // 2% bound (12 expected) passes at once
        t.update(0, 10, 0.02, LOOK);
        assert!(t.passed(), "p = {}", t.p_value());
        assert!(t.p_value() < 1e-4, "{}", t.p_value());
    }
}

#[cfg(test)]
mod pass_chance_tests {
    use super::*;
    use crate::rng::Rng;

    const LOOK: Look = Look {
        alpha: 0.1,
        now: true,
    };

    /// 10 trials a step at 2% under the bound, events at `rho` of that.
    fn step(t: &mut PassTest, rng: &mut Rng, rho: f64) {
        t.update(rng.binomial(10, 0.02 * rho), 10, 0.02, LOOK);
    }

    #[test]
    fn the_chance_of_passing_is_what_happens() {
        // Over many canaries at 40% of the bound: the chance predicted after
        // 25 steps (5 events expected at the bound) of having passed 50
        // steps later, against how many did.
        let (mut predicted, mut passed) = (0.0, 0usize);
        let runs = 600;
        for seed in 0..runs {
            let mut rng = Rng::new(seed);
            let mut t = PassTest::default();
            for _ in 0..25 {
                step(&mut t, &mut rng, 0.4);
            }
            predicted += t.pass_chance(0.1, 0.4, 10.0, 50.0 * 10.0 * 0.02);
            for _ in 0..50 {
                step(&mut t, &mut rng, 0.4);
            }
            passed += usize::from(t.passed());
        }
        let (predicted, passed) = (predicted / runs as f64, passed as f64 / runs as f64);
        assert!(
            (predicted - passed).abs() <= 0.1,
            "predicted {predicted:.3}, passed {passed:.3}"
        );
        assert!(passed > 0.2 && passed < 0.95, "a test that tells: {passed}");
    }

    #[test]
    fn the_chance_grows_with_time_and_is_certain_once_decided() {
        let mut rng = Rng::new(7);
        let mut t = PassTest::default();
        for _ in 0..25 {
            step(&mut t, &mut rng, 0.4);
        }
        let chances: Vec<f64> = [1.0, 5.0, 20.0, 80.0]
            .iter()
            .map(|&more| t.pass_chance(0.1, 0.4, 10.0, more))
            .collect();
        assert!(chances.windows(2).all(|w| w[0] <= w[1]), "{chances:?}");
        // a canary at twice the bound: little chance ever
        let mut bad = PassTest::default();
        for _ in 0..25 {
            step(&mut bad, &mut rng, 2.0);
        }
        assert!(bad.pass_chance(0.1, 2.0, 10.0, 80.0) < 0.05);
        let mut done = PassTest::default();
        while done.state() == State::Open {
            done.update(0, 100, 0.02, LOOK);
        }
        assert_eq!(done.pass_chance(0.1, 0.4, 10.0, 0.0), 1.0);
    }

    #[test]
    fn negative_binomial_sums_to_one_and_has_its_mean() {
        let (shape, p): (f64, f64) = (3.5, 0.4);
        let mean = shape * (1.0 - p) / p;
        assert!((negative_binomial_cdf(400, shape, p) - 1.0).abs() < 1e-9);
        // median near the mean, a little below (right-skewed)
        let median = (0..)
            .find(|&k| negative_binomial_cdf(k, shape, p) >= 0.5)
            .unwrap();
        assert!(
            (median as f64) <= mean && (median as f64) >= mean - 2.0,
            "{median} {mean}"
        );
        // the normal branch agrees with the sum where both apply
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
    }
}
