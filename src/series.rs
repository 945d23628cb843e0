//! Each release's recent history for the Release Health page's charts:
//! canary and baseline error ratio and p50/p95/p99 latency, one point per
//! step, read off the checks the judge already reported (no window is read
//! again). Bounded and compact: runs of equal points in bfloat16, in a ring
//! grown as points come up to `capacity` points per release, so an idle
//! release's half hour is a run of 20 bytes and a busy one's 7 KiB; a
//! release's series is dropped with the release. Pure: the time is handed in.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::judge::checks::{CheckReport, CohortStats};
use crate::model::{ReleaseKey, UnixNanos};

/// One release's numbers at one moment, as served. `f32` is precise
/// enough for a chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Unix milliseconds (what JavaScript's `Date` takes).
    pub t: u64,
    pub canary: CohortPoint,
    pub baseline: CohortPoint,
}

/// A cohort's numbers in a point; absent when the check had none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CohortPoint {
    pub error_ratio: Option<f32>,
    pub p50_ms: Option<f32>,
    pub p95_ms: Option<f32>,
    pub p99_ms: Option<f32>,
}

impl CohortPoint {
    fn merge(errors: Option<&CohortStats>, latency: Option<&CohortStats>) -> Self {
        let f = |x: Option<f64>| x.map(|x| x as f32);
        Self {
            error_ratio: f(errors.and_then(|s| s.error_ratio)),
            p50_ms: f(latency.and_then(|s| s.p50_ms)),
            p95_ms: f(latency.and_then(|s| s.p95_ms)),
            p99_ms: f(latency.and_then(|s| s.p99_ms)),
        }
    }
}

impl Point {
    /// The point of a release judged with `checks` at `now`: the error
    /// ratio check's two cohorts and the latency check's quantiles.
    pub fn of(now: UnixNanos, checks: &[CheckReport]) -> Self {
        let named = |name: &str| checks.iter().find(|c| c.name == name);
        let (errors, latency) = (named("error_ratio"), named("latency"));
        Self {
            t: now / 1_000_000,
            canary: CohortPoint::merge(errors.map(|c| &c.canary), latency.map(|c| &c.canary)),
            baseline: CohortPoint::merge(
                errors.and_then(|c| c.baseline.as_ref()),
                latency.and_then(|c| c.baseline.as_ref()),
            ),
        }
    }
}

/// A number as kept: bfloat16, the upper half of its `f32` rounded to
/// nearest (8 significant bits, within 0.4%, over the whole `f32` range),
/// NaN for absent. Half of an `f32`, and plenty for a chart.
fn squeeze(x: Option<f32>) -> u16 {
    match x {
        Some(x) if !x.is_nan() => {
            let bits = x.to_bits();
            // Round to nearest, ties to even, on the 16 bits dropped.
            let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
            (rounded >> 16) as u16
        }
        _ => ABSENT,
    }
}

/// The canonical NaN of `squeeze`: the number was absent.
const ABSENT: u16 = 0x7fc0;

/// A kept number as served: at most 3 significant digits (bfloat16 holds
/// fewer), so `0.05` reads back as `0.05`, not `0.050048828`.
fn widen(b: u16) -> Option<f32> {
    let x = f32::from_bits(u32::from(b) << 16);
    if x.is_nan() {
        return None;
    }
    if x == 0.0 || !x.is_finite() {
        return Some(x);
    }
    let x = f64::from(x);
    let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
    Some(((x * scale).round() / scale) as f32)
}

/// Points in a row with equal numbers, each `gap` steps after the one
/// before it: an idle release's half hour is one run. 20 bytes, where a
/// `Point` with its `Option`s takes 72.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// Steps from the point before (for the oldest point kept: unused).
    gap: u16,
    /// Points in the run.
    count: u16,
    /// Canary error ratio, p50, p95, p99, then the baseline's.
    v: [u16; 8],
}

impl Run {
    fn values(p: &Point) -> [u16; 8] {
        let (c, b) = (&p.canary, &p.baseline);
        [
            squeeze(c.error_ratio),
            squeeze(c.p50_ms),
            squeeze(c.p95_ms),
            squeeze(c.p99_ms),
            squeeze(b.error_ratio),
            squeeze(b.p50_ms),
            squeeze(b.p95_ms),
            squeeze(b.p99_ms),
        ]
    }

