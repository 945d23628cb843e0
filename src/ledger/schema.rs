//! The ledger's schema, for SQLite and PostgreSQL: SQLite's connection
//! settings, and migrations versioned in code (SQLite's `PRAGMA
//! user_version`, PostgreSQL's `schema_version` table), applied in one
//! transaction at open.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::db::{args, Conn, DbError};

/// Migration `i` takes a database from version `i` to `i + 1`. Append only:
/// a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: events, the last verdict of each release, the judge's checkpoint.
    "CREATE TABLE events (
         -- AUTOINCREMENT: ids never repeat, so a reader paging with
         -- after_id never misses an event, even after deletions.
         id            INTEGER PRIMARY KEY AUTOINCREMENT,
         event_id      TEXT UNIQUE,
         type          TEXT NOT NULL,
         ts_ns         INTEGER NOT NULL,
         ts            TEXT NOT NULL,
         service       TEXT NOT NULL,
         environment   TEXT,
         deployment_id TEXT,
         git_sha       TEXT,
         source        TEXT NOT NULL CHECK (source IN ('daemon', 'api', 'inferred')),
         metadata      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
     );
     CREATE INDEX events_service_environment_ts ON events (service, environment, ts_ns);
     CREATE INDEX events_deployment ON events (deployment_id);
     CREATE INDEX events_type_ts ON events (type, ts_ns);
     CREATE INDEX events_ts ON events (ts_ns);

     CREATE TABLE releases (
         service                TEXT NOT NULL,
         environment            TEXT NOT NULL,
         deployment_id          TEXT NOT NULL,
         git_sha                TEXT,
         baseline_deployment_id TEXT,
         baseline_git_sha       TEXT,
         first_seen_ns          INTEGER NOT NULL,
         last_seen_ns           INTEGER NOT NULL,
         verdict                TEXT NOT NULL,
         reason                 TEXT NOT NULL,
         red_since_ns           INTEGER,
         verdict_json           TEXT NOT NULL,
         PRIMARY KEY (service, environment, deployment_id)
     ) WITHOUT ROWID;
     CREATE INDEX releases_deployment ON releases (deployment_id);

     CREATE TABLE checkpoint (
         id         INTEGER PRIMARY KEY CHECK (id = 1),
         written_ns INTEGER NOT NULL,
         data       BLOB NOT NULL
     );",
    // The notifiers' outbox (ledger/outbox.rs): each event × matching sink.
    "CREATE TABLE deliveries (
         id           INTEGER PRIMARY KEY AUTOINCREMENT,
         event_row    INTEGER NOT NULL,
         sink         TEXT NOT NULL,
         release_key  TEXT NOT NULL,
         delivery_key TEXT NOT NULL UNIQUE,
         -- A copy: retention and explicit-beats-inferred may delete the event.
         event_json   TEXT NOT NULL,
         state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
         attempts     INTEGER NOT NULL,
         next_at_ns   INTEGER NOT NULL,
         last_error   TEXT,
         created_ns   INTEGER NOT NULL,
         done_ns      INTEGER
     );
     CREATE INDEX deliveries_head ON deliveries (state, sink, release_key, id);
     CREATE TABLE sink_state (
         sink        TEXT NOT NULL,
         release_key TEXT NOT NULL,
         key         TEXT NOT NULL,
         value       TEXT NOT NULL,
         PRIMARY KEY (sink, release_key, key)
     ) WITHOUT ROWID;",
    // The size cap evicts posted events first, oldest received (row id)
    // first (ledger/cap.rs): this index is (source, id) in that order.
    "CREATE INDEX events_source ON events (source);",
    // A delivery is claimed by the replica sending it, until its lease
    // ends (ledger/outbox.rs): replicas sharing a ledger send it once.
    "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
     ALTER TABLE deliveries ADD COLUMN claimed_until_ns INTEGER;",
    // A checkpoint per replica sharing the ledger, by its stable name; the
    // one checkpoint before it becomes the unnamed one, which a replica
    // without its own restores.
    "CREATE TABLE checkpoints (
         replica    TEXT PRIMARY KEY,
         written_ns INTEGER NOT NULL,
         data       BLOB NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO checkpoints (replica, written_ns, data)
         SELECT '', written_ns, data FROM checkpoint;
     DROP TABLE checkpoint;",
    // The judge's state a fleet (service, environment) at a time, with the
    // replica judging it: a replica that starts receiving a service takes
    // its state from here (ledger/states.rs). And the replicas sharing the
    // ledger, with the URL their reads are forwarded to.
    "CREATE TABLE fleet_states (
         service      TEXT NOT NULL,
         environment  TEXT NOT NULL,
         replica      TEXT NOT NULL,
         written_ns   INTEGER NOT NULL,
         last_seen_ns INTEGER NOT NULL,
         data         BLOB NOT NULL,
         PRIMARY KEY (service, environment)
     ) WITHOUT ROWID;
     CREATE INDEX fleet_states_replica ON fleet_states (replica);
     CREATE TABLE replicas (
         name         TEXT PRIMARY KEY,
         url          TEXT NOT NULL,
         started_ns   INTEGER NOT NULL,
         heartbeat_ns INTEGER NOT NULL
     ) WITHOUT ROWID;",
];

