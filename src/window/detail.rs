//! What a release keeps beyond its counters, for the verdict's "why": its
//! endpoint table (which endpoints are counted on their own), its failed
//! requests by kind, and a few requests to look at (the latest failed ones
//! and the slowest of the window), each bounded.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::EndpointHit;
use crate::model::{Exemplar, Sample, UnixNanos, EXEMPLARS, OTHER_ENDPOINT, OTHER_ERROR};

/// Error kinds a release names; more are pooled as `(other)`.
pub const MAX_ERROR_KINDS: usize = 16;

/// A release's endpoints, error kinds and exemplars.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Detail {
    /// Endpoint names by index into the counters' endpoint columns: the
    /// first `top` seen, then `(other)` for the rest.
    pub endpoints: Vec<Arc<str>>,
    /// Failed requests by kind since the release was first seen.
    pub error_kinds: Vec<(Arc<str>, u64)>,
    /// The latest failed requests and the slowest ones of the window.
    pub exemplars: Vec<Exemplar>,
    /// The first traced failed request of each kind in `error_kinds`.
    #[serde(default)]
    pub kind_traces: Vec<(Arc<str>, Exemplar)>,
}

impl Detail {
    /// Takes in a sample's endpoints, error kinds and exemplars at `now`,
    /// returning its endpoint counts by table index. Slow exemplars older
    /// than `window` give way to new ones.
    pub fn add(
        &mut self,
        sample: &Sample,
        top: usize,
        now: UnixNanos,
        window: UnixNanos,
    ) -> Vec<EndpointHit> {
        let mut hits: Vec<EndpointHit> = Vec::with_capacity(sample.endpoints.len());
        for e in &sample.endpoints {
            let index = self.endpoint_slot(&e.name, top);
            match hits.iter_mut().find(|h| h.index == index) {
                Some(h) => {
                    h.requests = h.requests.saturating_add(e.requests);
                    h.errors = h.errors.saturating_add(e.errors);
                }
                None => hits.push(EndpointHit {
                    index,
                    requests: e.requests,
                    errors: e.errors,
                }),
            }
        }
        for (kind, n) in &sample.error_kinds {
            self.add_kind(kind, *n);
        }
        for (i, e) in &sample.kind_traces {
            let Some((kind, _)) = sample.error_kinds.get(usize::from(*i)) else {
                continue;
            };
            let named = self.error_kinds.iter().find(|(k, _)| **k == **kind);
            if let Some((k, _)) = named {
                if !self.kind_traces.iter().any(|(t, _)| t == k) {
                    let k = k.clone();
                    self.kind_traces.push((k, e.clone()));
                }
            }
        }
        for e in &sample.exemplars {
            self.keep(e, now, window);
        }
        hits
    }

    /// The table index of each of a sample's endpoints, once `add` has
    /// taken them in.
    pub fn slots(&self, sample: &Sample) -> Vec<usize> {
        let find = |name: &str| self.endpoints.iter().position(|n| &**n == name);
        sample
            .endpoints
            .iter()
            .map(|e| {
                find(&e.name)
                    .or_else(|| find(OTHER_ENDPOINT))
                    .unwrap_or(usize::MAX)
            })
            .collect()
    }

    /// The table index of an endpoint, adding it while there is room.
    fn endpoint_slot(&mut self, name: &str, top: usize) -> usize {
        if let Some(i) = self.endpoints.iter().position(|n| &**n == name) {
            return i;
        }
        let named = self
            .endpoints
            .iter()
            .filter(|n| &***n != OTHER_ENDPOINT)
            .count();
        if named < top && name != OTHER_ENDPOINT {
            self.endpoints.push(Arc::from(name));
            return self.endpoints.len() - 1;
        }
        match self.endpoints.iter().position(|n| &**n == OTHER_ENDPOINT) {
            Some(i) => i,
            None => {
                self.endpoints.push(Arc::from(OTHER_ENDPOINT));
                self.endpoints.len() - 1
            }
        }
    }

    fn add_kind(&mut self, kind: &str, n: u64) {
        if let Some((_, c)) = self.error_kinds.iter_mut().find(|(k, _)| &**k == kind) {
            *c = c.saturating_add(n);
        } else if self.error_kinds.len() < MAX_ERROR_KINDS || kind == OTHER_ERROR {
            self.error_kinds.push((Arc::from(kind), n));
        } else {
            self.add_kind(OTHER_ERROR, n);
        }
    }

    /// Keeps the latest failed requests, and the slowest requests of the
    /// window.
    fn keep(&mut self, e: &Exemplar, now: UnixNanos, window: UnixNanos) {
        let mut e = e.clone();
        e.time = now;
        if e.failed {
            let failed: Vec<usize> = (0..self.exemplars.len())
                .filter(|&i| self.exemplars[i].failed)
                .collect();
            if failed.len() >= EXEMPLARS {
                // The oldest failed one gives way.
                self.exemplars.remove(failed[0]);
            }
            self.exemplars.push(e);
            return;
        }
        let stale = now.saturating_sub(window);
        self.exemplars.retain(|x| x.failed || x.time >= stale);
        let slow: Vec<usize> = (0..self.exemplars.len())
            .filter(|&i| !self.exemplars[i].failed)
            .collect();
        if slow.len() < EXEMPLARS {
            self.exemplars.push(e);
            return;
        }
        let fastest = slow
            .into_iter()
            .min_by_key(|&i| self.exemplars[i].latency_us)
            .expect("five kept");
        if self.exemplars[fastest].latency_us < e.latency_us {
            self.exemplars[fastest] = e;
        }
    }