    fn point(&self, t: u64) -> Point {
        let cohort = |at: usize| CohortPoint {
            error_ratio: widen(self.v[at]),
            p50_ms: widen(self.v[at + 1]),
            p95_ms: widen(self.v[at + 2]),
            p99_ms: widen(self.v[at + 3]),
        };
        Point {
            t,
            canary: cohort(0),
            baseline: cohort(4),
        }
    }
}

/// The newest points of one release, oldest first, one per step at most:
/// runs of equal points in a ring that grows as points come, up to
/// `capacity` points. Times are kept as step numbers (`t / step`), so a
/// point is shown at the start of its step.
#[derive(Debug, Clone)]
pub struct Series {
    runs: VecDeque<Run>,
    /// Points held (the runs' counts summed), at most `capacity`.
    len: usize,
    capacity: usize,
    /// The step of the newest point.
    last: u64,
    /// A step in milliseconds.
    step_ms: u64,
}

impl Series {
    /// At most `capacity` points, a step being `step_ms` milliseconds.
    /// Allocates nothing until the first point.
    pub fn new(capacity: usize, step_ms: u64) -> Self {
        Self {
            runs: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
            last: 0,
            step_ms: step_ms.max(1),
        }
    }

    /// Adds the newest point, dropping the oldest when full. A point in
    /// the step of the newest (or earlier: the clock went back) replaces it.
    pub fn push(&mut self, p: Point) {
        let mut at = p.t / self.step_ms;
        if self.len > 0 && at <= self.last {
            at = self.last;
            self.pop_back();
        }
        let gap = if self.len == 0 {
            1
        } else {
            u16::try_from(at - self.last).unwrap_or(u16::MAX)
        };
        self.last = at;
        if self.len == self.capacity {
            self.pop_front();
        }
        self.len += 1;
        let v = Run::values(&p);
        if let Some(back) = self.runs.back_mut() {
            if back.v == v && back.gap == gap && back.count < u16::MAX {
                back.count += 1;
                return;
            }
        }
        if self.runs.len() == self.runs.capacity() {
            // Grow as points come, never past one run per point.
            let want = (self.runs.len() * 2).max(4).min(self.capacity);
            self.runs.reserve_exact(want - self.runs.len());
        }
        self.runs.push_back(Run { gap, count: 1, v });
    }

    fn pop_front(&mut self) {
        if let Some(front) = self.runs.front_mut() {
            self.len -= 1;
            if front.count > 1 {
                front.count -= 1;
            } else {
                self.runs.pop_front();
            }
        }
    }

