//! The verdict object (docs/design.md): one schema for the HTTP API, replay
//! and gRPC, built from a release and its judgement.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::judge::checks::{CheckReport, EndpointReport, KindReport};
use crate::judge::{Color, Figures, RedEvidence};
use crate::model::{format_time, FleetKey, RequestSource, Role, UnixNanos};
use crate::store::{Choice, Fleet, Release, Store};

/// A release's verdict as users see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// When the verdict last changed color.
    pub changed_at: String,
    /// When it turned red; red is final for a release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub red_since: Option<String>,
    /// What it turned red on: the check (and endpoint or kind), its
    /// numbers then and the same numbers now, for machines; `reason` tells
    /// the same story to people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub red_evidence: Option<RedStory>,
    /// Totals since first seen.
    pub canary: CohortTotals,
    /// The signal its requests are counted from: `spans`, or `metrics`
    /// (request-duration histograms) when it sends no spans, stopped, or
    /// samples them. A request reported by both is counted once.
    pub requests_from: RequestSource,
    pub checks: Vec<CheckReport>,
    /// The error ratio per endpoint, worst first.
    pub endpoints: Vec<EndpointReport>,
    /// Kinds of failed canary requests the baseline has not shown.
    pub new_errors: Vec<ErrorKind>,
    /// Each kind the canary fails with, tested against the baseline's
    /// rate of it, worst first: both cohorts' requests and failures of the
    /// kind since it was first seen, the result and its sentence.
    pub error_kinds: Vec<KindReport>,
    /// While yellow for want of evidence, about how long until a decision
    /// at the current traffic (seconds); null when it cannot be estimated.
    pub decision_eta_seconds: Option<u64>,
    /// False when no replica judges the release now and the ledger's last
    /// verdict answers; absent when it is judged live (here, or by the
    /// replica a read was forwarded to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
    /// The replica judging it, when that is another one sharing the ledger
    /// (a verdict relayed from its event stream); None: judged here.
    #[serde(skip)]
    pub judged_by: Option<Arc<str>>,
}

/// What a red was decided on, then and now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RedStory {
    /// When (the same instant as `red_since`).
    pub decided_at: String,
    #[serde(flatten)]
    pub evidence: RedEvidence,
    /// The same numbers at the last evaluation; null when they are gone
    /// (judging restarted against another baseline).
    pub now: Option<Figures>,
    /// Where it is now: the endpoint and the kind of error it names (for
    /// a pooled error red, the worst of each that is not passing).
    pub endpoint: Option<String>,
    pub kind: Option<String>,
}

/// A kind of error and how many canary requests failed with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorKind {
    pub kind: String,
    pub count: u64,
}

/// The baseline a release is compared with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineRef {
    pub deployment_id: String,
    pub git_sha: Option<String>,
    pub requests: u64,
    pub errors: u64,
    /// Why it is the baseline: `role_baseline`, `role_stable` (declared
    /// `deployment.role`), `ledger` (compared with it before a restart) or
    /// `traffic` (it serves clearly the most).
    pub chosen_by: Cow<'static, str>,
}

/// Request and error totals of a cohort since first seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CohortTotals {
    pub requests: u64,
    pub errors: u64,
}

