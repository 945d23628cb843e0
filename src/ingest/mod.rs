//! The way in: OTLP requests decoded, attributed to releases and mapped to
//! samples. `identity`, `buckets`, `delta` and `otlp` are pure; `http` and
//! `grpc` are the receivers around them.

pub mod buckets;
pub mod decode;
pub mod delta;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod otlp;
