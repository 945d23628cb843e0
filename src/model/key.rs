//! The names of what is judged: a fleet (one service in one environment,
//! whose releases are compared with one baseline) and a release (one
//! deployment id of a fleet). Shared by the store, the series, the
//! verdicts, the app and the ledger, instead of tuples of strings.

use std::sync::Arc;

/// One service in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FleetKey {
    pub service: Arc<str>,
    pub environment: Arc<str>,
}

impl FleetKey {
    pub fn new(service: impl Into<Arc<str>>, environment: impl Into<Arc<str>>) -> Self {
        Self {
            service: service.into(),
            environment: environment.into(),
        }
    }

    /// The release `deployment_id` of this fleet.
    pub fn release(&self, deployment_id: impl Into<Arc<str>>) -> ReleaseKey {
        ReleaseKey {
            service: self.service.clone(),
            environment: self.environment.clone(),
            deployment_id: deployment_id.into(),
        }
    }
}

/// One release: a deployment id of one service in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseKey {
    pub service: Arc<str>,
    pub environment: Arc<str>,
    pub deployment_id: Arc<str>,
}

impl ReleaseKey {
    pub fn new(
        service: impl Into<Arc<str>>,
        environment: impl Into<Arc<str>>,
        deployment_id: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            service: service.into(),
            environment: environment.into(),
            deployment_id: deployment_id.into(),
        }
    }

    /// Its service and environment.
    pub fn fleet(&self) -> FleetKey {
        FleetKey {
            service: self.service.clone(),
            environment: self.environment.clone(),
        }
    }
}
