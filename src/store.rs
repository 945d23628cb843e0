//! Releases by (service, environment, deployment id): their signals, when
//! they were seen, and which release is each one's baseline. Pure data with
//! the time passed in; the shells wrap it in a lock.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::BaselineConfig;
use crate::judge::{BaselineView, Color, Judge, Judgement, Pairing, Unpaired, View};
use crate::model::{Batch, Role, UnixNanos};
use crate::window::{Rolling, Signals};

/// One deployment of one service in one environment.
#[derive(Debug, Serialize, Deserialize)]
pub struct Release {
    pub deployment_id: Arc<str>,
    pub git_sha: Option<Arc<str>>,
    pub role: Option<Role>,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    /// Its rollout's end was inferred (promoted or rolled back).
    concluded: bool,
    /// Totals since first seen.
    pub total: Signals,
    /// The rolling window.
    pub window: Rolling,
    /// Samples since the judge's last tick.
    pub pending: Signals,
    /// The verdict and its evidence (taken out only while the judge works).
    judgement: Option<Judgement>,
}

impl Release {
    /// What the judge is shown of this release.
    fn view(&self) -> View<'_> {
        View {
            first_seen: self.first_seen,
            pending: &self.pending,
            window: self.window.sum(),
        }
    }

    /// Heap bytes held by the release's histograms (the bulk of its memory).
    pub fn heap_bytes(&self) -> usize {
        self.total.latency.heap_bytes()
            + self.window.heap_bytes()
            + self.pending.latency.heap_bytes()
    }

    pub fn judgement(&self) -> &Judgement {
        self.judgement
            .as_ref()
            .expect("judgement is only taken during a tick")
    }
}

/// Deployments that declared a role, found once per pass over a fleet.
#[derive(Debug, Default, Clone)]
struct Roles {
    baseline: Option<Arc<str>>,
    stable: Option<Arc<str>>,
}

/// Why the baseline is the one it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Basis {
    /// It reports `deployment.role=baseline`.
    DeclaredBaseline,
    /// It reports `deployment.role=stable` (and no deployment reports `baseline`).
    DeclaredStable,
    /// It served this share of the requests of the deployments without a
    /// declared role when it was chosen.
    Traffic { share: f64 },
}

/// A fleet's choice of the deployment its releases are compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Choice {
    /// Not enough traffic watched yet to tell.
    Settling { since: Option<UnixNanos> },
    /// No deployment serves clearly more than the others: the largest two
    /// with their shares of the traffic.
    Ambiguous { top: Vec<(Arc<str>, f64)> },
    /// The baseline, why, and since when.
    Chosen {
        id: Arc<str>,
        basis: Basis,
        since: UnixNanos,
    },
}

/// The baseline rule's settings (`[baseline]`), in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct BaselineRule {
    pub settle: UnixNanos,
    pub lead: f64,
    pub quiet: UnixNanos,
}

impl From<&BaselineConfig> for BaselineRule {
    fn from(c: &BaselineConfig) -> Self {
        Self {
            settle: c.settle.as_nanos() as u64,
            lead: c.lead,
            quiet: c.quiet.as_nanos() as u64,
        }
    }
}

impl Default for BaselineRule {
    fn default() -> Self {
        Self::from(&BaselineConfig::default())
    }
}

/// All deployments of one service in one environment.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fleet {
    pub releases: HashMap<Arc<str>, Release>,
    /// The deployment the others are compared with.
    pub choice: Choice,
    /// When the fleet first had requests since its baseline was last lost.
    traffic_since: Option<UnixNanos>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            releases: HashMap::new(),
            choice: Choice::Settling { since: None },
            traffic_since: None,
        }
    }
}

impl Fleet {
    /// The most recently seen deployments declaring `baseline` and `stable`.
    fn roles(&self) -> Roles {
        let latest = |role| {
            self.releases
                .values()
                .filter(|r| r.role == Some(role))
                .max_by_key(|r| (r.last_seen, r.total.requests))
                .map(|r| r.deployment_id.clone())
        };
        Roles {
            baseline: latest(Role::Baseline),
            stable: latest(Role::Stable),
        }
    }

