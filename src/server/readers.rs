//! What the verdict streams (server-sent events in `stream`, gRPC watches
//! in `verdict_grpc`) share so that readers are bounded: the cap on open
//! streams, one snapshot of every release built for all the streams that
//! need one at the same time, and the hold a stream has on its snapshot
//! while sending it, let go of if the client does not take it in time.
//!
//! A stream is pulled by its connection: it makes its next piece only when
//! the transport has room for it, so a client that stops reading queues
//! nothing in the daemon beyond the transport's own buffer. What it could
//! still hold is its snapshot, and `Pending` lets go of that after
//! `server.stream_snapshot_timeout`. Changes come from the app's broadcast
//! (a fixed ring shared by every stream); a stream that lets it overrun is
//! cut off, and the client reconnects for a fresh snapshot.
//!
//! Snapshots are counted while any stream holds one
//! (`release_verdict_stream_snapshot_bytes`), and a new one is built only
//! while they come to less than `server.max_stream_snapshot_bytes`: streams
//! opening while older snapshots are still being sent (or waited on by
//! clients that do not read) wait for one to be let go, so a stream of
//! reconnects cannot pile up one 15 MB snapshot per second.

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::app::App;
use crate::self_metrics::{StreamDrop, StreamDropLabels};

/// At most one snapshot build starts this often: streams that open
/// meanwhile share the next one.
const MIN_BUILD_INTERVAL: Duration = Duration::from_secs(1);

/// The cap on open streams and the counters of all of them.
pub struct Readers {
    app: Arc<App>,
    places: Arc<Semaphore>,
    /// Told whenever a snapshot is let go (see `Shared::room`).
    freed: Arc<Notify>,
}

impl Readers {
    pub fn new(app: Arc<App>) -> Self {
        let places = Arc::new(Semaphore::new(app.config.server.max_streams));
        Self {
            app,
            places,
            freed: Arc::new(Notify::new()),
        }
    }

    /// A place for one more stream, or None (counted) when
    /// `server.max_streams` are open: the caller answers with a refusal
    /// the client retries after `retry_after`.
    pub fn open(&self) -> Option<Ticket> {
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            self.app.metrics.streams_refused.inc();
            return None;
        };
        let open = self.app.metrics.streams_open.clone();
        open.inc();
        Some(Ticket {
            _place: place,
            open,
        })
    }

    /// Why a stream was refused, for the client.
    pub fn refusal(&self) -> String {
        format!(
            "too many verdict streams: {} are open (server.max_streams); retry after {:?}",
            self.app.config.server.max_streams,
            self.retry_after()
        )
    }

    /// What a refused client is told to wait before retrying.
    pub fn retry_after(&self) -> Duration {
        self.app.config.server.overload_retry_after
    }

    /// Counts a stream cut off for falling behind.
    pub fn dropped(&self, reason: StreamDrop) {
        self.dropped_counter(reason).inc();
    }

    fn dropped_counter(&self, reason: StreamDrop) -> Counter {
        self.app
            .metrics
            .streams_dropped
            .get_or_create(&StreamDropLabels { reason })
            .clone()
    }

    /// Holds `snapshot` for a stream sending it, for at most
    /// `server.stream_snapshot_timeout`.
    pub fn hold<T: Send + Sync + 'static>(&self, snapshot: Arc<T>) -> Pending<T> {
        Pending::new(
            snapshot,
            self.app.config.server.stream_snapshot_timeout,
            self.dropped_counter(StreamDrop::Stalled),
        )
    }
}

