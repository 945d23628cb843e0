//! Reading the ledger: events by filter with a cursor, a release's
//! timeline, the last verdict of releases and the checkpoint; plus the SQL
//! the writer runs for releases and checkpoints. Reads use read-only
//! connections of their own, so they never wait on the writer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::db::{args, Arg, Conn, Connect, DbError, Pg, Row};
use super::event::{Event, Source};
use super::{Ledger, LedgerError, LedgerOptions};
use crate::model::UnixNanos;

/// Events a page holds unless asked for fewer.
pub const DEFAULT_LIMIT: usize = 100;
/// Most events a page holds.
pub const MAX_LIMIT: usize = 1000;
/// Most events a timeline holds (a flapping release's first ones).
pub const MAX_TIMELINE: usize = 10_000;

/// Which events to read. Every field narrows; none means all events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub service: Option<String>,
    pub environment: Option<String>,
    pub deployment_id: Option<String>,
    /// The event type.
    pub kind: Option<String>,
    /// Events at or after this time.
    pub since: Option<UnixNanos>,
    /// Events before this time.
    pub until: Option<UnixNanos>,
    /// The cursor: events recorded after the one with this id.
    pub after_id: Option<i64>,
    /// Page size: [`DEFAULT_LIMIT`] if absent, at most [`MAX_LIMIT`].
    pub limit: Option<usize>,
}

/// An event as recorded, with its row id (the cursor of [`Page`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    #[serde(flatten)]
    pub event: Event,
}

/// One page of events, oldest-recorded first. `next_cursor` is present
/// when more may follow: pass it as [`EventFilter::after_id`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
}

/// The last known verdict of a release, kept after it expires from memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub service: String,
    pub environment: String,
    pub deployment_id: String,
    pub git_sha: Option<String>,
    pub baseline_deployment_id: Option<String>,
    pub baseline_git_sha: Option<String>,
    pub first_seen_ns: UnixNanos,
    pub last_seen_ns: UnixNanos,
    /// `green`, `yellow` or `red`.
    pub verdict: String,
    pub reason: String,
    pub red_since_ns: Option<UnixNanos>,
    /// The full verdict object as the API served it.
    pub verdict_json: String,
}

/// A release and the deployment it was last compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBaseline {
    pub service: String,
    pub environment: String,
    pub deployment_id: String,
    pub baseline_deployment_id: String,
    pub last_seen_ns: UnixNanos,
}

/// A release the ledger recorded red: when, and the reason it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRed {
    pub service: String,
    pub environment: String,
    pub deployment_id: String,
    pub red_since_ns: UnixNanos,
    pub reason: String,
}