    /// The chosen baseline's id, if one is chosen.
    pub fn chosen(&self) -> Option<&Arc<str>> {
        match &self.choice {
            Choice::Chosen { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The baseline of `release` (docs/design.md, "The baseline"): the
    /// deployment the fleet chose, unless that is `release` itself.
    /// Deployments declaring `baseline` or `stable` have none.
    pub fn baseline_of<'a>(&'a self, release: &Release) -> Option<&'a Release> {
        if matches!(release.role, Some(Role::Baseline | Role::Stable)) {
            return None;
        }
        self.chosen()
            .filter(|id| **id != release.deployment_id)
            .and_then(|id| self.releases.get(id))
    }

    /// The releases compared with `baseline`, sorted.
    pub fn compared_with(&self, baseline: &Release) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = self
            .releases
            .values()
            .filter(|r| {
                self.baseline_of(r)
                    .is_some_and(|b| b.deployment_id == baseline.deployment_id)
            })
            .map(|r| r.deployment_id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Chooses the baseline by the strongest evidence at hand: a declared
    /// `baseline`, then a declared `stable`; else the deployment already
    /// chosen, while it keeps reporting; else, once the fleet's traffic has
    /// been watched for `settle`, the deployment without a declared role
    /// serving clearly the most requests over the rolling window. Arrival
    /// order plays no part. Returns the new choice when it changed.
    pub fn choose(&mut self, rule: BaselineRule, now: UnixNanos) -> Option<&Choice> {
        let roles = self.roles();
        let declared = roles
            .baseline
            .map(|id| (id, Basis::DeclaredBaseline))
            .or_else(|| roles.stable.map(|id| (id, Basis::DeclaredStable)));
        let next = if let Some((id, basis)) = declared {
            match &self.choice {
                Choice::Chosen {
                    id: old, basis: b, ..
                } if *old == id && *b == basis => None,
                _ => Some(Choice::Chosen {
                    id,
                    basis,
                    since: now,
                }),
            }
        } else if self
            .chosen()
            .is_some_and(|id| self.reporting(id, rule, now))
        {
            None
        } else {
            if self.chosen().is_some() {
                // The baseline went quiet or expired: watch the traffic afresh.
                self.traffic_since = None;
            }
            let watched = self.traffic_since.map(|t| now.saturating_sub(t));
            let next = match watched {
                Some(w) if w >= rule.settle => self.by_traffic(rule, now),
                _ => Choice::Settling {
                    since: self.traffic_since,
                },
            };
            (next != self.choice).then_some(next)
        };
        let next = next?;
        self.choice = next;
        Some(&self.choice)
    }

    /// Whether a tracked deployment has reported within the quiet time.
    fn reporting(&self, id: &str, rule: BaselineRule, now: UnixNanos) -> bool {
        self.releases
            .get(id)
            .is_some_and(|r| now.saturating_sub(r.last_seen) < rule.quiet)
    }

    /// The deployment without a declared role that serves at least `lead`
    /// times the requests of the next over the rolling window.
    fn by_traffic(&self, rule: BaselineRule, now: UnixNanos) -> Choice {
        let mut served: Vec<(&Arc<str>, u64)> = self
            .releases
            .values()
            .filter(|r| r.role.is_none() && self.reporting(&r.deployment_id, rule, now))
            .map(|r| (&r.deployment_id, r.window.sum().requests))
            .filter(|(_, n)| *n > 0)
            .collect();
        served.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let total: u64 = served.iter().map(|(_, n)| n).sum();
        let share = |n: u64| n as f64 / total.max(1) as f64;
        match served.as_slice() {
            [] => Choice::Settling {
                since: self.traffic_since,
            },
            [(id, n)] => Choice::Chosen {
                id: (*id).clone(),
                basis: Basis::Traffic { share: share(*n) },
                since: now,
            },
            [(id, n), (next, m), ..] => {
                if *n as f64 >= rule.lead * *m as f64 {
                    Choice::Chosen {
                        id: (*id).clone(),
                        basis: Basis::Traffic { share: share(*n) },
                        since: now,
                    }
                } else {
                    Choice::Ambiguous {
                        top: vec![((*id).clone(), share(*n)), ((*next).clone(), share(*m))],
                    }
                }
            }
        }
    }

    /// Rollouts that ended since the last tick, told by who went quiet: a
    /// canary still reporting after its baseline went quiet was promoted
    /// (the busiest one, if several); a canary gone quiet while its
    /// baseline reports was rolled back. Called before `choose`, which
    /// gives a quiet baseline up.
    fn conclude(
        &mut self,
        rule: BaselineRule,
        now: UnixNanos,
    ) -> Vec<(Arc<str>, Arc<str>, Rollout)> {
        let Some(base) = self.chosen().and_then(|id| self.releases.get(id)) else {
            return Vec::new();
        };
        let quiet = |r: &Release| now.saturating_sub(r.last_seen) >= rule.quiet;
        let base_quiet = quiet(base);
        let canaries: Vec<&Release> = self
            .releases
            .values()
            .filter(|r| {
                !r.concluded
                    && self
                        .baseline_of(r)
                        .is_some_and(|b| b.deployment_id == base.deployment_id)
            })
            .collect();
        let mut ended = Vec::new();
        if base_quiet {
            if let Some(winner) = canaries
                .iter()
                .filter(|r| !quiet(r))
                .max_by_key(|r| (r.window.sum().requests, r.deployment_id.clone()))
            {
                ended.push((
                    winner.deployment_id.clone(),
                    base.deployment_id.clone(),
                    Rollout::Promoted,
                ));
            }
        } else {
            ended.extend(canaries.iter().filter(|r| quiet(r)).map(|r| {
                (
                    r.deployment_id.clone(),
                    base.deployment_id.clone(),
                    Rollout::RolledBack,
                )
            }));
        }
        // A promoted-away baseline's story is over too.
        for (id, base, rollout) in &ended {
            let done = match rollout {
                Rollout::Promoted => vec![id, base],
                Rollout::RolledBack => vec![id],
            };
            for id in done {
                if let Some(r) = self.releases.get_mut(id) {
                    r.concluded = true;
                }
            }
        }
        ended
    }

    /// Why `release` has no baseline, for its verdict.
    fn unpaired(&self, release: &Release, rule: BaselineRule, now: UnixNanos) -> Unpaired {
        let others = self.releases.len() > 1;
        match &self.choice {
            Choice::Chosen { id, .. } if *id == release.deployment_id => {
                let ids = self.compared_with(release);
                if ids.is_empty() {
                    Unpaired::Alone
                } else {
                    Unpaired::BaselineOf(ids)
                }
            }
            Choice::Settling { since } if others && release.role.is_none() => Unpaired::Settling {
                watched: since.map(|t| now.saturating_sub(t)).unwrap_or(0),
                settle: rule.settle,
            },
            Choice::Ambiguous { top } if release.role.is_none() => {
                Unpaired::Ambiguous { top: top.clone() }
            }
            _ => Unpaired::Alone,
        }
    }
}

/// Bumped whenever a checkpointed type changes shape.
const CHECKPOINT_VERSION: u32 = 2;

/// A checkpoint as written.
#[derive(Serialize)]
struct SavedRef<'a> {
    version: u32,
    shape: String,
    fleets: Vec<(&'a str, &'a str, &'a Fleet)>,
}

/// A checkpoint as read back.
#[derive(Deserialize)]
struct Saved {
    version: u32,
    shape: String,
    fleets: Vec<(Arc<str>, Arc<str>, Fleet)>,
}

/// Why a checkpoint was not restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the checkpoint cannot be decoded: {0}")]
    Decode(postcard::Error),
    #[error(
        "the checkpoint is of format version {0}, this daemon reads version {CHECKPOINT_VERSION}"
    )]
    Version(u32),
    #[error("the checkpoint was made under other [judge] window or [checks] settings")]
    Settings,
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Items recorded against a release.
    pub recorded: u64,
    /// Items refused because their release was new and the table was full.
    pub refused: u64,
    /// New releases refused for the same reason.
    pub refused_releases: u64,
    /// Releases created.
    pub created: u64,
}

