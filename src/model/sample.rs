//! What ingest hands to the store: the samples of each release named in one
//! export request, grouped by release, with the request's item counts.

use std::collections::HashMap;
use std::fmt::Display;

use super::{Role, UnixNanos};

/// A release named by telemetry, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseRef<'a> {
    pub service: &'a str,
    pub environment: &'a str,
    pub deployment_id: &'a str,
    pub git_sha: Option<&'a str>,
    pub role: Option<Role>,
}

/// Which signal a sample's requests were read from. A release that sends
/// both counts each request in both; the store judges one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestSource {
    /// Request spans (one request each).
    #[default]
    Spans,
    /// Request-duration histograms (`[ingest] duration_metrics`).
    Metrics,
}

impl RequestSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestSource::Spans => "spans",
            RequestSource::Metrics => "metrics",
        }
    }
}

/// Requests of one release seen in one export request: counts and latencies.
/// Latencies are microseconds with a repeat count (one per span; a histogram
/// bucket carries many).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Where `requests`, `errors`, `latencies_us`, `endpoints`,
    /// `error_kinds` and `exemplars` come from (`metrics` are checks of
    /// their own, whatever the source).
    pub source: RequestSource,
    pub requests: u64,
    pub errors: u64,
    pub latencies_us: Vec<(u64, u64)>,
    /// Observations for `[[checks.metric]]`, by check index.
    pub metrics: Vec<(u16, MetricObservation)>,
    /// The same requests by endpoint, in the order first seen.
    pub endpoints: Vec<EndpointCount>,
    /// Latencies of the requests that name an endpoint: (index into
    /// `endpoints`, microseconds, repeat count), for the latency compared
    /// endpoint by endpoint.
    pub endpoint_latencies: Vec<(u16, u64, u64)>,
    /// Failed requests by kind (`error.type`, `exception.type`, the status
    /// code), in the order first seen.
    pub error_kinds: Vec<(Box<str>, u64)>,
    /// A few requests to look at, with their trace ids: the first failed
    /// ones and the slowest ones (at most `EXEMPLARS` of each).
    pub exemplars: Vec<Exemplar>,
    /// The first traced failed request of each kind: its kind's index in
    /// `error_kinds`, and the request.
    pub kind_traces: Vec<(u16, Exemplar)>,
}

/// Latency entries a sample holds before equal ones are merged (see
/// `Sample::make_room`).
pub const COMPACT_AT: usize = 4096;

/// Merges runs of adjacent entries that are `same`, adding their counts.
fn merge_equal<T>(
    v: &mut Vec<T>,
    same: impl Fn(&T, &T) -> bool,
    count: impl Fn(&mut T) -> &mut u64,
) {
    let mut kept = 0;
    for i in 0..v.len() {
        if kept > 0 && same(&v[kept - 1], &v[i]) {
            let n = *count(&mut v[i]);
            let c = count(&mut v[kept - 1]);
            *c = c.saturating_add(n);
        } else {
            v.swap(kept, i);
            kept += 1;
        }
    }
    v.truncate(kept);
}

/// Exemplars of each sort (failed, slowest) a sample keeps.
pub const EXEMPLARS: usize = 5;
/// Distinct endpoints one sample names; more are pooled as `OTHER_ENDPOINT`.
pub const MAX_SAMPLE_ENDPOINTS: usize = 64;
/// Distinct error kinds one sample names; more are pooled as `OTHER_ERROR`.
pub const MAX_SAMPLE_KINDS: usize = 16;
/// The pooled endpoint.
pub const OTHER_ENDPOINT: &str = "(other)";
/// The pooled error kind.
pub const OTHER_ERROR: &str = "(other)";

/// Requests and errors of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointCount {
    pub name: Box<str>,
    pub requests: u64,
    pub errors: u64,
}

/// One request worth looking at: its trace, how long it took, whether it
/// failed and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub latency_us: u64,
    pub failed: bool,
    /// When it ended.
    pub time: UnixNanos,
    pub endpoint: Option<Box<str>>,
}

