//! Histogram buckets as latency samples: units, bucket shapes, and the value
//! points that stand for each bucket.

use crate::model::{explicit_buckets, spread_bucket, SPREAD};

/// Histogram counts of one data point (or of the delta between two), in the
/// metric's own unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Buckets {
    /// `counts[i]` falls in `(bounds[i-1], bounds[i]]`; the last is the overflow.
    Explicit { bounds: Vec<f64>, counts: Vec<u64> },
    /// Base-2 exponential: `counts[k]` falls in `(b^(offset+k), b^(offset+k+1)]`
    /// with `b = 2^(2^-scale)`; `zero` counts values at zero.
    Exponential {
        scale: i32,
        zero: u64,
        offset: i32,
        counts: Vec<u64>,
    },
}

/// Why a histogram point cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    #[error("unit {0:?} is not a duration unit (expected s, ms, us or ns)")]
    Unit(String),
    #[error(
        "explicit histogram has {counts} bucket counts for {bounds} bounds (expected bounds + 1)"
    )]
    Shape { counts: usize, bounds: usize },
    #[error("explicit bounds must be finite and strictly increasing")]
    Bounds,
    #[error("exponential histogram scale {0} is outside -10..=20")]
    Scale(i32),
    #[error("{field} has {len} entries; at most {MAX_BUCKETS} are accepted")]
    TooMany { field: &'static str, len: usize },
    #[error("exponential buckets {offset}..{offset}+{len} at scale {scale} stand for values beyond 2^±64 of the unit")]
    Offset { offset: i32, len: usize, scale: i32 },
    #[error("count {count} is not the sum of the bucket counts ({sum})")]
    Count { count: u64, sum: String },
}

/// Most buckets (or explicit bounds) one histogram point may carry (the
/// SDKs default to 160 exponential buckets); beyond it a point is refused
/// rather than remembered.
pub const MAX_BUCKETS: usize = 4096;

/// Factor from a duration unit (UCUM, as the semantic conventions use) to
/// microseconds. An empty unit is taken as seconds, the conventions' unit.
pub fn unit_to_micros(unit: &str) -> Result<f64, BucketError> {
    match unit {
        "s" | "" => Ok(1e6),
        "ms" => Ok(1e3),
        "us" | "µs" => Ok(1.0),
        "ns" => Ok(1e-3),
        other => Err(BucketError::Unit(other.to_string())),
    }
}

