//! Releases by (service, environment, deployment id): their signals, when
//! they were seen, the judge's tick over them, and the checkpoint of it
//! all. `fleet` holds one service and environment's deployments and the
//! baseline rule. Pure data with the time passed in; the shells wrap it
//! in a lock.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::judge::{BaselineView, Color, Judge, Judgement, Pairing, View};
use crate::model::{Batch, FleetKey, ReleaseKey, RequestSource, Role, UnixNanos};
use crate::window::{Detail, Rolling, Signals};

mod adopt;
mod checkpoint;
mod fleet;

pub use checkpoint::{checkpoint_of, RestoreError};
#[cfg(test)]
use checkpoint::{SavedRef, CHECKPOINT_VERSION};
pub use fleet::{BaselineRule, Choice, Fleet, PastPairing};

/// One deployment of one service in one environment.
#[derive(Debug, Serialize, Deserialize)]
pub struct Release {
    pub deployment_id: Arc<str>,
    pub git_sha: Option<Arc<str>>,
    pub role: Option<Role>,
    /// Its role claim was withdrawn: telemetry of it came without the
    /// claim, so the claim was not the deployment's own (a forged first
    /// span, say). No claim of it counts from then on.
    pub role_withdrawn: bool,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    /// Its rollout's end was inferred (promoted or rolled back).
    concluded: bool,
    /// Totals since first seen: requests and errors only.
    pub total: Signals,
    /// The rolling window.
    pub window: Rolling,
    /// Samples since the judge's last tick.
    pub pending: Signals,
    /// Its endpoint table, error kinds and exemplars.
    pub detail: Detail,
    /// The signal `total`, `window`, `pending` and `detail` take requests
    /// from (`choose_source`): a request both spans and duration metrics
    /// report is counted once.
    pub requests_from: RequestSource,
    /// What each signal reported since first seen, counted or not: spans
    /// first, metrics second.
    pub by_source: [SourceCounts; 2],
    /// The verdict and its evidence (taken out only while the judge works).
    judgement: Option<Judgement>,
}

/// Requests and errors one signal reported for a release since first seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub requests: u64,
    pub errors: u64,
    /// When it last reported a request.
    pub last_at: Option<UnixNanos>,
}

/// The index of a signal in `Release::by_source`.
fn source_index(source: RequestSource) -> usize {
    match source {
        RequestSource::Spans => 0,
        RequestSource::Metrics => 1,
    }
}

/// How many more requests than the spans the duration metrics must report,
/// beyond half as many again, for the spans to be taken as sampled.
pub const SAMPLED_MARGIN: u64 = 20;

/// The signal a release's requests are taken from, given what each
/// reported since first seen: its spans where they arrive, its duration
/// metrics where no span came within `recent` of the latest metric
/// requests (the service sends none, or stopped), or where the metrics
/// report clearly more requests than the spans (more than 1.5 times as many
/// and `SAMPLED_MARGIN` beyond: the spans are sampled). Totals since first
/// seen, not a window, are compared, so that metrics exported a minute at
/// a time do not look like more requests than a window's spans; they lag
/// the spans, which only delays the choice of sampled spans' metrics.
pub fn choose_source(
    spans: SourceCounts,
    metrics: SourceCounts,
    recent: UnixNanos,
) -> RequestSource {
    let Some(metrics_at) = metrics.last_at else {
        return RequestSource::Spans;
    };
    let Some(spans_at) = spans.last_at else {
        return RequestSource::Metrics;
    };
    let stopped = spans_at.saturating_add(recent) < metrics_at;
    let sampled = metrics.requests
        > spans
            .requests
            .saturating_add(spans.requests / 2)
            .saturating_add(SAMPLED_MARGIN);
    if stopped || sampled {
        RequestSource::Metrics
    } else {
        RequestSource::Spans
    }
}

