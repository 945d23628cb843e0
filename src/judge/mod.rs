//! The judge: every tick, each release's new samples (and its baseline's)
//! feed its checks, and the checks' results become a green / yellow / red
//! verdict with its reasons. Pure: the store and the time are passed in.

pub mod checks;
pub mod eprocess;
mod eta;
mod exemplars;
pub mod spending;
mod story;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{ChecksConfig, JudgeConfig};
use crate::model::{format_time, UnixNanos, NANOS_PER_SEC};
use crate::window::{Detail, Signals};
use checks::{
    CheckReport, CheckResult, EndpointCounters, EndpointReport, EndpointTests, ErrorTest,
    GuardTest, KindCounters, KindReport, KindTests, LatencyTest, Levels, MetricTest,
};
use story::Decider;
pub use story::{Figures, Place, RedEvidence};

/// green / yellow / red.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Green,
    Yellow,
    Red,
}

impl Color {
    /// The one string form: `green`, `yellow`, `red` (JSON, gRPC, metrics, CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Green => "green",
            Color::Yellow => "yellow",
            Color::Red => "red",
        }
    }

    /// 0 green, 1 yellow, 2 red: the verdict metric's value.
    pub fn value(self) -> u8 {
        match self {
            Color::Green => 0,
            Color::Yellow => 1,
            Color::Red => 2,
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a color.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("verdict must be green, yellow or red, not {0:?}")]
pub struct UnknownColor(pub String);

impl std::str::FromStr for Color {
    type Err = UnknownColor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Color::Green, Color::Yellow, Color::Red]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownColor(s.to_string()))
    }
}

/// The comparison state against one particular baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Comparison {
    baseline: Arc<str>,
    errors: ErrorTest,
    latency: LatencyTest,
    metrics: Vec<MetricTest>,
    #[serde(default)]
    endpoints: EndpointTests,
    #[serde(default)]
    kinds: KindTests,
    /// When judging against this baseline began.
    #[serde(default)]
    started: UnixNanos,
}

/// A release's judgement: its checks' evidence and the current verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judgement {
    comparison: Option<Comparison>,
    guards: GuardTest,
    next_epoch: UnixNanos,
    pub color: Color,
    pub reason: String,
    /// Rebuilt at every tick from the evidence, so not checkpointed.
    #[serde(skip)]
    pub checks: Vec<CheckReport>,
    /// The error ratio per endpoint, worst first (rebuilt every tick).
    #[serde(skip)]
    pub endpoints: Vec<EndpointReport>,
    /// Kinds of failed canary requests the baseline has not shown, most
    /// frequent first (rebuilt every tick).
    #[serde(skip)]
    pub new_errors: Vec<(Arc<str>, u64)>,
    /// Each kind of error the canary fails with, tested against the
    /// baseline, worst first (rebuilt every tick).
    #[serde(skip)]
    pub kinds: Vec<KindReport>,
    /// While yellow for want of evidence: about how long until the
    /// verdict is decided at the current traffic, in seconds.
    #[serde(skip)]
    pub decision_eta: Option<u64>,
    /// When the verdict last changed color.
    pub changed_at: UnixNanos,
    /// When it turned red (red is final for a release).
    pub red_since: Option<UnixNanos>,
    /// What it turned red on, with the numbers then.
    #[serde(default)]
    pub red_evidence: Option<RedEvidence>,
    /// The same numbers at the last tick (rebuilt every tick).
    #[serde(skip)]
    pub red_now: Option<Figures>,
    /// Where the red is at the last tick (rebuilt every tick).
    #[serde(skip)]
    pub red_place: Place,
    /// When it first turned green.
    pub passed_at: Option<UnixNanos>,
    pub evaluated_at: Option<UnixNanos>,
    /// How many times its verdict was given or changed color: the number
    /// of the last change, which names its event in the ledger.
    pub changes: u32,
    /// The last deployment it was compared with.
    last_baseline: Option<Arc<str>>,
    /// Said with every reason once the baseline changed from one
    /// deployment to another (judging restarted then).
    note: Option<String>,
}

impl Judgement {
    /// Red since `since` with `reason`, as the ledger recorded it before a
    /// restart that lost the evidence (the checkpoint was older): red is
    /// final for a release, so it stays red, and being red again is no
    /// news (its first verdict was given before the restart).
    pub fn hold_red(&mut self, since: UnixNanos, reason: &str) {
        if self.red_since.is_some() {
            return;
        }
        self.color = Color::Red;
        self.red_since = Some(since);
        self.reason = reason.to_string();
        self.changed_at = since;
        self.evaluated_at.get_or_insert(since);
    }

