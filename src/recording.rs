//! What the daemon itself tells the ledger after a tick: a release's first
//! verdict (`release_started`), each change of color (`verdict_changed`),
//! its first green (`canary_passed`), its red (`canary_failed`), the ends of
//! rollouts inferred from who went quiet (`promoted`, `rolled_back`), and
//! the last verdict of every release that changed, so a release that
//! expires from memory is still answered.

use crate::judge::Color;
use crate::ledger::event::{types, Event, Source, EVENT_EXEMPLARS};
use crate::ledger::ReleaseRecord;
use crate::store::{Changed, Inferred};
use crate::verdict::Verdict;

/// The events and release records of one tick's news. `verdicts` holds the
/// current verdict of each changed release (those still tracked).
pub fn tick_records(
    changed: &[Changed],
    verdicts: &[Verdict],
    ended: &[Inferred],
    now: u64,
) -> (Vec<Event>, Vec<ReleaseRecord>) {
    let mut events = Vec::new();
    let mut records = Vec::new();
    for c in changed {
        let Some(v) = verdicts.iter().find(|v| {
            v.deployment_id == *c.release.deployment_id
                && v.service == *c.release.service
                && v.environment == *c.release.environment
        }) else {
            continue;
        };
        let about = |kind: &str| {
            Event::new(kind, now, Source::Daemon, &c.release.service)
                .for_release(&c.release.environment, &c.release.deployment_id)
                .with_git_sha(v.git_sha.as_deref())
                .with("verdict", c.color.as_str())
                .with("reason", v.reason.as_str())
        };
        let with_baseline = |e: Event| match &v.baseline {
            Some(b) => e
                .with("baseline_deployment_id", b.deployment_id.as_str())
                .with("baseline_git_sha", b.git_sha.clone()),
            None => e,
        };
        // A red names where (its evidence) and the requests to look at.
        let with_red = |e: Event| match (&v.red_evidence, c.color) {
            (Some(r), Color::Red) => e
                .with("red_evidence", serde_json::to_value(r).unwrap_or_default())
                .with("exemplars", exemplars(v)),
            _ => e,
        };
        match c.from {
            None => events.push(with_red(with_baseline(
                about(types::RELEASE_STARTED).once_per_release(),
            ))),
            Some(from) => events.push(with_red(with_baseline(
                about(types::VERDICT_CHANGED)
                    .with("from", from.as_str())
                    .with("to", c.color.as_str())
                    .with("checks", checks(v))
                    .nth_of_release(c.nth),
            ))),
        }
        if c.first_pass {
            events.push(with_baseline(
                about(types::CANARY_PASSED).once_per_release(),
            ));
        }
        if c.color == Color::Red {
            events.push(with_red(with_baseline(
                about(types::CANARY_FAILED)
                    .with("checks", checks(v))
                    .once_per_release(),
            )));
        }
        records.push(release_record(v, now));
    }
    for e in ended {
        let kind = e.rollout.as_str();
        events.push(
            Event::new(kind, e.at, Source::Inferred, &e.release.service)
                .for_release(&e.release.environment, &e.release.deployment_id)
                .with_git_sha(e.git_sha.as_deref())
                .with("baseline_deployment_id", &*e.baseline)
                .with(
                    "baseline_git_sha",
                    e.baseline_sha.as_deref().map(str::to_string),
                )
                .once_per_release(),
        );
    }
    (events, records)
}

/// Each check's result and both cohorts' numbers, as the verdict has them.
fn checks(v: &Verdict) -> serde_json::Value {
    serde_json::Value::Array(
        v.checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "result": c.result.as_str(),
                    "canary": c.canary,
                    "baseline": c.baseline,
                })
            })
            .collect(),
    )
}

/// Up to three canary requests behind a red, those of the failing checks
/// first and those on the endpoint it names before others, each once:
/// trace id, endpoint, latency, failed, and the link when configured.
fn exemplars(v: &Verdict) -> serde_json::Value {
    let subject = v.red_evidence.as_ref().and_then(|r| r.endpoint.as_deref());
    let mut picked: Vec<&crate::judge::checks::ExemplarRef> = Vec::new();
    let mut failing: Vec<&crate::judge::checks::CheckReport> = v.checks.iter().collect();
    failing.sort_by_key(|c| c.result != crate::judge::checks::CheckResult::Fail);
    let all: Vec<_> = failing.iter().flat_map(|c| c.exemplars.iter()).collect();
    let there = all
        .iter()
        .filter(|e| subject.is_some() && e.endpoint.as_deref() == subject);
    for e in there.chain(all.iter()) {
        if picked.len() == EVENT_EXEMPLARS {
            break;
        }
        if !picked
            .iter()
            .any(|p| p.trace_id == e.trace_id && p.span_id == e.span_id)
        {
            picked.push(e);
        }
    }
    serde_json::to_value(picked).unwrap_or_default()
}

/// The release's last verdict as the ledger keeps it.
pub fn release_record(v: &Verdict, now: u64) -> ReleaseRecord {
    let time = |s: &str| crate::ledger::event::parse_time(s).unwrap_or(now);
    ReleaseRecord {
        service: v.service.clone(),
        environment: v.environment.clone(),
        deployment_id: v.deployment_id.clone(),
        git_sha: v.git_sha.clone(),
        baseline_deployment_id: v.baseline.as_ref().map(|b| b.deployment_id.clone()),
        baseline_git_sha: v.baseline.as_ref().and_then(|b| b.git_sha.clone()),
        first_seen_ns: time(&v.first_seen_at),
        last_seen_ns: time(&v.last_seen_at),
        verdict: v.verdict.as_str().to_string(),
        reason: v.reason.clone(),
        red_since_ns: v.red_since.as_deref().map(time),
        verdict_json: serde_json::to_string(v).unwrap_or_default(),
    }
}
