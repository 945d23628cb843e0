//! Per-release signal state: request and error counters and a latency
//! histogram. `Signals` is the unit the judge's rolling windows are built of.

use hdrhistogram::Histogram;

/// Significant digits of latency histograms: 2 gives at most 1% relative
/// error on any quantile, in a fraction of the memory of 3.
const SIGFIG: u8 = 2;
/// Histograms start covering 1 µs to about 1 s and grow on demand up to
/// `MAX_LATENCY_US`, so a fast service never pays for an hour-wide array.
const INITIAL_HIGH_US: u64 = 1 << 20;
/// Latencies above one hour are recorded as one hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u32>,
}

impl Default for Latency {
    fn default() -> Self {
        let mut hist = Histogram::new_with_bounds(1, INITIAL_HIGH_US, SIGFIG)
            .expect("static histogram bounds are valid");
        hist.auto(true);
        Self { hist }
    }
}

impl Latency {
    /// Adds `count` observations of `micros`, growing the range as needed;
    /// counts saturate rather than wrap.
    pub fn record(&mut self, micros: u64, count: u64) {
        let value = micros.min(MAX_LATENCY_US);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if self.hist.record_n(value, count).is_err() {
            self.hist.saturating_record_n(value, count);
        }
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0..=1) in microseconds; None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q))
    }

    /// Heap bytes held by the counts array.
    pub fn heap_bytes(&self) -> usize {
        self.hist.distinct_values() * std::mem::size_of::<u32>()
    }
}

/// Requests, errors and latencies of one release over some span of time.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub requests: u64,
    pub errors: u64,
    pub latency: Latency,
}

impl Signals {
    /// Adds one export request's worth of a release's requests.
    pub fn record(&mut self, sample: &crate::model::Sample) {
        self.requests = self.requests.saturating_add(sample.requests);
        self.errors = self.errors.saturating_add(sample.errors);
        for &(micros, count) in &sample.latencies_us {
            self.latency.record(micros, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sample;

    #[test]
    fn records_counts_and_quantiles() {
        let mut s = Signals::default();
        s.record(&Sample {
            requests: 100,
            errors: 3,
            latencies_us: (1..=100).map(|i| (i * 1000, 1)).collect(),
        });
        assert_eq!((s.requests, s.errors, s.latency.count()), (100, 3, 100));
        let p50 = s.latency.quantile(0.5).unwrap();
        assert!((49_500..=50_500).contains(&p50), "{p50}");
        let p99 = s.latency.quantile(0.99).unwrap();
        assert!((98_000..=100_000).contains(&p99), "{p99}");
    }

    #[test]
    fn grows_for_slow_requests_and_caps_at_an_hour() {
        let mut l = Latency::default();
        let small = l.heap_bytes();
        l.record(30_000_000, 1);
        l.record(u64::MAX, 2);
        assert_eq!(l.count(), 3);
        assert!(l.heap_bytes() > small);
        let max = l.quantile(1.0).unwrap();
        assert!(
            (MAX_LATENCY_US..=MAX_LATENCY_US / 100 * 101).contains(&max),
            "{max}"
        );
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        assert_eq!(Latency::default().quantile(0.5), None);
        assert!(Latency::default().heap_bytes() < 16 * 1024);
    }
}