/// A release whose verdict is news at a tick: its first, or a new color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub service: Arc<str>,
    pub environment: Arc<str>,
    pub deployment_id: Arc<str>,
    pub color: Color,
    /// The color before; None for the release's first verdict.
    pub from: Option<Color>,
    /// Its first green.
    pub first_pass: bool,
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
    pub service: Arc<str>,
    pub environment: Arc<str>,
    pub deployment_id: Arc<str>,
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
    judge: Judge,
    rule: BaselineRule,
    /// Rollout ends inferred by ticks, until taken.
    inferred: Vec<Inferred>,
}

impl Store {
    pub fn new(max_releases: usize, judge: Judge, rule: BaselineRule) -> Self {
        Self {
            fleets: HashMap::new(),
            len: 0,
            max_releases,
            judge,
            rule,
            inferred: Vec::new(),
        }
    }

    /// Every fleet, its releases and their judge's evidence, as bytes for
    /// a checkpoint (see `restore`).
    pub fn checkpoint(&self) -> Vec<u8> {
        let fleets: Vec<(&str, &str, &Fleet)> = self.fleets().collect();
        let saved = SavedRef {
            version: CHECKPOINT_VERSION,
            shape: self.shape(),
            fleets,
        };
        // Writing to a Vec cannot fail; our types serialize infallibly.
        postcard::to_stdvec(&saved).unwrap_or_default()
    }