/// What ingest reads of one request span: everything the judge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanFacts<'a> {
    pub latency_us: u64,
    pub failed: bool,
    /// The endpoint key's value (see `[checks.endpoints] keys`).
    pub endpoint: Option<&'a str>,
    /// Why it failed, when it did and something says.
    pub error_kind: Option<&'a str>,
    /// 16 and 8 bytes when valid; anything else is no exemplar.
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub end_time: UnixNanos,
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
    /// The same sample without its requests: only the configured metrics'
    /// observations, which count whichever signal the requests are taken from.
    pub fn checks_only(&self) -> Sample {
        Sample {
            source: self.source,
            metrics: self.metrics.clone(),
            ..Sample::default()
        }
    }

    /// Makes room for `incoming` more latency entries: once the entries
    /// number at least `COMPACT_AT` and would outgrow their vector, those
    /// of equal value (and endpoint) are merged first. Many histogram
    /// points over the same bounds then cost their distinct values, not
    /// entries for each bucket of each point; a vector still more than
    /// half full after merging is doubled, so merging costs O(log n) an
    /// entry however little it frees.
    pub fn make_room(&mut self, incoming: usize) {
        let v = &mut self.latencies_us;
        if v.len() >= COMPACT_AT && v.len() + incoming > v.capacity() {
            v.sort_unstable_by_key(|e| e.0);
            merge_equal(v, |a, b| a.0 == b.0, |e| &mut e.1);
            v.reserve(incoming.max(v.len()));
        }
        let v = &mut self.endpoint_latencies;
        if v.len() >= COMPACT_AT && v.len() + incoming > v.capacity() {
            v.sort_unstable_by_key(|e| (e.0, e.1));
            merge_equal(v, |a, b| (a.0, a.1) == (b.0, b.1), |e| &mut e.2);
            v.reserve(incoming.max(v.len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0
            && self.errors == 0
            && self.latencies_us.is_empty()
            && self.metrics.is_empty()
    }

    /// Adds one request span.
    pub fn add_span(&mut self, span: SpanFacts<'_>) {
        self.requests += 1;
        self.errors += u64::from(span.failed);
        self.latencies_us.push((span.latency_us, 1));
        if let Some(endpoint) = span.endpoint {
            let i = self.add_endpoint(endpoint, 1, u64::from(span.failed));
            self.endpoint_latencies.push((i, span.latency_us, 1));
        }
        let kind = span
            .failed
            .then(|| self.add_error_kind(span.error_kind.unwrap_or("error"), 1));
        if let (Ok(trace_id), Ok(span_id)) = (
            <[u8; 16]>::try_from(span.trace_id),
            <[u8; 8]>::try_from(span.span_id),
        ) {
            if trace_id != [0; 16] {
                let e = Exemplar {
                    trace_id,
                    span_id,
                    latency_us: span.latency_us,
                    failed: span.failed,
                    time: span.end_time,
                    endpoint: None,
                };
                if let Some(k) = kind.filter(|k| !self.kind_traces.iter().any(|(i, _)| i == k)) {
                    let mut first = e.clone();
                    first.endpoint = span.endpoint.map(Into::into);
                    self.kind_traces.push((k, first));
                }
                self.offer_exemplar(e, span.endpoint);
            }
        }
    }

    /// Adds `requests` of an endpoint (`errors` of them failed); returns
    /// its index in `endpoints`.
    pub fn add_endpoint(&mut self, name: &str, requests: u64, errors: u64) -> u16 {
        let i = match self.endpoints.iter().position(|e| &*e.name == name) {
            Some(i) => i,
            None if self.endpoints.len() < MAX_SAMPLE_ENDPOINTS || name == OTHER_ENDPOINT => {
                self.endpoints.push(EndpointCount {
                    name: name.into(),
                    requests: 0,
                    errors: 0,
                });
                self.endpoints.len() - 1
            }
            None => return self.add_endpoint(OTHER_ENDPOINT, requests, errors),
        };
        let e = &mut self.endpoints[i];
        e.requests = e.requests.saturating_add(requests);
        e.errors = e.errors.saturating_add(errors);
        // At most MAX_SAMPLE_ENDPOINTS + 1 entries.
        i as u16
    }

    /// Counts `n` failed requests of a kind; returns its index in
    /// `error_kinds` (at most `MAX_SAMPLE_KINDS`).
    pub fn add_error_kind(&mut self, kind: &str, n: u64) -> u16 {
        match self.error_kinds.iter().position(|(k, _)| &**k == kind) {
            Some(i) => {
                self.error_kinds[i].1 = self.error_kinds[i].1.saturating_add(n);
                i as u16
            }
            None if self.error_kinds.len() < MAX_SAMPLE_KINDS || kind == OTHER_ERROR => {
                self.error_kinds.push((kind.into(), n));
                (self.error_kinds.len() - 1) as u16
            }
            None => self.add_error_kind(OTHER_ERROR, n),
        }
    }

    /// Keeps `e` if it is among the first failed or the slowest requests.
    /// (Endpoints beyond `MAX_SAMPLE_ENDPOINTS` pool into one more entry.)
    fn offer_exemplar(&mut self, mut e: Exemplar, endpoint: Option<&str>) {
        let (failed, slow) =
            self.exemplars.iter().fold(
                (0, 0),
                |(f, s), x| if x.failed { (f + 1, s) } else { (f, s + 1) },
            );
        if e.failed {
            if failed >= EXEMPLARS {
                return;
            }
        } else if slow >= EXEMPLARS {
            // Replace the fastest kept one if this one is slower.
            let (i, fastest) = self
                .exemplars
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.failed)
                .min_by_key(|(_, x)| x.latency_us)
                .expect("five kept");
            if fastest.latency_us >= e.latency_us {
                return;
            }
            e.endpoint = endpoint.map(Into::into);
            self.exemplars[i] = e;
            return;
        }
        e.endpoint = endpoint.map(Into::into);
        self.exemplars.push(e);
    }
}

/// Most services a batch names its unattributed items by (the rest are
/// counted in `unattributed` only), so a request of many resources costs
/// no more than this to look through.
pub const UNATTRIBUTED_SERVICES: usize = 32;

/// The per-request grouping of samples by release.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// One entry per release named in the request.
    pub groups: Vec<Group<'a>>,
    index: HashMap<(&'a str, &'a str, &'a str), usize>,
    /// The group the last item went to: a request's items come a resource
    /// at a time, so most lookups end here without hashing.
    last: Option<usize>,
    /// Spans or data points in the request.
    pub items: u64,
    /// Items without a release id: accepted, counted, otherwise ignored.
    pub unattributed: u64,
    /// The same by the service that sent them (`None`: no service name),
    /// for the first [`UNATTRIBUTED_SERVICES`] services of the request.
    pub unattributed_services: Vec<(Option<&'a str>, u64)>,
    /// Items refused as invalid.
    pub invalid: u64,
    /// What was wrong with the first invalid item, for the partial-success message.
    pub first_error: Option<String>,
    /// Valid items refused because a table was full (cumulative streams):
    /// a sender may retry them later.
    pub full: u64,
    /// Why, for the answer.
    pub full_reason: Option<String>,
    /// Metrics read by nothing (neither a request-duration histogram nor a
    /// configured check), with their data points: the answer to "why is my
    /// service not judged?".
    pub ignored_metrics: Vec<(&'a str, u64)>,
    /// Where a mapper writes an endpoint name made of several attributes,
    /// reused from item to item.
    pub endpoint_scratch: String,
}

/// The samples of one release within a request.
#[derive(Debug)]
pub struct Group<'a> {
    pub release: ReleaseRef<'a>,
    /// Items that contributed (they are refused together if the release is).
    pub items: u64,
    pub sample: Sample,
}

impl<'a> Batch<'a> {
    /// The group of `release`, created on first use; a later item's sha or
    /// role fills in what an earlier one lacked.
    pub fn group(&mut self, release: ReleaseRef<'a>) -> &mut Group<'a> {
        let key = (release.service, release.environment, release.deployment_id);
        let same = |g: &Group<'a>| {
            (
                g.release.service,
                g.release.environment,
                g.release.deployment_id,
            ) == key
        };
        let i = match self.last {
            Some(i) if self.groups.get(i).is_some_and(same) => i,
            _ => {
                let next = self.groups.len();
                let i = *self.index.entry(key).or_insert(next);
                if i == next {
                    self.groups.push(Group {
                        release,
                        items: 0,
                        sample: Sample::default(),
                    });
                }
                self.last = Some(i);
                i
            }
        };
        let group = &mut self.groups[i];
        if release.git_sha.is_some() {
            group.release.git_sha = release.git_sha;
        }
        if release.role.is_some() {
            group.release.role = release.role;
        }
        group
    }

    /// Counts an item without a release id, sent by `service`.
    pub fn unattributed_from(&mut self, service: Option<&'a str>) {
        self.unattributed += 1;
        let by = &mut self.unattributed_services;
        // A request's items come a resource at a time: mostly the last one.
        if let Some((_, n)) = by.last_mut().filter(|(s, _)| *s == service) {
            *n += 1;
        } else if let Some((_, n)) = by.iter_mut().find(|(s, _)| *s == service) {
            *n += 1;
        } else if by.len() < UNATTRIBUTED_SERVICES {
            by.push((service, 1));
        }
    }

    /// Counts the points of a metric nothing reads.
    pub fn ignore_metric(&mut self, name: &'a str, points: u64) {
        match self.ignored_metrics.iter_mut().find(|(n, _)| *n == name) {
            Some((_, p)) => *p += points,
            None => self.ignored_metrics.push((name, points)),
        }
    }

    /// Counts `n` items refused as invalid, keeping the first reason.
    pub fn reject(&mut self, n: u64, why: impl Display) {
        self.invalid += n;
        if self.first_error.is_none() {
            self.first_error = Some(why.to_string());
        }
    }

    /// Refuses `n` valid items for want of room, for now.
    pub fn refuse_full(&mut self, n: u64, why: impl Display) {
        self.full += n;
        if self.full_reason.is_none() {
            self.full_reason = Some(why.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_points_over_the_same_buckets_cost_their_distinct_values() {
        let mut s = Sample::default();
        for p in 0..100_000u64 {
            s.make_room(8);
            for k in 0..8u64 {
                s.latencies_us.push((1_000 + k, 1));
                s.endpoint_latencies.push(((p % 2) as u16, 1_000 + k, 1));
            }
        }
        assert!(
            s.latencies_us.capacity() <= 2 * COMPACT_AT,
            "{}",
            s.latencies_us.capacity()
        );
        assert!(s.endpoint_latencies.capacity() <= 2 * COMPACT_AT);
        let total = |v: &[(u64, u64)]| v.iter().map(|e| e.1).sum::<u64>();
        assert_eq!(total(&s.latencies_us), 800_000);
        assert_eq!(
            s.endpoint_latencies.iter().map(|e| e.2).sum::<u64>(),
            800_000
        );
    }

    #[test]
    fn distinct_values_are_kept_and_the_vector_grows() {
        let mut s = Sample::default();
        for v in 0..50_000u64 {
            s.make_room(1);
            s.latencies_us.push((v, 2));
        }
        assert_eq!(s.latencies_us.len(), 50_000);
        let mut values: Vec<u64> = s.latencies_us.iter().map(|e| e.0).collect();
        values.sort_unstable();
        assert_eq!(values, (0..50_000).collect::<Vec<_>>());
        assert!(s.latencies_us.iter().all(|e| e.1 == 2));
    }
}
