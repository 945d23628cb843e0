//! One service and environment's deployments, and which of them the
//! others are compared with: the baseline rule (docs/design.md, "The
//! baseline") and the ends of rollouts told by who went quiet.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Release, Rollout};
use crate::config::BaselineConfig;
use crate::judge::Unpaired;
use crate::model::{Role, UnixNanos};

/// Deployments that declared a role, found once per pass over a fleet.
#[derive(Debug, Default, Clone)]
struct Roles {
    baseline: Option<Arc<str>>,
    stable: Option<Arc<str>>,
}

/// Why the baseline is the one it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Basis {
    /// It reports `deployment.role=baseline`.
    DeclaredBaseline,
    /// It reports `deployment.role=stable` (and no deployment reports `baseline`).
    DeclaredStable,
    /// It served this share of the requests of the deployments without a
    /// declared role when it was chosen.
    Traffic { share: f64 },
    /// The ledger recorded it as the baseline of this release, which
    /// reports again (a restart without the judge's checkpoint).
    Ledger { of: Arc<str> },
}

impl Basis {
    /// How the verdict object names it (`baseline.chosen_by`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Basis::DeclaredBaseline => "role_baseline",
            Basis::DeclaredStable => "role_stable",
            Basis::Traffic { .. } => "traffic",
            Basis::Ledger { .. } => "ledger",
        }
    }
}

/// A release the ledger saw compared with `baseline`, last at `last_seen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastPairing {
    pub deployment: Arc<str>,
    pub baseline: Arc<str>,
    pub last_seen: UnixNanos,
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
    /// `baseline.late_claims_displace`.
    pub late_claims_displace: bool,
}

impl From<&BaselineConfig> for BaselineRule {
    fn from(c: &BaselineConfig) -> Self {
        Self {
            settle: c.settle.as_nanos() as u64,
            lead: c.lead,
            quiet: c.quiet.as_nanos() as u64,
            late_claims_displace: c.late_claims_displace,
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
    pub(super) traffic_since: Option<UnixNanos>,
    /// Since when its state is being looked for in the shared ledger (it
    /// was first seen here, and another replica may have judged it): not
    /// judged meanwhile, for at most `adopt::ADOPT_WAIT`.
    #[serde(skip)]
    pub(super) adopting: Option<UnixNanos>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            releases: HashMap::new(),
            choice: Choice::Settling { since: None },
            traffic_since: None,
            adopting: None,
        }
    }
}

impl Fleet {
    /// The deployments declaring `baseline` and `stable`: of those still
    /// reporting, the first seen, so a newer deployment claiming the role
    /// cannot take it from one that holds it; else the last one seen.
    fn roles(&self, rule: BaselineRule, now: UnixNanos) -> Roles {
        let holder = |role| {
            let declared = self.releases.values().filter(|r| r.role == Some(role));
            declared
                .clone()
                .filter(|r| now.saturating_sub(r.last_seen) < rule.quiet)
                .min_by(|a, b| {
                    (a.first_seen, &a.deployment_id).cmp(&(b.first_seen, &b.deployment_id))
                })
                .or_else(|| declared.max_by_key(|r| (r.last_seen, r.total.requests)))
                .map(|r| r.deployment_id.clone())
        };
        Roles {
            baseline: holder(Role::Baseline),
            stable: holder(Role::Stable),
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
    /// `baseline`, then a declared `stable`; else the ledger's record of a
    /// pair that reports again (`recorded`: this fleet's pairs from before
    /// a restart), the newest such; else the deployment already chosen,
    /// while it keeps reporting; else, once the fleet's traffic has been
    /// watched for `settle`, the deployment without a declared role serving
    /// clearly the most requests over the rolling window. Arrival order
    /// plays no part, but a declared role that came late (`claims_late`)
    /// does not take an established baseline's place. Returns the new
    /// choice when it changed.
    pub fn choose(
        &mut self,
        rule: BaselineRule,
        now: UnixNanos,
        recorded: &[PastPairing],
    ) -> Option<&Choice> {
        let roles = self.roles(rule, now);
        let timely = |id: &Arc<str>| !self.claims_late(id, rule, now);
        let declared = roles
            .baseline
            .filter(timely)
            .map(|id| (id, Basis::DeclaredBaseline))
            .or_else(|| {
                roles
                    .stable
                    .filter(timely)
                    .map(|id| (id, Basis::DeclaredStable))
            })
            .or_else(|| self.by_ledger(recorded, rule, now));
        let lost = self.declared_role_lost();
        if lost {
            // Chosen for a role its telemetry no longer claims: choose afresh.
            self.choice = Choice::Settling { since: None };
            self.traffic_since = None;
        }
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
        let Some(next) = next else {
            return lost.then_some(&self.choice);
        };
        self.choice = next;
        Some(&self.choice)
    }

    /// Whether `claimant`'s declared role comes too late to take the place
    /// of the established baseline: another baseline is chosen and
    /// reporting, and a release it judges was first seen more than
    /// `settle` before the claimant (unless `late_claims_displace`).
    fn claims_late(&self, claimant: &Arc<str>, rule: BaselineRule, now: UnixNanos) -> bool {
        if rule.late_claims_displace {
            return false;
        }
        let Some(old) = self.chosen() else {
            return false;
        };
        if old == claimant || !self.reporting(old, rule, now) {
            return false;
        }
        let Some(claimant) = self.releases.get(claimant) else {
            return false;
        };
        self.releases.values().any(|r| {
            r.role.is_none()
                && r.deployment_id != *old
                && self.reporting(&r.deployment_id, rule, now)
                && r.first_seen.saturating_add(rule.settle) < claimant.first_seen
        })
    }

    /// Whether the baseline was chosen for a declared role its deployment
    /// no longer holds (the claim was withdrawn: see `Release::role_withdrawn`).
    fn declared_role_lost(&self) -> bool {
        let Choice::Chosen { id, basis, .. } = &self.choice else {
            return false;
        };
        let role = self.releases.get(id).and_then(|r| r.role);
        match basis {
            Basis::DeclaredBaseline => role != Some(Role::Baseline),
            Basis::DeclaredStable => role != Some(Role::Stable),
            _ => false,
        }
    }

    /// The newest recorded pair whose two deployments both report again,
    /// neither declaring a role.
    fn by_ledger(
        &self,
        recorded: &[PastPairing],
        rule: BaselineRule,
        now: UnixNanos,
    ) -> Option<(Arc<str>, Basis)> {
        let unroled = |id: &str| self.releases.get(id).is_some_and(|r| r.role.is_none());
        recorded
            .iter()
            .filter(|p| p.deployment != p.baseline)
            .filter(|p| unroled(&p.deployment) && unroled(&p.baseline))
            .filter(|p| {
                self.reporting(&p.deployment, rule, now) && self.reporting(&p.baseline, rule, now)
            })
            .max_by(|a, b| (a.last_seen, &a.deployment).cmp(&(b.last_seen, &b.deployment)))
            .map(|p| {
                let of = p.deployment.clone();
                (p.baseline.clone(), Basis::Ledger { of })
            })
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
    pub(super) fn conclude(
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
    pub(super) fn unpaired(
        &self,
        release: &Release,
        rule: BaselineRule,
        now: UnixNanos,
    ) -> Unpaired {
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