impl Release {
    /// What the judge is shown of this release.
    fn view(&self) -> View<'_> {
        View {
            first_seen: self.first_seen,
            pending: &self.pending,
            window: self.window.sum(),
            detail: &self.detail,
            buckets: self.requests_from == RequestSource::Metrics,
        }
    }

    /// Heap bytes held by the release's histograms (the bulk of its memory).
    pub fn heap_bytes(&self) -> usize {
        self.total.latency.heap_bytes()
            + self.window.heap_bytes()
            + self.pending.latency.heap_bytes()
            + (self.pending.endpoint_latency.iter())
                .map(|r| r.heap_bytes())
                .sum::<usize>()
            + self.detail.heap_bytes()
    }

    /// Counts a sample's requests under its signal, chooses the signal
    /// again and takes the totals since first seen from the chosen one. (The window and the judge's evidence keep what they
    /// hold: at the change, a few seconds' requests may be in both.)
    fn count_source(&mut self, sample: &crate::model::Sample, now: UnixNanos, recent: UnixNanos) {
        let counts = &mut self.by_source[source_index(sample.source)];
        counts.requests = counts.requests.saturating_add(sample.requests);
        counts.errors = counts.errors.saturating_add(sample.errors);
        if sample.requests > 0 {
            counts.last_at = Some(counts.last_at.map_or(now, |t| t.max(now)));
        }
        let [spans, metrics] = self.by_source;
        self.requests_from = choose_source(spans, metrics, recent);
        let counted = self.by_source[source_index(self.requests_from)];
        self.total.requests = counted.requests;
        self.total.errors = counted.errors;
    }

    pub fn judgement(&self) -> &Judgement {
        self.judgement
            .as_ref()
            .expect("judgement is only taken during a tick")
    }
}

/// Says which baseline a fleet chose, or why none, when that changes.
fn log_choice(service: &str, environment: &str, choice: &Choice) {
    match choice {
        Choice::Chosen { id, basis, .. } => tracing::info!(
            %service, %environment, baseline = %id, basis = ?basis, "baseline chosen"
        ),
        Choice::Ambiguous { top } => tracing::warn!(
            %service, %environment, candidates = ?top,
            "ambiguous baseline: no deployment serves clearly the most traffic; set deployment.role"
        ),
        Choice::Settling { .. } => tracing::info!(
            %service, %environment, "baseline lost; watching the traffic to choose again"
        ),
    }
}

/// What applying a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Items recorded against a release.
    pub recorded: u64,
    /// Items refused because their release was new and the table was full.
    pub refused: u64,
    /// New releases refused for the same reason (or their service's cap).
    pub refused_releases: u64,
    /// The first service whose own cap refused a new release.
    pub full_service: Option<String>,
    /// Items refused because they claimed a role their deployment does not
    /// have (`deployment.role` is fixed by a deployment's first telemetry).
    pub role_conflicts: u64,
    /// The first such conflict: (deployment id, claimed, held).
    pub first_role_conflict: Option<(String, Role, Option<Role>)>,
    /// Deployments whose role claim was withdrawn by this batch: telemetry
    /// of theirs came without it (`Release::role_withdrawn`).
    pub roles_withdrawn: Vec<String>,
    /// Releases created.
    pub created: u64,
    /// Junk releases forgotten to make room for new ones (`make_room`).
    pub evicted: u64,
}

/// A release whose verdict is news at a tick: its first, or a new color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub release: ReleaseKey,
    pub color: Color,
    /// The color before; None for the release's first verdict.
    pub from: Option<Color>,
    /// Its first green.
    pub first_pass: bool,
    /// The release's count of verdicts given (`Judgement::changes`).
    pub nth: u32,
}

/// How a rollout ended, as the telemetry tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// The canary went on serving and its baseline went quiet.
    Promoted,
    /// The canary went quiet and its baseline went on serving.
    RolledBack,
}

impl Rollout {
    /// The ledger's event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Rollout::Promoted => "promoted",
            Rollout::RolledBack => "rolled_back",
        }
    }
}

