//! The latency check, canary vs baseline, at the baseline's quantiles
//! (`[checks.latency] quantiles`), over the distribution test.

use std::sync::Arc;

use super::distribution::{DistributionTest, Margins, Stratum};
use super::endpoints::EndpointCounters;
use super::{
    ms, quantile_name, CheckReport, CheckResult, CohortStats, Evidence, Levels, Statistic,
};
use crate::config::LatencyCheck;
use crate::judge::spending::Look;
use crate::window::{Counts, Distribution, Recent, Signals};
use serde::{Deserialize, Serialize};

/// Latency distribution, canary vs baseline, at several baseline quantiles:
/// endpoint by endpoint where both cohorts name endpoints (so a canary
/// serving a different mix is compared like with like), the whole release
/// otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyTest {
    test: DistributionTest,
    /// Each endpoint both cohorts serve, with its observations since
    /// judging began: the baseline's give its thresholds, both the figures
    /// a red names. Bounded by the endpoint tables (`top` + 1).
    #[serde(default)]
    endpoints: Vec<EndpointLatency>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EndpointLatency {
    name: Arc<str>,
    canary: Distribution,
    baseline: Distribution,
    /// The p95 each cohort's row of the endpoint table shows.
    #[serde(skip)]
    shown: [Shown; 2],
}

/// A p95 as last read, and the observations it was read from.
#[derive(Debug, Clone, Copy, Default)]
struct Shown {
    count: u64,
    p95_ms: Option<f64>,
}

impl Shown {
    /// The p95 of `d` (ms), read again once `d` holds 10% more
    /// observations than when last read (or fewer: it was emptied).
    /// Walking two histograms for every endpoint of every release at every
    /// tick was a third of the judge's tick, for a figure that a tenth more
    /// requests since judging began hardly move.
    fn p95(&mut self, d: &Distribution) -> Option<f64> {
        let n = d.count();
        if n < self.count || n > self.count + self.count / 10 {
            *self = Self {
                count: n,
                p95_ms: d.quantile(0.95).map(|us| us as f64 / 1000.0),
            };
        }
        self.p95_ms
    }
}

impl LatencyTest {
    pub fn new(cfg: &LatencyCheck) -> Self {
        Self {
            test: DistributionTest::new(&cfg.quantiles),
            endpoints: Vec::new(),
        }
    }

    pub fn new_epoch(&mut self) {
        self.test.new_epoch();
    }

    pub fn feed(
        &mut self,
        canary: &EndpointCounters<'_>,
        baseline: &EndpointCounters<'_>,
        cfg: &LatencyCheck,
        epoch_over: bool,
        look: Look,
    ) {
        let m = Margins::latency(cfg);
        // Endpoints both cohorts name, with latencies of their own.
        let mut pairs = Vec::new();
        for (ci, name) in canary.detail.endpoints.iter().enumerate() {
            let Some(bi) = baseline.detail.endpoints.iter().position(|n| n == name) else {
                continue;
            };
            let (c, b) = (
                canary.pending.endpoint_latency(ci),
                baseline.pending.endpoint_latency(bi),
            );
            if c.is_some() || b.is_some() {
                pairs.push((name, c, b));
            }
        }
        if pairs.is_empty() && self.endpoints.is_empty() {
            self.test.feed(
                &canary.pending.latency,
                &baseline.pending.latency,
                &baseline.window.latency,
                &m,
                epoch_over,
                look,
            );
            return;
        }
        for (name, c, b) in &pairs {
            let i = match self.endpoints.iter().position(|e| &e.name == *name) {
                Some(i) => i,
                None => {
                    self.endpoints.push(EndpointLatency {
                        name: Arc::clone(name),
                        canary: Distribution::default(),
                        baseline: Distribution::default(),
                        shown: Default::default(),
                    });
                    self.endpoints.len() - 1
                }
            };
            let e = &mut self.endpoints[i];
            if let Some(c) = c {
                c.add_to(&mut e.canary);
            }
            if let Some(b) = b {
                b.add_to(&mut e.baseline);
            }
        }
        let empty = Recent::default();
        let strata: Vec<Stratum<'_>> = pairs
            .iter()
            .filter_map(|(name, c, b)| {
                let e = self.endpoints.iter().find(|e| &e.name == *name)?;
                Some(Stratum {
                    name,
                    canary: c.unwrap_or(&empty) as &dyn Counts,
                    baseline: b.unwrap_or(&empty) as &dyn Counts,
                    reference: &e.baseline,
                })
            })
            .collect();
        self.test.feed_strata(&strata, &m, epoch_over, look);
    }

