//! A red's story: what it was decided on, kept as it was then, and the
//! same numbers now, told in one sentence that every output repeats (the
//! API's `reason`, the page's tile and banner, Slack, the alert): "red
//! since 14:30:39 UTC, when the error ratio was 12.50% vs 0.22% over 31
//! canary requests; now 5.19% vs 0.50% over 1,560: roll back". A person
//! never sees a frozen number beside a live one and wonders which is true.
//! (Kept in checkpoints, which postcard writes field by field: no field is
//! ever skipped.)

use serde::{Deserialize, Serialize};

use super::checks::{
    grouped, odds, pct, quantile_name, CheckReport, CheckResult, CohortStats, EndpointReport,
    KindReport, LatencyTest,
};
use crate::model::{UnixNanos, NANOS_PER_SEC};
use crate::window::Signals;

/// The numbers a red was decided on, or the same numbers now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The compared value of each cohort: an error ratio, a latency in
    /// milliseconds (at the evidence's `quantile`), or a metric's value.
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    /// The canary requests they are over, and how many failed (error
    /// checks); the baseline's likewise.
    pub canary_requests: u64,
    pub canary_errors: Option<u64>,
    pub baseline_requests: Option<u64>,
    pub baseline_errors: Option<u64>,
    /// The evidence of a regression then (or now).
    pub e_value: f64,
}

/// What turned a release red, as it was at that tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedEvidence {
    /// What decided it: a check's name (`error_ratio`, `latency`, a
    /// guardrail or metric check), `endpoint` or `error_kind`.
    pub check: String,
    /// The endpoint or kind of error it was decided on, if one.
    pub subject: Option<String>,
    /// The latency quantile compared, for latency.
    pub quantile: Option<f64>,
    /// Its numbers then.
    pub then: Figures,
    /// The sentence it was decided with.
    pub detail: String,
}

/// Which of a tick's findings decided a red.
#[derive(Debug, Clone, Copy)]
pub(super) enum Decider {
    Check(usize),
    Endpoint(usize),
    Kind(usize),
}

/// A tick's findings, as the story reads them.
pub(super) struct Tick<'a> {
    pub reports: &'a [CheckReport],
    pub endpoints: &'a [EndpointReport],
    pub kinds: &'a [KindReport],
    /// The latency test and both windows, when compared.
    pub latency: Option<(&'a LatencyTest, &'a Signals, &'a Signals)>,
}

impl RedEvidence {
    /// The evidence `decider` gave at this tick.
    pub(super) fn of(decider: Decider, f: &Tick<'_>) -> Option<Self> {
        let (check, subject, quantile, detail) = match decider {
            Decider::Check(i) => {
                let r = f.reports.get(i)?;
                let quantile = (r.name == "latency")
                    .then(|| f.latency.map(|(t, _, _)| t.worst_quantile()))
                    .flatten()
                    .or_else(|| guardrail_quantile(&r.name));
                let subject = (r.name == "latency")
                    .then(|| f.latency.and_then(|(t, _, _)| t.worst_endpoint_name()))
                    .flatten();
                (r.name.clone(), subject, quantile, r.detail.clone())
            }
            Decider::Endpoint(i) => {
                let e = f.endpoints.get(i)?;
                (
                    "endpoint".into(),
                    Some(e.name.to_string()),
                    None,
                    e.detail.clone(),
                )
            }
            Decider::Kind(i) => {
                let k = f.kinds.get(i)?;
                (
                    "error_kind".into(),
                    Some(k.kind.to_string()),
                    None,
                    k.detail.clone(),
                )
            }
        };
        let mut ev = RedEvidence {
            check,
            subject,
            quantile,
            then: Figures::empty(),
            detail,
        };
        ev.then = ev.figures(f)?;
        Some(ev)
    }

