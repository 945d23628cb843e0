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

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
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
}

impl Readers {
    pub fn new(app: Arc<App>) -> Self {
        let places = Arc::new(Semaphore::new(app.config.server.max_streams));
        Self { app, places }
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

/// Snapshots of every release built by `build` on the whole-reads thread
/// (off the async workers, one read at a time, niced), one build for all
/// the streams waiting when it starts. Nothing is kept once the streams
/// are done with it.
pub struct Shared<T> {
    app: Arc<App>,
    build: fn(&App) -> T,
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
    waiting: Vec<(u64, oneshot::Sender<Arc<T>>)>,
}

impl<T: Send + Sync + 'static> Shared<T> {
    pub fn new(app: Arc<App>, build: fn(&App) -> T) -> Arc<Self> {
        Arc::new(Self {
            app,
            build,
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
    pub async fn fresh(self: &Arc<Self>) -> Option<Arc<T>> {
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
        if let Some(snapshot) = built.map(Arc::new) {
            for (_, tx) in served {
                let _ = tx.send(snapshot.clone());
            }
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
