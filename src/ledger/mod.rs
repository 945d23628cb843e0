//! The release ledger: every release's story kept durably in SQLite (one
//! daemon) or PostgreSQL (replicas sharing it), the last verdict of each
//! release, each fleet's judge state with the replica judging it, the
//! replicas themselves, and the notifiers' outbox.
//!
//! # Using it
//!
//! ```no_run
//! use release_verdict::ledger::{event::{types, Event, Source}, EventFilter, Ledger, LedgerOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = 1_763_800_000_000_000_000;
//! let ledger = Ledger::open("data/ledger.db", LedgerOptions::default())?;
//! // Ingest path: never blocks; a full queue drops and counts the event.
//! let _ = ledger.try_record(
//!     Event::new(types::RELEASE_STARTED, now, Source::Daemon, "checkout")
//!         .for_release("prod", "checkout-2b5d9af"),
//! );
//! ledger.flush()?; // tests and shutdown: everything sent so far is committed
//! let page = ledger.events(&EventFilter { service: Some("checkout".into()), ..Default::default() })?;
//! # let _ = page; Ok(()) }
//! ```
//!
//! - Writes go through one writer thread fed by a bounded queue
//!   ([`LedgerOptions::queue_capacity`]), many per transaction. Non-blocking:
//!   [`Ledger::try_record`], [`Ledger::try_upsert_release`]. Blocking until
//!   committed (call them from `spawn_blocking` in async code):
//!   [`Ledger::insert_posted`], [`Ledger::save_fleets`],
//!   [`Ledger::maintain`], [`Ledger::flush`]. All are applied in the order
//!   they were sent.
//! - Reads ([`Ledger::events`], [`Ledger::timeline`], [`Ledger::find_release`],
//!   [`Ledger::fleet_state`], [`Ledger::replicas`]) use
//!   read-only connections of their own: in WAL mode they never wait on the
//!   writer. They block for the query's duration.
//! - An explicit event wins over an inferred one: an `api` event deletes the
//!   `inferred` events of the same type and release (service, environment,
//!   deployment id), and an `inferred` event arriving after an `api` one of
//!   the same type and release is not recorded ([`Outcome::Superseded`]).
//! - A repeated `event_id` is not recorded again ([`Outcome::Duplicate`]).
//! - The size cap ([`LedgerOptions::max_bytes`]) holds after every
//!   transaction, before its callers hear back: over it, the writer evicts
//!   posted (`api`) events first, then the daemon's own, each oldest
//!   received first (`cap`), logging a warning line (at most one a
//!   minute). A post may evict only older posted events to make room; when
//!   that is not enough it is refused ([`LedgerError::Full`], counted in
//!   [`Stats::refused`]) rather than cost the daemon's history.
//! - [`Ledger::maintain`] (call it every few minutes with the time) deletes
//!   events older than [`LedgerOptions::retention`] and holds the cap too.
//! - A write that fails later (disk full, file gone) never panics: it is
//!   counted in [`Stats::write_errors`] and [`Ledger::is_degraded`] is true
//!   until a write succeeds again. [`Ledger::stats`] reads the counters for
//!   the daemon's self metrics.
//!
//! Files: [`event`] (the record and posted-body validation), `db` (the two
//! databases behind one connection type), `schema` (migrations), `writer`
//! (the thread), `cap` (the size cap's eviction), [`query`] (reads,
//! releases), [`states`] (each fleet's judge state and the replicas
//! sharing the ledger), [`outbox`] (deliveries and their claims).

mod cap;
mod db;
mod delivery;
pub mod event;
pub mod export;
pub mod outbox;
pub mod query;
mod schema;
pub mod states;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use db::{Conn, Connect, Pg};
pub use db::{DbError, PostgresOptions};
use serde::Serialize;

