//! DORA's four measures of delivery from the ledger's events: deployment
//! frequency, lead time for changes, change failure rate and time to
//! restore, per service and environment, over a window or by day or week.
//! Pure: handed the events and the window, it reads no clock and no
//! database. The README's "DORA metrics" section defines each measure in
//! words; this file is that definition in code.
//!
//! How events are tied to a release (service, environment, deployment id):
//! - an event naming all three belongs to that release;
//! - one naming a deployment id but no environment, to that deployment in
//!   every environment of the service;
//! - one naming only a git sha (a `commit`, an `incident_started`), to
//!   every release of the service built from that sha;
//! - an `incident_started` naming neither, to the service's release that
//!   started last at or before it (in its environment, if it names one);
//! - an `incident_resolved` or `slo_restored` naming neither restores every
//!   failure of the service (in its environment, if it names one) open then.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::model::{format_time, UnixNanos, NANOS_PER_SEC};

/// Nanoseconds in a day.
pub const DAY: UnixNanos = 86_400 * NANOS_PER_SEC;

/// How far before a window's start its releases' earlier events (their
/// start, their commits) are read: a change merged longer than this before
/// its release reached production has no lead time.
pub const LOOKBACK: UnixNanos = 90 * DAY;

/// What an event means to DORA. Other event types are not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `release_started` or `deploy_started`.
    Started,
    Promoted,
    RolledBack,
    /// `canary_failed`: the release went red.
    Failed,
    IncidentStarted,
    /// `incident_resolved` or `slo_restored`.
    Restored,
    /// `commit` or `pr_merged`: a change's time.
    Change,
}

impl Kind {
    /// The event types DORA reads, for a query's `IN` list.
    pub const TYPES: &'static [&'static str] = &[
        "release_started",
        "deploy_started",
        "promoted",
        "rolled_back",
        "canary_failed",
        "incident_started",
        "incident_resolved",
        "slo_restored",
        "commit",
        "pr_merged",
    ];

    pub fn of(event_type: &str) -> Option<Kind> {
        Some(match event_type {
            "release_started" | "deploy_started" => Kind::Started,
            "promoted" => Kind::Promoted,
            "rolled_back" => Kind::RolledBack,
            "canary_failed" => Kind::Failed,
            "incident_started" => Kind::IncidentStarted,
            "incident_resolved" | "slo_restored" => Kind::Restored,
            "commit" | "pr_merged" => Kind::Change,
            _ => return None,
        })
    }
}

/// One event as DORA reads it. For a change, `ts` is the commit's own time
/// when the event carries one (`metadata.commit_time`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub kind: Kind,
    pub ts: UnixNanos,
    pub service: String,
    pub environment: Option<String>,
    pub deployment_id: Option<String>,
    pub git_sha: Option<String>,
}

/// The time span measured: `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: UnixNanos,
    pub until: UnixNanos,
}

impl Window {
    fn contains(self, t: UnixNanos) -> bool {
        self.since <= t && t < self.until
    }

    fn days(self) -> f64 {
        self.until.saturating_sub(self.since) as f64 / DAY as f64
    }
}

/// Calendar buckets (UTC) a window is also cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Day,
    /// ISO weeks, Monday to Monday.
    Week,
}

impl std::str::FromStr for Bucket {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Bucket::Day),
            "week" => Ok(Bucket::Week),
            other => Err(format!("bucket {other:?}: expected day or week")),
        }
    }
}

impl Bucket {
    /// The start of the bucket holding `t`.
    fn floor(self, t: UnixNanos) -> UnixNanos {
        match self {
            Bucket::Day => t - t % DAY,
            // 1970-01-05 was the first Monday.
            Bucket::Week => {
                let monday = 4 * DAY;
                if t < monday {
                    0
                } else {
                    t - (t - monday) % (7 * DAY)
                }
            }
        }
    }

    /// The length of one bucket.
    pub fn span(self) -> UnixNanos {
        match self {
            Bucket::Day => DAY,
            Bucket::Week => 7 * DAY,
        }
    }
}

/// Lead times of the changes promoted in a window, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadTime {
    /// Promoted releases with a known change time.
    pub count: usize,
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

