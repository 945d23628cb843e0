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
            ready,
        } = self.test.evidence();
        let result = levels.result(ready && canary.requests > 0, log_e, true, passed);
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
                "canary p50 {} / p95 {} vs baseline {} / {}: within {:.0}% of the baseline",
                ms(canary.p50_ms),
                ms(canary.p95_ms),
                ms(baseline.p50_ms),
                ms(baseline.p95_ms),
                cfg.pass_bound * 100.0
            ),
            CheckResult::Marginal => format!(
                "canary p50 {} / p95 {} vs baseline {} / {}: not conclusive yet",
                ms(canary.p50_ms),
                ms(canary.p95_ms),
                ms(baseline.p50_ms),
                ms(baseline.p95_ms)
            ),
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
        }
    }
}