    /// Kinds of failed requests this release has shown that `baseline` has
    /// not, most frequent first.
    pub fn new_error_kinds(&self, baseline: &Detail) -> Vec<(Arc<str>, u64)> {
        let mut new: Vec<(Arc<str>, u64)> = self
            .error_kinds
            .iter()
            .filter(|(k, n)| {
                *n > 0 && &**k != OTHER_ERROR && !baseline.error_kinds.iter().any(|(b, _)| b == k)
            })
            .cloned()
            .collect();
        new.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        new
    }

    /// Heap bytes held (names counted once per table entry).
    pub fn heap_bytes(&self) -> usize {
        self.endpoints.capacity() * std::mem::size_of::<Arc<str>>()
            + self.endpoints.iter().map(|n| n.len()).sum::<usize>()
            + self.error_kinds.capacity() * std::mem::size_of::<(Arc<str>, u64)>()
            + self.exemplars.capacity() * std::mem::size_of::<Exemplar>()
            + self.kind_traces.capacity() * std::mem::size_of::<(Arc<str>, Exemplar)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SpanFacts;

    fn span(endpoint: &str, failed: bool, latency_us: u64, id: u8) -> SpanFacts<'_> {
        SpanFacts {
            latency_us,
            failed,
            endpoint: Some(endpoint),
            error_kind: failed.then_some("timeout"),
            trace_id: &[1; 16],
            span_id: std::slice::from_ref(&id).repeat(8).leak(),
            end_time: 0,
        }
    }

    #[test]
    fn the_first_endpoints_count_alone_and_the_rest_pool() {
        let mut sample = Sample::default();
        for name in ["a", "b", "c", "a"] {
            sample.add_span(span(name, false, 10, 1));
        }
        let mut d = Detail::default();
        let hits = d.add(&sample, 2, 0, 60);
        let names: Vec<&str> = d.endpoints.iter().map(|n| &**n).collect();
        assert_eq!(names, ["a", "b", OTHER_ENDPOINT]);
        assert_eq!(
            hits.iter()
                .map(|h| (h.index, h.requests))
                .collect::<Vec<_>>(),
            [(0, 2), (1, 1), (2, 1)]
        );
        // A later new endpoint joins the pool, known ones keep their index.
        let mut later = Sample::default();
        later.add_span(span("d", false, 10, 1));
        later.add_span(span("b", false, 10, 1));
        let hits = d.add(&later, 2, 1, 60);
        assert_eq!(hits.iter().map(|h| h.index).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn a_request_naming_endless_endpoints_pools_them() {
        let mut sample = Sample::default();
        let names: Vec<String> = (0..500).map(|i| format!("GET /items/{i}")).collect();
        for name in &names {
            sample.add_span(span(name, false, 10, 1));
        }
        assert_eq!(
            sample.endpoints.len(),
            crate::model::MAX_SAMPLE_ENDPOINTS + 1
        );
        assert_eq!(
            sample.endpoints.iter().map(|e| e.requests).sum::<u64>(),
            500
        );
        let mut d = Detail::default();
        d.add(&sample, 20, 0, 60);
        assert_eq!(d.endpoints.len(), 21);
    }

    #[test]
    fn exemplars_keep_the_latest_failures_and_the_slowest_of_the_window() {
        let mut d = Detail::default();
        for i in 0..8u8 {
            let mut s = Sample::default();
            s.add_span(span("a", true, 5, i));
            s.add_span(span("a", false, 100 + u64::from(i), i));
            d.add(&s, 20, u64::from(i), 60);
        }
        let failed: Vec<u8> = d
            .exemplars
            .iter()
            .filter(|e| e.failed)
            .map(|e| e.span_id[0])
            .collect();
        assert_eq!(failed, [3, 4, 5, 6, 7]);
        let mut slow: Vec<u64> = d
            .exemplars
            .iter()
            .filter(|e| !e.failed)
            .map(|e| e.latency_us)
            .collect();
        slow.sort_unstable();
        assert_eq!(slow, [103, 104, 105, 106, 107]);
        // Out of the window, a fast request replaces the slow ones.
        let mut s = Sample::default();
        s.add_span(span("a", false, 1, 9));
        d.add(&s, 20, 1_000, 60);
        let slow: Vec<u64> = d
            .exemplars
            .iter()
            .filter(|e| !e.failed)
            .map(|e| e.latency_us)
            .collect();
        assert_eq!(slow, [1]);
    }

    #[test]
    fn each_kind_keeps_its_first_traced_request() {
        let mut d = Detail::default();
        for i in 1..=3u8 {
            let mut s = Sample::default();
            s.add_span(span("a", true, 5, i));
            d.add(&s, 20, u64::from(i), 60);
        }
        assert_eq!(d.kind_traces.len(), 1);
        assert_eq!(&*d.kind_traces[0].0, "timeout");
        assert_eq!(d.kind_traces[0].1.span_id, [1; 8], "the first one");
        assert_eq!(d.kind_traces[0].1.endpoint.as_deref(), Some("a"));
    }

    #[test]
    fn new_error_kinds_are_those_the_baseline_never_showed() {
        let mut canary = Detail::default();
        let mut baseline = Detail::default();
        let mut s = Sample::default();
        s.add_error_kind("HTTP 503", 4);
        s.add_error_kind("NullPointerException", 7);
        canary.add(&s, 20, 0, 60);
        let mut b = Sample::default();
        b.add_error_kind("HTTP 503", 40);
        baseline.add(&b, 20, 0, 60);
        let new = canary.new_error_kinds(&baseline);
        assert_eq!(new, [(Arc::from("NullPointerException"), 7)]);
    }
}
