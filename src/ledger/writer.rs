//! The ledger's writer thread: the only connection that writes. It drains a
//! bounded queue, applies many writes per transaction, enforces "an explicit
//! event wins over an inferred one", holds the size cap after every
//! transaction (`cap`), and runs retention.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cap::{self, Evicted, Scope};
use super::db::{args, Conn, DbError};
use super::event::{Event, Source};
use super::outbox;
use super::query::{self, ReleaseRecord};
use super::states;
use super::{Counters, LedgerError, LedgerOptions, Maintenance, Outcome};
use crate::model::{format_time, UnixNanos};

/// Rows deleted per statement by retention, so the write lock is never held
/// for long.
const DELETE_BATCH: i64 = 5_000;

/// At most one "over its size cap" warning line per this long; the counters
/// count every eviction.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What the writer is asked to do, in queue order.
pub(crate) enum Command {
    Record(Event),
    Release(Box<ReleaseRecord>),
    Posted {
        events: Vec<Event>,
        reply: SyncSender<Result<Vec<Outcome>, LedgerError>>,
    },
    Checkpoint {
        checkpoint: Box<states::Checkpoint>,
        reply: SyncSender<Result<(), LedgerError>>,
    },
    /// A delivery's try, or a sink's state for a release (the notifiers).
    Outbox {
        op: OutboxOp,
        now: UnixNanos,
        reply: SyncSender<Result<(), LedgerError>>,
    },
    Maintain {
        now: UnixNanos,
        reply: SyncSender<Result<Maintenance, LedgerError>>,
    },
    /// Claims the deliveries due for this replica (the notifiers' lanes).
    Claim {
        sink: Option<String>,
        now: UnixNanos,
        limit: usize,
        reply: SyncSender<Result<Vec<outbox::Delivery>, LedgerError>>,
    },
    /// Answered once everything queued before it is committed.
    Flush(SyncSender<()>),
    /// Runs on the writer's connection (tests only: to fill the disk).
    #[cfg(test)]
    Exec(Box<dyn FnOnce(&mut Conn) + Send>),
}

impl Command {
    /// The caller waiting for this command's outcome, if any.
    fn into_reply(self) -> Option<Reply> {
        match self {
            Command::Posted { reply, .. } => Some(Reply::Posted(reply)),
            Command::Checkpoint { reply, .. } | Command::Outbox { reply, .. } => {
                Some(Reply::Checkpoint(reply))
            }
            _ => None,
        }
    }
}

/// What the notifiers write.
pub(crate) enum OutboxOp {
    Settle(i64, outbox::Settle),
    State {
        sink: String,
        release_key: String,
        key: String,
        value: String,
    },
}

/// A caller owed an answer once the transaction holding its writes commits.
enum Reply {
    Posted(SyncSender<Result<Vec<Outcome>, LedgerError>>),
    Checkpoint(SyncSender<Result<(), LedgerError>>),
}

impl Reply {
    /// A checkpoint's outcome list is empty.
    fn send(self, result: Result<Vec<Outcome>, DbError>) {
        let result = result.map_err(LedgerError::Write);
        // A caller that gave up waiting is not an error.
        match self {
            Reply::Posted(reply) => {
                let _ = reply.send(result);
            }
            Reply::Checkpoint(reply) => {
                let _ = reply.send(result.map(drop));
            }
        }
    }
}

pub(crate) struct Writer {
    pub conn: Conn,
    /// The owner of this process's claims: the replica's name and the
    /// process id, so a restarted replica waits for no claim of its own.
    pub claimer: String,
    pub counters: Arc<Counters>,
    pub options: LedgerOptions,
    /// When the cap's warning was last logged, and what was evicted since.
    pub cap_warned: Option<Instant>,
    pub unwarned: Evicted,
}

/// Why a post was not recorded.
enum PostFailure {
    Db(DbError),
    /// Over the cap even after evicting every older posted event.
    Full,
}

impl From<DbError> for PostFailure {
    fn from(e: DbError) -> Self {
        PostFailure::Db(e)
    }
}

