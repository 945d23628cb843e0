//! release-verdict: is the release OK? OTLP spans and metrics in, a
//! canary-vs-baseline verdict out.
//!
//! # Layout
//!
//! A pure core, handed the time and never doing I/O, inside thin shells.
//!
//! - [`config`]: the TOML configuration, defaults and validation.
//! - [`model`]: time, roles, span-kind filters, samples.
//! - [`ingest`]: OTLP → samples. `identity` (which release), `buckets` and
//!   `delta` (histograms, cumulative → delta) and `otlp` (the mapping) are
//!   pure; `decode`, `http` and `grpc` receive requests.
//! - [`window`]: per-release counters and latency histograms.
//! - [`judge`]: anytime-valid e-processes (`eprocess`), the checks
//!   (`checks`) and the verdict state machine.
//! - [`store`]: releases by service, environment and deployment id, the
//!   baseline rule, the release cap, expiry, and the judge's tick.
//! - [`sim`]: seeded randomness for the simulator and statistical tests.
//! - [`verdict`]: the verdict object served by the API.
//! - [`app`]: the shared state the shells hold (locks live here only).
//! - [`export`]: the JSON API, health and self metrics.
//! - [`loadgen`]: realistic OTLP traffic for load tests and the demo.
//! - [`replay`]: the engine on recorded OTLP/JSON lines, telemetry time.
//! - [`server`]: binds ports, serves, expires, drains. [`telemetry`]: logs
//!   and the daemon's own traces.

#![forbid(unsafe_code)]

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod config;
pub mod export;
pub mod ingest;
pub mod judge;
pub mod loadgen;
pub mod model;
pub mod replay;
pub mod server;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod verdict;
pub mod window;
