//! The way out, pure: verdicts and releases encoded as the Prometheus
//! exposition (`prometheus`) and as protobuf messages (`proto`). The
//! handlers that serve them live in `server`.

pub mod prometheus;
pub mod proto;