    /// The same numbers in this tick's findings; None when they are gone
    /// (judging restarted against another baseline).
    pub(super) fn figures(&self, f: &Tick<'_>) -> Option<Figures> {
        match self.check.as_str() {
            "endpoint" => {
                let e = f
                    .endpoints
                    .iter()
                    .find(|e| Some(&*e.name) == self.subject.as_deref())?;
                Some(Figures::errors(&e.canary, Some(&e.baseline), e.e_value))
            }
            "error_kind" => {
                let k = f
                    .kinds
                    .iter()
                    .find(|k| Some(&*k.kind) == self.subject.as_deref())?;
                Some(Figures::errors(&k.canary, Some(&k.baseline), k.e_value))
            }
            name => {
                let r = f.reports.iter().find(|r| r.name == name)?;
                let e_value = r.statistic.e_value;
                if r.canary.error_ratio.is_some() {
                    return Some(Figures::errors(&r.canary, r.baseline.as_ref(), e_value));
                }
                if let Some(q) = self.quantile {
                    if name == "latency" {
                        let (test, cw, bw) = f.latency?;
                        let (c, b, n) = test.at(q, self.subject.as_deref(), cw, bw);
                        return Some(Figures::values(c, b, n, e_value));
                    }
                    let at = |s: &CohortStats| at_quantile(s, q);
                    return Some(Figures::values(
                        at(&r.canary),
                        r.baseline.as_ref().and_then(at),
                        r.canary.requests,
                        e_value,
                    ));
                }
                let value = |s: &CohortStats| s.per_request.or(s.median);
                Some(Figures::values(
                    value(&r.canary),
                    r.baseline.as_ref().and_then(value),
                    r.canary.requests,
                    e_value,
                ))
            }
        }
    }

    /// "the error ratio", "POST /checkout's error ratio", "new error
    /// KeyError", "p95 latency on GET /cart".
    fn what(&self) -> String {
        let subject = self.subject.as_deref().unwrap_or_default();
        let q = self
            .quantile
            .map(|q| format!("{} ", quantile_name(q)))
            .unwrap_or_default();
        match self.check.as_str() {
            "error_ratio" => "the error ratio".into(),
            "endpoint" => format!("{subject}'s error ratio"),
            "error_kind" if self.then.baseline_errors == Some(0) => {
                format!("new error {subject}")
            }
            "error_kind" => format!("error {subject}"),
            "latency" if !subject.is_empty() => format!("{q}latency on {subject}"),
            "latency" => format!("{q}latency"),
            "guardrail_error_ratio" => "the error ratio (guardrail)".into(),
            name if name.starts_with("guardrail_") => format!("{q}latency (guardrail)"),
            name => name.to_string(),
        }
    }

    /// The story at `red_since`, with `now`'s figures and where the
    /// failures are now (`place`), ending with the action.
    pub(super) fn story(
        &self,
        red_since: UnixNanos,
        now: Option<&Figures>,
        place: Option<String>,
    ) -> String {
        let what = self.what();
        let at = clock(red_since);
        let then = self.then.phrase(self, true);
        let place = place.map(|p| format!("; {p}")).unwrap_or_default();
        let Some(then) = then else {
            return format!("red since {at}: {}{place}", self.detail);
        };
        match now.filter(|n| **n != self.then) {
            Some(n) => match n.phrase(self, false) {
                Some(now) => {
                    format!("red since {at}, when {what} was {then}; now {now}{place}: roll back")
                }
                None => format!("red since {at}, when {what} was {then}{place}: roll back"),
            },
            None => format!(
                "red since {at}: {what} {then}, a regression (odds {} : 1){place}; roll back",
                odds(self.then.e_value.ln())
            ),
        }
    }
}

/// Where a red is now: the endpoint and the kind of error it names, and
/// for a pooled error red the sentence that says so.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Place {
    /// The endpoint: the one a red was decided on, or for a pooled error
    /// red the worst that is not passing (of more than one).
    pub endpoint: Option<String>,
    /// The kind of error: the one decided on, or the worst not passing.
    pub kind: Option<String>,
    /// "worst on POST /checkout: 81 of 1,560 failed (5.19%) vs 0.50%; new
    /// error KeyError: …", for a pooled error red.
    pub text: Option<String>,
}

