//! The error ratio per endpoint: each endpoint of the canary's table that
//! the baseline serves too is tested like the whole release, at a level
//! split across the `top` endpoints so that all of them together keep the
//! false-red bound of one check. A regression confined to one endpoint is
//! not diluted by the others' traffic.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error_ratio::ErrorTest;
use super::{pct, CheckResult, CohortStats, Levels};
use crate::config::{EndpointsCheck, ErrorRatioCheck};
use crate::judge::spending::Look;
use crate::model::OTHER_ENDPOINT;
use crate::window::{Detail, Signals};

/// One endpoint's result, as the verdict lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub name: Arc<str>,
    pub result: CheckResult,
    pub canary: CohortStats,
    pub baseline: CohortStats,
    /// Anytime-valid e-value of a regression on this endpoint.
    pub e_value: f64,
    /// The evidence in words (see `Levels::words`).
    pub evidence: String,
    /// One sentence a person can act on.
    pub detail: String,
}

/// The error tests of a comparison's endpoints, by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointTests {
    tests: Vec<(Arc<str>, ErrorTest)>,
}

/// One cohort's endpoint counters as the judge is shown them.
pub struct EndpointCounters<'a> {
    pub detail: &'a Detail,
    pub pending: &'a Signals,
    pub window: &'a Signals,
}

impl EndpointTests {
    pub fn new_epoch(&mut self) {
        for (_, t) in &mut self.tests {
            t.new_epoch();
        }
    }

    /// Feeds each endpoint both cohorts served since the last tick.
    pub fn feed(
        &mut self,
        canary: &EndpointCounters<'_>,
        baseline: &EndpointCounters<'_>,
        cfg: &ErrorRatioCheck,
        look: Look,
    ) {
        for (ci, name) in canary.detail.endpoints.iter().enumerate() {
            if &**name == OTHER_ENDPOINT {
                // The pools of two releases hold different endpoints.
                continue;
            }
            let Some(bi) = baseline.detail.endpoints.iter().position(|n| n == name) else {
                continue;
            };
            let c = canary.pending.endpoint(ci);
            let b = baseline.pending.endpoint(bi);
            if c == [0; 2] && b == [0; 2] {
                continue;
            }
            let i = match self.tests.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    self.tests.push((name.clone(), ErrorTest::default()));
                    self.tests.len() - 1
                }
            };
            self.tests[i].1.feed_counts(
                [c[0], c[1], b[0], b[1]],
                baseline.window.endpoint(bi),
                cfg,
                look,
            );
        }
    }

    /// The red level of one endpoint: the release's, split `top` ways.
    pub fn levels(levels: Levels, cfg: &EndpointsCheck) -> Levels {
        Levels {
            fail: levels.fail + (cfg.top.max(1) as f64).ln(),
        }
    }

    /// Every endpoint judged so far, worst first: fail when its errors
    /// rose beyond doubt (at the split level), marginal when the evidence
    /// leans that way, half-way to the release's own red level (which
    /// holds green back: a regression on one endpoint is not promoted while
    /// it is being proven), pass otherwise; no data until both cohorts
    /// have `min_requests` on it.
    pub fn reports(
        &self,
        cfg: &EndpointsCheck,
        errors: &ErrorRatioCheck,
        levels: Levels,
    ) -> Vec<EndpointReport> {
        let leaning = levels.leaning();
        let levels = Self::levels(levels, cfg);
        let mut out: Vec<EndpointReport> = self
            .tests
            .iter()
            .map(|(name, t)| {
                let [nc, xc, nb, xb] = t.totals();
                let canary = CohortStats::errors(nc, xc);
                let baseline = CohortStats::errors(nb, xb);
                let log_e = t.log_e();
                let (rc, rb) = (canary.error_ratio, baseline.error_ratio);
                let increase = rc.zip(rb).map(|(c, b)| c - b);
                let result = if nc < cfg.min_requests || nb < cfg.min_requests {
                    CheckResult::Nodata
                } else if log_e >= levels.fail && increase.is_some_and(|d| d >= errors.tolerance_abs)
                {
                    CheckResult::Fail
                } else if log_e >= leaning {
                    CheckResult::Marginal
                } else {
                    CheckResult::Pass
                };
                let detail = match result {
                    CheckResult::Fail => format!(
                        "{name}: error ratio {} → {} (p<{:.0e}): the canary fails more often on this endpoint; roll back",
                        pct(rb),
                        pct(rc),
                        (-levels.fail).exp()
                    ),
                    CheckResult::Marginal => format!(
                        "{name}: error ratio {} → {}, leaning towards a regression, not shown yet",
                        pct(rb),
                        pct(rc)
                    ),
                    CheckResult::Pass => format!(
                        "{name}: error ratio {} → {}, no sign of a regression",
                        pct(rb),
                        pct(rc)
                    ),
                    CheckResult::Nodata => format!(
                        "{name}: fewer than {} requests from one of the cohorts",
                        cfg.min_requests
                    ),
                };
                EndpointReport {
                    name: name.clone(),
                    result,
                    canary,
                    baseline,
                    e_value: super::round_sig(log_e.exp()),
                    evidence: levels.words_at(leaning, result, log_e, None),
                    detail,
                }
            })
            .collect();
        let rank = |r: CheckResult| match r {
            CheckResult::Fail => 0,
            CheckResult::Marginal => 1,
            CheckResult::Pass => 2,
            CheckResult::Nodata => 3,
        };
        out.sort_by(|a, b| {
            rank(a.result)
                .cmp(&rank(b.result))
                .then(b.e_value.total_cmp(&a.e_value))
                .then(b.canary.requests.cmp(&a.canary.requests))
        });
        out
    }
}