impl Ledger {
    /// Events matching `filter`, in the order they were recorded (row id),
    /// oldest first: a client polling with the cursor sees every event once,
    /// back-dated ones included. `since`/`until` filter on the event's `ts`.
    pub fn events(&self, filter: &EventFilter) -> Result<Page, LedgerError> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
        let mut args: Vec<Arg<'_>> = Vec::new();
        let mut narrow = |clause: &str, value| {
            sql.push_str(clause);
            args.push(value);
        };
        if let Some(v) = &filter.service {
            narrow(" AND service = ?", Arg::Text(v));
        }
        if let Some(v) = &filter.environment {
            narrow(" AND environment = ?", Arg::Text(v));
        }
        if let Some(v) = &filter.deployment_id {
            narrow(" AND deployment_id = ?", Arg::Text(v));
        }
        if let Some(v) = &filter.kind {
            narrow(" AND type = ?", Arg::Text(v));
        }
        if let Some(t) = filter.since {
            narrow(" AND ts_ns >= ?", Arg::Int(nanos(t)));
        }
        if let Some(t) = filter.until {
            narrow(" AND ts_ns < ?", Arg::Int(nanos(t)));
        }
        if let Some(id) = filter.after_id {
            narrow(" AND id > ?", Arg::Int(id));
        }
        narrow(" ORDER BY id LIMIT ?", Arg::Int(limit as i64 + 1));
        let mut events: Vec<StoredEvent> = self
            .readers
            .with(|conn| conn.rows(&sql, &args)?.iter().map(stored_event).collect())?;
        let next_cursor = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| e.id)
        } else {
            None
        };
        Ok(Page {
            events,
            next_cursor,
        })
    }

    /// One release's events in time order (then recording order), with the
    /// events of its service that name its deployment id but no environment.
    /// At most [`MAX_TIMELINE`].
    pub fn timeline(
        &self,
        service: &str,
        environment: &str,
        deployment_id: &str,
    ) -> Result<Vec<StoredEvent>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_deployment
                     WHERE deployment_id = ?1 AND service = ?2
                       AND (environment = ?3 OR environment IS NULL)
                     ORDER BY ts_ns, id LIMIT ?4"
                ),
                args![deployment_id, service, environment, MAX_TIMELINE as i64],
            )?
            .iter()
            .map(stored_event)
            .collect()
        })
    }

    /// The last known verdicts of `deployment_id`, optionally narrowed to a
    /// service and environment; most recently seen first.
    pub fn find_release(
        &self,
        deployment_id: &str,
        service: Option<&str>,
        environment: Option<&str>,
    ) -> Result<Vec<ReleaseRecord>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                "SELECT service, environment, deployment_id, git_sha, baseline_deployment_id,
                        baseline_git_sha, first_seen_ns, last_seen_ns, verdict, reason,
                        red_since_ns, verdict_json
                 FROM releases
                 WHERE deployment_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR service = ?2)
                   AND (CAST(?3 AS TEXT) IS NULL OR environment = ?3)
                 ORDER BY last_seen_ns DESC",
                args![deployment_id, service, environment],
            )?
            .iter()
            .map(|r| {
                Ok(ReleaseRecord {
                    service: r.get(0)?,
                    environment: r.get(1)?,
                    deployment_id: r.get(2)?,
                    git_sha: r.get(3)?,
                    baseline_deployment_id: r.get(4)?,
                    baseline_git_sha: r.get(5)?,
                    first_seen_ns: r.get(6)?,
                    last_seen_ns: r.get(7)?,
                    verdict: r.get(8)?,
                    reason: r.get(9)?,
                    red_since_ns: r.get(10)?,
                    verdict_json: r.get(11)?,
                })
            })
            .collect()
        })
    }

    /// Which deployment each release recently seen was compared with: the
    /// evidence of a baseline that survives a restart without its
    /// checkpoint. At most `limit` pairs, most recently seen first.
    pub fn recorded_baselines(
        &self,
        since: UnixNanos,
        limit: usize,
    ) -> Result<Vec<RecordedBaseline>, LedgerError> {
        self.baselines_where("", args![nanos(since), limit as i64])
    }

    /// `recorded_baselines` of one fleet (service, environment).
    pub fn recorded_baselines_of(
        &self,
        service: &str,
        environment: &str,
        since: UnixNanos,
    ) -> Result<Vec<RecordedBaseline>, LedgerError> {
        self.baselines_where(
            "AND service = ?3 AND environment = ?4",
            args![nanos(since), i64::MAX, service, environment],
        )
    }

    fn baselines_where(
        &self,
        fleet: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<RecordedBaseline>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                &format!(
                    "SELECT service, environment, deployment_id, baseline_deployment_id, last_seen_ns
                     FROM releases
                     WHERE baseline_deployment_id IS NOT NULL AND last_seen_ns >= ?1 {fleet}
                     ORDER BY last_seen_ns DESC LIMIT ?2"
                ),
                args,
            )?
            .iter()
            .map(|r| {
                Ok(RecordedBaseline {
                    service: r.get(0)?,
                    environment: r.get(1)?,
                    deployment_id: r.get(2)?,
                    baseline_deployment_id: r.get(3)?,
                    last_seen_ns: r.get(4)?,
                })
            })
            .collect()
        })
    }

    /// The releases recently seen that the ledger recorded red: reds the
    /// checkpoint may not hold yet (it is older than them), which a restart
    /// keeps. At most `limit`, most recently seen first.
    pub fn recorded_reds(
        &self,
        since: UnixNanos,
        limit: usize,
    ) -> Result<Vec<RecordedRed>, LedgerError> {
        self.reds_where("", args![nanos(since), limit as i64])
    }

    /// `recorded_reds` of one fleet (service, environment).
    pub fn recorded_reds_of(
        &self,
        service: &str,
        environment: &str,
        since: UnixNanos,
    ) -> Result<Vec<RecordedRed>, LedgerError> {
        self.reds_where(
            "AND service = ?3 AND environment = ?4",
            args![nanos(since), i64::MAX, service, environment],
        )
    }

    fn reds_where(&self, fleet: &str, args: &[Arg<'_>]) -> Result<Vec<RecordedRed>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                &format!(
                    "SELECT service, environment, deployment_id, red_since_ns, reason
                     FROM releases
                     WHERE red_since_ns IS NOT NULL AND last_seen_ns >= ?1 {fleet}
                     ORDER BY last_seen_ns DESC LIMIT ?2"
                ),
                args,
            )?
            .iter()
            .map(|r| {
                Ok(RecordedRed {
                    service: r.get(0)?,
                    environment: r.get(1)?,
                    deployment_id: r.get(2)?,
                    red_since_ns: r.get(3)?,
                    reason: r.get(4)?,
                })
            })
            .collect()
        })
    }

    /// This replica's whole-daemon checkpoint of before fleet states
    /// (ledger/states.rs) and when it was written, if any: the one saved
    /// under its name, else the unnamed one a ledger from before names
    /// kept. Read only while the replica has no fleet states.
    pub fn load_checkpoint(&self) -> Result<Option<(UnixNanos, Vec<u8>)>, LedgerError> {
        self.readers.with(|conn| {
            conn.row(
                "SELECT written_ns, data FROM checkpoints WHERE replica IN (?1, '')
                 ORDER BY replica = '' LIMIT 1",
                args![&self.replica],
            )?
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .transpose()
        })
    }
}