impl Writer {
    /// Runs until every sender is gone, then returns having committed all.
    pub fn run(mut self, queue: Receiver<Command>) {
        let mut pending = Vec::with_capacity(self.options.batch_size);
        while let Ok(first) = queue.recv() {
            pending.push(first);
            while pending.len() < self.options.batch_size {
                match queue.try_recv() {
                    Ok(next) => pending.push(next),
                    Err(_) => break,
                }
            }
            self.counters
                .queued
                .fetch_sub(pending.len() as u64, Relaxed);
            self.apply(&mut pending);
        }
        // Stopping: what this replica claimed and did not send goes back.
        if let Err(e) = outbox::release_claims(&mut self.conn, &self.claimer) {
            tracing::warn!(error = %e, "the outbox's claims could not be given back; they lapse");
        }
    }

    /// Writes consecutive data commands in one transaction; a flush or
    /// maintenance first commits what precedes it.
    fn apply(&mut self, commands: &mut Vec<Command>) {
        let mut data = Vec::with_capacity(commands.len());
        for command in commands.drain(..) {
            match command {
                Command::Flush(reply) => {
                    self.write(&mut data);
                    let _ = reply.send(());
                }
                Command::Maintain { now, reply } => {
                    self.write(&mut data);
                    let result = self.maintain(now);
                    if let Err(e) = &result {
                        self.failed(1, e);
                    }
                    let _ = reply.send(result.map_err(LedgerError::Write));
                }
                Command::Claim {
                    sink,
                    now,
                    limit,
                    reply,
                } => {
                    self.write(&mut data);
                    let o = &self.options;
                    let result = outbox::claim(
                        &mut self.conn,
                        &self.claimer,
                        sink.as_deref(),
                        now,
                        limit,
                        o.claim_lease,
                    );
                    if let Err(e) = &result {
                        self.failed(1, e);
                    }
                    let _ = reply.send(result.map_err(LedgerError::Write));
                }
                #[cfg(test)]
                Command::Exec(f) => {
                    self.write(&mut data);
                    f(&mut self.conn);
                }
                other => data.push(other),
            }
        }
        self.write(&mut data);
    }