    /// "GET /small: canary p95 260.1ms vs baseline 180.3ms": the endpoint
    /// where the slow canary requests are, when compared endpoint by
    /// endpoint.
    fn worst_endpoint(&self) -> Option<String> {
        let (q, name) = self.test.worst_stratum()?;
        let e = self.endpoints.iter().find(|e| &*e.name == name)?;
        let at = |d: &Distribution| d.quantile(q).map(|us| us as f64 / 1000.0);
        Some(format!(
            "{name}: canary {} latency {} vs baseline {}",
            quantile_name(q),
            ms(at(&e.canary)),
            ms(at(&e.baseline))
        ))
    }

    /// The quantile with the most evidence of a regression.
    pub fn worst_quantile(&self) -> f64 {
        self.test.evidence().worst
    }

    /// The endpoint where the slow canary requests are, when compared
    /// endpoint by endpoint.
    pub fn worst_endpoint_name(&self) -> Option<String> {
        self.test.worst_stratum().map(|(_, name)| name.to_string())
    }

    /// Both cohorts' p95 (ms) on `endpoint` since judging began, for the
    /// endpoint table (see `Shown`).
    pub fn endpoint_p95(&mut self, endpoint: &str) -> (Option<f64>, Option<f64>) {
        match self.endpoints.iter_mut().find(|e| &*e.name == endpoint) {
            Some(e) => (e.shown[0].p95(&e.canary), e.shown[1].p95(&e.baseline)),
            None => (None, None),
        }
    }

    /// Both cohorts' latency (ms) at `q` and the canary's observations:
    /// on `endpoint` since judging began, or over the windows.
    pub fn at(
        &self,
        q: f64,
        endpoint: Option<&str>,
        canary_window: &Signals,
        baseline_window: &Signals,
    ) -> (Option<f64>, Option<f64>, u64) {
        let ms = |d: &Distribution| d.quantile(q).map(|us| us as f64 / 1000.0);
        match endpoint {
            Some(name) => match self.endpoints.iter().find(|e| &*e.name == name) {
                Some(e) => (ms(&e.canary), ms(&e.baseline), e.canary.count()),
                None => (None, None, 0),
            },
            None => (
                ms(&canary_window.latency),
                ms(&baseline_window.latency),
                canary_window.latency.count(),
            ),
        }
    }