    /// The last deployment it was compared with.
    pub fn last_baseline(&self) -> Option<&Arc<str>> {
        self.last_baseline.as_ref()
    }

    pub fn new(checks: &ChecksConfig, now: UnixNanos) -> Self {
        Self {
            comparison: None,
            guards: GuardTest::new(&checks.guardrails),
            next_epoch: now,
            color: Color::Yellow,
            reason: "not judged yet".into(),
            checks: Vec::new(),
            endpoints: Vec::new(),
            new_errors: Vec::new(),
            kinds: Vec::new(),
            decision_eta: None,
            changed_at: now,
            red_since: None,
            red_evidence: None,
            red_now: None,
            red_place: Place::default(),
            passed_at: None,
            changes: 0,
            evaluated_at: None,
            last_baseline: None,
            note: None,
        }
    }
}

/// What the judge is shown of a release at a tick.
pub struct View<'a> {
    pub first_seen: UnixNanos,
    /// Samples since the previous tick.
    pub pending: &'a Signals,
    /// The rolling window.
    pub window: &'a Signals,
    /// Its endpoint table, error kinds and exemplars.
    pub detail: &'a Detail,
    /// Its latencies are read from histogram buckets (a metrics-only
    /// release): quantiles are interpolated within a bucket.
    pub buckets: bool,
}

impl View<'_> {
    /// Its counters by endpoint, as the endpoint and latency checks read them.
    fn counters(&self) -> EndpointCounters<'_> {
        EndpointCounters {
            detail: self.detail,
            pending: self.pending,
            window: self.window,
        }
    }
}

/// The baseline as the judge is shown it.
pub struct BaselineView<'a> {
    pub id: &'a Arc<str>,
    pub view: View<'a>,
}

/// Why a release is judged without a baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Unpaired {
    /// Nothing to compare with: the only deployment, or one declaring
    /// itself the baseline or stable.
    Alone,
    /// It is the baseline these releases are compared with.
    BaselineOf(Vec<Arc<str>>),
    /// Several deployments, and the traffic is still being watched to
    /// tell which one is the baseline.
    Settling {
        watched: UnixNanos,
        settle: UnixNanos,
    },
    /// Several deployments, none serving clearly more than the others:
    /// the largest two and their shares.
    Ambiguous { top: Vec<(Arc<str>, f64)> },
}

/// What a release is compared with at a tick.
pub enum Pairing<'a> {
    Compared(BaselineView<'a>),
    Unpaired(Unpaired),
}

/// Configuration the judge reads, with its evidence thresholds.
#[derive(Debug, Clone)]
pub struct Judge {
    pub config: JudgeConfig,
    pub checks: ChecksConfig,
    levels: Levels,
}

impl Judge {
    pub fn new(judge: &JudgeConfig, checks: &ChecksConfig) -> Self {
        Self {
            levels: Levels::new(judge.confidence),
            config: judge.clone(),
            checks: checks.clone(),
        }
    }

