//! Per-release signal state: request and error counters and a latency
//! histogram. `Signals` is the unit the judge's rolling windows are built of.

mod detail;

pub use detail::{Detail, MAX_ERROR_KINDS};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::model::{MetricObservation, Sample, UnixNanos};

/// Significant digits of latency histograms: 2 gives at most 1% relative
/// error on any quantile, in a fraction of the memory of 3.
const SIGFIG: u8 = 2;
/// Histograms start with their first bucket only (1 µs to 256 µs, 256
/// counts, 1 KiB) and grow on demand, in one step to the largest value
/// recorded, up to `MAX_LATENCY_US`: a release that has seen a handful of
/// 1 ms requests holds 2 KiB a histogram rather than the 7 KiB of a 1 s
/// range, and a fast service never pays for an hour-wide array. The range
/// changes no value or quantile, only the array's length.
const INITIAL_HIGH_US: u64 = 1 << 8;
/// Latencies above one hour are recorded as one hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// An HDR histogram of non-negative integer values: latencies in
/// microseconds, or a configured metric's values in thousandths of its unit.
/// Allocated on the first observation and freed when cleared, so an idle
/// release's window slots and an unused cohort cost nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "SavedBuckets")]
pub struct Distribution {
    hist: Option<Histogram<u32>>,
}

/// A distribution as saved in a checkpoint: (value, count) of every
/// recorded bucket, which records back into the same buckets.
#[derive(Serialize, Deserialize)]
struct SavedBuckets(Vec<(u64, u64)>);

impl Serialize for Distribution {
    /// Without cloning the histogram, and without walking an empty one.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let recorded: Vec<(u64, u64)> = match self.recorded() {
            None => Vec::new(),
            Some(h) => h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), u64::from(v.count_at_value())))
                .collect(),
        };
        SavedBuckets(recorded).serialize(s)
    }
}

impl From<SavedBuckets> for Distribution {
    fn from(r: SavedBuckets) -> Self {
        let mut d = Distribution::default();
        for (value, count) in r.0 {
            d.record(value, count);
        }
        d
    }
}

/// A new histogram over 1 µs to about 1 s, growing on demand.
fn histogram() -> Histogram<u32> {
    let mut hist = Histogram::new_with_bounds(1, INITIAL_HIGH_US, SIGFIG)
        .expect("static histogram bounds are valid");
    hist.auto(true);
    hist
}

impl Distribution {
    /// The histogram, when it holds anything.
    fn recorded(&self) -> Option<&Histogram<u32>> {
        self.hist.as_ref().filter(|h| !h.is_empty())
    }

    /// Adds `count` observations of `micros`, growing the range as needed;
    /// counts saturate rather than wrap.
    pub fn record(&mut self, micros: u64, count: u64) {
        let value = micros.min(MAX_LATENCY_US);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let hist = self.hist.get_or_insert_with(histogram);
        if hist.record_n(value, count).is_err() {
            hist.saturating_record_n(value, count);
        }
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// The value at quantile `q` (0..=1) in microseconds; None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.recorded().map(|h| h.value_at_quantile(q))
    }

    /// The values at several quantiles (each 0..=1, in any order), in one
    /// walk of the histogram: a walk reads every bucket below the highest
    /// quantile, which for a few quantiles of every release at every tick
    /// is most of the judge's reading.
    pub fn quantiles(&self, qs: &[f64]) -> Vec<Option<u64>> {
        let Some(h) = self.recorded() else {
            return vec![None; qs.len()];
        };
        let mut order: Vec<usize> = (0..qs.len()).collect();
        order.sort_by(|&a, &b| qs[a].total_cmp(&qs[b]));
        let mut out = vec![None; qs.len()];
        for (i, v) in order
            .iter()
            .zip(h.value_at_quantiles(order.iter().map(|&i| qs[i])))
        {
            out[*i] = Some(v);
        }
        out
    }

    /// Heap bytes held by the counts array.
    pub fn heap_bytes(&self) -> usize {
        self.hist
            .as_ref()
            .map_or(0, |h| h.distinct_values() * std::mem::size_of::<u32>())
    }
}

impl Distribution {
    /// Observations strictly below `value` (at histogram resolution).
    pub fn count_below(&self, value: u64) -> u64 {
        let Some(hist) = self.recorded() else {
            return 0;
        };
        if value <= hist.min() {
            return 0;
        }
        let edge = hist.lowest_equivalent(value);
        if edge == 0 {
            return 0;
        }
        hist.count_between(0, edge - 1)
    }