/// The end of a rollout inferred at a tick (once per release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inferred {
    pub release: ReleaseKey,
    pub git_sha: Option<Arc<str>>,
    pub baseline: Arc<str>,
    pub baseline_sha: Option<Arc<str>>,
    pub rollout: Rollout,
    pub at: UnixNanos,
}

/// Every tracked release.
#[derive(Debug)]
pub struct Store {
    fleets: HashMap<Arc<str>, HashMap<Arc<str>, Fleet>>,
    len: usize,
    max_releases: usize,
    /// Most releases of one service (all environments).
    max_per_service: usize,
    judge: Judge,
    rule: BaselineRule,
    /// Rollout ends inferred by ticks, until taken.
    inferred: Vec<Inferred>,
    /// Releases whose baseline changed without a change of color, until taken.
    rebased: Vec<ReleaseKey>,
    /// Releases the ledger recorded red, with when and why, until each is
    /// tracked and held red (see `remember_reds`).
    reds: HashMap<ReleaseKey, (UnixNanos, String)>,
    /// The ledger's record of who was compared with whom before the start,
    /// by service and environment (see `remember_baselines`).
    recorded: HashMap<Arc<str>, HashMap<Arc<str>, Vec<PastPairing>>>,
    /// Releases a newcomer may take the place of when the table is full,
    /// oldest last seen at the end, and when they were listed (`make_room`).
    evictable: Vec<Evictable>,
    evictable_at: Option<UnixNanos>,
    /// Fleets first seen look for their state in the ledger (`adopt`).
    adopts: bool,
    /// Fleets first seen since last taken, whose state to look for.
    to_adopt: Vec<FleetKey>,
}

/// A release `make_room` may forget, as it was when listed.
#[derive(Debug)]
struct Evictable {
    service: Arc<str>,
    environment: Arc<str>,
    id: Arc<str>,
    last_seen: UnixNanos,
}

/// A release that has served at most this many requests and has no
/// baseline (alone in its fleet, or its fleet has none) is junk to the
/// release cap: a name sent once, not a deployment being judged.
const JUNK_REQUESTS: u64 = 10;
/// Junk idle this long makes room for any newcomer; junk seen more recently
/// only for a newcomer that would be judged (its fleet has a baseline).
const JUNK_IDLE: UnixNanos = 60 * 1_000_000_000;
/// The list of evictable releases is made again at most this often.
const EVICTABLE_EVERY: UnixNanos = 1_000_000_000;

impl Store {
    pub fn new(max_releases: usize, judge: Judge, rule: BaselineRule) -> Self {
        Self {
            fleets: HashMap::new(),
            len: 0,
            max_releases,
            max_per_service: max_releases,
            judge,
            rule,
            inferred: Vec::new(),
            rebased: Vec::new(),
            reds: HashMap::new(),
            recorded: HashMap::new(),
            evictable: Vec::new(),
            evictable_at: None,
            adopts: false,
            to_adopt: Vec::new(),
        }
    }

    /// Takes the ledger's record of which deployment each release was
    /// compared with, (release, baseline, last seen):
    /// when both of a pair report again, the pair is the baseline's
    /// evidence, stronger than traffic (a canary past half of it after a
    /// restart without the checkpoint keeps its baseline).
    pub fn remember_baselines(
        &mut self,
        pairs: impl IntoIterator<Item = (ReleaseKey, Arc<str>, UnixNanos)>,
    ) {
        for (release, baseline, last_seen) in pairs {
            self.recorded
                .entry(release.service)
                .or_default()
                .entry(release.environment)
                .or_default()
                .push(PastPairing {
                    deployment: release.deployment_id,
                    baseline,
                    last_seen,
                });
        }
    }

