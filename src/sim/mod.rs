//! The judge's evaluation suite: simulated releases (a warm baseline, then
//! a canary beside it) fed straight into the store on a simulated clock,
//! and the table `release-verdict simulate` prints. `otlp` builds the same
//! traffic as OTLP requests for replay, the benches and the load generator.

pub use crate::rng::Rng;

pub mod otlp;
mod run;
mod scenario;
mod summary;

pub use run::{group, run, RunResult};
pub use scenario::{Histograms, Scenario, SDK_BOUNDS_MS};
pub use summary::{summarize, Summary};