    pub fn report(
        &self,
        canary_window: &Signals,
        baseline_window: &Signals,
        cfg: &LatencyCheck,
        levels: Levels,
        buckets: bool,
    ) -> CheckReport {
        let canary = CohortStats::latency(canary_window);
        let baseline = CohortStats::latency(baseline_window);
        let Evidence {
            log_e,
            pass_p,
            passed,
            worst: worst_q,
            worst_log_e,
            thin_log_e,
            ready,
            thin,
        } = self.test.evidence();
        // A quantile too thin to test for green (a p99 before its 1,000th
        // canary request) holds it back while its evidence leans the wrong
        // way at all (e > 1: more slow canary requests there than the
        // canary's share): a tail regression seen early is not passed over
        // by the quantiles tested before it.
        let calm = worst_log_e < levels.leaning() && thin_log_e < 0.0;
        let result = levels.result(ready && canary.requests > 0, log_e, true, passed && calm);
        let quantiles = |w: &Signals| {
            w.latency
                .quantiles(&cfg.quantiles)
                .into_iter()
                .map(|us| ms(us.map(|us| us as f64 / 1000.0)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let names = cfg
            .quantiles
            .iter()
            .map(|&q| quantile_name(q))
            .collect::<Vec<_>>()
            .join(" / ");
        let at = |q: f64| -> (Option<f64>, Option<f64>) {
            let get = |w: &Signals| w.latency.quantile(q).map(|us| us as f64 / 1000.0);
            (get(canary_window), get(baseline_window))
        };
        // Quantiles read from histogram buckets are interpolated within a
        // bucket, and say so.
        let (how, read) = if buckets {
            (
                ", interpolated within histogram buckets",
                " (interpolated within histogram buckets)",
            )
        } else {
            ("", "")
        };
        let detail = match result {
            CheckResult::Nodata => {
                "no latency observations yet from one of the cohorts".to_string()
            }
            CheckResult::Fail => match self.worst_endpoint() {
                Some(there) => format!(
                    "{there} (p<{:.2}, endpoint by endpoint{how}): the canary is slower on this endpoint; roll back",
                    (-levels.fail).exp()
                ),
                None => {
                    let q = worst_q;
                    let (c, b) = at(q);
                    format!(
                        "canary {} latency {} vs baseline {} (p<{:.2}{how}): the canary is slower; roll back",
                        quantile_name(q),
                        ms(c),
                        ms(b),
                        (-levels.fail).exp()
                    )
                }
            },
            CheckResult::Pass => format!(
                "canary {names} {} vs baseline {}{read}: within {:.0}% of the baseline{}",
                quantiles(canary_window),
                quantiles(baseline_window),
                cfg.pass_bound * 100.0,
                self.by_endpoint()
            ),
            CheckResult::Marginal => {
                let mut why = format!(
                    "canary {names} {} vs baseline {}{read}: not conclusive yet{}",
                    quantiles(canary_window),
                    quantiles(baseline_window),
                    self.by_endpoint()
                );
                for (q, needed) in &thin {
                    why.push_str(&format!(
                        "; {} is judged from {needed} canary requests on (it does not hold green back until then)",
                        quantile_name(*q)
                    ));
                }
                why
            }
        };
        CheckReport {
            name: "latency".into(),
            result,
            critical: cfg.critical,
            weight: cfg.weight,
            canary,
            baseline: Some(baseline),
            statistic: Statistic::new(log_e, pass_p),
            evidence: levels.words(
                result,
                log_e,
                Some(format!("+{:.0}%", cfg.pass_bound * 100.0)),
            ),
            detail,
            exemplars: Vec::new(),
        }
    }

    /// Says that the figures pooled over endpoints are not what is
    /// compared, when they are not.
    fn by_endpoint(&self) -> String {
        match self.endpoints.len() {
            0 | 1 => String::new(),
            n => format!(" (compared endpoint by endpoint, {n} endpoints, so a different mix is not a regression)"),
        }
    }

    /// The chance that every tested quantile has passed `seconds` from now
    /// (see `DistributionTest::pass_chance`).
    pub fn pass_chance(&self, alpha: f64, seconds: f64, elapsed: f64, min_info: f64) -> f64 {
        self.test.pass_chance(alpha, seconds, elapsed, min_info)
    }

    /// Keeps the check passed once the release is green (see
    /// `DistributionTest::keep_pass`).
    pub fn keep_pass(&mut self) {
        self.test.keep_pass();
    }

    /// Seconds until a quantile not tested yet is (see
    /// `DistributionTest::untested_for`).
    pub fn untested_for(&self, elapsed: f64) -> Option<f64> {
        self.test.untested_for(elapsed)
    }

    /// The evidence of a regression, as a natural log.
    pub fn log_e(&self) -> f64 {
        self.test.evidence().log_e
    }
}

#[cfg(test)]
mod tests {
    use super::Shown;
    use crate::window::Distribution;

    #[test]
    fn an_endpoint_p95_is_read_again_once_its_requests_grow_by_10_percent() {
        let (mut d, mut shown) = (Distribution::default(), Shown::default());
        assert_eq!(shown.p95(&d), None);
        d.record(10_000, 100);
        let fast = shown.p95(&d);
        assert!(
            fast.is_some_and(|ms| (10.0..10.1).contains(&ms)),
            "{fast:?}"
        );
        // 10 slow requests more: within 10%, the figure stays.
        d.record(900_000, 10);
        assert_eq!(shown.p95(&d), fast);
        // The 11th: read again.
        d.record(900_000, 1);
        assert!(shown.p95(&d).unwrap() > 800.0);
        // Emptied: read again at once.
        d = Distribution::default();
        assert_eq!(shown.p95(&d), None);
    }
}