    /// One transaction for `commands`; replies go out after the commit. A
    /// failed command loses its own writes (`Conn::command`); a
    /// failed commit (or a transaction the database rolled back itself, as
    /// SQLite does on a full disk) loses all.
    fn write(&mut self, commands: &mut Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        let total = commands.len() as u64;
        let mut owed: Vec<(Reply, Result<Vec<Outcome>, DbError>)> = Vec::new();
        let mut failed = Failed::default();
        let mut tally = Tally::default();
        // Posted events evicted by posts making room (counted on commit).
        let mut evicted = Evicted::default();
        let max_bytes = self.options.max_bytes;
        let result = match self.conn.begin() {
            Ok(()) => {
                for command in commands.drain(..) {
                    if let Some(fatal) = &failed.fatal {
                        if let Some(reply) = command.into_reply() {
                            owed.push((reply, Err(fatal.again())));
                        }
                        continue;
                    }
                    let conn = &mut self.conn;
                    let routes = &self.options.routes;
                    match command {
                        Command::Record(event) => {
                            match conn.command(|c| {
                                let outcome = insert_event(c, &event)?;
                                enqueue(c, routes, outcome, &event)?;
                                Ok(outcome)
                            }) {
                                Ok(outcome) => tally.add(outcome),
                                Err(e) => failed.add(1, e),
                            }
                        }
                        Command::Release(record) => {
                            let result = conn.command(|c| query::upsert_release(c, &record));
                            if let Err(e) = result {
                                failed.add(1, e);
                            }
                        }
                        Command::Posted { events, reply } => {
                            let result =
                                insert_atomically(conn, &events, routes, max_bytes, &mut evicted);
                            match result {
                                Ok(outcomes) => {
                                    outcomes.iter().for_each(|o| tally.add(*o));
                                    owed.push((Reply::Posted(reply), Ok(outcomes)));
                                }
                                Err(PostFailure::Db(e)) => {
                                    failed.add(events.len() as u64, e.again());
                                    owed.push((Reply::Posted(reply), Err(e)));
                                }
                                Err(PostFailure::Full) => {
                                    // Nothing of it was written, whatever
                                    // becomes of the transaction.
                                    let n = events.len() as u64;
                                    self.counters.refused.fetch_add(n, Relaxed);
                                    let max_bytes = max_bytes.unwrap_or_default();
                                    let _ = reply.send(Err(LedgerError::Full { max_bytes }));
                                }
                            }
                        }
                        Command::Checkpoint { checkpoint, reply } => {
                            let result = conn
                                .command(|c| states::save(c, &self.options.replica, &checkpoint));
                            if let Err(e) = &result {
                                failed.add(1, e.again());
                            }
                            owed.push((Reply::Checkpoint(reply), result.map(|()| Vec::new())));
                        }
                        Command::Outbox { op, now, reply } => {
                            let result = conn.command(|c| match &op {
                                OutboxOp::Settle(id, outcome) => {
                                    outbox::settle(c, *id, outcome, now)
                                }
                                OutboxOp::State {
                                    sink,
                                    release_key,
                                    key,
                                    value,
                                } => outbox::set_state(c, sink, release_key, key, value),
                            });
                            if let Err(e) = &result {
                                failed.add(1, e.again());
                            }
                            owed.push((Reply::Checkpoint(reply), result.map(|()| Vec::new())));
                        }
                        _ => unreachable!("apply handles control commands"),
                    }
                    if self.conn.transaction_lost() {
                        failed.fatal = failed.first.as_ref().map(DbError::again);
                    }
                }
                match failed.fatal.take() {
                    Some(e) => {
                        let _ = self.conn.rollback();
                        Err(e)
                    }
                    None => self.conn.commit().inspect_err(|_| {
                        let _ = self.conn.rollback();
                    }),
                }
            }
            Err(e) => {
                for command in commands.drain(..) {
                    if let Some(reply) = command.into_reply() {
                        owed.push((reply, Err(e.again())));
                    }
                }
                Err(e)
            }
        };
        match result {
            Ok(()) => {
                tally.count(&self.counters);
                // The cap holds before anyone hears the write is done.
                self.hold_cap(evicted);
                if let Some(first) = &failed.first {
                    self.failed(failed.writes, first);
                } else if self.counters.degraded.swap(false, Relaxed) {
                    tracing::info!("ledger writes succeed again");
                }
                for (reply, result) in owed {
                    reply.send(result);
                }
            }
            Err(e) => {
                self.failed(total, &e);
                for (reply, _) in owed {
                    reply.send(Err(e.again()));
                }
            }
        }
    }

    /// Counts `n` lost writes; the first failure after a success is logged.
    fn failed(&self, n: u64, error: &DbError) {
        self.counters.write_errors.fetch_add(n, Relaxed);
        if !self.counters.degraded.swap(true, Relaxed) {
            tracing::error!(%error, lost = n, "ledger writes are failing; the daemon goes on without them");
        }
    }

    /// Evicts (posted events first) while the database is over its cap,
    /// gives the freed pages back to the file system, and counts and warns
    /// about what was evicted, `earlier` included (by posts making room).
    fn hold_cap(&mut self, earlier: Evicted) {
        let Some(max) = self.options.max_bytes else {
            return;
        };
        let conn = &mut self.conn;
        let result = conn.begin().and_then(|()| {
            let done = (|| {
                let now = cap::evict(conn, max, Scope::All)?;
                if now.total() + earlier.total() > 0 {
                    cap::vacuum(conn)?;
                }
                Ok(now)
            })();
            match done {
                Ok(now) => conn.commit().map(|()| now),
                Err(e) => {
                    let _ = conn.rollback();
                    Err(e)
                }
            }
        });
        match result {
            Ok(mut evicted) => {
                evicted.add(&earlier);
                self.count_evicted(&evicted, max);
            }
            Err(e) => self.failed(1, &e),
        }
    }

