//! Shared state behind every server: the store, the delta tracker, the
//! mapper and the self metrics. Locks are plain mutexes held for the length
//! of one batch, never across an `.await`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::dora::Report;
use crate::export::prometheus::{encode_dora, openmetrics_to_text, Format, Releases};
use crate::ingest::decode::{DecodeError, Encoding};
use crate::ingest::delta::DeltaTracker;
use crate::ingest::otlp::Mapper;
use crate::judge::Judge;
use crate::ledger::Ledger;
use crate::model::{Batch, UnixNanos};
use crate::recording;
use crate::self_metrics::{
    ItemLabels, MetricLabels, Reason, RefusedLabels, SelfMetrics, Signal, SignalLabels, Transport,
};
use crate::series::{Point, SeriesBook};
use crate::store::{BaselineRule, Changed, Inferred, RestoreError, Store};
use crate::verdict::{self, Filter, FleetName, Verdict};

/// Metric names the ignored-metrics counter and log name one by one; the
/// rest are counted as `other`, so senders cannot grow the label set.
const IGNORED_METRIC_NAMES: usize = 16;

/// Verdict changes buffered for slow watchers before they must catch up.
const CHANGES_BUFFER: usize = 1024;

/// Verdicts built per hold of the store lock when listing: about 5 ms of
/// lock at the debug build's speed, far less in release.
const LIST_CHUNK: usize = 64;
/// Fleets a tick judges in one hold of the store's lock.
const TICK_CHUNK: usize = 64;
/// One chart point per release this often...
const SERIES_STEP: std::time::Duration = std::time::Duration::from_secs(5);
/// ...for the last 30 minutes: 360 points of 40 bytes, 14 KiB a release.
const SERIES_POINTS: usize = 360;

/// What an export request came to, for its OTLP response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Items refused (`rejected_spans` / `rejected_data_points`).
    pub rejected: u64,
    /// Why, when anything was refused.
    pub message: String,
    /// Every item was invalid: the request as a whole is bad input
    /// (HTTP 400 / INVALID_ARGUMENT rather than a partial success).
    pub all_invalid: bool,
    /// Every item was refused because a table was full: answered with a
    /// code OTLP clients retry.
    pub all_full: bool,
}

impl Ingested {
    fn partial(&self) -> bool {
        self.rejected > 0
    }

    /// The OTLP trace response: partial success when anything was refused.
    pub fn trace_response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: self.partial().then_some(ExportTracePartialSuccess {
                rejected_spans: self.rejected as i64,
                error_message: self.message,
            }),
        }
    }

    /// The OTLP metrics response: partial success when anything was refused.
    pub fn metrics_response(self) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: self.partial().then_some(ExportMetricsPartialSuccess {
                rejected_data_points: self.rejected as i64,
                error_message: self.message,
            }),
        }
    }
}

/// The daemon's shared state.
pub struct App {
    pub config: Config,
    mapper: Mapper,
    /// parking_lot's, for its fair hand-over: a reader taking chunk after
    /// chunk would otherwise win the lock back from a waiting export every
    /// time (std's mutex lets the releasing thread barge), and an export
    /// waited out a whole 10,000-release listing, 80–170 ms.
    store: parking_lot::Mutex<Store>,
    deltas: Mutex<DeltaTracker>,
    pub metrics: SelfMetrics,
    registry: Registry,
    ready: AtomicBool,
    /// Verdicts that changed color, for watchers.
    changes: tokio::sync::broadcast::Sender<Arc<Verdict>>,
    /// Export requests being processed (bounded: see `admit`).
    admission: tokio::sync::Semaphore,
    /// Bytes of OTLP/HTTP bodies being read (bounded: see `buffer`).
    buffering: tokio::sync::Semaphore,
    /// Reads of every release, one at a time (see `whole_read`).
    whole_reads: reads::Reads,
    /// Ignored metric names already counted under their own name (and
    /// logged once).
    ignored_metrics: Mutex<HashSet<String>>,
    /// The release ledger, when one is configured.
    ledger: Option<Arc<Ledger>>,
    /// DORA's measures over the trailing window, as last computed.
    dora: Mutex<Arc<Vec<Report>>>,
    /// Each release's recent numbers, for the page's charts (its own lock,
    /// so reading them never waits on the store).
    series: Mutex<SeriesBook>,
}

