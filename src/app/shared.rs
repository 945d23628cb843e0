//! What this daemon shares with the replicas beside it through the ledger:
//! its fleets' states, a fleet at a time, for its checkpoints; the state
//! of a fleet first seen here, taken from the ledger (`adopt`), so a
//! service the Collector's ring moves keeps its verdict; and the verdicts
//! the other replicas judge, relayed from their event streams to this
//! one's watchers (`Remote`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::ledger::states::FleetState;
use crate::ledger::{RecordedBaseline, RecordedRed};
use crate::model::{FleetKey, UnixNanos};
use crate::store::RestoreError;
use crate::verdict::{self, Filter, Verdict};

use super::{lock, App};

/// Most news of a peer's snapshot told to watchers: past it (a peer
/// followed anew with thousands of releases) they are not told, so as not
/// to overrun the change broadcast and cut every watcher off; each
/// watcher's next snapshot holds them.
const MAX_SNAPSHOT_NEWS: usize = super::CHANGES_BUFFER / 4;

/// The other replicas' verdicts, by release: at most `cap` (twice this
/// replica's release cap), past which new releases of theirs are not
/// relayed (the merged listing still shows them).
#[derive(Debug)]
pub struct Remote {
    verdicts: HashMap<(String, String, String), Arc<Verdict>>,
    cap: usize,
}

impl Remote {
    pub fn new(max_releases: usize) -> Self {
        Remote {
            verdicts: HashMap::new(),
            cap: max_releases.saturating_mul(2),
        }
    }
}

fn key(v: &Verdict) -> (String, String, String) {
    (
        v.service.clone(),
        v.environment.clone(),
        v.deployment_id.clone(),
    )
}

/// What the ledger holds of a fleet first seen here.
#[derive(Debug, Default)]
pub struct Found {
    /// Its state, as the replica judging it last checkpointed it.
    pub state: Option<Vec<u8>>,
    /// Its releases recorded red (a red after that checkpoint).
    pub reds: Vec<RecordedRed>,
    /// Whom its releases were compared with.
    pub baselines: Vec<RecordedBaseline>,
}

impl App {
    /// Every fleet's state for the ledger, serialized a fleet a hold so
    /// ingest and the tick wait for one fleet at most.
    pub fn fleet_states(&self) -> Vec<FleetState> {
        let fleets = self.read(|store| verdict::fleets(store, &Filter::default()));
        fleets
            .iter()
            .filter_map(|f| {
                let (service, environment) = (&f.fleet.service, &f.fleet.environment);
                let (data, last_seen_ns) = self.read(|s| s.fleet_state(service, environment))?;
                Some(FleetState {
                    service: service.to_string(),
                    environment: environment.to_string(),
                    last_seen_ns,
                    data,
                })
            })
            .collect()
    }

    /// Forgets fleets another replica judges now (the Collector's ring
    /// moved them away): reads of them are forwarded there, and their
    /// stale copy here is neither shown nor checkpointed. Returns the
    /// releases let go of.
    pub fn let_go(&self, fleets: &[FleetKey]) -> usize {
        let mut store = self.store.lock();
        let n = fleets.iter().map(|f| store.let_go(f)).sum();
        self.metrics.releases_tracked.set(store.len() as i64);
        n
    }

    /// Fleets first seen since last asked: look for their state in the
    /// ledger and hand what was found to `adopt`.
    pub fn take_to_adopt(&self) -> Vec<FleetKey> {
        self.store.lock().take_to_adopt()
    }

    /// Whether a fleet first seen still waits for its state (see `adopt`).
    pub fn is_adopting(&self, key: &FleetKey) -> bool {
        self.read(|store| store.is_adopting(key))
    }

    /// Wakes whoever looks for the state of fleets first seen.
    pub fn adoptions(&self) -> &tokio::sync::Notify {
        &self.adoptions
    }

    /// Takes what the ledger holds of a fleet first seen here: its state
    /// plus what this daemon counted meanwhile, its reds and its pairs.
    /// Returns the releases taken from the state.
    pub fn adopt(
        &self,
        key: &FleetKey,
        found: Found,
        now: UnixNanos,
    ) -> Result<usize, RestoreError> {
        let reds = found.reds.into_iter().map(|r| {
            let release = key.release(r.deployment_id);
            (release, r.red_since_ns, r.reason)
        });
        let pairs = found.baselines.into_iter().map(|p| {
            let release = key.release(p.deployment_id);
            (release, p.baseline_deployment_id.into(), p.last_seen_ns)
        });
        let mut store = self.store.lock();
        store.remember_baselines(pairs);
        let taken = match found.state {
            Some(bytes) => store.adopt(&bytes, now),
            None => Ok(0),
        };
        // Reds after the state's checkpoint are held over it.
        store.remember_reds(reds);
        store.adopted(key);
        self.metrics.releases_tracked.set(store.len() as i64);
        taken
    }
}

