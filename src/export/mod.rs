//! The way out: the JSON API, health, the Prometheus exposition of
//! verdicts and the daemon's own metrics.

pub mod api;
pub mod grpc;
pub mod prometheus;
pub mod self_metrics;