impl Verdict {
    /// The verdict object of `r`; `now` stands in for a release not judged yet.
    pub fn of(
        service: &str,
        environment: &str,
        fleet: &Fleet,
        r: &Release,
        now: UnixNanos,
    ) -> Self {
        let chosen_by = match &fleet.choice {
            Choice::Chosen { basis, .. } => basis.as_str(),
            _ => "",
        };
        let baseline = fleet.baseline_of(r).map(|b| BaselineRef {
            deployment_id: b.deployment_id.to_string(),
            git_sha: b.git_sha.as_deref().map(str::to_string),
            requests: b.total.requests,
            errors: b.total.errors,
            chosen_by: Cow::Borrowed(chosen_by),
        });
        let j = r.judgement();
        Verdict {
            service: service.to_string(),
            environment: environment.to_string(),
            deployment_id: r.deployment_id.to_string(),
            git_sha: r.git_sha.as_deref().map(str::to_string),
            role: r.role,
            baseline,
            verdict: j.color,
            reason: j.reason.clone(),
            evaluated_at: format_time(j.evaluated_at.unwrap_or(now)),
            first_seen_at: format_time(r.first_seen),
            last_seen_at: format_time(r.last_seen),
            changed_at: format_time(j.changed_at),
            red_since: j.red_since.map(format_time),
            red_evidence: j
                .red_evidence
                .as_ref()
                .zip(j.red_since)
                .map(|(ev, since)| RedStory {
                    decided_at: format_time(since),
                    evidence: ev.clone(),
                    now: j.red_now.clone(),
                    endpoint: j.red_place.endpoint.clone(),
                    kind: j.red_place.kind.clone(),
                }),
            canary: CohortTotals {
                requests: r.total.requests,
                errors: r.total.errors,
            },
            requests_from: r.requests_from,
            checks: j.checks.clone(),
            endpoints: j.endpoints.clone(),
            new_errors: j
                .new_errors
                .iter()
                .map(|(kind, count)| ErrorKind {
                    kind: kind.to_string(),
                    count: *count,
                })
                .collect(),
            error_kinds: j.kinds.clone(),
            decision_eta_seconds: j.decision_eta,
            live: None,
            judged_by: None,
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
    /// Whether releases of this service and environment pass.
    pub fn matches(&self, service: &str, environment: &str) -> bool {
        self.service.as_deref().is_none_or(|s| s == service)
            && self.environment.as_deref().is_none_or(|e| e == environment)
    }

    /// Whether a verdict passes.
    pub fn admits(&self, v: &Verdict) -> bool {
        self.matches(&v.service, &v.environment)
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

/// Longest id an error message repeats: ids are at most 256 bytes, and a
/// longer one must not make the answer too large for its client.
const SHOWN_ID_BYTES: usize = 256;

/// `id` as an error message quotes it: whole, or its first 256 bytes and
/// its length.
pub fn shown(id: &str) -> String {
    if id.len() <= SHOWN_ID_BYTES {
        return id.to_string();
    }
    let mut end = SHOWN_ID_BYTES;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &id[..end], id.len())
}

/// A release's place in a listing: sorted by these fields in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListPlace {
    pub service: Arc<str>,
    pub environment: Arc<str>,
    pub first_seen: UnixNanos,
    pub deployment_id: Arc<str>,
}

/// One service and environment, and how many releases it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetName {
    pub fleet: FleetKey,
    pub releases: usize,
}

/// The fleets passing the filter: one entry per service and environment,
/// no verdict built, so a caller can then build the verdicts a few fleets
/// at a time and let ingest take the store between them.
pub fn fleets(store: &Store, filter: &Filter) -> Vec<FleetName> {
    store
        .fleets()
        .filter(|(s, e, _)| filter.matches(s, e))
        .map(|(s, e, fleet)| FleetName {
            fleet: FleetKey::new(s, e),
            releases: fleet.releases.len(),
        })
        .collect()
}

/// The verdicts of the named fleets' releases still tracked, each with its
/// place in [`list`]'s order (see [`in_order`]).
pub fn of_fleets(store: &Store, fleets: &[FleetName], now: UnixNanos) -> Vec<(ListPlace, Verdict)> {
    fleets
        .iter()
        .filter_map(|f| {
            Some((
                &f.fleet,
                store.fleet(&f.fleet.service, &f.fleet.environment)?,
            ))
        })
        .flat_map(|(f, fleet)| {
            fleet.releases.iter().map(move |(id, r)| {
                let key = ListPlace {
                    service: f.service.clone(),
                    environment: f.environment.clone(),
                    first_seen: r.first_seen,
                    deployment_id: id.clone(),
                };
                (key, Verdict::of(&f.service, &f.environment, fleet, r, now))
            })
        })
        .collect()
}

/// Verdicts sorted by service, environment, first seen, deployment id.
pub fn in_order(mut verdicts: Vec<(ListPlace, Verdict)>) -> Vec<Verdict> {
    verdicts.sort_by(|a, b| a.0.cmp(&b.0));
    verdicts.into_iter().map(|(_, v)| v).collect()
}

/// Every release passing the filter, sorted by service, environment, first seen.
pub fn list(store: &Store, filter: &Filter, now: UnixNanos) -> Vec<Verdict> {
    in_order(of_fleets(store, &fleets(store, filter), now))
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
        0 => Err(LookupError::NotFound(shown(id))),
        1 => Ok(matches.remove(0)),
        _ => {
            matches.sort_by(|a, b| (&a.service, &a.environment).cmp(&(&b.service, &b.environment)));
            Err(LookupError::Ambiguous {
                id: shown(id),
                matches,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Judge;
    use crate::model::{Batch, Group, ReleaseRef, Sample};
    use crate::store::BaselineRule;

    #[test]
    fn a_list_in_chunks_is_the_list() {
        let c = crate::config::Config::default();
        let mut store = Store::new(
            100,
            Judge::new(&c.judge, &c.checks),
            BaselineRule::from(&c.baseline),
        );
        let ids: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let mut b = Batch::default();
            b.groups.push(Group {
                release: ReleaseRef {
                    service: ["a", "b", "c"][i % 3],
                    environment: ["prod", "staging"][i % 2],
                    deployment_id: id,
                    git_sha: None,
                    role: None,
                },
                items: 1,
                sample: Sample {
                    requests: 1,
                    ..Default::default()
                },
            });
            store.apply(&b, 1_000 + (30 - i as u64));
        }
        store.tick(2_000);
        let filter = Filter::default();
        let names = fleets(&store, &filter);
        assert_eq!(names.len(), 6);
        let chunked: Vec<(ListPlace, Verdict)> = names
            .chunks(4)
            .flat_map(|chunk| of_fleets(&store, chunk, 3_000))
            .collect();
        let listed = list(&store, &filter, 3_000);
        assert_eq!(listed.len(), 30);
        assert_eq!(in_order(chunked), listed);
        let firsts: Vec<(String, String)> = listed
            .iter()
            .map(|v| (v.service.clone(), v.first_seen_at.clone()))
            .collect();
        let mut sorted = firsts.clone();
        sorted.sort();
        assert_eq!(firsts, sorted, "by service, then first seen");
        let prod = Filter {
            environment: Some("prod".into()),
            ..Filter::default()
        };
        assert_eq!(list(&store, &prod, 3_000).len(), 15);
    }
}
