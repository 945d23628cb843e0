//! Reads of every release (listings, scrapes) on their own thread, one at
//! a time and at a lower CPU priority than ingest.
//!
//! Each costs up to 0.2 s of CPU at 10,000 releases. On the async workers
//! they would hold up the exports queued behind them; side by side they
//! would take every core. On one thread, niced, they queue, and on a busy
//! machine the scheduler gives exports (and the judge) the CPU first while
//! readers still get what is left.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::OnceLock;

/// How much lower than the rest of the daemon the reads thread runs
/// (Linux nice levels: 10 gets about a tenth of a core beside a busy one).
pub const READS_NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The reads thread, started on the first read. It ends once its owner
/// is dropped and the queued reads are done.
#[derive(Default)]
pub struct Reads {
    jobs: OnceLock<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads")
            .field("started", &self.jobs.get().is_some())
            .finish()
    }
}

impl Reads {
    /// Runs `read` on the reads thread after the reads queued before it;
    /// None if it panicked or the thread could not be started.
    pub async fn run<R: Send + 'static>(
        &self,
        read: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The panic is reported by the hook; the caller answers 500.
            let _ = tx.send(catch_unwind(AssertUnwindSafe(read)).ok());
        });
        self.sender()?.send(job).ok()?;
        rx.await.ok().flatten()
    }

    fn sender(&self) -> Option<&mpsc::Sender<Job>> {
        if let Some(jobs) = self.jobs.get() {
            return Some(jobs);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("whole-reads".into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    job();
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the thread for listings and scrapes");
            return None;
        }
        // Another caller may have started one first: then this one's
        // sender is dropped here and its thread ends at once.
        let _ = self.jobs.set(tx);
        self.jobs.get()
    }
}

/// Lowers the calling thread's priority by `READS_NICENESS` (on Linux a
/// thread has its own nice level). Failing that, reads run at the daemon's
/// priority, which is only slower for exports on a saturated machine.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(Some(tid), current + READS_NICENESS) {
            tracing::debug!(error = %e, "cannot lower the priority of the reads thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_in_order_and_a_panic_is_none() {
        let reads = Reads::default();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let runs: Vec<_> = (0..3)
            .map(|i| {
                let order = order.clone();
                reads.run(move || {
                    order.lock().unwrap().push(i);
                    i * 10
                })
            })
            .collect();
        let mut got = Vec::new();
        for r in runs {
            got.push(r.await);
        }
        assert_eq!(got, [Some(0), Some(10), Some(20)]);
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(reads.run(|| -> u8 { panic!("a bad read") }).await, None);
        assert_eq!(reads.run(|| 7).await, Some(7), "the thread goes on");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_reads_thread_is_niced() {
        let reads = Reads::default();
        let mine = rustix::process::getpriority_process(None).unwrap();
        let theirs = reads
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap())
            .await
            .unwrap();
        assert_eq!(theirs, (mine + READS_NICENESS).min(19));
    }
}