/// The same migrations in PostgreSQL's spelling: one version numbering for
/// both databases, migration `i` of each doing the same.
const POSTGRES_MIGRATIONS: &[&str] = &[
    "CREATE TABLE events (
         -- An identity, never reused: a reader paging with after_id never
         -- misses an event, even after deletions.
         id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         event_id      TEXT UNIQUE,
         type          TEXT NOT NULL,
         ts_ns         BIGINT NOT NULL,
         ts            TEXT NOT NULL,
         service       TEXT NOT NULL,
         environment   TEXT,
         deployment_id TEXT,
         git_sha       TEXT,
         source        TEXT NOT NULL CHECK (source IN ('daemon', 'api', 'inferred')),
         metadata      TEXT NOT NULL DEFAULT '{}' CHECK (metadata::jsonb IS NOT NULL)
     );
     CREATE INDEX events_service_environment_ts ON events (service, environment, ts_ns);
     CREATE INDEX events_deployment ON events (deployment_id);
     CREATE INDEX events_type_ts ON events (type, ts_ns);
     CREATE INDEX events_ts ON events (ts_ns);

     CREATE TABLE releases (
         service                TEXT NOT NULL,
         environment            TEXT NOT NULL,
         deployment_id          TEXT NOT NULL,
         git_sha                TEXT,
         baseline_deployment_id TEXT,
         baseline_git_sha       TEXT,
         first_seen_ns          BIGINT NOT NULL,
         last_seen_ns           BIGINT NOT NULL,
         verdict                TEXT NOT NULL,
         reason                 TEXT NOT NULL,
         red_since_ns           BIGINT,
         verdict_json           TEXT NOT NULL,
         PRIMARY KEY (service, environment, deployment_id)
     );
     CREATE INDEX releases_deployment ON releases (deployment_id);

     CREATE TABLE checkpoint (
         id         BIGINT PRIMARY KEY CHECK (id = 1),
         written_ns BIGINT NOT NULL,
         data       BYTEA NOT NULL
     );",
    "CREATE TABLE deliveries (
         id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         event_row    BIGINT NOT NULL,
         sink         TEXT NOT NULL,
         release_key  TEXT NOT NULL,
         delivery_key TEXT NOT NULL UNIQUE,
         event_json   TEXT NOT NULL,
         state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
         attempts     BIGINT NOT NULL,
         next_at_ns   BIGINT NOT NULL,
         last_error   TEXT,
         created_ns   BIGINT NOT NULL,
         done_ns      BIGINT
     );
     CREATE INDEX deliveries_head ON deliveries (state, sink, release_key, id);
     CREATE TABLE sink_state (
         sink        TEXT NOT NULL,
         release_key TEXT NOT NULL,
         key         TEXT NOT NULL,
         value       TEXT NOT NULL,
         PRIMARY KEY (sink, release_key, key)
     );",
    "CREATE INDEX events_source ON events (source);",
    "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT, ADD COLUMN claimed_until_ns BIGINT;",
    "CREATE TABLE checkpoints (
         replica    TEXT PRIMARY KEY,
         written_ns BIGINT NOT NULL,
         data       BYTEA NOT NULL
     );
     INSERT INTO checkpoints (replica, written_ns, data)
         SELECT '', written_ns, data FROM checkpoint;
     DROP TABLE checkpoint;",
    "CREATE TABLE fleet_states (
         service      TEXT NOT NULL,
         environment  TEXT NOT NULL,
         replica      TEXT NOT NULL,
         written_ns   BIGINT NOT NULL,
         last_seen_ns BIGINT NOT NULL,
         data         BYTEA NOT NULL,
         PRIMARY KEY (service, environment)
     );
     CREATE INDEX fleet_states_replica ON fleet_states (replica);
     CREATE TABLE replicas (
         name         TEXT PRIMARY KEY,
         url          TEXT NOT NULL,
         started_ns   BIGINT NOT NULL,
         heartbeat_ns BIGINT NOT NULL
     );",
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Held while PostgreSQL's schema migrates: daemons starting together
/// migrate one after the other (an arbitrary, fixed key).
const MIGRATION_LOCK: i64 = 0x7265_6c76_6572_6431;