/// Inserts or updates a release's last verdict. First seen keeps the
/// earliest, last seen the latest, and `red_since` the first red: red is
/// final for a release.
pub(crate) fn upsert_release(conn: &mut Conn, r: &ReleaseRecord) -> Result<(), DbError> {
    conn.exec(
        "INSERT INTO releases (service, environment, deployment_id, git_sha,
             baseline_deployment_id, baseline_git_sha, first_seen_ns, last_seen_ns,
             verdict, reason, red_since_ns, verdict_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (service, environment, deployment_id) DO UPDATE SET
             git_sha = coalesce(excluded.git_sha, releases.git_sha),
             baseline_deployment_id =
                 coalesce(excluded.baseline_deployment_id, releases.baseline_deployment_id),
             baseline_git_sha = coalesce(excluded.baseline_git_sha, releases.baseline_git_sha),
             first_seen_ns = CASE WHEN excluded.first_seen_ns < releases.first_seen_ns
                 THEN excluded.first_seen_ns ELSE releases.first_seen_ns END,
             last_seen_ns = CASE WHEN excluded.last_seen_ns > releases.last_seen_ns
                 THEN excluded.last_seen_ns ELSE releases.last_seen_ns END,
             verdict = excluded.verdict,
             reason = excluded.reason,
             red_since_ns = coalesce(releases.red_since_ns, excluded.red_since_ns),
             verdict_json = excluded.verdict_json",
        args![
            &r.service,
            &r.environment,
            &r.deployment_id,
            &r.git_sha,
            &r.baseline_deployment_id,
            &r.baseline_git_sha,
            nanos(r.first_seen_ns),
            nanos(r.last_seen_ns),
            &r.verdict,
            &r.reason,
            r.red_since_ns.map(nanos),
            &r.verdict_json,
        ],
    )?;
    Ok(())
}

/// The columns [`stored_event`] reads, in order.
pub(crate) const EVENT_COLUMNS: &str =
    "id, event_id, type, ts_ns, service, environment, deployment_id, git_sha, source, metadata";

/// A row of [`EVENT_COLUMNS`].
pub(crate) fn stored_event(r: &Row) -> Result<StoredEvent, DbError> {
    let source: String = r.get(8)?;
    let source = source.parse::<Source>().map_err(|e| DbError::Parse {
        column: 8,
        message: e.to_string(),
    })?;
    let metadata: String = r.get(9)?;
    let metadata = serde_json::from_str(&metadata).map_err(|e| DbError::json(9, e))?;
    Ok(StoredEvent {
        id: r.get(0)?,
        event: Event {
            event_id: r.get(1)?,
            kind: r.get(2)?,
            ts: r.get(3)?,
            service: r.get(4)?,
            environment: r.get(5)?,
            deployment_id: r.get(6)?,
            git_sha: r.get(7)?,
            source,
            metadata,
        },
    })
}

/// The databases' integers are signed; times fit until 2262.
pub(crate) fn nanos(t: UnixNanos) -> i64 {
    t.min(i64::MAX as u64) as i64
}

/// Which database the connections open.
pub(crate) enum Target {
    File(String),
    /// A shared-cache in-memory database, private to this process.
    Memory(String),
    Postgres(Box<Connect>),
}

impl Target {
    pub fn memory() -> Target {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Target::Memory(format!(
            "file:release-verdict-ledger-{}-{}?mode=memory&cache=shared",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        ))
    }

    /// The SQLite database's name (a path or a memory URI).
    pub fn name(&self) -> &str {
        match self {
            Target::File(name) | Target::Memory(name) => name,
            Target::Postgres(_) => "",
        }
    }
}

/// A small pool of read-only connections.
pub(crate) struct Readers {
    target: Target,
    idle: Mutex<Vec<Conn>>,
    keep: usize,
    busy: Duration,
}

impl Readers {
    /// Opens one connection at once, so a target that cannot be read is an
    /// error at open, not at the first query.
    pub fn new(target: Target, options: &LedgerOptions) -> Result<Readers, DbError> {
        let readers = Readers {
            target,
            idle: Mutex::new(Vec::new()),
            keep: options.read_connections.max(1),
            busy: options.busy_timeout,
        };
        let first = readers.open()?;
        readers.idle_list().push(first);
        Ok(readers)
    }

    fn open(&self) -> Result<Conn, DbError> {
        if let Target::Postgres(connect) = &self.target {
            return Ok(Conn::Postgres(Box::new(Pg::open(
                (**connect).clone(),
                true,
            )?)));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(self.target.name(), flags)?;
        conn.busy_timeout(self.busy)?;
        if let Target::Memory(_) = self.target {
            // Shared-cache tables are locked while the writer writes; an
            // in-memory ledger's readers see its writes as they happen.
            conn.pragma_update(None, "read_uncommitted", true)?;
        }
        Ok(Conn::Sqlite(conn))
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, DbError>,
    ) -> Result<T, LedgerError> {
        let pooled = self.idle_list().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&mut conn);
        let mut idle = self.idle_list();
        if idle.len() < self.keep {
            idle.push(conn);
        }
        Ok(result?)
    }
}