/// Where `ev`'s red is in this tick's findings.
pub(super) fn place(ev: &RedEvidence, f: &Tick<'_>) -> Place {
    match ev.check.as_str() {
        "endpoint" | "latency" => {
            return Place {
                endpoint: ev.subject.clone(),
                ..Place::default()
            }
        }
        "error_kind" => {
            return Place {
                kind: ev.subject.clone(),
                ..Place::default()
            }
        }
        "error_ratio" | "guardrail_error_ratio" => {}
        _ => return Place::default(),
    }
    let endpoint = (f.endpoints.len() > 1)
        .then(|| {
            f.endpoints
                .iter()
                .filter(|e| e.result != CheckResult::Pass && e.result != CheckResult::Nodata)
                .max_by(|a, b| a.e_value.total_cmp(&b.e_value))
        })
        .flatten();
    let kind = f.kinds.iter().find(|k| k.result != CheckResult::Pass);
    let endpoint_text = endpoint.map(|e| {
        let c = &e.canary;
        format!(
            "worst on {}: {} of {} failed ({}) vs {}",
            e.name,
            grouped(c.errors.unwrap_or(0)),
            grouped(c.requests),
            pct(c.error_ratio),
            pct(e.baseline.error_ratio)
        )
    });
    let kind_text = kind.map(|k| {
        let new = if k.baseline.errors == Some(0) {
            "new error"
        } else {
            "error"
        };
        format!(
            "{new} {}: {} of {} canary requests vs {} of {} on the baseline",
            k.kind,
            grouped(k.canary.errors.unwrap_or(0)),
            grouped(k.canary.requests),
            grouped(k.baseline.errors.unwrap_or(0)),
            grouped(k.baseline.requests)
        )
    });
    let parts: Vec<String> = endpoint_text.into_iter().chain(kind_text).collect();
    Place {
        endpoint: endpoint.map(|e| e.name.to_string()),
        kind: kind.map(|k| k.kind.to_string()),
        text: (!parts.is_empty()).then(|| parts.join("; ")),
    }
}

impl Figures {
    fn empty() -> Self {
        Figures {
            canary: None,
            baseline: None,
            canary_requests: 0,
            canary_errors: None,
            baseline_requests: None,
            baseline_errors: None,
            e_value: 1.0,
        }
    }

    fn errors(canary: &CohortStats, baseline: Option<&CohortStats>, e_value: f64) -> Self {
        Figures {
            canary: canary.error_ratio,
            baseline: baseline.and_then(|b| b.error_ratio),
            canary_requests: canary.requests,
            canary_errors: canary.errors,
            baseline_requests: baseline.map(|b| b.requests),
            baseline_errors: baseline.and_then(|b| b.errors),
            e_value,
        }
    }

    fn values(canary: Option<f64>, baseline: Option<f64>, requests: u64, e_value: f64) -> Self {
        Figures {
            canary,
            baseline,
            canary_requests: requests,
            e_value,
            ..Figures::empty()
        }
    }

    /// "12.50% vs 0.22% over 31 canary requests", "9 of 1,800 canary
    /// requests vs 0 of 16,200 on the baseline", "p95 330.0 ms vs 31.5 ms
    /// over 204 canary requests"; `first` says it whole, later the
    /// shorter form. None when there is no value to tell.
    fn phrase(&self, ev: &RedEvidence, first: bool) -> Option<String> {
        let requests = if first {
            format!("over {} canary requests", grouped(self.canary_requests))
        } else {
            format!("over {}", grouped(self.canary_requests))
        };
        let canary = self.canary?;
        if ev.check == "error_kind" {
            return Some(format!(
                "{} of {} canary requests vs {} of {} on the baseline",
                grouped(self.canary_errors.unwrap_or(0)),
                grouped(self.canary_requests),
                grouped(self.baseline_errors.unwrap_or(0)),
                grouped(self.baseline_requests.unwrap_or(0))
            ));
        }
        let show = |x: f64| -> String {
            if self.canary_errors.is_some() {
                pct(Some(x))
            } else if ev.quantile.is_some() {
                format!("{x:.1} ms")
            } else {
                format!("{x:.4}")
            }
        };
        Some(match self.baseline {
            Some(b) => format!("{} vs {} {requests}", show(canary), show(b)),
            None => format!("{} {requests}", show(canary)),
        })
    }
}

/// A cohort's latency at `q`, where its stats carry it.
fn at_quantile(s: &CohortStats, q: f64) -> Option<f64> {
    match (q * 100.0).round() as u32 {
        50 => s.p50_ms,
        95 => s.p95_ms,
        99 => s.p99_ms,
        _ => None,
    }
}

