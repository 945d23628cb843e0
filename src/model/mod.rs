//! Core vocabulary: time, cohort roles and span-kind filters; `key`
//! names fleets and releases; `sample` holds what ingest hands to the
//! store; `buckets` turns histogram buckets into its observations. Pure data, no I/O.

mod buckets;
mod key;
mod sample;

use serde::{Deserialize, Serialize};

pub use buckets::{explicit_buckets, spread_bucket, SPREAD};
pub use key::{FleetKey, ReleaseKey};
pub use sample::{
    Batch, EndpointCount, Exemplar, Group, MetricObservation, ReleaseRef, RequestSource, Sample,
    SpanFacts, EXEMPLARS, MAX_SAMPLE_ENDPOINTS, MAX_SAMPLE_KINDS, OTHER_ENDPOINT, OTHER_ERROR,
};

/// Wall-clock or telemetry time, nanoseconds since the Unix epoch. The core is
/// always handed the time; it never reads a clock.
pub type UnixNanos = u64;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// RFC 3339 with milliseconds in UTC, as in the verdict object.
pub fn format_time(t: UnixNanos) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(t);
    humantime::format_rfc3339_millis(time).to_string()
}

/// The optional cohort role a deployment declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Canary,
    Baseline,
    Stable,
}

impl Role {
    /// The one string form: `canary`, `baseline`, `stable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Canary => "canary",
            Role::Baseline => "baseline",
            Role::Stable => "stable",
        }
    }

    /// Case-insensitive; anything else is no role.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Canary, Role::Baseline, Role::Stable]
            .into_iter()
            .find(|r| s.eq_ignore_ascii_case(r.as_str()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which OTLP span kinds count as requests (bit per `SpanKind` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanKindFilter(u8);

impl Default for SpanKindFilter {
    /// SERVER and CONSUMER.
    fn default() -> Self {
        SpanKindFilter((1 << 2) | (1 << 5))
    }
}

impl SpanKindFilter {
    /// From names such as `server`; the first unknown name is the error.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut bits = 0u8;
        for name in names {
            let kind = match name.to_ascii_lowercase().as_str() {
                "internal" => 1,
                "server" => 2,
                "client" => 3,
                "producer" => 4,
                "consumer" => 5,
                _ => return Err(name.clone()),
            };
            bits |= 1 << kind;
        }
        Ok(SpanKindFilter(bits))
    }

    /// Whether an OTLP `SpanKind` integer is selected.
    pub fn accepts(self, kind: i32) -> bool {
        (0..8).contains(&kind) && self.0 & (1 << kind) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_kind_filter_defaults_to_server_and_consumer() {
        let f = SpanKindFilter::default();
        assert!(f.accepts(2) && f.accepts(5));
        assert!(!f.accepts(0) && !f.accepts(1) && !f.accepts(3) && !f.accepts(4));
        assert!(!f.accepts(-1) && !f.accepts(99));
        let parsed = SpanKindFilter::parse(&["Server".into(), "consumer".into()]).unwrap();
        assert_eq!(parsed, f);
        assert_eq!(
            SpanKindFilter::parse(&["bogus".into()]),
            Err("bogus".into())
        );
    }

    #[test]
    fn time_formats_with_millis() {
        assert_eq!(
            format_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
