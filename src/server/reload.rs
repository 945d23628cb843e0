//! Files read again while the daemon runs (the TLS certificates, the token
//! files): what they looked like when last read, a look every interval, and
//! the count of reloads by outcome. What a reload builds is the caller's;
//! on an error the caller keeps what is in force.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;

use crate::self_metrics::{ReloadLabels, ReloadResult};

/// What the files looked like when last read: (modified, length) each.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// Files that are read again on change or on demand.
#[derive(Debug)]
pub(super) struct Watched {
    paths: Vec<String>,
    seen: Mutex<Stamp>,
    reloads: Family<ReloadLabels, Counter>,
}

impl Watched {
    /// Stamps the files now, before the caller first reads them, so a
    /// change made while they are read is seen at the next look.
    pub(super) fn new(paths: Vec<String>, reloads: Family<ReloadLabels, Counter>) -> Self {
        let seen = Mutex::new(stamp(&paths));
        Self {
            paths,
            seen,
            reloads,
        }
    }

    /// Whether any file's modification time or length changed since last read.
    pub(super) fn changed(&self) -> bool {
        *self.seen.lock().expect("reload stamp lock") != stamp(&self.paths)
    }

    /// Stamps the files, reads them with `build`, and counts the outcome.
    pub(super) fn reload<T, E>(&self, build: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        *self.seen.lock().expect("reload stamp lock") = stamp(&self.paths);
        let built = build();
        let result = if built.is_ok() {
            ReloadResult::Ok
        } else {
            ReloadResult::Error
        };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        built
    }
}

/// Calls `look` every `interval`, off the async workers (it reads files),
/// until `stop`.
pub(super) async fn every(
    interval: Duration,
    stop: CancellationToken,
    look: impl Fn() + Send + Sync + 'static,
) {
    let look = Arc::new(look);
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {
                let look = look.clone();
                let _ = tokio::task::spawn_blocking(move || look()).await;
            }
        }
    }
}

fn stamp(paths: &[String]) -> Stamp {
    paths
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}
