//! What replicas sharing the ledger share beyond events: the judge's state
//! a fleet (service, environment) at a time, with the replica judging it,
//! so a replica that starts receiving a service carries on where the last
//! one stopped; and the replicas themselves (name, the URL their reads are
//! forwarded to, a heartbeat), so any replica answers for every release.
//!
//! A fleet's row is written by each replica judging it at its checkpoints.
//! A replica whose telemetry is older than the row's (the one the
//! Collector's ring moved the service away from) does not overwrite it:
//! the newest telemetry's judge wins.

use super::db::{args, Conn, DbError, Row};
use super::query::nanos;
use super::{Ledger, LedgerError};
use crate::model::UnixNanos;

/// One fleet's judge state, as a replica checkpoints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetState {
    pub service: String,
    pub environment: String,
    /// The latest telemetry the state holds.
    pub last_seen_ns: UnixNanos,
    /// The judge's encoding of it (a checkpoint of one fleet).
    pub data: Vec<u8>,
}

/// A fleet's state as the ledger holds it: whose, and when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFleet {
    pub replica: String,
    pub written_ns: UnixNanos,
    pub state: FleetState,
}

/// A replica sharing the ledger, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub name: String,
    /// Where its HTTP API answers (its `advertise_url`).
    pub url: String,
    pub started_ns: UnixNanos,
    pub heartbeat_ns: UnixNanos,
}

/// A checkpoint of this replica: its fleets' states, its heartbeat, and
/// what is old enough to forget.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub now: UnixNanos,
    pub fleets: Vec<FleetState>,
    /// This replica's advertised URL and start, for its heartbeat.
    pub url: String,
    pub started_ns: UnixNanos,
    /// Fleet states whose telemetry is older than this, and replicas
    /// silent since, are deleted.
    pub forget_before: UnixNanos,
}

const FLEET_COLUMNS: &str = "replica, written_ns, service, environment, last_seen_ns, data";

fn saved_fleet(r: &Row) -> Result<SavedFleet, DbError> {
    Ok(SavedFleet {
        replica: r.get(0)?,
        written_ns: r.get(1)?,
        state: FleetState {
            service: r.get(2)?,
            environment: r.get(3)?,
            last_seen_ns: r.get(4)?,
            data: r.get(5)?,
        },
    })
}

/// A row of (name, url, started_ns, heartbeat_ns).
fn replica(r: &Row) -> Result<Replica, DbError> {
    Ok(Replica {
        name: r.get(0)?,
        url: r.get(1)?,
        started_ns: r.get(2)?,
        heartbeat_ns: r.get(3)?,
    })
}

/// Writes `replica`'s checkpoint (the writer runs it in a transaction).
pub(crate) fn save(conn: &mut Conn, replica: &str, c: &Checkpoint) -> Result<(), DbError> {
    for f in &c.fleets {
        // Its own row, or one whose telemetry is no newer than ours: a
        // replica the service moved away from keeps judging its stale copy
        // until it expires, and must not write it over the new judge's.
        conn.exec(
            "INSERT INTO fleet_states (service, environment, replica, written_ns, last_seen_ns, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (service, environment) DO UPDATE SET
                 replica = excluded.replica, written_ns = excluded.written_ns,
                 last_seen_ns = excluded.last_seen_ns, data = excluded.data
             WHERE fleet_states.replica = excluded.replica
                OR fleet_states.last_seen_ns <= excluded.last_seen_ns",
            args![
                &f.service,
                &f.environment,
                replica,
                nanos(c.now),
                nanos(f.last_seen_ns),
                f.data.as_slice()
            ],
        )?;
    }
    conn.exec(
        "INSERT INTO replicas (name, url, started_ns, heartbeat_ns) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET url = excluded.url,
             started_ns = excluded.started_ns, heartbeat_ns = excluded.heartbeat_ns",
        args![replica, &c.url, nanos(c.started_ns), nanos(c.now)],
    )?;
    let before = nanos(c.forget_before);
    conn.exec(
        "DELETE FROM fleet_states WHERE last_seen_ns < ?1",
        args![before],
    )?;
    conn.exec(
        "DELETE FROM replicas WHERE heartbeat_ns < ?1",
        args![before],
    )?;
    // The whole-daemon checkpoint of before fleet states is read only
    // while this replica has written none.
    conn.exec("DELETE FROM checkpoints WHERE replica = ?1", args![replica])?;
    Ok(())
}

impl Ledger {
    /// The fleet states this replica wrote last (what it restores at start).
    pub fn own_fleets(&self) -> Result<Vec<SavedFleet>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                &format!("SELECT {FLEET_COLUMNS} FROM fleet_states WHERE replica = ?1"),
                args![&self.replica],
            )?
            .iter()
            .map(saved_fleet)
            .collect()
        })
    }

    /// A fleet's state, whoever wrote it, if its telemetry is no older
    /// than `seen_since`: what a replica starting to receive the service
    /// carries on from.
    pub fn fleet_state(
        &self,
        service: &str,
        environment: &str,
        seen_since: UnixNanos,
    ) -> Result<Option<SavedFleet>, LedgerError> {
        self.readers.with(|conn| {
            conn.row(
                &format!(
                    "SELECT {FLEET_COLUMNS} FROM fleet_states
                     WHERE service = ?1 AND environment = ?2 AND last_seen_ns >= ?3"
                ),
                args![service, environment, nanos(seen_since)],
            )?
            .map(|r| saved_fleet(&r))
            .transpose()
        })
    }

    /// The fleets other replicas judge, with their latest telemetry:
    /// (service, environment, last seen).
    pub fn fleets_judged_elsewhere(&self) -> Result<Vec<(String, String, UnixNanos)>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                "SELECT service, environment, last_seen_ns FROM fleet_states WHERE replica <> ?1",
                args![&self.replica],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .collect()
        })
    }

    /// The replicas heard from since `alive_since`, by name.
    pub fn replicas(&self, alive_since: UnixNanos) -> Result<Vec<Replica>, LedgerError> {
        self.readers.with(|conn| {
            conn.rows(
                "SELECT name, url, started_ns, heartbeat_ns FROM replicas
                 WHERE heartbeat_ns >= ?1 ORDER BY name",
                args![nanos(alive_since)],
            )?
            .iter()
            .map(replica)
            .collect()
        })
    }

    /// The replica judging a fleet, if it was heard from since
    /// `alive_since` and is not this one.
    pub fn judge_of(
        &self,
        service: &str,
        environment: &str,
        alive_since: UnixNanos,
    ) -> Result<Option<Replica>, LedgerError> {
        self.readers.with(|conn| {
            conn.row(
                "SELECT r.name, r.url, r.started_ns, r.heartbeat_ns
                 FROM fleet_states f JOIN replicas r ON r.name = f.replica
                 WHERE f.service = ?1 AND f.environment = ?2
                   AND r.heartbeat_ns >= ?3 AND r.name <> ?4",
                args![service, environment, nanos(alive_since), &self.replica],
            )?
            .map(|r| replica(&r))
            .transpose()
        })
    }
}
