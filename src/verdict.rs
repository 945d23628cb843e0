//! The verdict object (DESIGN.md): one schema for the HTTP API, replay and
//! gRPC, built from the store. Until the judge exists every release is
//! yellow, "not judged yet", with its totals.

use serde::Serialize;

use crate::model::{format_time, Role, UnixNanos};
use crate::store::{Fleet, Release, Store};

/// A release's verdict as users see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub service: String,
    pub environment: String,
    pub deployment_id: String,
    pub git_sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub baseline: Option<BaselineRef>,
    pub verdict: Color,
    pub reason: String,
    pub evaluated_at: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub canary: CohortTotals,
    pub checks: Vec<Check>,
}

/// green / yellow / red.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Green,
    Yellow,
    Red,
}

/// The baseline a release is compared with.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BaselineRef {
    pub deployment_id: String,
    pub git_sha: Option<String>,
    pub requests: u64,
    pub errors: u64,
}

/// Request and error totals of a cohort since first seen.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CohortTotals {
    pub requests: u64,
    pub errors: u64,
}

/// One check's outcome (filled in by the judge).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub result: String,
    pub detail: String,
}

impl Verdict {
    pub fn of(
        service: &str,
        environment: &str,
        fleet: &Fleet,
        r: &Release,
        now: UnixNanos,
    ) -> Self {
        let baseline = fleet.baseline_of(r).map(|b| BaselineRef {
            deployment_id: b.deployment_id.to_string(),
            git_sha: b.git_sha.as_deref().map(str::to_string),
            requests: b.total.requests,
            errors: b.total.errors,
        });
        Verdict {
            service: service.to_string(),
            environment: environment.to_string(),
            deployment_id: r.deployment_id.to_string(),
            git_sha: r.git_sha.as_deref().map(str::to_string),
            role: r.role,
            baseline,
            verdict: Color::Yellow,
            reason: "not judged yet: the judge is not enabled in this build".to_string(),
            evaluated_at: format_time(now),
            first_seen_at: format_time(r.first_seen),
            last_seen_at: format_time(r.last_seen),
            canary: CohortTotals {
                requests: r.total.requests,
                errors: r.total.errors,
            },
            checks: Vec::new(),
        }
    }
}

/// Narrows lookups to one service and/or environment.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    pub service: Option<String>,
    pub environment: Option<String>,
}

impl Filter {
    fn matches(&self, service: &str, environment: &str) -> bool {
        self.service.as_deref().is_none_or(|s| s == service)
            && self.environment.as_deref().is_none_or(|e| e == environment)
    }
}

/// Why a single lookup has no one answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    #[error("no release with deployment id {0:?} is tracked")]
    NotFound(String),
    #[error("deployment id {id:?} names {} releases; narrow with ?service= and ?environment=", .matches.len())]
    Ambiguous { id: String, matches: Vec<Verdict> },
}

/// Every release passing the filter, sorted by service, environment, first seen.
pub fn list(store: &Store, filter: &Filter, now: UnixNanos) -> Vec<Verdict> {
    let mut out: Vec<(UnixNanos, Verdict)> = store
        .fleets()
        .filter(|(s, e, _)| filter.matches(s, e))
        .flat_map(|(s, e, fleet)| {
            fleet
                .releases
                .values()
                .map(move |r| (r.first_seen, Verdict::of(s, e, fleet, r, now)))
        })
        .collect();
    out.sort_by(|(ta, a), (tb, b)| {
        (&a.service, &a.environment, ta, &a.deployment_id).cmp(&(
            &b.service,
            &b.environment,
            tb,
            &b.deployment_id,
        ))
    });
    out.into_iter().map(|(_, v)| v).collect()
}

/// The one release with this deployment id (within the filter).
pub fn find(
    store: &Store,
    id: &str,
    filter: &Filter,
    now: UnixNanos,
) -> Result<Verdict, LookupError> {
    let mut matches: Vec<Verdict> = store
        .fleets()
        .filter(|(s, e, _)| filter.matches(s, e))
        .filter_map(|(s, e, fleet)| {
            fleet
                .releases
                .get(id)
                .map(|r| Verdict::of(s, e, fleet, r, now))
        })
        .collect();
    match matches.len() {
        0 => Err(LookupError::NotFound(id.to_string())),
        1 => Ok(matches.remove(0)),
        _ => {
            matches.sort_by(|a, b| (&a.service, &a.environment).cmp(&(&b.service, &b.environment)));
            Err(LookupError::Ambiguous {
                id: id.to_string(),
                matches,
            })
        }
    }
}
