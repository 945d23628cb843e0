//! What ingest hands to the store: the samples of each release named in one
//! export request, grouped by release, with the request's item counts.

use std::collections::HashMap;
use std::fmt::Display;

use super::Role;

/// A release named by telemetry, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseRef<'a> {
    pub service: &'a str,
    pub environment: &'a str,
    pub deployment_id: &'a str,
    pub git_sha: Option<&'a str>,
    pub role: Option<Role>,
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

/// The per-request grouping of samples by release.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// One entry per release named in the request.
    pub groups: Vec<Group<'a>>,
    index: HashMap<(&'a str, &'a str, &'a str), usize>,
    /// Spans or data points in the request.
    pub items: u64,
    /// Items without a release id: accepted, counted, otherwise ignored.
    pub unattributed: u64,
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
        let next = self.groups.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.groups.push(Group {
                release,
                items: 0,
                sample: Sample::default(),
            });
        }
        let group = &mut self.groups[i];
        if release.git_sha.is_some() {
            group.release.git_sha = release.git_sha;
        }
        if release.role.is_some() {
            group.release.role = release.role;
        }
        group
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