/// Most services and environments the DORA gauges are exposed for.
pub const MAX_DORA_SERIES: usize = 1000;

impl App {
    /// `started_at` is when we began listening (see `DeltaTracker::new`).
    pub fn new(config: Config, started_at: UnixNanos) -> Self {
        Self::with_ledger(config, started_at, None)
    }

    /// As `new`, recording into `ledger` and restoring its checkpoint.
    pub fn with_ledger(config: Config, started_at: UnixNanos, ledger: Option<Arc<Ledger>>) -> Self {
        let metrics = SelfMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        Self {
            mapper: Mapper::new(&config),
            store: parking_lot::Mutex::new(
                Store::new(
                    config.limits.max_releases,
                    Judge::new(&config.judge, &config.checks),
                    BaselineRule::from(&config.baseline),
                )
                .with_service_cap(config.limits.max_releases_per_service),
            ),
            deltas: Mutex::new(
                DeltaTracker::new(config.limits.max_metric_streams, started_at)
                    .with_resource_quota(config.limits.max_metric_streams_per_resource),
            ),
            admission: tokio::sync::Semaphore::new(config.server.max_inflight_requests),
            whole_reads: reads::Reads::default(),
            buffering: tokio::sync::Semaphore::new(config.server.max_buffered_bytes),
            config,
            metrics,
            registry,
            ready: AtomicBool::new(false),
            changes: tokio::sync::broadcast::channel(CHANGES_BUFFER).0,
            ignored_metrics: Mutex::new(HashSet::new()),
            ledger,
            dora: Mutex::new(Arc::new(Vec::new())),
            series: Mutex::new(SeriesBook::new(
                SERIES_STEP.as_nanos() as u64,
                SERIES_POINTS,
            )),
        }
    }