/// Times to restore of the failures detected in a window, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeToRestore {
    /// Failures restored (before the query's `until`).
    pub count: usize,
    /// Failures not restored yet.
    pub open: usize,
    pub median: Option<f64>,
    pub p95: Option<f64>,
}

/// The four measures over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measures {
    pub since: String,
    pub until: String,
    /// Releases promoted in the window.
    pub deployments: usize,
    /// Days (UTC) with at least one deployment.
    pub deploy_days: usize,
    pub deployments_per_day: f64,
    /// Releases that started in the window.
    pub releases_started: usize,
    /// Of those, the ones that went red, were rolled back or caused an
    /// incident (before the query's `until`).
    pub failed_releases: usize,
    /// `failed_releases / releases_started`; none without releases.
    pub change_failure_rate: Option<f64>,
    pub lead_time_seconds: LeadTime,
    pub time_to_restore_seconds: TimeToRestore,
}

/// One service and environment's measures, and its buckets if asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub service: String,
    pub environment: String,
    #[serde(flatten)]
    pub measures: Measures,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<Measures>,
}

/// What DORA knows of one release.
#[derive(Debug, Default)]
struct Release {
    /// Its first `release_started` / `deploy_started`.
    started: Option<UnixNanos>,
    /// Its earliest event of any kind: the start of a release whose start
    /// was not recorded.
    first_event: UnixNanos,
    promoted: Option<UnixNanos>,
    rolled_back: Option<UnixNanos>,
    /// Its first red or incident: when the failure was detected.
    detected: Option<UnixNanos>,
    /// Its own restore events (incident resolved, SLO restored).
    restored: Vec<UnixNanos>,
    /// Its earliest change (commit or merge).
    change: Option<UnixNanos>,
    git_sha: Option<String>,
}

impl Release {
    fn start(&self) -> UnixNanos {
        self.started.unwrap_or(self.first_event)
    }

    /// When it failed: its first red, incident or rollback.
    fn failed(&self) -> Option<UnixNanos> {
        min_opt(self.detected, self.rolled_back)
    }

    fn note(&mut self, kind: Kind, ts: UnixNanos) {
        self.first_event = self.first_event.min(ts);
        let earliest = |slot: &mut Option<UnixNanos>| *slot = min_opt(*slot, Some(ts));
        match kind {
            Kind::Started => earliest(&mut self.started),
            Kind::Promoted => earliest(&mut self.promoted),
            Kind::RolledBack => earliest(&mut self.rolled_back),
            Kind::Failed | Kind::IncidentStarted => earliest(&mut self.detected),
            Kind::Restored => self.restored.push(ts),
            Kind::Change => earliest(&mut self.change),
        }
    }
}

fn min_opt(a: Option<UnixNanos>, b: Option<UnixNanos>) -> Option<UnixNanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A service's releases in one environment, and its service-wide restores.
#[derive(Debug, Default)]
struct Group {
    releases: HashMap<String, Release>,
    /// Restores naming no release, sorted.
    restores: Vec<UnixNanos>,
    /// Each promoted release's promotion, sorted.
    promotions: Vec<(UnixNanos, String)>,
}

/// The measures of every service and environment with activity in
/// `window` (a release started, promoted or failing in it), sorted by
/// service then environment; with `bucket`, each also cut by day or week.
/// `facts` need not be sorted; those at or after `window.until` are ignored.
pub fn compute(facts: &[Fact], window: Window, bucket: Option<Bucket>) -> Vec<Report> {
    let groups = tie(facts, window.until);
    let mut keys: Vec<_> = groups.keys().collect();
    keys.sort();
    keys.into_iter()
        .filter_map(|key| {
            let group = &groups[key];
            let measures = measure(group, window, window.until);
            let active = measures.releases_started > 0
                || measures.deployments > 0
                || measures.time_to_restore_seconds.count + measures.time_to_restore_seconds.open
                    > 0;
            active.then(|| Report {
                service: key.0.clone(),
                environment: key.1.clone(),
                measures,
                buckets: cut(group, window, bucket),
            })
        })
        .collect()
}