/// The largest the write-ahead log is left between checkpoints.
const WAL_LIMIT_BYTES: i64 = 32 << 20;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "schema version {found} is newer than this build's {VERSION}; upgrade release-verdict"
    )]
    TooNew { found: i64 },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(e: rusqlite::Error) -> Self {
        SchemaError::Db(e.into())
    }
}

/// Settings of the writing connection: WAL so readers never wait on the
/// writer, `synchronous = NORMAL` (durable at checkpoints; a power cut may
/// lose the last commits, never corrupt), and a busy timeout for other
/// processes (the `ledger export` command, a user's sqlite3 shell).
pub fn configure_writer(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if tables == 0 {
        // Must precede the first table and the switch to WAL: lets
        // `maintain` give freed pages back to the file system, so the size
        // cap shrinks the file.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    // An in-memory database answers "memory": there is no file to log.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
    Ok(())
}

/// Brings the schema to [`VERSION`]. Safe when several processes open the
/// same database at once: the version is read again under a lock (SQLite's
/// write lock, PostgreSQL's advisory lock).
pub fn migrate(conn: &mut Conn) -> Result<(), SchemaError> {
    match conn {
        Conn::Sqlite(c) => migrate_sqlite(c),
        Conn::Postgres(_) => migrate_postgres(conn),
    }
}

fn migrate_sqlite(conn: &mut Connection) -> Result<(), SchemaError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Err(SchemaError::TooNew { found });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tracing::info!(version = from + 1, "ledger schema migrated");
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

fn migrate_postgres(conn: &mut Conn) -> Result<(), SchemaError> {
    conn.begin()?;
    let result = (|| {
        conn.exec("SELECT pg_advisory_xact_lock(?1)", args![MIGRATION_LOCK])?;
        conn.batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 one     BIGINT PRIMARY KEY DEFAULT 1 CHECK (one = 1),
                 version BIGINT NOT NULL)",
        )?;
        let found = match conn.row("SELECT version FROM schema_version", &[])? {
            Some(row) => row.get::<i64>(0)?,
            None => 0,
        };
        if found > VERSION {
            return Err(SchemaError::TooNew { found });
        }
        for (from, sql) in POSTGRES_MIGRATIONS.iter().enumerate().skip(found as usize) {
            conn.batch(sql)?;
            tracing::info!(version = from + 1, "ledger schema migrated (PostgreSQL)");
        }
        conn.exec(
            "INSERT INTO schema_version (one, version) VALUES (1, ?1)
             ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            args![VERSION],
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(conn.commit()?),
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn migrates_once_and_reopens() {
        let path = crate::ledger::tests::temp_path("schema");
        {
            let mut conn = Connection::open(&path).unwrap();
            configure_writer(&conn, Duration::from_secs(1)).unwrap();
            migrate_sqlite(&mut conn).unwrap();
            assert_eq!(version(&conn), VERSION);
            conn.execute(
                "INSERT INTO events (type, ts_ns, ts, service, source) VALUES ('a', 1, 'x', 's', 'api')",
                [],
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate_sqlite(&mut conn).unwrap();
        assert_eq!(version(&conn), VERSION);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "reopening keeps the data");
        let vacuum: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(vacuum, 2, "incremental");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "WAL is a property of the file");
        drop(conn);
        crate::ledger::tests::remove(&path);
    }

    #[test]
    fn both_databases_have_every_migration() {
        assert_eq!(POSTGRES_MIGRATIONS.len(), MIGRATIONS.len());
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate_sqlite(&mut conn),
            Err(SchemaError::TooNew { found }) if found == VERSION + 1
        ));
    }

    #[test]
    fn constraints_hold() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let bad_source = conn.execute(
            "INSERT INTO events (type, ts_ns, ts, service, source) VALUES ('a', 1, 'x', 's', 'me')",
            [],
        );
        assert!(bad_source.is_err());
        let bad_json = conn.execute(
            "INSERT INTO events (type, ts_ns, ts, service, source, metadata) VALUES ('a', 1, 'x', 's', 'api', '{')",
            [],
        );
        assert!(bad_json.is_err());
        conn.execute("INSERT INTO checkpoints VALUES ('a', 1, x'00')", [])
            .unwrap();
        let twice = conn.execute("INSERT INTO checkpoints VALUES ('a', 2, x'00')", []);
        assert!(twice.is_err(), "one checkpoint per replica");
    }
}