    /// Runs a read of every release (a listing, a scrape) off the async
    /// workers, one at a time, at a lower priority than ingest (see
    /// `reads`). Later readers wait their turn. None if the read panicked.
    pub async fn whole_read<R: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&App) -> R + Send + 'static,
    ) -> Option<R> {
        let app = self.clone();
        self.whole_reads.run(move || read(&app)).await
    }

    /// A place for one export request, or None when as many as allowed are
    /// already being processed: the caller answers with a retryable refusal
    /// and counts it. Every span is thus either counted or refused.
    pub fn admit(
        &self,
        signal: Signal,
        transport: Transport,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = self.admission.try_acquire().ok();
        if permit.is_none() {
            self.refuse_request(signal, transport, Reason::Overloaded);
        }
        permit
    }

    /// Room for `bytes` more of a body being read, without waiting; None
    /// when `server.max_buffered_bytes` are already held.
    pub fn buffer(&self, bytes: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.buffering
            .try_acquire_many(u32::try_from(bytes).ok()?)
            .ok()
    }

    /// Maps and records a trace export.
    #[tracing::instrument(name = "ingest traces", skip_all, fields(transport = ?via))]
    pub fn ingest_traces(
        &self,
        req: &ExportTraceServiceRequest,
        via: Transport,
        now: UnixNanos,
    ) -> Ingested {
        let batch = self.mapper.traces(req);
        self.record(batch, Signal::Spans, via, now)
    }

    /// Maps and records a trace export from its encoded bytes, without
    /// decoding it in full (`Mapper::trace_bytes`); Err when the bytes are
    /// not an export request.
    #[tracing::instrument(name = "ingest traces", skip_all, fields(transport = ?via))]
    pub fn ingest_trace_bytes(
        &self,
        bytes: &[u8],
        encoding: Encoding,
        via: Transport,
        now: UnixNanos,
    ) -> Result<Ingested, DecodeError> {
        self.mapper.trace_bytes(bytes, encoding, |batch| {
            self.record(batch, Signal::Spans, via, now)
        })
    }

    /// Maps and records a metrics export.
    #[tracing::instrument(name = "ingest metrics", skip_all, fields(transport = ?via))]
    pub fn ingest_metrics(
        &self,
        req: &ExportMetricsServiceRequest,
        via: Transport,
        now: UnixNanos,
    ) -> Ingested {
        let batch = {
            let mut deltas = lock(&self.deltas);
            self.mapper.metrics(req, &mut deltas, now)
        };
        self.record(batch, Signal::Points, via, now)
    }

    fn record(
        &self,
        batch: Batch<'_>,
        signal: Signal,
        transport: Transport,
        now: UnixNanos,
    ) -> Ingested {
        let (applied, tracked) = {
            let mut store = self.store.lock();
            let applied = store.apply(&batch, now);
            (applied, store.len())
        };
        let m = &self.metrics;
        let refused_by = |reason, n: u64| {
            if n > 0 {
                m.refused
                    .get_or_create(&RefusedLabels {
                        signal,
                        transport,
                        reason,
                    })
                    .inc_by(n);
            }
        };
        refused_by(Reason::Invalid, batch.invalid);
        refused_by(Reason::ReleaseLimit, applied.refused);
        refused_by(Reason::RoleConflict, applied.role_conflicts);
        refused_by(Reason::StreamLimit, batch.full);
        let rejected = batch.invalid + applied.refused + applied.role_conflicts + batch.full;
        m.accepted
            .get_or_create(&ItemLabels { signal, transport })
            .inc_by(batch.items.saturating_sub(rejected));
        if batch.unattributed > 0 {
            m.unattributed
                .get_or_create(&SignalLabels { signal })
                .inc_by(batch.unattributed);
        }
        m.releases_refused.inc_by(applied.refused_releases);
        if !batch.ignored_metrics.is_empty() {
            self.count_ignored(&batch.ignored_metrics);
        }
        m.releases_tracked.set(tracked as i64);

        let mut reasons = Vec::new();
        if let Some(first) = &batch.first_error {
            reasons.push(format!("{} invalid: {first}", batch.invalid));
        }
        if applied.refused > 0 {
            let limit = match &applied.full_service {
                Some(service) => format!(
                    "the limit of {} tracked releases of service {:?}",
                    self.config.limits.max_releases_per_service,
                    crate::verdict::shown(service)
                ),
                None => format!(
                    "the limit of {} tracked releases",
                    self.config.limits.max_releases
                ),
            };
            reasons.push(format!(
                "{} refused: {} new release(s) over {limit}; idle releases are forgotten after [limits] release_idle_expiry",
                applied.refused, applied.refused_releases
            ));
        }
        if let Some(why) = &batch.full_reason {
            reasons.push(format!("{} refused: {why}", batch.full));
        }
        if let Some((id, claimed, held)) = &applied.first_role_conflict {
            reasons.push(format!(
                "{} refused: deployment {:?} claims deployment.role={} but first declared {}; a role is fixed by a deployment's first telemetry",
                applied.role_conflicts,
                crate::verdict::shown(id),
                claimed.as_str(),
                held.map_or("none", |r| r.as_str()),
            ));
        }
        Ingested {
            rejected,
            message: reasons.join("; "),
            all_invalid: batch.items > 0 && batch.invalid == batch.items,
            // Every item was valid and refused for want of room: the whole
            // request may be retried later.
            all_full: batch.items > 0
                && rejected == batch.items
                && batch.invalid == 0
                && applied.role_conflicts == 0,
        }
    }

    /// Counts the points of metrics nothing reads, by name for the first
    /// few names (each logged once), as `other` beyond.
    fn count_ignored(&self, ignored: &[(&str, u64)]) {
        let mut named = lock(&self.ignored_metrics);
        for &(name, points) in ignored {
            let label = if named.contains(name) {
                name
            } else if named.len() < IGNORED_METRIC_NAMES {
                named.insert(name.to_string());
                tracing::info!(
                    metric = %name,
                    "metric ignored: neither a request-duration histogram ([ingest] duration_metrics) nor a [[checks.metric]]"
                );
                name
            } else {
                "other"
            };
            self.metrics
                .metric_points_ignored
                .get_or_create(&MetricLabels {
                    metric: label.to_string(),
                })
                .inc_by(points);
        }
    }

    /// Counts a whole export request refused before mapping.
    pub fn refuse_request(&self, signal: Signal, transport: Transport, reason: Reason) {
        self.metrics
            .requests_refused
            .get_or_create(&RefusedLabels {
                signal,
                transport,
                reason,
            })
            .inc();
    }

    /// Judges every release on what arrived since the last tick.
    #[tracing::instrument(name = "judge tick", skip_all, level = "debug")]
    pub fn tick(&self, now: UnixNanos) -> Vec<Changed> {
        let started = std::time::Instant::now();
        // A chunk of fleets a hold, as listings are: judging 10,000 busy
        // releases takes a good part of a second, and an export waiting
        // on the lock for all of it would wait that long.
        let keys = self.store.lock().fleet_keys();
        let mut changed = Vec::new();
        for chunk in keys.chunks(TICK_CHUNK) {
            let mut store = self.store.lock();
            changed.extend(store.tick_fleets(chunk, now));
            parking_lot::MutexGuard::unlock_fair(store);
        }
        crate::store::sort_changed(&mut changed);
        let (ended, rebased) = {
            let mut store = self.store.lock();
            (store.take_inferred(), store.take_rebased())
        };
        self.metrics
            .evaluation_seconds
            .observe(started.elapsed().as_secs_f64());
        self.record_series(now);
        if self.changes.receiver_count() > 0 && !changed.is_empty() {
            let verdicts = self.verdicts_of(&changed, now);
            for v in verdicts {
                // No receiver left is fine: nobody is watching.
                let _ = self.changes.send(Arc::new(v));
            }
        }
        for c in &changed {
            tracing::info!(
                service = %c.service,
                environment = %c.environment,
                deployment_id = %c.deployment_id,
                verdict = %c.color,
                "verdict changed"
            );
        }
        if let Some(ledger) = &self.ledger {
            self.write_ledger(ledger, &changed, &ended, &rebased, now);
        }
        for e in &ended {
            tracing::info!(
                service = %e.service,
                environment = %e.environment,
                deployment_id = %e.deployment_id,
                baseline = %e.baseline,
                rollout = e.rollout.as_str(),
                "rollout ended (inferred from who went quiet)"
            );
        }
        changed
    }

    /// Once a step, a chart point per release from the checks just
    /// reported. The store lock is held only to copy a few numbers out, a
    /// chunk of fleets at a time.
    fn record_series(&self, now: UnixNanos) {
        if !lock(&self.series).due(now) {
            return;
        }
        let keys = self.read(Store::fleet_keys);
        let mut points = Vec::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            self.read(|store| {
                for (s, e) in chunk {
                    let Some(fleet) = store.fleet(s, e) else {
                        continue;
                    };
                    points.extend(fleet.releases.iter().map(|(id, r)| {
                        let key = (s.clone(), e.clone(), id.clone());
                        (key, Point::of(now, &r.judgement().checks))
                    }));
                }
            });
        }
        lock(&self.series).record(now, points);
    }

    /// A release's chart points, oldest first; None when it has none.
    pub fn series(
        &self,
        service: &str,
        environment: &str,
        deployment_id: &str,
    ) -> Option<Vec<Point>> {
        lock(&self.series).get(service, environment, deployment_id)
    }

    /// Writes a tick's news to the ledger without waiting for the disk: a
    /// full queue drops (and counts) rather than stall the judge.
    fn write_ledger(
        &self,
        ledger: &Ledger,
        changed: &[Changed],
        ended: &[Inferred],
        rebased: &[(Arc<str>, Arc<str>, Arc<str>)],
        now: UnixNanos,
    ) {
        if !rebased.is_empty() {
            // Whom a release is compared with survives a restart without
            // the checkpoint through its record (the cold-start baseline).
            let named = rebased.iter().map(|(s, e, id)| (&**s, &**e, &**id));
            for v in &self.verdicts_named(named, now) {
                let _ = ledger.try_upsert_release(recording::record(v, now));
            }
        }
        if changed.is_empty() && ended.is_empty() {
            return;
        }
        let verdicts = self.verdicts_of(changed, now);
        let (events, records) = recording::tick_records(changed, &verdicts, ended, now);
        for e in events {
            let _ = ledger.try_record(e);
        }
        for r in records {
            let _ = ledger.try_upsert_release(r);
        }
    }

    /// The ledger, when one is configured.
    pub fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.ledger.as_ref()
    }

    /// Keeps DORA's measures for `/metrics`: the services and environments
    /// with the most deployments first, at most [`MAX_DORA_SERIES`].
    pub fn set_dora(&self, mut reports: Vec<Report>) {
        if reports.len() > MAX_DORA_SERIES {
            reports.sort_by(|a, b| {
                (b.measures.deployments, b.measures.releases_started)
                    .cmp(&(a.measures.deployments, a.measures.releases_started))
            });
            reports.truncate(MAX_DORA_SERIES);
            reports.sort_by(|a, b| (&a.service, &a.environment).cmp(&(&b.service, &b.environment)));
        }
        *lock(&self.dora) = Arc::new(reports);
    }

    /// The judge's whole state, for the ledger's checkpoint: serialized a
    /// fleet a hold, so ingest and the tick wait for one fleet at most, not
    /// the whole store (126 ms for 10,000 releases in one hold).
    pub fn checkpoint(&self) -> Vec<u8> {
        let (head, fleets) = self.read(|store| {
            let names = verdict::fleets(store, &Filter::default());
            (store.checkpoint_head(), names)
        });
        let parts = fleets
            .iter()
            .filter_map(|f| self.read(|store| store.checkpoint_fleet(&f.service, &f.environment)))
            .collect();
        crate::store::checkpoint_of(head, parts)
    }

    /// Restores a checkpoint; returns the releases restored.
    pub fn restore(&self, bytes: &[u8]) -> Result<usize, RestoreError> {
        let mut store = self.store.lock();
        let n = store.restore(bytes)?;
        self.metrics.releases_tracked.set(store.len() as i64);
        Ok(n)
    }

    /// Hands the store the ledger's record of who was compared with whom
    /// (evidence of baselines that survives a restart).
    pub fn remember_baselines(&self, pairs: Vec<crate::ledger::RecordedBaseline>) {
        let pairs = pairs.into_iter().map(|p| {
            (
                Arc::from(p.service),
                Arc::from(p.environment),
                Arc::from(p.deployment_id),
                Arc::from(p.baseline_deployment_id),
                p.last_seen_ns,
            )
        });
        self.store.lock().remember_baselines(pairs);
    }

    /// Forgets idle releases and metric streams.
    pub fn expire(&self, now: UnixNanos) {
        let idle = self.config.limits.release_idle_expiry.as_nanos() as u64;
        let (expired, tracked) = {
            let mut store = self.store.lock();
            (store.expire(now, idle), store.len())
        };
        lock(&self.deltas).expire(now, idle);
        self.metrics.releases_expired.inc_by(expired as u64);
        self.metrics.releases_tracked.set(tracked as i64);
    }

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

    /// Runs `f` with the store locked; keep `f` short and synchronous.
    /// The lock is handed to a waiting thread, if any, when `f` is done:
    /// readers call this chunk after chunk.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let store = self.store.lock();
        let r = f(&store);
        parking_lot::MutexGuard::unlock_fair(store);
        r
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
                    if let Some(fleet) = store.fleet(&f.service, &f.environment) {
                        releases.fleet(&f.service, &f.environment, fleet);
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
        }
        let buffered = self.config.server.max_buffered_bytes - self.buffering.available_permits();
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
        let named = changed
            .iter()
            .map(|c| (&*c.service, &*c.environment, &*c.deployment_id));
        self.verdicts_named(named, now)
    }

    /// The verdicts of releases named (service, environment, deployment id)
    /// still tracked.
    fn verdicts_named<'k>(
        &self,
        named: impl Iterator<Item = (&'k str, &'k str, &'k str)>,
        now: UnixNanos,
    ) -> Vec<Verdict> {
        self.read(|store| {
            named
                .filter_map(|(service, environment, id)| {
                    let fleet = store.fleet(service, environment)?;
                    let r = fleet.releases.get(id)?;
                    Some(Verdict::of(service, environment, fleet, r, now))
                })
                .collect()
        })
    }

    /// Every verdict that changes color from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Verdict>> {
        self.changes.subscribe()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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

/// A poisoned lock means a panic mid-update elsewhere; the data is counters
/// that stay usable, so carry on rather than take the daemon down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

mod reads;

#[cfg(test)]
mod props;
