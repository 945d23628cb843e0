//! The way out: the JSON API, health, and the daemon's metrics.

pub mod api;
pub mod self_metrics;