/// `guardrail_p95` → 0.95.
fn guardrail_quantile(name: &str) -> Option<f64> {
    let p: f64 = name.strip_prefix("guardrail_p")?.parse().ok()?;
    Some(p / 100.0)
}

/// "14:30:39 UTC".
fn clock(t: UnixNanos) -> String {
    let s = (t / NANOS_PER_SEC) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::judge::checks::{CheckResult, CohortStats};

    fn endpoint(
        name: &str,
        result: CheckResult,
        c: (u64, u64),
        b: (u64, u64),
        e: f64,
    ) -> EndpointReport {
        EndpointReport {
            name: Arc::from(name),
            result,
            canary: stats(c),
            baseline: stats(b),
            e_value: e,
            evidence: String::new(),
            detail: format!("{name}: the canary fails more often on this endpoint; roll back"),
        }
    }

    fn stats((n, x): (u64, u64)) -> CohortStats {
        CohortStats {
            requests: n,
            errors: Some(x),
            error_ratio: (n > 0).then(|| x as f64 / n as f64),
            ..CohortStats::default()
        }
    }

    fn findings<'a>(endpoints: &'a [EndpointReport]) -> Tick<'a> {
        Tick {
            reports: &[],
            endpoints,
            kinds: &[],
            latency: None,
        }
    }

    #[test]
    fn a_red_tells_its_numbers_then_and_now_in_one_sentence() {
        let then = [endpoint(
            "POST /checkout",
            CheckResult::Fail,
            (31, 5),
            (900, 7),
            2.0e3,
        )];
        let ev = RedEvidence::of(Decider::Endpoint(0), &findings(&then)).unwrap();
        assert_eq!(ev.subject.as_deref(), Some("POST /checkout"));
        assert_eq!(ev.then.canary_errors, Some(5));
        let at = 14 * 3600 + 30 * 60 + 39;
        let first = ev.story(at * NANOS_PER_SEC, Some(&ev.then), None);
        assert_eq!(
            first,
            "red since 14:30:39 UTC: POST /checkout's error ratio 16.13% vs 0.78% over 31 canary requests, a regression (odds 2,000 : 1); roll back"
        );
        let now = [endpoint(
            "POST /checkout",
            CheckResult::Fail,
            (1560, 81),
            (14000, 70),
            1.0e12,
        )];
        let figures = ev.figures(&findings(&now)).unwrap();
        let later = ev.story(at * NANOS_PER_SEC, Some(&figures), None);
        assert_eq!(
            later,
            "red since 14:30:39 UTC, when POST /checkout's error ratio was 16.13% vs 0.78% over 31 canary requests; now 5.19% vs 0.50% over 1,560: roll back"
        );
    }

    #[test]
    fn a_pooled_red_names_where_the_failures_are() {
        let endpoints = [
            endpoint("GET /items", CheckResult::Pass, (1000, 5), (9000, 45), 0.5),
            endpoint(
                "POST /checkout",
                CheckResult::Marginal,
                (560, 76),
                (5000, 25),
                300.0,
            ),
        ];
        let ev = RedEvidence {
            check: "error_ratio".into(),
            subject: None,
            quantile: None,
            then: Figures::errors(&stats((1560, 81)), Some(&stats((14000, 70))), 1e6),
            detail: String::new(),
        };
        let place = place(&ev, &findings(&endpoints));
        assert_eq!(
            place.text.as_deref(),
            Some("worst on POST /checkout: 76 of 560 failed (13.57%) vs 0.50%")
        );
        assert_eq!(place.endpoint.as_deref(), Some("POST /checkout"));
        // A release of one endpoint: nothing more to say.
        assert_eq!(
            super::place(&ev, &findings(&endpoints[..1])),
            Place::default()
        );
    }

    #[test]
    fn a_red_without_figures_keeps_its_sentence() {
        let ev = RedEvidence {
            check: "checkout_latency_budget".into(),
            subject: None,
            quantile: None,
            then: Figures::empty(),
            detail: "canary budget 3 vs 1: a regression beyond tolerance".into(),
        };
        assert_eq!(
            ev.story(0, None, None),
            "red since 00:00:00 UTC: canary budget 3 vs 1: a regression beyond tolerance"
        );
    }
}