    /// Counts evictions; one warning line per [`CAP_WARNING_EVERY`] at most.
    fn count_evicted(&mut self, evicted: &Evicted, max_bytes: u64) {
        if evicted.total() == 0 {
            return;
        }
        self.counters.capped.fetch_add(evicted.total(), Relaxed);
        for (counter, n) in self.counters.capped_by_source.iter().zip(evicted.by_source) {
            counter.fetch_add(n, Relaxed);
        }
        self.unwarned.add(evicted);
        if self
            .cap_warned
            .is_some_and(|at| at.elapsed() < CAP_WARNING_EVERY)
        {
            return;
        }
        let [api, daemon, inferred] = std::mem::take(&mut self.unwarned).by_source;
        self.cap_warned = Some(Instant::now());
        tracing::warn!(
            api,
            daemon,
            inferred,
            max_bytes,
            used_bytes = evicted.used_bytes,
            "ledger is over its size cap: evicted events, posted ones first, oldest received first"
        );
    }

    /// Retention, then the size cap.
    fn maintain(&mut self, now: UnixNanos) -> Result<Maintenance, DbError> {
        let retention = self.options.retention.as_nanos().min(i64::MAX as u128) as i64;
        let cutoff = (now as i64).saturating_sub(retention);
        let mut report = Maintenance::default();
        let conn = &mut self.conn;
        loop {
            let n = delete_oldest(conn, cutoff)?;
            report.expired += n;
            if n < DELETE_BATCH as u64 {
                break;
            }
        }
        conn.exec(
            "DELETE FROM releases WHERE last_seen_ns < ?1",
            args![cutoff],
        )?;
        // Delivered notifications are kept a day, for a look at what went out.
        outbox::forget_delivered(conn, now.saturating_sub(86_400 * 1_000_000_000))?;
        conn.exec(
            "DELETE FROM deliveries WHERE state = 'dead' AND done_ns < ?1",
            args![cutoff],
        )?;
        // A sink's state (a thread's ts) lives as long as its release's
        // record or a delivery of it.
        conn.batch(
            "DELETE FROM sink_state WHERE NOT EXISTS (
                 SELECT 1 FROM deliveries d
                 WHERE d.sink = sink_state.sink AND d.release_key = sink_state.release_key)
             AND NOT EXISTS (
                 SELECT 1 FROM releases r WHERE r.service || char(31) || r.environment
                     || char(31) || r.deployment_id = sink_state.release_key)",
        )?;
        report.used_bytes = cap::used_bytes(conn)?;
        if let Some(max) = self.options.max_bytes {
            let evicted = cap::evict(conn, max, Scope::All)?;
            report.capped = evicted.total();
            report.used_bytes = evicted.used_bytes;
            self.count_evicted(&evicted, max);
        }
        if report.expired > 0 || report.capped > 0 {
            // Gives the freed pages back to the file system.
            cap::vacuum(&mut self.conn)?;
        }
        self.counters.expired.fetch_add(report.expired, Relaxed);
        Ok(report)
    }
}

/// Writes of one transaction that failed, and the first error.
#[derive(Default)]
struct Failed {
    writes: u64,
    first: Option<DbError>,
    /// Set when SQLite rolled the whole transaction back.
    fatal: Option<DbError>,
}

impl Failed {
    fn add(&mut self, writes: u64, error: DbError) {
        self.writes += writes;
        self.first.get_or_insert(error);
    }
}

/// Outcomes of one transaction, counted only once it commits.
#[derive(Default)]
struct Tally {
    written: u64,
    duplicates: u64,
    superseded: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Inserted { superseded, .. } => {
                self.written += 1;
                self.superseded += superseded;
            }
            Outcome::Duplicate { .. } => self.duplicates += 1,
            Outcome::Superseded => self.superseded += 1,
        }
    }

    fn count(&self, counters: &Counters) {
        counters.written.fetch_add(self.written, Relaxed);
        counters.duplicates.fetch_add(self.duplicates, Relaxed);
        counters.superseded.fetch_add(self.superseded, Relaxed);
    }
}

/// The deliveries of an event just inserted.
fn enqueue(
    conn: &mut Conn,
    routes: &[outbox::Route],
    outcome: Outcome,
    event: &Event,
) -> Result<(), DbError> {
    match outcome {
        Outcome::Inserted { id, .. } => outbox::enqueue(conn, routes, id, event),
        _ => Ok(()),
    }
}

