//! The way in, pure: OTLP request bytes decoded (`decode`), attributed to
//! releases (`identity`), endpoints and error kinds named (`facts`), histograms converted (`buckets`, `delta`) and
//! mapped to per-release samples (`otlp`); `walk` maps protobuf trace
//! exports straight from their bytes and `json` reads OTLP/JSON ones into
//! a borrowed model of the fields read, both by the same rules. The receivers that call these
//! live in `server`.

pub mod buckets;
pub mod decode;
pub mod delta;
pub mod facts;
pub mod identity;
pub mod json;
pub mod otlp;
pub mod walk;