/// The report of a service and environment with nothing in the window.
pub fn empty(
    service: &str,
    environment: &str,
    window: Window,
    bucket: Option<Bucket>,
) -> Vec<Report> {
    let group = Group::default();
    vec![Report {
        service: service.to_string(),
        environment: environment.to_string(),
        measures: measure(&group, window, window.until),
        buckets: cut(&group, window, bucket),
    }]
}

/// A group's measures in each bucket of the window, if buckets were asked.
fn cut(group: &Group, window: Window, bucket: Option<Bucket>) -> Vec<Measures> {
    let Some(bucket) = bucket else {
        return Vec::new();
    };
    buckets(bucket, window)
        .map(|w| measure(group, w, window.until))
        .collect()
}

/// `window` cut at bucket boundaries, the first and last cut short.
fn buckets(bucket: Bucket, window: Window) -> impl Iterator<Item = Window> {
    let mut start = window.since;
    std::iter::from_fn(move || {
        if start >= window.until {
            return None;
        }
        let end = (bucket.floor(start) + bucket.span()).min(window.until);
        let w = Window {
            since: start,
            until: end,
        };
        start = end;
        Some(w)
    })
}

type GroupKey = (String, String);

/// Ties each fact to its releases, by the rules of the module's comment.
fn tie(facts: &[Fact], until: UnixNanos) -> HashMap<GroupKey, Group> {
    let facts: Vec<&Fact> = facts.iter().filter(|f| f.ts < until).collect();
    let mut groups: HashMap<GroupKey, Group> = HashMap::new();
    // First the facts naming a whole release: they make the releases.
    for f in &facts {
        if let (Some(env), Some(id)) = (&f.environment, &f.deployment_id) {
            let release = groups
                .entry((f.service.clone(), env.clone()))
                .or_default()
                .releases
                .entry(id.clone())
                .or_insert_with(|| Release {
                    first_event: f.ts,
                    ..Release::default()
                });
            release.note(f.kind, f.ts);
            if release.git_sha.is_none() {
                release.git_sha = f.git_sha.clone();
            }
        }
    }
    // Indexes of the releases by what the other facts may name.
    let mut envs: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut by_id: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    let mut by_sha: HashMap<(&str, &str), Vec<(&str, &str)>> = HashMap::new();
    let mut by_start: HashMap<&str, Vec<(UnixNanos, &str, &str)>> = HashMap::new();
    for ((service, env), group) in &groups {
        envs.entry(service).or_default().push(env);
        for (id, r) in &group.releases {
            by_id.entry((service, id)).or_default().push(env);
            if let Some(sha) = &r.git_sha {
                by_sha.entry((service, sha)).or_default().push((env, id));
            }
            by_start
                .entry(service)
                .or_default()
                .push((r.start(), env, id));
        }
    }
    by_start.values_mut().for_each(|v| v.sort_unstable());
    // Then the rest, onto the releases that exist: (service, environment,
    // deployment id) of each, or a service-wide restore.
    let mut notes: Vec<(GroupKey, Option<String>, Kind, UnixNanos)> = Vec::new();
    for f in &facts {
        if f.environment.is_some() && f.deployment_id.is_some() {
            continue;
        }
        let service = f.service.as_str();
        let env_ok = |env: &str| f.environment.as_deref().is_none_or(|e| e == env);
        let mut note = |env: &str, id: Option<&str>| {
            notes.push((
                (f.service.clone(), env.to_string()),
                id.map(str::to_string),
                f.kind,
                f.ts,
            ))
        };
        match (&f.deployment_id, &f.git_sha) {
            (Some(id), _) => {
                for env in by_id.get(&(service, id.as_str())).into_iter().flatten() {
                    note(env, Some(id));
                }
            }
            (None, Some(sha)) => {
                for (env, id) in by_sha.get(&(service, sha.as_str())).into_iter().flatten() {
                    if env_ok(env) {
                        note(env, Some(id));
                    }
                }
            }
            (None, None) if f.kind == Kind::Restored => {
                for env in envs.get(service).into_iter().flatten() {
                    if env_ok(env) {
                        note(env, None);
                    }
                }
            }
            (None, None) if f.kind == Kind::IncidentStarted => {
                // The release that started last at or before it.
                let starts = by_start.get(service).map_or(&[][..], Vec::as_slice);
                let before = starts.partition_point(|s| s.0 <= f.ts);
                if let Some((_, env, id)) = starts[..before].iter().rev().find(|s| env_ok(s.1)) {
                    note(env, Some(id));
                }
            }
            (None, None) => {}
        }
    }
    for (key, id, kind, ts) in notes {
        let Some(group) = groups.get_mut(&key) else {
            continue;
        };
        match id {
            Some(id) => {
                if let Some(r) = group.releases.get_mut(&id) {
                    r.note(kind, ts);
                }
            }
            None => group.restores.push(ts),
        }
    }
    for group in groups.values_mut() {
        group.restores.sort_unstable();
        group.promotions = group
            .releases
            .iter()
            .filter_map(|(id, r)| Some((r.promoted?, id.clone())))
            .collect();
        group.promotions.sort_unstable();
    }
    groups
}

