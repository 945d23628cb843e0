//! The time to a decision a verdict shows: the sooner of the time to red
//! (evidence of a regression half-way there, extrapolated at its pace) and
//! the time to green (the chance every open pass test has passed by a
//! time, from `PassTest::pass_chance`), on a grid of times each within 2x
//! of the next.

use super::{eprocess, Comparison, Judge, View};
use crate::model::{UnixNanos, NANOS_PER_SEC};

impl Judge {
    /// Seconds to a decision at the current traffic, once there is enough
    /// to estimate it: the sooner of the time to red, when the evidence of
    /// a regression is already half-way there, and the time to green (see
    /// `green_eta`). None when neither can be told yet.
    pub(super) fn eta(
        &self,
        c: &Comparison,
        canary: &View<'_>,
        baseline: &View<'_>,
        now: UnixNanos,
        held: bool,
    ) -> Option<u64> {
        let elapsed = (now.saturating_sub(c.started) as f64 / NANOS_PER_SEC as f64).max(1.0);
        let mut red: Option<f64> = None;
        let mut to_red = |log_e: f64, prior_cost: f64| {
            if let Some(s) = seconds_to_level(log_e, self.levels.fail, prior_cost, elapsed) {
                red = Some(red.map_or(s, |r| r.min(s)));
            }
        };
        if self.checks.error_ratio.enabled {
            to_red(c.errors.log_e(), eprocess::PRIOR_COST);
        }
        if self.checks.latency.enabled {
            let quantiles = self.checks.latency.quantiles.len().max(1) as f64;
            to_red(c.latency.log_e(), eprocess::PRIOR_COST + quantiles.ln());
        }
        let green = if held {
            None
        } else {
            self.green_eta(c, canary, baseline, now, elapsed)
        };
        let eta = match (red, green) {
            (Some(r), Some(g)) => r.min(g),
            (r, g) => r.or(g)?,
        };
        Some(eta.ceil() as u64)
    }

    /// Seconds until every check could pass at the current traffic, when
    /// the data can tell it to within 2× with `ETA_CONFIDENCE`: of times
    /// t on a grid, the one whose span [t/2, 2t] is most likely to hold the
    /// decision, by the chance that everything has passed by a given time
    /// (zero before `min_duration` and `min_requests` are reached, then the
    /// product of each open pass test's `pass_chance`). None when no span
    /// is likely enough, or before the error check's pass test has
    /// `ETA_MIN_INFO` errors' worth of evidence to go by.
    fn green_eta(
        &self,
        c: &Comparison,
        canary: &View<'_>,
        baseline: &View<'_>,
        now: UnixNanos,
        elapsed: f64,
    ) -> Option<f64> {
        let secs = |n: UnixNanos| n as f64 / NANOS_PER_SEC as f64;
        let age = secs(now.saturating_sub(canary.first_seen));
        let mut wait = (secs(self.config.min_duration.as_nanos() as u64) - age).max(0.0);
        let window = secs(self.config.window.as_nanos() as u64).min(age.max(1.0));
        let min = self.config.min_requests as f64;
        for w in [canary.window, baseline.window] {
            let rate = w.requests as f64 / window;
            if (w.requests as f64) < min {
                if rate <= 0.0 {
                    return None;
                }
                wait = wait.max((min - w.requests as f64) / rate);
            }
        }
        let alpha = 1.0 - self.config.green_confidence;
        if self.checks.error_ratio.enabled {
            let [nc, ..] = c.errors.totals();
            if nc == 0 || c.errors.pass_info() < ETA_MIN_INFO {
                return None;
            }
        }
        // A quantile tested later holds green back from then on, with
        // nothing yet to go by: only decisions before it are counted.
        let cap = self
            .checks
            .latency
            .enabled
            .then(|| c.latency.untested_for(elapsed))
            .flatten()
            .unwrap_or(f64::INFINITY);
        let passed_by = |t: f64| {
            let t = t.min(cap);
            if t < wait {
                return 0.0;
            }
            let mut p = 1.0;
            if self.checks.error_ratio.enabled {
                p *= c
                    .errors
                    .pass_chance(alpha, &self.checks.error_ratio, t, elapsed);
            }
            if self.checks.latency.enabled {
                p *= c.latency.pass_chance(alpha, t, elapsed, ETA_MIN_INFO);
            }
            p
        };
        // t = 2^(k/2) s: t/2 and 2t are grid points too.
        let grid: Vec<(f64, f64)> = (-2..=ETA_GRID + 2)
            .map(|k| {
                let t = 2f64.powf(k as f64 / 2.0);
                (t, passed_by(t))
            })
            .collect();
        let (t, chance) = grid
            .windows(5)
            .map(|w| (w[2].0, w[4].1 - w[0].1))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        (chance >= ETA_CONFIDENCE).then_some(t.max(wait))
    }
}

/// Errors expected at the pass bound before a time to green is estimated.
const ETA_MIN_INFO: f64 = 3.0;

/// How likely the span [t/2, 2t] must be to hold the decision for `t` to
/// be shown as the time to green...
const ETA_CONFIDENCE: f64 = 0.8;
/// ...of times up to 2^(ETA_GRID/2) seconds (about an hour).
const ETA_GRID: i32 = 24;

/// Seconds until evidence `log_e` reaches `level` if it keeps growing as it
/// has over `elapsed` seconds (it started at −`prior_cost`); None unless it
/// is already half-way, where the growth seen so far says something.
pub(super) fn seconds_to_level(
    log_e: f64,
    level: f64,
    prior_cost: f64,
    elapsed: f64,
) -> Option<f64> {
    if log_e < level / 2.0 {
        return None;
    }
    let rate = (log_e + prior_cost) / elapsed;
    Some(((level - log_e) / rate).max(0.0))
}
