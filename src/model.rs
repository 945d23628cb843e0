//! Core vocabulary: time, cohort roles, span-kind filters and the request
//! samples that ingest hands to the store. Pure data, no I/O.

use serde::Serialize;

/// Wall-clock or telemetry time, nanoseconds since the Unix epoch. The core is
/// always handed the time; it never reads a clock.
pub type UnixNanos = u64;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Reads the system clock; for the shells (server, CLI) only.
pub fn system_now() -> UnixNanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds in UTC, as in the verdict object.
pub fn format_time(t: UnixNanos) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(t);
    humantime::format_rfc3339_millis(time).to_string()
}

/// The optional cohort role a deployment declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Canary,
    Baseline,
    Stable,
}

impl Role {
    /// Case-insensitive; anything else is no role.
    pub fn parse(s: &str) -> Option<Role> {
        if s.eq_ignore_ascii_case("canary") {
            Some(Role::Canary)
        } else if s.eq_ignore_ascii_case("baseline") {
            Some(Role::Baseline)
        } else if s.eq_ignore_ascii_case("stable") {
            Some(Role::Stable)
        } else {
            None
        }
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

/// Requests of one release seen in one export request: counts and latencies.
/// Latencies are microseconds with a repeat count (one per span; a histogram
/// bucket carries many).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub requests: u64,
    pub errors: u64,
    pub latencies_us: Vec<(u64, u64)>,
    /// Observations for `[[checks.metric]]`, by check index.
    pub metrics: Vec<(u16, MetricObservation)>,
}

/// One observation of a configured metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricObservation {
    /// New increments of a sum.
    Count(u64),
    /// `count` values at `milli` thousandths of the metric's unit (gauges,
    /// histogram buckets).
    Values { milli: u64, count: u64 },
}

impl Sample {
    pub fn is_empty(&self) -> bool {
        self.requests == 0
            && self.errors == 0
            && self.latencies_us.is_empty()
            && self.metrics.is_empty()
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