    /// Observations strictly above `micros` (at histogram resolution).
    pub fn count_above(&self, micros: u64) -> u64 {
        let Some(hist) = self.recorded() else {
            return 0;
        };
        if micros >= hist.max() {
            return 0;
        }
        let edge = hist.highest_equivalent(micros);
        hist.len() - hist.count_between(0, edge)
    }

    /// Adds another distribution.
    pub fn add(&mut self, other: &Distribution) {
        let Some(theirs) = other.recorded() else {
            return;
        };
        let mine = self.hist.get_or_insert_with(histogram);
        if mine.add(theirs).is_err() {
            for v in theirs.iter_recorded() {
                self.record(v.value_iterated_to(), v.count_at_value() as u64);
            }
        }
    }

    /// Removes a distribution previously added.
    pub fn subtract(&mut self, other: &Distribution) {
        if let (Some(mine), Some(theirs)) = (&mut self.hist, other.recorded()) {
            // Cannot fail: `other` was added, so its range is within ours.
            let _ = mine.subtract(theirs);
        }
    }

    /// Empties it, and gives its memory back.
    pub fn clear(&mut self) {
        self.hist = None;
    }
}

/// What the distribution test counts of a cohort's observations: how many,
/// and how many lie beyond a value (at histogram resolution).
pub trait Counts {
    fn count(&self) -> u64;
    /// Observations strictly above `micros`.
    fn count_above(&self, micros: u64) -> u64;
    /// Observations strictly below `micros`.
    fn count_below(&self, micros: u64) -> u64;
}

impl Counts for Distribution {
    fn count(&self) -> u64 {
        Distribution::count(self)
    }
    fn count_above(&self, micros: u64) -> u64 {
        Distribution::count_above(self, micros)
    }
    fn count_below(&self, micros: u64) -> u64 {
        Distribution::count_below(self, micros)
    }
}

/// An empty histogram of the latency histograms' resolution: what values
/// are equivalent to one another.
fn resolution() -> &'static Histogram<u32> {
    static SHAPE: std::sync::OnceLock<Histogram<u32>> = std::sync::OnceLock::new();
    SHAPE.get_or_init(histogram)
}

/// Latencies kept as they came before a histogram holds them.
const RECENT_RAW: usize = 64;

/// One endpoint's latencies since the last tick: the first `RECENT_RAW` as
/// they came (at the histograms' resolution), the rest in a histogram. The
/// judge reads every endpoint at every tick, and counting in a histogram
/// walks its whole array (some 1,300 counts at 50 ms); a handful of values
/// is read in a handful of steps. Bounded: at most `RECENT_RAW` values and
/// one histogram.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    raw: Vec<(u64, u64)>,
    spill: Distribution,
}

impl Recent {
    pub fn record(&mut self, micros: u64, count: u64) {
        let value = micros.min(MAX_LATENCY_US);
        if self.raw.len() < RECENT_RAW {
            self.raw
                .push((resolution().highest_equivalent(value), count));
        } else {
            self.spill.record(value, count);
        }
    }

    /// Adds these latencies to a histogram.
    pub fn add_to(&self, d: &mut Distribution) {
        for &(micros, count) in &self.raw {
            d.record(micros, count);
        }
        d.add(&self.spill);
    }

    pub fn heap_bytes(&self) -> usize {
        self.raw.capacity() * std::mem::size_of::<(u64, u64)>() + self.spill.heap_bytes()
    }
}

impl Counts for Recent {
    fn count(&self) -> u64 {
        let raw: u64 = self.raw.iter().map(|(_, n)| n).sum();
        raw.saturating_add(self.spill.count())
    }
    fn count_above(&self, micros: u64) -> u64 {
        let edge = resolution().highest_equivalent(micros);
        let raw: u64 = (self.raw.iter())
            .filter(|(v, _)| *v > edge)
            .map(|(_, n)| n)
            .sum();
        raw.saturating_add(self.spill.count_above(micros))
    }
    fn count_below(&self, micros: u64) -> u64 {
        let edge = resolution().lowest_equivalent(micros);
        let raw: u64 = (self.raw.iter())
            .filter(|(v, _)| *v < edge)
            .map(|(_, n)| n)
            .sum();
        raw.saturating_add(self.spill.count_below(micros))
    }
}

/// Observations of one configured metric: increments of a sum, or values
/// of a gauge or histogram (thousandths of the metric's unit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetricSignals {
    pub count: u64,
    pub values: Option<Distribution>,
}

impl MetricSignals {
    fn add(&mut self, other: &MetricSignals) {
        self.count = self.count.saturating_add(other.count);
        if let Some(v) = &other.values {
            self.values.get_or_insert_with(Distribution::default).add(v);
        }
    }

