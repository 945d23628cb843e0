//! Guardrails: absolute limits on the canary alone (error ratio, latency
//! percentiles), as in a PrometheusRule, judged with or without a baseline.

use super::{
    ms, pct, quantile_name, ratio, CheckReport, CheckResult, CohortStats, Levels, Statistic,
};
use crate::config::Guardrails;
use crate::judge::eprocess::ChangeDetector;
use crate::judge::spending::{Look, PassTest};
use crate::window::Signals;
use serde::{Deserialize, Serialize};

/// One absolute limit on the canary: the share of its requests that are
/// errors (or slower than a latency limit) against the allowed share.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Guard {
    kind: GuardKind,
    worse: ChangeDetector,
    within: PassTest,
    events: u64,
    trials: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum GuardKind {
    ErrorRatio(f64),
    Latency { q: f64, max_us: u64 },
}

impl Guard {
    fn allowed(&self) -> f64 {
        match self.kind {
            GuardKind::ErrorRatio(r) => r,
            GuardKind::Latency { q, .. } => 1.0 - q,
        }
    }
}

/// The configured guardrails.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardTest {
    guards: Vec<Guard>,
}

impl GuardTest {
    pub fn new(cfg: &Guardrails) -> Self {
        let mut kinds: Vec<GuardKind> = cfg
            .max_error_ratio
            .map(GuardKind::ErrorRatio)
            .into_iter()
            .collect();
        kinds.extend(
            cfg.latency()
                .into_iter()
                .map(|(q, max)| GuardKind::Latency {
                    q,
                    max_us: max.as_micros() as u64,
                }),
        );
        Self {
            guards: kinds
                .into_iter()
                .map(|kind| Guard {
                    kind,
                    worse: ChangeDetector::default(),
                    within: PassTest::default(),
                    events: 0,
                    trials: 0,
                })
                .collect(),
        }
    }

    pub fn new_epoch(&mut self) {
        for g in &mut self.guards {
            g.worse.new_epoch();
        }
    }

    pub fn feed(&mut self, canary: &Signals, look: Look) {
        for g in &mut self.guards {
            let (k, m) = match g.kind {
                GuardKind::ErrorRatio(_) => (canary.errors, canary.requests),
                GuardKind::Latency { max_us, .. } => {
                    (canary.latency.count_above(max_us), canary.latency.count())
                }
            };
            let p0 = g.allowed();
            g.worse.update(k, m, p0);
            g.within.update(k, m, p0, look);
            g.events += k;
            g.trials += m;
        }
    }

    pub fn reports(&self, canary_window: &Signals, levels: Levels) -> Vec<CheckReport> {
        self.guards
            .iter()
            .map(|g| {
                let observed = ratio(g.events, g.trials);
                let log_e = g.worse.log_e();
                let breached = observed.is_some_and(|o| o > g.allowed());
                let result = levels.result(g.trials > 0, log_e, breached, g.within.passed());
                let (name, canary, what) = match g.kind {
                    GuardKind::ErrorRatio(max) => (
                        "guardrail_error_ratio".to_string(),
                        CohortStats::errors(g.trials, g.events),
                        format!("error ratio {} (limit {})", pct(observed), pct(Some(max))),
                    ),
                    GuardKind::Latency { q, max_us } => {
                        let stats = CohortStats::latency(canary_window);
                        let p = canary_window
                            .latency
                            .quantile(q)
                            .map(|us| us as f64 / 1000.0);
                        (
                            format!("guardrail_{}", quantile_name(q)),
                            stats,
                            format!(
                                "{} latency {} (limit {})",
                                quantile_name(q),
                                ms(p),
                                ms(Some(max_us as f64 / 1000.0))
                            ),
                        )
                    }
                };
                let detail = match result {
                    CheckResult::Nodata => "no canary requests yet".to_string(),
                    CheckResult::Fail => format!("canary {what} breaches its guardrail; roll back"),
                    CheckResult::Pass => format!("canary {what} is within its guardrail"),
                    CheckResult::Marginal => format!("canary {what}: not conclusive yet"),
                };
                CheckReport {
                    name,
                    result,
                    critical: true,
                    weight: 1.0,
                    canary,
                    baseline: None,
                    statistic: Statistic::new(log_e, g.within.p_value()),
                    evidence: levels.words(result, log_e, Some("its limit".into())),
                    detail,
                    exemplars: Vec::new(),
                }
            })
            .collect()
    }
}
