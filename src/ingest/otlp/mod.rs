//! OTLP export requests mapped to per-release samples: which spans and data
//! points are requests, which of those failed, how long they took. The
//! mapper and the rules both signals share live here; `spans` maps trace
//! exports and `metrics` metrics exports. The readers (`walk`, `json`)
//! depend on the mapper; it knows none of them.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::config::Config;
use crate::ingest::facts::{EndpointKeys, ERROR_TYPE};
use crate::ingest::identity::{Found, IdentityKeys};
use crate::ingest::span::Val;
use crate::model::{Batch, Group, SpanKindFilter, UnixNanos};

mod metrics;
mod spans;

#[cfg(test)]
use metrics::MAX_POINT_COUNT;

/// Finds the release of an item, counting unattributed and invalid items.
fn attribute<'a, 'b>(
    batch: &'b mut Batch<'a>,
    found: Found<'a>,
    what: impl FnOnce() -> String,
) -> Option<&'b mut Group<'a>> {
    match found.release() {
        Ok(Some(release)) => Some(batch.group(release)),
        Ok(None) => {
            batch.unattributed_from(found.service);
            None
        }
        Err(e) => {
            batch.reject(1, format_args!("{}: {e}", what()));
            None
        }
    }
}

/// Maps OTLP requests with the configured keys and filters.
#[derive(Debug, Clone)]
pub struct Mapper {
    keys: IdentityKeys,
    kinds: SpanKindFilter,
    /// Request-duration histograms by name, with their default units.
    durations: HashMap<String, String>,
    status: StatusKeys,
    /// Metrics read by `[[checks.metric]]`, with the checks' indices.
    checked: HashMap<String, Vec<u16>>,
    /// `[limits] max_span_duration`, in nanoseconds.
    max_span: UnixNanos,
    endpoints: EndpointKeys,
    /// Every span attribute key the rules above read, with its probe.
    span_keys: Vec<(Probe, String)>,
}

/// A key's length and first eight bytes: most keys a rule does not read
/// differ from every key it does in those, told without a call to
/// `memcmp` (a tenth of the walk went there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe(u64, usize);

impl Probe {
    #[inline(always)]
    fn of(key: &[u8]) -> Self {
        let head = match key.first_chunk::<8>() {
            Some(head) => u64::from_le_bytes(*head),
            None => key
                .iter()
                .enumerate()
                .fold(0, |w, (i, &b)| w | u64::from(b) << (8 * i)),
        };
        Probe(head, key.len())
    }
}

impl Default for Mapper {
    fn default() -> Self {
        Self::new(&Config::default())
    }
}

impl Mapper {
    pub fn new(config: &Config) -> Self {
        let endpoints = EndpointKeys::new(&config.checks.endpoints);
        let keys = IdentityKeys::from(&config.identity);
        let mut span_keys: Vec<String> = keys
            .all()
            .chain(
                endpoints
                    .enabled()
                    .then(|| endpoints.attribute_keys())
                    .into_iter()
                    .flatten(),
            )
            .chain(config.ingest.http_status_keys.iter().map(String::as_str))
            .chain(config.ingest.grpc_status_keys.iter().map(String::as_str))
            .chain([ERROR_TYPE])
            .map(str::to_string)
            .collect();
        span_keys.sort();
        span_keys.dedup();
        Self {
            span_keys: span_keys
                .into_iter()
                .map(|k| (Probe::of(k.as_bytes()), k))
                .collect(),
            keys,
            kinds: config.ingest.span_kind_filter(),
            durations: config
                .ingest
                .duration_metrics
                .iter()
                .map(|d| (d.name.clone(), d.unit.clone()))
                .collect(),
            status: StatusKeys {
                http: config.ingest.http_status_keys.clone(),
                grpc: config.ingest.grpc_status_keys.clone(),
            },
            max_span: config.limits.max_span_duration.as_nanos() as UnixNanos,
            endpoints,
            checked: config.checks.metric.iter().enumerate().fold(
                HashMap::new(),
                |mut m, (i, c)| {
                    m.entry(c.metric.clone())
                        .or_insert_with(Vec::new)
                        .push(i as u16);
                    m
                },
            ),
        }
    }

    /// The key itself when `span` may read span attributes of this key: a
    /// decoder may leave the others out of the attributes it hands over
    /// (their values still checked as the wire format requires).
    #[inline]
    pub(crate) fn reads(&self, key: &[u8]) -> Option<&str> {
        let probe = Probe::of(key);
        self.span_keys
            .iter()
            .find(|(p, k)| *p == probe && (key.len() <= 8 || k.as_bytes() == key))
            .map(|(_, k)| k.as_str())
    }

    /// The identity keys, for decoders that scan resources themselves.
    pub(crate) fn identity_keys(&self) -> &IdentityKeys {
        &self.keys
    }
}

/// An attribute by key, as the endpoint and error rules read it: the first
/// attribute of that key, if a string or an integer.
fn attr<'a>(mut attrs: impl Iterator<Item = (&'a str, Val<'a>)>, key: &str) -> Option<Val<'a>> {
    match attrs.find(|(k, _)| *k == key)?.1 {
        v @ (Val::Str(_) | Val::Int(_)) => Some(v),
        _ => None,
    }
}

/// Decoded OTLP attributes as (key, value) pairs.
fn pairs(attrs: &[KeyValue]) -> impl Iterator<Item = (&str, Val<'_>)> + Clone {
    attrs
        .iter()
        .map(|kv| (kv.key.as_str(), Val::of(kv.value.as_ref())))
}

/// HTTP status code of a span or point (current and older conventions).
/// gRPC status codes a server reports as its own failure (semantic conventions).
fn grpc_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

fn grpc_server_error_name(name: &str) -> bool {
    matches!(
        name,
        "UNKNOWN"
            | "DEADLINE_EXCEEDED"
            | "UNIMPLEMENTED"
            | "INTERNAL"
            | "UNAVAILABLE"
            | "DATA_LOSS"
    )
}

/// The attributes whose status codes say a request failed.
#[derive(Debug, Clone)]
struct StatusKeys {
    /// HTTP: 5xx is a server error.
    http: Vec<String>,
    /// gRPC, by number or name: the server-error codes.
    grpc: Vec<String>,
}

impl StatusKeys {
    /// Whether attributes carry a server-error status code.
    fn failed<'a>(&self, mut attrs: impl Iterator<Item = (&'a str, Val<'a>)>) -> bool {
        attrs.any(|(key, value)| {
            if self.http.iter().any(|k| k == key) {
                value.int().is_some_and(|c| c >= 500)
            } else if self.grpc.iter().any(|k| k == key) {
                match value.int() {
                    Some(c) => grpc_server_error(c),
                    None => value.str().is_some_and(grpc_server_error_name),
                }
            } else {
                false
            }
        })
    }

    /// Whether decoded OTLP attributes carry a server-error status code.
    fn failed_kv(&self, attrs: &[KeyValue]) -> bool {
        self.failed(pairs(attrs))
    }
}

#[cfg(test)]
mod tests;