    fn subtract(&mut self, other: &MetricSignals) {
        self.count = self.count.saturating_sub(other.count);
        if let (Some(mine), Some(theirs)) = (&mut self.values, &other.values) {
            mine.subtract(theirs);
        }
    }

    fn clear(&mut self) {
        self.count = 0;
        if let Some(v) = &mut self.values {
            v.clear();
        }
    }
}

/// Requests, errors and latencies of one release over some span of time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Signals {
    pub requests: u64,
    pub errors: u64,
    pub latency: Distribution,
    /// Configured metrics, by check index (grown on first observation).
    pub metrics: Vec<MetricSignals>,
    /// Requests and errors by endpoint, indexed by the release's endpoint
    /// table (grown on first observation, freed when cleared).
    #[serde(default)]
    pub endpoints: Vec<[u64; 2]>,
    /// Latencies by endpoint, indexed like `endpoints`: kept only in the
    /// samples since the last tick (`add_endpoint_latencies`), where the
    /// judge reads them; a window of them would cost a histogram an
    /// endpoint a slot.
    #[serde(skip)]
    pub endpoint_latency: Vec<Recent>,
}

/// One endpoint's requests and errors in a sample, by its index in the
/// release's endpoint table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointHit {
    pub index: usize,
    pub requests: u64,
    pub errors: u64,
}

impl Signals {
    /// Adds one export request's worth of a release's requests.
    pub fn add_sample(&mut self, sample: &Sample) {
        self.requests = self.requests.saturating_add(sample.requests);
        self.errors = self.errors.saturating_add(sample.errors);
        for &(micros, count) in &sample.latencies_us {
            self.latency.record(micros, count);
        }
        for &(check, obs) in &sample.metrics {
            let m = self.metric_mut(check as usize);
            match obs {
                MetricObservation::Count(n) => m.count = m.count.saturating_add(n),
                MetricObservation::Values { milli, count } => m
                    .values
                    .get_or_insert_with(Distribution::default)
                    .record(milli, count),
            }
        }
    }

    /// Adds a sample's requests and errors by endpoint.
    pub fn add_endpoints(&mut self, hits: &[EndpointHit]) {
        for h in hits {
            let e = self.endpoint_mut(h.index);
            e[0] = e[0].saturating_add(h.requests);
            e[1] = e[1].saturating_add(h.errors);
        }
    }

    /// Adds a sample's latencies by endpoint, `slots` mapping each of the
    /// sample's endpoints to its index in the release's table.
    pub fn add_endpoint_latencies(&mut self, sample: &Sample, slots: &[usize]) {
        for &(i, micros, count) in &sample.endpoint_latencies {
            let Some(&slot) = slots.get(usize::from(i)) else {
                continue;
            };
            if self.endpoint_latency.len() <= slot {
                self.endpoint_latency.resize_with(slot + 1, Recent::default);
            }
            self.endpoint_latency[slot].record(micros, count);
        }
    }

    /// Latencies of endpoint `i`, if any.
    pub fn endpoint_latency(&self, i: usize) -> Option<&Recent> {
        self.endpoint_latency.get(i).filter(|d| d.count() > 0)
    }

    fn endpoint_mut(&mut self, i: usize) -> &mut [u64; 2] {
        if self.endpoints.len() <= i {
            self.endpoints.resize(i + 1, [0; 2]);
        }
        &mut self.endpoints[i]
    }

    /// (requests, errors) of endpoint `i`.
    pub fn endpoint(&self, i: usize) -> [u64; 2] {
        self.endpoints.get(i).copied().unwrap_or_default()
    }

    /// Adds only the requests and errors: for totals since first seen,
    /// whose latencies and metrics nothing reads (each histogram kept
    /// there would be 2 to 7 KiB a release, for the release's whole life).
    pub fn add_counts(&mut self, sample: &Sample) {
        self.requests = self.requests.saturating_add(sample.requests);
        self.errors = self.errors.saturating_add(sample.errors);
    }

    fn metric_mut(&mut self, i: usize) -> &mut MetricSignals {
        if self.metrics.len() <= i {
            self.metrics.resize_with(i + 1, MetricSignals::default);
        }
        &mut self.metrics[i]
    }

    /// A configured metric's observations, if any arrived.
    pub fn metric(&self, i: usize) -> Option<&MetricSignals> {
        self.metrics.get(i)
    }
}

impl Signals {
    pub fn add(&mut self, other: &Signals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.latency.add(&other.latency);
        for (i, m) in other.metrics.iter().enumerate() {
            self.metric_mut(i).add(m);
        }
        for (i, e) in other.endpoints.iter().enumerate() {
            let mine = self.endpoint_mut(i);
            mine[0] = mine[0].saturating_add(e[0]);
            mine[1] = mine[1].saturating_add(e[1]);
        }
    }