    /// Feeds one tick's samples and re-evaluates; returns whether the
    /// verdict is news: its first one, or a change of color.
    pub fn evaluate(
        &self,
        j: &mut Judgement,
        canary: View<'_>,
        pairing: Pairing<'_>,
        now: UnixNanos,
    ) -> bool {
        let (baseline, unpaired) = match pairing {
            Pairing::Compared(b) => (Some(b), None),
            Pairing::Unpaired(u) => (None, Some(u)),
        };
        let epoch_over = now >= j.next_epoch;
        if epoch_over {
            j.next_epoch = now.saturating_add(self.config.epoch.as_nanos() as u64);
        }
        // A new baseline (the old one expired, or one declared itself)
        // starts the comparison afresh: evidence against another cohort
        // says nothing about this one.
        if let Some(b) = &baseline {
            if j.comparison.as_ref().map(|c| &c.baseline) != Some(b.id) {
                if let Some(old) = j.last_baseline.as_ref().filter(|old| *old != b.id) {
                    j.note = Some(format!(
                        "compared with {} since {}, judging restarted (was {old})",
                        b.id,
                        format_time(now)
                    ));
                }
                j.last_baseline = Some(b.id.clone());
                j.comparison = Some(Comparison {
                    baseline: b.id.clone(),
                    errors: ErrorTest::default(),
                    latency: LatencyTest::new(&self.checks.latency),
                    metrics: self
                        .checks
                        .metric
                        .iter()
                        .enumerate()
                        .map(|(i, m)| MetricTest::new(i, m))
                        .collect(),
                    endpoints: EndpointTests::default(),
                    kinds: KindTests::default(),
                    started: now,
                });
            }
        } else {
            j.comparison = None;
        }
        if epoch_over {
            j.guards.new_epoch();
            if let Some(c) = &mut j.comparison {
                c.errors.new_epoch();
                c.latency.new_epoch();
                c.endpoints.new_epoch();
                c.kinds.new_epoch();
                for m in &mut c.metrics {
                    m.new_epoch();
                }
            }
        }
        // Green is possible once the canary is old enough; the pass tests
        // look (and spend their error budget) only from then on.
        let look = spending::Look {
            alpha: 1.0 - self.config.green_confidence,
            now: now.saturating_sub(canary.first_seen)
                >= self.config.min_duration.as_nanos() as u64,
        };
        j.guards.feed(canary.pending, look);
        let mut reports = Vec::new();
        let mut endpoints = Vec::new();
        let mut kinds = Vec::new();
        let mut kinds_pending = None;
        if let (Some(c), Some(b)) = (&mut j.comparison, &baseline) {
            if self.checks.error_ratio.enabled {
                c.errors.feed(
                    canary.pending,
                    b.view.pending,
                    b.view.window,
                    &self.checks.error_ratio,
                    look,
                );
                reports.push(
                    c.errors
                        .report(&self.checks.error_ratio, self.levels, canary.window),
                );
                c.kinds.feed(
                    &KindCounters {
                        detail: canary.detail,
                        requests: canary.pending.requests,
                    },
                    &KindCounters {
                        detail: b.view.detail,
                        requests: b.view.pending.requests,
                    },
                    &self.checks.error_ratio,
                    look,
                );
                kinds = c.kinds.reports(&self.checks.error_ratio, self.levels);
                kinds_pending = c.kinds.unshared_pending(&self.checks.error_ratio);
                if self.checks.endpoints.enabled {
                    c.endpoints.feed(
                        &canary.counters(),
                        &b.view.counters(),
                        &self.checks.error_ratio,
                        look,
                    );
                    endpoints = c.endpoints.reports(
                        &self.checks.endpoints,
                        &self.checks.error_ratio,
                        self.levels,
                    );
                }
            }
            if self.checks.latency.enabled {
                c.latency.feed(
                    &canary.counters(),
                    &b.view.counters(),
                    &self.checks.latency,
                    epoch_over,
                    look,
                );
                reports.push(c.latency.report(
                    canary.window,
                    b.view.window,
                    &self.checks.latency,
                    self.levels,
                    canary.buckets || b.view.buckets,
                ));
            }
            for (m, cfg) in c.metrics.iter_mut().zip(&self.checks.metric) {
                m.feed(
                    canary.pending,
                    b.view.pending,
                    b.view.window,
                    epoch_over,
                    look,
                );
                reports.push(m.report(cfg, canary.window, b.view.window, self.levels));
            }
        }
        reports.extend(j.guards.reports(canary.window, self.levels));
        if let (Some(c), Some(_)) = (&mut j.comparison, &baseline) {
            // Each endpoint's p95 beside its errors, once latency is
            // compared endpoint by endpoint.
            for e in &mut endpoints {
                (e.canary.p95_ms, e.baseline.p95_ms) = c.latency.endpoint_p95(&e.name);
            }
        }
        self.attach_exemplars(&mut reports, &endpoints, canary.detail);
        self.attach_first_traces(&mut kinds, canary.detail);
        j.new_errors = baseline
            .as_ref()
            .map(|b| canary.detail.new_error_kinds(b.view.detail))
            .unwrap_or_default();

        j.decision_eta = None;
        let (color, reason, decider) = if j.red_since.is_some() {
            (Color::Red, j.reason.clone(), None)
        } else {
            let findings = Findings {
                reports: &reports,
                endpoints: &endpoints,
                kinds: &kinds,
                kinds_pending,
            };
            let (color, mut reason, undecided, decider) =
                self.decide(findings, &canary, baseline.as_ref(), unpaired.as_ref(), now);
            if undecided {
                if let (Some(c), Some(b)) = (&j.comparison, &baseline) {
                    // Evidence leaning towards a regression holds green
                    // back for as long as it takes to recede, which no
                    // rate tells.
                    let leaning = self.levels.leaning();
                    let held = reports.iter().any(|r| {
                        r.result == CheckResult::Marginal && r.statistic.e_value.ln() >= leaning
                    }) || endpoints.iter().any(|e| e.result == CheckResult::Marginal)
                        || kinds.iter().any(|k| k.result == CheckResult::Marginal);
                    j.decision_eta = self.eta(c, &canary, &b.view, now, held);
                    match j.decision_eta {
                        Some(s) => reason.push_str(&format!(
                            "; a decision in about {} at the current traffic",
                            format_duration(s)
                        )),
                        None => reason.push_str("; no estimate yet of when it will be decided"),
                    }
                }
            }
            if !j.new_errors.is_empty() {
                let kinds: Vec<String> = j
                    .new_errors
                    .iter()
                    .take(3)
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect();
                reason.push_str(&format!(
                    "; error kinds the baseline has not shown: {}",
                    kinds.join(", ")
                ));
            }
            match &j.note {
                Some(note) => (color, format!("{reason} ({note})"), decider),
                None => (color, reason, decider),
            }
        };
        // A red tells one story: what it was decided on then, the same
        // numbers now, and where the failures are.
        let tick = story::Tick {
            reports: &reports,
            endpoints: &endpoints,
            kinds: &kinds,
            latency: match (&j.comparison, &baseline) {
                (Some(c), Some(b)) => Some((&c.latency, canary.window, b.view.window)),
                _ => None,
            },
        };
        if let Some(d) = decider.filter(|_| j.red_since.is_none()) {
            j.red_evidence = RedEvidence::of(d, &tick);
        }
        j.red_now = None;
        j.red_place = Place::default();
        let reason = match (&j.red_evidence, color) {
            (Some(ev), Color::Red) => {
                j.red_now = ev.figures(&tick);
                j.red_place = story::place(ev, &tick);
                let since = j.red_since.unwrap_or(now);
                ev.story(since, j.red_now.as_ref(), j.red_place.text.clone())
            }
            _ => reason,
        };
        j.checks = reports;
        j.endpoints = endpoints;
        j.kinds = kinds;
        // A release's first verdict is news too (watchers learn of it).
        let changed = color != j.color || j.evaluated_at.is_none();
        j.evaluated_at = Some(now);
        if changed {
            j.changed_at = now;
            j.changes = j.changes.saturating_add(1);
            if color == Color::Red && j.red_since.is_none() {
                j.red_since = Some(now);
            }
            if color == Color::Green && j.passed_at.is_none() {
                j.passed_at = Some(now);
            }
        }
        if color == Color::Green {
            if let Some(c) = j.comparison.as_mut() {
                c.latency.keep_pass();
                for m in &mut c.metrics {
                    m.keep_pass();
                }
            }
        }
        j.color = color;
        j.reason = reason;
        changed
    }