use crate::model::UnixNanos;
pub use delivery::DoraQuery;
use event::{Event, Source};
pub use query::{EventFilter, Page, RecordedBaseline, RecordedRed, ReleaseRecord, StoredEvent};
use writer::{Command, OutboxOp, Writer};

/// The path that keeps the ledger in memory only.
pub const MEMORY: &str = ":memory:";

/// How the ledger is run. `Default` suits the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerOptions {
    /// Writes waiting for the writer; past it `try_record` drops.
    pub queue_capacity: usize,
    /// Most writes applied in one transaction.
    pub batch_size: usize,
    /// Events older than this are deleted by [`Ledger::maintain`].
    pub retention: Duration,
    /// The database's size cap in bytes, held as the writer writes.
    pub max_bytes: Option<u64>,
    /// How long a statement waits for another process's lock.
    pub busy_timeout: Duration,
    /// Idle read connections kept open.
    pub read_connections: usize,
    /// Which events go to which notifier: each match is a delivery in the
    /// outbox, written with the event.
    pub routes: Vec<outbox::Route>,
    /// How to reach PostgreSQL beyond its URL (a password, a private CA).
    pub postgres: PostgresOptions,
    /// This daemon's name among replicas sharing the ledger, stable across
    /// its restarts: its checkpoint is saved under it, and its claims on
    /// deliveries are made under it (with the process id). The host name
    /// by default.
    pub replica: String,
    /// How long a claimed delivery is this replica's: past it (a replica
    /// that died) another sends it.
    pub claim_lease: Duration,
}

/// The host name: a StatefulSet pod's is stable across its restarts.
pub fn default_replica() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "release-verdict".into())
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            queue_capacity: 16_384,
            batch_size: 1_024,
            retention: Duration::from_secs(400 * 86_400),
            max_bytes: None,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            routes: Vec::new(),
            postgres: PostgresOptions {
                connect_timeout: Duration::from_secs(5),
                ..PostgresOptions::default()
            },
            replica: default_replica(),
            claim_lease: Duration::from_secs(60),
        }
    }
}

/// Why the ledger could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot create the ledger's directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the ledger {path} is not a SQLite database or is corrupt ({source}); move it aside and a new one is created")]
    Corrupt {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the ledger {path} cannot be written ({source}); check the file's and directory's permissions and free space")]
    Unwritable {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the ledger {path} was written by a newer release-verdict (schema version {found}); upgrade")]
    TooNew { path: String, found: i64 },
    #[error("cannot open the ledger {path}: {source}")]
    Open { path: String, source: DbError },
    /// PostgreSQL could not be reached or refused the daemon: the URL, the
    /// password, TLS, or the server.
    #[error("cannot reach the ledger's PostgreSQL database ({url}): {source}")]
    Connect { url: String, source: DbError },
    #[error("the ledger's PostgreSQL settings: {0}")]
    Settings(String),
    #[error("ledger write failed: {0}")]
    Write(DbError),
    #[error("ledger query failed: {0}")]
    Query(#[from] DbError),
    #[error("the ledger's writer has stopped")]
    Closed,
    /// A post that would take the ledger past its cap even after evicting
    /// every older posted event: the daemon's own history is not evicted
    /// for it.
    #[error("the ledger is at its size cap ({max_bytes} bytes, [ledger] max_bytes) and room for posted events is made only by evicting older posted events, never the daemon's own history; the post was not recorded")]
    Full { max_bytes: u64 },
}

/// The write queue is full: the write was dropped (and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ledger's write queue is full; the write was dropped")]
pub struct Full;

/// What became of one event sent to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Recorded as row `id`; `superseded` inferred events it replaced.
    Inserted {
        id: i64,
        #[serde(skip_serializing_if = "is_zero")]
        superseded: u64,
    },
    /// Its `event_id` was already recorded, as row `id`.
    Duplicate { id: i64 },
    /// An inferred event not recorded: an explicit one already says it.
    Superseded,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one [`Ledger::maintain`] run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Maintenance {
    /// Events older than the retention.
    pub expired: u64,
    /// Oldest events deleted to get under the size cap.
    pub capped: u64,
    /// Bytes of database pages in use afterwards.
    pub used_bytes: u64,
}

/// The writer's counters, shared with the handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    duplicates: AtomicU64,
    superseded: AtomicU64,
    expired: AtomicU64,
    capped: AtomicU64,
    /// Indexed by `cap::index`.
    capped_by_source: [AtomicU64; 3],
    refused: AtomicU64,
    queued: AtomicU64,
    degraded: AtomicBool,
}

/// A snapshot of the ledger's counters (totals since open) for self metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events committed.
    pub written: u64,
    /// Writes dropped because the queue was full.
    pub dropped: u64,
    /// Writes lost to database errors.
    pub write_errors: u64,
    /// Events not recorded again because their `event_id` was known.
    pub duplicates: u64,
    /// Inferred events replaced by or refused for an explicit one.
    pub superseded: u64,
    /// Events deleted by retention.
    pub expired: u64,
    /// Events deleted by the size cap.
    pub capped: u64,
    /// Of `capped`: posted (`api`) events, the daemon's own, inferred ones.
    pub capped_api: u64,
    pub capped_daemon: u64,
    pub capped_inferred: u64,
    /// Posted events refused because the ledger was at its cap.
    pub refused: u64,
    /// Writes waiting in the queue.
    pub queued: u64,
    /// The last write failed.
    pub degraded: bool,
}