    pub fn subtract(&mut self, other: &Signals) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.errors = self.errors.saturating_sub(other.errors);
        self.latency.subtract(&other.latency);
        for (mine, theirs) in self.metrics.iter_mut().zip(&other.metrics) {
            mine.subtract(theirs);
        }
        for (mine, theirs) in self.endpoints.iter_mut().zip(&other.endpoints) {
            mine[0] = mine[0].saturating_sub(theirs[0]);
            mine[1] = mine[1].saturating_sub(theirs[1]);
        }
    }

    pub fn clear(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.latency.clear();
        for m in &mut self.metrics {
            m.clear();
        }
        self.endpoints = Vec::new();
        self.endpoint_latency = Vec::new();
    }

    /// Errors per request, None before the first request.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// A rolling window: a ring of sub-windows advanced by the clock passed in,
/// with their running sum kept beside them so reading the window costs one
/// histogram, not a merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rolling {
    slots: Vec<Signals>,
    slot_nanos: u64,
    /// Index of the current sub-window and the time it began.
    head: usize,
    head_start: UnixNanos,
    sum: Signals,
}

impl Rolling {
    /// `slots` sub-windows of `window / slots` each, starting at `now`.
    pub fn new(window: std::time::Duration, slots: usize, now: UnixNanos) -> Self {
        let slots = slots.max(1);
        let slot_nanos = (window.as_nanos() as u64 / slots as u64).max(1);
        Self {
            slots: vec![Signals::default(); slots],
            slot_nanos,
            head: 0,
            head_start: now - now % slot_nanos,
            sum: Signals::default(),
        }
    }

    /// Moves the window to `now`, dropping sub-windows that fell out of it.
    /// Time never runs backwards here: an earlier `now` changes nothing.
    pub fn advance(&mut self, now: UnixNanos) {
        if now < self.head_start.saturating_add(self.slot_nanos) {
            return;
        }
        let steps = (now - self.head_start) / self.slot_nanos;
        for _ in 0..steps.min(self.slots.len() as u64) {
            self.head = (self.head + 1) % self.slots.len();
            let old = &mut self.slots[self.head];
            self.sum.subtract(old);
            old.clear();
        }
        if self.sum.latency.count() == 0 {
            // An idle window holds no histogram at all.
            self.sum.latency.clear();
        }
        if self.sum.requests == 0 {
            self.sum.endpoints = Vec::new();
        }
        self.head_start += steps * self.slot_nanos;
    }

    /// Adds a sample at `now`.
    pub fn add_sample(&mut self, sample: &Sample, now: UnixNanos) {
        self.advance(now);
        self.slots[self.head].add_sample(sample);
        self.sum.add_sample(sample);
    }

    /// Adds a sample's endpoint counts at the current sub-window (call
    /// after `record` of the same sample).
    pub fn add_endpoints(&mut self, hits: &[EndpointHit]) {
        self.slots[self.head].add_endpoints(hits);
        self.sum.add_endpoints(hits);
    }

    /// Adds signals counted elsewhere to the current sub-window (a state
    /// taken over from another replica; call `advance` first).
    pub fn absorb(&mut self, signals: &Signals) {
        self.slots[self.head].add(signals);
        self.sum.add(signals);
    }

    /// Everything in the window.
    pub fn sum(&self) -> &Signals {
        &self.sum
    }

