//! Histogram buckets as observations: a bucket's count spread over the
//! bucket, so quantiles and exceedances read from them are interpolated
//! within a bucket rather than pinned to one point of it.
//!
//! Pinning a bucket's count to its midpoint makes every threshold inside a
//! bucket all or nothing: with the SDKs' default bounds (…, 50, 75, 100,
//! 250 ms) a baseline p50 that happens to sit in (50, 75] hides a ×1.5
//! slowdown entirely, and one in (25, 50] shows it, so a metrics-only
//! regression was red or not by a coin toss. Spread evenly (geometrically
//! where the bucket starts above zero, as latencies are closer to
//! log-normal than to uniform), the share beyond a threshold moves
//! smoothly with it, and both cohorts are read the same way, so a canary
//! with the baseline's buckets has the baseline's shares at every
//! threshold.

/// Most points one bucket's count is spread over.
pub const SPREAD: u64 = 8;

/// A bucket narrower than this ratio of its bounds is one point: the
/// judge's histograms resolve 1% anyway.
const NARROW: f64 = 1.02;

/// Appends `(value, count)` points standing for `count` observations in
/// the bucket `(lower, upper]` (values ≥ 0, in the unit of the output;
/// `upper` None for an overflow bucket, whose observations are put at its
/// lower bound: the data holds no more).
pub fn spread_bucket(lower: f64, upper: Option<f64>, count: u64, out: &mut Vec<(u64, u64)>) {
    if count == 0 {
        return;
    }
    let lower = lower.max(0.0);
    let Some(upper) = upper.filter(|&u| u > lower) else {
        out.push((lower.round() as u64, count));
        return;
    };
    let geometric = lower > 0.0;
    if geometric && upper / lower < NARROW {
        out.push(((lower * upper).sqrt().round() as u64, count));
        return;
    }
    let k = count.min(SPREAD);
    let (each, extra) = (count / k, count % k);
    for i in 0..k {
        let f = (i as f64 + 0.5) / k as f64;
        let value = if geometric {
            lower * (upper / lower).powf(f)
        } else {
            lower + f * (upper - lower)
        };
        out.push((value.round() as u64, each + u64::from(i < extra)));
    }
}

/// Appends the points of explicit-bound buckets: `counts[i]` observations
/// in `(bounds[i-1], bounds[i]]`, the first from zero (durations are not
/// negative), the last the overflow; each bound multiplied by `factor`.
pub fn explicit_buckets(bounds: &[f64], counts: &[u64], factor: f64, out: &mut Vec<(u64, u64)>) {
    for (i, &c) in counts.iter().enumerate() {
        let lower = i.checked_sub(1).map_or(0.0, |j| bounds[j] * factor);
        let upper = bounds.get(i).map(|b| (b * factor).max(0.0));
        spread_bucket(lower, upper, c, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(points: &[(u64, u64)]) -> u64 {
        points.iter().map(|p| p.1).sum()
    }

    #[test]
    fn a_wide_bucket_is_spread_geometrically_and_keeps_its_count() {
        let mut out = Vec::new();
        spread_bucket(50.0, Some(75.0), 19, &mut out);
        assert_eq!(out.len(), SPREAD as usize);
        assert_eq!(total(&out), 19);
        assert!(out.iter().all(|&(v, _)| (50..=75).contains(&v)));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        // Geometric: half the points lie below sqrt(50 × 75) ≈ 61.2 (the
        // arithmetic middle, 62.5, has five below it).
        assert_eq!(out.iter().filter(|p| p.0 < 61).count(), 4, "{out:?}");
        assert_eq!(out[4].0, 63, "{out:?}");
    }

    #[test]
    fn few_observations_get_a_point_each() {
        let mut out = Vec::new();
        spread_bucket(0.0, Some(5.0), 2, &mut out);
        // Linear from zero: at a quarter and three quarters.
        assert_eq!(out, vec![(1, 1), (4, 1)]);
    }

    #[test]
    fn zero_overflow_and_narrow_buckets_are_one_point() {
        let mut out = Vec::new();
        spread_bucket(0.0, Some(0.0), 4, &mut out);
        spread_bucket(1000.0, None, 3, &mut out);
        spread_bucket(1000.0, Some(1010.0), 5, &mut out);
        spread_bucket(7.0, Some(9.0), 0, &mut out);
        assert_eq!(out, vec![(0, 4), (1000, 3), (1005, 5)]);
    }

    #[test]
    fn explicit_buckets_start_at_zero_and_end_in_overflow() {
        let mut out = Vec::new();
        explicit_buckets(&[0.0, 0.005], &[3, 1, 2], 1e6, &mut out);
        // (-inf, 0] at 0; (0, 5 ms] one point in its middle; overflow at 5 ms.
        assert_eq!(out, vec![(0, 3), (2500, 1), (5000, 2)]);
    }
}