/// The ledger: a handle to the writer thread and the read connections.
/// `Send + Sync`; share it in an `Arc`. Dropping it commits what is queued.
pub struct Ledger {
    path: String,
    /// The name its checkpoint is saved and read under.
    replica: String,
    queue: Option<SyncSender<Command>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    readers: query::Readers,
}

impl Ledger {
    /// Opens (creating it and its directory if need be) the ledger at
    /// `path`, or a private in-memory one for [`MEMORY`], or the PostgreSQL
    /// database a `postgres://` URL names, and migrates its schema. A
    /// corrupt, unwritable, unreachable or too new database is a clear
    /// error. The size cap applies to SQLite only: PostgreSQL's storage is
    /// its operator's, and retention holds there too.
    ///
    /// With PostgreSQL, call it (and the ledger's other blocking methods)
    /// off the async runtime's threads: its client blocks.
    pub fn open(path: &str, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        if is_postgres(path) {
            return Ledger::open_postgres(path, options);
        }
        let target = if path == MEMORY {
            query::Target::memory()
        } else {
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
            }
            query::Target::File(path.to_string())
        };
        let opened = |e| open_error(path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(target.name(), flags).map_err(opened)?;
        schema::configure_writer(&conn, options.busy_timeout).map_err(opened)?;
        let mut conn = Conn::Sqlite(conn);
        migrate(&mut conn, path, |e| match e {
            DbError::Sqlite(e) => open_error(path, e),
            other => LedgerError::Open {
                path: path.to_string(),
                source: other,
            },
        })?;
        let readers = query::Readers::new(target, &options).map_err(|e| match e {
            DbError::Sqlite(e) => open_error(path, e),
            other => LedgerError::Query(other),
        })?;
        Ledger::start(path, conn, readers, options)
    }

    fn open_postgres(url: &str, mut options: LedgerOptions) -> Result<Ledger, LedgerError> {
        let shown = redact(url);
        let connect = Connect::new(url, &options.postgres).map_err(LedgerError::Settings)?;
        let unreachable = |source| LedgerError::Connect {
            url: shown.clone(),
            source,
        };
        let mut conn = Conn::Postgres(Box::new(
            Pg::open(connect.clone(), false).map_err(unreachable)?,
        ));
        migrate(&mut conn, &shown, unreachable)?;
        let readers = query::Readers::new(query::Target::Postgres(Box::new(connect)), &options)
            .map_err(unreachable)?;
        if options.max_bytes.take().is_some() {
            tracing::debug!("the ledger's size cap applies to SQLite, not PostgreSQL");
        }
        Ledger::start(&shown, conn, readers, options)
    }

