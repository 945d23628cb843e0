//! The latency check, canary vs baseline, at the baseline's quantiles
//! (`[checks.latency] quantiles`), over the distribution test.

use super::distribution::{DistributionTest, Margins};
use super::{ms, CheckReport, CheckResult, CohortStats, Evidence, Levels, Statistic};
use crate::config::LatencyCheck;
use crate::judge::spending::Look;
use crate::window::Signals;
use serde::{Deserialize, Serialize};

/// Latency distribution, canary vs baseline, at several baseline quantiles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyTest {
    test: DistributionTest,
}

impl LatencyTest {
    pub fn new(cfg: &LatencyCheck) -> Self {
        Self {
            test: DistributionTest::new(&cfg.quantiles),
        }
    }

    pub fn new_epoch(&mut self) {
        self.test.new_epoch();
    }

    pub fn feed(
        &mut self,
        canary: &Signals,
        baseline: &Signals,
        baseline_window: &Signals,
        cfg: &LatencyCheck,
        epoch_over: bool,
        look: Look,
    ) {
        let m = Margins::latency(cfg);
        self.test.feed(
            &canary.latency,
            &baseline.latency,
            &baseline_window.latency,
            &m,
            epoch_over,
            look,
        );
    }

    pub fn report(
        &self,
        canary_window: &Signals,
        baseline_window: &Signals,
        cfg: &LatencyCheck,
        levels: Levels,
    ) -> CheckReport {
        let canary = CohortStats::latency(canary_window);
        let baseline = CohortStats::latency(baseline_window);
        let Evidence {
            log_e,
            pass_p,
            passed,
            worst: worst_q,
            worst_log_e,
            ready,
            thin,
        } = self.test.evidence();
        let calm = worst_log_e < levels.leaning();
        let result = levels.result(ready && canary.requests > 0, log_e, true, passed && calm);
        let quantiles = |w: &Signals| {
            cfg.quantiles
                .iter()
                .map(|&q| ms(w.latency.quantile(q).map(|us| us as f64 / 1000.0)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let names = cfg
            .quantiles
            .iter()
            .map(|q| format!("p{}", q * 100.0))
            .collect::<Vec<_>>()
            .join(" / ");
        let at = |q: f64| -> (Option<f64>, Option<f64>) {
            let get = |w: &Signals| w.latency.quantile(q).map(|us| us as f64 / 1000.0);
            (get(canary_window), get(baseline_window))
        };
        let detail = match result {
            CheckResult::Nodata => {
                "no latency observations yet from one of the cohorts".to_string()
            }
            CheckResult::Fail => {
                let q = worst_q;
                let (c, b) = at(q);
                format!(
                    "canary p{} latency {} vs baseline {} (p<{:.2}): the canary is slower; roll back",
                    (q * 100.0).round(),
                    ms(c),
                    ms(b),
                    (-levels.fail).exp()
                )
            }
            CheckResult::Pass => format!(
                "canary {names} {} vs baseline {}: within {:.0}% of the baseline",
                quantiles(canary_window),
                quantiles(baseline_window),
                cfg.pass_bound * 100.0
            ),
            CheckResult::Marginal => {
                let mut why = format!(
                    "canary {names} {} vs baseline {}: not conclusive yet",
                    quantiles(canary_window),
                    quantiles(baseline_window)
                );
                for (q, needed) in &thin {
                    why.push_str(&format!(
                        "; p{} is judged from {needed} canary requests on (it does not hold green back until then)",
                        q * 100.0
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
            detail,
            exemplars: Vec::new(),
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