    /// Replaces what is tracked by a checkpoint's content; returns how many
    /// releases it restored. A checkpoint made under other judge settings
    /// (window, checks) is refused: its evidence would not fit.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, RestoreError> {
        let saved: Saved = postcard::from_bytes(bytes).map_err(RestoreError::Decode)?;
        if saved.version != CHECKPOINT_VERSION {
            return Err(RestoreError::Version(saved.version));
        }
        if saved.shape != self.shape() {
            return Err(RestoreError::Settings);
        }
        self.fleets.clear();
        for (service, env, fleet) in saved.fleets {
            if fleet.releases.values().any(|r| r.judgement.is_none()) {
                return Err(RestoreError::Settings);
            }
            self.fleets.entry(service).or_default().insert(env, fleet);
        }
        self.len = self
            .fleets
            .values()
            .flat_map(|envs| envs.values())
            .map(|f| f.releases.len())
            .sum();
        Ok(self.len)
    }

    /// The settings a checkpoint's evidence depends on.
    fn shape(&self) -> String {
        format!(
            "{:?} {} {:?}",
            self.judge.config.window, self.judge.config.window_slots, self.judge.checks
        )
    }

    /// The rollout ends inferred since the last call.
    pub fn take_inferred(&mut self) -> Vec<Inferred> {
        std::mem::take(&mut self.inferred)
    }

    /// Releases tracked.
    pub fn len(&self) -> usize {
        self.len
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
            let known = fleet.is_some_and(|f| f.releases.contains_key(r.deployment_id));
            if !known && self.len >= self.max_releases {
                applied.refused += group.items;
                applied.refused_releases += 1;
                continue;
            }
            let fleet = self
                .fleets
                .entry(Arc::from(r.service))
                .or_default()
                .entry(Arc::from(r.environment))
                .or_default();
            if !known {
                let id: Arc<str> = Arc::from(r.deployment_id);
                let release = Release {
                    deployment_id: id.clone(),
                    git_sha: None,
                    role: None,
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
                    judgement: Some(Judgement::new(&self.judge.checks, now)),
                };
                fleet.releases.insert(id, release);
                self.len += 1;
                applied.created += 1;
            }
            let Some(release) = fleet.releases.get_mut(r.deployment_id) else {
                continue;
            };
            if let Some(sha) = r.git_sha {
                if release.git_sha.as_deref() != Some(sha) {
                    release.git_sha = Some(Arc::from(sha));
                }
            }
            if r.role.is_some() {
                release.role = r.role;
            }
            release.last_seen = release.last_seen.max(now);
            release.total.record(&group.sample);
            release.window.record(&group.sample, now);
            release.pending.record(&group.sample);
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
        let mut changed = Vec::new();
        for (service, envs) in &mut self.fleets {
            for (env, fleet) in envs.iter_mut() {
                for r in fleet.releases.values_mut() {
                    r.window.advance(now);
                }
                for (id, base, rollout) in fleet.conclude(self.rule, now) {
                    let sha =
                        |id: &Arc<str>| fleet.releases.get(id).and_then(|r| r.git_sha.clone());
                    self.inferred.push(Inferred {
                        service: service.clone(),
                        environment: env.clone(),
                        git_sha: sha(&id),
                        baseline_sha: sha(&base),
                        deployment_id: id,
                        baseline: base,
                        rollout,
                        at: now,
                    });
                }
                if let Some(choice) = fleet.choose(self.rule, now) {
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
                    if self.judge.evaluate(&mut j, r.view(), pairing, now) {
                        changed.push(Changed {
                            service: service.clone(),
                            environment: env.clone(),
                            deployment_id: id.clone(),
                            color: j.color,
                            from,
                            first_pass: j.passed_at == Some(now),
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
        changed.sort_by(|a, b| {
            (&a.service, &a.environment, &a.deployment_id).cmp(&(
                &b.service,
                &b.environment,
                &b.deployment_id,
            ))
        });
        changed
    }

    /// Forgets releases not seen since `now - idle`; returns how many.
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
        self.len = self
            .fleets
            .values()
            .flat_map(|envs| envs.values())
            .map(|f| f.releases.len())
            .sum();
        before - self.len
    }

    /// Every (service, environment, fleet).
    pub fn fleets(&self) -> impl Iterator<Item = (&str, &str, &Fleet)> {
        self.fleets.iter().flat_map(|(service, envs)| {
            envs.iter()
                .map(move |(env, fleet)| (&**service, &**env, fleet))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Group, ReleaseRef, Sample};

    fn batch(groups: &[(&'static str, u64, Option<Role>)]) -> Batch<'static> {
        let mut b = Batch::default();
        for &(id, n, role) in groups {
            b.groups.push(Group {
                release: ReleaseRef {
                    service: "svc",
                    environment: "prod",
                    deployment_id: id,
                    git_sha: Some("sha"),
                    role,
                },
                items: n,
                sample: Sample {
                    requests: n,
                    errors: 0,
                    latencies_us: vec![(1000, n)],
                    ..Default::default()
                },
            });
        }
        b
    }

    fn fleet(store: &Store) -> &Fleet {
        store.fleets().next().unwrap().2
    }

    fn store(max: usize) -> Store {
        let c = crate::config::Config::default();
        Store::new(
            max,
            Judge::new(&c.judge, &c.checks),
            BaselineRule::from(&c.baseline),
        )
    }

    fn base<'a>(f: &'a Fleet, id: &str) -> Option<&'a str> {
        f.baseline_of(&f.releases[id]).map(|b| &*b.deployment_id)
    }

    const SEC: u64 = crate::model::NANOS_PER_SEC;

    /// Seconds `from..to`: each second the groups are applied in order, a
    /// fifth of a second apart, then the store is judged.
    fn run(s: &mut Store, from: u64, to: u64, groups: &[(&'static str, u64, Option<Role>)]) {
        for t in from..to {
            for (k, g) in groups.iter().enumerate() {
                s.apply(&batch(&[*g]), t * SEC + k as u64 * SEC / 5);
            }
            s.tick(t * SEC + SEC - 1);
        }
    }

    fn unpaired(s: &Store, id: &str) -> Unpaired {
        let f = fleet(s);
        f.unpaired(&f.releases[id], s.rule, 1_000 * SEC)
    }

    #[test]
    fn totals_accumulate_per_release() {
        let mut s = store(10);
        s.apply(&batch(&[("a", 3, None), ("b", 2, None)]), 10);
        s.apply(&batch(&[("a", 4, None)]), 20);
        let f = fleet(&s);
        assert_eq!(f.releases["a"].total.requests, 7);
        assert_eq!(f.releases["a"].first_seen, 10);
        assert_eq!(f.releases["a"].last_seen, 20);
        assert_eq!(f.releases["b"].total.requests, 2);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn the_busiest_deployment_is_the_baseline_whoever_reports_first() {
        let mut s = store(10);
        // The new version's exporter always flushes first.
        let traffic = [("new", 10, None), ("old", 90, None)];
        run(&mut s, 1, 5, &traffic);
        assert_eq!(base(fleet(&s), "new"), None, "chosen before settling");
        assert!(matches!(unpaired(&s, "new"), Unpaired::Settling { .. }));
        run(&mut s, 5, 13, &traffic);
        let f = fleet(&s);
        assert_eq!(base(f, "new"), Some("old"));
        assert_eq!(base(f, "old"), None);
        assert_eq!(
            unpaired(&s, "old"),
            Unpaired::BaselineOf(vec!["new".into()])
        );
        assert!(matches!(
            f.choice,
            Choice::Chosen { basis: Basis::Traffic { share }, .. } if (share - 0.9).abs() < 1e-9
        ));
    }

    #[test]
    fn the_baseline_stays_while_the_canary_takes_most_of_the_traffic() {
        let mut s = store(10);
        run(&mut s, 1, 12, &[("old", 90, None), ("new", 10, None)]);
        run(&mut s, 12, 100, &[("old", 20, None), ("new", 80, None)]);
        assert_eq!(base(fleet(&s), "new"), Some("old"));
    }

    #[test]
    fn similar_shares_are_ambiguous_until_a_role_says() {
        let mut s = store(10);
        run(&mut s, 1, 12, &[("a", 50, None), ("b", 45, None)]);
        assert_eq!(base(fleet(&s), "a"), None);
        assert!(matches!(unpaired(&s, "b"), Unpaired::Ambiguous { ref top } if top.len() == 2));
        run(
            &mut s,
            12,
            13,
            &[("a", 50, Some(Role::Baseline)), ("b", 45, None)],
        );
        assert_eq!(base(fleet(&s), "b"), Some("a"));
    }

    #[test]
    fn a_declared_baseline_wins() {
        let mut s = store(10);
        run(&mut s, 1, 12, &[("old", 100, None)]);
        run(
            &mut s,
            12,
            14,
            &[("old", 100, None), ("canary", 5, Some(Role::Canary))],
        );
        assert_eq!(base(fleet(&s), "canary"), Some("old"));
        run(&mut s, 14, 15, &[("base", 5, Some(Role::Baseline))]);
        let f = fleet(&s);
        assert_eq!(base(f, "canary"), Some("base"));
        assert_eq!(base(f, "base"), None);
    }

    #[test]
    fn a_declared_canary_is_never_anyones_baseline() {
        let mut s = store(10);
        run(
            &mut s,
            1,
            15,
            &[("c1", 80, Some(Role::Canary)), ("c2", 20, None)],
        );
        let f = fleet(&s);
        assert_eq!(base(f, "c2"), None);
        assert_eq!(base(f, "c1"), Some("c2"));
    }

    #[test]
    fn a_quiet_baseline_is_replaced_by_the_deployment_still_serving() {
        let mut s = store(10);
        run(&mut s, 1, 15, &[("old", 90, None), ("new", 10, None)]);
        assert_eq!(base(fleet(&s), "new"), Some("old"));
        // Promoted: the old version stops reporting.
        run(&mut s, 15, 200, &[("new", 100, None)]);
        let f = fleet(&s);
        assert_eq!(f.chosen().map(|id| &**id), Some("new"));
        assert_eq!(base(f, "new"), None);
    }

    #[test]
    fn who_goes_quiet_tells_how_a_rollout_ended() {
        let mut s = store(10);
        let svc = [("old", 90, None), ("new", 10, None), ("bad", 10, None)];
        run(&mut s, 1, 20, &svc);
        assert!(s.take_inferred().is_empty());
        // "bad" is rolled back: it stops, its baseline goes on.
        run(&mut s, 20, 200, &[("old", 90, None), ("new", 10, None)]);
        let ended = s.take_inferred();
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(
            (&*ended[0].deployment_id, ended[0].rollout),
            ("bad", Rollout::RolledBack)
        );
        assert_eq!(&*ended[0].baseline, "old");
        // "new" is promoted: it goes on, the old version stops; once only.
        run(&mut s, 200, 400, &[("new", 100, None)]);
        let ended = s.take_inferred();
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(
            (&*ended[0].deployment_id, ended[0].rollout),
            ("new", Rollout::Promoted)
        );
        assert_eq!(ended[0].git_sha.as_deref(), Some("sha"));
    }

    /// A batch whose releases fail a share of their requests.
    fn failing(groups: &[(&'static str, u64, u64)]) -> Batch<'static> {
        let mut b = batch(
            &groups
                .iter()
                .map(|&(id, n, _)| (id, n, None))
                .collect::<Vec<_>>(),
        );
        for (g, &(_, _, errors)) in b.groups.iter_mut().zip(groups) {
            g.sample.errors = errors;
        }
        b
    }

    fn verdicts(s: &Store) -> Vec<(String, Color, String, Option<UnixNanos>)> {
        let mut out: Vec<_> = fleet(s)
            .releases
            .values()
            .map(|r| {
                let j = r.judgement();
                (
                    r.deployment_id.to_string(),
                    j.color,
                    j.reason.clone(),
                    j.red_since,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn a_restored_checkpoint_carries_on_as_if_never_stopped() {
        let traffic = [("old", 200, 1), ("bad", 20, 4), ("good", 20, 0)];
        let mut a = store(10);
        for t in 1..40 {
            a.apply(&failing(&traffic), t * SEC);
            a.tick(t * SEC + SEC / 2);
        }
        let bytes = a.checkpoint();
        let mut b = store(10);
        assert_eq!(b.restore(&bytes).unwrap(), 3);
        assert_eq!(b.len(), 3);
        assert_eq!(fleet(&b).choice, fleet(&a).choice);
        assert_eq!(verdicts(&b), verdicts(&a));
        assert_eq!(verdicts(&a)[0].1, Color::Red, "{:?}", verdicts(&a));
        for t in 40..80 {
            for s in [&mut a, &mut b] {
                s.apply(&failing(&traffic), t * SEC);
                s.tick(t * SEC + SEC / 2);
            }
        }
        assert_eq!(verdicts(&b), verdicts(&a));
    }

    #[test]
    fn a_checkpoint_from_other_settings_is_refused() {
        let mut a = store(10);
        run(&mut a, 1, 5, &[("old", 10, None)]);
        let mut c = crate::config::Config::default();
        c.judge.window_slots = 12;
        let mut b = Store::new(
            10,
            Judge::new(&c.judge, &c.checks),
            BaselineRule::from(&c.baseline),
        );
        assert!(matches!(
            b.restore(&a.checkpoint()),
            Err(RestoreError::Settings)
        ));
        assert!(b.restore(b"not a checkpoint").is_err());
        assert!(b.is_empty());
    }

    #[test]
    fn the_cap_refuses_new_releases_but_not_known_ones() {
        let mut s = store(2);
        let a = s.apply(
            &batch(&[("a", 1, None), ("b", 1, None), ("c", 3, None)]),
            10,
        );
        assert_eq!(
            (a.recorded, a.refused, a.refused_releases, a.created),
            (2, 3, 1, 2)
        );
        let a = s.apply(&batch(&[("a", 1, None)]), 11);
        assert_eq!((a.recorded, a.refused), (1, 0));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn idle_releases_expire_and_free_their_slot() {
        let mut s = store(2);
        s.apply(&batch(&[("a", 1, None)]), 10);
        s.apply(&batch(&[("b", 1, None)]), 100);
        assert_eq!(s.expire(105, 50), 1);
        assert_eq!(s.len(), 1);
        let a = s.apply(&batch(&[("c", 1, None)]), 106);
        assert_eq!(a.created, 1);
        assert_eq!(s.expire(1_000, 50), 2);
        assert!(s.is_empty());
        assert_eq!(s.fleets().count(), 0);
    }
}