/// One group's measures over `window`; `until` is the query's end, the
/// last moment a failure or restore is seen.
fn measure(group: &Group, window: Window, until: UnixNanos) -> Measures {
    let releases = || group.releases.iter();
    let promoted: Vec<UnixNanos> = releases()
        .filter_map(|(_, r)| r.promoted)
        .filter(|&t| window.contains(t))
        .collect();
    let deploy_days: BTreeSet<UnixNanos> = promoted.iter().map(|&t| t / DAY).collect();
    let started: Vec<&Release> = releases()
        .map(|(_, r)| r)
        .filter(|r| window.contains(r.start()))
        .collect();
    let failed = started
        .iter()
        .filter(|r| r.failed().is_some_and(|t| t < until))
        .count();
    let mut lead: Vec<f64> = releases()
        .filter_map(|(_, r)| {
            let promoted = r.promoted.filter(|&t| window.contains(t))?;
            let change = r.change.filter(|&c| c <= promoted)?;
            Some(seconds(promoted - change))
        })
        .collect();
    let mut restore = Vec::new();
    let mut open = 0;
    for (id, r) in releases() {
        let Some(detected) = r.detected.filter(|&t| window.contains(t)) else {
            continue;
        };
        // Rolled back, restored, or another release of the service
        // promoted (rolled forward): whichever came first.
        let first_after = |sorted: &[UnixNanos]| {
            sorted
                .get(sorted.partition_point(|&t| t < detected))
                .copied()
        };
        let mut own = r.restored.clone();
        own.extend(r.rolled_back);
        own.sort_unstable();
        let forward = group.promotions[group.promotions.partition_point(|p| p.0 < detected)..]
            .iter()
            .find(|p| p.1 != *id)
            .map(|p| p.0);
        let restored = [first_after(&own), first_after(&group.restores), forward]
            .into_iter()
            .flatten()
            .filter(|&t| t < until)
            .min();
        match restored {
            Some(t) => restore.push(seconds(t - detected)),
            None => open += 1,
        }
    }
    lead.sort_by(f64::total_cmp);
    restore.sort_by(f64::total_cmp);
    Measures {
        since: format_time(window.since),
        until: format_time(window.until),
        deployments: promoted.len(),
        deploy_days: deploy_days.len(),
        deployments_per_day: if window.days() > 0.0 {
            promoted.len() as f64 / window.days()
        } else {
            0.0
        },
        releases_started: started.len(),
        failed_releases: failed,
        change_failure_rate: (!started.is_empty()).then(|| failed as f64 / started.len() as f64),
        lead_time_seconds: LeadTime {
            count: lead.len(),
            median: quantile(&lead, 0.5),
            p90: quantile(&lead, 0.9),
        },
        time_to_restore_seconds: TimeToRestore {
            count: restore.len(),
            open,
            median: quantile(&restore, 0.5),
            p95: quantile(&restore, 0.95),
        },
    }
}

fn seconds(ns: UnixNanos) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

/// The `q` quantile of sorted values, interpolating linearly between the
/// closest ranks (as numpy's default, SQL's `percentile_cont` and DuckDB's
/// `quantile_cont`).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

#[cfg(test)]
mod tests;
