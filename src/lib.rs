//! release-verdict: is the release OK? OTLP spans and metrics in, a
//! canary-vs-baseline verdict out.
//!
//! # Layout
//!
//! A pure core, handed the time and never doing I/O, inside a thin shell.
//! `docs/design.md` has the layers, the import rule and the data path.
//!
//! The core (imports nothing from ingest, export, app or server):
//! - [`model`]: time, roles, span-kind filters, the keys that name fleets
//!   and releases (`FleetKey`, `ReleaseKey`), the samples ingest hands
//!   to the store (`Batch`), and histogram buckets read as observations.
//! - `window`: per-release counters and HDR histograms, rolling windows.
//! - `judge`: anytime-valid e-processes, the group-sequential pass test,
//!   one file per check, the verdict decision, and a red's story (what it
//!   was decided on, then and now).
//! - `store`: releases by service, environment and deployment id, the
//!   baseline rule, the release cap, expiry, and the judge's tick.
//! - `verdict`: the verdict object served everywhere.
//! - `series`: each release's chart points, a bounded ring per release.
//!
//! Around it, still pure:
//! - [`config`]: the TOML configuration, defaults and validation.
//! - `ingest`: OTLP bytes to samples: three readers (the protobuf walk,
//!   the JSON stream and model) over one mapper; identity, endpoints and
//!   error kinds, buckets, deltas.
//! - `export`: encoders, verdicts to Prometheus text and to protobuf.
//! - `self_metrics`: the daemon's own counters, used by both sides.
//! - [`dora`]: DORA's four measures from ledger events, per service and
//!   environment, over a window or by day or week.
//!
//! The shell:
//! - [`ledger`]: the durable release ledger (SQLite, or PostgreSQL shared
//!   by replicas): events, each release's last verdict, each fleet's judge
//!   state with the replica judging it, the replicas themselves, the
//!   notifiers' outbox with its claims; a writer thread fed
//!   by a bounded queue; the DORA query and `ledger export` (Parquet, JSON
//!   lines). `recording` turns a tick's news into its events.
//! - `notify`: Slack, webhooks and Grafana annotations from the ledger's
//!   outbox, each sink's API pure, one loop (`dispatch`) doing the I/O.
//! - `app`: the shared state the servers hold (the only locks).
//! - [`server`]: binds ports; OTLP receivers (HTTP bodies and gRPC
//!   messages read in full under one budget, shared per peer), JSON API
//!   and its event stream, verdict gRPC and its watch (one shared
//!   snapshot); the tick and expiry loops; draining; among replicas
//!   sharing a ledger, the checkpoint and heartbeat, fleets taken over,
//!   and reads forwarded to the replica judging a release.
//! - [`replay`], [`sim`], [`loadgen`], [`telemetry`]: the engine on
//!   recorded lines, the simulator, the traffic generator, logs and own
//!   traces; `clock` reads the system time for them, `rng` is their
//!   seeded randomness.
//! - [`client`]: what the daemon's clients (`gate`, `event`, `loadgen`)
//!   share: the bearer token.
//! - [`otlp_kit`]: builders of OTLP messages (attributes, resources,
//!   spans, metric points, export requests), shared by the simulator, the
//!   traffic generator, the unit and integration tests and the benches.
//!
//! The binary, apart from this library (`src/cli/`): the commands a user
//! types, one file each (`serve`, `replay`, `simulate`, `gate`, `loadgen`,
//! `event`, `ledger export`), and the exit codes they share (`exit`), over
//! this crate's public face.

#![forbid(unsafe_code)]

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app;
pub mod client;
mod clock;
pub mod config;
pub mod dora;
mod export;
mod ingest;
mod judge;
pub mod ledger;
pub mod loadgen;
pub mod model;
mod notify;
pub mod otlp_kit;
mod recording;
pub mod replay;
mod rng;
mod self_metrics;
mod series;
pub mod server;
pub mod sim;
mod store;
pub mod telemetry;
mod verdict;
mod window;

// What the binary, the integration tests and the benches use of the core.
pub use config::Config;
pub use export::prometheus::encode_releases;
pub use ingest::decode::{Encoding, RpcStatus};
pub use ingest::otlp::Mapper;
pub use judge::{Color, Judge};
pub use server::Server;
pub use store::{BaselineRule, Store};
pub use verdict::{
    fleets as verdict_fleets, list as list_verdicts, of_fleets as verdicts_of, Filter,
};
pub use window::Rolling;
