//! What this daemon shares with the replicas beside it through the ledger:
//! its fleets' states, a fleet at a time, for its checkpoints; and the
//! state of a fleet first seen here, taken from the ledger (`adopt`), so
//! a service the Collector's ring moves keeps its verdict.

use crate::ledger::states::FleetState;
use crate::ledger::{RecordedBaseline, RecordedRed};
use crate::model::{FleetKey, UnixNanos};
use crate::store::RestoreError;
use crate::verdict::{self, Filter};

use super::App;

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

    /// Fleets first seen since last asked: look for their state in the
    /// ledger and hand what was found to `adopt`.
    pub fn take_to_adopt(&self) -> Vec<FleetKey> {
        self.store.lock().take_to_adopt()
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
