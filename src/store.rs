//! Releases by (service, environment, deployment id): their signals, when
//! they were seen, and which release is each one's baseline. Pure data with
//! the time passed in; the shells wrap it in a lock.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ingest::otlp::Batch;
use crate::model::{Role, UnixNanos};
use crate::window::Signals;

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
}

/// All deployments of one service in one environment.
#[derive(Debug, Default)]
pub struct Fleet {
    pub releases: HashMap<Arc<str>, Release>,
}

impl Fleet {
    /// The baseline of `release` by DESIGN.md's rule: a deployment reporting
    /// the `baseline` role; else the one serving before this release first
    /// appeared (while it is still tracked); else one reporting `stable`.
    /// Releases that are themselves baseline or stable have none.
    pub fn baseline_of(&self, release: &Release) -> Option<&Release> {
        if matches!(release.role, Some(Role::Baseline | Role::Stable)) {
            return None;
        }
        let others = || {
            self.releases
                .values()
                .filter(move |r| r.deployment_id != release.deployment_id)
        };
        let latest = |role| {
            others()
                .filter(|r| r.role == Some(role))
                .max_by_key(|r| (r.last_seen, r.total.requests))
        };
        latest(Role::Baseline)
            .or_else(|| {
                release
                    .serving_before
                    .as_ref()
                    .and_then(|id| self.releases.get(id))
            })
            .or_else(|| latest(Role::Stable))
    }

    /// The deployment serving when a new one appears at `now`: not a
    /// declared canary, first seen earlier, most recently seen, busiest.
    fn serving_at(&self, now: UnixNanos) -> Option<Arc<str>> {
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

/// Every tracked release.
#[derive(Debug)]
pub struct Store {
    fleets: HashMap<Arc<str>, HashMap<Arc<str>, Fleet>>,
    len: usize,
    max_releases: usize,
}

impl Store {
    pub fn new(max_releases: usize) -> Self {
        Self {
            fleets: HashMap::new(),
            len: 0,
            max_releases,
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
            let existing = fleet.and_then(|f| f.releases.get_mut(r.deployment_id));
            let release = match existing {
                Some(release) => release,
                None if self.len >= self.max_releases => {
                    applied.refused += group.items;
                    applied.refused_releases += 1;
                    continue;
                }
                None => {
                    let fleet = self
                        .fleets
                        .entry(Arc::from(r.service))
                        .or_default()
                        .entry(Arc::from(r.environment))
                        .or_default();
                    let id: Arc<str> = Arc::from(r.deployment_id);
                    let release = Release {
                        deployment_id: id.clone(),
                        git_sha: None,
                        role: None,
                        first_seen: now,
                        last_seen: now,
                        serving_before: fleet.serving_at(now),
                        total: Signals::default(),
                    };
                    self.len += 1;
                    applied.created += 1;
                    fleet.releases.entry(id).or_insert(release)
                }
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
            applied.recorded += group.items;
        }
        applied
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
    use crate::ingest::identity::ReleaseRef;
    use crate::ingest::otlp::Group;
    use crate::model::Sample;

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
                },
            });
        }
        b
    }

    fn fleet(store: &Store) -> &Fleet {
        store.fleets().next().unwrap().2
    }

    #[test]
    fn totals_accumulate_per_release() {
        let mut s = Store::new(10);
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
        let mut s = Store::new(10);
        s.apply(&batch(&[("stable", 100, None)]), 10);
        s.apply(&batch(&[("stable", 100, None), ("canary", 5, None)]), 20);
        let f = fleet(&s);
        let canary = &f.releases["canary"];
        assert_eq!(&*f.baseline_of(canary).unwrap().deployment_id, "stable");
        // the incumbent has no baseline of its own
        assert!(f.baseline_of(&f.releases["stable"]).is_none());
    }

    #[test]
    fn a_declared_baseline_wins() {
        let mut s = Store::new(10);
        s.apply(&batch(&[("old", 10, None)]), 10);
        s.apply(&batch(&[("canary", 5, Some(Role::Canary))]), 20);
        s.apply(&batch(&[("base", 5, Some(Role::Baseline))]), 30);
        let f = fleet(&s);
        assert_eq!(
            &*f.baseline_of(&f.releases["canary"]).unwrap().deployment_id,
            "base"
        );
        assert!(f.baseline_of(&f.releases["base"]).is_none());
    }

    #[test]
    fn a_declared_canary_is_never_anyones_baseline() {
        let mut s = Store::new(10);
        s.apply(&batch(&[("c1", 5, Some(Role::Canary))]), 10);
        s.apply(&batch(&[("c2", 5, None)]), 20);
        let f = fleet(&s);
        assert!(f.baseline_of(&f.releases["c2"]).is_none());
    }

    #[test]
    fn the_cap_refuses_new_releases_but_not_known_ones() {
        let mut s = Store::new(2);
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
        let mut s = Store::new(2);
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
