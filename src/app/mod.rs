//! Shared state behind every server, and the only place with locks: the
//! config, the mapper, the store (parking_lot's fair mutex), the delta
//! tracker, the self metrics and their registry, readiness, the change
//! broadcast for watchers, admission (export requests in flight), the
//! body-bytes budget, the whole-reads thread, the ledger, DORA's last
//! measures, the charts' series and the senders table. No lock is held
//! across an `.await`. By the work done: `ingest` (exports applied and
//! counted), `tick` (the judge's clock, checkpoint, expiry), `views`
//! (listings, `/metrics`, verdicts by key), `reads` (the niced thread whole
//! reads run on), `senders` (who sends what, attributed or not), `bodies`
//! (the bytes of bodies being read, in all and per peer), `shared` (fleet
//! states for the ledger, and fleets taken over from it).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::dora::Report;
use crate::ingest::decode::{self, DecodeError, Encoding};
use crate::ingest::delta::DeltaTracker;
use crate::ingest::otlp::Mapper;
use crate::judge::Judge;
use crate::ledger::Ledger;
use crate::model::UnixNanos;
use crate::self_metrics::{Reason, SelfMetrics, Signal, Transport};
use crate::series::SeriesBook;
use crate::store::{BaselineRule, Store};
use crate::verdict::Verdict;

/// Verdict changes buffered for slow watchers before they must catch up.
const CHANGES_BUFFER: usize = 1024;

/// Verdicts built per hold of the store lock when listing: about 5 ms of
/// lock at the debug build's speed, far less in release.
const LIST_CHUNK: usize = 64;
/// One chart point per release this often...
const SERIES_STEP: std::time::Duration = std::time::Duration::from_secs(5);
/// ...for the last 30 minutes: 360 points of 40 bytes, 14 KiB a release.
const SERIES_POINTS: usize = 360;

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
    /// KiB of `server.max_decoding_bytes` free for metrics requests
    /// being decoded.
    decoding: tokio::sync::Semaphore,
    /// Bytes of request bodies being read, in all and per peer.
    bodies: bodies::Bodies,
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
    /// Who sends what, attributed or not (its own lock, taken once per
    /// export after the store's).
    senders: Mutex<senders::Senders>,
    /// Told when fleets first seen wait for their state (`shared`).
    adoptions: tokio::sync::Notify,
    /// The verdicts other replicas sharing the ledger judge, as their
    /// event streams tell them (`shared`).
    remote: Mutex<shared::Remote>,
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
        let remote = shared::Remote::new(config.limits.max_releases);
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
                .with_service_cap(config.limits.max_releases_per_service)
                // Only another replica can have judged a fleet first
                // seen here; one daemon restores its own at start.
                .with_adoption_if(ledger.as_ref().is_some_and(|l| l.is_shared())),
            ),
            deltas: Mutex::new(
                DeltaTracker::new(config.limits.max_metric_streams, started_at)
                    .with_resource_quota(config.limits.max_metric_streams_per_resource)
                    .with_sender_quota(config.limits.max_metric_streams_per_sender)
                    .with_byte_budget(config.limits.max_metric_stream_bytes),
            ),
            admission: tokio::sync::Semaphore::new(config.server.max_inflight_requests),
            decoding: tokio::sync::Semaphore::new(config.server.max_decoding_bytes >> 10),
            whole_reads: reads::Reads::default(),
            bodies: bodies::Bodies::new(
                config.server.max_buffered_bytes,
                config.server.max_buffered_bytes_per_peer,
            ),
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
            senders: Mutex::new(senders::Senders::default()),
            adoptions: tokio::sync::Notify::new(),
            remote: Mutex::new(remote),
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

    /// A metrics request decoded from `body` (decompressed), once there
    /// is room for what decoding it takes (`decoding_room`); the room is
    /// held with the request.
    pub async fn decode_metrics(
        &self,
        body: &[u8],
        encoding: Encoding,
    ) -> Result<
        (
            ExportMetricsServiceRequest,
            tokio::sync::SemaphorePermit<'_>,
        ),
        DecodeError,
    > {
        let room = self.decoding_room(decode::weight(body, encoding)).await?;
        Ok((decode::decode(body, encoding)?, room))
    }

    /// Room for a decoding that takes `weight` bytes (`decode::weight`)
    /// under `server.max_decoding_bytes`, waited for in turn; a decoding
    /// heavier than all of it is refused.
    pub async fn decoding_room(
        &self,
        weight: usize,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, DecodeError> {
        let limit = self.config.server.max_decoding_bytes;
        let kib = u32::try_from(weight.div_ceil(1024))
            .ok()
            .filter(|_| weight <= limit)
            .ok_or(DecodeError::TooHeavy { weight, limit })?;
        Ok(self
            .decoding
            .acquire_many(kib)
            .await
            .expect("the decoding semaphore is never closed"))
    }

    /// The room of one request body from `peer` while it is read, empty
    /// until it grows (see `bodies`).
    pub fn body_hold(&self, peer: Option<std::net::IpAddr>) -> BodyHold {
        self.bodies.hold(peer)
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

    /// Runs `f` with the store locked; keep `f` short and synchronous.
    /// The lock is handed to a waiting thread, if any, when `f` is done:
    /// readers call this chunk after chunk.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let store = self.store.lock();
        let r = f(&store);
        parking_lot::MutexGuard::unlock_fair(store);
        r
    }

    /// Every verdict that changes color from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Verdict>> {
        self.changes.subscribe()
    }

    /// Who has sent what since start, attributed or not, and HTTP/1.x
    /// requests on the gRPC port (`GET /api/v1/senders`).
    pub fn senders(&self) -> SendersView {
        lock(&self.senders).view(&self.config.identity.release_keys)
    }

    /// Counts an HTTP/1.x request on the gRPC port (an OTLP/HTTP exporter
    /// pointed at it) and logs it, at most once a minute with the count.
    pub fn wrong_port(&self, user_agent: Option<&str>, http_port: u16, now: UnixNanos) {
        self.metrics.grpc_port_http1.inc();
        let due = lock(&self.senders).wrong_port(user_agent, now);
        if let Some(requests) = due {
            tracing::warn!(
                requests,
                user_agent = user_agent.unwrap_or(""),
                http_port,
                "HTTP/1.1 requests on the OTLP/gRPC port, answered 400: an OTLP/HTTP exporter is pointed at the gRPC port; send to the HTTP port, or set OTEL_EXPORTER_OTLP_PROTOCOL=grpc"
            );
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A poisoned lock means a panic mid-update elsewhere; the data is counters
/// that stay usable, so carry on rather than take the daemon down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

mod bodies;
mod ingest;
mod reads;
mod senders;
mod shared;
mod tick;
mod views;

pub use bodies::{BodyHold, NoRoom};
pub use ingest::{Ingested, Sender, ServiceScope, TokenSender};
pub use senders::SendersView;
pub use shared::Found;

#[cfg(test)]
mod props;