/// All of a post or none of it, with the deliveries of what it inserted.
/// Over `max_bytes`, it makes room by evicting older posted events (added
/// to `evicted`), never the daemon's own; when that is not enough it is
/// refused.
fn insert_atomically(
    conn: &mut Conn,
    events: &[Event],
    routes: &[outbox::Route],
    max_bytes: Option<u64>,
    evicted: &mut Evicted,
) -> Result<Vec<Outcome>, PostFailure> {
    let mut full = false;
    let result = conn.isolated("post", |c| {
        let outcomes = events
            .iter()
            .map(|e| {
                let outcome = insert_event(c, e)?;
                enqueue(c, routes, outcome, e)?;
                Ok(outcome)
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        let first_new = outcomes.iter().find_map(|o| match o {
            Outcome::Inserted { id, .. } => Some(*id),
            _ => None,
        });
        if let (Some(max), Some(first_new)) = (max_bytes, first_new) {
            let made_room = cap::evict(c, max, Scope::PostedBefore(first_new))?;
            if made_room.used_bytes > max {
                // Failing rolls the post back to its savepoint.
                full = true;
                return Err(DbError::Again("over the size cap".into()));
            }
            evicted.add(&made_room);
        }
        Ok(outcomes)
    });
    match result {
        Err(_) if full => Err(PostFailure::Full),
        other => Ok(other?),
    }
}

/// Inserts one event. A known `event_id` is a duplicate, not an error. An
/// explicit (`api`) event deletes the inferred ones of the same type and
/// release; an inferred event after an explicit one is not recorded.
pub(crate) fn insert_event(conn: &mut Conn, e: &Event) -> Result<Outcome, DbError> {
    let release_key = e.deployment_id.as_deref();
    if let (Source::Inferred, Some(deployment_id)) = (e.source, release_key) {
        let explicit = conn.row(
            // The planner, without statistics, may prefer the type
            // index: thousands of rows where the release has a few.
            "SELECT 1 FROM events INDEXED BY events_deployment
             WHERE deployment_id = ?1 AND type = ?2 AND service = ?3
             AND environment IS NOT DISTINCT FROM ?4 AND source = 'api' LIMIT 1",
            args![deployment_id, &e.kind, &e.service, &e.environment],
        )?;
        if explicit.is_some() {
            return Ok(Outcome::Superseded);
        }
    }
    let metadata = serde_json::to_string(&e.metadata).map_err(|err| DbError::json(9, err))?;
    let inserted = conn.insert(
        "INSERT INTO events (event_id, type, ts_ns, ts, service, environment,
                             deployment_id, git_sha, source, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (event_id) DO NOTHING",
        args![
            &e.event_id,
            &e.kind,
            e.ts as i64,
            format_time(e.ts).as_str(),
            &e.service,
            &e.environment,
            &e.deployment_id,
            &e.git_sha,
            e.source.as_str(),
            metadata.as_str(),
        ],
    )?;
    let Some(id) = inserted else {
        let id = conn
            .row(
                "SELECT id FROM events WHERE event_id = ?1",
                args![&e.event_id],
            )?
            .map(|r| r.get(0))
            .transpose()?
            .unwrap_or_default();
        return Ok(Outcome::Duplicate { id });
    };
    let mut superseded = 0;
    if let (Source::Api, Some(deployment_id)) = (e.source, release_key) {
        superseded = conn.exec(
            "DELETE FROM events INDEXED BY events_deployment
             WHERE deployment_id = ?1 AND type = ?2 AND service = ?3
             AND environment IS NOT DISTINCT FROM ?4 AND source = 'inferred'",
            args![deployment_id, &e.kind, &e.service, &e.environment],
        )?;
    }
    Ok(Outcome::Inserted { id, superseded })
}

/// Deletes up to [`DELETE_BATCH`] of the events older than `cutoff`; the
/// number deleted.
fn delete_oldest(conn: &mut Conn, cutoff: i64) -> Result<u64, DbError> {
    conn.exec(
        "DELETE FROM events WHERE id IN (
             SELECT id FROM events WHERE ts_ns < ?1 ORDER BY ts_ns LIMIT ?2)",
        args![cutoff, DELETE_BATCH],
    )
}