    /// Takes the ledger's record of releases that turned red, (release, red
    /// since, reason): each is held red with that `red_since` once tracked
    /// (now, restored from a checkpoint, or at its first telemetry), so a
    /// red that came after the last checkpoint survives a crash.
    pub fn remember_reds(
        &mut self,
        reds: impl IntoIterator<Item = (ReleaseKey, UnixNanos, String)>,
    ) {
        self.reds.extend(
            reds.into_iter()
                .map(|(key, since, why)| (key, (since, why))),
        );
        self.hold_reds();
    }

    /// Holds the remembered reds of the releases tracked, and forgets them:
    /// from then on the release's own judgement keeps it red.
    fn hold_reds(&mut self) {
        if self.reds.is_empty() {
            return;
        }
        let reds = &mut self.reds;
        for (service, envs) in &mut self.fleets {
            for (environment, fleet) in envs.iter_mut() {
                for (id, release) in fleet.releases.iter_mut() {
                    let key = ReleaseKey::new(service.clone(), environment.clone(), id.clone());
                    if let Some((since, why)) = reds.remove(&key) {
                        if let Some(j) = release.judgement.as_mut() {
                            j.hold_red(since, &why);
                        }
                    }
                }
            }
        }
    }

    /// The same store, tracking at most `max` releases of any one service.
    pub fn with_service_cap(mut self, max: usize) -> Self {
        self.max_per_service = max;
        self
    }

    /// The rollout ends inferred since the last call.
    pub fn take_inferred(&mut self) -> Vec<Inferred> {
        std::mem::take(&mut self.inferred)
    }

    /// The releases (service, environment, deployment id) whose baseline
    /// changed since the last call while their color did not.
    pub fn take_rebased(&mut self) -> Vec<ReleaseKey> {
        std::mem::take(&mut self.rebased)
    }