    /// The color and its reason, and whether it is yellow for want of
    /// evidence (when an estimate of the time to a decision helps).
    fn decide(
        &self,
        findings: Findings<'_>,
        canary: &View<'_>,
        baseline: Option<&BaselineView<'_>>,
        unpaired: Option<&Unpaired>,
        now: UnixNanos,
    ) -> (Color, String, bool, Option<Decider>) {
        let Findings {
            reports,
            endpoints,
            kinds,
            kinds_pending,
        } = findings;
        // A baseline is not rolled out: its verdict says whom it serves and
        // asks for nothing.
        if let Some(Unpaired::BaselineOf(ids)) = unpaired {
            return (
                Color::Yellow,
                format!(
                    "baseline of {}: the release(s) rolling out are compared with this deployment; nothing to do here",
                    ids.join(", ")
                ),
                false,
                None,
            );
        }
        if let Some((i, failed)) = reports
            .iter()
            .enumerate()
            .filter(|(_, r)| r.result == CheckResult::Fail && r.critical)
            .max_by(|(_, a), (_, b)| a.statistic.e_value.total_cmp(&b.statistic.e_value))
        {
            let mut reason = failed.detail.clone();
            // The pooled error ratio says that; a kind of error leaning
            // towards (or shown as) a regression says where to look.
            if failed.name == "error_ratio" {
                if let Some(k) = kinds.iter().find(|k| k.result != CheckResult::Pass) {
                    reason.push_str(&format!("; {}", k.detail));
                }
            }
            return (Color::Red, reason, false, Some(Decider::Check(i)));
        }
        let critical = self.checks.error_ratio.critical;
        if let Some(i) = endpoints
            .iter()
            .position(|e| e.result == CheckResult::Fail && critical)
        {
            let reason = endpoints[i].detail.clone();
            return (Color::Red, reason, false, Some(Decider::Endpoint(i)));
        }
        if let Some(i) = kinds
            .iter()
            .position(|k| k.result == CheckResult::Fail && critical)
        {
            let reason = kinds[i].detail.clone();
            return (Color::Red, reason, false, Some(Decider::Kind(i)));
        }
        match unpaired {
            Some(Unpaired::Ambiguous { top }) => {
                let shares: Vec<String> = top
                    .iter()
                    .map(|(id, share)| format!("{id} {:.0}%", share * 100.0))
                    .collect();
                return (
                    Color::Yellow,
                    format!(
                        "ambiguous baseline: no deployment serves clearly the most traffic ({}); set deployment.role=canary on the release rolling out, or baseline on the one to compare with",
                        shares.join(", ")
                    ),
                    false,
                    None,
                );
            }
            Some(Unpaired::Settling { watched, settle }) => {
                return (
                    Color::Yellow,
                    format!(
                        "choosing the baseline: watching which deployment serves most of the traffic ({}s of {}s)",
                        watched / NANOS_PER_SEC,
                        settle / NANOS_PER_SEC
                    ),
                    false,
                    None,
                );
            }
            _ => {}
        }
        let failed: Vec<&str> = reports
            .iter()
            .filter(|r| r.result == CheckResult::Fail)
            .map(|r| r.name.as_str())
            .collect();
        let guards_only = baseline.is_none();
        if guards_only && reports.is_empty() {
            return (
                Color::Yellow,
                "no baseline to compare with and no guardrails configured: deploy a baseline or set [checks.guardrails]".into(),
                false,
                None,
            );
        }
        let min = self.config.min_requests;
        let age = now.saturating_sub(canary.first_seen);
        let min_age = self.config.min_duration.as_nanos() as u64;
        let canary_requests = reports
            .iter()
            .map(|r| r.canary.requests)
            .max()
            .unwrap_or(0)
            .max(canary.window.requests);
        let baseline_requests = reports
            .iter()
            .filter_map(|r| r.baseline.as_ref().map(|b| b.requests))
            .max();
        let short =
            canary_requests < min || baseline_requests.is_some_and(|b| b < min) || age < min_age;
        if short {
            let mut why = format!(
                "insufficient data: canary {canary_requests} of {min} requests over {}s of {}s",
                age / NANOS_PER_SEC,
                min_age / NANOS_PER_SEC
            );
            if let Some(b) = baseline_requests {
                why.push_str(&format!(", baseline {b} of {min} requests"));
            }
            if guards_only {
                why.push_str("; no baseline, judged on guardrails alone");
            }
            return (Color::Yellow, why, true, None);
        }
        let pending: Vec<&CheckReport> = reports
            .iter()
            .filter(|r| r.result != CheckResult::Pass)
            .collect();
        let leaning: Vec<String> = endpoints
            .iter()
            .filter(|e| e.result == CheckResult::Marginal)
            .map(|e| format!("endpoint {}", e.detail))
            .chain(
                kinds
                    .iter()
                    .filter(|k| k.result == CheckResult::Marginal)
                    .map(|k| k.detail.clone()),
            )
            .chain(kinds_pending)
            .collect();
        if pending.is_empty() && leaning.is_empty() {
            let what = if guards_only {
                "no baseline; every guardrail holds".to_string()
            } else {
                let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
                format!(
                    "canary within tolerance of baseline on {}",
                    names.join(", ")
                )
            };
            return (Color::Green, format!("{what}: promote"), false, None);
        }
        let mut why = if !failed.is_empty() {
            format!(
                "marginal: non-critical check(s) failing: {}",
                failed.join(", ")
            )
        } else {
            let names: Vec<String> = pending
                .iter()
                .map(|r| format!("{} ({})", r.name, r.result))
                .chain(leaning)
                .collect();
            format!("marginal: not conclusive yet on {}", names.join(", "))
        };
        if guards_only {
            why.push_str("; no baseline, judged on guardrails alone");
        }
        (Color::Yellow, why, failed.is_empty() && !guards_only, None)
    }
}

/// What the checks found at a tick, as `decide` weighs it.
struct Findings<'a> {
    reports: &'a [CheckReport],
    endpoints: &'a [EndpointReport],
    kinds: &'a [KindReport],
    /// Why green has not ruled out new error kinds yet, if it has not.
    kinds_pending: Option<String>,
}

/// "45 s", "3 min", "2 h".
fn format_duration(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", (secs + 30) / 60),
        _ => format!("{} h", (secs + 1800) / 3600),
    }
}

#[cfg(test)]
mod tests;
