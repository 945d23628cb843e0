//! Releases by (service, environment, deployment id): their signals, when
//! they were seen, and which release is each one's baseline. Pure data with
//! the time passed in; the shells wrap it in a lock.

use std::collections::HashMap;
use std::sync::Arc;

use crate::judge::{BaselineView, Color, Judge, Judgement, View};
use crate::model::{Batch, Role, UnixNanos};
use crate::window::{Rolling, Signals};

/// One deployment of one service in one environment.
#[derive(Debug)]
pub struct Release {
    pub deployment_id: Arc<str>,
    pub git_sha: Option<Arc<str>>,
    pub role: Option<Role>,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    /// The deployment that was serving when this one first appeared; the
    /// baseline unless a deployment reports the `baseline` role.
    pub serving_before: Option<Arc<str>>,
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
pub struct Roles {
    baseline: Option<Arc<str>>,
    stable: Option<Arc<str>>,
}

/// All deployments of one service in one environment.
#[derive(Debug, Default)]
pub struct Fleet {
    pub releases: HashMap<Arc<str>, Release>,
    /// The non-canary deployment recorded most recently.
    latest_serving: Option<Arc<str>>,
}

impl Fleet {
    /// The most recently seen deployments declaring `baseline` and `stable`.
    pub fn roles(&self) -> Roles {
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

    /// The baseline of `release` by the rule in docs/design.md: a deployment reporting
    /// the `baseline` role; else the one serving before this release first
    /// appeared (while it is still tracked); else one reporting `stable`.
    /// Releases that are themselves baseline or stable have none.
    pub fn baseline_of<'a>(&'a self, release: &Release, roles: &Roles) -> Option<&'a Release> {
        if matches!(release.role, Some(Role::Baseline | Role::Stable)) {
            return None;
        }
        let usable = |id: &Option<Arc<str>>| {
            id.as_ref()
                .filter(|id| **id != release.deployment_id)
                .and_then(|id| self.releases.get(id))
        };
        usable(&roles.baseline)
            .or_else(|| usable(&release.serving_before))
            .or_else(|| usable(&roles.stable))
    }

    /// The deployment serving when a new one appears at `now`: the
    /// non-canary one recorded most recently, first seen before `now`.
    fn serving_at(&self, now: UnixNanos) -> Option<Arc<str>> {
        let cached = self
            .latest_serving
            .as_ref()
            .and_then(|id| self.releases.get(id))
            .filter(|r| r.first_seen < now && r.role != Some(Role::Canary));
        if let Some(r) = cached {
            return Some(r.deployment_id.clone());
        }
        // The latest was born this very instant: look further.
        self.releases
            .values()
            .filter(|r| r.role != Some(Role::Canary) && r.first_seen < now)
            .max_by_key(|r| (r.last_seen, r.total.requests))
            .map(|r| r.deployment_id.clone())
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
}

/// Every tracked release.
#[derive(Debug)]
pub struct Store {
    fleets: HashMap<Arc<str>, HashMap<Arc<str>, Fleet>>,
    len: usize,
    max_releases: usize,
    judge: Judge,
}

impl Store {
    pub fn new(max_releases: usize, judge: Judge) -> Self {
        Self {
            fleets: HashMap::new(),
            len: 0,
            max_releases,
            judge,
        }
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
                    serving_before: fleet.serving_at(now),
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
            if release.role != Some(Role::Canary) {
                fleet.latest_serving = Some(release.deployment_id.clone());
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
                let roles = fleet.roles();
                let pairs: Vec<(Arc<str>, Option<Arc<str>>)> = fleet
                    .releases
                    .values()
                    .map(|r| {
                        let base = fleet
                            .baseline_of(r, &roles)
                            .map(|b| b.deployment_id.clone());
                        (r.deployment_id.clone(), base)
                    })
                    .collect();
                for (id, base) in pairs {
                    let Some(mut j) = fleet.releases.get_mut(&id).and_then(|r| r.judgement.take())
                    else {
                        continue;
                    };
                    let r = &fleet.releases[&id];
                    let baseline =
                        base.as_ref()
                            .and_then(|b| fleet.releases.get(b))
                            .map(|b| BaselineView {
                                id: &b.deployment_id,
                                view: b.view(),
                            });
                    if self.judge.evaluate(&mut j, r.view(), baseline, now) {
                        changed.push(Changed {
                            service: service.clone(),
                            environment: env.clone(),
                            deployment_id: id.clone(),
                            color: j.color,
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
        Store::new(max, Judge::new(&c.judge, &c.checks))
    }

    fn base<'a>(f: &'a Fleet, id: &str) -> Option<&'a str> {
        f.baseline_of(&f.releases[id], &f.roles())
            .map(|b| &*b.deployment_id)
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
    fn the_release_serving_before_is_the_baseline() {
        let mut s = store(10);
        s.apply(&batch(&[("stable", 100, None)]), 10);
        s.apply(&batch(&[("stable", 100, None), ("canary", 5, None)]), 20);
        let f = fleet(&s);
        assert_eq!(base(f, "canary"), Some("stable"));
        // the incumbent has no baseline of its own
        assert_eq!(base(f, "stable"), None);
    }

    #[test]
    fn a_declared_baseline_wins() {
        let mut s = store(10);
        s.apply(&batch(&[("old", 10, None)]), 10);
        s.apply(&batch(&[("canary", 5, Some(Role::Canary))]), 20);
        s.apply(&batch(&[("base", 5, Some(Role::Baseline))]), 30);
        let f = fleet(&s);
        assert_eq!(base(f, "canary"), Some("base"));
        assert_eq!(base(f, "base"), None);
    }

    #[test]
    fn a_declared_canary_is_never_anyones_baseline() {
        let mut s = store(10);
        s.apply(&batch(&[("c1", 5, Some(Role::Canary))]), 10);
        s.apply(&batch(&[("c2", 5, None)]), 20);
        let f = fleet(&s);
        assert_eq!(base(f, "c2"), None);
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