    /// Heap bytes held by the histograms.
    pub fn heap_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.latency.heap_bytes())
            .sum::<usize>()
            + self.sum.latency.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sample;

    #[test]
    fn records_counts_and_quantiles() {
        let mut s = Signals::default();
        s.add_sample(&Sample {
            requests: 100,
            errors: 3,
            latencies_us: (1..=100).map(|i| (i * 1000, 1)).collect(),
            ..Default::default()
        });
        assert_eq!((s.requests, s.errors, s.latency.count()), (100, 3, 100));
        let p50 = s.latency.quantile(0.5).unwrap();
        assert!((49_500..=50_500).contains(&p50), "{p50}");
        let p99 = s.latency.quantile(0.99).unwrap();
        assert!((98_000..=100_000).contains(&p99), "{p99}");
    }

    #[test]
    fn grows_for_slow_requests_and_caps_at_an_hour() {
        let mut l = Distribution::default();
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
    fn count_above_uses_histogram_resolution() {
        let mut l = Distribution::default();
        for v in [100, 200, 300, 400] {
            l.record(v * 1000, 1);
        }
        assert_eq!(l.count_above(250_000), 2);
        assert_eq!(l.count_above(50_000), 4);
        assert_eq!(l.count_above(400_000), 0);
        assert_eq!(Distribution::default().count_above(1), 0);
    }

    #[test]
    fn configured_metrics_ride_along() {
        let mut a = Signals::default();
        a.add_sample(&Sample {
            metrics: vec![
                (1, MetricObservation::Count(5)),
                (
                    1,
                    MetricObservation::Values {
                        milli: 2_000,
                        count: 3,
                    },
                ),
            ],
            ..Default::default()
        });
        assert_eq!(a.metrics.len(), 2);
        let m = a.metric(1).unwrap();
        assert_eq!(m.count, 5);
        assert_eq!(m.values.as_ref().unwrap().count(), 3);
        let mut b = Signals::default();
        b.add(&a);
        b.add(&a);
        b.subtract(&a);
        assert_eq!(b.metric(1).unwrap().count, 5);
        b.clear();
        assert_eq!(b.metric(1).unwrap().count, 0);
        let l = m.values.as_ref().unwrap();
        assert_eq!(l.count_below(3_000), 3);
        assert_eq!(l.count_below(1_000), 0);
    }

    fn one(micros: u64) -> Sample {
        Sample {
            requests: 1,
            errors: 0,
            latencies_us: vec![(micros, 1)],
            ..Default::default()
        }
    }

    #[test]
    fn the_window_forgets_what_falls_out_of_it() {
        let sec = 1_000_000_000;
        let mut w = Rolling::new(std::time::Duration::from_secs(60), 6, 0);
        w.add_sample(&one(1_000), 0);
        w.add_sample(&one(2_000), 15 * sec);
        w.add_sample(&one(3_000), 59 * sec);
        assert_eq!(w.sum().requests, 3);
        w.advance(65 * sec);
        assert_eq!(w.sum().requests, 2);
        assert_eq!(w.sum().latency.count(), 2);
        w.advance(200 * sec);
        assert_eq!(w.sum().requests, 0);
        assert_eq!(w.sum().latency.quantile(0.5), None);
        w.add_sample(&one(4_000), 201 * sec);
        assert_eq!(w.sum().requests, 1);
    }

    #[test]
    fn signals_add_and_subtract() {
        let mut a = Signals::default();
        a.add_sample(&Sample {
            requests: 10,
            errors: 1,
            latencies_us: vec![(5_000, 10)],
            ..Default::default()
        });
        let mut b = Signals::default();
        b.add_sample(&Sample {
            requests: 5,
            errors: 2,
            latencies_us: vec![(9_000_000, 5)],
            ..Default::default()
        });
        a.add(&b);
        assert_eq!((a.requests, a.errors, a.latency.count()), (15, 3, 15));
        a.subtract(&b);
        assert_eq!((a.requests, a.errors, a.latency.count()), (10, 1, 10));
        assert_eq!(a.error_ratio(), Some(0.1));
    }

    #[test]
    fn several_quantiles_read_in_one_walk_are_each_the_one_read_alone() {
        let mut rng = crate::rng::Rng::new(5);
        let mut d = Distribution::default();
        for _ in 0..10_000 {
            d.record((rng.lognormal(50.0, 1.0) * 1000.0) as u64, 1);
        }
        let qs = [0.99, 0.5, 0.0, 0.999, 0.95, 1.0, 0.5];
        let alone: Vec<Option<u64>> = qs.iter().map(|&q| d.quantile(q)).collect();
        assert_eq!(d.quantiles(&qs), alone);
        assert_eq!(Distribution::default().quantiles(&qs), vec![None; 7]);
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        assert_eq!(Distribution::default().quantile(0.5), None);
        assert!(Distribution::default().heap_bytes() < 16 * 1024);
    }

    #[test]
    fn an_idle_window_holds_no_histogram() {
        let sec = 1_000_000_000;
        let mut w = Rolling::new(std::time::Duration::from_secs(60), 6, 0);
        assert_eq!(w.heap_bytes(), 0, "nothing allocated before traffic");
        w.add_sample(&one(1_000), 0);
        w.add_sample(&one(9_000_000), 30 * sec);
        assert!(w.heap_bytes() > 0);
        w.advance(200 * sec);
        // The sum and every slot gave their histograms back.
        assert_eq!(w.heap_bytes(), 0);
        assert_eq!(w.sum().latency.count(), 0);
        w.add_sample(&one(4_000), 201 * sec);
        assert_eq!(w.sum().latency.quantile(0.5).map(|v| v / 100), Some(40));
    }
}
