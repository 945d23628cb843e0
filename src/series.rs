//! Each release's recent history for the Release Health page's charts:
//! canary and baseline error ratio and p50/p95/p99 latency, one point per
//! step, read off the checks the judge already reported (no window is read
//! again). Bounded: a ring of at most `capacity` points per release, and a
//! release's series is dropped with the release. Pure: the time is handed in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::judge::checks::{CheckReport, CohortStats};
use crate::model::UnixNanos;

/// One release's numbers at one moment, as served. `f32` is precise
/// enough for a chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Unix milliseconds (what JavaScript's `Date` takes).
    pub t: u64,
    pub canary: Cohort,
    pub baseline: Cohort,
}

/// A cohort's numbers in a point; absent when the check had none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cohort {
    pub error_ratio: Option<f32>,
    pub p50_ms: Option<f32>,
    pub p95_ms: Option<f32>,
    pub p99_ms: Option<f32>,
}

impl Cohort {
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
            canary: Cohort::merge(errors.map(|c| &c.canary), latency.map(|c| &c.canary)),
            baseline: Cohort::merge(
                errors.and_then(|c| c.baseline.as_ref()),
                latency.and_then(|c| c.baseline.as_ref()),
            ),
        }
    }
}

/// A point as kept: the time and eight numbers, NaN for absent (40 bytes,
/// where `Point` with its `Option`s takes 72).
#[derive(Debug, Clone, Copy)]
struct Packed {
    t: u64,
    v: [f32; 8],
}

impl Packed {
    fn pack(p: &Point) -> Self {
        let n = |x: Option<f32>| x.unwrap_or(f32::NAN);
        let (c, b) = (&p.canary, &p.baseline);
        Self {
            t: p.t,
            v: [
                n(c.error_ratio),
                n(c.p50_ms),
                n(c.p95_ms),
                n(c.p99_ms),
                n(b.error_ratio),
                n(b.p50_ms),
                n(b.p95_ms),
                n(b.p99_ms),
            ],
        }
    }

    fn unpack(&self) -> Point {
        let o = |i: usize| Some(self.v[i]).filter(|x| !x.is_nan());
        let cohort = |at: usize| Cohort {
            error_ratio: o(at),
            p50_ms: o(at + 1),
            p95_ms: o(at + 2),
            p99_ms: o(at + 3),
        };
        Point {
            t: self.t,
            canary: cohort(0),
            baseline: cohort(4),
        }
    }
}

/// A ring of the newest points, oldest first.
#[derive(Debug, Clone)]
pub struct Series {
    points: VecDeque<Packed>,
    capacity: usize,
}

impl Series {
    pub fn new(capacity: usize) -> Self {
        Self {
            points: VecDeque::with_capacity(capacity.min(16)),
            capacity: capacity.max(1),
        }
    }

    /// Adds the newest point, dropping the oldest when full.
    pub fn push(&mut self, p: Point) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(Packed::pack(&p));
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl ExactSizeIterator<Item = Point> + '_ {
        self.points.iter().map(Packed::unpack)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.points.len()
    }
}

/// A release: (service, environment, deployment id).
pub type Key = (Arc<str>, Arc<str>, Arc<str>);

/// Every tracked release's series, one point per `step`.
#[derive(Debug)]
pub struct SeriesBook {
    step: UnixNanos,
    capacity: usize,
    last: Option<UnixNanos>,
    series: HashMap<Key, Series>,
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

    /// Whether a point is due at `now` (a step since the last one).
    pub fn due(&self, now: UnixNanos) -> bool {
        self.last
            .is_none_or(|last| now >= last.saturating_add(self.step))
    }

    /// Records one point for each release tracked now; the series of
    /// releases no longer among them (expired, forgotten) are dropped.
    pub fn record(&mut self, now: UnixNanos, points: impl IntoIterator<Item = (Key, Point)>) {
        self.last = Some(now);
        let mut kept = HashMap::with_capacity(self.series.len());
        for (key, p) in points {
            let mut s = self
                .series
                .remove(&key)
                .unwrap_or_else(|| Series::new(self.capacity));
            s.push(p);
            kept.insert(key, s);
        }
        self.series = kept;
    }

    /// One release's points, oldest first.
    pub fn get(&self, service: &str, environment: &str, deployment_id: &str) -> Option<Vec<Point>> {
        let key: Key = (service.into(), environment.into(), deployment_id.into());
        self.series.get(&key).map(|s| s.points().collect())
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

    fn key(id: &str) -> Key {
        ("checkout".into(), "prod".into(), id.into())
    }

    fn point(t: u64) -> Point {
        Point {
            t,
            canary: Cohort::default(),
            baseline: Cohort::default(),
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
            detail: String::new(),
            exemplars: Vec::new(),
        }
    }

    #[test]
    fn a_kept_point_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Packed>(), 40);
    }

    #[test]
    fn a_series_is_bounded_and_drops_its_oldest_points() {
        let mut s = Series::new(3);
        for t in 0..10 {
            s.push(point(t));
        }
        assert_eq!(s.len(), 3);
        let ts: Vec<u64> = s.points().map(|p| p.t).collect();
        assert_eq!(ts, [7, 8, 9]);
    }

    #[test]
    fn points_are_taken_once_a_step() {
        let mut book = SeriesBook::new(5 * S, 10);
        assert!(book.due(0));
        book.record(100 * S, [(key("a"), point(0))]);
        assert!(!book.due(104 * S));
        assert!(book.due(105 * S));
    }

    #[test]
    fn a_release_no_longer_tracked_loses_its_series() {
        let mut book = SeriesBook::new(S, 10);
        book.record(S, [(key("a"), point(1)), (key("b"), point(1))]);
        book.record(2 * S, [(key("a"), point(2))]);
        assert_eq!(book.len(), 1);
        assert_eq!(book.get("checkout", "prod", "a").unwrap().len(), 2);
        assert!(book.get("checkout", "prod", "b").is_none());
        // Back again: a new series, not the old one.
        book.record(3 * S, [(key("a"), point(3)), (key("b"), point(3))]);
        assert_eq!(book.get("checkout", "prod", "b").unwrap().len(), 1);
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
        // Kept packed, read back the same.
        let mut s = Series::new(1);
        s.push(p);
        assert_eq!(s.points().next(), Some(p));
        // No checks (not judged yet): an empty point, not a made-up zero.
        let none = Point::of(0, &[]);
        assert_eq!(none.canary, Cohort::default());
        s.push(none);
        assert_eq!(s.points().next(), Some(none));
    }
}