impl App {
    /// Takes verdicts `peer` judges (its stream's snapshot when `whole`,
    /// which replaces what it said before; else a change) and tells this
    /// daemon's watchers those that are news.
    pub fn take_remote(&self, peer: &str, verdicts: Vec<Verdict>, whole: bool) {
        let peer: Arc<str> = Arc::from(peer);
        let mut news = Vec::new();
        {
            let mut remote = lock(&self.remote);
            if whole {
                // What the peer no longer judges goes; the rest is
                // compared with what it said before.
                let now: std::collections::HashSet<_> = verdicts.iter().map(key).collect();
                remote
                    .verdicts
                    .retain(|k, v| v.judged_by.as_deref() != Some(&*peer) || now.contains(k));
            }
            for mut v in verdicts {
                v.judged_by = Some(peer.clone());
                let k = key(&v);
                let known = remote.verdicts.get(&k);
                let same = known.is_some_and(|old| **old == v);
                if !same && (known.is_some() || remote.verdicts.len() < remote.cap) {
                    let v = Arc::new(v);
                    remote.verdicts.insert(k, v.clone());
                    news.push(v);
                }
            }
        }
        if whole && news.len() > MAX_SNAPSHOT_NEWS {
            return;
        }
        for v in news {
            let _ = self.changes.send(v);
        }
    }

    /// Forgets what `peer` said (it is gone).
    pub fn forget_remote(&self, peer: &str) {
        lock(&self.remote)
            .verdicts
            .retain(|_, v| v.judged_by.as_deref() != Some(peer));
    }

    /// The other replicas' verdicts of releases not judged here.
    pub fn remote_verdicts(&self, filter: &Filter) -> Vec<Arc<Verdict>> {
        let remote: Vec<Arc<Verdict>> = lock(&self.remote)
            .verdicts
            .values()
            .filter(|v| filter.matches(&v.service, &v.environment))
            .cloned()
            .collect();
        self.read(|store| {
            remote
                .into_iter()
                .filter(|v| {
                    store
                        .fleet(&v.service, &v.environment)
                        .is_none_or(|f| !f.releases.contains_key(v.deployment_id.as_str()))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn verdict(service: &str, id: &str, color: &str) -> Verdict {
        serde_json::from_value(serde_json::json!({
            "service": service, "environment": "prod", "deployment_id": id,
            "verdict": color, "reason": "r", "evaluated_at": "t", "first_seen_at": "t",
            "last_seen_at": "t", "changed_at": "t", "canary": {"requests": 1, "errors": 0},
            "requests_from": "spans", "checks": [], "endpoints": [], "new_errors": [],
            "error_kinds": [],
        }))
        .unwrap()
    }

    /// A peer's snapshot is kept and its changes told to watchers; a
    /// snapshot of thousands is kept but not told (it would overrun the
    /// broadcast); what the peer said goes when it is gone; the cap holds.
    #[test]
    fn other_replicas_verdicts_are_relayed_within_bounds() {
        let mut config = Config::default();
        config.limits.max_releases = 1_000;
        let app = App::new(config, 0);
        let mut changes = app.subscribe();
        app.take_remote("a", vec![verdict("s", "x", "green")], true);
        let told = changes.try_recv().unwrap();
        assert_eq!(told.judged_by.as_deref(), Some("a"));
        // The same again is no news.
        app.take_remote("a", vec![verdict("s", "x", "green")], true);
        assert!(changes.try_recv().is_err());
        app.take_remote("a", vec![verdict("s", "x", "red")], false);
        assert_eq!(
            changes.try_recv().unwrap().verdict,
            crate::judge::Color::Red
        );

        let many = (0..3_000)
            .map(|i| verdict("t", &format!("r{i}"), "yellow"))
            .collect();
        app.take_remote("b", many, true);
        assert!(changes.try_recv().is_err(), "a big snapshot is not told");
        let kept = app.remote_verdicts(&Filter::default());
        assert_eq!(kept.len(), 2_000, "twice the release cap");
        app.forget_remote("b");
        let kept = app.remote_verdicts(&Filter::default());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].deployment_id, "x");
    }
}