/// One open stream's place: given back, and the gauge lowered, on drop.
pub struct Ticket {
    _place: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A snapshot as streams hold it: its bytes are counted in
/// `release_verdict_stream_snapshot_bytes` until the last stream lets go.
pub struct Snap<T> {
    value: T,
    bytes: i64,
    held: Gauge,
    freed: Arc<Notify>,
}

impl<T> Deref for Snap<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Snap<T> {
    fn drop(&mut self) {
        self.held.dec_by(self.bytes);
        self.freed.notify_waiters();
    }
}

/// How often a build waiting for room looks again, should a release of
/// room go unnoticed (a notification comes only to those already waiting).
const ROOM_RECHECK: Duration = Duration::from_millis(250);

/// Snapshots of every release built by `build` on the whole-reads thread
/// (off the async workers, one read at a time, niced), one build for all
/// the streams waiting when it starts, and only while the snapshots held
/// come to less than `server.max_stream_snapshot_bytes`. Nothing is kept
/// once the streams are done with it.
pub struct Shared<T> {
    app: Arc<App>,
    build: fn(&App) -> T,
    /// A snapshot's size in bytes, about.
    size: fn(&T) -> usize,
    freed: Arc<Notify>,
    builds: Mutex<Builds<T>>,
    /// Builds one at a time, each at least `MIN_BUILD_INTERVAL` after the
    /// one before (when the last one started).
    turn: tokio::sync::Mutex<Option<Instant>>,
}

struct Builds<T> {
    /// Builds started so far (the last one's number).
    started: u64,
    /// A build is waiting for its turn: it will serve whoever asks now.
    queued: bool,
    /// Who waits, and how many builds had started when they asked.
    waiting: Vec<(u64, oneshot::Sender<Arc<Snap<T>>>)>,
}

impl<T: Send + Sync + 'static> Shared<T> {
    pub fn new(readers: &Readers, build: fn(&App) -> T, size: fn(&T) -> usize) -> Arc<Self> {
        Arc::new(Self {
            app: readers.app.clone(),
            build,
            size,
            freed: readers.freed.clone(),
            builds: Mutex::new(Builds {
                started: 0,
                queued: false,
                waiting: Vec::new(),
            }),
            turn: tokio::sync::Mutex::new(None),
        })
    }

    /// A snapshot whose read of the store began after this call: a stream
    /// subscribed to the changes before calling misses none, whether a
    /// change came before the read or after. None if the build failed.
    pub async fn fresh(self: &Arc<Self>) -> Option<Arc<Snap<T>>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut b = lock(&self.builds);
            let mark = b.started;
            b.waiting.push((mark, tx));
            !std::mem::replace(&mut b.queued, true)
        };
        if start {
            tokio::spawn(self.clone().build_next());
        }
        rx.await.ok()
    }

    async fn build_next(self: Arc<Self>) {
        let mut last = self.turn.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + MIN_BUILD_INTERVAL).await;
        }
        self.room().await;
        *last = Some(Instant::now());
        let number = {
            let mut b = lock(&self.builds);
            b.queued = false;
            b.started += 1;
            b.started
        };
        // The read starts after `started` moved on: whoever asked before
        // gets this build; whoever asks from now on, the next.
        let build = self.build;
        let built = self.app.whole_read(build).await;
        let served: Vec<_> = {
            let mut b = lock(&self.builds);
            let (served, later) = std::mem::take(&mut b.waiting)
                .into_iter()
                .partition(|(mark, _)| *mark < number);
            b.waiting = later;
            served
        };
        // A failed build (a panic, logged) ends its streams: they reconnect.
        let held = self.app.metrics.stream_snapshot_bytes.clone();
        let freed = self.freed.clone();
        let size = self.size;
        let snap = built.map(|value| {
            let bytes = size(&value) as i64;
            held.inc_by(bytes);
            Arc::new(Snap {
                value,
                bytes,
                held,
                freed,
            })
        });
        if let Some(snapshot) = snap {
            for (_, tx) in served {
                let _ = tx.send(snapshot.clone());
            }
        }
    }
}

impl<T> Shared<T> {
    /// Waits until the snapshots held come to less than
    /// `server.max_stream_snapshot_bytes` (at once when none is held).
    async fn room(&self) {
        let max = self.app.config.server.max_stream_snapshot_bytes as i64;
        let held = &self.app.metrics.stream_snapshot_bytes;
        loop {
            let freed = self.freed.notified();
            if held.get() < max {
                return;
            }
            let _ = tokio::time::timeout(ROOM_RECHECK, freed).await;
        }
    }
}

/// A stream's hold on the snapshot it is sending. The stream reads from
/// it piece by piece; if it has not finished by the deadline, the hold is
/// let go (and counted as `stalled`) whether or not the stream is being
/// read, and the stream ends when it is next asked for a piece.
pub struct Pending<T> {
    slot: Arc<Mutex<Option<Arc<T>>>>,
    watchdog: tokio::task::AbortHandle,
}

impl<T: Send + Sync + 'static> Pending<T> {
    fn new(snapshot: Arc<T>, deadline: Duration, stalled: Counter) -> Self {
        let slot = Arc::new(Mutex::new(Some(snapshot)));
        // Weak: once the stream is gone, so is the snapshot.
        let held = Arc::downgrade(&slot);
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let taken = held.upgrade().and_then(|slot| lock(&slot).take());
            if taken.is_some() {
                stalled.inc();
            }
        })
        .abort_handle();
        Self { slot, watchdog }
    }

    /// `f` over the snapshot, or None once it was let go.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        lock(&self.slot).as_deref().map(f)
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

/// The data is a snapshot reference or a list of waiters: usable after a
/// panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