    /// Releases tracked.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Counts the releases in every fleet (`len` caches it).
    fn count(&self) -> usize {
        self.fleets
            .values()
            .flat_map(|envs| envs.values())
            .map(|f| f.releases.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records a batch's samples at time `now`, creating releases up to the cap.
    pub fn apply(&mut self, batch: &Batch<'_>, now: UnixNanos) -> Applied {
        let mut applied = Applied::default();
        for group in &batch.groups {
            let r = &group.release;
            let fleet = match self.fleets.get_mut(r.service) {
                Some(envs) => envs.get_mut(r.environment),
                None => None,
            };
            let known = fleet
                .as_ref()
                .is_some_and(|f| f.releases.contains_key(r.deployment_id));
            if !known && self.len >= self.max_releases {
                let judged = fleet.is_some_and(|f| f.chosen().is_some());
                if !self.make_room(judged, now) {
                    applied.refused += group.items;
                    applied.refused_releases += 1;
                    continue;
                }
                applied.evicted += 1;
            }
            if !known {
                let of_service: usize = self
                    .fleets
                    .get(r.service)
                    .map_or(0, |envs| envs.values().map(|f| f.releases.len()).sum());
                if of_service >= self.max_per_service {
                    applied.refused += group.items;
                    applied.refused_releases += 1;
                    applied
                        .full_service
                        .get_or_insert_with(|| r.service.to_string());
                    continue;
                }
            }
            let envs = self.fleets.entry(Arc::from(r.service)).or_default();
            // At most a cap's worth wait for their state: a flood of new
            // service names is judged on its own telemetry.
            let room = self.to_adopt.len() < self.max_releases;
            if !envs.contains_key(r.environment) && self.adopts && room {
                let key = FleetKey::new(r.service, r.environment);
                envs.insert(key.environment.clone(), Fleet::adopting(now));
                self.to_adopt.push(key);
            }
            let fleet = envs.entry(Arc::from(r.environment)).or_default();
            if !known {
                let id: Arc<str> = Arc::from(r.deployment_id);
                let mut release = Release {
                    deployment_id: id.clone(),
                    git_sha: None,
                    role: None,
                    role_withdrawn: false,
                    first_seen: now,
                    last_seen: now,
                    concluded: false,
                    total: Signals::default(),
                    window: Rolling::new(
                        self.judge.config.window,
                        self.judge.config.window_slots,
                        now,
                    ),
                    pending: Signals::default(),
                    detail: Detail::default(),
                    requests_from: group.sample.source,
                    by_source: Default::default(),
                    judgement: Some(Judgement::new(&self.judge.checks, now)),
                };
                if !self.reds.is_empty() {
                    let key = ReleaseKey::new(r.service, r.environment, id.clone());
                    if let (Some((since, why)), Some(j)) =
                        (self.reds.remove(&key), release.judgement.as_mut())
                    {
                        j.hold_red(since, &why);
                    }
                }
                fleet.releases.insert(id, release);
                self.len += 1;
                applied.created += 1;
            }
            // While the fleet has no baseline (ambiguous, settling) a
            // deployment may declare its role late: that is how a person
            // settles an ambiguity.
            let open_to_claims = fleet.chosen().is_none();
            let Some(release) = fleet.releases.get_mut(r.deployment_id) else {
                continue;
            };
            if known && r.role.is_none() && release.role.is_some() {
                // A role counts only while the deployment's own telemetry
                // carries it: this came without it.
                release.role = None;
                release.role_withdrawn = true;
                applied
                    .roles_withdrawn
                    .push(release.deployment_id.to_string());
            }
            let claim = r.role.is_some() && r.role != release.role;
            if known
                && claim
                && (release.role.is_some() || release.role_withdrawn || !open_to_claims)
            {
                // Otherwise a role is fixed by the first claim: a later one
                // (a forged span making a bad canary a "baseline", or the
                // baseline a "canary") is refused, not obeyed.
                applied.role_conflicts += group.items;
                applied.first_role_conflict.get_or_insert_with(|| {
                    (
                        r.deployment_id.to_string(),
                        r.role.unwrap_or(Role::Canary),
                        release.role,
                    )
                });
                continue;
            }
            if let Some(sha) = r.git_sha {
                if release.git_sha.as_deref() != Some(sha) {
                    release.git_sha = Some(Arc::from(sha));
                }
            }
            if claim {
                release.role = r.role;
            }
            release.last_seen = release.last_seen.max(now);
            let window = self.judge.config.window.as_nanos() as UnixNanos;
            release.count_source(&group.sample, now, window);
            if group.sample.source == release.requests_from {
                release.window.add_sample(&group.sample, now);
                release.pending.add_sample(&group.sample);
                let top = self.judge.checks.endpoints.top;
                let hits = release.detail.add(&group.sample, top, now, window);
                if !hits.is_empty() {
                    release.total.add_endpoints(&hits);
                    release.window.add_endpoints(&hits);
                    release.pending.add_endpoints(&hits);
                }
                if !group.sample.endpoint_latencies.is_empty() {
                    let slots = release.detail.slots(&group.sample);
                    release
                        .pending
                        .add_endpoint_latencies(&group.sample, &slots);
                }
            } else if !group.sample.metrics.is_empty() {
                // The other signal's requests are counted elsewhere; its
                // configured metrics are checks of their own.
                let checks = group.sample.checks_only();
                release.window.add_sample(&checks, now);
                release.pending.add_sample(&checks);
            }
            if group.sample.requests > 0 && fleet.traffic_since.is_none() {
                fleet.traffic_since = Some(now);
            }
            applied.recorded += group.items;
        }
        applied
    }

    /// Judges every release on the samples since the last tick; returns the
    /// releases whose verdict changed color, in a stable order.
    pub fn tick(&mut self, now: UnixNanos) -> Vec<Changed> {
        let keys = self.fleet_keys();
        let mut changed = self.tick_fleets(&keys, now);
        sort_changed(&mut changed);
        changed
    }

    /// Every fleet's service and environment, for `tick_fleets`.
    pub fn fleet_keys(&self) -> Vec<FleetKey> {
        self.fleets
            .iter()
            .flat_map(|(service, envs)| {
                envs.keys()
                    .map(|env| FleetKey::new(service.clone(), env.clone()))
            })
            .collect()
    }

    /// `tick` for the fleets named (those gone since are skipped), so a
    /// caller can judge 10,000 releases a chunk at a time without holding
    /// ingest up for all of them; the changes come unsorted (see
    /// `sort_changed`). Fleets are judged independently of one another.
    pub fn tick_fleets(&mut self, keys: &[FleetKey], now: UnixNanos) -> Vec<Changed> {
        let mut changed = Vec::new();
        for key in keys {
            let (service, env) = (&key.service, &key.environment);
            {
                let Some(fleet) = self.fleets.get_mut(service).and_then(|e| e.get_mut(env)) else {
                    continue;
                };
                if fleet.waits_for_adoption(now) {
                    continue;
                }
                for r in fleet.releases.values_mut() {
                    r.window.advance(now);
                }
                for (id, base, rollout) in fleet.conclude(self.rule, now) {
                    let sha =
                        |id: &Arc<str>| fleet.releases.get(id).and_then(|r| r.git_sha.clone());
                    self.inferred.push(Inferred {
                        git_sha: sha(&id),
                        baseline_sha: sha(&base),
                        release: key.release(id),
                        baseline: base,
                        rollout,
                        at: now,
                    });
                }
                let recorded = self
                    .recorded
                    .get(service)
                    .and_then(|envs| envs.get(env))
                    .map_or(&[][..], Vec::as_slice);
                if let Some(choice) = fleet.choose(self.rule, now, recorded) {
                    log_choice(service, env, choice);
                }
                let pairs: Vec<(Arc<str>, Option<Arc<str>>)> = fleet
                    .releases
                    .values()
                    .map(|r| {
                        let base = fleet.baseline_of(r).map(|b| b.deployment_id.clone());
                        (r.deployment_id.clone(), base)
                    })
                    .collect();
                for (id, base) in pairs {
                    let Some(mut j) = fleet.releases.get_mut(&id).and_then(|r| r.judgement.take())
                    else {
                        continue;
                    };
                    let r = &fleet.releases[&id];
                    let pairing = match base.as_ref().and_then(|b| fleet.releases.get(b)) {
                        Some(b) => Pairing::Compared(BaselineView {
                            id: &b.deployment_id,
                            view: b.view(),
                        }),
                        None => Pairing::Unpaired(fleet.unpaired(r, self.rule, now)),
                    };
                    let from = j.evaluated_at.map(|_| j.color);
                    let compared_with = j.last_baseline().cloned();
                    let recolored = self.judge.evaluate(&mut j, r.view(), pairing, now);
                    if !recolored && from.is_some() && j.last_baseline() != compared_with.as_ref() {
                        // Its record (whom it is compared with) is news too.
                        self.rebased.push(key.release(id.clone()));
                    }
                    if recolored {
                        changed.push(Changed {
                            release: key.release(id.clone()),
                            color: j.color,
                            from,
                            first_pass: j.passed_at == Some(now),
                            nth: j.changes,
                        });
                    }
                    if let Some(r) = fleet.releases.get_mut(&id) {
                        r.judgement = Some(j);
                    }
                }
                for r in fleet.releases.values_mut() {
                    r.pending.clear();
                }
            }
        }
        changed
    }

    /// Forgets releases not seen since `now - idle`; returns how many.
    /// Forgets one junk release (`JUNK_REQUESTS`) to make room for a new
    /// one when the table is full: the one idle longest, if idle for
    /// `JUNK_IDLE`, or, for a newcomer that would be judged (`judged`: its
    /// fleet has a baseline), the one idle longest at all. So a flood of
    /// names sent once cannot keep a real canary out for the idle expiry.
    /// Whether room was made.
    fn make_room(&mut self, judged: bool, now: UnixNanos) -> bool {
        let stale = self
            .evictable_at
            .is_none_or(|at| now.saturating_sub(at) >= EVICTABLE_EVERY);
        if stale {
            self.list_evictable(now);
        }
        while let Some(c) = self.evictable.pop() {
            if !judged && now.saturating_sub(c.last_seen) < JUNK_IDLE {
                // The oldest is not idle enough: none is.
                self.evictable.push(c);
                return false;
            }
            let Some(envs) = self.fleets.get_mut(&c.service) else {
                continue;
            };
            let Some(fleet) = envs.get_mut(&c.environment) else {
                continue;
            };
            // Still as listed: nothing came from it since.
            let unchanged = fleet
                .releases
                .get(&c.id)
                .is_some_and(|r| r.last_seen == c.last_seen);
            if !unchanged || !is_junk(fleet, &c.id) {
                continue;
            }
            fleet.releases.remove(&c.id);
            if fleet.releases.is_empty() {
                envs.remove(&c.environment);
                if envs.is_empty() {
                    self.fleets.remove(&c.service);
                }
            }
            self.len -= 1;
            return true;
        }
        false
    }

    fn list_evictable(&mut self, now: UnixNanos) {
        let mut junk = Vec::new();
        for (service, envs) in &self.fleets {
            for (environment, fleet) in envs {
                for (id, r) in &fleet.releases {
                    if is_junk(fleet, id) {
                        junk.push(Evictable {
                            service: service.clone(),
                            environment: environment.clone(),
                            id: id.clone(),
                            last_seen: r.last_seen,
                        });
                    }
                }
            }
        }
        // Oldest last seen at the end, where `pop` takes it.
        junk.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| b.id.cmp(&a.id)));
        self.evictable = junk;
        self.evictable_at = Some(now);
    }