    /// Starts the writer thread.
    fn start(
        path: &str,
        conn: Conn,
        readers: query::Readers,
        options: LedgerOptions,
    ) -> Result<Ledger, LedgerError> {
        let counters = Arc::new(Counters::default());
        let (queue, receiver) = sync_channel(options.queue_capacity.max(1));
        let replica = options.replica.clone();
        let writer = Writer {
            conn,
            claimer: format!("{replica}-{}", std::process::id()),
            counters: counters.clone(),
            options,
            cap_warned: None,
            unwarned: cap::Evicted::default(),
        };
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| LedgerError::Open {
                path: path.to_string(),
                source: DbError::Again(format!("cannot start the writer thread: {e}")),
            })?;
        Ok(Ledger {
            path: path.to_string(),
            replica,
            queue: Some(queue),
            writer: Some(writer),
            counters,
            readers,
        })
    }

    /// Whether replicas may share it (PostgreSQL; SQLite is one daemon's).
    pub fn is_shared(&self) -> bool {
        is_postgres(&self.path)
    }

    /// This replica's name among those sharing the ledger.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The path it was opened with (a PostgreSQL URL without its password).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Queues an event (the daemon's own and inferred ones); never blocks.
    pub fn try_record(&self, event: Event) -> Result<(), Full> {
        self.try_send(Command::Record(event))
    }

    /// Queues the last known verdict of a release; never blocks.
    pub fn try_upsert_release(&self, record: ReleaseRecord) -> Result<(), Full> {
        self.try_send(Command::Release(Box::new(record)))
    }

    /// Records posted events, all or none, and returns once committed: one
    /// outcome per event, in order. Blocks while the queue is full.
    pub fn insert_posted(&self, events: Vec<Event>) -> Result<Vec<Outcome>, LedgerError> {
        self.call(|reply| Command::Posted { events, reply })?
    }

    /// Records what became of a delivery's try; returns once committed.
    pub fn settle_delivery(
        &self,
        id: i64,
        outcome: outbox::Settle,
        now: UnixNanos,
    ) -> Result<(), LedgerError> {
        self.call(|reply| Command::Outbox {
            op: OutboxOp::Settle(id, outcome),
            now,
            reply,
        })?
    }

    /// Sets one value of a sink's state for a release; returns once
    /// committed.
    pub fn set_sink_state(
        &self,
        sink: &str,
        release_key: &str,
        key: &str,
        value: &str,
    ) -> Result<(), LedgerError> {
        self.call(|reply| Command::Outbox {
            op: OutboxOp::State {
                sink: sink.into(),
                release_key: release_key.into(),
                key: key.into(),
                value: value.into(),
            },
            now: 0,
            reply,
        })?
    }

    /// Writes this replica's checkpoint (its fleets' states, its
    /// heartbeat; see [`states`]); returns once committed.
    pub fn save_fleets(&self, checkpoint: states::Checkpoint) -> Result<(), LedgerError> {
        self.call(|reply| Command::Checkpoint {
            checkpoint: Box::new(checkpoint),
            reply,
        })?
    }

    /// Applies retention and the size cap as of `now`.
    pub fn maintain(&self, now: UnixNanos) -> Result<Maintenance, LedgerError> {
        self.call(|reply| Command::Maintain { now, reply })?
    }

    /// Claims up to `limit` of `sink`'s deliveries due at `now` for this
    /// replica until its lease ends: each sink and release's oldest
    /// pending one, never one another live replica holds. What its lane
    /// sends next; blocks until claimed.
    pub fn claim_deliveries_of(
        &self,
        sink: &str,
        now: UnixNanos,
        limit: usize,
    ) -> Result<Vec<outbox::Delivery>, LedgerError> {
        let sink = Some(sink.to_string());
        self.call(|reply| Command::Claim {
            sink,
            now,
            limit,
            reply,
        })?
    }

    /// Returns once everything sent before it is committed (or failed).
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.call(Command::Flush)
    }

    /// The counters, for self metrics.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            written: c.written.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
            duplicates: c.duplicates.load(Relaxed),
            superseded: c.superseded.load(Relaxed),
            expired: c.expired.load(Relaxed),
            capped: c.capped.load(Relaxed),
            capped_api: c.capped_by_source[cap::index(Source::Api)].load(Relaxed),
            capped_daemon: c.capped_by_source[cap::index(Source::Daemon)].load(Relaxed),
            capped_inferred: c.capped_by_source[cap::index(Source::Inferred)].load(Relaxed),
            refused: c.refused.load(Relaxed),
            queued: c.queued.load(Relaxed),
            degraded: c.degraded.load(Relaxed),
        }
    }

    /// Whether the last write failed: the daemon goes on in memory.
    pub fn is_degraded(&self) -> bool {
        self.counters.degraded.load(Relaxed)
    }

    /// Commits what is queued and stops the writer.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the ledger's writer thread panicked");
            }
        }
    }

    fn try_send(&self, command: Command) -> Result<(), Full> {
        let queue = self.queue.as_ref().ok_or(Full)?;
        self.counters.queued.fetch_add(1, Relaxed);
        match queue.try_send(command) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.counters.queued.fetch_sub(1, Relaxed);
                self.counters.dropped.fetch_add(1, Relaxed);
                if let TrySendError::Disconnected(_) = e {
                    self.counters.degraded.store(true, Relaxed);
                }
                Err(Full)
            }
        }
    }

    /// Sends a command (waiting for room) and waits for its answer.
    fn call<T>(&self, command: impl FnOnce(SyncSender<T>) -> Command) -> Result<T, LedgerError> {
        let queue = self.queue.as_ref().ok_or(LedgerError::Closed)?;
        let (reply, answer) = sync_channel(1);
        self.counters.queued.fetch_add(1, Relaxed);
        if queue.send(command(reply)).is_err() {
            self.counters.queued.fetch_sub(1, Relaxed);
            return Err(LedgerError::Closed);
        }
        answer.recv().map_err(|_| LedgerError::Closed)
    }

    #[cfg(test)]
    fn exec(&self, f: impl FnOnce(&mut Conn) + Send + 'static) {
        let queue = self.queue.as_ref().unwrap();
        self.counters.queued.fetch_add(1, Relaxed);
        queue.send(Command::Exec(Box::new(f))).unwrap();
        self.flush().unwrap();
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the ledger's location is a PostgreSQL URL.
pub fn is_postgres(path: &str) -> bool {
    path.starts_with("postgres://") || path.starts_with("postgresql://")
}

/// A URL fit for logs and errors: a password in it is replaced.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{tail}")
        }
        _ => url.to_string(),
    }
}

/// Migrates the schema, naming errors as `error` does.
fn migrate(
    conn: &mut Conn,
    path: &str,
    error: impl Fn(DbError) -> LedgerError,
) -> Result<(), LedgerError> {
    schema::migrate(conn).map_err(|e| match e {
        schema::SchemaError::TooNew { found } => LedgerError::TooNew {
            path: path.to_string(),
            found,
        },
        schema::SchemaError::Db(e) => error(e),
    })
}

/// Classifies an error met while opening, by SQLite's code.
fn open_error(path: &str, source: rusqlite::Error) -> LedgerError {
    let path = path.to_string();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            LedgerError::Corrupt { path, source }
        }
        Some(
            ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure,
        ) => LedgerError::Unwritable { path, source },
        _ => LedgerError::Open {
            path,
            source: source.into(),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests;
