//! A fleet carried on from the shared ledger: a replica that starts
//! receiving a service (the Collector's ring moved it to this one, or this
//! one restarted under another name) takes the state its last judge
//! checkpointed (the chosen baseline, sticky reds, the windows) and adds
//! what it counted itself while it looked, instead of starting over.

use super::checkpoint::{checkpoint_of, RestoreError};
use super::{source_index, Fleet, Release, Store};
use crate::model::{FleetKey, UnixNanos};
use crate::window::Signals;

/// Longest a fleet first seen waits, unjudged, for its state from the
/// ledger: past it, it is judged on its own telemetry (the ledger is slow
/// or unreachable), and a state arriving later is still taken.
pub(super) const ADOPT_WAIT: UnixNanos = 2_000_000_000;

impl Fleet {
    /// A fleet first seen at `now`, looking for its state.
    pub(super) fn adopting(now: UnixNanos) -> Fleet {
        Fleet {
            adopting: Some(now),
            ..Fleet::default()
        }
    }

    /// Whether the judge skips it at `now`, waiting for its state.
    pub(super) fn waits_for_adoption(&mut self, now: UnixNanos) -> bool {
        match self.adopting {
            Some(since) if now < since.saturating_add(ADOPT_WAIT) => true,
            Some(_) => {
                self.adopting = None;
                false
            }
            None => false,
        }
    }

    /// Adds what `fresh` (this replica's own count of the fleet) holds to
    /// this state taken from the ledger.
    fn absorb(&mut self, fresh: Fleet, now: UnixNanos) {
        for (id, release) in fresh.releases {
            match self.releases.get_mut(&id) {
                Some(mine) => mine.absorb(release, now),
                None => {
                    self.releases.insert(id, release);
                }
            }
        }
        if self.traffic_since.is_none() {
            self.traffic_since = fresh.traffic_since;
        }
    }
}

/// A release's requests, errors, latencies and metrics, without its
/// endpoints: those index the release's own endpoint table, which the
/// adopted copy does not share.
fn without_endpoints(signals: &Signals) -> Signals {
    Signals {
        endpoints: Vec::new(),
        endpoint_latency: Vec::new(),
        ..signals.clone()
    }
}

impl Release {
    /// Adds `fresh`'s counts (the same deployment, counted here while its
    /// state was looked for) to this adopted copy.
    fn absorb(&mut self, fresh: Release, now: UnixNanos) {
        self.window.advance(now);
        self.window.absorb(&without_endpoints(fresh.window.sum()));
        self.pending.add(&without_endpoints(&fresh.pending));
        for (mine, theirs) in self.by_source.iter_mut().zip(fresh.by_source) {
            mine.requests = mine.requests.saturating_add(theirs.requests);
            mine.errors = mine.errors.saturating_add(theirs.errors);
            mine.last_at = mine.last_at.max(theirs.last_at);
        }
        let counted = self.by_source[source_index(self.requests_from)];
        self.total.requests = counted.requests;
        self.total.errors = counted.errors;
        self.first_seen = self.first_seen.min(fresh.first_seen);
        self.last_seen = self.last_seen.max(fresh.last_seen);
        if self.git_sha.is_none() {
            self.git_sha = fresh.git_sha;
        }
        if self.role.is_none() && !self.role_withdrawn {
            self.role = fresh.role;
        }
    }
}

impl Store {
    /// Fleets first seen wait for their state from the ledger (see
    /// `take_to_adopt` and `adopt`).
    pub fn with_adoption_if(mut self, adopts: bool) -> Self {
        self.adopts = adopts;
        self
    }

    /// Whether fleets first seen wait for `take_to_adopt`.
    pub fn wants_adoption(&self) -> bool {
        !self.to_adopt.is_empty()
    }

    /// The fleets first seen since last asked, whose state to look for.
    pub fn take_to_adopt(&mut self) -> Vec<FleetKey> {
        std::mem::take(&mut self.to_adopt)
    }

    /// One fleet's state for the shared ledger (a checkpoint holding it
    /// alone) and the latest telemetry in it; None when it is not tracked,
    /// or is still waiting for its state (what it holds would overwrite
    /// the state it is about to take).
    pub fn fleet_state(&self, service: &str, environment: &str) -> Option<(Vec<u8>, UnixNanos)> {
        let fleet = self.fleet(service, environment)?;
        if fleet.adopting.is_some() {
            return None;
        }
        let last_seen = fleet.releases.values().map(|r| r.last_seen).max()?;
        let part = self.checkpoint_fleet(service, environment)?;
        Some((checkpoint_of(self.checkpoint_head(), vec![part]), last_seen))
    }

    /// Takes the fleets of a checkpoint (a fleet's state from the ledger)
    /// beside those tracked: a fleet tracked here too keeps the ledger's
    /// state plus what it counted itself. Returns the releases taken.
    /// Refused like `restore`; and when it would take the store past its
    /// cap (the fleet then goes on with its own count).
    pub fn adopt(&mut self, bytes: &[u8], now: UnixNanos) -> Result<usize, RestoreError> {
        let saved = self.decode(bytes)?;
        let taken: usize = saved.fleets.iter().map(|(_, _, f)| f.releases.len()).sum();
        if self.len.saturating_add(taken) > self.max_releases {
            return Err(RestoreError::Full(self.max_releases));
        }
        for (service, environment, mut fleet) in saved.fleets {
            let envs = self.fleets.entry(service).or_default();
            if let Some(fresh) = envs.remove(&environment) {
                fleet.absorb(fresh, now);
            }
            fleet.adopting = None;
            envs.insert(environment, fleet);
        }
        self.len = self.count();
        self.hold_reds();
        Ok(taken)
    }

    /// Forgets a fleet judged elsewhere now; returns its releases.
    pub fn let_go(&mut self, key: &FleetKey) -> usize {
        let Some(envs) = self.fleets.get_mut(&key.service) else {
            return 0;
        };
        let n = envs
            .remove(&key.environment)
            .map_or(0, |f| f.releases.len());
        if envs.is_empty() {
            self.fleets.remove(&key.service);
        }
        self.len = self.count();
        n
    }

    /// Whether a fleet still waits for its state (not evicted, expired or
    /// past its wait since it was listed to adopt).
    pub fn is_adopting(&self, key: &FleetKey) -> bool {
        self.fleets
            .get(&key.service)
            .and_then(|envs| envs.get(&key.environment))
            .is_some_and(|f| f.adopting.is_some())
    }

    /// Ends a fleet's wait for its state (the ledger had none, or it was
    /// refused): it is judged on its own telemetry from the next tick.
    pub fn adopted(&mut self, key: &FleetKey) {
        let fleet = self
            .fleets
            .get_mut(&key.service)
            .and_then(|envs| envs.get_mut(&key.environment));
        if let Some(fleet) = fleet {
            fleet.adopting = None;
        }
    }
}
