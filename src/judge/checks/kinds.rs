//! Error kinds as evidence: every kind of failed request either cohort
//! shows is tested like the error ratio (the canary's share of the kind's
//! errors against its share of the traffic), at a red level split across
//! the kinds a release names. A kind the baseline never shows, arriving a
//! handful at a time on the canary, is a regression the pooled error ratio
//! may take minutes to see; a kind both cohorts show at the same rate is
//! no evidence at all.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error_ratio::ErrorTest;
use super::{grouped, CheckResult, CohortStats, ExemplarRef, Levels};
use crate::config::ErrorRatioCheck;
use crate::judge::spending::{Look, PassTest};
use crate::model::OTHER_ERROR;
use crate::window::{Detail, MAX_ERROR_KINDS};

/// Failed requests by kind, as a release's detail counts them.
type KindCounts = Vec<(Arc<str>, u64)>;

/// One kind's result, as the verdict lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindReport {
    pub kind: Arc<str>,
    pub result: CheckResult,
    /// Requests, and failed requests of this kind, since judging began.
    pub canary: CohortStats,
    pub baseline: CohortStats,
    /// Anytime-valid e-value of the canary failing this way more often.
    pub e_value: f64,
    /// The evidence in words (see `Levels::words`).
    pub evidence: String,
    /// One sentence a person can act on.
    pub detail: String,
    /// The first canary request seen failing this way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_trace: Option<ExemplarRef>,
}

/// The tests of a comparison's error kinds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KindTests {
    tests: Vec<(Arc<str>, ErrorTest)>,
    /// Each cohort's counts by kind when last fed (a detail counts since
    /// its release was first seen); None before the first feed, which
    /// only takes them: what came before judging began is not evidence.
    seen: Option<[KindCounts; 2]>,
    /// Green's side: the canary's requests failing with kinds the
    /// baseline has not shown, against the error ratio's
    /// `new_kind_pass_bound_abs` of its requests. A new kind arrives a few
    /// at a time, too slowly for its evidence to stop a green that the
    /// pooled ratio allows; so green also rules out new kinds on that share
    /// of the requests.
    #[serde(default)]
    unshared: PassTest,
    /// Canary requests and their failures of kinds the baseline has not
    /// shown, since judging began.
    #[serde(default)]
    unshared_total: [u64; 2],
}

/// One cohort as the kinds test is shown it.
pub struct KindCounters<'a> {
    pub detail: &'a Detail,
    /// Its requests since the last tick.
    pub requests: u64,
}

/// Failed requests of `kind` in `now` beyond those in `before`.
fn fresh(now: &[(Arc<str>, u64)], before: &[(Arc<str>, u64)], kind: &str) -> u64 {
    let count = |t: &[(Arc<str>, u64)]| t.iter().find(|(k, _)| &**k == kind).map_or(0, |(_, n)| *n);
    count(now).saturating_sub(count(before))
}

impl KindTests {
    pub fn new_epoch(&mut self) {
        for (_, t) in &mut self.tests {
            t.new_epoch();
        }
    }

    /// Feeds each kind's failed requests of both cohorts since the last
    /// tick, against the requests of each.
    pub fn feed(
        &mut self,
        canary: &KindCounters<'_>,
        baseline: &KindCounters<'_>,
        cfg: &ErrorRatioCheck,
        look: Look,
    ) {
        let now = [
            canary.detail.error_kinds.clone(),
            baseline.detail.error_kinds.clone(),
        ];
        let Some(seen) = self.seen.replace(now.clone()) else {
            return;
        };
        // A kind is tested from its first failure in either cohort (which
        // side that is, is the evidence), while there is room: the first
        // `MAX_ERROR_KINDS`, the split of the red level.
        for (kind, _) in now[0].iter().chain(&now[1]) {
            if &**kind == OTHER_ERROR
                || self.tests.len() >= MAX_ERROR_KINDS
                || self.tests.iter().any(|(k, _)| k == kind)
            {
                continue;
            }
            if fresh(&now[0], &seen[0], kind) + fresh(&now[1], &seen[1], kind) > 0 {
                self.tests.push((kind.clone(), ErrorTest::surge()));
            }
        }
        let unshared: u64 = now[0]
            .iter()
            .filter(|(k, _)| &**k != OTHER_ERROR && !now[1].iter().any(|(b, _)| b == k))
            .map(|(k, _)| fresh(&now[0], &seen[0], k))
            .sum();
        self.unshared_total[0] += canary.requests;
        self.unshared_total[1] += unshared;
        if canary.requests > 0 {
            self.unshared
                .update(unshared, canary.requests, cfg.new_kind_pass_bound_abs, look);
        }
        for (kind, test) in &mut self.tests {
            let add = [
                canary.requests,
                fresh(&now[0], &seen[0], kind),
                baseline.requests,
                fresh(&now[1], &seen[1], kind),
            ];
            test.feed_counts(add, [0, 0], cfg, look);
        }
    }