    fn pop_back(&mut self) {
        if let Some(back) = self.runs.back_mut() {
            self.len -= 1;
            self.last = self.last.saturating_sub(u64::from(back.gap));
            if back.count > 1 {
                back.count -= 1;
            } else {
                self.runs.pop_back();
            }
        }
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        // The oldest point's step: back from the newest by every gap but
        // the oldest point's own.
        let spanned: u64 = self
            .runs
            .iter()
            .map(|r| u64::from(r.gap) * u64::from(r.count))
            .sum::<u64>()
            - self.runs.front().map_or(0, |r| u64::from(r.gap));
        let mut at = self.last.saturating_sub(spanned);
        let mut out = Vec::with_capacity(self.len);
        for r in &self.runs {
            for _ in 0..r.count {
                if !out.is_empty() {
                    at += u64::from(r.gap);
                }
                out.push(r.point(at * self.step_ms));
            }
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held (the ring's allocation).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
    }
}

/// Every tracked release's series, one point per `step`.
#[derive(Debug)]
pub struct SeriesBook {
    step: UnixNanos,
    capacity: usize,
    last: Option<UnixNanos>,
    series: HashMap<ReleaseKey, Series>,
}

impl SeriesBook {
    /// A point every `step`, at most `capacity` of them per release.
    pub fn new(step: UnixNanos, capacity: usize) -> Self {
        Self {
            step: step.max(1),
            capacity,
            last: None,
            series: HashMap::new(),
        }
    }

    /// Whether a point is due at `now`: the first in its step. (Steps are
    /// fixed slices of time, so a tick's jitter never makes one 6 s long.)
    pub fn due(&self, now: UnixNanos) -> bool {
        self.last
            .is_none_or(|last| now / self.step > last / self.step)
    }

    /// Records one point for each release tracked now; the series of
    /// releases no longer among them (expired, forgotten) are dropped.
    pub fn add(&mut self, now: UnixNanos, points: impl IntoIterator<Item = (ReleaseKey, Point)>) {
        self.last = Some(now);
        let mut kept = HashMap::with_capacity(self.series.len());
        for (key, p) in points {
            let mut s = self
                .series
                .remove(&key)
                .unwrap_or_else(|| Series::new(self.capacity, self.step / 1_000_000));
            s.push(p);
            kept.insert(key, s);
        }
        self.series = kept;
    }

    /// One release's points, oldest first.
    pub fn get(&self, service: &str, environment: &str, deployment_id: &str) -> Option<Vec<Point>> {
        let key = ReleaseKey::new(service, environment, deployment_id);
        self.series.get(&key).map(Series::points)
    }

    /// Heap bytes the series hold, their table's entries included.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(ReleaseKey, Series)>() + 1;
        self.series.capacity() * entry + self.series.values().map(Series::heap_bytes).sum::<usize>()
    }

    /// Releases with a series.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::checks::{CheckResult, Statistic};

    const S: UnixNanos = 1_000_000_000;

    fn key(id: &str) -> ReleaseKey {
        ReleaseKey::new("checkout", "prod", id)
    }

    fn point(t: u64) -> Point {
        Point {
            t,
            canary: CohortPoint::default(),
            baseline: CohortPoint::default(),
        }
    }

    fn report(name: &str, canary: CohortStats, baseline: Option<CohortStats>) -> CheckReport {
        CheckReport {
            name: name.into(),
            result: CheckResult::Pass,
            critical: true,
            weight: 1.0,
            canary,
            baseline,
            statistic: Statistic {
                e_value: 1.0,
                p_value: 1.0,
                pass_p_value: 1.0,
            },
            evidence: String::new(),
            detail: String::new(),
            exemplars: Vec::new(),
        }
    }

    /// A point at `t` ms whose canary error ratio is `ratio`.
    fn valued(t: u64, ratio: f32) -> Point {
        let mut p = point(t);
        p.canary.error_ratio = Some(ratio);
        p
    }

    fn times(s: &Series) -> Vec<u64> {
        s.points().iter().map(|p| p.t).collect()
    }

    #[test]
    fn a_kept_run_is_20_bytes() {
        assert_eq!(std::mem::size_of::<Run>(), 20);
    }

    #[test]
    fn a_series_is_bounded_and_drops_its_oldest_points() {
        let mut s = Series::new(3, 1);
        for t in 0..10 {
            s.push(valued(t, t as f32));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(times(&s), [7, 8, 9]);
        let ratios: Vec<_> = s.points().iter().map(|p| p.canary.error_ratio).collect();
        assert_eq!(ratios, [Some(7.0), Some(8.0), Some(9.0)]);
    }

    #[test]
    fn equal_points_are_one_run_and_still_read_one_by_one() {
        let mut s = Series::new(360, 5_000);
        assert_eq!(s.heap_bytes(), 0, "nothing before the first point");
        for i in 0..1_000u64 {
            s.push(point(i * 5_000 + 3));
        }
        assert_eq!(s.len(), 360);
        assert_eq!(s.runs.len(), 1);
        assert!(s.heap_bytes() <= 4 * 20);
        let ts = times(&s);
        assert_eq!(ts.len(), 360);
        assert_eq!(ts[0], 640 * 5_000, "shown at the start of its step");
        assert_eq!(ts[359], 999 * 5_000);
        assert!(ts.windows(2).all(|w| w[1] - w[0] == 5_000));
    }

    #[test]
    fn gaps_changes_and_the_ring_agree_with_a_plain_list() {
        // Against the obvious model: a list of (step, value) trimmed to the
        // capacity, over gaps, repeats and changes.
        let mut rng = crate::rng::Rng::new(7);
        let mut s = Series::new(50, 10);
        let mut model: std::collections::VecDeque<(u64, Option<f32>)> = Default::default();
        let mut step = 0u64;
        for _ in 0..2_000 {
            step += 1 + rng.next_u64().is_multiple_of(3) as u64 * (rng.next_u64() % 4);
            let value = match rng.next_u64() % 4 {
                0 => None,
                1 => Some((rng.next_u64() % 5) as f32),
                _ => model.back().and_then(|&(_, v)| v),
            };
            let mut p = point(step * 10 + 9);
            p.canary.error_ratio = value;
            s.push(p);
            model.push_back((step * 10, value));
            if model.len() > 50 {
                model.pop_front();
            }
            let got: Vec<_> = s
                .points()
                .iter()
                .map(|p| (p.t, p.canary.error_ratio))
                .collect();
            assert_eq!(got, Vec::from(model.clone()));
        }
        assert!(s.heap_bytes() <= 50 * 20);
    }

    #[test]
    fn a_point_in_the_same_step_replaces_the_newest() {
        let mut s = Series::new(10, 1_000);
        s.push(valued(1_000, 1.0));
        s.push(valued(2_000, 2.0));
        s.push(valued(2_500, 3.0));
        // The clock went back: still in order, replacing the newest.
        s.push(valued(1_500, 4.0));
        let got: Vec<_> = s
            .points()
            .iter()
            .map(|p| (p.t, p.canary.error_ratio))
            .collect();
        assert_eq!(got, [(1_000, Some(1.0)), (2_000, Some(4.0))]);
    }

    #[test]
    fn numbers_are_kept_to_within_half_a_percent_and_shown_short() {
        for x in [
            0.05f32, 0.01, 0.0012, 0.5, 1.0, 12.5, 99.9, 123.4, 2_500.0, 3.6e6,
        ] {
            let back = widen(squeeze(Some(x))).unwrap();
            assert!(((back - x) / x).abs() < 0.005, "{x} -> {back}");
        }
        assert_eq!(widen(squeeze(Some(0.05))), Some(0.05));
        assert_eq!(widen(squeeze(Some(0.0))), Some(0.0));
        assert_eq!(widen(squeeze(None)), None);
        assert_eq!(widen(squeeze(Some(f32::NAN))), None);
        assert_eq!(
            serde_json::to_string(&widen(squeeze(Some(0.012)))).unwrap(),
            "0.012"
        );
    }

    #[test]
    fn points_are_taken_once_a_step() {
        let mut book = SeriesBook::new(5 * S, 10);
        assert!(book.due(0));
        book.add(100 * S, [(key("a"), point(0))]);
        assert!(!book.due(104 * S));
        assert!(book.due(105 * S));
    }

    #[test]
    fn a_release_no_longer_tracked_loses_its_series() {
        let mut book = SeriesBook::new(S, 10);
        book.add(S, [(key("a"), point(1_000)), (key("b"), point(1_000))]);
        book.add(2 * S, [(key("a"), point(2_000))]);
        assert_eq!(book.len(), 1);
        assert_eq!(book.get("checkout", "prod", "a").unwrap().len(), 2);
        assert!(book.get("checkout", "prod", "b").is_none());
        // Back again: a new series, not the old one.
        book.add(3 * S, [(key("a"), point(3_000)), (key("b"), point(3_000))]);
        assert_eq!(book.get("checkout", "prod", "b").unwrap().len(), 1);
        assert!(book.heap_bytes() > 0);
    }

    #[test]
    fn a_point_reads_both_cohorts_off_the_checks() {
        let errors = |r: f64| CohortStats {
            requests: 100,
            errors: Some((r * 100.0) as u64),
            error_ratio: Some(r),
            ..CohortStats::default()
        };
        let latency = |p50: f64| CohortStats {
            requests: 100,
            p50_ms: Some(p50),
            p95_ms: Some(p50 * 2.0),
            p99_ms: Some(p50 * 3.0),
            ..CohortStats::default()
        };
        let checks = [
            report("error_ratio", errors(0.05), Some(errors(0.01))),
            report("latency", latency(50.0), Some(latency(40.0))),
            report("guardrail_p95", latency(999.0), None),
        ];
        let p = Point::of(7 * S + 5_000_000, &checks);
        assert_eq!(p.t, 7005);
        assert_eq!(p.canary.error_ratio, Some(0.05));
        assert_eq!(p.baseline.error_ratio, Some(0.01));
        assert_eq!(p.canary.p95_ms, Some(100.0));
        assert_eq!(p.baseline.p99_ms, Some(120.0));
        // Kept compact, read back the same (at the start of its step).
        let mut s = Series::new(1, 1_000);
        s.push(p);
        assert_eq!(s.points(), [Point { t: 7000, ..p }]);
        // No checks (not judged yet): an empty point, not a made-up zero.
        let none = Point::of(8 * S, &[]);
        assert_eq!(none.canary, CohortPoint::default());
        s.push(none);
        assert_eq!(s.points(), [none]);
    }
}
