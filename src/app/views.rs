//! Reads of many releases under the locks, a chunk of fleets a hold so
//! ingest and the tick never wait on a long one: listings, the `/metrics`
//! exposition, and the verdicts of releases named by key.

use super::{lock, App, LIST_CHUNK};
use crate::export::prometheus::{encode_dora, openmetrics_to_text, Format, Releases};
use crate::model::{ReleaseKey, UnixNanos};
use crate::self_metrics::SourceLabels;
use crate::store::Changed;
use crate::verdict::{self, Filter, FleetName, Verdict};

impl App {
    /// Every release passing `filter`, as `verdict::list` has them, built
    /// a chunk at a time so ingest and the tick never wait on a long list
    /// for more than one chunk. Blocking: call it off the async workers.
    pub fn list_verdicts(&self, filter: &Filter, now: UnixNanos) -> Vec<Verdict> {
        let fleets = self.read(|store| verdict::fleets(store, filter));
        let mut out = Vec::new();
        for chunk in chunks(&fleets, LIST_CHUNK) {
            out.extend(self.read(|store| verdict::of_fleets(store, chunk, now)));
        }
        verdict::in_order(out)
    }

    /// As `list_verdicts`, each verdict turned into a `T` (an encoding) as
    /// its chunk is built, outside the lock: only a chunk's verdict objects
    /// exist at a time, never the whole list beside its encoding.
    /// Blocking: call it off the async workers.
    pub fn map_verdicts<T>(
        &self,
        filter: &Filter,
        now: UnixNanos,
        mut f: impl FnMut(Verdict) -> T,
    ) -> Vec<T> {
        let fleets = self.read(|store| verdict::fleets(store, filter));
        let mut out = Vec::new();
        for chunk in chunks(&fleets, LIST_CHUNK) {
            let built = self.read(|store| verdict::of_fleets(store, chunk, now));
            out.extend(built.into_iter().map(|(place, v)| (place, f(v))));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, t)| t).collect()
    }

    /// The whole `/metrics` exposition: every release's series, then the
    /// daemon's own.
    pub fn encode_metrics(&self, format: Format, now: UnixNanos) -> String {
        let window = self.config.judge.window.as_nanos() as u64;
        let mut out = String::new();
        // A chunk of fleets a hold, as listings are: a scrape of 10,000
        // releases never holds ingest up for more than one chunk.
        let fleets = self.read(|store| verdict::fleets(store, &Filter::default()));
        let mut releases = Releases::new(window, now);
        for chunk in chunks(&fleets, LIST_CHUNK) {
            self.read(|store| {
                for f in chunk {
                    let (service, environment) = (&f.fleet.service, &f.fleet.environment);
                    if let Some(fleet) = store.fleet(service, environment) {
                        releases.fleet(service, environment, fleet);
                    }
                }
            });
        }
        releases.finish(&mut out);
        if self.ledger.is_some() {
            let dora = lock(&self.dora).clone();
            let window = self.config.ledger.dora_window.as_secs_f64();
            encode_dora(&mut out, &dora, window);
        }
        if let Some(ledger) = &self.ledger {
            let stats = ledger.stats();
            let m = &self.metrics;
            m.ledger_written.set(stats.written as i64);
            m.ledger_dropped.set(stats.dropped as i64);
            m.ledger_write_errors.set(stats.write_errors as i64);
            m.ledger_degraded.set(i64::from(stats.degraded));
            for (source, n) in [
                ("api", stats.capped_api),
                ("daemon", stats.capped_daemon),
                ("inferred", stats.capped_inferred),
            ] {
                m.ledger_evicted
                    .get_or_create(&SourceLabels { source })
                    .set(n as i64);
            }
            m.ledger_refused.set(stats.refused as i64);
        }
        let buffered = self.bodies.held();
        self.metrics.body_bytes_buffered.set(buffered as i64);
        let mut own = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut own, &self.registry);
        match format {
            Format::OpenMetrics => out.push_str(&own),
            Format::Text => openmetrics_to_text(&own, &mut out),
        }
        out
    }

    /// The current verdict objects of releases a tick reported.
    pub fn verdicts_of(&self, changed: &[Changed], now: UnixNanos) -> Vec<Verdict> {
        self.verdicts_named(changed.iter().map(|c| &c.release), now)
    }

    /// The verdicts of the releases named still tracked.
    pub(super) fn verdicts_named<'k>(
        &self,
        named: impl Iterator<Item = &'k ReleaseKey>,
        now: UnixNanos,
    ) -> Vec<Verdict> {
        self.read(|store| {
            named
                .filter_map(|key| {
                    let fleet = store.fleet(&key.service, &key.environment)?;
                    let r = fleet.releases.get(&key.deployment_id)?;
                    Some(Verdict::of(&key.service, &key.environment, fleet, r, now))
                })
                .collect()
        })
    }
}

/// The fleets in runs of about `per` releases, whole fleets each (a fleet
/// has at most `limits.max_releases_per_service`).
fn chunks(fleets: &[FleetName], per: usize) -> impl Iterator<Item = &[FleetName]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= fleets.len() {
            return None;
        }
        let mut end = start;
        let mut n = 0;
        while end < fleets.len() && (n == 0 || n + fleets[end].releases <= per) {
            n += fleets[end].releases;
            end += 1;
        }
        let chunk = &fleets[start..end];
        start = end;
        Some(chunk)
    })
}