    /// Whether green has ruled out kinds the baseline has not shown on
    /// `new_kind_pass_bound_abs` of the canary's requests; if not, why not.
    pub fn unshared_pending(&self, cfg: &ErrorRatioCheck) -> Option<String> {
        if self.unshared.passed() {
            return None;
        }
        let [n, x] = self.unshared_total;
        Some(format!(
            "error kinds the baseline has not shown ({} of {} canary requests; green rules out {:.2}%)",
            grouped(x),
            grouped(n),
            cfg.new_kind_pass_bound_abs * 100.0
        ))
    }

    /// The red level of one kind: the release's, split across the kinds.
    fn levels(levels: Levels) -> Levels {
        Levels {
            fail: levels.fail + (MAX_ERROR_KINDS as f64).ln(),
        }
    }

    /// Every kind the canary has failed with, worst first: fail when the
    /// canary fails this way more often beyond doubt (at the split level)
    /// by at least `tolerance_abs` of its requests, marginal while the
    /// evidence leans that way (half-way to the release's red level, which
    /// holds green back), pass otherwise.
    pub fn reports(&self, errors: &ErrorRatioCheck, levels: Levels) -> Vec<KindReport> {
        let leaning = levels.leaning();
        let split = Self::levels(levels);
        let mut out: Vec<KindReport> = self
            .tests
            .iter()
            .filter_map(|(kind, t)| {
                let [nc, xc, nb, xb] = t.totals();
                let log_e = t.log_e();
                if xc == 0 && log_e < leaning {
                    return None;
                }
                let canary = CohortStats::errors(nc, xc);
                let baseline = CohortStats::errors(nb, xb);
                let increase = canary
                    .error_ratio
                    .zip(baseline.error_ratio)
                    .map(|(c, b)| c - b);
                let result = if log_e >= split.fail
                    && increase.is_some_and(|d| d >= errors.tolerance_abs)
                {
                    CheckResult::Fail
                } else if log_e >= leaning {
                    CheckResult::Marginal
                } else {
                    CheckResult::Pass
                };
                let counts = format!(
                    "{} of {} canary requests, {} of {} on the baseline",
                    grouped(xc),
                    grouped(nc),
                    grouped(xb),
                    grouped(nb)
                );
                let new = if xb == 0 { "new error" } else { "error" };
                let detail = match result {
                    CheckResult::Fail => format!(
                        "{new} {kind}: {counts} (p<{:.0e}): the canary fails this way more often; roll back",
                        (-split.fail).exp()
                    ),
                    CheckResult::Marginal => {
                        format!("{new} {kind}: {counts}, leaning towards a regression, not shown yet")
                    }
                    _ => format!("{new} {kind}: {counts}, no sign of a regression"),
                };
                Some(KindReport {
                    kind: kind.clone(),
                    result,
                    canary,
                    baseline,
                    e_value: super::round_sig(log_e.exp()),
                    evidence: split.words_at(leaning, result, log_e, None),
                    detail,
                    first_trace: None,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.result
                .value()
                .min(2)
                .cmp(&a.result.value().min(2))
                .then(b.e_value.total_cmp(&a.e_value))
                .then(b.canary.requests.cmp(&a.canary.requests))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ErrorRatioCheck;

    fn detail(kinds: &[(&str, u64)]) -> Detail {
        Detail {
            error_kinds: kinds.iter().map(|(k, n)| (Arc::from(*k), *n)).collect(),
            ..Detail::default()
        }
    }

    const LOOK: Look = Look {
        alpha: 0.1,
        now: true,
    };

    /// Feeds one tick of 10 canary and 90 baseline requests.
    fn tick(tests: &mut KindTests, canary: &Detail, baseline: &Detail, cfg: &ErrorRatioCheck) {
        tests.feed(
            &KindCounters {
                detail: canary,
                requests: 10,
            },
            &KindCounters {
                detail: baseline,
                requests: 90,
            },
            cfg,
            LOOK,
        );
    }

    /// Ticks of 10 canary and 90 baseline requests: the canary fails with
    /// a new kind on the ticks `new_on`, and every `both_every` ticks
    /// both cohorts fail with a shared kind in proportion to traffic.
    fn run(new_on: &[u64], both_every: u64, ticks: u64) -> (KindTests, Vec<KindReport>) {
        let cfg = ErrorRatioCheck::default();
        let levels = Levels::new(0.99);
        let mut tests = KindTests::default();
        let (mut new, mut shared_c, mut shared_b) = (0u64, 0u64, 0u64);
        let mut reports = Vec::new();
        for t in 0..ticks {
            if new_on.contains(&t) {
                new += 1;
            }
            if both_every > 0 && t % both_every == 0 {
                shared_b += 9;
                shared_c += 1;
            }
            let cd = detail(&[("HTTP 503", shared_c), ("KeyError", new)]);
            let bd = detail(&[("HTTP 503", shared_b)]);
            tick(&mut tests, &cd, &bd, &cfg);
            reports = tests.reports(&cfg, levels);
        }
        (tests, reports)
    }

    #[test]
    fn a_handful_of_a_new_kind_on_the_canary_is_red_and_named() {
        let (_, reports) = run(&[5, 20, 31, 47, 60], 3, 80);
        let r = reports.iter().find(|r| &*r.kind == "KeyError").unwrap();
        assert_eq!(r.result, CheckResult::Fail, "{r:?}");
        assert_eq!((r.canary.errors, r.baseline.errors), (Some(5), Some(0)));
        // counted from the kind's first failure on
        assert_eq!(r.canary.requests, 750);
        assert!(
            r.detail.starts_with(
                "new error KeyError: 5 of 750 canary requests, 0 of 6,750 on the baseline"
            ),
            "{}",
            r.detail
        );
        assert_eq!(reports[0].kind, r.kind, "worst first");
    }

    #[test]
    fn two_new_failures_lean_and_a_shared_kind_is_no_evidence() {
        let (_, reports) = run(&[30, 40], 2, 80);
        let new = reports.iter().find(|r| &*r.kind == "KeyError").unwrap();
        assert_eq!(new.result, CheckResult::Marginal, "{new:?}");
        let shared = reports.iter().find(|r| &*r.kind == "HTTP 503").unwrap();
        assert_eq!(shared.result, CheckResult::Pass, "{shared:?}");
        assert!(shared.e_value < 1.0, "{shared:?}");
    }

    #[test]
    fn green_waits_until_a_new_kind_on_half_a_percent_would_have_shown() {
        // No new kind at all, 10 canary requests a tick: green's side of
        // new kinds passes only once a kind on 0.5% of requests would have
        // shown itself with little doubt (e^-4.5 ≈ 1% of the time not at
        // all by 900 requests). With the error ratio's 0.75% it passed at
        // about 550, where a 0.5% kind is still silent 6% of the time.
        let cfg = ErrorRatioCheck::default();
        let mut tests = KindTests::default();
        let mut passed_at = None;
        for t in 1..=200u64 {
            let (cd, bd) = (detail(&[]), detail(&[("HTTP 503", t)]));
            tick(&mut tests, &cd, &bd, &cfg);
            if passed_at.is_none() && tests.unshared_pending(&cfg).is_none() {
                passed_at = Some(t * 10);
            }
        }
        let at = passed_at.expect("green's side of new kinds never passed");
        assert!((800..=1200).contains(&at), "passed at {at} requests");
    }

    #[test]
    fn history_before_judging_is_not_evidence() {
        let cfg = ErrorRatioCheck::default();
        let mut tests = KindTests::default();
        let old = detail(&[("KeyError", 50)]);
        let none = detail(&[]);
        for _ in 0..3 {
            tests.feed(
                &KindCounters {
                    detail: &old,
                    requests: 10,
                },
                &KindCounters {
                    detail: &none,
                    requests: 90,
                },
                &cfg,
                LOOK,
            );
        }
        assert!(tests.reports(&cfg, Levels::new(0.99)).is_empty());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(16_200), "16,200");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