    pub fn expire(&mut self, now: UnixNanos, idle: UnixNanos) -> usize {
        let cutoff = now.saturating_sub(idle);
        let before = self.len;
        for envs in self.fleets.values_mut() {
            for fleet in envs.values_mut() {
                fleet.releases.retain(|_, r| r.last_seen >= cutoff);
            }
            envs.retain(|_, f| !f.releases.is_empty());
        }
        self.fleets.retain(|_, envs| !envs.is_empty());
        self.len = self.count();
        before - self.len
    }

    /// One service and environment's deployments. A fleet waiting for its
    /// state from the ledger is not shown: its verdicts would be of the
    /// few spans counted here.
    pub fn fleet(&self, service: &str, environment: &str) -> Option<&Fleet> {
        let fleet = self.fleets.get(service)?.get(environment)?;
        fleet.adopting.is_none().then_some(fleet)
    }

    /// Every (service, environment, fleet) shown (see `fleet`).
    pub fn fleets(&self) -> impl Iterator<Item = (&str, &str, &Fleet)> {
        self.fleets.iter().flat_map(|(service, envs)| {
            envs.iter()
                .filter(|(_, fleet)| fleet.adopting.is_none())
                .map(move |(env, fleet)| (&**service, &**env, fleet))
        })
    }
}

/// Whether the release `id` of `fleet` is junk to the release cap: it has
/// served at most `JUNK_REQUESTS` requests and no baseline (it is alone
/// in its fleet, or its fleet has none chosen).
fn is_junk(fleet: &Fleet, id: &str) -> bool {
    let Some(r) = fleet.releases.get(id) else {
        return false;
    };
    r.total.requests <= JUNK_REQUESTS && (fleet.releases.len() == 1 || fleet.chosen().is_none())
}

/// Puts a tick's changes in their stable order: by service, environment
/// and deployment id.
pub fn sort_changed(changed: &mut [Changed]) {
    changed.sort_by(|a, b| a.release.cmp(&b.release));
}

#[cfg(test)]
mod tests;