impl Buckets {
    /// Checks the shape before any arithmetic is done on it.
    pub fn validate(&self) -> Result<(), BucketError> {
        match self {
            Buckets::Explicit { bounds, counts } => {
                if !counts.is_empty() && counts.len() != bounds.len() + 1 {
                    return Err(BucketError::Shape {
                        counts: counts.len(),
                        bounds: bounds.len(),
                    });
                }
                for (field, len) in [
                    ("explicit_bounds", bounds.len()),
                    ("bucket_counts", counts.len()),
                ] {
                    if len > MAX_BUCKETS {
                        return Err(BucketError::TooMany { field, len });
                    }
                }
                if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(BucketError::Bounds);
                }
            }
            Buckets::Exponential {
                scale,
                offset,
                counts,
                ..
            } => {
                if !(-10..=20).contains(scale) {
                    return Err(BucketError::Scale(*scale));
                }
                if counts.len() > MAX_BUCKETS {
                    return Err(BucketError::TooMany {
                        field: "positive.bucket_counts",
                        len: counts.len(),
                    });
                }
                // Index i stands for 2^(i / 2^scale): keep every index within
                // 2^±64 of the unit, so no index arithmetic can overflow.
                let limit = ((64.0 * f64::from(*scale).exp2()).ceil() as i64).max(1);
                let first = i64::from(*offset);
                let last = first + counts.len() as i64;
                if first < -limit || last > limit {
                    return Err(BucketError::Offset {
                        offset: *offset,
                        len: counts.len(),
                        scale: *scale,
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks a point's `count` against its buckets: equal to their sum when
    /// there are any (the OTLP data model), and the sum not overflowing.
    pub fn check_count(&self, count: u64) -> Result<(), BucketError> {
        let counts: &[u64] = match self {
            Buckets::Explicit { counts, .. } => counts,
            Buckets::Exponential { counts, .. } => counts,
        };
        let zero = match self {
            Buckets::Exponential { zero, .. } => *zero,
            Buckets::Explicit { .. } => 0,
        };
        if counts.is_empty() && zero == 0 {
            return Ok(());
        }
        let sum = counts.iter().try_fold(zero, |acc, &c| acc.checked_add(c));
        match sum {
            Some(sum) if sum == count => Ok(()),
            Some(sum) => Err(BucketError::Count {
                count,
                sum: sum.to_string(),
            }),
            None => Err(BucketError::Count {
                count,
                sum: "more than 2^64".into(),
            }),
        }
    }

    /// Appends `(microseconds, count)` points for every non-empty bucket,
    /// its count spread over the bucket (see `model::spread_bucket`); the
    /// first explicit bucket runs from zero, the overflow bucket stands at
    /// its lower bound (the data holds no more).
    pub fn latencies(&self, factor: f64, out: &mut Vec<(u64, u64)>) {
        match self {
            Buckets::Explicit { bounds, counts } => explicit_buckets(bounds, counts, factor, out),
            Buckets::Exponential {
                scale,
                zero,
                offset,
                counts,
            } => {
                if *zero > 0 {
                    out.push((0, *zero));
                }
                let width = (-*scale as f64).exp2();
                for (k, &c) in counts.iter().enumerate() {
                    let index = *offset as f64 + k as f64;
                    let lower = (index * width).exp2() * factor;
                    let upper = ((index + 1.0) * width).exp2() * factor;
                    spread_bucket(lower, Some(upper), c, out);
                }
            }
        }
    }

    /// Most `(microseconds, count)` points `latencies` appends.
    pub fn max_points(&self) -> usize {
        let buckets = match self {
            Buckets::Explicit { counts, .. } => counts.len(),
            Buckets::Exponential { counts, .. } => counts.len() + 1,
        };
        buckets.saturating_mul(SPREAD as usize)
    }

    /// Total count across buckets (saturating).
    pub fn total(&self) -> u64 {
        let (zero, counts) = match self {
            Buckets::Explicit { counts, .. } => (0, counts),
            Buckets::Exponential { zero, counts, .. } => (*zero, counts),
        };
        counts.iter().fold(zero, |acc, &c| acc.saturating_add(c))
    }
}

/// Exponential bucket counts re-indexed at a coarser scale (`by` halvings).
pub fn downscale(offset: i32, counts: &[u64], by: u32) -> (i32, Vec<u64>) {
    if by == 0 || counts.is_empty() {
        return (offset, counts.to_vec());
    }
    let first = offset >> by;
    let last = (offset + counts.len() as i32 - 1) >> by;
    let mut out = vec![0u64; (last - first + 1) as usize];
    for (k, &c) in counts.iter().enumerate() {
        out[(((offset + k as i32) >> by) - first) as usize] += c;
    }
    (first, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_to_micros() {
        assert_eq!(unit_to_micros("s").unwrap(), 1e6);
        assert_eq!(unit_to_micros("ms").unwrap(), 1e3);
        assert_eq!(unit_to_micros("").unwrap(), 1e6);
        assert!(matches!(unit_to_micros("By"), Err(BucketError::Unit(_))));
    }

    #[test]
    fn explicit_buckets_are_spread_over_their_bounds() {
        let b = Buckets::Explicit {
            bounds: vec![0.1, 0.2, 0.4],
            counts: vec![1, 2, 0, 3],
        };
        b.validate().unwrap();
        let mut out = Vec::new();
        b.latencies(1e6, &mut out);
        // (0, 100 ms] from zero; (100, 200] geometrically; the overflow
        // at its lower bound.
        assert_eq!(
            out,
            vec![(50_000, 1), (118_921, 1), (168_179, 1), (400_000, 3)]
        );
        assert_eq!(b.total(), 6);
    }

    #[test]
    fn explicit_shape_is_checked() {
        let b = Buckets::Explicit {
            bounds: vec![1.0, 2.0],
            counts: vec![1, 2],
        };
        assert!(matches!(b.validate(), Err(BucketError::Shape { .. })));
        let b = Buckets::Explicit {
            bounds: vec![2.0, 1.0],
            counts: vec![0, 0, 0],
        };
        assert_eq!(b.validate(), Err(BucketError::Bounds));
        let b = Buckets::Explicit {
            bounds: vec![f64::NAN],
            counts: vec![0, 0],
        };
        assert_eq!(b.validate(), Err(BucketError::Bounds));
    }

    #[test]
    fn exponential_buckets_are_spread_geometrically() {
        // scale 0: bucket i is (2^i, 2^(i+1)]; index 3 is (8, 16] ms.
        let b = Buckets::Exponential {
            scale: 0,
            zero: 2,
            offset: 3,
            counts: vec![5],
        };
        let mut out = Vec::new();
        b.latencies(1e3, &mut out);
        assert_eq!(out[0], (0, 2));
        assert_eq!(out[1..].iter().map(|p| p.1).sum::<u64>(), 5);
        assert!(out[1..].iter().all(|p| (8_000..=16_000).contains(&p.0)));
        // The middle one of five is the geometric midpoint, 8 * sqrt(2) ms.
        assert!((11_300..11_320).contains(&out[3].0), "{out:?}");
        assert_eq!(b.total(), 7);
    }

    #[test]
    fn downscale_merges_pairs() {
        // indices 3,4,5,6 at scale s → 1,2,2,3 at scale s-1
        assert_eq!(downscale(3, &[1, 2, 3, 4], 1), (1, vec![1, 5, 4]));
        // negative indices floor: -3,-2,-1 → -2,-1,-1
        assert_eq!(downscale(-3, &[1, 1, 1], 1), (-2, vec![1, 2]));
        assert_eq!(downscale(5, &[7], 0), (5, vec![7]));
    }

    #[test]
    fn exponential_scale_is_checked() {
        let b = Buckets::Exponential {
            scale: 21,
            zero: 0,
            offset: 0,
            counts: vec![],
        };
        assert_eq!(b.validate(), Err(BucketError::Scale(21)));
    }

    #[test]
    fn exponential_indices_stay_within_two_to_the_64() {
        let at = |scale, offset, len| Buckets::Exponential {
            scale,
            zero: 0,
            offset,
            counts: vec![1; len],
        };
        // Scale 0: index i is (2^i, 2^(i+1)].
        assert!(at(0, 63, 1).validate().is_ok());
        assert!(matches!(
            at(0, 64, 1).validate(),
            Err(BucketError::Offset { .. })
        ));
        assert!(at(0, -64, 1).validate().is_ok());
        assert!(matches!(
            at(0, -65, 1).validate(),
            Err(BucketError::Offset { .. })
        ));
        assert!(matches!(
            at(20, i32::MAX, 2).validate(),
            Err(BucketError::Offset { .. })
        ));
        assert!(matches!(
            at(20, i32::MIN, 2).validate(),
            Err(BucketError::Offset { .. })
        ));
        assert!(at(20, 31_350_000, 160).validate().is_ok());
        // The coarsest scale has one bucket each side of 1.
        assert!(at(-10, -1, 2).validate().is_ok());
        assert!(at(-10, 1, 1).validate().is_err());
    }

    #[test]
    fn counts_must_be_the_buckets_sum() {
        let b = Buckets::Explicit {
            bounds: vec![1.0],
            counts: vec![2, 3],
        };
        assert_eq!(b.check_count(5), Ok(()));
        assert!(matches!(b.check_count(6), Err(BucketError::Count { .. })));
        let empty = Buckets::Explicit {
            bounds: vec![],
            counts: vec![],
        };
        assert_eq!(empty.check_count(1_000), Ok(()), "a count alone is a count");
        let wraps = Buckets::Exponential {
            scale: 0,
            zero: u64::MAX,
            offset: 0,
            counts: vec![1],
        };
        assert_eq!(
            wraps.check_count(0).unwrap_err().to_string(),
            "count 0 is not the sum of the bucket counts (more than 2^64)"
        );
        assert_eq!(wraps.total(), u64::MAX, "saturates");
    }
}
